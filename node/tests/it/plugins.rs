//! WebAssembly plugins over real HTTP on real `firescroll` processes: the example plugins built
//! from source by scripts/build-plugins.sh, and hand-written bad ones.

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::path::PathBuf;

/// A module built by scripts/build-plugins.sh (which scripts/test.sh runs first).
pub(crate) fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Build the example plugins first: scripts/build-plugins.sh",
            path.display()
        )
    })
}

/// The ABI's boilerplate plus `body`.
fn wat(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            {body})"#
    ))
    .unwrap()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// `PUT /plugins/{name}` with `token`; (status, JSON).
pub(crate) fn upload(node: &Node, name: &str, bytes: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut request = http()
        .put(node.url(&format!("/plugins/{name}")))
        .body(bytes);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().unwrap()).unwrap())
}

fn put_one(node: &Node, record: Value) -> Value {
    let (status, reply) = node.post("/records/put", json!({"Records": [record], "wait": true}));
    assert_eq!(status, 200, "{reply}");
    reply["Positions"][0]["Outcome"].clone()
}

fn get_data(node: &Node, pk: &str, sk: &str) -> Value {
    let (status, reply) = node.post("/records/get", json!({"Records": [{"pk": pk, "sk": sk}]}));
    assert_eq!(status, 200, "{reply}");
    reply["Records"][0]["Data"].clone()
}

#[test]
fn example_plugins_end_to_end() {
    let node = Node::start();
    for name in ["semver-gate", "merge-patch", "redact"] {
        let (status, binding) = upload(&node, name, example(name), None);
        assert_eq!(status, 200, "{binding}");
        assert_eq!(binding["name"], name);
        assert_eq!(binding["digest"].as_str().unwrap().len(), 64);
    }
    let (_, list) = node.get_url(&node.url("/plugins"));
    let list: Value = serde_json::from_str(&list).unwrap();
    let kinds: Vec<(String, String)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("merge-patch".to_string(), "transform".to_string()),
            ("redact".into(), "transform".into()),
            ("semver-gate".into(), "condition".into())
        ]
    );
    let (status, bytes) = {
        let r = http()
            .get(node.url("/plugins/redact?bytes=1"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    };
    assert_eq!(status, 200);
    assert_eq!(
        bytes,
        example("redact"),
        "the module comes back byte for byte"
    );

    // Condition: semver-gated rollout.
    let gated = |data: Value, args: Value| {
        put_one(
            &node,
            json!({"pk": "svc", "sk": "cfg", "data": data, "if_plugin": "semver-gate", "args": args}),
        )
    };
    assert_eq!(
        gated(
            json!({"version": "1.2.0", "a": {"b": 1}, "secret_token": "t"}),
            json!(null)
        )["Status"],
        "applied"
    );
    let rolled_back = gated(json!({"version": "1.1.9"}), json!(null));
    assert_eq!(rolled_back["Status"], "rejected");
    assert_eq!(rolled_back["Kind"], "plugin_condition_failed");
    assert!(rolled_back["Message"].as_str().unwrap().contains("svc"));
    let over_max = gated(json!({"version": "2.0.0"}), json!({"max": "2.0.0"}));
    assert_eq!(over_max["Kind"], "plugin_condition_failed");
    assert_eq!(get_data(&node, "svc", "cfg")["version"], "1.2.0");

    // `if` and `if_plugin` together: both must pass.
    let both = put_one(
        &node,
        json!({"pk": "svc", "sk": "cfg", "data": {"version": "1.3.0"}, "if": "data.version == \"9\"", "if_plugin": "semver-gate"}),
    );
    assert_eq!(both["Kind"], "condition_failed");

    // Write transform: JSON merge patch, combined with the gate.
    let patched = put_one(
        &node,
        json!({"pk": "svc", "sk": "cfg", "data": {"version": "1.3.0", "a": {"c": 2}, "secret_token": null},
               "if_plugin": "semver-gate", "transform": "merge-patch"}),
    );
    assert_eq!(patched["Status"], "applied", "{patched}");
    assert_eq!(
        get_data(&node, "svc", "cfg"),
        json!({"version": "1.3.0", "a": {"b": 1, "c": 2}})
    );
    put_one(
        &node,
        json!({"pk": "svc", "sk": "other", "data": {"password": "hunter2", "secret_x": 1, "keep": [{"password": 1}]},
               "transform": "merge-patch"}),
    );

    // Read transform on get and list (the latest version of the name).
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "svc", "sk": "other"}], "transform": "redact", "args": {"redact": ["password"]}}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["Records"][0]["Data"],
        json!({"secret_x": 1, "keep": [{}]})
    );
    let (status, page) = node.post("/records/list", json!({"pk": "svc", "transform": "redact"}));
    assert_eq!(status, 200, "{page}");
    let data: Vec<&Value> = page["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["Data"])
        .collect();
    assert_eq!(
        data,
        [
            &json!({"version": "1.3.0", "a": {"b": 1, "c": 2}}),
            &json!({"password": "hunter2", "keep": [{"password": 1}]})
        ]
    );
    // The stored data is untouched by read transforms.
    assert_eq!(get_data(&node, "svc", "other")["password"], "hunter2");

    // Names that do not exist, or of the wrong kind, are the request's 400.
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "a", "sk": "b", "data": 1, "if_plugin": "merge-patch"}]}),
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("wrong_plugin_kind"))
    );
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "a", "sk": "b"}], "transform": "nope"}),
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("unknown_plugin"))
    );

    // Unbinding: the name is gone; uploading again binds it again.
    let r = http()
        .delete(node.url("/plugins/semver-gate"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "a", "sk": "b", "data": 1, "if_plugin": "semver-gate"}]}),
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("unknown_plugin"))
    );
    assert_eq!(
        upload(&node, "semver-gate", example("semver-gate"), None).0,
        200
    );
}

#[test]
fn bad_plugins_are_refused_or_rejected_and_nothing_stored_changes() {
    let mut node = Node::start();
    let refused = |bytes: Vec<u8>| {
        let (status, reply) = upload(&node, "bad", bytes, None);
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["code"], "invalid_plugin");
        reply["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(refused(b"not wasm at all".to_vec()).contains("not a valid WebAssembly module"));
    assert!(refused(Vec::new()).contains("not a valid WebAssembly module"));
    let importing = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    assert!(refused(importing).contains("import nothing"));
    assert!(refused(wat("")).contains("`condition` or `transform`"));
    let (status, reply) = upload(&node, "bad name!", wat(""), None);
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_plugin_name"))
    );

    put_one(&node, json!({"pk": "keep", "sk": "me", "data": {"v": 1}}));
    let runaway = [
        (
            "loop",
            r#"(func (export "condition") (param i32 i32) (result i32) (loop $l br $l) i32.const 1)"#,
            "out of fuel",
        ),
        (
            "trap",
            r#"(func (export "condition") (param i32 i32) (result i32) unreachable)"#,
            "unreachable",
        ),
        (
            "bomb",
            r#"(func (export "condition") (param i32 i32) (result i32) (loop $l (drop (memory.grow (i32.const 64))) br $l) i32.const 1)"#,
            "trapped",
        ),
        (
            "errcode",
            r#"(func (export "condition") (param i32 i32) (result i32) i32.const -5)"#,
            "error code -5",
        ),
    ];
    for (name, body, reason) in runaway {
        assert_eq!(upload(&node, name, wat(body), None).0, 200);
        let outcome = put_one(
            &node,
            json!({"pk": "keep", "sk": "me", "data": {"v": name}, "if_plugin": name}),
        );
        assert_eq!(outcome["Kind"], "plugin_error", "{name}: {outcome}");
        assert!(
            outcome["Message"].as_str().unwrap().contains(reason),
            "{name}: {outcome}"
        );
    }
    let not_json =
        r#"(func (export "transform") (param i32 i32) (result i64) i64.const 0x0000000000000003)"#;
    assert_eq!(upload(&node, "garbage-out", wat(not_json), None).0, 200);
    let outcome = put_one(
        &node,
        json!({"pk": "keep", "sk": "me", "data": {"v": 9}, "transform": "garbage-out"}),
    );
    assert_eq!(outcome["Kind"], "plugin_error", "{outcome}");
    assert!(
        outcome["Message"]
            .as_str()
            .unwrap()
            .contains("invalid output")
    );
    // A read transform that fails is the read's error, not a partial answer.
    let (status, reply) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "keep", "sk": "me"}], "transform": "garbage-out"}),
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("transform_failed"))
    );

    let (_, metrics) = node.get_url(&node.internal_url("/metrics"));
    for line in [
        r#"firescroll_plugin_calls_total{kind="condition",result="out_of_fuel"} 1"#,
        r#"firescroll_plugin_calls_total{kind="condition",result="error_code"} 1"#,
        r#"firescroll_plugin_calls_total{kind="transform",result="invalid_output"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    // Nothing stored changed, the node still serves, and plugins survive a restart.
    assert_eq!(get_data(&node, "keep", "me"), json!({"v": 1}));
    assert_eq!(node.terminate().code(), Some(0));
    node.spawn();
    assert_eq!(get_data(&node, "keep", "me"), json!({"v": 1}));
    let outcome = put_one(
        &node,
        json!({"pk": "keep", "sk": "me", "data": {"v": 2}, "if_plugin": "loop"}),
    );
    assert_eq!(
        outcome["Kind"], "plugin_error",
        "still bound after restart: {outcome}"
    );
}

#[test]
fn uploading_needs_an_admin_token() {
    let node = Node::start_with(&[
        ("READ_TOKENS", "r"),
        ("WRITE_TOKENS", "w"),
        ("ADMIN_TOKENS", "a"),
    ]);
    assert_eq!(upload(&node, "p", example("redact"), None).0, 401);
    assert_eq!(upload(&node, "p", example("redact"), Some("w")).0, 403);
    assert_eq!(upload(&node, "p", example("redact"), Some("a")).0, 200);
    let r = http()
        .get(node.url("/plugins"))
        .bearer_auth("r")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http()
        .delete(node.url("/plugins/p"))
        .bearer_auth("w")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

/// Applied offset and digest of every partition, once `node` has applied up to `ends`.
fn settled_digests(node: &Node, ends: &[(u64, u64)]) -> Vec<(u64, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reports = node.partitions();
        let done = ends.iter().all(|&(partition, end)| {
            reports.iter().any(|p| {
                p["partition"] == partition
                    && p["applied_offset"].as_u64().is_some_and(|a| a + 1 >= end)
            })
        });
        if done {
            let mut digests: Vec<(u64, String)> = reports
                .iter()
                .map(|p| {
                    (
                        p["partition"].as_u64().unwrap(),
                        p["digest"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            digests.sort();
            return digests;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node did not apply up to {ends:?}: {reports:?}\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn through_kafka_plugins_reach_every_node_and_replicas_agree() {
    use common::{Broker, kafka_env};
    let broker = Broker::start();
    let a = Node::start_env(&kafka_env(&broker, "plugins", "g1", "a"));
    let b = Node::start_env(&kafka_env(&broker, "plugins", "g2", "b"));
    for node in [&a, &b] {
        node.wait_until(
            "owning every partition",
            std::time::Duration::from_secs(30),
            |n| n.owned().len() == 4,
        );
    }
    // Uploaded through a...
    assert_eq!(
        upload(&a, "semver-gate", example("semver-gate"), None).0,
        200
    );
    assert_eq!(
        upload(&a, "merge-patch", example("merge-patch"), None).0,
        200
    );
    let looping = wat(
        r#"(func (export "condition") (param i32 i32) (result i32) (loop $l br $l) i32.const 1)"#,
    );
    assert_eq!(upload(&a, "loop", looping, None).0, 200);
    // ...known to b through the plugins topic.
    b.wait_until(
        "the plugins to arrive",
        std::time::Duration::from_secs(30),
        |n| {
            let (_, list) = n.get_url(&n.url("/plugins"));
            let list: Value = serde_json::from_str(&list).unwrap();
            list["plugins"].as_array().unwrap().len() == 3
        },
    );

    // Writes accepted by b use them; each replica group applies them the same way.
    let writes = [
        json!({"pk": "svc", "sk": "cfg", "data": {"version": "1.0.0", "x": 1}, "if_plugin": "semver-gate"}),
        json!({"pk": "svc", "sk": "cfg", "data": {"version": "0.9.0"}, "if_plugin": "semver-gate"}),
        json!({"pk": "svc", "sk": "cfg", "data": {"version": "1.1.0", "y": 2}, "if_plugin": "semver-gate", "transform": "merge-patch"}),
        json!({"pk": "other", "sk": "s", "data": {"v": 1}, "if_plugin": "loop"}),
        json!({"pk": "other", "sk": "t", "data": {"v": 2}, "transform": "merge-patch"}),
    ];
    let mut positions = Vec::new();
    for write in writes {
        let (status, reply) = b.post("/records/put", json!({"Records": [write]}));
        assert_eq!(status, 200, "{reply}");
        positions.push(reply["Positions"][0].clone());
    }
    let outcomes = |node: &Node| {
        let (status, reply) = node.post("/records/outcomes", json!({"positions": positions}));
        assert_eq!(status, 200, "{reply}");
        reply["Outcomes"].clone()
    };
    let ends: Vec<(u64, u64)> = positions
        .iter()
        .map(|p| {
            (
                p["Partition"].as_u64().unwrap(),
                p["Offset"].as_u64().unwrap() + 1,
            )
        })
        .collect();
    let digests_a = settled_digests(&a, &ends);
    let digests_b = settled_digests(&b, &ends);
    assert_eq!(digests_a, digests_b, "replicas hold identical records");
    let (outcomes_a, outcomes_b) = (outcomes(&a), outcomes(&b));
    assert_eq!(outcomes_a, outcomes_b, "replicas reach identical outcomes");
    let kinds: Vec<&str> = outcomes_a
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Outcome"]["Kind"].as_str().unwrap_or("applied"))
        .collect();
    assert_eq!(
        kinds,
        [
            "applied",
            "plugin_condition_failed",
            "applied",
            "plugin_error",
            "applied"
        ]
    );
    assert!(
        outcomes_a[3]["Outcome"]["Message"]
            .as_str()
            .unwrap()
            .contains("out of fuel")
    );
    assert_eq!(
        get_data(&a, "svc", "cfg"),
        json!({"version": "1.1.0", "x": 1, "y": 2})
    );

    // A node that starts later replays the log and the plugins topic from the start: whatever
    // arrives first, every entry waits for its plugin and ends the same.
    let c = Node::start_env(&kafka_env(&broker, "plugins", "g3", "c"));
    assert_eq!(settled_digests(&c, &ends), digests_a);
    assert_eq!(outcomes(&c), outcomes_a);
}
