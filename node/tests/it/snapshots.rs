//! S3 snapshots against a real S3-compatible server (s3s-fs, SigV4 checked): what is uploaded
//! proves the partition digest, retention keeps SNAPSHOT_KEEP, and a node that lost its store
//! restores from the newest snapshot that verifies (skipping a damaged one) and catches up.

use crate::common;

use common::{Node, S3Server};
use serde_json::{Value, json};

fn start_node(s3: &S3Server, extra: &[(&str, &str)]) -> Node {
    let mut env = s3.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start_with(&env)
}

fn put_many(node: &Node, from: usize, to: usize) {
    for chunk in (from..to).collect::<Vec<_>>().chunks(200) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"pk": format!("user{}", i % 37), "sk": format!("s{i}"), "data": {"i": i}}))
            .collect();
        let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
        assert_eq!(status, 200, "{reply}");
    }
}

/// Waits (bounded) until `node`'s partitions have the `expected` digests.
fn wait_for_digests(node: &Node, expected: &[(Value, Value, Value)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while node.digests() != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "digests differ:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The object size of the newest snapshot of `partition` the bucket lists.
fn listed_bytes(node: &Node, partition: u64) -> u64 {
    let (_, text) = node.get_url(&node.url("/admin/snapshots"));
    let listed: Value = serde_json::from_str(&text).unwrap();
    listed["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["partition"] == partition)
        .max_by_key(|m| m["next_offset"].as_u64())
        .unwrap()["object_bytes"]
        .as_u64()
        .unwrap()
}

fn snapshot(node: &Node) -> Vec<Value> {
    let reply = node
        .client()
        .post(node.url("/admin/snapshots"))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = serde_json::from_str(&reply.text().unwrap()).unwrap();
    body["Snapshots"].as_array().unwrap().clone()
}

/// A node with 400 records, snapshotted, then stopped and its whole data directory (store and
/// embedded log) deleted: the node, the snapshots taken and the digests before.
fn snapshotted_then_disk_lost(s3: &S3Server) -> (Node, Vec<Value>, Vec<(Value, Value, Value)>) {
    let mut node = start_node(s3, &[]);
    put_many(&node, 0, 400);
    let taken = snapshot(&node);
    let before = node.digests();
    node.terminate();
    std::fs::remove_dir_all(&node.data).unwrap();
    (node, taken, before)
}

/// Writes a record and checks it was numbered right after the snapshot of its partition in
/// `taken` (as if the log had never been lost) and applied.
fn assert_written_after_the_snapshot(node: &Node, taken: &[Value]) {
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "user5", "sk": "new", "data": 1}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    let position = &reply["Positions"][0];
    let snapshot_of = taken
        .iter()
        .find(|t| t["Partition"] == position["Partition"])
        .unwrap();
    assert_eq!(position["Offset"], snapshot_of["Offset"], "{reply}");
    assert_eq!(position["Outcome"]["Status"], "applied", "{reply}");
}

#[test]
fn snapshots_prove_the_digest_keep_the_newest_and_restore_a_lost_store() {
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[("SNAPSHOT_KEEP", "2")]);
    put_many(&node, 0, 1500);
    // An entry rejected by its `if` is in the log too; the snapshot holds the state after it.
    let (_, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "user1", "sk": "s1", "data": 0, "if": "data == null"}], "wait": true}),
    );
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "rejected",
        "{reply}"
    );

    // Each snapshot's content hash is the partition's digest at the same offset.
    let taken = snapshot(&node);
    assert_eq!(taken.len(), 4, "{taken:?}");
    let partitions = node.partitions();
    for t in &taken {
        let p = &partitions[t["Partition"].as_u64().unwrap() as usize];
        assert_eq!(t["Sha256"], p["digest"], "{t} vs {p}");
        assert_eq!(
            t["Offset"].as_u64().unwrap(),
            p["applied_offset"].as_u64().unwrap() + 1
        );
        assert_eq!(t["Records"], p["records"]);
        assert_eq!(p["last_snapshot"]["offset"], t["Offset"], "{p}");
    }
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    let object_bytes = listed_bytes(&node, 0);
    assert!(
        metrics.contains(&format!(
            "firescroll_snapshot_bytes{{partition=\"0\"}} {object_bytes}"
        )) && metrics.contains("firescroll_snapshot_duration_seconds_count 4")
            && metrics.contains("firescroll_snapshot_age_seconds{partition=\"0\"} 0"),
        "{metrics}"
    );

    // Two more rounds with writes between: retention keeps the newest two per partition.
    put_many(&node, 1500, 1600);
    let second = snapshot(&node);
    put_many(&node, 1600, 1700);
    let third = snapshot(&node);
    let (status, text) = node.get_url(&node.url("/admin/snapshots"));
    assert_eq!(status, 200, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    let listed = listed["Snapshots"].as_array().unwrap();
    assert_eq!(listed.len(), 8, "{listed:?}");
    let keys: Vec<&str> = listed
        .iter()
        .map(|m| m["object_key"].as_str().unwrap())
        .collect();
    for t in second.iter().chain(&third) {
        assert!(keys.contains(&t["Key"].as_str().unwrap()), "{t} kept");
    }
    for t in &taken {
        assert!(!keys.contains(&t["Key"].as_str().unwrap()), "{t} removed");
        assert!(!s3.object_path(t["Key"].as_str().unwrap()).exists());
    }

    // Writes after the last snapshot are only in the log.
    put_many(&node, 1700, 1750);
    let before = node.digests();

    // The store is lost (the log is kept); the newest snapshot of partition 0 is damaged.
    node.terminate();
    std::fs::remove_dir_all(node.data.join("store")).unwrap();
    let damaged = third.iter().find(|t| t["Partition"] == 0).unwrap()["Key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = s3.object_path(&damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    node.spawn();

    // Every partition came back from a snapshot — partition 0 from the older one — and caught
    // up from the log to the same bytes as before.
    wait_for_digests(&node, &before);
    for p in node.partitions() {
        let from = p["restored_from"]
            .as_str()
            .unwrap_or_else(|| panic!("not restored: {p}"));
        let expected = if p["partition"] == 0 { &second } else { &third };
        let key = expected
            .iter()
            .find(|t| t["Partition"] == p["partition"])
            .unwrap()["Key"]
            .as_str()
            .unwrap();
        assert_eq!(from, key, "{p}");
    }
    assert!(
        node.log().contains("snapshot does not verify"),
        "the damaged snapshot is reported"
    );
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    assert!(
        metrics.contains("firescroll_snapshot_restores_total{result=\"ok\"} 4")
            && metrics.contains("firescroll_snapshot_restores_total{result=\"invalid\"} 1"),
        "{metrics}"
    );
    // Outcomes of entries before the snapshot are not known after a restore: expired, never
    // a wrong "applied".
    let (_, reply) = node.post(
        "/records/outcomes",
        json!({"Positions": [{"Partition": 0, "Offset": 0}]}),
    );
    assert_eq!(
        reply["Outcomes"][0]["Outcome"]["Status"], "expired",
        "{reply}"
    );
}

#[test]
fn without_s3_snapshots_are_a_clear_error() {
    let node = Node::start();
    let reply = node
        .client()
        .post(node.url("/admin/snapshots"))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 400);
    let body: Value = serde_json::from_str(&reply.text().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "snapshots_off", "{body}");
}

#[test]
fn snapshots_run_on_a_timer_and_s3_going_away_never_stops_the_node() {
    let mut s3 = S3Server::start();
    let node = start_node(&s3, &[("SNAPSHOT_INTERVAL", "1s")]);
    put_many(&node, 0, 300);
    let metric = |name: &str| -> f64 {
        let (_, text) = node.get_url(&node.internal_url("/metrics"));
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let ok = "firescroll_snapshots_total{result=\"ok\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric(ok) < 4.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic snapshots:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // S3 goes away: writes and reads go on; an operator's snapshot says why it failed.
    s3.stop();
    put_many(&node, 300, 400);
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "user3", "sk": "s3"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    // The timer's passes fail, visibly; an operator's snapshot says why — or, when one of those
    // failing passes is running right now (with a 1 s interval they run back to back), that it
    // is (one pass at a time).
    let failed = "firescroll_snapshots_total{result=\"failed\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(failed) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "failed snapshots are not counted:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let reply = node
        .client()
        .post(node.url("/admin/snapshots"))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 503);
    let body: Value = serde_json::from_str(&reply.text().unwrap()).unwrap();
    let code = body["error"]["code"].as_str().unwrap();
    assert!(
        ["snapshot_failed", "snapshot_in_progress"].contains(&code),
        "{body}"
    );
    if code == "snapshot_failed" {
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.len() > 20, "{message}");
    }
    // Back again: the timer snapshots the partitions that changed meanwhile.
    let before = metric(ok);
    s3.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric(ok) < before + 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshots did not resume:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(metric("firescroll_snapshots_total{result=\"failed\"}") >= 1.0);
}

#[test]
fn an_upload_that_died_is_never_restored_and_is_cleaned_up() {
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[("SNAPSHOT_ORPHAN_GRACE", "0s")]);
    put_many(&node, 0, 200);
    let taken = snapshot(&node);
    // What a node killed mid-upload leaves: a newer object of partition 0 with no manifest.
    let key = taken.iter().find(|t| t["Partition"] == 0).unwrap()["Key"]
        .as_str()
        .unwrap()
        .replace("-", "9-");
    let orphan = s3.object_path(&key);
    std::fs::write(&orphan, b"half an upload").unwrap();
    put_many(&node, 200, 220);
    let before = node.digests();
    // The store is lost: the partition restores from the snapshot that has a manifest.
    node.terminate();
    std::fs::remove_dir_all(node.data.join("store")).unwrap();
    node.spawn();
    wait_for_digests(&node, &before);
    let p0 = &node.partitions()[0];
    assert_eq!(
        p0["restored_from"],
        taken.iter().find(|t| t["Partition"] == 0).unwrap()["Key"]
    );
    // The next snapshot's retention removes the orphan (grace 0 here; an hour by default).
    assert!(orphan.exists());
    snapshot(&node);
    assert!(!orphan.exists(), "the dead upload is still there");
}

#[test]
fn a_single_node_restores_onto_an_empty_disk_and_numbers_after_the_snapshot() {
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[]);
    put_many(&node, 0, 400);
    let (status, binding) =
        crate::plugins::upload(&node, "gate", crate::plugins::example("semver-gate"), None);
    assert_eq!(status, 200, "{binding}");
    let taken = snapshot(&node);
    let before = node.digests();
    // Disaster: the whole data directory (store and embedded log) is gone.
    node.terminate();
    std::fs::remove_dir_all(&node.data).unwrap();
    node.spawn();
    wait_for_digests(&node, &before);
    // New writes are numbered after the snapshot, as if the log had never been lost.
    assert_written_after_the_snapshot(&node, &taken);
    let (status, _) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 200);
    // The plugins came back with the partitions (the embedded log has no plugins topic).
    let (_, listed) = node.get_url(&node.url("/plugins"));
    assert!(
        listed.contains(binding["digest"].as_str().unwrap()),
        "{listed}"
    );
    let gated = |version: &str| {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "svc", "sk": "cfg", "data": {"version": version}, "if_plugin": "gate"}], "wait": true}),
        );
        assert_eq!(status, 200, "{reply}");
        reply["Positions"][0]["Outcome"]["Status"].clone()
    };
    assert_eq!(gated("1.2.0"), "applied", "{}", node.log());
    assert_eq!(gated("1.1.0"), "rejected", "the restored plugin runs");
}

/// A node on the embedded log that lost its whole data directory while S3 is away once served
/// its partitions empty from offset 0 and took writes there: the snapshots could never be
/// continued after that, and everything they held was lost for good once S3 came back. Such a
/// partition now takes no writes while it opens and none while it is left unrestored, says why,
/// and is restored, numbering after its snapshot, once S3 is back.
#[test]
fn a_node_that_lost_its_disk_while_s3_is_away_takes_no_writes_until_it_restores() {
    let mut s3 = S3Server::start();
    let (mut node, taken, before) = snapshotted_then_disk_lost(&s3);
    // Unserved partitions are retried every min(SNAPSHOT_INTERVAL, 30 s); a write to an opening
    // one waits for it up to WRITE_WAIT_TIMEOUT_MS (here shorter than a listing's 10 s).
    node.set_env("SNAPSHOT_INTERVAL", "2s");
    node.set_env("WRITE_WAIT_TIMEOUT_MS", "2000");
    // S3 hangs: the partitions stay opening (each listing waits up to 10 s).
    s3.signal("STOP");
    node.spawn();
    let write = |node: &Node| {
        node.post(
            "/records/put",
            json!({"Records": [{"pk": "user5", "sk": "new", "data": 1}], "wait": true}),
        )
    };
    let (status, reply) = write(&node);
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "partition_opening", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still opening on a new disk"),
        "{reply}"
    );
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused = redis::cmd("SET")
        .arg("flag")
        .arg("on")
        .query::<String>(&mut redis)
        .unwrap_err();
    assert_eq!(refused.code(), Some("LOADING"), "{refused}");
    // S3 goes away altogether: no partition can be restored, and none is served or written.
    s3.stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (status, ready) = node.get_url(&node.url("/ready"));
        assert_eq!(status, 503, "{ready}");
        if ready.matches("no S3 snapshot of it was restored").count() == taken.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ready}\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (status, reply) = write(&node);
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "partition_unrestored", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("S3 unreachable") && message.contains("nothing was written"),
        "{message}"
    );
    let refused = redis::cmd("SET")
        .arg("flag")
        .arg("on")
        .query::<String>(&mut redis)
        .unwrap_err();
    assert!(refused.to_string().contains("takes no writes"), "{refused}");
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "user5", "sk": "s5"}]}),
    );
    assert_eq!(status, 503, "not served empty: {reply}");
    assert!(
        node.metric(r#"firescroll_requests_refused_total{reason="new_disk"}"#) >= 3.0,
        "{}",
        node.log()
    );
    // S3 is back: the retry restores every partition, and new writes number after the
    // snapshot, as if the log had never been lost.
    s3.spawn();
    wait_for_digests(&node, &before);
    assert_written_after_the_snapshot(&node, &taken);
    let (status, ready) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 200, "{ready}");
}

/// A restore writes a whole partition past the write path's disk check: one that would take the
/// volume under `MIN_FREE_DISK_BYTES` is not started (a full disk stops fjall, and with it every
/// partition, until a restart), says why, and a later start with room restores.
#[test]
fn a_restore_that_would_take_the_disk_under_its_floor_is_not_started() {
    let s3 = S3Server::start();
    let (mut node, taken, before) = snapshotted_then_disk_lost(&s3);
    // A floor above any free space here: every download would go under it.
    node.set_env("MIN_FREE_DISK_BYTES", &(1u64 << 60).to_string());
    node.spawn();
    let failed = r#"firescroll_snapshot_restores_total{result="failed"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while node.metric(failed) < taken.len() as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} restores counted failed of {}:\n{}",
            node.metric(failed),
            taken.len(),
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = node.log();
    assert!(
        log.contains("snapshot not fetched") && log.contains("below MIN_FREE_DISK_BYTES"),
        "{log}"
    );
    assert_eq!(
        node.metric(r#"firescroll_snapshot_restores_total{result="ok"}"#),
        0.0
    );
    for p in node.partitions() {
        assert!(p["restored_from"].is_null(), "nothing restored: {p}");
    }
    let downloads = node.data.join("snapshot-downloads");
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "downloaded anyway: {left:?}");
    // With room again (nothing was written meanwhile: the floor refused writes too), the next
    // start restores every partition.
    node.terminate();
    node.set_env("MIN_FREE_DISK_BYTES", "0");
    node.spawn();
    wait_for_digests(&node, &before);
}

#[test]
fn a_kill_9_during_restore_leaves_nothing_half_restored_and_the_next_start_completes_it() {
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[]);
    put_many(&node, 0, 20_000);
    snapshot(&node);
    let before = node.digests();
    node.terminate();
    std::fs::remove_dir_all(node.data.join("store")).unwrap();
    // Killed as soon as a restore starts, three times over: whatever each start got done, the
    // store holds either nothing of a partition's snapshot or all of it.
    for _ in 0..3 {
        let seen = node.log().len();
        node.spawn_process();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !node.log()[seen..].contains("restoring partition") {
            assert!(
                std::time::Instant::now() < deadline,
                "no restore began:\n{}",
                node.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        node.kill9();
    }
    // A download of a partition that no longer restores here (its ownership moved on while the
    // node was down) is removed at the next start too.
    let downloads = node.data.join("snapshot-downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(
        downloads.join("p00099-00000000000000000007.snap.gz"),
        b"left",
    )
    .unwrap();
    node.spawn();
    wait_for_digests(&node, &before);
    assert_eq!(node.get_url(&node.url("/ready")).0, 200);
    for p in node.partitions() {
        assert!(
            p["restored_from"].is_string(),
            "every partition was restored: {p}"
        );
    }
    // The downloads the kills left behind, and the last ones, are gone.
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", downloads.display());
}

#[test]
fn with_log_retention_a_partition_is_snapshotted_before_the_log_outlives_its_snapshot() {
    let s3 = S3Server::start();
    // Far fewer entries than SNAPSHOT_MIN_ENTRIES: only LOG_RETENTION makes these snapshots.
    let node = start_node(
        &s3,
        &[
            ("SNAPSHOT_INTERVAL", "1s"),
            ("SNAPSHOT_MIN_ENTRIES", "1000000"),
            ("LOG_RETENTION", "4s"),
        ],
    );
    put_many(&node, 0, 200);
    let uploaded = |node: &Node| -> u64 {
        let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("firescroll_snapshots_total{result=\"ok\"} "))
            .map_or(0, |n| n.parse().unwrap())
    };
    // Every partition's newest snapshot holds everything it applied.
    let covered =
        |p: &Value| p["last_snapshot"]["offset"] == p["applied_offset"].as_u64().unwrap() + 1;
    node.wait_until(
        "every partition snapshotted",
        std::time::Duration::from_secs(30),
        |n| n.partitions().iter().all(covered),
    );
    let first = uploaded(&node);
    // Half the retention later, a partition with new entries is snapshotted again; the ones
    // without are not (the log holds nothing after their snapshot).
    let (_, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "user1", "sk": "late", "data": 1}], "wait": true}),
    );
    let changed = reply["Positions"][0]["Partition"].clone();
    node.wait_until(
        "the changed partition snapshotted again",
        std::time::Duration::from_secs(30),
        |n| {
            n.partitions()
                .iter()
                .any(|p| p["partition"] == changed && covered(p))
        },
    );
    assert_eq!(uploaded(&node), first + 1, "only the changed partition");
}

#[test]
fn a_snapshot_larger_than_a_part_is_uploaded_in_parts_and_restores() {
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[("SNAPSHOT_PART_BYTES", "5242880")]);
    // ~12 MB of data that gzip cannot shrink much, all in one pk (one partition).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'!' + (state % 90) as u8)
            })
            .collect()
    };
    for batch in 0..60 {
        let records: Vec<Value> = (0..100)
            .map(|i| json!({"pk": "big", "sk": format!("{batch:03}-{i:03}"), "data": noise(2000)}))
            .collect();
        let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
        assert_eq!(status, 200, "{reply}");
    }
    let taken = snapshot(&node);
    let big = taken
        .iter()
        .find(|t| t["Records"] == 6000)
        .expect("the big partition");
    let bytes = listed_bytes(&node, big["Partition"].as_u64().unwrap());
    assert!(bytes > 5242880, "{bytes} bytes: more than one part");
    assert!(
        node.log().contains("snapshot object uploaded in parts") && node.log().contains("parts=2"),
        "a multipart upload: {}",
        node.log()
    );
    let before = node.digests();
    node.terminate();
    std::fs::remove_dir_all(node.data.join("store")).unwrap();
    node.spawn();
    wait_for_digests(&node, &before);
    let p = node.partitions();
    let restored = p
        .iter()
        .find(|p| p["partition"] == big["Partition"])
        .unwrap();
    assert_eq!(restored["restored_from"], big["Key"], "{restored}");
}

#[test]
fn one_snapshot_pass_at_a_time_however_many_requests_arrive() {
    let s3 = S3Server::start();
    let node = start_node(&s3, &[]);
    put_many(&node, 0, 100);
    // S3 hangs: the first pass waits on it; every other request is answered at once.
    s3.signal("STOP");
    let first = {
        let url = node.url("/admin/snapshots");
        std::thread::spawn(move || {
            let r = reqwest::blocking::Client::new()
                .post(url)
                .timeout(std::time::Duration::from_secs(120))
                .send()
                .unwrap();
            r.status().as_u16()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..20 {
        let reply = node
            .client()
            .post(node.url("/admin/snapshots"))
            .send()
            .unwrap();
        assert_eq!(reply.status(), 503);
        let body: Value = serde_json::from_str(&reply.text().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "snapshot_in_progress", "{body}");
    }
    s3.signal("CONT");
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(snapshot(&node).len(), 4, "the next pass runs");
}

#[test]
fn a_node_restarting_while_s3_hangs_serves_and_says_which_partitions_are_opening() {
    // Each partition's open lists its snapshots first (bounded at 10 s while S3 does not
    // answer). The node once did that for every partition before it served anything: with
    // S3 hanging it answered not even /up for partitions x 10 s.
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[]);
    put_many(&node, 0, 100);
    let before = node.partitions();
    assert_eq!(before.len(), 4);
    node.terminate();
    s3.signal("STOP");
    node.spawn();
    // Not ready, and it says why: the partitions still opening.
    let (status, text) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("is opening"), "{text}");
    // A read of an opening partition is refused with a reason (Redis clients see LOADING);
    // a read of an open one is answered.
    let mut opening = 0;
    let mut answered = None;
    for user in 0..37 {
        let get = json!({"Records": [{"pk": format!("user{user}"), "sk": "s1"}]});
        let (status, reply) = node.post("/records/get", get);
        if status == 503 {
            assert_eq!(reply["error"]["code"], "partition_opening", "{reply}");
            opening += 1;
        } else {
            assert_eq!(status, 200, "{reply}");
            answered = Some(user);
        }
    }
    assert!(
        opening > 0,
        "every partition opened within the first listing's wait"
    );
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let replies: Vec<String> = (0..37)
        .map(|user| {
            match redis::cmd("HGET")
                .arg(format!("user{user}"))
                .arg("s1")
                .query::<Option<String>>(&mut redis)
            {
                Ok(_) => "answered".to_string(),
                Err(e) => e.code().unwrap_or("none").to_string(),
            }
        })
        .collect();
    assert!(replies.iter().any(|r| r == "LOADING"), "{replies:?}");
    // INFO says so, as Redis does while it loads (ioredis's ready check waits for `loading:0`).
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut redis)
        .unwrap();
    assert!(persistence.contains("loading:1\r\n"), "{persistence}");
    assert!(
        replies.iter().all(|r| r == "LOADING" || r == "answered"),
        "{replies:?}"
    );
    // A read that waits for a position of a partition still opening waits its whole bound,
    // then answers as any wait past its bound does, saying why (it once answered 503 instead).
    // Its key must be in a partition already open (a key of an opening one is refused before
    // any wait): the first opens once its listing gives up, after 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let user = loop {
        if let Some(user) = answered {
            break user;
        }
        assert!(std::time::Instant::now() < deadline, "no partition opened");
        std::thread::sleep(std::time::Duration::from_millis(200));
        answered = (0..37).find(|user| {
            let get = json!({"Records": [{"pk": format!("user{user}"), "sk": "s1"}]});
            node.post("/records/get", get).0 == 200
        });
    };
    {
        let (_, ready) = node.get_url(&node.url("/ready"));
        let last_opening = before
            .iter()
            .map(|p| p["partition"].as_u64().unwrap())
            .filter(|p| ready.contains(&format!("partition {p} is opening")))
            .max()
            .expect("a partition still opening");
        let position = before
            .iter()
            .find(|p| p["partition"] == last_opening)
            .unwrap()["applied_offset"]
            .clone();
        let (status, reply) = node.post(
            "/records/get",
            json!({"Records": [{"pk": format!("user{user}"), "sk": "s1"}],
                   "min_offsets": [{"Partition": last_opening, "Offset": position}]}),
        );
        assert_eq!(status, 504, "{reply}");
        assert_eq!(reply["error"]["code"], "min_offsets_timeout", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("still opening"), "{message}");
        // After the whole bound (5 s), not after the 250 ms at which a wait asks the log.
        let waited: u64 = message
            .split("after ")
            .nth(1)
            .and_then(|rest| rest.split(" ms").next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("{message}"));
        assert!(waited >= 4_000, "{message}");
    }
    // A write taken meanwhile is applied once its partition opens, and its `wait` waits for
    // that (it once answered at once, without an outcome: "not served by this node").
    let waiting = {
        let (url, client) = (node.url("/records/put"), node.client().clone());
        std::thread::spawn(move || {
            let body = json!({"Records": [{"pk": "late", "sk": "", "data": 1}], "wait": true});
            let reply = client.post(url).body(body.to_string()).send().unwrap();
            let status = reply.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&reply.text().unwrap()).unwrap(),
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    s3.signal("CONT");
    let (status, reply) = waiting.join().unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "applied",
        "{reply}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while node.get_url(&node.url("/ready")).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut redis)
        .unwrap();
    assert!(persistence.contains("loading:0\r\n"), "{persistence}");
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "late", "sk": ""}]}),
    );
    assert_eq!(
        (status, &reply["Records"][0]["Data"]),
        (200, &json!(1)),
        "{reply}"
    );
    let records = |partitions: &[Value]| -> u64 {
        partitions
            .iter()
            .map(|p| p["records"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(records(&node.partitions()), records(&before) + 1);
}

#[test]
fn a_node_stopped_while_its_partitions_open_stops_cleanly_and_opens_nothing_after() {
    // Partitions open in the background while S3 hangs; a SIGTERM then must not leave that
    // open going on after the final flush (it once opened a partition after "stopped cleanly"
    // and then panicked asking a runtime that was going away for a timer).
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[]);
    put_many(&node, 0, 50);
    node.terminate();
    s3.signal("STOP");
    node.spawn();
    assert_eq!(node.get_url(&node.url("/ready")).0, 503);
    let status = node.terminate();
    let log = node.log();
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("panicked"), "{log}");
    let stopped = log.rfind("stopped cleanly").expect("stopped cleanly");
    assert!(
        !log[stopped..].contains("partition opened"),
        "a partition opened after the stop:\n{}",
        &log[stopped..]
    );
    s3.signal("CONT");
}

#[test]
fn a_plugin_deleted_since_the_last_snapshot_stays_deleted_across_a_restart() {
    // The bucket keeps the bindings of the last snapshot pass. Only a new store (a lost data
    // directory) takes plugins from it: a restart once brought back a plugin deleted since,
    // because the store then held no binding.
    let s3 = S3Server::start();
    let mut node = start_node(&s3, &[]);
    put_many(&node, 0, 50);
    let (status, binding) =
        crate::plugins::upload(&node, "gate", crate::plugins::example("semver-gate"), None);
    assert_eq!(status, 200, "{binding}");
    snapshot(&node);
    let deleted = node
        .client()
        .delete(node.url("/plugins/gate"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);
    node.terminate();
    node.spawn();
    let (status, listed) = node.get_url(&node.url("/plugins"));
    assert_eq!(status, 200, "{listed}");
    assert!(
        !listed.contains("gate"),
        "the deleted plugin came back: {listed}"
    );
    assert!(
        !node.log().contains("plugins restored from S3"),
        "{}",
        node.log()
    );
}
