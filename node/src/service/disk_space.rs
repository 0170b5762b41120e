//! The free-space floor for writes (`MIN_FREE_DISK_BYTES`).
//!
//! A node whose volume fills up mid-write gets `ENOSPC` from fjall's journal or the embedded
//! log: fjall then refuses every write until the node restarts, so every partition stops
//! applying and stops serving reads, and the log refuses appends until a restart. A database an
//! edge depends on must not go dark for reads because its disk filled. So the node refuses new
//! writes *before* the volume is full, while the space left still lets it apply what the log
//! already holds, flush its memtables and compact: reads go on, deletes are still taken (they
//! are how a user makes room), and writes are taken again by themselves once space is back (no
//! restart).
//!
//! The free space is looked up (`statvfs`, one system call) at most every [`LOOK_EVERY`] of
//! time and after every [`LOOK_EVERY_BYTES`] of admitted writes, and every [`LOOK_WHILE_LOW`]
//! while writes are refused, so the refusal follows the disk closely without a look per write.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The free space a node keeps by default: the embedded log's 32 MiB journal, every
/// partition's memtable flushed, and a few compactions' new tables before their old ones go.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 128 << 20;

/// Longest time between two looks while writes are taken.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Longest time between two looks while writes are refused (how soon they are taken again).
const LOOK_WHILE_LOW: Duration = Duration::from_millis(100);
/// Admitted write bytes between two looks (about four times that reaches the disk: the log's
/// segment and journal, the store's journal and its tables).
const LOOK_EVERY_BYTES: u64 = 1 << 20;

/// Why a write was refused: the free space under the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node's disk is almost full: {free} bytes free, below MIN_FREE_DISK_BYTES ({min_free}); \
     writes are refused until space is freed (deletes are still taken), reads go on"
)]
pub struct LowDisk {
    pub free: u64,
    pub min_free: u64,
}

/// Watches the free space of the volume holding the node's data (see the module docs).
pub struct DiskSpace {
    path: PathBuf,
    min_free: u64,
    /// When `looked_at_ms` counts from.
    start: Instant,
    /// Milliseconds after `start` of the last look.
    looked_at_ms: AtomicU64,
    /// Write bytes admitted since the last look.
    admitted: AtomicU64,
    /// Free bytes at the last look (`u64::MAX` before the first, or when it failed).
    free: AtomicU64,
    /// Whether the last look found less than `min_free`.
    low: AtomicBool,
    /// Whether a failed look was already logged (once is enough).
    warned: AtomicBool,
}

impl DiskSpace {
    /// Watches the volume of `path`, refusing writes while under `min_free` bytes are free
    /// (0: never). Looks once now.
    pub fn new(path: impl Into<PathBuf>, min_free: u64) -> Self {
        let space = DiskSpace {
            path: path.into(),
            min_free,
            start: Instant::now(),
            looked_at_ms: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        };
        if min_free > 0 {
            space.look();
        }
        space
    }

    /// The floor, in bytes (0: off).
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Free bytes at the last look (`None` before any, or when looking failed).
    pub fn free(&self) -> Option<u64> {
        match self.free.load(Ordering::Relaxed) {
            u64::MAX => None,
            free => Some(free),
        }
    }

    /// Whether writes are refused now: the volume was under the floor at the last look.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Looks the free space up now; `None` when the floor is off or looking failed.
    pub fn look_now(&self) -> Option<u64> {
        if self.min_free == 0 {
            return None;
        }
        self.look();
        self.free()
    }

    /// Takes a write of about `bytes`, or refuses it while the volume is under the floor.
    pub fn admit(&self, bytes: u64) -> Result<(), LowDisk> {
        if self.min_free == 0 {
            return Ok(());
        }
        let admitted = self.admitted.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let low = self.low.load(Ordering::Relaxed);
        let since = self
            .elapsed_ms()
            .saturating_sub(self.looked_at_ms.load(Ordering::Relaxed));
        let due = if low { LOOK_WHILE_LOW } else { LOOK_EVERY };
        let low = if admitted >= LOOK_EVERY_BYTES || since >= due.as_millis() as u64 {
            self.look()
        } else {
            low
        };
        match low {
            true => Err(LowDisk {
                free: self.free().unwrap_or(0),
                min_free: self.min_free,
            }),
            false => Ok(()),
        }
    }

    /// Looks the free space up now; returns whether it is under the floor. A failed look
    /// refuses nothing (a node that cannot tell keeps taking writes, as without a floor).
    fn look(&self) -> bool {
        self.looked_at_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
        self.admitted.store(0, Ordering::Relaxed);
        let low = match crate::engine::free_bytes(&self.path) {
            Ok(free) => {
                self.free.store(free.min(u64::MAX - 1), Ordering::Relaxed);
                free < self.min_free
            }
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot tell the disk's free space; MIN_FREE_DISK_BYTES is not enforced");
                }
                self.free.store(u64::MAX, Ordering::Relaxed);
                false
            }
        };
        let was = self.low.swap(low, Ordering::Relaxed);
        if low != was {
            match low {
                true => tracing::warn!(
                    free = self.free().unwrap_or(0),
                    min_free = self.min_free,
                    path = %self.path.display(),
                    "disk almost full: refusing writes (deletes are still taken) until space is freed"
                ),
                false => tracing::info!(
                    free = self.free().unwrap_or(0),
                    "disk space is back above MIN_FREE_DISK_BYTES: taking writes again"
                ),
            }
        }
        low
    }

    fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_here(dir: &std::path::Path) -> u64 {
        crate::engine::free_bytes(dir).expect("statvfs")
    }

    #[test]
    fn refuses_below_the_floor_and_says_how_much_is_free() {
        let dir = tempfile::tempdir().unwrap();
        // A floor above what any disk here has free.
        let space = DiskSpace::new(dir.path(), u64::MAX / 2);
        let refused = space.admit(10).unwrap_err();
        assert_eq!(refused.min_free, u64::MAX / 2);
        assert!(refused.free > 0 && refused.free < u64::MAX / 2);
        let message = refused.to_string();
        assert!(message.contains("MIN_FREE_DISK_BYTES"), "{message}");
        assert!(message.contains("deletes are still taken"), "{message}");
    }

    #[test]
    fn takes_writes_above_the_floor_and_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let floor = (free_here(dir.path()) / 4).max(1);
        let space = DiskSpace::new(dir.path(), floor);
        for _ in 0..100 {
            space.admit(64 << 10).unwrap();
        }
        assert!(space.free().unwrap() >= floor);
        let off = DiskSpace::new(dir.path(), 0);
        off.admit(u64::MAX / 4).unwrap();
        assert_eq!(off.free(), None, "a floor of 0 never looks");
    }

    #[test]
    fn a_path_that_cannot_be_looked_up_refuses_nothing() {
        let space = DiskSpace::new("/nonexistent/firescroll/data", u64::MAX / 2);
        space.admit(1).unwrap();
        assert_eq!(space.free(), None);
    }

    #[test]
    fn looks_again_after_enough_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1);
        let first = space.looked_at_ms.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        space.admit(LOOK_EVERY_BYTES - 1).unwrap();
        assert_eq!(space.looked_at_ms.load(Ordering::Relaxed), first, "not yet");
        space.admit(1).unwrap();
        assert!(
            space.looked_at_ms.load(Ordering::Relaxed) > first,
            "a look per MiB"
        );
        assert_eq!(space.admitted.load(Ordering::Relaxed), 0);
    }
}
