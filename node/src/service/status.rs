//! Node status for `/ready` and `/debug/partitions`.

use super::Service;
use crate::engine::{Health, PartitionRuntime, Stall};
use crate::store::Digest;
use serde::Serialize;
use std::sync::Arc;

/// Whether the node serves everything it owns.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, one line per problem.
    pub problems: Vec<String>,
}

/// One partition as `/debug/partitions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub partition: u32,
    /// Last applied offset; null before the first entry.
    pub applied_offset: Option<u64>,
    pub log_start: Option<u64>,
    pub log_end: Option<u64>,
    pub lag: Option<u64>,
    pub health: Health,
    /// Present while the applier has been on one batch for longer than the stall threshold.
    pub stalled: Option<Stall>,
    pub records: u64,
    pub digest: String,
    /// Whether single-key reads are served from the in-memory index (else from the store).
    pub read_index: bool,
    /// The S3 snapshot the partition was last restored from, if any.
    pub restored_from: Option<String>,
    /// The newest snapshot this node uploaded of the partition since it started, if any.
    pub last_snapshot: Option<LastSnapshot>,
}

/// A snapshot as `/debug/partitions` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastSnapshot {
    /// The offset the partition applies next after it (it holds every entry below).
    pub offset: u64,
    pub age_ms: u64,
}

impl Service {
    /// Ready when the node owns partitions, every one of them applies and serves (and has
    /// caught up with what the log held when it opened here), and its log takes writes.
    pub fn readiness(&self) -> Readiness {
        let mut problems = Vec::new();
        let partitions = self.engine.partitions();
        let opening = self.engine.opening();
        // Partitions on standby still answer reads (the broker is away, or the group is
        // rebalancing): taking every node of a region out of rotation for that would serve
        // nobody.
        if partitions.is_empty()
            && opening.is_empty()
            && self.engine.standby_partitions().is_empty()
        {
            problems.push("no partitions".to_string());
        }
        for id in opening {
            problems.push(format!(
                "partition {id} is opening ({})",
                crate::engine::OPENING
            ));
        }
        // Reads may still be served, but a node that takes no write until it restarts is not
        // ready: an orchestrator should restart it or route elsewhere.
        if let Some(reason) = self.log.refuses_writes() {
            problems.push(format!("the log refuses every write: {reason}"));
        }
        for (id, reason) in self.engine.unopened() {
            problems.push(format!("partition {id} cannot be opened: {reason}"));
        }
        let threshold = self.engine.stall_threshold();
        for runtime in partitions {
            if let Some(Stall {
                offset,
                for_ms,
                plugin: Some(plugin),
            }) = runtime.stalled(threshold)
            {
                problems.push(format!(
                    "partition {} stalled for {for_ms} ms: {}",
                    runtime.id(),
                    crate::engine::plugin_wait_advice(runtime.id(), offset, &plugin)
                ));
            } else if let Some(stall) = runtime.stalled(threshold) {
                problems.push(format!(
                    "partition {} stalled: applying the entries from offset {} for {} ms \
                     (STALL_THRESHOLD_MS is {})",
                    runtime.id(),
                    stall.offset,
                    stall.for_ms,
                    threshold.as_millis()
                ));
            }
            // A partition not served says why below; catching up is not its problem.
            if let Some(to) = runtime.catching_up().filter(|_| runtime.serving()) {
                problems.push(format!(
                    "partition {} is catching up: it has applied {} of the {to} entries the log \
                     held when it opened here (its reads wait until it has)",
                    runtime.id(),
                    runtime.next_offset()
                ));
            }
            if let Some(why) = runtime.health().reason() {
                problems.push(format!("partition {} is not served: {why}", runtime.id()));
            }
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }

    /// Every owned partition with its offsets, health, record count and digest. Computing the
    /// digests reads every record: meant for operators and tests, not for hot paths.
    pub fn partition_reports(&self) -> Vec<PartitionReport> {
        self.reports(self.engine.partitions())
    }

    /// The same of every partition on standby (health `released`): taken from this node while
    /// its next owner is not settled, its last state answering reads.
    pub fn standby_reports(&self) -> Vec<PartitionReport> {
        self.reports(self.engine.standby_partitions())
    }

    fn reports(&self, partitions: Vec<Arc<PartitionRuntime>>) -> Vec<PartitionReport> {
        partitions
            .into_iter()
            .map(|runtime| {
                let next = runtime.next_offset();
                let bounds = &self.log.bounds(runtime.id()).ok();
                let digest = runtime.digest().unwrap_or_else(|e| Digest {
                    records: 0,
                    sha256: format!("unavailable: {e}"),
                });
                PartitionReport {
                    partition: runtime.id(),
                    applied_offset: next.checked_sub(1),
                    log_start: bounds.map(|b| b.0),
                    log_end: bounds.map(|b| b.1),
                    lag: bounds.map(|b| b.1.saturating_sub(next)),
                    health: runtime.health(),
                    stalled: runtime.stalled(self.engine.stall_threshold()),
                    records: digest.records,
                    digest: digest.sha256,
                    read_index: runtime.read_index_enabled(),
                    restored_from: runtime.restored_from(),
                    last_snapshot: self.last_snapshot(runtime.id()),
                }
            })
            .collect()
    }
}
