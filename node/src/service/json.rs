//! Compacting JSON text: stored data carries no insignificant whitespace, whatever the client sent.

use crate::model::structural_bytes;
use std::borrow::Cow;

/// `json` without whitespace outside strings. `json` must be valid JSON (it came through
/// `RawValue`); string contents are copied untouched.
pub fn compact_json(json: &str) -> Cow<'_, str> {
    let mut gaps = insignificant_whitespace(json.as_bytes()).peekable();
    if gaps.peek().is_none() {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut run_start = 0;
    for i in gaps {
        out.push_str(&json[run_start..i]);
        run_start = i + 1;
    }
    out.push_str(&json[run_start..]);
    Cow::Owned(out)
}

/// Positions of whitespace bytes that are outside JSON strings.
fn insignificant_whitespace(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    structural_bytes(bytes)
        .filter_map(|(i, b)| matches!(b, b' ' | b'\n' | b'\r' | b'\t').then_some(i))
}

#[cfg(test)]
mod tests {
    use super::compact_json;
    use std::borrow::Cow;

    #[test]
    fn strips_only_insignificant_whitespace() {
        let pretty = "{\n  \"a b\": [1, 2.5,\t\"x \\\" y\"],\r\n  \"c\" : null }";
        assert_eq!(compact_json(pretty), r#"{"a b":[1,2.5,"x \" y"],"c":null}"#);
        assert!(matches!(compact_json(r#"{"k":"v w"}"#), Cow::Borrowed(_)));
        assert_eq!(compact_json(" \"s\\\\\" "), "\"s\\\\\"");
    }

    #[test]
    fn result_is_the_same_json() {
        let pretty =
            "{ \"z\" : { \"y\" : [ true , false , null , \"\\u00e9 \" ] } , \"n\" : -1.5e3 }";
        let a: serde_json::Value = serde_json::from_str(pretty).unwrap();
        let b: serde_json::Value = serde_json::from_str(&compact_json(pretty)).unwrap();
        assert_eq!(a, b);
    }
}
