//! One owned partition at runtime: its store, how far it has applied, its health, its applier.

use super::ReadIndex;
use crate::store::PartitionStore;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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
    /// The log no longer holds the entries this partition needs next (DESIGN.md invariant 8):
    /// serving it would silently miss writes, so it is not served.
    Gap { next_offset: u64, log_start: u64 },
}

/// A partition this node owns.
pub struct PartitionRuntime {
    pub store: PartitionStore,
    /// In-memory copy of the records for single-key reads (kept by the applier).
    pub index: ReadIndex,
    next_offset: watch::Sender<u64>,
    health: Mutex<Health>,
    /// Mirrors "health is not a gap", read on every request without taking the lock.
    readable: AtomicBool,
    /// Mirrors "health is serving" (read on every routed request with gossip on).
    serving: AtomicBool,
    /// Outcomes of offsets below this are already pruned.
    pub(super) outcomes_pruned_below: AtomicU64,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) applier: Mutex<Option<JoinHandle<()>>>,
    /// The first offset of the batch being applied, and since when (none between batches).
    applying: Mutex<Option<(u64, Instant)>>,
}

/// A partition whose applier has been on one batch for a long time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// The first offset of the batch it is applying.
    pub offset: u64,
    /// How long it has been applying it.
    pub for_ms: u64,
}

impl PartitionRuntime {
    pub(super) fn new(
        store: PartitionStore,
        next_offset: u64,
        health: Health,
        index: ReadIndex,
    ) -> Self {
        PartitionRuntime {
            store,
            index,
            next_offset: watch::channel(next_offset).0,
            readable: AtomicBool::new(!matches!(health, Health::Gap { .. })),
            serving: AtomicBool::new(health == Health::Serving),
            outcomes_pruned_below: AtomicU64::new(0),
            health: Mutex::new(health),
            stop: Arc::new(AtomicBool::new(false)),
            applier: Mutex::new(None),
            applying: Mutex::new(None),
        }
    }

    /// A partition that cannot apply, for `reason`; reads see its state as of the last commit.
    pub(super) fn failed(store: PartitionStore, next_offset: u64, reason: String) -> Self {
        Self::new(
            store,
            next_offset,
            Health::Failed { reason },
            ReadIndex::off(),
        )
    }

    pub fn id(&self) -> u32 {
        self.store.id()
    }

    /// The next offset to apply: every entry below it is applied and readable.
    pub fn next_offset(&self) -> u64 {
        *self.next_offset.borrow()
    }

    pub(super) fn set_next_offset(&self, next: u64) {
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
        self.readable
            .store(!matches!(health, Health::Gap { .. }), Ordering::SeqCst);
        self.serving
            .store(health == Health::Serving, Ordering::SeqCst);
        *self.health.lock().expect("health lock") = health;
    }

    /// Whether this partition applies the log and serves reads (neither stopped by a failure
    /// nor by a gap).
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Whether reads may be served from this partition.
    pub fn readable(&self) -> bool {
        self.readable.load(Ordering::SeqCst)
    }

    /// Marks the start (`Some(first offset)`) or the end (`None`) of applying a batch.
    pub(super) fn set_applying(&self, offset: Option<u64>) {
        *self.applying.lock().expect("applying lock") = offset.map(|o| (o, Instant::now()));
    }

    /// The batch being applied, if the applier has been on it for longer than `threshold`.
    pub fn stalled(&self, threshold: Duration) -> Option<Stall> {
        let (offset, since) = (*self.applying.lock().expect("applying lock"))?;
        let elapsed = since.elapsed();
        (elapsed > threshold).then_some(Stall {
            offset,
            for_ms: elapsed.as_millis() as u64,
        })
    }

    /// Asks the applier to stop and waits for it, at most `patience`: an applier stuck inside
    /// one entry is left behind (its uncommitted batch is applied again after a restart), so
    /// shutting down and losing a partition never hang.
    pub(super) fn stop_applier(&self, patience: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(handle) = self.applier.lock().expect("applier lock").take() else {
            return;
        };
        let deadline = Instant::now() + patience;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::warn!(
                partition = self.id(),
                "the applier did not stop within {} ms; leaving it behind",
                patience.as_millis()
            );
        }
    }
}
