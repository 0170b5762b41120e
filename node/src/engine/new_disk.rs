//! A partition on a new disk whose past only S3 holds.
//!
//! On the embedded log a lost data directory takes the log with it: the partition's snapshots
//! in S3 are all that is left of its past, and the log, empty, continues after the one restored
//! (`MutationLog::resume_at`). Until that restore is done — or S3 says it holds no snapshot of
//! the partition — the partition must take no entry: one entry numbered from 0 and the snapshot
//! can never be continued, so everything it holds would be lost behind new writes (the node
//! once served such a partition empty from offset 0 whenever S3 was away at its start, and took
//! writes while its restore was still being looked for).
//!
//! So, when snapshots are on and the log resumes after them:
//! - while such a partition opens (its log still at 0..0), writes to it wait for the open
//!   (bounded), then are refused;
//! - when no snapshot it could have restored was restored (S3 away, none verified, no room on
//!   the disk), it is `Health::Unrestored`: not served, no writes, retried with the gaps;
//! - when the bucket holds no snapshot of it (a first start), it opens empty as always.
//!
//! The same holds the other way round: a store kept with its log lost (the log's folder
//! deleted) continues the log after what the store applied; a log that kept entries but ends
//! before them fails the partition and refuses its writes (numbered as entries the store
//! already applied, they were once acknowledged with those entries' outcomes and never
//! applied).

use super::*;
use crate::store::PartitionStore;

/// Why a partition's open restored no snapshot.
pub(super) struct NotRestored {
    /// In words, for the partition's health.
    pub why: String,
    /// Whether a snapshot the partition could have restored may exist (S3 did not answer, or
    /// one was there and did not restore), as against the bucket holding none that fits.
    pub missed: bool,
}

impl NotRestored {
    /// S3 or the disk stood in the way: a snapshot may hold the partition's past.
    pub fn missed(why: impl Into<String>) -> Self {
        NotRestored {
            why: why.into(),
            missed: true,
        }
    }
}

/// Why a write to a partition opening on a new disk is refused.
pub const OPENING_ON_NEW_DISK: &str = "it is still opening on a new disk and may be restored \
     from an S3 snapshot: writes to it wait until then, so that they are numbered after the \
     snapshot's entries; try again shortly";

impl Engine {
    /// Whether the partition's disk is new: nothing applied (`next` is 0) and its log empty
    /// from offset 0, on a log that only S3 snapshots can bring its past back to.
    pub(super) fn new_disk(&self, partition: u32, next: u64) -> bool {
        next == 0 && self.log_empty_from_zero(partition)
    }

    fn log_empty_from_zero(&self, partition: u32) -> bool {
        self.inner.log.resumes_after_snapshots()
            && matches!(self.inner.log.bounds(partition), Ok((0, 0)))
    }

    /// Makes the embedded log continue after what the store applied (`next`) when it lost
    /// its files and kept none of the partition's entries (the log's directory deleted, the
    /// store kept), as after a restore; an error when it holds entries but ends before `next`
    /// (its tail lost): new entries would be numbered as ones the store already applied, and
    /// their writers told the old entries' outcomes.
    pub(super) fn log_behind_store(&self, partition: u32, next: u64) -> Result<(), String> {
        let log = &self.inner.log;
        if !log.resumes_after_snapshots() {
            return Ok(());
        }
        let (start, end) = match log.bounds(partition) {
            Ok(bounds) => bounds,
            Err(_) => return Ok(()), // opening its reader says what is wrong
        };
        if end >= next {
            return Ok(());
        }
        if start < end {
            return Err(format!(
                "the log ends at offset {end}, but this partition's store has applied entries up \
                 to offset {next}: the log lost entries the store holds (its files were damaged \
                 or replaced). Nothing is applied or written to it: restore DB_PATH whole from \
                 a backup, or delete DB_PATH to restore from S3 snapshots"
            ));
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err("no async runtime to continue the log from".into());
        };
        match self.until_stopped(&handle, log.resume_at(partition, next))? {
            Ok(_) => {
                tracing::warn!(
                    partition,
                    next_offset = next,
                    "the log held none of this partition's entries (its files were lost); it \
                     continues after what the store applied"
                );
                Ok(())
            }
            Err(e) => Err(format!(
                "the log lost this partition's entries and cannot continue after the store's \
                 offset {next}: {e}"
            )),
        }
    }

    /// The runtime of a partition left unrestored on a new disk: not served, its writes
    /// refused, retried with the gaps.
    pub(super) fn unrestored(&self, store: PartitionStore, why: String) -> PartitionRuntime {
        let health = Health::Unrestored { reason: why };
        self.report_not_serving(store.id(), &health);
        PartitionRuntime::new(store, 0, health, ReadIndex::off(), (0, 1), None)
    }

    /// Why a write to `partition` must not reach the log now, if it must not: the partition is
    /// opening on a new disk, or was left unrestored there.
    pub fn write_hold(&self, partition: u32) -> Option<String> {
        if !self.inner.log.resumes_after_snapshots() {
            return None;
        }
        // Looked at before the partitions: an open puts its runtime in place before it leaves
        // the opening ones, so a partition is never seen in neither.
        if self.inner.config.snapshots.is_some()
            && self.is_opening(partition)
            && self.log_empty_from_zero(partition)
        {
            return Some(OPENING_ON_NEW_DISK.to_string());
        }
        // Without taking a reference: every write asks (an atomic each would write to).
        self.with_partition(partition, |runtime| {
            if runtime.serving() {
                return None;
            }
            match runtime.health() {
                // The log here is not the one its state came from: a write numbered in it is
                // lost if the operator decides the log is the wrong one.
                health @ (Health::Unrestored { .. } | Health::Diverged { .. }) => health.reason(),
                // A log that ends before what the partition applied would number a write as
                // an entry already applied, and answer it with that entry's outcome.
                health @ Health::Failed { .. }
                    if self
                        .inner
                        .log
                        .bounds(partition)
                        .is_ok_and(|(_, end)| end < runtime.next_offset()) =>
                {
                    health.reason()
                }
                _ => None,
            }
        })
        .flatten()
    }

    /// [`Engine::write_hold`], after waiting up to `timeout` for a partition opening on a new
    /// disk to open (a first start's open is a quick look at the bucket: its first writes
    /// wait for it rather than fail).
    pub async fn write_hold_after_open(&self, partition: u32, timeout: Duration) -> Option<String> {
        let why = self.write_hold(partition)?;
        if !self.is_opening(partition) {
            return Some(why);
        }
        let _ = self.wait_opened(partition, timeout).await;
        self.write_hold(partition)
    }
}
