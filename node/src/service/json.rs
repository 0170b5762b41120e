//! JSON text: stored data compacted (no insignificant whitespace, whatever the client sent),
//! and reads of part of a stored document at a RedisJSON path ([`JsonRead`]), which HTTP gets
//! with `path` and the Redis port's `JSON.*` reads share.

use super::ServiceError;
use crate::model::{JsonPath, READ_ANSWER_BYTES, READ_VISITS, Record, structural_bytes};
use serde_json::Value;
use std::borrow::Cow;

/// Bytes of stored documents a read parses per visit it is charged (as apply charges a visit
/// 32 bytes of its entry's reads): a read of many documents (`JSON.MGET`, an HTTP get with
/// `path`) parses at most [`READ_VISITS`] times this, 32 MB — about 0.4 s of a request thread
/// for documents dense with small members (~85 MB/s), the worst kind.
const PARSED_BYTES_PER_VISIT: u64 = 32;

/// One read's path queries over stored documents, within the read's bounds together: nodes
/// visited ([`READ_VISITS`], parsing documents included) and bytes answered
/// ([`READ_ANSWER_BYTES`]).
pub struct JsonRead {
    visits: u64,
    bytes: usize,
}

impl Default for JsonRead {
    fn default() -> Self {
        JsonRead {
            visits: READ_VISITS,
            bytes: READ_ANSWER_BYTES,
        }
    }
}

impl JsonRead {
    /// A stored record's data, parsed.
    pub fn document(data_json: &[u8]) -> Result<Value, ServiceError> {
        serde_json::from_slice(data_json)
            .map_err(|e| ServiceError::internal(format!("stored data is not JSON: {e}")))
    }

    /// A stored record's data, parsed as one of the many documents of this read: charged to
    /// its visits, so many large documents cannot hold a request thread for seconds.
    pub fn parse(&mut self, data_json: &[u8]) -> Result<Value, ServiceError> {
        let cost = data_json.len() as u64 / PARSED_BYTES_PER_VISIT;
        if cost > self.visits {
            self.visits = 0;
            return Err(ServiceError::bad_request(
                "read_too_large",
                format!(
                    "the documents this read parses add up to more than {} MB; read fewer at a \
                     time",
                    READ_VISITS * PARSED_BYTES_PER_VISIT / 1_000_000
                ),
            ));
        }
        self.visits -= cost;
        Self::document(data_json)
    }

    /// What a read at `path` answers from `doc`: every match under a JSONPath, as an array;
    /// the first under a legacy path (`None`: there is none).
    pub fn answer(&mut self, path: &JsonPath, doc: &Value) -> Result<Option<Value>, ServiceError> {
        path.answer(doc, &mut self.visits, &mut self.bytes)
            .map_err(|e| ServiceError::bad_request("bad_path", e.to_string()))
    }

    /// The size of `value`'s JSON text, charged to what this read may answer.
    pub fn text_size(&mut self, value: &Value) -> Result<usize, ServiceError> {
        crate::model::charge_text(value, &mut self.bytes)
            .map_err(|e| ServiceError::bad_request("bad_path", e.to_string()))
    }

    /// The nodes `path` matches in `doc`.
    pub fn matches<'a>(
        &mut self,
        path: &JsonPath,
        doc: &'a Value,
    ) -> Result<Vec<&'a Value>, ServiceError> {
        path.query(doc, &mut self.visits)
            .map(|found| found.into_iter().map(|f| f.value).collect())
            .map_err(|e| ServiceError::bad_request("bad_path", e.to_string()))
    }

    /// Each record's data replaced by what `path` answers from it (a legacy path that finds
    /// nothing: `null`).
    pub fn select(&mut self, path: &JsonPath, records: &mut [Record]) -> Result<(), ServiceError> {
        for record in records {
            let doc = self.parse(record.data_json.as_bytes())?;
            record.data_json = self
                .answer(path, &doc)?
                .map_or_else(|| "null".to_owned(), |v| v.to_string());
        }
        Ok(())
    }
}

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
