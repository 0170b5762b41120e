//! The host against hand-written WAT modules: good ones, and each way a plugin can be bad.

use super::*;
use std::sync::Arc;

/// The ABI's boilerplate plus `body` (more exports).
fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            {body})"#
    ))
    .unwrap()
}

fn host() -> PluginHost {
    PluginHost::new(PluginLimits {
        fuel: 1_000_000,
        memory_bytes: 1 << 20,
        ..PluginLimits::default()
    })
    .unwrap()
}

const INPUT: &[u8] = br#"{"op":"put","pk":"a","sk":"b","data":1,"current":null,"args":null}"#;

/// True when the input's first byte is `{`: reads the input the host wrote.
const FIRST_BYTE_IS_BRACE: &str = r#"(func (export "condition") (param i32 i32) (result i32)
    local.get 0 i32.load8_u i32.const 123 i32.eq)"#;

/// Returns the input unchanged.
const ECHO: &str = r#"(func (export "transform") (param i32 i32) (result i64)
    local.get 0 i64.extend_i32_u i64.const 32 i64.shl local.get 1 i64.extend_i32_u i64.or)"#;

#[test]
fn conditions_and_transforms_run_and_are_cached_by_digest() {
    let host = host();
    let plugin = host.load(&module(FIRST_BYTE_IS_BRACE)).unwrap();
    assert_eq!(plugin.kind, PluginKind::Condition);
    assert_eq!(host.condition(&plugin, INPUT), Ok(true));
    assert_eq!(host.condition(&plugin, b"[]"), Ok(false));
    let again = host.load(&module(FIRST_BYTE_IS_BRACE)).unwrap();
    assert!(Arc::ptr_eq(&plugin, &again));
    assert_eq!(host.get(&plugin.digest).unwrap().digest, plugin.digest);

    let echo = host.load(&module(ECHO)).unwrap();
    assert_eq!(echo.kind, PluginKind::Transform);
    assert_eq!(host.transform(&echo, INPUT).unwrap(), INPUT);
    let both = host
        .load(&module(&format!("{FIRST_BYTE_IS_BRACE} {ECHO}")))
        .unwrap();
    assert_eq!(both.kind, PluginKind::Both);
}

#[test]
fn a_module_loaded_by_several_threads_at_once_is_compiled_once() {
    let host = Arc::new(host());
    let bytes = Arc::new(module(FIRST_BYTE_IS_BRACE));
    let start = Arc::new(std::sync::Barrier::new(8));
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let (host, bytes, start) = (host.clone(), bytes.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                host.load(&bytes).unwrap()
            })
        })
        .collect();
    let loaded: Vec<Arc<Compiled>> = loaders.into_iter().map(|t| t.join().unwrap()).collect();
    // One compile: every caller got the same compiled module (each compile makes its own).
    assert!(loaded.iter().all(|c| Arc::ptr_eq(c, &loaded[0])));
    // Nothing is left behind per module, whether it compiled or not.
    assert_eq!(host.compile_locks(), 0);
    assert!(host.load(b"not wasm").is_err());
    assert_eq!(host.compile_locks(), 0);
}

#[test]
fn every_call_starts_from_the_modules_initial_state() {
    // Each call finds its global and memory as the module declares them (zero, 4 pages), at a
    // low address, a higher one, and in pages it grows, then leaves traces in all of them and
    // grows memory: a call seeing any of that would let outcomes depend on a replica's call
    // history. (Slots keep memory mapped and reset what a call dirtied in place.)
    let host = host();
    let plugin = host
        .load(
            &wat::parse_str(
                r#"(module
                    (memory (export "memory") 4)
                    (global $calls (mut i32) (i32.const 0))
                    (func (export "alloc") (param i32) (result i32) i32.const 1024)
                    (func (export "dealloc") (param i32 i32))
                    (func (export "condition") (param i32 i32) (result i32)
                        (local $fresh i32)
                        global.get $calls i32.eqz
                        memory.size i32.const 4 i32.eq i32.and
                        i32.const 2000 i32.load i32.eqz i32.and
                        i32.const 200000 i32.load i32.eqz i32.and
                        (memory.grow (i32.const 2)) i32.const 4 i32.eq i32.and
                        i32.const 327688 i32.load i32.eqz i32.and
                        local.set $fresh
                        global.get $calls i32.const 1 i32.add global.set $calls
                        i32.const 2000 i32.const 7 i32.store
                        i32.const 200000 i32.const 7 i32.store
                        i32.const 327688 i32.const 7 i32.store
                        local.get $fresh))"#,
            )
            .unwrap(),
        )
        .unwrap();
    // Calls share stores (eight to a store): enough calls to use several, each a fresh instance.
    for call in 0..20 {
        assert_eq!(host.condition(&plugin, INPUT), Ok(true), "call {call}");
    }
    // The module does see its own traces when an instance is kept (as the bench's reuse does).
    let mut kept = host.session(&plugin).unwrap();
    assert_eq!(kept.condition(INPUT), Ok(true));
    assert_eq!(kept.condition(INPUT), Ok(false));
}

#[test]
fn more_callers_than_instance_slots_wait_and_all_finish() {
    // Two slots, four threads: idle stores hold slots for finished instances, and a caller that
    // finds none free gives those back rather than wait on them forever.
    let host = PluginHost::new(PluginLimits {
        fuel: 1_000_000,
        memory_bytes: 1 << 20,
        max_instances: 2,
        ..PluginLimits::default()
    })
    .unwrap();
    let plugin = host.load(&module(FIRST_BYTE_IS_BRACE)).unwrap();
    let failing = host
        .load(&module(
            r#"(func (export "condition") (param i32 i32) (result i32) unreachable)"#,
        ))
        .unwrap();
    std::thread::scope(|s| {
        for thread in 0..4 {
            let (host, plugin, failing) = (&host, &plugin, &failing);
            s.spawn(move || {
                for call in 0..200 {
                    assert_eq!(host.condition(plugin, INPUT), Ok(true), "{thread}/{call}");
                    if call % 7 == 0 {
                        assert!(host.condition(failing, INPUT).is_err());
                    }
                }
            });
        }
    });
    // Every slot is back: as many calls at once as there are slots can still start.
    let a = host.session(&plugin).unwrap();
    let b = host.session(&plugin).unwrap();
    drop((a, b));
}

#[test]
fn bad_modules_are_refused_with_the_reason() {
    let host = host();
    let invalid = |bytes: &[u8]| match host.load(bytes) {
        Err(PluginError::Invalid(reason)) => reason,
        Err(e) => panic!("expected an invalid plugin, got {e}"),
        Ok(_) => panic!("a bad module was accepted"),
    };
    assert!(invalid(b"\0asm garbage").contains("not a valid WebAssembly module"));
    let not_wasm = invalid(b"hello");
    assert!(not_wasm.contains("not a valid WebAssembly module"));
    assert!(!not_wasm.contains('\n'), "one line: {not_wasm}");
    let importing = wat::parse_str(
        r#"(module (import "env" "now" (func)) (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    assert!(invalid(&importing).contains("imports env::now"));
    let no_alloc = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    assert!(invalid(&no_alloc).contains("alloc"));
    assert!(invalid(&module("")).contains("`condition` or `transform`"));
    let wrong_type = module(r#"(func (export "condition") (param i32) (result i32) i32.const 1)"#);
    assert!(invalid(&wrong_type).contains("condition(ptr: i32, len: i32) -> i32"));
    let huge_memory = wat::parse_str(
        r#"(module (memory (export "memory") 100)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    let reason = invalid(&huge_memory);
    assert!(reason.contains("PLUGIN_MEMORY_BYTES"), "{reason}");
    let small = PluginHost::new(PluginLimits {
        max_module_bytes: 10,
        ..PluginLimits::default()
    })
    .unwrap();
    assert!(matches!(
        small.load(&module(ECHO)),
        Err(PluginError::Invalid(reason)) if reason.contains("limit is 10")
    ));
}

#[test]
fn runaway_plugins_fail_deterministically_and_the_host_carries_on() {
    let host = host();
    let run = |body: &str| {
        let plugin = host.load(&module(body)).unwrap();
        host.condition(&plugin, INPUT)
    };
    let looping = r#"(func (export "condition") (param i32 i32) (result i32)
        (loop $l br $l) i32.const 1)"#;
    assert_eq!(run(looping), Err(PluginFailure::OutOfFuel));
    assert_eq!(run(looping), Err(PluginFailure::OutOfFuel), "every time");
    let trapping = r#"(func (export "condition") (param i32 i32) (result i32) unreachable)"#;
    assert!(matches!(run(trapping), Err(PluginFailure::Trap(t)) if t.contains("unreachable")));
    let bomb = r#"(func (export "condition") (param i32 i32) (result i32)
        (loop $l (drop (memory.grow (i32.const 16))) br $l) i32.const 1)"#;
    assert!(
        matches!(run(bomb), Err(PluginFailure::Trap(_))),
        "{:?}",
        run(bomb)
    );
    let deep = r#"(func $f (export "condition") (param i32 i32) (result i32)
        local.get 0 local.get 1 call $f)"#;
    assert!(
        matches!(run(deep), Err(PluginFailure::Trap(t)) if t.contains("stack")),
        "{:?}",
        run(deep)
    );
    let start_loops = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func $spin (loop $l br $l)) (start $spin)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "dealloc") (param i32 i32))
            (func (export "condition") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    let plugin = host.load(&start_loops).unwrap();
    assert_eq!(
        host.condition(&plugin, INPUT),
        Err(PluginFailure::OutOfFuel)
    );
    let negative = r#"(func (export "condition") (param i32 i32) (result i32) i32.const -7)"#;
    assert_eq!(run(negative), Err(PluginFailure::Error(-7)));
    let two = r#"(func (export "condition") (param i32 i32) (result i32) i32.const 2)"#;
    assert_eq!(run(two), Err(PluginFailure::Error(2)));
    // After all that, a good plugin still runs.
    assert_eq!(run(FIRST_BYTE_IS_BRACE), Ok(true));
}

#[test]
fn transform_output_must_be_json_inside_memory() {
    let host = host();
    let transform = |body: &str, input: &[u8]| {
        let plugin = host.load(&module(body)).unwrap();
        host.transform(&plugin, input)
    };
    assert!(matches!(
        transform(ECHO, b"not json"),
        Err(PluginFailure::Output(m)) if m.contains("not one JSON value")
    ));
    let outside = r#"(func (export "transform") (param i32 i32) (result i64)
        i64.const 0x7fff000000000010)"#;
    assert!(matches!(
        transform(outside, INPUT),
        Err(PluginFailure::Output(m)) if m.contains("outside memory")
    ));
    let error = r#"(func (export "transform") (param i32 i32) (result i64) i64.const -1)"#;
    assert_eq!(transform(error, INPUT), Err(PluginFailure::Error(-1)));
}

#[test]
fn input_json_carries_everything_verbatim() {
    let input = Input {
        op: "put",
        pk: "p\"k",
        sk: "",
        data: Some(r#"{"a":[1,2]}"#),
        current: Some(crate::model::StoredRecord {
            data_json: br#"{"a":[1]}"#,
            created_at_ms: 5,
            updated_at_ms: 6,
            expires_at_ms: None,
            own_deadline: false,
        }),
        args: Some(r#"{"v":"1.2.0"}"#),
    };
    let value: serde_json::Value = serde_json::from_slice(&input.to_json()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"op":"put","pk":"p\"k","sk":"","data":{"a":[1,2]},
            "current":{"data":{"a":[1]},"_created_at":5,"_updated_at":6},"args":{"v":"1.2.0"}})
    );
    let expiring = Input {
        current: Some(crate::model::StoredRecord {
            data_json: b"1",
            created_at_ms: 5,
            updated_at_ms: 6,
            expires_at_ms: Some(9),
            own_deadline: false,
        }),
        ..input
    };
    let value: serde_json::Value = serde_json::from_slice(&expiring.to_json()).unwrap();
    assert_eq!(
        value["current"],
        serde_json::json!({"data":1,"_created_at":5,"_updated_at":6,"_expires_at":9})
    );
    let bare = Input {
        op: "delete",
        pk: "a",
        sk: "b",
        data: None,
        current: None,
        args: None,
    };
    let value: serde_json::Value = serde_json::from_slice(&bare.to_json()).unwrap();
    assert_eq!(value["current"], serde_json::Value::Null);
    assert_eq!(value["data"], serde_json::Value::Null);
}

#[test]
fn digests_print_and_parse() {
    let d = Digest::of(b"abc");
    let text = d.to_string();
    assert_eq!(
        text,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(text.parse::<Digest>().unwrap(), d);
    assert_eq!(format!("sha256:{text}").parse::<Digest>().unwrap(), d);
    assert!("abc".parse::<Digest>().is_err());
    // 64 bytes that are not 64 hex digits, with a character of two bytes where a pair of
    // digits would be cut (a foreign producer's entry may name anything).
    let cut = format!("a\u{e9}{}", "a".repeat(61));
    assert_eq!(cut.len(), 64);
    assert!(cut.parse::<Digest>().is_err());
    assert!(format!("sha256:{cut}").parse::<Digest>().is_err());
    assert!("+f".repeat(32).parse::<Digest>().is_err());
}
