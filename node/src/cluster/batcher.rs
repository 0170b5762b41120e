//! Coalescing of proxied point reads: concurrent client reads bound for the same owner share one
//! request. Each owner gets a queue and at most [`IN_FLIGHT`] requests at a time; whatever queues
//! up while those are out goes together in the next one. An idle owner gets a read at once, so a
//! lone read waits for nothing; under load, one request carries many reads.

use super::client::{PeerClient, PeerError};
use crate::model::Key;
use crate::model::peer::{GetQuery, WireRecord};
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Requests to one owner at a time.
const IN_FLIGHT: usize = 2;
/// Keys in one coalesced request (peers accept up to MAX_RECORDS_PER_REQUEST).
const MAX_KEYS: usize = 256;

type Reply = Result<Vec<Option<WireRecord>>, PeerError>;

struct Pending {
    keys: Vec<Key>,
    reply: oneshot::Sender<Reply>,
}

/// Per-owner queues of point reads without read-your-writes positions.
pub struct GetBatcher {
    client: PeerClient,
    queues: DashMap<SocketAddr, mpsc::UnboundedSender<Pending>>,
}

impl GetBatcher {
    pub fn new(client: PeerClient) -> Self {
        GetBatcher {
            client,
            queues: DashMap::new(),
        }
    }

    /// Reads `keys` at `addr`, possibly in one request with other callers' keys: one slot per
    /// key, in order.
    pub async fn get(&self, addr: SocketAddr, keys: Vec<Key>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { keys, reply };
        loop {
            let queue = self
                .queues
                .entry(addr)
                .or_insert_with(|| self.spawn(addr))
                .clone();
            match queue.send(pending) {
                Ok(()) => break,
                // The queue's task ended (cannot happen while the batcher lives); start anew.
                Err(mpsc::error::SendError(back)) => {
                    self.queues.remove(&addr);
                    pending = back;
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(PeerError::Unreachable {
                addr,
                reason: "the read was dropped".into(),
            })
        })
    }

    fn spawn(&self, addr: SocketAddr) -> mpsc::UnboundedSender<Pending> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let client = self.client.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(first) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                // Everything that queued while the slots were busy goes in this request.
                let mut batch = vec![first];
                let mut keys = batch[0].keys.len();
                while keys < MAX_KEYS {
                    match rx.try_recv() {
                        Ok(next) => {
                            keys += next.keys.len();
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let client = client.clone();
                tokio::spawn(async move {
                    let query = GetQuery {
                        keys: batch.iter().flat_map(|p| p.keys.iter().cloned()).collect(),
                        min_offsets: Vec::new(),
                    };
                    let reply = client.get(addr, &query, Duration::ZERO).await;
                    drop(slot);
                    match reply {
                        Ok(reply) => {
                            let mut records = reply.records.into_iter();
                            for pending in batch {
                                let mine = records.by_ref().take(pending.keys.len()).collect();
                                let _ = pending.reply.send(Ok(mine));
                            }
                        }
                        // The owner refused the request — perhaps for one caller's partition
                        // it no longer serves: each caller is asked alone, so one partition's
                        // move does not fail the others' reads.
                        Err(PeerError::Refused { .. }) if batch.len() > 1 => {
                            for pending in batch {
                                let query = GetQuery {
                                    keys: pending.keys,
                                    min_offsets: Vec::new(),
                                };
                                let reply = client.get(addr, &query, Duration::ZERO).await;
                                let _ = pending.reply.send(reply.map(|r| r.records));
                            }
                        }
                        Err(e) => {
                            for pending in batch {
                                let _ = pending.reply.send(Err(e.clone()));
                            }
                        }
                    }
                });
            }
        });
        tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::peer::GET_PATH;
    use axum::body::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A peer that answers each key with its pk as data, slowly (so reads queue up), and refuses
    /// any request holding the pk `moved` — as an owner does for a partition it lost.
    /// `widest` records the most keys one request carried.
    async fn peer(widest: Arc<AtomicUsize>) -> SocketAddr {
        let app = axum::Router::new().route(
            GET_PATH,
            axum::routing::post(move |body: Bytes| {
                let widest = widest.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let query: GetQuery = serde_json::from_slice(&body).unwrap();
                    widest.fetch_max(query.keys.len(), Ordering::SeqCst);
                    if query.keys.iter().any(|k| k.pk == "moved") {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error":{"code":"partition_unavailable","message":"moved"}}"#
                                .to_string(),
                        );
                    }
                    let records: Vec<String> = query
                        .keys
                        .iter()
                        .map(|k| {
                            let pk = &k.pk;
                            format!(r#"{{"data":"{pk}","created_at_ms":1,"updated_at_ms":2}}"#)
                        })
                        .collect();
                    (
                        axum::http::StatusCode::OK,
                        format!(r#"{{"records":[{}]}}"#, records.join(",")),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_requests_and_a_refusal_fails_only_its_caller() {
        let widest = Arc::new(AtomicUsize::new(0));
        let addr = peer(widest.clone()).await;
        let batcher = Arc::new(GetBatcher::new(PeerClient::new(
            Duration::from_secs(5),
            None,
        )));
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..40 {
            let batcher = batcher.clone();
            let pk = if i == 17 {
                "moved".to_string()
            } else {
                format!("k{i}")
            };
            reads.spawn(async move {
                let reply = batcher
                    .get(
                        addr,
                        vec![Key {
                            pk: pk.clone(),
                            sk: "s".into(),
                        }],
                    )
                    .await;
                (pk, reply)
            });
        }
        let mut refused = 0;
        while let Some(done) = reads.join_next().await {
            let (pk, reply) = done.unwrap();
            match reply {
                Ok(records) => {
                    assert_ne!(pk, "moved");
                    assert_eq!(records.len(), 1);
                    let data = records[0].as_ref().unwrap().data.get();
                    assert_eq!(data, format!("\"{pk}\""), "each caller gets its own record");
                }
                Err(PeerError::Refused { status, .. }) => {
                    assert_eq!((pk.as_str(), status), ("moved", 503));
                    refused += 1;
                }
                Err(e) => panic!("{pk}: {e}"),
            }
        }
        assert_eq!(refused, 1);
        let widest = widest.load(Ordering::SeqCst);
        assert!(widest > 1, "40 concurrent reads were never coalesced");
    }
}
