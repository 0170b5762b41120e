//! Stored values: a header followed by the record's data as JSON text, verbatim.
//!
//! Format 1 (17-byte header): byte `1`, `_created_at` (i64 big-endian ms), `_updated_at` (i64 BE).
//! Format 2 (25-byte header): byte `2`, the same two times, then `_expires_at` (i64 BE ms): a
//! record with a deadline — its key's (Redis `EXPIRE`, `SET ... EX`, an HTTP `ttl`). Format 3
//! (25 bytes): byte `3`, then as format 2: a deadline that is the record's own, set on one field
//! of a Redis hash (`HEXPIRE`, `HSETEX`; log format v3), which fields added to the key do not
//! take. Records without one keep format 1, so stores (and digests) from before expiry existed
//! read and hash exactly as they did.
//! Readers slice the JSON out and copy it to the wire; nothing is re-serialized.

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const FORMAT_V3: u8 = 3;
/// Bytes before the data's JSON text in a value without a deadline.
pub const HEADER_LEN: usize = 17;
/// Bytes before the data's JSON text in a value with a deadline.
pub const HEADER_LEN_EXPIRING: usize = 25;

/// Encodes a stored value; `expires_at_ms` is the record's deadline (unix ms), if it has one,
/// and `own_deadline` says it is the record's own rather than its key's (format 3; ignored
/// without a deadline).
pub fn encode_value(
    created_at_ms: i64,
    updated_at_ms: i64,
    expires_at_ms: Option<i64>,
    own_deadline: bool,
    data_json: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN_EXPIRING + data_json.len());
    out.push(match expires_at_ms {
        None => FORMAT_V1,
        Some(_) if own_deadline => FORMAT_V3,
        Some(_) => FORMAT_V2,
    });
    out.extend_from_slice(&created_at_ms.to_be_bytes());
    out.extend_from_slice(&updated_at_ms.to_be_bytes());
    if let Some(deadline) = expires_at_ms {
        out.extend_from_slice(&deadline.to_be_bytes());
    }
    out.extend_from_slice(data_json);
    out
}

/// A decoded view of a stored value: the model's [`StoredRecord`](crate::model::StoredRecord).
pub type ValueView<'a> = crate::model::StoredRecord<'a>;

/// How many header bytes precede the data of `bytes`; `None` if they are not a value this
/// build wrote.
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    let len = match *bytes.first()? {
        FORMAT_V1 => HEADER_LEN,
        FORMAT_V2 | FORMAT_V3 => HEADER_LEN_EXPIRING,
        _ => return None,
    };
    (bytes.len() >= len).then_some(len)
}

/// Decodes a stored value; `None` if the bytes are not a value this build wrote.
pub fn decode_value(bytes: &[u8]) -> Option<ValueView<'_>> {
    let len = header_len(bytes)?;
    let time = |at: usize| bytes[at..at + 8].try_into().ok().map(i64::from_be_bytes);
    Some(ValueView {
        created_at_ms: time(1)?,
        updated_at_ms: time(9)?,
        expires_at_ms: if len == HEADER_LEN_EXPIRING {
            Some(time(17)?)
        } else {
            None
        },
        own_deadline: bytes[0] == FORMAT_V3,
        data_json: &bytes[len..],
    })
}

/// The deadline of a stored value, if it has one (without decoding the rest).
pub fn expires_at(bytes: &[u8]) -> Option<i64> {
    match header_len(bytes)? {
        HEADER_LEN_EXPIRING => bytes[17..25].try_into().ok().map(i64::from_be_bytes),
        _ => None,
    }
}

/// Whether a stored value has expired at `now_ms` (its deadline is at or before it).
pub fn is_expired(bytes: &[u8], now_ms: i64) -> bool {
    expires_at(bytes).is_some_and(|deadline| deadline <= now_ms)
}

/// Whether a stored value has expired by this node's clock, read only for values with a
/// deadline (single-key reads are the hot path; most values have none).
pub fn is_expired_now(bytes: &[u8]) -> bool {
    expires_at(bytes).is_some_and(|deadline| deadline <= crate::model::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = encode_value(-5, 1_732_590_000_000, None, true, br#"{"a":1}"#);
        let view = decode_value(&v).unwrap();
        assert_eq!(view.created_at_ms, -5);
        assert_eq!(view.updated_at_ms, 1_732_590_000_000);
        assert_eq!(view.expires_at_ms, None);
        assert_eq!(view.data_json, br#"{"a":1}"#);
        assert_eq!(v.len(), HEADER_LEN + 7);
        assert!(decode_value(&v[..10]).is_none());
        assert!(!view.own_deadline, "no deadline is nobody's");
        assert_eq!(v[0], FORMAT_V1);
        assert!(decode_value(b"\x04aaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_none());
        assert!(!is_expired(&v, i64::MAX));
    }

    #[test]
    fn deadline_round_trips_and_expires_at_it() {
        let v = encode_value(1, 2, Some(1_000), false, b"\"x\"");
        let view = decode_value(&v).unwrap();
        assert_eq!(
            (view.created_at_ms, view.updated_at_ms, view.expires_at_ms),
            (1, 2, Some(1_000))
        );
        assert!(!view.own_deadline);
        assert_eq!(view.data_json, b"\"x\"");
        assert_eq!(header_len(&v), Some(HEADER_LEN_EXPIRING));
        assert!(!is_expired(&v, 999));
        assert!(is_expired(&v, 1_000));
        // A format-2 header cut short is not a value.
        assert!(decode_value(&v[..20]).is_none());
    }

    #[test]
    fn an_own_deadline_is_format_3_and_reads_like_a_keys() {
        let own = encode_value(1, 2, Some(1_000), true, b"\"x\"");
        let keys = encode_value(1, 2, Some(1_000), false, b"\"x\"");
        assert_eq!((own[0], keys[0]), (FORMAT_V3, FORMAT_V2));
        assert_eq!(own[1..], keys[1..]);
        let view = decode_value(&own).unwrap();
        assert!(view.own_deadline);
        assert_eq!(
            (view.expires_at_ms, view.data_json),
            (Some(1_000), &b"\"x\""[..])
        );
        assert_eq!(header_len(&own), Some(HEADER_LEN_EXPIRING));
        assert!(is_expired(&own, 1_000) && !is_expired(&own, 999));
    }
}
