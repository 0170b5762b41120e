//! Hash commands: the hash is a pk, its fields are sks.

use super::expiry::Expiry;
use super::keys::put_record;
use super::{Context, data_of, text, text_ref, value_of, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::{Key, OpKind};
use crate::service::WriteOp;
use bytes::Bytes;

pub(super) fn keys_of(pk: &Bytes, fields: &[Bytes]) -> Result<Vec<Key>, Reply> {
    let pk = text(pk)?;
    fields
        .iter()
        .map(|f| {
            Ok(Key {
                pk: pk.clone(),
                sk: text(f)?,
            })
        })
        .collect()
}

/// `HGET key field`
pub async fn hget(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, field] = args else {
        return wrong_arity("hget");
    };
    let (pk, field) = match (text_ref(pk), text_ref(field)) {
        (Ok(pk), Ok(field)) => (pk, field),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match ctx.read_one(&pk, &field).await {
        Ok(value) => value.map_or(Reply::Null, Reply::Bulk),
        Err(e) => e,
    }
}

/// `HMGET key field [field ...]`
pub async fn hmget(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, fields @ ..] = args else {
        return wrong_arity("hmget");
    };
    if fields.is_empty() {
        return wrong_arity("hmget");
    }
    let keys = match keys_of(pk, fields) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    ctx.read_values(keys).await
}

pub(super) async fn all_fields(
    ctx: &Context<'_>,
    args: &[Bytes],
    name: &str,
) -> Result<Vec<crate::model::Record>, Reply> {
    let [pk] = args else {
        return Err(wrong_arity(name));
    };
    ctx.scan_within(text(pk)?, String::new(), crate::model::READ_ANSWER_BYTES)
        .await
}

/// `HGETALL key`: a map under RESP3.
pub async fn hgetall(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match all_fields(ctx, args, "hgetall").await {
        Ok(records) => Reply::Map(
            records
                .iter()
                .map(|r| {
                    (
                        Reply::Bulk(super::wire_key(&r.sk)),
                        Reply::Bulk(value_of(r)),
                    )
                })
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `HKEYS key`
pub async fn hkeys(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match all_fields(ctx, args, "hkeys").await {
        Ok(records) => Reply::Array(
            records
                .into_iter()
                .map(|r| Reply::Bulk(super::wire_key(&r.sk)))
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `HVALS key`
pub async fn hvals(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match all_fields(ctx, args, "hvals").await {
        Ok(records) => Reply::Array(records.iter().map(|r| Reply::Bulk(value_of(r))).collect()),
        Err(e) => e,
    }
}

/// `HLEN key`: O(1), like Redis's, from the key index.
pub async fn hlen(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    count_fields(ctx, args, "hlen").await
}

/// How many fields (or set members) a key has: `HLEN`, `SCARD`.
pub(super) async fn count_fields(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [pk] = args else {
        return wrong_arity(name);
    };
    let pk = match text(pk) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    match ctx.field_count(pk).await {
        Ok(count) => Reply::Int(count as i64),
        Err(e) => e,
    }
}

/// `HEXISTS key field`
pub async fn hexists(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    field_exists(ctx, args, "hexists").await
}

/// Whether a key has a field (or set member): `HEXISTS`, `SISMEMBER`.
pub(super) async fn field_exists(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [pk, field] = args else {
        return wrong_arity(name);
    };
    let keys = match keys_of(pk, std::slice::from_ref(field)) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    match ctx.exist(&keys).await {
        Ok(found) => Reply::Int(i64::from(found[0])),
        Err(e) => e,
    }
}

/// `HSET key field value [field value ...]`: how many fields are new. (`HMSET` answers OK.)
pub async fn hset(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [pk, pairs @ ..] = args else {
        return wrong_arity(name);
    };
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return wrong_arity(name);
    }
    let fields: Vec<Bytes> = pairs.iter().step_by(2).cloned().collect();
    let keys = match keys_of(pk, &fields) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let mut ops = Vec::with_capacity(keys.len());
    for (key, value) in keys.iter().zip(pairs.iter().skip(1).step_by(2)) {
        ops.push(WriteOp {
            op: OpKind::Put,
            pk: key.pk.clone(),
            sk: key.sk.clone(),
            data: Some(data_of(value)),
            cond: None,
            // A field written again keeps its deadline (the key's, after EXPIRE); a new one
            // takes the key's.
            keep_ttl: true,
            key_ttl: true,
            // HSET answers how many fields are new, decided at apply (HMSET answers OK and
            // need not wait for it).
            return_existed: name != "hmset",
            ..WriteOp::default()
        });
    }
    if name == "hmset" {
        return match ctx.write(ops, false).await {
            Ok(_) => Reply::ok(),
            Err(e) => e,
        };
    }
    let shape = super::Shape::Added(ops.len() as u32);
    ctx.write_counting(ops, shape).await
}

/// `HDEL key field [field ...]`: how many existed.
pub async fn hdel(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, fields @ ..] = args else {
        return wrong_arity("hdel");
    };
    if fields.is_empty() {
        return wrong_arity("hdel");
    }
    let keys = match keys_of(pk, fields) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    ctx.delete_records(keys).await
}

/// `HSETNX key field value`: 1 if the field was new and set, 0 if it existed.
pub async fn hsetnx(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, field, value] = args else {
        return wrong_arity("hsetnx");
    };
    let key = match keys_of(pk, std::slice::from_ref(field)) {
        Ok(mut keys) => keys.remove(0),
        Err(e) => return e,
    };
    put_record(
        ctx,
        key,
        data_of(value),
        Some("data == nil"),
        Expiry::Keep,
        true,
    )
    .await
}

/// `HSTRLEN key field`: the length in bytes of the field's value, 0 when there is none.
pub async fn hstrlen(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, field] = args else {
        return wrong_arity("hstrlen");
    };
    let (pk, field) = match (text_ref(pk), text_ref(field)) {
        (Ok(pk), Ok(field)) => (pk, field),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match ctx.read_one(&pk, &field).await {
        Ok(value) => Reply::Int(value.map_or(0, |v| v.len() as i64)),
        Err(e) => e,
    }
}

/// Most fields one `HRANDFIELD` with a negative count (fields may repeat) answers.
const MAX_REPEATED_FIELDS: u64 = 100_000;

/// `HRANDFIELD key [count [WITHVALUES]]`: random fields. A positive count gives distinct fields
/// (at most all of them), a negative one may repeat fields, as in Redis.
pub async fn hrandfield(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    random_fields(ctx, args, "hrandfield").await
}

/// HRANDFIELD, and SRANDMEMBER (which takes no WITHVALUES).
pub(super) async fn random_fields(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let (key, count, with_values) = match args {
        [key] => (key, None, false),
        [key, count] => (key, Some(count), false),
        [key, count, w] if name == "hrandfield" && w.eq_ignore_ascii_case(b"WITHVALUES") => {
            (key, Some(count), true)
        }
        [_, _, _] => return Reply::err("syntax error"),
        _ => return wrong_arity(name),
    };
    let count = match count.map(|c| std::str::from_utf8(c).ok()?.parse::<i64>().ok()) {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return Reply::err("value is not an integer or out of range"),
    };
    // A negative count repeats fields, so its reply is as long as asked: bounded, with an error
    // past the bound rather than a shorter answer than asked for.
    if count.is_some_and(|n| n.unsigned_abs() > MAX_REPEATED_FIELDS && n < 0) {
        return Reply::err(format!(
            "value is out of range: a negative {} count asks for at most \
             {MAX_REPEATED_FIELDS} here; ask in several calls",
            name.to_ascii_uppercase()
        ));
    }
    let records = match all_fields(ctx, std::slice::from_ref(key), name).await {
        Ok(records) => records,
        Err(e) => return e,
    };
    let Some(count) = count else {
        return match records.is_empty() {
            true => Reply::Null,
            false => {
                let i = (super::random() % records.len() as u64) as usize;
                Reply::Bulk(super::wire_key(&records[i].sk))
            }
        };
    };
    let picked: Vec<usize> = if count >= 0 {
        // Distinct fields: a partial Fisher-Yates shuffle.
        let mut order: Vec<usize> = (0..records.len()).collect();
        let take = (count as usize).min(order.len());
        for i in 0..take {
            let j = i + (super::random() % (order.len() - i) as u64) as usize;
            order.swap(i, j);
        }
        order.truncate(take);
        order
    } else if records.is_empty() {
        Vec::new()
    } else {
        (0..count.unsigned_abs())
            .map(|_| (super::random() % records.len() as u64) as usize)
            .collect()
    };
    // Under RESP3 each field and its value are a pair of their own, as Redis 7 answers
    // (redis-py then gives a list of pairs); under RESP2 one flat array.
    let pairs = with_values && ctx.session.proto >= 3;
    let mut out = Vec::with_capacity(picked.len() * 2);
    for i in picked {
        let field = Reply::Bulk(super::wire_key(&records[i].sk));
        match (with_values, pairs) {
            (false, _) => out.push(field),
            (true, false) => out.extend([field, Reply::Bulk(value_of(&records[i]))]),
            (true, true) => out.push(Reply::Array(vec![
                field,
                Reply::Bulk(value_of(&records[i])),
            ])),
        }
    }
    Reply::Array(out)
}
