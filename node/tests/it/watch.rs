//! Watches (`GET /records/watch`, Server-Sent Events) read by a plain SSE client over a socket:
//! exact resume with Last-Event-ID and `?from=`, 410 for a token older than the history, a slow
//! client cut off while apply keeps its pace, and "read, then watch from the read's token".

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sse {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: Value,
}

/// A minimal SSE client over one HTTP/1.1 connection.
pub(crate) struct Watcher {
    reader: BufReader<TcpStream>,
    pub(crate) status: u16,
}

impl Watcher {
    pub(crate) fn open(node: &Node, query: &str, last_event_id: Option<&str>) -> Watcher {
        let mut stream = TcpStream::connect(("127.0.0.1", node.api)).unwrap();
        let mut request = format!(
            "GET /records/watch?{query} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
        }
        Watcher { reader, status }
    }

    /// The body of a refused watch (no chunked stream).
    fn error_body(mut self) -> Value {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut self.reader, &mut body);
        serde_json::from_str(body.trim()).unwrap_or_else(|_| json!(body))
    }

    /// The next event (chunked encoding's size lines are skipped), or `None` at the end.
    pub(crate) fn next(&mut self) -> Option<Sse> {
        let mut event = Sse::default();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event: ") {
                event.event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                event.id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.is_empty() && !event.event.is_empty() {
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
        }
    }

    /// The next `change` event, skipping bookmarks; panics on anything else.
    pub(crate) fn change(&mut self) -> Sse {
        loop {
            let event = self.next().expect("the watch ended");
            match event.event.as_str() {
                "change" => return event,
                "bookmark" => continue,
                other => panic!("unexpected {other} event: {event:?}"),
            }
        }
    }
}

fn put(node: &Node, records: Value) {
    let (status, reply) = node.post("/records/put", json!({"Records": records, "wait": true}));
    assert_eq!(status, 200, "{reply}");
}

fn what(event: &Sse) -> String {
    format!(
        "{} {}/{} {}",
        event.data["Op"].as_str().unwrap(),
        event.data["Pk"].as_str().unwrap(),
        event.data["Sk"].as_str().unwrap(),
        event.data["Data"]
    )
}

#[test]
fn a_watch_resumes_with_exactly_the_changes_after_its_last_event() {
    let node = Node::start_with(&[("WATCH_BOOKMARK_MS", "200")]);
    let mut watch = Watcher::open(&node, "pk=cfg", None);
    assert_eq!(watch.status, 200);
    let first = watch.next().unwrap();
    assert_eq!(
        first.event, "bookmark",
        "the first event says where the watch starts"
    );
    // Five changes of cfg, over HTTP and Redis; others' changes are not this watch's.
    put(&node, json!([{"pk": "cfg", "sk": "a", "data": 1}]));
    put(&node, json!([{"pk": "other", "sk": "a", "data": 1}]));
    put(
        &node,
        json!([{"pk": "cfg", "sk": "b", "data": {"x": [1, 2]}}]),
    );
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("cfg")
        .arg("c")
        .arg("v")
        .query(&mut redis)
        .unwrap();
    let _: i64 = redis::cmd("HDEL")
        .arg("cfg")
        .arg("a")
        .query(&mut redis)
        .unwrap();
    put(&node, json!([{"pk": "cfg", "sk": "b", "data": 2}]));
    let got: Vec<String> = (0..5).map(|_| what(&watch.change())).collect();
    assert_eq!(
        got,
        [
            "put cfg/a 1",
            "put cfg/b {\"x\":[1,2]}",
            "put cfg/c \"v\"",
            "delete cfg/a null",
            "put cfg/b 2"
        ]
    );
    // The client goes away after the third; three more writes happen meanwhile (one of them
    // an atomic batch of two records).
    let mut replay = Watcher::open(&node, "pk=cfg", None);
    replay.next().unwrap();
    drop(watch);
    put(&node, json!([{"pk": "cfg", "sk": "d", "data": 4}]));
    let (status, reply) = node.post(
        "/records/batch",
        json!({"Records": [
            {"op": "put", "pk": "cfg", "sk": "e", "data": 5},
            {"op": "delete", "pk": "cfg", "sk": "c"}
        ], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    let after: Vec<Sse> = (0..3).map(|_| replay.change()).collect();
    // Reconnecting with the last id seen gets exactly what followed it, none twice.
    let last_seen = after[0].id.clone().unwrap();
    let mut resumed = Watcher::open(&node, "pk=cfg", Some(&last_seen));
    assert_eq!(resumed.status, 200);
    let rest: Vec<String> = (0..2).map(|_| what(&resumed.change())).collect();
    assert_eq!(rest, ["put cfg/e 5", "delete cfg/c null"]);
    // Resuming in the middle of the two-record entry gives its second change only.
    let middle = after[1].id.clone().unwrap();
    assert!(middle.contains('.'), "a token inside an entry: {middle}");
    let mut from_middle = Watcher::open(&node, &format!("pk=cfg&from={middle}"), None);
    assert_eq!(what(&from_middle.change()), "delete cfg/c null");
    // A watch whose records do not change gets bookmarks that move its token on.
    let mut narrow = Watcher::open(&node, "pk=cfg&sk_prefix=zz", None);
    let start = narrow.next().unwrap();
    put(&node, json!([{"pk": "cfg", "sk": "y", "data": 1}]));
    let moved = narrow.next().unwrap();
    assert_eq!(moved.event, "bookmark", "{moved:?}");
    assert_ne!(moved.id, start.id);
    let offset = |e: &Sse| -> u64 {
        e.id.as_ref()
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(offset(&moved), offset(&start) + 1);
    // The whole namespace (read access): "other" too.
    let mut all = Watcher::open(&node, "from=0:0,1:0,2:0,3:0", None);
    let pks: Vec<String> = (0..10)
        .map(|_| all.change().data["Pk"].as_str().unwrap().to_string())
        .collect();
    assert!(pks.contains(&"other".to_string()), "{pks:?}");
    assert_eq!(pks.iter().filter(|p| *p == "cfg").count(), 9, "{pks:?}");
    // One partition, keys only: cfg's partition from its start, without the data.
    let partition = offset_partition(&start);
    let mut keys = Watcher::open(
        &node,
        &format!("partition={partition}&keys_only=true&from={partition}:0"),
        None,
    );
    let first = keys.change();
    assert_eq!(what(&first), "put cfg/a null", "{first:?}");
    assert!(first.data.get("Data").is_none(), "{first:?}");
    let both = Watcher::open(&node, &format!("pk=cfg&partition={partition}"), None);
    assert_eq!(both.status, 400);
    let none = Watcher::open(&node, "partition=99", None);
    assert_eq!(none.status, 400);
    assert_eq!(none.error_body()["error"]["code"], "bad_partition");
    // A query the endpoint cannot read gets the API's JSON error, as every other mistake does.
    for (query, code, says) in [
        ("partition=-1", "bad_query", "partition"),
        ("pk=cfg&keys_only=maybe", "bad_query", "keys_only"),
        ("pk=cfg&pk=other", "bad_query", "pk"),
        // A misspelled filter would watch everything.
        ("pkk=cfg", "bad_query", "unknown field `pkk`"),
        ("pk=", "missing_pk", "at least one character"),
    ] {
        let (status, body) = node.get_url(&node.url(&format!("/records/watch?{query}")));
        let reply: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{query}: {body}"));
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
}

/// The partition of a single-partition token.
fn offset_partition(event: &Sse) -> u32 {
    event
        .id
        .as_ref()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_token_older_than_the_history_is_410_after_a_crash_not_a_restart_and_read_then_watch_misses_nothing()
 {
    let mut node = Node::start();
    put(&node, json!([{"pk": "cfg", "sk": "a", "data": 1}]));
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "cfg", "sk": "a"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    let token = node
        .client()
        .post(node.url("/records/get"))
        .body(json!({"Records": [{"pk": "cfg", "sk": "a"}]}).to_string())
        .send()
        .unwrap()
        .headers()
        .get("firescroll-token")
        .expect("reads carry the watch token")
        .to_str()
        .unwrap()
        .to_string();
    // Written after the read: the watch from the read's token has it (and nothing before).
    put(&node, json!([{"pk": "cfg", "sk": "b", "data": 2}]));
    let mut watch = Watcher::open(&node, &format!("pk=cfg&from={token}"), None);
    assert_eq!(what(&watch.change()), "put cfg/b 2");
    drop(watch);
    // An orderly restart keeps the history (saved at the stop, taken back at the start): the
    // same watch resumes there as before it.
    node.terminate();
    node.spawn();
    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    let kept: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("firescroll_watch_history_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(kept > 0.0, "the history taken back is counted: {kept}");
    let mut watch = Watcher::open(&node, &format!("pk=cfg&from={token}"), None);
    assert_eq!(watch.status, 200);
    assert_eq!(what(&watch.change()), "put cfg/b 2");
    drop(watch);
    // After a crash the history starts at the partition's next offset: the first token is too
    // old now, and the answer names the oldest position the node can serve.
    node.kill9();
    node.spawn();
    let refused = Watcher::open(&node, &format!("pk=cfg&from={token}"), None);
    assert_eq!(refused.status, 410);
    let body = refused.error_body();
    assert_eq!(body["error"]["code"], "token_too_old", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let partition = token.split(':').next().unwrap();
    assert!(message.contains(&format!("{partition}:2")), "{message}");
    // A token that is not one is a 400 that says what a token looks like.
    let bad = Watcher::open(&node, "pk=cfg", Some("yesterday"));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_body()["error"]["code"], "bad_token");
    // A token of other partitions (a read of another pk) would start the watch from now and
    // skip what changed since the caller's read: refused, saying why.
    let elsewhere = (partition.parse::<u32>().unwrap() + 1) % 4;
    refused_watch(&node, &format!("pk=cfg&from={elsewhere}:0"), "pk \"cfg\"");
    // A token naming a partition the namespace does not have comes from another namespace:
    // refused, on a whole-namespace watch too (which once started from now, silently).
    for query in ["from=7:1", "pk=cfg&from=0:1,7:1"] {
        refused_watch(&node, query, "the namespace has 4 partitions");
    }
    // A token past the end of the partition's log comes from another log (this namespace's
    // before it was made again, say): waiting for the log to get there would skip every change
    // until then. Refused; the end itself is where a caught-up watch stands.
    refused_watch(
        &node,
        &format!("pk=cfg&from={partition}:1000000"),
        &format!(
            "is at offset 1000000 of partition {partition}, but that partition's log ends at 2"
        ),
    );
    let mut at_the_end = Watcher::open(&node, &format!("pk=cfg&from={partition}:2"), None);
    assert_eq!(at_the_end.status, 200);
    put(&node, json!([{"pk": "cfg", "sk": "c", "data": 3}]));
    assert_eq!(what(&at_the_end.change()), "put cfg/c 3");
    // Two positions of one partition: which one would be meant?
    let twice = Watcher::open(
        &node,
        &format!("pk=cfg&from={partition}:0,{partition}:2"),
        None,
    );
    assert_eq!(twice.status, 400);
    assert_eq!(twice.error_body()["error"]["code"], "bad_token");
}

/// Asserts that a watch with `query` is a 400 `token_mismatch` whose message says `says`.
fn refused_watch(node: &Node, query: &str, says: &str) {
    let (status, body) = node.get_url(&node.url(&format!("/records/watch?{query}")));
    assert_eq!(status, 400, "{query}: {body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["error"]["code"], "token_mismatch", "{body}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{query}: {body}");
}

#[test]
fn a_watcher_that_stops_reading_is_cut_off_and_apply_keeps_its_pace() {
    let node = Node::start_with(&[("WATCH_LAG_BATCHES", "32")]);
    let mut slow = Watcher::open(&node, "", None);
    assert_eq!(slow.next().unwrap().event, "bookmark");
    // Never read again while the node applies hundreds of batches with big changes (more than
    // the socket, the watch's queue and 32 batches hold).
    let big = "x".repeat(60_000);
    let mut last = Value::Null;
    for i in 0..400 {
        let body = json!({"Records": [{"pk": "k", "sk": format!("{i}"), "data": big}]});
        let (status, reply) = node.post("/records/put", body);
        assert_eq!(status, 200, "{reply}");
        last = reply["Positions"][0].clone();
    }
    // Every write is applied, promptly: the watcher held nobody up.
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "k", "sk": "399"}], "min_offsets": [last]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["Records"][0]["Data"].as_str().unwrap().len(), 60_000);
    // The stuck watcher finds, after what was in flight, that it was cut off.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let event = slow.next().expect("an error event before the end");
        if event.event == "error" {
            assert_eq!(
                event.data["error"]["code"], "watch_fell_behind",
                "{event:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no error event");
    }
    assert!(slow.next().is_none(), "the watch ends after the error");
}

#[test]
fn a_watch_says_where_its_replay_ended_when_the_last_entries_changed_nothing() {
    // No bookmark tick during the test: the bookmark must come from the end of the replay.
    let node = Node::start_with(&[("WATCH_BOOKMARK_MS", "600000")]);
    put(&node, json!([{"pk": "cfg", "sk": "a", "data": 1}]));
    let (status, _, token) = node.post_with_token(
        "/records/get",
        &json!({"Records": [{"pk": "cfg", "sk": "a"}]}),
    );
    assert_eq!(status, 200);
    // Writes the log holds but apply rejects: they move the partition on and change nothing.
    let mut last = 0;
    for _ in 0..3 {
        let (_, reply) = node.post(
            "/records/put",
            json!({"Records": [{"pk": "cfg", "sk": "a", "data": 2, "if": "data == null"}],
                   "wait": true}),
        );
        last = reply["Positions"][0]["Offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{reply}"));
    }
    let mut watch = Watcher::open(&node, &format!("pk=cfg&from={token}"), None);
    let first = watch.next().unwrap();
    assert_eq!(
        (first.event.as_str(), first.id.as_deref()),
        ("bookmark", Some(token.as_str()))
    );
    // A client waiting to reach the last rejected write's position (a copy catching up) hears
    // at once that the watch is past it.
    let caught_up = watch
        .next()
        .expect("a bookmark where the replay ended, before any tick");
    assert_eq!(caught_up.event, "bookmark", "{caught_up:?}");
    let id = caught_up.id.unwrap();
    let offset: u64 = id.split(':').nth(1).unwrap().parse().unwrap();
    assert!(offset > last, "{id} is past {last}");
}
