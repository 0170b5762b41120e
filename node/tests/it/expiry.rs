//! Expiry: Redis's TTL commands answer as redis-server does, and replicas whose clocks disagree
//! remove expired records at the same offsets (equal digests), through ticks when the partition
//! is quiet, across a kill -9.

use crate::common;

use common::{Broker, Node, free_port, kafka_env};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real redis-server on a free port, without persistence, stopped on drop.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A redis-server with more settings (`--name value` pairs), e.g. its TLS port only:
    /// `["--port", "0", "--tls-port", ...]` (later settings win).
    pub(crate) fn start_with(settings: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(
                settings
                    .iter()
                    .map(|s| s.replace("{port}", &port.to_string())),
            )
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is installed (apt-get install redis-server; scripts/test.sh does)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// One command's answer, as comparable text (errors by their message).
fn answer(con: &mut redis::Connection, command: &str) -> String {
    let mut cmd = redis::cmd(command.split(' ').next().unwrap());
    for arg in command.split(' ').skip(1) {
        cmd.arg(arg);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(value) => format!("{value:?}"),
        Err(e) => format!("error {}", e.detail().unwrap_or_default()),
    }
}

#[test]
fn ttl_commands_answer_as_redis_server_does() {
    let node = Node::start();
    let redis = RedisServer::start();
    let mut ours = connect(node.resp);
    let mut theirs = connect(redis.port);
    // Every TTL here is long enough that the seconds TTL reports do not move while it runs.
    let script = [
        "SET k v EX 1000",
        "TTL k",
        "SET k v",
        "TTL k",
        "TTL missing",
        "PTTL missing",
        "EXPIRETIME missing",
        "EXPIRE k 100 XX",
        "EXPIRE k 100 NX",
        "EXPIRE k 50 GT",
        "EXPIRE k 200 GT",
        "EXPIRE k 300 LT",
        "EXPIRE k 150 LT",
        "TTL k",
        "EXPIRE k 120 XX GT",
        "EXPIRE k 250 GT XX",
        "TTL k",
        "SET k v2 KEEPTTL",
        "TTL k",
        "GET k",
        "PERSIST k",
        "PERSIST k",
        "TTL k",
        "EXPIRE missing 10",
        "PERSIST missing",
        "SETEX s 100 x",
        "TTL s",
        "PSETEX p 100000 y",
        "TTL p",
        "GETEX p PERSIST",
        "TTL p",
        "GETEX p EX 500",
        "TTL p",
        "GETEX p",
        "GETEX missing EX 5",
        "EXPIREAT k 4102444800",
        "EXPIRETIME k",
        "PEXPIRETIME k",
        "PEXPIREAT k 4102444800123",
        "PEXPIRETIME k",
        "EXPIRETIME k",
        "SET e v EX 0",
        "SET e v PX -5",
        "SET e v EX abc",
        "SET e v EX 10 PX 10",
        "SET e v EX 10 KEEPTTL",
        "SET e v EX",
        "SETEX e 0 v",
        "GETEX k EX 0",
        // A missing key is nil whatever the time says (Redis looks it up first).
        "GETEX missing EX 0",
        "GETEX missing PX abc",
        "GETEX k FOREVER",
        "EXPIRE k 10 NX XX",
        "EXPIRE k 10 GT LT",
        "EXPIRE k 10 SOON",
        "EXPIRE k ten",
        "EXISTS e",
        "EXPIRE k -1",
        "EXISTS k",
        "GET k",
        "HSET h f v",
        "EXPIRE h 100",
        "TTL h",
        "HSET h f v2",
        "TTL h",
        // Fields and members added to a key with a TTL keep the key's TTL.
        "HSET h g v",
        "TTL h",
        "HINCRBY h n 3",
        "HINCRBYFLOAT h fl 1.5",
        "HSETNX h m v",
        "TTL h",
        "HMSET h o v",
        "TTL h",
        "SADD st a",
        "EXPIRE st 100",
        "SADD st b",
        "TTL st",
        "SET x 1 EX 100",
        "INCR x",
        "TTL x",
        "APPEND x 0",
        "TTL x",
        "GETSET x 5",
        "TTL x",
        "SET y 1 EX 100 GET",
        "SET y 2 XX KEEPTTL GET",
        "TTL y",
        "SET y 3 PX 1 NX",
        "GET y",
    ];
    let mut differences = Vec::new();
    for command in script {
        let (a, b) = (answer(&mut ours, command), answer(&mut theirs, command));
        if a != b {
            differences.push(format!("{command}: firescroll {a} / redis-server {b}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // XX with LT (which the log format cannot express) is refused, saying what to do instead.
    let refused = redis::cmd("EXPIRE")
        .arg("k")
        .arg(10)
        .arg("XX")
        .arg("LT")
        .query::<i64>(&mut ours)
        .unwrap_err();
    assert!(refused.to_string().contains("use LT alone"), "{refused}");
    // PTTL counts down on both.
    for con in [&mut ours, &mut theirs] {
        let pttl: i64 = redis::cmd("PTTL").arg("p").query(con).unwrap();
        assert!((490_000..=500_000).contains(&pttl), "{pttl}");
    }
    // A short TTL: gone from every read path once due, on both.
    for con in [&mut ours, &mut theirs] {
        let _: () = redis::cmd("SET")
            .arg("short")
            .arg("v")
            .arg("PX")
            .arg(300)
            .query(con)
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg("hs")
            .arg("f")
            .arg("v")
            .query(con)
            .unwrap();
        let _: i64 = redis::cmd("PEXPIRE").arg("hs").arg(300).query(con).unwrap();
        // Added after the TTL: they go with the key.
        let _: i64 = redis::cmd("HSET")
            .arg("hs")
            .arg("later")
            .arg("v")
            .query(con)
            .unwrap();
        let _: i64 = redis::cmd("HINCRBY")
            .arg("hs")
            .arg("count")
            .arg(1)
            .query(con)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(600));
    for (name, con) in [("firescroll", &mut ours), ("redis-server", &mut theirs)] {
        let get: Option<String> = redis::cmd("GET").arg("short").query(con).unwrap();
        let mget: Vec<Option<String>> =
            redis::cmd("MGET").arg("short").arg("s").query(con).unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg("short")
            .arg("hs")
            .query(con)
            .unwrap();
        let hgetall: Vec<String> = redis::cmd("HGETALL").arg("hs").query(con).unwrap();
        let hscan: (String, Vec<String>) = redis::cmd("HSCAN").arg("hs").arg(0).query(con).unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
        keys.sort();
        let (_, mut scanned): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        scanned.sort();
        assert_eq!(get, None, "{name}");
        assert_eq!(mget, vec![None, Some("x".into())], "{name}");
        assert_eq!(exists, 0, "{name}");
        assert!(hgetall.is_empty() && hscan.1.is_empty(), "{name}");
        assert_eq!(keys, ["h", "p", "s", "st", "x", "y"], "{name}");
        assert_eq!(scanned, keys, "{name}");
    }
}

#[test]
fn a_deadline_past_the_year_9999_set_over_redis_still_reads_over_http() {
    // Redis takes deadlines up to i64 milliseconds; RFC 3339 stops at 9999. Such a record was
    // unreadable over HTTP (the time formatter panicked and the connection dropped).
    let node = Node::start();
    let mut con = connect(node.resp);
    assert_eq!(answer(&mut con, "SET far v"), "ok");
    assert_eq!(answer(&mut con, "PEXPIREAT far 9007199254740000"), "int(1)");
    assert_eq!(answer(&mut con, "GET far"), "bulk-string('\"v\"')");
    let (status, reply) = node.post("/records/get", json!({"Records":[{"pk":"far","sk":""}]}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Records"][0]["ExpiresAt"],
        json!(9_007_199_254_740_000_i64),
        "{reply}"
    );
    assert_eq!(reply["Records"][0]["Data"], "v");
    let (status, reply) = node.post("/records/list", json!({"pk":"far"}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Records"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
}

/// `firescroll_records_expired_total` of a node.
fn expired_total(node: &Node) -> u64 {
    metric(node, "firescroll_records_expired_total ")
}

fn metric(node: &Node, prefix: &str) -> u64 {
    node.metric(prefix) as u64
}

#[test]
fn replicas_with_clocks_apart_remove_expired_records_at_the_same_offsets() {
    let broker = Broker::start();
    let env = |group: &str, instance: &str, offset_ms: &str| {
        let mut env = kafka_env(&broker, "expiry", group, instance);
        env.push(("EXPIRY_TICK_MS".into(), "300".into()));
        env.push(("FIRESCROLL_CLOCK_OFFSET_MS".into(), offset_ms.into()));
        // Log format v3: fields added to a key with a deadline take it, and never a field's own
        // (at apply, alike).
        env.push(("ENTRY_WRITE_VERSION".into(), "3".into()));
        env
    };
    let a = Node::start_env(&env("rg1", "a", "0"));
    // b's clock runs 3 s behind a's.
    let mut b = Node::start_env(&env("rg2", "b", "-3000"));
    for node in [&a, &b] {
        node.wait_until("it owns every partition", Duration::from_secs(30), |n| {
            n.owned().len() == 4
        });
    }
    // 40 records expiring in 2 s (by a's clock) over HTTP, through a.
    let records: Vec<_> = (0..40)
        .map(|i| json!({"pk": format!("t{i}"), "sk": "", "data": i, "ttl_ms": 2000}))
        .collect();
    let (status, reply) = a.post("/records/put", json!({"Records": records}));
    assert_eq!(status, 200, "{reply}");
    let mut ra = connect(a.resp);
    let mut rb = connect(b.resp);
    // Through b, with b's clock: 4 s from b's now is 1 s from a's.
    for i in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("r{i}"))
            .arg(i)
            .arg("PX")
            .arg(4000)
            .query(&mut rb)
            .unwrap();
    }
    // Kept: overwritten before the deadline without one; persisted; a long TTL.
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("v")
        .arg("EX")
        .arg(2)
        .query(&mut ra)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("w")
        .query(&mut rb)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("persisted")
        .arg("v")
        .arg("EX")
        .arg(2)
        .query(&mut ra)
        .unwrap();
    let persisted: i64 = redis::cmd("PERSIST")
        .arg("persisted")
        .query(&mut rb)
        .unwrap();
    assert_eq!(persisted, 1);
    let _: () = redis::cmd("SET")
        .arg("long")
        .arg("v")
        .arg("EX")
        .arg(3600)
        .query(&mut ra)
        .unwrap();
    // A hash given 2 s through a, then fields added through b: they go with it.
    let _: i64 = redis::cmd("HSET")
        .arg("sess")
        .arg("user")
        .arg(1)
        .query(&mut ra)
        .unwrap();
    let _: i64 = redis::cmd("PEXPIRE")
        .arg("sess")
        .arg(2000)
        .query(&mut ra)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("sess")
        .arg("seen")
        .arg("now")
        .query(&mut rb)
        .unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg("sess")
        .arg("hits")
        .arg(1)
        .query(&mut rb)
        .unwrap();
    // A field given 2 s of its own through a, then a field added through b: it stays.
    let _: i64 = redis::cmd("HSET")
        .arg("flags")
        .arg(&["on", "1", "beta", "1"])
        .query(&mut ra)
        .unwrap();
    let _: Vec<i64> = redis::cmd("HPEXPIRE")
        .arg("flags")
        .arg(2000)
        .arg("FIELDS")
        .arg(1)
        .arg("beta")
        .query(&mut ra)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("flags")
        .arg("ga")
        .arg(1)
        .query(&mut rb)
        .unwrap();
    let started = Instant::now();
    // Reads still see them before the deadline, on both.
    let before: Option<String> = redis::cmd("GET").arg("t5").query(&mut rb).unwrap();
    assert_eq!(before.as_deref(), Some("5"));
    // Kill b around the deadline, while the purges happen; it replays the same log after.
    std::thread::sleep(Duration::from_millis(1900));
    b.kill9();
    std::thread::sleep(Duration::from_millis(700));
    b.spawn();
    let mut rb = connect(b.resp);
    // No entry is written from here on: only ticks move the log's time.
    let due = Duration::from_secs(3 + 2) + Duration::from_millis(500);
    std::thread::sleep(due.saturating_sub(started.elapsed()));
    for (name, con) in [("a", &mut ra), ("b", &mut rb)] {
        for key in ["t0", "t39", "r0", "r9"] {
            let value: Option<String> = redis::cmd("GET").arg(key).query(con).unwrap();
            assert_eq!(value, None, "{name} still reads {key}");
        }
        let kept: Vec<Option<String>> = redis::cmd("MGET")
            .arg("kept")
            .arg("persisted")
            .arg("long")
            .query(con)
            .unwrap();
        assert_eq!(
            kept,
            vec![Some("w".into()), Some("v".into()), Some("v".into())],
            "{name}"
        );
        let ttl: i64 = redis::cmd("TTL").arg("persisted").query(con).unwrap();
        assert_eq!(ttl, -1, "{name}");
        let sess: Vec<String> = redis::cmd("HGETALL").arg("sess").query(con).unwrap();
        assert!(sess.is_empty(), "{name}: {sess:?}");
        let mut flags: Vec<String> = redis::cmd("HKEYS").arg("flags").query(con).unwrap();
        flags.sort();
        assert_eq!(flags, ["ga", "on"], "{name}");
    }
    // The 54 records are removed from both stores, by ticks (nothing else was written).
    for node in [&a, &b] {
        node.wait_until("54 records expired", Duration::from_secs(20), |n| {
            n.partitions()
                .iter()
                .map(|p| p["records"].as_u64().unwrap())
                .sum::<u64>()
                == 5
        });
    }
    assert_eq!(expired_total(&a), 54);
    let ticks = metric(&a, "firescroll_expiry_ticks_total{result=\"ok\"} ")
        + metric(&b, "firescroll_expiry_ticks_total{result=\"ok\"} ");
    assert!(ticks > 0, "quiet partitions purge through ticks");
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.digests() != b.digests() {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{:?}",
            a.digests(),
            b.digests()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Redis 7.4's hash field expiry (redis-server here is older, so the answers are the ones its
/// documentation gives): per-field codes, and expired fields gone from every hash read.
#[test]
fn hash_fields_expire_one_by_one_as_redis_7_4_documents() {
    let node = Node::start();
    let mut con = connect(node.resp);
    let run = |con: &mut redis::Connection, command: &str| answer(con, command);
    let script = [
        ("HSET h a 1 b 2 c 3", "int(3)"),
        ("HEXPIRE h 100 FIELDS 2 a nope", "array([int(1), int(-2)])"),
        ("HEXPIRE h 50 GT FIELDS 1 a", "array([int(0)])"),
        ("HEXPIRE h 200 NX FIELDS 2 a b", "array([int(0), int(1)])"),
        (
            "HTTL h FIELDS 4 a b c nope",
            "array([int(100), int(200), int(-1), int(-2)])",
        ),
        (
            "HPERSIST h FIELDS 3 a c nope",
            "array([int(1), int(-1), int(-2)])",
        ),
        ("HEXPIRE h 0 FIELDS 1 b", "array([int(2)])"),
        ("HEXPIREAT h 4102444800 FIELDS 1 a", "array([int(1)])"),
        (
            "HEXPIRETIME h FIELDS 2 a c",
            "array([int(4102444800), int(-1)])",
        ),
        ("HPEXPIRETIME h FIELDS 1 a", "array([int(4102444800000)])"),
        (
            "HEXPIRE h 10 FIELDS 2 a",
            "error The `numfields` parameter must match the number of arguments",
        ),
        (
            "HEXPIRE h 10 FIELDS 0",
            "error Parameter `numFields` should be greater than 0",
        ),
        (
            "HEXPIRE h 10 a",
            "error Mandatory argument FIELDS is missing or not at the right position",
        ),
        ("HEXPIRE missing 10 FIELDS 1 a", "array([int(-2)])"),
        ("HPEXPIRE h 200 FIELDS 1 c", "array([int(1)])"),
    ];
    for (command, want) in script {
        assert_eq!(run(&mut con, command), want, "{command}");
    }
    std::thread::sleep(Duration::from_millis(400));
    let all: Vec<String> = redis::cmd("HGETALL").arg("h").query(&mut con).unwrap();
    assert_eq!(all, ["a", "1"], "b was removed, c expired");
    let len: i64 = redis::cmd("HLEN").arg("h").query(&mut con).unwrap();
    assert_eq!(len, 1);
    // The key has no TTL of its own (it goes with its last field), as Redis 7.4 answers.
    let ttl: i64 = redis::cmd("TTL").arg("h").query(&mut con).unwrap();
    assert_eq!(ttl, -1);
}

/// A hash field's TTL is its own, apart from its key's, as Redis 7.4 keeps them: the field
/// commands see only the field's (log format v5), and every field still goes with its key.
#[test]
fn a_fields_ttl_commands_see_its_own_ttl_and_every_field_goes_with_its_key() {
    let node = Node::start();
    let mut con = connect(node.resp);
    let script = [
        ("HSET h a 1 b 2 c 3 d 4", "int(4)"),
        ("PEXPIRE h 2000", "int(1)"),
        // The key's TTL is not a field's: HTTL -1, nothing to persist, NX sets one, GT (no
        // TTL counts as infinite) and XX find none. Before v5 these saw the key's, and
        // HPERSIST took it off the field, which then outlived its key.
        ("HTTL h FIELDS 2 a nope", "array([int(-1), int(-2)])"),
        ("HPERSIST h FIELDS 1 a", "array([int(-1)])"),
        ("HPEXPIRE h 1000000 NX FIELDS 1 b", "array([int(1)])"),
        ("HPEXPIRE h 9000000 GT FIELDS 1 c", "array([int(0)])"),
        ("HPEXPIRE h 1000 XX FIELDS 1 d", "array([int(0)])"),
        ("HPEXPIRE h 5000 LT FIELDS 1 d", "array([int(1)])"),
        // Persisting a field's own TTL leaves it living as its key does.
        ("HPERSIST h FIELDS 1 b", "array([int(1)])"),
        (
            "HTTL h FIELDS 3 a b c",
            "array([int(-1), int(-1), int(-1)])",
        ),
        (
            "HGETEX h PERSIST FIELDS 1 a",
            "array([bulk-string('\"1\"')])",
        ),
        (
            "HGETEX h PERSIST FIELDS 1 d",
            "array([bulk-string('\"4\"')])",
        ),
        ("HTTL h FIELDS 2 a d", "array([int(-1), int(-1)])"),
    ];
    for (command, want) in script {
        assert_eq!(answer(&mut con, command), want, "{command}");
    }
    let ttl: i64 = redis::cmd("PTTL").arg("h").query(&mut con).unwrap();
    assert!((1..=2000).contains(&ttl), "the key's TTL stands: {ttl}");
    // Every field goes with the key, the persisted ones too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let len: i64 = redis::cmd("HLEN").arg("h").query(&mut con).unwrap();
        if len == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{len} fields outlived their key");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `HTTL` of each field as integers.
fn field_ttls(con: &mut redis::Connection, key: &str, fields: &[&str]) -> Vec<i64> {
    redis::cmd("HTTL")
        .arg(key)
        .arg("FIELDS")
        .arg(fields.len())
        .arg(fields)
        .query(con)
        .unwrap()
}

#[test]
fn a_fields_own_deadline_is_not_taken_by_fields_added_to_its_key() {
    // Redis 7.4 keeps a field's TTL (HEXPIRE, HSETEX) apart from its key's: a field added later
    // lives as the key does. Log format v2 let it take the first other field's deadline, so a
    // field HSET into a hash where one field had a TTL silently expired with that field.
    let mut node = Node::start();
    let mut con = connect(node.resp);
    let near = |ttl: i64, want: i64| (want - 5..=want).contains(&ttl);
    let run = |con: &mut redis::Connection, command: &str| answer(con, command);
    run(&mut con, "HSET h a 1 b 2");
    run(&mut con, "HEXPIRE h 100 FIELDS 1 a");
    assert_eq!(run(&mut con, "HSET h c 3"), "int(1)");
    let ttls = field_ttls(&mut con, "h", &["a", "b", "c"]);
    assert!(near(ttls[0], 100) && ttls[1..] == [-1, -1], "{ttls:?}");
    assert_eq!(run(&mut con, "TTL h"), "int(-1)", "the key has no TTL");
    run(&mut con, "HSETEX h2 EX 100 FIELDS 1 a 1");
    assert_eq!(run(&mut con, "TTL h2"), "int(-1)", "only a field has a TTL");
    run(&mut con, "HINCRBY h2 n 1");
    assert_eq!(field_ttls(&mut con, "h2", &["n"]), [-1]);
    // A key TTL: an own TTL shorter than it stays; fields added take the key's, and so does a
    // field HSET writes over (Redis clears a field's TTL when it is overwritten). A field's
    // TTL is its own alone (HTTL -1 for the others); every field without one lives as the key
    // does, which TTL reports (-1 if any of them had none).
    assert_eq!(run(&mut con, "EXPIRE h 500"), "int(1)");
    let ttls = field_ttls(&mut con, "h", &["a", "b", "c"]);
    assert!(near(ttls[0], 100) && ttls[1..] == [-1, -1], "{ttls:?}");
    let key_ttl =
        |con: &mut redis::Connection| -> i64 { redis::cmd("TTL").arg("h").query(con).unwrap() };
    assert!(near(key_ttl(&mut con), 500));
    run(&mut con, "HSET h a 9 d 4");
    assert_eq!(field_ttls(&mut con, "h", &["a", "d"]), [-1, -1]);
    assert!(near(key_ttl(&mut con), 500), "a and d live as the key");
    // HSETEX KEEPTTL and HINCRBY keep a field's own TTL.
    run(&mut con, "HEXPIRE h 50 FIELDS 1 b");
    run(&mut con, "HSETEX h KEEPTTL FIELDS 1 b 7");
    run(&mut con, "HINCRBY h b 1");
    assert!(near(field_ttls(&mut con, "h", &["b"])[0], 50));
    let b: String = redis::cmd("HGET")
        .arg("h")
        .arg("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(b, "8");
    // PERSIST removes the key's TTL, not the field's; then there is no key TTL to remove.
    assert_eq!(run(&mut con, "PERSIST h"), "int(1)");
    let ttls = field_ttls(&mut con, "h", &["a", "b", "c", "d"]);
    assert!(
        ttls[0] == -1 && near(ttls[1], 50) && ttls[2..] == [-1, -1],
        "{ttls:?}"
    );
    assert_eq!(run(&mut con, "PERSIST h"), "int(0)");
    assert_eq!(run(&mut con, "TTL h"), "int(-1)");
    // Over HTTP, `own_ttl` says a put's deadline is the record's own; reads say so.
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "h3", "sk": "a", "data": "1", "ttl_ms": 100_000, "own_ttl": true}]}),
    );
    assert_eq!(status, 200, "{reply}");
    run(&mut con, "HSET h3 b 2");
    assert_eq!(field_ttls(&mut con, "h3", &["b"]), [-1]);
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "h3", "sk": "a"}]}),
    );
    assert_eq!(got["Records"][0]["OwnTtl"], true, "{got}");
    let (status, refused) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "h3", "sk": "a", "data": "1", "own_ttl": true}]}),
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "bad_expiry", "{refused}");
    // Stored as such: after a restart, a field added still does not take b's.
    assert!(node.terminate().success());
    node.spawn();
    let mut con = connect(node.resp);
    run(&mut con, "HSET h e 5");
    let ttls = field_ttls(&mut con, "h", &["b", "e"]);
    assert!(near(ttls[0], 50) && ttls[1] == -1, "{ttls:?}");
}
