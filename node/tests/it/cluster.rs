//! A region of several real `firescroll` processes on loopback, gossiping (SWIM) and reading from
//! each other, on a real Kafka-protocol broker: every node answers every read, over HTTP and RESP.

use crate::common;

use common::{Broker, Node, free_port, kafka_env};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 6;

/// One region at a time: each test runs a broker and 3-4 nodes, and on a small machine several
/// at once starve the Kafka group heartbeats into rebalance storms.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Environment of a gossiping node: its own gossip port, seeded by `seed` (a gossip port).
fn cluster_env(
    broker: &Broker,
    namespace: &str,
    group: &str,
    instance: &str,
    gossip: u16,
    seed: u16,
) -> Vec<(String, String)> {
    let mut env = kafka_env(broker, namespace, group, instance);
    env.extend(
        [
            ("PARTITIONS", PARTITIONS.to_string()),
            ("GOSSIP_PORT", gossip.to_string()),
            ("ADVERTISE_ADDR", "127.0.0.1".to_string()),
            // A DNS name: it resolves to all its addresses (here 127.0.0.1, and ::1 where
            // nobody listens).
            ("GOSSIP_PEERS", format!("localhost:{seed}")),
            ("GOSSIP_BROADCAST_MS", "200".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// `n` nodes in `groups` (node i in group i % groups), all seeded by node 0 only.
fn start_region(broker: &Broker, namespace: &str, n: usize, groups: usize) -> Vec<Node> {
    start_region_with(broker, namespace, n, groups, &[])
}

fn start_region_with(
    broker: &Broker,
    namespace: &str,
    n: usize,
    groups: usize,
    extra: &[(&str, &str)],
) -> Vec<Node> {
    start_region_each(broker, namespace, n, groups, |_| extra.to_vec())
}

/// Like [`start_region_with`], with `extra(i)` the environment added to node `i`'s.
fn start_region_each<'a>(
    broker: &Broker,
    namespace: &str,
    n: usize,
    groups: usize,
    extra: impl Fn(usize) -> Vec<(&'a str, &'a str)>,
) -> Vec<Node> {
    // Each gossip port is picked just before its node binds it (all picked up front, a later
    // node's could be taken by another test's node meanwhile: seen in CI); the seed's first.
    let seed = free_port();
    (0..n)
        .map(|i| {
            let port = if i == 0 { seed } else { free_port() };
            let mut env = cluster_env(
                broker,
                namespace,
                &format!("g{}", i % groups),
                &format!("n{i}"),
                port,
                seed,
            );
            env.extend(extra(i).iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Node::start_env(&env)
        })
        .collect()
}

fn debug_cluster(node: &Node) -> Value {
    let (status, text) = node.get_url(&node.internal_url("/debug/cluster"));
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Partition → sorted owner instance ids, as `node` sees the region.
fn owner_map(node: &Node) -> BTreeMap<String, Vec<String>> {
    let view = debug_cluster(node);
    let mut map: BTreeMap<String, Vec<String>> =
        serde_json::from_value(view["partition_owners"].clone()).unwrap();
    for owners in map.values_mut() {
        owners.sort();
    }
    map
}

/// Waits until every node sees every partition with `per_partition` owners, all agree, and the
/// map stays so for a second and a half (Kafka's rebalances settled).
fn wait_converged(nodes: &[Node], per_partition: usize) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stable_since: Option<(Instant, BTreeMap<String, Vec<String>>)> = None;
    loop {
        let maps: Vec<_> = nodes.iter().map(owner_map).collect();
        let complete = maps[0].len() == PARTITIONS as usize
            && maps[0].values().all(|o| o.len() == per_partition);
        if complete && maps.iter().all(|m| *m == maps[0]) {
            match &stable_since {
                Some((since, map)) if *map == maps[0] => {
                    if since.elapsed() > Duration::from_millis(1500) {
                        return maps[0].clone();
                    }
                }
                _ => stable_since = Some((Instant::now(), maps[0].clone())),
            }
        } else {
            stable_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "partition maps did not converge: {maps:#?}\n{}",
            nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every node serves every partition it owns (`/ready`): a node that rejoined may
/// still be opening its partitions after the map has converged.
fn wait_all_ready(nodes: &[Node]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in nodes {
        loop {
            let (status, body) = node.get_url(&node.url("/ready"));
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node on {} never got ready: {body}",
                node.api
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn keys(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"pk": format!("key{i}"), "sk": "s"}))
        .collect()
}

/// Writes `n` records through `node`, waiting for each entry's outcome.
fn write_all(node: &Node, n: usize) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"pk": format!("key{i}"), "sk": "s", "data": {"i": i}}))
        .collect();
    let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Asserts `node` returns all `n` records with their data, once it (or the owner it asks) has
/// applied `positions` (a write's reply: replicas apply at their own pace).
fn assert_reads_all(node: &Node, n: usize, positions: &Value) {
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": keys(n), "min_offsets": positions}),
    );
    assert_eq!(
        status,
        200,
        "node on {}: {reply}\nits log ends:\n{}",
        node.api,
        log_tail(node, 60)
    );
    let records = reply["Records"].as_array().unwrap();
    assert_eq!(records.len(), n, "node on {}: {reply}", node.api);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["Pk"], format!("key{i}"));
        assert_eq!(r["Data"], json!({"i": i}));
    }
}

/// The last `lines` lines of `node`'s log, for a failure message.
fn log_tail(node: &Node, lines: usize) -> String {
    let log = node.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn partition_of(pk: &str) -> u32 {
    firescroll::model::partition_of(pk, PARTITIONS)
}

fn redis(node: &Node) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn metric(node: &Node, name_and_labels: &str) -> f64 {
    node.metric(name_and_labels)
}

#[test]
fn a_group_split_over_two_nodes_answers_every_read_while_the_broker_is_away() {
    let _serial = serial();
    let mut broker = Broker::start();
    let nodes = start_region(&broker, "standby", 2, 1);
    wait_converged(&nodes, 1);
    let n = 30;
    let written = write_all(&nodes[0], n)["Positions"].clone();
    for node in &nodes {
        assert_reads_all(node, n, &written);
    }
    broker.stop();
    // Each node's session runs out and the log takes its partitions: each keeps its own on
    // standby, and gossip tells the other, so every read is still answered (they once all
    // failed until the group re-formed, each node knowing only its own copies).
    let standby_here = |node: &Node| -> Vec<u64> {
        let (_, body) = node.get_url(&node.internal_url("/debug/partitions"));
        let v: Value = serde_json::from_str(&body).unwrap();
        v["standby"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["partition"].as_u64().unwrap())
            .collect()
    };
    nodes[0].wait_until(
        "every partition on standby on one node or the other",
        Duration::from_secs(30),
        |_| {
            let (a, b) = (standby_here(&nodes[0]), standby_here(&nodes[1]));
            !a.is_empty() && !b.is_empty() && a.len() + b.len() == PARTITIONS as usize
        },
    );
    // Cards carry the standby copies: give them a few broadcasts.
    std::thread::sleep(Duration::from_millis(1000));
    for node in &nodes {
        assert_reads_all(node, n, &written);
        let mut con = redis(node);
        for i in [0, 7, 19, 29] {
            let got: Option<String> = redis::cmd("HGET")
                .arg(format!("key{i}"))
                .arg("s")
                .query(&mut con)
                .unwrap();
            assert_eq!(
                got,
                Some(json!({"i": i}).to_string()),
                "node on {}",
                node.api
            );
        }
    }
    // A standby copy follows no changes: a watch of a partition only the other node holds is
    // refused at once, without asking it (each such watch once cost a round trip and a warning).
    let elsewhere = standby_here(&nodes[1])[0];
    let (status, body) =
        nodes[0].get_url(&nodes[0].url(&format!("/records/watch?partition={elsewhere}")));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no node in this region serves it"), "{body}");
    assert!(
        !nodes[0].log().contains("operation=\"watch\""),
        "the standby holder was asked for a watch:\n{}",
        nodes[0].log()
    );
    broker.spawn();
    wait_converged(&nodes, 1);
    for node in &nodes {
        assert_reads_all(node, n, &written);
    }
}

#[test]
fn a_read_waiting_on_a_standby_copy_goes_to_the_member_that_serves_it_when_the_copy_ends() {
    let _serial = serial();
    let mut broker = Broker::start();
    // Two replica groups: each node holds every partition. Node 0's reads wait up to a minute,
    // and its log session outlasts node 1's: when the broker goes, node 1 gives its partitions
    // up first (node 0 still serves them, so node 1 keeps no copy), then node 0 (nobody serves
    // them now: node 0 keeps them on standby).
    let nodes = start_region_each(&broker, "moved", 2, 2, |i| {
        if i == 0 {
            vec![
                ("READ_WAIT_TIMEOUT_MS", "60000"),
                ("KAFKA_SESSION_MS", "6000"),
            ]
        } else {
            vec![]
        }
    });
    wait_converged(&nodes, 2);
    let (status, reply) = nodes[1].post(
        "/records/put",
        json!({"Records": [{"pk": "moved", "sk": "s1", "data": 1}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    let first = &reply["Positions"][0];
    let next =
        json!({"Partition": first["Partition"], "Offset": first["Offset"].as_u64().unwrap() + 1});

    broker.stop();
    nodes[0].wait_until(
        "every partition on standby",
        Duration::from_secs(30),
        |node| {
            let (_, body) = node.get_url(&node.internal_url("/debug/partitions"));
            let v: Value = serde_json::from_str(&body).unwrap();
            v["standby"].as_array().unwrap().len() == PARTITIONS as usize
        },
    );
    // A read on node 0 naming the next write of the partition waits on its standby copy...
    let read = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            nodes[0].post(
                "/records/get",
                json!({"Records": [{"pk": "moved", "sk": "s2"}], "min_offsets": [next]}),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        // ...while node 0 cannot rejoin the log (frozen) and node 1 serves the partition again
        // and applies that write: node 0's copy ends when it hears so.
        nodes[0].signal("STOP");
        broker.spawn();
        nodes[1].wait_until("serving every partition", Duration::from_secs(60), |n| {
            n.owned().len() == PARTITIONS as usize
        });
        let (status, reply) = nodes[1].post(
            "/records/put",
            json!({"Records": [{"pk": "moved", "sk": "s2", "data": 2}], "wait": true}),
        );
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["Positions"][0]["Offset"], next["Offset"], "{reply}");
        // The broker goes again before node 0 thaws, so node 0 cannot take the partition back
        // from the log first: its copy ends by gossip alone (node 1 keeps answering: it serves
        // the partition until its own session runs out, then from its standby copy).
        broker.stop();
        nodes[0].signal("CONT");
        waiting.join().unwrap()
    });
    // It is answered by the member that serves the partition now (it once failed: "partition
    // N is not served by this node").
    let (status, got) = read;
    assert_eq!(status, 200, "{got}\n{}", nodes[0].log());
    assert_eq!(got["Records"][0]["Data"], json!(2), "{got}");
}

#[test]
fn a_node_restarted_into_a_live_region_answers_its_first_reads() {
    let _serial = serial();
    let broker = Broker::start();
    let mut nodes = start_region(&broker, "restarted", 2, 2);
    wait_converged(&nodes, 2);
    let n = 16;
    let written = write_all(&nodes[0], n)["Positions"].clone();
    for round in 0..5 {
        // Applied and checkpointed there before the kill: what it reads is never stale.
        assert_reads_all(&nodes[1], n, &written);
        std::thread::sleep(Duration::from_millis(600));
        nodes[1].kill9();
        nodes[1].spawn_process();
        // The first connection that gets in reads every key at once: those of partitions the
        // node does not serve yet are asked of node 0, which it must already know of (its
        // ports once opened a few milliseconds before gossip told it who serves what).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut con = loop {
            if let Ok(con) = redis::Client::open(format!("redis://127.0.0.1:{}/", nodes[1].resp))
                .unwrap()
                .get_connection()
            {
                break con;
            }
            assert!(
                Instant::now() < deadline,
                "never came up:\n{}",
                nodes[1].log()
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        for i in 0..n {
            let got: redis::RedisResult<Option<String>> = redis::cmd("HGET")
                .arg(format!("key{i}"))
                .arg("s")
                .query(&mut con);
            assert_eq!(
                got.as_ref().ok().cloned().flatten(),
                Some(json!({"i": i}).to_string()),
                "round {round}, key{i}: {got:?}"
            );
        }
        wait_converged(&nodes, 2);
    }
}

/// Writes `count` records of their own pks in `partition` through `node`, 1,000 a request:
/// entries a node that lost its disk takes a while to replay.
fn write_fillers(node: &Node, partition: u32, count: usize) {
    let fillers: Vec<String> = (0..)
        .map(|i| format!("filler{i}"))
        .filter(|pk| partition_of(pk) == partition)
        .take(count)
        .collect();
    for chunk in fillers.chunks(1000) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|pk| json!({"pk": pk, "sk": "s", "data": 1}))
            .collect();
        let (status, reply) = node.post("/records/put", json!({"Records": records}));
        assert_eq!(status, 200, "{reply}");
    }
}

#[test]
fn watch_through_a_node_that_does_not_apply_the_key_loses_no_update_while_an_owner_lags() {
    let _serial = serial();
    let broker = Broker::start();
    // Groups g0 (n0, n2) and g1 (n1): a key n2 does not apply has two owners, n0 and n1, and
    // n2's reads go to either.
    let mut nodes = start_region_with(
        &broker,
        "lagging",
        3,
        2,
        &[("READ_WAIT_TIMEOUT_MS", "30000")],
    );
    let map = wait_converged(&nodes, 2);
    let key = (0..)
        .map(|i| format!("balance{i}"))
        .find(|pk| map[&partition_of(pk).to_string()] == ["n0", "n1"])
        .unwrap();
    let partition = partition_of(&key);
    let mut con0 = redis(&nodes[0]);
    let _: () = redis::cmd("SET").arg(&key).arg(0).query(&mut con0).unwrap();
    // Entries n1 will take a while to replay.
    write_fillers(&nodes[0], partition, 20_000);
    // n1 loses its disk and replays the whole partition, answering reads meanwhile from
    // wherever it has got to (a lagging owner), while n0 is up to date.
    nodes[1].kill9();
    std::fs::remove_dir_all(&nodes[1].data).unwrap();
    nodes[1].spawn();
    // Increments through n2 and n0 in turn, each WATCH, GET, MULTI, SET v+1, EXEC. Through n2,
    // the version may come from n0 and the GET from n1, which n0's writes have not reached
    // (n2 knows only its own writes to wait for). Each committed one must count.
    let mut cons = [redis(&nodes[2]), redis(&nodes[0])];
    let (mut committed, mut unknown) = (0, 0);
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < Duration::from_secs(6) {
        turn += 1;
        let con = &mut cons[turn % 2];
        let _: () = redis::cmd("WATCH").arg(&key).query(con).unwrap();
        let value: Option<i64> = match redis::cmd("GET").arg(&key).query(con) {
            Ok(v) => v,
            Err(_) => {
                let _: () = redis::cmd("UNWATCH").query(con).unwrap();
                continue;
            }
        };
        let set: redis::RedisResult<Option<Vec<redis::Value>>> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(value.unwrap_or(0) + 1)
            .query(con);
        match set {
            Ok(Some(_)) => committed += 1,
            Ok(None) => {}
            Err(_) => unknown += 1,
        }
    }
    eprintln!("{committed} committed, {unknown} unknown");
    assert!(committed > 0, "no transaction committed");
    let (status, reply) =
        nodes[0].post("/records/get", json!({"Records": [{"pk": &key, "sk": ""}]}));
    assert_eq!(status, 200, "{reply}");
    let last: i64 = reply["Records"][0]["Data"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (committed..=committed + unknown).contains(&last),
        "{committed} transactions committed ({unknown} unknown), but the key holds {last}: \
         updates were lost"
    );
}

/// A node that lost its disk replays its partitions from the log when it comes back. While it
/// does, its reads of them go to the member of the region that serves them up to date: never
/// the replay's older state (it answered a key written before the replay reached it as
/// missing, then as its old value).
#[test]
fn a_node_replaying_from_an_empty_disk_answers_reads_with_the_newest_data() {
    let _serial = serial();
    let broker = Broker::start();
    // Groups g0 (n0, n2) and g1 (n1): n1 owns the key's partition in its group, n0 in the other.
    let mut nodes = start_region(&broker, "replaying", 3, 2);
    let map = wait_converged(&nodes, 2);
    let key = (0..)
        .map(|i| format!("flag{i}"))
        .find(|pk| map[&partition_of(pk).to_string()] == ["n0", "n1"])
        .unwrap();
    let partition = partition_of(&key);
    let mut con0 = redis(&nodes[0]);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("old")
        .query(&mut con0)
        .unwrap();
    // Entries n1 will take a while to replay, then the key's newest value.
    write_fillers(&nodes[0], partition, 20_000);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("new")
        .query(&mut con0)
        .unwrap();
    let (status, reply) =
        nodes[1].post("/records/get", json!({"Records": [{"pk": &key, "sk": ""}]}));
    assert_eq!(status, 200, "{reply}");
    nodes[1].kill9();
    std::fs::remove_dir_all(&nodes[1].data).unwrap();
    nodes[1].spawn();
    // Reads through n1, over Redis and HTTP, until it serves the partition again, caught up.
    let mut con1 = redis(&nodes[1]);
    let started = Instant::now();
    let (mut reads, mut caught_up) = (0, false);
    while !caught_up {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "n1 did not catch up:\n{}",
            nodes[1].log()
        );
        caught_up = nodes[1].owned().contains(&(partition as u64))
            && nodes[1].get_url(&nodes[1].url("/ready")).0 == 200;
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut con1).unwrap();
        let opens = || {
            nodes[1]
                .log()
                .lines()
                .filter(|l| l.contains("partition opened") || l.contains("log's end"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            got.as_deref(),
            Some("new"),
            "read {reads} through n1 (Redis); its opens:\n{}",
            opens()
        );
        let (status, reply) =
            nodes[1].post("/records/get", json!({"Records": [{"pk": &key, "sk": ""}]}));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["Records"][0]["Data"],
            "new",
            "read {reads} through n1 (HTTP); its opens:\n{}",
            opens()
        );
        reads += 1;
    }
    assert!(
        nodes[1]
            .log()
            .contains("its reads wait until it applies what the log holds"),
        "n1 never opened the partition behind the log, so this test proves nothing:\n{}",
        nodes[1].log()
    );
    eprintln!("{reads} reads through n1 while it replayed");
}

#[test]
fn three_nodes_one_group_answer_every_read_and_recover_from_a_kill_9() {
    let _serial = serial();
    let broker = Broker::start();
    let mut nodes = start_region(&broker, "three", 3, 1);
    let map = wait_converged(&nodes, 1);
    let n = 40;

    // Writes accepted by n0 for partitions it does not own still report their outcomes: n0 asks
    // an owner.
    let reply = write_all(&nodes[0], n);
    let written = reply["Positions"].clone();
    let positions = written.as_array().unwrap();
    assert_eq!(positions.len(), PARTITIONS as usize, "{reply}");
    for p in positions {
        assert_eq!(p["Outcome"]["Status"], "applied", "{reply}");
    }
    // A rejection decided on another node comes back too.
    let remote_pk = (0..)
        .map(|i| format!("cond{i}"))
        .find(|pk| !nodes[0].owned().contains(&(partition_of(pk) as u64)))
        .unwrap();
    let (_, reply) = nodes[0].post(
        "/records/put",
        json!({"Records": [{"pk": remote_pk, "sk": "s", "data": {}, "if": "data != null"}], "wait": true}),
    );
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "rejected",
        "{reply}"
    );

    // Every node answers every key, over HTTP and RESP, with one consistent result.
    for node in &nodes {
        assert_reads_all(node, n, &written);
        let mut con = redis(node);
        for i in 0..n {
            let data: Option<String> = redis::cmd("HGET")
                .arg(format!("key{i}"))
                .arg("s")
                .query(&mut con)
                .unwrap();
            assert_eq!(data.as_deref(), Some(format!("{{\"i\":{i}}}").as_str()));
        }
        let all: Vec<String> = redis::cmd("HGETALL").arg("key7").query(&mut con).unwrap();
        assert_eq!(all, ["s", "{\"i\":7}"]);
        let (status, page) = node.post("/records/list", json!({"pk": "key3"}));
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["Records"][0]["Data"], json!({"i": 3}));
        // A bad `if` in a proxied list is the caller's 400, not a peer failure.
        let (status, page) = node.post("/records/list", json!({"pk": "key3", "if": "data.i +"}));
        assert_eq!(status, 400, "{page}");
    }
    assert!(
        metric(
            &nodes[0],
            "firescroll_proxied_reads_total{operation=\"get\",result=\"ok\"}"
        ) > 0.0
    );

    // Many concurrent reads through n0 share requests to the owners: each still gets exactly
    // its own record.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let node = &nodes[0];
            scope.spawn(move || {
                for round in 0..40 {
                    let i = (t * 7 + round * 3) % n;
                    let (status, reply) = node.post(
                        "/records/get",
                        json!({"Records": [{"pk": format!("key{i}"), "sk": "s"}]}),
                    );
                    assert_eq!(status, 200, "{reply}");
                    assert_eq!(reply["Records"][0]["Data"], json!({"i": i}), "{reply}");
                }
            });
        }
    });

    // Hop limit: a peer request for a partition the peer does not serve is refused, never
    // proxied again.
    let foreign = (0..n)
        .map(|i| format!("key{i}"))
        .find(|pk| !nodes[1].owned().contains(&(partition_of(pk) as u64)))
        .unwrap();
    let (status, text) = nodes[1].post_raw(
        "/cluster/v1/get",
        json!({"keys": [[foreign, "s"]], "min_offsets": []}).to_string(),
    );
    assert_eq!(status, 503, "{text}");

    // Kill -9 the owner of some partitions. Until Kafka hands them to a survivor, reads of them
    // are a 503 naming the partition — never a shorter 200.
    let victim = 2;
    let victim_partitions: Vec<String> = map
        .iter()
        .filter(|(_, owners)| **owners == [format!("n{victim}")])
        .map(|(p, _)| p.clone())
        .collect();
    assert!(!victim_partitions.is_empty(), "{map:?}");
    nodes[victim].kill9();
    let killed = Instant::now();
    let mut unavailable = 0;
    loop {
        // With the write's positions: the new owner replays the partition before answering.
        let (status, reply) = nodes[0].post(
            "/records/get",
            json!({"Records": keys(n), "min_offsets": written}),
        );
        if status == 200 {
            if reply["Records"].as_array().unwrap().len() == n {
                break;
            }
            panic!("a read answered a partial result after a kill: {reply}");
        }
        assert_eq!(status, 503, "{reply}");
        assert_eq!(reply["error"]["code"], "partition_unavailable", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            victim_partitions
                .iter()
                .any(|p| message.contains(&format!("partition {p} "))),
            "{message} should name one of {victim_partitions:?}"
        );
        unavailable += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "reads did not recover:\n{}",
            nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "reads fully available {:?} after kill -9 of an owner ({unavailable} 503s meanwhile)",
        killed.elapsed()
    );
    // The dead member leaves every survivor's map; once the region agrees on that, every
    // survivor answers every key (asserting before could catch a node whose map still routes
    // to the dead one).
    let survivors = &nodes[..2];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = wait_converged(survivors, 1);
        if map.values().all(|o| !o.contains(&format!("n{victim}"))) {
            break;
        }
        assert!(Instant::now() < deadline, "the dead node stays in {map:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in survivors {
        assert_reads_all(node, n, &written);
    }
}

#[test]
fn two_replica_groups_answer_everything_and_reads_use_both_replicas() {
    let _serial = serial();
    let broker = Broker::start();
    // Group g0 (n0, n2) keeps its partitions throughout: its Kafka sessions (10 s) outlast
    // anything below, so every partition always has one live owner there and the claim "no read
    // fails" holds. Group g1 (n1, n3) has the suite's 2 s sessions: the freeze and the kill below
    // (both of n3) make it rebalance, and n1 take over. With 2 s sessions in both groups, g0's
    // heartbeats, starved by the tests running beside this one in CI, once made it rebalance
    // while n3 was dead: a double fault, where a 503 is the right answer.
    let mut nodes = start_region_each(&broker, "groups", 4, 2, |i| {
        if i % 2 == 0 {
            vec![
                ("KAFKA_SESSION_MS", "10000"),
                ("KAFKA_HEARTBEAT_MS", "1000"),
            ]
        } else {
            Vec::new()
        }
    });
    wait_converged(&nodes, 2);
    let n = 40;
    let written = write_all(&nodes[0], n)["Positions"].clone();
    for node in &nodes {
        assert_reads_all(node, n, &written);
    }
    // Reads from n0 of partitions it does not own spread over both owners of each.
    let not_local: Vec<usize> = (0..n)
        .filter(|i| {
            !nodes[0]
                .owned()
                .contains(&(partition_of(&format!("key{i}")) as u64))
        })
        .collect();
    for _ in 0..20 {
        for &i in &not_local {
            let (status, reply) = nodes[0].post(
                "/records/get",
                json!({"Records": [{"pk": format!("key{i}"), "sk": "s"}]}),
            );
            assert_eq!(status, 200, "{reply}");
        }
    }
    let served: Vec<f64> = nodes[1..]
        .iter()
        .map(|node| metric(node, "firescroll_peer_requests_total{operation=\"get\"}"))
        .collect();
    let helping = served.iter().filter(|&&s| s > 0.0).count();
    assert!(
        helping >= 2,
        "proxied reads should spread over replicas: peer requests served {served:?}"
    );

    // Freeze one node (SIGSTOP): reads sent to it time out (PROXY_TIMEOUT_MS) and fail over to
    // the other group's owner until SWIM declares it down — no read fails. Thawed, it rejoins
    // under a renewed identity and the map is whole again.
    nodes[3].signal("STOP");
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(6) {
        assert_reads_all(&nodes[0], n, &written);
    }
    let timeouts = metric(
        &nodes[0],
        "firescroll_proxied_reads_total{operation=\"get\",result=\"failover\"}",
    );
    eprintln!("failovers while a node was frozen: {timeouts}");
    nodes[3].signal("CONT");
    wait_converged(&nodes, 2);
    for node in &nodes {
        assert_reads_all(node, n, &written);
    }
    // Before a kill leaves one owner per partition, the thawed node serves its own again
    // (reads above may have been answered by the other group alone; seen in CI under load).
    wait_all_ready(&nodes);

    // Kill -9 one node: each of its partitions has an owner in the other group, so reads fail
    // over at once — no error at all. And an owner that failed is tried last for a while, so the
    // dead node costs each reader a failover or two, not one per read (hundreds here).
    let failovers = |nodes: &[Node]| {
        let name = "firescroll_proxied_reads_total{operation=\"get\",result=\"failover\"}";
        metric(&nodes[0], name) + metric(&nodes[1], name)
    };
    let before = failovers(&nodes);
    nodes[3].kill9();
    let killed = Instant::now();
    let mut reads = 0;
    while killed.elapsed() < Duration::from_secs(8) {
        assert_reads_all(&nodes[0], n, &written);
        assert_reads_all(&nodes[1], n, &written);
        reads += 2;
    }
    let after_kill = failovers(&nodes) - before;
    eprintln!("failovers after the kill: {after_kill} in {reads} reads");
    assert!(
        after_kill <= 20.0,
        "{after_kill} failovers in {reads} reads: a dead owner should be tried last"
    );
}

#[test]
fn a_restarted_node_rejoins_through_one_seed_and_maps_converge() {
    let _serial = serial();
    let broker = Broker::start();
    let mut nodes = start_region(&broker, "rejoin", 3, 1);
    wait_converged(&nodes, 1);
    let written = write_all(&nodes[0], 20)["Positions"].clone();

    // Restart n1 (same INSTANCE_ID, ports and data): it is a new gossip member, and the
    // region converges on it — its old self is gone from every map.
    let before = debug_cluster(&nodes[0]);
    let old_id = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["instance_id"] == "n1")
        .unwrap()["id"]
        .clone();
    nodes[1].kill9();
    nodes[1].spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<Value> = nodes.iter().map(debug_cluster).collect();
        let ok = views.iter().all(|v| {
            let members = v["members"].as_array().unwrap();
            let n1: Vec<&Value> = members
                .iter()
                .filter(|m| m["instance_id"] == "n1")
                .collect();
            members.len() == 3 && n1.len() == 1 && n1[0]["id"] != old_id
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not replace its old self: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_converged(&nodes, 1);
    for node in &nodes {
        assert_reads_all(node, 20, &written);
    }
    let members = metric(&nodes[2], "firescroll_cluster_members");
    assert_eq!(members, 3.0);

    // A graceful stop tells the region: the node leaves the maps of the others.
    let status = nodes[2].terminate();
    assert!(status.success(), "{}", nodes[2].log());
    assert!(nodes[2].log().contains("left the gossip cluster"));
    let survivors = &nodes[..2];
    let deadline = Instant::now() + Duration::from_secs(30);
    while survivors.iter().any(|n| {
        debug_cluster(n)["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["instance_id"] == "n2")
    }) {
        assert!(
            Instant::now() < deadline,
            "n2 stayed in the maps after leaving"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_converged(survivors, 1);
    for node in survivors {
        assert_reads_all(node, 20, &written);
    }
}

#[test]
fn read_your_writes_across_nodes_with_tokens() {
    let _serial = serial();
    let broker = Broker::start();
    let nodes = start_region_with(
        &broker,
        "ryw",
        3,
        1,
        &[("READ_TOKENS", "reader"), ("WRITE_TOKENS", "writer")],
    );
    let authed = |node: &Node, path: &str, token: &str, body: Value| -> (u16, Value) {
        let r = reqwest::blocking::Client::new()
            .post(node.url(path))
            .bearer_auth(token)
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().unwrap()).unwrap())
    };
    wait_converged(&nodes, 1);
    // Keys that n2 does not own: n2 must ask an owner, which waits for the position.
    let remote: Vec<String> = (0..)
        .map(|i| format!("ryw{i}"))
        .filter(|pk| !nodes[2].owned().contains(&(partition_of(pk) as u64)))
        .take(15)
        .collect();
    for (round, pk) in remote.iter().enumerate() {
        let (status, reply) = authed(
            &nodes[0],
            "/records/put",
            "writer",
            json!({"Records": [{"pk": pk, "sk": "s", "data": {"round": round}}]}),
        );
        assert_eq!(status, 200, "{reply}");
        let positions = reply["Positions"].clone();
        let (status, got) = authed(
            &nodes[2],
            "/records/get",
            "reader",
            json!({"Records": [{"pk": pk, "sk": "s"}], "min_offsets": positions}),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["Records"][0]["Data"], json!({"round": round}), "{got}");
        let (status, page) = authed(
            &nodes[2],
            "/records/list",
            "reader",
            json!({"pk": pk, "min_offsets": positions}),
        );
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["Records"].as_array().unwrap().len(), 1, "{page}");
    }
    // The peer endpoints need a token like any read.
    let (status, text) = nodes[1].post_raw(
        "/cluster/v1/get",
        json!({"keys": [["x", "s"]], "min_offsets": []}).to_string(),
    );
    assert_eq!(status, 401, "{text}");
}

#[test]
fn the_keyspace_spans_the_region_and_scan_cursors_move_between_nodes() {
    let _serial = serial();
    let broker = Broker::start();
    let nodes = start_region(&broker, "keyspace", 3, 1);
    wait_converged(&nodes, 1);
    // Keys in every partition, written through one node; a hash too.
    let mut con = redis(&nodes[0]);
    for i in 0..120 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg(&["f", "v", "g", "v", "e", "v"])
        .query(&mut con)
        .unwrap();
    // Every node counts the whole region (DBSIZE asks the owners of the partitions it lacks),
    // once it has applied what was written.
    for node in &nodes {
        let mut c = redis(node);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            if n == 121 {
                break;
            }
            assert!(Instant::now() < deadline, "node {} counts {n}", node.api);
            std::thread::sleep(Duration::from_millis(100));
        }
        // HLEN reads the owner's key index (two of the three nodes ask another).
        let fields: i64 = redis::cmd("HLEN").arg("h").query(&mut c).unwrap();
        assert_eq!(fields, 3, "node {}", node.api);
    }
    // What a node asks the owner: the count rides on the key index query (a query without a
    // pk, as earlier releases send, is answered as before).
    let absent = (0..)
        .map(|i| format!("absent{i}"))
        .find(|pk| partition_of(pk) == partition_of("h"))
        .unwrap();
    let asked = |pk: Option<&str>| {
        let mut query =
            json!({"partition": partition_of("h"), "from": 0, "limit": 0, "min_offsets": []});
        if let Some(pk) = pk {
            query["pk"] = json!(pk);
        }
        nodes
            .iter()
            .map(|node| node.post("/cluster/v1/keys", query.clone()))
            .find(|(status, _)| *status == 200)
            .expect("the owner answers")
            .1
    };
    assert_eq!(asked(Some("h"))["records"], json!(3));
    assert_eq!(asked(Some(&absent))["records"], json!(0));
    assert!(asked(None).get("records").is_none());
    // The owner's watch token rides along (a scan of every record starts its watch there).
    assert!(
        asked(None)["token"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{}:", partition_of("h"))))
    );
    // An HTTP scan of every record, each page asked of the next node with the cursor the
    // previous one issued: every record exactly once, and a position in every partition.
    let peer_reads = |operation: &str| -> f64 {
        let series = format!("firescroll_peer_requests_total{{operation=\"{operation}\"}}");
        nodes.iter().map(|n| metric(n, &series)).sum()
    };
    let (lists_before, scans_before) = (peer_reads("list"), peer_reads("scan"));
    let mut records: Vec<(String, String)> = Vec::new();
    let mut partitions_seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let node = &nodes[page % nodes.len()];
        let mut body = json!({"limit": 9});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, answer, token) = node.post_with_token("/records/scan", &body);
        assert_eq!(status, 200, "{answer}");
        partitions_seen.extend(
            token
                .split(',')
                .map(|p| p.split(':').next().unwrap().to_string()),
        );
        for r in answer["Records"].as_array().unwrap() {
            records.push((
                r["Pk"].as_str().unwrap().into(),
                r["Sk"].as_str().unwrap().into(),
            ));
        }
        match answer["NextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<_> = records.iter().cloned().collect();
    assert_eq!(
        (records.len(), unique.len()),
        (123, 123),
        "120 strings and a hash of 3"
    );
    // Keys of one prefix only, through a node that serves some of their partitions: the owners
    // filter too.
    let mut prefixed: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"limit": 4, "pk_prefix": "k1"});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, answer) = nodes[1].post("/records/scan", body);
        assert_eq!(status, 200, "{answer}");
        prefixed.extend(
            answer["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["Pk"].as_str().unwrap().to_string()),
        );
        match answer["NextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    prefixed.sort();
    let mut want: Vec<String> = (0..120)
        .map(|i| format!("k{i}"))
        .filter(|k| k.starts_with("k1"))
        .collect();
    want.sort();
    assert_eq!(prefixed, want);
    // A node reads the partitions it does not serve in one request to an owner per page part
    // (`/cluster/v1/scan`), not one proxied list per key.
    assert_eq!(peer_reads("list") - lists_before, 0.0);
    let scans = peer_reads("scan") - scans_before;
    assert!((1.0..=60.0).contains(&scans), "{scans} scan requests");
    assert_eq!(
        partitions_seen.len(),
        PARTITIONS as usize,
        "{partitions_seen:?}"
    );
    // One SCAN, each page asked of the next node with the cursor the previous one issued:
    // every key exactly once.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    let mut pages = 0;
    let mut cons: Vec<redis::Connection> = nodes.iter().map(redis).collect();
    loop {
        let con = &mut cons[pages % nodes.len()];
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(con)
            .unwrap();
        seen.extend(keys);
        pages += 1;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(pages > 10, "{pages} pages");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 121, "no key twice: {seen:?}");
    assert_eq!(unique.len(), 121);
    // HSCAN too: each page asked of the next node with the cursor the previous one issued gives
    // every field once, in order (whichever nodes own the hash).
    let fields: Vec<String> = (0..200).map(|i| format!("field:{i:03}")).collect();
    let mut pipe = redis::pipe();
    for f in &fields {
        pipe.cmd("HSET").arg("wide").arg(f).arg("v").ignore();
    }
    let _: () = pipe.query(&mut cons[0]).unwrap();
    // Each node reads the hash whole before its scan begins (one owner applies; others ask it).
    let hlen_everywhere = |cons: &mut [redis::Connection], want: i64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        for con in cons.iter_mut() {
            while redis::cmd("HLEN").arg("wide").query::<i64>(con).unwrap() != want {
                assert!(Instant::now() < deadline, "HLEN wide never {want}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    hlen_everywhere(&mut cons, 200);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    for page in 0.. {
        let (next, items): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg("wide")
            .arg(cursor)
            .arg("COUNT")
            .arg(15)
            .arg("NOVALUES")
            .query(&mut cons[page % nodes.len()])
            .unwrap();
        seen.extend(items);
        if next == 0 {
            assert!(page > 10, "{page} pages");
            break;
        }
        cursor = next;
    }
    assert_eq!(seen, fields);
    let _: i64 = redis::cmd("DEL").arg("wide").query(&mut cons[0]).unwrap();
    hlen_everywhere(&mut cons, 0);
    // RANDOMKEY and KEYS reach partitions owned elsewhere too.
    let mut c = redis(&nodes[2]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("k1*").query(&mut c).unwrap();
    assert_eq!(keys.len(), 31, "{keys:?}"); // k1, k10..k19, k100..k119
    let random: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(unique.contains(&random), "{random}");
    // DEL of a key owned elsewhere takes it whole; the count follows everywhere.
    let deleted: i64 = redis::cmd("DEL").arg("h").arg("k5").query(&mut c).unwrap();
    assert_eq!(deleted, 2);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 119);
}

#[test]
fn a_watch_on_any_node_follows_a_pk_applied_elsewhere_and_resumes_exactly() {
    let _serial = serial();
    let broker = Broker::start();
    let nodes = start_region(&broker, "watching", 2, 1);
    let map = wait_converged(&nodes, 1);
    // A pk that node 1 applies and node 0 does not: watched through node 0.
    let pk = (0..)
        .map(|i| format!("cfg{i}"))
        .find(|pk| map[&partition_of(pk).to_string()] == ["n1"])
        .unwrap();
    let put = |sk: &str| {
        let (status, reply) = nodes[0].post(
            "/records/put",
            json!({"Records": [{"pk": pk, "sk": sk, "data": sk}], "wait": true}),
        );
        assert_eq!(status, 200, "{reply}");
    };
    // Read, then watch from the read's token, through the node that does not apply the pk: the
    // owner's token comes back with the records, so the write in between is not missed.
    put("before");
    let token_of = |path: &str, body: Value| {
        let response = nodes[0]
            .client()
            .post(nodes[0].url(path))
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let token = response
            .headers()
            .get("firescroll-token")
            .unwrap_or_else(|| panic!("{path} through a non-owner carries the owner's token"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            token.starts_with(&format!("{}:", partition_of(&pk))),
            "{path}: {token}"
        );
        token
    };
    let read = token_of(
        "/records/get",
        json!({"Records": [{"pk": pk, "sk": "before"}]}),
    );
    let listed = token_of("/records/list", json!({"pk": pk}));
    put("between");
    for token in [read, listed] {
        let mut after_read =
            crate::watch::Watcher::open(&nodes[0], &format!("pk={pk}&from={token}"), None);
        assert_eq!(after_read.status, 200);
        assert_eq!(after_read.change().data["Sk"], "between", "from {token}");
    }
    let mut watch = crate::watch::Watcher::open(&nodes[0], &format!("pk={pk}"), None);
    assert_eq!(watch.status, 200);
    assert_eq!(watch.next().unwrap().event, "bookmark");
    for sk in ["a", "b", "c"] {
        put(sk);
    }
    let seen: Vec<_> = (0..3).map(|_| watch.change()).collect();
    let sks: Vec<&str> = seen
        .iter()
        .map(|e| e.data["Sk"].as_str().unwrap())
        .collect();
    assert_eq!(sks, ["a", "b", "c"]);
    // Gone after the second; two more writes; back (through either node) with its last id.
    drop(watch);
    put("d");
    put("e");
    for node in &nodes {
        let mut resumed =
            crate::watch::Watcher::open(node, &format!("pk={pk}"), seen[1].id.as_deref());
        assert_eq!(resumed.status, 200);
        let sks: Vec<String> = (0..3)
            .map(|_| resumed.change().data["Sk"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(sks, ["c", "d", "e"], "through {}", node.api);
    }
    assert!(
        metric(
            &nodes[0],
            "firescroll_proxied_reads_total{operation=\"watch\",result=\"ok\"}"
        ) >= 2.0
    );
}

#[test]
fn redis_caches_and_notifications_cover_keys_applied_by_another_node() {
    let _serial = serial();
    let broker = Broker::start();
    let nodes = start_region(&broker, "pushes", 2, 1);
    let map = wait_converged(&nodes, 1);
    // A pk that node 1 applies and node 0 does not: read, cached and watched through node 0.
    let pk = (0..)
        .map(|i| format!("flag{i}"))
        .find(|pk| map[&partition_of(pk).to_string()] == ["n1"])
        .unwrap();
    let script = format!(
        r#"
import json, time, urllib.request, redis
from redis.cache import CacheConfig
def http_put(data):
    body = json.dumps({{"Records": [{{"pk": "{pk}", "sk": "", "data": data}}], "wait": True}}).encode()
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{api1}/records/put", data=body)).read()
http_put("off")
cached = redis.Redis(port={resp0}, protocol=3, cache_config=CacheConfig(), decode_responses=True)
events = redis.Redis(port={resp0}, decode_responses=True)
events.config_set("notify-keyspace-events", "KEA")
sub = events.pubsub()
sub.psubscribe("__keyspace@0__:{pk}")
assert sub.get_message(timeout=5)["type"] == "psubscribe"
assert cached.get("{pk}") == "off"
assert cached.get("{pk}") == "off"
assert len(cached.get_cache().collection) == 1, "a key applied elsewhere is cached too"
http_put("on")
deadline = time.time() + 10
while cached.get("{pk}") != "on":
    assert time.time() < deadline, "the cache never learned of the write on the other node"
    time.sleep(0.02)
message = sub.get_message(timeout=10)
assert message and message["type"] == "pmessage", message
assert (message["channel"], message["data"]) == ("__keyspace@0__:{pk}", "set"), message
print("ok")
"#,
        api1 = nodes[1].api,
        resp0 = nodes[0].resp,
    );
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "redis-py 5.1+ (pip install redis)",
    );
    // The changes reached node 0 through node 1's watch of the partition.
    assert!(
        metric(
            &nodes[0],
            "firescroll_proxied_reads_total{operation=\"watch\",result=\"ok\"}"
        ) >= 1.0
    );
}

#[test]
fn wait_counts_the_other_nodes_that_applied_a_connections_writes() {
    let _serial = serial();
    let broker = Broker::start();
    // Two replica groups of one node: each node serves every partition.
    let nodes = start_region(&broker, "wait", 2, 2);
    wait_converged(&nodes, 2);
    // As an application uses it, through redis-py.
    crate::resp::run_redis_py(&format!(
        r#"
import redis
r = redis.Redis(port={port})
assert r.wait(0, 0) == 1, "nothing written: the other node serves every partition"
r.set("flag", "on")
r.hset("limits", mapping={{"rps": "100"}})
assert r.wait(1, 20000) == 1
assert r.execute_command("WAITAOF", 1, 1, 20000) == [1, 1]
assert r.wait(2, 300) == 1, "more than the region has: the timeout answers what there is"
print("ok")
"#,
        port = nodes[0].resp
    ));
    // A node that has not applied the connection's last write is not counted: frozen, it
    // cannot have.
    let mut con = redis(&nodes[0]);
    nodes[1].signal("STOP");
    let _: () = redis::cmd("SET")
        .arg("flag")
        .arg("off")
        .query(&mut con)
        .unwrap();
    let frozen: i64 = redis::cmd("WAIT").arg(1).arg(1500).query(&mut con).unwrap();
    nodes[1].signal("CONT");
    assert_eq!(frozen, 0);
    let thawed: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(60000)
        .query(&mut con)
        .unwrap();
    assert_eq!(thawed, 1);
    let (_, got) = nodes[1].post(
        "/records/get",
        json!({"Records": [{"pk": "flag", "sk": ""}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!("off"), "{got}");
    // WAIT with no timeout blocks as long as it takes (as Redis's): a client that leaves, or is
    // killed, ends it — its connection is gone from CLIENT LIST.
    use std::io::{Read, Write};
    let listed = |con: &mut redis::Connection, name: &str| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
        list.contains(&format!("name={name} "))
    };
    let mut waiters: Vec<std::net::TcpStream> = ["leaves", "killed"]
        .iter()
        .map(|name| {
            let mut waiter = std::net::TcpStream::connect(("127.0.0.1", nodes[0].resp)).unwrap();
            let mut commands = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(*name)
                .get_packed_command();
            commands.extend(redis::cmd("WAIT").arg(5).arg(0).get_packed_command());
            waiter.write_all(&commands).unwrap();
            waiter
        })
        .collect();
    let gone = |con: &mut redis::Connection, name: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while listed(con, name) {
            assert!(Instant::now() < deadline, "{name} is still connected");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(listed(&mut con, "leaves") && listed(&mut con, "killed")) {
        assert!(Instant::now() < deadline, "the waiters did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = waiters.pop().unwrap();
    drop(waiters);
    gone(&mut con, "leaves");
    let addr = killed.local_addr().unwrap().to_string();
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ADDR")
        .arg(&addr)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    gone(&mut con, "killed");
    let mut rest = Vec::new();
    let mut killed = killed;
    killed
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = killed.read_to_end(&mut rest);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "+OK\r\n",
        "SETNAME answered, WAIT not"
    );
}

#[test]
fn signed_gossip_admits_the_key_holders_and_drops_everyone_else() {
    let _serial = serial();
    let broker = Broker::start();
    // Two nodes of one replica group sharing a key (the second listed too, as in a rotation):
    // they find each other and proxy reads to each other.
    let key = "a-shared-gossip-key-0123456789";
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let start = |i: usize, group: &str, keys: Option<&str>| {
        let mut env = cluster_env(
            &broker,
            "signed",
            group,
            &format!("n{i}"),
            ports[i],
            ports[0],
        );
        if let Some(keys) = keys {
            env.push(("GOSSIP_KEYS".into(), keys.into()));
        }
        Node::start_env(&env)
    };
    let both = format!("{key},an-older-key-9876543210");
    let nodes = vec![start(0, "g0", Some(key)), start(1, "g0", Some(&both))];
    wait_converged(&nodes, 1);
    let written = write_all(&nodes[0], 20);
    assert_reads_all(&nodes[1], 20, &written["Positions"]);
    // A node with another key and one with none, seeded by n0 (in another replica group, so
    // they take no partitions from the first): neither joins, and n0 counts what it dropped.
    let outsiders = [
        start(2, "g1", Some("another-regions-key-0123456789")),
        start(3, "g2", None),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&nodes[0], "firescroll_gossip_dropped_total") < 2.0 {
        assert!(Instant::now() < deadline, "{}", log_tail(&nodes[0], 30));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Long enough for several announcements and card broadcasts.
    std::thread::sleep(Duration::from_secs(3));
    for node in &nodes {
        let members: Vec<String> = debug_cluster(node)["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["instance_id"].as_str().unwrap().to_string())
            .collect();
        let mut members = members;
        members.sort();
        assert_eq!(members, ["n0", "n1"], "node on {}", node.api);
    }
    for outsider in &outsiders {
        assert_eq!(
            metric(outsider, "firescroll_cluster_members "),
            1.0,
            "alone: {}",
            log_tail(outsider, 20)
        );
    }
    assert!(
        nodes[0]
            .log()
            .contains("dropping gossip no key in GOSSIP_KEYS signed"),
        "says so"
    );
    // The region still answers everything.
    assert_reads_all(&nodes[1], 20, &written["Positions"]);
    assert_reads_all(&nodes[0], 20, &written["Positions"]);
}

/// curl over HTTPS trusting `ca`: its output (stdout, then stderr).
fn curl_tls(ca: &str, args: &[&str]) -> String {
    crate::tls::curl(&[&["--cacert", ca], args].concat()).1
}

#[test]
fn a_region_with_tls_on_its_api_ports_asks_its_peers_over_https() {
    tls_region_answers_everything(false);
}

#[test]
fn a_region_that_asks_clients_for_certificates_presents_its_own_to_its_peers() {
    tls_region_answers_everything(true);
}

/// Node `i` of a region on `ports` (gossip ports; node 0 seeds) with TLS on its API port: its
/// certificate signed by `issuer`, its peers' checked against `trusted`; with `mutual`, client
/// certificates `trusted` signed are required on its ports.
fn tls_peer(
    broker: &Broker,
    namespace: &str,
    (i, ports): (usize, &[u16]),
    dir: &std::path::Path,
    (issuer, trusted): (&crate::tls::Ca, &crate::tls::Ca),
    mutual: bool,
) -> Node {
    let own = dir.join(format!("n{i}"));
    std::fs::create_dir(&own).unwrap();
    let (cert, key) = crate::tls::install(&own, &issuer.sign_node_and_client());
    let mut env = cluster_env(
        broker,
        namespace,
        "g0",
        &format!("n{i}"),
        ports[i],
        ports[0],
    );
    env.extend([
        ("TLS_CERT_PATH".to_string(), cert),
        ("TLS_KEY_PATH".to_string(), key),
        ("PEER_TLS_CA_PATH".to_string(), trusted.path().to_string()),
    ]);
    if mutual {
        env.push(("TLS_CLIENT_CA_PATH".to_string(), trusted.path().to_string()));
    }
    Node::start_env(&env)
}

#[test]
fn a_peer_whose_certificate_the_region_does_not_trust_is_not_asked() {
    let _serial = serial();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, stranger) = (
        crate::tls::Ca::new(dir.path(), "ca"),
        crate::tls::Ca::new(dir.path(), "stranger"),
    );
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    // n1's certificate comes from a CA the region does not trust; it trusts n0's.
    let nodes = [
        tls_peer(
            &broker,
            "untrusted",
            (0, &ports),
            dir.path(),
            (&ca, &ca),
            false,
        ),
        tls_peer(
            &broker,
            "untrusted",
            (1, &ports),
            dir.path(),
            (&stranger, &ca),
            false,
        ),
    ];
    wait_converged(&nodes, 1);
    let get = |node: &Node, trust: &crate::tls::Ca, pk: &str| {
        let url = format!("https://localhost:{}/records/get", node.api);
        let body = json!({"Records": [{"pk": pk, "sk": ""}]}).to_string();
        crate::tls::curl(&["--cacert", trust.path(), &url, "-d", &body]).1
    };
    let owned_by = |owner: &Node| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|pk| owner.owned().contains(&(partition_of(pk) as u64)))
            .unwrap()
    };
    // n0 asks n1 and refuses its certificate: the read fails (never answered by n1), and n0's
    // log says why.
    let refused = get(&nodes[0], &ca, &owned_by(&nodes[1]));
    assert!(refused.contains("partition_unavailable"), "{refused}");
    let log = nodes[0].log();
    assert!(
        log.lines()
            .any(|l| l.contains("proxied read failed") && l.contains("certificate")),
        "{}",
        log_tail(&nodes[0], 20)
    );
    // n1 trusts n0's certificate: its reads of n0's partitions go through.
    let read = get(&nodes[1], &stranger, &owned_by(&nodes[0]));
    assert!(read.contains("\"Records\""), "{read}");
}

/// Two nodes of one replica group with TLS on their API ports (and, `mutual`, client
/// certificates required there): every read through either, proxied ones over HTTPS, and a
/// watch streamed from the other node.
fn tls_region_answers_everything(mutual: bool) {
    let _serial = serial();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new(dir.path(), "ca");
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    // Each node its own certificate from the region's CA (for `localhost`: the name peers ask
    // for, taken from the node's own certificate).
    let namespace = if mutual { "peermtls" } else { "peertls" };
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            tls_peer(
                &broker,
                namespace,
                (i, &ports),
                dir.path(),
                (&ca, &ca),
                mutual,
            )
        })
        .collect();
    wait_converged(&nodes, 1);
    // This test's own requests present a client certificate when the ports ask for one.
    let client = dir.path().join("client");
    std::fs::create_dir(&client).unwrap();
    let (client_cert, client_key) = crate::tls::install(&client, &ca.sign(true));
    let mut client_args: Vec<&str> = Vec::new();
    if mutual {
        client_args = vec!["--cert", &client_cert, "--key", &client_key];
    }
    let curl_tls =
        |ca: &str, args: &[&str]| -> String { curl_tls(ca, &[&client_args[..], args].concat()) };
    let https = |node: &Node, path: &str| format!("https://localhost:{}{path}", node.api);
    let n = 20;
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"pk": format!("key{i}"), "sk": "s", "data": {"i": i}}))
        .collect();
    let written = curl_tls(
        ca.path(),
        &[
            &https(&nodes[0], "/records/put"),
            "-d",
            &json!({"Records": records, "wait": true}).to_string(),
        ],
    );
    let written: Value = serde_json::from_str(&written).expect(&written);
    // Every key from either node: half of them asked of the other over HTTPS.
    for node in &nodes {
        let body = json!({"Records": keys(n), "min_offsets": written["Positions"]}).to_string();
        let reply = curl_tls(ca.path(), &[&https(node, "/records/get"), "-d", &body]);
        let reply: Value = serde_json::from_str(&reply).expect(&reply);
        let found = reply["Records"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"));
        assert_eq!(found.len(), n, "{reply}\n{}", log_tail(node, 30));
    }
    for node in &nodes {
        let ok = metric(
            node,
            "firescroll_proxied_reads_total{operation=\"get\",result=\"ok\"}",
        );
        assert!(ok > 0.0, "node on {} asked its peer", node.api);
    }
    // A watch of a pk the other node applies streams from it over HTTPS too.
    let pk = (0..)
        .map(|i| format!("watched{i}"))
        .find(|pk| !nodes[1].owned().contains(&(partition_of(pk) as u64)))
        .unwrap();
    let watch = std::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "6", "--cacert", ca.path()])
        .args(&client_args)
        .arg(https(&nodes[1], &format!("/records/watch?pk={pk}")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let put = json!({"Records": [{"pk": pk, "sk": "a", "data": 7}], "wait": true}).to_string();
    curl_tls(ca.path(), &[&https(&nodes[0], "/records/put"), "-d", &put]);
    let out = watch.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events.contains("event: change") && events.contains(&format!("\"Pk\":\"{pk}\"")),
        "{events}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
