//! Log entry encoding and decoding: every write is encoded once by the node that accepts it and
//! decoded once by every replica that applies it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firescroll::model::LogEntry;
use std::hint::black_box;

#[path = "../../node/src/allocator.rs"]
mod allocator;

/// The allocator the `firescroll` binary runs with.
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

/// A pipelined Redis client's counters in one partition: four `INCR`s share an entry.
const COUNTERS: &[u8] = br#"{"v":1,"ts_ms":1796378819918,"ops":[{"op":"incr","pk":"counter:000000019438","sk":"","data":1},{"op":"incr","pk":"counter:000000006508","sk":"","data":1},{"op":"incr","pk":"counter:000000005268","sk":"","data":1},{"op":"incr","pk":"counter:000000012388","sk":"","data":1}]}"#;

/// One HTTP put of a ~100-byte document.
const PUT: &[u8] = br#"{"v":1,"ts_ms":1796378819918,"ops":[{"op":"put","pk":"svc:checkout","sk":"flags","data":{"enabled":true,"rollout":0.25,"owner":"payments","regions":["iad","fra"],"version":"1.4.2"}}]}"#;

fn entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("entry");
    for (name, bytes, ops) in [("counters_x4", COUNTERS, 4), ("put", PUT, 1)] {
        group.throughput(Throughput::Elements(ops));
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| LogEntry::decode(black_box(bytes)).unwrap())
        });
        let entry = LogEntry::decode(bytes).unwrap();
        group.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| black_box(&entry).encode())
        });
    }
    group.finish();
}

criterion_group!(benches, entries);
criterion_main!(benches);
