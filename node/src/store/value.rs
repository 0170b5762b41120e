//! Stored values: a 17-byte header followed by the record's data as JSON text, verbatim.
//!
//! Header: format byte `1`, `_created_at` (i64 big-endian ms), `_updated_at` (i64 big-endian ms).
//! Readers slice the JSON out and copy it to the wire; nothing is re-serialized.

const FORMAT_V1: u8 = 1;
/// Bytes before the data's JSON text.
pub const HEADER_LEN: usize = 17;

/// Encodes a stored value.
pub fn encode_value(created_at_ms: i64, updated_at_ms: i64, data_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data_json.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&created_at_ms.to_be_bytes());
    out.extend_from_slice(&updated_at_ms.to_be_bytes());
    out.extend_from_slice(data_json);
    out
}

/// A decoded view of a stored value: the model's [`StoredRecord`](crate::model::StoredRecord).
pub type ValueView<'a> = crate::model::StoredRecord<'a>;

/// Decodes a stored value; `None` if the bytes are not a value this build wrote.
pub fn decode_value(bytes: &[u8]) -> Option<ValueView<'_>> {
    if bytes.len() < HEADER_LEN || bytes[0] != FORMAT_V1 {
        return None;
    }
    Some(ValueView {
        created_at_ms: i64::from_be_bytes(bytes[1..9].try_into().ok()?),
        updated_at_ms: i64::from_be_bytes(bytes[9..17].try_into().ok()?),
        data_json: &bytes[HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = encode_value(-5, 1_732_590_000_000, br#"{"a":1}"#);
        let view = decode_value(&v).unwrap();
        assert_eq!(view.created_at_ms, -5);
        assert_eq!(view.updated_at_ms, 1_732_590_000_000);
        assert_eq!(view.data_json, br#"{"a":1}"#);
        assert!(decode_value(&v[..10]).is_none());
        assert!(decode_value(b"\x02aaaaaaaaaaaaaaaaaaaaa").is_none());
    }
}
