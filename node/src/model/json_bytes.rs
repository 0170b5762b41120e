//! JSON decoding from bytes, with the UTF-8 checked once per input instead of once per string.
//!
//! `serde_json::from_slice` checks the UTF-8 of every string it meets (each key and each string
//! value, ~60 instructions a call for short ones), which was an eighth of decoding a log entry;
//! one check of the whole input is a few instructions per 16 bytes. The answers are the same:
//! for valid UTF-8, `from_str` and `from_slice` run the same parser over the same bytes (only
//! the per-string check is skipped), so they accept, reject and report errors alike; input that
//! is not UTF-8 goes to `from_slice`, so its error is serde_json's own. That matters for log
//! entries, whose rejection messages every replica — of any version — must word alike.

use serde::Deserialize;

/// `serde_json::from_slice`, with the same results and errors, faster for inputs with many
/// strings.
pub fn from_json_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Both answers, as text: the value or the error message (with its line and column).
    fn both(bytes: &[u8]) -> (String, String) {
        let show = |r: serde_json::Result<Value>| match r {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!("err {e}"),
        };
        (
            show(from_json_bytes(bytes)),
            show(serde_json::from_slice(bytes)),
        )
    }

    #[test]
    fn answers_as_from_slice_does() {
        let cases: &[&[u8]] = &[
            br#"{"a":"b","c":[1,2.5,"\u00e9\ud83d\ude00"],"d":null}"#,
            "{\"caf\u{e9}\":\"\u{1F600}\"}".as_bytes(),
            br#"{"a":"b""#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\x"}"#,
            b"{\"a\":\"\x01\"}",
            b"  [1, 2]  x",
            b"",
            // Not UTF-8: inside a string, and outside one.
            b"{\"a\":\"\xff\"}",
            b"{\"a\":1}\xc3",
            b"\xef\xbb\xbf{}",
        ];
        for bytes in cases {
            let (ours, theirs) = both(bytes);
            assert_eq!(ours, theirs, "input {:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn borrows_and_raw_values_work() {
        #[derive(serde::Deserialize)]
        struct S<'a> {
            k: &'a str,
            raw: Box<serde_json::value::RawValue>,
        }
        let s: S = from_json_bytes(br#"{"k":"plain","raw":{"x": [1, "y"]}}"#).unwrap();
        assert_eq!((s.k, s.raw.get()), ("plain", r#"{"x": [1, "y"]}"#));
    }
}
