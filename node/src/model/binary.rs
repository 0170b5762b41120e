//! Binary data: bytes that are not UTF-8 (a pickle, a protobuf, gzip) cannot be a JSON string,
//! so they are stored as `{"$base64":"<their standard base64>"}`. Redis writes make it from the
//! bytes a client sent and Redis reads return the bytes again; HTTP sees (and may write) the
//! object itself.
//!
//! Binary keys: a Redis key or field that is not UTF-8 (Feast keys entities by protobuf bytes)
//! is a pk or sk of [`BINARY_KEY_MARK`] (U+10FFFF, a Unicode noncharacter) followed by the
//! standard base64 of its bytes. Only bytes that are not UTF-8 are written so, so the mapping is
//! one to one; a UTF-8 key of that exact shape is refused from Redis clients (it would read back
//! as other bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::value::RawValue;

/// How binary data begins and ends (compact JSON, as stored).
const PREFIX: &str = "{\"$base64\":\"";
const SUFFIX: &str = "\"}";

/// The data that stores `bytes`.
pub fn binary_data(bytes: &[u8]) -> Box<RawValue> {
    let mut json = String::with_capacity(PREFIX.len() + bytes.len().div_ceil(3) * 4 + SUFFIX.len());
    json.push_str(PREFIX);
    STANDARD.encode_string(bytes, &mut json);
    json.push_str(SUFFIX);
    RawValue::from_string(json).expect("base64 in a JSON string is JSON")
}

/// The bytes of data that is exactly `{"$base64":"<standard base64>"}`, else `None`.
pub fn binary_bytes(json: &[u8]) -> Option<Vec<u8>> {
    let encoded = json
        .strip_prefix(PREFIX.as_bytes())?
        .strip_suffix(SUFFIX.as_bytes())?;
    STANDARD.decode(encoded).ok()
}

/// The most bytes whose binary data fits in `limit` bytes of JSON.
pub fn binary_capacity(limit: usize) -> usize {
    limit.saturating_sub(PREFIX.len() + SUFFIX.len()) / 4 * 3
}

/// What a pk or sk standing for binary bytes begins with.
pub const BINARY_KEY_MARK: char = '\u{10FFFF}';

/// The pk or sk that stands for `bytes` (which must not be UTF-8: UTF-8 keys are themselves).
pub fn binary_key(bytes: &[u8]) -> String {
    let mut key = String::with_capacity(4 + bytes.len().div_ceil(3) * 4);
    key.push(BINARY_KEY_MARK);
    STANDARD.encode_string(bytes, &mut key);
    key
}

/// The bytes a pk or sk stands for when it is a binary key (see [`binary_key`]), else `None`.
pub fn binary_key_bytes(key: &str) -> Option<Vec<u8>> {
    let encoded = key.strip_prefix(BINARY_KEY_MARK)?;
    let bytes = STANDARD.decode(encoded).ok()?;
    std::str::from_utf8(&bytes).is_err().then_some(bytes)
}

/// Whether data looks like binary data (its prefix; what a size error explains).
pub fn is_binary_data(json: &[u8]) -> bool {
    json.starts_with(PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_keys_round_trip_and_text_keys_are_themselves() {
        for bytes in [&b"\xff"[..], b"\x00\x80\x01", &[0x9f; 40]] {
            let key = binary_key(bytes);
            assert!(key.starts_with(BINARY_KEY_MARK));
            assert_eq!(binary_key_bytes(&key).as_deref(), Some(bytes));
        }
        for text in [
            "user:1",
            "",
            "\u{10FFFF}",
            "\u{10FFFF}not base64!",
            "\u{10FFFF}AAAA",
        ] {
            // The last is base64 of "\0\0\0", which is UTF-8: never written as a binary key.
            assert_eq!(binary_key_bytes(text), None, "{text:?}");
        }
    }

    #[test]
    fn round_trips_and_leaves_other_json_alone() {
        for bytes in [&b""[..], b"\xff", b"\x00\x01\x02", &[0x80; 100]] {
            let data = binary_data(bytes);
            assert!(is_binary_data(data.get().as_bytes()));
            assert_eq!(binary_bytes(data.get().as_bytes()).as_deref(), Some(bytes));
        }
        assert_eq!(binary_data(b"\xff\x00").get(), r#"{"$base64":"/wA="}"#);
        for limit in [14, 100, 524_288] {
            let most = binary_capacity(limit);
            assert!(binary_data(&vec![0xff; most]).get().len() <= limit);
            assert!(binary_data(&vec![0xff; most + 1]).get().len() > limit);
        }
        for other in [
            r#"{"$base64":"not base64!"}"#,
            r#"{"$base64":"/wA=","x":1}"#,
            r#"{"a":1}"#,
            r#""/wA=""#,
        ] {
            assert_eq!(binary_bytes(other.as_bytes()), None, "{other}");
        }
    }
}
