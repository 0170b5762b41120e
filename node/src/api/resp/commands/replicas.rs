//! `WAIT` and `WAITAOF`: how many other nodes of the region have applied this connection's
//! writes (Redis counts its replicas that acknowledged them). A write's reply already comes
//! after the log holds it durably and this node's answer for the key reflects it; `WAIT` is for
//! a client that must know more copies serve it before going on — a flag rolled out to the
//! nodes that answer a region's reads, say. (Not in a transaction: `MULTI` refuses to queue
//! them.)

use super::{Context, wrong_arity};
use crate::api::resp::reply::Reply;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// `WAIT numreplicas timeout`: the other nodes of the region that applied this connection's
/// writes, once `numreplicas` have or after `timeout` ms (0: no limit, as Redis).
pub async fn wait(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [replicas, timeout] = args else {
        return wrong_arity("wait");
    };
    match parse(replicas, timeout) {
        Ok((want, deadline)) => Reply::Int(replicas_applied(ctx, want, deadline).await as i64),
        Err(e) => e,
    }
}

/// `WAITAOF numlocal numreplicas timeout`: `[1, replicas]` — this node's part is already done
/// (an acknowledged write is durable in the log before its reply: the embedded log fsyncs,
/// Kafka acknowledges with acks=all), and the other nodes as `WAIT` counts them.
pub async fn waitaof(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [local, replicas, timeout] = args else {
        return wrong_arity("waitaof");
    };
    if !matches!(non_negative(local), Some(0 | 1)) {
        return Reply::err("numlocal must be 0 or 1: this node is the one local copy");
    }
    match parse(replicas, timeout) {
        Ok((want, deadline)) => {
            let reached = replicas_applied(ctx, want, deadline).await;
            Reply::Array(vec![Reply::Int(1), Reply::Int(reached as i64)])
        }
        Err(e) => e,
    }
}

async fn replicas_applied(ctx: &Context<'_>, want: usize, deadline: Option<Instant>) -> usize {
    ctx.service
        .replicas_applied(&ctx.session.last_written, want, deadline)
        .await
}

/// `numreplicas` and `timeout` as Redis reads them: the count wanted, and the deadline.
fn parse(replicas: &Bytes, timeout: &Bytes) -> Result<(usize, Option<Instant>), Reply> {
    let want = non_negative(replicas)
        .ok_or_else(|| Reply::err("value is out of range, must be positive"))?;
    let ms = std::str::from_utf8(timeout)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| Reply::err("timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(Reply::err("timeout is negative"));
    }
    // A timeout past what a clock can hold is no limit (adding it would overflow).
    let deadline = match ms {
        0 => None,
        ms => Instant::now().checked_add(Duration::from_millis(ms as u64)),
    };
    Ok((want as usize, deadline))
}

fn non_negative(arg: &Bytes) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}
