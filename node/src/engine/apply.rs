//! Applying log entries to a partition: deterministic, a pure function of the entries and the
//! stored state (docs/architecture.md invariant 4). No clock, randomness or I/O beyond reading the store.

use super::plugins::{PluginResolver, Resolved};
use crate::cond::{Budget, CondError, Conditions, ENTRY_LIMITS, Subject};
use crate::log::LogRecord;
use crate::model::{
    Digest, LogEntry, Op, OpKind, PluginRef, StoredRecord, partition_of, pk_version,
};
use crate::model::{Rejection, RejectionKind, Returned};
use crate::plugins::{Input, PluginFailure};
use crate::store::{
    BatchMeta, KeyChange, PartitionStore, StoreError, decode_value, encode_key, encode_value,
    pk_prefix,
};
use std::collections::HashMap;

/// Bytes of stored data the read-modify-write, `check` and `delete_key` ops of one entry may
/// read together (each record counts its key and value plus 64; each pending write looked
/// through counts 64). Part of format v1: every replica runs out at the same op.
pub const ENTRY_READ_BYTES: u64 = 64 << 20;

/// Largest data a read-modify-write op may produce (`APPEND` cannot grow a value past it).
/// Part of format v1, so it is a constant and not a node setting.
pub const MAX_COMPUTED_BYTES: usize = 1 << 20;

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
}

/// Pending writes of a batch: key → new value (`None` = delete). Later entries read through it.
type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The result of applying a run of entries, ready to commit atomically.
pub struct AppliedBatch {
    pub writes: Overlay,
    /// Offsets of rejected entries and why.
    pub rejections: Vec<(u64, Rejection)>,
    /// Offsets of applied entries whose ops returned values, and the values.
    pub returned: Vec<(u64, Vec<Returned>)>,
    /// How the batch changed each key (pk): for the key index.
    pub keys: HashMap<String, KeyChange>,
    /// The offset to apply next once this batch is committed.
    pub next_offset: u64,
    pub entries: usize,
    /// The batch stopped before the entry at `next_offset`: it names a plugin (digest) this
    /// node does not have yet. The partition waits for it; it never rejects for timing.
    pub waiting_for: Option<Digest>,
}

/// What one entry came to.
enum EntryOutcome {
    Applied(Vec<Returned>),
    Rejected(Rejection),
    /// Needs a plugin not yet here (digest).
    Waiting(Digest),
}

/// Applies `records` (in offset order) on top of `store`'s committed state, stopping before an
/// entry whose plugin is not here yet.
pub fn apply_batch(
    store: &PartitionStore,
    rules: Rules<'_>,
    records: &[LogRecord],
) -> Result<AppliedBatch, StoreError> {
    let mut batch = AppliedBatch {
        writes: Overlay::new(),
        rejections: Vec::new(),
        returned: Vec::new(),
        keys: HashMap::new(),
        next_offset: records.first().map_or(0, |r| r.offset),
        entries: 0,
        waiting_for: None,
    };
    for record in records {
        match apply_entry(
            store,
            rules,
            &record.payload,
            &mut batch.writes,
            &mut batch.keys,
        )? {
            EntryOutcome::Applied(returned) if returned.is_empty() => {}
            EntryOutcome::Applied(returned) => batch.returned.push((record.offset, returned)),
            EntryOutcome::Rejected(rejection) => batch.rejections.push((record.offset, rejection)),
            EntryOutcome::Waiting(digest) => {
                batch.waiting_for = Some(digest);
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
    let returned: Vec<(u64, Vec<u8>)> = batch
        .returned
        .iter()
        .map(|(offset, r)| (*offset, serde_json::to_vec(r).expect("values serialize")))
        .collect();
    let keys: Vec<(String, KeyChange)> = batch
        .keys
        .iter()
        .filter(|(_, change)| **change != KeyChange::default())
        .map(|(pk, change)| (pk.clone(), change.clone()))
        .collect();
    store.commit(
        batch.writes.iter().map(|(k, v)| (k, v.as_deref())),
        &BatchMeta {
            rejections: &rejections,
            returned: &returned,
            keys: &keys,
            next_offset: batch.next_offset,
        },
    )?;
    Ok(batch)
}

/// Applies one entry into `overlay`, all ops or none. The outer `Result` is for store failures
/// (non-deterministic: they stop the partition); the inner one is the entry's outcome.
fn apply_entry(
    store: &PartitionStore,
    Rules {
        conds,
        plugins,
        partitions,
    }: Rules<'_>,
    payload: &[u8],
    overlay: &mut Overlay,
    keys: &mut HashMap<String, KeyChange>,
) -> Result<EntryOutcome, StoreError> {
    let entry = match LogEntry::decode(payload) {
        Ok(entry) => entry,
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
    // This entry's own writes: later ops of the entry see earlier ones, and all are dropped if any
    // op rejects the entry.
    let mut local = Overlay::new();
    let mut local_keys: HashMap<String, KeyChange> = HashMap::new();
    // All conditions of the entry spend from one budget, and all its plugin calls from one
    // supply of fuel: a long entry cannot multiply what one op may cost.
    let mut budget = Budget::new(ENTRY_LIMITS);
    let call_fuel = plugins.host().limits().fuel;
    let mut fuel = call_fuel.saturating_mul(ENTRY_PLUGIN_CALLS);
    // What the entry's whole-key and read-modify-write ops may still read.
    let mut reads = ENTRY_READ_BYTES;
    let out_of_reads = || {
        format!(
            "the entry's read-modify-write, check and delete_key ops would read more than {} MiB \
             of stored data together; split it into smaller entries",
            ENTRY_READ_BYTES >> 20
        )
    };
    let mut returned = Vec::new();
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
        if op.op == OpKind::Check {
            let Some(version) = pk_version_at(store, &op.pk, overlay, &local, &mut reads)? else {
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
        let key = encode_key(&op.pk, &op.sk);
        let stored = match local.get(&key).or_else(|| overlay.get(&key)) {
            Some(pending) => pending.clone(),
            None => store.get_raw(&key)?.map(|v| v.to_vec()),
        };
        let current = match stored.as_deref() {
            None => None,
            Some(bytes) => Some(decode_value(bytes).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "value of {:?}/{:?} has no valid header",
                    op.pk, op.sk
                ))
            })?),
        };
        if let Some(source) = &op.cond
            && let Err((kind, message)) = check_condition(conds, source, op, current, &mut budget)
        {
            return reject(kind, message);
        }
        let input = || Input {
            op: op.op.name(),
            pk: &op.pk,
            sk: &op.sk,
            data: match op.op {
                OpKind::Delete | OpKind::DeleteKey | OpKind::Check => None,
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
            returned.push(Returned {
                op: index as u32,
                data: current
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v.data_json).into_owned()),
            });
        }
        let new_value = match op.op {
            OpKind::Delete | OpKind::Check => None,
            OpKind::DeleteKey => {
                // Every other record of the pk goes too; (pk, sk) itself below.
                let Some(records) =
                    pk_records_at(store, &op.pk, overlay, &local, &mut reads, false)?
                else {
                    return reject(RejectionKind::ValueError, out_of_reads());
                };
                for other in records.into_keys() {
                    if other != key {
                        let sk = crate::store::decode_key(&other)
                            .map(|(_, sk)| sk)
                            .unwrap_or_default();
                        local_keys
                            .entry(op.pk.clone())
                            .or_default()
                            .note(&sk, false);
                        local.insert(other, None);
                    }
                }
                None
            }
            OpKind::Incr | OpKind::IncrFloat | OpKind::Append => {
                let (created, updated) = match &current {
                    Some(v) => (v.created_at_ms, v.updated_at_ms.max(entry.ts_ms)),
                    None => (entry.ts_ms, entry.ts_ms),
                };
                let operand = op.data.as_ref().map_or("null", |d| d.get());
                let stored_len = current.as_ref().map_or(0, |v| v.data_json.len());
                let cost = (stored_len + operand.len() + 64) as u64;
                if cost > reads {
                    return reject(RejectionKind::ValueError, out_of_reads());
                }
                reads -= cost;
                let data = match super::rmw::compute(
                    op.op,
                    current.as_ref().map(|v| v.data_json),
                    operand,
                ) {
                    Ok(data) if data.len() > MAX_COMPUTED_BYTES => {
                        return reject(
                            RejectionKind::ValueError,
                            format!(
                                "the value would grow to {} bytes; a read-modify-write op may \
                                 produce at most {MAX_COMPUTED_BYTES}",
                                data.len()
                            ),
                        );
                    }
                    Ok(data) => data,
                    Err(e) => return reject(RejectionKind::ValueError, e.to_string()),
                };
                let value = encode_value(created, updated, data.as_bytes());
                returned.push(Returned {
                    op: index as u32,
                    data: Some(data),
                });
                Some(value)
            }
            OpKind::Put => {
                // `_created_at` survives updates; `_updated_at` never moves backwards, even when
                // the accepting nodes' clocks disagree (FireScroll's bug; docs/architecture.md, invariant 4).
                let (created, updated) = match &current {
                    Some(v) => (v.created_at_ms, v.updated_at_ms.max(entry.ts_ms)),
                    None => (entry.ts_ms, entry.ts_ms),
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
                Some(encode_value(created, updated, data.as_bytes()))
            }
        };
        if current.is_some() != new_value.is_some() {
            local_keys
                .entry(op.pk.clone())
                .or_default()
                .note(&op.sk, new_value.is_some());
        }
        local.insert(key, new_value);
    }
    overlay.extend(local);
    for (pk, change) in local_keys {
        keys.entry(pk).or_default().then(&change);
    }
    Ok(EntryOutcome::Applied(returned))
}

/// The version of `pk`'s records as this entry sees them.
fn pk_version_at(
    store: &PartitionStore,
    pk: &str,
    overlay: &Overlay,
    local: &Overlay,
    reads: &mut u64,
) -> Result<Option<String>, StoreError> {
    let Some(records) = pk_records_at(store, pk, overlay, local, reads, true)? else {
        return Ok(None);
    };
    Ok(Some(pk_version(
        records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
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
    // Looking through the batch's pending writes is work too.
    if !charge(64 * (overlay.len() + local.len()) as u64) {
        return Ok(None);
    }
    let mut records = std::collections::BTreeMap::new();
    for entry in store.pk_entries(pk) {
        let (k, v) = entry?;
        let value = if with_values { v.to_vec() } else { Vec::new() };
        if !charge((k.len() + value.len() + 64) as u64) {
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
