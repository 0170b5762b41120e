use super::*;
use crate::cond::Conditions;
use crate::log::LogRecord;
use crate::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use crate::metrics::Metrics;
use crate::model::Position;
use crate::model::{JsonCmd, LogEntry, Op, OpKind, PluginRef, partition_of};
use crate::plugins::{PluginHost, PluginLimits};
use crate::store::PartitionStore;
use crate::store::Store;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 4;

/// Conditions and a plugin resolver with no plugins yet (its own store, so the partition's
/// store stays unlocked).
struct TestRules {
    conds: Conditions,
    plugins: PluginResolver,
    reject_at: std::collections::BTreeSet<Position>,
}

impl TestRules {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let store = Store::open(&dir, PARTITIONS).unwrap();
        TestRules {
            conds: Conditions::new(),
            plugins: PluginResolver::new(
                Arc::new(PluginHost::new(PluginLimits::default()).unwrap()),
                store.plugins().unwrap(),
            ),
            reject_at: Default::default(),
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            conds: &self.conds,
            plugins: &self.plugins,
            partitions: PARTITIONS,
            index: None,
            reject_at: &self.reject_at,
        }
    }
}

fn put(pk: &str, sk: &str, data: &str, cond: Option<&str>) -> Op {
    Op {
        op: OpKind::Put,
        pk: pk.into(),
        sk: sk.into(),
        data: Some(RawValue::from_string(data.into()).unwrap()),
        cond: cond.map(Into::into),
        ..Op::default()
    }
}

/// The offsets a batch rejected, and why.
fn rejection_kinds(batch: &AppliedBatch) -> Vec<(u64, RejectionKind)> {
    batch
        .rejections
        .iter()
        .map(|(offset, r)| (*offset, r.kind))
        .collect()
}

fn rmw(kind: OpKind, pk: &str, sk: &str, operand: &str) -> Op {
    Op {
        op: kind,
        pk: pk.into(),
        sk: sk.into(),
        data: Some(RawValue::from_string(operand.into()).unwrap()),
        ..Op::default()
    }
}

fn json_edit(cmd: JsonCmd, pk: &str, sk: &str, path: &str, operand: &str) -> Op {
    Op {
        json_cmd: Some(cmd),
        path: Some(path.into()),
        ..rmw(OpKind::Json, pk, sk, operand)
    }
}

fn check(pk: &str, version: &str) -> Op {
    Op {
        op: OpKind::Check,
        pk: pk.into(),
        version: Some(version.into()),
        ..Op::default()
    }
}

fn delete(pk: &str, sk: &str, cond: Option<&str>) -> Op {
    Op {
        op: OpKind::Delete,
        pk: pk.into(),
        sk: sk.into(),
        data: None,
        cond: cond.map(Into::into),
        ..Op::default()
    }
}

/// pks that all live in `partition`.
fn pks_in(partition: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("pk{i}"))
        .filter(|pk| partition_of(pk, PARTITIONS) == partition)
        .take(n)
        .collect()
}

fn append(entry: &LogEntry) -> crate::log::Append {
    crate::log::Append {
        key: entry.ops[0].pk.clone(),
        payload: entry.encode(),
    }
}

fn start_engine(
    store: crate::store::Store,
    log: Arc<EmbeddedLog>,
    metrics: Arc<Metrics>,
) -> (Engine, Vec<tokio::task::JoinHandle<()>>) {
    start_engine_with(store, log, metrics, EngineConfig::default())
}

fn start_engine_with(
    store: crate::store::Store,
    log: Arc<EmbeddedLog>,
    metrics: Arc<Metrics>,
    config: EngineConfig,
) -> (Engine, Vec<tokio::task::JoinHandle<()>>) {
    let plugins = test_plugins(&store, &log, &metrics);
    Engine::start(
        store,
        log,
        Arc::new(Conditions::new()),
        plugins,
        metrics,
        config,
    )
}

/// Plugins as a node sets them up, over `store`.
fn test_plugins(
    store: &crate::store::Store,
    log: &Arc<EmbeddedLog>,
    metrics: &Metrics,
) -> PluginResolver {
    let log: Arc<dyn crate::log::MutationLog> = log.clone();
    Plugins::open(store, &log, PluginLimits::default(), metrics)
        .unwrap()
        .resolver
}

fn open_log(dir: &std::path::Path) -> Arc<EmbeddedLog> {
    open_log_in_segments_of(dir, 1 << 20)
}

/// An embedded log in `dir` whose segments hold `segment_bytes` (64: one entry each, so
/// retention can remove any prefix).
fn open_log_in_segments_of(dir: &std::path::Path, segment_bytes: u64) -> Arc<EmbeddedLog> {
    Arc::new(
        EmbeddedLog::open(EmbeddedLogConfig {
            dir: dir.join("log"),
            partitions: PARTITIONS,
            segment_bytes,
            max_entry_bytes: 1 << 20,
            journal_bytes: crate::log::embedded::DEFAULT_JOURNAL_BYTES,
        })
        .unwrap(),
    )
}

fn open_partition(dir: &std::path::Path, id: u32) -> PartitionStore {
    crate::store::Store::open(dir, PARTITIONS)
        .unwrap()
        .partition(id)
        .unwrap()
}

fn records(entries: &[Vec<u8>]) -> Vec<LogRecord> {
    entries
        .iter()
        .enumerate()
        .map(|(i, payload)| LogRecord {
            offset: i as u64,
            payload: payload.clone(),
        })
        .collect()
}

fn get(store: &PartitionStore, pk: &str, sk: &str) -> Option<crate::model::Record> {
    store.get(pk, sk).unwrap()
}

/// A log exercising every outcome: puts, deletes, conditions true/false/erroring, multi-op
/// entries rejected half-way, malformed bytes, a version that never existed, legacy messages, wrong partition.
fn mixed_log() -> Vec<Vec<u8>> {
    let pks = pks_in(1, 6);
    let other = pks_in(2, 1);
    let untouched = &pks[5];
    let nothing = crate::model::pk_version(std::iter::empty());
    let mut log = Vec::new();
    for i in 0..280i64 {
        let pk = &pks[(i % 5) as usize];
        let sk = format!("s{}", i % 7);
        let entry = match i % 14 {
            // A whole key deleted, and one record written after it in the same entry.
            13 => LogEntry::new(
                i,
                vec![
                    Op {
                        op: OpKind::DeleteKey,
                        pk: pk.clone(),
                        return_existed: true,
                        ..Op::default()
                    },
                    put(pk, "after", "1", None),
                ],
            ),
            // Read-modify-write ops: some find a value they cannot work on (`{"n":..}`).
            10 if i % 28 == 10 => LogEntry::new(
                i,
                vec![
                    rmw(OpKind::Append, pk, "word", r#""x""#),
                    rmw(OpKind::Incr, pk, "word", "1"),
                ],
            ),
            10 => LogEntry::new(i, vec![rmw(OpKind::Incr, pk, &sk, &i.to_string())]),
            11 => LogEntry::new(
                i,
                vec![
                    rmw(OpKind::IncrFloat, pk, "f", "0.25"),
                    rmw(OpKind::Append, pk, "txt", r#""ab""#),
                    Op {
                        return_old: true,
                        ..put(pk, "old", &i.to_string(), None)
                    },
                    // Written with every `delete_key` below: there once one ran for this pk.
                    Op {
                        return_existed: true,
                        ..delete(pk, "after", None)
                    },
                    rmw(OpKind::IncrLongDouble, pk, "ld", r#""0.1""#),
                ],
            ),
            // Checks: a pk that never has records keeps the version of nothing; one that does
            // not, so that entry is rejected whole.
            12 => LogEntry::new(
                i,
                vec![
                    check(untouched, &nothing),
                    check(if i % 2 == 0 { pk } else { untouched }, &nothing),
                    put(pk, "checked", &i.to_string(), None),
                ],
            ),
            0 => LogEntry::new(i, vec![put(pk, &sk, &format!(r#"{{"n":{i}}}"#), None)]),
            1 => LogEntry::new(i, vec![put(pk, &sk, "{}", Some("data == null"))]),
            // A legacy path: rejects the entry where `s2` holds no document with a number `n`.
            2 if i % 28 == 2 => {
                LogEntry::new(i, vec![json_edit(JsonCmd::NumMultBy, pk, "s2", ".n", "3")])
            }
            2 => LogEntry::new(i, vec![put(pk, &sk, r#""x""#, Some("data.n > 3"))]),
            3 => LogEntry::new(i, vec![delete(pk, &sk, Some("_updated_at < 100"))]),
            4 => LogEntry::new(
                i,
                vec![
                    put(pk, "a", "1", None),
                    put(pk, "b", "2", Some("data.missing.deeper > 1")),
                ],
            ),
            // JSON edits: the array just written grows; counters under any member named `n`
            // count, where some record holds one (a JSONPath finds none elsewhere).
            5 => LogEntry::new(
                i,
                vec![
                    put(pk, &sk, "[1,2]", None),
                    delete(pk, "s0", None),
                    json_edit(JsonCmd::ArrAppend, pk, &sk, "$", "[3]"),
                    json_edit(
                        JsonCmd::SetIfAbsent,
                        pk,
                        "doc",
                        "$",
                        r#"{"n":0,"m":{"n":1,"tag":"edge-ams"}}"#,
                    ),
                    json_edit(JsonCmd::NumIncrBy, pk, "doc", "$..n", "2"),
                    json_edit(
                        JsonCmd::NumIncrBy,
                        pk,
                        "doc",
                        "$[?@.tag =~ '^edge-' && count(@.*) == 2].n",
                        "10",
                    ),
                ],
            ),
            6 => LogEntry::new(i, vec![put(&other[0], "x", "1", None)]),
            7 => {
                log.push(br#"{"v":0,"ts_ms":1,"ops":[]}"#.to_vec());
                continue;
            }
            8 => {
                log.push(format!(r#"{{"pk":"{pk}","sk":"legacy","data":{{"i":{i}}},"ts_ms":{i},"mutation":"put","if":null}}"#).into_bytes());
                continue;
            }
            _ => {
                log.push(b"\xff not json".to_vec());
                continue;
            }
        };
        log.push(entry.encode());
    }
    log
}

/// The key index kept at apply says exactly what the records say: each pk with its record
/// count and whether it has the string record (sk ""), and the partition's key count.
fn assert_key_index_matches(store: &PartitionStore) {
    let mut expected: std::collections::BTreeMap<String, (u64, bool)> = Default::default();
    for entry in store.entries() {
        let (key, _) = entry.unwrap();
        let (pk, sk) = crate::store::decode_key(&key).unwrap();
        let slot = expected.entry(pk).or_default();
        slot.0 += 1;
        slot.1 |= sk.is_empty();
    }
    let (indexed, next) = store.scan_keys(0, usize::MAX).unwrap();
    assert_eq!(next, None);
    let indexed: std::collections::BTreeMap<String, (u64, bool)> = indexed
        .into_iter()
        .map(|k| {
            assert_eq!(k.hash, crate::store::key_hash(&k.pk));
            (k.pk, (k.records, k.string))
        })
        .collect();
    assert_eq!(indexed, expected);
    assert_eq!(store.key_count().unwrap(), expected.len() as u64);
}

#[test]
fn same_log_gives_same_digest_whatever_the_batching() {
    let log = records(&mixed_log());
    let rules = TestRules::new();
    let mut digests = Vec::new();
    let mut outcomes = Vec::new();
    let mut all_returned = Vec::new();
    // Apply's point reads come from the store, or from a read index kept as the applier keeps
    // it (with room for everything, or one that turns itself off part of the way).
    let runs: [(usize, Option<usize>); 7] = [
        (1, None),
        (7, None),
        (64, None),
        (1000, None),
        (1, Some(usize::MAX)),
        (7, Some(usize::MAX)),
        (7, Some(4000)),
    ];
    for (batch_size, index_budget) in runs {
        let mut returned = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let store = open_partition(dir.path(), 1);
        let index = index_budget.map(|budget| ReadIndex::load(&store, budget).unwrap());
        let mut rejected = Vec::new();
        for chunk in log.chunks(batch_size) {
            let rules = Rules {
                index: index.as_ref(),
                ..rules.rules()
            };
            let batch = apply_and_commit(&store, rules, chunk).unwrap();
            if let Some(index) = &index {
                index.apply(batch.writes.iter());
            }
            rejected.extend(batch.rejections.into_iter().map(|(o, r)| (o, r.kind)));
            returned.push(batch.returned);
        }
        assert_eq!(store.next_offset().unwrap(), log.len() as u64);
        assert_key_index_matches(&store);
        digests.push(store.digest().unwrap());
        outcomes.push(rejected);
        all_returned.push(returned.concat());
    }
    assert!(
        digests[0].records > 5,
        "the log leaves records behind: {:?}",
        digests[0]
    );
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]));
    let kinds: std::collections::BTreeSet<_> = outcomes[0].iter().map(|(_, k)| *k).collect();
    assert!(kinds.contains(&RejectionKind::ConditionFailed));
    assert!(kinds.contains(&RejectionKind::ConditionError));
    assert!(kinds.contains(&RejectionKind::MalformedEntry));
    assert!(kinds.contains(&RejectionKind::WrongPartition));
    assert!(kinds.contains(&RejectionKind::ValueError));
    // Entries whose checks held applied; the others were rejected at the check, not later.
    let applied_checks = (0..280u64)
        .filter(|i| i % 14 == 12)
        .filter(|o| !outcomes[0].iter().any(|(r, _)| r == o))
        .count();
    assert!(
        applied_checks > 0 && applied_checks < 20,
        "{applied_checks}"
    );
    // What ops returned is the same however the log was batched, and is what they computed.
    assert!(all_returned.windows(2).all(|w| w[0] == w[1]));
    assert!(
        all_returned[0].iter().any(|(_, values)| values.len() == 5),
        "{:?}",
        all_returned[0]
    );
    // `return_existed` found the record sometimes, and sometimes not.
    let existed: std::collections::BTreeSet<&str> = all_returned[0]
        .iter()
        .filter(|(_, values)| values.len() == 5)
        .filter_map(|(_, values)| values[3].data.as_deref())
        .collect();
    assert_eq!(existed, ["0", "1"].into(), "{:?}", all_returned[0]);
    // JSON edits applied: arrays grew to three elements, counters counted and a filter with
    // functions picked, as their replies say.
    let json_replies: Vec<&str> = all_returned[0]
        .iter()
        .filter(|(_, values)| values.len() == 4)
        .flat_map(|(_, values)| values.iter().filter_map(|v| v.data.as_deref()))
        .collect();
    assert!(json_replies.contains(&"[3]"), "{json_replies:?}");
    assert!(json_replies.contains(&r#""[2,3]""#), "{json_replies:?}");
    assert!(json_replies.contains(&r#""[13]""#), "{json_replies:?}");
    let last_appended = all_returned[0]
        .iter()
        .rev()
        .find_map(|(_, values)| values.iter().find(|v| v.op == 1))
        .unwrap();
    let appended: String = serde_json::from_str(last_appended.data.as_deref().unwrap()).unwrap();
    assert!(
        !appended.is_empty() && appended.as_bytes().chunks(2).all(|c| c == b"ab"),
        "{appended}"
    );
}

#[test]
fn an_entry_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(0, 1)[0];
    let store = open_partition(dir.path(), 0);
    let rules = TestRules::new();
    let entries = vec![
        LogEntry::new(1, vec![put(pk, "a", "1", None)]).encode(),
        // Second op's condition fails: the first op must not take effect either.
        LogEntry::new(
            2,
            vec![
                put(pk, "a", "2", None),
                put(pk, "b", "2", Some("data != nil")),
            ],
        )
        .encode(),
        // Ops see the entry's earlier ops.
        LogEntry::new(
            3,
            vec![
                put(pk, "c", "3", None),
                put(pk, "c", "4", Some("data == 3")),
            ],
        )
        .encode(),
    ];
    let batch = apply_and_commit(&store, rules.rules(), &records(&entries)).unwrap();
    assert_eq!(batch.rejections.len(), 1);
    assert_eq!(batch.rejections[0].0, 1);
    assert_eq!(batch.rejections[0].1.op, Some(1));
    assert_eq!(get(&store, pk, "a").unwrap().data_json, "1");
    assert!(get(&store, pk, "b").is_none());
    assert_eq!(get(&store, pk, "c").unwrap().data_json, "4");
    let stored = store.rejection(1).unwrap().unwrap();
    let rejection: Rejection = serde_json::from_slice(&stored).unwrap();
    assert_eq!(rejection.kind, RejectionKind::ConditionFailed);
    assert!(store.rejection(0).unwrap().is_none());
}

#[test]
fn timestamps_and_conditions_use_the_stored_record() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(3, 1)[0];
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    let entries = vec![
        LogEntry::new(1000, vec![put(pk, "k", "1", None)]).encode(),
        // The condition sees the stored _updated_at (1000), not this entry's 2000.
        LogEntry::new(2000, vec![put(pk, "k", "2", Some("_updated_at == 1000"))]).encode(),
        LogEntry::new(3000, vec![put(pk, "k", "3", Some("_updated_at == 3000"))]).encode(),
        // A node with a slow clock: _updated_at must not go back in time.
        LogEntry::new(1500, vec![put(pk, "k", "4", None)]).encode(),
    ];
    let batch = apply_and_commit(&store, rules.rules(), &records(&entries)).unwrap();
    assert_eq!(
        batch.rejections.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![2]
    );
    let record = get(&store, pk, "k").unwrap();
    assert_eq!(record.data_json, "4");
    assert_eq!(record.created_at_ms, 1000);
    assert_eq!(record.updated_at_ms, 2000);
}

#[test]
fn puts_that_skip_together_write_all_or_none_and_the_entry_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(3, 1)[0];
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    // A group of `n` puts (`MSETNX`, `HSETEX FNX|FXX` inside `MULTI`).
    let group = |members: &[(&str, &str, &str)]| -> Vec<Op> {
        members
            .iter()
            .enumerate()
            .map(|(i, (sk, data, cond))| Op {
                if_skips: true,
                skips_with: if i == 0 { members.len() as u32 - 1 } else { 0 },
                ..put(pk, sk, data, Some(cond))
            })
            .collect()
    };
    let entries = [
        // a exists: the group {a, b} writes nothing, and the put after it is written; then
        // {c, c} (a field named twice) checks both before either writes: both write, the
        // second last.
        LogEntry::new(
            1000,
            [
                vec![put(pk, "a", "0", None)],
                group(&[("a", "1", "data == nil"), ("b", "2", "data == nil")]),
                vec![put(pk, "z", "9", None)],
                group(&[("c", "3", "data == nil"), ("c", "4", "data == nil")]),
                group(&[("a", "5", "data != nil"), ("c", "6", "data != nil")]),
            ]
            .concat(),
        ),
        // An `if` that cannot be evaluated still rejects the entry.
        LogEntry::new(
            1001,
            [
                vec![put(pk, "d", "7", None)],
                group(&[("e", "8", "data == nil"), ("f", "9", "data.x.y ==")]),
            ]
            .concat(),
        ),
    ];
    assert_eq!(entries[0].v, 8);
    let log: Vec<Vec<u8>> = entries.iter().map(LogEntry::encode).collect();
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    let returned: Vec<(u32, Option<&str>)> = batch.returned[0]
        .1
        .iter()
        .map(|r| (r.op, r.data.as_deref()))
        .collect();
    assert_eq!(
        returned,
        [
            (1, Some("0")),
            (2, Some("0")),
            (4, Some("1")),
            (5, Some("1")),
            (6, Some("1")),
            (7, Some("1"))
        ]
    );
    assert_eq!(
        rejection_kinds(&batch),
        [(1, RejectionKind::ConditionError)]
    );
    let data = |sk: &str| get(&store, pk, sk).map(|r| r.data_json);
    assert_eq!(data("a").as_deref(), Some("5"));
    assert_eq!(data("b"), None, "skipped with its group");
    assert_eq!(data("z").as_deref(), Some("9"));
    assert_eq!(data("c").as_deref(), Some("6"));
    for absent in ["d", "e", "f"] {
        assert_eq!(data(absent), None, "{absent}");
    }
}

#[test]
fn an_op_that_fails_alone_writes_nothing_and_the_entry_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(3, 1)[0];
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    let alone = |op: Op| Op {
        fails_alone: true,
        ..op
    };
    let too_long = serde_json::to_string(&"x".repeat(crate::engine::MAX_COMPUTED_BYTES)).unwrap();
    let entries = [
        // SET t abc, then a MULTI of INCR t (fails), APPEND t d, APPEND t <1 MiB> (too long),
        // INCRBY n 5, a JSON edit at a path of no document (fails): each failure alone.
        LogEntry::new(
            1000,
            vec![
                put(pk, "t", r#""abc""#, None),
                alone(rmw(OpKind::Incr, pk, "t", "1")),
                alone(rmw(OpKind::Append, pk, "t", r#""d""#)),
                alone(rmw(OpKind::Append, pk, "t", &too_long)),
                alone(rmw(OpKind::Incr, pk, "n", "5")),
                alone(json_edit(JsonCmd::NumIncrBy, pk, "doc", "$.a", "1")),
            ],
        ),
        // Without it (log format v8 and older) the same failure rejects the whole entry.
        LogEntry::new(
            1001,
            vec![put(pk, "u", "1", None), rmw(OpKind::Incr, pk, "t", "1")],
        ),
    ];
    assert_eq!((entries[0].v, entries[1].v), (9, 1));
    let log: Vec<Vec<u8>> = entries.iter().map(LogEntry::encode).collect();
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    let returned: Vec<(u32, Option<&str>, bool)> = batch.returned[0]
        .1
        .iter()
        .map(|r| (r.op, r.data.as_deref(), r.error.is_some()))
        .collect();
    assert_eq!(
        returned,
        [
            (1, None, true),
            (2, Some(r#""abcd""#), false),
            (3, None, true),
            // A counter a Redis client made is text, as it sent it.
            (4, Some(r#""5""#), false),
            (5, None, true),
        ]
    );
    let errors: Vec<&str> = batch.returned[0]
        .1
        .iter()
        .filter_map(|r| r.error.as_deref())
        .collect();
    assert!(errors[0].contains("not an integer"), "{errors:?}");
    assert!(errors[1].contains("would grow"), "{errors:?}");
    assert!(errors[2].contains("doesn't exist"), "{errors:?}");
    assert_eq!(rejection_kinds(&batch), [(1, RejectionKind::ValueError)]);
    let data = |sk: &str| get(&store, pk, sk).map(|r| r.data_json);
    assert_eq!(data("t").as_deref(), Some(r#""abcd""#));
    assert_eq!(data("n").as_deref(), Some(r#""5""#));
    assert_eq!(data("doc"), None);
    assert_eq!(data("u"), None, "rejected with its entry");
}

#[test]
fn a_false_skipping_condition_skips_its_op_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(3, 1)[0];
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    let skipping = |sk: &str, data: &str, cond: &str| Op {
        if_skips: true,
        ..put(pk, sk, data, Some(cond))
    };
    let entries = [
        // SET a 1 NX; SET a 2 NX; SET b 3; SET c 4 XX (a transaction): the second and fourth
        // are skipped, the rest written.
        LogEntry::new(
            1000,
            vec![
                skipping("a", "1", "data == nil"),
                skipping("a", "2", "data == nil"),
                put(pk, "b", "3", None),
                skipping("c", "4", "data != nil"),
            ],
        ),
        // An `if` that cannot be evaluated still rejects the entry: it is not a "no".
        LogEntry::new(
            1001,
            vec![put(pk, "d", "5", None), skipping("e", "6", "data.x.y ==")],
        ),
        // Without `if_skips`, a false `if` rejects the whole entry, as before.
        LogEntry::new(
            1002,
            vec![
                put(pk, "f", "7", None),
                put(pk, "a", "8", Some("data == nil")),
            ],
        ),
    ];
    let log: Vec<Vec<u8>> = entries.iter().map(LogEntry::encode).collect();
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    let returned: Vec<(u32, Option<&str>)> = batch.returned[0]
        .1
        .iter()
        .map(|r| (r.op, r.data.as_deref()))
        .collect();
    assert_eq!(batch.returned[0].0, 0);
    assert_eq!(returned, [(0, Some("1")), (1, Some("0")), (3, Some("0"))]);
    assert_eq!(
        rejection_kinds(&batch),
        [
            (1, RejectionKind::ConditionError),
            (2, RejectionKind::ConditionFailed)
        ]
    );
    let data = |sk: &str| get(&store, pk, sk).map(|r| r.data_json);
    assert_eq!(data("a").as_deref(), Some("1"));
    assert_eq!(data("b").as_deref(), Some("3"));
    for absent in ["c", "d", "e", "f"] {
        assert_eq!(data(absent), None, "{absent}");
    }
}

#[test]
fn a_deadline_op_reads_the_keys_deadline_where_it_stands_in_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let [pk, hash]: [String; 2] = pks_in(3, 2).try_into().unwrap();
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    let deadline = |pk: &str| Op {
        op: OpKind::Deadline,
        pk: pk.into(),
        ..Op::default()
    };
    let expire_key = |pk: &str, at: Option<i64>| Op {
        op: OpKind::ExpireKey,
        pk: pk.into(),
        expires_at: at,
        ..Op::default()
    };
    let field = |sk: &str, at: i64| Op {
        expires_at: Some(at),
        ..put(&hash, sk, "1", None)
    };
    let entries = [LogEntry::new(
        1000,
        vec![
            deadline(&pk),
            Op {
                expires_at: Some(50_000),
                ..put(&pk, "", r#""v""#, None)
            },
            deadline(&pk),
            expire_key(&pk, None),
            deadline(&pk),
            // A hash: the latest of its fields' deadlines.
            field("a", 70_000),
            field("b", 90_000),
            deadline(&hash),
            Op {
                op: OpKind::DeleteKey,
                pk: pk.clone(),
                ..Op::default()
            },
            deadline(&pk),
        ],
    )];
    let log: Vec<Vec<u8>> = entries.iter().map(LogEntry::encode).collect();
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
    let returned: Vec<(u32, Option<&str>)> = batch.returned[0]
        .1
        .iter()
        .map(|r| (r.op, r.data.as_deref()))
        .filter(|(op, _)| [0, 2, 4, 7, 9].contains(op))
        .collect();
    assert_eq!(
        returned,
        [
            (0, Some("-2")),
            (2, Some("50000")),
            (4, Some("-1")),
            (7, Some("90000")),
            (9, Some("-2"))
        ]
    );
}

#[test]
fn return_existed_is_decided_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let [pk, hash, gone]: [String; 3] = pks_in(3, 3).try_into().unwrap();
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    let existed = |op: Op| Op {
        return_existed: true,
        ..op
    };
    let delete_key = |pk: &str| Op {
        op: OpKind::DeleteKey,
        pk: pk.into(),
        return_existed: true,
        ..Op::default()
    };
    let entries = [
        // Later ops of an entry see earlier ones: the second put of "a" finds it.
        LogEntry::new(
            1000,
            vec![
                existed(put(&pk, "a", "1", None)),
                existed(put(&pk, "a", "2", None)),
                existed(put(&pk, "b", "3", None)),
                // Not asked: nothing returned for it.
                put(&pk, "c", "4", None),
            ],
        ),
        LogEntry::new(
            1001,
            vec![
                existed(delete(&pk, "a", None)),
                existed(delete(&pk, "a", None)),
            ],
        ),
        // A key with fields but no string record exists; deleted twice, it existed once.
        LogEntry::new(1002, vec![put(&hash, "f", "1", None)]),
        LogEntry::new(1003, vec![delete_key(&hash), delete_key(&hash)]),
        // A key whose only record's deadline the entry's time reached does not exist.
        LogEntry::new(
            1004,
            vec![Op {
                expires_at: Some(1500),
                ..put(&gone, "f", "1", None)
            }],
        ),
        LogEntry::new(2000, vec![delete_key(&gone), delete_key(&pk)]),
    ]
    .iter()
    .map(LogEntry::encode)
    .collect::<Vec<_>>();
    let batch = apply_and_commit(&store, rules.rules(), &records(&entries)).unwrap();
    assert!(batch.rejections.is_empty());
    let returned: Vec<(u64, Vec<(u32, &str)>)> = batch
        .returned
        .iter()
        .map(|(offset, values)| {
            let values = values
                .iter()
                .map(|r| (r.op, r.data.as_deref().unwrap()))
                .collect();
            (*offset, values)
        })
        .collect();
    assert_eq!(
        returned,
        vec![
            (0, vec![(0, "0"), (1, "1"), (2, "0")]),
            (1, vec![(0, "1"), (1, "0")]),
            (3, vec![(0, "1"), (1, "0")]),
            (5, vec![(0, "0"), (1, "1")]),
        ]
    );
    assert!(get(&store, &pk, "b").is_none() && get(&store, &hash, "f").is_none());
    // The store keeps them (one value for the batch) and finds each entry's.
    for (offset, values) in &batch.returned {
        assert_eq!(store.returned(*offset).unwrap().as_ref(), Some(values));
    }
    assert_eq!(store.returned(2).unwrap(), None);
    assert_eq!(store.returned(4).unwrap(), None);
}

#[test]
fn large_returned_values_are_stored_in_bounded_chunks_and_each_found() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(3, 1)[0];
    let store = open_partition(dir.path(), 3);
    let rules = TestRules::new();
    // Each put returns the 100 KiB value before it: 41 of them in one batch would be one
    // 4 MiB store value if not chunked.
    let big = |i: usize| format!("\"{}\"", i.to_string().repeat(100 << 10));
    let entries: Vec<Vec<u8>> = (0..41)
        .map(|i| {
            LogEntry::new(
                i as i64,
                vec![Op {
                    return_old: true,
                    ..put(pk, "k", &big(i % 10), None)
                }],
            )
            .encode()
        })
        .collect();
    let batch = apply_and_commit(&store, rules.rules(), &records(&entries)).unwrap();
    assert_eq!(batch.returned.len(), 41);
    let chunks = store.returned_chunk_count();
    assert!((10..=40).contains(&chunks), "{chunks} chunks");
    for (offset, values) in &batch.returned {
        assert_eq!(store.returned(*offset).unwrap().as_ref(), Some(values));
    }
    assert_eq!(
        batch.returned[0].1[0].data, None,
        "the first put found nothing"
    );
    assert_eq!(store.returned(41).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_applies_waits_and_resumes_without_reapplying() {
    let dir = tempfile::tempdir().unwrap();
    let pk = pks_in(2, 1).remove(0);
    let boot = || {
        let log = open_log(dir.path());
        let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
        let (engine, tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
        (engine, tasks, log)
    };
    let (engine, tasks, log) = boot();
    assert_eq!(engine.partitions().len(), PARTITIONS as usize);
    // A counter that only moves by exactly one: re-applying any entry would be rejected and
    // would change that entry's recorded outcome.
    let mut positions = Vec::new();
    for n in 0..20 {
        let cond = if n == 0 {
            "data == nil".to_string()
        } else {
            format!("data == {}", n - 1)
        };
        let entry = LogEntry::new(n, vec![put(&pk, "counter", &n.to_string(), Some(&cond))]);
        let offset = log.append(2, vec![append(&entry)]).await.unwrap()[0];
        positions.push(Position {
            partition: 2,
            offset,
        });
    }
    let last = *positions.last().unwrap();
    engine
        .wait_applied(last, Duration::from_secs(10))
        .await
        .unwrap();
    for &p in &positions {
        assert_eq!(engine.outcome(p).unwrap(), Some(Outcome::Applied(vec![])));
    }
    let before = engine
        .partition(2)
        .unwrap()
        .store
        .get(&pk, "counter")
        .unwrap()
        .unwrap();
    assert_eq!(before.data_json, "19");
    let err = engine
        .wait_applied(
            Position {
                partition: 2,
                offset: 1000,
            },
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout { next: 20, .. }), "{err}");

    engine.shutdown();
    tasks.iter().for_each(|t| t.abort());
    log.shutdown();
    drop((engine, log));

    let (engine, _tasks, _log) = boot();
    let runtime = engine.partition(2).unwrap();
    assert_eq!(runtime.next_offset(), 20);
    for &p in &positions {
        assert_eq!(engine.outcome(p).unwrap(), Some(Outcome::Applied(vec![])));
    }
    let after = runtime.store.get(&pk, "counter").unwrap().unwrap();
    assert_eq!(after, before);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_thread_applies_every_partition_and_a_stopped_one_drops_its_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let config = EngineConfig {
        apply_threads: 1,
        ..EngineConfig::default()
    };
    let (engine, tasks) = start_engine_with(store, log.clone(), Arc::new(Metrics::new()), config);
    // Every partition's reader asked to be woken by the log.
    for p in 0..PARTITIONS {
        assert_eq!(log.reader_wakers(p), 1, "partition {p}");
    }
    // Interleaved appends to every partition, each waited for: the one thread takes turns.
    let mut positions = Vec::new();
    for round in 0..30 {
        for p in 0..PARTITIONS {
            let pk = pks_in(p, 1).remove(0);
            let entry = LogEntry::new(round, vec![put(&pk, &round.to_string(), "1", None)]);
            let offset = log.append(p, vec![append(&entry)]).await.unwrap()[0];
            positions.push(Position {
                partition: p,
                offset,
            });
        }
    }
    for &p in &positions {
        engine
            .wait_applied(p, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(engine.outcome(p).unwrap(), Some(Outcome::Applied(vec![])));
    }
    // Stopped partitions drop their readers (and with them their wakers) before they are
    // reported stopped.
    engine.shutdown();
    for p in 0..PARTITIONS {
        assert_eq!(log.reader_wakers(p), 0, "partition {p}");
    }
    tasks.iter().for_each(|t| t.abort());
}

/// Waits (bounded) until `runtime` stops serving.
async fn until_stopped(runtime: &PartitionRuntime) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.health() == Health::Serving {
        assert!(Instant::now() < deadline, "the partition never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Partition 1, stopped, is reported unhealthy, and a write to partition 2 is still applied.
async fn partition_1_is_reported_and_others_carry_on(
    engine: &Engine,
    log: &EmbeddedLog,
    metrics: &Metrics,
) {
    assert!(
        metrics
            .render()
            .contains("firescroll_partition_healthy{partition=\"1\"} 0")
    );
    let other = pks_in(2, 1).remove(0);
    let entry = LogEntry::new(1, vec![put(&other, "ok", "1", None)]);
    let offset = log.append(2, vec![append(&entry)]).await.unwrap()[0];
    engine
        .wait_applied(
            Position {
                partition: 2,
                offset,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_stops_the_partition_visibly_instead_of_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let pk = pks_in(1, 1).remove(0);
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    // Damage on disk: a value that is not in the stored format.
    store
        .partition(1)
        .unwrap()
        .commit(
            [(
                crate::store::encode_key(&pk, "bad"),
                Some(b"garbage".to_vec()),
            )],
            &crate::store::BatchMeta::default(),
        )
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let (engine, _tasks) = start_engine(store, log.clone(), metrics.clone());
    let entry = LogEntry::new(1, vec![put(&pk, "bad", "1", None)]);
    let offset = log.append(1, vec![append(&entry)]).await.unwrap()[0];
    let runtime = engine.partition(1).unwrap();
    until_stopped(&runtime).await;
    assert!(
        matches!(runtime.health(), Health::Failed { ref reason } if reason.contains("corrupt"))
    );
    // Not applied, not skipped: the entry stays next in line for after the repair.
    assert_eq!(runtime.next_offset(), offset);
    partition_1_is_reported_and_others_carry_on(&engine, &log, &metrics).await;
    engine.shutdown();
}

/// A reader of partition 1 that panics as soon as it is read: a bug met in a turn of the
/// applier.
struct PanickingReader;

impl crate::log::PartitionReader for PanickingReader {
    fn read(&mut self, _: usize, _: Duration) -> Result<Vec<LogRecord>, crate::log::LogError> {
        panic!("a bug met while reading");
    }

    fn set_waker(&mut self, _: crate::log::Waker) {}

    fn end_at_open(&self) -> Option<u64> {
        None
    }
}

/// The embedded log, its partition 1 read by a [`PanickingReader`].
fn panics_in_partition_1(log: Arc<EmbeddedLog>) -> EmbeddedWithReaders {
    EmbeddedWithReaders {
        inner: log,
        reader: |log, partition, from| {
            if partition == 1 {
                return Ok(Box::new(PanickingReader));
            }
            log.reader(partition, from)
        },
        end_beyond: 0,
    }
}

/// The embedded log with readers of its own choosing (`reader`), and an end `end_beyond`
/// offsets past the embedded log's.
struct EmbeddedWithReaders {
    inner: Arc<EmbeddedLog>,
    reader: OpenReader,
    end_beyond: u64,
}

/// How [`EmbeddedWithReaders`] opens a reader of a partition from an offset.
type OpenReader = fn(
    &EmbeddedLog,
    u32,
    u64,
) -> Result<Box<dyn crate::log::PartitionReader>, crate::log::LogError>;

impl crate::log::MutationLog for EmbeddedWithReaders {
    fn partition_count(&self) -> u32 {
        self.inner.partition_count()
    }

    fn append(&self, partition: u32, entries: Vec<crate::log::Append>) -> crate::log::AppendFuture {
        self.inner.append(partition, entries)
    }

    fn ownership(&self) -> tokio::sync::watch::Receiver<crate::log::Ownership> {
        self.inner.ownership()
    }

    fn reader(
        &self,
        partition: u32,
        from: u64,
    ) -> Result<Box<dyn crate::log::PartitionReader>, crate::log::LogError> {
        (self.reader)(&self.inner, partition, from)
    }

    fn bounds(&self, partition: u32) -> Result<(u64, u64), crate::log::LogError> {
        self.inner
            .bounds(partition)
            .map(|(start, end)| (start, end + self.end_beyond))
    }

    fn release(&self, partition: u32, offset: u64) {
        self.inner.release(partition, offset)
    }

    fn shutdown(&self) {
        self.inner.shutdown()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_turn_stops_its_partition_visibly_and_the_pool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let plugins = test_plugins(&store, &log, &metrics);
    // One thread: had the panic taken it, no other partition would be applied again.
    let (engine, _tasks) = Engine::start(
        store,
        Arc::new(panics_in_partition_1(log.clone())),
        Arc::new(Conditions::new()),
        plugins,
        metrics.clone(),
        EngineConfig {
            apply_threads: 1,
            ..EngineConfig::default()
        },
    );
    let runtime = engine.partition(1).unwrap();
    until_stopped(&runtime).await;
    assert!(
        matches!(runtime.health(), Health::Failed { ref reason }
            if reason.contains("panicked: a bug met while reading (a bug in FireScroll: please report it with this message;")
                && reason.contains("reading the log at offset 0")),
        "{:?}",
        runtime.health()
    );
    assert_eq!(
        runtime.stalled(Duration::ZERO),
        None,
        "not left marked as applying"
    );
    partition_1_is_reported_and_others_carry_on(&engine, &log, &metrics).await;
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_a_newer_format_stops_its_partition_before_it_until_rejected_by_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let pk = pks_in(1, 1).remove(0);
    let boot = |reject_entries_at: &[Position]| {
        let log = open_log(dir.path());
        let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
        let metrics = Arc::new(Metrics::new());
        let config = EngineConfig {
            reject_entries_at: Arc::new(reject_entries_at.iter().copied().collect()),
            ..EngineConfig::default()
        };
        let (engine, tasks) = start_engine_with(store, log.clone(), metrics.clone(), config);
        (engine, tasks, log, metrics)
    };
    let (engine, tasks, log, metrics) = boot(&[]);
    // Before it, in one append (one batch): applied. The newer entry, as a newer node would
    // write it (an op kind this build does not know), and a v1 entry after it: neither applied.
    let newer_version = crate::model::ENTRY_VERSION + 1;
    let newer = format!(
        r#"{{"v":{newer_version},"ts_ms":2,"ops":[{{"op":"rename","pk":"{pk}","sk":"","to":"elsewhere"}}]}}"#
    );
    let offsets = log
        .append(
            1,
            vec![
                append(&LogEntry::new(1, vec![put(&pk, "before", "1", None)])),
                crate::log::Append {
                    key: pk.clone(),
                    payload: newer.into_bytes(),
                },
                append(&LogEntry::new(3, vec![put(&pk, "after", "3", None)])),
            ],
        )
        .await
        .unwrap();
    let runtime = engine.partition(1).unwrap();
    until_stopped(&runtime).await;
    let stopped = Health::NewerFormat {
        offset: offsets[1],
        version: u64::from(newer_version),
    };
    assert_eq!(runtime.health(), stopped);
    let reason = stopped.reason().unwrap();
    assert!(
        reason.contains(&format!("v{newer_version}")) && reason.contains("release"),
        "says what to do: {reason}"
    );
    assert_eq!(runtime.next_offset(), offsets[1], "stopped before it");
    assert_eq!(get(&runtime.store, &pk, "before").unwrap().data_json, "1");
    assert!(get(&runtime.store, &pk, "after").is_none());
    let outcome = engine.outcome(Position {
        partition: 1,
        offset: offsets[1],
    });
    assert!(
        matches!(outcome, Ok(None)),
        "no outcome (not rejected): {outcome:?}"
    );
    partition_1_is_reported_and_others_carry_on(&engine, &log, &metrics).await;
    engine.shutdown();
    tasks.iter().for_each(|t| t.abort());
    log.shutdown();
    drop((engine, log, runtime));

    // A restart of the same build stops at the same entry again: it was never skipped.
    let (engine, tasks, log, _metrics) = boot(&[]);
    let runtime = engine.partition(1).unwrap();
    until_stopped(&runtime).await;
    assert_eq!(runtime.health(), stopped);
    assert_eq!(runtime.next_offset(), offsets[1]);
    assert!(get(&runtime.store, &pk, "after").is_none());
    engine.shutdown();
    tasks.iter().for_each(|t| t.abort());
    log.shutdown();
    drop((engine, log, runtime));

    // The operator's way past an entry no release applies: rejected unread, the rest applied.
    let newer_at = Position {
        partition: 1,
        offset: offsets[1],
    };
    let (engine, _tasks, _log, _metrics) = boot(&[newer_at]);
    let last = Position {
        partition: 1,
        offset: offsets[2],
    };
    engine
        .wait_applied(last, Duration::from_secs(10))
        .await
        .unwrap();
    let runtime = engine.partition(1).unwrap();
    assert_eq!(runtime.health(), Health::Serving);
    match engine.outcome(newer_at).unwrap() {
        Some(Outcome::Rejected(rejection)) => {
            assert_eq!(rejection.kind, RejectionKind::MalformedEntry);
            assert!(
                rejection.message.contains("REJECT_ENTRIES_AT"),
                "{}",
                rejection.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        engine.outcome(last).unwrap(),
        Some(Outcome::Applied(vec![]))
    );
    assert_eq!(get(&runtime.store, &pk, "after").unwrap().data_json, "3");
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_log_is_never_served_silently() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log_in_segments_of(dir.path(), 64);
    let pk = pks_in(3, 1).remove(0);
    for i in 0..40 {
        let entry = LogEntry::new(i, vec![put(&pk, &format!("s{i}"), "1", None)]);
        log.append(3, vec![append(&entry)]).await.unwrap();
    }
    // Retention removed entries this (empty) replica never applied.
    log.release(3, 30);
    let start = log.bounds(3).unwrap().0;
    assert!(start > 0);
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (engine, _tasks) = start_engine(store, log.clone(), metrics.clone());
    let runtime = engine.partition(3).unwrap();
    assert_eq!(
        runtime.health(),
        Health::Gap {
            next_offset: 0,
            log_start: start,
            snapshots: None,
        }
    );
    assert!(!runtime.readable());
    assert_eq!(
        runtime.next_offset(),
        0,
        "nothing may be applied past the gap"
    );
    assert!(
        metrics
            .render()
            .contains("firescroll_partition_healthy{partition=\"3\"} 0")
    );
    // The other partitions are fine.
    assert_eq!(engine.partition(0).unwrap().health(), Health::Serving);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_index_always_matches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let (engine, _tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
    let entries: Vec<crate::log::Append> = mixed_log()
        .into_iter()
        .map(|payload| crate::log::Append {
            key: String::new(),
            payload,
        })
        .collect();
    let mut last = 0;
    for chunk in entries.chunks(13) {
        last = *log.append(1, chunk.to_vec()).await.unwrap().last().unwrap();
    }
    engine
        .wait_applied(
            Position {
                partition: 1,
                offset: last,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let runtime = engine.partition(1).unwrap();
    assert!(runtime.index.enabled());
    let mut count = 0;
    for entry in runtime.store.entries() {
        let (key, value) = entry.unwrap();
        assert_eq!(runtime.index.get(&key), Lookup::Found(value));
        count += 1;
    }
    assert!(count > 5);
    assert_eq!(
        runtime.index.len(),
        count,
        "the index holds nothing the store does not"
    );
    // Keys deleted by the log are absent in the index too.
    assert_eq!(
        runtime
            .index
            .get(&crate::store::encode_key("no-such-pk", "")),
        Lookup::Absent
    );
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_outcomes_are_pruned_and_reported_expired_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let plugins = test_plugins(&store, &log, &metrics);
    let (engine, _tasks) = Engine::start(
        store,
        log.clone(),
        Arc::new(Conditions::new()),
        plugins,
        metrics,
        EngineConfig {
            outcome_retention: 5,
            ..EngineConfig::default()
        },
    );
    let pk = pks_in(0, 1).remove(0);
    // Every entry is rejected: its condition is never true.
    let mut last = 0;
    for i in 0..20 {
        let entry = LogEntry::new(i, vec![put(&pk, "k", "1", Some("data == 42"))]);
        last = log.append(0, vec![append(&entry)]).await.unwrap()[0];
    }
    let end = Position {
        partition: 0,
        offset: last,
    };
    engine
        .wait_applied(end, Duration::from_secs(10))
        .await
        .unwrap();
    engine.checkpoint();
    let runtime = engine.partition(0).unwrap();
    // Offsets 0..15 are out of the window: pruned from the store, reported as expired.
    assert_eq!(runtime.store.rejection(3).unwrap(), None);
    assert_eq!(
        engine
            .outcome(Position {
                partition: 0,
                offset: 3
            })
            .unwrap(),
        Some(Outcome::Expired)
    );
    // The last five keep their rejection.
    assert!(runtime.store.rejection(17).unwrap().is_some());
    assert!(matches!(
        engine.outcome(end).unwrap(),
        Some(Outcome::Rejected(_))
    ));
    engine.shutdown();
}

#[test]
fn an_entry_waits_for_its_plugin_instead_of_rejecting() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(0, 1)[0];
    let store = open_partition(dir.path(), 0);
    let rules = TestRules::new();
    // A condition that is true when the input's first byte is `{` (it always is).
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32)
                local.get 0 i32.load8_u i32.const 123 i32.eq))"#,
    )
    .unwrap();
    let pinned = crate::plugins::Digest::of(&module);
    let digest = pinned.to_string();
    let with_plugin = Op {
        if_plugin: Some(PluginRef::Digest(pinned)),
        ..put(pk, "p", "2", None)
    };
    let entries = vec![
        LogEntry::new(1, vec![put(pk, "a", "1", None)]).encode(),
        LogEntry::new(2, vec![with_plugin]).encode(),
        LogEntry::new(3, vec![put(pk, "b", "3", None)]).encode(),
    ];
    let log = records(&entries);
    let batch = apply_and_commit(&store, rules.rules(), &log).unwrap();
    assert_eq!(batch.waiting_for, Some(pinned));
    assert_eq!(
        (batch.entries, batch.next_offset),
        (1, 1),
        "stops before the entry"
    );
    assert!(batch.rejections.is_empty(), "never rejected for timing");
    assert_eq!(store.next_offset().unwrap(), 1);
    assert!(get(&store, pk, "b").is_none());

    // The module arrives (as the plugins topic would deliver it): the entry applies.
    rules.plugins.store().put_module(&digest, &module).unwrap();
    let batch = apply_and_commit(&store, rules.rules(), &log[1..]).unwrap();
    assert_eq!(batch.waiting_for, None);
    assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
    assert_eq!(store.next_offset().unwrap(), 3);
    assert_eq!(get(&store, pk, "p").unwrap().data_json, "2");
    assert_eq!(get(&store, pk, "b").unwrap().data_json, "3");

    // A digest that is not a digest is a deterministic rejection, not a wait.
    let bogus = Op {
        if_plugin: Some(PluginRef::Name("xyz".into())),
        ..put(pk, "q", "1", None)
    };
    let batch = apply_and_commit(
        &store,
        rules.rules(),
        &[LogRecord {
            offset: 3,
            payload: LogEntry::new(4, vec![bogus]).encode(),
        }],
    )
    .unwrap();
    assert_eq!(batch.rejections[0].1.kind, RejectionKind::PluginError);
}

#[test]
fn the_plugin_calls_of_an_entry_share_one_supply_of_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(0, 1)[0];
    let store = open_partition(dir.path(), 0);
    let rules = TestRules::new();
    // About 30 M fuel per call: under one call's 50 M, so each call alone succeeds.
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) (local $n i32)
                i32.const 6000000 local.set $n
                (loop $l local.get $n i32.const 1 i32.sub local.tee $n br_if $l)
                i32.const 1))"#,
    )
    .unwrap();
    let pinned = crate::plugins::Digest::of(&module);
    rules
        .plugins
        .store()
        .put_module(&pinned.to_string(), &module)
        .unwrap();
    let ops = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|i| Op {
                if_plugin: Some(PluginRef::Digest(pinned)),
                ..put(pk, &format!("s{i}"), "1", None)
            })
            .collect()
    };
    let entries = vec![
        LogEntry::new(1, ops(5)).encode(),
        LogEntry::new(2, ops(40)).encode(),
    ];
    let batch = apply_and_commit(&store, rules.rules(), &records(&entries)).unwrap();
    assert_eq!(batch.entries, 2);
    assert_eq!(batch.rejections.len(), 1, "{:?}", batch.rejections);
    let (offset, rejection) = &batch.rejections[0];
    assert_eq!(*offset, 1);
    assert_eq!(rejection.kind, RejectionKind::PluginError);
    assert!(
        rejection.message.contains("used up their fuel together"),
        "{}",
        rejection.message
    );
    assert!(get(&store, pk, "s4").is_some() && get(&store, pk, "s5").is_none());
}

/// Fuzzing the apply path: arbitrary conditions (built from expr's syntax, hostile pieces
/// included) over arbitrary stored data. Whatever an entry holds, applying it never fails, never
/// panics, and two replicas come to the same records and the same outcomes.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            "[a-z\"\\\\ ]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 200, 20, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..20).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[abxy]{1,2}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Expressions over the subject, the operators, and the functions that loop, allocate or
    /// sort: combined at random, many are nonsense, some are expensive, none may hurt apply.
    fn condition() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("data".to_string()),
            Just("data.a".to_string()),
            Just("data.a.b".to_string()),
            Just("data[0]".to_string()),
            Just("data?.x?.y".to_string()),
            Just("pk".to_string()),
            Just("_updated_at".to_string()),
            Just("nil".to_string()),
            Just("true".to_string()),
            (-5i64..3000).prop_map(|n| n.to_string()),
            Just("\"ab\"".to_string()),
            Just("[1, 2, 3]".to_string()),
            Just("1..2000".to_string()),
            Just("{a: 1}".to_string()),
        ];
        atom.prop_recursive(5, 64, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop::sample::select(vec![
                        "==",
                        "!=",
                        "<",
                        ">",
                        "+",
                        "-",
                        "*",
                        "/",
                        "%",
                        "&&",
                        "||",
                        "in",
                        "contains",
                        "startsWith",
                        "??",
                        "..",
                    ]),
                    inner.clone()
                )
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                (
                    prop::sample::select(vec![
                        "len", "all", "any", "map", "filter", "count", "sort", "uniq", "keys",
                        "string", "int", "upper", "first", "flatten", "reverse",
                    ]),
                    inner.clone()
                )
                    .prop_map(|(f, a)| match f {
                        "all" | "any" | "map" | "filter" | "count" => {
                            format!("{f}({a}, {{# == # && all({a}, {{true}})}})")
                        }
                        _ => format!("{f}({a})"),
                    }),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| format!("repeat(string({a}), len(string({b})) * 1000)")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(a, b, c)| format!("({a} ? {b} : {c})")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn any_condition_over_any_data_is_an_outcome_on_every_replica(
            data in json_value(),
            conds in prop::collection::vec(condition(), 1..4),
        ) {
            let pk = &pks_in(1, 1)[0];
            let data = data.to_string();
            let mut log = vec![LogEntry::new(1, vec![put(pk, "s", &data, None)]).encode()];
            for (i, cond) in conds.iter().enumerate() {
                log.push(
                    LogEntry::new(2 + i as i64, vec![put(pk, "s", "{\"a\":1}", Some(cond))]).encode(),
                );
            }
            let log = records(&log);
            let rules = TestRules::new();
            let mut replicas = Vec::new();
            for _ in 0..2 {
                let dir = tempfile::tempdir().unwrap();
                let store = open_partition(dir.path(), 1);
                let batch = apply_and_commit(&store, rules.rules(), &log).unwrap();
                prop_assert_eq!(batch.entries, log.len());
                let rejected: Vec<_> =
                    batch.rejections.into_iter().map(|(o, r)| (o, r.kind, r.message)).collect();
                replicas.push((store.digest().unwrap(), rejected));
            }
            prop_assert_eq!(&replicas[0], &replicas[1]);
        }
    }
}

/// A batch's rejections as (offset, kind, message).
fn rejections_of(
    rejections: Vec<(u64, crate::model::Rejection)>,
) -> Vec<(u64, RejectionKind, String)> {
    rejections
        .into_iter()
        .map(|(o, r)| (o, r.kind, r.message))
        .collect()
}

#[test]
fn whole_key_and_computed_ops_are_bounded_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(0, 1)[0];
    let store = open_partition(dir.path(), 0);
    let rules = TestRules::new();
    // A big key: 3,500 fields of 20 KiB (about 70 MiB).
    let big = format!("\"{}\"", "x".repeat(20 << 10));
    let fill: Vec<Op> = (0..3500)
        .map(|i| put(pk, &format!("f{i:05}"), &big, None))
        .collect();
    let mut log: Vec<Vec<u8>> = fill
        .chunks(100)
        .map(|ops| LogEntry::new(1, ops.to_vec()).encode())
        .collect();
    // Checking its version would read ~70 MiB: rejected, deterministically, before the work
    // is done.
    let nothing = crate::model::pk_version(std::iter::empty());
    log.push(LogEntry::new(2, vec![check(pk, &nothing)]).encode());
    log.push(
        LogEntry::new(
            3,
            vec![
                Op {
                    op: OpKind::DeleteKey,
                    pk: pk.clone(),
                    ..Op::default()
                },
                Op {
                    op: OpKind::DeleteKey,
                    pk: pk.clone(),
                    ..Op::default()
                },
                check(pk, &nothing),
            ],
        )
        .encode(),
    );
    // APPEND cannot grow a value past MAX_COMPUTED_BYTES.
    let chunk = format!("\"{}\"", "y".repeat(600 << 10));
    log.push(LogEntry::new(4, vec![rmw(OpKind::Append, pk, "a", &chunk)]).encode());
    log.push(LogEntry::new(5, vec![rmw(OpKind::Append, pk, "a", &chunk)]).encode());
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    let rejected = rejections_of(batch.rejections);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, 35);
    assert_eq!(rejected[0].1, RejectionKind::ValueError);
    assert!(rejected[0].2.contains("64 MiB"), "{}", rejected[0].2);
    // Deleting it reads only its keys: it applies; the rest of that entry sees an empty key.
    assert_eq!(rejected[1].0, 38);
    assert!(rejected[1].2.contains("at most"), "{}", rejected[1].2);
    assert!(
        get(&store, pk, "f00000").is_none(),
        "the delete_key entry applied"
    );
    assert_eq!(
        get(&store, pk, "a").unwrap().data_json.len(),
        (600 << 10) + 2
    );
}

#[test]
fn increments_of_a_huge_float_are_charged_for_their_digits() {
    let dir = tempfile::tempdir().unwrap();
    let pk = &pks_in(0, 1)[0];
    let store = open_partition(dir.path(), 0);
    let rules = TestRules::new();
    // A 4,001-digit number (Redis takes up to 5 KiB): each increment of it reads and writes
    // every digit, ~0.35 ms. Charged 4,003^2 / 64 bytes of the entry's 64 MiB: 268 fit.
    let huge = format!("\"1{}\"", "0".repeat(4000));
    let increments = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|_| rmw(OpKind::IncrLongDouble, pk, "", r#""1""#))
            .collect()
    };
    let log = [
        LogEntry::new(1, vec![put(pk, "", &huge, None)]).encode(),
        LogEntry::new(2, increments(300)).encode(),
        LogEntry::new(3, increments(250)).encode(),
    ];
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    let rejected = rejections_of(batch.rejections);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        (rejected[0].0, rejected[0].1),
        (1, RejectionKind::ValueError)
    );
    assert!(rejected[0].2.contains("64 MiB"), "{}", rejected[0].2);
    // 1e4000 + 1 is 1e4000 in 64 significant bits: it reads back as the nearest long double.
    let nearest = crate::engine::LongDouble::parse(&huge[1..huge.len() - 1]).unwrap();
    let stored = get(&store, pk, "").unwrap();
    assert_eq!(stored.data_json, format!("\"{nearest}\""));
    assert!(stored.data_json.starts_with("\"99999999999999999999654"));
    let outcome_of = |offset| batch.returned.iter().find(|(o, _)| *o == offset);
    assert!(
        outcome_of(1).is_none(),
        "the refused entry returned nothing"
    );
    assert_eq!(
        outcome_of(2).unwrap().1.len(),
        250,
        "every increment of the next did"
    );
}

#[test]
fn read_budgets_decide_alike_however_entries_are_batched() {
    // A key of ~61 MiB (under the 64 MiB an entry may read), written, then written again, then
    // checked: replicas that batched the rewrite with the check or apart must decide alike (a
    // record stored and rewritten in the batch was once charged twice: ~122 MiB, rejected).
    let pk = &pks_in(0, 1)[0];
    let big = format!("\"{}\"", "x".repeat(20 << 10));
    let fill: Vec<Op> = (0..3100)
        .map(|i| put(pk, &format!("f{i:05}"), &big, None))
        .collect();
    let mut log: Vec<Vec<u8>> = Vec::new();
    for ts in [1, 2] {
        log.extend(
            fill.chunks(100)
                .map(|ops| LogEntry::new(ts, ops.to_vec()).encode()),
        );
    }
    let nothing = crate::model::pk_version(std::iter::empty());
    log.push(LogEntry::new(3, vec![check(pk, &nothing)]).encode());
    let log = records(&log);
    let rules = TestRules::new();
    let mut verdicts = Vec::new();
    for split in [log.len(), 31] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_partition(dir.path(), 0);
        let mut rejected = Vec::new();
        for part in [&log[..split], &log[split..]] {
            if part.is_empty() {
                continue;
            }
            let batch = apply_and_commit(&store, rules.rules(), part).unwrap();
            rejected.extend(batch.rejections.into_iter().map(|(o, r)| (o, r.kind)));
        }
        verdicts.push(rejected);
    }
    assert_eq!(
        verdicts[0],
        vec![(62, RejectionKind::ConditionFailed)],
        "read whole, and the version differs"
    );
    assert_eq!(verdicts[0], verdicts[1], "batched apart");
}

mod expiry;
mod foreign;
mod lineage;
mod new_disk;

/// Reconciles `engine` with an assignment of `owned` and `unsettled` partitions, as a log's
/// rebalance would.
async fn assign(engine: &Engine, owned: &[u32], unsettled: &[u32], rebalances: u64) {
    let assignment = Arc::new(crate::log::Assignment {
        owned: owned.iter().copied().collect(),
        unsettled: unsettled.iter().copied().collect(),
        rebalances,
    });
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || engine.reconcile(&assignment))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_taken_without_a_settled_owner_answers_reads_until_it_is_back_or_settled() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let (engine, _tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
    let pk = pks_in(1, 1).remove(0);
    let write = |n: i64| {
        let entry = LogEntry::new(n, vec![put(&pk, "s", &n.to_string(), None)]);
        let log = log.clone();
        async move {
            let offset = log.append(1, vec![append(&entry)]).await.unwrap()[0];
            Position {
                partition: 1,
                offset,
            }
        }
    };
    let first = write(1).await;
    engine
        .wait_applied(first, Duration::from_secs(10))
        .await
        .unwrap();

    // Taken while the group rebalances: not applied, its last state kept for reads.
    assign(&engine, &[0, 2, 3], &[1], 0).await;
    assert!(engine.partition(1).is_none());
    let standby = engine.standby(1).expect("on standby");
    assert_eq!(standby.health(), Health::Released);
    assert!(!standby.serving());
    assert!(engine.holds(1) && !engine.holds(4));
    assert_eq!(standby.store.get(&pk, "s").unwrap().unwrap().data_json, "1");
    assert_eq!(
        engine.outcome(first).unwrap(),
        Some(Outcome::Applied(vec![]))
    );
    engine
        .wait_applied(first, Duration::from_millis(1))
        .await
        .expect("what it applied before is applied");
    // A write meanwhile is durable but not applied here until the partition is back: waited
    // for, not refused.
    let second = write(2).await;
    let err = engine
        .wait_applied(second, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout { next: 1, .. }), "{err}");
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.wait_applied(second, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assign(&engine, &[0, 1, 2, 3], &[], 1).await;
    waiting
        .await
        .unwrap()
        .expect("applied once the partition is back");
    assert!(
        engine.standby(1).is_none(),
        "the open partition answers now"
    );
    let runtime = engine.partition(1).unwrap();
    assert!(runtime.serving());
    assert_eq!(runtime.store.get(&pk, "s").unwrap().unwrap().data_json, "2");

    // Taken again, then a rebalance does not give it back (and, without gossip, nothing tells
    // when another member serves it): no longer answered here at all.
    assign(&engine, &[0, 2, 3], &[1], 1).await;
    assert!(engine.standby(1).is_some());
    let third = write(3).await;
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.wait_applied(third, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assign(&engine, &[0, 2, 3], &[1], 2).await;
    assert!(engine.standby(1).is_none() && !engine.holds(1));
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, WaitError::NotOwned(1)), "{err}");
    assert!(matches!(
        engine.outcome(first),
        Err(OutcomeError::NotOwned(1))
    ));
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_given_back_after_standby_keeps_its_change_history() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let (engine, _tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
    let pk = pks_in(1, 1).remove(0);
    let mut last = None;
    for n in 0..3 {
        let entry = LogEntry::new(n, vec![put(&pk, "s", &n.to_string(), None)]);
        let offset = log.append(1, vec![append(&entry)]).await.unwrap()[0];
        last = Some(Position {
            partition: 1,
            offset,
        });
    }
    let last = last.unwrap();
    engine
        .wait_applied(last, Duration::from_secs(10))
        .await
        .unwrap();
    let before = engine.partition(1).unwrap().change_bounds();
    assert_eq!(before, (0, 3), "every change is in the history");

    // The broker went away (every partition taken), then gave it back where it was.
    assign(&engine, &[0, 2, 3], &[1], 0).await;
    assert!(engine.standby(1).is_some());
    assign(&engine, &[0, 1, 2, 3], &[], 1).await;
    let back = engine.partition(1).expect("owned again");
    assert_eq!(
        back.change_bounds(),
        before,
        "the history came back with it"
    );
    let from_start = back
        .subscribe_changes(Some(0))
        .expect("a watch resumes from before");
    assert_eq!(from_start.backlog.len(), 3);

    // Taken again, and its standby copy ended (another replica group serves it first): the
    // history waits for it all the same.
    assign(&engine, &[0, 2, 3], &[1], 1).await;
    engine.end_standby(1);
    assert!(!engine.holds(1));
    assign(&engine, &[0, 1, 2, 3], &[], 2).await;
    assert_eq!(engine.partition(1).unwrap().change_bounds(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_gossip_a_standby_partition_lasts_until_another_member_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let config = EngineConfig {
        standby_until_served_elsewhere: true,
        ..EngineConfig::default()
    };
    let (engine, _tasks) = start_engine_with(store, log, Arc::new(Metrics::new()), config);
    assign(&engine, &[0, 2, 3], &[1], 0).await;
    // The cooperative protocol's first round gives nothing back; the partition may reach its
    // next owner only in the next round, so the standby copy stays.
    assign(&engine, &[0, 2, 3], &[1], 1).await;
    assign(&engine, &[0, 2, 3], &[1], 2).await;
    assert!(engine.standby(1).is_some());
    engine.end_standby(1);
    assert!(engine.standby(1).is_none() && !engine.holds(1));
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_opened_behind_the_log_catches_up_to_the_end_it_had_then() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let pk = pks_in(1, 1).remove(0);
    // The log holds three entries the store never applied; the second waits for a plugin
    // module that has not arrived, so the partition stays behind until it does.
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    let pinned = crate::plugins::Digest::of(&module);
    let gated = Op {
        if_plugin: Some(PluginRef::Digest(pinned)),
        ..put(&pk, "b", "2", None)
    };
    for entry in [
        LogEntry::new(1, vec![put(&pk, "a", "1", None)]),
        LogEntry::new(2, vec![gated]),
        LogEntry::new(3, vec![put(&pk, "c", "3", None)]),
    ] {
        log.append(1, vec![append(&entry)]).await.unwrap();
    }
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let plugins = test_plugins(&store, &log, &metrics);
    let modules = plugins.store().clone();
    let (engine, _tasks) = Engine::start(
        store,
        log.clone(),
        Arc::new(Conditions::new()),
        plugins,
        metrics,
        EngineConfig::default(),
    );
    let runtime = engine.partition(1).expect("opened");
    engine
        .wait_applied(
            Position {
                partition: 1,
                offset: 0,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(runtime.next_offset(), 1, "held at the gated entry");
    // Reported as a stall (`/ready`, `/debug/partitions`, the metric) naming the module and
    // the entry, so an operator can tell a module that never comes from a slow one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stall = loop {
        if let Some(stall) = runtime.stalled(Duration::ZERO) {
            break stall;
        }
        assert!(Instant::now() < deadline, "the wait is never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((stall.offset, stall.plugin), (1, Some(pinned)));
    assert_eq!(
        runtime.stalled(Duration::from_secs(60)),
        None,
        "not for long yet"
    );
    assert_eq!(
        runtime.catching_up(),
        Some(3),
        "the log's end when it opened"
    );
    assert!(!runtime.current());
    // A partition whose store is level with the log has nothing to catch up on.
    let level = engine.partition(0).unwrap();
    assert_eq!((level.catching_up(), level.current()), (None, true));
    // Taken from this node before it caught up (a rebalance): its standby copy is still
    // behind (reads must not take it), and given back, it still catches up.
    assign(&engine, &[0, 2, 3], &[1], 1).await;
    assert_eq!(
        engine.standby(1).expect("on standby").catching_up(),
        Some(3)
    );
    assign(&engine, &[0, 1, 2, 3], &[], 2).await;
    let runtime = engine.partition(1).expect("given back");
    assert_eq!(runtime.catching_up(), Some(3));

    modules.put_module(&pinned.to_string(), &module).unwrap();
    engine
        .wait_applied(
            Position {
                partition: 1,
                offset: 2,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(runtime.catching_up(), None);
    assert!(runtime.current());
    assert_eq!(runtime.stalled(Duration::ZERO), None, "the wait ended");
    // Entries written after the open are ordinary lag: reads do not wait for them.
    let entry = LogEntry::new(4, vec![put(&pk, "d", "4", None)]);
    log.append(1, vec![append(&entry)]).await.unwrap();
    assert_eq!(runtime.catching_up(), None);
    engine.shutdown();
}

/// The embedded log with one offset past its end that holds no entry, as a Kafka transaction's
/// commit marker does: the end says one more, and its readers pass over it once they have
/// delivered everything.
fn marker_at_the_end(log: Arc<EmbeddedLog>) -> EmbeddedWithReaders {
    EmbeddedWithReaders {
        inner: log,
        reader: |log, partition, from| {
            let inner = log.reader(partition, from)?;
            let marker = inner.end_at_open().expect("the embedded log knows its end");
            Ok(Box::new(PassesTheMarker {
                inner,
                marker,
                next: from,
            }))
        },
        end_beyond: 1,
    }
}

/// A reader of [`marker_at_the_end`].
struct PassesTheMarker {
    inner: Box<dyn crate::log::PartitionReader>,
    /// The marker's offset: the inner log's end when the reader opened.
    marker: u64,
    next: u64,
}

impl crate::log::PartitionReader for PassesTheMarker {
    fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, crate::log::LogError> {
        let records = self.inner.read(max, wait)?;
        if let Some(last) = records.last() {
            self.next = last.offset + 1;
        }
        Ok(records)
    }

    fn set_waker(&mut self, waker: crate::log::Waker) {
        self.inner.set_waker(waker)
    }

    fn end_at_open(&self) -> Option<u64> {
        Some(self.marker + 1)
    }

    fn position(&self) -> Option<u64> {
        Some(if self.next >= self.marker {
            self.marker + 1
        } else {
            self.next
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_log_ends_in_a_transaction_marker_catches_up_when_its_reader_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = open_log(dir.path());
    let pk = pks_in(1, 1).remove(0);
    for (ts, sk) in [(1, "a"), (2, "b")] {
        let entry = LogEntry::new(ts, vec![put(&pk, sk, "1", None)]);
        embedded.append(1, vec![append(&entry)]).await.unwrap();
    }
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let plugins = test_plugins(&store, &embedded, &metrics);
    let (engine, _tasks) = Engine::start(
        store,
        Arc::new(marker_at_the_end(embedded.clone())),
        Arc::new(Conditions::new()),
        plugins,
        metrics.clone(),
        EngineConfig::default(),
    );
    let runtime = engine.partition(1).expect("opened");
    // Offsets 0 and 1 are entries, 2 the marker: the applied offset stops at 2, the end is 3.
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.catching_up().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runtime.next_offset(), 2, "both entries applied");
    assert_eq!(
        runtime.catching_up(),
        None,
        "the reader passed the marker with nothing left to apply: reads must not wait for an \
         entry that will never come"
    );
    assert!(runtime.current());
    // Nor is the marker lag: the log's end (3) less where the reader got (3).
    engine.checkpoint();
    assert_eq!(runtime.log_position(), 3);
    assert_eq!(metrics.apply_lag.with_label_values(&["1"]).get(), 0);
    engine.shutdown();
}
