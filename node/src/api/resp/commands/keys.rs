//! String-style commands: the record (pk = key, sk = "").

use super::expiry::Expiry;
use super::{Context, Shape, data_of, text, text_ref, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::{Key, OpKind};
use crate::service::Outcome;
use crate::service::WriteOp;
use bytes::Bytes;

pub(super) fn key(arg: &Bytes) -> Result<Key, Reply> {
    Ok(Key {
        pk: text(arg)?,
        sk: String::new(),
    })
}

/// `GET key`
pub async fn get(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k] = args else { return wrong_arity("get") };
    let pk = match text_ref(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    match ctx.read_one(&pk, "").await {
        Ok(value) => value.map_or(Reply::Null, Reply::Bulk),
        Err(e) => e,
    }
}

/// `MGET key [key ...]`
pub async fn mget(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if args.is_empty() {
        return wrong_arity("mget");
    }
    let keys: Vec<Key> = match args.iter().map(key).collect() {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    ctx.read_values(keys).await
}

/// `EXISTS key [key ...]`: how many of the keys exist — a string or a hash with fields (repeats
/// count again, as in Redis).
pub async fn exists(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    count_existing(ctx, args, "exists").await
}

/// `TOUCH key [key ...]`: how many of the keys exist, as `EXISTS` counts them. Nothing here
/// keeps an access time to update (no LRU eviction: a config database evicts nothing).
pub async fn touch(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    count_existing(ctx, args, "touch").await
}

/// How many of the keys `args` exist, each counted as often as it is named (as Redis does).
async fn count_existing(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    if args.is_empty() {
        return wrong_arity(name);
    }
    let pks: Vec<String> = match args.iter().map(text).collect() {
        Ok(pks) => pks,
        Err(e) => return e,
    };
    match ctx.keys_exist(&pks).await {
        Ok(found) => Reply::Int(found.iter().filter(|&&f| f).count() as i64),
        Err(e) => e,
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`. NX and XX become `if`
/// conditions, decided in log order; GET returns the old value from the op itself, at apply.
/// Without an expiry option the key's deadline is dropped, as in Redis.
pub async fn set(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, v, options @ ..] = args else {
        return wrong_arity("set");
    };
    let (cond, get, expiry) = match super::expiry::set_options(options) {
        Ok(parsed) => parsed,
        Err(e) => return e,
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let data = data_of(v);
    if !get {
        return put_record(ctx, key, data, cond, expiry, false).await;
    }
    match cond {
        Some("data == nil") => Reply::err(
            "SET with both NX and GET is not supported: a refused write returns no old value here",
        ),
        _ if cond.is_some() && ctx.session.collecting.is_some() => Reply::err(
            "SET with both XX and GET is not supported inside MULTI: a write its condition may \
             skip answers whether it wrote, not the old value",
        ),
        _ => {
            let op = WriteOp {
                return_old: true,
                ..put_op(key, data, cond, expiry)
            };
            ctx.write_returning(op, Shape::Bulk).await
        }
    }
}

/// `GETSET key value`: sets the value, replies with the old one (nil if none), as one op.
pub async fn getset(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, v] = args else {
        return wrong_arity("getset");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let data = data_of(v);
    let op = WriteOp {
        op: OpKind::Put,
        pk: key.pk,
        sk: key.sk,
        data: Some(data),
        return_old: true,
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Bulk).await
}

/// `GETDEL key`: deletes the key, replies with its value (nil if none), as one op.
pub async fn getdel(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k] = args else {
        return wrong_arity("getdel");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let op = WriteOp {
        op: OpKind::Delete,
        pk: key.pk,
        sk: key.sk,
        return_old: true,
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Bulk).await
}

/// Writes the record `key` with `data`, under `cond` (`NX`/`XX`), doing `expiry` to its
/// deadline: `OK`, or nil when the condition was false (`flag`: 1 or 0, for `SETNX`/`HSETNX`).
pub(super) async fn put_record(
    ctx: &mut Context<'_>,
    key: Key,
    data: Box<serde_json::value::RawValue>,
    cond: Option<&str>,
    expiry: Expiry,
    flag: bool,
) -> Reply {
    if cond.is_some() && ctx.session.collecting.is_some() {
        // Inside `EXEC`: from log format v4 a false condition skips this write alone, decided
        // at apply like the rest of the transaction.
        if ctx.service.entry_write_version() < 4 {
            return Reply::err(
                "NX/XX inside MULTI needs log format v4 (ENTRY_WRITE_VERSION=4): below it the \
                 condition would decide the whole transaction",
            );
        }
        let op = WriteOp {
            if_skips: true,
            ..put_op(key, data, cond, expiry)
        };
        return ctx.write_returning(op, Shape::Ran { flag }).await;
    }
    let reply = put_record_now(ctx, key, data, cond, expiry).await;
    if flag { as_flag(reply) } else { reply }
}

/// A put of `data` to `key` under `cond`, doing `expiry` to its deadline.
fn put_op(
    key: Key,
    data: Box<serde_json::value::RawValue>,
    cond: Option<&str>,
    expiry: Expiry,
) -> WriteOp {
    let mut op = WriteOp {
        op: OpKind::Put,
        pk: key.pk,
        sk: key.sk,
        data: Some(data),
        cond: cond.map(str::to_string),
        ..WriteOp::default()
    };
    expiry.apply(&mut op);
    op
}

/// [`put_record`] outside a transaction: its own entry, its reply from the outcome.
async fn put_record_now(
    ctx: &mut Context<'_>,
    key: Key,
    data: Box<serde_json::value::RawValue>,
    cond: Option<&str>,
    expiry: Expiry,
) -> Reply {
    let op = put_op(key, data, cond, expiry);
    match ctx.write(vec![op], cond.is_some()).await {
        Err(e) => e,
        Ok(_) if cond.is_none() => Reply::ok(),
        Ok(results) => match results.first().and_then(|r| r.outcome.clone()) {
            Some(Some(Outcome::Applied(_))) => Reply::ok(),
            Some(Some(Outcome::Rejected(_))) => Reply::Null,
            _ => {
                Reply::err("the write is durable but was not applied in time; read the key to see")
            }
        },
    }
}

/// `DEL key [key ...]`: deletes each key whole (the string and every hash field); how many
/// existed.
pub async fn del(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    if args.is_empty() {
        return wrong_arity(name);
    }
    let pks: Vec<String> = match args.iter().map(text).collect() {
        Ok(pks) => pks,
        Err(e) => return e,
    };
    ctx.delete_keys(pks).await
}

/// `TYPE key`: `string` or `ReJSON-RL` when the record (key, "") exists (see [`value_type`]),
/// else `set` or `hash` when the pk has records, else `none`.
pub async fn type_of(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k] = args else {
        return wrong_arity("type");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    match ctx.read_json(&key.pk, &key.sk).await {
        Ok(Some(json)) => Reply::Simple(value_type(&json)),
        Ok(None) => match records_type(ctx, key.pk).await {
            Ok(kind) => Reply::Simple(kind),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The Redis type of a key's record (key, "") by its data: `string` for a JSON string (what
/// Redis writes store) or binary data, `ReJSON-RL` — RedisJSON's type name, which tools read
/// to show a document as one — for any other JSON (a document written with `JSON.SET` or over
/// HTTP). `GET` reads either.
pub(super) fn value_type(data_json: &[u8]) -> &'static str {
    let first = data_json.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'"') || crate::model::is_binary_data(data_json) {
        "string"
    } else {
        "ReJSON-RL"
    }
}

/// The Redis type of a pk that has no string record: `set` or `hash` by its first record, `none`
/// when it has no records.
pub(super) async fn records_type(ctx: &Context<'_>, pk: String) -> Result<&'static str, Reply> {
    // Inside `EXEC`, after the transaction's earlier writes to the key.
    if ctx
        .session
        .collecting
        .as_ref()
        .is_some_and(|ops| ops.iter().any(|op| op.pk == pk))
    {
        let records = ctx.scan_all(pk, String::new()).await?;
        return Ok(match records.first() {
            None => "none",
            Some(first) if first.data_json == "true" => "set",
            Some(_) => "hash",
        });
    }
    let page = ctx
        .service
        .list(crate::service::ListRequest {
            min_offsets: ctx.min_offsets([pk.as_str()]),
            pk,
            limit: 1,
            ..Default::default()
        })
        .await;
    match page {
        Ok(page) if page.records.is_empty() => Ok("none"),
        // Set members are stored with `true` (HSET stores strings): its first record tells.
        Ok(page) if page.records[0].data_json == "true" => Ok("set"),
        Ok(_) => Ok("hash"),
        Err(e) => Err(super::service_error(e)),
    }
}

/// `SETNX key value`: 1 if set, 0 if the key existed.
pub async fn setnx(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, v] = args else {
        return wrong_arity("setnx");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let data = data_of(v);
    put_record(ctx, key, data, Some("data == nil"), Expiry::Clear, true).await
}

/// OK as 1, nil (the condition was false) as 0: the replies of `SETNX`, `HSETNX`.
fn as_flag(reply: Reply) -> Reply {
    match reply {
        Reply::Null => Reply::Int(0),
        Reply::Simple(_) => Reply::Int(1),
        other => other,
    }
}

/// `MSET key value [key value ...]` (OK), or `MSETNX` (1 if every key was new and all were set,
/// else 0 and none): one atomic entry, so the keys must share a partition.
pub async fn mset(ctx: &mut Context<'_>, args: &[Bytes], only_new: bool) -> Reply {
    let name = if only_new { "msetnx" } else { "mset" };
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return wrong_arity(name);
    }
    let mut ops: Vec<WriteOp> = Vec::with_capacity(args.len() / 2);
    // MSETNX checks every key before it sets any, as Redis does: a key named twice is set once,
    // to its last value (checked in sequence, its second op would see the first's write and
    // refuse the whole command).
    let mut seen: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    for pair in args.chunks(2) {
        let key = match key(&pair[0]) {
            Ok(key) => key,
            Err(e) => return e,
        };
        let data = data_of(&pair[1]);
        if only_new {
            match seen.entry((key.pk.clone(), key.sk.clone())) {
                std::collections::hash_map::Entry::Occupied(earlier) => {
                    ops[*earlier.get()].data = Some(data);
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(ops.len());
                }
            }
        }
        ops.push(WriteOp {
            op: OpKind::Put,
            pk: key.pk,
            sk: key.sk,
            data: Some(data),
            cond: only_new.then(|| "data == nil".to_string()),
            ..WriteOp::default()
        });
    }
    if only_new && ctx.session.collecting.is_some() {
        // Inside `EXEC`: every key set or none, while the rest of the transaction goes on.
        return ctx.write_skip_group("MSETNX", ops).await;
    }
    match ctx.write_atomic(ops, only_new).await {
        Err(e) => e,
        Ok(_) if !only_new => Reply::ok(),
        Ok(results) => match results.first().and_then(|r| r.outcome.clone()) {
            Some(Some(Outcome::Applied(_))) => Reply::Int(1),
            Some(Some(Outcome::Rejected(_))) => Reply::Int(0),
            _ => {
                Reply::err("the write is durable but was not applied in time; read the keys to see")
            }
        },
    }
}

/// `GETRANGE key start end` (and its old name `SUBSTR`): the bytes of the string from `start`
/// to `end`, both included; negative indexes count from the end, out-of-range ones are clamped,
/// as in Redis.
pub async fn getrange(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [k, start, end] = args else {
        return wrong_arity(name);
    };
    let integer = |arg: &Bytes| {
        std::str::from_utf8(arg)
            .ok()
            .and_then(crate::engine::parse_redis_integer)
    };
    let (Some(start), Some(end)) = (integer(start), integer(end)) else {
        return Reply::err("value is not an integer or out of range");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    match ctx.read_one(&key.pk, "").await {
        Ok(value) => {
            let value = value.unwrap_or_default();
            match byte_range(value.len(), start, end) {
                Some(range) => Reply::Bulk(value.slice(range)),
                None => Reply::Bulk(Bytes::new()),
            }
        }
        Err(e) => e,
    }
}

/// The bytes `start..=end` of a string of `len` bytes select, by Redis's `GETRANGE` rules;
/// `None` when they select nothing.
fn byte_range(len: usize, start: i64, end: i64) -> Option<std::ops::RangeInclusive<usize>> {
    let len = len as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return None;
    }
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    (start <= end).then_some(start as usize..=end as usize)
}

/// `MEMORY USAGE key [SAMPLES n]`: the bytes the key's records hold — the key, each field's
/// name and each value, as a client reads them — or nil when there is no such key. Every record
/// is counted, a page at a time (`SAMPLES` is accepted and has nothing to choose); the store's
/// and the read index's own overhead is not included. What `redis-cli --memkeys` reads.
pub async fn memory(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [sub, rest @ ..] = args else {
        return wrong_arity("memory");
    };
    if sub.eq_ignore_ascii_case(b"help") && rest.is_empty() {
        return super::help(&[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> (FireScroll: its records' keys, field",
            "    names and values, as a client reads them).",
            "HELP",
            "    Print this help.",
        ]);
    }
    if !sub.eq_ignore_ascii_case(b"usage") {
        return Reply::err(format!(
            "unknown subcommand '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(sub)
        ));
    }
    let [k, options @ ..] = rest else {
        return wrong_arity("memory|usage");
    };
    match options {
        [] => {}
        [samples, n] if samples.eq_ignore_ascii_case(b"samples") => {
            if std::str::from_utf8(n)
                .ok()
                .and_then(crate::engine::parse_redis_integer)
                .is_none()
            {
                return Reply::err("value is not an integer or out of range");
            }
        }
        _ => return Reply::err("syntax error"),
    }
    let pk = match text(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    // Summed page by page: a hash of millions of fields is never held whole for one number.
    let (mut records, mut bytes) = (0usize, 0usize);
    let summed = ctx.scan_pages(&pk, "", |page| {
        records += page.len();
        bytes += page
            .iter()
            .map(|r| pk.len() + r.sk.len() + super::value_of(r).len())
            .sum::<usize>();
        true
    });
    match summed.await {
        Ok(()) if records == 0 => Reply::Null,
        Ok(()) => Reply::Int(bytes as i64),
        Err(e) => e,
    }
}

/// `STRLEN key`: the length in bytes of the value, 0 when there is none.
pub async fn strlen(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k] = args else {
        return wrong_arity("strlen");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    match ctx.read_one(&key.pk, "").await {
        Ok(value) => Reply::Int(value.map_or(0, |v| v.len() as i64)),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn getrange_selects_what_redis_does() {
        // "Hello World" (11 bytes), the cases of Redis's GETRANGE documentation and its edges.
        let pick = |start, end| byte_range(11, start, end).map(|r| &"Hello World"[r]);
        assert_eq!(pick(0, 3), Some("Hell"));
        assert_eq!(pick(-3, -1), Some("rld"));
        assert_eq!(pick(0, -1), Some("Hello World"));
        assert_eq!(pick(10, 100), Some("d"));
        assert_eq!(pick(-100, 2), Some("Hel"));
        assert_eq!(pick(5, 3), None);
        assert_eq!(pick(-1, -5), None);
        assert_eq!(pick(11, 20), None);
        assert_eq!(pick(i64::MIN, i64::MAX), Some("Hello World"));
        assert_eq!(byte_range(0, 0, -1), None);
    }
}
