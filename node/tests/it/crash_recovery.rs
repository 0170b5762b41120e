//! Durability across `kill -9` and clean shutdown, against the real binary.

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Acked {
    /// Position of each acknowledged counter write, in order (write k sets n = k + 1).
    counter: Vec<Value>,
    /// Highest k of an acknowledged batch write.
    batch_k: Option<u64>,
}

fn position(reply: &Value) -> Value {
    reply["Positions"][0].clone()
}

#[test]
fn kill_9_loses_no_acknowledged_write_and_applies_nothing_twice() {
    let mut node = Node::start();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let url = node.url("");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let post = |path: &str, body: Value| -> Option<Value> {
                let r = client
                    .post(format!("{url}{path}"))
                    .body(body.to_string())
                    .send()
                    .ok()?;
                if !r.status().is_success() {
                    return None;
                }
                r.json_value()
            };
            for k in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                // The counter only moves by one: `if` guards it, so an entry applied twice
                // would be rejected the second time and its recorded outcome would change.
                let cond = if k == 0 {
                    "data == null".to_string()
                } else {
                    format!("data.n == {k}")
                };
                let put =
                    json!({"Records":[{"pk":"counter","sk":"c","data":{"n":k + 1},"if":cond}]});
                let Some(reply) = post("/records/put", put) else {
                    return;
                };
                acked.lock().unwrap().counter.push(position(&reply));
                // Two records of one atomic batch must always agree.
                let batch = json!({"Records":[
                    {"op":"put","pk":"batch","sk":"a","data":{"k":k}},
                    {"op":"put","pk":"batch","sk":"b","data":{"k":k}}
                ]});
                let Some(_) = post("/records/batch", batch) else {
                    return;
                };
                acked.lock().unwrap().batch_k = Some(k);
            }
        })
    };
    // Let the writer get going, read the counter's creation time, then pull the plug mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().counter.len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "writer made no progress:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = acked.lock().unwrap().counter[0].clone();
    let (_, before) = node.post(
        "/records/get",
        json!({"Records":[{"pk":"counter","sk":"c"}],"min_offsets":[first]}),
    );
    let created_before = before["Records"][0]["CreatedAt"].clone();
    assert!(created_before.is_string(), "{before}");
    std::thread::sleep(Duration::from_millis(300));
    node.kill9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap();
    let acked_count = acked.counter.len() as u64;
    assert!(acked_count >= 50);

    node.spawn();
    let last = acked.counter.last().unwrap().clone();
    let (status, after) = node.post(
        "/records/get",
        json!({"Records":[{"pk":"counter","sk":"c"},{"pk":"batch","sk":"a"},{"pk":"batch","sk":"b"}],"min_offsets":[last]}),
    );
    assert_eq!(status, 200, "{after}");
    let records = after["Records"].as_array().unwrap();
    let n = records[0]["Data"]["n"].as_u64().unwrap();
    // Every acknowledged increment is there; at most one more that was durable but not yet acked.
    assert!(
        n == acked_count || n == acked_count + 1,
        "n = {n}, acknowledged {acked_count}"
    );
    assert_eq!(
        records[0]["CreatedAt"], created_before,
        "_created_at changed"
    );
    let (a, b) = (&records[1]["Data"]["k"], &records[2]["Data"]["k"]);
    assert_eq!(a, b, "a batch was half applied");
    assert!(a.as_u64().unwrap() >= acked.batch_k.unwrap());

    // Every acknowledged counter entry still has the outcome "applied": none was applied twice.
    let (status, outcomes) = node.post("/records/outcomes", json!({"Positions": acked.counter}));
    assert_eq!(status, 200, "{outcomes}");
    for o in outcomes["Outcomes"].as_array().unwrap() {
        assert_eq!(o["Outcome"]["Status"], "applied", "{o}");
    }
}

#[test]
fn sigterm_exits_cleanly_and_data_survives() {
    let mut node = Node::start();
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records":[{"pk":"k","sk":"s","data":{"v":1}}]}),
    );
    assert_eq!(status, 200, "{reply}");
    let status = node.terminate();
    assert!(status.success(), "exit {status}:\n{}", node.log());
    assert!(node.log().contains("stopped cleanly"));
    node.spawn();
    let (_, got) = node.post(
        "/records/get",
        json!({"Records":[{"pk":"k","sk":"s"}],"min_offsets":[position(&reply)]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!({"v":1}));
}

trait JsonValue {
    fn json_value(self) -> Option<Value>;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> Option<Value> {
        serde_json::from_str(&self.text().ok()?).ok()
    }
}

/// Entries of 1,000 records each, all in one partition, that the restarted node replays.
const REPLAYED_BATCHES: u64 = 100;

/// A node whose store lost its last commits (as a crash loses what the last checkpoint had not
/// made durable, here by putting back a copy of the store taken before them) replays them from
/// the log when it starts again. Its reads of the partition wait for that replay: they never
/// answer older data than the node answered before it stopped (they did, while it replayed).
#[test]
fn reads_after_a_restart_wait_for_the_replay_of_what_the_store_lost() {
    let base = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(base.path(), &[]);
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records":[{"pk":"k","sk":"v","data":{"n":0}}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(node.terminate().success(), "{}", node.log());
    let store = node.data.join("store");
    let kept = base.path().join("store-kept");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&store)
        .arg(&kept)
        .status()
        .unwrap();
    assert!(copied.success());

    node.spawn();
    let mut last = Value::Null;
    for n in 1..=REPLAYED_BATCHES {
        let mut records: Vec<Value> = (0..999)
            .map(|j| json!({"op":"put","pk":"k","sk":format!("f{j:03}"),"data":{"n":n}}))
            .collect();
        records.push(json!({"op":"put","pk":"k","sk":"v","data":{"n":n}}));
        let (status, reply) = node.post("/records/batch", json!({ "Records": records }));
        assert_eq!(status, 200, "{reply}");
        last = position(&reply);
    }
    let (status, got) = node.post(
        "/records/get",
        json!({"Records":[{"pk":"k","sk":"v"}],"min_offsets":[last]}),
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["Records"][0]["Data"]["n"], REPLAYED_BATCHES, "{got}");
    assert!(node.terminate().success(), "{}", node.log());

    // The store as it was before those entries; the log holds them.
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::rename(&kept, &store).unwrap();
    node.spawn();
    assert!(
        node.log()
            .contains("its reads wait until it applies what the log holds"),
        "the store did not open behind the log, so this test proves nothing:\n{}",
        node.log()
    );
    // Every answer is the newest value: a read made while the replay lasts waits for it (or,
    // past READ_WAIT_TIMEOUT_MS, says the partition is catching up).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut catching_up = 0;
    loop {
        let (status, got) = node.post("/records/get", json!({"Records":[{"pk":"k","sk":"v"}]}));
        if status == 503 && got["error"]["code"] == "partition_catching_up" {
            catching_up += 1;
            assert!(std::time::Instant::now() < deadline, "{got}");
            continue;
        }
        assert_eq!(status, 200, "{got}");
        assert_eq!(
            got["Records"][0]["Data"]["n"], REPLAYED_BATCHES,
            "a read after the restart answered older data than before it ({catching_up} \
             answers said the partition was catching up first)"
        );
        break;
    }
    // Caught up: ready, and what every other key holds is the newest too.
    node.wait_until("ready", Duration::from_secs(30), |node| {
        node.get_url(&node.url("/ready")).0 == 200
    });
    let (status, got) = node.post("/records/list", json!({"pk":"k","limit":2}));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["Records"][0]["Data"]["n"], REPLAYED_BATCHES, "{got}");
}

/// Puts `data` at (`pk`, "") and waits: its position.
fn put_one(node: &Node, pk: &str, data: Value) -> Value {
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": pk, "sk": "", "data": data}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(position(&reply)["Outcome"]["Status"], "applied", "{reply}");
    position(&reply)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The embedded log's folder lost while the store stays: new writes once were numbered from 0
/// again, as entries the store had applied, and acknowledged "applied" with those entries'
/// outcomes while nothing of them was applied. The log now continues after the store.
#[test]
fn a_store_that_outlived_its_log_continues_it_and_loses_no_write() {
    let mut node = Node::start();
    let first = put_one(&node, "k1", json!(1));
    put_one(&node, "k1", json!(2));
    node.terminate();
    std::fs::remove_dir_all(node.data.join("log")).unwrap();
    node.spawn();
    let next = put_one(&node, "k1", json!(3));
    assert_eq!(next["Partition"], first["Partition"]);
    assert_eq!(next["Offset"], 2, "numbered after what the store applied");
    let (status, reply) = node.post("/records/get", json!({"Records": [{"pk": "k1", "sk": ""}]}));
    assert_eq!(
        (status, &reply["Records"][0]["Data"]),
        (200, &json!(3)),
        "{reply}"
    );
    assert!(
        node.log()
            .contains("it continues after what the store applied")
    );
    // And it survives another restart.
    node.terminate();
    node.spawn();
    let (_, reply) = node.post("/records/get", json!({"Records": [{"pk": "k1", "sk": ""}]}));
    assert_eq!(reply["Records"][0]["Data"], 3, "{reply}");
}

/// A log that kept entries but ends before what the store applied (an older copy of its folder
/// put back): its partition is not served and takes no writes, saying why, rather than
/// number them as entries the store already applied.
#[test]
fn a_log_that_ends_before_its_store_takes_no_writes_for_that_partition() {
    let mut node = Node::start();
    let first = put_one(&node, "k1", json!(1));
    node.terminate();
    let old_log = tempfile::tempdir().unwrap();
    copy_dir(&node.data.join("log"), old_log.path());
    node.spawn();
    put_one(&node, "k1", json!(2));
    put_one(&node, "k1", json!(3));
    node.terminate();
    std::fs::remove_dir_all(node.data.join("log")).unwrap();
    copy_dir(old_log.path(), &node.data.join("log"));
    node.spawn();
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "k1", "sk": "", "data": 4}], "wait": true}),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "log_mismatch", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the log ends at offset 1") && message.contains("nothing was written"),
        "{message}"
    );
    let partition = first["Partition"].as_u64().unwrap();
    let (status, ready) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains(&format!("partition {partition} is not served")),
        "{ready}"
    );
    // Other partitions take writes as before.
    let other = (0..100).map(|i| format!("other{i}")).find(|pk| {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": pk, "sk": "", "data": 1}], "wait": true}),
        );
        status == 200 && position(&reply)["Partition"] != first["Partition"]
    });
    assert!(other.is_some(), "no other partition took a write");
}

/// Another node's log folder put in place of this node's, holding more entries than its store
/// applied: by offsets alone the node would go on after what it applied, skipping that log's
/// first entries for good. The partition stops instead, unserved, and takes no writes.
#[test]
fn another_nodes_log_put_in_place_is_not_continued() {
    let mut node = Node::start();
    let first: Vec<Value> = (1..=3).map(|i| put_one(&node, "k1", json!(i))).collect();
    node.terminate();
    let mut other = Node::start();
    for i in 1..=6 {
        put_one(&other, "k1", json!(100 + i));
    }
    other.terminate();
    std::fs::remove_dir_all(node.data.join("log")).unwrap();
    copy_dir(&other.data.join("log"), &node.data.join("log"));
    node.spawn();
    let partition = first[0]["Partition"].as_u64().unwrap();
    let last = first[2]["Offset"].as_u64().unwrap();
    node.wait_until("the partition stops", Duration::from_secs(30), |n| {
        let (status, ready) = n.get_url(&n.url("/ready"));
        status == 503 && ready.contains(&format!("another entry at offset {last}"))
    });
    let (status, ready) = node.get_url(&node.url("/ready"));
    assert!(
        !ready.contains("catching up"),
        "a partition not served is not said to catch up: {ready}"
    );
    assert_eq!(status, 503);
    let (status, reply) = node.post("/records/get", json!({"Records": [{"pk": "k1", "sk": ""}]}));
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("partition {partition} is not served")),
        "{reply}"
    );
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "k1", "sk": "", "data": 4}], "wait": true}),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "log_mismatch", "{reply}");
    // Redis writes alike.
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("SET").arg("k1").arg("5").query(&mut redis);
    let e = refused.unwrap_err().to_string();
    assert!(e.contains("another entry at offset"), "{e}");
}
