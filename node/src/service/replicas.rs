//! How many other nodes of the region have applied some writes (Redis `WAIT`): for each written
//! partition, the other nodes serving it that applied the write's entry — known from their
//! gossip cards (the next offset each applies) or asked, waiting, like a read with
//! `min_offsets` — and the fewest over the partitions: every one of the writes is applied on at
//! least that many other nodes.

use super::Service;
use super::keyspace::keys_query;
use crate::cluster::{Cluster, NodeId};
use crate::model::Position;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The longest one round of asking waits: owners that come (or catch up) during a long `WAIT`
/// are asked in the next round.
const ROUND: Duration = Duration::from_secs(1);

impl Service {
    /// How many other nodes of the region have applied all of `positions` (the last write of
    /// each partition to count; none: how many serve every partition), waiting until `want`
    /// have or `deadline` passes (`None`: no deadline). A node without a region answers 0.
    pub async fn replicas_applied(
        &self,
        positions: &[Position],
        want: usize,
        deadline: Option<Instant>,
    ) -> usize {
        let Some(cluster) = self.cluster.clone() else {
            return 0;
        };
        // Nothing written: every owner of every partition has "applied" it.
        let marks: Vec<(u32, Option<u64>)> = if positions.is_empty() {
            (0..self.engine.partition_count())
                .map(|partition| (partition, None))
                .collect()
        } else {
            positions
                .iter()
                .map(|p| (p.partition, Some(p.offset)))
                .collect()
        };
        loop {
            let count = self.round(&cluster, &marks, want, deadline).await;
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if count >= want || out_of_time {
                return count;
            }
        }
    }

    /// One round: the owners' cards, then the owners they do not show as applied asked (each
    /// waiting up to [`ROUND`] or the deadline) until `want` is met. The count reached.
    async fn round(
        &self,
        cluster: &Cluster,
        marks: &[(u32, Option<u64>)],
        want: usize,
        deadline: Option<Instant>,
    ) -> usize {
        let started = Instant::now();
        let until = deadline.map_or(started + ROUND, |d| d.min(started + ROUND));
        // Per position: the owners known to have applied it.
        let mut applied: Vec<Vec<NodeId>> = vec![Vec::new(); marks.len()];
        let mut asks = JoinSet::new();
        for (i, &(partition, offset)) in marks.iter().enumerate() {
            for owner in cluster.owners(partition) {
                let Some(offset) = offset else {
                    applied[i].push(owner.id);
                    continue;
                };
                if owner.next_offset.is_some_and(|next| next > offset) {
                    applied[i].push(owner.id);
                    continue;
                }
                let position = Position { partition, offset };
                let query = keys_query(partition, 0, 0, &[position]);
                let client = cluster.client().clone();
                let wait = until.saturating_duration_since(Instant::now());
                asks.spawn(async move {
                    let answer = client.keys(owner.api, &query, wait);
                    let reached = matches!(tokio::time::timeout(wait, answer).await, Ok(Ok(_)));
                    (i, owner.id, reached)
                });
            }
        }
        let fewest = |applied: &[Vec<NodeId>]| applied.iter().map(Vec::len).min().unwrap_or(0);
        while fewest(&applied) < want {
            match asks.join_next().await {
                Some(Ok((i, id, true))) => applied[i].push(id),
                Some(_) => {}
                None => {
                    // Nothing left to ask this round (no owner, or all refused at once): the
                    // next round looks again, not before the round's time is up.
                    tokio::time::sleep_until(until.into()).await;
                    break;
                }
            }
        }
        fewest(&applied)
    }
}
