//! The internal port: Prometheus metrics and `/debug/partitions` reflect what the node did.

use crate::common;

use common::Node;
use serde_json::json;

/// The value of the sample `name{labels}` (exact text before the value), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_what_happened_with_bounded_labels() {
    let node = Node::start();
    node.post(
        "/records/put",
        json!({"Records": [{"pk": "m", "sk": "a", "data": 1}], "wait": true}),
    );
    node.post(
        "/records/put",
        json!({"Records": [{"pk": "m", "sk": "a", "data": 2, "if": "data == null"}], "wait": true}),
    );
    node.post("/records/get", json!({"Records": [{"pk": "m", "sk": "a"}]}));
    node.post("/records/list", json!({"pk": "m"}));
    node.post_raw("/records/whatever-a-client-sends", "{}");
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: Option<String> = redis::cmd("GET").arg("m").query(&mut redis).unwrap();
    let _ = redis::cmd("NOSUCHCMD").query::<String>(&mut redis);

    let (status, text) = node.get_url(&node.internal_url("/metrics"));
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "partitions"), Some(4.0));
    assert_eq!(
        sample(
            &text,
            &format!(
                "firescroll_build_info{{log_format=\"{}\",version=\"{}\"}}",
                firescroll::model::ENTRY_VERSION,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{text}"
    );
    // The embedded log woke the appliers for every batch (none found by the sweep alone).
    assert_eq!(
        sample(&text, "firescroll_apply_missed_wakeups_total"),
        Some(0.0)
    );
    for op in ["put", "get", "list", "unknown"] {
        let count = sample(
            &text,
            &format!("http_latencies_micro_count{{operation=\"{op}\"}}"),
        );
        assert!(count >= Some(1.0), "http {op}: {count:?}");
    }
    assert!(
        !text.contains("whatever-a-client-sends"),
        "labels stay bounded"
    );
    assert!(
        sample(
            &text,
            "partition_operation_latencies_micro_count{operation=\"get\"}"
        ) >= Some(1.0)
    );
    assert!(
        sample(
            &text,
            "partition_operation_latencies_micro_count{operation=\"list\"}"
        ) >= Some(1.0)
    );
    assert_eq!(sum(&text, "firescroll_entries_applied_total{"), 2.0);
    assert_eq!(
        sample(
            &text,
            "firescroll_entry_outcomes_total{outcome=\"applied\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "firescroll_entry_outcomes_total{outcome=\"condition_failed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sum(&text, "firescroll_partition_healthy{"), 4.0);
    assert!(text.contains("firescroll_apply_lag_entries{"));
    // The in-memory buffers each say what they hold: the change of the first put (kept for
    // watches) and the second put's rejection (kept for its waiting writer).
    assert!(sum(&text, "firescroll_watch_history_bytes{") > 0.0);
    assert!(sum(&text, "firescroll_recent_outcomes_bytes{") > 0.0);
    assert_eq!(
        sum(&text, "firescroll_applied_offset{"),
        1.0 - 3.0,
        "one partition at offset 1, three at -1"
    );
    assert!(sample(&text, "resp_latencies_micro_count{command=\"get\"}") >= Some(1.0));
    assert!(sample(&text, "resp_latencies_micro_count{command=\"other\"}") >= Some(1.0));
    assert!(!text.contains("NOSUCHCMD"));

    let partitions = node.partitions();
    assert_eq!(partitions.len(), 4);
    let written: Vec<_> = partitions.iter().filter(|p| p["records"] == 1).collect();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["applied_offset"], 1);
    assert_eq!(written[0]["health"]["state"], "serving");
    assert_eq!(written[0]["digest"].as_str().unwrap().len(), 64);
}

#[test]
fn the_read_index_budget_is_node_wide_and_reads_stay_correct_beyond_it() {
    // 4 partitions share 8 KiB: 2 KiB each. One partition gets far more than that.
    let node = Node::start_with(&[("READ_INDEX_MAX_BYTES", "8192")]);
    let pk_partition = |pk: &str| firescroll::model::partition_of(pk, 4);
    let big: Vec<_> = (0..100)
        .map(|i| json!({"pk": "big", "sk": format!("{i:03}"), "data": {"pad": "y".repeat(50)}}))
        .collect();
    node.post("/records/put", json!({"Records": big, "wait": true}));
    let small_pk = (0..)
        .map(|i| format!("s{i}"))
        .find(|pk| pk_partition(pk) != pk_partition("big"))
        .unwrap();
    node.post(
        "/records/put",
        json!({"Records": [{"pk": small_pk, "sk": "", "data": 1}], "wait": true}),
    );
    for report in node.partitions() {
        let partition = report["partition"].as_u64().unwrap() as u32;
        let expect_index = partition != pk_partition("big");
        assert_eq!(report["read_index"], json!(expect_index), "{report}");
    }
    // Reads are the same either way.
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": "big", "sk": "042"}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!({"pad": "y".repeat(50)}));
    let (_, got) = node.post(
        "/records/get",
        json!({"Records": [{"pk": small_pk, "sk": ""}]}),
    );
    assert_eq!(got["Records"][0]["Data"], json!(1));
}
