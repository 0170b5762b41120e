//! Read-modify-write ops (`incr`, `incr_float`, `incr_long_double`, `append`): the new data
//! computed at apply from the stored data, so every replica computes the same value in log
//! order (Redis `INCR`, `INCRBYFLOAT`, `APPEND`, `HINCRBY`, ...). Pure functions of their inputs.

use super::long_double::LongDouble;
use crate::model::OpKind;

/// Why a read-modify-write op cannot run on the stored value. Deterministic: every replica
/// rejects the entry with the same message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RmwError {
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("value is not a valid float")]
    NotAFloat,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("increment would produce NaN or Infinity")]
    NotFinite,
    #[error("APPEND needs a string value, but the record holds other JSON")]
    NotAString,
    #[error("the op's `data` is not what `{0}` takes")]
    BadOperand(&'static str),
}

/// The stored value an op reads, as the op sees it.
enum Current {
    /// No record: counts as 0 or "".
    Absent,
    /// A JSON string's contents (Redis writes store these).
    Text(String),
    /// A JSON number's text (HTTP writes may store these).
    Number(String),
}

/// The new data JSON of a `kind` op with `operand` (the op's data JSON) over `current` (the
/// stored data JSON). Strings stay strings, numbers stay numbers, absent becomes a string.
pub fn compute(kind: OpKind, current: Option<&[u8]>, operand: &str) -> Result<String, RmwError> {
    let current = match current {
        None => Current::Absent,
        Some(json) => match serde_json::from_slice::<serde_json::Value>(json) {
            Ok(serde_json::Value::String(s)) => Current::Text(s),
            Ok(serde_json::Value::Number(n)) => Current::Number(n.to_string()),
            _ if kind == OpKind::Append => return Err(RmwError::NotAString),
            _ if matches!(kind, OpKind::IncrFloat | OpKind::IncrLongDouble) => {
                return Err(RmwError::NotAFloat);
            }
            _ => return Err(RmwError::NotAnInteger),
        },
    };
    let (text, was_string) = match current {
        Current::Absent => (None, true),
        Current::Text(s) => (Some(s), true),
        Current::Number(n) => (Some(n), false),
    };
    let new = match kind {
        OpKind::Incr => {
            let by: i64 =
                serde_json::from_str(operand).map_err(|_| RmwError::BadOperand("incr"))?;
            let value = match &text {
                None => 0,
                Some(t) => parse_redis_integer(t).ok_or(RmwError::NotAnInteger)?,
            };
            value.checked_add(by).ok_or(RmwError::Overflow)?.to_string()
        }
        OpKind::IncrFloat => {
            let by: f64 =
                serde_json::from_str(operand).map_err(|_| RmwError::BadOperand("incr_float"))?;
            let value = match &text {
                None => 0.0,
                Some(t) => parse_finite_float(t).ok_or(RmwError::NotAFloat)?,
            };
            let sum = value + by;
            if !sum.is_finite() {
                return Err(RmwError::NotFinite);
            }
            // `Display` never uses an exponent and prints the shortest text that reads back
            // as the same f64, on every platform: replicas agree byte for byte.
            format!("{sum}")
        }
        OpKind::IncrLongDouble => {
            let by = match serde_json::from_str::<serde_json::Value>(operand) {
                Ok(serde_json::Value::String(text)) => LongDouble::parse(&text),
                Ok(serde_json::Value::Number(_)) => LongDouble::parse(operand.trim()),
                _ => None,
            }
            .ok_or(RmwError::BadOperand("incr_long_double"))?;
            let value = match &text {
                None => LongDouble::ZERO,
                Some(t) => LongDouble::parse(t).ok_or(RmwError::NotAFloat)?,
            };
            let sum = value
                .checked_add(by)
                .ok_or(RmwError::NotFinite)?
                .to_string();
            // A JSON number record must stay a number JSON readers take: within 64-bit floats.
            if !was_string && sum.parse::<f64>().map_or(true, f64::is_infinite) {
                return Err(RmwError::NotFinite);
            }
            sum
        }
        OpKind::Append => {
            if !was_string {
                return Err(RmwError::NotAString);
            }
            let tail: String =
                serde_json::from_str(operand).map_err(|_| RmwError::BadOperand("append"))?;
            let mut s = text.unwrap_or_default();
            s.push_str(&tail);
            s
        }
        _ => return Err(RmwError::BadOperand("a read-modify-write op")),
    };
    Ok(if was_string {
        serde_json::to_string(&new).expect("strings serialize")
    } else {
        new
    })
}

/// Redis's integer syntax (`string2ll`): an optional `-`, digits without leading zeros, no
/// spaces or `+`, within i64.
pub fn parse_redis_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && digits.len() == text.len() || !digits.starts_with('0'));
    if !valid {
        return None;
    }
    text.parse().ok()
}

/// A finite float, as Redis reads one (no surrounding spaces, no NaN or infinity).
pub fn parse_finite_float(text: &str) -> Option<f64> {
    if text.is_empty() || text.trim() != text {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: OpKind, current: Option<&str>, operand: &str) -> Result<String, RmwError> {
        compute(kind, current.map(str::as_bytes), operand)
    }

    #[test]
    fn incr_keeps_the_stored_type() {
        assert_eq!(run(OpKind::Incr, None, "1").unwrap(), r#""1""#);
        assert_eq!(run(OpKind::Incr, Some(r#""41""#), "1").unwrap(), r#""42""#);
        assert_eq!(run(OpKind::Incr, Some("41"), "-50").unwrap(), "-9");
        assert_eq!(
            run(OpKind::Incr, Some(r#""x""#), "1"),
            Err(RmwError::NotAnInteger)
        );
        assert_eq!(
            run(OpKind::Incr, Some("1.5"), "1"),
            Err(RmwError::NotAnInteger)
        );
        assert_eq!(
            run(OpKind::Incr, Some(r#"{"a":1}"#), "1"),
            Err(RmwError::NotAnInteger)
        );
        assert_eq!(
            run(OpKind::Incr, Some(&format!("\"{}\"", i64::MAX)), "1"),
            Err(RmwError::Overflow)
        );
    }

    #[test]
    fn integers_parse_like_redis() {
        for ok in [
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "10",
        ] {
            assert!(parse_redis_integer(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "01",
            "-0",
            "1.0",
            "9223372036854775808",
        ] {
            assert!(parse_redis_integer(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn floats_print_without_exponent_and_stay_finite() {
        assert_eq!(
            run(OpKind::IncrFloat, Some(r#""10.5""#), "0.1").unwrap(),
            r#""10.6""#
        );
        assert_eq!(run(OpKind::IncrFloat, None, "3").unwrap(), r#""3""#);
        assert_eq!(
            run(OpKind::IncrFloat, Some(r#""5.0e3""#), "200").unwrap(),
            r#""5200""#
        );
        assert_eq!(run(OpKind::IncrFloat, Some("1.5"), "1").unwrap(), "2.5");
        assert_eq!(
            run(OpKind::IncrFloat, Some(r#""1.7e308""#), "1.7e308"),
            Err(RmwError::NotFinite)
        );
        assert_eq!(
            run(OpKind::IncrFloat, Some(r#""nan""#), "1"),
            Err(RmwError::NotAFloat)
        );
    }

    #[test]
    fn long_double_increments_compute_as_redis_does() {
        let run = |current: Option<&str>, by: &str| run(OpKind::IncrLongDouble, current, by);
        // 64-bit floats answer 0.30000000000000004 here; Redis (and v4) 0.3.
        assert_eq!(run(Some(r#""0.1""#), r#""0.2""#).unwrap(), r#""0.3""#);
        assert_eq!(run(None, r#""0x1.8p1""#).unwrap(), r#""3""#);
        // The increment may be a JSON number, and a number record stays a number.
        assert_eq!(run(Some("1.5"), "1").unwrap(), "2.5");
        assert_eq!(
            run(Some(r#""5000""#), r#""1.5e-5""#).unwrap(),
            r#""5000.00001499999999988""#
        );
        // Past 64-bit floats a string holds every digit; a number record cannot.
        assert_eq!(
            run(Some(r#""1e308""#), r#""1e308""#).unwrap().len(),
            309 + 2
        );
        assert_eq!(run(Some("1e308"), r#""1e308""#), Err(RmwError::NotFinite));
        assert_eq!(
            run(Some(r#""1e4932""#), r#""1e4932""#),
            Err(RmwError::NotFinite)
        );
        assert_eq!(run(Some(r#""inf""#), r#""1""#), Err(RmwError::NotFinite));
        assert_eq!(run(Some(r#"" 1""#), r#""1""#), Err(RmwError::NotAFloat));
        assert_eq!(run(Some("[1]"), r#""1""#), Err(RmwError::NotAFloat));
        assert_eq!(
            run(None, r#""nan""#),
            Err(RmwError::BadOperand("incr_long_double"))
        );
        assert_eq!(
            run(None, "true"),
            Err(RmwError::BadOperand("incr_long_double"))
        );
    }

    #[test]
    fn append_needs_strings() {
        assert_eq!(run(OpKind::Append, None, r#""ab""#).unwrap(), r#""ab""#);
        assert_eq!(
            run(OpKind::Append, Some(r#""a\"""#), r#""b""#).unwrap(),
            r#""a\"b""#
        );
        assert_eq!(
            run(OpKind::Append, Some("12"), r#""b""#),
            Err(RmwError::NotAString)
        );
    }
}
