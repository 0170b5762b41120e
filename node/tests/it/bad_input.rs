//! Bad input gets a clear error (or a deterministic rejection), the node keeps serving, and
//! nothing already stored changes.

use crate::common;

use common::{Node, run_to_exit};
use serde_json::{Value, json};

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
}

fn digests(node: &Node) -> Vec<Value> {
    node.partitions()
        .iter()
        .map(|p| p["digest"].clone())
        .collect()
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let node = Node::start_with(&[
        ("MAX_BODY_BYTES", "65536"),
        ("MAX_VALUE_BYTES", "1000"),
        ("MAX_RECORDS_PER_REQUEST", "10"),
        ("MAX_KEY_BYTES", "64"),
    ]);
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records":[{"pk":"keep","sk":"me","data":{"v":1}}],"wait":true}),
    );
    assert_eq!(status, 200, "{reply}");
    let before = digests(&node);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/records/put", "{\"Records\": [".into(), 400, "invalid_json"),
        ("/records/put", "not json at all".into(), 400, "invalid_json"),
        ("/records/put", "".into(), 400, "empty_body"),
        ("/records/put", json!({"Records":[{"pk":5,"sk":"x"}]}).to_string(), 400, "invalid_json"),
        ("/records/put", json!({"Records":"nope"}).to_string(), 400, "invalid_json"),
        ("/records/put", json!({"Records":[]}).to_string(), 400, "empty_records"),
        ("/records/put", json!({}).to_string(), 400, "empty_records"),
        ("/records/get", json!({"Records":[]}).to_string(), 400, "empty_records"),
        ("/records/put", json!({"Records":[{"sk":"no pk","data":1}]}).to_string(), 400, "missing_pk"),
        ("/records/put", json!({"Records":[{"pk":"k".repeat(65),"data":1}]}).to_string(), 400, "key_too_large"),
        ("/records/put", json!({"Records":[{"pk":"k","data":"x".repeat(2000)}]}).to_string(), 413, "value_too_large"),
        ("/records/put", json!({"Records":(0..11).map(|i| json!({"pk":format!("k{i}"),"data":i})).collect::<Vec<_>>()}).to_string(), 400, "too_many_records"),
        ("/records/put", format!("{{\"Records\":[{{\"pk\":\"big\",\"data\":\"{}\"}}]}}", "y".repeat(70_000)), 413, "body_too_large"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"if":"data ==="}]}).to_string(), 400, "invalid_if"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"if":"all(1..100000000000, # > 0)"}]}).to_string(), 400, "invalid_if"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"if":"pk + sk"}]}).to_string(), 400, "invalid_if"),
        ("/records/batch", json!({"Records":[{"op":"upsert","pk":"k","data":1}]}).to_string(), 400, "bad_op"),
        ("/records/list", json!({"pk":"keep","limit":-1}).to_string(), 400, "bad_limit"),
        ("/records/list", json!({"pk":""}).to_string(), 400, "missing_pk"),
        // A misspelled field would drop what it says (a condition, a filter): refused.
        ("/records/put", json!({"Records":[{"pk":"keep","sk":"me","data":2,"iff":"false"}]}).to_string(), 400, "unknown_field"),
        ("/records/put", json!({"Records":[{"pk":"keep","sk":"me","data":2}],"if":"false"}).to_string(), 400, "unknown_field"),
        ("/records/list", json!({"pk_prefix":"keep"}).to_string(), 400, "unknown_field"),
        ("/records/list", json!({"pk":"keep","if":"data.v > \"x\""}).to_string(), 400, "if_failed"),
        ("/records/get", json!({"Records":[{"pk":"keep","sk":"me"}],"min_offsets":[{"Partition":99,"Offset":0}]}).to_string(), 400, "bad_min_offsets"),
        ("/records/get", json!({"Records":[{"pk":"keep","sk":"me"}],"min_offsets":[{"Partition":0}]}).to_string(), 400, "bad_position"),
        // So is a read waiting for a position past the end of the log (another namespace's):
        // refused once the log says so, not after the whole wait.
        ("/records/get", json!({"Records":[{"pk":"keep","sk":"me"}],"min_offsets":[{"Partition":0,"Offset":999_999}]}).to_string(), 400, "bad_min_offsets"),
        ("/records/outcomes", json!({"Positions":(0..101).map(|i| json!({"Partition":0,"Offset":i})).collect::<Vec<_>>()}).to_string(), 400, "too_many_positions"),
        ("/records/outcomes", json!({"Positions":[{"Partition":99,"Offset":0}]}).to_string(), 400, "bad_position"),
        // A position past the end of its partition's log (another namespace's) holds no entry:
        // not `pending` forever.
        ("/records/outcomes", json!({"Positions":[{"Partition":0,"Offset":999_999}]}).to_string(), 400, "no_entry"),
        // The peer endpoint behind `/records/outcomes` is bounded the same way.
        ("/cluster/v1/outcomes", json!({"positions":(0..101).map(|i| json!({"partition":0,"offset":i})).collect::<Vec<_>>(),"wait_ms":0}).to_string(), 400, "too_many_positions"),
        ("/records/nope", json!({}).to_string(), 400, "unknown_operation"),
        // Deadlines that make no sense are refused, never dropped (field names in any case).
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"ttl_ms":0}]}).to_string(), 400, "bad_expiry"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"TTL_MS":1.5}]}).to_string(), 400, "bad_expiry"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"ttl_ms":i64::MAX}]}).to_string(), 400, "bad_expiry"),
        // Deadlines end with the year 9999 (RFC 3339 cannot write one later).
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"expires_at":253_402_300_800_000_i64}]}).to_string(), 400, "bad_expiry"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"ttl_ms":253_402_300_800_000_i64}]}).to_string(), 400, "bad_expiry"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"ttl_ms":5,"expires_at":5}]}).to_string(), 400, "bad_expiry"),
        ("/records/put", json!({"Records":[{"pk":"k","data":1,"ttl_ms":5,"keep_ttl":true}]}).to_string(), 400, "bad_expiry"),
        ("/records/batch", json!({"Records":[{"op":"put","pk":"k","data":1,"Expires_At":"tomorrow"}]}).to_string(), 400, "bad_expiry"),
        ("/records/batch", json!({"Records":[{"op":"put","pk":"k","data":1,"expires_at":-1}]}).to_string(), 400, "bad_expiry"),
        ("/records/delete", json!({"Records":[{"pk":"k","ttl_ms":60000}]}).to_string(), 400, "bad_expiry"),
        // Numbers no float holds would make every later `if` on the record fail.
        ("/records/put", r#"{"Records":[{"pk":"keep","sk":"me","data":{"v":1e999}}]}"#.into(), 400, "number_out_of_range"),
        ("/records/batch", format!(r#"{{"Records":[{{"op":"put","pk":"keep","sk":"me","data":[-{}]}}]}}"#, "9".repeat(400)), 400, "number_out_of_range"),
        ("/records/put", r#"{"Records":[{"pk":"keep","sk":"me","data":1,"if_plugin":"x","args":{"min":2E+310}}]}"#.into(), 400, "number_out_of_range"),
        // Half a surrogate pair is no character: every later `if` on the record would fail.
        ("/records/put", r#"{"Records":[{"pk":"keep","sk":"me","data":{"v":"\ud800"}}]}"#.into(), 400, "lone_surrogate"),
        ("/records/batch", r#"{"Records":[{"op":"put","pk":"keep","sk":"me","data":"x\uDFFFy"}]}"#.into(), 400, "lone_surrogate"),
        ("/records/put", r#"{"Records":[{"pk":"keep","sk":"me","data":1,"if_plugin":"x","args":["\ud83d"]}]}"#.into(), 400, "lone_surrogate"),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, text) = node.post_raw(path, body.clone());
        let reply: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} {body:.80}: non-JSON {e}: {text}"));
        assert_eq!(
            (status, error_code(&reply)),
            (want_status, want_code),
            "{path} {body:.80}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.len() > 10, "message says what to fix: {message}");
    }
    // A compressed body is refused for what it is, not as invalid JSON (gzip from the
    // system's gzip, as a client library would send it); the write is not made.
    let mut gzip = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    std::io::Write::write_all(
        gzip.stdin.as_mut().unwrap(),
        json!({"Records":[{"pk":"keep","sk":"me","data":{"v":2}}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let compressed = gzip.wait_with_output().unwrap().stdout;
    for encoding in ["gzip", "br"] {
        let response = node
            .client()
            .post(node.url("/records/put"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(compressed.clone())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 415);
        let reply: Value = serde_json::from_str(&response.text().unwrap()).unwrap();
        assert_eq!(
            error_code(&reply),
            "unsupported_content_encoding",
            "{reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(encoding) && message.contains("uncompressed"),
            "{message}"
        );
    }
    // `identity` is no encoding at all.
    let response = node
        .client()
        .post(node.url("/records/get"))
        .header("content-encoding", "identity")
        .body(json!({"Records":[{"pk":"keep","sk":"me"}]}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (status, text) = node.get_url(&node.url("/records/get"));
    assert_eq!(status, 405, "{text}");
    let (status, text) = node.get_url(&node.url("/nowhere"));
    assert_eq!(status, 404, "{text}");

    assert_eq!(digests(&node), before, "bad input changed stored data");
    let (status, reply) = node.post("/records/get", json!({"Records":[{"pk":"keep","sk":"me"}]}));
    assert_eq!(
        (status, &reply["Records"][0]["Data"]),
        (200, &json!({"v":1}))
    );
    // Both halves of a pair are a character: taken, and an `if` reads it.
    let (status, text) = node.post_raw(
        "/records/put",
        r#"{"Records":[{"pk":"keep","sk":"me","data":{"v":"\ud83d\ude00"},"if":"data.v == 1"}],"wait":true}"#,
    );
    assert_eq!(status, 200, "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "applied",
        "{reply}"
    );
    let (_, reply) = node.post("/records/get", json!({"Records":[{"pk":"keep","sk":"me"}]}));
    assert_eq!(reply["Records"][0]["Data"], json!({"v":"😀"}));
}

#[test]
fn runtime_condition_errors_reject_the_entry_deterministically() {
    let node = Node::start();
    let put = |data: Value, cond: Option<&str>| {
        let mut record = json!({"pk":"cfg","sk":"x","data":data});
        if let Some(c) = cond {
            record["if"] = c.into();
        }
        node.post("/records/put", json!({"Records":[record],"wait":true}))
    };
    let (_, reply) = put(json!({"x":"a string"}), None);
    assert_eq!(reply["Positions"][0]["Outcome"]["Status"], "applied");
    // Compiles, but `data.x > 1` compares a string with a number at apply time.
    let (status, reply) = put(json!({"x":2}), Some("data.x > 1"));
    assert_eq!(status, 200, "{reply}");
    let outcome = &reply["Positions"][0]["Outcome"];
    assert_eq!(outcome["Status"], "rejected", "{reply}");
    assert_eq!(outcome["Kind"], "condition_error", "{reply}");
    // A condition that is data-dependent but not a boolean is rejected the same way.
    let (_, reply) = put(json!({"x":3}), Some("data.x"));
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Kind"], "condition_error",
        "{reply}"
    );
    // The partition keeps applying; the stored record is untouched by the rejected entries.
    let (_, got) = node.post("/records/get", json!({"Records":[{"pk":"cfg","sk":"x"}]}));
    assert_eq!(got["Records"][0]["Data"], json!({"x":"a string"}));
    let (_, reply) = put(json!({"x":4}), Some("data.x == \"a string\""));
    assert_eq!(
        reply["Positions"][0]["Outcome"]["Status"], "applied",
        "{reply}"
    );
}

#[test]
fn any_bytes_in_keys_and_unicode_work() {
    let node = Node::start();
    let pks = ["a\u{0}b", "a", "a\u{0}", "日本語", "emoji 🔥"];
    let sks = ["", "\u{0}", "\u{0}\u{0}", "z", "ünï\u{0}cödé"];
    let records: Vec<Value> = pks
        .iter()
        .flat_map(|pk| {
            sks.iter()
                .map(move |sk| json!({"pk":pk,"sk":sk,"data":{"pk":pk,"sk":sk}}))
        })
        .collect();
    let (status, reply) = node.post("/records/put", json!({"Records":records,"wait":true}));
    assert_eq!(status, 200, "{reply}");
    for pk in pks {
        let keys: Vec<Value> = sks.iter().map(|sk| json!({"pk":pk,"sk":sk})).collect();
        let (_, got) = node.post("/records/get", json!({"Records":keys}));
        let got = got["Records"].as_array().unwrap();
        assert_eq!(got.len(), sks.len(), "{pk:?}");
        for (record, sk) in got.iter().zip(sks) {
            assert_eq!(
                (
                    record["Pk"].as_str().unwrap(),
                    record["Sk"].as_str().unwrap()
                ),
                (pk, sk)
            );
            assert_eq!(record["Data"], json!({"pk":pk,"sk":sk}));
        }
        // A list of one pk holds exactly its records, in sk byte order; `a` never sees `a\0b`'s.
        let (_, listed) = node.post("/records/list", json!({"pk":pk}));
        let listed: Vec<&str> = listed["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Sk"].as_str().unwrap())
            .collect();
        let mut expected: Vec<&str> = sks.to_vec();
        expected.sort();
        assert_eq!(listed, expected, "{pk:?}");
    }
}

#[test]
fn a_second_node_on_the_same_db_path_stops_and_the_first_keeps_its_data() {
    let node = Node::start();
    let (status, _) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "k", "sk": "s", "data": {"v": 1}}], "wait": true}),
    );
    assert_eq!(status, 200);
    let [api, internal, resp] = common::free_ports();
    let out = std::process::Command::new(common::BIN)
        .env_clear()
        .env("DB_PATH", &node.data)
        .env("API_PORT", api.to_string())
        .env("INTERNAL_PORT", internal.to_string())
        .env("RESP_PORT", resp.to_string())
        .env("LISTEN_ADDR", "127.0.0.1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("in use by another process") && err.contains("DB_PATH"),
        "{err}"
    );
    // The first node still serves what it had, and takes writes.
    let (status, body) = node.post("/records/get", json!({"Records": [{"pk": "k", "sk": "s"}]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Records"][0]["Data"], json!({"v": 1}), "{body}");
    let (status, body) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "k", "sk": "t", "data": 2}], "wait": true}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_settings_stop_the_node_naming_the_setting() {
    for (name, value) in [
        ("API_PORT", "http"),
        ("PARTITIONS", "0"),
        ("DEBUG", "maybe"),
        // Below one answer's most, a client reading one would be closed for it.
        ("CLIENT_MEMORY_MAX_BYTES", "1048576"),
    ] {
        let (code, err) = run_to_exit(&[(name, value)], &[]);
        assert_ne!(code, 0);
        assert!(err.contains(name), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // A value larger than one answer may hold could not be read with another record.
    let (code, err) = run_to_exit(
        &[
            ("MAX_VALUE_BYTES", "70000000"),
            ("MAX_ENTRY_BYTES", "80000000"),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("MAX_VALUE_BYTES") && err.contains("64 MiB"),
        "{err}"
    );
    // Nothing listens there: the node says which broker it cannot reach, and stops.
    let seeds = format!("127.0.0.1:{}", common::free_port());
    let (code, err) = run_to_exit(&[("KAFKA_SEEDS", &seeds)], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot reach Kafka") && err.contains("KAFKA_SEEDS"),
        "{err}"
    );
    let (code, err) = run_to_exit(&[("KAFKA_SEEDS", &seeds), ("NAMESPACE", "bad_name")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("NAMESPACE"), "{err}");
}

#[test]
fn changing_the_partition_count_of_existing_data_is_refused() {
    let mut node = Node::start_with(&[("PARTITIONS", "4")]);
    node.terminate();
    let ports = common::free_ports::<3>();
    let out = std::process::Command::new(common::BIN)
        .env_clear()
        .env("DB_PATH", &node.data)
        .env("PARTITIONS", "8")
        .env("API_PORT", ports[0].to_string())
        .env("INTERNAL_PORT", ports[1].to_string())
        .env("RESP_PORT", ports[2].to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("4 partitions") && err.contains("PARTITIONS"),
        "{err}"
    );
}

#[test]
fn logs_are_json_lines_on_request() {
    let mut node = Node::start_with(&[("LOG_FORMAT", "json")]);
    node.terminate();
    let log = node.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
