use super::*;

fn eval(source: &str, stored: Option<(&str, i64, i64)>) -> Result<bool, CondError> {
    let conds = Conditions::new();
    let program = conds.check(source)?;
    let subject = Subject::new("pk1", "sk1", stored.map(|(d, c, u)| (d.as_bytes(), c, u))).unwrap();
    conds.eval(source, &program, &subject)
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
fn syntax_errors_and_ranges_are_refused() {
    assert!(matches!(
        Conditions::new().check("1 +"),
        Err(CondError::Invalid { .. })
    ));
    assert!(matches!(
        Conditions::new().check("all(1..100000000000, # > 0)"),
        Err(CondError::Invalid { .. })
    ));
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
        let subject = Subject::new("pk3", sk, Some((br#"{"lets":"go"}"#, 1, 1))).unwrap();
        conds.eval(source, &program, &subject).unwrap()
    };
    assert!(keep("sk3_1"));
    assert!(!keep("sk3_a"));
    assert!(keep("sk3a"));
    assert!(!keep("sk3"));
}
