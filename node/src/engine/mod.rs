//! The applier: turns the log into local state.
//!
//! For every partition the log says this node owns, a dedicated thread reads entries in offset
//! order and applies them in batches, each batch (records + next offset + rejections) one atomic
//! store commit. Waiters learn when an offset is applied and what its outcome was. A checkpoint
//! task makes the store durable and then lets the log reclaim applied entries.

mod apply;
mod partition;
mod plugins;
mod read_index;
mod rmw;

pub use crate::model::{Outcome, Rejection, RejectionKind, Returned};
pub use apply::{AppliedBatch, Rules, apply_and_commit, apply_batch};
pub use partition::{Health, PartitionRuntime, Stall};
pub use plugins::{PluginResolver, PluginSetupError, Plugins, Resolved};
pub use read_index::{Lookup, ReadIndex};
pub use rmw::{compute as compute_read_modify_write, parse_finite_float, parse_redis_integer};

use crate::cond::Conditions;
use crate::log::{LogError, MutationLog, Ownership, PartitionReader};
use crate::metrics::Metrics;
use crate::model::Position;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most entries applied in one atomic commit.
    pub batch_max: usize,
    /// How often the store is made durable and applied log entries released.
    pub checkpoint_interval: Duration,
    /// Delete a partition's local data when this node stops owning it (by default it is kept,
    /// so getting the partition back only needs the entries written since).
    pub drop_released: bool,
    /// Largest in-memory read index of one partition, in bytes (0: none).
    pub read_index_max_bytes: usize,
    /// Outcomes are kept for the last this-many entries of each partition; older ones are
    /// pruned at checkpoints and reported as expired.
    pub outcome_retention: u64,
    /// A partition whose applier has been on one batch longer than this is reported stalled
    /// (`/ready`, `/debug/partitions`, `firescroll_partition_stalled`).
    pub stall_threshold: Duration,
    /// Longest shutdown (or losing a partition) waits for an applier to finish its batch.
    pub stop_patience: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_max: 1024,
            checkpoint_interval: Duration::from_secs(2),
            drop_released: false,
            read_index_max_bytes: 256 << 20,
            outcome_retention: 1_000_000,
            stall_threshold: Duration::from_secs(10),
            stop_patience: Duration::from_secs(5),
        }
    }
}

/// Why waiting for a position ended without it being applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WaitError {
    #[error("partition {0} is not served by this node")]
    NotOwned(u32),
    #[error(
        "partition {partition} has not applied offset {offset} within {waited_ms} ms (it applies offset {next} next)"
    )]
    Timeout {
        partition: u32,
        offset: u64,
        next: u64,
        waited_ms: u128,
    },
}

struct Inner {
    store: Store,
    log: Arc<dyn MutationLog>,
    conds: Arc<Conditions>,
    plugins: PluginResolver,
    metrics: Arc<Metrics>,
    config: EngineConfig,
    partitions: RwLock<BTreeMap<u32, Arc<PartitionRuntime>>>,
    /// Owned partitions whose store could not even be opened, and why.
    unopened: RwLock<BTreeMap<u32, String>>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts applying every partition the log says this node owns, and follows ownership changes.
    /// Returns once the partitions owned at start are open.
    pub fn start(
        store: Store,
        log: Arc<dyn MutationLog>,
        conds: Arc<Conditions>,
        plugins: PluginResolver,
        metrics: Arc<Metrics>,
        config: EngineConfig,
    ) -> (Engine, Vec<JoinHandle<()>>) {
        let engine = Engine {
            inner: Arc::new(Inner {
                plugins,
                store,
                log,
                conds,
                metrics,
                config,
                partitions: RwLock::new(BTreeMap::new()),
                unopened: RwLock::new(BTreeMap::new()),
            }),
        };
        let mut ownership = engine.inner.log.ownership();
        let owned = ownership.borrow_and_update().clone();
        engine.reconcile(&owned);
        let follower = {
            let engine = engine.clone();
            tokio::spawn(async move {
                while ownership.changed().await.is_ok() {
                    let owned = ownership.borrow_and_update().clone();
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.reconcile(&owned)).await;
                }
            })
        };
        let checkpointer = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(engine.inner.config.checkpoint_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    engine.report_stalls();
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.checkpoint()).await;
                }
            })
        };
        (engine, vec![follower, checkpointer])
    }

    /// The partition count of the namespace.
    pub fn partition_count(&self) -> u32 {
        self.inner.store.partition_count()
    }

    /// A partition this node owns.
    pub fn partition(&self, id: u32) -> Option<Arc<PartitionRuntime>> {
        self.inner
            .partitions
            .read()
            .expect("partitions lock")
            .get(&id)
            .cloned()
    }

    /// Every owned partition, by id.
    pub fn partitions(&self) -> Vec<Arc<PartitionRuntime>> {
        let map = self.inner.partitions.read().expect("partitions lock");
        map.values().cloned().collect()
    }

    /// Owned partitions that could not be opened at all, with the reason.
    pub fn unopened(&self) -> BTreeMap<u32, String> {
        self.inner.unopened.read().expect("unopened lock").clone()
    }

    /// Opens newly owned partitions and stops those no longer owned.
    fn reconcile(&self, owned: &Ownership) {
        let current: Vec<u32> = {
            let map = self.inner.partitions.read().expect("partitions lock");
            map.keys().copied().collect()
        };
        for id in current.iter().filter(|id| !owned.contains(id)) {
            let removed = self
                .inner
                .partitions
                .write()
                .expect("partitions lock")
                .remove(id);
            if let Some(runtime) = removed {
                runtime.stop_applier(self.inner.config.stop_patience);
                self.inner.metrics.forget_partition(*id);
                tracing::info!(partition = id, "partition released");
                if self.inner.config.drop_released {
                    match runtime.store.destroy() {
                        Ok(()) => {
                            tracing::info!(partition = id, "released partition's data deleted")
                        }
                        Err(e) => {
                            tracing::error!(partition = id, error = %e, "deleting a released partition's data failed")
                        }
                    }
                }
            }
        }
        let mut unopened = self.inner.unopened.write().expect("unopened lock");
        unopened.retain(|id, _| owned.contains(id));
        for &id in owned.iter().filter(|id| !current.contains(id)) {
            match self.open_partition(id) {
                Ok(runtime) => {
                    unopened.remove(&id);
                    self.inner
                        .partitions
                        .write()
                        .expect("partitions lock")
                        .insert(id, runtime);
                }
                Err(reason) => {
                    unopened.insert(id, reason);
                }
            }
        }
        drop(unopened);
        self.inner
            .metrics
            .partitions
            .set(self.inner.partitions.read().expect("partitions lock").len() as i64);
    }

    fn open_partition(&self, id: u32) -> Result<Arc<PartitionRuntime>, String> {
        let metrics = &self.inner.metrics;
        let label = id.to_string();
        let failed = |reason: String| {
            tracing::error!(partition = id, %reason, "partition cannot be opened");
            metrics
                .partition_healthy
                .with_label_values(&[&label])
                .set(0);
            reason
        };
        let store = match self.inner.store.partition(id) {
            Ok(store) => store,
            Err(e) => return Err(failed(format!("opening the partition's store failed: {e}"))),
        };
        let next = match store.next_offset() {
            Ok(next) => next,
            Err(e) => {
                let reason = failed(format!("reading the applied offset failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, 0, reason)));
            }
        };
        metrics
            .applied_offset
            .with_label_values(&[&label])
            .set(next as i64 - 1);
        let reader = match self.inner.log.reader(id, next) {
            Ok(reader) => reader,
            Err(LogError::Truncated { start, .. }) => {
                return Ok(Arc::new(self.gap(store, next, start)));
            }
            Err(e) => {
                let reason = failed(format!("opening the log at offset {next} failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, next, reason)));
            }
        };
        let index = match ReadIndex::load(&store, self.inner.config.read_index_max_bytes) {
            Ok(index) => index,
            Err(e) => {
                let reason = failed(format!("loading the read index failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, next, reason)));
            }
        };
        let runtime = Arc::new(PartitionRuntime::new(store, next, Health::Serving, index));
        metrics
            .partition_healthy
            .with_label_values(&[&label])
            .set(1);
        let handle = {
            let engine = self.clone();
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("apply-{id}"))
                .spawn(move || engine.run_applier(&runtime, reader))
                .expect("spawning an applier thread")
        };
        *runtime.applier.lock().expect("applier lock") = Some(handle);
        tracing::info!(partition = id, next_offset = next, "partition opened");
        Ok(runtime)
    }

    fn gap(&self, store: crate::store::PartitionStore, next: u64, start: u64) -> PartitionRuntime {
        let id = store.id();
        tracing::error!(
            partition = id,
            next_offset = next,
            log_start = start,
            "NOT SERVING partition {id}: it needs log entries from offset {next}, but the log now starts at {start} \
             (retention removed them). Restore the partition from a snapshot or rebuild this replica"
        );
        self.inner
            .metrics
            .partition_healthy
            .with_label_values(&[&id.to_string()])
            .set(0);
        PartitionRuntime::new(
            store,
            next,
            Health::Gap {
                next_offset: next,
                log_start: start,
            },
            ReadIndex::off(),
        )
    }

    /// The applier thread of one partition.
    fn run_applier(&self, runtime: &PartitionRuntime, mut reader: Box<dyn PartitionReader>) {
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
                    let gap = self.gap(runtime.store.clone(), runtime.next_offset(), start);
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
            };
            runtime.set_applying(Some(records[0].offset));
            let applied = apply_and_commit(&runtime.store, rules, &records);
            runtime.set_applying(None);
            match applied {
                Ok(batch) => {
                    // The index first: whoever sees the new offset must read the new values.
                    runtime.index.apply(batch.writes.iter());
                    runtime.set_next_offset(batch.next_offset);
                    inner
                        .metrics
                        .entries_applied
                        .with_label_values(&[&label])
                        .inc_by(batch.entries as u64);
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
                        .partition_latency
                        .with_label_values(&["apply_batch"])
                        .observe(started.elapsed().as_micros() as f64);
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
    fn wait_for_plugin(&self, runtime: &PartitionRuntime, digest: &str, offset: u64) -> bool {
        tracing::warn!(
            partition = runtime.id(),
            offset,
            plugin = digest,
            "waiting for a plugin this node does not have yet"
        );
        while !runtime.stop.load(Ordering::SeqCst) {
            if !matches!(self.inner.plugins.resolve(digest), Resolved::Missing) {
                tracing::info!(partition = runtime.id(), plugin = digest, "plugin arrived");
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Makes the store durable, then lets the log reclaim what is applied; refreshes lag metrics.
    pub fn checkpoint(&self) {
        let partitions = self.partitions();
        let applied: Vec<(u32, u64)> = partitions
            .iter()
            .map(|p| (p.id(), p.next_offset()))
            .collect();
        if let Err(e) = self.inner.store.persist() {
            tracing::error!(error = %e, "making the store durable failed; keeping the log");
            return;
        }
        for runtime in &partitions {
            self.prune_outcomes(runtime);
        }
        for (id, next) in applied {
            self.inner.log.release(id, next);
            if let Ok((_, end)) = self.inner.log.bounds(id) {
                self.inner
                    .metrics
                    .apply_lag
                    .with_label_values(&[&id.to_string()])
                    .set(end.saturating_sub(next) as i64);
            }
        }
    }

    /// Deletes outcomes that fell out of the retention window since the last prune.
    fn prune_outcomes(&self, runtime: &PartitionRuntime) {
        let below = runtime
            .next_offset()
            .saturating_sub(self.inner.config.outcome_retention);
        let from = runtime.outcomes_pruned_below.load(Ordering::SeqCst);
        match runtime.store.prune_rejections(from, below) {
            Ok(_) => runtime
                .outcomes_pruned_below
                .store(below.max(from), Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(partition = runtime.id(), error = %e, "pruning old outcomes failed")
            }
        }
    }

    /// Waits until `position` is applied on this node, up to `timeout`.
    pub async fn wait_applied(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let runtime = self
            .partition(position.partition)
            .ok_or(WaitError::NotOwned(position.partition))?;
        let mut next = runtime.subscribe();
        let started = Instant::now();
        match tokio::time::timeout(timeout, next.wait_for(|&n| n > position.offset)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WaitError::NotOwned(position.partition)),
            Err(_) => Err(WaitError::Timeout {
                partition: position.partition,
                offset: position.offset,
                next: runtime.next_offset(),
                waited_ms: started.elapsed().as_millis(),
            }),
        }
    }

    /// The outcome of the entry at `position`: `None` while it is not applied here yet.
    pub fn outcome(&self, position: Position) -> Result<Option<Outcome>, OutcomeError> {
        let runtime = self
            .partition(position.partition)
            .ok_or(OutcomeError::NotOwned(position.partition))?;
        let next = runtime.next_offset();
        if next <= position.offset {
            return Ok(None);
        }
        if position.offset < next.saturating_sub(self.inner.config.outcome_retention) {
            return Ok(Some(Outcome::Expired));
        }
        match runtime.store.rejection(position.offset)? {
            None => {
                let returned = match runtime.store.returned(position.offset)? {
                    None => Vec::new(),
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        StoreError::Corrupt(format!("stored values at {position:?}: {e}"))
                    })?,
                };
                Ok(Some(Outcome::Applied(returned)))
            }
            Some(bytes) => {
                let rejection: Rejection = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Corrupt(format!("stored outcome at {position:?}: {e}"))
                })?;
                Ok(Some(Outcome::Rejected(rejection)))
            }
        }
    }

    /// How long a partition's applier may stay on one batch before it is reported stalled.
    pub fn stall_threshold(&self) -> Duration {
        self.inner.config.stall_threshold
    }

    /// Sets `firescroll_partition_stalled` for every owned partition.
    fn report_stalls(&self) {
        let threshold = self.inner.config.stall_threshold;
        for runtime in self.partitions() {
            let stall = runtime.stalled(threshold);
            if let Some(stall) = stall {
                tracing::warn!(
                    partition = runtime.id(),
                    offset = stall.offset,
                    for_ms = stall.for_ms,
                    "partition stalled: the applier has been on one batch for too long"
                );
            }
            self.inner
                .metrics
                .partition_stalled
                .with_label_values(&[&runtime.id().to_string()])
                .set(i64::from(stall.is_some()));
        }
    }

    /// Stops every applier and makes the store durable.
    pub fn shutdown(&self) {
        let partitions: Vec<_> = {
            let mut map = self.inner.partitions.write().expect("partitions lock");
            std::mem::take(&mut *map).into_values().collect()
        };
        for runtime in &partitions {
            runtime.stop_applier(self.inner.config.stop_patience);
        }
        if let Err(e) = self.inner.store.persist() {
            tracing::error!(error = %e, "final store flush failed");
        }
        for runtime in &partitions {
            self.inner.log.release(runtime.id(), runtime.next_offset());
        }
    }
}

/// Why an outcome could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("partition {0} is not served by this node")]
    NotOwned(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests;
