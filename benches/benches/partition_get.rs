//! Point reads from one partition of 100k records (16-byte keys, 100-byte values): the cost under
//! every HTTP and Redis get. Also prints p50/p99 of single gets measured one by one.

use criterion::{Criterion, criterion_group, criterion_main};
use firescroll::engine::ReadIndex;
use firescroll::store::encode_key;
use firescroll_benches::loaded_partition;
use std::hint::black_box;
use std::time::Instant;

const RECORDS: u64 = 100_000;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn partition_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (keys, partition) = loaded_partition(dir.path(), RECORDS);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    c.bench_function("partition_get_random_100k_memtable", |b| {
        b.iter(|| {
            let pk = &keys[(xorshift(&mut rng) % RECORDS) as usize];
            black_box(partition.get(pk, "").unwrap().unwrap())
        })
    });
    // What single-key reads use: the in-memory index the applier keeps.
    let index = ReadIndex::load(&partition, 1 << 30).unwrap();
    c.bench_function("read_index_get_random_100k", |b| {
        b.iter(|| {
            let pk = &keys[(xorshift(&mut rng) % RECORDS) as usize];
            black_box(index.get(&encode_key(pk, "")))
        })
    });
    partition.flush_memtable().unwrap();

    c.bench_function("partition_get_random_100k", |b| {
        b.iter(|| {
            let pk = &keys[(xorshift(&mut rng) % RECORDS) as usize];
            black_box(partition.get(pk, "").unwrap().unwrap())
        })
    });
    c.bench_function("partition_get_miss", |b| {
        b.iter(|| black_box(partition.get("no-such-key-0000", "").unwrap()))
    });

    // Latency distribution of individual gets (criterion reports means).
    let mut samples: Vec<u64> = (0..200_000)
        .map(|_| {
            let pk = &keys[(xorshift(&mut rng) % RECORDS) as usize];
            let started = Instant::now();
            black_box(partition.get(pk, "").unwrap());
            started.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "partition_get_random_100k latency: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs",
        at(0.50) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0,
        at(0.999) as f64 / 1000.0
    );
}

criterion_group!(benches, partition_get);
criterion_main!(benches);
