//! `firescroll copy`: a namespace copied into one with twice the partitions through the HTTP
//! APIs — records of every kind Redis and HTTP write, deadlines kept — then the changes made on
//! the source followed until stopped, and resumed from the positions it printed. With tokens on
//! both sides and a TLS target.

use crate::common;

use common::{BIN, Node};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every record of a node as (pk, sk, data, deadline), through its scan.
/// Every record of `node`: pk, sk, data, and its deadline and whose it is.
fn contents(node: &Node) -> BTreeSet<(String, String, String, String)> {
    let mut records = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"limit": 300});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, page) = node.post("/records/scan", body);
        assert_eq!(status, 200, "{page}");
        for r in page["Records"].as_array().unwrap() {
            let fresh = records.insert((
                r["Pk"].as_str().unwrap().to_string(),
                r["Sk"].as_str().unwrap().to_string(),
                r["Data"].to_string(),
                format!("{} own: {}", r["ExpiresAt"], r["OwnTtl"]),
            ));
            assert!(fresh, "a record came twice: {r}");
        }
        match page["NextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return records,
        }
    }
}

/// Whether the target holds exactly the source's records; the first differences when not.
fn differences(source: &Node, target: &Node) -> Vec<String> {
    let (want, got) = (contents(source), contents(target));
    let missing = want
        .difference(&got)
        .map(|r| format!("missing or stale: {r:?}"));
    let extra = got
        .difference(&want)
        .map(|r| format!("not in the source: {r:?}"));
    missing.chain(extra).take(10).collect()
}

fn copy(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("copy")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `firescroll copy` from `source`'s Redis port into `target` over HTTP.
fn copy_from_redis_port(source: &Node, target: &Node) -> (bool, String, String) {
    copy(
        &[
            "--from",
            &format!("redis://127.0.0.1:{}", source.resp),
            "--to",
            &format!("http://127.0.0.1:{}", target.api),
        ],
        &[],
    )
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis(node: &Node) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn a_namespace_is_copied_into_one_with_more_partitions_then_followed_and_resumed() {
    let source = Node::start();
    let target = Node::start_with(&[("PARTITIONS", "8")]);
    // HTTP records over many pks, keys of every shape, JSON of every type.
    let mut records = Vec::new();
    for i in 0..400 {
        let pk = match i % 4 {
            0 => format!("flags.{i}"),
            1 => format!("nul\u{0}{i}"),
            2 => format!("clé-{i}-✓"),
            _ => format!("svc/{i}"),
        };
        for j in 0..(i % 6 + 1) {
            let data = match j % 4 {
                0 => json!({"on": i % 2 == 0, "rollout": [i, j]}),
                1 => json!(format!("v{i}")),
                2 => json!(i * 1000 + j),
                _ => json!(null),
            };
            records.push(json!({"pk": pk, "sk": format!("s{j}"), "data": data}));
        }
    }
    for chunk in records.chunks(500) {
        let (status, body) = source.post("/records/put", json!({"Records": chunk}));
        assert_eq!(status, 200, "{body}");
    }
    // Redis's kinds: a hash, a set, bytes that are not UTF-8, a deadline, a JSON document.
    let mut con = redis(&source);
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg(&["a", "1", "b", "2"])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("allow")
        .arg(&["10.0.0.1", "10.0.0.2"])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("bin")
        .arg(&[0u8, 0xff, 1][..])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("session")
        .arg("x")
        .arg("EX")
        .arg(3600)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("JSON.SET")
        .arg("doc")
        .arg("$")
        .arg(r#"{"a":[1,2]}"#)
        .query(&mut con)
        .unwrap();

    let from = format!("http://127.0.0.1:{}", source.api);
    let to = format!("http://127.0.0.1:{}", target.api);
    // The copy runs while the source keeps changing: records it has passed, records ahead of
    // it, new keys, deletes. Small pages make the scan long.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), source.url("/records/put"));
        let delete_url = source.url("/records/delete");
        let client = source.client().clone();
        let (started, running) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"Records": [
                    {"pk": format!("svc/{}", (i * 4 + 3) % 400), "sk": "s0", "data": {"moved": i}},
                    {"pk": format!("fresh{i}"), "sk": "", "data": i},
                ]});
                let put = client.post(&url).body(body.to_string()).send().unwrap();
                assert_eq!(put.status().as_u16(), 200);
                let gone =
                    json!({"Records": [{"pk": format!("flags.{}", (i * 4) % 400), "sk": "s1"}]});
                let delete = client
                    .post(&delete_url)
                    .body(gone.to_string())
                    .send()
                    .unwrap();
                assert_eq!(delete.status().as_u16(), 200);
                i += 1;
                let _ = started.send(());
            }
            i
        });
        // The source changes from before the copy starts until after it ends.
        running.recv().unwrap();
        thread
    };
    let (ok, positions, stderr) = copy(&["--from", &from, "--to", &to, "--page", "37"], &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = writer.join().unwrap();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("copied"), "{stderr}");
    assert!(
        changes > 3,
        "the source changed during the copy ({changes} rounds)"
    );
    // What changed after the copy took its end positions comes with a resume from the
    // positions it printed: then nothing is missing or stale.
    let (ok, positions, stderr) =
        copy(&["--from", &from, "--to", &to, "--resume", &positions], &[]);
    assert!(ok, "{stderr}");
    let expected = contents(&source);
    assert!(expected.len() > 1400, "{}", expected.len());
    assert_eq!(
        differences(&source, &target),
        Vec::<String>::new(),
        "the same records, deadlines included"
    );
    // Spread over the target's eight partitions, and read back by a Redis client.
    let spread = target
        .partitions()
        .iter()
        .filter(|p| p["records"].as_u64().is_some_and(|n| n > 0))
        .count();
    assert_eq!(
        (target.partitions().len(), spread),
        (8, 8),
        "{:?}",
        target.partitions()
    );
    let mut tcon = redis(&target);
    let bytes: Vec<u8> = redis::cmd("GET").arg("bin").query(&mut tcon).unwrap();
    assert_eq!(bytes, vec![0u8, 0xff, 1]);
    let ttl: i64 = redis::cmd("TTL").arg("session").query(&mut tcon).unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    let members: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg("allow")
        .query(&mut tcon)
        .unwrap();
    assert_eq!(members.len(), 2);

    // Following from the printed positions: changes made on the source reach the target.
    let mut follow = Command::new(BIN)
        .args([
            "copy", "--from", &from, "--to", &to, "--follow", "--resume", &positions,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("live")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("h")
        .arg("a")
        .arg("changed")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SREM")
        .arg("allow")
        .arg("10.0.0.1")
        .query(&mut con)
        .unwrap();
    let (status, _) = source.post(
        "/records/delete",
        json!({"Records": [{"pk": "flags.0", "sk": "s0"}]}),
    );
    assert_eq!(status, 200);
    // The same key changed twice in a row: the last write wins on the target too.
    for v in ["first", "second", "third"] {
        let _: () = redis::cmd("SET")
            .arg("flip")
            .arg(v)
            .query(&mut con)
            .unwrap();
    }
    wait_for("the changes on the target", || {
        differences(&source, &target).is_empty()
    });
    let flip: String = redis::cmd("GET").arg("flip").query(&mut tcon).unwrap();
    assert_eq!(flip, "third");
    let status = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = follow.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "copy --follow ignored SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(follow.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(exit.success(), "{out}");
    let followed = out.trim().to_string();
    assert_ne!(followed, positions, "it moved on");

    // A change while no copy runs: `--resume` from where the follow stopped catches it up.
    let _: () = redis::cmd("SET")
        .arg("later")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to, "--resume", &followed], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(differences(&source, &target), Vec::<String>::new());
}

#[test]
fn a_copy_whose_last_source_entries_were_rejected_writes_ends_without_waiting_for_a_tick() {
    // No bookmark tick while the test runs: the copy must learn from the watch's replay that it
    // passed the rejected writes (they change nothing, so no change event carries them).
    let source = Node::start_with(&[("WATCH_BOOKMARK_MS", "600000")]);
    let target = Node::start();
    let put = |body: serde_json::Value| {
        let (status, reply) = source.post("/records/put", body);
        assert!(status < 500, "{reply}");
        reply["Positions"][0]["Offset"].as_u64().unwrap()
    };
    put(json!({"Records": [{"pk": "cfg", "sk": "a", "data": 1}], "wait": true}));
    let (_, _, from) = source.post_with_token(
        "/records/get",
        &json!({"Records": [{"pk": "cfg", "sk": "a"}]}),
    );
    put(json!({"Records": [{"pk": "cfg", "sk": "b", "data": 2}], "wait": true}));
    let mut last = 0;
    for _ in 0..3 {
        last = put(json!({"Records": [{"pk": "cfg", "sk": "a", "data": 3,
                                        "if": "data == null"}], "wait": true}));
    }
    let mut child = Command::new(BIN)
        .args([
            "copy",
            "--from",
            &format!("http://127.0.0.1:{}", source.api),
        ])
        .args(["--to", &format!("http://127.0.0.1:{}", target.api)])
        .args(["--resume", &from])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the copy still waits for the source's end position after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, got) = target.post(
        "/records/get",
        json!({"Records": [{"pk": "cfg", "sk": "b"}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!(2), "{got}");
    // The positions it printed are past the rejected writes.
    let reached: u64 = stdout.trim().split(':').nth(1).unwrap().parse().unwrap();
    assert!(reached > last, "{stdout} is past {last}");
}

#[test]
fn copy_with_tokens_to_a_tls_target_and_errors_that_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new(dir.path(), "ca");
    let (cert, key) = crate::tls::install(dir.path(), &ca.sign(false));
    let source = Node::start_with(&[("READ_TOKENS", "reader"), ("WRITE_TOKENS", "writer")]);
    let target = Node::start_with(&[
        ("WRITE_TOKENS", "target-writer"),
        ("TLS_CERT_PATH", &cert),
        ("TLS_KEY_PATH", &key),
    ]);
    let response = source
        .client()
        .post(source.url("/records/put"))
        .bearer_auth("writer")
        .body(json!({"Records": [{"pk": "cfg", "sk": "a", "data": 1}]}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let from = format!("http://127.0.0.1:{}", source.api);
    let to = format!("https://localhost:{}", target.api);

    // Without the source's token: its 401, naming which side.
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to, "--cacert", ca.path()], &[]);
    assert!(
        !ok && stderr.contains("--from") && stderr.contains("401"),
        "{stderr}"
    );
    // Without trusting the target's CA: the TLS failure, naming which side.
    let auth = [
        ("COPY_FROM_AUTH", "reader"),
        ("COPY_TO_AUTH", "target-writer"),
    ];
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to], &auth);
    assert!(!ok && stderr.contains("--to"), "{stderr}");
    assert!(
        !stderr.contains("trying again"),
        "a certificate not trusted is not worth asking again: {stderr}"
    );
    // A machine without a CA store (a slim container) still copies between http:// nodes
    // (here the source into itself: whole puts change nothing).
    let empty = dir.path().join("no-cas.pem");
    std::fs::write(&empty, "").unwrap();
    let (ok, _, stderr) = copy(
        &["--from", &from, "--to", &from],
        &[
            ("COPY_FROM_AUTH", "reader"),
            ("COPY_TO_AUTH", "writer"),
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
            (
                "SSL_CERT_DIR",
                dir.path().join("no-such-dir").to_str().unwrap(),
            ),
        ],
    );
    assert!(ok, "{stderr}");
    // Not an address.
    let (ok, _, stderr) = copy(&["--from", "localhost:1", "--to", &to], &auth);
    assert!(!ok && stderr.contains("http://host:8190"), "{stderr}");

    let (ok, positions, stderr) = copy(
        &["--from", &from, "--to", &to, "--cacert", ca.path()],
        &auth,
    );
    assert!(ok, "{stderr}");
    assert!(positions.contains(':'), "{positions}");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            ca.path(),
            "-H",
            "Authorization: Bearer target-writer",
        ])
        .arg(format!("https://localhost:{}/records/get", target.api))
        .args(["-d", r#"{"Records":[{"pk":"cfg","sk":"a"}]}"#])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains(r#""Data":1"#), "{body}");
}

#[test]
fn a_redis_servers_strings_hashes_and_sets_are_copied_and_read_back_alike() {
    let server = crate::expiry::RedisServer::start();
    let node = Node::start();
    let mut from = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port))
        .unwrap()
        .get_connection()
        .unwrap();
    // Config as Redis users keep it: flags and settings as strings (JSON-looking text too),
    // hashes, allowlists as sets, bytes that are not UTF-8 as keys, fields and values, a
    // deadline; enough keys for SCAN to take many pages. And a list and a sorted set, which
    // FireScroll does not store.
    let mut pipe = redis::pipe();
    for i in 0..1200 {
        pipe.cmd("SET")
            .arg(format!("flag:{i}"))
            .arg(if i % 2 == 0 { "on" } else { "off" });
    }
    pipe.cmd("SET").arg("json").arg(r#"{"a": 1, "b": [true]}"#);
    pipe.cmd("SET").arg("bin").arg(&[0u8, 0xff, 0x80][..]);
    pipe.cmd("SET").arg(&[0xfeu8, 0x01][..]).arg("binary key");
    pipe.cmd("HSET")
        .arg("limits")
        .arg(&["rps", "10", "burst", "20"]);
    pipe.cmd("HSET")
        .arg("limits")
        .arg(&[0xffu8][..])
        .arg(&[0xc3u8, 0x28][..]);
    pipe.cmd("SADD")
        .arg("allow")
        .arg(&["10.0.0.1", "10.0.0.2", "2001:db8::1"]);
    pipe.cmd("SET").arg("session").arg("x").arg("EX").arg(3600);
    pipe.cmd("EXPIRE").arg("limits").arg(1800);
    pipe.cmd("RPUSH").arg("queue").arg(&["a", "b"]);
    pipe.cmd("ZADD").arg("board").arg(1).arg("a");
    let _: () = pipe.query(&mut from).unwrap();

    let (ok, out, stderr) = copy(
        &[
            "--from",
            &format!("redis://127.0.0.1:{}/0", server.port),
            "--to",
            &format!("http://127.0.0.1:{}", node.api),
            "--page",
            "100",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(out.is_empty(), "no positions to resume from: {out}");
    assert!(
        stderr.contains("copied 1206 keys")
            && stderr.contains("1 list")
            && stderr.contains("1 zset"),
        "{stderr}"
    );

    // Every Redis read answers on FireScroll what it answers on redis-server.
    let mut to = redis(&node);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut from).unwrap();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut from).unwrap();
        let read = match kind.as_str() {
            "string" => "GET",
            "hash" => "HGETALL",
            "set" => "SMEMBERS",
            _ => continue,
        };
        let answer = |con: &mut redis::Connection| {
            let value: redis::Value = redis::cmd(read).arg(&key).query(con).unwrap();
            let items = match value {
                redis::Value::Array(items) | redis::Value::Set(items) => items,
                other => vec![other],
            };
            // Members and fields in any order (FireScroll answers in sk order, Redis as stored).
            let mut entries: Vec<String> = match read {
                "HGETALL" => items.chunks(2).map(|pair| format!("{pair:?}")).collect(),
                _ => items.iter().map(|item| format!("{item:?}")).collect(),
            };
            entries.sort();
            entries
        };
        assert_eq!(answer(&mut to), answer(&mut from), "{read} {key:?}");
        let kind_there: String = redis::cmd("TYPE").arg(&key).query(&mut to).unwrap();
        assert_eq!(kind_there, kind, "TYPE {key:?}");
    }
    for (key, max) in [("session", 3600), ("limits", 1800)] {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut to).unwrap();
        assert!((max - 100..=max).contains(&ttl), "TTL {key}: {ttl}");
    }
    let size: i64 = redis::cmd("DBSIZE").query(&mut to).unwrap();
    assert_eq!(size, 1206);
    // Over HTTP the JSON-looking string is the text it was (Redis values are bytes).
    let (_, body) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "json", "sk": ""}]}),
    );
    assert_eq!(
        body["Records"][0]["Data"],
        json!(r#"{"a": 1, "b": [true]}"#)
    );

    // A Redis source has nothing to follow.
    let (ok, _, stderr) = copy(
        &[
            "--from",
            &format!("redis://127.0.0.1:{}", server.port),
            "--to",
            &format!("http://127.0.0.1:{}", node.api),
            "--follow",
        ],
        &[],
    );
    assert!(!ok && stderr.contains("no change feed"), "{stderr}");
}

/// RedisJSON documents (`TYPE` `ReJSON-RL`: a FireScroll node's documents, Redis Stack's) are
/// copied as documents, and strings that look like JSON stay strings.
#[test]
fn documents_are_copied_as_documents_from_a_redis_port() {
    let source = Node::start();
    let target = Node::start();
    let (status, body) = source.post(
        "/records/put",
        json!({"Records": [
            {"pk": "cfg", "sk": "", "data": {"a": [1, {"b": null}], "on": true}},
            {"pk": "port", "sk": "", "data": 8080},
            {"pk": "flag", "sk": "", "data": false},
            {"pk": "text", "sk": "", "data": "{\"looks\": \"like json\"}"},
        ], "wait": true}),
    );
    assert_eq!(status, 200, "{body}");
    let mut con = redis(&source);
    let _: () = redis::cmd("JSON.SET")
        .arg("list")
        .arg("$")
        .arg("[1, 2.5, \"x\"]")
        .query(&mut con)
        .unwrap();
    let (ok, stdout, stderr) = copy_from_redis_port(&source, &target);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("not copied"), "{stdout}");
    assert_eq!(differences(&source, &target), Vec::<String>::new());
}

#[test]
fn hash_fields_with_deadlines_of_their_own_keep_them() {
    // Redis 7.4's HEXPIRE gives fields deadlines apart from their key's. This machine's
    // redis-server (7.0) has none, so the source is a FireScroll node's Redis port, which
    // answers HPTTL as 7.4 does (redis-server 7.0, without it, is the test above).
    let source = Node::start();
    let target = Node::start();
    let mut con = redis(&source);
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("EXPIRE")
        .arg("h")
        .arg(3600)
        .query(&mut con)
        .unwrap();
    let _: Vec<i64> = redis::cmd("HEXPIRE")
        .arg("h")
        .arg(600)
        .arg("FIELDS")
        .arg(1)
        .arg("a")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("plain")
        .arg("f")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let (ok, _, stderr) = copy_from_redis_port(&source, &target);
    assert!(ok, "{stderr}");
    let mut to = redis(&target);
    let ttls: Vec<i64> = redis::cmd("HTTL")
        .arg("h")
        .arg("FIELDS")
        .arg(3)
        .arg(&["a", "b", "c"])
        .query(&mut to)
        .unwrap();
    // a's TTL is its own; b and c live as their key, whose TTL came along (HTTL answers a
    // field's own alone, as Redis 7.4's does).
    assert!(
        (500..=600).contains(&ttls[0]) && ttls[1..] == [-1, -1],
        "{ttls:?}"
    );
    let key_ttl =
        |con: &mut redis::Connection| -> i64 { redis::cmd("TTL").arg("h").query(con).unwrap() };
    assert!((3500..=3600).contains(&key_ttl(&mut to)));
    let plain: Vec<i64> = redis::cmd("HTTL")
        .arg("plain")
        .arg("FIELDS")
        .arg(1)
        .arg("f")
        .query(&mut to)
        .unwrap();
    assert_eq!(plain, [-1]);
    // a's deadline is its own there too: a field added takes the key's, not a's (which sorts
    // first), so the key still has a TTL (-1 if a field without its own had none).
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("0")
        .arg("new")
        .query(&mut to)
        .unwrap();
    let added: Vec<i64> = redis::cmd("HTTL")
        .arg("h")
        .arg("FIELDS")
        .arg(1)
        .arg("0")
        .query(&mut to)
        .unwrap();
    assert_eq!(added, [-1]);
    assert!((3500..=3600).contains(&key_ttl(&mut to)));
    // And from that node to another over HTTP: the same records, deadlines and whose they are.
    let again = Node::start();
    let (ok, _, stderr) = copy(
        &[
            "--from",
            &format!("http://127.0.0.1:{}", target.api),
            "--to",
            &format!("http://127.0.0.1:{}", again.api),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(differences(&target, &again), Vec::<String>::new());
    let owned = contents(&again)
        .into_iter()
        .filter(|r| r.3.ends_with("own: true"))
        .map(|r| (r.0, r.1))
        .collect::<Vec<_>>();
    assert_eq!(owned, [("h".to_string(), "a".to_string())]);
}

#[test]
fn a_redis_server_behind_tls_and_a_password_is_copied_with_the_ca_given() {
    // What a managed Redis asks of its clients: TLS (rediss://) and AUTH.
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new(dir.path(), "ca");
    let (cert, key) = crate::tls::install(dir.path(), &ca.sign(false));
    let server = crate::expiry::RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        ca.path(),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret",
    ]);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                ca.path(),
                "-p",
                &server.port.to_string(),
            ])
            .args(["-a", "s3cret", "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    cli(&["SET", "flag", "on"]);
    cli(&["HSET", "limits", "rps", "100", "burst", "20"]);
    cli(&["SADD", "allow", "10.0.0.1"]);
    let node = Node::start();
    let to = format!("http://127.0.0.1:{}", node.api);
    let from = format!("rediss://:s3cret@localhost:{}", server.port);
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to, "--cacert", ca.path()], &[]);
    assert!(ok && stderr.contains("copied 3 keys"), "{stderr}");
    let mut con = redis(&node);
    let flag: String = redis::cmd("GET").arg("flag").query(&mut con).unwrap();
    let burst: String = redis::cmd("HGET")
        .arg("limits")
        .arg("burst")
        .query(&mut con)
        .unwrap();
    let member: bool = redis::cmd("SISMEMBER")
        .arg("allow")
        .arg("10.0.0.1")
        .query(&mut con)
        .unwrap();
    assert_eq!((flag.as_str(), burst.as_str(), member), ("on", "20", true));
    // Without the CA the server's certificate is not trusted, and the error says so; plain
    // redis:// to a TLS port, and a wrong password, fail saying which side.
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to], &[]);
    assert!(!ok && stderr.contains("--from rediss://"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let plain = format!("redis://:s3cret@localhost:{}", server.port);
    let (ok, _, stderr) = copy(&["--from", &plain, "--to", &to], &[]);
    assert!(!ok && stderr.contains("--from redis://"), "{stderr}");
    let wrong = format!("rediss://:nope@localhost:{}", server.port);
    let (ok, _, stderr) = copy(&["--from", &wrong, "--to", &to, "--cacert", ca.path()], &[]);
    assert!(!ok && stderr.contains("--from rediss://:***@"), "{stderr}");
    assert!(
        !stderr.contains("nope"),
        "the password stays out of messages: {stderr}"
    );
    // rediss:// to a plaintext server: the handshake gets no answer, and the copy gives up
    // instead of waiting forever.
    let plain_server = crate::expiry::RedisServer::start();
    let tls_to_plain = format!("rediss://localhost:{}", plain_server.port);
    let (ok, _, stderr) = copy(
        &["--from", &tls_to_plain, "--to", &to, "--cacert", ca.path()],
        &[],
    );
    assert!(!ok && stderr.contains("no answer within"), "{stderr}");
}

#[test]
fn a_copy_rides_out_restarts_of_either_side_and_prints_where_it_stopped_when_it_gives_up() {
    let mut source = Node::start();
    let mut target = Node::start_with(&[("PARTITIONS", "8")]);
    let put = |node: &Node, from: usize, to: usize| {
        let records: Vec<_> = (from..to)
            .map(|i| json!({"pk": format!("k{i}"), "sk": "", "data": i}))
            .collect();
        let (status, body) = node.post("/records/put", json!({"Records": records}));
        assert_eq!(status, 200, "{body}");
    };
    put(&source, 0, 50);
    let from = format!("http://127.0.0.1:{}", source.api);
    let to = format!("http://127.0.0.1:{}", target.api);
    let mut follow = Command::new(BIN)
        .args(["copy", "--from", &from, "--to", &to, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the scan's records on the target", || {
        contents(&target).len() == 50
    });
    // The source restarts (a deploy): the copy waits for it and goes on watching (from the
    // history the source saved when it stopped; caught up first, so the positions it resumes
    // from are the newest).
    put(&source, 50, 60);
    wait_for("the copy to catch up", || {
        differences(&source, &target).is_empty()
    });
    source.terminate();
    source.spawn();
    put(&source, 60, 70);
    // And the target restarts: the writes are sent again once it answers.
    target.terminate();
    put(&source, 70, 80);
    target.spawn();
    wait_for("every change on the target", || {
        differences(&source, &target).is_empty()
    });
    assert!(
        follow.try_wait().unwrap().is_none(),
        "the copy is still following"
    );
    Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    let out = follow.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("answering again"), "{stderr}");

    // A side that stays away past --retry-secs stops the copy, which prints where the target
    // stands: a --resume from there, once it is back, leaves nothing missing.
    let positions = String::from_utf8_lossy(&out.stdout).trim().to_string();
    target.terminate();
    put(&source, 80, 90);
    let (ok, printed, stderr) = copy(
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--resume",
            &positions,
            "--retry-secs",
            "1",
        ],
        &[],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("gave up after trying for 1 s") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!printed.is_empty(), "positions on stdout: {stderr}");
    target.spawn();
    let (ok, _, stderr) = copy(&["--from", &from, "--to", &to, "--resume", &printed], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(differences(&source, &target), Vec::<String>::new());
}

#[test]
fn a_pk_prefix_copies_only_those_pks_from_a_node_and_from_redis() {
    let source = Node::start();
    let target = Node::start();
    let put = |pks: &[String]| {
        let records: Vec<_> = pks
            .iter()
            .map(|pk| json!({"pk": pk, "sk": "s", "data": pk}))
            .collect();
        let (status, body) = source.post("/records/put", json!({"Records": records}));
        assert_eq!(status, 200, "{body}");
    };
    let keys = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    put(&keys("flags:", 30));
    put(&keys("users:", 30));
    let from = format!("http://127.0.0.1:{}", source.api);
    let to = format!("http://127.0.0.1:{}", target.api);
    let pks_on = |node: &Node| -> BTreeSet<String> {
        contents(node).into_iter().map(|(pk, ..)| pk).collect()
    };
    let (ok, positions, stderr) = copy(
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--pk-prefix",
            "flags:",
            "--page",
            "7",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let want: BTreeSet<String> = keys("flags:", 30).into_iter().collect();
    assert_eq!(pks_on(&target), want);
    // The changes after it: those of the prefix only.
    put(&["flags:new".to_string(), "users:new".to_string()]);
    let (ok, _, stderr) = copy(
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--pk-prefix",
            "flags:",
            "--resume",
            &positions,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let got = pks_on(&target);
    assert!(
        got.contains("flags:new") && !got.contains("users:new"),
        "{got:?}"
    );

    // From Redis: keys starting with the prefix as sent (glob characters in it are literal).
    let server = crate::expiry::RedisServer::start();
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port))
        .unwrap()
        .get_connection()
        .unwrap();
    for key in ["flags:a", "flags:*b", "fl*gs:c", "users:d"] {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).unwrap();
    }
    let redis_url = format!("redis://127.0.0.1:{}", server.port);
    for (prefix, want) in [
        ("flags:", vec!["flags:*b", "flags:a"]),
        ("fl*", vec!["fl*gs:c"]),
    ] {
        let fresh = Node::start();
        let to = format!("http://127.0.0.1:{}", fresh.api);
        let (ok, _, stderr) = copy(
            &["--from", &redis_url, "--to", &to, "--pk-prefix", prefix],
            &[],
        );
        assert!(ok, "{stderr}");
        assert_eq!(
            pks_on(&fresh).into_iter().collect::<Vec<_>>(),
            want,
            "{prefix}"
        );
    }
}
