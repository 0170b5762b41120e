//! `MULTI`/`EXEC`/`DISCARD`: the writes of one transaction become **one** log entry, applied
//! together or not at all, so they must share a partition (else `EXEC` is refused whole with a
//! `CROSSSLOT` error and nothing is written). A command refused while queuing makes `EXEC` answer
//! `EXECABORT`. Commands run in order at `EXEC`, and reads see the transaction's earlier writes
//! (from the pending entry), as in Redis; other clients' writes may land between those reads and
//! the entry. `WATCH` is refused with a reason (not supported yet); `UNWATCH` is a no-op.

use super::{Context, run};
use crate::api::resp::reply::Reply;
use crate::service::{WriteMode, WriteOp};
use bytes::Bytes;

/// Commands queued since `MULTI`.
#[derive(Debug, Default)]
pub struct Queued {
    commands: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: `EXEC` will discard the transaction.
    refused: bool,
}

/// Commands a transaction may hold: the data commands (and a few harmless ones).
const QUEUEABLE: [&str; 24] = [
    "set",
    "mset",
    "del",
    "unlink",
    "strlen",
    "hstrlen",
    "hset",
    "hmset",
    "hdel",
    "json.set",
    "json.del",
    "json.forget",
    "get",
    "mget",
    "exists",
    "hget",
    "hmget",
    "hgetall",
    "hkeys",
    "hvals",
    "hlen",
    "hexists",
    "json.get",
    "ping",
];

/// Handles the transaction commands, and queues commands while a transaction is open. `None`
/// when `name` runs as usual.
pub async fn intercept(ctx: &mut Context<'_>, name: &str, args: &[Bytes]) -> Option<Reply> {
    match name {
        "multi" => Some(multi(ctx, args)),
        "exec" => Some(exec(ctx, args).await),
        "discard" => Some(discard(ctx, args)),
        "watch" => Some(match ctx.session.transaction {
            Some(_) => Reply::err("WATCH inside MULTI is not allowed"),
            None => Reply::err(
                "WATCH is not supported yet: FireScroll cannot make a transaction depend on keys \
                 it does not write; use SET ... NX/XX or HTTP's `if` conditions",
            ),
        }),
        "unwatch" => Some(Reply::ok()),
        _ => {
            let queue = ctx.session.transaction.as_mut()?;
            if !QUEUEABLE.contains(&name) {
                queue.refused = true;
                return Some(Reply::err(format!(
                    "'{name}' cannot be used in a transaction: it may hold {}",
                    QUEUEABLE.join(", ")
                )));
            }
            let most = ctx.service.limits().max_records;
            if queue.commands.len() >= most {
                queue.refused = true;
                return Some(Reply::err(format!(
                    "a transaction holds at most {most} commands (MAX_RECORDS_PER_REQUEST)"
                )));
            }
            let mut command = Vec::with_capacity(args.len() + 1);
            command.push(Bytes::copy_from_slice(name.as_bytes()));
            command.extend_from_slice(args);
            queue.commands.push(command);
            Some(Reply::Simple("QUEUED"))
        }
    }
}

/// Notes that a command was refused while a transaction is open (unknown, no permission).
pub fn refused_while_queuing(ctx: &mut Context<'_>) {
    if let Some(queue) = ctx.session.transaction.as_mut() {
        queue.refused = true;
    }
}

fn multi(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return super::wrong_arity("multi");
    }
    if ctx.session.transaction.is_some() {
        return Reply::err("MULTI calls can not be nested");
    }
    ctx.session.transaction = Some(Queued::default());
    Reply::ok()
}

fn discard(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return super::wrong_arity("discard");
    }
    match ctx.session.transaction.take() {
        Some(_) => Reply::ok(),
        None => Reply::err("DISCARD without MULTI"),
    }
}

async fn exec(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return super::wrong_arity("exec");
    }
    let Some(queue) = ctx.session.transaction.take() else {
        return Reply::err("EXEC without MULTI");
    };
    if queue.refused {
        return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
    }
    // Every command in order: writes are collected instead of sent, and reads see the writes
    // collected before them, as in Redis.
    ctx.session.collecting = Some(Vec::new());
    let mut replies = Vec::with_capacity(queue.commands.len());
    for command in queue.commands {
        replies.push(Box::pin(run(ctx, command)).await);
    }
    let ops: Vec<WriteOp> = ctx.session.collecting.take().unwrap_or_default();
    if ops.is_empty() {
        return Reply::Array(replies);
    }
    match ctx.send(ops, WriteMode::Atomic, false).await {
        Ok(_) => Reply::Array(replies),
        Err(e) => e,
    }
}
