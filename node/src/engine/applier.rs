//! The applier loop of one partition: read entries in offset order, apply them in batches,
//! commit each batch atomically, publish the new offset; wait for plugins entries name.

use super::*;
use crate::log::{LogError, PartitionReader};
use crate::model::Digest;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Engine {
    /// The applier thread of one partition.
    pub(super) fn run_applier(
        &self,
        runtime: &PartitionRuntime,
        mut reader: Box<dyn PartitionReader>,
    ) {
        let id = runtime.id();
        let label = id.to_string();
        let inner = &self.inner;
        let wait = Duration::from_millis(100);
        // Entries read but not applied yet: they follow one that waits for a plugin.
        let mut carried: Vec<crate::log::LogRecord> = Vec::new();
        while !runtime.stop.load(Ordering::SeqCst) {
            let read = if carried.is_empty() {
                reader.read(inner.config.batch_max, wait)
            } else {
                Ok(std::mem::take(&mut carried))
            };
            let records = match read {
                Ok(mut records) => {
                    // Exactly once: whatever a log re-delivers below the applied offset is skipped.
                    let next = runtime.next_offset();
                    records.retain(|r| r.offset >= next);
                    if records.is_empty() {
                        continue;
                    }
                    records
                }
                Err(LogError::Truncated { start, .. }) => {
                    let gap = self.gap(runtime.store.clone(), runtime.next_offset(), start, None);
                    runtime.set_health(gap.health());
                    return;
                }
                Err(e) => {
                    tracing::warn!(partition = id, error = %e, "reading the log failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let started = Instant::now();
            let rules = Rules {
                conds: &inner.conds,
                plugins: &inner.plugins,
                partitions: inner.store.partition_count(),
                index: Some(&runtime.index),
            };
            runtime.set_applying(Some(records[0].offset));
            let applied = apply_and_commit(&runtime.store, rules, &records);
            runtime.set_applying(None);
            match applied {
                Ok(mut batch) => {
                    // The index first: whoever sees the new offset must read the new values.
                    runtime.index.apply(batch.writes.iter());
                    inner
                        .metrics
                        .read_index_bytes
                        .with_label_values(&[&label])
                        .set(runtime.index.bytes() as i64);
                    let next = batch.next_offset;
                    let history_bytes = runtime
                        .feed
                        .publish(std::mem::take(&mut batch.changes), next);
                    // Before the new offset wakes the writers waiting for these outcomes.
                    let recent_bytes = {
                        let mut recent = runtime.recent.lock().expect("recent outcomes");
                        recent.record(
                            records[0].offset,
                            next,
                            batch.rejections.clone(),
                            std::mem::take(&mut batch.returned),
                        );
                        recent.bytes()
                    };
                    runtime.set_next_offset(batch.next_offset);
                    inner
                        .metrics
                        .entries_applied
                        .with_label_values(&[&label])
                        .inc_by(batch.entries as u64);
                    inner.metrics.records_expired.inc_by(batch.expired);
                    let rejected = batch.rejections.len();
                    inner
                        .metrics
                        .outcomes
                        .with_label_values(&["applied"])
                        .inc_by((batch.entries - rejected) as u64);
                    for (_, rejection) in &batch.rejections {
                        inner
                            .metrics
                            .outcomes
                            .with_label_values(&[rejection.kind.label()])
                            .inc();
                    }
                    inner
                        .metrics
                        .applied_offset
                        .with_label_values(&[&label])
                        .set(batch.next_offset as i64 - 1);
                    inner
                        .metrics
                        .watch_history_bytes
                        .with_label_values(&[&label])
                        .set(history_bytes as i64);
                    inner
                        .metrics
                        .recent_outcomes_bytes
                        .with_label_values(&[&label])
                        .set(recent_bytes as i64);
                    inner
                        .metrics
                        .partition_latency
                        .observe(&["apply_batch"], crate::metrics::micros(started.elapsed()));
                    if let Some(digest) = batch.waiting_for {
                        carried = records
                            .into_iter()
                            .filter(|r| r.offset >= batch.next_offset)
                            .collect();
                        if !self.wait_for_plugin(runtime, &digest, batch.next_offset) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let reason = format!("applying offsets {}.. failed: {e}", records[0].offset);
                    tracing::error!(partition = id, %reason, "partition stopped");
                    runtime.set_health(Health::Failed { reason });
                    inner
                        .metrics
                        .partition_healthy
                        .with_label_values(&[&label])
                        .set(0);
                    return;
                }
            }
        }
    }

    /// Holds partition `runtime` at `offset` until the plugin `digest` is on this node (it
    /// travels through the log separately from the entries that use it). False if the
    /// partition was stopped meanwhile.
    pub(super) fn wait_for_plugin(
        &self,
        runtime: &PartitionRuntime,
        digest: &Digest,
        offset: u64,
    ) -> bool {
        tracing::warn!(
            partition = runtime.id(),
            offset,
            plugin = %digest,
            "waiting for a plugin this node does not have yet"
        );
        while !runtime.stop.load(Ordering::SeqCst) {
            if !matches!(self.inner.plugins.resolve(digest), Resolved::Missing) {
                tracing::info!(partition = runtime.id(), plugin = %digest, "plugin arrived");
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}
