//! Set commands: a set is a pk whose members are its sks, each stored with the data `true`
//! (over HTTP, `{"Pk": key, "Sk": member, "Data": true}`: an allowlist reads as such). As for
//! hashes, a key has no single type: the fields of a hash and the members of a set of the same
//! name are the same records. Reads of several sets (`SINTER`, `SUNION`, `SDIFF`) may span
//! partitions; writes touch one key. The `*STORE` commands and `SMOVE` would read and write
//! different keys in one atomic step, which the log does only within a partition: they are not
//! offered (`unsupported.rs` says what to do instead). `SPOP` picks members here and removes
//! them through the log: a member counts as popped only if its removal found it there, decided
//! at apply, so concurrent pops never hand one member to two clients.

use super::hash::{all_fields, count_fields, field_exists, keys_of, random_fields};
use super::{Context, Shape, text, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::OpKind;
use crate::service::WriteOp;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeSet;

/// What a member is stored with.
fn member_data() -> Box<RawValue> {
    RawValue::from_string("true".into()).expect("true is JSON")
}

/// `SADD key member [member ...]`: how many members are new.
pub async fn sadd(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, members @ ..] = args else {
        return wrong_arity("sadd");
    };
    if members.is_empty() {
        return wrong_arity("sadd");
    }
    let keys = match keys_of(pk, members) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let ops: Vec<WriteOp> = keys
        .into_iter()
        .map(|key| WriteOp {
            op: OpKind::Put,
            pk: key.pk,
            sk: key.sk,
            data: Some(member_data()),
            // A member added again keeps its deadline (the key's, after EXPIRE), as a field; a
            // new one takes the key's.
            keep_ttl: true,
            key_ttl: true,
            return_existed: true,
            ..WriteOp::default()
        })
        .collect();
    let shape = Shape::Added(ops.len() as u32);
    ctx.write_counting(ops, shape).await
}

/// `SREM key member [member ...]`: how many were members.
pub async fn srem(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, members @ ..] = args else {
        return wrong_arity("srem");
    };
    if members.is_empty() {
        return wrong_arity("srem");
    }
    match keys_of(pk, members) {
        Ok(keys) => ctx.delete_records(keys).await,
        Err(e) => e,
    }
}

/// `SISMEMBER key member`: 1 or 0.
pub async fn sismember(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    field_exists(ctx, args, "sismember").await
}

/// `SMISMEMBER key member [member ...]`: 1 or 0 for each.
pub async fn smismember(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pk, members @ ..] = args else {
        return wrong_arity("smismember");
    };
    if members.is_empty() {
        return wrong_arity("smismember");
    }
    let keys = match keys_of(pk, members) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    match ctx.exist(&keys).await {
        Ok(found) => Reply::Array(
            found
                .into_iter()
                .map(|f| Reply::Int(i64::from(f)))
                .collect(),
        ),
        Err(e) => e,
    }
}

/// `SCARD key`: O(1), from the key index (as `HLEN`).
pub async fn scard(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    count_fields(ctx, args, "scard").await
}

/// `SMEMBERS key`: every member (a set under RESP3).
pub async fn smembers(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match members_of(ctx, args, "smembers").await {
        Ok(members) => Reply::Set(members.into_iter().map(Reply::Bulk).collect()),
        Err(e) => e,
    }
}

/// `SRANDMEMBER key [count]`: random members, distinct for a positive count, maybe repeated for
/// a negative one.
pub async fn srandmember(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    random_fields(ctx, args, "srandmember").await
}

/// How sets combine.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    Inter,
    Union,
    Diff,
}

/// `SINTER`, `SUNION`, `SDIFF key [key ...]`: the members, as a set under RESP3.
pub async fn combine(ctx: &mut Context<'_>, args: &[Bytes], how: Combine, name: &str) -> Reply {
    if args.is_empty() {
        return wrong_arity(name);
    }
    match combined(ctx, args, how, None).await {
        Ok(members) => Reply::Set(members.into_iter().map(Reply::Bulk).collect()),
        Err(e) => e,
    }
}

/// `SINTERCARD numkeys key [key ...] [LIMIT limit]`: how many members all the keys share (at
/// most `limit`, when not 0).
pub async fn sintercard(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((numkeys, rest)) = args.split_first() else {
        return wrong_arity("sintercard");
    };
    let numkeys = match std::str::from_utf8(numkeys)
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) if n > 0 => n,
        _ => return Reply::err("numkeys should be greater than 0"),
    };
    if rest.len() < numkeys {
        return Reply::err("Number of keys can't be greater than number of args");
    }
    let (keys, options) = rest.split_at(numkeys);
    let limit = match options {
        [] => None,
        [word, n] if word.eq_ignore_ascii_case(b"LIMIT") => {
            match std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(0) => None,
                Some(n) => Some(n),
                None => return Reply::err("LIMIT can't be negative"),
            }
        }
        _ => return Reply::err("syntax error"),
    };
    match combined(ctx, keys, Combine::Inter, limit).await {
        Ok(members) => Reply::Int(members.len() as i64),
        Err(e) => e,
    }
}

/// The members of `key` (one argument), as clients sent them.
async fn members_of(ctx: &Context<'_>, args: &[Bytes], name: &str) -> Result<Vec<Bytes>, Reply> {
    Ok(all_fields(ctx, args, name)
        .await?
        .iter()
        .map(|r| super::wire_key(&r.sk))
        .collect())
}

/// The members of `keys` combined `how`, at most `limit` of them.
async fn combined(
    ctx: &Context<'_>,
    keys: &[Bytes],
    how: Combine,
    limit: Option<usize>,
) -> Result<Vec<Bytes>, Reply> {
    // Each key is a read of its own: as many as one request may name (as for MGET).
    let most = ctx.service.limits().max_records;
    if keys.len() > most {
        return Err(Reply::err(format!(
            "{} keys in one command; the limit is {most} (MAX_RECORDS_PER_REQUEST): split the request",
            keys.len()
        )));
    }
    let (first, others) = keys.split_first().expect("at least one key");
    let mut members: BTreeSet<Bytes> = members_of(ctx, std::slice::from_ref(first), "sinter")
        .await?
        .into_iter()
        .collect();
    // A union grows with each key: it answers at most what one answer may hold.
    let mut bytes: usize = members.iter().map(Bytes::len).sum();
    for key in others {
        if how != Combine::Union && members.is_empty() {
            break;
        }
        let next: BTreeSet<Bytes> = members_of(ctx, std::slice::from_ref(key), "sinter")
            .await?
            .into_iter()
            .collect();
        match how {
            Combine::Inter => members.retain(|m| next.contains(m)),
            Combine::Union => {
                for member in next {
                    let len = member.len();
                    if members.insert(member) {
                        bytes += len;
                    }
                }
                if bytes > crate::model::READ_ANSWER_BYTES {
                    return Err(Reply::err(format!(
                        "the union holds more than {} MiB, more than one answer may: read the \
                         sets in parts (SSCAN)",
                        crate::model::READ_ANSWER_BYTES >> 20
                    )));
                }
            }
            Combine::Diff => members.retain(|m| !next.contains(m)),
        }
    }
    Ok(members
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect())
}

/// Members `SPOP` picks among at random: the first this many in member order (every member of
/// a smaller set), or twice the count asked for if more.
const POP_CANDIDATES: u64 = 1024;

/// Rounds of picking and removing `SPOP` makes before it answers with what it has: each round
/// loses only to members other clients removed meanwhile.
const POP_ROUNDS: usize = 16;

/// `SPOP key [count]`: removes and answers random members (without a count, one or nil), picked
/// among the first [`POP_CANDIDATES`] in member order.
pub async fn spop(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let (key, count) = match args {
        [key] => (key, None),
        [key, count] => match std::str::from_utf8(count)
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
        {
            Some(n) => (key, Some(n)),
            None => return Reply::err("value is out of range, must be positive"),
        },
        [] => return wrong_arity("spop"),
        _ => return Reply::err("syntax error"),
    };
    if ctx.session.collecting.is_some() {
        return spop_in_transaction(ctx, key, count).await;
    }
    let want = count.unwrap_or(1);
    let mut popped: Vec<Bytes> = Vec::new();
    for _ in 0..POP_ROUNDS {
        if popped.len() >= want {
            break;
        }
        // One bounded page, not the whole set: a pop costs the same on a set of a million.
        let pk = match text(key) {
            Ok(pk) => pk,
            Err(e) => return e,
        };
        let page = ctx
            .service
            .list(crate::service::ListRequest {
                min_offsets: ctx.min_offsets([pk.as_str()]),
                pk,
                limit: POP_CANDIDATES.max((want as u64).saturating_mul(2)),
                ..Default::default()
            })
            .await;
        let members = match page {
            Ok(page) => page.records,
            Err(e) => return super::service_error(e),
        };
        if members.is_empty() {
            break;
        }
        // Distinct members, in a random order: a partial Fisher-Yates shuffle.
        let mut order: Vec<usize> = (0..members.len()).collect();
        // At most one request's worth of removals per round (MAX_RECORDS_PER_REQUEST).
        let take = (want - popped.len())
            .min(order.len())
            .min(ctx.service.limits().max_records);
        for i in 0..take {
            let j = i + (super::random() % (order.len() - i) as u64) as usize;
            order.swap(i, j);
        }
        let ops: Vec<WriteOp> = order[..take]
            .iter()
            .map(|&i| WriteOp {
                op: OpKind::Delete,
                pk: members[i].pk.clone(),
                sk: members[i].sk.clone(),
                return_existed: true,
                ..WriteOp::default()
            })
            .collect();
        let existed = match ctx.write_each(ops).await {
            Ok(existed) => existed,
            Err(e) => return e,
        };
        // Popped only where the removal found the member: another client's pop or SREM that
        // the log applied first took the others.
        for (found, &i) in existed.iter().zip(&order[..take]) {
            match found.as_deref() {
                Some("1") => popped.push(super::wire_key(&members[i].sk)),
                Some(_) => {}
                None => return super::not_applied_in_time(),
            }
        }
    }
    match count {
        None => popped.pop().map_or(Reply::Null, Reply::Bulk),
        Some(_) => Reply::Set(popped.into_iter().map(Reply::Bulk).collect()),
    }
}

/// `SPOP` inside `EXEC`: picks among every member the transaction sees there (its earlier
/// writes included) and adds their removals to its entry, each on the condition that its
/// member is there when the entry applies: if another client took one meanwhile, nothing is
/// written and `EXEC` runs the transaction again. The reply is made from what the removals
/// found, once applied (see `transaction::Popped`).
async fn spop_in_transaction(ctx: &mut Context<'_>, key: &Bytes, count: Option<usize>) -> Reply {
    let records = match all_fields(ctx, std::slice::from_ref(key), "spop").await {
        Ok(records) => records,
        Err(e) => return e,
    };
    let want = count
        .unwrap_or(1)
        .min(records.len())
        .min(ctx.service.limits().max_records);
    if want == 0 {
        // Nothing to pop: nothing written, the reply known now.
        return match count {
            None => Reply::Null,
            Some(_) => Reply::Set(Vec::new()),
        };
    }
    // Distinct members, in a random order: a partial Fisher-Yates shuffle.
    let mut order: Vec<usize> = (0..records.len()).collect();
    for i in 0..want {
        let j = i + (super::random() % (order.len() - i) as u64) as usize;
        order.swap(i, j);
    }
    let chosen = &order[..want];
    let ops = chosen.iter().map(|&i| WriteOp {
        op: OpKind::Delete,
        pk: records[i].pk.clone(),
        sk: records[i].sk.clone(),
        return_existed: true,
        cond: Some("data != nil".into()),
        ..WriteOp::default()
    });
    let members = chosen
        .iter()
        .map(|&i| super::wire_key(&records[i].sk))
        .collect();
    let Some(collected) = ctx.session.collecting.as_mut() else {
        return Reply::err("SPOP's transaction form outside a transaction");
    };
    ctx.session.popping = Some(super::transaction::Popped {
        first_op: collected.len(),
        members,
        single: count.is_none(),
    });
    collected.extend(ops);
    // Replaced once the transaction applied.
    Reply::Null
}
