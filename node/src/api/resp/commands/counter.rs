//! Read-modify-write commands: `INCR`, `INCRBY`, `DECR`, `DECRBY`, `INCRBYFLOAT`, `APPEND`,
//! `HINCRBY`, `HINCRBYFLOAT`. Each becomes one op computed **at apply** from the stored value
//! (so concurrent increments from any node add up exactly, identically on every replica); the
//! reply is the value the op returned in the entry's outcome.

use super::{Context, Shape, data_of, text, wrong_arity};
use crate::api::resp::reply::Reply;
use crate::model::OpKind;
use crate::service::{LongDouble, WriteOp, parse_finite_float, parse_redis_integer};
use bytes::Bytes;
use serde_json::value::RawValue;

/// `INCR key`, `DECR key`, `INCRBY key n`, `DECRBY key n`.
pub async fn incr(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let (k, by) = match (name, args) {
        ("incr", [k]) => (k, 1),
        ("decr", [k]) => (k, -1),
        ("incrby", [k, n]) | ("decrby", [k, n]) => {
            let Some(n) = integer(n) else {
                return Reply::err("value is not an integer or out of range");
            };
            match (name, n.checked_neg()) {
                ("incrby", _) => (k, n),
                (_, Some(negated)) => (k, negated),
                (_, None) => return Reply::err("decrement would overflow"),
            }
        }
        _ => return wrong_arity(name),
    };
    let pk = match text(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    counter_op(
        ctx,
        pk,
        String::new(),
        OpKind::Incr,
        by.to_string(),
        Shape::Integer,
    )
    .await
}

/// `HINCRBY key field n`
pub async fn hincrby(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, f, n] = args else {
        return wrong_arity("hincrby");
    };
    let Some(by) = integer(n) else {
        return Reply::err("value is not an integer or out of range");
    };
    let (pk, sk) = match (text(k), text(f)) {
        (Ok(pk), Ok(sk)) => (pk, sk),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let shape = Shape::FieldCounter { float: false };
    counter_op(ctx, pk, sk, OpKind::Incr, by.to_string(), shape).await
}

/// `INCRBYFLOAT key x`, `HINCRBYFLOAT key field x`.
pub async fn incrbyfloat(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let (k, f, x) = match (name, args) {
        ("incrbyfloat", [k, x]) => (k, None, x),
        ("hincrbyfloat", [k, f, x]) => (k, Some(f), x),
        _ => return wrong_arity(name),
    };
    // From log format v4 the increment travels as the client's text and is added as Redis adds
    // it (80-bit `long double`: `0.1` + `0.2` is `0.3`); before, as a 64-bit float.
    let long_double = ctx.service.entry_write_version() >= 4;
    let text_of_x = std::str::from_utf8(x).ok();
    let (kind, operand) = match text_of_x {
        Some(t) if long_double => match LongDouble::parse(t) {
            Some(by) if !by.is_infinite() => (
                OpKind::IncrLongDouble,
                serde_json::to_string(t).expect("strings serialize"),
            ),
            Some(_) => return infinite_increment(f.is_some()),
            None => return Reply::err("value is not a valid float"),
        },
        Some(t) => match parse_finite_float(t) {
            // Rust's shortest round-trip text of the f64 is valid JSON for a finite number.
            Some(by) => (OpKind::IncrFloat, format!("{by:?}")),
            // An infinite increment (`inf`; here also one past f64's range) is not a
            // malformed one, in Redis's words.
            None if t.trim() == t && t.parse::<f64>().is_ok_and(f64::is_infinite) => {
                return infinite_increment(f.is_some());
            }
            None => return Reply::err("value is not a valid float"),
        },
        None => return Reply::err("value is not a valid float"),
    };
    let pk = match text(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    let sk = match f.map(text).transpose() {
        Ok(sk) => sk.unwrap_or_default(),
        Err(e) => return e,
    };
    let shape = if sk.is_empty() {
        Shape::Bulk
    } else {
        Shape::FieldCounter { float: true }
    };
    counter_op(ctx, pk, sk, kind, operand, shape).await
}

/// Redis's answer to an infinite increment: `INCRBYFLOAT` checks the sum, `HINCRBYFLOAT` the
/// increment first.
fn infinite_increment(field: bool) -> Reply {
    Reply::err(if field {
        "value is NaN or Infinity"
    } else {
        "increment would produce NaN or Infinity"
    })
}

/// `APPEND key value`: the length of the value after appending.
pub async fn append(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [k, v] = args else {
        return wrong_arity("append");
    };
    if std::str::from_utf8(v).is_err() {
        // Appended at apply, to a JSON string: binary values are stored whole.
        return Reply::err(
            "APPEND takes UTF-8 text here: a binary value is stored whole (SET the new value)",
        );
    }
    let pk = match text(k) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    let tail = data_of(v);
    let op = WriteOp {
        op: OpKind::Append,
        pk,
        data: Some(tail),
        ..WriteOp::default()
    };
    ctx.write_returning(op, Shape::Length).await
}

async fn counter_op(
    ctx: &mut Context<'_>,
    pk: String,
    sk: String,
    kind: OpKind,
    operand: String,
    shape: Shape,
) -> Reply {
    let op = WriteOp {
        op: kind,
        // A counter field `HINCRBY` creates takes its key's deadline, as Redis keeps the key's.
        key_ttl: !sk.is_empty(),
        pk,
        sk,
        data: Some(RawValue::from_string(operand).expect("numbers are JSON")),
        ..WriteOp::default()
    };
    ctx.write_returning(op, shape).await
}

fn integer(arg: &Bytes) -> Option<i64> {
    std::str::from_utf8(arg).ok().and_then(parse_redis_integer)
}
