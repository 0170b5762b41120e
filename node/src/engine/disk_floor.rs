//! Restores keep the volume's free-space floor (`MIN_FREE_DISK_BYTES`).
//!
//! Writes are refused under the floor before they reach the log (`service/disk_space.rs`), so
//! the node never meets `ENOSPC` mid-write: fjall stops every partition until a restart when it
//! does. A restore from a snapshot writes a whole partition at once, past that check: it is
//! not started when its download alone would take the volume under the floor, and it stops
//! (emptying the partition, which then waits as a gap or replays the log) when the volume falls
//! under the floor while it writes — one partition not restored, instead of a node gone dark.

use std::path::Path;

/// Bytes of records a restore writes between two looks at the free space.
const LOOK_EVERY_BYTES: u64 = 64 << 20;

/// The free bytes of the volume holding `path`, for an unprivileged writer.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Why a restore is not started or was stopped: the volume under (or about to go under) the
/// floor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node's disk is almost full: {needed} bytes of {what} would leave {left} of {free} \
     free bytes, below MIN_FREE_DISK_BYTES ({min_free}); free space or give the node a larger \
     volume"
)]
pub struct RestoreLowDisk {
    pub what: &'static str,
    pub needed: u64,
    pub free: u64,
    pub left: u64,
    pub min_free: u64,
}

/// Whether `needed` more bytes of `what` on the volume of `dir` keep it above `min_free` (0:
/// never checked). A volume whose free space cannot be told is not refused (as writes are not).
pub fn check(
    dir: &Path,
    what: &'static str,
    needed: u64,
    min_free: u64,
) -> Result<(), RestoreLowDisk> {
    if min_free == 0 {
        return Ok(());
    }
    let Ok(free) = free_bytes(dir) else {
        return Ok(());
    };
    let left = free.saturating_sub(needed);
    if left < min_free {
        return Err(RestoreLowDisk {
            what,
            needed,
            free,
            left,
            min_free,
        });
    }
    Ok(())
}

/// A restore's records, stopping with [`RestoreLowDisk`] once the volume falls under the floor
/// (looked at every [`LOOK_EVERY_BYTES`] of records passed on).
pub struct FloorChecked<'a, I> {
    records: I,
    dir: &'a Path,
    min_free: u64,
    since_look: u64,
    stopped: bool,
}

impl<'a, I> FloorChecked<'a, I> {
    pub fn new(records: I, dir: &'a Path, min_free: u64) -> Self {
        FloorChecked {
            records,
            dir,
            min_free,
            since_look: 0,
            stopped: false,
        }
    }
}

impl<I, E> Iterator for FloorChecked<'_, I>
where
    I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
    E: std::fmt::Display,
{
    type Item = Result<(Vec<u8>, Vec<u8>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        if self.since_look >= LOOK_EVERY_BYTES {
            self.since_look = 0;
            // What is still to come is unknown: the floor itself is the margin.
            if let Err(low) = check(self.dir, "the restore", 0, self.min_free) {
                self.stopped = true;
                return Some(Err(low.to_string()));
            }
        }
        let record = self.records.next()?;
        Some(match record {
            Ok((key, value)) => {
                self.since_look += (key.len() + value.len()) as u64;
                Ok((key, value))
            }
            Err(e) => Err(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_stops_once_the_floor_is_reached_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let record = |i: u32| Ok::<_, String>((i.to_be_bytes().to_vec(), vec![0u8; 1 << 20]));
        // Off, or a floor below what is free: every record passes.
        for min_free in [0, 1] {
            let passed = FloorChecked::new((0..200).map(record), dir.path(), min_free)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            assert_eq!(passed.len(), 200);
        }
        // A floor above what any disk here has free: the records up to the first look pass,
        // then the restore stops with the reason, and nothing after it.
        let mut checked = FloorChecked::new((0..200).map(record), dir.path(), u64::MAX / 2);
        let passed = checked.by_ref().take_while(Result::is_ok).count();
        assert_eq!(passed, 64, "the first look comes after 64 MiB");
        assert!(checked.next().is_none(), "nothing after the refusal");
        let mut checked = FloorChecked::new((0..200).map(record), dir.path(), u64::MAX / 2);
        let refusal = checked.find_map(Result::err).unwrap();
        assert!(refusal.contains("MIN_FREE_DISK_BYTES"), "{refusal}");
        // The records' own errors pass through.
        let failing = [Err::<(Vec<u8>, Vec<u8>), _>("cut short")].into_iter();
        let e = FloorChecked::new(failing, dir.path(), 0).next().unwrap();
        assert_eq!(e.unwrap_err(), "cut short");
    }

    #[test]
    fn a_download_larger_than_the_room_above_the_floor_is_not_started() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(check(dir.path(), "the download", 1 << 20, 0).is_ok());
        assert!(check(dir.path(), "the download", 0, 1).is_ok());
        let low = check(dir.path(), "the download", u64::MAX / 2, 1).unwrap_err();
        assert_eq!((low.needed, low.left, low.min_free), (u64::MAX / 2, 0, 1));
        assert!(low.free > 0);
        let message = low.to_string();
        assert!(
            message.contains("the download") && message.contains("larger volume"),
            "{message}"
        );
    }
}
