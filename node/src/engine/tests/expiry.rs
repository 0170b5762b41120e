//! Expiry at apply: records go when the log's time (entry timestamps) reaches their deadline,
//! identically whatever the batching, after a restore, and through ticks.

use super::*;
use crate::engine::apply::PURGE_PER_ENTRY;
use crate::model::ExpireIf;

/// A put of `pk` (sk "") with a deadline.
fn put_until(pk: &str, data: &str, expires_at: Option<i64>) -> Op {
    Op {
        expires_at,
        ..put(pk, "", data, None)
    }
}

fn expire(kind: OpKind, pk: &str, expires_at: Option<i64>, when: Option<ExpireIf>) -> Op {
    Op {
        op: kind,
        pk: pk.into(),
        expires_at,
        expire_if: when,
        ..Op::default()
    }
}

/// Redis `HSET` of a field: it keeps its deadline, and a new one takes its key's (v2).
fn hset_field(pk: &str, sk: &str) -> Op {
    Op {
        keep_ttl: true,
        key_ttl: true,
        ..put(pk, sk, "\"v\"", None)
    }
}

fn entry(ts: i64, ops: Vec<Op>) -> Vec<u8> {
    LogEntry::new(ts, ops).encode()
}

/// One batching of a log: its batch size, the store it was applied into (and the folder that
/// store lives in), and what each entry's first op returned, by offset.
type BatchRun = (usize, tempfile::TempDir, PartitionStore, Vec<(u64, String)>);

/// `log` applied in batches of 1, 2, 3 and all of it, each into a fresh store of `partition`,
/// none rejected.
fn applied_in_batches(log: &[Vec<u8>], partition: u32) -> Vec<BatchRun> {
    let log = records(log);
    let rules = TestRules::new();
    [1usize, 2, 3, 1000]
        .into_iter()
        .map(|batch_size| {
            let dir = tempfile::tempdir().unwrap();
            let store = open_partition(dir.path(), partition);
            let mut returned = Vec::new();
            for chunk in log.chunks(batch_size) {
                let batch = apply_and_commit(&store, rules.rules(), chunk).unwrap();
                assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
                returned.extend(
                    batch
                        .returned
                        .iter()
                        .map(|(offset, r)| (*offset, r[0].data.clone().unwrap())),
                );
            }
            (batch_size, dir, store, returned)
        })
        .collect()
}

/// (deadline, whether it is the record's own) of a stored record, read raw.
fn deadline_and_own(store: &PartitionStore, pk: &str, sk: &str) -> (Option<i64>, bool) {
    let raw = store
        .get_raw(&crate::store::encode_key(pk, sk))
        .unwrap()
        .unwrap();
    let view = crate::store::decode_value(&raw).unwrap();
    (view.expires_at_ms, view.own_deadline)
}

/// (data, deadline) of a stored record, read raw (reads hide records by the wall clock, and
/// these deadlines are in 1970).
fn stored(store: &PartitionStore, pk: &str, sk: &str) -> Option<(String, Option<i64>)> {
    let raw = store.get_raw(&crate::store::encode_key(pk, sk)).unwrap()?;
    let view = crate::store::decode_value(&raw).unwrap();
    Some((
        String::from_utf8(view.data_json.to_vec()).unwrap(),
        view.expires_at_ms,
    ))
}

/// Every deadline index entry of the partition, as (deadline, pk).
fn index_of(store: &PartitionStore) -> Vec<(i64, String)> {
    store
        .due(None, i64::MAX)
        .map(|e| {
            let (deadline, key) = e.unwrap();
            (deadline, crate::store::decode_key(&key).unwrap().0)
        })
        .collect()
}

/// A log over partition 1's pks exercising deadlines: overwrites that move them, keep them and
/// drop them, read-modify-write, expire ops of every kind, whole-key expiry, and ticks.
fn expiry_log() -> (Vec<String>, Vec<Vec<u8>>) {
    let pk = pks_in(1, 9);
    let hash = |sk: &str, until: Option<i64>| Op {
        expires_at: until,
        ..put(&pk[5], sk, "\"f\"", None)
    };
    let log = vec![
        entry(100, vec![put_until(&pk[0], "\"a\"", Some(1_000))]),
        entry(110, vec![put_until(&pk[1], "\"b\"", Some(2_000))]),
        // Moved later, then earlier: the index keeps stale entries the purge must skip.
        entry(120, vec![put_until(&pk[1], "\"b2\"", Some(5_000))]),
        // DEL of a key leaves its fields' index entries behind (it does not read values).
        entry(
            125,
            vec![
                Op {
                    expires_at: Some(1_050),
                    ..put(&pk[8], "a", "1", None)
                },
                Op {
                    expires_at: Some(1_050),
                    ..put(&pk[8], "b", "1", None)
                },
            ],
        ),
        entry(
            126,
            vec![Op {
                op: OpKind::DeleteKey,
                ..delete(&pk[8], "", None)
            }],
        ),
        entry(130, vec![put_until(&pk[2], "\"c\"", Some(1_500))]),
        entry(
            140,
            vec![Op {
                keep_ttl: true,
                ..put(&pk[2], "", "\"c2\"", None)
            }],
        ),
        entry(150, vec![put_until(&pk[3], "\"7\"", Some(3_000))]),
        entry(160, vec![rmw(OpKind::Incr, &pk[3], "", "5")]),
        entry(170, vec![put_until(&pk[4], "\"d\"", Some(900))]),
        entry(180, vec![put_until(&pk[4], "\"d-forever\"", None)]),
        entry(190, vec![hash("x", Some(4_000)), hash("y", None)]),
        entry(
            200,
            vec![expire(OpKind::ExpireKey, &pk[5], Some(2_500), None)],
        ),
        entry(210, vec![expire(OpKind::Expire, &pk[6], Some(2_500), None)]),
        entry(220, vec![put_until(&pk[6], "\"g\"", None)]),
        entry(
            230,
            vec![expire(
                OpKind::Expire,
                &pk[6],
                Some(8_000),
                Some(ExpireIf::Nx),
            )],
        ),
        entry(
            240,
            vec![expire(
                OpKind::Expire,
                &pk[6],
                Some(9_000),
                Some(ExpireIf::Lt),
            )],
        ),
        entry(
            250,
            vec![expire(
                OpKind::Expire,
                &pk[6],
                Some(7_000),
                Some(ExpireIf::Gt),
            )],
        ),
        // Log time 1_200: pk0 (1_000) goes; pk2 (1_500) not yet.
        LogEntry::tick(1_200).encode(),
        // A timestamp from a slower clock: nothing comes back, nothing more goes.
        LogEntry::tick(1_100).encode(),
        entry(1_300, vec![put(&pk[7], "", "1", Some("data == null"))]),
        LogEntry::tick(2_600).encode(),
        // pk0 expired: a conditional create succeeds as if it had never been.
        entry(
            2_700,
            vec![put_until(&pk[0], "\"new\"", Some(6_000)), {
                let mut op = put(&pk[0], "x", "1", Some("_expires_at == nil"));
                op.expires_at = Some(2_650);
                op
            }],
        ),
        LogEntry::tick(5_500).encode(),
    ];
    (pk, log)
}

#[test]
fn records_go_when_the_log_reaches_their_deadline_whatever_the_batching() {
    let (pk, log) = expiry_log();
    let log = records(&log);
    let rules = TestRules::new();
    let mut digests = Vec::new();
    for batch_size in [1usize, 2, 3, 5, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_partition(dir.path(), 1);
        let mut expired = 0;
        for chunk in log.chunks(batch_size) {
            let batch = apply_and_commit(&store, rules.rules(), chunk).unwrap();
            assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
            expired += batch.expired;
        }
        assert_eq!(
            stored(&store, &pk[0], ""),
            Some(("\"new\"".into(), Some(6_000))),
            "written again after it expired; not due at 5_500"
        );
        assert_eq!(stored(&store, &pk[0], "x"), None, "written already expired");
        assert_eq!(
            stored(&store, &pk[1], ""),
            None,
            "moved to 5_000, purged at 5_500"
        );
        assert_eq!(
            stored(&store, &pk[2], ""),
            None,
            "kept 1_500 through the overwrite"
        );
        assert_eq!(stored(&store, &pk[3], ""), None, "INCR kept 3_000");
        assert_eq!(
            stored(&store, &pk[4], ""),
            Some(("\"d-forever\"".into(), None)),
            "an overwrite without a deadline drops it"
        );
        assert_eq!(
            stored(&store, &pk[5], "x"),
            None,
            "EXPIRE reached every field"
        );
        assert_eq!(stored(&store, &pk[5], "y"), None);
        assert_eq!(
            stored(&store, &pk[6], ""),
            Some(("\"g\"".into(), Some(8_000))),
            "NX set 8_000, LT refused 9_000, GT refused 7_000"
        );
        assert_eq!(stored(&store, &pk[7], ""), Some(("1".into(), None)));
        // pk0, pk1, pk2, pk3, pk5 (two fields); pk8's entries were stale.
        assert_eq!(expired, 6, "batch size {batch_size}");
        assert_key_index_matches(&store);
        assert_eq!(
            index_of(&store),
            vec![(6_000, pk[0].clone()), (8_000, pk[6].clone())],
            "purges remove their index entries, stale ones included"
        );
        digests.push(store.digest().unwrap());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn the_last_millisecond_purges_alike_whatever_the_batching() {
    // A deadline of `i64::MAX` (Redis takes any 64-bit `PXAT`) reached by an entry stamped
    // `i64::MAX` (a foreign producer's): once went with the store's index, but stayed when the
    // same batch had added it.
    let pk = pks_in(1, 1).remove(0);
    let log = vec![
        entry(1_000, vec![put_until(&pk, "1", Some(i64::MAX))]),
        entry(i64::MAX, Vec::new()),
    ];
    for (batch_size, _dir, store, _) in applied_in_batches(&log, 1) {
        assert_eq!(stored(&store, &pk, ""), None, "batch size {batch_size}");
        assert_eq!(index_of(&store), vec![], "batch size {batch_size}");
    }
}

#[test]
fn fields_created_in_a_key_with_a_deadline_take_it_whatever_the_batching() {
    let pk = pks_in(3, 4);
    let field = hset_field;
    let until = |pk: &str, sk: &str, at: i64| Op {
        expires_at: Some(at),
        ..put(pk, sk, "\"v\"", None)
    };
    let log = vec![
        // A key with a deadline on every field (as after EXPIRE).
        entry(10, vec![until(&pk[0], "a", 1_000), until(&pk[0], "b", 1_000)]),
        entry(20, vec![field(&pk[0], "c")]),
        entry(
            30,
            vec![Op {
                key_ttl: true,
                ..rmw(OpKind::Incr, &pk[0], "n", "1")
            }],
        ),
        // A key without one: nothing to take.
        entry(40, vec![put(&pk[1], "a", "1", None), field(&pk[1], "b")]),
        // New key, EXPIRE, another field, all in one entry.
        entry(
            50,
            vec![
                field(&pk[2], "a"),
                expire(OpKind::ExpireKey, &pk[2], Some(2_000), None),
                field(&pk[2], "b"),
            ],
        ),
        // The same across entries, the field sorting before the one it takes the deadline from.
        entry(60, vec![field(&pk[3], "m")]),
        entry(
            61,
            vec![expire(OpKind::ExpireKey, &pk[3], Some(3_000), None)],
        ),
        entry(62, vec![field(&pk[3], "a")]),
        entry(63, vec![delete(&pk[3], "a", None)]),
        entry(64, vec![field(&pk[3], "b")]),
        // In a v1 entry the flag is not read (a v1 node ignores it).
        format!(
            r#"{{"v":1,"ts_ms":70,"ops":[{{"op":"put","pk":{},"sk":"z","data":1,"keep_ttl":true,"key_ttl":true}}]}}"#,
            serde_json::to_string(&pk[3]).unwrap()
        )
        .into_bytes(),
    ];
    let log = records(&log);
    let rules = TestRules::new();
    let mut digests = Vec::new();
    for batch_size in [1usize, 2, 3, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_partition(dir.path(), 3);
        for chunk in log.chunks(batch_size) {
            let batch = apply_and_commit(&store, rules.rules(), chunk).unwrap();
            assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
        }
        let deadline = |pk: &str, sk: &str| stored(&store, pk, sk).map(|(_, d)| d);
        let at = format!("batch size {batch_size}");
        assert_eq!(deadline(&pk[0], "c"), Some(Some(1_000)), "{at}");
        assert_eq!(
            stored(&store, &pk[0], "n"),
            Some(("\"1\"".into(), Some(1_000))),
            "{at}"
        );
        assert_eq!(deadline(&pk[1], "b"), Some(None), "{at}");
        assert_eq!(deadline(&pk[2], "a"), Some(Some(2_000)), "{at}");
        assert_eq!(deadline(&pk[2], "b"), Some(Some(2_000)), "{at}");
        assert_eq!(deadline(&pk[3], "m"), Some(Some(3_000)), "{at}");
        assert_eq!(deadline(&pk[3], "a"), None, "{at}");
        assert_eq!(deadline(&pk[3], "b"), Some(Some(3_000)), "{at}");
        assert_eq!(deadline(&pk[3], "z"), Some(None), "{at}");
        // Then, in one batch over that store: a field taking the stored key's deadline, the
        // key's deadline moved, a field taking the new one (not the batch's first look).
        let more = records(&[
            entry(80, vec![field(&pk[0], "d")]),
            entry(
                81,
                vec![expire(OpKind::ExpireKey, &pk[0], Some(5_000), None)],
            ),
            entry(82, vec![field(&pk[0], "e")]),
            // The first stored field deleted: the next one has the deadline.
            entry(83, vec![delete(&pk[0], "a", None)]),
            entry(84, vec![field(&pk[0], "f")]),
        ]);
        let more: Vec<LogRecord> = more
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.offset = log.len() as u64 + i as u64;
                r
            })
            .collect();
        let batch = apply_and_commit(&store, rules.rules(), &more).unwrap();
        assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
        assert_eq!(deadline(&pk[0], "a"), None, "{at}");
        for sk in ["b", "d", "e", "f"] {
            assert_eq!(deadline(&pk[0], sk), Some(Some(5_000)), "{at}: {sk}");
        }
        assert_key_index_matches(&store);
        digests.push(store.digest().unwrap());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn a_fields_own_deadline_is_not_its_keys_whatever_the_batching() {
    let pk = pks_in(3, 4);
    let field = hset_field;
    // `HSETEX ... KEEPTTL` and `HEXPIRE` (v3's `own_ttl`).
    let field_keeping_own = |pk: &str, sk: &str| Op {
        own_ttl: true,
        ..field(pk, sk)
    };
    let hexpire = |pk: &str, sk: &str, at: i64| Op {
        op: OpKind::Expire,
        pk: pk.into(),
        sk: sk.into(),
        expires_at: Some(at),
        own_ttl: true,
        ..Op::default()
    };
    let incr = |pk: &str, sk: &str| Op {
        key_ttl: true,
        ..rmw(OpKind::Incr, pk, sk, "1")
    };
    let key_expire = |pk: &str, at: Option<i64>| expire(OpKind::ExpireKey, pk, at, None);
    let log = vec![
        // No key deadline, one field with its own: new fields, and the field written over by
        // `HSET` (which clears a field's TTL in Redis), take none.
        entry(10, vec![put(&pk[0], "a", "1", None), put(&pk[0], "b", "1", None)]),
        entry(11, vec![hexpire(&pk[0], "a", 1_000)]),
        entry(12, vec![field(&pk[0], "0"), incr(&pk[0], "n")]),
        entry(13, vec![field(&pk[0], "a")]),
        // A key deadline, and a field with an earlier one of its own: a new field sorting
        // before it takes the key's from the next field; KEEPTTL and INCR keep the own one.
        entry(20, vec![put(&pk[1], "a", "1", None), put(&pk[1], "b", "1", None)]),
        entry(21, vec![key_expire(&pk[1], Some(5_000))]),
        entry(22, vec![hexpire(&pk[1], "a", 2_000)]),
        entry(23, vec![field(&pk[1], "0"), incr(&pk[1], "a")]),
        entry(24, vec![field_keeping_own(&pk[1], "a")]),
        // EXPIRE leaves an own deadline it does not cut short, PERSIST leaves it too, and a
        // second PERSIST finds no key deadline (1, 1, 0).
        entry(30, vec![put(&pk[2], "a", "1", None), put(&pk[2], "b", "1", None)]),
        entry(31, vec![hexpire(&pk[2], "a", 1_000), hexpire(&pk[2], "b", 9_000)]),
        entry(32, vec![key_expire(&pk[2], Some(5_000))]),
        entry(33, vec![key_expire(&pk[2], None)]),
        entry(34, vec![key_expire(&pk[2], None)]),
        // Only own deadlines: nothing to take.
        entry(
            40,
            vec![Op {
                expires_at: Some(3_000),
                own_ttl: true,
                ..put(&pk[3], "a", "1", None)
            }],
        ),
        entry(41, vec![field(&pk[3], "b")]),
        // In a v2 entry `own_ttl` is not read (a v2 node ignores it): b's deadline is the key's.
        format!(
            r#"{{"v":2,"ts_ms":50,"ops":[{{"op":"expire","pk":{},"sk":"b","expires_at":4000,"own_ttl":true}}]}}"#,
            serde_json::to_string(&pk[3]).unwrap()
        )
        .into_bytes(),
        entry(51, vec![field(&pk[3], "c")]),
    ];
    let mut digests = Vec::new();
    for (batch_size, _dir, store, returned) in applied_in_batches(&log, 3) {
        let codes: Vec<&str> = returned
            .iter()
            .filter(|(offset, _)| (11..=13).contains(offset))
            .map(|(_, data)| data.as_str())
            .collect();
        let deadline = |pk: &str, sk: &str| deadline_and_own(&store, pk, sk);
        let at = format!("batch size {batch_size}");
        let none = (None, false);
        assert_eq!(deadline(&pk[0], "0"), none, "{at}");
        assert_eq!(deadline(&pk[0], "n"), none, "{at}");
        assert_eq!(deadline(&pk[0], "a"), none, "{at}");
        assert_eq!(deadline(&pk[0], "b"), none, "{at}");
        assert_eq!(deadline(&pk[1], "0"), (Some(5_000), false), "{at}");
        assert_eq!(deadline(&pk[1], "a"), (Some(2_000), true), "{at}");
        assert_eq!(stored(&store, &pk[1], "a").unwrap().0, "\"v\"", "{at}");
        assert_eq!(deadline(&pk[1], "b"), (Some(5_000), false), "{at}");
        assert_eq!(deadline(&pk[2], "a"), (Some(1_000), true), "{at}");
        assert_eq!(deadline(&pk[2], "b"), none, "{at}");
        assert_eq!(codes, ["1", "1", "0"], "{at}");
        assert_eq!(deadline(&pk[3], "a"), (Some(3_000), true), "{at}");
        assert_eq!(deadline(&pk[3], "b"), (Some(4_000), false), "{at}");
        assert_eq!(deadline(&pk[3], "c"), (Some(4_000), false), "{at}");
        assert_key_index_matches(&store);
        digests.push(store.digest().unwrap());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn a_field_ttl_op_sees_the_fields_own_deadline_alone_whatever_the_batching() {
    let pk = pks_in(3, 2);
    // Redis 7.4's `HEXPIRE ... NX|XX|GT|LT` and `HPERSIST` of a field (v5's `field_ttl`).
    let field_op = |sk: &str, at: Option<i64>, when: Option<ExpireIf>| Op {
        sk: sk.into(),
        own_ttl: at.is_some(),
        field_ttl: true,
        ..expire(OpKind::Expire, &pk[0], at, when)
    };
    let key_expire = |pk: &str, at: Option<i64>| expire(OpKind::ExpireKey, pk, at, None);
    let fields = |pk: &str| {
        ["a", "b", "c", "d"]
            .map(|sk| put(pk, sk, "1", None))
            .to_vec()
    };
    let log = vec![
        entry(10, fields(&pk[0])),
        entry(11, vec![key_expire(&pk[0], Some(5_000))]),
        // The key's deadline is not the field's: nothing to persist (0, HPERSIST's -1), NX
        // sets one (1), GT and XX find none (0, 0).
        entry(12, vec![field_op("a", None, None)]),
        entry(13, vec![field_op("b", Some(2_000), Some(ExpireIf::Nx))]),
        entry(14, vec![field_op("c", Some(9_000), Some(ExpireIf::Gt))]),
        entry(15, vec![field_op("d", Some(1_000), Some(ExpireIf::Xx))]),
        // Persisting a field's own deadline gives it its key's (1); LT against none sets (1).
        entry(16, vec![field_op("b", None, None)]),
        entry(17, vec![field_op("d", Some(3_000), Some(ExpireIf::Lt))]),
        // In a v4 entry `field_ttl` is not read (a v4 node ignores it): NX sees the key's (0).
        format!(
            r#"{{"v":4,"ts_ms":18,"ops":[{{"op":"expire","pk":{},"sk":"a","expires_at":4000,"expire_if":"nx","own_ttl":true,"field_ttl":true}}]}}"#,
            serde_json::to_string(&pk[0]).unwrap()
        )
        .into_bytes(),
        // A key without a deadline: persisting a field's own leaves it none (1).
        entry(
            20,
            vec![Op {
                expires_at: Some(3_000),
                own_ttl: true,
                ..put(&pk[1], "a", "1", None)
            }],
        ),
        entry(
            21,
            vec![Op {
                pk: pk[1].clone(),
                ..field_op("a", None, None)
            }],
        ),
    ];
    let mut digests = Vec::new();
    for (batch_size, _dir, store, returned) in applied_in_batches(&log, 3) {
        let codes: Vec<&str> = returned.iter().map(|(_, data)| data.as_str()).collect();
        let at = format!("batch size {batch_size}");
        // EXPIRE's 1, then the field ops' codes in log order.
        assert_eq!(codes, ["1", "0", "1", "0", "0", "1", "1", "0", "1"], "{at}");
        let deadline = |pk: &str, sk: &str| deadline_and_own(&store, pk, sk);
        assert_eq!(deadline(&pk[0], "a"), (Some(5_000), false), "{at}");
        assert_eq!(deadline(&pk[0], "b"), (Some(5_000), false), "{at}");
        assert_eq!(deadline(&pk[0], "c"), (Some(5_000), false), "{at}");
        assert_eq!(deadline(&pk[0], "d"), (Some(3_000), true), "{at}");
        assert_eq!(deadline(&pk[1], "a"), (None, false), "{at}");
        assert_key_index_matches(&store);
        digests.push(store.digest().unwrap());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn expire_ops_answer_like_redis_and_expired_records_are_absent_to_entries() {
    let pk = pks_in(2, 1).remove(0);
    let rules = TestRules::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open_partition(dir.path(), 2);
    let log = vec![
        // On a missing key: 0.
        entry(10, vec![expire(OpKind::ExpireKey, &pk, Some(100), None)]),
        entry(20, vec![put(&pk, "", "\"v\"", None)]),
        // PERSIST without a deadline: 0; XX without one: 0; NX: 1.
        entry(30, vec![expire(OpKind::ExpireKey, &pk, None, None)]),
        entry(
            40,
            vec![expire(
                OpKind::ExpireKey,
                &pk,
                Some(500),
                Some(ExpireIf::Xx),
            )],
        ),
        entry(
            50,
            vec![expire(
                OpKind::ExpireKey,
                &pk,
                Some(500),
                Some(ExpireIf::Nx),
            )],
        ),
        // The condition sees the deadline; KEEPTTL keeps it.
        entry(
            60,
            vec![Op {
                keep_ttl: true,
                ..put(&pk, "", "\"v2\"", Some("_expires_at == 500"))
            }],
        ),
        // PERSIST with one: 1.
        entry(70, vec![expire(OpKind::Expire, &pk, None, None)]),
        entry(80, vec![expire(OpKind::Expire, &pk, Some(90), None)]),
        // The entry's time (95) is past the deadline (90): the record is absent to it.
        entry(95, vec![put(&pk, "", "\"w\"", Some("data == null"))]),
        // A deadline at or before the entry's time removes the key at once (1).
        entry(100, vec![expire(OpKind::ExpireKey, &pk, Some(100), None)]),
    ];
    let batch = apply_and_commit(&store, rules.rules(), &records(&log)).unwrap();
    assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
    let returned: Vec<(u64, Option<String>)> = batch
        .returned
        .iter()
        .map(|(offset, r)| (*offset, r[0].data.clone()))
        .collect();
    let one = || Some("1".to_string());
    let zero = || Some("0".to_string());
    assert_eq!(
        returned,
        vec![
            (0, zero()),
            (2, zero()),
            (3, zero()),
            (4, one()),
            (6, one()),
            (7, one()),
            (9, one()),
        ]
    );
    assert_eq!(stored(&store, &pk, ""), None);
    assert_key_index_matches(&store);
}

#[test]
fn a_restored_replica_purges_exactly_as_the_one_that_replayed() {
    let (_, log) = expiry_log();
    let log = records(&log);
    let rules = TestRules::new();
    let split = 14;
    let dir = tempfile::tempdir().unwrap();
    let replayed = open_partition(dir.path(), 1);
    apply_and_commit(&replayed, rules.rules(), &log[..split]).unwrap();
    // A snapshot of it, restored elsewhere: records only; the index is rebuilt from them.
    let (next, last_entry, entries) = replayed.frozen().unwrap();
    let snapshot: Vec<(Vec<u8>, Vec<u8>)> = entries
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    let other = tempfile::tempdir().unwrap();
    let restored = open_partition(other.path(), 1);
    restored
        .restore(
            snapshot.into_iter().map(Ok::<_, String>),
            next,
            last_entry,
            "test",
        )
        .unwrap();
    assert!(
        index_of(&restored).len() < index_of(&replayed).len(),
        "the replayed index has stale entries the rebuilt one lacks"
    );
    for store in [&replayed, &restored] {
        apply_and_commit(store, rules.rules(), &log[split..]).unwrap();
        assert_key_index_matches(store);
    }
    assert_eq!(replayed.digest().unwrap(), restored.digest().unwrap());
}

#[test]
fn a_reopened_partition_purges_what_it_committed_before() {
    let (_, log) = expiry_log();
    let log = records(&log);
    let rules = TestRules::new();
    let split = 14;
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = open_partition(straight_dir.path(), 1);
    apply_and_commit(&straight, rules.rules(), &log).unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let before = open_partition(dir.path(), 1);
        apply_and_commit(&before, rules.rules(), &log[..split]).unwrap();
        assert!(
            !index_of(&before).is_empty(),
            "deadlines committed before the restart"
        );
    }
    // A new handle on the same files knows nothing but what the store holds.
    let reopened = open_partition(dir.path(), 1);
    apply_and_commit(&reopened, rules.rules(), &log[split..]).unwrap();
    assert_eq!(index_of(&reopened), index_of(&straight));
    assert_eq!(reopened.digest().unwrap(), straight.digest().unwrap());
}

#[test]
fn one_entry_purges_a_bounded_number_and_the_rest_follow() {
    let pk = pks_in(3, 1).remove(0);
    let rules = TestRules::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open_partition(dir.path(), 3);
    let extra = 5;
    let fields: Vec<Op> = (0..PURGE_PER_ENTRY + extra)
        .map(|i| Op {
            expires_at: Some(1_000 + (i % 3) as i64),
            ..put(&pk, &format!("f{i:06}"), "1", None)
        })
        .collect();
    let log = vec![
        entry(10, fields),
        LogEntry::tick(2_000).encode(),
        LogEntry::tick(2_001).encode(),
    ];
    let log = records(&log);
    let first = apply_and_commit(&store, rules.rules(), &log[..2]).unwrap();
    assert_eq!(first.expired, PURGE_PER_ENTRY as u64);
    assert_eq!(store.digest().unwrap().records, extra as u64);
    // The ones left are the last in (deadline, key) order: deadline 1_002, highest keys.
    let left: Vec<String> = store
        .pk_entries(&pk)
        .map(|e| crate::store::decode_key(&e.unwrap().0).unwrap().1)
        .collect();
    let mut expected: Vec<String> = (0..PURGE_PER_ENTRY + extra)
        .filter(|i| i % 3 == 2)
        .map(|i| format!("f{i:06}"))
        .collect();
    expected = expected.split_off(expected.len() - extra);
    assert_eq!(left, expected);
    let second = apply_and_commit(&store, rules.rules(), &log[2..]).unwrap();
    assert_eq!(second.expired, extra as u64);
    assert_eq!(store.digest().unwrap().records, 0);
    assert_key_index_matches(&store);
}

#[test]
fn a_key_counts_what_a_read_returns_from_its_index_or_one_by_one_while_a_deadline_is_due() {
    let pk = pks_in(2, 2);
    let rules = TestRules::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open_partition(dir.path(), 2);
    let field = |pk: &str, sk: &str, until: Option<i64>| Op {
        expires_at: until,
        ..put(pk, sk, "1", None)
    };
    let delete = Op {
        op: OpKind::Delete,
        pk: pk[0].clone(),
        sk: "b".into(),
        ..Op::default()
    };
    let log = records(&[
        entry(
            10,
            vec![
                field(&pk[0], "", None),
                field(&pk[0], "a", None),
                field(&pk[0], "b", None),
                field(&pk[1], "x", None),
            ],
        ),
        entry(20, vec![delete]),
        // Past by the wall clock, not by the log's time (30): stored and indexed, but a read
        // no longer returns it; and one far ahead.
        entry(
            30,
            vec![
                field(&pk[0], "gone", Some(1_000)),
                field(&pk[0], "later", Some(i64::MAX / 2)),
            ],
        ),
    ]);
    let read = |pk: &str| store.scan(pk, "", None).count() as u64;
    let counts = |pk: &[String]| -> Vec<u64> {
        pk.iter()
            .map(|pk| store.record_count(pk, 100).unwrap().unwrap())
            .collect()
    };

    apply_and_commit(&store, rules.rules(), &log[..1]).unwrap();
    assert_eq!(counts(&pk), [3, 1]);
    apply_and_commit(&store, rules.rules(), &log[1..2]).unwrap();
    assert_eq!(counts(&pk), [2, 1]);
    assert_eq!(store.record_count("no such key", 100).unwrap(), Some(0));
    apply_and_commit(&store, rules.rules(), &log[2..]).unwrap();
    assert_eq!(
        store.indexed_records(&pk[0]).unwrap(),
        4,
        "the index still counts the expired field"
    );
    assert_eq!(counts(&pk), [3, 1]);
    assert_eq!(counts(&pk), [read(&pk[0]), read(&pk[1])]);
    // Counted one by one, a key past the bound is left to the caller (to count by pages).
    assert_eq!(store.record_count(&pk[0], 3).unwrap(), None);
    assert_eq!(store.record_count(&pk[0], 4).unwrap(), Some(3));
}

#[test]
fn a_new_field_passes_a_bounded_number_of_own_deadlines_looking_for_its_keys() {
    use crate::engine::apply::OWN_DEADLINES_PASSED;
    // Two keys: `OWN_DEADLINES_PASSED - 1` fields with TTLs of their own before one with the
    // key's, and one more own field than that. A new field sorting after them all takes the key's
    // deadline in the first and, past the bound, none in the second — on every batching.
    let pk = pks_in(1, 2);
    let own = |pk: &str, sk: String| Op {
        expires_at: Some(1_000),
        own_ttl: true,
        ..put(pk, &sk, "1", None)
    };
    let mut log = Vec::new();
    for (pk, owns) in [
        (&pk[0], OWN_DEADLINES_PASSED - 1),
        (&pk[1], OWN_DEADLINES_PASSED),
    ] {
        let fields = (0..owns).map(|i| own(pk, format!("a{i:03}")));
        log.push(entry(10, fields.collect()));
        log.push(entry(
            11,
            vec![Op {
                expires_at: Some(5_000),
                ..put(pk, "k", "1", None)
            }],
        ));
        log.push(entry(12, vec![hset_field(pk, "z")]));
    }
    let log = records(&log);
    let rules = TestRules::new();
    for batch_size in [1usize, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_partition(dir.path(), 1);
        for chunk in log.chunks(batch_size) {
            let batch = apply_and_commit(&store, rules.rules(), chunk).unwrap();
            assert!(batch.rejections.is_empty(), "{:?}", batch.rejections);
        }
        let at = format!("batch size {batch_size}");
        assert_eq!(stored(&store, &pk[0], "z").unwrap().1, Some(5_000), "{at}");
        assert_eq!(stored(&store, &pk[1], "z").unwrap().1, None, "{at}");
    }
}
