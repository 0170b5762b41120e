//! The local materialized state on fjall: one keyspace of records and one key index per
//! partition, plus a `meta` keyspace holding each partition's next offset to apply, key count,
//! deadline index and the outcomes of recent entries.
//!
//! Records and the partition's next offset change in one atomic fjall batch (docs/architecture.md invariant 3),
//! so after any crash the store is exactly "the log prefix up to next offset, applied".

mod key_index;
mod keys;
mod partition;
mod plugins;
mod value;

pub use key_index::{KEY_HASH_BITS, KeyChange, KeyInfo, key_hash};
pub use keys::{decode_key, encode_key, pk_prefix, pk_prefix_len};
pub use partition::{BatchMeta, Deadline, Digest, PartitionStore, Scan, live_record, to_record};
pub use plugins::PluginStore;
pub use value::{
    ValueView, decode_value, encode_value, expires_at, header_len, is_expired, is_expired_now,
};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use partition::DeadlineFlag;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The version ([`crate::model::pk_version`]) of one pk's records, given as readers see them
/// (their data verbatim) in sk order: re-encoded to exactly the bytes stored.
pub fn version_of(records: &[crate::model::Record]) -> String {
    let stored: Vec<(Vec<u8>, Vec<u8>)> = records
        .iter()
        .map(|r| {
            (
                encode_key(&r.pk, &r.sk),
                encode_value(
                    r.created_at_ms,
                    r.updated_at_ms,
                    r.expires_at_ms,
                    r.own_deadline,
                    r.data_json.as_bytes(),
                ),
            )
        })
        .collect();
    crate::model::pk_version(stored.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
}
use std::path::Path;

/// fjall's error as an operator can act on it: its own text is the variant's debug form
/// (`FjallError: Poisoned`), which does not say that a full disk is the usual cause or that
/// only a restart clears it.
fn fjall_message(error: &fjall::Error) -> String {
    let io = match error {
        fjall::Error::Io(e) => Some(e),
        fjall::Error::Storage(fjall::LsmError::Io(e)) => Some(e),
        _ => None,
    };
    match (error, io) {
        (_, Some(e)) if e.kind() == std::io::ErrorKind::StorageFull => format!(
            "{e}: the disk is full. Free space on DB_PATH's volume (or grow it), then restart \
             the node: what was applied is kept, the rest is applied again from the log"
        ),
        (fjall::Error::Poisoned, _) => "the store takes no more writes after a failed write or \
             sync (fjall: poisoned; the node's log says what failed first, often a full disk). \
             Fix that, then restart the node: what was applied is kept, the rest is applied \
             again from the log"
            .to_string(),
        _ => error.to_string(),
    }
}

/// Why the store could not do what was asked. Any of these stops the partition that hit it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {}", fjall_message(.0))]
    Fjall(#[from] fjall::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A read of several records stopped where their values passed what one answer may hold
    /// (the caller's error, not the store's: nothing is wrong with the partition).
    #[error(
        "the records read add up to more than {} MiB, more than one answer may hold: read fewer \
         at a time",
        .limit >> 20
    )]
    AnswerTooLarge { limit: usize },
    #[error(
        "the store in {path} is in use by another process (another firescroll node on the same \
         DB_PATH?): stop that process, or give this node its own DB_PATH"
    )]
    InUse { path: String },
    #[error("partition {id} does not exist: the namespace has {partitions} partitions (0 to {})", partitions - 1)]
    NoSuchPartition { id: u32, partitions: u32 },
    #[error(
        "the store in {path} was applied from the {stored} log, but this node is configured for the {configured} log: \
         its offsets mean nothing there. Use a new DB_PATH, or configure the {stored} log again"
    )]
    LogMismatch {
        path: String,
        stored: String,
        configured: String,
    },
    #[error(
        "the store in {path} holds {stored} partitions but the node is configured with {configured}: \
         keys would be routed to the wrong partitions. Start with PARTITIONS={stored}, or use a new DB_PATH"
    )]
    PartitionCountMismatch {
        path: String,
        stored: u32,
        configured: u32,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

const META_KEYSPACE: &str = "meta";

/// One keyspace's memtable before it is flushed. Far smaller than fjall's 64 MiB default: with
/// three keyspaces per partition those held several hundred MiB on top of the read index (which
/// already holds every record). Apply inserts every write into a memtable, a skiplist whose
/// search is a chain of cache misses that grows with its size: at 8 MiB the search was 31 % of
/// the appliers' time under `SET -c50`. At 2 MiB the appliers use 8–20 % less CPU per write to a
/// hot keyspace (the node ~3 % less in all), but pipelined writes spread over 1M keys cost the
/// node ~6 % more (more flushes and compactions, no cheaper inserts; 4 MiB the same). Kept for
/// memory, which an edge node is short of first: loading 1M records peaks at 166 MB resident
/// instead of 193. 1 MiB cost more in flushes than it saved (benches/README.md, twentieth session).
const MEMTABLE_BYTES: u64 = 2 << 20;

/// fjall's block cache. Smaller than its 32 MiB default: single-key reads, and apply's reads of
/// stored values, go to the read index, which holds every record while it fits its budget; the
/// cache serves lists and what the index cannot hold.
const BLOCK_CACHE_BYTES: u64 = 16 << 20;

fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

/// The key index's memtable: its entries are small and only change when a pk gains its first
/// record or loses its last.
const KEY_INDEX_MEMTABLE_BYTES: u64 = 2 << 20;

fn key_index_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(KEY_INDEX_MEMTABLE_BYTES)
}
const META_PARTITION_COUNT: &[u8] = b"partition_count";
const META_LOG_IDENTITY: &[u8] = b"log_identity";

/// The node's store: a fjall database with one records keyspace per partition.
#[derive(Clone)]
pub struct Store {
    db: Database,
    meta: Keyspace,
    partitions: u32,
    /// Each opened partition's "its deadline index may hold entries" flag, shared by every
    /// handle of that partition (see [`PartitionStore::due`]).
    deadline_flags: Arc<Mutex<HashMap<u32, DeadlineFlag>>>,
}

impl Store {
    /// Opens (or creates) the store in `path` for a namespace of `partitions` partitions. Refuses a
    /// store created with another partition count.
    pub fn open(path: &Path, partitions: u32) -> Result<Self> {
        let db = match Database::builder(path).cache_size(BLOCK_CACHE_BYTES).open() {
            Ok(db) => db,
            // fjall holds a lock on its directory while open: two nodes writing one store would
            // corrupt it, so say plainly why the second one stops.
            Err(fjall::Error::Locked) => {
                return Err(StoreError::InUse {
                    path: path.display().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // Meta holds each entry's returned values (HSET's and DEL's counts, INCR's results) until
        // they are pruned: bounded like the others, not by fjall's 64 MiB default.
        let meta = db.keyspace(META_KEYSPACE, keyspace_options)?;
        match meta.get(META_PARTITION_COUNT)? {
            Some(bytes) => {
                let stored =
                    u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                        StoreError::Corrupt("partition count is not 4 bytes".into())
                    })?);
                if stored != partitions {
                    return Err(StoreError::PartitionCountMismatch {
                        path: path.display().to_string(),
                        stored,
                        configured: partitions,
                    });
                }
            }
            None => {
                meta.insert(META_PARTITION_COUNT, partitions.to_be_bytes())?;
                db.persist(PersistMode::SyncAll)?;
            }
        }
        Ok(Store {
            db,
            meta,
            partitions,
            deadline_flags: Arc::default(),
        })
    }

    /// Records which log this store's offsets refer to (e.g. `embedded`, `kafka:prod`) on first
    /// use, and refuses another later: offsets of one log mean nothing in another.
    pub fn check_log_identity(&self, path: &Path, identity: &str) -> Result<()> {
        match self.meta.get(META_LOG_IDENTITY)? {
            Some(stored) if stored.as_ref() != identity.as_bytes() => {
                Err(StoreError::LogMismatch {
                    path: path.display().to_string(),
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    configured: identity.to_string(),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.meta.insert(META_LOG_IDENTITY, identity.as_bytes())?;
                self.db.persist(PersistMode::SyncAll)?;
                Ok(())
            }
        }
    }

    /// The namespace's partition count.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// Opens partition `id`'s records (creating its keyspace on first use).
    /// The log offset partition `id` applies next as committed here, without opening it.
    pub fn next_offset(&self, id: u32) -> Result<u64> {
        partition::next_offset_in(&self.meta, id)
    }

    pub fn partition(&self, id: u32) -> Result<PartitionStore> {
        if id >= self.partitions {
            return Err(StoreError::NoSuchPartition {
                id,
                partitions: self.partitions,
            });
        }
        let records = self
            .db
            .keyspace(&format!("records_{id}"), keyspace_options)?;
        let keys = self.db.keyspace(&format!("keys_{id}"), key_index_options)?;
        let mut store =
            PartitionStore::open(id, self.db.clone(), records, keys, self.meta.clone())?;
        // Held while the flag is looked up or first read, so two handles opened at once share
        // one (the key index build above, which can take long, runs outside it).
        let mut flags = self.deadline_flags.lock().expect("deadline flags");
        store.join_deadline_flag(flags.get(&id).cloned());
        flags.insert(id, store.deadline_flag());
        Ok(store)
    }

    /// The plugin modules and name bindings.
    pub fn plugins(&self) -> Result<PluginStore> {
        let keyspace = self
            .db
            .keyspace("plugins", KeyspaceCreateOptions::default)?;
        Ok(PluginStore::new(self.db.clone(), keyspace))
    }

    /// Makes everything committed so far durable (fsync). Log entries below the offsets read
    /// before this call may be discarded once it returns.
    pub fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppliedEntry;

    #[test]
    fn storage_errors_say_what_to_do() {
        let full = StoreError::from(fjall::Error::Io(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )))
        .to_string();
        assert!(
            full.contains("the disk is full") && full.contains("restart the node"),
            "{full}"
        );
        let poisoned = StoreError::from(fjall::Error::Poisoned).to_string();
        assert!(
            poisoned.contains("often a full disk") && poisoned.contains("restart the node"),
            "{poisoned}"
        );
        let other = StoreError::from(fjall::Error::Locked).to_string();
        assert!(other.contains("Locked"), "{other}");
    }

    #[test]
    fn every_handle_of_a_partition_sees_deadlines_another_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        let first = store.partition(1).unwrap();
        assert_eq!(first.due(None, i64::MAX).count(), 0);
        let second = store.partition(1).unwrap();
        let key = encode_key("a", "");
        second
            .commit(
                [(
                    key.clone(),
                    Some(encode_value(1, 1, Some(5_000), false, b"1")),
                )],
                &BatchMeta {
                    deadlines_added: &[(5_000, key.clone())],
                    next_offset: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        // The first handle had found no deadline; it must not keep answering from that.
        let due: Vec<Deadline> = first.due(None, i64::MAX).map(Result::unwrap).collect();
        assert_eq!(due, vec![(5_000, key)]);
    }

    #[test]
    fn a_destroyed_partition_starts_over_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        let p0 = store.partition(0).unwrap();
        let p1 = store.partition(1).unwrap();
        let value = encode_value(1, 1, None, false, b"1");
        p0.commit(
            [(encode_key("a", ""), Some(value.clone()))],
            &BatchMeta {
                rejections: &[(3, b"{}".to_vec())],
                returned: &[(4, br#"[[4,[{"Op":0,"Data":"1"}]]]"#.to_vec())],
                keys: &[],
                next_offset: 5,
                ..Default::default()
            },
        )
        .unwrap();
        p1.commit(
            [(encode_key("b", ""), Some(value))],
            &BatchMeta {
                rejections: &[(3, b"{}".to_vec())],
                next_offset: 7,
                ..Default::default()
            },
        )
        .unwrap();
        p0.destroy().unwrap();
        let p0 = store.partition(0).unwrap();
        assert_eq!(p0.next_offset().unwrap(), 0);
        assert!(p0.get("a", "").unwrap().is_none());
        assert!(p0.rejection(3).unwrap().is_none());
        assert!(p0.returned(4).unwrap().is_none());
        assert!(p0.returned(3).unwrap().is_none());
        // The other partition is untouched.
        assert_eq!(p1.next_offset().unwrap(), 7);
        assert!(p1.get("b", "").unwrap().is_some());
        assert!(p1.rejection(3).unwrap().is_some());
    }

    #[test]
    fn a_restore_commits_as_it_reads_and_one_cut_short_leaves_the_partition_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let p = store.partition(0).unwrap();
        let value = |n: u8| encode_value(1, 1, None, false, &[n; 4096]);
        p.commit(
            [(encode_key("old", ""), Some(value(0)))],
            &BatchMeta {
                rejections: &[(3, b"{}".to_vec())],
                next_offset: 5,
                last_entry: Some(AppliedEntry::of(4, b"old log")),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            p.last_entry().unwrap(),
            Some(AppliedEntry::of(4, b"old log"))
        );
        // Twelve keys of two records each, and one with a deadline: several restore commits.
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = (0..12)
            .flat_map(|i| {
                let pk = format!("k{i:02}");
                [
                    (encode_key(&pk, ""), value(i)),
                    (encode_key(&pk, "f"), value(i)),
                ]
            })
            .collect();
        records.push((
            encode_key("z", ""),
            encode_value(1, 1, Some(9_000), false, b"1"),
        ));
        let expected =
            crate::model::pk_version(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let snapshot_last = Some(AppliedEntry::of(99, b"snapshot's log"));
        p.restore(
            records.iter().cloned().map(Ok::<_, String>),
            100,
            snapshot_last,
            "snap-a",
        )
        .unwrap();
        assert_eq!(p.next_offset().unwrap(), 100);
        // The snapshot's last entry replaces the old state's.
        assert_eq!(p.last_entry().unwrap(), snapshot_last);
        assert_eq!(p.key_count().unwrap(), 13);
        assert_eq!(p.record_count("k03", usize::MAX).unwrap(), Some(2));
        assert!(p.get("old", "").unwrap().is_none());
        assert!(p.rejection(3).unwrap().is_none());
        assert_eq!(p.restored_from().unwrap(), Some((100, "snap-a".into())));
        assert_eq!(p.digest().unwrap().sha256, expected);
        let due: Vec<Deadline> = p.due(None, i64::MAX).map(Result::unwrap).collect();
        assert_eq!(due, vec![(9_000, encode_key("z", ""))]);
        let empty = |p: &PartitionStore| {
            assert_eq!(p.next_offset().unwrap(), 0);
            assert_eq!(p.key_count().unwrap(), 0);
            assert_eq!(p.digest().unwrap().records, 0);
            assert_eq!(p.restored_from().unwrap(), None);
            assert_eq!(p.last_entry().unwrap(), None);
            assert_eq!(p.due(None, i64::MAX).count(), 0);
        };
        // A restore cut short halfway (its snapshot unreadable, the disk full): the partition
        // is emptied at once, a new disk's state, never the old state mixed with part of the
        // snapshot.
        let cut = records
            .iter()
            .take(16)
            .cloned()
            .map(Ok)
            .chain([Err("the disk went away".to_string())]);
        let e = p
            .restore(cut, 200, snapshot_last, "snap-b")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the disk went away") && e.contains("snap-b"),
            "{e}"
        );
        empty(&p);
        p.restore(
            records.iter().cloned().map(Ok::<_, String>),
            100,
            None,
            "snap-a",
        )
        .unwrap();
        // A restore stopped in the middle with no chance to clean up (the node stopping, here
        // a panic): what it committed is partial, so the next open starts the partition empty.
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stop = records
                .iter()
                .take(16)
                .cloned()
                .map(Ok)
                .chain(std::iter::once_with(
                    || -> Result<(Vec<u8>, Vec<u8>), String> { panic!("the node stops") },
                ));
            p.restore(stop, 200, None, "snap-c")
        }));
        assert!(stopped.is_err());
        assert!(
            p.get("k01", "").unwrap().is_some(),
            "the first commits of the stopped restore are in the store"
        );
        drop(p);
        let p = store.partition(0).unwrap();
        empty(&p);
        // And a restore after it is whole again.
        p.restore(
            records.iter().cloned().map(Ok::<_, String>),
            100,
            snapshot_last,
            "snap-a",
        )
        .unwrap();
        assert_eq!(p.digest().unwrap().sha256, expected);
        // A restored state set aside (its snapshot is of another log) is emptied the same way.
        p.empty().unwrap();
        empty(&p);
        drop(p);
        empty(&store.partition(0).unwrap());
    }

    #[test]
    fn returned_values_are_kept_per_batch_found_per_offset_and_pruned_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let p = store.partition(0).unwrap();
        let values = |data: &str| vec![crate::model::Returned::data(0, Some(data.into()))];
        let commit = |last: u64, json: &[u8], next: u64| {
            p.commit(
                std::iter::empty::<(Vec<u8>, Option<Vec<u8>>)>(),
                &BatchMeta {
                    returned: &[(last, json.to_vec())],
                    next_offset: next,
                    ..Default::default()
                },
            )
            .unwrap();
        };
        commit(
            5,
            br#"[[3,[{"Op":0,"Data":"a"}]],[5,[{"Op":0,"Data":"b"}]]]"#,
            7,
        );
        commit(9, br#"[[9,[{"Op":0,"Data":"c"}]]]"#, 12);
        // An entry stored alone, as stores from before 2026-12-03 hold them.
        p.put_returned_alone(10, br#"[{"Op":0,"Data":"d"}]"#)
            .unwrap();
        let found: Vec<Option<Vec<crate::model::Returned>>> =
            (2..=12).map(|o| p.returned(o).unwrap()).collect();
        assert_eq!(
            found,
            vec![
                None,
                Some(values("a")),
                None,
                Some(values("b")),
                None,
                None,
                None,
                Some(values("c")),
                Some(values("d")),
                None,
                None
            ]
        );
        // A batch goes once all its offsets are below the bound, not before.
        p.prune_outcomes(0, 5).unwrap();
        assert_eq!(p.returned(3).unwrap(), Some(values("a")));
        p.prune_outcomes(5, 6).unwrap();
        assert_eq!(p.returned(3).unwrap(), None);
        assert_eq!(p.returned(5).unwrap(), None);
        assert_eq!(p.returned(9).unwrap(), Some(values("c")));
        p.prune_outcomes(6, 11).unwrap();
        assert_eq!(p.returned(9).unwrap(), None);
        assert_eq!(p.returned(10).unwrap(), None);
    }

    #[test]
    fn a_store_from_before_the_key_index_builds_it_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let p = store.partition(0).unwrap();
        let value = encode_value(1, 1, None, false, b"1");
        // Records committed without telling the key index, as an older build did.
        p.commit(
            [
                (encode_key("h", "a"), Some(value.clone())),
                (encode_key("h", "b"), Some(value.clone())),
                (encode_key("s", ""), Some(value.clone())),
                (encode_key("s\0x", "f"), Some(value)),
            ],
            &BatchMeta::default(),
        )
        .unwrap();
        assert_eq!(p.key_count().unwrap(), 0);
        p.forget_key_index().unwrap();
        let p = store.partition(0).unwrap();
        assert_eq!(p.key_count().unwrap(), 3);
        let (keys, next) = p.scan_keys(0, 100).unwrap();
        assert_eq!(next, None);
        let mut seen: Vec<(String, u64, bool)> = keys
            .into_iter()
            .map(|k| (k.pk, k.records, k.string))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("h".into(), 2, false),
                ("s".into(), 1, true),
                ("s\0x".into(), 1, false)
            ]
        );
        // Pages never split one hash and resume after it.
        let (first, next) = p.scan_keys(0, 1).unwrap();
        assert_eq!(first.len(), 1);
        let (rest, end) = p.scan_keys(next.unwrap(), 10).unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(end, None);
    }

    #[test]
    fn a_partition_beyond_the_count_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        let err = store.partition(2).err().unwrap().to_string();
        assert!(err.contains("partition 2 does not exist"), "{err}");
    }

    #[test]
    fn a_store_follows_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 2).unwrap();
        store.check_log_identity(dir.path(), "embedded").unwrap();
        store.check_log_identity(dir.path(), "embedded").unwrap();
        let err = store
            .check_log_identity(dir.path(), "kafka:prod")
            .unwrap_err()
            .to_string();
        assert!(err.contains("applied from the embedded log"), "{err}");
    }
}
