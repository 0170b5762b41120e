//! Reads of partitions this node does not serve: asked of an owner in the region, one request
//! per owner per client request, failing over to another owner when one is unreachable or
//! cannot serve. Owners answer from their own partitions only (hop limit 1). A partition that no
//! reachable owner serves is an error naming it — never a silently shorter answer.

use super::{ErrorKind, ListPage, Service, ServiceError, Token};
use crate::cluster::{Cluster, NodeId, Peer, PeerError};
use crate::model::peer::{GetQuery, OutcomesQuery};
use crate::model::{Key, ListRequest, Outcome, Position, Record};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

impl Service {
    /// The records at `keys[i]` for every `i` in `partitions`' index lists, read from owners.
    pub(super) async fn get_remote(
        &self,
        cluster: &Cluster,
        keys: &[Key],
        partitions: BTreeMap<u32, Vec<usize>>,
        min_offsets: &[Position],
        mut token: Option<&mut Token>,
    ) -> Result<Vec<(usize, Option<Record>)>, ServiceError> {
        let mut pending = partitions;
        // Owners are few: plain vectors, not hash tables, for the plan and the failures.
        let mut failed: Vec<NodeId> = Vec::new();
        let mut not_ready = None;
        let mut found = Vec::with_capacity(keys.len());
        while !pending.is_empty() {
            // Plan: each pending partition to one owner not yet failed, reusing an owner already
            // chosen when it serves the partition too, so each owner gets one request.
            let mut plan: Vec<(Peer, Vec<u32>)> = Vec::with_capacity(1);
            for &partition in pending.keys() {
                let mut owners: Vec<Peer> = cluster
                    .owners(partition)
                    .into_iter()
                    .filter(|o| !failed.contains(&o.id))
                    .collect();
                let chosen = owners
                    .iter()
                    .position(|o| plan.iter().any(|(p, _)| p.id == o.id))
                    .unwrap_or(0);
                if chosen >= owners.len() {
                    return Err(no_owner(partition, !failed.is_empty(), not_ready));
                }
                let owner = owners.swap_remove(chosen);
                match plan.iter_mut().find(|(p, _)| p.id == owner.id) {
                    Some((_, parts)) => parts.push(partition),
                    None => plan.push((owner, vec![partition])),
                }
            }
            let mut batches = Vec::with_capacity(plan.len());
            for (peer, parts) in plan {
                let count = parts.iter().map(|p| pending[p].len()).sum();
                let mut query = GetQuery {
                    keys: Vec::with_capacity(count),
                    min_offsets: Vec::new(),
                };
                let mut indexes = Vec::with_capacity(count);
                for p in &parts {
                    for &i in &pending[p] {
                        query.keys.push(keys[i].clone());
                        indexes.push(i);
                    }
                }
                query.min_offsets = min_offsets
                    .iter()
                    .copied()
                    .filter(|m| parts.contains(&m.partition))
                    .collect();
                batches.push((peer, parts, query, indexes));
            }
            let ask = |(peer, parts, query, indexes): (Peer, Vec<u32>, GetQuery, Vec<usize>)| {
                let wait = self.peer_wait(!query.min_offsets.is_empty());
                let cluster = cluster.clone();
                async move {
                    let started = Instant::now();
                    // Reads without positions to wait for share requests with other callers'.
                    let reply = if query.min_offsets.is_empty() {
                        cluster.get_coalesced(peer.api, query.keys).await
                    } else {
                        cluster.client().get(peer.api, &query, wait).await
                    };
                    (peer, parts, indexes, reply, started)
                }
            };
            let answers = if batches.len() == 1 {
                // The common case (one owner to ask): no task to spawn.
                vec![ask(batches.pop().expect("one batch")).await]
            } else {
                let mut requests = JoinSet::new();
                for batch in batches {
                    requests.spawn(ask(batch));
                }
                let mut answers = Vec::new();
                while let Some(joined) = requests.join_next().await {
                    answers.push(
                        joined.map_err(|e| ServiceError::internal(format!("proxied read: {e}")))?,
                    );
                }
                answers
            };
            for (peer, parts, indexes, reply, started) in answers {
                self.observe_proxy("get", started);
                match reply {
                    Ok(reply) => {
                        self.count_proxied("get", "ok");
                        if let (Some(token), Some(theirs)) = (
                            token.as_deref_mut(),
                            reply.token.as_deref().and_then(|t| t.parse::<Token>().ok()),
                        ) {
                            token.take_from(&theirs, &parts);
                        }
                        for (slot, i) in reply.records.into_iter().zip(indexes) {
                            let key = &keys[i];
                            found.push((
                                i,
                                slot.map(|r| r.into_record(key.pk.clone(), key.sk.clone())),
                            ));
                        }
                        for p in parts {
                            pending.remove(&p);
                        }
                    }
                    Err(e) => {
                        not_ready = not_ready_of(&e, &peer).or(not_ready);
                        self.peer_failed(cluster, "get", &peer, e)?;
                        failed.push(peer.id);
                    }
                }
            }
        }
        Ok(found)
    }

    /// One page of a pk in a partition this node does not serve, from an owner.
    pub(super) async fn list_remote(
        &self,
        cluster: &Cluster,
        partition: u32,
        query: ListRequest,
    ) -> Result<ListPage, ServiceError> {
        let wait = self.peer_wait(!query.min_offsets.is_empty());
        let owners = cluster.owners(partition);
        let reply = self
            .first_answer(cluster, "list", partition, owners, |peer| {
                cluster.client().list(peer.api, &query, wait)
            })
            .await?;
        let records = reply
            .records
            .into_iter()
            .map(|r| {
                let sk = r.sk.clone().unwrap_or_default();
                r.into_record(query.pk.clone(), sk)
            })
            .collect();
        Ok(ListPage {
            records,
            next_cursor: reply.next_cursor,
            token: reply.token,
            read_through: reply.read_through,
        })
    }

    /// Outcomes of entries in partitions this node does not serve, from owners (of this node's
    /// replica group first), each waited for up to `wait`.
    pub(super) async fn outcomes_remote(
        &self,
        cluster: &Cluster,
        positions: &[Position],
        wait: Duration,
    ) -> Result<Vec<Option<Outcome>>, ServiceError> {
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in positions.iter().enumerate() {
            by_partition.entry(p.partition).or_default().push(i);
        }
        let mut outcomes = vec![None; positions.len()];
        for (partition, indexes) in by_partition {
            let query = OutcomesQuery {
                positions: indexes.iter().map(|&i| positions[i]).collect(),
                wait_ms: wait.as_millis() as u64,
            };
            let owners = cluster.owners_own_group_first(partition);
            let reply = self
                .first_answer(cluster, "outcomes", partition, owners, |peer| {
                    cluster.client().outcomes(peer.api, &query)
                })
                .await?;
            for (i, outcome) in indexes.iter().zip(reply.outcomes) {
                outcomes[*i] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// A watch of one pk (or one partition) served by an owner of its partition elsewhere in the region (this node
    /// does not apply it): the owner's event stream, passed through as it comes. `query` is the
    /// watch's query string, `last_event_id` the token to resume from. Owners are tried in turn;
    /// when the one streaming goes away, the client reconnects (here or anywhere) with its last
    /// event id and another owner continues exactly.
    pub async fn watch_remote(
        &self,
        partition: u32,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Option<RemoteStream>, ServiceError> {
        let Some(cluster) = self.cluster.clone() else {
            return Ok(None);
        };
        if self.serving_partition(partition).is_some() {
            return Ok(None);
        }
        let owners = appliers(cluster.owners_own_group_first(partition));
        self.first_answer(&cluster, "watch", partition, owners, |peer| {
            cluster.client().watch(peer.api, query, last_event_id)
        })
        .await
        .map(Some)
    }

    /// Asks `owners` of `partition` in turn until one answers; the answer, or the error to
    /// give the caller.
    pub(super) async fn first_answer<T, F, Fut>(
        &self,
        cluster: &Cluster,
        operation: &'static str,
        partition: u32,
        owners: Vec<Peer>,
        ask: F,
    ) -> Result<T, ServiceError>
    where
        F: Fn(&Peer) -> Fut,
        Fut: Future<Output = Result<T, PeerError>>,
    {
        if owners.is_empty() {
            return Err(no_owner(partition, false, None));
        }
        let mut not_ready = None;
        for peer in owners {
            let started = Instant::now();
            let reply = ask(&peer).await;
            self.observe_proxy(operation, started);
            match reply {
                Ok(answer) => {
                    self.count_proxied(operation, "ok");
                    return Ok(answer);
                }
                Err(e) => {
                    not_ready = not_ready_of(&e, &peer).or(not_ready);
                    self.peer_failed(cluster, operation, &peer, e)?
                }
            }
        }
        Err(no_owner(partition, true, not_ready))
    }

    /// Books a failed request to `peer`: `Ok` when another owner is worth asking (and `peer`
    /// is tried last for a while), else the error to answer the caller with.
    fn peer_failed(
        &self,
        cluster: &Cluster,
        operation: &'static str,
        peer: &Peer,
        e: PeerError,
    ) -> Result<(), ServiceError> {
        if e.worth_failover() {
            self.count_proxied(operation, "failover");
            tracing::warn!(peer = %peer.instance_id, operation, error = %e, "proxied read failed; trying another owner");
            cluster.note_failure(peer.id);
            Ok(())
        } else {
            self.count_proxied(operation, "error");
            Err(peer_error(peer, e))
        }
    }

    fn observe_proxy(&self, operation: &str, started: Instant) {
        self.metrics
            .observe_proxy(operation, crate::metrics::micros(started.elapsed()));
    }

    /// How long a peer may wait for read-your-writes positions.
    pub(super) fn peer_wait(&self, has_positions: bool) -> Duration {
        if has_positions {
            self.config.read_wait_timeout
        } else {
            Duration::ZERO
        }
    }

    fn count_proxied(&self, operation: &str, result: &str) {
        self.metrics.count_proxied(operation, result);
    }
}

/// An owner's answer that the partition is not ready there yet: its code and message.
fn not_ready_of(e: &PeerError, peer: &Peer) -> Option<(&'static str, String)> {
    e.not_ready()
        .map(|(code, message)| (code, format!("{} answered: {message}", peer.instance_id)))
}

/// No owner of `partition` could answer. When one said the partition is not ready there yet
/// (`not_ready`: opening, or catching up with the log), that is the answer, with its code: a
/// Redis client gets `LOADING` and waits, as from a Redis loading its dataset.
fn no_owner(
    partition: u32,
    tried: bool,
    not_ready: Option<(&'static str, String)>,
) -> ServiceError {
    if let Some((code, message)) = not_ready {
        return ServiceError::new(
            ErrorKind::Unavailable,
            code,
            format!(
                "no node serving partition {partition} in this region is ready to answer yet \
                 ({message})"
            ),
        );
    }
    let message = if tried {
        format!(
            "partition {partition} is unavailable: no node serving it in this region answered; retry shortly"
        )
    } else {
        format!(
            "partition {partition} is unavailable: no node in this region serves it right now (a takeover may be in progress); retry shortly"
        )
    };
    ServiceError::new(ErrorKind::Unavailable, "partition_unavailable", message)
}

/// An owner's answer about the request itself, passed on to the caller.
fn peer_error(peer: &Peer, e: PeerError) -> ServiceError {
    match e {
        PeerError::Refused {
            status,
            code,
            message,
            ..
        } => {
            let kind = match status {
                400 => ErrorKind::BadRequest,
                410 => ErrorKind::Gone,
                413 => ErrorKind::TooLarge,
                507 => ErrorKind::InsufficientStorage,
                504 => ErrorKind::Timeout,
                401 | 403 => {
                    return ServiceError::new(
                        ErrorKind::Unavailable,
                        "peer_refused",
                        format!(
                            "node {} refused this node's token ({status}): nodes of a region must share READ_TOKENS/WRITE_TOKENS/ADMIN_TOKENS",
                            peer.instance_id
                        ),
                    );
                }
                _ => ErrorKind::Internal,
            };
            ServiceError::new(kind, known_code(&code), message)
        }
        e @ PeerError::Unreachable { .. } => ServiceError::new(
            ErrorKind::Unavailable,
            "partition_unavailable",
            e.to_string(),
        ),
    }
}

/// The stable code of a peer's error, when it is one of ours.
fn known_code(code: &str) -> &'static str {
    const CODES: [&str; 11] = [
        "token_too_old",
        "bad_token",
        "if_failed",
        "invalid_if",
        "min_offsets_timeout",
        "bad_min_offsets",
        "bad_request",
        "key_too_large",
        "too_many_records",
        "partition_unavailable",
        "internal",
    ];
    CODES
        .iter()
        .find(|&&c| c == code)
        .copied()
        .unwrap_or("peer_error")
}

/// An owner's answer that streams (a watch), read chunk by chunk as it arrives.
pub type RemoteStream = crate::cluster::PeerStream;

/// The owners that apply their partition: only they can stream its changes (a standby copy's
/// state does not move, and its holder refuses a watch, so asking it only costs a round trip
/// and a warning per watch while the region re-forms).
pub(super) fn appliers(mut owners: Vec<Peer>) -> Vec<Peer> {
    owners.retain(|owner| owner.applies);
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn refused(code: &str) -> PeerError {
        PeerError::Refused {
            addr: SocketAddr::from(([127, 0, 0, 2], 8190)),
            status: 503,
            code: code.into(),
            message: format!("partition 3: {code}"),
        }
    }

    #[test]
    fn when_no_owner_answers_one_not_ready_yet_is_the_answer() {
        let peer = Peer {
            id: NodeId {
                addr: SocketAddr::from(([127, 0, 0, 2], 8192)),
                incarnation: 1,
            },
            instance_id: "n1".into(),
            replica_group: "g".into(),
            api: SocketAddr::from(([127, 0, 0, 2], 8190)),
            next_offset: None,
            applies: true,
        };
        for code in ["partition_catching_up", "partition_opening"] {
            let e = no_owner(3, true, not_ready_of(&refused(code), &peer));
            assert_eq!((e.kind, e.code), (ErrorKind::Unavailable, code));
            assert!(
                e.message
                    .contains(&format!("n1 answered: partition 3: {code}")),
                "{}",
                e.message
            );
        }
        // Any other refusal says nothing about readiness: the usual answer.
        assert!(not_ready_of(&refused("partition_unavailable"), &peer).is_none());
        let e = no_owner(3, true, None);
        assert_eq!(e.code, "partition_unavailable");
        assert!(e.message.contains("no node serving it"), "{}", e.message);
    }
}
