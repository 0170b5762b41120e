use super::*;
use crate::model::StoredRecord;

fn stored_record(data: &str, created: i64, updated: i64) -> StoredRecord<'_> {
    StoredRecord {
        data_json: data.as_bytes(),
        created_at_ms: created,
        updated_at_ms: updated,
        expires_at_ms: None,
        own_deadline: false,
    }
}

fn eval(source: &str, stored: Option<(&str, i64, i64)>) -> Result<bool, CondError> {
    let conds = Conditions::new();
    let program = conds.check(source)?;
    let subject =
        Subject::new("pk1", "sk1", stored.map(|(d, c, u)| stored_record(d, c, u))).unwrap();
    conds.eval(source, &program, &subject, &mut Budget::new(ENTRY_LIMITS))
}

#[test]
fn firescroll_idioms() {
    let hey = Some((r#"{"hey":"ho"}"#, 10, 20));
    let lets = Some((r#"{"lets":"go"}"#, 10, 20));
    assert_eq!(eval(r#"data.hey == "ho""#, hey), Ok(true));
    assert_eq!(eval(r#"data.hey == "ho""#, lets), Ok(false));
    assert_eq!(eval("data == null", None), Ok(true));
    assert_eq!(eval("data == nil", None), Ok(true));
    assert_eq!(eval("data == null", hey), Ok(false));
    assert_eq!(eval("_updated_at > 1", hey), Ok(true));
    assert_eq!(
        eval("_created_at == 10 && _updated_at == 20", hey),
        Ok(true)
    );
    assert_eq!(eval(r#"pk == "pk1" && sk == "sk1""#, None), Ok(true));
    assert_eq!(eval("undefined_name == nil", None), Ok(true));
}

#[test]
fn numbers_compare_across_int_and_float() {
    let v = Some((
        r#"{"version":3,"ratio":0.5,"big":18446744073709551615}"#,
        1,
        1,
    ));
    assert_eq!(eval("data.version == 3", v), Ok(true));
    assert_eq!(eval("data.ratio < 1", v), Ok(true));
    assert_eq!(eval("data.big > 1", v), Ok(true));
}

#[test]
fn never_boolean_is_refused_with_firescroll_message() {
    let err = Conditions::new().check("pk").unwrap_err();
    assert_eq!(
        err.to_string(),
        "error compiling `if` statement `pk`: expected bool, but got string"
    );
    assert!(Conditions::new().check("data").is_err());
    assert!(Conditions::new().check("1 + 2").is_err());
    // Data-dependent results are allowed: they may be booleans at apply time.
    assert!(Conditions::new().check("data.enabled").is_ok());
}

#[test]
fn syntax_errors_and_unbounded_work_are_refused() {
    assert!(matches!(
        Conditions::new().check("1 +"),
        Err(CondError::Invalid { .. })
    ));
    // Ranges are bounded by the budget: a small one works, a huge one is refused on arrival.
    assert_eq!(eval("all(1..10, # > 0)", None), Ok(true));
    let err = Conditions::new()
        .check("all(1..100000000000, # > 0)")
        .unwrap_err();
    assert!(err.to_string().contains("budget exceeded"), "{err}");
    // `..` inside a string is fine.
    assert_eq!(eval(r#"pk != "a..b""#, None), Ok(true));
    assert!(
        Conditions::new()
            .check(&"a".repeat(MAX_CONDITION_BYTES + 1))
            .is_err()
    );
}

#[test]
fn runtime_errors_and_non_booleans_at_apply_are_errors() {
    let v = Some((r#"{"x":"text","enabled":"yes"}"#, 1, 1));
    assert!(matches!(
        eval("data.x > 1", v),
        Err(CondError::Runtime { .. })
    ));
    let err = eval("data.enabled", v).unwrap_err();
    assert!(
        err.to_string().contains("returned string, not a boolean"),
        "{err}"
    );
}

#[test]
fn list_filters_from_records_http() {
    let conds = Conditions::new();
    let source = r#"sk > "sk3" && sk not contains "_a""#;
    let program = conds.check(source).unwrap();
    let keep = |sk: &str| {
        let subject =
            Subject::new("pk3", sk, Some(stored_record(r#"{"lets":"go"}"#, 1, 1))).unwrap();
        conds
            .eval(source, &program, &subject, &mut Budget::new(LIST_LIMITS))
            .unwrap()
    };
    assert!(keep("sk3_1"));
    assert!(!keep("sk3_a"));
    assert!(keep("sk3a"));
    assert!(!keep("sk3"));
}

#[test]
fn a_condition_that_explodes_only_on_stored_data_is_a_budget_rejection() {
    // Accepted on arrival (`data.x == 1` is false without a record)...
    let source = r#"data.x == 1 && repeat(repeat("aaaaaaaaaa", 1000000), 1000000) == """#;
    assert!(Conditions::new().check(source).is_ok());
    // ...and rejected, not aborted, at apply.
    let err = eval(source, Some((r#"{"x":1}"#, 1, 1))).unwrap_err();
    assert!(matches!(err, CondError::BudgetExceeded { .. }), "{err:?}");
    assert!(err.to_string().contains("budget exceeded"), "{err}");
}

#[test]
fn nested_loops_over_stored_arrays_end_at_the_same_step() {
    let items: Vec<u32> = (0..3000).collect();
    let data = serde_json::json!({ "items": items }).to_string();
    let source = "all(data.items, {all(data.items, {all(data.items, {# >= 0})})})";
    let conds = Conditions::new();
    let program = conds.check(source).unwrap();
    let spent = || {
        let subject = Subject::new("p", "s", Some(stored_record(&data, 1, 1))).unwrap();
        let mut budget = Budget::new(ENTRY_LIMITS);
        let result = conds.eval(source, &program, &subject, &mut budget);
        (result, budget.steps_used(), budget.bytes_used())
    };
    let first = spent();
    assert!(
        matches!(first.0, Err(CondError::BudgetExceeded { .. })),
        "{:?}",
        first.0
    );
    assert_eq!(first, spent());
}

#[test]
fn deep_or_long_expressions_are_refused_without_crashing() {
    let conds = Conditions::new();
    for source in [
        format!("{}1{} == 1", "[".repeat(600), "]".repeat(600)),
        format!("{}1{} == 1", "(".repeat(1500), ")".repeat(1500)),
        format!("data{} == 1", ".a".repeat(2000)),
    ] {
        let err = conds.check(&source).unwrap_err();
        assert!(matches!(err, CondError::Invalid { .. }), "{err:?}");
    }
}

#[test]
fn reading_a_member_of_nothing_says_what_to_write_instead() {
    // A missing record's data is nil: `data.x` fails (as in Go FireScroll), saying how to ask.
    let err = eval("data.x > 0", None).unwrap_err().to_string();
    assert!(err.contains(r#"cannot fetch "x" from nil"#), "{err}");
    assert!(err.contains("data?.x"), "{err}");
    assert_eq!(eval("data?.x == nil", None), Ok(true));
    let number = Some((r#"{"n":1}"#, 1, 1));
    let err = eval("data.n.y == 1", number).unwrap_err().to_string();
    assert!(err.contains(r#"cannot fetch "y" from an integer"#), "{err}");
    // A computed key of any size is named by its start: the message (kept in the entry's
    // outcome on every replica) stays short.
    let err = eval(r#"data[repeat("k", 100000)] == 1"#, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"cannot fetch "kkk"#) && err.len() < 600,
        "{}",
        err.len()
    );
}
