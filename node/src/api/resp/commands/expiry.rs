//! Expiry: `SET ... EX|PX|EXAT|PXAT|KEEPTTL`, `SETEX`, `PSETEX`, `GETEX`, `EXPIRE`, `PEXPIRE`,
//! `EXPIREAT`, `PEXPIREAT` (with `NX|XX|GT|LT`), `PERSIST`, `TTL`, `PTTL`, `EXPIRETIME`,
//! `PEXPIRETIME`.
//!
//! This node turns a relative TTL into an absolute deadline (unix ms) before the write goes to
//! the log, so every replica removes the record at the same point of the log. A key's deadline
//! is its records' (the string, or every field of a hash): `EXPIRE` sets it on each record it
//! has, and the key lives until its last record expires.

use super::keys::{key, put_record};
use super::{Context, Each, Shape, data_of, text, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::{ExpireIf, Key, OpKind, now_ms};
use crate::service::{WriteOp, parse_redis_integer};
use bytes::Bytes;

/// What a write does to its record's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// Drops it (Redis `SET` without options).
    Clear,
    /// Sets it to this unix ms.
    At(i64),
    /// Keeps the record's current one (`KEEPTTL`, `HSET` of a field, `JSON.SET`).
    Keep,
}

impl Expiry {
    /// Puts this on a put op.
    pub(super) fn apply(self, op: &mut WriteOp) {
        match self {
            Expiry::Clear => {}
            Expiry::At(at) => op.expires_at = Some(at),
            Expiry::Keep => {
                op.keep_ttl = true;
                // A new field of a key with a deadline takes the key's, as Redis keeps a key's
                // TTL when fields are added (a string key has no other record to take it from).
                op.key_ttl = !op.sk.is_empty();
            }
        }
    }
}

/// The unit of a TTL argument.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// Relative: seconds (`EX`) or milliseconds (`PX`) from now.
    Seconds,
    Millis,
    /// Absolute: a unix time in seconds (`EXAT`) or milliseconds (`PXAT`).
    UnixSeconds,
    UnixMillis,
}

impl Unit {
    /// The unit of `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` and their `H` forms.
    fn of_command(name: &str) -> Unit {
        match name.strip_prefix('h').unwrap_or(name) {
            "expire" => Unit::Seconds,
            "pexpire" => Unit::Millis,
            "expireat" => Unit::UnixSeconds,
            _ => Unit::UnixMillis,
        }
    }

    pub(super) fn of_option(option: &[u8]) -> Option<Unit> {
        Some(match option {
            b"EX" => Unit::Seconds,
            b"PX" => Unit::Millis,
            b"EXAT" => Unit::UnixSeconds,
            b"PXAT" => Unit::UnixMillis,
            _ => return None,
        })
    }

    /// The deadline (unix ms) `n` of this unit means now; `None` when it overflows.
    pub(super) fn deadline(self, n: i64) -> Option<i64> {
        match self {
            Unit::Seconds => n.checked_mul(1000)?.checked_add(now_ms()),
            Unit::Millis => n.checked_add(now_ms()),
            Unit::UnixSeconds => n.checked_mul(1000),
            Unit::UnixMillis => Some(n),
        }
    }
}

/// `NX`, `XX`, `GT` or `LT` (any case).
fn expire_if(option: &Bytes) -> Option<ExpireIf> {
    Some(match option.to_ascii_uppercase().as_slice() {
        b"NX" => ExpireIf::Nx,
        b"XX" => ExpireIf::Xx,
        b"GT" => ExpireIf::Gt,
        b"LT" => ExpireIf::Lt,
        _ => return None,
    })
}

/// Redis's message for a TTL a command cannot take.
pub(super) fn invalid_expire(command: &str) -> Reply {
    Reply::err(format!("invalid expire time in '{command}' command"))
}

pub(super) fn integer(arg: &Bytes) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(parse_redis_integer)
        .ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

/// The deadline of a `SET`/`SETEX`/`GETEX` TTL argument: positive, and not overflowing.
pub(super) fn positive_deadline(arg: &Bytes, unit: Unit, command: &str) -> Result<i64, Reply> {
    let n = integer(arg)?;
    if n <= 0 {
        return Err(invalid_expire(command));
    }
    unit.deadline(n).ok_or_else(|| invalid_expire(command))
}

/// Parses `SET`'s options after the value: (condition, GET, expiry).
pub(super) fn set_options(
    options: &[Bytes],
) -> Result<(Option<&'static str>, bool, Expiry), Reply> {
    const NX: &str = "data == nil";
    const XX: &str = "data != nil";
    let mut cond = None;
    let mut get = false;
    let mut expiry = None;
    // The expiry option given, by name: Redis takes one repeated (the last value wins), not two
    // different ones.
    let mut expiry_option: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < options.len() {
        let option = options[i].to_ascii_uppercase();
        let repeated_or_first = expiry_option.as_deref().is_none_or(|o| o == option);
        match option.as_slice() {
            b"NX" if cond != Some(XX) => cond = Some(NX),
            b"XX" if cond != Some(NX) => cond = Some(XX),
            b"GET" => get = true,
            b"KEEPTTL" if repeated_or_first => {
                expiry = Some(Expiry::Keep);
                expiry_option = Some(option);
            }
            name if repeated_or_first && Unit::of_option(name).is_some() => {
                let unit = Unit::of_option(name).expect("matched");
                let Some(arg) = options.get(i + 1) else {
                    return Err(Reply::err("syntax error"));
                };
                expiry = Some(Expiry::At(positive_deadline(arg, unit, "set")?));
                expiry_option = Some(option.clone());
                i += 1;
            }
            _ => return Err(Reply::err("syntax error")),
        }
        i += 1;
    }
    Ok((cond, get, expiry.unwrap_or(Expiry::Clear)))
}

/// `SETEX key seconds value`, `PSETEX key milliseconds value`.
pub async fn setex(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [k, ttl, v] = args else {
        return wrong_arity(name);
    };
    let unit = if name == "psetex" {
        Unit::Millis
    } else {
        Unit::Seconds
    };
    let deadline = match positive_deadline(ttl, unit, name) {
        Ok(deadline) => deadline,
        Err(e) => return e,
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let data = data_of(v);
    put_record(ctx, key, data, None, Expiry::At(deadline), false).await
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`: the value, and (with an option) its
/// new deadline set by the same op at apply.
pub async fn getex(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some((k, options)) = args.split_first() else {
        return wrong_arity("getex");
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let expires_at = match options {
        [] => {
            return match ctx.read_one(&key.pk, "").await {
                Ok(value) => value.map_or(Reply::Null, Reply::Bulk),
                Err(e) => e,
            };
        }
        [option] if option.eq_ignore_ascii_case(b"PERSIST") => None,
        [option, arg] => match Unit::of_option(&option.to_ascii_uppercase()) {
            Some(unit) => match positive_deadline(arg, unit, "getex") {
                Ok(deadline) => Some(deadline),
                // As Redis, which looks the key up before it reads the time: a missing key is
                // nil whatever the time says.
                Err(e) => {
                    return match ctx.read_one(&key.pk, "").await {
                        Ok(None) => Reply::Null,
                        Ok(Some(_)) => e,
                        Err(read) => read,
                    };
                }
            },
            None => return Reply::err("syntax error"),
        },
        _ => return Reply::err("syntax error"),
    };
    // Inside `EXEC`, a deadline already past deletes the string, as in Redis: the
    // transaction's later reads see it gone.
    if let Some(collected) = ctx.session.collecting.as_ref().map(Vec::len)
        && expires_at.is_some_and(|at| at <= now_ms())
    {
        ctx.session.deleting_expires.push(collected);
    }
    let op = WriteOp {
        op: OpKind::Expire,
        pk: key.pk,
        sk: key.sk,
        expires_at,
        return_old: true,
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Bulk).await
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`: 1 when the deadline
/// was set (a deadline already past deletes the key, as in Redis), 0 when the key does not
/// exist or the option said no. Decided at apply, against the key as the log has it.
pub async fn expire(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [k, n, options @ ..] = args else {
        return wrong_arity(name);
    };
    let unit = Unit::of_command(name);
    let n = match integer(n) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let Some(deadline) = unit.deadline(n) else {
        return invalid_expire(name);
    };
    let mut when = None;
    for option in options {
        let Some(option) = expire_if(option) else {
            return Reply::err(format!(
                "Unsupported option {}",
                String::from_utf8_lossy(option)
            ));
        };
        when = match (when, option) {
            (None, option) => Some(option),
            (Some(a), b) if a == b => Some(a),
            (Some(ExpireIf::Gt), ExpireIf::Lt) | (Some(ExpireIf::Lt), ExpireIf::Gt) => {
                return Reply::err("GT and LT options at the same time are not compatible");
            }
            // GT alone never sets a deadline on a key without one (no deadline counts as
            // infinite), so XX adds nothing to it.
            (Some(ExpireIf::Xx), ExpireIf::Gt) | (Some(ExpireIf::Gt), ExpireIf::Xx) => {
                Some(ExpireIf::Gt)
            }
            (Some(ExpireIf::Xx), ExpireIf::Lt) | (Some(ExpireIf::Lt), ExpireIf::Xx) => {
                return Reply::err(
                    "EXPIRE with XX and LT together is not supported here (the log format has \
                     one condition per expire): use LT alone, which also sets a deadline on a \
                     key without one, or check TTL first",
                );
            }
            _ => {
                return Reply::err(
                    "NX and XX, GT or LT options at the same time are not compatible",
                );
            }
        };
    }
    expire_key(ctx, k, Some(deadline), when).await
}

/// Sets (or removes) the deadline of every record of key `k`, decided at apply: 1 or 0.
async fn expire_key(
    ctx: &mut Context<'_>,
    k: &Bytes,
    expires_at: Option<i64>,
    expire_if: Option<ExpireIf>,
) -> Reply {
    let pk = match text(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    // Inside `EXEC`, a deadline already past deletes the key when its condition holds, as in
    // Redis: the transaction's later reads see it gone if this node, reading now, expects so
    // (no deadline counts as infinite: `GT` never holds, `LT` always does).
    if let Some(collected) = ctx.session.collecting.as_ref().map(Vec::len)
        && expires_at.is_some_and(|at| at <= now_ms())
    {
        let deletes = match key_deadline(
            ctx,
            Key {
                pk: pk.clone(),
                sk: String::new(),
            },
        )
        .await
        {
            Err(e) => return e,
            Ok(None) => false,
            Ok(Some(deadline)) => match expire_if {
                None | Some(ExpireIf::Lt) => true,
                Some(ExpireIf::Gt) => false,
                Some(ExpireIf::Nx) => deadline.is_none(),
                Some(ExpireIf::Xx) => deadline.is_some(),
            },
        };
        if deletes {
            ctx.session.deleting_expires.push(collected);
        }
    }
    let op = WriteOp {
        op: OpKind::ExpireKey,
        pk,
        expires_at,
        expire_if,
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Integer).await
}

/// `PERSIST key`: 1 when the key had a deadline and no longer has, else 0.
pub async fn persist(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k] = args else {
        return wrong_arity("persist");
    };
    expire_key(ctx, k, None, None).await
}

/// `TTL`/`PTTL` (time left, seconds rounded as Redis does, or ms) and `EXPIRETIME`/
/// `PEXPIRETIME` (the deadline, unix s or ms): -2 when the key does not exist, -1 when it has
/// no deadline.
pub async fn ttl(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [k] = args else {
        return wrong_arity(name);
    };
    let key = match key(k) {
        Ok(key) => key,
        Err(e) => return e,
    };
    let shown_as = match name {
        "ttl" => DeadlineAs::Seconds,
        "pttl" => DeadlineAs::Millis,
        "expiretime" => DeadlineAs::UnixSeconds,
        _ => DeadlineAs::UnixMillis,
    };
    // Inside `EXEC`, of a key the transaction writes: deadlines are decided at apply (`EXPIRE
    // ... NX`, `SET ... KEEPTTL`), so from log format v4 the entry reads it there, in order.
    if ctx.session.collecting.as_ref().is_some_and(|ops| {
        ops.iter()
            .any(|op| op.pk == key.pk && op.op != OpKind::Check)
    }) {
        if ctx.service.entry_write_version() < 4 {
            return Reply::err(format!(
                "{} of a key this transaction writes needs log format v4 \
                 (ENTRY_WRITE_VERSION=4): read it after EXEC (or before MULTI)",
                name.to_ascii_uppercase()
            ));
        }
        let op = WriteOp {
            op: OpKind::Deadline,
            pk: key.pk,
            ..WriteOp::default()
        };
        return ctx.write_returning(op, Shape::Deadline(shown_as)).await;
    }
    let deadline = match key_deadline(ctx, key).await {
        Ok(Some(deadline)) => deadline,
        Ok(None) => return Reply::Int(-2),
        Err(e) => return e,
    };
    let Some(deadline) = deadline else {
        return Reply::Int(-1);
    };
    Reply::Int(shown_as.show(deadline))
}

/// How `TTL` and its siblings show a deadline (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineAs {
    /// Seconds left, rounded as Redis rounds them (`TTL`).
    Seconds,
    /// Milliseconds left (`PTTL`).
    Millis,
    /// Unix seconds (`EXPIRETIME`).
    UnixSeconds,
    /// Unix milliseconds (`PEXPIRETIME`).
    UnixMillis,
}

impl DeadlineAs {
    /// `deadline` (unix ms) shown this way, time left counted from now.
    pub fn show(self, deadline: i64) -> i64 {
        let left = (deadline - now_ms()).max(0);
        match self {
            DeadlineAs::Seconds => (left + 500) / 1000,
            DeadlineAs::Millis => left,
            DeadlineAs::UnixSeconds => deadline.div_euclid(1000),
            DeadlineAs::UnixMillis => deadline,
        }
    }
}

/// The deadline of a Redis key: `None` when it does not exist, `Some(None)` when it has none.
/// A hash's is the latest of its fields' that are the key's (none if any such field has none,
/// or if every field's deadline is its own: Redis 7.4's `TTL` of a hash whose fields alone have
/// TTLs is -1), as `EXPIRE`'s `NX`/`XX`/`GT`/`LT` see it at apply.
async fn key_deadline(ctx: &mut Context<'_>, key: Key) -> Result<Option<Option<i64>>, Reply> {
    let pk = key.pk.clone();
    if let Some(record) = ctx.read(vec![key]).await?.into_iter().next() {
        return Ok(Some(record.expires_at_ms));
    }
    let fields = ctx.scan_all(pk, String::new()).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let mut latest = None;
    for field in fields.iter().filter(|f| !f.own_deadline) {
        match field.expires_at_ms {
            None => return Ok(Some(None)),
            Some(deadline) => latest = latest.max(Some(deadline)),
        }
    }
    Ok(Some(latest))
}

/// The fields after `FIELDS numfields` (Redis 7.4's hash field expiry syntax), as keys of `pk`.
pub(super) fn fields_of(pk: &Bytes, rest: &[Bytes]) -> Result<Vec<Key>, Reply> {
    let [fields_word, count, fields @ ..] = rest else {
        return Err(Reply::err(
            "Mandatory argument FIELDS is missing or not at the right position",
        ));
    };
    if !fields_word.eq_ignore_ascii_case(b"FIELDS") {
        return Err(Reply::err(
            "Mandatory argument FIELDS is missing or not at the right position",
        ));
    }
    let count = integer(count)?;
    if count <= 0 {
        return Err(Reply::err("Parameter `numFields` should be greater than 0"));
    }
    if count as usize != fields.len() {
        return Err(Reply::err(
            "The `numfields` parameter must match the number of arguments",
        ));
    }
    super::hash::keys_of(pk, fields)
}

/// `HEXPIRE key seconds [NX|XX|GT|LT] FIELDS n field ...`, `HPEXPIRE`, `HEXPIREAT`,
/// `HPEXPIREAT`, and `HPERSIST key FIELDS n field ...`: per field, as Redis 7.4 answers — -2 no
/// such field, 0 the option said no, 1 set, 2 removed (a deadline already past); `HPERSIST`:
/// -2, -1 (no deadline), 1. One atomic entry, decided at apply.
pub async fn hexpire(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let persist = name == "hpersist";
    let (pk, rest) = match args.split_first() {
        Some((pk, rest)) => (pk, rest),
        None => return wrong_arity(name),
    };
    let (expires_at, when, rest) = if persist {
        (None, None, rest)
    } else {
        let Some((n, mut rest)) = rest.split_first() else {
            return wrong_arity(name);
        };
        let unit = Unit::of_command(name);
        let deadline = match integer(n) {
            Ok(n) if n >= 0 => unit.deadline(n),
            Ok(_) => None,
            Err(e) => return e,
        };
        let Some(deadline) = deadline else {
            return invalid_expire(name);
        };
        let when = rest.first().and_then(expire_if);
        if when.is_some() {
            rest = &rest[1..];
        }
        (Some(deadline), when, rest)
    };
    let keys = match fields_of(pk, rest) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    // Inside `EXEC`, a deadline already past deletes each field whose condition holds, as in
    // Redis: the transaction's later reads see those gone if this node, reading now, expects
    // so (a field's TTL is its own; none counts as infinite).
    if let Some(collected) = ctx.session.collecting.as_ref().map(Vec::len)
        && expires_at.is_some_and(|at| at <= now_ms())
    {
        let found = match ctx.read(keys.clone()).await {
            Ok(found) => found,
            Err(e) => return e,
        };
        for (i, key) in keys.iter().enumerate() {
            let Some(field) = found.iter().find(|r| r.sk == key.sk) else {
                continue;
            };
            let own = field.expires_at_ms.filter(|_| field.own_deadline);
            let deletes = match when {
                None | Some(ExpireIf::Lt) => true,
                Some(ExpireIf::Gt) => false,
                Some(ExpireIf::Nx) => own.is_none(),
                Some(ExpireIf::Xx) => own.is_some(),
            };
            if deletes {
                ctx.session.deleting_expires.push(collected + i);
            }
        }
    }
    let ops: Vec<WriteOp> = keys
        .into_iter()
        .map(|key| WriteOp {
            op: OpKind::Expire,
            pk: key.pk,
            sk: key.sk,
            expires_at,
            expire_if: when,
            // The field's own deadline: fields added to the key later do not take it.
            own_ttl: expires_at.is_some(),
            // And the one `NX`/`XX`/`GT`/`LT` compare and `HPERSIST` removes (format v5).
            field_ttl: true,
            ..WriteOp::default()
        })
        .collect();
    ctx.write_per_op(ops, Each::ExpireCode { persist }).await
}

/// `HTTL key FIELDS n field ...`, `HPTTL`, `HEXPIRETIME`, `HPEXPIRETIME`: per field, -2 no such
/// field, -1 no deadline, else the time left or the deadline, as `TTL` and friends report them.
pub async fn httl(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let Some((pk, rest)) = args.split_first() else {
        return wrong_arity(name);
    };
    let keys = match fields_of(pk, rest) {
        Ok(keys) => keys,
        Err(e) => return e,
    };
    let records = match ctx.read(keys.clone()).await {
        Ok(records) => records,
        Err(e) => return e,
    };
    let now = now_ms();
    // From format v5 a field's TTL is its own alone, as in Redis (its key's is the key's:
    // `TTL`), and the writes agree (`field_ttl`); below it a field answers its key's.
    let own_only = ctx.service.entry_write_version() >= 5;
    let answers = keys.iter().map(|key| {
        let Some(record) = records.iter().find(|r| r.sk == key.sk) else {
            return Reply::Int(-2);
        };
        let deadline = match record.expires_at_ms {
            Some(_) if own_only && !record.own_deadline => None,
            deadline => deadline,
        };
        let Some(deadline) = deadline else {
            return Reply::Int(-1);
        };
        let left = (deadline - now).max(0);
        Reply::Int(match name {
            "httl" => (left + 500) / 1000,
            "hpttl" => left,
            "hexpiretime" => deadline.div_euclid(1000),
            _ => deadline,
        })
    });
    Reply::Array(answers.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<(Option<&'static str>, bool), Reply> {
        let args: Vec<Bytes> = text
            .split_whitespace()
            .map(|a| Bytes::from(a.to_string()))
            .collect();
        set_options(&args).map(|(cond, get, _)| (cond, get))
    }

    #[test]
    fn set_takes_an_option_repeated_but_not_two_that_conflict_as_redis_does() {
        assert_eq!(options("NX NX"), Ok((Some("data == nil"), false)));
        assert_eq!(options("XX GET XX"), Ok((Some("data != nil"), true)));
        assert!(options("NX XX").is_err());
        assert!(options("XX NX").is_err());
        assert!(options("EX 10 EX 20").is_ok());
        assert!(options("KEEPTTL KEEPTTL").is_ok());
        assert!(options("EX 10 PX 10").is_err());
        assert!(options("KEEPTTL EX 10").is_err());
        assert!(options("EX 10 KEEPTTL").is_err());
        assert!(options("EX").is_err());
        assert!(options("BOGUS").is_err());
    }
}
