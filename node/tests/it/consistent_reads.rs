//! A read of several records of one partition sees whole batches: never half of an atomic
//! `/records/batch` over HTTP, nor half of an `HSET` of several fields with `HMGET`, while
//! batches keep coming.

use crate::common;

use common::Node;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};

const SKS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

#[test]
fn multi_record_reads_never_see_half_a_batch() {
    let node = Node::start();
    let write = |n: u64| {
        let records: Vec<Value> = SKS
            .iter()
            .map(|sk| json!({"op": "put", "pk": "flags", "sk": sk, "data": n}))
            .collect();
        let (status, body) = node.post("/records/batch", json!({"Records": records}));
        assert_eq!(status, 200, "{body}");
    };
    write(0);
    // The fields of one hash are records of one pk: one `HSET` of them all is one entry.
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let hset = |con: &mut redis::Connection, n: u64| {
        let pairs: Vec<(&str, u64)> = SKS.iter().map(|sk| (*sk, n)).collect();
        let _: u64 = redis::cmd("HSET")
            .arg("hflags")
            .arg(&pairs)
            .query(con)
            .unwrap();
    };
    hset(&mut redis, 0);
    let stop = AtomicBool::new(false);
    let (http_reads, redis_reads) = std::thread::scope(|scope| {
        let http = scope.spawn(|| {
            let get: Vec<Value> = SKS
                .iter()
                .map(|sk| json!({"pk": "flags", "sk": sk}))
                .collect();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = node.post("/records/get", json!({"Records": get}));
                assert_eq!(status, 200, "{body}");
                let values: Vec<&Value> = body["Records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| &r["Data"])
                    .collect();
                assert_eq!(values.len(), SKS.len(), "{body}");
                assert!(
                    values.iter().all(|v| *v == values[0]),
                    "half a batch: {body}"
                );
                reads += 1;
            }
            reads
        });
        let mgets = scope.spawn(|| {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", node.resp))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let values: Vec<String> = redis::cmd("HMGET")
                    .arg("hflags")
                    .arg(&SKS)
                    .query(&mut con)
                    .unwrap();
                assert!(
                    values.iter().all(|v| *v == values[0]),
                    "half an HSET: {values:?}"
                );
                reads += 1;
            }
            reads
        });
        for n in 1..=300 {
            write(n);
            hset(&mut redis, n);
        }
        stop.store(true, Ordering::Relaxed);
        (http.join().unwrap(), mgets.join().unwrap())
    });
    assert!(
        http_reads > 0 && redis_reads > 0,
        "reads ran: {http_reads} over HTTP, {redis_reads} with HMGET"
    );
    // And the last batch is what both read now.
    let values: Vec<String> = redis::cmd("HMGET")
        .arg("hflags")
        .arg(&SKS)
        .query(&mut redis)
        .unwrap();
    assert!(values.iter().all(|v| v == "300"), "{values:?}");
}
