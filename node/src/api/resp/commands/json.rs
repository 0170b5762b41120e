//! JSON documents, as RedisJSON's clients write them (`r.json()` in redis-py, `client.json` in
//! node-redis): the document is the record's data (pk = key, sk = ""), as HTTP reads it.
//!
//! Paths are RedisJSON's: JSONPath (`$.a.b`, `$..name`, `$.list[0]`, answered with every
//! match) and the legacy syntax (`.a.b`, answered with one value); see
//! [`crate::model::JsonPath`]. Reads (`JSON.GET`, `JSON.MGET`, `JSON.TYPE`, the `*LEN`s,
//! `JSON.OBJKEYS`) query the document here. Writes at the root put or delete the record; writes
//! at a path are `json` ops (log format v6), computed at apply from the stored document so every
//! replica makes the same one, their replies taken from the entry's outcome.

use super::expiry::Expiry;
use super::keys::{key, put_record};
use super::{Context, Shape, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::{JsonCmd, JsonPath, OpKind, READ_ANSWER_BYTES, READ_VISITS, json_type_name};
use crate::service::WriteOp;
use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

fn path_arg(path: &Bytes) -> Result<JsonPath, Reply> {
    let text = std::str::from_utf8(path).map_err(|_| Reply::err("a JSON path is UTF-8 text"))?;
    JsonPath::parse(text).map_err(|e| Reply::err(e.to_string()))
}

fn json_arg(value: &Bytes, what: &str) -> Result<Box<RawValue>, Reply> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok())
        .ok_or_else(|| Reply::err(format!("the value is not JSON: {what} takes JSON text")))
}

/// A `json` op on `k`: its reply comes from the entry's outcome.
async fn edit(
    ctx: &mut Context<'_>,
    k: &Bytes,
    cmd: JsonCmd,
    path: &JsonPath,
    operand: Option<Box<RawValue>>,
) -> Reply {
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let op = WriteOp {
        op: OpKind::Json,
        pk: key.pk,
        sk: key.sk,
        data: operand,
        json_cmd: Some(cmd),
        path: Some(path.text().to_owned()),
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Json).await
}

/// `JSON.SET key path value [NX|XX]`
pub async fn set(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, path, value, options @ ..] = args else {
        return wrong_arity("json.set");
    };
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let (cond, cmd) = match options {
        [] => (None, JsonCmd::Set),
        [o] if o.eq_ignore_ascii_case(b"NX") => (Some("data == nil"), JsonCmd::SetIfAbsent),
        [o] if o.eq_ignore_ascii_case(b"XX") => (Some("data != nil"), JsonCmd::SetIfPresent),
        _ => return Reply::err("syntax error"),
    };
    let data = match json_arg(value, "JSON.SET") {
        Ok(data) => data,
        Err(e) => return e,
    };
    if !path.is_root() {
        return edit(ctx, k, cmd, &path, Some(data)).await;
    }
    match key(k) {
        Ok(key) => put_record(ctx, key, data, cond, Expiry::Keep, false).await,
        Err(e) => e,
    }
}

/// `JSON.MSET key path value [key path value ...]`: one atomic entry (so the keys share a
/// partition, else CROSSSLOT): each a put at the root or a `json` set at a path.
pub async fn mset(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if args.is_empty() || !args.len().is_multiple_of(3) {
        return wrong_arity("json.mset");
    }
    let mut ops = Vec::with_capacity(args.len() / 3);
    for triple in args.chunks(3) {
        let (key, path, data) = match (key(&triple[0]), path_arg(&triple[1])) {
            (Ok(key), Ok(path)) => match json_arg(&triple[2], "JSON.MSET") {
                Ok(data) => (key, path, data),
                Err(e) => return e,
            },
            (Err(e), _) | (_, Err(e)) => return e,
        };
        ops.push(if path.is_root() {
            let mut op = WriteOp {
                op: OpKind::Put,
                pk: key.pk,
                sk: key.sk,
                data: Some(data),
                ..WriteOp::default()
            };
            // As `JSON.SET` at the root: the document keeps the key's deadline.
            Expiry::Keep.apply(&mut op);
            op
        } else {
            WriteOp {
                op: OpKind::Json,
                pk: key.pk,
                sk: key.sk,
                data: Some(data),
                json_cmd: Some(JsonCmd::Set),
                path: Some(path.text().to_owned()),
                ..WriteOp::default()
            }
        });
    }
    let results = match ctx.write_atomic(ops, true).await {
        Ok(results) => results,
        Err(e) => return e,
    };
    match results
        .first()
        .map(|r| r.outcome.as_ref().and_then(Option::as_ref))
    {
        // Inside `EXEC`: part of the transaction's entry.
        None | Some(Some(crate::service::Outcome::Applied(_))) => Reply::ok(),
        Some(Some(crate::service::Outcome::Rejected(r))) => {
            Reply::err(format!("{} (nothing was written)", r.message))
        }
        Some(_) => {
            Reply::err("the write is durable but was not applied in time; read the keys to see")
        }
    }
}

/// `JSON.MERGE key path value`: RFC 7396 merge patch at the path.
pub async fn merge(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, path, value] = args else {
        return wrong_arity("json.merge");
    };
    let (path, data) = match (path_arg(path), json_arg(value, "JSON.MERGE")) {
        (Ok(path), Ok(data)) => (path, data),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    edit(ctx, k, JsonCmd::Merge, &path, Some(data)).await
}

/// `JSON.DEL key [path]` (and `JSON.FORGET`): how many values were removed.
pub async fn del(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (k, path) = match args {
        [k] => (k, None),
        [k, path] => match path_arg(path) {
            Ok(path) => (k, Some(path)),
            Err(e) => return e,
        },
        _ => return wrong_arity("json.del"),
    };
    match path {
        Some(path) if !path.is_root() => edit(ctx, k, JsonCmd::Del, &path, None).await,
        _ => match key(k) {
            Ok(key) => ctx.delete_records(vec![key]).await,
            Err(e) => e,
        },
    }
}

/// The commands that take a key, an optional path (the root by default) and nothing else:
/// `JSON.CLEAR`, `JSON.TOGGLE`.
pub async fn path_only(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let (k, path) = match args {
        [k] => (k, JsonPath::parse("$").expect("the root parses")),
        [k, path] => match path_arg(path) {
            Ok(path) => (k, path),
            Err(e) => return e,
        },
        _ => return wrong_arity(name),
    };
    let cmd = if name == "json.clear" {
        JsonCmd::Clear
    } else {
        JsonCmd::Toggle
    };
    edit(ctx, k, cmd, &path, None).await
}

/// `JSON.NUMINCRBY key path number`, `JSON.NUMMULTBY`: the new values, as JSON text.
pub async fn number(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [k, path, by] = args else {
        return wrong_arity(name);
    };
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let Some(by) = std::str::from_utf8(by)
        .ok()
        .filter(|text| serde_json::from_str::<serde_json::Number>(text).is_ok())
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
    else {
        return Reply::err(format!("{} takes a JSON number", name.to_ascii_uppercase()));
    };
    let cmd = if name == "json.numincrby" {
        JsonCmd::NumIncrBy
    } else {
        JsonCmd::NumMultBy
    };
    edit(ctx, k, cmd, &path, Some(by)).await
}

/// `JSON.STRAPPEND key [path] value`: the new lengths.
pub async fn strappend(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (k, path, value) = match args {
        [k, value] => (k, JsonPath::parse(".").expect("the root parses"), value),
        [k, path, value] => match path_arg(path) {
            Ok(path) => (k, path, value),
            Err(e) => return e,
        },
        _ => return wrong_arity("json.strappend"),
    };
    let suffix = match json_arg(value, "JSON.STRAPPEND") {
        Ok(suffix) if suffix.get().starts_with('"') => suffix,
        Ok(_) => return Reply::err("JSON.STRAPPEND takes a JSON string, quoted: '\"text\"'"),
        Err(e) => return e,
    };
    edit(ctx, k, JsonCmd::StrAppend, &path, Some(suffix)).await
}

/// `JSON.ARRAPPEND key path value [value ...]` and `JSON.ARRINSERT key path index value
/// [value ...]`: the new lengths.
pub async fn arrappend(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let insert = name == "json.arrinsert";
    let (k, path, rest) = match args {
        [k, path, rest @ ..] if rest.len() > usize::from(insert) => (k, path, rest),
        _ => return wrong_arity(name),
    };
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let mut items = Vec::with_capacity(rest.len());
    let (index, values) = if insert {
        let Some(index) = std::str::from_utf8(&rest[0])
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
        else {
            return Reply::err("JSON.ARRINSERT's index is an integer");
        };
        (Some(index), &rest[1..])
    } else {
        (None, rest)
    };
    if let Some(index) = index {
        items.push(index.to_string());
    }
    for value in values {
        match json_arg(value, &name.to_ascii_uppercase()) {
            Ok(value) => items.push(value.get().to_owned()),
            Err(e) => return e,
        }
    }
    let operand = RawValue::from_string(format!("[{}]", items.join(","))).expect("JSON items");
    let cmd = if insert {
        JsonCmd::ArrInsert
    } else {
        JsonCmd::ArrAppend
    };
    edit(ctx, k, cmd, &path, Some(operand)).await
}

/// `JSON.ARRPOP key [path [index]]`: the removed values, as JSON text.
pub async fn arrpop(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (k, path, index) = match args {
        [k] => (k, None, None),
        [k, path] => (k, Some(path), None),
        [k, path, index] => (k, Some(path), Some(index)),
        _ => return wrong_arity("json.arrpop"),
    };
    let path = match path.map(path_arg) {
        None => JsonPath::parse(".").expect("the root parses"),
        Some(Ok(path)) => path,
        Some(Err(e)) => return e,
    };
    let index = match index.map(|i| std::str::from_utf8(i).ok()?.parse::<i64>().ok()) {
        None => -1,
        Some(Some(index)) => index,
        Some(None) => return Reply::err("JSON.ARRPOP's index is an integer"),
    };
    let operand = RawValue::from_string(index.to_string()).expect("an integer is JSON");
    edit(ctx, k, JsonCmd::ArrPop, &path, Some(operand)).await
}

/// `JSON.ARRTRIM key path start stop`: the new lengths.
pub async fn arrtrim(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, path, start, stop] = args else {
        return wrong_arity("json.arrtrim");
    };
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let int = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
    let (Some(start), Some(stop)) = (int(start), int(stop)) else {
        return Reply::err("JSON.ARRTRIM's start and stop are integers");
    };
    let operand = RawValue::from_string(format!("[{start},{stop}]")).expect("integers are JSON");
    edit(ctx, k, JsonCmd::ArrTrim, &path, Some(operand)).await
}

/// The document of `k` as this connection reads it, parsed; `None` when there is none.
async fn document(ctx: &mut Context<'_>, k: &Bytes) -> Result<Option<Value>, Reply> {
    let key = key(k)?;
    match ctx.read_json(&key.pk, &key.sk).await? {
        None => Ok(None),
        Some(json) => serde_json::from_slice(&json)
            .map(Some)
            .map_err(|_| Reply::err("the stored value is not a JSON document")),
    }
}

/// What `path` matches in `doc`, within the read budget.
fn query<'a>(path: &JsonPath, doc: &'a Value, visits: &mut u64) -> Result<Vec<&'a Value>, Reply> {
    path.query(doc, visits)
        .map(|found| found.into_iter().map(|f| f.value).collect())
        .map_err(|e| Reply::err(e.to_string()))
}

/// How `JSON.GET` lays its answer out (`INDENT`, `NEWLINE`, `SPACE`).
#[derive(Default)]
struct Layout {
    indent: String,
    newline: String,
    space: String,
}

impl Layout {
    fn is_compact(&self) -> bool {
        self.indent.is_empty() && self.newline.is_empty() && self.space.is_empty()
    }

    /// Writes `value` laid out into `out`; false, leaving it unfinished, once `out` is longer
    /// than [`READ_ANSWER_BYTES`] (a long `INDENT` repeats on every line, at every depth).
    fn write(&self, value: &Value, depth: usize, out: &mut String) -> bool {
        let line = |out: &mut String, depth: usize| {
            out.push_str(&self.newline);
            for _ in 0..depth {
                out.push_str(&self.indent);
            }
            out.len() <= READ_ANSWER_BYTES
        };
        match value {
            Value::Array(items) if !items.is_empty() => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !line(out, depth + 1) || !self.write(item, depth + 1, out) {
                        return false;
                    }
                }
                line(out, depth);
                out.push(']');
            }
            Value::Object(map) if !map.is_empty() => {
                out.push('{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !line(out, depth + 1) {
                        return false;
                    }
                    out.push_str(&Value::from(key.as_str()).to_string());
                    out.push(':');
                    out.push_str(&self.space);
                    if !self.write(item, depth + 1, out) {
                        return false;
                    }
                }
                line(out, depth);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
        out.len() <= READ_ANSWER_BYTES
    }

    /// `value` laid out, or an error past [`READ_ANSWER_BYTES`].
    fn text(&self, value: &Value) -> Reply {
        let mut out = String::new();
        if !self.write(value, 0, &mut out) {
            return Reply::err(format!(
                "the answer laid out would be larger than {} MiB; use shorter INDENT, NEWLINE \
                 and SPACE strings, or narrower paths",
                READ_ANSWER_BYTES >> 20
            ));
        }
        Reply::Bulk(Bytes::from(out))
    }
}

/// `JSON.GET key [INDENT s] [NEWLINE s] [SPACE s] [path ...]`: the document; under one
/// JSONPath a list of its matches, under one legacy path the first match; under several
/// paths an object from each path to those.
pub async fn get(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((k, rest)) = args.split_first() else {
        return wrong_arity("json.get");
    };
    let mut layout = Layout::default();
    let mut paths = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let slot = if arg.eq_ignore_ascii_case(b"INDENT") {
            &mut layout.indent
        } else if arg.eq_ignore_ascii_case(b"NEWLINE") {
            &mut layout.newline
        } else if arg.eq_ignore_ascii_case(b"SPACE") {
            &mut layout.space
        } else if arg.eq_ignore_ascii_case(b"NOESCAPE") {
            continue;
        } else {
            match path_arg(arg) {
                Ok(path) => {
                    paths.push(path);
                    continue;
                }
                Err(e) => return e,
            }
        };
        let Some(value) = rest.next() else {
            return Reply::err("syntax error: INDENT, NEWLINE and SPACE take a string");
        };
        *slot = String::from_utf8_lossy(value).into_owned();
    }
    if paths.is_empty() && layout.is_compact() {
        // The document as stored, unparsed.
        let key = match key(k) {
            Ok(key) => key,
            Err(e) => return e,
        };
        return match ctx.read_json(&key.pk, &key.sk).await {
            Ok(Some(json)) => Reply::Bulk(json),
            Ok(None) => Reply::Null,
            Err(e) => e,
        };
    }
    let doc = match document(ctx, k).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Reply::Null,
        Err(e) => return e,
    };
    if paths.is_empty() {
        return layout.text(&doc);
    }
    let mut visits = READ_VISITS;
    let mut bytes = READ_ANSWER_BYTES;
    let mut answers = Vec::with_capacity(paths.len());
    for path in &paths {
        match path.answer(&doc, &mut visits, &mut bytes) {
            Ok(Some(answer)) => answers.push(answer),
            Ok(None) => return Reply::err(format!("Path '{}' does not exist", path.text())),
            Err(e) => return Reply::err(e.to_string()),
        }
    }
    let answer = if let [one] = answers.as_slice() {
        one.clone()
    } else {
        Value::Object(
            paths
                .iter()
                .zip(answers)
                .map(|(path, answer)| (path.text().to_owned(), answer))
                .collect(),
        )
    };
    layout.text(&answer)
}

/// `JSON.MGET key [key ...] path`: each key's answer to the path (nil for a missing key, or
/// one the legacy path finds nothing in).
pub async fn mget(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [keys @ .., path] = args else {
        return wrong_arity("json.mget");
    };
    if keys.is_empty() {
        return wrong_arity("json.mget");
    }
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let mut visits = READ_VISITS;
    let mut bytes = READ_ANSWER_BYTES;
    let mut replies = Vec::with_capacity(keys.len());
    for k in keys {
        let doc = match document(ctx, k).await {
            Ok(doc) => doc,
            Err(e) => return e,
        };
        let Some(doc) = doc else {
            replies.push(Reply::Null);
            continue;
        };
        match path.answer(&doc, &mut visits, &mut bytes) {
            Ok(answer) => replies.push(answer.map_or(Reply::Null, |answer| {
                Reply::Bulk(Bytes::from(answer.to_string()))
            })),
            Err(e) => return Reply::err(e.to_string()),
        }
    }
    Reply::Array(replies)
}

/// `JSON.ARRINDEX key path value [start [stop]]`: per array match, the index of the first
/// element equal to `value` within `start..stop` (`stop` 0: to the end; negative from the end),
/// -1 when none is.
pub async fn arrindex(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (k, path, value, range) = match args {
        [k, path, value, range @ ..] if range.len() <= 2 => (k, path, value, range),
        _ => return wrong_arity("json.arrindex"),
    };
    let path = match path_arg(path) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let wanted: Value = match json_arg(value, "JSON.ARRINDEX")
        .and_then(|v| serde_json::from_str(v.get()).map_err(|_| Reply::err("not JSON")))
    {
        Ok(wanted) => wanted,
        Err(e) => return e,
    };
    let mut bounds = [0i64, 0];
    for (slot, arg) in bounds.iter_mut().zip(range) {
        match std::str::from_utf8(arg).ok().and_then(|t| t.parse().ok()) {
            Some(n) => *slot = n,
            None => return Reply::err("JSON.ARRINDEX's start and stop are integers"),
        }
    }
    let doc = match document(ctx, k).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Reply::Null,
        Err(e) => return e,
    };
    let mut visits = READ_VISITS;
    let found = match query(&path, &doc, &mut visits) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let index_in = |items: &Vec<Value>| {
        let len = items.len() as i64;
        let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
        let start = from_end(bounds[0]);
        let stop = if bounds[1] == 0 {
            len
        } else {
            from_end(bounds[1])
        };
        (start..stop)
            .find(|&i| items[i as usize] == wanted)
            .unwrap_or(-1)
    };
    if path.is_legacy() {
        return match found.first() {
            Some(Value::Array(items)) => Reply::Int(index_in(items)),
            Some(other) => Reply::err(format!(
                "wrong type of path value - expected an array but found {}",
                json_type_name(other)
            )),
            None => Reply::err(format!("Path '{}' does not exist", path.text())),
        };
    }
    Reply::Array(
        found
            .into_iter()
            .map(|v| {
                v.as_array()
                    .map_or(Reply::Null, |items| Reply::Int(index_in(items)))
            })
            .collect(),
    )
}

/// `JSON.TYPE`, `JSON.OBJKEYS`, `JSON.OBJLEN`, `JSON.ARRLEN`, `JSON.STRLEN` `key [path]` (the
/// root by default): per match under a JSONPath (nil where the match is of another kind), the
/// first match's under a legacy path.
pub async fn inspect(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let (k, path) = match args {
        [k] => (k, JsonPath::parse(".").expect("the root parses")),
        [k, path] => match path_arg(path) {
            Ok(path) => (k, path),
            Err(e) => return e,
        },
        _ => return wrong_arity(name),
    };
    let doc = match document(ctx, k).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return Reply::Null,
        Err(e) => return e,
    };
    let mut visits = READ_VISITS;
    let found = match query(&path, &doc, &mut visits) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let (expected, answer): (&str, fn(&Value) -> Option<Reply>) = match name {
        "json.type" => ("", |v| {
            Some(Reply::Bulk(Bytes::from_static(
                json_type_name(v).as_bytes(),
            )))
        }),
        "json.objkeys" => ("an object", |v| {
            v.as_object().map(|map| {
                Reply::Array(
                    map.keys()
                        .map(|k| Reply::Bulk(Bytes::from(k.clone())))
                        .collect(),
                )
            })
        }),
        "json.objlen" => ("an object", |v| {
            v.as_object().map(|map| Reply::Int(map.len() as i64))
        }),
        "json.arrlen" => ("an array", |v| {
            v.as_array().map(|items| Reply::Int(items.len() as i64))
        }),
        _ => ("a string", |v| {
            v.as_str().map(|s| Reply::Int(s.len() as i64))
        }),
    };
    if path.is_legacy() {
        let Some(first) = found.first() else {
            return Reply::err(format!("Path '{}' does not exist", path.text()));
        };
        return answer(first).unwrap_or_else(|| {
            Reply::err(format!(
                "wrong type of path value - expected {expected} but found {}",
                json_type_name(first)
            ))
        });
    }
    Reply::Array(
        found
            .into_iter()
            .map(|v| answer(v).unwrap_or(Reply::Null))
            .collect(),
    )
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
