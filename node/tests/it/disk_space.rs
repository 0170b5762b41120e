//! A node whose disk fills up: writes are refused before the volume is full (MIN_FREE_DISK_BYTES),
//! reads and deletes go on, nothing acknowledged is lost, and writes are taken again once space
//! is freed, without a restart. The node runs on a small tmpfs volume of its own.

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallVolume {
    dir: tempfile::TempDir,
}

impl SmallVolume {
    fn mount(bytes: u64) -> SmallVolume {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "firescroll-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs volume for the node's data: run the tests as root \
             (as scripts/test.sh and CI do)"
        );
        SmallVolume { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.path()).unwrap();
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the volume with a file until only `leave` bytes are free.
fn ballast(volume: &SmallVolume, leave: u64) -> PathBuf {
    let path = volume.path().join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while volume.free() > leave + chunk.len() as u64 {
        file.write_all(&chunk).unwrap();
        file.flush().unwrap();
    }
    path
}

fn redis_command(node: &Node, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// `INFO persistence`'s `aof_last_write_status`: `err` while the node refuses every write.
fn write_status(node: &Node) -> String {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("aof_last_write_status:"))
        .unwrap_or_else(|| panic!("{info}"))
        .to_string()
}

fn refused_for_disk(node: &Node) -> u64 {
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    metrics
        .lines()
        .find(|l| l.starts_with("firescroll_requests_refused_total{reason=\"disk_space\"}"))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_takes_writes_again_once_space_is_freed() {
    const FLOOR: u64 = 16 << 20;
    let volume = SmallVolume::mount(96 << 20);
    // Declared after the volume: dropped (killed) before it is unmounted.
    let node = Node::start_in(
        volume.path(),
        &[("MIN_FREE_DISK_BYTES", &FLOOR.to_string())],
    );
    let value = "v".repeat(8 << 10);
    let mut acknowledged: Vec<String> = Vec::new();
    for i in 0..20 {
        let sk = format!("early-{i}");
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records":[{"pk":"disk","sk":sk,"data":value}],"wait":true}),
        );
        assert_eq!(status, 200, "{reply}");
        acknowledged.push(sk);
    }

    // Leave a few MiB above the floor, then write until the node refuses.
    let ballast = ballast(&volume, FLOOR + (4 << 20));
    let mut refusal: Option<Value> = None;
    for i in 0..4_000 {
        let sk = format!("late-{i}");
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records":[{"pk":"disk","sk":sk,"data":value}]}),
        );
        match status {
            200 => acknowledged.push(sk),
            507 => {
                refusal = Some(reply);
                break;
            }
            _ => panic!("{status}: {reply}"),
        }
    }
    let refusal = refusal.expect("the node took 32 MiB of writes with 4 MiB free");
    assert_eq!(refusal["error"]["code"], "disk_full", "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("MIN_FREE_DISK_BYTES") && message.contains("deletes are still taken"),
        "{message}"
    );
    assert!(volume.free() > FLOOR / 2, "refused before the disk filled");
    assert!(refused_for_disk(&node) >= 1);

    // Redis clients get Redis's error for writes it cannot persist; reads go on.
    let reply = redis_command(&node, "SET disk:redis v");
    assert!(reply.starts_with("-MISCONF "), "{reply}");
    assert!(reply.contains("MIN_FREE_DISK_BYTES"), "{reply}");
    assert_eq!(redis_command(&node, "PING"), "+PONG\r\n");
    // Monitoring that reads INFO sees it, as Redis shows a failed write to its AOF.
    assert_eq!(write_status(&node), "err");

    // Everything acknowledged is read back: no partition stopped.
    for chunk in acknowledged.chunks(500) {
        let keys: Vec<Value> = chunk
            .iter()
            .map(|sk| json!({"pk":"disk","sk":sk}))
            .collect();
        let (status, reply) = node.post("/records/get", json!({"Records":keys}));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["Records"].as_array().unwrap().len(), chunk.len());
    }
    // Deleting is how a user makes room: taken.
    let (status, reply) = node.post(
        "/records/delete",
        json!({"Records":[{"pk":"disk","sk":"early-0"}],"wait":true}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "applied",
        "{reply}"
    );
    let (status, body) = node.get_url(&node.url("/ready"));
    assert_eq!(
        status, 200,
        "reads are served, so the node stays ready: {body}"
    );

    // Space comes back: writes are taken again, without a restart.
    std::fs::remove_file(ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records":[{"pk":"disk","sk":"after","data":1}],"wait":true}),
        );
        if status == 200 {
            assert_eq!(
                reply["Positions"][0]["Outcome"]["Status"], "applied",
                "{reply}"
            );
            break;
        }
        assert_eq!(status, 507, "{reply}");
        assert!(Instant::now() < deadline, "writes were never taken again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(redis_command(&node, "SET disk:redis v"), "+OK\r\n");
    assert_eq!(write_status(&node), "ok");
    let log = node.log();
    assert!(!log.contains("partition stopped"), "{log}");
    assert!(log.contains("disk almost full: refusing writes"), "{log}");
    assert!(log.contains("taking writes again"), "{log}");
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    assert!(metrics.contains("firescroll_disk_free_bytes "), "{metrics}");
}

#[test]
fn without_the_floor_a_full_disk_stops_partitions_with_a_reason_and_loses_nothing_acknowledged() {
    let volume = SmallVolume::mount(96 << 20);
    let mut node = Node::start_in(volume.path(), &[("MIN_FREE_DISK_BYTES", "0")]);
    let ballast = ballast(&volume, 6 << 20);
    let value = "v".repeat(8 << 10);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refusal = None;
    for i in 0..4_000 {
        let sk = format!("k{i}");
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records":[{"pk":format!("p{}", i % 16),"sk":sk,"data":value}]}),
        );
        match status {
            200 => acknowledged.push(format!("p{}/{sk}", i % 16)),
            _ => {
                refusal = Some((status, reply));
                break;
            }
        }
    }
    let (status, reply) = refusal.expect("the disk filled");
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{reply}"
    );
    // Not ready, saying why in words an operator can act on (whichever met the full disk
    // first: the log, or a partition's store).
    let (status, body) = node.get_url(&node.url("/ready"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("No space left on device") && body.contains("restart the node"),
        "{body}"
    );
    if body.contains("not served") {
        assert!(
            body.contains("the disk is full") || body.contains("often a full disk"),
            "{body}"
        );
    }
    // Space back and a restart: every acknowledged write is there.
    std::fs::remove_file(ballast).unwrap();
    node.terminate();
    node.spawn();
    for chunk in acknowledged.chunks(500) {
        let keys: Vec<Value> = chunk
            .iter()
            .map(|key| {
                let (pk, sk) = key.split_once('/').unwrap();
                json!({"pk": pk, "sk": sk})
            })
            .collect();
        let (status, reply) = node.post("/records/get", json!({"Records": keys}));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["Records"].as_array().unwrap().len(), chunk.len());
    }
    assert_eq!(node.get_url(&node.url("/ready")).0, 200);
}
