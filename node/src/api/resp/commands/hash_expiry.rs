//! Redis 8's hash commands that write fields and their deadlines together: `HSETEX`, `HGETEX`,
//! `HGETDEL`. Each is one atomic entry whose values and verdicts are decided at apply, so a
//! field read and then deleted or given a deadline is the value it had in log order.

use super::expiry::{Unit, fields_of, integer, invalid_expire, positive_deadline};
use super::hash::keys_of;
use super::{Context, Each, data_of, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::{OpKind, Outcome, RejectionKind, Returned};
use crate::service::WriteOp;
use bytes::Bytes;

/// What a field deadline option asks (`EX`, `PX`, `EXAT`, `PXAT`, `KEEPTTL`, `PERSIST`).
#[derive(Clone, Copy)]
enum Deadline {
    /// No option: `HGETEX` only reads; `HSETEX` writes as `HSET` does.
    Unchanged,
    /// `KEEPTTL` (`HSETEX`).
    Keep,
    /// `PERSIST` (`HGETEX`).
    Remove,
    At(i64),
}

/// `HSETEX key [FNX | FXX] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL] FIELDS n field value ...`:
/// 1 when every field was set, 0 when `FNX` (none may exist) or `FXX` (all must) said no.
pub async fn hsetex(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((pk, mut rest)) = args.split_first() else {
        return wrong_arity("hsetex");
    };
    let mut cond = None;
    let mut deadline = None;
    while let Some(option) = rest.first().filter(|o| !o.eq_ignore_ascii_case(b"FIELDS")) {
        let option = option.to_ascii_uppercase();
        match option.as_slice() {
            b"FNX" if cond.is_none() => cond = Some("data == nil"),
            b"FXX" if cond.is_none() => cond = Some("data != nil"),
            b"KEEPTTL" if deadline.is_none() => deadline = Some(Deadline::Keep),
            name if deadline.is_none() && Unit::of_option(name).is_some() => {
                let unit = Unit::of_option(name).expect("matched");
                let Some(arg) = rest.get(1) else {
                    return Reply::err("syntax error");
                };
                match positive_deadline(arg, unit, "hsetex") {
                    Ok(at) => deadline = Some(Deadline::At(at)),
                    Err(e) => return e,
                }
                rest = &rest[1..];
            }
            _ => return Reply::err("syntax error"),
        }
        rest = &rest[1..];
    }
    let pairs = match field_pairs(rest) {
        Ok(pairs) => pairs,
        Err(e) => return e,
    };
    let fields: Vec<Bytes> = pairs.iter().step_by(2).cloned().collect();
    let keys = match keys_of(pk, &fields) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let deadline = deadline.unwrap_or(Deadline::Unchanged);
    let mut fields_and_values: Vec<(crate::model::Key, &Bytes)> = keys
        .into_iter()
        .zip(pairs.iter().skip(1).step_by(2))
        .collect();
    if cond.is_some() {
        // Every field is checked before any is set, as Redis does: a field named twice is set
        // once, to its last value (checked in sequence, its second op would see the first's
        // write and refuse the whole command).
        let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, (key, _)) in fields_and_values.iter().enumerate() {
            last.insert(key.sk.clone(), i);
        }
        let mut i = 0;
        fields_and_values.retain(|(key, _)| {
            i += 1;
            last.get(&key.sk) == Some(&(i - 1))
        });
    }
    let ops: Vec<WriteOp> = fields_and_values
        .into_iter()
        .map(|(key, value)| {
            let mut op = WriteOp {
                op: OpKind::Put,
                pk: key.pk,
                sk: key.sk,
                data: Some(data_of(value)),
                cond: cond.map(str::to_string),
                ..WriteOp::default()
            };
            match deadline {
                // The fields' own deadline, which fields added to the key later do not take.
                Deadline::At(at) => {
                    op.expires_at = Some(at);
                    op.own_ttl = true;
                }
                // A new field takes the key's deadline; an existing one keeps its own
                // (`KEEPTTL`) or, as `HSET` writes it, drops it for the key's.
                Deadline::Keep | Deadline::Unchanged | Deadline::Remove => {
                    op.keep_ttl = true;
                    op.key_ttl = true;
                    op.own_ttl = matches!(deadline, Deadline::Keep);
                }
            }
            op
        })
        .collect();
    if ctx.session.collecting.is_some() {
        if cond.is_some() {
            // Every field or none, while the rest of the transaction goes on.
            return ctx.write_skip_group("HSETEX FNX/FXX", ops).await;
        }
        // Joins the transaction's entry, which applies whole or not at all.
        return match ctx.write_atomic(ops, false).await {
            Ok(_) => Reply::Int(1),
            Err(e) => e,
        };
    }
    match applied(ctx, ops).await {
        Ok(Some(_)) => Reply::Int(1),
        Ok(None) => Reply::Int(0),
        Err(e) => e,
    }
}

/// `HGETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST] FIELDS n field ...`: the fields'
/// values (nil for none), and with an option their new deadline, set in the same op; a deadline
/// already past (`EX 0`) deletes them.
pub async fn hgetex(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((pk, mut rest)) = args.split_first() else {
        return wrong_arity("hgetex");
    };
    let mut deadline = Deadline::Unchanged;
    if let Some(option) = rest.first().filter(|o| !o.eq_ignore_ascii_case(b"FIELDS")) {
        let option = option.to_ascii_uppercase();
        if option == b"PERSIST" {
            deadline = Deadline::Remove;
            rest = &rest[1..];
        } else if let Some(unit) = Unit::of_option(&option) {
            let Some(arg) = rest.get(1) else {
                return Reply::err("syntax error");
            };
            // 0 (or a time already past) is allowed here: the fields go at once.
            let at = match integer(arg) {
                Ok(n) if n >= 0 => unit.deadline(n),
                Ok(_) => None,
                Err(e) => return e,
            };
            let Some(at) = at else {
                return invalid_expire("hgetex");
            };
            deadline = Deadline::At(at);
            rest = &rest[2..];
        } else {
            return Reply::err("syntax error");
        }
    }
    let keys = match fields_of(pk, rest) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let expires_at = match deadline {
        Deadline::At(at) => Some(at),
        Deadline::Remove => None,
        // A plain read: HMGET.
        Deadline::Unchanged | Deadline::Keep => {
            let records = match ctx.read(keys.clone()).await {
                Ok(records) => records,
                Err(e) => return e,
            };
            return Reply::Array(
                keys.iter()
                    .map(|key| {
                        records
                            .iter()
                            .find(|r| r.sk == key.sk)
                            .map_or(Reply::Null, |r| Reply::Bulk(super::value_of(r)))
                    })
                    .collect(),
            );
        }
    };
    let ops = keys
        .into_iter()
        .map(|key| WriteOp {
            op: OpKind::Expire,
            pk: key.pk,
            sk: key.sk,
            expires_at,
            own_ttl: expires_at.is_some(),
            // `PERSIST` removes the field's own TTL alone (format v5), as `HPERSIST` does.
            field_ttl: true,
            return_old: true,
            ..WriteOp::default()
        })
        .collect();
    ctx.write_per_op(ops, Each::Value).await
}

/// `HGETDEL key FIELDS n field ...`: the fields' values (nil for none), deleted in the same op
/// (the key with its last field).
pub async fn hgetdel(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((pk, rest)) = args.split_first() else {
        return wrong_arity("hgetdel");
    };
    let keys = match fields_of(pk, rest) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let ops = keys
        .into_iter()
        .map(|key| WriteOp {
            op: OpKind::Delete,
            pk: key.pk,
            sk: key.sk,
            return_old: true,
            ..WriteOp::default()
        })
        .collect();
    ctx.write_per_op(ops, Each::Value).await
}

/// The `field value` pairs after `FIELDS n`.
fn field_pairs(rest: &[Bytes]) -> Result<&[Bytes], Reply> {
    let missing =
        || Reply::err("Mandatory argument FIELDS is missing or not at the right position");
    let [fields_word, count, pairs @ ..] = rest else {
        return Err(missing());
    };
    if !fields_word.eq_ignore_ascii_case(b"FIELDS") {
        return Err(missing());
    }
    let count = integer(count)?;
    if count <= 0 {
        return Err(Reply::err("invalid number of fields"));
    }
    if count as usize * 2 != pairs.len() {
        return Err(Reply::err("wrong number of arguments for 'hsetex' command"));
    }
    Ok(pairs)
}

/// Writes `ops` as one entry and waits for it: what its ops returned when applied, `None` when
/// a condition rejected it.
async fn applied(ctx: &mut Context<'_>, ops: Vec<WriteOp>) -> Result<Option<Vec<Returned>>, Reply> {
    let results = ctx.write_atomic(ops, true).await?;
    match results.first().and_then(|r| r.outcome.clone()).flatten() {
        Some(Outcome::Applied(returned)) => Ok(Some(returned)),
        Some(Outcome::Rejected(r)) if r.kind == RejectionKind::ConditionFailed => Ok(None),
        Some(Outcome::Rejected(r)) => Err(Reply::err(r.message)),
        _ => Err(Reply::err(
            "the write is durable but was not applied in time; read the fields to see",
        )),
    }
}
