//! One turn of a partition's applier: read the entries that follow in offset order, apply them
//! as one batch, commit it atomically, publish the new offset; hold the partition while it
//! waits for a plugin an entry names; stop it before an entry of a newer log format. The
//! threads that run turns are the pool's (`pool.rs`).

use super::pool::{Turn, Work};
use super::*;
use crate::log::LogError;
use crate::model::Digest;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a partition waits before reading its log again after a read failed.
const READ_RETRY: Duration = Duration::from_secs(1);

impl Engine {
    /// Stops partition `runtime` as [`Health::Diverged`]: the log's entry at `offset` is not
    /// the last one its state applied. When that entry is the last of the snapshot the state
    /// was restored from, with nothing applied after it, the state is the snapshot's alone.
    fn diverged(&self, runtime: &PartitionRuntime, offset: u64) {
        let snapshot = match runtime.store.restored_from() {
            Ok(Some((next, key))) if next == offset + 1 && runtime.next_offset() == next => {
                Some(key)
            }
            _ => None,
        };
        let health = Health::Diverged { offset, snapshot };
        self.report_not_serving(runtime.id(), &health);
        runtime.set_health(health);
    }

    /// Applies at most one batch of partition `runtime`, reading its log without waiting.
    pub(super) fn apply_turn(&self, runtime: &PartitionRuntime, work: &mut Work) -> Turn {
        let id = runtime.id();
        let label = id.to_string();
        let inner = &self.inner;
        if runtime.stop.load(Ordering::SeqCst) {
            return Turn::Finished;
        }
        if let Some((digest, offset)) = &work.waiting_for {
            if !self.plugin_arrived(runtime, digest, *offset) {
                return Turn::Waiting;
            }
            work.waiting_for = None;
            runtime.set_plugin_wait(None);
        }
        if work.retry_at.is_some_and(|at| Instant::now() < at) {
            return Turn::Waiting;
        }
        work.retry_at = None;
        let Some(reader) = work.reader.as_mut() else {
            return Turn::Finished;
        };
        let read = if work.carried.is_empty() {
            reader.read(inner.config.batch_max, Duration::ZERO)
        } else {
            Ok(std::mem::take(&mut work.carried))
        };
        let records = match read {
            Ok(mut records) => {
                if let Some(last) = work.lineage {
                    // The reader started at (or before) the last entry applied: the log must
                    // hold that entry there, or it is not the log the state came from. A
                    // reader that starts after it (Kafka's assignment began at the next offset)
                    // has nothing to compare.
                    match records.iter().find(|r| r.offset >= last.offset) {
                        Some(r) if r.offset == last.offset && !last.is(&r.payload) => {
                            self.diverged(runtime, last.offset);
                            return Turn::Finished;
                        }
                        Some(_) => work.lineage = None,
                        None => {}
                    }
                }
                // Exactly once: whatever a log re-delivers below the applied offset is skipped.
                let next = runtime.next_offset();
                records.retain(|r| r.offset >= next);
                if records.is_empty() {
                    // Nothing left to apply: how far the reader got past offsets that hold no
                    // entry (Kafka's transaction markers) ends a catch-up and corrects the lag.
                    // (The reader never waits to say; it wakes the partition when it moves.)
                    if let Some(position) = reader.position() {
                        runtime.passed(position);
                    }
                    return Turn::Idle;
                }
                records
            }
            Err(LogError::Truncated { start, .. }) => {
                let gap = self.gap(runtime.store.clone(), runtime.next_offset(), start, None);
                runtime.set_health(gap.health());
                return Turn::Finished;
            }
            Err(e) => {
                tracing::warn!(partition = id, error = %e, "reading the log failed; retrying");
                work.retry_at = Some(Instant::now() + READ_RETRY);
                return Turn::Waiting;
            }
        };
        let started = Instant::now();
        let rules = Rules {
            conds: &inner.conds,
            plugins: &inner.plugins,
            partitions: inner.store.partition_count(),
            index: Some(&runtime.index),
            reject_at: &inner.config.reject_entries_at,
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
                    work.carried = records
                        .into_iter()
                        .filter(|r| r.offset >= batch.next_offset)
                        .collect();
                    tracing::warn!(
                        partition = id,
                        offset = batch.next_offset,
                        plugin = %digest,
                        "waiting for a plugin this node does not have yet"
                    );
                    work.waiting_for = Some((digest, batch.next_offset));
                    runtime.set_plugin_wait(Some((digest, batch.next_offset)));
                    return Turn::Waiting;
                }
                if let Some(version) = batch.newer_format {
                    let health = Health::NewerFormat {
                        offset: batch.next_offset,
                        version,
                    };
                    tracing::error!(
                        partition = id,
                        offset = batch.next_offset,
                        version,
                        applies_up_to = crate::model::ENTRY_VERSION,
                        "partition stopped: {}",
                        health.reason().unwrap_or_default()
                    );
                    runtime.set_health(health);
                    inner
                        .metrics
                        .partition_healthy
                        .with_label_values(&[&label])
                        .set(0);
                    return Turn::Finished;
                }
                Turn::More
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
                Turn::Finished
            }
        }
    }

    /// Stops partition `runtime` after a turn of it panicked (a bug: retrying would meet it
    /// again), reporting it as a failure naming the batch it was applying. Reads keep seeing
    /// the last committed state; a restart goes on after the last batch committed.
    pub(super) fn turn_panicked(
        &self,
        runtime: &PartitionRuntime,
        panic: &(dyn std::any::Any + Send),
    ) -> Turn {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        let at = match runtime.applying_offset() {
            Some(offset) => format!("applying the entries from offset {offset}"),
            None => format!("reading the log at offset {}", runtime.next_offset()),
        };
        runtime.set_applying(None);
        let reason = format!(
            "{at} panicked: {message} (a bug in FireScroll: please report it with this \
             message; the partition applies nothing more until the node restarts, which goes \
             on after the last batch committed)"
        );
        tracing::error!(partition = runtime.id(), %reason, "partition stopped");
        runtime.set_health(Health::Failed { reason });
        self.inner
            .metrics
            .partition_healthy
            .with_label_values(&[&runtime.id().to_string()])
            .set(0);
        Turn::Finished
    }

    /// Books a batch found only by the pool's sweep: the partition's log did not wake it.
    pub(super) fn note_missed_wakeup(&self, runtime: &PartitionRuntime) {
        self.inner.metrics.apply_missed_wakeups.inc();
        tracing::warn!(
            partition = runtime.id(),
            "the log did not announce entries to the applier; found them on the once-a-second sweep"
        );
    }

    /// Whether the plugin `digest` that partition `runtime` waits for at `offset` is on this
    /// node now (it travels through the log separately from the entries that use it).
    fn plugin_arrived(&self, runtime: &PartitionRuntime, digest: &Digest, offset: u64) -> bool {
        if matches!(self.inner.plugins.resolve(digest), Resolved::Missing) {
            return false;
        }
        tracing::info!(partition = runtime.id(), offset, plugin = %digest, "plugin arrived");
        true
    }
}
