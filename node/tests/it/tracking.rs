//! Pushes over the Redis protocol: client-side caching invalidations (`CLIENT TRACKING`, with
//! redis-py's own cache and raw RESP3/RESP2 connections) and keyspace notifications, for writes
//! from HTTP and from Redis.

use crate::common;

use common::Node;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw Redis connection: send commands, read whatever arrives.
struct Raw {
    stream: TcpStream,
    seen: String,
}

impl Raw {
    fn open(node: &Node) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            stream,
            seen: String::new(),
        }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.write_all(out.as_bytes()).unwrap();
    }

    /// Reads until `what` has arrived (in everything read so far), or panics after 5 s.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.seen.contains(what) {
            assert!(
                Instant::now() < deadline,
                "never got {what:?}; got {:?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.stream.read(&mut buf) {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }

    /// Everything that arrives within `wait`, after what was seen so far.
    fn drain(&mut self, wait: Duration) -> String {
        let start = self.seen.len();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.stream.read(&mut buf) {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        self.seen[start..].to_string()
    }
}

fn http_put(node: &Node, pk: &str, data: &str) {
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": pk, "sk": "", "data": data}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
}

#[test]
fn redis_py_client_side_cache_sees_writes_from_http_and_redis() {
    let node = Node::start();
    let script = format!(
        r#"
import json, time, urllib.request, redis
from redis.cache import CacheConfig
def http_put(pk, data):
    body = json.dumps({{"Records": [{{"pk": pk, "sk": "", "data": data}}], "wait": True}}).encode()
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{api}/records/put", data=body)).read()
cached = redis.Redis(port={resp}, protocol=3, cache_config=CacheConfig(), decode_responses=True)
writer = redis.Redis(port={resp}, decode_responses=True)
def eventually(key, want):
    deadline = time.time() + 5
    while True:
        got = cached.get(key)
        if got == want:
            return
        assert time.time() < deadline, (key, got, want)
        time.sleep(0.02)
writer.set("flag", "off")
assert cached.get("flag") == "off"
assert cached.get("flag") == "off"
assert len(cached.get_cache().collection) == 1, "the value is cached"
http_put("flag", "on")
eventually("flag", "on")
writer.set("flag", "again")
eventually("flag", "again")
writer.hset("h", "f", "1")
assert cached.hget("h", "f") == "1"
writer.hset("h", "f", "2")
deadline = time.time() + 5
while cached.hget("h", "f") != "2":
    assert time.time() < deadline
    time.sleep(0.02)
print("ok")
"#,
        api = node.api,
        resp = node.resp
    );
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "redis-py 5.1+ (pip install redis)",
    );
}

#[test]
fn tracking_modes_redirect_bcast_and_noloop_push_what_redis_pushes() {
    let node = Node::start();
    // RESP2: invalidations go to another connection subscribed to __redis__:invalidate.
    let mut sink = Raw::open(&node);
    sink.send(&["CLIENT", "ID"]);
    sink.wait_for("\r\n");
    let sink_id: String = sink.seen.trim_start_matches(':').trim().to_string();
    sink.send(&["SUBSCRIBE", "__redis__:invalidate"]);
    sink.wait_for("__redis__:invalidate\r\n:1\r\n");
    let mut reader = Raw::open(&node);
    reader.send(&["CLIENT", "TRACKING", "ON", "REDIRECT", &sink_id]);
    reader.wait_for("+OK\r\n");
    reader.send(&["CLIENT", "GETREDIR"]);
    reader.wait_for(&format!(":{sink_id}\r\n"));
    reader.send(&["GET", "cfg:1"]);
    reader.wait_for("$-1\r\n");
    http_put(&node, "cfg:1", "x");
    sink.wait_for("$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$5\r\ncfg:1\r\n");
    // A RESP2 connection in subscribe mode may only (un)subscribe, ping, quit or reset.
    sink.send(&["GET", "cfg:1"]);
    sink.wait_for("only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET");
    sink.send(&["PING"]);
    sink.wait_for("*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // Once invalidated, a key is not tracked until read again.
    http_put(&node, "cfg:1", "y");
    assert!(!sink.drain(Duration::from_millis(500)).contains("cfg:1"));

    // RESP3 broadcast mode with a prefix: every matching key, read or not; nothing else.
    let mut bcast = Raw::open(&node);
    bcast.send(&["HELLO", "3"]);
    bcast.wait_for("7.4.0");
    bcast.send(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"]);
    bcast.wait_for("+OK\r\n");
    http_put(&node, "other:1", "z");
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("user:7")
        .arg("1")
        .query(&mut redis)
        .unwrap();
    bcast.wait_for(">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nuser:7\r\n");
    assert!(!bcast.seen.contains("other:1"), "{}", bcast.seen);
    bcast.send(&["CLIENT", "TRACKINGINFO"]);
    bcast.wait_for("bcast");
    bcast.wait_for("user:");

    // NOLOOP: the connection's own writes do not come back to it; others' do.
    let mut own = Raw::open(&node);
    own.send(&["HELLO", "3"]);
    own.wait_for("7.4.0");
    own.send(&["CLIENT", "TRACKING", "ON", "NOLOOP"]);
    own.wait_for("+OK\r\n");
    own.send(&["GET", "mine"]);
    own.wait_for("_\r\n");
    own.send(&["SET", "mine", "1"]);
    own.wait_for("+OK\r\n");
    own.send(&["GET", "mine"]);
    own.wait_for("$1\r\n1\r\n");
    assert!(!own.drain(Duration::from_millis(500)).contains("invalidate"));
    http_put(&node, "mine", "2");
    own.wait_for(">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\nmine\r\n");

    // OPTIN: only reads after CLIENT CACHING yes are tracked.
    let mut optin = Raw::open(&node);
    optin.send(&["HELLO", "3"]);
    optin.wait_for("7.4.0");
    optin.send(&["CLIENT", "TRACKING", "ON", "OPTIN"]);
    optin.wait_for("+OK\r\n");
    optin.send(&["GET", "untracked"]);
    optin.wait_for("_\r\n");
    http_put(&node, "untracked", "1");
    assert!(
        !optin
            .drain(Duration::from_millis(500))
            .contains("invalidate")
    );
    optin.send(&["CLIENT", "CACHING", "YES"]);
    optin.wait_for("_\r\n+OK\r\n");
    optin.send(&["GET", "opted"]);
    optin.wait_for("_\r\n+OK\r\n_\r\n");
    http_put(&node, "opted", "1");
    optin.wait_for(">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\nopted\r\n");
    assert!(!optin.seen.contains("untracked\r\n*"), "{}", optin.seen);

    // Redis's answers to options that do not go together.
    own.send(&["CLIENT", "TRACKING", "ON", "PREFIX", "a"]);
    own.wait_for("PREFIX option requires BCAST mode to be enabled");
    own.send(&["CLIENT", "CACHING", "YES"]);
    own.wait_for("CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
}

#[test]
fn keyspace_notifications_reach_subscribers_for_http_and_redis_writes() {
    let node = Node::start();
    let script = format!(
        r#"
import json, time, urllib.request, redis
r = redis.Redis(port={resp}, decode_responses=True)
assert r.config_get("notify-keyspace-events") == {{"notify-keyspace-events": ""}}
r.config_set("notify-keyspace-events", "KEA")
p = r.pubsub()
p.psubscribe("__keyspace@0__:*")
p.subscribe("__keyevent@0__:expired")
time.sleep(0.2)
body = json.dumps({{"Records": [{{"pk": "route", "sk": "", "data": "1"}}], "wait": True}}).encode()
urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{api}/records/put", data=body)).read()
r.hset("hash", "f", "v")
r.delete("route")
r.set("short", "v", px=100)
want = [("pmessage", "__keyspace@0__:route", "set"), ("pmessage", "__keyspace@0__:hash", "hset"),
        ("pmessage", "__keyspace@0__:route", "del"), ("pmessage", "__keyspace@0__:short", "set"),
        ("message", "__keyevent@0__:expired", "short"), ("pmessage", "__keyspace@0__:short", "expired")]
got = []
deadline = time.time() + 10
while len(got) < len(want) and time.time() < deadline:
    m = p.get_message(timeout=0.5)
    if m and m["type"] in ("message", "pmessage"):
        got.append((m["type"], m["channel"], m["data"]))
assert sorted(got) == sorted(want), got
try:
    r.publish("chan", "hi")
    raise SystemExit("PUBLISH was accepted")
except redis.ResponseError as e:
    assert "keyspace notifications" in str(e), e
# A channel longer than any key's notification matches none, and each name is kept while
# subscribed: refused (10,000 names of 8 MB each were taken).
q = redis.Redis(port={resp})
try:
    q.execute_command("SUBSCRIBE", "__keyspace@0__:" + "k" * 5000)
    raise SystemExit("a 5 KB channel was taken")
except redis.ResponseError as e:
    assert "holds at most 4160 bytes" in str(e), e
# Every change is matched against every broadcast prefix: their number is bounded.
prefixes = [a for i in range(1025) for a in ("PREFIX", "p%d:" % i)]
try:
    q.execute_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
    raise SystemExit("1,025 prefixes taken")
except redis.ResponseError as e:
    assert "at most 1024 prefixes" in str(e), e
assert q.execute_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes[:2048]) in (b"OK", "OK", True)
# Prefixes of one client must not overlap, as in Redis (a change would be announced per match).
try:
    q.execute_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "user:1")
    raise SystemExit("overlapping prefixes taken")
except redis.ResponseError as e:
    assert "Prefix 'user:' overlaps with another provided prefix 'user:1'" in str(e), e
try:
    q.execute_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "b", "PREFIX", "a", "PREFIX", "c", "PREFIX", "ab")
    raise SystemExit("overlapping prefixes apart taken")
except redis.ResponseError as e:
    assert "Prefix 'a' overlaps with another provided prefix 'ab'" in str(e), e
print("ok")
"#,
        api = node.api,
        resp = node.resp
    );
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "redis-py (pip install redis)",
    );
}

#[test]
fn node_redis_client_side_cache_sees_writes_from_http() {
    let node = Node::start();
    let clients = std::env::var("NODE_CLIENTS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/firescroll/node-clients",
            std::env::var("HOME").unwrap()
        )
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/node_redis_client_side_cache.js"
    );
    common::assert_script_ok(
        std::process::Command::new("node")
            .arg(script)
            .arg(node.resp.to_string())
            .arg(node.api.to_string())
            .env("NODE_PATH", format!("{clients}/node_modules")),
        &format!(
            "node-redis 5 (npm install redis5@npm:redis@5 in {clients}; scripts/test.sh does)"
        ),
    );
}

#[test]
fn tracked_keys_do_not_hold_the_buffers_they_were_read_from() {
    let node = Node::start();
    let mut raw = Raw::open(&node);
    raw.send(&["HELLO", "3"]);
    raw.send(&["CLIENT", "TRACKING", "on"]);
    raw.send(&["PING", "ready"]);
    raw.wait_for("ready");
    let before = node.resident_mib();
    // Each tracked read arrives right after a large argument (refused, its reply small): a
    // tracked key that were a slice of the read buffer would keep all 256 KiB of it, 100 MiB
    // for these 400 reads.
    let big = "k".repeat(256 * 1024);
    for i in 0..400 {
        raw.send(&["EXISTS", &big]);
        raw.send(&["GET", &format!("tracked{i}")]);
    }
    raw.send(&["PING", "done"]);
    raw.wait_for("done");
    let grown = node.resident_mib().saturating_sub(before);
    assert!(grown < 40, "resident memory grew {grown} MiB");
}
