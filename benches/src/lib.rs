//! Shared fixtures for FireScroll's benchmarks.

use firescroll::log::LogRecord;
use firescroll::model::{JsonCmd, LogEntry, Op, OpKind, partition_of};
use firescroll::store::{PartitionStore, Store, encode_key, encode_value};
use serde_json::value::RawValue;

/// Partitions in benchmark stores.
pub const PARTITIONS: u32 = 4;

/// The `i`-th benchmark pk that lives in `partition` (16 bytes, like a typical config key).
pub fn pk_in(partition: u32, i: u64) -> String {
    (i * 64..)
        .map(|n| format!("key-{n:012}"))
        .find(|pk| partition_of(pk, PARTITIONS) == partition)
        .expect("some key lands in every partition")
}

/// A 100-byte JSON value.
pub fn value_100b(i: u64) -> String {
    let v = format!(r#"{{"id":{i},"enabled":true,"version":3,"pad":""#);
    format!("{v}{}\"}}", "x".repeat(100 - v.len() - 2))
}

/// A store in `dir` whose partition 0 holds `n` records (keys `pk_in(0, 0..n)`, sk `""`).
pub fn loaded_partition(dir: &std::path::Path, n: u64) -> (Vec<String>, PartitionStore) {
    let store = Store::open(dir, PARTITIONS).expect("open store");
    let partition = store.partition(0).expect("open partition");
    let keys: Vec<String> = (0..n).map(|i| pk_in(0, i)).collect();
    for (chunk_index, chunk) in keys.chunks(10_000).enumerate() {
        let writes = chunk.iter().enumerate().map(|(j, pk)| {
            let i = (chunk_index * 10_000 + j) as u64;
            (
                encode_key(pk, ""),
                Some(encode_value(1, 1, None, false, value_100b(i).as_bytes())),
            )
        });
        partition
            .commit(writes, &firescroll::store::BatchMeta::default())
            .expect("load");
    }
    (keys, partition)
}

/// `n` log records, each a single-op put entry in partition 0 (distinct keys), optionally with
/// an `if`.
pub fn single_op_entries(n: u64, cond: Option<&str>) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            let op = Op {
                op: OpKind::Put,
                pk: pk_in(0, i),
                sk: String::new(),
                data: Some(RawValue::from_string(value_100b(i)).expect("valid JSON")),
                cond: cond.map(str::to_string),
                ..Op::default()
            };
            LogRecord {
                offset: i,
                payload: LogEntry::new(1_732_590_000_000, vec![op]).encode(),
            }
        })
        .collect()
}

/// `n` log records, each a `json` op adding 1 at `$.version` of the document a
/// [`single_op_entries`] entry of the same index puts (Redis `JSON.NUMINCRBY doc $.version 1`).
pub fn single_op_json_edits(n: u64) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            let op = Op {
                op: OpKind::Json,
                pk: pk_in(0, i),
                sk: String::new(),
                data: Some(RawValue::from_string("1".into()).expect("valid JSON")),
                json_cmd: Some(JsonCmd::NumIncrBy),
                path: Some("$.version".into()),
                ..Op::default()
            };
            LogRecord {
                offset: i,
                payload: LogEntry::new(1_732_590_000_000, vec![op]).encode(),
            }
        })
        .collect()
}

/// `n` log records, each deleting the record a [`single_op_entries`] entry of the same index
/// puts.
pub fn single_op_deletes(n: u64) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            let op = Op {
                op: OpKind::Delete,
                pk: pk_in(0, i),
                sk: String::new(),
                ..Op::default()
            };
            LogRecord {
                offset: i,
                payload: LogEntry::new(1_732_590_000_000, vec![op]).encode(),
            }
        })
        .collect()
}

/// `n` entries like [`single_op_entries`], each op with `if_plugin` = `digest` and its data's
/// `version` a semantic version (`"1.0.<i>"`), so the `semver-gate` example passes a put of a
/// new record.
pub fn single_op_entries_with_plugin(n: u64, digest: &str) -> Vec<LogRecord> {
    single_op_entries(n, None)
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let mut entry = LogEntry::decode(&record.payload).expect("own entries decode");
            let data = value_100b(i as u64).replace(
                "\"version\":3,\"pad\":\"xxxxxxxxx",
                &format!("\"version\":\"1.0.{i:04}\",\"pad\":\""),
            );
            assert_eq!(data.len(), 100, "{data}");
            entry.ops[0].data = Some(RawValue::from_string(data).expect("valid JSON"));
            entry.ops[0].if_plugin = Some(firescroll::model::PluginRef::Digest(
                digest.parse().expect("a sha256 digest"),
            ));
            LogRecord {
                offset: record.offset,
                payload: entry.encode(),
            }
        })
        .collect()
}

/// An example plugin module built by scripts/build-plugins.sh (`plugins/dist/<name>.wasm`).
pub fn example_plugin(name: &str) -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(path).ok()
}
