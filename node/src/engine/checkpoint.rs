//! Checkpoints: make the store durable, then let the log reclaim applied entries; prune old
//! outcomes.

use super::*;
use std::sync::atomic::Ordering;

impl Engine {
    /// Makes the store durable, then lets the log reclaim what is applied; refreshes lag metrics.
    pub fn checkpoint(&self) {
        let partitions = self.partitions();
        let applied: Vec<(u32, u64, u64)> = partitions
            .iter()
            .map(|p| (p.id(), p.next_offset(), p.log_position()))
            .collect();
        if let Err(e) = self.inner.store.persist() {
            tracing::error!(error = %e, "making the store durable failed; keeping the log");
            return;
        }
        for runtime in &partitions {
            self.prune_outcomes(runtime);
        }
        for (id, next, position) in applied {
            self.inner.log.release(id, next);
            if let Ok((_, end)) = self.inner.log.bounds(id) {
                // From where the reader got: a transaction marker at the log's end is no lag.
                self.inner
                    .metrics
                    .apply_lag
                    .with_label_values(&[&id.to_string()])
                    .set(end.saturating_sub(position) as i64);
            }
        }
    }

    /// Deletes outcomes that fell out of the retention window since the last prune.
    pub(super) fn prune_outcomes(&self, runtime: &PartitionRuntime) {
        let below = runtime
            .next_offset()
            .saturating_sub(self.inner.config.outcome_retention);
        let from = runtime.outcomes_pruned_below.load(Ordering::SeqCst);
        match runtime.store.prune_outcomes(from, below) {
            Ok(_) => runtime
                .outcomes_pruned_below
                .store(below.max(from), Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(partition = runtime.id(), error = %e, "pruning old outcomes failed")
            }
        }
    }
}
