//! A partition's watch history kept across an orderly restart: written when the node stops
//! (after the store is durable at the partition's next offset), read back when the partition
//! opens at that same offset. Without it a restarted node's history began at its restart, and
//! every watch resuming from before it — a rolling deploy's worth of clients — got 410 and read
//! again. A file that does not match (another offset: a crash, entries applied since; a damaged
//! file) is ignored and the history starts empty, as before.
//!
//! Format (little-endian): `FSWH1\n`, start u64, next u64, entries u32; per entry offset u64,
//! ts_ms i64, changes u32; per change kind u8, key length u32, bytes length u32, bytes.

use super::feed::{Change, ChangeKind, EntryChanges};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 6] = b"FSWH1\n";

/// A saved history: every change of the entries from `start` to `next`.
pub(super) struct SavedHistory {
    pub start: u64,
    pub next: u64,
    pub entries: Vec<Arc<EntryChanges>>,
}

/// Where `partition`'s history is kept in `dir`.
fn path_of(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("partition-{partition}.history"))
}

/// Writes `history` for `partition` (aside, then renamed: a file is whole or absent).
pub(super) fn save(dir: &Path, partition: u32, history: &SavedHistory) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = path_of(dir, partition);
    let aside = path.with_extension("new");
    let mut out = io::BufWriter::new(std::fs::File::create(&aside)?);
    out.write_all(MAGIC)?;
    out.write_all(&history.start.to_le_bytes())?;
    out.write_all(&history.next.to_le_bytes())?;
    out.write_all(&count(history.entries.len())?.to_le_bytes())?;
    for entry in &history.entries {
        out.write_all(&entry.offset.to_le_bytes())?;
        out.write_all(&entry.ts_ms.to_le_bytes())?;
        out.write_all(&count(entry.changes.len())?.to_le_bytes())?;
        for change in &entry.changes {
            let (key_len, bytes) = change.parts();
            out.write_all(&[kind_code(change.kind)])?;
            out.write_all(&key_len.to_le_bytes())?;
            out.write_all(&count(bytes.len())?.to_le_bytes())?;
            out.write_all(bytes)?;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&aside, &path)
}

/// Reads and removes `partition`'s saved history when it ends at `next` (what the partition
/// applies next now); `None` when there is none that fits.
pub(super) fn take(dir: &Path, partition: u32, next: u64) -> Option<SavedHistory> {
    let path = path_of(dir, partition);
    let file = std::fs::File::open(&path).ok()?;
    let read = read(&mut io::BufReader::new(file));
    // Used once: a later start (after a crash, say) must not find it again.
    let _ = std::fs::remove_file(&path);
    match read {
        Ok(history) if history.next == next => Some(history),
        Ok(history) => {
            tracing::info!(
                partition,
                saved_at = history.next,
                next,
                "the saved watch history ends at another offset; starting without it"
            );
            None
        }
        Err(e) => {
            tracing::warn!(partition, error = %e, "the saved watch history is unreadable; starting without it");
            None
        }
    }
}

fn read(input: &mut impl Read) -> io::Result<SavedHistory> {
    let mut magic = [0u8; 6];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a watch history file",
        ));
    }
    let start = u64::from_le_bytes(array(input)?);
    let next = u64::from_le_bytes(array(input)?);
    let entries = u32::from_le_bytes(array(input)?);
    let mut history = SavedHistory {
        start,
        next,
        entries: Vec::new(),
    };
    for _ in 0..entries {
        let offset = u64::from_le_bytes(array(input)?);
        let ts_ms = i64::from_le_bytes(array(input)?);
        let changes = u32::from_le_bytes(array(input)?);
        let mut entry = EntryChanges {
            offset,
            ts_ms,
            changes: Vec::new(),
        };
        for _ in 0..changes {
            let [code] = array(input)?;
            let kind = kind_of(code)?;
            let key_len = u32::from_le_bytes(array(input)?);
            let len = u32::from_le_bytes(array(input)?) as usize;
            // Read in bounded steps: a damaged length cannot make this allocate gigabytes
            // before the file runs out.
            let mut bytes = Vec::new();
            input.take(len as u64).read_to_end(&mut bytes)?;
            if bytes.len() != len || key_len as usize > len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a change is cut short",
                ));
            }
            entry.changes.push(Change::new(
                &bytes[..key_len as usize],
                Some(&bytes[key_len as usize..]),
                kind,
            ));
        }
        history.entries.push(Arc::new(entry));
    }
    // A file that parses but does not describe a history (entries out of order, or outside
    // start..next) would hand watches changes at the wrong positions: refused like a cut one.
    let mut expected = history.start;
    for entry in &history.entries {
        if entry.offset < expected || entry.offset >= history.next {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "entries out of order or outside the history's offsets",
            ));
        }
        expected = entry.offset + 1;
    }
    let mut rest = [0u8; 1];
    if input.read(&mut rest)? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the last entry",
        ));
    }
    Ok(history)
}

fn array<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn count(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "too many to save"))
}

fn kind_code(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Put => 0,
        ChangeKind::Delete => 1,
        ChangeKind::Expired => 2,
    }
}

fn kind_of(code: u8) -> io::Result<ChangeKind> {
    match code {
        0 => Ok(ChangeKind::Put),
        1 => Ok(ChangeKind::Delete),
        2 => Ok(ChangeKind::Expired),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an unknown change kind",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{encode_key, encode_value};

    fn history() -> SavedHistory {
        let put = Change::new(
            &encode_key("cfg", "a"),
            Some(&encode_value(1, 2, None, false, b"{\"on\":true}")),
            ChangeKind::Put,
        );
        let gone = Change::new(&encode_key("cfg", "b"), None, ChangeKind::Delete);
        let expired = Change::new(&encode_key("s\u{0}x", ""), None, ChangeKind::Expired);
        SavedHistory {
            start: 3,
            next: 9,
            entries: vec![
                Arc::new(EntryChanges {
                    offset: 4,
                    ts_ms: 1_700_000_000_000,
                    changes: vec![put, gone],
                }),
                Arc::new(EntryChanges {
                    offset: 7,
                    ts_ms: -1,
                    changes: vec![expired],
                }),
            ],
        }
    }

    /// Each change as (pk, sk, kind, record data), for comparing.
    fn described(history: &SavedHistory) -> Vec<(u64, i64, String)> {
        history
            .entries
            .iter()
            .flat_map(|e| {
                e.changes.iter().map(move |c| {
                    let data = c.record().map(|r| r.data_json);
                    (
                        e.offset,
                        e.ts_ms,
                        format!("{:?} {:?} {data:?}", c.key(), c.kind),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn a_saved_history_comes_back_whole_once_and_only_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let saved = history();
        save(dir.path(), 2, &saved).unwrap();
        assert!(take(dir.path(), 2, 8).is_none(), "another offset");
        assert!(take(dir.path(), 2, 9).is_none(), "taken (and removed) once");
        save(dir.path(), 2, &saved).unwrap();
        let back = take(dir.path(), 2, 9).expect("the history ends at 9");
        assert_eq!((back.start, back.next), (3, 9));
        assert_eq!(described(&back), described(&saved));
        assert!(described(&back)[0].2.contains(r#"Some("{\"on\":true}")"#));
        assert!(take(dir.path(), 2, 9).is_none());
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 0, &history()).unwrap();
        let path = path_of(dir.path(), 0);
        let whole = std::fs::read(&path).unwrap();
        for cut in [0, 5, 6, 30, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(take(dir.path(), 0, 9).is_none(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(take(dir.path(), 0, 9).is_none(), "bytes after the end");
        // A length far past the file's end: refused without allocating it.
        let mut huge = whole.clone();
        let first_len_at = 6 + 8 + 8 + 4 + 8 + 8 + 4 + 1 + 4;
        huge[first_len_at..first_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(take(dir.path(), 0, 9).is_none(), "a damaged length");
        std::fs::write(&path, whole).unwrap();
        assert!(take(dir.path(), 0, 9).is_some());
        // Whole, but not a history: entries out of order, or past its next offset.
        for offsets in [[7, 4], [4, 9]] {
            let mut odd = history();
            for (entry, offset) in odd.entries.iter_mut().zip(offsets) {
                Arc::get_mut(entry).unwrap().offset = offset;
            }
            save(dir.path(), 0, &odd).unwrap();
            assert!(take(dir.path(), 0, 9).is_none(), "offsets {offsets:?}");
        }
    }
}
