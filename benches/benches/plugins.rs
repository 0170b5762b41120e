//! Plugin cost per call: a fresh instance per call (what apply does) against one kept instance.
//! Uses the example plugins built by scripts/build-plugins.sh. Apply throughput with a plugin
//! condition is in the `apply` bench.

use criterion::{Criterion, criterion_group, criterion_main};
use firescroll::plugins::{Input, PluginHost, PluginLimits};
use firescroll_benches::example_plugin;
use std::hint::black_box;

#[path = "../../node/src/allocator.rs"]
mod allocator;

/// The allocator the `firescroll` binary runs with.
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

fn example(name: &str) -> Vec<u8> {
    example_plugin(name).unwrap_or_else(|| {
        panic!("plugins/dist/{name}.wasm is missing: run scripts/build-plugins.sh")
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
        current: Some(firescroll::model::StoredRecord {
            data_json: stored.as_bytes(),
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: None,
            own_deadline: false,
        }),
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

criterion_group!(benches, per_call);
criterion_main!(benches);
