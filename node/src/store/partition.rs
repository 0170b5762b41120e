//! One partition's records: snapshot reads, atomic apply commits, outcomes and the digest.

use super::key_index::{KeyChange, KeyInfo, decode_info, encode_info, index_key, position_key};
use super::keys::{decode_key, encode_key, pk_prefix, sk_of};
use super::value::{decode_value, is_expired, is_expired_now};
use super::{Result, StoreError};
use crate::model::now_ms;
use crate::model::{AppliedEntry, Record, Returned};
use fjall::{Database, Keyspace, Readable, Slice};
use sha2::{Digest as _, Sha256};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const NEXT_OFFSET_TAG: u8 = b'n';
const REJECTION_TAG: u8 = b'r';
/// Values one entry returned, under its offset (written before 2026-12-03; still read).
const RETURNED_TAG: u8 = b'v';
/// Values consecutive entries returned, together (a chunk of a batch's) under the last offset
/// among them: one store write per batch of small values instead of one per entry (every HSET
/// and DEL returns its count).
const RETURNED_BATCH_TAG: u8 = b'w';
const KEY_COUNT_TAG: u8 = b'k';
const KEY_INDEX_BUILT_TAG: u8 = b'i';
const RESTORED_TAG: u8 = b's';
/// The last entry applied (offset and the digest of its bytes, [`AppliedEntry`]): which log
/// the state was applied from. Absent after a restore from a snapshot that did not say it.
const LAST_ENTRY_TAG: u8 = b'l';
/// Set while a restore replaces the partition's state (the snapshot's offset and name): the
/// state is partial until the restore's last commit removes it. A partition opened with it set
/// (the node stopped mid-restore) starts empty.
const RESTORING_TAG: u8 = b'x';
/// Bytes of records (and removals) one commit of a restore holds: a partition of any size is
/// restored in memory of about this much, not all of it at once. (Small in unit tests, so a
/// small snapshot crosses several commits.)
#[cfg(not(test))]
const RESTORE_BATCH_BYTES: usize = 16 << 20;
#[cfg(test)]
const RESTORE_BATCH_BYTES: usize = 16 << 10;
/// Memtables a restore lets wait for fjall's background flushes before it waits for them too.
const RESTORE_WRITE_BUFFER_BYTES: u64 = 4 * RESTORE_BATCH_BYTES as u64;
/// The deadline index: `e ++ partition ++ deadline ++ stored key` for every record with a
/// deadline (see [`PartitionStore::due`]). Derived from the records, like the key index: not
/// in the digest, rebuilt on restore.
const DEADLINE_TAG: u8 = b'e';

/// One entry of the deadline index: a record's deadline (unix ms) and its stored key. It may
/// be stale (the record since got another deadline or went): whoever reads it checks the record.
pub type Deadline = (i64, Vec<u8>);

/// Whether a partition's deadline index may hold entries (see [`PartitionStore::due`]).
pub(super) type DeadlineFlag = Arc<AtomicBool>;

/// What an apply batch commits besides its record writes.
#[derive(Debug, Default)]
pub struct BatchMeta<'a> {
    /// Offset → why that entry was rejected (JSON).
    pub rejections: &'a [(u64, Vec<u8>)],
    /// What the batch's applied entries returned, in disjoint chunks in offset order: the last
    /// offset of each, and the JSON of `[[offset, [returned, ...]], ...]`.
    pub returned: &'a [(u64, Vec<u8>)],
    /// How the batch changed each key (pk) of the key index.
    pub keys: &'a [(String, KeyChange)],
    /// Deadline index entries to add (records written with a deadline).
    pub deadlines_added: &'a [Deadline],
    /// Deadline index entries to remove (deadlines replaced, records purged).
    pub deadlines_removed: &'a [Deadline],
    /// The offset to apply next.
    pub next_offset: u64,
    /// The batch's last entry (none in a batch that applied no entry).
    pub last_entry: Option<AppliedEntry>,
}

/// The log offset partition `id` applies next, as committed in the shared `meta` keyspace (0
/// for a partition never applied): readable without opening the partition's own keyspaces.
pub(super) fn next_offset_in(meta: &Keyspace, id: u32) -> Result<u64> {
    let mut key = [NEXT_OFFSET_TAG; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    match meta.get(key)? {
        None => Ok(0),
        Some(b) => Ok(u64::from_be_bytes(b.as_ref().try_into().map_err(|_| {
            StoreError::Corrupt(format!("partition {id} next offset is not 8 bytes"))
        })?)),
    }
}

/// A partition's content fingerprint: replicas at the same offset have equal digests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub records: u64,
    /// Hex SHA-256 over every (key, value) in key order.
    pub sha256: String,
}

/// Handle to one partition's keyspace. Cheap to clone.
#[derive(Clone)]
pub struct PartitionStore {
    id: u32,
    db: Database,
    records: Keyspace,
    keys: Keyspace,
    meta: Keyspace,
    /// Whether the deadline index may hold entries. False while no record of the partition has
    /// ever had a deadline (most never do): [`PartitionStore::due`] then answers without a store
    /// read, which apply otherwise does once per batch. Set before any commit that adds one;
    /// shared by every handle of the partition (the [`super::Store`] hands it out).
    deadlines: DeadlineFlag,
}

impl PartitionStore {
    /// Opens the partition's handle, building its key index first if this store predates it.
    /// Its deadline flag starts set (nothing is skipped) until [`PartitionStore::join_deadline_flag`].
    pub(super) fn open(
        id: u32,
        db: Database,
        records: Keyspace,
        keys: Keyspace,
        meta: Keyspace,
    ) -> Result<Self> {
        let store = PartitionStore {
            id,
            db,
            records,
            keys,
            meta,
            deadlines: Arc::new(AtomicBool::new(true)),
        };
        if let Some(mark) = store.meta.get(store.tag_key(RESTORING_TAG))? {
            tracing::warn!(
                partition = id,
                snapshot = %String::from_utf8_lossy(mark.get(8..).unwrap_or_default()),
                "a restore from a snapshot (or emptying the partition) did not finish: the \
                 node stopped during it; the partition starts empty, and is restored or \
                 replayed again"
            );
            store.clear_state()?;
            store.meta.remove(store.tag_key(RESTORING_TAG))?;
        }
        if store
            .meta
            .get(store.tag_key(KEY_INDEX_BUILT_TAG))?
            .is_none()
        {
            store.build_key_index()?;
        }
        Ok(store)
    }

    /// Takes the deadline flag of an earlier handle of this partition, or, for the first handle,
    /// sets its own from what the deadline index holds.
    pub(super) fn join_deadline_flag(&mut self, earlier: Option<DeadlineFlag>) {
        match earlier {
            Some(flag) => self.deadlines = flag,
            None => {
                let any = self.deadline_range(None, i64::MAX).next().is_some();
                self.deadlines.store(any, Ordering::Release);
            }
        }
    }

    /// This partition's deadline flag, for the next handle of it.
    pub(super) fn deadline_flag(&self) -> DeadlineFlag {
        self.deadlines.clone()
    }

    fn tag_key(&self, tag: u8) -> [u8; 5] {
        let mut k = [tag; 5];
        k[1..].copy_from_slice(&self.id.to_be_bytes());
        k
    }

    /// Counts every pk's records from one snapshot and writes the key index in one batch.
    fn build_key_index(&self) -> Result<()> {
        let mut found: Vec<(String, u64, bool)> = Vec::new();
        for guard in self.db.snapshot().iter(&self.records) {
            let key = guard.key()?;
            let (pk, sk) = decode_key(&key)
                .ok_or_else(|| StoreError::Corrupt("a stored key has no valid encoding".into()))?;
            match found.last_mut() {
                Some((p, n, string)) if *p == pk => {
                    *n += 1;
                    *string |= sk.is_empty();
                }
                _ => found.push((pk, 1, sk.is_empty())),
            }
        }
        let mut batch = self.db.batch();
        let count = found.len() as u64;
        for (pk, n, string) in found {
            batch.insert(&self.keys, index_key(&pk), encode_info(n, string));
        }
        batch.insert(&self.meta, self.tag_key(KEY_COUNT_TAG), count.to_be_bytes());
        batch.insert(&self.meta, self.tag_key(KEY_INDEX_BUILT_TAG), [1u8]);
        batch.commit()?;
        Ok(())
    }

    /// Stores one entry's returned values alone, as stores from before batches did.
    #[cfg(test)]
    pub(super) fn put_returned_alone(&self, offset: u64, json: &[u8]) -> Result<()> {
        self.meta.insert(self.returned_key(offset), json)?;
        Ok(())
    }

    /// How many chunks of returned values are stored.
    #[cfg(test)]
    pub(crate) fn returned_chunk_count(&self) -> usize {
        self.meta.prefix(self.tag_key(RETURNED_BATCH_TAG)).count()
    }

    /// Forgets that the key index was built, as a store from before it would be.
    #[cfg(test)]
    pub(super) fn forget_key_index(&self) -> Result<()> {
        self.meta.remove(self.tag_key(KEY_INDEX_BUILT_TAG))?;
        Ok(())
    }

    /// Replaces the partition's whole state with `records` (stored key, stored value, in key
    /// order) as of `next_offset`, restored from the snapshot `source`: records, key index,
    /// deadline index, next offset, and the note that outcomes below `next_offset` are not
    /// known here. Written a bounded batch at a time as the records arrive (a partition larger
    /// than memory restores as well as a small one), between a first commit that marks the
    /// state partial and a last one that makes it whole: a node that stops in between finds
    /// the mark when it opens the partition again and starts it empty (a new disk's state,
    /// restored or replayed again), never a mix. An error reading `records` stops the restore
    /// there and empties the partition (as a new disk: its next offset is 0), so no caller can
    /// go on from a mix of the old state and part of the snapshot; if even that fails, the mark
    /// stays and the next open empties it.
    pub fn restore<E: std::fmt::Display>(
        &self,
        records: impl IntoIterator<Item = std::result::Result<(Vec<u8>, Vec<u8>), E>>,
        next_offset: u64,
        last_entry: Option<AppliedEntry>,
        source: &str,
    ) -> Result<()> {
        // Failing here, nothing changed.
        self.mark_partial(next_offset, source.as_bytes())?;
        // Nothing is skipped while the state is partial.
        self.deadlines.store(true, Ordering::Release);
        let restored = self.restore_after_mark(records, next_offset, last_entry, source);
        if restored.is_err()
            && let Err(e) = self.empty()
        {
            tracing::error!(partition = self.id, error = %e, "emptying a partition after a failed restore failed; it is emptied when next opened");
        }
        restored
    }

    /// Empties the partition as a new disk's: no records, outcomes or deadlines, next offset 0,
    /// no snapshot restored and no last entry (what a restore that failed, or a state set
    /// aside, leaves). Removed a bounded batch at a time between a first commit that marks the
    /// state partial (as a restore's) and a last one: a node that stops in between finds the
    /// mark when it opens the partition again and empties it.
    pub fn empty(&self) -> Result<()> {
        self.mark_partial(0, b"(emptied)")?;
        self.clear_state()?;
        let mut batch = self.db.batch();
        // Empty, and whole: the key index of no records is built.
        batch.insert(&self.meta, self.tag_key(KEY_INDEX_BUILT_TAG), [1u8]);
        batch.remove(&self.meta, self.tag_key(RESTORING_TAG));
        batch.commit()?;
        self.deadlines.store(false, Ordering::Release);
        Ok(())
    }

    /// Marks the state partial (a restore of `source` to `next_offset`, or an emptying, under
    /// way: the next open empties what it finds) and forgets its next offset, key index, last
    /// restore and last entry, in one commit.
    fn mark_partial(&self, next_offset: u64, source: &[u8]) -> Result<()> {
        let mut mark = next_offset.to_be_bytes().to_vec();
        mark.extend_from_slice(source);
        let mut batch = self.db.batch();
        batch.insert(&self.meta, self.tag_key(RESTORING_TAG), mark);
        batch.remove(&self.meta, self.next_offset_key());
        batch.remove(&self.meta, self.tag_key(KEY_INDEX_BUILT_TAG));
        batch.remove(&self.meta, self.tag_key(RESTORED_TAG));
        batch.remove(&self.meta, self.tag_key(LAST_ENTRY_TAG));
        batch.commit()?;
        Ok(())
    }

    /// The restore once its mark is committed: the old state removed, the records written.
    fn restore_after_mark<E: std::fmt::Display>(
        &self,
        records: impl IntoIterator<Item = std::result::Result<(Vec<u8>, Vec<u8>), E>>,
        next_offset: u64,
        last_entry: Option<AppliedEntry>,
        source: &str,
    ) -> Result<()> {
        self.clear_state()?;
        let mut batch = self.db.batch();
        let mut held = 0usize;
        // The pk whose records are being read, how many, and whether one is its string: the
        // records come in key order, so each pk's are together.
        let mut current: Option<(String, u64, bool)> = None;
        let mut key_count = 0u64;
        let mut any_deadline = false;
        for record in records {
            let (key, value) = record
                .map_err(|e| StoreError::Corrupt(format!("reading the snapshot {source}: {e}")))?;
            let (pk, sk) = decode_key(&key).ok_or_else(|| {
                StoreError::Corrupt("a snapshot key has no valid encoding".into())
            })?;
            match &mut current {
                Some((p, n, string)) if *p == pk => {
                    *n += 1;
                    *string |= sk.is_empty();
                }
                _ => {
                    if let Some((done, n, string)) = current.replace((pk, 1, sk.is_empty())) {
                        batch.insert(&self.keys, index_key(&done), encode_info(n, string));
                        key_count += 1;
                    }
                }
            }
            if let Some(deadline) = super::value::expires_at(&value) {
                any_deadline = true;
                batch.insert(&self.meta, self.deadline_key(deadline, &key), []);
            }
            held += key.len() + value.len() + 64;
            batch.insert(&self.records, key, value);
            if held >= RESTORE_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                // A restore writes faster than fjall flushes memtables in the background, and
                // they piled up in memory (a 1M-record partition restored at 455 MB resident):
                // past a few batches' worth, it waits for them to be written out.
                if self.db.write_buffer_size() > RESTORE_WRITE_BUFFER_BYTES {
                    self.records.rotate_memtable_and_wait()?;
                }
                held = 0;
            }
        }
        if let Some((done, n, string)) = current {
            batch.insert(&self.keys, index_key(&done), encode_info(n, string));
            key_count += 1;
        }
        batch.insert(
            &self.meta,
            self.tag_key(KEY_COUNT_TAG),
            key_count.to_be_bytes(),
        );
        batch.insert(&self.meta, self.tag_key(KEY_INDEX_BUILT_TAG), [1u8]);
        batch.insert(
            &self.meta,
            self.next_offset_key(),
            next_offset.to_be_bytes(),
        );
        let mut restored = next_offset.to_be_bytes().to_vec();
        restored.extend_from_slice(source.as_bytes());
        batch.insert(&self.meta, self.tag_key(RESTORED_TAG), restored);
        // Only an entry below the snapshot's offset can be its last.
        if let Some(entry) = last_entry.filter(|entry| entry.offset < next_offset) {
            batch.insert(&self.meta, self.tag_key(LAST_ENTRY_TAG), entry.to_bytes());
        }
        batch.remove(&self.meta, self.tag_key(RESTORING_TAG));
        batch.commit()?;
        if !any_deadline {
            self.deadlines.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Removes the partition's records, key index, deadline index, outcomes and key count, a
    /// bounded batch at a time (what a restore replaces; its next offset and marks are the
    /// caller's).
    fn clear_state(&self) -> Result<()> {
        let snapshot = self.db.snapshot();
        let mut batch = self.db.batch();
        let mut held = 0usize;
        let mut remove = |batch: &mut fjall::OwnedWriteBatch, keyspace: &Keyspace, key: Slice| {
            held += key.len() + 64;
            batch.remove(keyspace, key);
            if held >= RESTORE_BATCH_BYTES {
                held = 0;
                return std::mem::replace(batch, self.db.batch()).commit();
            }
            Ok(())
        };
        for guard in snapshot.iter(&self.records) {
            remove(&mut batch, &self.records, guard.key()?)?;
        }
        for guard in snapshot.iter(&self.keys) {
            remove(&mut batch, &self.keys, guard.key()?)?;
        }
        for tag in [
            REJECTION_TAG,
            RETURNED_TAG,
            RETURNED_BATCH_TAG,
            DEADLINE_TAG,
        ] {
            for guard in snapshot.prefix(&self.meta, self.tag_key(tag)) {
                remove(&mut batch, &self.meta, guard.key()?)?;
            }
        }
        batch.remove(&self.meta, self.tag_key(KEY_COUNT_TAG));
        batch.commit()?;
        Ok(())
    }

    /// The snapshot this partition was last restored from, and its next offset: outcomes of
    /// entries below that offset are not known here.
    pub fn restored_from(&self) -> Result<Option<(u64, String)>> {
        Ok(self.meta.get(self.tag_key(RESTORED_TAG))?.and_then(|v| {
            let offset = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            Some((offset, String::from_utf8_lossy(&v[8..]).into_owned()))
        }))
    }

    /// How many keys (pks with at least one record) the partition holds.
    pub fn key_count(&self) -> Result<u64> {
        Ok(match self.meta.get(self.tag_key(KEY_COUNT_TAG))? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("key count is not 8 bytes".into()))?,
            ),
        })
    }

    /// How many records `pk` has that a read would return now (`HLEN`): its key index entry,
    /// one read however many there are. While some deadline of the partition is due the index
    /// may still count records whose deadline has passed (until an entry removes them, a second
    /// or so): they are then counted one by one, at most `most` of them (the request thread's
    /// bound, as for a page of a list); `None` past that, for the caller to count by pages.
    pub fn record_count(&self, pk: &str, most: usize) -> Result<Option<u64>> {
        if self.first_deadline()?.is_some_and(|d| d <= now_ms()) {
            self.live_records(pk, most)
        } else {
            self.indexed_records(pk).map(Some)
        }
    }

    /// How many records `pk` has by its key index entry, expired or not.
    pub(crate) fn indexed_records(&self, pk: &str) -> Result<u64> {
        let key = index_key(pk);
        match self.keys.get(&key)? {
            None => Ok(0),
            Some(value) => decode_info(&key, &value)
                .map(|info| info.records)
                .ok_or_else(|| StoreError::Corrupt("a key index entry is malformed".into())),
        }
    }

    /// How many records of `pk` a read would return now (expired ones left out), counted from
    /// one snapshot without decoding them; `None` once more than `most` were looked at.
    fn live_records(&self, pk: &str, most: usize) -> Result<Option<u64>> {
        let now = now_ms();
        let mut live = 0;
        for (looked, guard) in self
            .db
            .snapshot()
            .prefix(&self.records, pk_prefix(pk))
            .enumerate()
        {
            if looked == most {
                return Ok(None);
            }
            let (_, value) = guard.into_inner()?;
            live += u64::from(!is_expired(&value, now));
        }
        Ok(Some(live))
    }

    /// Up to `limit` keys from hash position `from` on, in index order, from one snapshot (all
    /// keys of the last hash included, so a page never splits one); and the position to go on
    /// from, `None` when the partition has no more.
    pub fn scan_keys(&self, from: u64, limit: usize) -> Result<(Vec<KeyInfo>, Option<u64>)> {
        let snapshot = self.db.snapshot();
        let mut keys: Vec<KeyInfo> = Vec::new();
        for guard in snapshot.range(&self.keys, position_key(from)..) {
            let (key, value) = guard.into_inner()?;
            let info = decode_info(&key, &value)
                .ok_or_else(|| StoreError::Corrupt("a key index entry is malformed".into()))?;
            if keys.len() >= limit && keys.last().is_none_or(|last| last.hash != info.hash) {
                return Ok((keys, Some(info.hash)));
            }
            keys.push(info);
        }
        Ok((keys, None))
    }

    /// The partition id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn next_offset_key(&self) -> [u8; 5] {
        let mut k = [NEXT_OFFSET_TAG; 5];
        k[1..].copy_from_slice(&self.id.to_be_bytes());
        k
    }

    /// The deadline index key of (`deadline`, stored key): deadlines sort as numbers (the
    /// sign bit flipped), then by key.
    fn deadline_key(&self, deadline: i64, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(13 + key.len());
        k.extend_from_slice(&self.tag_key(DEADLINE_TAG));
        k.extend_from_slice(&((deadline as u64) ^ (1 << 63)).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Decodes a deadline index key of this partition.
    fn decode_deadline_key(&self, k: &[u8]) -> Result<Deadline> {
        let deadline = k
            .get(5..13)
            .and_then(|b| b.try_into().ok())
            .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64)
            .ok_or_else(|| StoreError::Corrupt("a deadline index key is too short".into()))?;
        Ok((deadline, k[13..].to_vec()))
    }

    /// Deadline index entries (deadline, stored key) from one snapshot, in order: those after
    /// `after` (all when `None`) whose deadline is at most `up_to`. Read lazily.
    pub fn due(
        &self,
        after: Option<&Deadline>,
        up_to: i64,
    ) -> impl Iterator<Item = Result<Deadline>> + use<> {
        // Nothing to read while no record of the partition has had a deadline: apply asks once
        // per batch, so this answer costs no key building, handle clone or snapshot.
        self.deadlines
            .load(Ordering::Acquire)
            .then(|| self.deadline_range(after, up_to))
            .into_iter()
            .flatten()
    }

    /// The deadline index entries of [`PartitionStore::due`], read from one snapshot.
    fn deadline_range(
        &self,
        after: Option<&Deadline>,
        up_to: i64,
    ) -> impl Iterator<Item = Result<Deadline>> + use<> {
        let start = match after {
            Some((deadline, key)) => Bound::Excluded(self.deadline_key(*deadline, key)),
            None => Bound::Included(self.tag_key(DEADLINE_TAG).to_vec()),
        };
        // Every key of deadline `up_to` sorts below the first key of `up_to + 1`.
        // (Stored keys never begin with 0xFF: a pk is UTF-8 or an escaped 0x00.)
        let end = match up_to.checked_add(1) {
            Some(next) => Bound::Excluded(self.deadline_key(next, &[])),
            None => Bound::Included(self.deadline_key(i64::MAX, &[0xFF])),
        };
        let this = self.clone();
        self.db
            .snapshot()
            .range(&self.meta, (start, end))
            .map(move |guard| this.decode_deadline_key(&guard.key()?))
    }

    /// The earliest deadline in the partition's deadline index (it may be a stale entry's).
    pub fn first_deadline(&self) -> Result<Option<i64>> {
        match self.due(None, i64::MAX).next() {
            None => Ok(None),
            Some(entry) => Ok(Some(entry?.0)),
        }
    }

    fn rejection_key(&self, offset: u64) -> [u8; 13] {
        self.outcome_key(REJECTION_TAG, offset)
    }

    fn returned_key(&self, offset: u64) -> [u8; 13] {
        self.outcome_key(RETURNED_TAG, offset)
    }

    fn outcome_key(&self, tag: u8, offset: u64) -> [u8; 13] {
        let mut k = [tag; 13];
        k[1..5].copy_from_slice(&self.id.to_be_bytes());
        k[5..].copy_from_slice(&offset.to_be_bytes());
        k
    }

    /// The log offset this partition applies next (0 for a new partition).
    pub fn next_offset(&self) -> Result<u64> {
        next_offset_in(&self.meta, self.id)
    }

    /// The raw stored value of an encoded key (the applier's read).
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Slice>> {
        Ok(self.records.get(key)?)
    }

    /// The stored value (header and data) of one record, without copying it.
    pub fn get_value(&self, pk: &str, sk: &str) -> Result<Option<Slice>> {
        Ok(self.records.get(encode_key(pk, sk))?)
    }

    /// Reads one record (none once it has expired by this node's clock).
    pub fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>> {
        match self.records.get(encode_key(pk, sk))? {
            Some(v) if !is_expired_now(&v) => {
                to_record(pk.to_string(), sk.to_string(), &v).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Reads several records from one consistent snapshot, in the order asked.
    pub fn get_many<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        max_bytes: usize,
    ) -> Result<Vec<Option<Record>>> {
        let mut keys = keys.into_iter().peekable();
        let Some(first) = keys.next() else {
            return Ok(Vec::new());
        };
        if keys.peek().is_none() {
            // One key needs no snapshot: a single read is consistent by itself.
            return Ok(vec![self.get(first.0, first.1)?]);
        }
        let snapshot = self.db.snapshot();
        let now = now_ms();
        let mut bytes = 0usize;
        std::iter::once(first)
            .chain(keys)
            .map(
                |(pk, sk)| match snapshot.get(&self.records, encode_key(pk, sk))? {
                    Some(v) => {
                        bytes += v.len();
                        if bytes > max_bytes {
                            return Err(StoreError::AnswerTooLarge { limit: max_bytes });
                        }
                        live_record(pk, sk, &v, now)
                    }
                    None => Ok(None),
                },
            )
            .collect()
    }

    /// Iterates `pk`'s records whose sk starts with `sk_prefix`, in sk byte order, strictly after
    /// `after` when given. Reads one snapshot taken now, and skips records expired now.
    pub fn scan(&self, pk: &str, sk_prefix: &str, after: Option<&str>) -> Scan {
        let pk_len = pk_prefix(pk).len();
        let prefix = encode_key(pk, sk_prefix);
        let start = match after {
            Some(after) if after.as_bytes() >= sk_prefix.as_bytes() => {
                Bound::Excluded(encode_key(pk, after))
            }
            _ => Bound::Included(prefix.clone()),
        };
        let snapshot = self.db.snapshot();
        let iter = snapshot.range(&self.records, (start, Bound::Unbounded));
        Scan {
            pk: pk.to_string(),
            pk_len,
            prefix,
            iter,
            now: now_ms(),
        }
    }

    /// Atomically applies `writes` and what `meta` says: the outcomes to keep (why an entry
    /// was rejected, what an applied entry's ops returned), the key index's changes, and the
    /// partition's next offset.
    pub fn commit<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        writes: impl IntoIterator<Item = (K, Option<V>)>,
        meta: &BatchMeta<'_>,
    ) -> Result<()> {
        let BatchMeta {
            rejections,
            returned,
            keys,
            deadlines_added,
            deadlines_removed,
            next_offset,
            last_entry,
        } = *meta;
        if !deadlines_added.is_empty() {
            self.deadlines.store(true, Ordering::Release);
        }
        // Left in fjall's journal buffer (by default every commit writes it out: a syscall per
        // batch the applier commits). What is applied can be applied again from the log, which
        // keeps every entry until a checkpoint has made the store durable (`Store::persist`).
        let mut batch = self.db.batch().durability(None);
        for (deadline, key) in deadlines_removed {
            batch.remove(&self.meta, self.deadline_key(*deadline, key));
        }
        for (deadline, key) in deadlines_added {
            batch.insert(&self.meta, self.deadline_key(*deadline, key), []);
        }
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(&self.records, key.as_ref(), v.as_ref()),
                None => batch.remove(&self.records, key.as_ref()),
            }
        }
        for (offset, outcome) in rejections {
            batch.insert(&self.meta, self.rejection_key(*offset), outcome.as_slice());
        }
        for (last, values) in returned {
            batch.insert(
                &self.meta,
                self.outcome_key(RETURNED_BATCH_TAG, *last),
                values.as_slice(),
            );
        }
        if !keys.is_empty() {
            let mut count = self.key_count()? as i64;
            for (pk, change) in keys {
                let key = index_key(pk);
                let (before, string) = match self.keys.get(&key)? {
                    Some(v) => decode_info(&key, &v)
                        .map(|i| (i.records as i64, i.string))
                        .ok_or_else(|| {
                            StoreError::Corrupt("a key index entry is malformed".into())
                        })?,
                    None => (0, false),
                };
                let after = before + change.records;
                if after > 0 {
                    let string = change.string.unwrap_or(string);
                    batch.insert(&self.keys, key, encode_info(after as u64, string));
                } else {
                    batch.remove(&self.keys, key);
                }
                count += i64::from(after > 0) - i64::from(before > 0);
            }
            batch.insert(
                &self.meta,
                self.tag_key(KEY_COUNT_TAG),
                (count.max(0) as u64).to_be_bytes(),
            );
        }
        batch.insert(
            &self.meta,
            self.next_offset_key(),
            next_offset.to_be_bytes(),
        );
        if let Some(entry) = last_entry {
            batch.insert(&self.meta, self.tag_key(LAST_ENTRY_TAG), entry.to_bytes());
        }
        batch.commit()?;
        Ok(())
    }

    /// The last entry applied, when known (not after a restore from a snapshot that did not
    /// say which it was, nor in a store written before it was kept).
    pub fn last_entry(&self) -> Result<Option<AppliedEntry>> {
        match self.meta.get(self.tag_key(LAST_ENTRY_TAG))? {
            None => Ok(None),
            Some(bytes) => AppliedEntry::from_bytes(&bytes)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt("the last applied entry is malformed".into())),
        }
    }

    /// Deletes the recorded outcomes (rejections and returned values) of entries at offsets in
    /// `from..below`; returns how many there were.
    pub fn prune_outcomes(&self, from: u64, below: u64) -> Result<usize> {
        if from >= below {
            return Ok(0);
        }
        let mut batch = self.db.batch();
        let mut pruned = 0;
        // A batch's values go once its last offset is below `below`: no offset at or past it
        // loses its values early.
        let ranges = [
            self.rejection_key(from)..self.rejection_key(below),
            self.returned_key(from)..self.returned_key(below),
            self.outcome_key(RETURNED_BATCH_TAG, from)..self.outcome_key(RETURNED_BATCH_TAG, below),
        ];
        for range in ranges {
            for guard in self.meta.range(range) {
                batch.remove(&self.meta, guard.key()?);
                pruned += 1;
            }
        }
        if pruned > 0 {
            batch.commit()?;
        }
        Ok(pruned)
    }

    /// The recorded outcome of a rejected entry at `offset`, if that entry was rejected.
    pub fn rejection(&self, offset: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .meta
            .get(self.rejection_key(offset))?
            .map(|s| s.to_vec()))
    }

    /// What the ops of the applied entry at `offset` returned, if any op returned something.
    pub fn returned(&self, offset: u64) -> Result<Option<Vec<Returned>>> {
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("stored values at {offset}: {e}"));
        if let Some(bytes) = self.meta.get(self.returned_key(offset))? {
            return serde_json::from_slice(&bytes).map(Some).map_err(corrupt);
        }
        // The first chunk whose last returning offset is `offset` or later: the only one that
        // can hold it (chunks are disjoint and in order).
        let from = self.outcome_key(RETURNED_BATCH_TAG, offset);
        let to = self.outcome_key(RETURNED_BATCH_TAG, u64::MAX);
        let Some(guard) = self.meta.range(from..=to).next() else {
            return Ok(None);
        };
        let (_, bytes) = guard.into_inner()?;
        // Only the asked entry's values are decoded; the others are skipped over as raw JSON.
        let chunk: Vec<(u64, &serde_json::value::RawValue)> =
            serde_json::from_slice(&bytes).map_err(corrupt)?;
        match chunk.into_iter().find(|(at, _)| *at == offset) {
            Some((_, values)) => serde_json::from_str(values.get())
                .map(Some)
                .map_err(corrupt),
            None => Ok(None),
        }
    }

    /// The stored (key, value) pairs of `pk`'s records, in key order, from one snapshot taken
    /// now; read lazily, so a caller can stop early.
    pub fn pk_entries(&self, pk: &str) -> impl Iterator<Item = Result<(Slice, Slice)>> + use<> {
        self.db
            .snapshot()
            .prefix(&self.records, pk_prefix(pk))
            .map(|guard| guard.into_inner().map_err(StoreError::from))
    }

    /// One consistent view of the partition for a snapshot: the offset it applies next, the
    /// last entry applied (when known), and every (stored key, stored value) in key order, all
    /// from one store snapshot taken now (apply and reads go on meanwhile).
    #[allow(clippy::type_complexity)]
    pub fn frozen(
        &self,
    ) -> Result<(
        u64,
        Option<AppliedEntry>,
        impl Iterator<Item = Result<(Slice, Slice)>> + use<>,
    )> {
        let snapshot = self.db.snapshot();
        let last_entry = match snapshot.get(&self.meta, self.tag_key(LAST_ENTRY_TAG))? {
            None => None,
            Some(bytes) => Some(AppliedEntry::from_bytes(&bytes).ok_or_else(|| {
                StoreError::Corrupt("the last applied entry is malformed".into())
            })?),
        };
        let next = match snapshot.get(&self.meta, self.next_offset_key())? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("next offset is not 8 bytes".into()))?,
            ),
        };
        let records = snapshot
            .iter(&self.records)
            .map(|guard| guard.into_inner().map_err(StoreError::from));
        Ok((next, last_entry, records))
    }

    /// Every (encoded key, stored value) of the partition, in key order, from one snapshot.
    pub fn entries(&self) -> impl Iterator<Item = Result<(Slice, Slice)>> + use<> {
        self.db
            .snapshot()
            .iter(&self.records)
            .map(|guard| guard.into_inner().map_err(StoreError::from))
    }

    /// Record count and SHA-256 over all (key, value) pairs in key order, from one snapshot.
    pub fn digest(&self) -> Result<Digest> {
        let snapshot = self.db.snapshot();
        let mut hasher = Sha256::new();
        let mut records = 0u64;
        for guard in snapshot.iter(&self.records) {
            let (k, v) = guard.into_inner()?;
            hasher.update((k.len() as u64).to_be_bytes());
            hasher.update(&k);
            hasher.update((v.len() as u64).to_be_bytes());
            hasher.update(&v);
            records += 1;
        }
        let sha256 = crate::model::Digest::from(hasher).to_string();
        Ok(Digest { records, sha256 })
    }

    /// Deletes the partition's records, its next offset and its recorded outcomes, as if this
    /// node had never held it. Handles still held elsewhere (an in-flight read) keep working until
    /// dropped; fjall removes the files after the last one goes.
    pub fn destroy(&self) -> Result<()> {
        let mut batch = self.db.batch();
        for outcome_tag in [
            REJECTION_TAG,
            RETURNED_TAG,
            RETURNED_BATCH_TAG,
            DEADLINE_TAG,
        ] {
            let mut tag = [outcome_tag; 5];
            tag[1..].copy_from_slice(&self.id.to_be_bytes());
            for guard in self.meta.prefix(tag) {
                batch.remove(&self.meta, guard.key()?);
            }
        }
        batch.remove(&self.meta, self.next_offset_key());
        batch.remove(&self.meta, self.tag_key(KEY_COUNT_TAG));
        batch.remove(&self.meta, self.tag_key(KEY_INDEX_BUILT_TAG));
        batch.remove(&self.meta, self.tag_key(RESTORED_TAG));
        batch.remove(&self.meta, self.tag_key(RESTORING_TAG));
        batch.remove(&self.meta, self.tag_key(LAST_ENTRY_TAG));
        batch.commit()?;
        self.db.delete_keyspace(self.records.clone())?;
        self.db.delete_keyspace(self.keys.clone())?;
        Ok(())
    }

    /// Writes the partition's in-memory table out to disk tables and waits for it. Reads of
    /// flushed data use bloom filters and block indexes instead of walking the memtable.
    pub fn flush_memtable(&self) -> Result<()> {
        self.records.rotate_memtable_and_wait()?;
        Ok(())
    }

    /// Approximate number of records (cheap; exact count comes with `digest`).
    pub fn approximate_len(&self) -> usize {
        self.records.approximate_len()
    }
}

/// The record a stored `value` holds for (pk, sk), unless it has expired by `now` (unix ms).
pub fn live_record(pk: &str, sk: &str, value: &[u8], now: i64) -> Result<Option<Record>> {
    if is_expired(value, now) {
        return Ok(None);
    }
    to_record(pk.to_string(), sk.to_string(), value).map(Some)
}

/// The record (pk, sk) whose stored value is `value`.
pub fn to_record(pk: String, sk: String, value: &[u8]) -> Result<Record> {
    let view = decode_value(value).ok_or_else(|| {
        StoreError::Corrupt(format!("value of {pk:?}/{sk:?} has no valid header"))
    })?;
    let data_json = String::from_utf8(view.data_json.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("data of {pk:?}/{sk:?} is not UTF-8")))?;
    Ok(Record {
        pk,
        sk,
        data_json,
        created_at_ms: view.created_at_ms,
        updated_at_ms: view.updated_at_ms,
        expires_at_ms: view.expires_at_ms,
        own_deadline: view.own_deadline,
    })
}

/// Iterator over one pk's records (see [`PartitionStore::scan`]).
pub struct Scan {
    pk: String,
    pk_len: usize,
    prefix: Vec<u8>,
    iter: fjall::Iter,
    /// Records expired at this time are skipped.
    now: i64,
}

impl Iterator for Scan {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = loop {
            let (key, value) = match self.iter.next()?.into_inner() {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            if !key.starts_with(&self.prefix) {
                return None;
            }
            if !is_expired(&value, self.now) {
                break (key, value);
            }
        };
        let Some(sk) = sk_of(&key, self.pk_len) else {
            let shown = decode_key(&key).map(|(_, sk)| sk).unwrap_or_default();
            return Some(Err(StoreError::Corrupt(format!("bad sort key {shown:?}"))));
        };
        Some(to_record(self.pk.clone(), sk.to_string(), &value))
    }
}
