//! RedisJSON's reads: the document read as any read, then queried with the service's
//! [`JsonRead`] (as an HTTP get with `path` is), within one read's bounds.

use super::super::keys::key;
use super::super::{Context, service_error, wrong_arity};
use super::{json_arg, path_arg};
use crate::api::resp::reply::Reply;
use crate::model::{JsonPath, READ_ANSWER_BYTES, json_type_name};
use crate::service::JsonRead;
use bytes::Bytes;
use serde_json::Value;

/// The document of `k` as this connection reads it, parsed; `None` when there is none.
async fn document(ctx: &mut Context<'_>, k: &Bytes) -> Result<Option<Value>, Reply> {
    let key = key(k)?;
    match ctx.read_json(&key.pk, &key.sk).await? {
        None => Ok(None),
        Some(json) => JsonRead::document(&json).map(Some).map_err(service_error),
    }
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
                // Checked per indent: an `INDENT` as long as a request's argument, 64 deep,
                // would otherwise grow past the bound many times over before one check.
                if out.len() > READ_ANSWER_BYTES {
                    return false;
                }
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
    let mut read = JsonRead::default();
    let mut answers = Vec::with_capacity(paths.len());
    for path in &paths {
        match read.answer(path, &doc) {
            Ok(Some(answer)) => answers.push(answer),
            Ok(None) => return Reply::err(format!("Path '{}' does not exist", path.text())),
            Err(e) => return service_error(e),
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
    let mut read = JsonRead::default();
    let mut replies = Vec::with_capacity(keys.len());
    for k in keys {
        let json = match key(k) {
            Ok(key) => ctx.read_json(&key.pk, &key.sk).await,
            Err(e) => return e,
        };
        let doc = match json.map(|json| json.map(|json| read.parse(&json))) {
            Ok(Some(Ok(doc))) => doc,
            Ok(None) => {
                replies.push(Reply::Null);
                continue;
            }
            Ok(Some(Err(e))) => return service_error(e),
            Err(e) => return e,
        };
        match read.answer(&path, &doc) {
            Ok(answer) => replies.push(answer.map_or(Reply::Null, |answer| {
                Reply::Bulk(Bytes::from(answer.to_string()))
            })),
            Err(e) => return service_error(e),
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
    let found = match JsonRead::default().matches(&path, &doc) {
        Ok(found) => found,
        Err(e) => return service_error(e),
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

/// `JSON.DEBUG MEMORY key [path]` (the bytes of each match's JSON text, as `MEMORY USAGE`
/// counts a value: FireScroll keeps documents as their text; 0 for a key without one) and
/// `JSON.DEBUG HELP`.
pub async fn debug(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match args.split_first() {
        Some((sub, rest)) if sub.eq_ignore_ascii_case(b"MEMORY") && !rest.is_empty() => {
            inspect(ctx, rest, "json.debug").await
        }
        Some((sub, [])) if sub.eq_ignore_ascii_case(b"HELP") => Reply::Array(vec![
            Reply::bulk(
                "MEMORY <key> [path] - reports the size in bytes of the JSON value at \
                         path (its JSON text); the root by default",
            ),
            Reply::bulk("HELP - this message"),
        ]),
        _ => Reply::err("unknown subcommand - try `JSON.DEBUG HELP`"),
    }
}

/// Replies one `JSON.RESP` may build (one per JSON node, each a few dozen bytes): the text
/// bound of an answer does not bound them (`[0,0,...]` is two bytes a node), so they are
/// bounded apart.
const RESP_NODES: usize = 1_000_000;

/// A JSON value as `JSON.RESP` answers it: `null` nil, booleans simple strings, integers
/// integers, other numbers and strings bulk strings, arrays `[` then their elements, objects
/// `{` then their members' names and values; spending a reply per node from `nodes`. Its
/// recursion is as deep as the document, which apply and writes keep within 64 levels.
fn resp_of(value: &Value, nodes: &mut usize) -> Result<Reply, Reply> {
    *nodes = nodes.checked_sub(1).ok_or_else(|| {
        Reply::err(format!(
            "the answer would be more than {RESP_NODES} replies; ask for a narrower path"
        ))
    })?;
    Ok(match value {
        Value::Null => Reply::Null,
        Value::Bool(true) => Reply::Simple("true"),
        Value::Bool(false) => Reply::Simple("false"),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Reply::Bulk(Bytes::from(n.to_string())), Reply::Int),
        Value::String(s) => Reply::Bulk(Bytes::from(s.clone())),
        Value::Array(items) => {
            let mut replies = vec![Reply::Simple("[")];
            for item in items {
                replies.push(resp_of(item, nodes)?);
            }
            Reply::Array(replies)
        }
        Value::Object(members) => {
            let mut replies = vec![Reply::Simple("{")];
            for (name, value) in members {
                replies.push(Reply::Bulk(Bytes::from(name.clone())));
                replies.push(resp_of(value, nodes)?);
            }
            Reply::Array(replies)
        }
    })
}

/// `JSON.RESP` (`resp`) and `JSON.DEBUG MEMORY` of `path`'s matches: whole values, so each is
/// charged its JSON text to what the read may answer (a `$..*` names every subtree once per
/// ancestor), as `JSON.GET`'s answers are.
fn rendered(read: &mut JsonRead, path: &JsonPath, found: &[&Value], resp: bool) -> Reply {
    let mut nodes = RESP_NODES;
    let mut render = |value: &Value| -> Result<Reply, Reply> {
        let size = read.text_size(value).map_err(service_error)?;
        if resp {
            resp_of(value, &mut nodes)
        } else {
            Ok(Reply::Int(size as i64))
        }
    };
    let rendered = if path.is_legacy() {
        match found.first() {
            None => return Reply::err(format!("Path '{}' does not exist", path.text())),
            Some(first) => render(first),
        }
    } else {
        found
            .iter()
            .map(|value| render(value))
            .collect::<Result<Vec<_>, _>>()
            .map(Reply::Array)
    };
    rendered.unwrap_or_else(|refused| refused)
}

/// `JSON.TYPE`, `JSON.OBJKEYS`, `JSON.OBJLEN`, `JSON.ARRLEN`, `JSON.STRLEN`, `JSON.RESP` and
/// `JSON.DEBUG MEMORY` `key [path]` (the root by default): per match under a JSONPath (nil where
/// the match is of another kind), the first match's under a legacy path.
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
        Ok(None) if name == "json.debug" => return Reply::Int(0),
        Ok(None) => return Reply::Null,
        Err(e) => return e,
    };
    let mut read = JsonRead::default();
    let found = match read.matches(&path, &doc) {
        Ok(found) => found,
        Err(e) => return service_error(e),
    };
    if matches!(name, "json.resp" | "json.debug") {
        return rendered(&mut read, &path, &found, name == "json.resp");
    }
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
