//! `POST /records/scan`: every record of the namespace, a page at a time, with a cursor; keys
//! with any bytes, hashes longer than a page, records changing during the scan, and the
//! scan-then-watch pattern a copy into another namespace uses.

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a whole scan gave.
struct Scanned {
    /// (pk, sk, data as JSON text), in the order they came.
    records: Vec<(String, String, String)>,
    pages: usize,
    /// Each partition's first token position.
    tokens: BTreeMap<u32, String>,
}

/// Keeps the first position a scan gave for each partition.
fn note_tokens(tokens: &mut BTreeMap<u32, String>, header: &str) {
    for part in header.split(',').filter(|p| !p.is_empty()) {
        let (partition, _) = part.split_once(':').unwrap();
        tokens
            .entry(partition.parse().unwrap())
            .or_insert_with(|| part.to_string());
    }
}

/// Every page of a scan from the start, `limit` records at a time.
fn scan_all(node: &Node, limit: u64) -> Scanned {
    scan_all_with(node, json!({ "limit": limit }))
}

/// Every page of a scan from the start, each asked with `body` (and the cursor).
fn scan_all_with(node: &Node, body: Value) -> Scanned {
    let limit = body["limit"].as_u64().unwrap();
    let mut records = Vec::new();
    let mut tokens = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = body.clone();
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, page, token) = scan_page(node, &body);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        note_tokens(&mut tokens, &token);
        let got = page["Records"].as_array().unwrap();
        assert!(got.len() as u64 <= limit, "a page holds at most its limit");
        for r in got {
            records.push((
                r["Pk"].as_str().unwrap().to_string(),
                r["Sk"].as_str().unwrap().to_string(),
                r["Data"].to_string(),
            ));
        }
        match page.get("NextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                return Scanned {
                    records,
                    pages,
                    tokens,
                };
            }
        }
    }
}

/// One scan request: status, body, and its FireScroll-Token header.
fn scan_page(node: &Node, body: &Value) -> (u16, Value, String) {
    node.post_with_token("/records/scan", body)
}

fn put(node: &Node, records: Vec<Value>) {
    for chunk in records.chunks(500) {
        let (status, body) = node.post("/records/put", json!({"Records": chunk, "wait": true}));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn a_scan_returns_every_record_once_in_pages_any_node_size() {
    let node = Node::start();
    // Keys of every shape: dots and slashes (the cursor's separators would be), NUL, non-ASCII,
    // a hash far longer than a page, one-record keys, and a record that expires at once.
    let mut written = BTreeSet::new();
    let mut records = Vec::new();
    for i in 0..150 {
        let pk = match i % 5 {
            0 => format!("flags.{i}"),
            1 => format!("a/b/{i}"),
            2 => format!("nul\u{0}{i}"),
            3 => format!("clé-{i}-✓"),
            _ => format!("k{i}"),
        };
        for j in 0..(i % 4) {
            records.push(json!({"pk": pk, "sk": format!("s{j}"), "data": {"i": i, "j": j}}));
            written.insert((
                pk.clone(),
                format!("s{j}"),
                json!({"i": i, "j": j}).to_string(),
            ));
        }
        records.push(json!({"pk": pk, "sk": "", "data": i}));
        written.insert((pk.clone(), String::new(), json!(i).to_string()));
    }
    for j in 0..2500 {
        records.push(json!({"pk": "big", "sk": format!("{j:05}"), "data": j}));
        written.insert(("big".into(), format!("{j:05}"), json!(j).to_string()));
    }
    put(&node, records);
    put(
        &node,
        vec![json!({"pk": "gone", "sk": "x", "data": 1, "ttl_ms": 1})],
    );
    std::thread::sleep(Duration::from_millis(20));

    for limit in [1000, 7, 1] {
        let Scanned {
            records: got,
            pages,
            tokens,
        } = scan_all(&node, limit);
        let set: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(got.len(), set.len(), "no record twice (limit {limit})");
        assert_eq!(
            set, written,
            "every record, and only live ones (limit {limit})"
        );
        assert!(
            pages as u64 >= written.len() as u64 / limit,
            "{pages} pages"
        );
        // A position in every partition, for a watch to start from.
        assert_eq!(tokens.len(), 4, "{tokens:?}");
    }
    // Each key's records in sk order, one key after another.
    let got = scan_all(&node, 100).records;
    let big: Vec<&String> = got.iter().filter(|r| r.0 == "big").map(|r| &r.1).collect();
    assert!(big.windows(2).all(|w| w[0] < w[1]) && big.len() == 2500);
    let first = got.iter().position(|r| r.0 == "big").unwrap();
    assert!(got[first..first + 2500].iter().all(|r| r.0 == "big"));

    // Bad requests say what to do.
    let (status, body, _) = scan_page(&node, &json!({"cursor": "nonsense"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
    let (status, body, _) = scan_page(&node, &json!({"cursor": "9.0"}));
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("there are 4"),
        "{body}"
    );
    let (status, body, _) = scan_page(&node, &json!({"limit": -1}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_limit"))
    );
}

#[test]
fn records_present_throughout_a_scan_come_once_and_a_watch_from_its_token_sees_the_rest() {
    let node = Node::start();
    let stable: Vec<Value> = (0..300)
        .map(|i| json!({"pk": format!("stable{i}"), "sk": "", "data": i}))
        .collect();
    put(&node, stable);
    let doomed: Vec<Value> = (0..100)
        .map(|i| json!({"pk": format!("doomed{i}"), "sk": "", "data": i}))
        .collect();
    put(&node, doomed);

    // A scan in pages of 20, with writes between its pages: keys deleted, keys added, and
    // changes to keys it has already passed.
    let mut seen: Vec<String> = Vec::new();
    let mut tokens: BTreeMap<u32, String> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut page_no = 0;
    loop {
        let mut body = json!({"limit": 20});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, page, token) = scan_page(&node, &body);
        assert_eq!(status, 200, "{page}");
        note_tokens(&mut tokens, &token);
        for r in page["Records"].as_array().unwrap() {
            seen.push(r["Pk"].as_str().unwrap().to_string());
        }
        page_no += 1;
        if page_no <= 10 {
            let i = page_no * 10;
            let (status, _) = node.post(
                "/records/delete",
                json!({"Records": (i..i + 10).map(|j| json!({"pk": format!("doomed{j}"), "sk": ""})).collect::<Vec<_>>()}),
            );
            assert_eq!(status, 200);
            put(
                &node,
                (0..10)
                    .map(|j| json!({"pk": format!("new{page_no}-{j}"), "sk": "", "data": j}))
                    .collect(),
            );
        }
        match page.get("NextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for pk in &seen {
        *counts.entry(pk.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "no key twice");
    for i in 0..300 {
        assert!(
            counts.contains_key(format!("stable{i}").as_str()),
            "stable{i} missing"
        );
    }
    // Deleted before the scan could reach them, or not: either way at most once (above); the
    // ones never deleted are all there.
    for i in 0..10 {
        assert!(
            counts.contains_key(format!("doomed{i}").as_str()),
            "doomed{i}"
        );
    }

    // A change after the scan passed its key: a watch of its partition from the scan's first
    // token for it delivers it.
    let partition = node
        .post(
            "/records/put",
            json!({"Records": [{"pk": "stable0", "sk": "", "data": "changed"}]}),
        )
        .1["Positions"][0]["Partition"]
        .as_u64()
        .unwrap() as u32;
    let from = &tokens[&partition];
    let response = node
        .client()
        .get(node.url(&format!("/records/watch?partition={partition}&from={from}")))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = std::io::BufReader::new(response);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the change never came"
        );
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if line.starts_with("data:") && line.contains("\"changed\"") && line.contains("stable0") {
            break;
        }
    }
}

#[test]
fn a_page_reads_a_bounded_number_of_keys_even_when_they_hold_nothing_live() {
    // No ticks: expired records stay stored (hidden from reads) until a write removes them.
    let node = Node::start_with(&[("EXPIRY_TICK_MS", "0")]);
    put(&node, vec![json!({"pk": "alive", "sk": "", "data": 1})]);
    let doomed: Vec<Value> = (0..200)
        .map(|i| json!({"pk": format!("gone{i}"), "sk": "", "data": i, "ttl_ms": 500}))
        .collect();
    // Long enough that none of the put's entries removes another's records (a later entry's
    // time past an earlier one's deadlines would), short enough to be past when scanning.
    put(&node, doomed);
    std::thread::sleep(Duration::from_millis(1000));
    // A page of one record walks at most a few dozen keys: pages that found nothing live still
    // answer, with a cursor, instead of one request walking every key.
    let mut cursor: Option<String> = None;
    let (mut empty_with_cursor, mut live) = (0, Vec::new());
    loop {
        let mut body = json!({"limit": 1});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, page, _) = scan_page(&node, &body);
        assert_eq!(status, 200, "{page}");
        let records = page["Records"].as_array().unwrap();
        live.extend(records.iter().map(|r| r["Pk"].clone()));
        match page.get("NextCursor").and_then(Value::as_str) {
            Some(next) => {
                empty_with_cursor += usize::from(records.is_empty());
                cursor = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(live, vec![json!("alive")]);
    assert!(
        empty_with_cursor >= 3,
        "{empty_with_cursor} bounded empty pages"
    );
}

#[test]
fn a_scan_with_a_pk_prefix_returns_exactly_the_records_of_those_pks() {
    let node = Node::start();
    let mut records = Vec::new();
    for i in 0..60 {
        for (table, sks) in [("flags:", 1), ("users:", 2), ("flag", 1)] {
            for j in 0..sks {
                records
                    .push(json!({"pk": format!("{table}{i}"), "sk": format!("s{j}"), "data": i}));
            }
        }
    }
    put(&node, records);
    for limit in [1000, 7, 1] {
        let flags = scan_all_with(&node, json!({"limit": limit, "pk_prefix": "flags:"}));
        let mut pks: Vec<&str> = flags.records.iter().map(|r| r.0.as_str()).collect();
        pks.sort();
        let mut want: Vec<String> = (0..60).map(|i| format!("flags:{i}")).collect();
        want.sort();
        assert_eq!(pks, want, "limit {limit}");
        let users = scan_all_with(&node, json!({"limit": limit, "PK_PREFIX": "users:"}));
        assert_eq!(users.records.len(), 120, "limit {limit}");
        assert!(users.records.iter().all(|r| r.0.starts_with("users:")));
    }
    assert_eq!(
        scan_all_with(&node, json!({"limit": 5, "pk_prefix": "flag"}))
            .records
            .len(),
        120
    );
    assert_eq!(
        scan_all_with(&node, json!({"limit": 5, "pk_prefix": ""}))
            .records
            .len(),
        240
    );
    assert!(
        scan_all_with(&node, json!({"limit": 5, "pk_prefix": "none:"}))
            .records
            .is_empty()
    );
    let (status, body, _) = scan_page(&node, &json!({"pk_prefix": "x".repeat(5000)}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "key_too_large", "{body}");
}
