//! Plugin cost per call — a fresh instance per call (what apply does) against one kept instance —
//! and apply throughput with a plugin condition, an expr `if`, and neither. Uses the example
//! plugins built by scripts/build-plugins.sh.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firescroll::cond::Conditions;
use firescroll::engine::{PluginResolver, Resolved, apply_and_commit};
use firescroll::log::LogRecord;
use firescroll::model::LogEntry;
use firescroll::plugins::{Input, PluginHost, PluginLimits};
use firescroll::store::Store;
use firescroll_benches::{PARTITIONS, single_op_entries};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-plugins.sh first",
            path.display()
        )
    })
}

fn per_call(c: &mut Criterion) {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let gate = host.load(&example("semver-gate")).unwrap();
    let patch = host.load(&example("merge-patch")).unwrap();
    let stored = r#"{"version":"1.2.0","enabled":true,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let input = Input {
        op: "put",
        pk: "svc",
        sk: "config",
        data: Some(r#"{"version":"1.3.0","enabled":false}"#),
        current: Some((stored.as_bytes(), 1, 2)),
        args: Some(r#"{"max":"2.0.0"}"#),
    }
    .to_json();
    c.bench_function("plugin_condition_new_instance", |b| {
        b.iter(|| black_box(host.condition(&gate, &input).unwrap()))
    });
    let mut session = host.session(&gate).unwrap();
    c.bench_function("plugin_condition_reused_instance", |b| {
        b.iter(|| black_box(session.condition(&input).unwrap()))
    });
    drop(session);
    c.bench_function("plugin_transform_merge_patch_new_instance", |b| {
        b.iter(|| black_box(host.transform(&patch, &input).unwrap()))
    });
}

/// 1024 single-op puts, each checked by the semver-gate plugin.
fn entries_with_plugin(digest: &str) -> Vec<LogRecord> {
    single_op_entries(1024, None)
        .into_iter()
        .map(|record| {
            let mut entry = LogEntry::decode(&record.payload).unwrap();
            entry.ops[0].if_plugin = Some(digest.to_string());
            LogRecord {
                offset: record.offset,
                payload: entry.encode(),
            }
        })
        .collect()
}

fn apply_with_plugin(c: &mut Criterion) {
    let conds = Conditions::new();
    let module = example("semver-gate");
    let digest = firescroll::plugins::Digest::of(&module).to_string();
    let mut group = c.benchmark_group("apply_condition");
    group.throughput(Throughput::Elements(1024));
    let runs = [
        ("none", single_op_entries(1024, None)),
        (
            "expr_if",
            single_op_entries(1024, Some("data == null || data.version == 3")),
        ),
        ("plugin_semver_gate", entries_with_plugin(&digest)),
    ];
    for (name, entries) in runs {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path(), PARTITIONS).unwrap();
                let partition = store.partition(0).unwrap();
                let plugins = PluginResolver::new(
                    Arc::new(PluginHost::new(PluginLimits::default()).unwrap()),
                    store.plugins().unwrap(),
                );
                plugins.store().put_module(&digest, &module).unwrap();
                // Compiled before timing: a node compiles a module once, at upload or first use.
                assert!(matches!(plugins.resolve(&digest), Resolved::Ready(_)));
                let started = Instant::now();
                for _ in 0..iters {
                    let batch =
                        apply_and_commit(&partition, &conds, &plugins, PARTITIONS, &entries)
                            .unwrap();
                    assert!(batch.waiting_for.is_none());
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_call, apply_with_plugin);
criterion_main!(benches);
