//! Applying log entries to a partition: deterministic, a pure function of the entries and the
//! stored state (docs/architecture.md invariant 4). No clock, randomness or I/O beyond reading the store.

use super::feed::{Change, ChangeKind, EntryChanges};
use super::plugins::{PluginResolver, Resolved};
use super::read_index::ReadIndex;
use crate::cond::{Budget, CondError, Conditions, ENTRY_LIMITS, Subject};
use crate::log::LogRecord;
use crate::model::{AppliedEntry, Rejection, RejectionKind, Returned};
use crate::model::{
    DecodeError, Digest, ExpireIf, LogEntry, Op, OpKind, PluginRef, Position, StoredRecord,
    partition_of, pk_version,
};
use crate::plugins::{Input, PluginFailure};
use crate::store::{
    BatchMeta, Deadline, KeyChange, PartitionStore, StoreError, decode_value, encode_key,
    encode_value, pk_prefix,
};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Bytes of stored data the read-modify-write, `check` and `delete_key` ops of one entry may
/// read together (each record counts its key and value plus 64; each pending write looked
/// through counts 64). Part of format v1: every replica runs out at the same op.
pub const ENTRY_READ_BYTES: u64 = 64 << 20;

/// An `incr_long_double` over `n` digits is charged `n * n / 64` bytes of [`ENTRY_READ_BYTES`]
/// besides its reads: the budget then holds ~270 increments of a 4,000-digit number (~0.1 s),
/// and ~800,000 small ones. Part of log format v4 (it decides which entries are refused).
const LONG_DOUBLE_SQUARED_DIGITS_PER_BYTE: u64 = 64;

/// How many records with deadlines of their own (format 3) a `key_ttl` op passes looking for
/// its key's deadline before it takes none (format v3): in a hash whose fields mostly have TTLs
/// of their own, each new field would otherwise walk all of them. Past the bound the new field
/// outlives a key deadline it did not find (never the other way round).
pub const OWN_DEADLINES_PASSED: usize = 64;

/// Largest data a read-modify-write op may produce (`APPEND` cannot grow a value past it).
/// Part of format v1, so it is a constant and not a node setting.
pub const MAX_COMPUTED_BYTES: usize = 1 << 20;

/// What each node a `json` op's path visits costs from the entry's reads, in bytes: a walk of a
/// document costs about what reading it twice would.
const JSON_VISIT_BYTES: u64 = 32;

/// A `json` op's edit within the bounds apply gives an entry holding it alone: what a
/// transaction's reads see of a document it edits before the entry applies.
pub fn edit_json_alone(
    cmd: crate::model::JsonCmd,
    current: Option<&[u8]>,
    path: &str,
    operand: &str,
) -> Result<super::Edited, super::JsonEditError> {
    let mut limits = super::EditLimits {
        visits: ENTRY_READ_BYTES / JSON_VISIT_BYTES,
        max_bytes: MAX_COMPUTED_BYTES.max(current.map_or(0, <[u8]>::len)),
        paths_before_v7: false,
    };
    super::edit_json(cmd, current, path, operand, &mut limits)
}

/// The data a read-modify-write op of `kind` computes from the `current` record's data JSON
/// and its `operand`, as apply computes it (within [`MAX_COMPUTED_BYTES`]), or why it cannot:
/// also how a transaction's later reads see the op before it applies.
pub fn compute_read_modify_write(
    kind: OpKind,
    current: Option<&[u8]>,
    operand: &str,
) -> Result<String, String> {
    let data = super::rmw::compute(kind, current, operand).map_err(|e| e.to_string())?;
    if data.len() > MAX_COMPUTED_BYTES {
        return Err(format!(
            "the value would grow to {} bytes; a read-modify-write op may produce at most \
             {MAX_COMPUTED_BYTES}",
            data.len()
        ));
    }
    Ok(data)
}

/// Fuel all the plugin calls of one entry may burn together, in calls' worth of PLUGIN_FUEL.
/// Like the condition budget, part of what every replica must agree on.
pub const ENTRY_PLUGIN_CALLS: u64 = 10;

/// What applying needs besides the partition's store: the same on every replica.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub conds: &'a Conditions,
    pub plugins: &'a PluginResolver,
    /// The namespace's partition count (an op's pk must belong to the entry's partition).
    pub partitions: u32,
    /// The partition's read index, which mirrors the committed store (the applier updates it
    /// after each commit): it answers apply's point reads with a hash lookup instead of a walk of
    /// the LSM (the memtable's skiplist walk was a fifth of the CPU of pipelined SETs).
    pub index: Option<&'a ReadIndex>,
    /// Positions whose entries are rejected unread (REJECT_ENTRIES_AT).
    pub reject_at: &'a BTreeSet<Position>,
}

/// The hasher of apply's maps: foldhash, randomly seeded per map like std's, and several times
/// cheaper than SipHash on short keys (SipHash and the rehashes of growing maps were ~6 % of a
/// node's instructions under pipelined `INCR`s). Iteration order never decides an outcome.
type Hasher = foldhash::fast::RandomState;

/// Pending writes of a batch: key → new value (`None` = delete). Later entries read through it.
type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>, Hasher>;

/// Records an entry may remove because its timestamp reached their deadline, at most (real
/// removals; stale index entries do not count). Part of format v1: every replica stops at the
/// same record. A backlog beyond it goes with the next entries (ticks included).
pub const PURGE_PER_ENTRY: usize = 10_000;

/// The result of applying a run of entries, ready to commit atomically.
pub struct AppliedBatch {
    pub writes: Overlay,
    /// Offsets of rejected entries and why.
    pub rejections: Vec<(u64, Rejection)>,
    /// Offsets of applied entries whose ops returned values, and the values.
    pub returned: Vec<(u64, Vec<Returned>)>,
    /// How the batch changed each key (pk): for the key index.
    pub keys: HashMap<String, KeyChange, Hasher>,
    /// Deadline index entries the batch adds and removes.
    pub deadlines_added: BTreeSet<Deadline>,
    pub deadlines_removed: HashSet<Deadline, Hasher>,
    /// Records removed because an entry's timestamp reached their deadline.
    pub expired: u64,
    /// What each applied entry changed (for the change feed), in offset order.
    pub changes: Vec<EntryChanges>,
    /// The changes of the entry being applied, and its timestamp.
    entry_changes: Vec<Change>,
    entry_ts: i64,
    /// The last committed deadline index entry this batch has looked at: every committed entry
    /// up to it is already removed (purged or found stale).
    purge_cursor: Option<Deadline>,
    /// The first committed deadline index entry after `purge_cursor`, once looked up (so an
    /// entry with nothing due costs no index read).
    next_committed: Option<Option<Deadline>>,
    /// What `key_ttl` ops looked up, kept for the batch (built on the first such op, so other
    /// workloads pay nothing): the pending keys in order, kept up as entries merge in, and
    /// each pk's first stored record (the store does not change under a batch).
    key_deadlines: Option<KeyDeadlineIndex>,
    /// The offset to apply next once this batch is committed.
    pub next_offset: u64,
    pub entries: usize,
    /// The batch stopped before the entry at `next_offset`: it names a plugin (digest) this
    /// node does not have yet. The partition waits for it; it never rejects for timing.
    pub waiting_for: Option<Digest>,
    /// The batch stopped before the entry at `next_offset`: it is of a newer log format (the
    /// version) than this build applies. The partition stops there until a newer build runs.
    pub newer_format: Option<u64>,
}

impl AppliedBatch {
    /// An empty batch starting at `first_offset`, sized for `entries` (most write a key each:
    /// the overlay is not rehashed as it fills).
    fn new(first_offset: u64, entries: usize) -> Self {
        AppliedBatch {
            writes: Overlay::with_capacity_and_hasher(entries, Hasher::default()),
            rejections: Vec::new(),
            returned: Vec::new(),
            keys: HashMap::default(),
            deadlines_added: BTreeSet::new(),
            deadlines_removed: HashSet::default(),
            expired: 0,
            changes: Vec::new(),
            entry_changes: Vec::new(),
            entry_ts: 0,
            purge_cursor: None,
            next_committed: None,
            key_deadlines: None,
            next_offset: first_offset,
            entries: 0,
            waiting_for: None,
            newer_format: None,
        }
    }

    /// The first committed deadline index entry after the purge cursor, read once and kept
    /// until the cursor moves.
    fn next_committed(&mut self, store: &PartitionStore) -> Result<Option<Deadline>, StoreError> {
        if let Some(next) = &self.next_committed {
            return Ok(next.clone());
        }
        let next = store
            .due(self.purge_cursor.as_ref(), i64::MAX)
            .next()
            .transpose()?;
        self.next_committed = Some(next.clone());
        Ok(next)
    }

    /// Notes a deadline index change: `added` or removed.
    fn note_deadline(&mut self, added: bool, deadline: Deadline) {
        if added {
            self.deadlines_added.insert(deadline);
        } else if !self.deadlines_added.remove(&deadline) {
            self.deadlines_removed.insert(deadline);
        }
    }
}

/// What one entry came to.
enum EntryOutcome {
    Applied(Vec<Returned>),
    Rejected(Rejection),
    /// Needs a plugin not yet here (digest).
    Waiting(Digest),
    /// Of a newer log format (version) than this build applies.
    Newer(u64),
}

/// Applies `records` (in offset order) on top of `store`'s committed state, stopping before an
/// entry whose plugin is not here yet or whose format is newer than this build's.
pub fn apply_batch(
    store: &PartitionStore,
    rules: Rules<'_>,
    records: &[LogRecord],
) -> Result<AppliedBatch, StoreError> {
    let mut batch = AppliedBatch::new(records.first().map_or(0, |r| r.offset), records.len());
    for record in records {
        // The operator's list is empty but in an emergency: one branch per entry.
        let rejected_unread = !rules.reject_at.is_empty()
            && rules.reject_at.contains(&Position {
                partition: store.id(),
                offset: record.offset,
            });
        let outcome = if rejected_unread {
            EntryOutcome::Rejected(Rejection {
                kind: RejectionKind::MalformedEntry,
                op: None,
                message: format!(
                    "rejected unread: REJECT_ENTRIES_AT names offset {} of partition {}",
                    record.offset,
                    store.id()
                ),
            })
        } else {
            apply_entry(store, rules, &record.payload, &mut batch)?
        };
        if matches!(
            outcome,
            EntryOutcome::Applied(_) | EntryOutcome::Rejected(_)
        ) && !batch.entry_changes.is_empty()
        {
            batch.changes.push(EntryChanges {
                offset: record.offset,
                ts_ms: batch.entry_ts,
                // Sized exactly (the history keeps it), and the buffer is kept for the next entry.
                changes: batch.entry_changes.drain(..).collect(),
            });
        }
        match outcome {
            EntryOutcome::Applied(returned) if returned.is_empty() => {}
            EntryOutcome::Applied(returned) => batch.returned.push((record.offset, returned)),
            EntryOutcome::Rejected(rejection) => batch.rejections.push((record.offset, rejection)),
            EntryOutcome::Waiting(digest) => {
                batch.waiting_for = Some(digest);
                break;
            }
            EntryOutcome::Newer(version) => {
                batch.newer_format = Some(version);
                break;
            }
        }
        batch.entries += 1;
        batch.next_offset = record.offset + 1;
    }
    Ok(batch)
}

/// Applies `records` and commits the result (records, rejections and next offset) atomically.
pub fn apply_and_commit(
    store: &PartitionStore,
    rules: Rules<'_>,
    records: &[LogRecord],
) -> Result<AppliedBatch, StoreError> {
    let batch = apply_batch(store, rules, records)?;
    if batch.entries == 0 {
        return Ok(batch);
    }
    let rejections: Vec<(u64, Vec<u8>)> = batch
        .rejections
        .iter()
        .map(|(offset, r)| {
            (
                *offset,
                serde_json::to_vec(r).expect("rejections serialize"),
            )
        })
        .collect();
    let returned = returned_chunks(&batch.returned);
    let keys: Vec<(String, KeyChange)> = batch
        .keys
        .iter()
        .filter(|(_, change)| **change != KeyChange::default())
        .map(|(pk, change)| (pk.clone(), change.clone()))
        .collect();
    let added: Vec<Deadline> = batch.deadlines_added.iter().cloned().collect();
    let removed: Vec<Deadline> = batch.deadlines_removed.iter().cloned().collect();
    store.commit(
        batch.writes.iter().map(|(k, v)| (k, v.as_deref())),
        &BatchMeta {
            rejections: &rejections,
            returned: &returned,
            keys: &keys,
            deadlines_added: &added,
            deadlines_removed: &removed,
            next_offset: batch.next_offset,
            // Which log this state is of: the offset alone does not say (`model/lineage.rs`).
            last_entry: Some(AppliedEntry::of(
                records[batch.entries - 1].offset,
                &records[batch.entries - 1].payload,
            )),
        },
    )?;
    Ok(batch)
}

/// Returned values are stored in chunks of about this many bytes of JSON: a few store writes
/// for a batch of small values (every HSET and DEL entry returns its count; ~130 fit), no
/// single value of hundreds of MiB for a batch of entries that each return a large old value,
/// and a lookup of one offset that misses the in-memory outcomes scans at most this much (plus
/// one entry's values) to find it.
const RETURNED_CHUNK_BYTES: usize = 4 << 10;

/// The batch's returned values as stored: chunks of consecutive entries, each the JSON of
/// `[[offset, [returned, ...]], ...]` under the last offset in it. Entries are applied in
/// offset order, so chunks are disjoint and ordered.
fn returned_chunks(returned: &[(u64, Vec<Returned>)]) -> Vec<(u64, Vec<u8>)> {
    let mut chunks = Vec::new();
    let mut json = Vec::new();
    for (i, (offset, values)) in returned.iter().enumerate() {
        json.push(if json.is_empty() { b'[' } else { b',' });
        serde_json::to_writer(&mut json, &(offset, values)).expect("values serialize");
        if json.len() >= RETURNED_CHUNK_BYTES || i + 1 == returned.len() {
            json.push(b']');
            chunks.push((*offset, std::mem::take(&mut json)));
        }
    }
    chunks
}

/// The stored value of `key` as the batch sees it (its pending writes over the store).
fn value_at(
    (store, index): (&PartitionStore, Option<&ReadIndex>),
    key: &[u8],
    overlay: &Overlay,
    local: Option<&Overlay>,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(pending) = local.and_then(|l| l.get(key)).or_else(|| overlay.get(key)) {
        return Ok(pending.clone());
    }
    // Copied once, straight out of the index (`get` would copy it into a `Slice` first).
    match index.and_then(|i| i.get_with(key, <[u8]>::to_vec)) {
        Some(value) => Ok(value),
        None => Ok(store.get_raw(key)?.map(|v| v.to_vec())),
    }
}

/// Removes the records whose deadline `ts_ms` has reached, in deadline index order, at most
/// [`PURGE_PER_ENTRY`] of them, into the batch (whatever becomes of the entry itself: its
/// timestamp is the log's time either way). Index entries found stale are dropped on the way.
fn purge(
    (store, index): (&PartitionStore, Option<&ReadIndex>),
    batch: &mut AppliedBatch,
    ts_ms: i64,
) -> Result<(), StoreError> {
    // Most entries find nothing due: decide that from the batch and one cached index read.
    let pending_due = batch
        .deadlines_added
        .first()
        .is_some_and(|(deadline, _)| *deadline <= ts_ms);
    if !pending_due {
        let next = batch.next_committed(store)?;
        if next.is_none_or(|(deadline, _)| deadline > ts_ms) {
            return Ok(());
        }
    }
    // The cursor moves below: look the next committed entry up again when needed.
    batch.next_committed = None;
    // Every deadline up to `ts_ms` itself, `i64::MAX` included (a range ending below
    // `(ts_ms + 1, [])` saturated there, and left a record the store's own index purges).
    let pending: Vec<Deadline> = batch
        .deadlines_added
        .iter()
        .take_while(|(deadline, _)| *deadline <= ts_ms)
        .cloned()
        .collect();
    let mut pending = pending.into_iter().peekable();
    let mut committed = store.due(batch.purge_cursor.as_ref(), ts_ms).peekable();
    let mut purged = 0;
    while purged < PURGE_PER_ENTRY {
        // The next index entry in (deadline, key) order, from the store or the batch.
        let from_store = match (committed.peek(), pending.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => {
                return Err(committed
                    .next()
                    .expect("peeked")
                    .expect_err("peeked an error"));
            }
            (Some(Ok(c)), Some(p)) => c < p,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        let entry = if from_store {
            let entry = committed.next().expect("peeked")?;
            batch.purge_cursor = Some(entry.clone());
            if batch.deadlines_removed.contains(&entry) {
                continue;
            }
            entry
        } else {
            pending.next().expect("peeked")
        };
        let (deadline, key) = &entry;
        let value = value_at((store, index), key, &batch.writes, None)?;
        if value
            .as_deref()
            .and_then(crate::store::expires_at)
            .is_some_and(|d| d == *deadline)
        {
            let (pk, sk) = crate::store::decode_key(key)
                .ok_or_else(|| StoreError::Corrupt("a deadline index key is malformed".into()))?;
            batch.keys.entry(pk).or_default().note(&sk, false);
            batch.writes.insert(key.clone(), None);
            batch
                .entry_changes
                .push(Change::new(key, None, ChangeKind::Expired));
            batch.expired += 1;
            purged += 1;
        }
        batch.note_deadline(false, entry);
    }
    Ok(())
}

/// An entry's writes, kept apart until all its ops have passed (then merged into the batch).
#[derive(Default)]
struct EntryWrites {
    local: Overlay,
    keys: HashMap<String, KeyChange, Hasher>,
    /// Deadline index changes in order: (added, entry).
    deadlines: Vec<(bool, Deadline)>,
    /// What the entry changed, in order (for the change feed).
    changes: Vec<Change>,
}

impl EntryWrites {
    /// Writes `new` (none: removes) at `key` = (pk, sk), over the stored value `old` (raw,
    /// expired or not).
    fn write(
        &mut self,
        pk: &str,
        sk: &str,
        key: Vec<u8>,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) {
        if old.is_some() != new.is_some() {
            self.keys
                .entry(pk.to_string())
                .or_default()
                .note(sk, new.is_some());
        }
        if let Some(deadline) = old.and_then(crate::store::expires_at) {
            self.deadlines.push((false, (deadline, key.clone())));
        }
        if let Some(deadline) = new.as_deref().and_then(crate::store::expires_at) {
            self.deadlines.push((true, (deadline, key.clone())));
        }
        let kind = if new.is_some() {
            ChangeKind::Put
        } else {
            ChangeKind::Delete
        };
        self.changes.push(Change::new(&key, new.as_deref(), kind));
        self.local.insert(key, new);
    }

    fn merge_into(self, batch: &mut AppliedBatch) {
        batch.entry_changes.extend(self.changes);
        if let Some(index) = &mut batch.key_deadlines {
            index.pending.extend(self.local.keys().cloned());
        }
        batch.writes.extend(self.local);
        for (pk, change) in self.keys {
            batch.keys.entry(pk).or_default().then(&change);
        }
        for (added, deadline) in self.deadlines {
            batch.note_deadline(added, deadline);
        }
    }
}

/// Applies one entry into the batch, all ops or none. The outer `Result` is for store failures
/// (non-deterministic: they stop the partition); the inner one is the entry's outcome.
fn apply_entry(
    store: &PartitionStore,
    Rules {
        conds,
        plugins,
        partitions,
        index: read_index,
        reject_at: _,
    }: Rules<'_>,
    payload: &[u8],
    batch: &mut AppliedBatch,
) -> Result<EntryOutcome, StoreError> {
    let entry = match LogEntry::decode(payload) {
        Ok(entry) => entry,
        // Not this build's to judge: a newer one applies it, and replicas must agree.
        Err(DecodeError::Newer(version)) => return Ok(EntryOutcome::Newer(version)),
        Err(e) => {
            return Ok(EntryOutcome::Rejected(Rejection {
                kind: RejectionKind::MalformedEntry,
                op: None,
                message: e.to_string(),
            }));
        }
    };
    // Every plugin the entry names must be here before any op runs.
    for op in &entry.ops {
        for plugin in op.if_plugin.iter().chain(&op.transform) {
            if let PluginRef::Digest(digest) = plugin
                && let Resolved::Missing = plugins.resolve(digest)
            {
                return Ok(EntryOutcome::Waiting(*digest));
            }
        }
    }
    // The entry's timestamp is the log's time: records whose deadline it reached go first, so
    // its ops (and every later entry) find them absent.
    let now = entry.ts_ms;
    batch.entry_ts = now;
    purge((store, read_index), batch, now)?;
    // This entry's own writes: later ops of the entry see earlier ones, and all are dropped if any
    // op rejects the entry.
    let mut writes = EntryWrites::default();
    // All conditions of the entry spend from one budget, and all its plugin calls from one
    // supply of fuel: a long entry cannot multiply what one op may cost.
    let mut budget = Budget::new(ENTRY_LIMITS);
    let call_fuel = plugins.host().limits().fuel;
    let mut fuel = call_fuel.saturating_mul(ENTRY_PLUGIN_CALLS);
    // What the entry's whole-key and read-modify-write ops may still read.
    let mut reads = ENTRY_READ_BYTES;
    let out_of_reads = || {
        format!(
            "the entry's read-modify-write, check, delete_key and expire_key ops would read \
             more than {} MiB of stored data together; split it into smaller entries",
            ENTRY_READ_BYTES >> 20
        )
    };
    let mut returned = Vec::new();
    // Puts that skip together (format v8, `skips_with`): those before `skip_until` were
    // skipped with their group, those before `unconditional_until` write without their `if`
    // (their group's were all evaluated before any of them wrote).
    let (mut skip_until, mut unconditional_until) = (0, 0);
    for (index, op) in entry.ops.iter().enumerate() {
        let reject = |kind, message| {
            Ok(EntryOutcome::Rejected(Rejection {
                kind,
                op: Some(index as u32),
                message,
            }))
        };
        let owner = partition_of(&op.pk, partitions);
        if owner != store.id() {
            return reject(
                RejectionKind::WrongPartition,
                format!(
                    "pk {:?} belongs to partition {owner}, but the entry is in partition {}",
                    op.pk,
                    store.id()
                ),
            );
        }
        if index < skip_until {
            continue;
        }
        if op.skips_with > 0 && index >= unconditional_until {
            let end = (index + 1 + op.skips_with as usize).min(entry.ops.len());
            let mut every_one_holds = true;
            for member in &entry.ops[index..end] {
                let Some(source) = &member.cond else {
                    continue;
                };
                let key = encode_key(&member.pk, &member.sk);
                let stored = value_at(
                    (store, read_index),
                    &key,
                    &batch.writes,
                    Some(&writes.local),
                )?;
                let current = stored_record_at(stored.as_deref(), member, now)?;
                match check_condition(conds, source, member, current, &mut budget) {
                    Ok(()) => {}
                    Err((RejectionKind::ConditionFailed, _)) => {
                        every_one_holds = false;
                        break;
                    }
                    Err((kind, message)) => return reject(kind, message),
                }
            }
            let verdict = if every_one_holds { "1" } else { "0" };
            returned.extend(
                (index..end).map(|member| Returned::data(member as u32, Some(verdict.to_owned()))),
            );
            if !every_one_holds {
                skip_until = end;
                continue;
            }
            unconditional_until = end;
        }
        if op.op == OpKind::Check {
            let Some(version) =
                pk_version_at(store, &op.pk, &batch.writes, &writes.local, &mut reads, now)?
            else {
                return reject(RejectionKind::ValueError, out_of_reads());
            };
            if op.version.as_deref() != Some(version.as_str()) {
                return reject(
                    RejectionKind::ConditionFailed,
                    format!(
                        "the records of pk {:?} changed since version {} was read (WATCH)",
                        op.pk,
                        op.version
                            .as_deref()
                            .map_or("none", |v| &v[..v.len().min(12)])
                    ),
                );
            }
            continue;
        }
        if matches!(op.op, OpKind::Deadline | OpKind::ExpireKey) {
            let Some(records) = pk_records_at(
                store,
                &op.pk,
                &batch.writes,
                &writes.local,
                &mut reads,
                true,
            )?
            else {
                return reject(RejectionKind::ValueError, out_of_reads());
            };
            let data = if op.op == OpKind::Deadline {
                redis_key_deadline(&op.pk, records, now)?.to_string()
            } else {
                u8::from(expire_key(&op.pk, op, records, now, &mut writes)?).to_string()
            };
            returned.push(Returned::data(index as u32, Some(data)));
            continue;
        }
        let key = encode_key(&op.pk, &op.sk);
        let stored = value_at(
            (store, read_index),
            &key,
            &batch.writes,
            Some(&writes.local),
        )?;
        let current = stored_record_at(stored.as_deref(), op, now)?;
        if index >= unconditional_until
            && let Some(source) = &op.cond
        {
            match check_condition(conds, source, op, current, &mut budget) {
                Ok(()) => {}
                // Format v4: a false `if` skips this op alone (Redis `SET ... NX` in `MULTI`).
                Err((RejectionKind::ConditionFailed, _)) if op.if_skips => {
                    returned.push(Returned::data(index as u32, Some("0".to_owned())));
                    continue;
                }
                Err((kind, message)) => return reject(kind, message),
            }
            if op.if_skips {
                returned.push(Returned::data(index as u32, Some("1".to_owned())));
            }
        }
        let input = || Input {
            op: op.op.name(),
            pk: &op.pk,
            sk: &op.sk,
            data: match op.op {
                OpKind::Delete
                | OpKind::DeleteKey
                | OpKind::Check
                | OpKind::Expire
                | OpKind::ExpireKey
                | OpKind::Deadline => None,
                _ => Some(op.data.as_ref().map_or("null", |d| d.get())),
            },
            current,
            args: op.args.as_ref().map(|a| a.get()),
        };
        if let Some(digest) = &op.if_plugin {
            let verdict = ready(plugins, digest, true).and_then(|p| {
                let (verdict, spent) =
                    plugins
                        .host()
                        .condition_with_fuel(&p, &input().to_json(), fuel);
                let before = fuel;
                fuel -= spent.min(fuel);
                verdict.map_err(|e| fail(e, before, call_fuel))
            });
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    return reject(
                        RejectionKind::PluginConditionFailed,
                        format!(
                            "if_plugin {} was false for pk {:?}, sk {:?}",
                            short(digest),
                            op.pk,
                            op.sk
                        ),
                    );
                }
                Err(e) => {
                    return reject(
                        RejectionKind::PluginError,
                        format!("if_plugin {} {e}", short(digest)),
                    );
                }
            }
        }
        if op.return_old {
            returned.push(Returned::data(
                index as u32,
                current
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v.data_json).into_owned()),
            ));
        }
        if op.return_existed && matches!(op.op, OpKind::Put | OpKind::Delete) {
            returned.push(existed(index, current.is_some()));
        }
        // A record a `key_ttl` op creates takes its key's deadline (format v2): puts that keep
        // deadlines and computed values (Redis `HSET`, `HINCRBY` of a new field). So does one
        // such a put overwrites while it has a deadline of its own (format 3): Redis clears a
        // field's TTL when `HSET` writes it, and the field then lives as its key does
        // (`HSETEX ... KEEPTTL`, with `own_ttl`, keeps it).
        let keeping_put = op.op == OpKind::Put && op.keep_ttl;
        // Format v5: removing a field's own deadline (Redis `HPERSIST`) gives it its key's, as
        // Redis's field then lives as long as its key.
        let drops_own = op.op == OpKind::Expire
            && op.field_ttl
            && op.expires_at.is_none()
            && current.as_ref().is_some_and(|v| v.own_deadline);
        let inherits = drops_own
            || op.key_ttl
                && match &current {
                    None => keeping_put || op.op.is_read_modify_write(),
                    Some(v) => keeping_put && v.own_deadline && !op.own_ttl,
                };
        let key_deadline = if inherits {
            match key_deadline_at((store, &op.pk, &key, now), batch, &writes, &mut reads)? {
                Some(deadline) => deadline,
                None => return reject(RejectionKind::ValueError, out_of_reads()),
            }
        } else {
            None
        };
        // A deadline the entry's time has already reached writes no record (Redis `SET ... PX 0`
        // style: the key is gone at once).
        let live = |deadline: Option<i64>| deadline.is_none_or(|d| d > now);
        let new_value = match op.op {
            OpKind::Delete | OpKind::Check | OpKind::ExpireKey | OpKind::Deadline => None,
            OpKind::Expire => {
                // Redis `HEXPIRE`'s codes: -2 no record, 0 refused, 1 set, 2 removed. With
                // `return_old` (Redis `GETEX`) the op returns the value instead.
                let mut code = |code: &str| {
                    if !op.return_old {
                        returned.push(Returned::data(index as u32, Some(code.into())));
                    }
                };
                let Some(cur) = current else {
                    code("-2");
                    continue;
                };
                // Format v5 (`field_ttl`): a deadline the record has from its key is not its
                // own, so `HEXPIRE ... NX` sets one and `HPERSIST` has none to remove.
                let compared = if op.field_ttl && !cur.own_deadline {
                    None
                } else {
                    cur.expires_at_ms
                };
                if !expire_allowed(op, compared) {
                    code("0");
                    continue;
                }
                let (deadline, own) = if drops_own {
                    (key_deadline, false)
                } else {
                    (op.expires_at, op.own_ttl)
                };
                code(if live(deadline) { "1" } else { "2" });
                live(deadline).then(|| {
                    encode_value(
                        cur.created_at_ms,
                        cur.updated_at_ms,
                        deadline,
                        own,
                        cur.data_json,
                    )
                })
            }
            OpKind::DeleteKey => {
                // Every other record of the pk goes too; (pk, sk) itself below. Their values are
                // not read: deadline index entries they leave are found stale when due.
                let Some(records) = pk_records_at(
                    store,
                    &op.pk,
                    &batch.writes,
                    &writes.local,
                    &mut reads,
                    false,
                )?
                else {
                    return reject(RejectionKind::ValueError, out_of_reads());
                };
                if op.return_existed {
                    // The key existed if any of its records is live at the entry's time; most
                    // have no deadline, so this usually reads one value. The values read count
                    // against the entry's reads, like every whole-key op's.
                    let mut any = current.is_some();
                    for other in records.keys().filter(|k| **k != key) {
                        if any {
                            break;
                        }
                        let value = value_at(
                            (store, read_index),
                            other,
                            &batch.writes,
                            Some(&writes.local),
                        )?;
                        let cost = (other.len() + value.as_ref().map_or(0, Vec::len) + 64) as u64;
                        if cost > reads {
                            return reject(RejectionKind::ValueError, out_of_reads());
                        }
                        reads -= cost;
                        any = value
                            .as_deref()
                            .and_then(decode_value)
                            .is_some_and(|v| v.expires_at_ms.is_none_or(|d| d > now));
                    }
                    returned.push(existed(index, any));
                }
                for other in records.into_keys() {
                    if other != key {
                        let sk = crate::store::decode_key(&other)
                            .map(|(_, sk)| sk)
                            .unwrap_or_default();
                        writes
                            .keys
                            .entry(op.pk.clone())
                            .or_default()
                            .note(&sk, false);
                        writes
                            .changes
                            .push(Change::new(&other, None, ChangeKind::Delete));
                        writes.local.insert(other, None);
                    }
                }
                None
            }
            OpKind::Incr | OpKind::IncrFloat | OpKind::IncrLongDouble | OpKind::Append => {
                let (created, updated) = match &current {
                    Some(v) => (v.created_at_ms, v.updated_at_ms.max(entry.ts_ms)),
                    None => (entry.ts_ms, entry.ts_ms),
                };
                let operand = op.data.as_ref().map_or("null", |d| d.get());
                let stored_len = current.as_ref().map_or(0, |v| v.data_json.len());
                let mut cost = (stored_len + operand.len() + 64) as u64;
                if op.op == OpKind::IncrLongDouble {
                    // Reading and writing a long decimal costs time quadratic in its digits
                    // (~0.35 ms at 4,000): charged as such, so an entry of many increments of
                    // a huge number is refused by its length alone, alike everywhere.
                    let digits = stored_len.max(operand.len()) as u64;
                    cost += digits * digits / LONG_DOUBLE_SQUARED_DIGITS_PER_BYTE;
                }
                if cost > reads {
                    return reject(RejectionKind::ValueError, out_of_reads());
                }
                reads -= cost;
                let data = match compute_read_modify_write(
                    op.op,
                    current.as_ref().map(|v| v.data_json),
                    operand,
                ) {
                    Ok(data) => data,
                    Err(message) if op.fails_alone => {
                        failed_alone(&mut returned, index, message);
                        continue;
                    }
                    Err(message) => return reject(RejectionKind::ValueError, message),
                };
                // Like Redis `INCR` and `APPEND`, a computed value keeps the record's deadline,
                // its own or its key's (a new field of a key with one, the key's: `key_ttl`).
                let (deadline, own) = current
                    .as_ref()
                    .map_or((key_deadline, false), |v| (v.expires_at_ms, v.own_deadline));
                let value = encode_value(created, updated, deadline, own, data.as_bytes());
                returned.push(Returned::data(index as u32, Some(data)));
                Some(value)
            }
            OpKind::Json => {
                let (Some(json_cmd), Some(path)) = (op.json_cmd, op.path.as_deref()) else {
                    return reject(
                        RejectionKind::ValueError,
                        "a `json` op needs `json_cmd` and `path`".to_owned(),
                    );
                };
                let stored_len = current.as_ref().map_or(0, |v| v.data_json.len());
                let operand = op.data.as_ref().map_or("null", |d| d.get());
                // Parsing the document and the operand, then every node the path visits (a
                // few dozen bytes each), from the entry's reads.
                let parse_cost = (stored_len + operand.len() + 64) as u64;
                if parse_cost > reads {
                    return reject(RejectionKind::ValueError, out_of_reads());
                }
                reads -= parse_cost;
                let mut limits = super::EditLimits {
                    visits: reads / JSON_VISIT_BYTES,
                    max_bytes: MAX_COMPUTED_BYTES.max(stored_len),
                    paths_before_v7: op.path_before_v7,
                };
                let edited = super::edit_json(
                    json_cmd,
                    current.as_ref().map(|v| v.data_json),
                    path,
                    operand,
                    &mut limits,
                );
                reads -= (reads / JSON_VISIT_BYTES - limits.visits) * JSON_VISIT_BYTES;
                let edited = match edited {
                    Ok(edited) => edited,
                    Err(e) if e.too_costly() => {
                        return reject(RejectionKind::ValueError, out_of_reads());
                    }
                    Err(e) if op.fails_alone => {
                        failed_alone(&mut returned, index, e.to_string());
                        continue;
                    }
                    Err(e) => return reject(RejectionKind::ValueError, e.to_string()),
                };
                returned.push(Returned::data(index as u32, Some(edited.reply.to_string())));
                match edited.data {
                    None => continue,
                    Some(None) => None,
                    Some(Some(data)) => {
                        let (created, updated) = match &current {
                            Some(v) => (v.created_at_ms, v.updated_at_ms.max(entry.ts_ms)),
                            None => (entry.ts_ms, entry.ts_ms),
                        };
                        // As a computed value: the record keeps its deadline.
                        let (deadline, own) = current
                            .as_ref()
                            .map_or((None, false), |v| (v.expires_at_ms, v.own_deadline));
                        Some(encode_value(
                            created,
                            updated,
                            deadline,
                            own,
                            data.as_bytes(),
                        ))
                    }
                }
            }
            OpKind::Put => {
                // `_created_at` survives updates; `_updated_at` never moves backwards, even when
                // the accepting nodes' clocks disagree (FireScroll's bug; docs/architecture.md, invariant 4).
                let (created, updated) = match &current {
                    Some(v) => (v.created_at_ms, v.updated_at_ms.max(entry.ts_ms)),
                    None => (entry.ts_ms, entry.ts_ms),
                };
                let (deadline, own) = match &current {
                    _ if !op.keep_ttl => (op.expires_at, op.own_ttl),
                    Some(v) if !inherits => (v.expires_at_ms, v.own_deadline),
                    _ => (key_deadline, false),
                };
                let transformed;
                let data = match &op.transform {
                    None => op.data.as_ref().map_or("null", |d| d.get()),
                    Some(digest) => {
                        let output = ready(plugins, digest, false).and_then(|p| {
                            let (out, spent) =
                                plugins
                                    .host()
                                    .transform_with_fuel(&p, &input().to_json(), fuel);
                            let before = fuel;
                            fuel -= spent.min(fuel);
                            let out = out.map_err(|e| fail(e, before, call_fuel))?;
                            String::from_utf8(out)
                                .map_err(|_| "returned output that is not UTF-8".to_string())
                        });
                        match output {
                            Ok(output) => {
                                transformed = output;
                                transformed.as_str()
                            }
                            Err(e) => {
                                return reject(
                                    RejectionKind::PluginError,
                                    format!("transform {} {e}", short(digest)),
                                );
                            }
                        }
                    }
                };
                live(deadline)
                    .then(|| encode_value(created, updated, deadline, own, data.as_bytes()))
            }
        };
        if stored.is_none() && new_value.is_none() {
            continue;
        }
        writes.write(&op.pk, &op.sk, key, stored.as_deref(), new_value);
    }
    writes.merge_into(batch);
    Ok(EntryOutcome::Applied(returned))
}

/// Format v9: op `index`, which fails alone (`fails_alone`), met a value it cannot use: it
/// writes nothing and returns why instead of what it would have (anything it returned before
/// failing — a foreign producer's `return_old` on an `incr` — is dropped), and the entry goes
/// on.
fn failed_alone(returned: &mut Vec<Returned>, index: usize, message: String) {
    while returned.last().is_some_and(|r| r.op as usize == index) {
        returned.pop();
    }
    returned.push(Returned {
        op: index as u32,
        data: None,
        error: Some(message),
    });
}

/// What a `return_existed` op returns: whether its record (or key) existed before it.
fn existed(index: usize, existed: bool) -> Returned {
    Returned::data(
        index as u32,
        Some(if existed { "1" } else { "0" }.to_string()),
    )
}

/// Whether an `expire` op may replace the deadline `current` (none: the record has none) with
/// its own, and would change something (removing a deadline that is not there does not).
fn expire_allowed(op: &Op, current: Option<i64>) -> bool {
    let allowed = match op.expire_if {
        None => true,
        Some(ExpireIf::Nx) => current.is_none(),
        Some(ExpireIf::Xx) => current.is_some(),
        // No deadline counts as infinite: nothing is later, everything is earlier.
        Some(ExpireIf::Gt) => {
            matches!((op.expires_at, current), (Some(new), Some(cur)) if new > cur)
        }
        Some(ExpireIf::Lt) => match (op.expires_at, current) {
            (Some(new), Some(cur)) => new < cur,
            (Some(_), None) => true,
            (None, _) => false,
        },
    };
    allowed && (op.expires_at.is_some() || current.is_some())
}

/// A record as stored: its encoded key and raw value.
type RawRecord = (Vec<u8>, Vec<u8>);

/// The records of `pk` whose deadline `now` has not reached, in key order.
fn live_records(
    pk: &str,
    records: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    now: i64,
) -> Result<Vec<RawRecord>, StoreError> {
    let mut live = Vec::new();
    for (key, value) in records {
        let view = decode_value(&value).ok_or_else(|| {
            StoreError::Corrupt(format!("a value of pk {pk:?} has no valid header"))
        })?;
        if view.expires_at_ms.is_none_or(|d| d > now) {
            live.push((key, value));
        }
    }
    Ok(live)
}

/// What a `deadline` op returns for `pk`: its string record's deadline if it has one, else the
/// key's over its live records (unix ms); -1 for none, -2 when it has no live record.
fn redis_key_deadline(
    pk: &str,
    records: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    now: i64,
) -> Result<i64, StoreError> {
    let live = live_records(pk, records, now)?;
    if live.is_empty() {
        return Ok(-2);
    }
    let string = encode_key(pk, "");
    let deadline = match live.iter().find(|(key, _)| *key == string) {
        Some((_, value)) => crate::store::expires_at(value),
        None => key_deadline(&live),
    };
    Ok(deadline.unwrap_or(-1))
}

/// A key's deadline over its live records, as `expire_key` compares it: the latest of those
/// whose deadline is not their own, none if any of them has none (or if there are none).
fn key_deadline(live: &[RawRecord]) -> Option<i64> {
    let deadlines: Vec<Option<i64>> = live
        .iter()
        .filter(|(_, v)| !decode_value(v).is_some_and(|view| view.own_deadline))
        .map(|(_, v)| crate::store::expires_at(v))
        .collect();
    if deadlines.iter().any(Option::is_none) {
        None
    } else {
        deadlines.iter().flatten().max().copied()
    }
}

/// An `expire_key` op over `pk`'s records (stored key → raw value, as the entry sees them):
/// the key's deadline is the latest of its live records' that are the key's (none if any has
/// none, or if every record's deadline is its own). A field's own deadline stays where the new
/// key deadline does not cut it short (`PERSIST` leaves it, as Redis leaves a field's TTL).
/// Returns whether it changed the key.
fn expire_key(
    pk: &str,
    op: &Op,
    records: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    now: i64,
    writes: &mut EntryWrites,
) -> Result<bool, StoreError> {
    let live = live_records(pk, records, now)?;
    if live.is_empty() {
        return Ok(false);
    }
    if !expire_allowed(op, key_deadline(&live)) {
        return Ok(false);
    }
    for (key, old) in live {
        let view = decode_value(&old).expect("decoded above");
        let own = view.own_deadline
            && view
                .expires_at_ms
                .zip(op.expires_at)
                .is_none_or(|(own, key)| own <= key);
        let deadline = if own {
            view.expires_at_ms
        } else {
            op.expires_at
        };
        let new = deadline.is_none_or(|d| d > now).then(|| {
            encode_value(
                view.created_at_ms,
                view.updated_at_ms,
                deadline,
                own,
                view.data_json,
            )
        });
        let sk = crate::store::decode_key(&key)
            .map(|(_, sk)| sk)
            .unwrap_or_default();
        writes.write(pk, &sk, key, Some(&old), new);
    }
    Ok(true)
}

/// The deadline a record `key` of `pk` created by a `key_ttl` op takes (format v2): that of
/// the key's first live record other than `key` whose deadline is not its own (format 3), in sk
/// order, as this entry sees them (the store under the batch's and the entry's pending writes)
/// — after `EXPIRE` every record of a key has the key's deadline, and fields added since took
/// it too. `Some(None)`: no deadline (none on that record, no such record, or
/// [`OWN_DEADLINES_PASSED`] records with deadlines of their own passed); `None` when looking
/// would spend more than `reads`.
fn key_deadline_at(
    (store, pk, key, now): (&PartitionStore, &str, &[u8], i64),
    batch: &mut AppliedBatch,
    writes: &EntryWrites,
    reads: &mut u64,
) -> Result<Option<Option<i64>>, StoreError> {
    // What a record says of its key's deadline: `Live(deadline)` for a live record whose
    // deadline (if any) is the key's; `Own` for a live one whose deadline is its own, which says
    // nothing of the key's; `Expired` for one the entry's time has passed.
    enum Gives {
        Live(Option<i64>),
        Own,
        Expired,
    }
    let gives = |value: &[u8]| -> Result<Gives, StoreError> {
        let view = decode_value(value).ok_or_else(|| {
            StoreError::Corrupt(format!("a value of pk {pk:?} has no valid header"))
        })?;
        Ok(match view.expires_at_ms {
            Some(d) if d <= now => Gives::Expired,
            Some(_) if view.own_deadline => Gives::Own,
            deadline => Gives::Live(deadline),
        })
    };
    // Records with deadlines of their own passed so far (bounded: `OWN_DEADLINES_PASSED`).
    let mut own_passed = 0usize;
    // A partition with no deadline anywhere (most): nothing to take, and nothing to read.
    let pending_deadline =
        !batch.deadlines_added.is_empty() || writes.deadlines.iter().any(|(added, _)| *added);
    if !pending_deadline {
        let next = batch.next_committed(store)?;
        if next.is_none() {
            return Ok(Some(None));
        }
    }
    // Charged as `pk_records_at` charges (the same on every replica however entries were
    // batched): each record as the entry sees it, in key order up to the one found, and the
    // entry's own writes looked through. Pending removals are passed uncharged.
    let mut charge = |cost: usize| -> bool {
        let cost = cost as u64;
        if cost > *reads {
            return false;
        }
        *reads -= cost;
        true
    };
    if !charge(16 * writes.local.len()) {
        return Ok(None);
    }
    let prefix = pk_prefix(pk);
    let index = batch.key_deadlines.get_or_insert_with(|| KeyDeadlineIndex {
        pending: batch.writes.keys().cloned().collect(),
        first_stored: HashMap::default(),
    });
    let pending = |k: &[u8]| writes.local.get(k).or_else(|| batch.writes.get(k));
    // The pending keys of the pk in order: the batch's (kept ordered) and the entry's own.
    let mut entry_keys: Vec<&Vec<u8>> = writes
        .local
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .collect();
    entry_keys.sort_unstable();
    let batch_keys = index
        .pending
        .range(prefix.clone()..)
        .take_while(|k| k.starts_with(&prefix));
    let mut pending_keys = merge_sorted(batch_keys, entry_keys.into_iter()).peekable();
    // The stored records: the pk's first one alone, looked up once per batch, when it stands as
    // stored and is live (the walk stops there); else all of them.
    let first_stored = match index.first_stored.get(pk) {
        Some(cached) => cached.clone(),
        None => {
            let found = store
                .pk_entries(pk)
                .next()
                .transpose()?
                .map(|(k, v)| (k.to_vec(), v.to_vec()));
            index.first_stored.insert(pk.to_owned(), found.clone());
            found
        }
    };
    let usable = match &first_stored {
        Some((k, v)) if k.as_slice() != key && pending(k).is_none() => {
            matches!(gives(v)?, Gives::Live(_))
        }
        _ => false,
    };
    let walk: Box<dyn Iterator<Item = Result<StoredPair, StoreError>>> = if usable {
        Box::new(first_stored.into_iter().map(Ok))
    } else {
        Box::new(
            store
                .pk_entries(pk)
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))),
        )
    };
    let mut stored = walk.peekable();
    // Both in key order, merged: the records as the entry sees them.
    loop {
        let from_store = match (pending_keys.peek(), stored.peek()) {
            (None, None) => return Ok(Some(None)),
            (_, Some(Err(_))) => {
                return Err(stored.next().expect("peeked").expect_err("peeked an error"));
            }
            (Some(p), Some(Ok((s, _)))) => s.as_slice() < p.as_slice(),
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let (k, value) = if from_store {
            let (k, v) = stored.next().expect("peeked")?;
            match pending(&k) {
                // Rewritten or removed: met again (or not at all) among the pending keys.
                Some(_) => continue,
                None => (k, v),
            }
        } else {
            let k = pending_keys.next().expect("peeked").clone();
            if stored
                .peek()
                .is_some_and(|s| s.as_ref().is_ok_and(|(sk, _)| *sk == k))
            {
                stored.next();
            }
            match pending(&k) {
                Some(Some(value)) => (k, value.clone()),
                _ => continue,
            }
        };
        if k == key {
            continue;
        }
        if !charge(k.len() + value.len() + 64) {
            return Ok(None);
        }
        match gives(&value)? {
            Gives::Live(deadline) => return Ok(Some(deadline)),
            Gives::Own => {
                own_passed += 1;
                if own_passed >= OWN_DEADLINES_PASSED {
                    return Ok(Some(None));
                }
            }
            Gives::Expired => {}
        }
    }
}

/// Two ascending sequences of keys as one, each key once.
fn merge_sorted<'a>(
    a: impl Iterator<Item = &'a Vec<u8>>,
    b: impl Iterator<Item = &'a Vec<u8>>,
) -> impl Iterator<Item = &'a Vec<u8>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x == y => {
            b.next();
            a.next()
        }
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(_), Some(_)) | (None, Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, None) => None,
    })
}

/// A batch's lookups for [`key_deadline_at`].
struct KeyDeadlineIndex {
    /// The batch's pending keys (written or removed), in key order.
    pending: BTreeSet<Vec<u8>>,
    /// Each pk's first stored record, if any.
    first_stored: HashMap<String, Option<StoredPair>, Hasher>,
}

/// A stored (key, value), copied out of the store.
type StoredPair = (Vec<u8>, Vec<u8>);

/// The version of `pk`'s records as this entry sees them.
/// Records the entry's time has expired are left out, as readers leave them out.
fn pk_version_at(
    store: &PartitionStore,
    pk: &str,
    overlay: &Overlay,
    local: &Overlay,
    reads: &mut u64,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let Some(records) = pk_records_at(store, pk, overlay, local, reads, true)? else {
        return Ok(None);
    };
    Ok(Some(pk_version(
        records
            .iter()
            .filter(|(_, v)| !crate::store::is_expired(v, now))
            .map(|(k, v)| (k.as_slice(), v.as_slice())),
    )))
}

/// `pk`'s records (stored key → value) as this entry sees them: the store, under the batch's
/// and the entry's pending writes.
/// `None` when reading them would spend more than `reads` (which it charges). Without
/// `with_values` only the keys are read and charged (values come back empty): `delete_key`.
#[allow(clippy::type_complexity)]
fn pk_records_at(
    store: &PartitionStore,
    pk: &str,
    overlay: &Overlay,
    local: &Overlay,
    reads: &mut u64,
    with_values: bool,
) -> Result<Option<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>, StoreError> {
    let prefix = pk_prefix(pk);
    let mut charge = |cost: u64| -> bool {
        if cost > *reads {
            return false;
        }
        *reads -= cost;
        true
    };
    // Charges must not depend on how entries were batched (replicas batch differently, and a
    // charge past the budget rejects the entry): each record as the entry sees it is charged
    // once, whether it is stored or pending, and looking through the entry's own writes too.
    // The batch's pending writes are looked through uncharged (bounded by the batch).
    if !charge(64 * local.len() as u64) {
        return Ok(None);
    }
    let mut records = std::collections::BTreeMap::new();
    for entry in store.pk_entries(pk) {
        let (k, v) = entry?;
        let value = if with_values { v.to_vec() } else { Vec::new() };
        // A record the batch or entry rewrote or removed is charged below as pending, if at all.
        let pending = local.contains_key(&*k) || overlay.contains_key(&*k);
        if !pending && !charge((k.len() + value.len() + 64) as u64) {
            return Ok(None);
        }
        records.insert(k.to_vec(), value);
    }
    for (pending, newer) in [(overlay, Some(local)), (local, None)] {
        // A batch write this entry has since replaced is not read (nor charged).
        let live = |k: &Vec<u8>| k.starts_with(&prefix) && newer.is_none_or(|n| !n.contains_key(k));
        for (key, value) in pending.iter().filter(|(k, _)| live(k)) {
            match value {
                Some(value) => {
                    let value = if with_values {
                        value.clone()
                    } else {
                        Vec::new()
                    };
                    if !charge((key.len() + value.len() + 64) as u64) {
                        return Ok(None);
                    }
                    records.insert(key.clone(), value)
                }
                None => records.remove(key),
            };
        }
    }
    Ok(Some(records))
}

/// The plugin an op names, if it can be used as a condition (`condition`) or transform.
fn ready(
    plugins: &PluginResolver,
    plugin: &PluginRef,
    condition: bool,
) -> Result<std::sync::Arc<crate::plugins::Compiled>, String> {
    let digest = match plugin {
        PluginRef::Digest(digest) => digest,
        PluginRef::Name(_) => {
            return Err(
                "cannot be used: entries name plugins by the sha256 digest of their module".into(),
            );
        }
    };
    let plugin = match plugins.resolve(digest) {
        Resolved::Ready(plugin) => plugin,
        Resolved::Invalid(e) => return Err(format!("cannot be used: {e}")),
        // Checked before the entry's first op: the entry waits instead of getting here.
        Resolved::Missing => return Err("is not on this node".into()),
    };
    match (condition, plugin.kind) {
        (true, kind) if !kind.is_condition() => Err("is not a condition plugin".into()),
        (false, kind) if !kind.is_transform() => Err("is not a transform plugin".into()),
        _ => Ok(plugin),
    }
}

/// A plugin failure as the entry's rejection says it; running out of the entry's fuel (rather
/// than a call's) says so.
fn fail(failure: PluginFailure, fuel_before: u64, call_fuel: u64) -> String {
    match failure {
        // The call got less than a call's fuel: the entry's supply ran out, not the call's.
        PluginFailure::OutOfFuel if fuel_before < call_fuel => format!(
            "{failure}: the entry's plugin calls used up their fuel together \
             ({ENTRY_PLUGIN_CALLS} times PLUGIN_FUEL)"
        ),
        failure => failure.to_string(),
    }
}

/// A digest as messages show it.
fn short(plugin: &PluginRef) -> String {
    match plugin {
        PluginRef::Digest(digest) => format!("sha256:{}", &digest.to_string()[..12]),
        PluginRef::Name(name) => format!("{name:?}"),
    }
}

/// The record `stored` holds for `op`'s key as an entry of time `now` sees it: a record whose
/// deadline `now` reached is absent to the entry, purged or not.
fn stored_record_at<'a>(
    stored: Option<&'a [u8]>,
    op: &Op,
    now: i64,
) -> Result<Option<StoredRecord<'a>>, StoreError> {
    let decoded = match stored {
        None => None,
        Some(bytes) => Some(decode_value(bytes).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "value of {:?}/{:?} has no valid header",
                op.pk, op.sk
            ))
        })?),
    };
    Ok(decoded.filter(|v| v.expires_at_ms.is_none_or(|d| d > now)))
}

/// Evaluates an op's `if` against the record as stored (its stored `_updated_at`, not the new one).
fn check_condition(
    conds: &Conditions,
    source: &str,
    op: &Op,
    current: Option<StoredRecord<'_>>,
    budget: &mut Budget,
) -> Result<(), (RejectionKind, String)> {
    let error = |e: String| (RejectionKind::ConditionError, e);
    let program = conds.compile(source).map_err(|e| error(e.to_string()))?;
    let subject = Subject::new(&op.pk, &op.sk, current).map_err(error)?;
    match conds.eval(source, &program, &subject, budget) {
        Ok(true) => Ok(()),
        Ok(false) => Err((
            RejectionKind::ConditionFailed,
            format!(
                "`if` statement `{source}` was false for pk {:?}, sk {:?}",
                op.pk, op.sk
            ),
        )),
        Err(e @ CondError::BudgetExceeded { .. }) => Err(error(format!(
            "{e} (an entry's conditions may spend {} steps and {} MiB of values in all)",
            ENTRY_LIMITS.steps,
            ENTRY_LIMITS.bytes >> 20
        ))),
        Err(e) => Err(error(e.to_string())),
    }
}
