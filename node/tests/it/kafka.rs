//! The Kafka log, against a real Kafka-protocol broker (nisshi) that each test starts for itself.

use crate::common;

use crate::watch::Watcher;
use common::{Broker, Node, kafka_env, run_to_exit};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: u64 = 4;

fn put(node: &Node, pk: &str, data: Value, cond: Option<&str>) -> Value {
    let mut record = json!({"pk": pk, "sk": "s", "data": data});
    if let Some(c) = cond {
        record["if"] = c.into();
    }
    let (status, reply) = node.post("/records/put", json!({"Records": [record]}));
    assert_eq!(status, 200, "{reply}");
    reply["Positions"][0].clone()
}

fn owns_all(node: &Node) -> bool {
    node.owned().len() as u64 == PARTITIONS
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `payload` to the partition of `pk` in `namespace`'s mutations topic as a producer
/// other than FireScroll would (rdkafka, key = pk, explicit partition); its position.
fn produce(broker: &Broker, namespace: &str, pk: &str, payload: &str) -> Value {
    let partition = firescroll::model::partition_of(pk, PARTITIONS as u32) as i32;
    let offset = runtime().block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.seeds())
            .create()
            .unwrap();
        let delivered = producer
            .send(
                FutureRecord::to(&format!("firescroll_{namespace}_mutations"))
                    .key(pk)
                    .partition(partition)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(delivered.partition, partition);
        delivered.offset
    });
    json!({"Partition": partition, "Offset": offset})
}

/// A log entry (v1) of one put of `{"n": n}` at (pk, "s"), as another producer writes it.
fn put_entry(pk: &str, n: u32) -> String {
    format!(r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"{pk}","sk":"s","data":{{"n":{n}}}}}]}}"#)
}

#[test]
fn one_replica_group_splits_partitions_and_survives_a_kill_9() {
    let broker = Broker::start();
    // `a` deletes what it loses, so after the takeover it must rebuild those partitions from the log.
    let mut a_env = kafka_env(&broker, "split", "rg", "a");
    a_env.push(("DROP_RELEASED_PARTITIONS".into(), "1".into()));
    let a = Node::start_env(&a_env);
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    let mut b = Node::start_env(&kafka_env(&broker, "split", "rg", "b"));
    let split = |_: &Node| {
        let (oa, ob): (BTreeSet<u64>, BTreeSet<u64>) = (
            a.owned().into_iter().collect(),
            b.owned().into_iter().collect(),
        );
        !oa.is_empty()
            && !ob.is_empty()
            && oa.is_disjoint(&ob)
            && oa.len() + ob.len() == PARTITIONS as usize
    };
    a.wait_until(
        "the partitions split between a and b",
        Duration::from_secs(30),
        split,
    );

    let positions: Vec<Value> = (0..40)
        .map(|i| put(&a, &format!("k{i}"), json!(i), None))
        .collect();
    // Each node applies only the partitions it owns: together they hold every record once.
    a.wait_until("a and b applied everything", Duration::from_secs(30), |a| {
        let count = |n: &Node| {
            n.partitions()
                .iter()
                .map(|p| p["records"].as_u64().unwrap())
                .sum::<u64>()
        };
        count(a) + count(&b) == 40
    });

    assert!(
        a.log().contains("released partition's data deleted"),
        "{}",
        a.log()
    );
    b.kill9();
    let killed = Instant::now();
    a.wait_until(
        "a takes over b's partitions",
        Duration::from_secs(60),
        owns_all,
    );
    let takeover = killed.elapsed();
    let keys: Vec<Value> = (0..40)
        .map(|i| json!({"pk": format!("k{i}"), "sk": "s"}))
        .collect();
    let (status, got) = a.post(
        "/records/get",
        json!({"Records": keys, "min_offsets": positions}),
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["Records"].as_array().unwrap().len(), 40, "{got}");
    println!("takeover after kill -9: {takeover:?} (session timeout 2 s)");
}

#[test]
fn two_replica_groups_each_hold_everything_with_equal_digests() {
    let broker = Broker::start();
    let a = Node::start_env(&kafka_env(&broker, "groups", "rg1", "a"));
    let b = Node::start_env(&kafka_env(&broker, "groups", "rg2", "b"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    b.wait_until("b owns every partition", Duration::from_secs(30), owns_all);
    let mut last = Vec::new();
    for i in 0..60 {
        let pk = format!("k{}", i % 17);
        last.push(match i % 4 {
            0 => put(&a, &pk, json!({"v": i}), Some("data == null")),
            1 => put(&b, &pk, json!({"v": i}), Some("data.v < 1000")),
            2 => put(&a, &pk, json!({"v": i}), None),
            _ => {
                let (_, reply) = b.post(
                    "/records/delete",
                    json!({"Records": [{"pk": pk, "sk": "s", "if": "data.v % 2 == 0"}]}),
                );
                reply["Positions"][0].clone()
            }
        });
    }
    for node in [&a, &b] {
        let (status, reply) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "k0", "sk": "s"}], "min_offsets": last}),
        );
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(a.digests(), b.digests());
    assert!(
        a.partitions()
            .iter()
            .any(|p| p["records"].as_u64().unwrap() > 0)
    );
    // Every batch was announced by the log (librdkafka's queue callback), none found only by
    // the appliers' once-a-second sweep.
    for node in [&a, &b] {
        let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
        assert!(
            metrics
                .lines()
                .any(|l| l == "firescroll_apply_missed_wakeups_total 0"),
            "the log missed wake-ups:\n{metrics}"
        );
    }
}

#[test]
fn counters_and_watch_from_both_replica_groups_add_up_with_equal_digests() {
    let broker = Broker::start();
    // Both run a release that applies log format v7, so they write it (JSON edits at a path,
    // filters with functions and patterns).
    let env = |group: &str, instance: &str| {
        let mut env = kafka_env(&broker, "counters", group, instance);
        env.push(("ENTRY_WRITE_VERSION".into(), "7".into()));
        env
    };
    let a = Node::start_env(&env("rg1", "a"));
    let b = Node::start_env(&env("rg2", "b"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    b.wait_until("b owns every partition", Duration::from_secs(30), owns_all);
    // Four clients on each group's node increment the same counters, edit one JSON document
    // at paths and run WATCH loops on one key: nothing is lost, whichever node accepted the
    // write.
    let script = format!(
        r#"
import redis, threading
redis.Redis(port={a}).json().set("doc", "$", {{"n": 0, "log": [], "flags": [{{"id": "edge-1", "on": 0}}, {{"id": "core-1", "on": 0}}]}})
def work(port):
    c = redis.Redis(port=port)
    for _ in range(50):
        c.incr("hits")
        c.hincrby("stats", "bytes", 3)
        c.incrbyfloat("ratio", "0.5")
        c.json().numincrby("doc", "$.n", 1)
        c.json().arrappend("doc", "$.log", port)
        c.json().numincrby("doc", "$.flags[?@.id =~ '^edge-' && length(@.id) == 6].on", 1)
        with c.pipeline() as p:
            while True:
                try:
                    p.watch("watched")
                    v = int(p.get("watched") or 0)
                    p.multi()
                    p.set("watched", v + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
threads = [threading.Thread(target=work, args=(port,)) for port in ({a}, {b}) * 4]
[t.start() for t in threads]; [t.join() for t in threads]
# Each node applies the other's writes at its own pace: wait (bounded) until both have all.
import time
want = ("400", "1200", "200", "400", [400], [400], [400, 0])
for port in ({a}, {b}):
    r = redis.Redis(port=port, decode_responses=True)
    deadline = time.time() + 20
    while True:
        got = (r.get("hits"), r.hget("stats", "bytes"), r.get("ratio"), r.get("watched"),
               r.json().get("doc", "$.n"), r.json().arrlen("doc", "$.log"),
               r.json().get("doc", "$.flags[*].on"))
        if got == want or time.time() > deadline:
            break
        time.sleep(0.1)
    assert got == want, (port, got)
print("ok")
"#,
        a = a.resp,
        b = b.resp
    );
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "redis-py (pip install redis)",
    );
    // Both groups applied the same log to the same bytes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while a.digests() != b.digests() {
        assert!(std::time::Instant::now() < deadline, "digests differ");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn restart_resumes_from_the_store_without_reapplying() {
    let broker = Broker::start();
    let env = kafka_env(&broker, "resume", "rg", "solo");
    let mut node = Node::start_env(&env);
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let mut positions = Vec::new();
    for k in 0..30 {
        let cond = if k == 0 {
            "data == null".to_string()
        } else {
            format!("data.n == {k}")
        };
        positions.push(put(&node, "counter", json!({"n": k + 1}), Some(&cond)));
    }
    let read = |node: &Node| {
        let (status, got) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "counter", "sk": "s"}], "min_offsets": positions}),
        );
        assert_eq!(status, 200, "{got}");
        got["Records"][0].clone()
    };
    let before = read(&node);
    assert_eq!(before["Data"], json!({"n": 30}));
    node.kill9();
    node.spawn();
    node.wait_until(
        "owns every partition again",
        Duration::from_secs(60),
        owns_all,
    );
    let after = read(&node);
    assert_eq!(after, before, "re-applied or lost something");
    let (_, outcomes) = node.post("/records/outcomes", json!({"Positions": positions}));
    for o in outcomes["Outcomes"].as_array().unwrap() {
        assert_eq!(o["Outcome"]["Status"], "applied", "{o}");
    }
}

#[test]
fn partition_count_mismatches_refuse_to_start() {
    let broker = Broker::start();
    let mut first = Node::start_env(&kafka_env(&broker, "pin", "rg", "a"));
    first.terminate();
    let env = |ns: &str, partitions: &str| -> Vec<(String, String)> {
        let mut env = kafka_env(&broker, ns, "rg", "b");
        env.push(("PARTITIONS".into(), partitions.into()));
        env
    };
    let run = |env: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_to_exit(&pairs, &[])
    };
    let (code, err) = run(env("pin", "8"));
    assert_ne!(code, 0);
    assert!(
        err.contains("has 4 partitions but PARTITIONS is 8"),
        "{err}"
    );

    // A namespace whose partitions topic pins 2, although its mutations topic has 4.
    runtime().block_on(async {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", broker.seeds());
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        let topics = [
            NewTopic::new("firescroll_pinned_mutations", 4, TopicReplication::Fixed(1)),
            NewTopic::new(
                "firescroll_pinned_partitions",
                1,
                TopicReplication::Fixed(1),
            ),
        ];
        for r in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
        let producer: FutureProducer = config.create().unwrap();
        producer
            .send(
                FutureRecord::<(), _>::to("firescroll_pinned_partitions")
                    .partition(0)
                    .payload(r#"{"NumPartitions":2}"#),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    });
    let (code, err) = run(env("pinned", "4"));
    assert_ne!(code, 0);
    assert!(
        err.contains("was created with 2 partitions") && err.contains("PARTITIONS=2"),
        "{err}"
    );
}

#[test]
fn broker_outage_keeps_reads_fails_writes_fast_and_recovers() {
    let mut broker = Broker::start();
    let node = Node::start_env(&kafka_env(&broker, "outage", "rg", "solo"));
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let before = put(&node, "cfg", json!({"v": 1}), None);
    // A key in every partition, so every one is read through the outage.
    let keys: Vec<Value> = (0..16)
        .map(|i| json!({"pk": format!("k{i}"), "sk": "s"}))
        .collect();
    let records: Vec<Value> = (0..16)
        .map(|i| json!({"pk": format!("k{i}"), "sk": "s", "data": i}))
        .collect();
    let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
    assert_eq!(status, 200, "{reply}");
    let read = |min: &Value| {
        node.post(
            "/records/get",
            json!({"Records": [{"pk": "cfg", "sk": "s"}], "min_offsets": [min]}),
        )
    };
    let read_all = || {
        let (status, got) = node.post("/records/get", json!({ "Records": keys }));
        assert_eq!(
            status, 200,
            "a read failed while the broker was away: {got}"
        );
        let data: Vec<Value> = got["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Data"].clone())
            .collect();
        assert_eq!(data, (0..16).map(|i| json!(i)).collect::<Vec<_>>(), "{got}");
    };
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(read(&before).1["Records"][0]["Data"], json!({"v": 1}));
    // A watch's place before the outage, to resume from after it.
    let token = {
        let mut watch = Watcher::open(&node, "pk=cfg", None);
        assert_eq!(watch.status, 200);
        let bookmark = watch.next().expect("a bookmark");
        assert_eq!(bookmark.event, "bookmark", "{bookmark:?}");
        bookmark.id.expect("a token")
    };
    // Applied after the token and before the outage: the history must still hold it after.
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "cfg", "sk": "s1", "data": "pre"}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");

    broker.stop();
    let (status, got) = read(&before);
    assert_eq!(
        (status, &got["Records"][0]["Data"]),
        (200, &json!({"v": 1})),
        "reads must not need the broker"
    );
    let started = Instant::now();
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "cfg", "sk": "s", "data": {"v": 2}}]}),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "log_unavailable", "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the write failed only after {:?}",
        started.elapsed()
    );
    // The group session runs out (KAFKA_SESSION_MS): the consumer gives every partition up.
    // Nobody can apply them while the broker is away, so their last state still answers reads
    // (they once all answered 503 here until the group settled again).
    node.wait_until("every partition on standby", Duration::from_secs(30), |n| {
        let (_, body) = n.get_url(&n.internal_url("/debug/partitions"));
        let v: Value = serde_json::from_str(&body).unwrap();
        v["partitions"].as_array().unwrap().is_empty()
            && v["standby"].as_array().unwrap().len() as u64 == PARTITIONS
    });
    let (_, body) = node.get_url(&node.internal_url("/debug/partitions"));
    let v: Value = serde_json::from_str(&body).unwrap();
    for p in v["standby"].as_array().unwrap() {
        assert_eq!(p["health"]["state"], "released", "{p}");
    }
    assert_eq!(
        node.metric("firescroll_partitions_standby"),
        PARTITIONS as f64
    );
    read_all();
    assert_eq!(read(&before).0, 200);
    let value: Option<String> = redis::cmd("HGET")
        .arg("k3")
        .arg("s")
        .query(&mut redis)
        .unwrap();
    assert_eq!(value.as_deref(), Some("3"));
    let (status, body) = node.get_url(&node.url("/ready"));
    assert_eq!(
        status, 200,
        "partitions on standby still serve reads: {body}"
    );

    // The consumers fail every poll while the broker is away (~10 a second): each kind of
    // failure is logged once per 30 s, with how many were left out, not every time.
    let failed_polls = node.log().matches("consumer error").count();
    assert!(
        (1..=5).contains(&failed_polls),
        "{failed_polls} 'consumer error' lines in the outage:\n{}",
        node.log()
    );
    broker.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        read_all();
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "cfg", "sk": "s2", "data": {"v": 3}}]}),
        );
        if status == 200 {
            break reply["Positions"][0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "writes never recovered: {reply}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Until the group gives the partition back, a read naming a write it has not applied
    // waits for it (bounded: then a 504, never a 503 nor a shorter answer); reads without
    // positions are answered all along.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        read_all();
        let (status, got) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "cfg", "sk": "s"}, {"pk": "cfg", "sk": "s2"}], "min_offsets": [after]}),
        );
        if status == 200 {
            break got;
        }
        assert_eq!(status, 504, "{got}");
        assert!(Instant::now() < deadline, "reads never recovered: {got}");
    };
    assert_eq!(got["Records"].as_array().unwrap().len(), 2, "{got}");
    node.wait_until("owns every partition again", Duration::from_secs(30), |n| {
        let (_, body) = n.get_url(&n.internal_url("/debug/partitions"));
        let v: Value = serde_json::from_str(&body).unwrap();
        v["partitions"].as_array().unwrap().len() as u64 == PARTITIONS
            && v["standby"].as_array().unwrap().is_empty()
    });
    assert_eq!(node.metric("firescroll_partitions_standby"), 0.0);
    // The partitions came back where the outage took them, with their change history: a watch
    // resumes from before the outage (it once got 410 and had to read everything again).
    let mut watch = Watcher::open(&node, "pk=cfg", Some(&token));
    assert_eq!(
        watch.status, 200,
        "a watch from before the outage must resume"
    );
    let changes: Vec<(Value, Value)> = (0..2)
        .map(|_| watch.change())
        .map(|c| (c.data["Sk"].clone(), c.data["Data"].clone()))
        .collect();
    assert_eq!(
        changes,
        [(json!("s1"), json!("pre")), (json!("s2"), json!({"v": 3}))]
    );
}

#[test]
fn entries_from_other_producers_are_applied() {
    let broker = Broker::start();
    let node = Node::start_env(&kafka_env(&broker, "interop", "rg", "solo"));
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let v1 = produce(
        &broker,
        "interop",
        "cdc",
        r#"{"v":1,"ts_ms":1732590000000,"ops":[{"op":"put","pk":"cdc","sk":"row1","data":{"from":"cdc"}},{"op":"put","pk":"cdc","sk":"row2","data":[1,2]}]}"#,
    );
    let legacy = produce(
        &broker,
        "interop",
        "old",
        r#"{"pk":"old","sk":"sk1","data":{"hey":"ho"},"ts_ms":1683468191123,"mutation":"put","if":null}"#,
    );
    let (status, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "cdc", "sk": "row1"}, {"pk": "cdc", "sk": "row2"}, {"pk": "old", "sk": "sk1"}], "min_offsets": [v1, legacy]}),
    );
    assert_eq!(status, 200, "{got}");
    let records = got["Records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{got}");
    assert_eq!(records[0]["Data"], json!({"from": "cdc"}));
    assert_eq!(records[0]["CreatedAt"], "2024-11-26T03:00:00.000Z");
    assert_eq!(records[2]["Data"], json!({"hey": "ho"}));
}

/// Starts the stopped `node` again with `REJECT_ENTRIES_AT` naming `rejected` (the operator's
/// way past an entry that holds its partition on every node), and checks that the write at
/// `after` then applies, leaving `cfg`/`s` holding `data`.
fn restart_rejecting(node: &mut Node, rejected: &Value, after: &Value, data: Value) {
    node.set_env(
        "REJECT_ENTRIES_AT",
        &format!("{}:{}", rejected["Partition"], rejected["Offset"]),
    );
    node.spawn();
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "cfg", "sk": "s"}], "min_offsets": [after]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], data, "{reply}");
}

#[test]
fn an_entry_of_a_newer_log_format_stops_its_partition_until_a_release_applies_it_or_the_operator_rejects_it()
 {
    let broker = Broker::start();
    let mut node = Node::start_env(&kafka_env(&broker, "newer", "rg", "solo"));
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let before = put(&node, "cfg", json!(1), None);
    let partition = before["Partition"].as_i64().unwrap();
    // What a newer FireScroll might write (an op kind this one does not know), then a v1
    // write after it: this node must neither reject the first (a newer replica applies it)
    // nor apply the second ahead of it.
    let newer_version = firescroll::model::ENTRY_VERSION + 1;
    let newer = produce(
        &broker,
        "newer",
        "cfg",
        &format!(
            r#"{{"v":{newer_version},"ts_ms":1,"ops":[{{"op":"rename","pk":"cfg","sk":"s","to":"cfg2"}}]}}"#
        ),
    );
    let after = put(&node, "cfg", json!(3), None);
    let other_pk = (0..)
        .map(|i| format!("other{i}"))
        .find(|pk| i64::from(firescroll::model::partition_of(pk, PARTITIONS as u32)) != partition)
        .unwrap();
    let stopped_at = format!(
        "partition {partition} is not served: the entry at offset {} is log format v{newer_version}",
        newer["Offset"]
    );
    for round in ["first start", "after a restart"] {
        // (Partitions open one by one after a restart: every one, before the others are used.)
        node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
        node.wait_until(
            &format!("{round}: not ready, naming the entry"),
            Duration::from_secs(30),
            |n| {
                let (status, body) = n.get_url(&n.url("/ready"));
                status == 503 && body.contains(&stopped_at)
            },
        );
        // Its records are not served stale: the error says why and what to run.
        let (status, reply) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "cfg", "sk": "s"}]}),
        );
        assert_eq!(status, 503, "{round}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&stopped_at)
                && message.contains(&format!("release that applies v{newer_version}")),
            "{round}: {message}"
        );
        // Outcomes are not answered from it either (the newer entry has none here).
        let (status, reply) = node.post(
            "/records/outcomes",
            json!({"Positions": [before, newer, after]}),
        );
        assert_eq!(status, 503, "{round}: {reply}");
        assert!(reply.to_string().contains(&stopped_at), "{round}: {reply}");
        // Other partitions take writes and serve reads.
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": other_pk, "sk": "s", "data": round}], "wait": true}),
        );
        assert_eq!(status, 200, "{round}: {reply}");
        let (status, reply) = node.post(
            "/records/get",
            json!({"Records": [{"pk": other_pk, "sk": "s"}]}),
        );
        assert_eq!(status, 200, "{round}: {reply}");
        assert_eq!(reply["Records"][0]["Data"], json!(round), "{round}");
        node.terminate();
        if round == "first start" {
            node.spawn();
        }
    }
    // The operator's way past an entry no release will apply: rejected unread, by position,
    // and the partition goes on with the write after it.
    restart_rejecting(&mut node, &newer, &after, json!(3));
    let (status, reply) = node.post(
        "/records/outcomes",
        json!({"Positions": [before, newer, after]}),
    );
    assert_eq!(status, 200, "{reply}");
    let outcomes = reply["Outcomes"].as_array().unwrap();
    let statuses: Vec<&Value> = outcomes.iter().map(|o| &o["Outcome"]["Status"]).collect();
    assert_eq!(
        statuses,
        [&json!("applied"), &json!("rejected"), &json!("applied")],
        "{reply}"
    );
    assert_eq!(outcomes[1]["Outcome"]["Kind"], "malformed_entry", "{reply}");
    assert_eq!(node.get_url(&node.url("/ready")).0, 200);
}

#[test]
fn an_entry_naming_a_module_nobody_uploaded_is_reported_and_the_operator_can_reject_it() {
    let broker = Broker::start();
    let mut env = kafka_env(&broker, "nomodule", "rg", "solo");
    env.push(("STALL_THRESHOLD_MS".into(), "300".into()));
    let mut node = Node::start_env(&env);
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    // A producer's entry naming a digest no module has (a typo, a module never uploaded):
    // the partition waits there, as for a module still on its way, on every replica.
    let digest = "f".repeat(64);
    let named = produce(
        &broker,
        "nomodule",
        "cfg",
        &format!(
            r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"cfg","sk":"s","data":1,"if_plugin":"{digest}"}}]}}"#
        ),
    );
    let after = put(&node, "cfg", json!(2), None);
    let (partition, offset) = (&named["Partition"], &named["Offset"]);
    node.wait_until(
        "not ready, naming the module, the entry and the ways on",
        Duration::from_secs(30),
        |n| {
            let (status, body) = n.get_url(&n.url("/ready"));
            status == 503
                && body.contains(&format!("partition {partition} stalled for"))
                && body.contains(&format!(
                    "the entry at offset {offset} names the plugin module sha256:{digest}"
                ))
                && body.contains(&format!("REJECT_ENTRIES_AT={partition}:{offset}"))
        },
    );
    let report = node
        .partitions()
        .into_iter()
        .find(|p| &p["partition"] == partition)
        .unwrap();
    assert_eq!(report["stalled"]["plugin"], json!(digest), "{report}");
    assert_eq!(&report["stalled"]["offset"], offset, "{report}");
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    assert!(
        metrics.contains(&format!(
            "firescroll_partition_stalled{{partition=\"{partition}\"}} 1"
        )),
        "{metrics}"
    );
    // The operator's way past it: rejected unread, and the write after it applies.
    node.terminate();
    restart_rejecting(&mut node, &named, &after, json!(2));
    node.wait_until("ready again", Duration::from_secs(10), |n| {
        n.get_url(&n.url("/ready")).0 == 200
    });
}

#[test]
fn a_partition_behind_the_log_start_is_not_served() {
    let broker = Broker::start();
    let env = kafka_env(&broker, "gap", "rg", "solo");
    let mut node = Node::start_env(&env);
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let first = put(&node, "gapkey", json!(1), None);
    let partition = first["Partition"].as_i64().unwrap() as i32;
    let (status, _) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "gapkey", "sk": "s"}], "min_offsets": [first]}),
    );
    assert_eq!(status, 200);
    node.terminate();
    // While the node is down, more is written, and retention removes everything before it.
    let end = runtime().block_on(async {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", broker.seeds());
        let producer: FutureProducer = config.create().unwrap();
        let mut last = 0;
        for i in 0..5 {
            let entry = format!(
                r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"gapkey","sk":"s{i}","data":{i}}}]}}"#
            );
            last = producer
                .send(
                    FutureRecord::to("firescroll_gap_mutations")
                        .key("gapkey")
                        .partition(partition)
                        .payload(&entry),
                    Duration::from_secs(10),
                )
                .await
                .unwrap()
                .offset;
        }
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(
            "firescroll_gap_mutations",
            partition,
            rdkafka::Offset::Offset(last),
        )
        .unwrap();
        admin
            .delete_records(&tpl, &AdminOptions::new())
            .await
            .unwrap();
        last
    });
    assert!(end > 1);
    node.spawn();
    node.wait_until(
        "not ready because of the gap",
        Duration::from_secs(30),
        |n| {
            let (status, body) = n.get_url(&n.url("/ready"));
            status == 503 && body.contains(&format!("partition {partition} is not served"))
        },
    );
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "gapkey", "sk": "s"}]}),
    );
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the log starts at"),
        "{reply}"
    );
}

#[test]
fn writes_to_partitions_owned_elsewhere_are_acknowledged_and_never_block_local_reads() {
    let broker = Broker::start();
    let a = Node::start_env(&kafka_env(&broker, "elsewhere", "rg", "a"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    let b = Node::start_env(&kafka_env(&broker, "elsewhere", "rg", "b"));
    a.wait_until("the partitions split", Duration::from_secs(30), |a| {
        !b.owned().is_empty() && a.owned().len() + b.owned().len() == PARTITIONS as usize
    });
    let owned_by_a = a.owned();
    let pk_where = |mine: bool| {
        (0..)
            .map(|i| format!("pk{i}"))
            .find(|pk| {
                owned_by_a.contains(&u64::from(firescroll::model::partition_of(
                    pk,
                    PARTITIONS as u32,
                ))) == mine
            })
            .unwrap()
    };
    let (local, remote) = (pk_where(true), pk_where(false));

    // "wait" on a partition another node applies: the durable write is acknowledged, never a 503.
    let (status, reply) = a.post(
        "/records/put",
        json!({"Records": [{"pk": remote, "sk": "", "data": 1}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "pending",
        "{reply}"
    );

    // A Redis connection that wrote to a remote partition still reads its local keys.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", a.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::Commands::set(&mut con, &local, "here").unwrap();
    let _: () = redis::Commands::set(&mut con, &remote, "there").unwrap();
    let got: String = redis::Commands::get(&mut con, &local).unwrap();
    assert_eq!(got, "here");
}

#[test]
fn a_python_confluent_kafka_producer_writes_entries() {
    let broker = Broker::start();
    let node = Node::start_env(&kafka_env(&broker, "python", "rg", "solo"));
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    // The documented recipe: message key = pk, and Kafka's murmur2 partitioner (the Java client's
    // default; librdkafka-based clients like this one must ask for it) picks the partition.
    let script = format!(
        r#"
import json
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": "{seeds}", "acks": "all", "partitioner": "murmur2_random"}})
out = []
def done(err, msg):
    assert err is None, err
    out.append({{"Partition": msg.partition(), "Offset": msg.offset()}})
entry = {{"v": 1, "ts_ms": 1732590000000, "ops": [{{"op": "put", "pk": "py-cdc", "sk": "row", "data": {{"source": "python"}}}}]}}
p.produce("firescroll_python_mutations", key=b"py-cdc", value=json.dumps(entry).encode(), on_delivery=done)
p.flush(10)
print(json.dumps(out))
"#,
        seeds = broker.seeds()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "confluent-kafka (pip install confluent-kafka; scripts/test.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let positions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        positions[0]["Partition"].as_u64().unwrap(),
        u64::from(firescroll::model::partition_of("py-cdc", PARTITIONS as u32)),
        "murmur2_random and partition_of agree"
    );
    let (status, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "py-cdc", "sk": "row"}], "min_offsets": positions}),
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["Records"][0]["Data"], json!({"source": "python"}));
}

#[test]
fn a_poison_pill_is_the_same_rejection_on_every_replica_group() {
    let broker = Broker::start();
    let a = Node::start_env(&kafka_env(&broker, "pill", "rg1", "a"));
    let b = Node::start_env(&kafka_env(&broker, "pill", "rg2", "b"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    b.wait_until("b owns every partition", Duration::from_secs(30), owns_all);
    put(&a, "cfg", json!({"x": 1}), None);
    // Accepted (false without a record), then an allocation of 10 TB against the stored one.
    let pill = put(
        &a,
        "cfg",
        json!({"x": 2}),
        Some(r#"data.x == 1 && repeat(repeat("aaaaaaaaaa", 1000000), 1000000) == """#),
    );
    // A foreign producer's entry with data nested past the limit: malformed, never stored.
    let deep = format!(
        r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"cfg","sk":"deep","data":{}1{}}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let deep_position = produce(&broker, "pill", "cfg", &deep);
    // One naming as its plugin 64 bytes that are not 64 hex digits, a pair of them cut through
    // a two-byte character: its parse once panicked, and every replica's applier with it.
    let cut = format!("a\u{e9}{}", "a".repeat(61));
    let cut_position = produce(
        &broker,
        "pill",
        "cfg",
        &format!(
            r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"cfg","sk":"s","data":0,"if_plugin":"{cut}"}}]}}"#
        ),
    );
    let after = put(&b, "cfg", json!({"x": 3}), Some("data.x == 1"));
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let reply = loop {
            let (status, reply) = node.post(
                "/records/outcomes",
                json!({"Positions": [pill, deep_position, cut_position, after]}),
            );
            assert_eq!(status, 200, "{reply}");
            if reply["Outcomes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["Outcome"].is_object() && o["Outcome"]["Status"] != "pending")
            {
                break reply;
            }
            assert!(Instant::now() < deadline, "never applied: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let outcomes = reply["Outcomes"].as_array().unwrap();
        let pill = &outcomes[0]["Outcome"];
        assert_eq!(pill["Kind"], "condition_error", "{reply}");
        assert!(
            pill["Message"]
                .as_str()
                .unwrap()
                .contains("budget exceeded"),
            "{reply}"
        );
        assert_eq!(outcomes[1]["Outcome"]["Kind"], "malformed_entry", "{reply}");
        let cut = &outcomes[2]["Outcome"];
        assert_eq!(cut["Kind"], "plugin_error", "{reply}");
        assert!(
            cut["Message"]
                .as_str()
                .unwrap()
                .contains("by the sha256 digest"),
            "{reply}"
        );
        assert_eq!(outcomes[3]["Outcome"]["Status"], "applied", "{reply}");
        let (_, got) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "cfg", "sk": "s"}]}),
        );
        assert_eq!(got["Records"][0]["Data"], json!({"x": 3}));
        assert_eq!(node.get_url(&node.url("/ready")).0, 200);
    }
    let digests =
        |n: &Node| -> Vec<Value> { n.partitions().iter().map(|p| p["digest"].clone()).collect() };
    assert_eq!(digests(&a), digests(&b));
}

#[test]
fn a_new_replica_group_starts_from_s3_snapshots_when_the_log_head_is_gone() {
    let broker = Broker::start();
    let s3 = common::S3Server::start();
    let with_s3 = |group: &str, instance: &str| {
        let mut env = kafka_env(&broker, "snap", group, instance);
        env.extend(s3.env());
        env
    };
    let a = Node::start_env(&with_s3("rg1", "a"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(250) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"pk": format!("k{}", i % 97), "sk": format!("s{i}"), "data": {"i": i}}))
            .collect();
        let (status, reply) = a.post("/records/put", json!({"Records": records, "wait": true}));
        assert_eq!(status, 200, "{reply}");
    }
    put(&a, "k1", json!("never"), Some("data == null"));
    // A plugin among them: uploaded through the plugins topic, named by entries on both sides
    // of the snapshot.
    let (status, binding) =
        crate::plugins::upload(&a, "gate", crate::plugins::example("semver-gate"), None);
    assert_eq!(status, 200, "{binding}");
    let gated = |node: &Node, version: &str| {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "svc", "sk": "cfg", "data": {"version": version}, "if_plugin": "gate"}], "wait": true}),
        );
        assert_eq!(status, 200, "{reply}");
        reply["Positions"][0].clone()
    };
    assert_eq!(gated(&a, "1.2.0")["Outcome"]["Status"], "applied");
    let reply = a
        .client()
        .post(a.url("/admin/snapshots"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let taken: Value = serde_json::from_str(&reply).unwrap();
    let taken = taken["Snapshots"].as_array().unwrap().clone();
    assert_eq!(taken.len() as u64, PARTITIONS, "{reply}");
    let mut last = Value::Null;
    for i in 0..40 {
        last = put(&a, &format!("after{i}"), json!(i), None);
    }
    // After the snapshot: an entry the restored replica must run the plugin for.
    assert_eq!(gated(&a, "1.1.0")["Outcome"]["Status"], "rejected");
    assert_eq!(gated(&a, "1.3.0")["Outcome"]["Status"], "applied");
    // Retention removes every entry the snapshots hold: only a snapshot can bring them back.
    let heads: Vec<(i32, i64)> = taken
        .iter()
        .map(|t| {
            (
                t["Partition"].as_i64().unwrap() as i32,
                t["Offset"].as_i64().unwrap(),
            )
        })
        .collect();
    delete_log_head(&broker, "snap", &heads);
    // A node of another replica group, empty disk: restores every partition, then catches up.
    let b = Node::start_env(&with_s3("rg2", "b"));
    b.wait_until("b owns every partition", Duration::from_secs(30), owns_all);
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "after39", "sk": "s"}], "min_offsets": [last]}),
    );
    assert_eq!(status, 200, "{reply}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.digests() != b.digests() {
        assert!(Instant::now() < deadline, "digests differ:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, got) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "svc", "sk": "cfg"}]}),
    );
    assert_eq!(
        got["Records"][0]["Data"],
        json!({"version": "1.3.0"}),
        "{got}"
    );
    for p in b.partitions() {
        let key = taken
            .iter()
            .find(|t| t["Partition"] == p["partition"])
            .unwrap()["Key"]
            .clone();
        assert_eq!(p["restored_from"], key, "{p}");
    }
    let (status, _) = b.get_url(&b.url("/ready"));
    assert_eq!(status, 200);
}

/// Deletes every entry of the mutations topic of `namespace` below `offsets` (partition, offset).
fn delete_log_head(broker: &Broker, namespace: &str, offsets: &[(i32, i64)]) {
    runtime().block_on(async {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", broker.seeds());
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for &(partition, offset) in offsets {
            tpl.add_partition_offset(
                &format!("firescroll_{namespace}_mutations"),
                partition,
                rdkafka::Offset::Offset(offset),
            )
            .unwrap();
        }
        admin
            .delete_records(&tpl, &AdminOptions::new())
            .await
            .unwrap();
    });
}

/// Retention removes every entry `node` applied, in every partition of `namespace`.
fn delete_applied(broker: &Broker, namespace: &str, node: &Node) {
    let ends: Vec<(i32, i64)> = node
        .partitions()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap() as i32,
                p["applied_offset"].as_i64().unwrap() + 1,
            )
        })
        .collect();
    delete_log_head(broker, namespace, &ends);
}

/// A node's env with snapshots to `s3`: in replica group "rg1" only when asked, elsewhere
/// every second (so its unserved partitions are retried every second).
fn snapshot_env(
    broker: &Broker,
    s3: &common::S3Server,
    namespace: &str,
    group: &str,
    instance: &str,
) -> Vec<(String, String)> {
    let mut env = kafka_env(broker, namespace, group, instance);
    env.extend(s3.env());
    let interval = if group == "rg1" { "24h" } else { "1s" };
    env.push(("SNAPSHOT_INTERVAL".into(), interval.into()));
    env
}

#[test]
fn a_gap_no_snapshot_fills_is_not_served_and_is_served_once_one_does() {
    let broker = Broker::start();
    let mut s3 = common::S3Server::start();
    let with_s3 = |group: &str, instance: &str| snapshot_env(&broker, &s3, "gap", group, instance);
    let a = Node::start_env(&with_s3("rg1", "a"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    for i in 0..200 {
        put(&a, &format!("k{i}"), json!(i), None);
    }
    let reply = a.client().post(a.url("/admin/snapshots")).send().unwrap();
    assert_eq!(reply.status(), 200);
    let mut last = Value::Null;
    for i in 0..200 {
        last = put(&a, &format!("later{i}"), json!(i), None);
    }
    // Retention removes everything, also what came after the snapshots: no snapshot fills the gap.
    let _ = a.post(
        "/records/get",
        json!({"Records": [{"pk": "later199", "sk": "s"}], "min_offsets": [last]}),
    );
    delete_applied(&broker, "gap", &a);

    let b = Node::start_env(&with_s3("rg2", "b"));
    b.wait_until("b owns every partition", Duration::from_secs(30), owns_all);
    let (status, ready) = b.get_url(&b.url("/ready"));
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains("not served") && ready.contains("no snapshot continues the log"),
        "/ready must say which partitions are not served and why: {ready}"
    );
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "k1", "sk": "s"}]}),
    );
    assert_eq!(
        status, 503,
        "a partition with a hole is never served: {reply}"
    );
    assert!(b.log().contains("NOT SERVING partition"), "{}", b.log());

    // S3 goes away: the reason says so.
    s3.stop();
    b.wait_until("b reports S3 unreachable", Duration::from_secs(30), |b| {
        b.get_url(&b.url("/ready")).1.contains("S3 unreachable")
    });

    // S3 is back and a snapshot now reaches the log's start: b restores and serves.
    s3.spawn();
    let reply = a.client().post(a.url("/admin/snapshots")).send().unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().unwrap());
    b.wait_until("b serves again", Duration::from_secs(60), |b| {
        b.get_url(&b.url("/ready")).0 == 200
    });
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "later199", "sk": "s"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], json!(199), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.digests() != b.digests() {
        assert!(Instant::now() < deadline, "digests differ:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = b.get_url(&b.internal_url("/metrics")).1;
    assert!(
        metrics.contains("firescroll_snapshot_restores_total{result=\"ok\"} 4"),
        "{metrics}"
    );
}

#[test]
fn a_node_opening_partitions_while_s3_hangs_keeps_answering() {
    // S3 accepts connections and never answers: every partition's snapshot listing waits
    // (bounded) while the group hands this node its partitions. Meanwhile the node must answer
    // /ready and /up; it once froze whole (a lock held across the restore blocked every runtime
    // worker, and with them the S3 request it waited for).
    let broker = Broker::start();
    let s3 = common::S3Server::start();
    s3.signal("STOP");
    let mut env = kafka_env(&broker, "hang", "rg1", "a");
    env.extend(s3.env());
    let a = Node::start_env(&env);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let probes: Vec<_> = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), a.url("/ready"));
                std::thread::spawn(move || client.get(url).send().map(|r| r.status().as_u16()))
            })
            .collect();
        for probe in probes {
            let status = probe
                .join()
                .unwrap()
                .expect("/ready answers while partitions open");
            assert!(status == 200 || status == 503, "{status}");
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answered > 0);
    // S3 back: the node follows the log (which starts at 0) and serves every partition.
    s3.signal("CONT");
    a.wait_until("a serves every partition", Duration::from_secs(90), |n| {
        owns_all(n) && n.get_url(&n.url("/ready")).0 == 200
    });
    put(&a, "after", json!(1), None);
}

/// Deletes `namespace`'s mutations topic and creates it again, empty, with the same partitions
/// (what an operator resetting a topic does).
fn recreate_mutations_topic(broker: &Broker, namespace: &str) {
    let topic = format!("firescroll_{namespace}_mutations");
    runtime().block_on(async {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", broker.seeds());
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        for r in admin
            .delete_topics(&[&topic], &AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = admin
                .create_topics(
                    &[NewTopic::new(
                        &topic,
                        PARTITIONS as i32,
                        TopicReplication::Fixed(1),
                    )],
                    &AdminOptions::new(),
                )
                .await
                .unwrap();
            match created.into_iter().next().unwrap() {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("creating {topic} again: {e:?}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("creating {topic} again: {e:?}"),
            }
        }
    });
}

#[test]
fn a_topic_created_again_is_never_continued_and_its_writes_are_not_told_older_outcomes() {
    let broker = Broker::start();
    let env = kafka_env(&broker, "reborn", "rg", "solo");
    let mut node = Node::start_env(&env);
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let positions: Vec<Value> = (0..6)
        .map(|n| put(&node, "rk", json!({"n": n}), None))
        .collect();
    let partition = positions[0]["Partition"].as_u64().unwrap();
    assert_eq!(positions[5]["Offset"], 5, "{positions:?}");
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "rk", "sk": "s"}], "min_offsets": [positions[5]]}),
    );
    assert_eq!(status, 200, "{reply}");
    node.terminate();

    // The topic deleted and created again: its offsets start over at 0.
    recreate_mutations_topic(&broker, "reborn");
    node.spawn();
    node.wait_until(
        "owns every partition again",
        Duration::from_secs(60),
        owns_all,
    );
    // A write to it is numbered 0 again. The store holds the outcome of the old topic's entry 0
    // ("applied"); that is not this write's.
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "rk", "sk": "s", "data": {"n": 100}}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Positions"][0]["Partition"], partition, "{reply}");
    assert_eq!(reply["Positions"][0]["Offset"], 0, "{reply}");
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "pending",
        "an older entry's outcome was told: {reply}"
    );
    for n in 101..108 {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "rk", "sk": "s", "data": {"n": n}}]}),
        );
        assert_eq!(status, 200, "{reply}");
    }

    // Now the new topic is longer than what the store applied: by offsets alone the node went
    // on at 6 and never applied the new topic's entries 0..6. Its entry at 5 is not the one the
    // store applied there, which the node's reader, started at that entry, finds.
    let diverged = |n: &Node| {
        let (status, body) = n.get_url(&n.url("/ready"));
        status == 503 && body.contains("another entry at offset 5")
    };
    node.wait_until(
        "not ready: the topic is not the one the store applied",
        Duration::from_secs(30),
        diverged,
    );
    // And so after a restart: the check is made again, and nothing of the topic applied.
    node.terminate();
    node.spawn();
    node.wait_until(
        "owns every partition again",
        Duration::from_secs(60),
        owns_all,
    );
    node.wait_until(
        "still not ready after a restart",
        Duration::from_secs(30),
        diverged,
    );
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "rk", "sk": "s"}]}),
    );
    assert_eq!(status, 503, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("another entry at offset 5") && message.contains("remove its DB_PATH"),
        "{reply}"
    );
}

/// S3 still holds snapshots made from the topic before it was deleted and created again: a
/// new replica restores one (the new topic holds its offset), finds that the topic's entry at
/// the snapshot's last offset is another, sets the snapshot aside and rebuilds the partition
/// from the topic, rather than apply the new topic's entries on top of the old topic's state
/// and serve that mix.
#[test]
fn a_snapshot_of_the_topic_before_it_was_created_again_is_set_aside() {
    let broker = Broker::start();
    let s3 = common::S3Server::start();
    let a = Node::start_env(&snapshot_env(&broker, &s3, "resnap", "rg1", "a"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    let written: Vec<Value> = (0..6)
        .map(|n| put(&a, "rk", json!({"n": n}), None))
        .collect();
    assert_eq!(written[5]["Offset"], 5, "{written:?}");
    let (status, reply) = a.post(
        "/records/get",
        json!({"Records": [{"pk": "rk", "sk": "s"}], "min_offsets": [written[5]]}),
    );
    assert_eq!(status, 200, "{reply}");
    let reply = a.client().post(a.url("/admin/snapshots")).send().unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().unwrap());
    drop(a);

    // The topic deleted and created again, and longer than the snapshot by the time a new
    // replica starts: by offsets alone the snapshot (next offset 6) fits it.
    recreate_mutations_topic(&broker, "resnap");
    let entry = |n: u32| put_entry("rk", n);
    let produced: Vec<Value> = (100..109)
        .map(|n| produce(&broker, "resnap", "rk", &entry(n)))
        .collect();
    assert_eq!(produced[8]["Offset"], 8, "{produced:?}");
    let partition = produced[0]["Partition"].as_u64().unwrap();

    let b = Node::start_env(&snapshot_env(&broker, &s3, "resnap", "rg2", "b"));
    b.wait_until("b owns every partition", Duration::from_secs(60), owns_all);
    b.wait_until("b sets the snapshot aside", Duration::from_secs(30), |b| {
        b.log().contains("is of another log")
    });
    assert!(
        b.log().contains("partition restored from a snapshot"),
        "b did not restore the snapshot, so this tested nothing:\n{}",
        b.log()
    );
    // Rebuilt from the topic: its entries 0..8 alone, as a replica that never saw a snapshot.
    b.wait_until("b serves again", Duration::from_secs(60), |b| {
        b.get_url(&b.url("/ready")).0 == 200
    });
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "rk", "sk": "s"}], "min_offsets": [produced[8]]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], json!({"n": 108}), "{reply}");
    let c = Node::start_env(&kafka_env(&broker, "resnap", "rg3", "c"));
    c.wait_until("c owns every partition", Duration::from_secs(60), owns_all);
    let (status, reply) = c.post(
        "/records/get",
        json!({"Records": [{"pk": "rk", "sk": "s"}], "min_offsets": [produced[8]]}),
    );
    assert_eq!(status, 200, "{reply}");
    let digest = |n: &Node| {
        n.digests()
            .into_iter()
            .find(|(p, _, _)| *p == partition)
            .unwrap()
    };
    assert_eq!(digest(&b), digest(&c), "b:\n{}", b.log());
}

#[test]
fn a_partition_whose_last_applied_entry_retention_removed_goes_on_from_the_next() {
    let broker = Broker::start();
    let env = kafka_env(&broker, "trimmed", "rg", "solo");
    let mut node = Node::start_env(&env);
    node.wait_until("owns every partition", Duration::from_secs(30), owns_all);
    let written: Vec<Value> = (0..3)
        .map(|n| put(&node, "tk", json!({"n": n}), None))
        .collect();
    let last = written[2].clone();
    let partition = last["Partition"].as_i64().unwrap() as i32;
    let applied = last["Offset"].as_i64().unwrap();
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "tk", "sk": "s"}], "min_offsets": [last]}),
    );
    assert_eq!(status, 200, "{reply}");
    node.terminate();
    // While the node is down, more is written, and retention removes everything up to the
    // first entry it has not applied: the last one it applied (where its reader would start,
    // to check the log still holds it) is gone.
    let entry = |n: u32| put_entry("tk", n);
    let written: Vec<Value> = (3..6)
        .map(|n| produce(&broker, "trimmed", "tk", &entry(n)))
        .collect();
    assert_eq!(written[0]["Offset"], applied + 1);
    delete_log_head(&broker, "trimmed", &[(partition, applied + 1)]);
    node.spawn();
    node.wait_until(
        "owns every partition again",
        Duration::from_secs(60),
        owns_all,
    );
    node.wait_until("ready", Duration::from_secs(30), |n| {
        n.get_url(&n.url("/ready")).0 == 200
    });
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "tk", "sk": "s"}], "min_offsets": [written[2]]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], json!({"n": 5}), "{reply}");
    let (status, body) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_gap_met_while_running_is_filled_by_a_snapshot_without_a_restart() {
    let broker = Broker::start();
    let s3 = common::S3Server::start();
    let with_s3 = |group: &str, instance: &str| {
        let mut env = snapshot_env(&broker, &s3, "midgap", group, instance);
        // b stays in its group while it is stopped below.
        env.retain(|(k, _)| k != "KAFKA_SESSION_MS");
        env.push(("KAFKA_SESSION_MS".into(), "60000".into()));
        env
    };
    let a = Node::start_env(&with_s3("rg1", "a"));
    let b = Node::start_env(&with_s3("rg2", "b"));
    a.wait_until("a owns every partition", Duration::from_secs(30), owns_all);
    b.wait_until("b owns every partition", Duration::from_secs(60), owns_all);
    let mut last = Value::Null;
    for i in 0..40 {
        last = put(&a, &format!("k{i}"), json!(i), None);
    }
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "k39", "sk": "s"}], "min_offsets": [last]}),
    );
    assert_eq!(status, 200, "{reply}");

    // b stops (its consumer too) while more is written, a snapshots, and retention removes
    // everything b has not read: b meets the gap while running, at its next fetch.
    b.signal("STOP");
    for i in 0..40 {
        last = put(&a, &format!("later{i}"), json!(i), None);
    }
    let _ = a.post(
        "/records/get",
        json!({"Records": [{"pk": "later39", "sk": "s"}], "min_offsets": [last]}),
    );
    let reply = a.client().post(a.url("/admin/snapshots")).send().unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().unwrap());
    delete_applied(&broker, "midgap", &a);
    b.signal("CONT");

    // Each partition's retry restores a's snapshot and reads on after it, without a restart.
    b.wait_until(
        "b met the gap while running",
        Duration::from_secs(30),
        |b| b.log().contains("NOT SERVING partition"),
    );
    b.wait_until("b serves again", Duration::from_secs(60), |b| {
        b.get_url(&b.url("/ready")).0 == 200
    });
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "later39", "sk": "s"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], json!(39), "{reply}");
    // And it goes on applying what is written after.
    let next = put(&a, "after", json!("yes"), None);
    let (status, reply) = b.post(
        "/records/get",
        json!({"Records": [{"pk": "after", "sk": "s"}], "min_offsets": [next]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"], json!("yes"), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.digests() != b.digests() {
        assert!(Instant::now() < deadline, "digests differ:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
