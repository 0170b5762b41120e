//! Binary data: bytes that are not UTF-8 (a pickle, a protobuf, gzip) cannot be a JSON string,
//! so they are stored as `{"$base64":"<their standard base64>"}`. Redis writes make it from the
//! bytes a client sent and Redis reads return the bytes again; HTTP sees (and may write) the
//! object itself.

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

/// Whether data looks like binary data (its prefix; what a size error explains).
pub fn is_binary_data(json: &[u8]) -> bool {
    json.starts_with(PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
