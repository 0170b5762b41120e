//! Coalescing of proxied point reads: concurrent client reads bound for the same owner share one
//! request. Each owner gets a queue and at most [`IN_FLIGHT`] requests at a time; whatever queues
//! up while those are out goes together in the next one. An idle owner gets a read at once, so a
//! lone read waits for nothing; under load, one request carries many reads.
//!
//! While one request is out, the next waits for its answer (so everything queued meanwhile goes
//! together: fewer, larger requests cost both nodes less per read) — but for [`STAGGER`] at most,
//! so an answer that is slow in coming holds the other reads up that long, not until its timeout,
//! and only until [`FULL_ENOUGH`] keys have queued: a request that large already spreads its cost
//! thin, and holding it back would cap a busy owner's reads at one request per round trip.

use super::client::{PeerClient, PeerError};
use crate::model::Key;
use crate::model::peer::{GetQuery, GetReply};
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

/// Requests to one owner at a time.
const IN_FLIGHT: usize = 2;
/// How long reads queue behind a request in flight before the next request goes out anyway.
/// Far above a peer's round trip within a region (~1 ms), far below a client's patience.
const STAGGER: Duration = Duration::from_millis(5);
/// Keys in one coalesced request at most (fewer when MAX_RECORDS_PER_REQUEST is lower: an owner
/// refuses a request over it, and each of its reads would then be asked again alone).
const MAX_KEYS: usize = 256;
/// Keys queued behind a request in flight that go out without waiting for its answer. With
/// reads held until the answer came, a fast machine served proxied reads at half the rate of
/// local ones (one request per round trip, whatever its size); a 16-key request already costs
/// each node a sixteenth of a request per read (benches/README.md, twentieth session).
const FULL_ENOUGH: usize = 16;

/// A caller's slots, and the owner's token for the whole request (its positions cover every
/// caller's partitions, each taken before the owner read).
type Reply = Result<GetReply, PeerError>;

struct Pending {
    keys: Vec<Key>,
    reply: oneshot::Sender<Reply>,
}

/// Per-owner queues of point reads without read-your-writes positions.
pub struct GetBatcher {
    client: PeerClient,
    queues: DashMap<SocketAddr, mpsc::UnboundedSender<Pending>>,
    /// [`STAGGER`], longer in tests that must tell reads sent because enough queued from reads
    /// sent because the wait ran out.
    stagger: Duration,
    /// Keys in one request at most: [`MAX_KEYS`], or what an owner accepts if fewer.
    max_keys: usize,
}

impl GetBatcher {
    /// A batcher whose requests carry at most `max_records` keys (MAX_RECORDS_PER_REQUEST, what
    /// the owners accept), and never more than [`MAX_KEYS`]; a single read of more keys still
    /// goes alone, as it came.
    pub fn new(client: PeerClient, max_records: usize) -> Self {
        GetBatcher {
            client,
            queues: DashMap::new(),
            stagger: STAGGER,
            max_keys: max_records.clamp(1, MAX_KEYS),
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
        let (stagger, max_keys) = (self.stagger, self.max_keys);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            let answered = Arc::new(Notify::new());
            // A read that would have taken a request past `max_keys`: it starts the next one.
            let mut carried: Option<Pending> = None;
            loop {
                let first = match carried.take() {
                    Some(first) => first,
                    None => match rx.recv().await {
                        Some(first) => first,
                        None => break,
                    },
                };
                // Made before looking at the slots, so an answer arriving in between still
                // wakes it (`notify_waiters` reaches every `Notified` made before the call).
                let in_flight_answered = answered.notified();
                // The keys of every caller in this request, each caller's reply kept with how
                // many are its own.
                let mut query = GetQuery {
                    keys: first.keys,
                    min_offsets: Vec::new(),
                };
                let mut callers = vec![(query.keys.len(), first.reply)];
                // Whether `pending` joined the request: one that would take it past `max_keys`
                // waits for the next.
                let mut take = |pending: Pending, query: &mut GetQuery| {
                    if query.keys.len() + pending.keys.len() > max_keys {
                        carried = Some(pending);
                        return false;
                    }
                    callers.push((pending.keys.len(), pending.reply));
                    query.keys.extend(pending.keys);
                    true
                };
                // Set once a read was carried over: nothing more joins this request.
                let mut full = false;
                if slots.available_permits() < IN_FLIGHT {
                    let stagger = tokio::time::sleep(stagger);
                    tokio::pin!(stagger, in_flight_answered);
                    while query.keys.len() < FULL_ENOUGH {
                        tokio::select! {
                            () = &mut in_flight_answered => break,
                            () = &mut stagger => break,
                            next = rx.recv() => {
                                let Some(next) = next else { break };
                                if !take(next, &mut query) {
                                    full = true;
                                    break;
                                }
                            }
                        }
                    }
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                // Everything else that queued while the slots were busy goes in this request.
                while !full && query.keys.len() < max_keys {
                    let Ok(next) = rx.try_recv() else { break };
                    if !take(next, &mut query) {
                        break;
                    }
                }
                let client = client.clone();
                let answered = answered.clone();
                tokio::spawn(async move {
                    let reply = client.get(addr, &query, Duration::ZERO).await;
                    drop(slot);
                    answered.notify_waiters();
                    match reply {
                        Ok(reply) => {
                            let mut records = reply.records.into_iter();
                            for (count, caller) in callers {
                                let _ = caller.send(Ok(GetReply {
                                    records: records.by_ref().take(count).collect(),
                                    token: reply.token.clone(),
                                }));
                            }
                        }
                        // The owner refused the request — perhaps for one caller's partition
                        // it no longer serves: each caller is asked alone, so one partition's
                        // move does not fail the others' reads.
                        Err(PeerError::Refused { .. }) if callers.len() > 1 => {
                            let mut keys = query.keys.into_iter();
                            for (count, reply) in callers {
                                let query = GetQuery {
                                    keys: keys.by_ref().take(count).collect(),
                                    min_offsets: Vec::new(),
                                };
                                let answer = client.get(addr, &query, Duration::ZERO).await;
                                let _ = reply.send(answer);
                            }
                        }
                        Err(e) => {
                            for (_, reply) in callers {
                                let _ = reply.send(Err(e.clone()));
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

    /// A peer's answer to `query`: each key's pk as its record's data.
    fn answer(query: &GetQuery) -> String {
        let records: Vec<String> = query
            .keys
            .iter()
            .map(|k| {
                let pk = &k.pk;
                format!(r#"{{"data":"{pk}","created_at_ms":1,"updated_at_ms":2}}"#)
            })
            .collect();
        format!(r#"{{"records":[{}]}}"#, records.join(","))
    }

    /// Serves `app` on a free loopback port.
    async fn serve(app: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

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
                    (axum::http::StatusCode::OK, answer(&query))
                }
            }),
        );
        serve(app).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_requests_and_a_refusal_fails_only_its_caller() {
        let widest = Arc::new(AtomicUsize::new(0));
        let addr = peer(widest.clone()).await;
        let batcher = Arc::new(GetBatcher::new(
            PeerClient::new(Duration::from_secs(5), None, 1 << 20, None),
            MAX_KEYS,
        ));
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
                Ok(GetReply { records, .. }) => {
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

    /// `n` keys named `prefix0`, `prefix1`, ...
    fn keys(prefix: &str, n: usize) -> Vec<Key> {
        (0..n)
            .map(|i| Key {
                pk: format!("{prefix}{i}"),
                sk: "s".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn coalesced_reads_stay_within_the_keys_an_owner_accepts_and_none_is_lost() {
        let widest = Arc::new(AtomicUsize::new(0));
        let addr = peer(widest.clone()).await;
        // Owners accept 8 keys per request.
        let batcher = GetBatcher::new(
            PeerClient::new(Duration::from_secs(60), None, 1 << 20, None),
            8,
        );
        // All three are queued before the batcher runs: the first two (4 keys) go together, and
        // the third would take that request to 10, so it goes in the next.
        let (first, second, third) = tokio::join!(
            batcher.get(addr, keys("a", 1)),
            batcher.get(addr, keys("b", 3)),
            batcher.get(addr, keys("c", 6)),
        );
        for (reply, prefix, n) in [(first, "a", 1), (second, "b", 3), (third, "c", 6)] {
            let records = reply.unwrap().records;
            assert_eq!(records.len(), n);
            for (i, record) in records.iter().enumerate() {
                assert_eq!(
                    record.as_ref().unwrap().data.get(),
                    format!("\"{prefix}{i}\"")
                );
            }
        }
        assert_eq!(
            widest.load(Ordering::SeqCst),
            6,
            "a request went past 8 keys"
        );
    }

    /// A peer that answers each key with its pk as data, except that a request holding the pk
    /// `held` gets its answer only once `release` has a permit; `arrived` is told it came.
    async fn holding_peer() -> (SocketAddr, Arc<Notify>, Arc<Semaphore>) {
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Semaphore::new(0));
        let (told, gate) = (arrived.clone(), release.clone());
        let app = axum::Router::new().route(
            GET_PATH,
            axum::routing::post(move |body: Bytes| {
                let (told, gate) = (told.clone(), gate.clone());
                async move {
                    let query: GetQuery = serde_json::from_slice(&body).unwrap();
                    if query.keys.iter().any(|k| k.pk == "held") {
                        told.notify_one();
                        let _ = gate.acquire().await.unwrap();
                    }
                    answer(&query)
                }
            }),
        );
        (serve(app).await, arrived, release)
    }

    fn key(pk: &str) -> Vec<Key> {
        vec![Key {
            pk: pk.into(),
            sk: "s".into(),
        }]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_queued_behind_a_request_go_out_once_there_are_enough_of_them() {
        let (addr, arrived, release) = holding_peer().await;
        let mut batcher = GetBatcher::new(
            PeerClient::new(Duration::from_secs(60), None, 1 << 20, None),
            MAX_KEYS,
        );
        // Reads would otherwise wait this long for the held request's answer.
        batcher.stagger = Duration::from_secs(600);
        let batcher = Arc::new(batcher);
        let held = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.get(addr, key("held")).await }
        });
        arrived.notified().await;
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..FULL_ENOUGH {
            let batcher = batcher.clone();
            reads.spawn(async move { (i, batcher.get(addr, key(&format!("k{i}"))).await) });
        }
        // The owner sits on the first request; the queued reads are enough for a request of
        // their own, which goes out and is answered meanwhile.
        let answered = tokio::time::timeout(Duration::from_secs(30), async {
            let mut answered = 0;
            while let Some(done) = reads.join_next().await {
                let (i, reply) = done.unwrap();
                let records = reply.unwrap().records;
                assert_eq!(records[0].as_ref().unwrap().data.get(), format!("\"k{i}\""));
                answered += 1;
            }
            answered
        })
        .await
        .expect("queued reads waited for the stagger although there were enough of them");
        assert_eq!(answered, FULL_ENOUGH);
        assert!(!held.is_finished(), "the held read was answered early");
        release.add_permits(1);
        held.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn reads_that_do_not_fit_behind_a_request_in_flight_each_wait_their_turn() {
        let (addr, arrived, release) = holding_peer().await;
        let batcher = Arc::new(GetBatcher::new(
            PeerClient::new(Duration::from_secs(60), None, 1 << 20, None),
            8,
        ));
        let held = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.get(addr, key("held")).await }
        });
        arrived.notified().await;
        // Behind the held request: 3 keys, then 6 that do not fit with them (carried to the
        // next request), then 6 more that must not take the carried read's place.
        let (b, c, d) = tokio::join!(
            batcher.get(addr, keys("b", 3)),
            batcher.get(addr, keys("c", 6)),
            batcher.get(addr, keys("d", 6)),
        );
        for (reply, prefix, n) in [(b, "b", 3), (c, "c", 6), (d, "d", 6)] {
            let records = reply.unwrap_or_else(|e| panic!("{prefix}: {e}")).records;
            assert_eq!(records.len(), n);
            assert_eq!(
                records[n - 1].as_ref().unwrap().data.get(),
                format!("\"{prefix}{}\"", n - 1)
            );
        }
        release.add_permits(1);
        held.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_queued_behind_an_unanswered_request_goes_out_without_it() {
        let (addr, arrived, release) = holding_peer().await;
        // The held request would time out only after a minute.
        let batcher = Arc::new(GetBatcher::new(
            PeerClient::new(Duration::from_secs(60), None, 1 << 20, None),
            MAX_KEYS,
        ));
        let held = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.get(addr, key("held")).await }
        });
        arrived.notified().await;
        // The owner sits on the first request: the next read still gets its answer, in a
        // request of its own, while the first is unanswered.
        let other = tokio::time::timeout(Duration::from_secs(30), batcher.get(addr, key("k1")))
            .await
            .expect("a read waited for an unanswered request to another key")
            .unwrap();
        assert_eq!(other.records[0].as_ref().unwrap().data.get(), r#""k1""#);
        assert!(!held.is_finished(), "the held read was answered early");
        release.add_permits(1);
        let held = held.await.unwrap().unwrap();
        assert_eq!(held.records[0].as_ref().unwrap().data.get(), r#""held""#);
    }
}
