//! JSON documents, as RedisJSON's clients write them (`r.json()` in redis-py, `client.json` in
//! node-redis): the document is the record's data (pk = key, sk = ""), as HTTP reads it.
//!
//! Paths are RedisJSON's: JSONPath (`$.a.b`, `$..name`, `$.list[0]`, answered with every
//! match) and the legacy syntax (`.a.b`, answered with one value); see
//! [`crate::model::JsonPath`]. Reads (`read.rs`: `JSON.GET`, `JSON.MGET`, `JSON.TYPE`, the
//! `*LEN`s, `JSON.OBJKEYS`, `JSON.ARRINDEX`) query the document here. Writes (`write.rs`) at the
//! root put or delete the record; at a path they are `json` ops (log format v6), computed at
//! apply from the stored document so every replica makes the same one, their replies taken
//! from the entry's outcome.

mod read;
mod write;

pub use read::{arrindex, debug, get, inspect, mget};
pub use write::{arrappend, arrpop, arrtrim, del, merge, mset, number, path_only, set, strappend};

use crate::api::resp::reply::Reply;
use crate::model::JsonPath;
use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

/// A path argument, parsed (RedisJSON's syntax).
fn path_arg(path: &Bytes) -> Result<JsonPath, Reply> {
    let text = std::str::from_utf8(path).map_err(|_| Reply::err("a JSON path is UTF-8 text"))?;
    JsonPath::parse(text).map_err(|e| Reply::err(e.to_string()))
}

/// A JSON value argument.
fn json_arg(value: &Bytes, what: &str) -> Result<Box<RawValue>, Reply> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok())
        .ok_or_else(|| Reply::err(format!("the value is not JSON: {what} takes JSON text")))
}

/// The reply of a `json` op from what it returned (JSON, see [`JsonCmd`]): `null` nil, `true`
/// OK, integers integers, strings bulk, arrays arrays of these.
pub fn reply_from_returned(returned: Option<&str>) -> Reply {
    fn convert(value: Value) -> Reply {
        match value {
            Value::Null | Value::Bool(false) => Reply::Null,
            Value::Bool(true) => Reply::ok(),
            Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Reply::Bulk(Bytes::from(n.to_string())), Reply::Int),
            Value::String(s) => Reply::Bulk(Bytes::from(s)),
            Value::Array(items) => Reply::Array(items.into_iter().map(convert).collect()),
            Value::Object(_) => Reply::err("a json op returned an object"),
        }
    }
    match returned.map(serde_json::from_str::<Value>) {
        Some(Ok(value)) => convert(value),
        _ => Reply::err("a json op returned no reply"),
    }
}
