//! Evaluation budgets (FireScroll addition): every hostile program ends with `BudgetExceeded`
//! instead of exhausting memory, time or the stack, at the same point on every run.

use expr::{Budget, Context, Error, Limits, Value, compile, compile_bounded, run, run_bounded};

const LIMITS: Limits = Limits {
    steps: 1_000_000,
    bytes: 64 << 20,
    depth: 256,
    value_depth: 128,
};

fn run_with(code: &str, ctx: &Context, limits: Limits) -> (Result<Value, Error>, Budget) {
    let program = compile_bounded(code, limits.depth).expect("compiles");
    let mut budget = Budget::new(limits);
    let result = run_bounded(&program, ctx, &mut budget);
    (result, budget)
}

fn exceeded(code: &str, ctx: &Context) -> String {
    match run_with(code, ctx, LIMITS).0 {
        Err(Error::BudgetExceeded(reason)) => reason,
        other => panic!("{code}: expected BudgetExceeded, got {other:?}"),
    }
}

#[test]
fn ordinary_programs_give_what_run_gives() {
    let mut ctx = Context::default();
    ctx.insert("data", Value::Map([("x".to_string(), Value::Integer(2))].into_iter().collect()));
    for code in [
        "data.x == 2",
        "data.y == nil",
        "all([1, 2, 3], {# > 0})",
        "len(filter(1..100, {# % 2 == 0})) == 50",
        "sort([3, 1, 2])[0] == 1",
        "repeat(\"ab\", 3) == \"ababab\"",
        "join(split(\"a,b,c\", \",\"), \"-\") == \"a-b-c\"",
        "uniq([1, 1, 2]) == [1, 2]",
        "data?.x?.y == nil",
        "data[\"x\"] + 1 == 3",
    ] {
        let expected = run(&compile(code).unwrap(), &ctx).unwrap();
        let (got, budget) = run_with(code, &ctx, LIMITS);
        assert_eq!(got.unwrap(), expected, "{code}");
        assert!(budget.steps_used() > 0 && budget.bytes_used() > 0, "{code} charged nothing");
    }
}

#[test]
fn huge_allocations_are_refused_before_they_happen() {
    let ctx = Context::default();
    for code in [
        r#"repeat(repeat("aaaaaaaaaa", 1000000), 1000000) == """#,
        "len(1..9000000000000000000) > 0",
        r#"len(replace(repeat("a", 1000000), "a", repeat("b", 1000))) > 0"#,
        r#"len(join(map(1..100000, {repeat("x", 10000)}), "")) > 0"#,
    ] {
        let reason = exceeded(code, &ctx);
        assert!(reason.contains("budget exceeded"), "{code}: {reason}");
    }
}

#[test]
fn doubling_strings_runs_out_of_bytes() {
    let mut code = String::from("let s0 = \"aaaaaaaaaaaaaaaa\";");
    for i in 1..64 {
        code.push_str(&format!("let s{i} = s{} + s{};", i - 1, i - 1));
    }
    code.push_str("len(s63) > 0");
    assert!(exceeded(&code, &Context::default()).contains("bytes"));
}

#[test]
fn nested_loops_run_out_of_steps() {
    let code = "all(1..1000, {all(1..1000, {all(1..1000, {# > 0})})})";
    assert!(exceeded(code, &Context::default()).contains("steps"));
}

#[test]
fn superlinear_functions_are_charged_for_their_comparisons() {
    // uniq over distinct values compares each with all kept so far: n^2 / 2.
    let (result, _) = run_with(
        "len(uniq(1..5000)) > 0",
        &Context::default(),
        Limits { steps: 1_000_000, ..LIMITS },
    );
    assert!(matches!(result, Err(Error::BudgetExceeded(_))), "{result:?}");
}

#[test]
fn deep_values_are_refused() {
    // reduce can nest arrays one level per element.
    let reason = exceeded("len(reduce(1..1000, [#acc], [])) > 0", &Context::default());
    assert!(reason.contains("nested"), "{reason}");
}

#[test]
fn deep_programs_are_refused_at_compile_without_overflowing_the_stack() {
    for code in [
        format!("{}1{}", "[".repeat(2000), "]".repeat(2000)),
        format!("{}1{}", "(".repeat(2000), ")".repeat(2000)),
        format!("{}true", "!".repeat(4000)),
        format!("data{}", ".a".repeat(2000)),
        format!("1{}", " + 1".repeat(1000)),
        format!("{}1", "true ? 1 : ".repeat(500)),
    ] {
        // A thread with a small stack, like an async worker's: compiling runs on its own stack.
        let code2 = code.clone();
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || compile_bounded(&code2, 256).map(|_| ()))
            .unwrap()
            .join()
            .expect("compiling did not crash the thread");
        assert!(result.is_err(), "{}... compiled", &code[..20]);
    }
}

#[test]
fn moderately_deep_programs_evaluate_on_a_small_stack() {
    let chain = format!("1{} > 0", " + 1".repeat(200));
    let result = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let program = compile_bounded(&chain, 256).unwrap();
            run_bounded(&program, &Context::default(), &mut Budget::new(LIMITS))
        })
        .unwrap()
        .join()
        .expect("evaluating did not crash the thread");
    assert_eq!(result.unwrap(), Value::Bool(true));
}

#[test]
fn the_same_program_stops_at_the_same_step_every_time() {
    let code = "all(1..100000, {# < 0 || # > 0})";
    let limits = Limits { steps: 12_345, ..LIMITS };
    let (first, b1) = run_with(code, &Context::default(), limits);
    let (second, b2) = run_with(code, &Context::default(), limits);
    assert!(matches!(first, Err(Error::BudgetExceeded(_))));
    assert!(matches!(second, Err(Error::BudgetExceeded(_))));
    assert_eq!((b1.steps_used(), b1.bytes_used()), (b2.steps_used(), b2.bytes_used()));
}

#[test]
fn one_budget_is_shared_by_successive_runs() {
    let program = compile_bounded("all(1..100, {# > 0})", 256).unwrap();
    let mut budget = Budget::new(Limits { steps: 1_000, ..LIMITS });
    let mut runs = 0;
    while run_bounded(&program, &Context::default(), &mut budget).is_ok() {
        runs += 1;
        assert!(runs < 100, "the budget was never spent");
    }
    assert!(runs >= 2 && budget.is_exhausted(), "runs {runs}, {budget:?}");
}

#[test]
fn in_place_member_reads_match_ordinary_evaluation() {
    let mut ctx = Context::default();
    let inner: Value = Value::Map([("b".to_string(), Value::Array(vec![1.into(), 2.into()]))].into_iter().collect());
    ctx.insert("data", Value::Map([("a".to_string(), inner)].into_iter().collect()));
    for code in [
        "data.a.b[1]",
        "data.a.b[-1]",
        "data.a.b[-9]",
        "data.a.c",
        "data.a?.c?.d",
        "data.x?.y",
        "data[\"a\"][\"b\"][0]",
    ] {
        let expected = run(&compile(code).unwrap(), &ctx);
        let got = run_with(code, &ctx, LIMITS).0;
        assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{code}");
    }
    // Errors stay errors.
    for code in ["data.a.b.c", "data.a.b[\"x\"]"] {
        assert!(run(&compile(code).unwrap(), &ctx).is_err());
        assert!(run_with(code, &ctx, LIMITS).0.is_err(), "{code}");
    }
}
