//! The embedded log does not grow without bound: once entries are applied and the store is
//! durable, whole segments are deleted, and the node restarts fine from what is left.

use crate::common;

use common::Node;
use serde_json::json;
use std::time::{Duration, Instant};

fn segments(node: &Node, partition: u32) -> usize {
    std::fs::read_dir(node.data.join("log").join(format!("p{partition}")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

#[test]
fn applied_segments_are_released_and_restart_still_works() {
    let mut node = Node::start_with(&[("LOG_SEGMENT_BYTES", "4096"), ("PARTITIONS", "1")]);
    let mut last = json!(null);
    for i in 0..300 {
        let (status, reply) = node.post(
            "/records/put",
            json!({"Records":[{"pk":"k","sk":format!("{i:04}"),"data":{"i":i,"pad":"x".repeat(100)}}]}),
        );
        assert_eq!(status, 200, "{reply}");
        last = reply["Positions"][0].clone();
    }
    // 300 entries of ~200 bytes are ~15 segments of 4 KiB; the checkpoint (every 200 ms in tests)
    // must leave only the segment being written, or close to it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = &node.partitions()[0];
        if report["log_start"].as_u64().unwrap() > 250 && segments(&node, 0) <= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log never truncated: {report}, {} segments",
            segments(&node, 0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.kill9();
    node.spawn();
    let (status, page) = node.post("/records/list", json!({"pk":"k","min_offsets":[last]}));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["Records"].as_array().unwrap().len(), 300);
    let (status, ready) = node.get_url(&node.url("/ready"));
    assert_eq!((status, ready.as_str()), (200, "ok"));
}
