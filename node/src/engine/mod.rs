//! The applier: turns the log into local state.
//!
//! For every partition the log says this node owns, an applier (a few pooled threads take turns,
//! one partition at a time each) reads entries in offset order and applies them in batches, each batch (records + next offset + rejections) one atomic
//! store commit. Waiters learn when an offset is applied and what its outcome was. A checkpoint
//! task makes the store durable and then lets the log reclaim applied entries.

mod applier;
mod apply;
mod checkpoint;
mod disk_floor;
mod feed;
mod feed_file;
mod json_edit;
mod long_double;
mod new_disk;
mod ownership;
mod partition;
mod plugins;
mod pool;
mod read_index;
mod recent;
mod rmw;
mod standby;
mod waiters;

pub use crate::model::{Outcome, Rejection, RejectionKind, Returned};
pub use apply::{
    AppliedBatch, ENTRY_READ_BYTES, MAX_COMPUTED_BYTES, Rules, apply_and_commit, apply_batch,
    compute_read_modify_write, edit_json_alone,
};
pub use disk_floor::free_bytes;
pub use feed::{
    Change, ChangeKind, EntryChanges, Feed, Published, Subscription, TooOld, watch_prefix,
};
pub use json_edit::{
    EditLimits, Edited, JsonEditError, edit as edit_json,
    operand_expected as json_operand_expected, operand_fits as json_operand_fits,
};
pub use long_double::LongDouble;
pub use new_disk::OPENING_ON_NEW_DISK;
pub use partition::{Health, PartitionRuntime, Stall, plugin_wait_advice};
pub use plugins::{
    PluginResolver, PluginRestoreError, PluginSetupError, Plugins, Resolved, plugins_to_back_up,
    restore_plugins,
};
pub use read_index::{Lookup, ReadIndex};
pub use rmw::{RmwError, parse_finite_float, parse_redis_integer};
pub use waiters::{OutcomeError, WaitError};

/// Why an owned partition is not open yet, as errors and `/ready` say it.
pub const OPENING: &str = "opening its store and its place in the log, and with S3 on, looking for or restoring a newer snapshot";

use crate::cond::Conditions;
use crate::log::MutationLog;
use crate::metrics::Metrics;
use crate::model::Position;
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
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
    /// Bytes of change history each partition keeps in memory for watches to resume from.
    pub watch_history_bytes: usize,
    /// Committed batches a watch may fall behind before it is cut off.
    pub watch_lag_batches: usize,
    /// Where each partition's watch history is saved when the node stops, for the next start
    /// (none: not saved).
    pub watch_history_dir: Option<std::path::PathBuf>,
    /// A partition whose applier has been on one batch longer than this is reported stalled
    /// (`/ready`, `/debug/partitions`, `firescroll_partition_stalled`).
    pub stall_threshold: Duration,
    /// Longest shutdown (or losing a partition) waits for an applier to finish its batch.
    pub stop_patience: Duration,
    /// With S3 configured: a partition opened with an older state than the newest verified
    /// snapshot the log still continues is restored from it first.
    pub snapshots: Option<Arc<crate::backup::Snapshots>>,
    /// Where a snapshot is downloaded to before a partition is restored from it (read from
    /// the file as it restores; removed after, and what an earlier run left is removed when
    /// the engine starts).
    pub snapshot_download_dir: std::path::PathBuf,
    /// The free space a restore leaves on the volume of `snapshot_download_dir`
    /// (`MIN_FREE_DISK_BYTES`): a snapshot whose download would take the volume under it is not
    /// fetched, and a restore stops when the volume falls under it (0: not checked).
    pub min_free_disk_bytes: u64,
    /// Threads that apply the owned partitions (0: one per core).
    pub apply_threads: usize,
    /// Entries rejected unread (REJECT_ENTRIES_AT).
    pub reject_entries_at: Arc<BTreeSet<Position>>,
    /// A partition on standby stays there until it is owned here again or
    /// [`Engine::end_standby`] is called (gossip calls it once another member serves the
    /// partition). Without (no gossip to say so), it ends at the first rebalance after it was
    /// taken that does not give it back.
    pub standby_until_served_elsewhere: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_max: 1024,
            checkpoint_interval: Duration::from_secs(2),
            drop_released: false,
            read_index_max_bytes: 256 << 20,
            outcome_retention: 1_000_000,
            watch_history_bytes: 4 << 20,
            watch_lag_batches: 1024,
            watch_history_dir: None,
            stall_threshold: Duration::from_secs(10),
            stop_patience: Duration::from_secs(5),
            snapshots: None,
            // One folder per process and per config: an engine removes what is in its folder
            // when it starts, so two engines must never share one.
            snapshot_download_dir: {
                static CONFIGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = CONFIGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::env::temp_dir()
                    .join(format!("firescroll-snapshots-{}-{n}", std::process::id()))
            },
            min_free_disk_bytes: 0,
            apply_threads: 0,
            reject_entries_at: Arc::default(),
            standby_until_served_elsewhere: false,
        }
    }
}

struct Inner {
    store: Store,
    log: Arc<dyn MutationLog>,
    conds: Arc<Conditions>,
    plugins: PluginResolver,
    metrics: Arc<Metrics>,
    config: EngineConfig,
    /// Swapped whole on an ownership change: every read looks a partition up, and a lock
    /// (even a read lock) is a cache line all request threads write to.
    partitions: ArcSwap<BTreeMap<u32, Arc<PartitionRuntime>>>,
    /// Serializes changes of `partitions`.
    partitions_changing: Mutex<()>,
    /// Partitions taken from this node while their next owner is not settled (the group is
    /// rebalancing, or the broker is away): not applied, their last state answering reads.
    standby: ArcSwap<BTreeMap<u32, Arc<PartitionRuntime>>>,
    /// For each partition on standby, the rebalances the log had completed when it went there.
    standby_since: Mutex<BTreeMap<u32, u64>>,
    /// The change history of partitions released here, kept for when the log gives one back
    /// where it took it (another replica group may serve it first and end its standby copy):
    /// each within its share of `WATCH_HISTORY_BYTES`, as when it was owned.
    released_history: Mutex<BTreeMap<u32, feed_file::SavedHistory>>,
    /// Bumped whenever `partitions` or `standby` change: what waits for a partition that is
    /// away to come back watches it.
    changed: tokio::sync::watch::Sender<u64>,
    /// Owned partitions whose store could not even be opened, and why.
    unopened: RwLock<BTreeMap<u32, String>>,
    /// Owned partitions still being opened (a restore may wait on S3): reads answer that they
    /// are loading, and waits for their writes' outcomes wait for them.
    opening: tokio::sync::watch::Sender<BTreeSet<u32>>,
    /// True once the node stops: partitions still to open are not opened, and S3 calls of an
    /// open in progress are dropped (an open in the background must not start applying after
    /// the final flush, nor reach S3 from a runtime that is going away).
    stop: tokio::sync::watch::Sender<bool>,
    /// Held while ownership changes are applied, so shutdown can wait for one in progress.
    reconciling: Mutex<()>,
    /// S3 snapshots (object keys) found made from another log than the one this node reads:
    /// restores skip them. Kept in memory only: after a restart one may be restored once more,
    /// found out again and set aside.
    foreign_snapshots: Mutex<BTreeSet<String>>,
    /// The threads that apply the owned partitions.
    pool: pool::ApplierPool,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts applying every partition the log says this node owns, and follows ownership changes.
    /// Without S3 snapshots, returns once the partitions owned at start are open (from local
    /// disk: quick). With them, an open may wait on S3 to list snapshots (up to 10 s a
    /// partition, one after another): the partitions owned at start then open in the
    /// background, listed by [`Engine::opening`] meanwhile, so the node serves `/up` and says
    /// why it is not ready instead of serving nothing at all.
    pub fn start(
        store: Store,
        log: Arc<dyn MutationLog>,
        conds: Arc<Conditions>,
        plugins: PluginResolver,
        metrics: Arc<Metrics>,
        config: EngineConfig,
    ) -> (Engine, Vec<JoinHandle<()>>) {
        // Downloads an earlier process left (it stopped during a restore) are of no use: no
        // restore is under way before this start opens a partition.
        match std::fs::remove_dir_all(&config.snapshot_download_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => tracing::warn!(
                dir = %config.snapshot_download_dir.display(),
                error = %e,
                "cannot remove the snapshot downloads an earlier run left"
            ),
            _ => {}
        }
        let pool = pool::ApplierPool::new(config.apply_threads);
        let engine = Engine {
            inner: Arc::new(Inner {
                pool,
                plugins,
                store,
                log,
                conds,
                metrics,
                config,
                partitions: ArcSwap::from_pointee(BTreeMap::new()),
                partitions_changing: Mutex::new(()),
                standby: ArcSwap::from_pointee(BTreeMap::new()),
                standby_since: Mutex::new(BTreeMap::new()),
                released_history: Mutex::new(BTreeMap::new()),
                changed: tokio::sync::watch::Sender::new(0),
                unopened: RwLock::new(BTreeMap::new()),
                opening: tokio::sync::watch::Sender::new(BTreeSet::new()),
                stop: tokio::sync::watch::Sender::new(false),
                reconciling: Mutex::new(()),
                foreign_snapshots: Mutex::new(BTreeSet::new()),
            }),
        };
        engine.inner.pool.start(Arc::downgrade(&engine.inner));
        let mut ownership = engine.inner.log.ownership();
        let owned = ownership.borrow_and_update().clone();
        let opens_in_background = engine.inner.config.snapshots.is_some();
        if opens_in_background {
            engine.mark_opening(owned.owned.iter());
        } else {
            engine.reconcile(&owned);
        }
        let follower = {
            let engine = engine.clone();
            tokio::spawn(async move {
                if opens_in_background {
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.reconcile(&owned)).await;
                }
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
        self.inner.partitions.load().get(&id).cloned()
    }

    /// Runs `f` on a partition this node owns, without taking a reference to it (that is an
    /// atomic every request thread would write to).
    pub fn with_partition<R>(&self, id: u32, f: impl FnOnce(&PartitionRuntime) -> R) -> Option<R> {
        self.inner
            .partitions
            .load()
            .get(&id)
            .map(|runtime| f(runtime))
    }

    /// Every owned partition, by id.
    pub fn partitions(&self) -> Vec<Arc<PartitionRuntime>> {
        self.inner.partitions.load().values().cloned().collect()
    }

    /// Changes the owned partitions with `f`, one change at a time.
    fn change_partitions<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<u32, Arc<PartitionRuntime>>) -> R,
    ) -> R {
        self.change_map(&self.inner.partitions, f)
    }

    /// Changes `map` (the owned partitions or those on standby) with `f`, one change of either
    /// at a time, and tells those waiting for a partition to come back.
    fn change_map<R>(
        &self,
        map: &ArcSwap<BTreeMap<u32, Arc<PartitionRuntime>>>,
        f: impl FnOnce(&mut BTreeMap<u32, Arc<PartitionRuntime>>) -> R,
    ) -> R {
        let _changing = self
            .inner
            .partitions_changing
            .lock()
            .expect("partitions lock");
        let mut changed = BTreeMap::clone(&map.load());
        let result = f(&mut changed);
        map.store(Arc::new(changed));
        self.inner.changed.send_modify(|n| *n += 1);
        result
    }

    /// Owned partitions that could not be opened at all, with the reason.
    pub fn unopened(&self) -> BTreeMap<u32, String> {
        self.inner.unopened.read().expect("unopened lock").clone()
    }

    /// Owned partitions still being opened (restoring from, or waiting on, S3).
    pub fn opening(&self) -> BTreeSet<u32> {
        self.inner.opening.borrow().clone()
    }

    /// Whether the node is stopping (no partition opens any more).
    fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Whether `partition` is owned and still being opened.
    pub fn is_opening(&self, partition: u32) -> bool {
        self.inner.opening.borrow().contains(&partition)
    }

    /// How long a partition's applier may stay on one batch before it is reported stalled.
    pub fn stall_threshold(&self) -> Duration {
        self.inner.config.stall_threshold
    }

    /// Sets `firescroll_partition_stalled` for every owned partition.
    fn report_stalls(&self) {
        let threshold = self.inner.config.stall_threshold;
        // A thread stuck in one batch gets a replacement, so the other partitions keep theirs.
        self.inner.pool.replace_stuck(threshold);
        for runtime in self.partitions() {
            let stall = runtime.stalled(threshold);
            match stall {
                Some(Stall {
                    offset,
                    for_ms,
                    plugin: Some(plugin),
                }) => tracing::warn!(
                    partition = runtime.id(),
                    offset,
                    for_ms,
                    %plugin,
                    "partition stalled: {}",
                    plugin_wait_advice(runtime.id(), offset, &plugin)
                ),
                Some(Stall { offset, for_ms, .. }) => tracing::warn!(
                    partition = runtime.id(),
                    offset,
                    for_ms,
                    "partition stalled: the applier has been on one batch for too long"
                ),
                None => {}
            }
            self.inner
                .metrics
                .partition_stalled
                .with_label_values(&[&runtime.id().to_string()])
                .set(i64::from(stall.is_some()));
        }
    }

    /// Stops every applier and makes the store durable; says why it could not (the next start
    /// then applies again from the log what was not flushed).
    pub fn shutdown(&self) -> Option<StoreError> {
        // An open in progress drops its S3 calls and ends; none starts after it.
        self.inner.stop.send_replace(true);
        drop(self.inner.reconciling.lock().expect("reconciling lock"));
        let partitions: Vec<_> = self
            .change_partitions(std::mem::take)
            .into_values()
            .collect();
        for runtime in &partitions {
            runtime.stop_applier(&self.inner.pool, self.inner.config.stop_patience);
        }
        self.inner.pool.shutdown();
        // No restore runs any more: the download folder goes when empty (in the temp dir by
        // default, one per engine, each start leaving one behind otherwise).
        let _ = std::fs::remove_dir(&self.inner.config.snapshot_download_dir);
        if let Err(e) = self.inner.store.persist() {
            tracing::error!(error = %e, "final store flush failed");
            // Nothing below the applied offsets may be released: the store did not keep them.
            return Some(e);
        }
        for runtime in &partitions {
            self.inner.log.release(runtime.id(), runtime.next_offset());
        }
        // The store is durable at each partition's next offset: its history up to there holds
        // for the next start.
        if let Some(dir) = &self.inner.config.watch_history_dir {
            for runtime in &partitions {
                let saved = runtime.feed.saved();
                if saved.next != runtime.next_offset() || saved.start >= saved.next {
                    continue;
                }
                if let Err(e) = feed_file::save(dir, runtime.id(), &saved) {
                    tracing::warn!(partition = runtime.id(), error = %e, "could not save the watch history; watches resume from after this restart only");
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
