//! Apply throughput: single-op entries applied and committed in batches, and end to end from the
//! embedded log (append everything, then time the engine until it has applied it all).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firescroll::cond::Conditions;
use firescroll::engine::{Engine, EngineConfig, PluginResolver, Resolved, Rules, apply_and_commit};
use firescroll::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use firescroll::log::{Append, MutationLog};
use firescroll::metrics::Metrics;
use firescroll::model::Position;
use firescroll::plugins::{Digest, PluginHost, PluginLimits};
use firescroll::store::Store;
use firescroll_benches::{
    PARTITIONS, example_plugin, single_op_deletes, single_op_entries,
    single_op_entries_with_plugin, single_op_json_edits,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../node/src/allocator.rs"]
mod allocator;

/// The allocator the `firescroll` binary runs with.
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

const BATCH: u64 = 1024;

/// Single-op puts: without a condition, with an expr `if`, and with a plugin condition (the
/// `semver-gate` example, when scripts/build-plugins.sh has built it); and JSON edits at a path
/// of documents already stored.
fn apply_batches(c: &mut Criterion) {
    let conds = Conditions::new();
    let gate = example_plugin("semver-gate");
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH));
    // (name, one batch's entries, batches per iteration, whether each batch starts without its
    // records, entries applied once before timing): every iteration applies BATCH entries.
    let mut runs = vec![
        (
            "batch_of_1024_single_op_puts",
            single_op_entries(BATCH, None),
            1,
            false,
            Vec::new(),
        ),
        (
            "batch_of_1024_puts_with_if",
            single_op_entries(BATCH, Some("data == null || data.version == 3")),
            1,
            false,
            Vec::new(),
        ),
        (
            "batch_of_1024_json_edits",
            single_op_json_edits(BATCH),
            1,
            false,
            single_op_entries(BATCH, None),
        ),
    ];
    match &gate {
        Some(module) => runs.push((
            "batch_of_1024_puts_with_if_plugin",
            single_op_entries_with_plugin(BATCH, &Digest::of(module).to_string()),
            1,
            true,
            Vec::new(),
        )),
        None => eprintln!(
            "plugins/dist/semver-gate.wasm is missing: run scripts/build-plugins.sh to measure apply with a plugin"
        ),
    }
    // What a batch costs beyond its entries: four entries per batch is what each of four
    // partitions gets from 50 connections writing one by one.
    runs.push((
        "batch_of_4_single_op_puts_x256",
        single_op_entries(4, None),
        BATCH / 4,
        false,
        Vec::new(),
    ));
    for (name, entries, per_iter, fresh, setup) in runs {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let opened = Store::open(dir.path(), PARTITIONS).unwrap();
                let store = opened.partition(0).unwrap();
                let plugins = PluginResolver::new(
                    Arc::new(PluginHost::new(PluginLimits::default()).unwrap()),
                    opened.plugins().unwrap(),
                );
                if let Some(module) = &gate {
                    let digest = Digest::of(module).to_string();
                    plugins.store().put_module(&digest, module).unwrap();
                    // Compiled before timing, as a node does at upload or first use.
                    assert!(matches!(
                        plugins.resolve(&digest.parse().expect("a digest")),
                        Resolved::Ready(_)
                    ));
                }
                let rules = Rules {
                    conds: &conds,
                    plugins: &plugins,
                    partitions: PARTITIONS,
                    index: None,
                    reject_at: &Default::default(),
                };
                if !setup.is_empty() {
                    apply_and_commit(&store, rules, &setup).unwrap();
                }
                // The plugin run's puts pass their gate only for new records: each iteration
                // starts without them (deleted by entries applied outside the timed part), so
                // every entry is checked and applied.
                let deletes = if fresh {
                    single_op_deletes(entries.len() as u64)
                } else {
                    Vec::new()
                };
                let mut timed = Duration::ZERO;
                for _ in 0..iters * per_iter {
                    if fresh {
                        apply_and_commit(&store, rules, &deletes).unwrap();
                    }
                    let started = Instant::now();
                    let batch = apply_and_commit(&store, rules, &entries).unwrap();
                    timed += started.elapsed();
                    assert!(batch.waiting_for.is_none());
                    if fresh || !setup.is_empty() {
                        assert!(batch.rejections.is_empty(), "{:?}", batch.rejections[0]);
                    }
                }
                timed
            })
        });
    }
    group.finish();
}

/// Appends `n` single-op entries to partition 0 of a fresh embedded log, then starts an engine
/// and measures how long it takes to apply them all.
fn from_embedded_log(n: u64) -> Duration {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            EmbeddedLog::open(EmbeddedLogConfig {
                dir: dir.path().join("log"),
                partitions: PARTITIONS,
                segment_bytes: 64 << 20,
                max_entry_bytes: 1 << 20,
                journal_bytes: firescroll::log::embedded::DEFAULT_JOURNAL_BYTES,
            })
            .unwrap(),
        );
        let entries: Vec<Append> = single_op_entries(n, None)
            .into_iter()
            .map(|r| Append {
                key: String::new(),
                payload: r.payload,
            })
            .collect();
        for chunk in entries.chunks(4096) {
            log.append(0, chunk.to_vec()).await.unwrap();
        }
        let store = Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
        let started = Instant::now();
        let metrics = Arc::new(Metrics::new());
        let dyn_log: Arc<dyn firescroll::log::MutationLog> = log.clone();
        let plugins = firescroll::engine::Plugins::open(
            &store,
            &dyn_log,
            firescroll::plugins::PluginLimits::default(),
            &metrics,
        )
        .expect("plugins set up");
        let (engine, tasks) = Engine::start(
            store,
            log.clone(),
            Arc::new(Conditions::new()),
            plugins.resolver,
            metrics,
            EngineConfig::default(),
        );
        engine
            .wait_applied(
                Position {
                    partition: 0,
                    offset: n - 1,
                },
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        let elapsed = started.elapsed();
        engine.shutdown();
        tasks.iter().for_each(|t| t.abort());
        elapsed
    })
}

fn apply_from_log(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut group = c.benchmark_group("apply_from_embedded_log");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N));
    group.bench_function("100k_single_op_entries", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| from_embedded_log(N)).sum())
    });
    group.finish();
}

criterion_group!(benches, apply_batches, apply_from_log);
criterion_main!(benches);
