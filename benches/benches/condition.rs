//! `if` evaluation: building the subject from stored JSON and running a cached program.

use criterion::{Criterion, criterion_group, criterion_main};
use firescroll::cond::{Budget, Conditions, ENTRY_LIMITS, Subject};
use firescroll_benches::value_100b;
use std::hint::black_box;

fn condition(c: &mut Criterion) {
    let conds = Conditions::new();
    let stored = value_100b(7);
    for (name, source) in [
        ("if_data_is_null", "data == null"),
        (
            "if_version_and_flag",
            "data.version == 3 && data.enabled == true",
        ),
        (
            "if_string_ops",
            r#"sk startsWith "feature/" && sk not contains "_old""#,
        ),
    ] {
        let program = conds.check(source).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                let subject = Subject::new(
                    "flags",
                    "feature/checkout",
                    Some(firescroll::model::StoredRecord {
                        data_json: stored.as_bytes(),
                        created_at_ms: 1,
                        updated_at_ms: 2,
                        expires_at_ms: None,
                        own_deadline: false,
                    }),
                )
                .unwrap();
                let mut budget = Budget::new(ENTRY_LIMITS);
                black_box(conds.eval(source, &program, &subject, &mut budget).unwrap())
            })
        });
    }
    c.bench_function("if_compile_cached", |b| {
        b.iter(|| {
            black_box(
                conds
                    .compile("data.version == 3 && data.enabled == true")
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, condition);
criterion_main!(benches);
