//! RedisJSON's writes: at the root a put or a delete of the record, at a path a `json` op
//! computed at apply, its reply taken from the entry's outcome.

use super::super::expiry::Expiry;
use super::super::keys::{key, put_record};
use super::super::{Context, Shape, wrong_arity};
use super::{json_arg, path_arg};
use crate::api::resp::reply::Reply;
use crate::model::{JsonCmd, JsonPath, OpKind};
use crate::service::WriteOp;
use bytes::Bytes;
use serde_json::value::RawValue;

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
