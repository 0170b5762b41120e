//! Writes: validate, group into log entries by partition, append durably, optionally wait for
//! the outcomes.

use super::{ErrorKind, Service, ServiceError, compact_json};
use crate::engine::{LongDouble, Outcome};
use crate::log::{Append, LogError};
use crate::model::{
    LogEntry, MAX_JSON_DEPTH, Op, OpKind, Position, json_lone_surrogate, json_nests_deeper_than,
    json_number_out_of_range, partition_of,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

/// One op of a write request: a log entry op whose plugins (`if_plugin`, `transform`) are named;
/// validation pins each name to the digest it is bound to now.
pub type WriteOp = Op;

/// How the records of one request map onto entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// FireScroll's `/records/put` and `/records/delete`: every record stands alone. Records may
    /// span partitions; a record with an `if` is its own entry, so its condition decides for it
    /// alone, and unconditional records of a partition share entries.
    PerRecord,
    /// `/records/batch`: all records are one entry, applied together or not at all, so they must
    /// share a partition.
    Atomic,
    /// A Redis pipeline's writes: every op stands alone, as with `PerRecord`, but when the
    /// request waits for its outcomes the ops of a partition share one entry, conditional and
    /// read-modify-write ones included (a pipeline of `INCR`s is one entry, not one each). When
    /// such an entry is rejected, none of its ops took effect, and they are written again as
    /// `PerRecord` would have written them: each op's outcome is then the one it has alone, at a
    /// later place in the log, which is still between its command's arrival and its reply.
    Pipeline,
}

/// A write request.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub ops: Vec<WriteOp>,
    pub mode: WriteMode,
    /// Wait until each entry is applied on this node and report its outcome.
    pub wait: bool,
}

/// Where one entry of a write went, and (when waited for) what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryResult {
    pub position: Position,
    /// `None` when not waited for; `Some(None)` when the wait ran out before it was applied.
    pub outcome: Option<Option<Outcome>>,
}

/// An entry to append, with the request indices of its ops.
type Located = (Append, Vec<usize>);

/// A pipeline's entry shared by several ops of a partition, kept until its outcome says whether
/// its ops must be written again one by one.
struct SharedEntry {
    /// Its place among the request's entries.
    entry_index: usize,
    partition: u32,
    /// Its bytes, to take the ops back from.
    payload: Vec<u8>,
    /// The request indices of its ops.
    indices: Vec<usize>,
}

impl Service {
    /// Validates and writes `request`; resolves once every entry is durable in the log.
    pub async fn mutate(&self, request: WriteRequest) -> Result<Vec<EntryResult>, ServiceError> {
        self.mutate_located(request)
            .await
            .map(|(results, _)| results)
    }

    /// [`Service::mutate`], also saying where each of the request's ops went, in request order:
    /// the index of its entry in the results, and its index inside that entry (per-record writes
    /// pack plain puts and deletes of a partition into shared entries).
    pub async fn mutate_located(
        &self,
        request: WriteRequest,
    ) -> Result<(Vec<EntryResult>, Vec<(usize, u32)>), ServiceError> {
        let ops = self.validate_ops(request.ops)?;
        self.validate_skip_groups(&ops, request.mode)?;
        self.admit_on_disk(&ops)?;
        let count = ops.len();
        let partitions = self.engine.partition_count();
        let mut by_partition: BTreeMap<u32, Vec<(usize, Op)>> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            by_partition
                .entry(partition_of(&op.pk, partitions))
                .or_default()
                .push((i, op));
        }
        // One bound for the request: waiting for partitions to open, then for outcomes.
        let deadline = Instant::now() + self.config.write_wait_timeout;
        self.admit_partitions(by_partition.keys(), deadline).await?;
        let floors = match request.wait {
            true => self.applied_floors(by_partition.keys()),
            false => Vec::new(),
        };
        let ts_ms = super::now_ms();
        // A pipeline waited on shares entries (see `WriteMode::Pipeline`).
        let shared = request.mode == WriteMode::Pipeline && request.wait;
        // Each entry with the request indices of its ops.
        let entries: Vec<(u32, Vec<Located>)> = match request.mode {
            WriteMode::Atomic => {
                if by_partition.len() > 1 {
                    let ids: Vec<String> = by_partition.keys().map(u32::to_string).collect();
                    return Err(ServiceError::bad_request(
                        "batch_spans_partitions",
                        format!(
                            "a batch is applied atomically, so all its records must be in one partition, but these are in partitions {}; \
                             records with the same pk always share a partition, or use /records/put and /records/delete",
                            ids.join(", ")
                        ),
                    ));
                }
                let (partition, ops) = by_partition
                    .into_iter()
                    .next()
                    .expect("validated non-empty");
                let (indices, ops): (Vec<usize>, Vec<Op>) = ops.into_iter().unzip();
                let entry = self.encode_entry(ts_ms, ops)?;
                vec![(partition, vec![(entry, indices)])]
            }
            WriteMode::PerRecord | WriteMode::Pipeline => by_partition
                .into_iter()
                .map(|(partition, ops)| {
                    let entries = match shared {
                        true => self.shared_entry(ts_ms, ops)?,
                        false => self.per_record_entries(ts_ms, ops)?,
                    };
                    Ok((partition, entries))
                })
                .collect::<Result<_, ServiceError>>()?,
        };
        // Shared pipeline entries, which a rejection makes write again op by op.
        let mut retryable: Vec<SharedEntry> = Vec::new();
        let mut located = vec![(0usize, 0u32); count];
        let mut appends = Vec::with_capacity(entries.len());
        let mut entry_index = 0;
        for (partition, partition_entries) in entries {
            let mut batch = Vec::with_capacity(partition_entries.len());
            // Only the partition's one entry can be written again: nothing of the request in
            // its partition comes after it.
            let alone = partition_entries.len() == 1;
            for (entry, indices) in partition_entries {
                if shared && alone && indices.len() > 1 {
                    retryable.push(SharedEntry {
                        entry_index,
                        partition,
                        payload: entry.payload.clone(),
                        indices: indices.clone(),
                    });
                }
                for (op_index, i) in indices.into_iter().enumerate() {
                    located[i] = (entry_index, op_index as u32);
                }
                entry_index += 1;
                batch.push(entry);
            }
            appends.push((partition, batch));
        }
        let positions = self.append_all(appends).await?;
        if !request.wait {
            let results = positions
                .into_iter()
                .map(|position| EntryResult {
                    position,
                    outcome: None,
                })
                .collect();
            return Ok((results, located));
        }
        let mut results = Vec::with_capacity(positions.len());
        for position in positions {
            let outcome = match below_floor(&floors, position) {
                Some(floor) => {
                    // What this node holds at that offset is another entry's outcome. Said
                    // once in a while: every write to such a partition meets it.
                    if once_per(&BACKWARDS_LOGGED_MS, BACKWARDS_LOG_EVERY_MS) {
                        tracing::error!(
                            partition = position.partition,
                            offset = position.offset,
                            applied_before = floor,
                            "the log numbered a write below what this node had already applied: \
                             the log went backwards (a topic deleted and created again, an \
                             unclean leader election); the write's outcome is not known (said \
                             once per 10 s)"
                        );
                    }
                    None
                }
                None => self.await_outcome(position, deadline).await?,
            };
            results.push(EntryResult {
                position,
                outcome: Some(outcome),
            });
        }
        if !retryable.is_empty() {
            self.rewrite_rejected(retryable, &mut results, &mut located)
                .await?;
        }
        Ok((results, located))
    }

    /// A pipeline's entry for the ops of one partition: all of them in one entry when they fit
    /// in one, else as `PerRecord` writes them (a rejected entry followed by more of the same
    /// partition could not be written again without reordering the pipeline).
    fn shared_entry(
        &self,
        ts_ms: i64,
        ops: Vec<(usize, Op)>,
    ) -> Result<Vec<Located>, ServiceError> {
        if ops.len() < 2 {
            return self.per_record_entries(ts_ms, ops);
        }
        let (indices, ops): (Vec<usize>, Vec<Op>) = ops.into_iter().unzip();
        let entry = LogEntry::new(ts_ms, ops);
        let payload = entry.encode();
        if payload.len() > self.config.limits.max_entry_bytes {
            return self.per_record_entries(ts_ms, indices.into_iter().zip(entry.ops).collect());
        }
        let key = entry.ops[0].pk.clone();
        Ok(vec![(Append { key, payload }, indices)])
    }

    /// Writes again, op by op as `PerRecord` would, the ops of each shared pipeline entry that
    /// was rejected (nothing of it took effect), and points `results` and `located` at where
    /// they went.
    async fn rewrite_rejected(
        &self,
        retryable: Vec<SharedEntry>,
        results: &mut Vec<EntryResult>,
        located: &mut [(usize, u32)],
    ) -> Result<(), ServiceError> {
        let ts_ms = super::now_ms();
        let mut rewrites: Vec<(usize, u32, Vec<Located>)> = Vec::new();
        for SharedEntry {
            entry_index,
            partition,
            payload,
            indices,
        } in retryable
        {
            let Some(Some(Outcome::Rejected(_))) = &results[entry_index].outcome else {
                continue;
            };
            let ops = LogEntry::decode(&payload)
                .map_err(|e| ServiceError::internal(format!("re-reading a shared entry: {e}")))?
                .ops;
            let entries = self.per_record_entries(ts_ms, indices.into_iter().zip(ops).collect())?;
            rewrites.push((entry_index, partition, entries));
        }
        if rewrites.is_empty() {
            return Ok(());
        }
        // Each new entry: the rejected entry's place among the results for the first of a
        // partition (the rest are added at the end), and the request indices of its ops.
        let mut appends = Vec::with_capacity(rewrites.len());
        let mut targets: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
        for (entry_index, partition, entries) in rewrites {
            let mut batch = Vec::with_capacity(entries.len());
            for (n, (entry, indices)) in entries.into_iter().enumerate() {
                targets.push(((n == 0).then_some(entry_index), indices));
                batch.push(entry);
            }
            appends.push((partition, batch));
        }
        let positions = self.append_all(appends).await?;
        let deadline = Instant::now() + self.config.write_wait_timeout;
        for (position, (place, indices)) in positions.into_iter().zip(targets) {
            let result = EntryResult {
                position,
                outcome: Some(self.await_outcome(position, deadline).await?),
            };
            let place = match place {
                Some(place) => {
                    results[place] = result;
                    place
                }
                None => {
                    results.push(result);
                    results.len() - 1
                }
            };
            for (op_index, i) in indices.into_iter().enumerate() {
                located[i] = (place, op_index as u32);
            }
        }
        Ok(())
    }

    /// Puts that skip together (`skips_with`, log format v8) are `if_skips` puts, one group at a
    /// time, all in one atomic entry.
    fn validate_skip_groups(&self, ops: &[Op], mode: WriteMode) -> Result<(), ServiceError> {
        let version = self.config.entry_write_version;
        let mut members_until = 0;
        for (i, op) in ops.iter().enumerate() {
            if op.skips_with == 0 {
                continue;
            }
            let end = i + 1 + op.skips_with as usize;
            let why = if version < 8 {
                Some(format!(
                    "`skips_with` is log format v8; this node writes v{version} \
                     (ENTRY_WRITE_VERSION)"
                ))
            } else if mode != WriteMode::Atomic {
                Some("`skips_with` needs the ops in one entry (an atomic batch)".to_owned())
            } else if i < members_until {
                Some("a group of puts that skip together cannot hold another".to_owned())
            } else if end > ops.len() {
                Some(format!(
                    "`skips_with` {} goes past the request's last op",
                    op.skips_with
                ))
            } else if !ops[i..end]
                .iter()
                .all(|member| member.if_skips && member.op == OpKind::Put)
            {
                Some("every op of a group that skips together is an `if_skips` put".to_owned())
            } else {
                None
            };
            refuse_record("bad_if_skips", i, why)?;
            members_until = end;
        }
        Ok(())
    }

    fn validate_ops(&self, ops: Vec<WriteOp>) -> Result<Vec<Op>, ServiceError> {
        let limits = &self.config.limits;
        if ops.is_empty() {
            return Err(ServiceError::bad_request(
                "empty_records",
                "`Records` must hold at least one record",
            ));
        }
        if ops.len() > limits.max_records {
            return Err(ServiceError::bad_request(
                "too_many_records",
                format!(
                    "{} records in one request; the limit is {} (MAX_RECORDS_PER_REQUEST): split the request",
                    ops.len(),
                    limits.max_records
                ),
            ));
        }
        // The conditions of the whole request share one budget for their checks on arrival.
        let mut probe_budget = crate::cond::arrival_budget();
        // So do the patterns of its JSON paths, compiled to refuse a bad one here.
        let mut pattern_budget = crate::model::READ_VISITS;
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| {
                self.validate_key(Some(i), &op.pk, &op.sk)?;
                check_operand(i, &op, &mut pattern_budget)?;
                let data = match (op.op, op.data) {
                    (
                        OpKind::Delete
                        | OpKind::DeleteKey
                        | OpKind::Check
                        | OpKind::Expire
                        | OpKind::ExpireKey
                        | OpKind::Deadline,
                        _,
                    )
                    | (_, None) => None,
                    (_, Some(data)) => {
                        if data.get().len() > limits.max_value_bytes {
                            let binary = if crate::model::is_binary_data(data.get().as_bytes()) {
                                format!(
                                    " (binary values are stored as base64, 4/3 of their size: \
                                     at most {} bytes of binary fit)",
                                    crate::model::binary_capacity(limits.max_value_bytes)
                                )
                            } else {
                                String::new()
                            };
                            return Err(ServiceError::too_large(
                                "value_too_large",
                                format!(
                                    "record {i} (pk {:?}): data is {} bytes; the limit is {} (MAX_VALUE_BYTES){binary}",
                                    op.pk,
                                    data.get().len(),
                                    limits.max_value_bytes
                                ),
                            ));
                        }
                        if json_nests_deeper_than(data.get().as_bytes(), MAX_JSON_DEPTH) {
                            return Err(ServiceError::bad_request(
                                "data_too_deep",
                                format!(
                                    "record {i} (pk {:?}): data nests arrays and objects deeper than \
                                     {MAX_JSON_DEPTH} levels; flatten it",
                                    op.pk
                                ),
                            ));
                        }
                        if let Some(number) = json_number_out_of_range(data.get().as_bytes()) {
                            return Err(number_out_of_range(&format!("record {i} (pk {:?}): data", op.pk), number));
                        }
                        if let Some(escape) = json_lone_surrogate(data.get().as_bytes()) {
                            return Err(lone_surrogate(&format!("record {i} (pk {:?}): data", op.pk), escape));
                        }
                        Some(match compact_json(data.get()) {
                            std::borrow::Cow::Borrowed(_) => data,
                            std::borrow::Cow::Owned(compact) => RawValue::from_string(compact)
                                .map_err(|e| ServiceError::internal(e.to_string()))?,
                        })
                    }
                };
                if let Some(cond) = &op.cond {
                    let conditions = &self.conds;
                    conditions.check_within(cond, &mut probe_budget).map_err(|e| {
                        ServiceError::bad_request("invalid_if", format!("record {i}: {e}"))
                    })?;
                }
                if let Some(args) = &op.args
                    && args.get().len() > limits.max_value_bytes
                {
                    return Err(ServiceError::too_large(
                        "args_too_large",
                        format!(
                            "record {i}: `args` is {} bytes; the limit is {} (MAX_VALUE_BYTES)",
                            args.get().len(),
                            limits.max_value_bytes
                        ),
                    ));
                }
                if let Some(args) = &op.args
                    && json_nests_deeper_than(args.get().as_bytes(), MAX_JSON_DEPTH)
                {
                    return Err(ServiceError::bad_request(
                        "args_too_deep",
                        format!(
                            "record {i}: `args` nests arrays and objects deeper than \
                             {MAX_JSON_DEPTH} levels; flatten it"
                        ),
                    ));
                }
                if let Some(number) = op
                    .args
                    .as_ref()
                    .and_then(|args| json_number_out_of_range(args.get().as_bytes()))
                {
                    return Err(number_out_of_range(&format!("record {i}: `args`"), number));
                }
                if let Some(escape) = op
                    .args
                    .as_ref()
                    .and_then(|args| json_lone_surrogate(args.get().as_bytes()))
                {
                    return Err(lone_surrogate(&format!("record {i}: `args`"), escape));
                }
                // The accepting node pins each plugin name to the digest it is bound to now.
                let if_plugin = match &op.if_plugin {
                    None => None,
                    Some(name) => Some(self.pin_plugin(i, name, true)?),
                };
                let transform = match (&op.transform, op.op) {
                    (None, _) => None,
                    (Some(_), OpKind::Delete) => {
                        return Err(ServiceError::bad_request(
                            "bad_transform",
                            format!("record {i}: `transform` applies to puts, not deletes"),
                        ));
                    }
                    (Some(name), OpKind::Put) => Some(self.pin_plugin(i, name, false)?),
                    (Some(_), kind) => {
                        return Err(ServiceError::bad_request(
                            "bad_transform",
                            format!(
                                "record {i}: `transform` applies to puts, not `{}` ops",
                                kind.name()
                            ),
                        ));
                    }
                };
                let version = self.config.entry_write_version;
                if op.if_skips {
                    let why = if version < 4 {
                        Some(format!(
                            "`if_skips` is log format v4; this node writes v{version} \
                             (ENTRY_WRITE_VERSION)"
                        ))
                    } else if op.op != OpKind::Put || op.cond.is_none() {
                        Some("`if_skips` applies to puts with an `if`".to_owned())
                    } else if op.return_old || op.return_existed {
                        Some(
                            "an `if_skips` put returns whether it wrote: not with `return_old` \
                             or `return_existed`"
                                .to_owned(),
                        )
                    } else {
                        None
                    };
                    refuse_record("bad_if_skips", i, why)?;
                }
                if op.fails_alone {
                    let why = if version < 9 {
                        Some(format!(
                            "`fails_alone` is log format v9; this node writes v{version} \
                             (ENTRY_WRITE_VERSION)"
                        ))
                    } else if !(op.op.is_read_modify_write() || op.op == OpKind::Json) {
                        Some(format!(
                            "`fails_alone` applies to read-modify-write and `json` ops, not `{}`",
                            op.op.name()
                        ))
                    } else {
                        None
                    };
                    refuse_record("bad_fails_alone", i, why)?;
                }
                if op.field_ttl && op.op != OpKind::Expire {
                    return Err(ServiceError::bad_request(
                        "bad_field_ttl",
                        format!(
                            "record {i}: `field_ttl` applies to `expire` ops, not `{}`",
                            op.op.name()
                        ),
                    ));
                }
                if version < 7
                    && op.op == OpKind::Json
                    && op.path.as_deref().is_some_and(|path| {
                        crate::model::JsonPath::parse(path).is_ok_and(|p| p.uses_functions())
                    })
                {
                    return Err(ServiceError::bad_request(
                        "bad_operand",
                        format!(
                            "record {i}: a JSON path whose filters call functions or test \
                             patterns (`length()`, `=~`, ...) is log format v7; this node writes \
                             v{version} (ENTRY_WRITE_VERSION): filter by comparisons, or raise \
                             it once every node runs a release that applies v7"
                        ),
                    ));
                }
                if op.op == OpKind::Json && version < 6 {
                    return Err(ServiceError::bad_request(
                        "bad_operand",
                        format!(
                            "record {i}: `json` ops (a JSON document edited at a path) are log \
                             format v6; this node writes v{version} (ENTRY_WRITE_VERSION)"
                        ),
                    ));
                }
                if matches!(op.op, OpKind::IncrLongDouble | OpKind::Deadline) && version < 4 {
                    return Err(ServiceError::bad_request(
                        "bad_operand",
                        format!(
                            "record {i}: `{}` ops are log format v4; this node writes \
                             v{version} (ENTRY_WRITE_VERSION)",
                            op.op.name()
                        ),
                    ));
                }
                Ok(Op {
                    op: op.op,
                    pk: op.pk,
                    sk: op.sk,
                    data,
                    cond: op.cond,
                    if_plugin,
                    transform,
                    args: op.args,
                    version: op.version,
                    return_old: op.return_old,
                    return_existed: op.return_existed,
                    expires_at: op.expires_at,
                    keep_ttl: op.keep_ttl,
                    expire_if: op.expire_if,
                    key_ttl: op.key_ttl && self.config.entry_write_version >= 2,
                    own_ttl: op.own_ttl && self.config.entry_write_version >= 3,
                    if_skips: op.if_skips,
                    skips_with: op.skips_with,
                    fails_alone: op.fails_alone,
                    // Below v5 an `expire` sees the key's deadline as the field's, as the
                    // nodes that may apply the entry do (the RESP edge answers to match).
                    field_ttl: op.field_ttl && version >= 5,
                    json_cmd: op.json_cmd,
                    path: op.path,
                    path_before_v7: false,
                })
            })
            .collect()
    }

    /// Encodes `ops` as one entry, keyed by the first op's pk, within the entry size limit.
    fn encode_entry(&self, ts_ms: i64, ops: Vec<Op>) -> Result<Append, ServiceError> {
        let key = ops[0].pk.clone();
        let payload = LogEntry::new(ts_ms, ops).encode();
        let limit = self.config.limits.max_entry_bytes;
        if payload.len() > limit {
            return Err(ServiceError::too_large(
                "entry_too_large",
                format!(
                    "the records of one partition make a {} byte log entry; the limit is {limit} (MAX_ENTRY_BYTES): \
                     send fewer or smaller records",
                    payload.len()
                ),
            ));
        }
        Ok(Append { key, payload })
    }

    /// Entries for one partition of a per-record write (`ops`, each with its request index), in
    /// request order, each with the request indices of its ops: each op that may reject its
    /// entry or returns a value alone, runs of plain puts and deletes together up to the entry
    /// size limit.
    fn per_record_entries(
        &self,
        ts_ms: i64,
        ops: Vec<(usize, Op)>,
    ) -> Result<Vec<Located>, ServiceError> {
        let limit = self.config.limits.max_entry_bytes;
        let mut entries = Vec::new();
        let mut run: Vec<(usize, Op)> = Vec::new();
        let mut run_bytes = 0usize;
        let flush = |run: &mut Vec<(usize, Op)>,
                     entries: &mut Vec<Located>|
         -> Result<(), ServiceError> {
            if !run.is_empty() {
                let (indices, ops): (Vec<usize>, Vec<Op>) = std::mem::take(run).into_iter().unzip();
                entries.push((self.encode_entry(ts_ms, ops)?, indices));
            }
            Ok(())
        };
        for (i, op) in ops {
            // An op that may reject its entry, or returns a value, is an entry of its own.
            if op.cond.is_some()
                || op.if_plugin.is_some()
                || op.transform.is_some()
                || op.return_old
                || !matches!(op.op, OpKind::Put | OpKind::Delete)
            {
                flush(&mut run, &mut entries)?;
                run_bytes = 0;
                entries.push((self.encode_entry(ts_ms, vec![op])?, vec![i]));
                continue;
            }
            let size = op_size(&op);
            if run_bytes + size > limit {
                flush(&mut run, &mut entries)?;
                run_bytes = 0;
            }
            run_bytes += size;
            run.push((i, op));
        }
        flush(&mut run, &mut entries)?;
        Ok(entries)
    }

    /// Refuses `ops` while the node's disk is under its free-space floor, unless they only
    /// delete (deleting is how a user makes room).
    fn admit_on_disk(&self, ops: &[Op]) -> Result<(), ServiceError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        if ops
            .iter()
            .all(|op| matches!(op.op, OpKind::Delete | OpKind::DeleteKey))
        {
            return Ok(());
        }
        let bytes: usize = ops.iter().map(op_size).sum();
        disk.admit(bytes as u64).map_err(|low| {
            self.metrics
                .requests_refused
                .with_label_values(&["disk_space"])
                .inc();
            ServiceError::new(ErrorKind::InsufficientStorage, "disk_full", low.to_string())
        })
    }

    /// Refuses a write to a partition that must take no entry yet (opening, or left
    /// unrestored, on a new disk; or whose log ends before its store: see
    /// `engine/new_disk.rs`) once it has waited for opening ones up to the write wait bound
    /// (`deadline`, the request's); nothing of the request is written.
    async fn admit_partitions<'a>(
        &self,
        partitions: impl Iterator<Item = &'a u32>,
        deadline: Instant,
    ) -> Result<(), ServiceError> {
        for &partition in partitions {
            if self.engine.write_hold(partition).is_none() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let waited = self.engine.write_hold_after_open(partition, left);
            let Some(why) = Box::pin(waited).await else {
                continue;
            };
            // An opening partition is refused as reads of it are (Redis clients: LOADING).
            let unrestored = self.engine.with_partition(partition, |runtime| {
                matches!(runtime.health(), crate::engine::Health::Unrestored { .. })
            });
            let (code, reason) = if self.engine.is_opening(partition) {
                ("partition_opening", "new_disk")
            } else if unrestored == Some(true) {
                ("partition_unrestored", "new_disk")
            } else {
                // Its log is not the one its state came from: the log ends before it, or
                // holds another entry where it applied its last.
                ("log_mismatch", "log_mismatch")
            };
            self.metrics
                .requests_refused
                .with_label_values(&[reason])
                .inc();
            return Err(ServiceError::new(
                ErrorKind::Unavailable,
                code,
                format!("partition {partition} takes no writes now: {why}; nothing was written"),
            ));
        }
        Ok(())
    }

    /// How far this node had applied each of `partitions` before a write to them is appended
    /// ([`crate::engine::Engine::applied_floor`]): the log numbers the write at or after that,
    /// unless it went backwards.
    fn applied_floors<'a>(&self, partitions: impl Iterator<Item = &'a u32>) -> Vec<(u32, u64)> {
        partitions
            .filter_map(|&p| self.engine.applied_floor(p).map(|floor| (p, floor)))
            .collect()
    }

    /// Appends every partition's entries concurrently; positions come back in partition order.
    async fn append_all(
        &self,
        entries: Vec<(u32, Vec<Append>)>,
    ) -> Result<Vec<Position>, ServiceError> {
        let log = &self.log;
        if let [(partition, _)] = entries[..] {
            // The common case, one partition: no task to spawn and join (a spawn and a wake
            // more per write).
            let (_, entries) = entries.into_iter().next().expect("one partition");
            return match log.append(partition, entries).await {
                Ok(offsets) => Ok(offsets
                    .into_iter()
                    .map(|offset| Position { partition, offset })
                    .collect()),
                Err(e) => Err(append_error(e, &[])),
            };
        }
        let appends: Vec<_> = entries
            .into_iter()
            .map(|(partition, entries)| (partition, tokio::spawn(log.append(partition, entries))))
            .collect();
        let mut positions = Vec::new();
        let mut failure: Option<LogError> = None;
        for (partition, append) in appends {
            match append.await {
                Ok(Ok(offsets)) => positions.extend(
                    offsets
                        .into_iter()
                        .map(|offset| Position { partition, offset }),
                ),
                Ok(Err(e)) => failure = Some(e),
                Err(e) => failure = Some(LogError::Unavailable(e.to_string())),
            }
        }
        match failure {
            None => Ok(positions),
            Some(error) => Err(append_error(error, &positions)),
        }
    }
}

/// When a write was last told that the log went backwards under it (unix ms), and how often
/// that is logged at most.
static BACKWARDS_LOGGED_MS: AtomicI64 = AtomicI64::new(i64::MIN);
const BACKWARDS_LOG_EVERY_MS: i64 = 10_000;

/// Whether `every_ms` has passed since `last` (unix ms) was set, setting it if so: true for
/// one caller at a time however many ask at once.
fn once_per(last: &AtomicI64, every_ms: i64) -> bool {
    let now = crate::model::now_ms();
    let seen = last.load(Ordering::Relaxed);
    now.saturating_sub(seen) >= every_ms
        && last
            .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// The offset this node had applied of `position`'s partition before the write was appended,
/// when the position is below it: the log numbered the write with an offset of an entry this
/// node already applied (see [`Service::applied_floors`]).
fn below_floor(floors: &[(u32, u64)], position: Position) -> Option<u64> {
    floors
        .iter()
        .find(|(partition, _)| *partition == position.partition)
        .map(|&(_, floor)| floor)
        .filter(|&floor| position.offset < floor)
}

/// About how many bytes `op` adds to an encoded entry.
fn op_size(op: &Op) -> usize {
    op.pk.len()
        + op.sk.len()
        + op.data.as_ref().map_or(4, |d| d.get().len())
        + op.cond.as_ref().map_or(0, String::len)
        + op.args.as_ref().map_or(0, |a| a.get().len())
        + 64
}

/// The error for an append that failed, saying which entries (`written`) were durable anyway.
fn append_error(error: LogError, written: &[Position]) -> ServiceError {
    let written = if written.is_empty() {
        "nothing was written".to_string()
    } else {
        let list: Vec<String> = written
            .iter()
            .map(|p| format!("{}@{}", p.partition, p.offset))
            .collect();
        format!(
            "entries at partition@offset {} were written",
            list.join(", ")
        )
    };
    match error {
        LogError::TooLarge { size, limit } => ServiceError::too_large(
            "entry_too_large",
            format!("a {size} byte entry is over the log's limit of {limit} bytes; {written}"),
        ),
        e @ LogError::BrokerTooLarge { .. } => {
            ServiceError::too_large("entry_too_large", format!("{e}; {written}"))
        }
        other => ServiceError::new(
            ErrorKind::Unavailable,
            "log_unavailable",
            format!("the write could not be made durable: {other}; {written}. Retry later"),
        ),
    }
}

/// Whether `json` is what an `incr_long_double` op adds: a finite number, as a JSON number or
/// as a JSON string in Redis's float syntax.
fn long_double_operand(json: &str) -> bool {
    let text = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(serde_json::Value::Number(_)) => json.trim().to_owned(),
        _ => return false,
    };
    LongDouble::parse(&text).is_some_and(|n| !n.is_infinite())
}

/// Checks what an op of `kind` needs besides its address: the operand of a read-modify-write
/// op, the version of a check, the path of a `json` op (its patterns compiled within
/// `pattern_budget`, which the request's ops share).
fn check_operand(i: usize, op: &Op, pattern_budget: &mut u64) -> Result<(), ServiceError> {
    let (kind, data, version) = (&op.op, op.data.as_deref(), op.version.as_deref());
    let bad = |message: String| Err(ServiceError::bad_request("bad_operand", message));
    let json = data.map_or("null", RawValue::get);
    match kind {
        OpKind::Incr if serde_json::from_str::<i64>(json).is_err() => bad(format!(
            "record {i}: an `incr` op's data must be an integer within 64 bits, not {json}"
        )),
        OpKind::IncrFloat if !serde_json::from_str::<f64>(json).is_ok_and(f64::is_finite) => bad(
            format!("record {i}: an `incr_float` op's data must be a finite number, not {json}"),
        ),
        OpKind::IncrLongDouble if !long_double_operand(json) => bad(format!(
            "record {i}: an `incr_long_double` op's data must be a finite number, or a string \
             holding one in Redis's float syntax, not {json}"
        )),
        OpKind::Append if serde_json::from_str::<String>(json).is_err() => bad(format!(
            "record {i}: an `append` op's data must be a JSON string"
        )),
        OpKind::Json => check_json_operand(i, op, json, pattern_budget),
        _ if op.json_cmd.is_some() || op.path.is_some() => bad(format!(
            "record {i}: `json_cmd` and `path` apply to `json` ops, not `{}`",
            kind.name()
        )),
        OpKind::Check
            if !version
                .is_some_and(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            bad(format!(
                "record {i}: a `check` op needs `version`, 64 hex digits"
            ))
        }
        kind if op.return_old && !matches!(kind, OpKind::Put | OpKind::Delete | OpKind::Expire) => {
            bad(format!(
                "record {i}: `return_old` applies to puts, deletes and expires, not `{}` ops",
                kind.name()
            ))
        }
        kind if op.return_existed
            && !matches!(kind, OpKind::Put | OpKind::Delete | OpKind::DeleteKey) =>
        {
            bad(format!(
                "record {i}: `return_existed` applies to puts, deletes and delete_key ops, not `{}` ops",
                kind.name()
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a `json` op: a command, a path that parses (its patterns compile), and the operand its
/// command takes (the document it edits is only known at apply).
fn check_json_operand(
    i: usize,
    op: &Op,
    json: &str,
    pattern_budget: &mut u64,
) -> Result<(), ServiceError> {
    use crate::model::JsonPath;
    let bad = |message: String| Err(ServiceError::bad_request("bad_operand", message));
    let (Some(cmd), Some(path)) = (op.json_cmd, op.path.as_deref()) else {
        return bad(format!(
            "record {i}: a `json` op needs `json_cmd` and `path`"
        ));
    };
    if let Err(e) = JsonPath::parse(path).and_then(|path| path.compile_patterns(pattern_budget)) {
        return bad(format!("record {i}: {e}"));
    }
    let operand = op.data.as_deref().map(RawValue::get);
    if !crate::engine::json_operand_fits(cmd, operand) {
        return bad(format!(
            "record {i}: a `json` op's data for `{}` must be {}, not {json}",
            serde_json::to_value(cmd)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            crate::engine::json_operand_expected(cmd)
        ));
    }
    Ok(())
}

/// A write's data or args holds a number no 64-bit float can hold (`1e999`): conditions and
/// plugins would fail on every later write to the record, and most clients could not read it.
fn lone_surrogate(what: &str, escape: &str) -> ServiceError {
    ServiceError::bad_request(
        "lone_surrogate",
        format!(
            "{what} holds the escape {escape}, half of a UTF-16 surrogate pair without its other \
             half: it is no Unicode character, and conditions, plugins and most clients cannot \
             read a string holding it; send the character itself, or both halves of its pair"
        ),
    )
}

fn number_out_of_range(what: &str, number: &str) -> ServiceError {
    let shown: String = number.chars().take(24).collect();
    let more = if shown.len() < number.len() {
        "…"
    } else {
        ""
    };
    ServiceError::bad_request(
        "number_out_of_range",
        format!(
            "{what} holds the number {shown}{more}, which is past the range of a 64-bit float \
             (about ±1.8e308); store it as a string"
        ),
    )
}

/// Refuses record `i` of a request with error `code` when there is a reason `why`.
fn refuse_record(code: &'static str, i: usize, why: Option<String>) -> Result<(), ServiceError> {
    match why {
        Some(why) => Err(ServiceError::bad_request(
            code,
            format!("record {i}: {why}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_lets_one_caller_through_per_interval() {
        let last = AtomicI64::new(i64::MIN);
        let through = (0..10_000).filter(|_| once_per(&last, 60_000)).count();
        assert_eq!(through, 1, "a burst is said once");
        assert!(once_per(&last, 0), "after the interval, again");
    }
}
