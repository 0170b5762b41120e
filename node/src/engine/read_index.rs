//! An in-memory copy of one partition's records, for single-key reads without walking the LSM
//! (a fjall point read costs ~1.5 µs; a hash lookup ~0.1 µs, and single-key reads are what Redis
//! clients and edge lookups mostly do).
//!
//! Only the applier writes it: after a batch is committed to the store and before the batch's
//! offset is published. Readers never fill it, so a reader can never put back a value the applier
//! just replaced. When the partition's records outgrow the budget, the index turns itself off and
//! reads go to the store.
//!
//! Layout: the map is split into independently locked shards. A shard keeps its records back to
//! back in one arena (key length and value length as LEB128 varints, the key, the value) and finds
//! them through a hash table of 4-byte arena offsets. A table of boxed records cost a 16-byte
//! fat pointer per slot (~35 bytes per record at hashbrown's typical load) plus an allocation
//! rounded up to its size class; 1M small records took ~100 MB that way and take ~70 MB this
//! way. Replaced and removed records stay in the arena as garbage until it is a quarter of the
//! arena, then the shard is compacted (copied live records only), so overwrites cannot grow it
//! without bound. What the budget counts is what the shards have allocated.
//!
//! Several keys at once ([`ReadIndex::get_many`]) are read like a seqlock: the applier makes a
//! version odd while it applies a batch and even again after, and a reader that finds the same
//! even version before and after its lookups saw one batch boundary (a lookup that saw a batch's
//! write took its shard lock after the applier's, so it also sees the odd version afterwards).

use crate::store::{PartitionStore, StoreError};
use fjall::Slice;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Independently locked parts of the map: the applier writes one while readers use the others.
const SHARDS: usize = 16;

/// Garbage below this is never compacted away (small shards would otherwise be copied often).
const MIN_GARBAGE_TO_COMPACT: usize = 4 << 10;

/// What the index knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The stored value.
    Found(Slice),
    /// No such record (the index holds every record, so this is authoritative).
    Absent,
    /// The index is off: ask the store.
    Unknown,
}

/// Appends `value` as an LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an LEB128 varint at `*at` and moves `*at` past it.
fn get_varint(bytes: &[u8], at: &mut usize) -> usize {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// Bytes a varint of `value` takes.
fn varint_len(value: usize) -> usize {
    (usize::BITS - (value | 1).leading_zeros()).div_ceil(7) as usize
}

/// A record in an arena: its key, its value, and the bytes it takes.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    len: usize,
}

/// Bits of an offset that say where in its chunk a record starts; the bits above say which chunk.
const POSITION_BITS: u32 = 18;

/// A chunk's size once an arena has grown (smaller chunks come first, each about the size of all
/// before it, so a shard of a few records holds a few hundred bytes). A record larger than this
/// gets a chunk of its own.
const CHUNK_BYTES: usize = 64 << 10;

/// The first chunk's size.
const FIRST_CHUNK_BYTES: usize = 512;

/// Chunks an arena can address: 16,384, so at least 1 GiB per shard and 16 GiB per partition.
const MAX_CHUNKS: usize = 1 << (u32::BITS - POSITION_BITS);

/// A shard could not take a record: it would need more chunks than an offset can name.
struct ArenaFull;

/// Records back to back (key length and value length as LEB128 varints, key, value), live ones
/// and garbage, in chunks that never grow once allocated: appending never copies or frees what
/// is there (a growing buffer's copies left freed blocks the allocator held on to).
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    /// The chunks' capacities, together.
    chunk_bytes: usize,
    /// Bytes written.
    used: usize,
    /// Bytes of replaced and removed records.
    garbage: usize,
}

impl Arena {
    /// Bytes allocated: the chunks and the chunk list.
    fn allocated(&self) -> usize {
        self.chunk_bytes + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
    }

    /// The record at `offset` (which [`Arena::append`] returned).
    fn record(&self, offset: u32) -> Record<'_> {
        let chunk = &self.chunks[(offset >> POSITION_BITS) as usize];
        let start = (offset & ((1 << POSITION_BITS) - 1)) as usize;
        let mut at = start;
        let key_len = get_varint(chunk, &mut at);
        let value_len = get_varint(chunk, &mut at);
        let value_at = at + key_len;
        Record {
            key: &chunk[at..value_at],
            value: &chunk[value_at..value_at + value_len],
            len: value_at + value_len - start,
        }
    }

    /// Appends a record; returns its offset.
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<u32, ArenaFull> {
        let len = varint_len(key.len()) + varint_len(value.len()) + key.len() + value.len();
        let fits = self.chunks.last().is_some_and(|chunk| {
            chunk.capacity() - chunk.len() >= len && chunk.len() < 1 << POSITION_BITS
        });
        if !fits {
            if self.chunks.len() == MAX_CHUNKS {
                return Err(ArenaFull);
            }
            let size = self
                .chunk_bytes
                .clamp(FIRST_CHUNK_BYTES, CHUNK_BYTES)
                .max(len);
            self.chunks.push(Vec::with_capacity(size));
            self.chunk_bytes += size;
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = ((index as u32) << POSITION_BITS) | chunk.len() as u32;
        put_varint(chunk, key.len());
        put_varint(chunk, value.len());
        chunk.extend_from_slice(key);
        chunk.extend_from_slice(value);
        self.used += len;
        Ok(offset)
    }
}

/// One independently locked part of the index: an arena of records and a table of their offsets.
#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    arena: Arena,
}

impl Shard {
    /// Bytes allocated: the arena and the table.
    fn allocated(&self) -> usize {
        self.arena.allocated() + self.table.allocation_size()
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        let arena = &self.arena;
        self.table
            .find(hash, |&offset| arena.record(offset).key == key)
            .map(|&offset| arena.record(offset).value)
    }

    fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        hasher: &impl BuildHasher,
    ) -> Result<(), ArenaFull> {
        let offset = self.arena.append(key, value)?;
        let arena = &mut self.arena;
        match self.table.find_mut(hash, |&o| arena.record(o).key == key) {
            Some(slot) => {
                arena.garbage += arena.record(*slot).len;
                *slot = offset;
            }
            None => {
                self.table
                    .insert_unique(hash, offset, |&o| hasher.hash_one(arena.record(o).key));
            }
        }
        self.compact_if_wasteful()
    }

    fn remove(&mut self, hash: u64, key: &[u8]) -> Result<(), ArenaFull> {
        let arena = &mut self.arena;
        if let Ok(entry) = self.table.find_entry(hash, |&o| arena.record(o).key == key) {
            let (offset, _) = entry.remove();
            arena.garbage += arena.record(offset).len;
        }
        self.compact_if_wasteful()
    }

    /// Copies the live records into a new arena once garbage is a quarter of what was written.
    fn compact_if_wasteful(&mut self) -> Result<(), ArenaFull> {
        let garbage = self.arena.garbage;
        if garbage < MIN_GARBAGE_TO_COMPACT || garbage * 4 < self.arena.used {
            return Ok(());
        }
        // The table changes only once every record has moved: on failure the shard stays as it
        // was (the index is then turned off, and a reader may still look in the meantime).
        let old = std::mem::take(&mut self.arena);
        let mut moved = Vec::with_capacity(self.table.len());
        for &offset in self.table.iter() {
            let record = old.record(offset);
            match self.arena.append(record.key, record.value) {
                Ok(new) => moved.push(new),
                Err(full) => {
                    self.arena = old;
                    return Err(full);
                }
            }
        }
        for (offset, new) in self.table.iter_mut().zip(moved) {
            *offset = new;
        }
        Ok(())
    }
}

/// See the module docs.
pub struct ReadIndex {
    shards: Box<[RwLock<Shard>]>,
    /// foldhash with a random seed per process and per index (keys come from clients, so never
    /// a fixed seed; foldhash calls itself minimally DoS-resistant, which is what a seeded hash
    /// table needs): SipHash took ~140 instructions of the ~5,000 a pipelined `GET` costs.
    hasher: foldhash::fast::RandomState,
    /// What the shards have allocated, together.
    bytes: AtomicUsize,
    budget: usize,
    enabled: AtomicBool,
    /// Odd while the applier applies a batch; see the module docs.
    version: AtomicU64,
}

/// Tries of a consistent multi-key lookup before the caller reads the store instead.
const MANY_ATTEMPTS: usize = 3;

impl ReadIndex {
    fn empty(budget: usize) -> ReadIndex {
        ReadIndex {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            bytes: AtomicUsize::new(0),
            budget,
            enabled: AtomicBool::new(budget > 0),
            version: AtomicU64::new(0),
        }
    }

    /// Loads every record of `store`, or returns an index that is off if they exceed `budget`.
    pub fn load(store: &PartitionStore, budget: usize) -> Result<ReadIndex, StoreError> {
        let index = ReadIndex::empty(budget);
        if budget == 0 {
            return Ok(index);
        }
        for entry in store.entries() {
            let (key, value) = entry?;
            index.insert(&key, &value);
            if !index.enabled() {
                tracing::info!(
                    partition = store.id(),
                    budget,
                    "the partition is larger than READ_INDEX_MAX_BYTES; reads use the store"
                );
                break;
            }
        }
        Ok(index)
    }

    /// An index that is off: every lookup goes to the store.
    pub fn off() -> ReadIndex {
        ReadIndex::empty(0)
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The key's hash and its shard. The shard is picked from bits the table itself does not use
    /// (it takes buckets from the low bits and its tags from the top seven).
    fn locate(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        let shard = (hash >> 48) as usize % SHARDS;
        (hash, &self.shards[shard])
    }

    /// Runs `change` on the key's shard and keeps the allocated total; turns the index off when
    /// the total passes the budget or the shard cannot take the change.
    fn change_shard(
        &self,
        key: &[u8],
        change: impl FnOnce(&mut Shard, u64) -> Result<(), ArenaFull>,
    ) {
        let (hash, shard) = self.locate(key);
        let (before, after, result) = {
            let mut shard = shard.write().expect("read index shard");
            let before = shard.allocated();
            let result = change(&mut shard, hash);
            (before, shard.allocated(), result)
        };
        let total = if after >= before {
            self.bytes.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            self.bytes.fetch_sub(before - after, Ordering::Relaxed) - (before - after)
        };
        if result.is_err() || total > self.budget {
            self.disable();
        }
    }

    fn insert(&self, key: &[u8], value: &[u8]) {
        self.change_shard(key, |shard, hash| {
            shard.insert(hash, key, value, &self.hasher)
        });
    }

    fn remove(&self, key: &[u8]) {
        self.change_shard(key, |shard, hash| shard.remove(hash, key));
    }

    /// Turns the index off for good (every lookup goes to the store) and frees it.
    pub fn turn_off(&self) {
        self.disable();
    }

    fn disable(&self) {
        self.enabled.store(false, Ordering::Release);
        for shard in &self.shards {
            *shard.write().expect("read index shard") = Shard::default();
        }
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// Applies a committed batch's writes (`None` deletes).
    pub fn apply<'a>(&self, writes: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>) {
        if !self.enabled() {
            return;
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        for (key, value) in writes {
            match value {
                Some(v) => self.insert(key, v),
                None => self.remove(key),
            }
            if !self.enabled() {
                break;
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Looks up several encoded keys as of one batch boundary, in order; `None` when the index
    /// cannot answer (off, or the applier kept changing it), and the caller reads the store.
    /// [`StoreError::AnswerTooLarge`] as soon as the values found pass `max_bytes` (the rest
    /// are not copied).
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        max_bytes: usize,
    ) -> Option<Result<Vec<Option<Slice>>, StoreError>> {
        for _ in 0..MANY_ATTEMPTS {
            let before = self.version.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let mut found = Vec::with_capacity(keys.len());
            let mut bytes = 0usize;
            for key in keys {
                match self.get(key.as_ref()) {
                    Lookup::Found(value) => {
                        bytes += value.len();
                        if bytes > max_bytes {
                            return Some(Err(StoreError::AnswerTooLarge { limit: max_bytes }));
                        }
                        found.push(Some(value));
                    }
                    Lookup::Absent => found.push(None),
                    Lookup::Unknown => return None,
                }
            }
            // A lookup that saw a write of the batch in progress took its shard's lock after the
            // applier released it, so this load sees the version the applier made odd (or later).
            if self.version.load(Ordering::Acquire) == before {
                return Some(Ok(found));
            }
        }
        None
    }

    /// Looks up an encoded key.
    pub fn get(&self, key: &[u8]) -> Lookup {
        match self.get_with(key, |value| Slice::from(value)) {
            None => Lookup::Unknown,
            Some(None) => Lookup::Absent,
            Some(Some(value)) => Lookup::Found(value),
        }
    }

    /// What `read` makes of the key's stored value, run in place (no copy of the value first);
    /// `Some(None)` when there is no such record, `None` when the index is off (ask the
    /// store). `read` runs under the shard's read lock: keep it short.
    pub fn get_with<R>(&self, key: &[u8], read: impl FnOnce(&[u8]) -> R) -> Option<Option<R>> {
        if !self.enabled() {
            return None;
        }
        let (hash, shard) = self.locate(key);
        let found = shard
            .read()
            .expect("read index shard")
            .find(hash, key)
            .map(read);
        // Turned off while we looked: the map may have been cleared under us.
        if !self.enabled() {
            return None;
        }
        Some(found)
    }

    /// Bytes the index has allocated (its shards' arenas and tables); 0 when off.
    pub fn bytes(&self) -> usize {
        if self.enabled() {
            self.bytes.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("read index shard").table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, encode_key, encode_value};

    /// The shards' bookkeeping agrees with their contents: the counted total is what they have
    /// allocated, and the garbage is exactly the arena bytes no live record uses.
    fn assert_consistent(index: &ReadIndex) {
        let mut allocated = 0;
        for shard in &index.shards {
            let shard = shard.read().unwrap();
            allocated += shard.allocated();
            let arena = &shard.arena;
            let live: usize = shard.table.iter().map(|&o| arena.record(o).len).sum();
            let written: usize = arena.chunks.iter().map(Vec::len).sum();
            assert_eq!(arena.used, written);
            assert_eq!(
                arena.used - arena.garbage,
                live,
                "garbage is counted exactly"
            );
            assert!(
                arena.garbage < MIN_GARBAGE_TO_COMPACT || arena.garbage * 4 < arena.used,
                "garbage is compacted away: {} of {}",
                arena.garbage,
                arena.used
            );
            let capacity: usize = arena.chunks.iter().map(Vec::capacity).sum();
            assert_eq!(arena.chunk_bytes, capacity);
        }
        assert_eq!(index.bytes(), allocated);
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            u32::MAX as usize,
        ] {
            let mut bytes = vec![0xff];
            put_varint(&mut bytes, value);
            assert_eq!(bytes.len() - 1, varint_len(value), "{value}");
            let mut at = 1;
            assert_eq!(get_varint(&bytes, &mut at), value);
            assert_eq!(at, bytes.len());
        }
    }

    #[test]
    fn loads_applies_and_turns_off_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap().partition(0).unwrap();
        let v = encode_value(1, 1, None, false, b"\"x\"");
        store
            .commit(
                [
                    (encode_key("a", ""), Some(v.clone())),
                    (encode_key("b", ""), Some(v.clone())),
                ],
                &crate::store::BatchMeta {
                    next_offset: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        let index = ReadIndex::load(&store, 1 << 20).unwrap();
        assert_eq!(index.len(), 2);
        assert_consistent(&index);
        assert_eq!(
            index.get(&encode_key("a", "")),
            Lookup::Found(Slice::from(v.as_slice()))
        );
        assert_eq!(index.get(&encode_key("zz", "")), Lookup::Absent);
        let (ka, kc) = (encode_key("a", ""), encode_key("c", ""));
        index.apply([(&ka, &None), (&kc, &Some(v.clone()))]);
        assert_eq!(index.get(&ka), Lookup::Absent);
        assert!(matches!(index.get(&kc), Lookup::Found(_)));

        let small = ReadIndex::load(&store, 100).unwrap();
        assert!(!small.enabled());
        assert_eq!(small.get(&encode_key("a", "")), Lookup::Unknown);
        let off = ReadIndex::load(&store, 0).unwrap();
        assert_eq!(off.get(&encode_key("a", "")), Lookup::Unknown);
        // Growing past the budget turns it off rather than serving a partial copy.
        // Two records take at most twice what one takes (alone in a shard, or sharing one).
        let one = ReadIndex::empty(usize::MAX);
        one.apply([(&ka, &Some(v.clone()))]);
        let tight = ReadIndex::load(&store, 2 * one.bytes()).unwrap();
        assert!(tight.enabled());
        assert_eq!(tight.len(), 2);
        let big = Some(vec![0u8; 1000]);
        tight.apply([(&kc, &big)]);
        assert_eq!(tight.get(&kc), Lookup::Unknown);
        assert_eq!(tight.bytes(), 0);
    }

    #[test]
    fn overwrites_and_removals_keep_every_shard_and_the_count_exact() {
        let index = ReadIndex::empty(usize::MAX);
        let keys: Vec<Vec<u8>> = (0..2_000)
            .map(|i| encode_key(&format!("k{i}"), ""))
            .collect();
        let value = |i: usize, round: usize| Some(format!("v{i}-{round}").into_bytes());
        for round in 0..3 {
            let values: Vec<Option<Vec<u8>>> = (0..keys.len()).map(|i| value(i, round)).collect();
            index.apply(keys.iter().zip(values.iter()));
            assert_consistent(&index);
        }
        assert_eq!(index.len(), keys.len(), "overwrites add nothing");
        let gone: Vec<Option<Vec<u8>>> = vec![None; 1_000];
        index.apply(keys[..1_000].iter().zip(gone.iter()));
        assert_consistent(&index);
        assert_eq!(index.len(), 1_000);
        for (i, key) in keys.iter().enumerate() {
            let expected = if i < 1_000 {
                Lookup::Absent
            } else {
                Lookup::Found(Slice::from(value(i, 2).unwrap().as_slice()))
            };
            assert_eq!(index.get(key), expected, "key {i}");
        }
        // Every shard holds some of them: the shard bits are not the table's bucket bits.
        assert!(
            index
                .shards
                .iter()
                .all(|s| !s.read().unwrap().table.is_empty())
        );
    }

    #[test]
    fn records_of_every_size_round_trip() {
        let index = ReadIndex::empty(usize::MAX);
        let sizes = [0, 1, 127, 128, 16_383, 16_384, 200_000];
        let mut written = Vec::new();
        for (i, &key_len) in sizes.iter().enumerate() {
            for (j, &value_len) in sizes.iter().enumerate() {
                let mut key = vec![b'k'; key_len];
                key.extend_from_slice(format!("{i}.{j}").as_bytes());
                let value: Vec<u8> = (0..value_len).map(|n| (n * 7 + i + j) as u8).collect();
                written.push((key, Some(value)));
            }
        }
        index.apply(written.iter().map(|(k, v)| (k, v)));
        assert_consistent(&index);
        for (key, value) in &written {
            let value = value.as_ref().unwrap();
            assert_eq!(index.get(key), Lookup::Found(Slice::from(value.as_slice())));
            assert_eq!(index.get_with(key, <[u8]>::len), Some(Some(value.len())));
        }
        assert_eq!(index.get_with(b"never written", <[u8]>::len), Some(None));
        index.disable();
        assert_eq!(index.get_with(&written[0].0, <[u8]>::len), None);
    }

    #[test]
    fn rewriting_one_key_keeps_the_arena_bounded() {
        let index = ReadIndex::empty(usize::MAX);
        let key = encode_key("counter", "");
        let others: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..100)
            .map(|i| (encode_key(&format!("o{i}"), ""), Some(vec![b'o'; 50])))
            .collect();
        index.apply(others.iter().map(|(k, v)| (k, v)));
        for n in 0..100_000u32 {
            let value = Some(n.to_string().into_bytes());
            index.apply([(&key, &value)]);
        }
        assert_consistent(&index);
        let used: usize = index
            .shards
            .iter()
            .map(|s| s.read().unwrap().arena.used)
            .sum();
        assert!(
            used < SHARDS * MIN_GARBAGE_TO_COMPACT * 2,
            "{used} bytes in the arenas"
        );
        assert_eq!(index.get(&key), Lookup::Found(Slice::from(&b"99999"[..])));
        for (key, value) in &others {
            assert_eq!(
                index.get(key),
                Lookup::Found(Slice::from(value.as_deref().unwrap()))
            );
        }
    }

    #[test]
    fn several_keys_are_read_as_of_one_batch() {
        let index = std::sync::Arc::new(ReadIndex::empty(usize::MAX));
        // Keys in many shards, all rewritten by every batch with the batch's number.
        let keys: Vec<Vec<u8>> = (0..32).map(|i| encode_key(&format!("k{i}"), "")).collect();
        let write = |n: u32| {
            let value = Some(n.to_string().into_bytes());
            let batch: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
                keys.iter().map(|k| (k, &value)).collect();
            index.apply(batch);
        };
        write(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        // Answers taken while the applier is still writing: the writer goes on until the
        // readers have had some, so the torn-read check is never vacuous, however the two
        // cores are shared (a fixed number of batches once left the readers none at all).
        let answered = std::sync::atomic::AtomicU64::new(0);
        let refused = std::sync::atomic::AtomicU64::new(0);
        let last = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        while !stop.load(Ordering::Relaxed) {
                            match index.get_many(&keys, usize::MAX) {
                                Some(Ok(values)) => {
                                    let first = values[0].clone().expect("written");
                                    for value in &values {
                                        assert_eq!(value.as_ref(), Some(&first), "a torn read");
                                    }
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(Err(e)) => panic!("{e}"),
                                None => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            let mut n = 1;
            // A reader that ended before `stop` found a torn read: its panic is the verdict.
            // An index that never answers fails the assertion below after 10M batches rather
            // than hanging the test.
            while (n < 20_000 || answered.load(Ordering::Relaxed) < 200)
                && n < 10_000_000
                && !readers.iter().any(|r| r.is_finished())
            {
                write(n);
                n += 1;
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            stop.store(true, Ordering::Relaxed);
            n - 1
        });
        assert!(
            answered.load(Ordering::Relaxed) >= 200,
            "the index answered ({} refused)",
            refused.load(Ordering::Relaxed)
        );
        // Once the applier is quiet, every read is answered, with the last batch.
        let values = index
            .get_many(&keys, usize::MAX)
            .expect("a quiet index answers")
            .unwrap();
        let expected = last.to_string().into_bytes();
        assert!(values.iter().all(|v| v.as_deref() == Some(&expected[..])));
        // An index that is off never answers.
        assert!(ReadIndex::off().get_many(&keys, usize::MAX).is_none());
        // Values past the bytes asked for end the read, whatever the keys that follow.
        let (each, total) = (expected.len(), keys.len() * expected.len());
        assert!(matches!(
            index.get_many(&keys, total - 1),
            Some(Err(StoreError::AnswerTooLarge { limit })) if limit == total - 1
        ));
        assert_eq!(
            index.get_many(&keys, total).unwrap().unwrap().len(),
            keys.len(),
            "values of {each} bytes each, {total} in all"
        );
    }
}
