//! One owned partition at runtime: its store, how far it has applied, its health, its applier.

use super::{Feed, Lookup, ReadIndex, Subscription, TooOld};
use crate::model::Digest as ModuleDigest;
use crate::model::now_ms;
use crate::model::{KeyInfo, Record};
use crate::store::{
    Digest, PartitionStore, Scan, StoreError, encode_key, header_len, is_expired_now, live_record,
    to_record,
};
use bytes::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whether a partition is applying and serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Applying the log and serving reads.
    Serving,
    /// Stopped by a non-deterministic failure (disk, corrupt files). Reads still see the state as
    /// of the last commit; nothing more is applied until the cause is fixed and the node restarts.
    Failed { reason: String },
    /// The log no longer holds the entries this partition needs next (docs/architecture.md invariant 8):
    /// serving it would silently miss writes, so it is not served.
    Gap {
        next_offset: u64,
        log_start: u64,
        /// Why no S3 snapshot filled the gap (`None` with snapshots off).
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshots: Option<String>,
    },
    /// Its disk is new (its store and the embedded log both empty) and S3 may hold its past,
    /// but no snapshot of it was restored (`reason`: S3 away, a snapshot that did not verify,
    /// no room on the disk). Serving it, or taking writes for it, would number new entries
    /// from 0 and leave everything the snapshots hold behind them for good, so it does
    /// neither until a restore succeeds or the bucket holds no snapshot of it.
    Unrestored { reason: String },
    /// The log holds another entry at `offset` than the one this partition's state last
    /// applied there (or none): it is not the log the state was applied from (a topic deleted
    /// and created again, an unclean leader election, another node's log folder). Applying on
    /// would skip the new log's entries before it for good, and the old state is not the new
    /// log's, so the partition is neither applied nor served until an operator decides which
    /// one is right — unless its whole state is the S3 snapshot `snapshot` this node restored
    /// (nothing applied after it): a snapshot is only a copy of a log's prefix, and one of
    /// another log is set aside at the next retry, the partition emptied and rebuilt from the
    /// log (or an older snapshot of it).
    Diverged {
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
    },
    /// The entry at `offset` is of a newer log format (`version`) than this build applies.
    /// Rejecting it would make this replica disagree with newer ones, so the partition stops
    /// before it; reads see the state before it. A build that applies the version resumes there.
    NewerFormat { offset: u64, version: u64 },
    /// Taken from this node by the log while its next owner is not settled (a rebalance, or a
    /// session lost with the broker): not applied, and its last state answers reads of it when
    /// no node of the region serves it, as a replica that lags would.
    Released,
}

impl Health {
    /// Whether the partition's store may answer reads (a gap's is behind entries the log no
    /// longer holds; an unrestored one's is empty in place of what its snapshots hold).
    fn has_state(&self) -> bool {
        !matches!(
            self,
            Health::Gap { .. } | Health::Unrestored { .. } | Health::Diverged { .. }
        )
    }

    /// Whether a retry may serve the partition: a gap a snapshot may fill now, a restore
    /// that may succeed now, or a state restored from a snapshot of another log, which the
    /// retry sets aside.
    pub(super) fn retried(&self) -> bool {
        matches!(
            self,
            Health::Gap { .. }
                | Health::Unrestored { .. }
                | Health::Diverged {
                    snapshot: Some(_),
                    ..
                }
        )
    }

    /// Why the partition is not serving, in words that say what to do (`None` while serving).
    pub fn reason(&self) -> Option<String> {
        match self {
            Health::Serving => None,
            Health::Failed { reason } => Some(format!("it stopped applying ({reason})")),
            Health::Gap {
                next_offset,
                log_start,
                snapshots,
            } => Some(format!(
                "{}{}",
                gap_words(*next_offset, *log_start),
                snapshots
                    .as_deref()
                    .map(|why| format!("; no S3 snapshot fills it: {why}"))
                    .unwrap_or_default()
            )),
            Health::Unrestored { reason } => Some(format!(
                "its disk is new and no S3 snapshot of it was restored ({reason}); it takes no \
                 writes until one is, so that new entries are numbered after the snapshot's \
                 and nothing it holds is lost. The node retries: bring S3 back or give the disk \
                 room; to start the partition empty instead, delete its snapshots from the \
                 bucket"
            )),
            Health::Diverged {
                offset,
                snapshot: Some(snapshot),
            } => Some(format!(
                "the log holds another entry at offset {offset} than the snapshot {snapshot} \
                 this node restored it from: the snapshot was made from another log (a topic \
                 deleted and created again). It is set aside at the next retry and the \
                 partition rebuilt from the log"
            )),
            Health::Diverged { offset, .. } => Some(format!(
                "the log holds another entry at offset {offset} than the one this node applied \
                 there: it is not the log this partition's state came from (a topic deleted and \
                 created again, an unclean leader election, another node's log folder put in \
                 place). Nothing more is applied and the partition is not served. If the log is \
                 the wrong one, point the node at the right one and restart it; if the log is \
                 right, this state is not of it: stop the node, remove its DB_PATH and start \
                 it; it rebuilds from the log, setting aside any S3 snapshot made from the old \
                 log that it restores"
            )),
            Health::NewerFormat { offset, version } => Some(format!(
                "the entry at offset {offset} is log format v{version}, newer than this node \
                 applies (up to v{}); nothing from it on is applied: run a FireScroll release \
                 that applies v{version} on this node, and it resumes at that entry",
                crate::model::ENTRY_VERSION
            )),
            Health::Released => Some(
                "the log took it from this node and has not settled its next owner (a \
                 rebalance, or the broker is away); reads are answered from its last state \
                 meanwhile"
                    .into(),
            ),
        }
    }
}

/// What a gap is, in words: the log starts after the entry the partition needs next
/// (retention removed it), or — the log holding no entry at that offset although it starts
/// before it — it ends before it: it lost entries this store applied.
pub(super) fn gap_words(next_offset: u64, log_start: u64) -> String {
    if log_start > next_offset {
        format!(
            "it needs log entries from offset {next_offset}, but the log starts at {log_start} \
             (retention removed them)"
        )
    } else {
        format!(
            "it needs log entries from offset {next_offset}, but the log ends before it: the \
             log lost entries this store applied (a topic deleted and created again, an unclean \
             leader election, or a damaged log)"
        )
    }
}

/// A partition this node owns, and the reads it answers (readers never see its store's value
/// format or its read index).
pub struct PartitionRuntime {
    pub(super) store: PartitionStore,
    /// In-memory copy of the records for single-key reads (kept by the applier).
    pub(super) index: ReadIndex,
    /// What applied entries changed, for watches.
    pub(super) feed: Feed,
    next_offset: watch::Sender<u64>,
    /// The same offset for readers that only look: every read checks it, and the watch's lock
    /// is one more cache line all request threads would write to.
    next_offset_now: std::sync::atomic::AtomicU64,
    health: Mutex<Health>,
    /// Mirrors "health is not a gap", read on every request without taking the lock.
    readable: AtomicBool,
    /// Mirrors "health is serving" (read on every routed request with gossip on).
    serving: AtomicBool,
    /// Outcomes of offsets below this are already pruned.
    pub(super) outcomes_pruned_below: AtomicU64,
    /// The outcomes of the latest entries applied, for writers waiting on them.
    pub(super) recent: Mutex<super::recent::RecentOutcomes>,
    pub(super) stop: Arc<AtomicBool>,
    /// Its place in the applier pool, while it is applied.
    pub(super) applier: Mutex<Option<Arc<super::pool::Slot>>>,
    /// The first offset of the batch being applied, and since when (none between batches).
    applying: Mutex<Option<(u64, Instant)>>,
    /// The plugin the entry at an offset names and this node does not have, and since when
    /// the partition waits there for it.
    plugin_wait: Mutex<Option<(ModuleDigest, u64, Instant)>>,
    /// The log's end when the partition opened here behind it (its store had not kept, or
    /// never had, what the log held: a restart after a crash, a partition moved here, a
    /// restore from an older snapshot). Its reads wait until it is applied, so they never
    /// answer older state than was answered before (0: nothing to catch up on).
    catch_up_to: AtomicU64,
    /// How far its log's reader had got when it last found nothing to apply, if it says
    /// (`PartitionRuntime::passed`); 0 until then.
    passed: AtomicU64,
}

/// A partition whose applier has been on one batch for a long time, or has waited long at one
/// entry for the plugin it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// The first offset of the batch it is applying (or of the entry it waits at).
    pub offset: u64,
    /// How long it has been applying it (or waiting).
    pub for_ms: u64,
    /// The plugin module the entry at `offset` names and this node does not have: the
    /// partition waits for it there (it travels through the log apart from the entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<ModuleDigest>,
}

/// What a partition waiting at `offset` for plugin module `plugin` waits for, and the two ways
/// on: the module, or (when none exists: a producer named a digest nobody uploaded) rejecting
/// the entry by position on every node, which every replica then does alike.
pub fn plugin_wait_advice(partition: u32, offset: u64, plugin: &ModuleDigest) -> String {
    format!(
        "the entry at offset {offset} names the plugin module sha256:{plugin}, which has not \
         reached this node, and nothing after it is applied until it does: upload that module \
         (PUT /plugins/{{name}}); if it does not exist (a producer's mistake), set \
         REJECT_ENTRIES_AT={partition}:{offset} on every node to reject the entry"
    )
}

impl PartitionRuntime {
    pub(super) fn new(
        store: PartitionStore,
        next_offset: u64,
        health: Health,
        index: ReadIndex,
        feed: (usize, usize),
        saved: Option<super::feed_file::SavedHistory>,
    ) -> Self {
        PartitionRuntime {
            store,
            index,
            feed: Feed::with_history(saved, next_offset, feed.0, feed.1),
            next_offset: watch::channel(next_offset).0,
            next_offset_now: std::sync::atomic::AtomicU64::new(next_offset),
            readable: AtomicBool::new(health.has_state()),
            serving: AtomicBool::new(health == Health::Serving),
            outcomes_pruned_below: AtomicU64::new(0),
            recent: Mutex::new(super::recent::RecentOutcomes::new(next_offset)),
            health: Mutex::new(health),
            stop: Arc::new(AtomicBool::new(false)),
            applier: Mutex::new(None),
            applying: Mutex::new(None),
            plugin_wait: Mutex::new(None),
            catch_up_to: AtomicU64::new(0),
            passed: AtomicU64::new(0),
        }
    }

    /// The stored value of (pk, sk): from the read index when it holds the partition (a single
    /// key is consistent by itself), else from the store. None once it has expired by this
    /// node's clock (the record stays stored until the log's time removes it).
    fn value(&self, pk: &str, sk: &str) -> Result<Option<fjall::Slice>, StoreError> {
        let key = encode_key(pk, sk);
        let value = match self.index.get(&key) {
            Lookup::Found(value) => Some(value),
            Lookup::Absent => None,
            Lookup::Unknown => self.store.get_raw(&key)?,
        };
        Ok(value.filter(|v| !is_expired_now(v)))
    }

    /// One record.
    pub fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        self.value(pk, sk)?
            .map(|v| to_record(pk.to_string(), sk.to_string(), &v))
            .transpose()
    }

    /// Several records as of one moment (a batch boundary of the read index, else one store
    /// snapshot), in the order asked; [`StoreError::AnswerTooLarge`] as soon as their stored
    /// values pass `max_bytes`.
    pub fn get_many<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        max_bytes: usize,
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let keys: Vec<(&str, &str)> = keys.into_iter().collect();
        let encoded: Vec<Vec<u8>> = keys.iter().map(|(pk, sk)| encode_key(pk, sk)).collect();
        let Some(values) = self.index.get_many(&encoded, max_bytes) else {
            return self.store.get_many(keys, max_bytes);
        };
        let values = values?;
        let now = now_ms();
        keys.iter()
            .zip(values)
            .map(|(&(pk, sk), value)| match value {
                Some(v) => live_record(pk, sk, &v, now),
                None => Ok(None),
            })
            .collect()
    }

    /// The data (JSON text) of one record: copied once out of the read index, or sharing the
    /// bytes the store read.
    pub fn get_data(&self, pk: &str, sk: &str) -> Result<Option<Bytes>, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("value of {pk:?}/{sk:?} has no valid header"));
        let key = encode_key(pk, sk);
        // From the read index, the data is copied once, straight out of its arena.
        if let Some(found) = self.index.get_with(&key, |value| {
            if is_expired_now(value) {
                return Ok(None);
            }
            let header = header_len(value).ok_or_else(corrupt)?;
            Ok(Some(Bytes::copy_from_slice(&value[header..])))
        }) {
            return found.unwrap_or(Ok(None));
        }
        let Some(value) = self.store.get_raw(&key)?.filter(|v| !is_expired_now(v)) else {
            return Ok(None);
        };
        let header = header_len(&value).ok_or_else(corrupt)?;
        Ok(Some(Bytes::from_owner(value).slice(header..)))
    }

    /// `pk`'s records whose sk starts with `sk_prefix`, after `after`, from one snapshot.
    pub fn scan(&self, pk: &str, sk_prefix: &str, after: Option<&str>) -> Scan {
        self.store.scan(pk, sk_prefix, after)
    }

    /// The earliest deadline in the partition's deadline index (perhaps of a record since
    /// rewritten): when expired records may be waiting for an entry to remove them.
    pub fn first_deadline(&self) -> Result<Option<i64>, StoreError> {
        self.store.first_deadline()
    }

    /// Subscribes to what applied entries change, from offset `from` (from now when `None`).
    pub fn subscribe_changes(&self, from: Option<u64>) -> Result<Subscription, TooOld> {
        self.feed.subscribe(from)
    }

    /// The oldest offset a change subscription may start at, and the next offset.
    pub fn change_bounds(&self) -> (u64, u64) {
        self.feed.bounds()
    }

    /// How many keys (pks) the partition holds.
    pub fn key_count(&self) -> Result<u64, StoreError> {
        self.store.key_count()
    }

    /// How many records `pk` has that a read would return (`HLEN`; see
    /// [`PartitionStore::record_count`]).
    pub fn record_count(&self, pk: &str, most: usize) -> Result<Option<u64>, StoreError> {
        self.store.record_count(pk, most)
    }

    /// A page of the key index from hash position `from` (see [`PartitionStore::scan_keys`]).
    pub fn scan_keys(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<KeyInfo>, Option<u64>), StoreError> {
        let (mut keys, next) = self.store.scan_keys(from, limit)?;
        // The index counts records the log has not removed yet. While some deadline is due,
        // leave out keys with no live record left (one read per key: the first live record;
        // counts stay the index's until the log removes the rest, a second or so).
        if self.first_deadline()?.is_some_and(|d| d <= now_ms()) {
            let mut live = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(first) = self.store.scan(&key.pk, "", None).next() {
                    first?;
                    live.push(key);
                }
            }
            keys = live;
        }
        Ok((keys, next))
    }

    /// Record count and content hash (replicas at equal offsets have equal digests).
    pub fn digest(&self) -> Result<Digest, StoreError> {
        self.store.digest()
    }

    /// The offset this partition applies next, the last entry it applied and its records,
    /// from one store snapshot (see [`PartitionStore::frozen`]): what an S3 snapshot is made of.
    #[allow(clippy::type_complexity)]
    pub fn frozen(
        &self,
    ) -> Result<
        (
            u64,
            Option<crate::model::AppliedEntry>,
            impl Iterator<Item = Result<(fjall::Slice, fjall::Slice), StoreError>> + use<>,
        ),
        StoreError,
    > {
        self.store.frozen()
    }

    /// The offset the store has committed up to (next to apply). It can be ahead of
    /// [`Self::next_offset`] for a moment: a batch is published (and the read index updated)
    /// just after its commit.
    pub fn committed_next_offset(&self) -> Result<u64, StoreError> {
        self.store.next_offset()
    }

    /// The snapshot this partition was last restored from (its object key), if any.
    pub fn restored_from(&self) -> Option<String> {
        self.store
            .restored_from()
            .ok()
            .flatten()
            .map(|(_, key)| key)
    }

    /// Whether single-key reads are answered from memory.
    pub fn read_index_enabled(&self) -> bool {
        self.index.enabled()
    }

    /// A partition that cannot apply, for `reason`; reads see its state as of the last commit.
    pub(super) fn failed(store: PartitionStore, next_offset: u64, reason: String) -> Self {
        Self::new(
            store,
            next_offset,
            Health::Failed { reason },
            ReadIndex::off(),
            (0, 1),
            None,
        )
    }

    pub fn id(&self) -> u32 {
        self.store.id()
    }

    /// The next offset to apply: every entry below it is applied and readable.
    pub fn next_offset(&self) -> u64 {
        self.next_offset_now
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn set_next_offset(&self, next: u64) {
        // Stored before waiters wake, so a woken waiter reads at least `next` here too.
        self.next_offset_now
            .store(next, std::sync::atomic::Ordering::Release);
        self.next_offset.send_replace(next);
    }

    /// Watches the next offset (for waiters).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next_offset.subscribe()
    }

    pub fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }

    pub(super) fn set_health(&self, health: Health) {
        self.readable.store(health.has_state(), Ordering::SeqCst);
        self.serving
            .store(health == Health::Serving, Ordering::SeqCst);
        *self.health.lock().expect("health lock") = health;
    }

    /// Whether this partition applies the log and serves reads (neither stopped by a failure
    /// nor by a gap).
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Notes that the log held entries up to `end` (exclusive) when the partition opened here:
    /// its reads wait for them.
    pub(super) fn catch_up_to(&self, end: u64) {
        self.catch_up_to.store(end, Ordering::Release);
    }

    /// Notes how far its log's reader has got with no entry left to apply (see
    /// [`PartitionRuntime::log_position`]), and ends the catch-up once that has passed the
    /// target: the offsets between were records that are no entries (Kafka's transaction
    /// markers), which no applied offset ever covers.
    pub(super) fn passed(&self, position: u64) {
        self.passed.fetch_max(position, Ordering::Relaxed);
        let to = self.catch_up_to.load(Ordering::Acquire);
        if to > self.next_offset() && position >= to {
            self.catch_up_to.store(0, Ordering::Release);
            tracing::info!(
                partition = self.id(),
                next_offset = self.next_offset(),
                position,
                "caught up: the log's last offsets hold no entries (transaction markers)"
            );
        }
    }

    /// Where this partition stands in its log: its next offset, or further when its reader
    /// has passed offsets that hold no entry (Kafka's transaction markers) with nothing left to
    /// apply. The log's end minus this is its lag.
    pub fn log_position(&self) -> u64 {
        self.next_offset().max(self.passed.load(Ordering::Relaxed))
    }

    /// The offset its reads wait to be applied to while the partition replays what the log
    /// held when it opened here behind it (the next offset it must reach), or `None` once it
    /// has.
    pub fn catching_up(&self) -> Option<u64> {
        let to = self.catch_up_to.load(Ordering::Acquire);
        (to > self.next_offset()).then_some(to)
    }

    /// Whether it serves and answers reads now: it applies the log and has caught up with what
    /// the log held when it opened here. The hot paths' one check.
    pub fn current(&self) -> bool {
        self.serving() && self.catching_up().is_none()
    }

    /// Whether reads may be served from this partition.
    pub fn readable(&self) -> bool {
        self.readable.load(Ordering::SeqCst)
    }

    /// Marks the start (`Some(first offset)`) or the end (`None`) of applying a batch.
    pub(super) fn set_applying(&self, offset: Option<u64>) {
        *self.applying.lock().expect("applying lock") = offset.map(|o| (o, Instant::now()));
    }

    /// The first offset of the batch being applied, if one is.
    pub(super) fn applying_offset(&self) -> Option<u64> {
        self.applying
            .lock()
            .expect("applying lock")
            .map(|(offset, _)| offset)
    }

    /// Marks the start (`Some((plugin, offset))`) or the end (`None`) of a wait for the
    /// plugin the entry at `offset` names.
    pub(super) fn set_plugin_wait(&self, wait: Option<(ModuleDigest, u64)>) {
        let mut current = self.plugin_wait.lock().expect("plugin wait lock");
        *current = match (wait, *current) {
            // Still the same wait: it goes on since it began.
            (Some((plugin, offset)), Some(same @ (p, o, _))) if p == plugin && o == offset => {
                Some(same)
            }
            (Some((plugin, offset)), _) => Some((plugin, offset, Instant::now())),
            (None, _) => None,
        };
    }

    /// The batch being applied, if the applier has been on it for longer than `threshold`; or
    /// the entry the partition waits at for a plugin, if it has for longer than that.
    pub fn stalled(&self, threshold: Duration) -> Option<Stall> {
        let applying = *self.applying.lock().expect("applying lock");
        let waiting = *self.plugin_wait.lock().expect("plugin wait lock");
        let (offset, since, plugin) = match (applying, waiting) {
            (Some((offset, since)), _) => (offset, since, None),
            (None, Some((plugin, offset, since))) => (offset, since, Some(plugin)),
            (None, None) => return None,
        };
        let elapsed = since.elapsed();
        (elapsed > threshold).then_some(Stall {
            offset,
            for_ms: elapsed.as_millis() as u64,
            plugin,
        })
    }

    /// Asks the applier to stop and waits for it, at most `patience`: an applier stuck inside
    /// one entry is left behind (its uncommitted batch is applied again after a restart), so
    /// shutting down and losing a partition never hang.
    pub(super) fn stop_applier(&self, pool: &super::pool::ApplierPool, patience: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(slot) = self.applier.lock().expect("applier lock").take() else {
            return;
        };
        if !pool.stop(&slot, patience) {
            tracing::warn!(
                partition = self.id(),
                "the applier did not stop within {} ms; leaving it behind",
                patience.as_millis()
            );
        }
    }
}
