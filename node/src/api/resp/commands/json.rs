//! JSON documents, as RedisJSON's clients write them (`r.json()` in redis-py, `client.json` in
//! node-redis): `JSON.SET`, `JSON.GET`, `JSON.DEL` on the record (pk = key, sk = ""), at the root
//! path only (`$` or `.`). The document is the record's data, as HTTP reads it.

use super::expiry::Expiry;
use super::keys::{key, put_record};
use super::{Context, wrong_arity};
use crate::api::resp::reply::Reply;
use bytes::Bytes;
use serde_json::value::RawValue;

/// Whether `path` is the document's root, in JSONPath (`$`) or the legacy syntax (`.`).
fn root(path: &Bytes) -> Result<bool, Reply> {
    match path.as_ref() {
        b"$" => Ok(true),
        b"." => Ok(false),
        _ => Err(Reply::err(
            "only the root path ($ or .) is supported: FireScroll stores whole documents",
        )),
    }
}

/// `JSON.SET key path value [NX|XX]`
pub async fn set(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, path, value, options @ ..] = args else {
        return wrong_arity("json.set");
    };
    if let Err(e) = root(path) {
        return e;
    }
    let cond = match options {
        [] => None,
        [o] if o.eq_ignore_ascii_case(b"NX") => Some("data == nil"),
        [o] if o.eq_ignore_ascii_case(b"XX") => Some("data != nil"),
        _ => return Reply::err("syntax error"),
    };
    let data = match std::str::from_utf8(value)
        .ok()
        .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok())
    {
        Some(data) => data,
        None => return Reply::err("the value is not JSON: JSON.SET takes a JSON document"),
    };
    match key(k) {
        Ok(key) => put_record(ctx, key, data, cond, Expiry::Keep, false).await,
        Err(e) => e,
    }
}

/// `JSON.GET key [path]`: the document; under `$`, a one-element array of it, as RedisJSON
/// answers JSONPath queries.
pub async fn get(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (k, jsonpath) = match args {
        [k] => (k, false),
        [k, path] => match root(path) {
            Ok(jsonpath) => (k, jsonpath),
            Err(e) => return e,
        },
        _ => return wrong_arity("json.get"),
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    match ctx.read_json(&key.pk, &key.sk).await {
        Ok(Some(json)) if jsonpath => {
            let mut wrapped = Vec::with_capacity(json.len() + 2);
            wrapped.push(b'[');
            wrapped.extend_from_slice(&json);
            wrapped.push(b']');
            Reply::Bulk(Bytes::from(wrapped))
        }
        Ok(Some(json)) => Reply::Bulk(json),
        Ok(None) => Reply::Null,
        Err(e) => e,
    }
}

/// `JSON.DEL key [path]`: 1 if the document existed, else 0.
pub async fn del(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let k = match args {
        [k] => k,
        [k, path] => match root(path) {
            Ok(_) => k,
            Err(e) => return e,
        },
        _ => return wrong_arity("json.del"),
    };
    match key(k) {
        Ok(key) => ctx.delete_records(vec![key]).await,
        Err(e) => e,
    }
}
