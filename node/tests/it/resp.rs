//! The Redis protocol against real clients: redis-rs (RESP2 and RESP3), redis-cli, raw sockets.

use crate::common;

use common::Node;
use redis::{Commands, Value as RedisValue};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn client(node: &Node, resp3: bool) -> redis::Connection {
    let url = if resp3 {
        format!("redis://127.0.0.1:{}/?protocol=resp3", node.resp)
    } else {
        format!("redis://127.0.0.1:{}/", node.resp)
    };
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn exercise(con: &mut redis::Connection, prefix: &str) {
    let k = |s: &str| format!("{prefix}{s}");
    let _: () = con.set(k("plain"), "hello world").unwrap();
    let _: () = con.set(k("json"), r#"{"a":[1,2]}"#).unwrap();
    assert_eq!(con.get::<_, String>(k("plain")).unwrap(), "hello world");
    assert_eq!(con.get::<_, String>(k("json")).unwrap(), r#"{"a":[1,2]}"#);
    assert_eq!(con.get::<_, Option<String>>(k("missing")).unwrap(), None);
    let got: Vec<Option<String>> = con.mget(&[k("plain"), k("missing")]).unwrap();
    assert_eq!(got, vec![Some("hello world".into()), None]);
    assert_eq!(
        con.exists::<_, i64>(&[k("plain"), k("missing"), k("json")])
            .unwrap(),
        2
    );

    let added: i64 = con
        .hset_multiple(k("h"), &[("f1", "v1"), ("f2", "2"), ("f3", "[3]")])
        .unwrap_or(3);
    assert_eq!(added, 3);
    assert_eq!(
        con.hset::<_, _, _, i64>(k("h"), "f1", "again").unwrap(),
        0,
        "f1 existed"
    );
    assert_eq!(con.hget::<_, _, String>(k("h"), "f1").unwrap(), "again");
    let all: HashMap<String, String> = con.hgetall(k("h")).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["f2"], "2");
    assert_eq!(con.hlen::<_, i64>(k("h")).unwrap(), 3);
    assert_eq!(
        con.hkeys::<_, Vec<String>>(k("h")).unwrap(),
        vec!["f1", "f2", "f3"]
    );
    assert_eq!(
        con.hvals::<_, Vec<String>>(k("h")).unwrap(),
        vec!["again", "2", "[3]"]
    );
    assert!(con.hexists::<_, _, bool>(k("h"), "f2").unwrap());
    let values: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(k("h"))
        .arg("f2")
        .arg("nope")
        .query(con)
        .unwrap();
    assert_eq!(values, vec![Some("2".into()), None]);
    assert_eq!(con.hdel::<_, _, i64>(k("h"), &["f2", "nope"]).unwrap(), 1);
    assert!(!con.hexists::<_, _, bool>(k("h"), "f2").unwrap());
    let kind: String = redis::cmd("TYPE").arg(k("h")).query(con).unwrap();
    assert_eq!(kind, "hash");
    assert_eq!(con.del::<_, i64>(&[k("plain"), k("missing")]).unwrap(), 1);
    assert_eq!(con.get::<_, Option<String>>(k("plain")).unwrap(), None);
    let nx: Option<String> = redis::cmd("SET")
        .arg(k("json"))
        .arg("x")
        .arg("NX")
        .query(con)
        .unwrap();
    assert_eq!(nx, None, "NX on an existing key does nothing");
}

#[test]
fn redis_rs_works_over_resp2_and_resp3() {
    let node = Node::start();
    exercise(&mut client(&node, false), "two:");
    let mut three = client(&node, true);
    exercise(&mut three, "three:");
    // Under RESP3, HGETALL is a map, in field order.
    let _: i64 = three.hset("three:order", "b", "2").unwrap();
    let _: i64 = three.hset("three:order", "a", "1").unwrap();
    let _: i64 = three.hset("three:order", "c", "3").unwrap();
    let ordered: RedisValue = redis::cmd("HGETALL")
        .arg("three:order")
        .query(&mut three)
        .unwrap();
    let RedisValue::Map(pairs) = ordered else {
        panic!("{ordered:?}")
    };
    let fields: Vec<RedisValue> = pairs.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        fields,
        ["a", "b", "c"]
            .map(|f| RedisValue::BulkString(f.as_bytes().to_vec()))
            .to_vec()
    );
    let raw: RedisValue = redis::cmd("HGETALL")
        .arg("three:h")
        .query(&mut three)
        .unwrap();
    assert!(matches!(raw, RedisValue::Map(_)), "{raw:?}");
    let err = redis::cmd("NOSUCH")
        .arg("x")
        .query::<String>(&mut three)
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown command 'NOSUCH'"),
        "{err}"
    );
    // A command of a type FireScroll does not store says so, in Redis's words first, and
    // writes nothing.
    let err = redis::cmd("LPUSH")
        .arg("three:list")
        .arg("a")
        .query::<i64>(&mut three)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("unknown command 'LPUSH'") && message.contains("lists are not supported"),
        "{message}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("three:list")
        .query(&mut three)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn a_thousand_pipelined_commands() {
    let node = Node::start();
    let mut con = client(&node, false);
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("HSET")
            .arg("pipe")
            .arg(format!("f{i:04}"))
            .arg(i)
            .ignore();
    }
    for i in 0..500 {
        pipe.cmd("HGET").arg("pipe").arg(format!("f{i:04}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(
        got,
        (0..500).collect::<Vec<_>>(),
        "a connection reads its own pipelined writes"
    );
}

#[test]
fn hscan_over_ten_thousand_fields_returns_what_http_list_does() {
    let node = Node::start();
    for chunk in 0..10 {
        let records: Vec<_> = (0..1000)
            .map(|i| json!({"pk": "big", "sk": format!("field:{:05}", chunk * 1000 + i), "data": {"n": chunk * 1000 + i}}))
            .collect();
        let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
        assert_eq!(status, 200, "{reply}");
    }
    let mut http = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"pk": "big", "limit": 3000});
        if let Some(c) = &cursor {
            body["cursor"] = c.clone().into();
        }
        let (_, page) = node.post("/records/list", body);
        for r in page["Records"].as_array().unwrap() {
            http.push((r["Sk"].as_str().unwrap().to_string(), r["Data"].to_string()));
        }
        match page["NextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(http.len(), 10_000);
    let mut con = client(&node, false);
    let mut scanned = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, items): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg("big")
            .arg(cursor)
            .arg("COUNT")
            .arg(777)
            .query(&mut con)
            .unwrap();
        for pair in items.chunks(2) {
            scanned.push((pair[0].clone(), pair[1].clone()));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(scanned, http);
    // MATCH with a literal prefix narrows the scan; other globs filter.
    let (_, items): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("big")
        .arg(0)
        .arg("MATCH")
        .arg("field:0999*")
        .arg("COUNT")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(items.len(), 20, "field:09990..field:09999 with values");
    let (_, items): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("big")
        .arg(0)
        .arg("MATCH")
        .arg("*:0000[12]")
        .arg("COUNT")
        .arg(100)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        items,
        vec!["field:00001", r#"{"n":1}"#, "field:00002", r#"{"n":2}"#]
    );
    let err = redis::cmd("HSCAN")
        .arg("big")
        .arg(1u64 << 53)
        .query::<RedisValue>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");
}

#[test]
fn http_and_resp_see_the_same_records() {
    let node = Node::start();
    let (_, reply) = node.post("/records/put", json!({"Records": [{"pk": "cfg", "sk": "", "data": "v1"}, {"pk": "cfg", "sk": "limits", "data": {"max": 5}}], "wait": true}));
    assert_eq!(reply["Positions"][0]["Outcome"]["Status"], "applied");
    let mut con = client(&node, false);
    assert_eq!(
        con.get::<_, String>("cfg").unwrap(),
        "v1",
        "a JSON string comes back unquoted"
    );
    assert_eq!(
        con.hget::<_, _, String>("cfg", "limits").unwrap(),
        r#"{"max":5}"#
    );
    let _: () = con.set("cfg", "7").unwrap();
    let _: i64 = con.hset("cfg", "name", "plain text").unwrap();
    // The RESP connection reads its own writes; HTTP waits for them with min_offsets via /ready-free polling.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = node.post(
            "/records/get",
            json!({"Records": [{"pk": "cfg", "sk": ""}, {"pk": "cfg", "sk": "name"}]}),
        );
        let records = got["Records"].as_array().unwrap();
        if records.len() == 2 && records[0]["Data"] == json!("7") {
            assert_eq!(
                records[1]["Data"],
                json!("plain text"),
                "Redis values are stored as JSON strings of their bytes"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{got}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn raw_exchange(node: &Node, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // The server closed while our bytes were still arriving.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn garbage_gets_an_error_and_a_closed_connection_and_the_server_carries_on() {
    let node = Node::start();
    for garbage in [
        &b"*1\r\n$99999999999\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n:notanumber\r\n",
        b"*-5x\r\n",
        b"*1\r\n*1\r\n$1\r\nx\r\n",
    ]
    .into_iter()
    // Arrays nested 100,000 deep: a recursive decoder overflowed a worker's stack on these and
    // the whole node aborted.
    .chain(
        [
            b"*1\r\n".repeat(100_000),
            [b"*2\r\n:1\r\n".as_slice(), &b"*1\r\n".repeat(100_000)].concat(),
        ]
        .iter()
        .map(Vec::as_slice),
    ) {
        let (reply, closed) = raw_exchange(&node, garbage);
        assert!(reply.starts_with("-ERR"), "{garbage:?} -> {reply:?}");
        assert!(
            closed,
            "{garbage:?}: the connection must close after a protocol error"
        );
    }
    // A client still writing when it is closed sees no reply: the node's log says why.
    let log = node.log();
    assert!(
        log.contains("closing a Redis connection after a protocol error")
            && log.contains("proto-max-bulk-len"),
        "{log}"
    );
    // Bytes that are not a RESP array are an inline command, as in Redis: an unknown one here.
    let (reply, _) = raw_exchange(&node, b"\xff\xfe\x01\r\nQUIT\r\n");
    assert_eq!(
        reply,
        "-ERR unknown command '\u{fffd}\u{fffd}\u{1}', with args beginning with: \r\n+OK\r\n"
    );
    let (reply, _) = raw_exchange(&node, b"PING\r\nECHO hi\r\nQUIT\r\n");
    assert_eq!(reply, "+PONG\r\n$2\r\nhi\r\n+OK\r\n");
    let mut con = client(&node, false);
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
}

#[test]
fn the_connection_limit_is_enforced() {
    let node = Node::start_with(&[("RESP_MAX_CLIENTS", "2")]);
    let a = client(&node, false);
    let _b = client(&node, false);
    let (reply, closed) = raw_exchange(&node, b"PING\r\n");
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    assert!(closed);
    // Counted where monitoring looks, as Redis counts them.
    let mut a = a;
    let stats: String = redis::cmd("INFO").arg("stats").query(&mut a).unwrap();
    assert!(stats.contains("rejected_connections:1\r\n"), "{stats}");
    let clients: String = redis::cmd("INFO").arg("clients").query(&mut a).unwrap();
    assert!(clients.contains("maxclients:2\r\n"), "{clients}");
}

#[test]
fn the_open_files_limit_is_raised_at_start_so_clients_past_the_soft_limit_connect() {
    // Many systems start a process with a soft limit far below RESP_MAX_CLIENTS.
    let node = Node::start_under(&["/usr/bin/prlimit", "--nofile=256:4096", "--"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3..5], ["4096", "4096"], "{limits}");
    assert!(node.log().contains("raised the open-files limit"));
    // More connections at once than the soft limit had room for, each answered.
    let mut connections: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(("127.0.0.1", node.resp)).unwrap())
        .collect();
    for c in &mut connections {
        c.write_all(b"PING\r\n").unwrap();
    }
    for c in &mut connections {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut pong = [0u8; 7];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
}

/// Every "Try X HELP" an error suggests works: the container commands answer `HELP` with their
/// subcommands, as Redis does.
#[test]
fn every_container_command_answers_help() {
    let node = Node::start();
    let mut con = client(&node, false);
    for command in ["CLIENT", "COMMAND", "CONFIG", "MEMORY", "MODULE", "SLOWLOG"] {
        let refused = redis::cmd(command)
            .arg("NOPE")
            .query::<redis::Value>(&mut con)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!("Try {command} HELP")),
            "{command}: {refused}"
        );
        let lines: Vec<String> = redis::cmd(command).arg("HELP").query(&mut con).unwrap();
        assert!(
            lines[0].starts_with(&format!("{command} <subcommand>")) && lines.len() > 3,
            "{command}: {lines:?}"
        );
    }
}

/// redis-cli at a terminal: `help <command>` (and its hints and tab completion) come from
/// `COMMAND DOCS`, or, when that answers an error, from redis-cli's own table. An empty answer
/// left it with no help at all.
#[test]
fn redis_cli_at_a_terminal_has_its_help() {
    let node = Node::start();
    let script = format!(
        r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp("redis-cli", ["redis-cli", "-p", "{port}"])
def read_for(seconds, until=None):
    out, end = b"", time.time() + seconds
    while time.time() < end and not (until and until in out):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            out += data
            if b"\x1b[6n" in data:  # the line editor asks where the cursor is
                os.write(fd, b"\x1b[1;1R")
    return out
read_for(10, b"{port}>")
os.write(fd, b"help hget\r")
out = read_for(10, b"group:")
os.write(fd, b"quit\r")
read_for(1)
assert b"Get the value of a hash field" in out, out
print("ok")
"#,
        port = node.resp
    );
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", &script]),
        "redis-cli (apt-get install redis-tools) and python3",
    );
}

#[test]
fn a_scripted_redis_cli_session() {
    let node = Node::start();
    let script = "SET greeting hello\nGET greeting\nHSET user:1 name ann age 37\nHGETALL user:1\nHDEL user:1 age\nHKEYS user:1\nTYPE user:1\nEXISTS greeting nope\nFOO bar\nSELECT 0\nCLIENT SETNAME cli\nCLIENT GETNAME\nDEL greeting\nGET greeting\n";
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &node.resp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (apt-get install redis-tools; scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // As redis-cli prints a real Redis's answers (fields in sk order; a blank line after an error).
    let expected = "OK\nhello\n2\nage\n37\nname\nann\n1\nname\nhash\n1\nERR unknown command 'FOO', with args beginning with: 'bar' \n\nOK\nOK\ncli\n1\n\n";
    assert_eq!(text, expected);
}

#[test]
fn idle_connections_are_closed() {
    let node = Node::start_with(&[("RESP_IDLE_TIMEOUT_SEC", "1")]);
    let mut stream = TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        stream.read(&mut buf).unwrap(),
        0,
        "the server closes an idle connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Reads `stream` until its read timeout: true if the node closed it meanwhile.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn subscribed_and_monitoring_connections_are_never_closed_for_being_idle() {
    let node = Node::start_with(&[("RESP_IDLE_TIMEOUT_SEC", "1")]);
    let connect = || TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    let (mut subscribed, mut monitoring, mut plain) = (connect(), connect(), connect());
    subscribed
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
        .unwrap();
    monitoring.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
    // Three idle timeouts: as in Redis, only the plain connection goes.
    assert!(closed_within(&mut plain, Duration::from_secs(10)));
    assert!(!closed_within(&mut subscribed, Duration::from_secs(3)));
    assert!(!closed_within(&mut monitoring, Duration::from_millis(100)));
    // And CLIENT LIST says which one subscribes, as Redis does.
    let mut con = client(&node, false);
    let pubsub: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(pubsub.lines().count(), 1, "{pubsub}");
    assert!(
        pubsub.contains(" flags=P ") && pubsub.contains(" sub=1 psub=0 "),
        "{pubsub}"
    );
    let normal: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(&mut con)
        .unwrap();
    assert_eq!(normal.lines().count(), 2, "monitoring and asking: {normal}");
    drop(con);
    // CLIENT INFO counts a connection's own subscriptions (RESP3: a subscribed connection
    // still runs any command).
    let mut resp3 = connect();
    resp3
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    resp3
        .write_all(
            b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n\
              *3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n\
              *2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\np*\r\n\
              *2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n",
        )
        .unwrap();
    let mut seen = Vec::new();
    let info = loop {
        let mut buf = [0u8; 4096];
        let n = resp3.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(at) = text.find(" psub=")
            && text[at..].contains('\n')
        {
            break text;
        }
    };
    assert!(
        info.contains(" flags=P ") && info.contains(" sub=2 psub=1 "),
        "{info}"
    );
    // Unsubscribed, it is an idle connection like any other.
    subscribed
        .write_all(b"*1\r\n$11\r\nUNSUBSCRIBE\r\n")
        .unwrap();
    assert!(closed_within(&mut subscribed, Duration::from_secs(10)));

    // redis-py's listener, idle past the timeout, still gets the notification.
    let script = format!(
        r#"
import redis, time
r = redis.Redis(port={port}, decode_responses=True)
r.config_set("notify-keyspace-events", "KEA")
p = r.pubsub()
p.subscribe("__keyspace@0__:idle-key")
m = p.get_message(timeout=5)
assert m and m["type"] == "subscribe", m
time.sleep(3)
redis.Redis(port={port}, decode_responses=True).set("idle-key", "v")
m = p.get_message(timeout=5)
assert m and m["type"] == "message" and m["data"] == "set", m
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

#[test]
fn redis_py_works_over_resp3() {
    let node = Node::start();
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port}, protocol=3, decode_responses=True)
assert r.ping()
r.hset("py", mapping={{"a": "1", "b": "two"}})
assert r.hgetall("py") == {{"a": "1", "b": "two"}}, r.hgetall("py")
r.set("py:s", "text")
assert r.get("py:s") == "text"
cursor, items = r.hscan("py", 0)
assert cursor == 0 and items == {{"a": "1", "b": "two"}}, (cursor, items)
pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.hset("py:p", f"f{{i}}", i)
pipe.hlen("py:p")
assert pipe.execute()[-1] == 100
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

/// Runs a redis-py script that prints `ok` when all its asserts held.
pub(crate) fn run_redis_py(script: &str) {
    common::assert_script_ok(
        std::process::Command::new("python3").args(["-c", script]),
        "redis-py (pip install redis; scripts/test.sh does)",
    );
}

#[test]
fn hscan_returns_every_lasting_field_exactly_once_while_others_change() {
    let node = Node::start();
    let mut con = client(&node, false);
    let lasting: Vec<String> = (0..300).map(|i| format!("f{:04}", i * 2)).collect();
    let mut pipe = redis::pipe();
    for f in &lasting {
        pipe.cmd("HSET").arg("moving").arg(f).arg("stays").ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    let mut page = 0;
    loop {
        let (next, items): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg("moving")
            .arg(cursor)
            .arg("COUNT")
            .arg(25)
            .query(&mut con)
            .unwrap();
        seen.extend(
            items
                .chunks(2)
                .filter(|kv| kv[1] == "stays")
                .map(|kv| kv[0].clone()),
        );
        if next == 0 {
            break;
        }
        cursor = next;
        // Between pages, other (odd-numbered) fields come and go on both sides of the cursor.
        page += 1;
        let _: i64 = redis::cmd("HSET")
            .arg("moving")
            .arg(format!("f{:04}", (page * 37 % 300) * 2 + 1))
            .arg("new")
            .query(&mut con)
            .unwrap();
        let _: i64 = redis::cmd("HDEL")
            .arg("moving")
            .arg(format!("f{:04}", (page * 53 % 300) * 2 + 1))
            .query(&mut con)
            .unwrap();
    }
    assert_eq!(seen, lasting, "each lasting field once, in order");
}

#[test]
fn redis_8_hash_commands_set_read_and_delete_fields_with_their_deadlines() {
    let node = Node::start();
    let script = format!(
        r#"
import time
import redis
from redis.commands.core import HashDataPersistOptions as Only
r = redis.Redis(port={port}, protocol=3, decode_responses=True)
assert r.hsetex("hx", mapping={{"a": "1", "b": "2"}}, px=60000) == 1
assert all(50000 < t <= 60000 for t in r.hpttl("hx", "a", "b")), r.hpttl("hx", "a", "b")
# FNX: one of them exists, so none is set.
assert r.hsetex("hx", mapping={{"a": "x", "c": "3"}}, data_persist_option=Only.FNX) == 0
assert r.hget("hx", "a") == "1" and not r.hexists("hx", "c")
# FXX with KEEPTTL: all exist, set, deadlines kept.
assert r.hsetex("hx", mapping={{"a": "y"}}, data_persist_option=Only.FXX, keepttl=True) == 1
assert r.hget("hx", "a") == "y" and r.hpttl("hx", "a")[0] > 50000, r.hpttl("hx", "a")
assert r.hsetex("hx", mapping={{"a": "z", "new": "1"}}, data_persist_option=Only.FXX) == 0
# HGETEX: a read alone, then PERSIST, then a new deadline, then one already past.
assert r.hgetex("hx", "a", "missing") == ["y", None]
assert r.hgetex("hx", "a", persist=True) == ["y"] and r.httl("hx", "a") == [-1]
assert r.hgetex("hx", "b", ex=100) == ["2"] and 90 < r.httl("hx", "b")[0] <= 100
assert r.hgetex("hx", "b", "missing", px=0) == ["2", None]
assert not r.hexists("hx", "b")
# HGETDEL: values, deleted with them; the key goes with its last field.
r.hset("hx", mapping={{"c": "3", "d": "4"}})
assert r.hgetdel("hx", "c", "nope") == ["3", None]
assert sorted(r.hkeys("hx")) == ["a", "d"], r.hkeys("hx")
assert r.hgetdel("hx", "a", "d") == ["y", "4"] and r.exists("hx") == 0
# A short deadline: the fields go on their own.
r.hsetex("short", mapping={{"f": "v"}}, px=200)
time.sleep(0.6)
assert r.hgetall("short") == {{}}, r.hgetall("short")
for bad, says in [
    (("HSETEX", "k", "FIELDS", 2, "a", "1"), "wrong number"),
    (("HSETEX", "k", "EX", 0, "FIELDS", 1, "a", "1"), "invalid expire"),
    (("HSETEX", "k", "FNX", "FXX", "FIELDS", 1, "a", "1"), "syntax"),
    (("HGETEX", "k", "EX", -1, "FIELDS", 1, "a"), "invalid expire"),
    (("HGETDEL", "k", "FIELDS", 2, "a"), "numfields"),
    (("HGETDEL", "k", "a"), "FIELDS"),
]:
    try:
        r.execute_command(*bad)
        raise SystemExit(f"{{bad}}: no error")
    except redis.ResponseError as e:
        assert says in str(e), (bad, str(e))
# Inside MULTI: one entry, each reply from what its ops found when it applied.
r.hset("tx", mapping={{"a": "1", "b": "2", "c": "3"}})
tx = r.pipeline(transaction=True)
tx.hexpire("tx", 100, "a", "nope")
tx.hpersist("tx", "a", "b")
tx.hgetex("tx", "b", "nope", ex=50)
tx.hgetdel("tx", "c", "nope")
tx.hsetex("tx", mapping={{"d": "4"}}, px=60000)
tx.hkeys("tx")
tx.hrandfield("tx", 10)
got = tx.execute()
assert got[:6] == [[1, -2], [1, -1], ["2", None], ["3", None], 1, ["a", "b", "d"]], got
assert sorted(got[6]) == ["a", "b", "d"], got
tx = r.pipeline(transaction=True)
tx.sadd("txs", "m")
tx.srandmember("txs")
assert tx.execute() == [1, "m"]
ttl = r.httl("tx", "a", "b")
assert ttl[0] == -1 and 45 < ttl[1] <= 50, ttl
assert 55000 < r.hpttl("tx", "d")[0] <= 60000
# A field named twice is checked once, before either is set, and set to its last value.
assert r.execute_command("HSETEX", "dup", "FNX", "FIELDS", 2, "f", "a", "f", "b") == 1
assert r.execute_command("HSETEX", "dup", "FXX", "FIELDS", 3, "f", "c", "g", "x", "f", "d") == 0
assert r.execute_command("HSETEX", "dup", "FXX", "FIELDS", 2, "f", "c", "f", "d") == 1
assert r.hgetall("dup") == {{"f": "d"}}, r.hgetall("dup")
# A deadline already past deletes the field (2), and the transaction's later reads see it gone.
r.hset("hz", mapping={{"a": "1", "b": "2", "c": "3"}})
r.hexpire("hz", 100, "c")
tx = r.pipeline(transaction=True)
tx.hexpire("hz", 0, "a"); tx.hgetall("hz"); tx.hexpire("hz", 0, "b", "c", nx=True); tx.hgetall("hz")
tx.hexpire("hz", 0, "c", xx=True); tx.hlen("hz"); tx.hexists("hz", "c")
got = tx.execute()
assert got == [[2], {{"b": "2", "c": "3"}}, [2, 0], {{"c": "3"}}, [2], 0, False], got
assert r.exists("hz") == 0
# FNX/FXX inside MULTI: every field or none, decided at apply, and the rest goes on.
tx = r.pipeline(transaction=True)
tx.hsetex("tx", mapping={{"a": "5", "e": "5"}}, data_persist_option=Only.FNX)
tx.hset("tx", "f", "6")
tx.hmget("tx", "a", "e")
tx.hsetex("tx", mapping={{"e": "7", "g": "7"}}, data_persist_option=Only.FNX, ex=100)
tx.hmget("tx", "e", "g")
tx.hsetex("tx", mapping={{"a": "8", "e": "8"}}, data_persist_option=Only.FXX)
tx.hsetex("tx", mapping={{"a": "9", "nope": "9"}}, data_persist_option=Only.FXX)
tx.hmget("tx", "a", "e", "nope")
assert tx.execute() == [0, 1, ["1", None], 1, ["7", "7"], 1, 0, ["8", "8", None]]
assert r.hmget("tx", "a", "e", "f", "g", "nope") == ["8", "8", "6", "7", None]
assert 95 < r.httl("tx", "g")[0] <= 100
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

/// HSCAN pages of `count` from `cursor` to the end: the fields returned.
fn hscan_rest(
    con: &mut redis::Connection,
    key: &str,
    mut cursor: u64,
    count: usize,
) -> Vec<String> {
    let mut fields = Vec::new();
    loop {
        let (next, items): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .arg("NOVALUES")
            .query(con)
            .unwrap();
        assert!(
            next < 1 << 53,
            "{next}: past what a JavaScript number holds"
        );
        fields.extend(items);
        if next == 0 {
            return fields;
        }
        cursor = next;
    }
}

#[test]
fn an_hscan_continues_after_its_node_restarts() {
    let mut node = Node::start();
    let mut con = client(&node, false);
    let fields: Vec<String> = (0..300).map(|i| format!("f{i:04}")).collect();
    let mut pipe = redis::pipe();
    for f in &fields {
        pipe.cmd("HSET").arg("h").arg(f).arg("v").ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    // NOVALUES before COUNT: Redis takes the options in any order (this order was once a
    // syntax error here).
    let first_page = |con: &mut redis::Connection| -> (u64, Vec<String>) {
        redis::cmd("HSCAN")
            .arg("h")
            .arg(0)
            .arg("NOVALUES")
            .arg("COUNT")
            .arg(40)
            .query(con)
            .unwrap()
    };
    // The cursor says where the scan stands, not a slot in a table of the node that issued it:
    // after a restart (the table is gone) the scan goes on exactly where it was.
    let (cursor, mut seen) = first_page(&mut con);
    assert_eq!(seen, fields[..40]);
    node.terminate();
    node.spawn();
    let mut con = client(&node, false);
    seen.extend(hscan_rest(&mut con, "h", cursor, 40));
    assert_eq!(seen, fields, "every field once, in order");
    // The field a cursor names deleted, then the table lost: the scan goes on from where that
    // field was, giving some fields again (as Redis may) and skipping none that stayed.
    let (cursor, mut seen) = first_page(&mut con);
    let _: i64 = redis::cmd("HDEL")
        .arg("h")
        .arg(&fields[39])
        .query(&mut con)
        .unwrap();
    node.terminate();
    node.spawn();
    let mut con = client(&node, false);
    seen.extend(hscan_rest(&mut con, "h", cursor, 40));
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    let mut lasting = fields.clone();
    lasting.remove(39);
    distinct.retain(|f| f != &fields[39]);
    assert_eq!(distinct, lasting, "every field that stayed, at least once");
    // Numbers no node issues are refused with what to do.
    let err = redis::cmd("HSCAN")
        .arg("h")
        .arg(u64::MAX)
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("invalid cursor"), "{err}");
}

#[test]
fn a_write_is_seen_by_every_connection_once_answered() {
    let node = Node::start();
    let mut writer = client(&node, false);
    let mut reader = client(&node, true);
    let mut stale = Vec::new();
    for i in 0..2000 {
        let key = format!("raw{}", i % 7);
        let _: () = writer.set(&key, i).unwrap();
        let got: Option<String> = reader.get(&key).unwrap();
        if got.as_deref() != Some(i.to_string().as_str()) {
            stale.push((i, got));
        }
        let _: i64 = writer.hset("rawh", &key, i).unwrap();
        let got: Option<String> = reader.hget("rawh", &key).unwrap();
        if got.as_deref() != Some(i.to_string().as_str()) {
            stale.push((i, got));
        }
        if i % 10 == 0 {
            // The other ways a write reaches the log: an atomic MSET, a pipeline's group.
            let _: () = redis::cmd("MSET")
                .arg("rawm")
                .arg(i)
                .query(&mut writer)
                .unwrap();
            let got: Option<String> = reader.get("rawm").unwrap();
            if got.as_deref() != Some(i.to_string().as_str()) {
                stale.push((i, got));
            }
            let (count,): (i64,) = redis::pipe()
                .set("rawp", i)
                .ignore()
                .incr("rawc", 1)
                .query(&mut writer)
                .unwrap();
            for (key, want) in [("rawp", i), ("rawc", count)] {
                let got: Option<String> = reader.get(key).unwrap();
                if got.as_deref() != Some(want.to_string().as_str()) {
                    stale.push((i, got));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale reads, first {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

#[test]
fn values_round_trip_byte_for_byte_and_json_documents_use_json_set() {
    let node = Node::start();
    let mut con = client(&node, false);
    let awkward = [
        r#""quoted""#,
        r#"{"a": 1}"#,
        "8080",
        "  padded  ",
        "null",
        "true",
        "[1, 2]",
        "",
        "ünï𝄞 \\ \" \n",
        "line\nbreak\ttab",
    ];
    for (i, value) in awkward.iter().enumerate() {
        let _: () = con.set(format!("exact{i}"), *value).unwrap();
        let _: i64 = con.hset("exacth", format!("f{i}"), *value).unwrap();
    }
    for (i, value) in awkward.iter().enumerate() {
        assert_eq!(con.get::<_, String>(format!("exact{i}")).unwrap(), *value);
        assert_eq!(
            con.hget::<_, _, String>("exacth", format!("f{i}")).unwrap(),
            *value
        );
    }
    // HTTP readers see each as the JSON string of those bytes.
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "exact2", "sk": ""}, {"pk": "exact1", "sk": ""}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!("8080"), "{got}");
    assert_eq!(got["Records"][1]["Data"], json!(r#"{"a": 1}"#), "{got}");
    // Bytes that are not UTF-8 (every byte value, gzip, a pickle) round-trip too, through every
    // read; HTTP readers see them as {"$base64": ...}, and HTTP writers can write them so.
    let every_byte: Vec<u8> = (0..=255u8).rev().collect();
    let gzip = {
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &[b'x'; 300]).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    for (name, bytes) in [("bin:all", &every_byte), ("bin:gzip", &gzip)] {
        let _: () = con.set(name, bytes.as_slice()).unwrap();
        let _: i64 = con.hset("bin:h", name, bytes.as_slice()).unwrap();
        assert_eq!(&con.get::<_, Vec<u8>>(name).unwrap(), bytes, "{name}");
        assert_eq!(&con.hget::<_, _, Vec<u8>>("bin:h", name).unwrap(), bytes);
        let len: usize = redis::cmd("STRLEN").arg(name).query(&mut con).unwrap();
        assert_eq!(len, bytes.len());
        let range: Vec<u8> = redis::cmd("GETRANGE")
            .arg(name)
            .arg(1)
            .arg(3)
            .query(&mut con)
            .unwrap();
        assert_eq!(range, bytes[1..=3]);
    }
    let many: Vec<Vec<u8>> = redis::cmd("MGET")
        .arg("bin:all")
        .arg("bin:gzip")
        .query(&mut con)
        .unwrap();
    assert_eq!(many, [every_byte.clone(), gzip.clone()]);
    let all: Vec<(String, Vec<u8>)> = con.hgetall("bin:h").unwrap();
    assert_eq!(
        all,
        [
            ("bin:all".to_string(), every_byte.clone()),
            ("bin:gzip".to_string(), gzip.clone())
        ]
    );
    let old: Vec<u8> = redis::cmd("SET")
        .arg("bin:all")
        .arg("text now")
        .arg("GET")
        .query(&mut con)
        .unwrap();
    assert_eq!(old, every_byte, "SET ... GET answers the old binary value");
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "bin:gzip", "sk": ""}]}),
    );
    let encoded = got["Records"][0]["Data"]["$base64"]
        .as_str()
        .unwrap_or_else(|| panic!("{got}"));
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), encoded.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap()
        .stdout;
    assert_eq!(decoded, gzip, "HTTP readers get standard base64");
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "bin:http", "data": {"$base64": "/wABAg=="}}, {"pk": "bin:json", "data": {"$base64": "not base64!"}}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        con.get::<_, Vec<u8>>("bin:http").unwrap(),
        [0xff, 0x00, 0x01, 0x02]
    );
    assert_eq!(
        con.get::<_, String>("bin:json").unwrap(),
        r#"{"$base64":"not base64!"}"#
    );
    // Base64 takes 4/3 of the size: the limit's error says how much binary fits.
    let most = 524_288usize.saturating_sub(14) / 4 * 3;
    let _: () = con.set("bin:most", vec![0xff_u8; most]).unwrap();
    let over: redis::RedisResult<()> = con.set("bin:over", vec![0xff_u8; most + 1]);
    let message = over.unwrap_err().to_string();
    assert!(
        message.contains(&format!("at most {most} bytes of binary")),
        "{message}"
    );
    // Appended at apply to a JSON string: binary is stored whole, and APPEND says so.
    let refused: redis::RedisResult<i64> = con.append("bin:gzip", &[0xff_u8][..]);
    assert!(refused.unwrap_err().to_string().contains("stored whole"));
    // And text to a binary value: said in a Redis client's terms, not the record's JSON.
    let refused = con
        .append::<_, _, i64>("bin:gzip", "text")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("holds a binary value") && refused.contains("stored whole"),
        "{refused}"
    );
    // A pickle, as Python caches store them.
    let script = format!(
        r#"
import pickle, redis
r = redis.Redis(port={port})
value = {{"features": [0.25, 1.5], "id": 7, "blob": bytes(range(256))}}
r.set("bin:pickle", pickle.dumps(value))
assert pickle.loads(r.get("bin:pickle")) == value
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

/// RedisJSON's commands, with redis-py's `r.json()`: at the root they put and read the record's
/// data; at a path reads query the document and writes are computed at apply (so concurrent
/// increments all count), inside transactions too; HTTP reads the document, its members in
/// their order.
#[test]
fn json_documents_are_read_and_edited_at_paths_by_redisjson_clients() {
    let node = Node::start();
    let script = format!(
        r#"
import redis, threading
# redis-py 8 gives up on a reply after 5 s by default (and retries): the refused transaction
# below parses up to 64 MiB before it says so, seconds in a debug build.
r = redis.Redis(port={port}, decode_responses=True, socket_timeout=120)
j = r.json()
# Tools that look for RedisJSON among the modules before using it find it.
assert r.module_list() == [{{"name": "ReJSON", "ver": 20600, "path": "", "args": []}}], r.module_list()
assert r.info("modules")["modules"][0]["name"] == "ReJSON", r.info("modules")
# JSON.RESP renders a document in RESP; JSON.DEBUG MEMORY is its JSON text's size.
j.set("resp", "$", {{"a": [1, 2.5, "x", None, True], "o": {{"k": "v"}}}})
assert r.execute_command("JSON.RESP", "resp") == ["{{", "a", ["[", 1, "2.5", "x", None, "true"], "o", ["{{", "k", "v"]]
assert r.execute_command("JSON.RESP", "resp", "$.o") == [["{{", "k", "v"]]
assert r.execute_command("JSON.DEBUG", "MEMORY", "resp") == 41
assert r.execute_command("JSON.DEBUG", "MEMORY", "resp", "$.o") == [9]
assert r.execute_command("JSON.DEBUG", "MEMORY", "absent") == 0
# A reply per JSON node, bounded: `$..*` renders each subtree once per ancestor.
nested = [0] * 50000
for _ in range(25):
    nested = [nested]
j.set("nested", "$", nested)
try:
    r.execute_command("JSON.RESP", "nested", "$..*")
    raise SystemExit("JSON.RESP built over a million replies")
except redis.ResponseError as e:
    assert "more than 1000000 replies" in str(e), e
assert len(r.execute_command("JSON.RESP", "nested", "$" + "[0]" * 25)[0]) == 50001
assert r.execute_command("JSON.DEBUG", "MEMORY", "nested", "$[0]") == [100049]
doc = {{"routes": [{{"path": "/a", "weight": 2}}], "enabled": True}}
assert j.set("doc", "$", doc)
# A document's type is RedisJSON's (tools show it as one); a string stays a string.
r.set("plain", "{{\"looks\": \"like json\"}}")
assert r.type("doc") == "ReJSON-RL" and r.type("plain") == "string", (r.type("doc"), r.type("plain"))
assert set(r.scan_iter(_type="ReJSON-RL")) == {{"doc", "resp", "nested"}}, set(r.scan_iter(_type="ReJSON-RL"))
assert set(r.scan_iter(_type="string")) == {{"plain"}}, set(r.scan_iter(_type="string"))
assert j.get("doc") == doc and j.get("doc", "$") == [doc], j.get("doc")
assert j.set("doc", "$", {{"x": 1}}, nx=True) is None
assert j.get("nothing") is None
j.set("gone", "$", [1])
assert j.delete("gone") == 1 and j.get("gone") is None
j.set("cfg", "$", {{"name": "edge", "flags": {{"beta": False, "ratio": 0.5}}, "regions": ["ams", "iad"], "hits": 0}})
assert j.get("cfg", "$.flags.beta") == [False]
assert j.get("cfg", ".flags.ratio") == 0.5
assert j.get("cfg", "$..beta", "$.name") == {{"$..beta": [False], "$.name": ["edge"]}}
assert j.set("cfg", "$.flags.beta", True)
assert j.set("cfg", "$.flags.added", {{"x": 1}})
assert j.set("cfg", "$.nowhere.x", 1) is None
assert j.set("cfg", "$.flags.beta", False, xx=True)
assert j.set("cfg", "$.flags.beta", True, nx=True) is None
assert j.numincrby("cfg", "$.hits", 5) == [5]
assert j.nummultby("cfg", "$.flags.ratio", 3) == [1.5]
assert j.toggle("cfg", "$.flags.beta") == [1]
assert j.arrappend("cfg", "$.regions", "sin", "syd") == [4]
assert j.arrinsert("cfg", "$.regions", 0, "lhr") == [5]
# Each popped value as JSON text, as RedisJSON answers (redis-py passes it through).
assert j.arrpop("cfg", "$.regions") == ['"syd"']
assert j.arrtrim("cfg", "$.regions", 0, 2) == [3]
assert j.strappend("cfg", "-1", "$.name") == [6]
assert j.merge("cfg", "$.flags", {{"ratio": None, "tier": "gold"}})
# (redis-py unwraps a one-element JSON.TYPE answer.)
assert j.type("cfg", "$.regions[*]") == ["string", "string", "string"]
assert j.type("cfg", ".regions") == "array"
assert j.objkeys("cfg", "$.flags") == [["beta", "added", "tier"]]
assert j.objlen("cfg", "$.flags") == [3]
assert j.arrlen("cfg", "$.regions") == [3]
assert j.strlen("cfg", "$.name") == [6]
assert j.delete("cfg", "$.flags.added") == 1
assert j.mget(["cfg", "absent"], "$.hits") == [[5], None]
# Filters: comparisons, existence, && || !, RFC 9535's functions and RedisJSON's `=~`.
assert j.get("cfg", "$.regions[?@ == 'iad' || @ == 'lhr']") == ["lhr", "iad"]
assert j.get("cfg", "$[?@.beta == true && !@.nothing]") == [{{"beta": True, "tier": "gold"}}]
assert j.get("cfg", "$.regions[?@ =~ '(?i)^I']") == ["iad"]
assert j.get("cfg", "$.regions[?search(@, 'a') && length(@) == 3]") == ["ams", "iad"]
assert j.get("cfg", "$[?count(@.*) == 2].tier") == ["gold"]
# At apply too: every replica decides which elements match alike.
assert j.set("cfg", "$.regions[?match(@, 'a.s')]", "AMS")
assert j.get("cfg", "$.regions[?@ =~ '^[A-Z]+$']") == ["AMS"]
assert j.set("cfg", "$.regions[?match(@, 'A.S')]", "ams")
assert j.arrindex("cfg", "$.regions", "iad") == [2] and j.arrindex("cfg", ".regions", "x") == -1
# JSON.MSET: one atomic entry (its keys share a partition), at the root or at paths.
assert j.mset([("cfg", "$.flags.tier", "silver"), ("cfg", "$.hits", 5)]) is True
assert j.get("cfg", "$.flags.tier", "$.hits") == {{"$.flags.tier": ["silver"], "$.hits": [5]}}

# Wrong kinds answer nil per match under JSONPath, an error under a legacy path.
assert j.numincrby("cfg", "$..name", 1) == [None]
for bad in (lambda: j.numincrby("cfg", ".name", 1), lambda: j.get("cfg", "$.regions[?@ =~ '(']"),
            lambda: j.set("cfg", "$.regions[?@ =~ '(']", 1), lambda: j.get("cfg", "$.regions[?sum(@) > 1]"),
            lambda: j.set("absent", "$.a", 1), lambda: j.arrinsert("cfg", "$.regions", 9, "x")):
    try:
        bad()
        raise SystemExit("accepted")
    except redis.ResponseError as e:
        assert str(e), e
try:
    j.get("cfg", "$.regions[?@ =~ '\\\\w{{100}}']")
    raise SystemExit("a 100-character Unicode class compiled")
except redis.ResponseError as e:
    assert "compiles to more than 256 KiB" in str(e), e
# One read naming a whole document under many paths stops at its answer's bound.
j.set("big", "$", {{"blob": "x" * 400000, "n": 0}})
try:
    r.execute_command("JSON.GET", "big", *(["$"] * 200))
    raise SystemExit("an 80 MB answer was built")
except redis.ResponseError as e:
    assert "larger than 64 MiB" in str(e), e
assert j.get("big", "$.blob") == ["x" * 400000]
# One read of many documents parses at most 32 MB of them.
try:
    r.execute_command("JSON.MGET", *(["big"] * 100), "$.n")
    raise SystemExit("one read parsed 40 MB of documents")
except redis.ResponseError as e:
    assert "more than 32 MB" in str(e), e
assert r.execute_command("JSON.MGET", *(["big"] * 10), "$.n") == [[0]] * 10
j.set("wide", "$", [[0] * 100] * 100)
try:
    r.execute_command("JSON.GET", "wide", "INDENT", " " * 10000, "NEWLINE", "\n")
    raise SystemExit("a 100 MB layout was built")
except redis.ResponseError as e:
    assert "larger than 64 MiB" in str(e), e
# A transaction's reads replay its pending edits of a document: within a bound, not for
# minutes (each read replays every edit before it).
tx = r.pipeline(transaction=True)
for _ in range(100):
    tx.json().numincrby("big", "$.n", 1)
    tx.json().get("big", "$.n")
try:
    tx.execute()
    raise SystemExit("100 reads replayed up to 100 edits of a 400 KB document each")
except redis.ResponseError as e:
    assert "read them after EXEC" in str(e), e
assert j.get("big", "$.n") == [100]
# A transaction's reads see its path edits; its replies come from the one entry.
p = r.pipeline(transaction=True)
p.json().numincrby("cfg", "$.hits", 1)
p.json().get("cfg", "$.hits")
p.json().arrappend("cfg", "$.regions", "gru")
assert p.execute() == [[6], [6], [4]]
# Increments from many connections at once: computed at apply, none lost.
def bump():
    c = redis.Redis(port={port}).json()
    for _ in range(50):
        c.numincrby("cfg", "$.hits", 1)
threads = [threading.Thread(target=bump) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert j.get("cfg", "$.hits") == [206], j.get("cfg", "$.hits")
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // HTTP reads the edited document, its members in the order they were written.
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "cfg", "sk": ""}]}),
    );
    assert_eq!(
        serde_json::to_string(&got["Records"][0]["Data"]).unwrap(),
        r#"{"name":"edge-1","flags":{"beta":true,"tier":"silver"},"regions":["lhr","ams","iad","gru"],"hits":206}"#,
        "{got}"
    );
}

#[test]
fn binary_keys_and_fields_work_as_feast_and_caches_use_them() {
    let node = Node::start();
    let script = format!(
        r#"
import base64, json, time, urllib.request, redis
from redis.cache import CacheConfig
r = redis.Redis(port={port})
# Feast's Redis online store: an entity key serialized by protobuf (not UTF-8) plus the project,
# fields that are murmur3 hashes of feature names (4 bytes) and "_ts:<view>", protobuf values.
key = b"\x02\x00\x00\x00\x0c\x80\xff\x01driver_id\x92\x01" + b"my_project"
fields = {{b"\xd1\x8f\x00\xff": b"\x08\x96\x01", b"\x9a\x02\xc3\x28": b"\x1d\x00\x00\x80?", b"_ts:driver_stats": b"\x08\xe8\x07"}}
p = r.pipeline(transaction=False)
p.hset(key, mapping=fields)
p.expire(key, 3600)
p.hmget(key, list(fields))
results = p.execute()
assert results[0] == 3 and results[1] is True, results
assert results[2] == list(fields.values()), results[2]
assert r.hgetall(key) == fields, r.hgetall(key)
assert sorted(r.hkeys(key)) == sorted(fields), r.hkeys(key)
assert 3590 <= r.ttl(key) <= 3600
# The keyspace lists the key as the client wrote it.
assert key in list(r.scan_iter()), list(r.scan_iter())
assert key in r.keys("*")
cursor, items = r.hscan(key, 0)
assert items == fields, items
# A string under a binary key, and its partition's reads after writes on another connection.
skey = b"\xc0\xfe" + bytes(range(0, 40))
other = redis.Redis(port={port})
for i in range(50):
    other.set(skey, f"v{{i}}")
    assert r.get(skey) == f"v{{i}}".encode()
# Client-side caching: a cached binary key is invalidated by a write on another connection.
cached = redis.Redis(port={port}, protocol=3, cache_config=CacheConfig())
assert cached.get(skey) == b"v49" and cached.get(skey) == b"v49"
other.set(skey, "changed")
deadline = time.time() + 10
while cached.get(skey) != b"changed":
    assert time.time() < deadline, "the binary key's cache was never invalidated"
    time.sleep(0.02)
# Keyspace notifications name the key as written.
other.config_set("notify-keyspace-events", "KEA")
sub = r.pubsub()
sub.subscribe(b"__keyspace@0__:" + skey)
assert sub.get_message(timeout=5)["type"] == "subscribe"
other.set(skey, "again")
message = sub.get_message(timeout=10)
assert message and message["channel"] == b"__keyspace@0__:" + skey and message["data"] == b"set", message
# Over HTTP the key is U+10FFFF followed by the base64 of its bytes.
pk = "\U0010FFFF" + base64.b64encode(skey).decode()
body = json.dumps({{"Records": [{{"pk": pk, "sk": ""}}]}}).encode()
got = json.loads(urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{api}/records/get", data=body)).read())
assert got["Records"][0]["Data"] == "again", got
# Base64 takes 4/3 of a binary key's size: the limit's error says how much binary fits.
try:
    r.set(b"\xff" * 1600, "v")
    raise SystemExit("a key over MAX_KEY_BYTES was taken")
except redis.ResponseError as e:
    assert "at most 1533 bytes of binary" in str(e), e
r.set(b"\xff" * 1533, "fits")
assert r.get(b"\xff" * 1533) == b"fits"
# A text key of exactly that shape would read back as other bytes: refused.
try:
    r.set(pk.encode(), "x")
    raise SystemExit("a text key shaped like a binary key was taken")
except redis.ResponseError as e:
    assert "binary keys" in str(e), e
assert r.delete(key, skey) == 2 and r.exists(key, skey) == 0
print("ok")
"#,
        port = node.resp,
        api = node.api,
    );
    run_redis_py(&script);
}

#[test]
fn feast_materializes_features_into_the_node_and_reads_them_back() {
    let node = Node::start();
    let python = std::env::var("FEAST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/firescroll/feast-venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    });
    let repo = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/feast_store.py");
    common::assert_script_ok(
        std::process::Command::new(&python)
            .arg(script)
            .arg(node.resp.to_string())
            .arg(repo.path()),
        &format!("Feast ({python}: scripts/test.sh installs feast[redis] into that venv)"),
    );
}

#[test]
fn set_commands_answer_as_redis_server_does_and_concurrent_spops_never_share_a_member() {
    let node = Node::start();
    let redis = crate::expiry::RedisServer::start();
    let script = format!(
        r#"
import threading, redis
ours, theirs = redis.Redis(port={port}), redis.Redis(port={redis_port})
# RESP3: SMEMBERS and SINTER answer sets, as Redis 7 does.
resp3 = redis.Redis(port={port}, protocol=3)
commands = [
    "SADD s a b c", "SADD s a d", "SREM s a zz", "SISMEMBER s b", "SISMEMBER s a",
    "SISMEMBER nokey a", "SMISMEMBER s b a d", "SCARD s", "SCARD nokey", "TYPE s", "SMEMBERS s",
    "SADD t c d e", "SINTER s t", "SUNION s t nokey", "SDIFF s t", "SDIFF t s", "SINTER s nokey",
    "SINTERCARD 2 s t", "SINTERCARD 2 s t LIMIT 1", "SINTERCARD 0 s", "SINTERCARD 3 s t",
    "SRANDMEMBER nokey", "SRANDMEMBER nokey 3", "SRANDMEMBER s 0", "SRANDMEMBER s 1 x",
    "SSCAN nokey 0", "SRANDMEMBER s -5", "SPOP nokey", "SPOP nokey 2", "SADD p x", "SPOP p",
    "SPOP p", "EXISTS p", "SPOP s -1", "SADD", "SREM s", "DEL s t", "SMEMBERS s",
]
def run(client, command):
    try:
        reply = client.execute_command(*command.split())
    except redis.ResponseError as e:
        return ("error", str(e).split(" ")[0])
    if command.startswith("SRANDMEMBER s -5"):
        return len(reply)
    return reply
differences = [(c, run(ours, c), run(theirs, c)) for c in commands]
differences = [d for d in differences if d[1] != d[2]]
assert not differences, differences
# HSCAN ... NOVALUES (Redis 7.4), the fields alone: what SSCAN answers for a set.
ours.hset("hv", mapping={{"a": "1", "b": "2"}})
assert ours.hscan("hv", 0, no_values=True) == (0, [b"a", b"b"]), ours.hscan("hv", 0, no_values=True)
ours.sadd("r3", "a", "b")
assert resp3.smembers("r3") == {{b"a", b"b"}} and resp3.sinter("r3", "r3") == {{b"a", b"b"}}
# SPOP from three clients at once: every member popped exactly once (more members than one
# SPOP looks at, so the later pops find the members the earlier ones left).
for start in range(0, 3000, 1000):
    ours.sadd("q", *[f"m{{i:04d}}" for i in range(start, start + 1000)])
# An exception in a thread is printed and lost: each worker notes its own, asserted on below.
errors = []
def guarded(work):
    def run(*args):
        try:
            work(*args)
        except Exception as e:
            errors.append(repr(e))
    return run
got = [[], [], []]
@guarded
def worker(i):
    client = redis.Redis(port={port})
    while True:
        popped = client.spop("q", 25)
        if not popped:
            break
        got[i].extend(popped)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
every = got[0] + got[1] + got[2]
assert len(every) == 3000 and len(set(every)) == 3000 and ours.scard("q") == 0, (len(every), len(set(every)))
# Hostile counts: a count past any set pops everything there is, in rounds of at most one
# request's removals; a union of more keys than one request may name is refused.
ours.sadd("big", *[f"b{{i}}" for i in range(1000)])
ours.sadd("big", *[f"c{{i}}" for i in range(500)])
assert len(ours.spop("big", 18446744073709551615)) == 1500 and ours.scard("big") == 0
try:
    ours.sunion(*[f"k{{i}}" for i in range(1001)])
    raise SystemExit("a union of 1001 keys was taken")
except redis.ResponseError as e:
    assert "MAX_RECORDS_PER_REQUEST" in str(e), e
# MULTI holds SADD, SREM and the one-key reads.
p = ours.pipeline(transaction=True)
p.sadd("tx", "a", "b").srem("tx", "a").smembers("tx").scard("tx")
assert p.execute() == [2, 1, {{b"b"}}, 1]
# And SPOP: it sees the transaction's earlier writes, the reads after it see what it popped,
# and its reply is what it removed, as from redis-server side by side.
def popping(client):
    client.delete("txp")
    client.sadd("txp", "a", "b", "c")
    p = client.pipeline(transaction=True)
    p.sadd("txp", "d").spop("txp", 2).scard("txp").spop("txp").scard("txp").spop("txp", 5)
    p.smembers("txp").spop("txp").spop("txp", 3).exists("txp")
    return p.execute()
for got in (popping(ours), popping(theirs)):
    assert got[0] == 1 and len(got[1]) == 2 and got[2] == 2 and got[3] is not None, got
    assert got[4] == 1 and len(got[5]) == 1 and got[6] == set() and got[7] is None, got
    assert got[8] == [] and got[9] == 0, got
    assert sorted(list(got[1]) + [got[3]] + list(got[5])) == [b"a", b"b", b"c", b"d"], got
# Transactions popping from a set other clients add to meanwhile (each change makes EXEC
# run its commands again): every member popped exactly once.
ours.sadd("q2", *[f"n{{i:04d}}" for i in range(600)])
adding = [True]
@guarded
def adder():
    client = redis.Redis(port={port})
    for start in range(600, 900, 10):
        client.sadd("q2", *[f"n{{i:04d}}" for i in range(start, start + 10)])
    adding[0] = False
got = [[], [], []]
@guarded
def transactional_popper(i):
    client = redis.Redis(port={port})
    while True:
        p = client.pipeline(transaction=True)
        p.spop("q2", 7).scard("q2")
        popped, left = p.execute()
        got[i].extend(popped)
        if errors or (not popped and not adding[0] and left == 0):
            break
threads = [threading.Thread(target=transactional_popper, args=(i,)) for i in range(3)]
threads.append(threading.Thread(target=adder))
[t.start() for t in threads]
[t.join() for t in threads]
every = got[0] + got[1] + got[2]
assert not errors, errors
assert len(every) == 900 and len(set(every)) == 900 and ours.scard("q2") == 0, (len(every), len(set(every)))
# Four transactions at a time popping from a set of one member at a time: all but one pick
# what another takes first, and run again (nothing written meanwhile).
adding[0] = True
@guarded
def one_by_one():
    client = redis.Redis(port={port})
    for i in range(200):
        client.sadd("q3", f"o{{i:03d}}")
    adding[0] = False
got = [[], [], [], []]
@guarded
def single_popper(i):
    client = redis.Redis(port={port})
    while True:
        p = client.pipeline(transaction=True)
        p.spop("q3").scard("q3")
        popped, left = p.execute()
        if popped is not None:
            got[i].append(popped)
        elif errors or (not adding[0] and left == 0):
            break
threads = [threading.Thread(target=single_popper, args=(i,)) for i in range(4)]
threads.append(threading.Thread(target=one_by_one))
[t.start() for t in threads]
[t.join() for t in threads]
every = got[0] + got[1] + got[2] + got[3]
assert not errors, errors
assert len(every) == 200 and len(set(every)) == 200, (len(every), len(set(every)))
# TTL of a key the transaction writes is read at apply, after the writes before it.
p = ours.pipeline(transaction=True)
p.set("tx:ttl", "v", ex=100).ttl("tx:ttl").get("tx:ttl").persist("tx:ttl").ttl("tx:ttl")
p.expire("tx:ttl", 50).pttl("tx:ttl").delete("tx:ttl").ttl("tx:ttl")
got = p.execute()
assert got[0] is True and 95 <= got[1] <= 100 and got[2] == b"v", got
assert got[3:6] == [True, -1, True] and 45000 <= got[6] <= 50000, got
assert got[7:] == [1, -2], got
print("ok")
"#,
        port = node.resp,
        redis_port = redis.port,
    );
    run_redis_py(&script);
    let (_, got) = node.post("/records/list", json!({"pk": "tx"}));
    assert_eq!(got["Records"][0]["Sk"], "b", "{got}");
    assert_eq!(got["Records"][0]["Data"], json!(true), "{got}");
}

#[test]
fn transactions_are_one_atomic_entry_or_write_nothing() {
    let node = Node::start();
    // redis-py's default pipeline is a MULTI/EXEC transaction.
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port}, decode_responses=True)
pipe = r.pipeline()
pipe.set("tx", "one")
pipe.hset("tx", mapping={{"a": "1", "b": "2"}})
pipe.get("tx")
pipe.hgetall("tx")
pipe.hdel("tx", "b")
pipe.hexists("tx", "b")
pipe.exists("tx")
assert pipe.execute() == [True, 2, "one", {{"a": "1", "b": "2", "": "one"}}, 1, False, 1], "reads see the writes"
assert r.get("tx") == "one" and r.hgetall("tx") == {{"a": "1", "": "one"}}
# DEL takes a key whole (its string and every field), in a transaction too.
r.hset("tx2", mapping={{"a": "1"}}); r.set("tx2", "s")
pipe = r.pipeline()
pipe.exists("tx2"); pipe.delete("tx2"); pipe.exists("tx2"); pipe.hset("tx2", "b", "2"); pipe.hgetall("tx2")
assert pipe.execute() == [1, 1, 0, 1, {{"b": "2"}}]
assert r.hgetall("tx2") == {{"b": "2"}}
# Writes to keys in different partitions cannot be one entry: refused whole, nothing written.
keys = [f"cross{{i}}" for i in range(8)]
pipe = r.pipeline()
for k in keys:
    pipe.set(k, "x")
try:
    pipe.execute()
    raise SystemExit("a cross-partition transaction was accepted")
except redis.exceptions.ClusterCrossSlotError as e:
    assert "Nothing was written" in str(e), e
assert all(r.get(k) is None for k in keys)
# A command refused while queuing discards the transaction.
r.execute_command("MULTI")
r.execute_command("SET", "aborted", "1")
try:
    r.execute_command("FLUSHALL")
except redis.ResponseError:
    pass
try:
    r.execute_command("EXEC")
    raise SystemExit("EXEC ran after a refused command")
except redis.exceptions.ExecAbortError:
    pass
assert r.get("aborted") is None
# DISCARD drops what was queued.
r.execute_command("MULTI")
r.execute_command("SET", "discarded", "1")
assert r.execute_command("DISCARD") == "OK"
assert r.get("discarded") is None
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // Over HTTP the transaction's records are there, written at one position.
    let (_, got) = node.post("/records/list", json!({"pk": "tx"}));
    let sks: Vec<&str> = got["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Sk"].as_str().unwrap())
        .collect();
    assert_eq!(sks, vec!["", "a"], "{got}");
    // Errors without MULTI are Redis's.
    let mut con = client(&node, false);
    let err = redis::cmd("EXEC").query::<()>(&mut con).unwrap_err();
    assert!(err.to_string().contains("EXEC without MULTI"), "{err}");
    let err = redis::cmd("MULTI")
        .arg("extra")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
}

#[test]
fn watch_makes_exec_answer_nil_when_a_watched_key_changed_anywhere() {
    let node = Node::start();
    let script = format!(
        r#"
import redis, threading, json, urllib.request
port = {port}
r = redis.Redis(port=port, decode_responses=True)

def http_put(pk, sk, data):
    body = json.dumps({{"Records": [{{"pk": pk, "sk": sk, "data": data}}]}}).encode()
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{api}/records/put", body, {{"Content-Type": "application/json"}})).read()

def aborted(watch, change, write):
    p = r.pipeline()
    p.watch(watch)
    change()
    p.multi()
    write(p)
    try:
        p.execute()
        return False
    except redis.WatchError:
        return True

r.set("w", "0")
# A change from another Redis connection, from HTTP, or by this very connection aborts EXEC.
other = redis.Redis(port=port)
assert aborted("w", lambda: other.set("w", "1"), lambda p: p.set("w", "mine"))
assert r.get("w") == "1", "an aborted transaction wrote nothing"
assert aborted("w", lambda: http_put("w", "", "2"), lambda p: p.set("w", "mine"))
assert aborted("w", lambda: r.set("w", "3"), lambda p: p.set("w", "mine"))
# A hash key is all its fields: a change of any field aborts.
r.hset("wh", mapping={{"a": "1", "b": "2"}})
assert aborted("wh", lambda: http_put("wh", "b", "x"), lambda p: p.hset("wh", "a", "9"))
assert r.hget("wh", "a") == "1"
# Creating a watched key that did not exist aborts too.
assert aborted("fresh", lambda: other.set("fresh", "1"), lambda p: p.set("fresh", "2"))
# Unchanged keys, or UNWATCH, let EXEC through.
assert not aborted("w", lambda: None, lambda p: p.set("w", "mine"))
assert r.get("w") == "mine"
p = r.pipeline(); p.watch("w"); other.set("w", "moved"); p.unwatch(); p.multi(); p.set("w", "after unwatch")
assert p.execute() == [True] and r.get("w") == "after unwatch"

# The retry loop every Redis tutorial shows: four clients, no lost update.
r.set("counter", "0")
def add(n):
    c = redis.Redis(port=port)
    for _ in range(n):
        with c.pipeline() as p:
            while True:
                try:
                    p.watch("counter")
                    v = int(p.get("counter"))
                    p.multi()
                    p.set("counter", str(v + 1))
                    p.execute()
                    break
                except redis.WatchError:
                    continue
threads = [threading.Thread(target=add, args=(25,)) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
assert r.get("counter") == "100", r.get("counter")
# WATCH inside MULTI is an error, as in Redis; watched keys must share the writes' partition.
r.execute_command("MULTI")
try:
    r.execute_command("WATCH", "w")
    raise SystemExit("WATCH inside MULTI was accepted")
except redis.ResponseError as e:
    assert "inside MULTI" in str(e)
r.execute_command("DISCARD")
# A connection watches at most MAX_RECORDS_PER_REQUEST keys (each is a check in the one log
# entry): past that, a clear error at once (262,144 keys once took minutes, the look-up
# quadratic); UNWATCH starts again.
try:
    r.execute_command("WATCH", *[f"w{{i}}" for i in range(200000)])
    raise SystemExit("200,000 watched keys were accepted")
except redis.ResponseError as e:
    assert "watches at most 1000 keys" in str(e), e
r.execute_command("UNWATCH")
r.execute_command("MULTI")
r.execute_command("SET", "w1", "x")
assert r.execute_command("EXEC") == ["OK"]
print("ok")
"#,
        port = node.resp,
        api = node.api
    );
    run_redis_py(&script);
}

#[test]
fn counters_and_read_modify_write_commands_are_computed_at_apply() {
    let node = Node::start();
    let script = format!(
        r#"
import redis, threading
port = {port}
r = redis.Redis(port=port, decode_responses=True)
# Eight clients increment at once: every increment counts.
def bump():
    c = redis.Redis(port=port)
    for _ in range(100):
        c.incr("hits")
        c.hincrby("stats", "hits", 2)
threads = [threading.Thread(target=bump) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
assert r.get("hits") == "800", r.get("hits")
assert r.hget("stats", "hits") == "1600"
assert r.incrby("n", 10) == 10 and r.decr("n") == 9 and r.decrby("n", 20) == -11
assert r.incrbyfloat("fl", "10.5") == 10.5 and r.incrbyfloat("fl", "0.1") == 10.6
assert r.get("fl") == "10.6"
assert r.hincrbyfloat("stats", "ratio", "2.5") == 2.5
assert r.append("greeting", "hello") == 5 and r.append("greeting", " world") == 11
assert r.get("greeting") == "hello world"
# Errors are Redis's, and change nothing.
for bad in (lambda: r.incr("greeting"), lambda: r.incrbyfloat("greeting", 1)):
    try:
        bad()
        raise SystemExit("incremented a string that is not a number")
    except redis.ResponseError as e:
        assert "not an integer" in str(e) or "not a valid float" in str(e), e
r.set("big", str(2**63 - 1))
try:
    r.incr("big")
    raise SystemExit("overflowed")
except redis.ResponseError as e:
    assert "overflow" in str(e), e
assert r.get("big") == str(2**63 - 1) and r.get("greeting") == "hello world"
# Old values come from the op itself.
assert r.getset("gs", "one") is None and r.getset("gs", "two") == "one"
assert r.set("gs", "three", get=True) == "two"
assert r.getdel("gs") == "three" and r.get("gs") is None and r.getdel("gs") is None
# Inside a transaction the replies come from the applied entry.
# (one key: a transaction is one partition)
p = r.pipeline()
p.incr("tx"); p.incrby("tx", 5); p.hincrby("tx", "f", 2); p.append("tx", "0"); p.getset("tx", "x")
assert p.execute() == [1, 6, 2, 2, "60"], "replies after apply"
assert r.get("tx") == "x" and r.hget("tx", "f") == "2"
# A command of a transaction that fails at apply fails alone, as in Redis: its error in its
# place, the others' writes stored, and the transaction's later reads see it did nothing.
p = r.pipeline(); p.hset("tx", "g", "written"); p.incr("tx"); p.get("tx"); p.append("tx", "!")
replies = p.execute(raise_on_error=False)
assert replies[0] == 1 and replies[2] == "x" and replies[3] == 2, replies
assert isinstance(replies[1], redis.ResponseError) and "not an integer" in str(replies[1]), replies
assert r.hget("tx", "g") == "written" and r.get("tx") == "x!"
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // HTTP readers: a counter written by Redis is a JSON string, one written as a number over
    // HTTP stays a number when Redis increments it.
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "hits", "sk": ""}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!("800"), "{got}");
    node.post(
        "/records/put",
        json!({"Records": [{"pk": "num", "sk": "", "data": 41}]}),
    );
    let mut con = client(&node, false);
    assert_eq!(con.incr::<_, _, i64>("num", 1).unwrap(), 42);
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "num", "sk": ""}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!(42), "{got}");
}

/// `COUNT` is a hint: one `SCAN` page holds at most `MAX_LIST_RECORDS` keys whatever it asks
/// (with `TYPE`, each string key of a page is read), and the pages still cover every key.
#[test]
fn a_scan_page_is_bounded_whatever_count_asks() {
    let node = Node::start_with(&[("MAX_LIST_RECORDS", "50")]);
    let mut con = client(&node, false);
    let mut pipe = redis::pipe();
    for i in 0..120 {
        pipe.set(format!("k{i}"), i).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    let mut cursor = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1_000_000_000)
            .arg("TYPE")
            .arg("string")
            .query(&mut con)
            .unwrap();
        assert!(keys.len() <= 50, "{} keys in one page", keys.len());
        seen.extend(keys);
        pages += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), 120);
}

#[test]
fn scan_keys_dbsize_and_randomkey_cover_every_partition() {
    let node = Node::start();
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port}, decode_responses=True)
assert r.dbsize() == 0 and r.randomkey() is None and r.keys("*") == []
for i in range(300):
    r.set(f"user:{{i}}", i)
for i in range(40):
    r.hset(f"session:{{i}}", mapping={{"a": "1", "b": "2"}})
r.hset("user:0", "extra", "field")   # a string key with hash fields is still one key
assert r.dbsize() == 340, r.dbsize()
seen = list(r.scan_iter(count=25))
assert len(seen) == 340 and len(set(seen)) == 340, len(seen)
assert sorted(r.scan_iter(match="user:1?")) == sorted(f"user:{{i}}" for i in range(10, 20))
hashes = set(r.scan_iter(_type="hash", count=50))
assert hashes == {{f"session:{{i}}" for i in range(40)}}, hashes
# Sets are told from hashes by their members, as TYPE tells them.
for i in range(5):
    r.sadd(f"tags:{{i}}", "a", "b")
sets = set(r.scan_iter(_type="set", count=50))
assert sets == {{f"tags:{{i}}" for i in range(5)}}, sets
assert set(r.scan_iter(_type="hash", count=50)) == hashes
assert len(set(r.scan_iter(_type="string", count=50))) == 300
assert list(r.scan_iter(_type="zset")) == []
r.delete(*[f"tags:{{i}}" for i in range(5)])
assert len(r.keys("session:*")) == 40 and r.keys("nothing*") == []
assert r.randomkey() in set(seen)
assert r.delete("user:5", "session:3", "missing") == 2   # DEL takes a hash whole
r.hdel("session:4", "a", "b")                             # a hash without fields is gone
assert r.dbsize() == 337, r.dbsize()
assert "session:4" not in set(r.scan_iter(count=1000))
info = r.info("keyspace")
assert info["db0"]["keys"] == 337, info
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // redis-cli walks the keyspace with SCAN and sizes keys with TYPE/STRLEN/HLEN.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &node.resp.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (apt-get install redis-tools; scripts/test.sh does)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["--scan"]).lines().count(), 337);
    assert_eq!(
        cli(&["--scan", "--pattern", "session:*"]).lines().count(),
        38
    );
    let big = cli(&["--bigkeys"]);
    assert!(big.contains("Sampled 337 keys"), "{big}");
    assert!(big.contains("38 hashs"), "{big}");
}

#[test]
fn the_commands_users_reach_for_next() {
    let node = Node::start();
    let mut con = client(&node, false);
    assert_eq!(
        redis::cmd("SETNX")
            .arg("nx")
            .arg("first")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("SETNX")
            .arg("nx")
            .arg("second")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(con.get::<_, String>("nx").unwrap(), "first");
    assert_eq!(con.strlen::<_, i64>("nx").unwrap(), 5);
    assert_eq!(con.strlen::<_, i64>("nothing").unwrap(), 0);
    assert_eq!(con.hset_nx::<_, _, _, i64>("hnx", "f", "ünï").unwrap(), 1);
    assert_eq!(con.hset_nx::<_, _, _, i64>("hnx", "f", "x").unwrap(), 0);
    assert_eq!(
        redis::cmd("HSTRLEN")
            .arg("hnx")
            .arg("f")
            .query::<i64>(&mut con)
            .unwrap(),
        5
    );
    assert_eq!(con.unlink::<_, i64>(&["nx", "nothing"]).unwrap(), 1);
    assert_eq!(con.get::<_, Option<String>>("nx").unwrap(), None);
    // MSET and MSETNX are one atomic entry: keys in one partition, all or nothing.
    let same = keys_in_partition("m", 0, 3);
    let other = keys_in_partition("o", 1, 1).remove(0);
    let _: () = con.mset(&[(&same[0], "a"), (&same[1], "b")]).unwrap();
    assert_eq!(con.get::<_, String>(&same[1]).unwrap(), "b");
    let refused = con
        .mset::<_, _, ()>(&[(&same[2], "c"), (&other, "d")])
        .unwrap_err();
    assert!(refused.to_string().contains("same slot"), "{refused}");
    assert_eq!(con.get::<_, Option<String>>(&other).unwrap(), None);
    assert_eq!(
        con.mset_nx::<_, _, i64>(&[(&same[1], "x"), (&same[2], "y")])
            .unwrap(),
        0
    );
    assert_eq!(
        con.get::<_, Option<String>>(&same[2]).unwrap(),
        None,
        "MSETNX is all or nothing"
    );
    assert_eq!(con.mset_nx::<_, _, i64>(&[(&same[2], "y")]).unwrap(), 1);
    assert_eq!(con.get::<_, String>(&same[2]).unwrap(), "y");
    // A new key named twice is set, to its last value, as redis-server does (every key is
    // checked before any is set).
    let twice = "msetnx-twice";
    assert_eq!(
        con.mset_nx::<_, _, i64>(&[(twice, "1"), (twice, "2")])
            .unwrap(),
        1
    );
    assert_eq!(con.get::<_, String>(twice).unwrap(), "2");
}

#[test]
fn pipelined_writes_go_to_the_log_together_with_exact_replies() {
    let node = Node::start();
    let mut con = client(&node, false);
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("HSET").arg("piped").arg(format!("f{i}")).arg(i);
    }
    let replies: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 20_000);
    assert!(replies.iter().all(|&r| r == 1), "every field was new");
    assert_eq!(con.hlen::<_, i64>("piped").unwrap(), 20_000);
    // Replies that depend on earlier writes of the same pipeline see them, as in Redis.
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg("mix").arg("a").arg("1");
    pipe.cmd("HSET")
        .arg("mix")
        .arg("a")
        .arg("2")
        .arg("b")
        .arg("3");
    pipe.cmd("DEL").arg("mixk").arg("mixk2");
    pipe.cmd("SET").arg("mixk").arg("v");
    pipe.cmd("DEL").arg("mixk");
    pipe.cmd("HGET").arg("mix").arg("a");
    pipe.cmd("HDEL").arg("mix").arg("b").arg("c");
    pipe.cmd("HLEN").arg("mix");
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    let ints: Vec<Option<i64>> = replies
        .iter()
        .map(|v| redis::from_redis_value(v.clone()).ok())
        .collect();
    assert_eq!(ints[0], Some(1));
    assert_eq!(ints[1], Some(1), "a existed, b is new");
    assert_eq!(ints[2], Some(0));
    assert_eq!(ints[4], Some(1), "the SET before it in the pipeline");
    assert_eq!(
        redis::from_redis_value::<String>(replies[5].clone()).unwrap(),
        "2"
    );
    assert_eq!(ints[6], Some(1));
    assert_eq!(ints[7], Some(1));
    assert_eq!(con.get::<_, Option<String>>("mixk").unwrap(), None);
}

/// Defines the redis-py function `run(port)` with `define_run`, runs it against a node and
/// against a real redis-server, and asserts both gave the same replies; then runs `then`, with
/// `ours` (the node's port) and `replies` (its replies). `run` may use `errors_of(r, commands)`:
/// the error each command gets (or "no error").
fn same_replies_as_redis_server(define_run: &str, then: &str) {
    let node = Node::start();
    let server = crate::expiry::RedisServer::start();
    let script = format!(
        r#"
import redis, threading
def errors_of(r, commands):
    out = []
    for args in commands:
        try:
            r.execute_command(*args)
            out.append((args, "no error"))
        except redis.ResponseError as e:
            out.append((args, str(e)))
    return out
{define_run}
ours, theirs = {ours}, {theirs}
replies, expected = run(ours), run(theirs)
assert replies == expected, [(i, a, b) for i, (a, b) in enumerate(zip(replies, expected)) if a != b] or (len(replies), len(expected))
{then}
print("ok")
"#,
        ours = node.resp,
        theirs = server.port
    );
    run_redis_py(&script);
}

#[test]
fn del_hdel_and_hset_counts_are_decided_in_log_order_as_redis_server_does() {
    // Keys written twice in one command, pipelines and transactions: the same replies as
    // redis-server gives.
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    out = [r.hset("c:h", mapping={"a": "1"}), r.execute_command("HSET", "c:h", "b", "1", "b", "2"),
           r.execute_command("HDEL", "c:h", "b", "b", "zz"), r.set("c:k", "v"),
           r.delete("c:k", "c:k", "c:none"), r.delete("c:h"), r.delete("c:h")]
    p = r.pipeline(transaction=False)
    p.hset("c:p", "a", "1"); p.hset("c:p", "a", "2"); p.hdel("c:p", "a"); p.hdel("c:p", "a")
    p.set("c:p2", "x"); p.delete("c:p2", "c:p2"); p.unlink("c:p2")
    out += p.execute()
    p = r.pipeline()
    p.hset("c:t", "a", "1"); p.hset("c:t", mapping={"a": "2", "b": "3"}); p.delete("c:t")
    p.delete("c:t"); p.hset("c:t", "z", "1"); p.hdel("c:t", "z", "z"); p.delete("c:t")
    out += p.execute()
    return out
"#,
        // Many clients at once: each key deleted counts once in all, each field is new for
        // one HSET.
        r#"
r = redis.Redis(port=ours, decode_responses=True)
for i in range(40):
    r.set(f"race:{i}", "v")
dels, news = [], []
def race():
    c = redis.Redis(port=ours, decode_responses=True)
    dels.append(sum(c.delete(f"race:{i}") for i in range(40)))
    news.append(sum(c.hset("race:h", f"f{i}", "x") for i in range(40)))
threads = [threading.Thread(target=race) for _ in range(6)]
[t.start() for t in threads]; [t.join() for t in threads]
assert sum(dels) == 40, dels
assert sum(news) == 40, news
"#,
    );
}

#[test]
fn argument_errors_read_as_redis_servers_do() {
    // Clients and people match on these texts: each bad argument gets redis-server's error.
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    r.hset("ae:h", "f", "v")
    r.set("ae:max", str(2**63 - 1))
    return errors_of(r, [("SCAN", 0, "COUNT", 0), ("SCAN", 0, "COUNT", -1), ("SCAN", 0, "COUNT", "x"),
                         ("SCAN", 0, "COUNT", 5, "BOGUS"), ("HSCAN", "ae:h", 0, "COUNT", 0),
                         ("INCR", "ae:max"), ("DECRBY", "ae:max", "-9223372036854775808"),
                         ("INCRBY", "ae:max", "1.5"), ("HRANDFIELD", "ae:h", "x"), ("SET", "ae:k", "v", "EX", 0),
                         ("HINCRBY", "ae:h", "f", 1), ("HINCRBYFLOAT", "ae:h", "f", 1),
                         ("HINCRBY", "ae:h", "f", "x"), ("HINCRBYFLOAT", "ae:h", "f", "x"),
                         ("SELECT", "abc"), ("SELECT", "00"), ("CLIENT", "SETNAME", "my name"),
                         ("CLIENT", "SETNAME", "a\nid=1"), ("CLIENT", "SETNAME", "ok-name"),
                         ("HELLO", "2", "SETNAME", "x", "bogus"), ("UNLINK",), ("INCRBYFLOAT", "ae:f", "inf"),
                         ("INCRBYFLOAT", "ae:f", "-Infinity"), ("HINCRBYFLOAT", "ae:h", "g", "inf"),
                         ("INCRBYFLOAT", "ae:f", "nan"), ("HINCRBYFLOAT", "ae:h", "g", "nan"),
                         ("SPOP", "ae:s", 1, 2), ("SPOP",)]) + transactions(r)

def transactions(r):
    # An unknown command inside MULTI is that, and discards the transaction; ECHO is queued.
    out = []
    p = r.pipeline()
    p.echo("hi"); p.ping()
    out.append(p.execute())
    try:
        p = r.pipeline()
        p.set("ae:t", "1"); p.execute_command("BOGUS", "x")
        out.append(p.execute())
    except redis.ResponseError as e:
        out.append(str(e))
    out.append(r.get("ae:t"))
    # TYPE inside a transaction sees its earlier writes.
    p = r.pipeline()
    p.type("ae:ty"); p.set("ae:ty", "1"); p.type("ae:ty"); p.delete("ae:ty"); p.type("ae:ty")
    p.hset("ae:ty", "f", "v"); p.type("ae:ty"); p.delete("ae:ty"); p.sadd("ae:ty", "m")
    p.type("ae:ty")
    out.append(p.execute())
    # Set algebra inside a transaction sees its earlier writes (one key: one partition).
    p = r.pipeline()
    p.sadd("ae:st", "a", "b"); p.sinter("ae:st", "ae:st"); p.srem("ae:st", "a")
    p.sunion("ae:st"); p.sdiff("ae:st", "ae:st"); p.sintercard(1, ["ae:st"])
    out.append([sorted(x) if isinstance(x, set) else x for x in p.execute()])
    # TTL of a key the transaction does not write: as read before it.
    r.set("ae:ttl", "v", ex=1000)
    p = r.pipeline()
    p.get("ae:ttl"); p.ttl("ae:ttl"); p.pttl("ae:nothing"); p.expiretime("ae:nothing")
    out.append([x if not isinstance(x, int) or x < 900 else "about 1000" for x in p.execute()])
    return out
"#,
        "",
    );
}

#[test]
fn float_increments_answer_as_redis_server_does_digit_for_digit() {
    // Redis adds in 80-bit `long double` and writes 17 decimals, trimmed: 0.1 + 0.2 is 0.3
    // there (64-bit floats: 0.30000000000000004). Chains of increments, one at a time, in a
    // pipeline and in a transaction, and the awkward texts Redis reads as floats (or not).
    same_replies_as_redis_server(
        r#"
import random
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    # The replies as text: redis-py would make floats of them, hiding digits past 64 bits.
    for name in ("INCRBYFLOAT", "HINCRBYFLOAT"):
        r.set_response_callback(name, lambda reply, **options: reply)
    rng = random.Random(11)
    steps = ["0.1", "0.2", "-0.3", "1.5e-5", "3.14159", "0.01", "-2.5", "1e3", ".5", "5.",
             "0x1p-3", "+7", "0.3333333333333333"]
    out = []
    for i in range(150):
        step = rng.choice(steps) if i % 3 else "%.*f" % (rng.randint(0, 8), rng.uniform(-1e4, 1e4))
        out.append(r.execute_command("INCRBYFLOAT", "fi:" + str(i % 4), step))
        out.append(r.execute_command("HINCRBYFLOAT", "fi:h", "f" + str(i % 3), step))
    for transaction in (False, True):
        p = r.pipeline(transaction=transaction)
        for step in steps:
            p.execute_command("INCRBYFLOAT", "fi:p", step)
            p.execute_command("HINCRBYFLOAT", "fi:ph", "f", step)
        out += p.execute()
    out += [r.get("fi:" + str(k)) for k in range(4)] + [r.hgetall("fi:h")]
    r.set("fi:big", "1e308")
    out += [r.execute_command("INCRBYFLOAT", "fi:big", "1e308"), r.get("fi:big")]
    out += errors_of(r, [("INCRBYFLOAT", "fi:x", t) for t in
                         ["1e5000", "1e-5000", " 1", "1 ", "0x", "1e", "infinity", "--1", "0x1p"]])
    r.set("fi:s", "1e4932")
    out += errors_of(r, [("INCRBYFLOAT", "fi:s", "1e4932"), ("INCRBYFLOAT", "fi:s", "-1e4932")])
    out.append(r.get("fi:s"))
    return out
"#,
        r#"
assert "0.3" in replies and "0.30000000000000004" not in replies, replies[:8]
assert any(len(str(x)) > 300 for x in replies), "a sum past 64-bit floats, every digit"
"#,
    );
}

/// `n` keys `{prefix}{i}` in `partition` of a node's default four: a transaction's keys share
/// a partition.
fn keys_in_partition(prefix: &str, partition: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| firescroll::model::partition_of(k, 4) == partition)
        .take(n)
        .collect()
}

#[test]
fn msetnx_inside_multi_sets_every_key_or_none_as_redis_server_does() {
    // From log format v8 its keys write together or not at all, decided at apply, while the
    // rest of the transaction goes on (below v8 it is refused while queuing: a test below).
    // A transaction's keys share a partition.
    let keys = keys_in_partition("mx", 2, 3);
    same_replies_as_redis_server(
        &format!(
            r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    a, b, c = {keys:?}
    out = []
    p = r.pipeline()
    p.msetnx({{a: "1", b: "2"}}); p.mget(a, b, c); p.msetnx({{b: "3", c: "4"}}); p.mget(a, b, c)
    p.set(c, "5"); p.msetnx({{c: "6"}}); p.get(c); p.delete(a, b, c)
    p.msetnx({{a: "7", c: "8"}}); p.mget(a, b, c)
    out.append(p.execute())
    p = r.pipeline()
    p.msetnx({{a: "9"}}); p.set(b, "10"); p.mget(a, b); p.execute_command("MSETNX", b, "x", b, "y")
    out.append(p.execute())
    out.append(r.mget(a, b, c))
    # A key named twice is set once, to its last value.
    p = r.pipeline()
    p.delete(a); p.execute_command("MSETNX", a, "x", a, "y"); p.get(a)
    out.append(p.execute())
    return out
"#
        ),
        "assert replies[0][0] == 1 and replies[0][2] == 0, replies",
    );
}

#[test]
fn reads_inside_multi_see_skipped_groups_and_past_deadlines_as_redis_server_does() {
    // Found by a random differential run against redis-server: after an MSETNX that sets
    // nothing, EXISTS inside the same transaction lost the key; after `EXPIRE k 0` (which
    // deletes the key in Redis) the transaction's reads still saw it.
    let keys = keys_in_partition("rx", 1, 3);
    same_replies_as_redis_server(
        &format!(
            r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    a, b, h = {keys:?}
    out = []
    r.set(a, "1"); r.hset(h, mapping={{"f": "1", "g": "2"}})
    p = r.pipeline()
    p.msetnx({{a: "2", b: "3"}}); p.exists(a, b); p.get(a); p.mget(a, b); p.type(a)
    out.append(p.execute())
    for option in ([], ["NX"], ["XX"], ["GT"], ["LT"]):
        r.set(a, "1"); r.hset(h, mapping={{"f": "1", "g": "2"}})
        p = r.pipeline()
        p.execute_command("EXPIRE", a, 0, *option); p.exists(a); p.get(a)
        p.execute_command("EXPIRE", h, -1, *option); p.hgetall(h); p.hlen(h); p.exists(h, a)
        p.hset(h, "z", "9"); p.hgetall(h)
        out.append(p.execute())
        out.append((r.get(a), r.hgetall(h)))
    r.set(a, "1", ex=100)
    p = r.pipeline()
    p.execute_command("EXPIRE", a, 0, "XX"); p.exists(a)
    out.append(p.execute())
    # A value written with a deadline already past, or given one by GETEX, is gone for the
    # transaction's later reads (a later differential run found them still there).
    r.set(a, "1"); r.set(b, "2")
    p = r.pipeline()
    p.set(a, "x", exat=1); p.get(a); p.exists(a, b); p.type(a); p.getrange(a, 0, -1)
    p.execute_command("GETEX", b, "PXAT", 4000000000); p.exists(a, b); p.touch(a, b); p.strlen(b)
    p.execute_command("GETEX", b, "PXAT", -1)
    out.append(p.execute())
    out.append((r.get(a), r.get(b)))
    return out
"#
        ),
        "assert replies[0][:3] == [False, 1, '1'], replies",
    );
}

#[test]
fn nx_and_xx_writes_inside_multi_answer_as_redis_server_does() {
    // From log format v4 a write whose NX/XX condition is false is skipped alone at apply, as
    // Redis skips it: the rest of the transaction is written.
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    out = []
    for key in ("nx:a", "nx:b"):
        p = r.pipeline()
        p.set(key, "1", nx=True); p.set(key, "2", nx=True); p.set(key, "3", xx=True); p.get(key)
        p.setnx(key, "4"); p.delete(key); p.set(key, "5", xx=True); p.set(key, "6", nx=True, ex=100)
        p.get(key); p.setnx(key, "7"); p.exists(key)
        out.append(p.execute())
    p = r.pipeline()
    p.hsetnx("nx:h", "f", "1"); p.hsetnx("nx:h", "f", "2"); p.hget("nx:h", "f")
    p.hsetnx("nx:h", "g", "3"); p.hgetall("nx:h"); p.hlen("nx:h")
    out.append(p.execute())
    out.append(r.ttl("nx:b") > 0)
    # TTL of a key the transaction writes, after each write (time left, to the second).
    p = r.pipeline()
    p.set("nx:t", "1", ex=100); p.ttl("nx:t"); p.set("nx:t", "2", nx=True, ex=300); p.ttl("nx:t")
    p.set("nx:t", "3", xx=True, keepttl=True); p.ttl("nx:t"); p.expire("nx:t", 200, gt=True)
    p.ttl("nx:t"); p.persist("nx:t"); p.ttl("nx:t"); p.expire("nx:t", 10, xx=True); p.ttl("nx:t")
    p.set("nx:t", "4"); p.ttl("nx:t"); p.delete("nx:t"); p.ttl("nx:t"); p.expiretime("nx:t")
    out.append([x - 1 if isinstance(x, int) and x > 50 and x % 100 == 0 else x for x in p.execute()])
    # Take a lock only if free, and see who holds it, in one transaction.
    for owner in ("x", "y"):
        p = r.pipeline()
        p.set("nx:lock", owner, nx=True, px=100000); p.get("nx:lock")
        out.append(p.execute())
    return out
"#,
        "assert replies[-1] == [None, 'x'], replies",
    );
}

#[test]
fn below_log_format_4_float_increments_stay_64_bit_and_nx_stays_out_of_transactions() {
    // (And below v5, field TTL commands read the key's; below v6, JSON writes at a path are
    // refused: at the end.)
    // A Kafka fleet not yet raised to v4 may hold older releases: increments stay the v1 op,
    // which they apply (64-bit floats), however a v4 node would answer.
    let node = Node::start_with(&[("ENTRY_WRITE_VERSION", "3")]);
    let mut con = client(&node, false);
    let mut incr = |by: &str| -> String {
        redis::cmd("INCRBYFLOAT")
            .arg("f")
            .arg(by)
            .query(&mut con)
            .unwrap()
    };
    assert_eq!(incr("0.1"), "0.1");
    assert_eq!(incr("0.2"), "0.30000000000000004");
    let refused: redis::RedisResult<String> = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1e400")
        .query(&mut con);
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("increment would produce NaN or Infinity"),
        "past 64-bit floats, as this node always said"
    );
    // NX inside MULTI needs v4's skipping condition: below it, an error for that command.
    let refused: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("nx")
        .arg("1")
        .arg("NX")
        .cmd("SET")
        .arg("nx")
        .arg("2")
        .query(&mut con);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("ENTRY_WRITE_VERSION=4"), "{error}");
    // And so does TTL of a key the transaction writes (read at apply from v4).
    let refused: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .arg("EX")
        .arg(100)
        .cmd("TTL")
        .arg("t")
        .query(&mut con);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("ENTRY_WRITE_VERSION=4"), "{error}");
    // Below v5 a hash field's TTL commands see its key's TTL, as older releases apply them:
    // the entries say nothing they would read otherwise.
    let mut run = |args: &[&str]| -> redis::RedisResult<redis::Value> {
        redis::cmd(args[0]).arg(&args[1..]).query(&mut con)
    };
    run(&["HSET", "h", "a", "1"]).unwrap();
    run(&["EXPIRE", "h", "100"]).unwrap();
    let ttl = run(&["HTTL", "h", "FIELDS", "1", "a"]).unwrap();
    assert!(
        matches!(&ttl, redis::Value::Array(v) if matches!(v[0], redis::Value::Int(95..=100))),
        "{ttl:?}"
    );
    let persisted = run(&["HPERSIST", "h", "FIELDS", "1", "a"]).unwrap();
    assert_eq!(persisted, redis::Value::Array(vec![redis::Value::Int(1)]));
    // Below v6, JSON writes at a path (a v6 op) are refused, saying what to raise; at the root
    // they are plain puts, and reads at a path need no format.
    assert_eq!(
        run(&["JSON.SET", "doc", "$", r#"{"a":1}"#]),
        Ok(redis::Value::Okay)
    );
    let refused = run(&["JSON.SET", "doc", "$.a", "2"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("ENTRY_WRITE_VERSION"), "{refused}");
    assert_eq!(
        run(&["JSON.GET", "doc", "$.a"]),
        Ok(redis::Value::BulkString(b"[1]".to_vec()))
    );
}

/// A node writing log format v6 (its fleet not all on a release that applies v7) refuses JSON
/// writes whose path filters call functions or test patterns, saying what to raise, and takes
/// plain filters; reads take every filter on any format.
#[test]
fn below_log_format_7_json_writes_take_filters_without_functions() {
    let node = Node::start_with(&[("ENTRY_WRITE_VERSION", "6")]);
    let mut con = client(&node, false);
    let mut run = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query::<redis::Value>(&mut con)
    };
    assert_eq!(
        run(&["JSON.SET", "doc", "$", r#"{"hosts":["edge-1","core-1"]}"#]),
        Ok(redis::Value::Okay)
    );
    let refused = run(&["JSON.SET", "doc", "$.hosts[?@ =~ '^edge']", r#""x""#])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("log format v7") && refused.contains("ENTRY_WRITE_VERSION"),
        "{refused}"
    );
    assert_eq!(
        run(&["JSON.SET", "doc", "$.hosts[?@ == 'core-1']", r#""core-2""#]),
        Ok(redis::Value::Okay)
    );
    assert_eq!(
        run(&["JSON.GET", "doc", "$.hosts[?@ =~ '^edge' || length(@) > 9]"]),
        Ok(redis::Value::BulkString(br#"["edge-1"]"#.to_vec()))
    );
    // Below v8 MSETNX is refused while queuing (its condition would decide the whole
    // transaction: EXECABORT), and HSETEX FNX at EXEC (the rest is written), each saying what
    // to raise.
    let mut tx = client(&node, false);
    let refused: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("s")
        .arg("1")
        .cmd("MSETNX")
        .arg("s")
        .arg("2")
        .query(&mut tx);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("msetnx"), "{error}");
    assert_eq!(run(&["EXISTS", "s"]), Ok(redis::Value::Int(0)));
    let refused: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg("hx")
        .arg("a")
        .arg("1")
        .cmd("HSETEX")
        .arg("hx")
        .arg("FNX")
        .arg("FIELDS")
        .arg(1)
        .arg("b")
        .arg("2")
        .query(&mut tx);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("ENTRY_WRITE_VERSION=8"), "{error}");
    assert_eq!(run(&["HLEN", "hx"]), Ok(redis::Value::Int(1)));
}

#[test]
fn pipelined_counters_go_to_the_log_together_and_answer_as_redis_server_does() {
    // The same non-transactional pipeline against both, errors kept in place: the counters'
    // replies are filled in from their entries' outcomes, in order, one failing alone.
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    p = r.pipeline(transaction=False)
    p.set("pc:text", "abc")
    for i in range(300):
        p.incr("pc:n")
        if i % 50 == 0:
            p.incrby("pc:n", -7)
    p.decrby("pc:n", 3)
    p.incrbyfloat("pc:f", 1.5)
    p.hincrby("pc:h", "f", 4)
    p.hincrbyfloat("pc:h", "g", 0.25)
    p.append("pc:text", "def")
    p.incr("pc:text")
    p.hset("pc:h2", "a", "1")
    p.incr("pc:n")
    p.get("pc:n")
    p.incr("pc:n")
    out = p.execute(raise_on_error=False)
    return ["error" if isinstance(x, Exception) else x for x in out]
"#,
        "assert len(replies) == 317, len(replies)",
    );
}

#[test]
fn a_transactions_command_that_fails_at_apply_fails_alone_as_in_redis_server() {
    // Redis runs every command of an EXEC: one that meets a value it cannot use answers its
    // error in its place and the others run, their later reads seeing it changed nothing.
    // Keys of one partition (a transaction is one entry): t0, t4, t5, t10.
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    r.delete("t0", "t4", "t5", "t10")
    r.set("t0", "abc"); r.set("t5", str(2**63 - 1)); r.hset("t10", "f", "x")
    p = r.pipeline()
    p.set("t4", "1"); p.incr("t0"); p.append("t0", "def"); p.incrbyfloat("t0", 1)
    p.get("t0"); p.incr("t5"); p.decrby("t5", 1); p.hincrby("t10", "f", 1)
    p.hincrbyfloat("t10", "f", 1.5); p.hincrby("t10", "g", 2); p.hgetall("t10")
    p.incr("t4"); p.mget("t0", "t4", "t5")
    out = p.execute(raise_on_error=False)
    out = [("error", str(x)) if isinstance(x, Exception) else x for x in out]
    return out + [r.get("t0"), r.get("t4"), r.get("t5"), r.hgetall("t10")]
"#,
        "assert [x for x in replies if isinstance(x, tuple)] != [], 'some command failed'",
    );
}

#[test]
fn a_pipelines_counters_share_an_entry_and_one_that_fails_fails_alone() {
    // From log format v9 the op fails alone in the shared entry; below it the entry is
    // rejected whole and each op written again on its own.
    pipelined_counters_with_one_failing(&Node::start(), true);
    pipelined_counters_with_one_failing(&Node::start_with(&[("ENTRY_WRITE_VERSION", "8")]), false);
}

fn pipelined_counters_with_one_failing(node: &Node, fails_alone: bool) {
    let mut con = client(node, false);
    // The log offset of the partition of pk "pc" now, read from a waited HTTP put there.
    let offset = || {
        let (status, got) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "pc", "sk": "probe", "data": "x"}], "wait": true}),
        );
        assert_eq!(status, 200, "{got}");
        got["Positions"][0]["Offset"].as_u64().unwrap()
    };
    let before = offset();
    let mut pipe = redis::pipe();
    for _ in 0..10 {
        pipe.cmd("INCR").arg("pc");
    }
    pipe.cmd("HINCRBY").arg("pc").arg("hits").arg(5);
    pipe.cmd("APPEND").arg("pc").arg("0");
    let replies: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(replies, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 3]);
    let after = offset();
    assert_eq!(after, before + 2, "the 12 writes were one entry");
    // One op that fails at apply (the probe's "x" is no integer): it fails alone (v9), or its
    // entry is rejected as a whole and each op is written alone; either way the others apply,
    // in order.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("INCR").arg("pc");
    pipe.cmd("HINCRBY").arg("pc").arg("probe").arg(1);
    pipe.cmd("INCRBY").arg("pc").arg(10);
    let replies: Vec<RedisValue> = pipe.query(&mut con).unwrap();
    assert_eq!(replies[0], RedisValue::Int(101));
    match &replies[1] {
        RedisValue::ServerError(e) => {
            assert!(
                e.details().unwrap_or("").contains("not an integer"),
                "{e:?}"
            )
        }
        other => panic!("HINCRBY of \"x\" answered {other:?}"),
    }
    assert_eq!(replies[2], RedisValue::Int(111));
    if fails_alone {
        assert_eq!(offset(), after + 2, "one entry, then the probe");
    } else {
        assert_eq!(
            offset(),
            after + 5,
            "the rejected shared entry, then one entry per op, then the probe"
        );
    }
    assert_eq!(con.get::<_, i64>("pc").unwrap(), 111);
    assert_eq!(con.hget::<_, _, String>("pc", "probe").unwrap(), "x");
}

#[test]
fn every_command_reaches_the_latency_histogram_pipelined_or_not() {
    let node = Node::start();
    // Each connection keeps its own histograms and adds them to the node's after each batch
    // of commands it answers: the counts must still be exact.
    let count = |command: &str| -> u64 {
        let (_, text) = node.get_url(&node.internal_url("/metrics"));
        let series = format!("resp_latencies_micro_count{{command=\"{command}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    let mut con = client(&node, false);
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("GET").arg(format!("lat:{i}"));
    }
    pipe.cmd("PING").cmd("PING").cmd("PING");
    let _: Vec<RedisValue> = pipe.query(&mut con).unwrap();
    for _ in 0..7 {
        let _: Option<String> = con.get("lat:one").unwrap();
    }
    // A connection that leaves adds what it has too.
    {
        let mut other = client(&node, false);
        let _: Option<String> = other.get("lat:other").unwrap();
    }
    let want = 308;
    for _ in 0..50 {
        if count("get") == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count("get"), want);
    assert_eq!(count("ping"), 3);
}

#[test]
fn info_answers_the_sections_asked_for_and_redis_cli_stat_reads_it() {
    let node = Node::start();
    let mut first = client(&node, false);
    let _second = client(&node, false);
    let clients: String = redis::cmd("INFO").arg("clients").query(&mut first).unwrap();
    assert!(clients.starts_with("# Clients"), "{clients}");
    assert!(!clients.contains("# Server"), "{clients}");
    let connected: u64 = clients
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{clients}"));
    assert!(connected >= 2, "{clients}");
    let everything: String = redis::cmd("INFO").query(&mut first).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Cluster",
        "# Firescroll",
    ] {
        assert!(everything.contains(section), "{section}: {everything}");
    }
    assert!(
        everything.contains("used_memory:") && everything.contains("total_commands_processed:")
    );
    // What monitoring reads to tell a restart: the port, uptime and a run id of 40 hex digits.
    let field = |name: &str| {
        everything
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name}: {everything}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("tcp_port"), node.resp.to_string());
    assert!(field("uptime_in_seconds").parse::<u64>().is_ok());
    assert_eq!(field("uptime_in_days"), "0");
    let run_id = field("run_id");
    assert!(
        run_id.len() == 40 && run_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{run_id}"
    );
    // redis-cli --stat prints a line of numbers per interval from INFO.
    let out = std::process::Command::new("timeout")
        .args([
            "2.5",
            "stdbuf",
            "-o0",
            "redis-cli",
            "-p",
            &node.resp.to_string(),
            "--stat",
            "-i",
            "1",
        ])
        .output()
        .expect("timeout, stdbuf and redis-cli run");
    let text = String::from_utf8_lossy(&out.stdout);
    let sample = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
        })
        .unwrap_or_else(|| panic!("no sample line:\n{text}"));
    let columns: Vec<&str> = sample.split_whitespace().collect();
    assert!(columns[1].ends_with('M'), "memory column: {sample}");
    assert!(
        columns[2].parse::<u64>().unwrap() >= 2,
        "clients column: {sample}"
    );
}

/// `INFO stats` counts what redis_exporter, Datadog and Grafana's Redis dashboards read, as
/// redis-server counts it: the same redis-py script runs against both, and must read the same
/// lookups that hit and missed, at least the bytes it sent and read, a command rate while
/// commands run, expired keys, subscriptions, and zeroes after `CONFIG RESETSTAT`.
#[test]
fn info_stats_count_lookups_bytes_rates_and_expiries_as_redis_server_does() {
    let node = Node::start();
    let server = crate::expiry::RedisServer::start();
    for (port, firescroll) in [(server.port, false), (node.resp, true)] {
        let script = format!(
            r#"
import redis, time
firescroll = {firescroll}
r = redis.Redis(port={port}, decode_responses=True, socket_timeout=60)
c = redis.Redis(port={port}, decode_responses=True, socket_timeout=60)
def stats():
    return r.info("stats")
def wait_for(what, check):
    for _ in range(200):
        s = stats()
        if check(s):
            return s
        time.sleep(0.05)
    raise SystemExit(what + ": " + repr(stats()))
assert r.config_resetstat()
s = stats()
assert s["keyspace_hits"] == 0 and s["keyspace_misses"] == 0, s
c.set("k", "v")
for _ in range(3):
    assert c.get("k") == "v"
for _ in range(2):
    assert c.get("missing") is None
assert c.mget("k", "missing") == ["v", None]
assert c.exists("k", "k", "missing") == 2
s = stats()
# GET 3 hits 2 misses, MGET 1 and 1, EXISTS 2 and 1.
assert (s["keyspace_hits"], s["keyspace_misses"]) == (6, 4), s
# Bytes: a 100 kB value in, then out.
c.set("big", "x" * 100000)
assert stats()["total_net_input_bytes"] >= 100000, stats()
assert len(c.get("big")) == 100000
assert stats()["total_net_output_bytes"] >= 100000, stats()
# A rate while commands run (averaged over the last 1.6 s, as Redis's).
p = c.pipeline(transaction=False)
for _ in range(5000):
    p.ping()
p.execute()
wait_for("a command rate", lambda s: s["instantaneous_ops_per_sec"] > 0 and s["instantaneous_input_kbps"] > 0)
# An expired key is counted once removed.
c.set("short", "v", px=50)
wait_for("an expired key", lambda s: s["expired_keys"] >= 1)
# Subscriptions: distinct channels and patterns.
sub = redis.Redis(port={port}).pubsub()
sub.subscribe("__keyspace@0__:k")
sub.psubscribe("__key*__:*")
other = redis.Redis(port={port}).pubsub()
other.subscribe("__keyspace@0__:k")
for p_ in (sub, sub, other):
    assert p_.get_message(timeout=10) is not None
wait_for("subscriptions", lambda s: (s["pubsub_channels"], s["pubsub_patterns"]) == (1, 1))
# Counted down as subscribers leave: one unsubscribes, the other's connection closes.
sub.unsubscribe("__keyspace@0__:k")
sub.punsubscribe("__key*__:*")
wait_for("a channel still subscribed", lambda s: (s["pubsub_channels"], s["pubsub_patterns"]) == (1, 0))
other.close()
wait_for("no subscriptions", lambda s: (s["pubsub_channels"], s["pubsub_patterns"]) == (0, 0))
if firescroll:
    # A hash field found or not counts as a key does (redis-server counts the hash key).
    assert r.config_resetstat()
    c.hset("h", "f", "v")
    assert c.hget("h", "f") == "v" and c.hget("h", "g") is None
    assert c.hmget("h", "f", "g", "f") == ["v", None, "v"]
    assert c.hexists("h", "f") and c.hgetall("nothing") == {{}}
    s = stats()
    assert (s["keyspace_hits"], s["keyspace_misses"]) == (4, 3), s
    assert r.info("clients")["maxclients"] == 10000
# CONFIG RESETSTAT zeroes the counts.
assert r.config_resetstat()
s = stats()
assert s["keyspace_hits"] == 0 and s["keyspace_misses"] == 0 and s["expired_keys"] == 0, s
assert s["total_net_input_bytes"] < 1000 and s["total_net_output_bytes"] < 1000, s
print("ok")
"#,
            firescroll = if firescroll { "True" } else { "False" },
        );
        run_redis_py(&script);
    }
}

/// What health checks, monitoring and cluster-probing clients read: a master with no
/// replicas, nothing loading, writes going to disk, and no cluster mode, as redis-server
/// standalone answers (redis-py parses each).
#[test]
fn role_persistence_and_cluster_probes_answer_as_a_standalone_redis() {
    let node = Node::start();
    let script = format!(
        r##"
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
r = redis.Redis(port={port}, decode_responses=True)
assert r.role() == ["master", 0, []], r.role()
replication = r.info("replication")
assert replication["role"] == "master" and replication["connected_slaves"] == 0, replication
assert len(replication["master_replid"]) == 40, replication
persistence = r.info("persistence")
assert persistence["loading"] == 0 and persistence["aof_enabled"] == 1, persistence
assert persistence["aof_last_write_status"] == "ok", persistence
assert r.info("cluster") == {{"cluster_enabled": 0}}, r.info("cluster")
cpu = r.info("cpu")
assert cpu["used_cpu_user"] + cpu["used_cpu_sys"] > 0, cpu
# The default INFO has every section, in Redis's order.
raw = r.connection_pool.get_connection()
raw.send_command("INFO")
sections = [l[2:] for l in raw.read_response().splitlines() if l.startswith("# ")]
r.connection_pool.release(raw)
assert sections == ["Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "CPU",
                    "Modules", "Cluster", "Firescroll", "Keyspace"], sections
for command in (("CLUSTER", "SLOTS"), ("CLUSTER", "INFO"), ("READONLY",), ("READWRITE",)):
    try:
        r.execute_command(*command)
        raise SystemExit(f"{{command}} was answered")
    except redis.ResponseError as e:
        assert str(e) == "This instance has cluster support disabled", (command, e)
# redis-py's cluster client, pointed at a node, says plainly that it is not a cluster.
try:
    RedisCluster(host="127.0.0.1", port={port})
    raise SystemExit("RedisCluster connected")
except RedisClusterException as e:
    assert "Cluster mode is not enabled" in str(e), e
print("ok")
"##,
        port = node.resp
    );
    run_redis_py(&script);
}

/// HAProxy's usual health check of a Redis master (`PING`, then `INFO replication` expecting
/// `role:master`) finds the node up, and commands pass through it. Without a replication
/// section the check failed and HAProxy kept the node out.
#[test]
fn haproxy_redis_health_check_finds_the_node_a_master() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let [front] = common::free_ports();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    stats socket {socket} mode 600 level admin\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
             timeout server 10s\n\
             frontend redis_front\n    bind 127.0.0.1:{front}\n    default_backend redis_back\n\
             backend redis_back\n    option tcp-check\n    tcp-check connect\n    \
             tcp-check send PING\\r\\n\n    tcp-check expect string +PONG\n    \
             tcp-check send info\\ replication\\r\\n\n    tcp-check expect string role:master\n    \
             tcp-check send QUIT\\r\\n\n    tcp-check expect string +OK\n    \
             server firescroll 127.0.0.1:{resp} check inter 200ms fall 1 rise 1\n",
            socket = socket.display(),
            resp = node.resp,
        ),
    )
    .unwrap();
    let mut haproxy = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("haproxy runs (apt-get install haproxy; scripts/test.sh does)");
    // The server's status and its last check as HAProxy's admin socket reports them (`show
    // stat`: CSV under a header naming the columns).
    let status = || -> Option<(String, String, String)> {
        use std::os::unix::net::UnixStream;
        let mut admin = UnixStream::connect(&socket).ok()?;
        admin.write_all(b"show stat\n").unwrap();
        let mut text = String::new();
        admin.read_to_string(&mut text).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let row: Vec<&str> = lines
            .find(|l| l.starts_with("redis_back,firescroll,"))?
            .split(',')
            .collect();
        let column = |name: &str| -> String {
            let at = header.iter().position(|h| *h == name).unwrap();
            row.get(at).unwrap_or(&"").to_string()
        };
        Some((
            column("status"),
            // A leading `* ` marks a check in progress.
            column("check_status").trim_start_matches("* ").to_string(),
            column("check_desc"),
        ))
    };
    // Until its first check has run, HAProxy shows the server UP with the check `INI`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (state, check, why) = loop {
        if let Some(seen) = status().filter(|(_, check, _)| !matches!(check.as_str(), "" | "INI")) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy ran no check: {:?}",
            status()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((state.as_str(), check.as_str()), ("UP", "L7OK"), "{why}");
    let mut through = redis::Client::open(format!("redis://127.0.0.1:{front}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("behind-haproxy")
        .arg("v")
        .query(&mut through)
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("behind-haproxy")
        .query(&mut through)
        .unwrap();
    assert_eq!(value, "v");
    haproxy.kill().unwrap();
    haproxy.wait().unwrap();
}

#[test]
fn pipelines_and_transactions_stay_inside_what_one_write_may_hold() {
    let node = Node::start();
    let mut con = client(&node, false);
    // Six values of 300 KB to one hash: together far over one log entry (1 MiB), each one fine.
    let big = "v".repeat(300_000);
    let mut pipe = redis::pipe();
    for i in 0..6 {
        pipe.cmd("HSET")
            .arg("bigpipe")
            .arg(format!("f{i}"))
            .arg(&big);
    }
    // After a big value the read buffer is large: thousands of small writes arrive at once.
    for i in 0..5000 {
        pipe.cmd("HSET").arg("bigpipe").arg(format!("s{i}")).arg(i);
    }
    let replies: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(replies, vec![1; 5006]);
    assert_eq!(con.hlen::<_, i64>("bigpipe").unwrap(), 5006);
    // A transaction queues at most MAX_RECORDS_PER_REQUEST commands, then is discarded.
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI").ignore();
    for i in 0..1001 {
        pipe.cmd("HSET")
            .arg("bigtx")
            .arg(format!("f{i}"))
            .arg("x")
            .ignore();
    }
    pipe.cmd("EXEC");
    let err = pipe.query::<redis::Value>(&mut con).unwrap_err();
    assert!(
        err.to_string().contains("EXECABORT") || err.to_string().contains("discarded"),
        "{err}"
    );
    assert_eq!(con.hlen::<_, i64>("bigtx").unwrap(), 0);
    // And at most MAX_BODY_BYTES of commands (its writes are one entry of at most 1 MiB): past
    // it, refused while queuing, then discarded. (It held up to 1,000 commands of 8 MB each.)
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let mut refused = None;
    for i in 0..40 {
        match redis::cmd("SET")
            .arg(format!("tx{i}"))
            .arg(&big)
            .query::<String>(&mut con)
        {
            Ok(queued) => assert_eq!(queued, "QUEUED"),
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (at, message) = refused.expect("a queue past MAX_BODY_BYTES refused");
    assert_eq!(at, 27, "8 MiB hold 27 commands of 300 KB: {message}");
    assert!(message.contains("MAX_BODY_BYTES"), "{message}");
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("discarded"), "{err}");
    assert_eq!(con.get::<_, Option<String>>("tx0").unwrap(), None);
}

#[test]
fn ioredis_and_node_redis_work_as_their_users_write_them() {
    let node = Node::start();
    let clients = std::env::var("NODE_CLIENTS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/firescroll/node-clients",
            std::env::var("HOME").unwrap()
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/node_clients.js");
    common::assert_script_ok(
        std::process::Command::new("node")
            .arg(script)
            .arg(node.resp.to_string())
            .env("NODE_PATH", format!("{clients}/node_modules")),
        &format!(
            "ioredis/node-redis (npm install ioredis@5 redis@4 in {clients}; scripts/test.sh does)"
        ),
    );
}

#[test]
fn client_list_and_kill_hrandfield_resetstat_and_quoted_inline_commands() {
    let node = Node::start();
    let script = format!(
        r#"
import redis, time
r = redis.Redis(port={port}, decode_responses=True)
victim = redis.Redis(port={port}, decode_responses=True)
victim.client_setname("victim")
victim.ping()
clients = r.client_list()
assert len(clients) >= 2, clients
mine = r.client_id()
# The asking connection's own line says it is running CLIENT LIST; ID picks connections.
me = r.client_list(client_id=[mine, mine, 999999])
assert [(c["id"], c["cmd"]) for c in me] == [(str(mine), "client|list")], me
for attr in ("SETNAME", "SETINFO lib-name"):
    try:
        r.execute_command("CLIENT", *attr.split(), "n" * 1025)
        raise SystemExit("a 1025-byte " + attr)
    except redis.ResponseError as e:
        assert "at most 1024 bytes" in str(e), e
assert r.client_list(_type="pubsub") == [] and len(r.client_list(_type="normal")) >= 2
assert any("LIST [TYPE" in line for line in r.execute_command("CLIENT", "HELP"))
theirs = [c for c in clients if c["name"] == "victim"]
assert len(theirs) == 1 and theirs[0]["cmd"] == "ping", clients
# redis-py says which library it is when it connects (CLIENT SETINFO), as Redis 7.2 lists it.
assert theirs[0]["lib-name"] == "redis-py" and theirs[0]["lib-ver"] == redis.__version__, theirs
for attr, value, why in (("lib-name", "a b", "lib-name cannot contain spaces"),
                         ("LIB-VER", "1\n2", "LIB-VER cannot contain spaces"),
                         ("lib-x", "1", "Unrecognized option 'lib-x'")):
    try:
        r.execute_command("CLIENT", "SETINFO", attr, value)
        raise SystemExit("accepted " + attr)
    except redis.ResponseError as e:
        assert why in str(e), e
assert r.client_kill_filter(_id=theirs[0]["id"]) == 1
def gone(name):
    for _ in range(100):
        if all(c["name"] != name for c in r.client_list()):
            return True
        time.sleep(0.05)
assert gone("victim")
# Killing by address, the old form.
other = redis.Redis(port={port}, decode_responses=True); other.client_setname("other")
addr = [c["addr"] for c in r.client_list() if c["name"] == "other"][0]
assert r.execute_command("CLIENT", "KILL", addr) == "OK"
assert gone("other")
assert r.client_kill_filter(_id=999999) == 0
r.hset("rf", mapping={{"a": "1", "b": "2", "c": "3"}})
assert r.hrandfield("rf") in ("a", "b", "c")
assert sorted(r.hrandfield("rf", 10)) == ["a", "b", "c"]
assert len(r.hrandfield("rf", -7)) == 7
assert len(r.hrandfield("rf", -100000)) == 100000
try:
    r.hrandfield("rf", -100001)
    raise SystemExit("a repeated-fields count past the bound must be refused, not cut short")
except redis.ResponseError as e:
    assert "out of range" in str(e) and "100000" in str(e), e
pairs = r.hrandfield("rf", 2, withvalues=True)
assert len(pairs) == 4 and {{pairs[0]: pairs[1]}}.items() <= {{"a": "1", "b": "2", "c": "3"}}.items()
# Under RESP3, field-value pairs, as redis-server 7 answers (it was one flat list here).
r3 = redis.Redis(port={port}, protocol=3, decode_responses=True)
pairs3 = r3.hrandfield("rf", -3, withvalues=True)
assert len(pairs3) == 3 and all(len(p) == 2 and {{p[0]: p[1]}}.items() <= {{"a": "1", "b": "2", "c": "3"}}.items() for p in pairs3), pairs3
assert r.hrandfield("nothing") is None and r.hrandfield("nothing", 3) == []
assert r.info("stats")["total_commands_processed"] > 0
assert r.config_resetstat()
assert r.info("stats")["total_commands_processed"] <= 2
# Commands of other connections are counted once answered (each connection adds its own).
counted = redis.Redis(port={port})
for _ in range(5):
    counted.ping()
assert r.info("stats")["total_commands_processed"] >= 7
# ... and so are those of a connection's last batch, which ends it.
import socket
before = r.info("stats")["total_commands_processed"]
with socket.create_connection(("127.0.0.1", {port})) as raw:
    raw.sendall(b"PING\r\nPING\r\nQUIT\r\n")
    while raw.recv(1024):
        pass
assert r.info("stats")["total_commands_processed"] >= before + 4, (before, r.info("stats"))
# Command statistics, as monitoring tools read them: by name, or with `all`; not by default.
counted.set("cs", "v"); counted.get("cs"); counted.get("cs"); counted.close()
stats = r.info("commandstats")
assert stats["cmdstat_get"]["calls"] >= 2 and stats["cmdstat_set"]["calls"] >= 1, stats
assert stats["cmdstat_get"]["usec"] > 0 and stats["cmdstat_get"]["usec_per_call"] > 0, stats
assert "cmdstat_get" in r.info("all") and "cmdstat_get" not in r.info(), r.info()
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // Inline commands (as typed into telnet) take Redis's quoting.
    let (reply, _) = raw_exchange(
        &node,
        b"SET \"my key\" 'it\\'s \"here\"'\r\nGET \"my key\"\r\nGET \"open\r\n",
    );
    assert!(
        reply.starts_with("+OK\r\n$11\r\nit's \"here\"\r\n-ERR Protocol error: unbalanced quotes"),
        "{reply:?}"
    );
}

#[test]
fn empty_keys_are_refused_in_redis_terms_and_the_empty_field_is_the_string() {
    let node = Node::start();
    let mut con = client(&node, false);
    // Redis takes "" as a key; here a key needs a character, and the error says so in the
    // terms of the command (not of the HTTP API's records and pks).
    for cmd in [
        redis::cmd("GET").arg("").clone(),
        redis::cmd("SET").arg("").arg("v").clone(),
        redis::cmd("HSET").arg("").arg("f").arg("v").clone(),
        redis::cmd("INCR").arg("").clone(),
        redis::cmd("DEL").arg("").clone(),
    ] {
        let e = cmd.query::<RedisValue>(&mut con).unwrap_err();
        assert_eq!(
            e.detail(),
            Some("empty keys are not supported here: a key needs at least one character"),
            "{e}"
        );
    }
    // A key is a pk: its string is the record with sk "", its hash fields the others. So the
    // hash field "" is the string, as the README says, and both live under one key.
    assert_eq!(con.hset::<_, _, _, i64>("both", "", "text").unwrap(), 1);
    assert_eq!(con.get::<_, String>("both").unwrap(), "text");
    assert_eq!(con.hset::<_, _, _, i64>("both", "f", "v").unwrap(), 1);
    let all: HashMap<String, String> = con.hgetall("both").unwrap();
    assert_eq!(
        all,
        HashMap::from([("".into(), "text".into()), ("f".into(), "v".into())])
    );
    assert_eq!(con.del::<_, i64>("both").unwrap(), 1);
    assert!(
        con.hgetall::<_, HashMap<String, String>>("both")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn getrange_touch_time_and_memory_usage_answer_as_redis_server_does() {
    same_replies_as_redis_server(
        r#"
def run(port):
    r = redis.Redis(port=port, decode_responses=True)
    r.set("gr:s", "This is a string")
    r.set("gr:u", "héllo")
    r.hset("gr:h", "f", "v")
    out = []
    for start, end in [(0, 3), (-3, -1), (0, -1), (10, 100), (-100, 2), (5, 3), (-1, -5), (16, 20)]:
        out.append(r.getrange("gr:s", start, end))
    out.append(r.execute_command("SUBSTR", "gr:s", 0, 3))
    out.append(r.getrange("gr:nothing", 0, -1))
    out.append(redis.Redis(port=port).getrange("gr:u", 0, 1))  # bytes: "h" and half of "é"
    out.append(r.touch("gr:s", "gr:h", "gr:nothing", "gr:s"))
    t = r.time()
    out.append((type(t[0]), type(t[1]), 0 <= t[1] < 1_000_000, abs(t[0] - __import__("time").time()) < 60))
    # In a transaction they see its earlier writes.
    p = r.pipeline(transaction=True)
    p.set("gr:t", "abcdef").getrange("gr:t", 1, 2).touch("gr:t", "gr:nothing").time()
    replies = p.execute()
    out.append((replies[:3], len(replies[3])))
    # MEMORY USAGE: a number for a key, nil for none (the numbers are each server's own).
    out.append((r.memory_usage("gr:s") > 0, r.memory_usage("gr:h") > 0, r.memory_usage("gr:nothing")))
    return out + errors_of(r, [("GETRANGE", "gr:s", "x", 1), ("GETRANGE", "gr:s", 0), ("TOUCH",), ("TIME", "x"),
                               ("MEMORY", "USAGE"), ("MEMORY", "USAGE", "gr:s", "SAMPLES", "x"),
                               ("MEMORY", "USAGE", "gr:s", "BOGUS"), ("MEMORY", "USAGE", "gr:s", "SAMPLES", 0)])
"#,
        // Ours counts the key, each field's name and each value, as a client reads them.
        r#"
r = redis.Redis(port=ours)
r.set("mu:s", "hello")
r.hset("mu:h", mapping={"a": "1", "b": "22"})
assert r.memory_usage("mu:s") == 4 + 5, r.memory_usage("mu:s")
assert r.memory_usage("mu:h") == (4 + 1 + 1) + (4 + 1 + 2), r.memory_usage("mu:h")
# A hash over many pages of the store's listing is summed whole.
p = r.pipeline(transaction=False)
for start in range(0, 25_000, 500):
    p.hset("mu:big", mapping={f"f{i:05d}": "v" for i in range(start, start + 500)})
p.execute()
assert r.memory_usage("mu:big") == 25_000 * (6 + 6 + 1), r.memory_usage("mu:big")
"#,
    );
}

#[test]
fn slowlog_keeps_slow_commands_for_redis_py_and_config_tunes_it() {
    let node = Node::start();
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port}, decode_responses=True)
# Redis's defaults: 10 ms, 128 entries; a plain read is far below.
assert r.config_get("slowlog*") == {{"slowlog-log-slower-than": "10000", "slowlog-max-len": "128"}}, r.config_get("slowlog*")
# What tools plan around: nothing is evicted, one database; anything else is not Redis's to say.
assert r.config_get("maxmemory*") == {{"maxmemory": "0", "maxmemory-policy": "noeviction"}}, r.config_get("maxmemory*")
assert r.config_get("databases") == {{"databases": "1"}}
assert r.info("memory")["maxmemory_policy"] == "noeviction"
# Every acknowledged write is durably in the log (redis-benchmark reads these two).
assert r.config_get("appendonly") == {{"appendonly": "yes"}}, r.config_get("appendonly")
assert r.config_get("save") == {{"save": ""}}, r.config_get("save")
assert r.config_get("appendfilename") == {{}}
try:
    r.config_set("appendonly", "no")
    raise SystemExit("appendonly no was taken")
except redis.ResponseError as e:
    assert "durably in the log" in str(e), e
try:
    r.config_set("maxmemory-policy", "allkeys-lru")
    raise SystemExit("an eviction policy was taken")
except redis.ResponseError as e:
    assert "nothing is evicted" in str(e), e
# Commands under the threshold are not kept: 1 s here, which no command of this script nears
# however loaded the machine (at 10 ms, CI's load once pushed the `INFO memory` above past it).
assert r.config_set("slowlog-log-slower-than", 1000000) and r.slowlog_reset()
r.set("k", "v"); r.get("k")
assert r.slowlog_len() == 0, r.slowlog_get()
# Everything from here on; this connection named.
assert r.config_set("slowlog-log-slower-than", 0)
r.client_setname("worker-7")
r.hset("h", mapping={{"a": "x" * 300}})
r.get("k")
entries = r.slowlog_get(3)
text = lambda b: b.decode() if isinstance(b, bytes) else b
assert [text(e["command"]) for e in entries] == ["GET k", "HSET h a " + "x" * 128 + "... (172 more bytes)", "CLIENT SETNAME worker-7"], entries
assert entries[0]["id"] > entries[1]["id"] > entries[2]["id"]
assert all(text(e["client_name"]) == "worker-7" for e in entries), entries
# CLIENT INFO is this connection's CLIENT LIST line.
me = r.client_info()
assert me["name"] == "worker-7" and me["cmd"] == "client|info" and me["laddr"].endswith(":{port}"), me
assert text(entries[0]["client_address"]) == me["addr"], (entries, me)
assert r.client_no_evict("on") and r.execute_command("CLIENT", "NO-TOUCH", "off")
assert all(e["duration"] >= 0 and e["start_time"] > 1_700_000_000 for e in entries), entries
# Bounded, and off.
assert r.config_set("slowlog-max-len", 2)
assert r.slowlog_len() == 2
assert r.config_set("slowlog-log-slower-than", -1)
assert r.slowlog_reset()
r.get("k")
assert r.slowlog_len() == 0
try:
    r.config_set("slowlog-max-len", "many")
    raise SystemExit("a bad value was taken")
except redis.ResponseError as e:
    assert "slowlog-max-len" in str(e), e
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
    // redis-cli prints it as redis-server's.
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &node.resp.to_string(), "SLOWLOG", "HELP"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("GET [<count>]"),
        "{out:?}"
    );
    // redis-benchmark reads `save` and `appendonly` before it starts, and warns when it cannot.
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &node.resp.to_string(),
            "-t",
            "ping",
            "-n",
            "200",
            "-q",
        ])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.contains("PING"),
        "{printed}"
    );
    assert!(
        !printed.contains("Could not fetch server CONFIG"),
        "{printed}"
    );
}

#[test]
fn monitor_streams_commands_as_redis_py_parses_them_and_drops_a_monitor_that_falls_behind() {
    let node = Node::start();
    let script = format!(
        r#"
import json, redis, urllib.request
r = redis.Redis(port={port}, decode_responses=True)
other = redis.Redis(port={port}, decode_responses=True)
other.ping()
with r.monitor() as m:
    other.set("k", 'a "b"')
    pipe = other.pipeline(transaction=True)
    pipe.set("x", 1)
    pipe.incr("x")
    pipe.execute()
    other.config_get("slowlog*")
    # An HTTP write is not a Redis command: not shown.
    urllib.request.urlopen(urllib.request.Request(
        "http://127.0.0.1:{api}/records/put",
        data=json.dumps({{"Records": [{{"pk": "h", "sk": "s", "data": 1}}]}}).encode())).read()
    other.get("last")
    seen = []
    while not seen or seen[-1] != "GET last":
        c = m.next_command()
        assert c["client_address"] == "127.0.0.1" and c["db"] == 0, c
        seen.append(c["command"])
want = ['SET k a "b"', "MULTI", "SET x 1", "INCRBY x 1", "EXEC", "GET last"]
got = [s.replace('\\"', '"') for s in seen if not s.startswith(("CLIENT", "PING", "HELLO"))]
assert got == want, (got, seen)
print("ok")
"#,
        port = node.resp,
        api = node.api
    );
    run_redis_py(&script);

    // A monitor that reads nothing while 10k commands run (lines of ~16 KiB, the longest a
    // line gets: 31 keys shortened to 128 bytes, each escaped to four characters. More than
    // the socket buffers, the 32 MiB a connection holds for a client that does not read and
    // the 4,096 lines of backlog) falls behind and is disconnected with an error, and the
    // commands themselves never waited for it.
    let mut monitor = std::net::TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    monitor.write_all(b"MONITOR\r\n").unwrap();
    let mut ok = [0u8; 5];
    monitor.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let mut con = client(&node, false);
    let key = "\u{1}".repeat(200);
    let mut pipe = redis::pipe();
    for _ in 0..10_000 {
        pipe.cmd("EXISTS").arg(vec![key.as_str(); 31]).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    monitor.read_to_end(&mut seen).unwrap();
    let tail = String::from_utf8_lossy(&seen[seen.len().saturating_sub(300)..]).into_owned();
    assert!(tail.contains("-ERR MONITOR fell"), "{tail}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_pipeline_whose_commands_and_replies_outgrow_the_socket_buffers_completes() {
    // redis-py writes the whole pipeline before it reads a reply: 20 MB of ECHOs, 20 MB back.
    // A node that stopped reading once its replies filled the socket deadlocked with it.
    let node = Node::start();
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port}, socket_timeout=60)
pipe = r.pipeline(transaction=False)
for i in range(20000):
    pipe.echo(b"%05d" % i + b"x" * 1000)
out = pipe.execute()
assert len(out) == 20000 and out[12345] == b"12345" + b"x" * 1000
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

#[test]
fn commands_past_the_record_limit_get_its_error_and_the_connection_stays_open() {
    // Past MAX_RECORDS_PER_REQUEST: MGET of 100k keys, HSET of 100k fields (redis-py's
    // mapping=), DEL of 5,000 keys. They got a protocol error and a closed connection (redis-py
    // saw "Connection reset by peer" in the middle of writing); now each gets the limit's error.
    let node = Node::start();
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port})
def refused(call):
    try:
        call()
    except redis.ResponseError as e:
        assert "MAX_RECORDS_PER_REQUEST" in str(e) and "split" in str(e), e
        return
    raise SystemExit("not refused")
refused(lambda: r.mget([f"k{{i}}" for i in range(100000)]))
refused(lambda: r.hset("h", mapping={{f"f{{i}}": "v" for i in range(100000)}}))
refused(lambda: r.delete(*[f"k{{i}}" for i in range(5000)]))
assert r.ping()
assert len(r.mget([f"k{{i}}" for i in range(1000)])) == 1000
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

#[test]
fn a_value_over_max_body_bytes_is_answered_and_the_connection_goes_on() {
    // The node used to close the connection at the oversized header; a client still sending
    // the value saw "Broken pipe", never the reason. Now the value is read past and answered.
    let node = Node::start_with(&[("MAX_BODY_BYTES", "65536")]);
    let script = format!(
        r#"
import redis
r = redis.Redis(port={port})
big = b"x" * 3_000_000
try:
    r.set("k", big)
    raise SystemExit("taken")
except redis.ResponseError as e:
    assert "MAX_BODY_BYTES" in str(e) and "not run" in str(e), e
assert r.ping() and r.get("k") is None
# In a transaction it makes EXEC refuse the whole, as any command refused while queuing does.
pipe = r.pipeline(transaction=True)
pipe.set("a", 1)
pipe.set("b", big)
try:
    pipe.execute()
    raise SystemExit("a transaction with a refused command ran")
except redis.ResponseError as e:
    assert "EXECABORT" in str(e) or "MAX_BODY_BYTES" in str(e), e
assert r.get("a") is None
r.set("after", "ok")
assert r.get("after") == b"ok"
print("ok")
"#,
        port = node.resp
    );
    run_redis_py(&script);
}

#[test]
fn wait_on_a_node_without_a_region_counts_no_other_copies_and_checks_its_arguments() {
    let node = Node::start();
    let mut con = client(&node, false);
    let _: () = con.set("k", "v").unwrap();
    let answer = |con: &mut redis::Connection, args: &[&str]| -> String {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        match cmd.query::<redis::Value>(con) {
            Ok(value) => format!("{value:?}"),
            Err(e) => format!("error {}", e.detail().unwrap_or_default()),
        }
    };
    assert_eq!(answer(&mut con, &["WAIT", "0", "0"]), "int(0)");
    assert_eq!(answer(&mut con, &["WAIT", "1", "100"]), "int(0)");
    // A timeout no clock can hold is no limit, not a crash.
    let forever = i64::MAX.to_string();
    assert_eq!(answer(&mut con, &["WAIT", "0", &forever]), "int(0)");
    assert_eq!(
        answer(&mut con, &["WAITAOF", "1", "0", "0"]),
        "array([int(1), int(0)])"
    );
    for (args, error) in [
        (&["WAIT", "-1", "0"][..], "out of range"),
        (&["WAIT", "1", "-5"], "timeout is negative"),
        (&["WAIT", "1", "soon"], "not an integer"),
        (&["WAITAOF", "2", "0", "0"], "numlocal"),
        (&["WAIT", "1"], "wrong number of arguments"),
    ] {
        let got = answer(&mut con, args);
        assert!(got.contains(error), "{args:?}: {got}");
    }
}

#[test]
fn command_lists_every_command_it_runs_described_as_redis_server_describes_it() {
    // COMMAND was a hand-kept list that drifted from what the node runs (the set commands were
    // missing) and described commands by name and arity only. Tools read it: redis-cli, GUIs,
    // cluster-aware clients looking for a command's keys.
    let node = Node::start();
    let server = crate::expiry::RedisServer::start();
    let connect = |port: u16| {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap()
    };
    let (mut ours, mut theirs) = (connect(node.resp), connect(server.port));
    let list = |con: &mut redis::Connection| -> Vec<String> {
        redis::cmd("COMMAND").arg("LIST").query(con).unwrap()
    };
    let listed = list(&mut ours);
    let mut names = list(&mut theirs);
    // What redis-server 7.0 lacks: Redis 7.4's and 8's hash field expiry, RedisJSON's commands.
    for newer in [
        "hexpire",
        "hpexpire",
        "hexpireat",
        "hpexpireat",
        "hpersist",
        "httl",
        "hpttl",
        "hexpiretime",
        "hpexpiretime",
        "hsetex",
        "hgetex",
        "hgetdel",
        "waitaof",
        "json.set",
        "json.get",
        "json.del",
        "json.forget",
    ] {
        names.push(newer.to_string());
    }
    assert!(names.len() > 200, "{names:?}");
    // Whatever the node runs is listed, and whatever is listed runs: each name sent alone on
    // a connection of its own (some switch the connection's mode, QUIT closes it).
    for name in &names {
        let reply = redis::cmd(name).query::<RedisValue>(&mut connect(node.resp));
        let unknown = reply
            .as_ref()
            .is_err_and(|e| e.to_string().contains("unknown command"));
        assert_eq!(
            !unknown,
            listed.contains(name),
            "{name}: runs (or not) but COMMAND lists it (or not): {reply:?}"
        );
    }
    assert_eq!(
        redis::cmd("COMMAND")
            .arg("COUNT")
            .query::<usize>(&mut ours)
            .unwrap(),
        listed.len()
    );
    // Each listed command redis-server has is described as redis-server describes it: arity,
    // flags, first key, last key, step, ACL categories.
    let mut compared = 0;
    for name in &listed {
        let info = |con: &mut redis::Connection| -> RedisValue {
            let reply: Vec<RedisValue> = redis::cmd("COMMAND")
                .arg("INFO")
                .arg(name)
                .query(con)
                .unwrap();
            reply.into_iter().next().unwrap()
        };
        let (mine, reference) = (info(&mut ours), info(&mut theirs));
        let RedisValue::Array(reference) = reference else {
            continue;
        };
        let RedisValue::Array(mine) = mine else {
            panic!("{name}: COMMAND INFO answers {mine:?}");
        };
        assert_eq!(mine.len(), reference.len(), "{name}: {mine:?}");
        assert_eq!(mine[..7], reference[..7], "{name}");
        compared += 1;
    }
    assert!(compared > 80, "{compared}");
    // GETKEYS finds a command's keys as redis-server does.
    for command in [
        &["MSET", "a", "1", "b", "2"][..],
        &["GET", "k"],
        &["SINTERCARD", "2", "x", "y", "LIMIT", "3"],
        &["HSET", "h", "f", "v"],
    ] {
        let keys = |con: &mut redis::Connection| -> Vec<String> {
            redis::cmd("COMMAND")
                .arg("GETKEYS")
                .arg(command)
                .query(con)
                .unwrap()
        };
        assert_eq!(keys(&mut ours), keys(&mut theirs), "{command:?}");
    }
}

/// What the server at `port` sends for `command` (inline) after `HELLO proto`, read until it
/// has been quiet for 300 ms.
fn raw_after_hello(port: u16, proto: u8, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream
        .write_all(format!("HELLO {proto}\r\n{command}\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The type byte of the frame that carries `text` (the first of `text` in `reply`).
fn frame_type_before(reply: &str, text: &str) -> Option<char> {
    let at = reply.find(text)?;
    let head = &reply[..at];
    // The frame's header is the line before: `<type><length>\r\n`.
    let line_start = head
        .trim_end_matches("\r\n")
        .rfind("\r\n")
        .map_or(0, |i| i + 2);
    head[line_start..].chars().next()
}

#[test]
fn resp3_frame_types_are_the_ones_redis_server_sends() {
    // Text for people is a verbatim string, COMMAND's lists are sets (RESP2: bulk, arrays).
    let node = Node::start();
    let server = crate::expiry::RedisServer::start();
    for (command, text, resp3, resp2) in [
        ("INFO server", "# Server", '=', '$'),
        ("CLIENT INFO", "id=", '=', '$'),
        ("CLIENT LIST", "id=", '=', '$'),
        ("COMMAND INFO get", "+readonly", '~', '*'),
        ("COMMAND INFO get", "+@read", '~', '*'),
    ] {
        for port in [server.port, node.resp] {
            let got3 = raw_after_hello(port, 3, command);
            let in3 = if resp3 == '=' {
                format!("txt:{text}")
            } else {
                text.to_string()
            };
            assert_eq!(
                frame_type_before(&got3, &in3),
                Some(resp3),
                "{command} on {port}: {got3:?}"
            );
            let got2 = raw_after_hello(port, 2, command);
            assert_eq!(
                frame_type_before(&got2, text),
                Some(resp2),
                "{command} on {port}: {got2:?}"
            );
        }
    }
}
