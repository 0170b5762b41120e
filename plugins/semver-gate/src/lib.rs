//! Condition: a semver-gated rollout. A put passes only if its `data.version` is a semantic
//! version above the stored record's (or there is no stored record), and — when the write's
//! `args` has `min`/`max` — within that range. So an old deployer can never roll a config back,
//! and a canary can be held to a band of versions.
//!
//! `{"pk":"svc","sk":"config","data":{"version":"1.4.0",...},"if_plugin":"semver-gate","args":{"max":"2.0.0"}}`
#![no_std]
extern crate alloc;

use firescroll_plugin_sdk::serde_json::Value;
use firescroll_plugin_sdk::{Input, Reject, condition};

/// `major.minor.patch`, with an optional `v` and pre-release/build suffix ignored.
fn parse(v: &Value) -> Option<(u64, u64, u64)> {
    let text = v.as_str()?.trim_start_matches('v');
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

fn gate(input: Input) -> Result<bool, Reject> {
    if input.op != "put" {
        return Ok(true);
    }
    let Some(new) = parse(&input.data["version"]) else {
        return Ok(false);
    };
    if let Some(current) = &input.current
        && let Some(old) = parse(&current.data["version"])
        && new <= old
    {
        return Ok(false);
    }
    let min = bound(&input.args, "min");
    let max = bound(&input.args, "max");
    Ok(min.is_none_or(|b| b.is_some_and(|b| new >= b))
        && max.is_none_or(|b| b.is_some_and(|b| new < b)))
}

/// `args[name]`: `None` when absent or null, `Some(None)` when present but not a version (which
/// no version satisfies).
fn bound(args: &Value, name: &str) -> Option<Option<(u64, u64, u64)>> {
    match args.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse(v)),
    }
}

condition!(gate);

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use firescroll_plugin_sdk::serde_json::{self, json};

    fn run(data: Value, current: Option<Value>, args: Value) -> bool {
        let current = current.map(|d| json!({"data": d, "_created_at": 1, "_updated_at": 2}));
        let input =
            json!({"op":"put","pk":"svc","sk":"c","data":data,"current":current,"args":args});
        gate(serde_json::from_value(input).unwrap()).unwrap()
    }

    #[test]
    fn versions_parse_like_semver_cores() {
        assert_eq!(parse(&json!("1.2.3")), Some((1, 2, 3)));
        assert_eq!(parse(&json!("v10.0.1-rc.1+build.5")), Some((10, 0, 1)));
        for bad in [
            json!("1.2"),
            json!("1.2.3.4"),
            json!("a.b.c"),
            json!(3),
            json!(null),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_forward_within_bounds() {
        let v = |s: &str| json!({"version": s});
        assert!(run(v("1.0.0"), None, json!(null)), "first version");
        assert!(
            run(v("1.10.0"), Some(v("1.9.9")), json!(null)),
            "numeric, not lexical"
        );
        assert!(
            !run(v("1.9.9"), Some(v("1.10.0")), json!(null)),
            "no rollback"
        );
        assert!(
            !run(v("1.0.0"), Some(v("1.0.0")), json!(null)),
            "no same version"
        );
        assert!(!run(json!({}), None, json!(null)), "a version is required");
        assert!(
            run(v("2.0.0"), Some(json!({})), json!(null)),
            "stored without version"
        );
        assert!(
            !run(v("2.0.0"), None, json!({"max": "2.0.0"})),
            "max is exclusive"
        );
        assert!(run(
            v("1.5.0"),
            None,
            json!({"min": "1.5.0", "max": "2.0.0"})
        ));
        assert!(!run(v("1.4.9"), None, json!({"min": "1.5.0"})));
        assert!(
            !run(v("1.5.0"), None, json!({"min": "garbage"})),
            "a bad bound admits nothing"
        );
    }
}
