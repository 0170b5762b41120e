//! `MULTI`/`EXEC`/`DISCARD`: the writes of one transaction become **one** log entry, applied
//! together or not at all, so they must share a partition (else `EXEC` is refused whole with a
//! `CROSSSLOT` error and nothing is written). A command refused while queuing makes `EXEC` answer
//! `EXECABORT`. Commands run in order at `EXEC`, and reads see the transaction's earlier writes
//! (from the pending entry), as in Redis; other clients' writes may land between those reads and
//! the entry. Commands computed at apply (`INCR`, `GETSET`, ...) answer from the entry's outcome;
//! one that meets a value it cannot use there (`INCR` of text) fails alone, its error in its
//! place while the others write, as in Redis (log format v9, `fails_alone`; below it the entry
//! is rejected whole and `EXEC` says nothing was written).
//!
//! `WATCH` reads the version of each key's records (the string and every hash field) here; `EXEC`
//! puts a `check` op per watched key first in the entry, so if anyone changed them in between —
//! through any node, either protocol — every replica rejects the entry alike and `EXEC` answers
//! nil. Watched keys share the transaction's partition (else CROSSSLOT). A version read from a
//! node that lags makes `EXEC` fail and the client retry, never succeed wrongly.
//!
//! `SPOP` reads before it writes: each removal of a member it picked holds the condition that
//! the member is still there. When another client took one in between (a pop, a removal), the
//! entry is rejected whole, nothing written, and `EXEC` runs the commands again (at most
//! [`POP_ATTEMPTS`] times; `MONITOR` and the command counts see each run), so it never hands a
//! member to two clients nor answers one it did not remove.

use super::{Context, Shape, command_table, deferred_reply, is_write, run, text, unknown_command};
use crate::api::resp::reply::Reply;
use crate::model::OpKind;
use crate::service::{Outcome, RejectionKind, WriteMode, WriteOp};
use bytes::Bytes;

/// Commands queued since `MULTI`.
#[derive(Debug, Default)]
pub struct Queued {
    commands: Vec<Vec<Bytes>>,
    /// The queued commands' bytes.
    bytes: usize,
    /// A command was refused while queuing: `EXEC` will discard the transaction.
    refused: bool,
}

/// How many times `EXEC` runs a transaction holding `SPOP` when other clients took members it
/// picked between its read of the set and the apply (each time, nothing was written).
const POP_ATTEMPTS: usize = 32;

/// What `SPOP` inside `EXEC` chose: the members, whose removals are the collected ops from
/// `first_op` on, one each, and whether it was asked for one member (a bulk reply) or a count
/// (an array).
#[derive(Debug)]
pub struct Popped {
    pub first_op: usize,
    pub members: Vec<Bytes>,
    pub single: bool,
}

impl Popped {
    /// Whether the collected op at `index` is one of its removals.
    fn removes(&self, index: usize) -> bool {
        (self.first_op..self.first_op + self.members.len()).contains(&index)
    }

    /// The reply once the transaction applied: the members whose removal found them.
    fn reply(self, returned: &[crate::model::Returned]) -> Reply {
        let mut found = self
            .members
            .into_iter()
            .enumerate()
            .filter(|(i, _)| super::returned_by(returned, self.first_op + i) == Some("1"))
            .map(|(_, member)| member);
        if self.single {
            found.next().map_or(Reply::Null, Reply::Bulk)
        } else {
            Reply::Set(found.map(Reply::Bulk).collect())
        }
    }
}

/// Writes whose condition decides for all their keys together: below log format v8 (no
/// `skips_with`) it would decide the whole transaction, and they are refused inside one.
const GROUP_WRITES: [&str; 1] = ["msetnx"];

/// Reads a transaction may hold (they see its earlier writes; `TTL` and the like of a key it
/// writes are read at apply, from log format v4), PING, ECHO and TIME.
const QUEUEABLE_READS: [&str; 41] = [
    "get",
    "mget",
    "exists",
    "touch",
    "strlen",
    "getrange",
    "substr",
    "hget",
    "hmget",
    "hgetall",
    "hkeys",
    "hvals",
    "hlen",
    "hexists",
    "hstrlen",
    "json.get",
    "json.mget",
    "json.arrindex",
    "json.type",
    "json.objkeys",
    "json.objlen",
    "json.arrlen",
    "json.strlen",
    "ping",
    "echo",
    "time",
    "sismember",
    "smismember",
    "scard",
    "smembers",
    "srandmember",
    "hrandfield",
    "sinter",
    "sunion",
    "sdiff",
    "sintercard",
    "type",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
];

/// Whether a transaction may hold `name`, with entries of log format `version`: every write
/// (below v8, but the group ones), and the reads.
fn queueable(name: &str, version: u32) -> bool {
    (is_write(name) && (version >= 8 || !GROUP_WRITES.contains(&name)))
        || QUEUEABLE_READS.contains(&name)
}

/// Handles the transaction commands, and queues commands while a transaction is open. `None`
/// when `name` (`original`, lowercase) runs as usual.
pub async fn intercept(
    ctx: &mut Context<'_>,
    original: &Bytes,
    name: &str,
    args: &[Bytes],
) -> Option<Reply> {
    match name {
        "multi" => Some(multi(ctx, args)),
        "exec" => Some(exec(ctx, args).await),
        "discard" => Some(discard(ctx, args)),
        "watch" => Some(watch(ctx, args).await),
        "unwatch" => Some(match ctx.session.transaction {
            // Queued like any command in Redis, where it does nothing useful either.
            Some(_) => Reply::Simple("QUEUED"),
            None => {
                ctx.session.watched.clear();
                ctx.session.watch_floors.clear();
                Reply::ok()
            }
        }),
        _ => {
            let queue = ctx.session.transaction.as_mut()?;
            if command_table::lookup(name).is_none() {
                // As outside a transaction (and as Redis says it inside one).
                queue.refused = true;
                return Some(unknown_command(&String::from_utf8_lossy(original), args));
            }
            let version = ctx.service.entry_write_version();
            if !queueable(name, version) {
                queue.refused = true;
                // What may be queued, in a few words (a list of every write was 60 names).
                return Some(Reply::err(format!(
                    "'{name}' cannot be used in a transaction here: one holds writes{} and the \
                     reads {}; run it before MULTI or after EXEC",
                    if version >= 8 {
                        String::new()
                    } else {
                        // Below v8 their condition would decide the whole transaction.
                        format!(" (but not {})", GROUP_WRITES.join(", "))
                    },
                    QUEUEABLE_READS.join(", ")
                )));
            }
            let most = ctx.service.limits().max_records;
            if queue.commands.len() >= most {
                queue.refused = true;
                return Some(Reply::err(format!(
                    "a transaction holds at most {most} commands (MAX_RECORDS_PER_REQUEST)"
                )));
            }
            // The writes become one log entry of at most MAX_ENTRY_BYTES: a queue past the
            // request bound could never run, and held up to 1,000 commands of 8 MB each.
            let limits = ctx.service.limits();
            let bytes = original.len() + args.iter().map(Bytes::len).sum::<usize>();
            if queue.bytes + bytes > limits.max_body_bytes {
                queue.refused = true;
                return Some(Reply::err(format!(
                    "a transaction holds at most {} bytes of commands (MAX_BODY_BYTES); its \
                     writes are one log entry of at most {} bytes (MAX_ENTRY_BYTES)",
                    limits.max_body_bytes, limits.max_entry_bytes
                )));
            }
            queue.bytes += bytes;
            let mut command = Vec::with_capacity(args.len() + 1);
            // As the client sent it: MONITOR shows it so when EXEC runs it.
            command.push(original.clone());
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
        Some(_) => {
            ctx.session.watched.clear();
            ctx.session.watch_floors.clear();
            Reply::ok()
        }
        None => Reply::err("DISCARD without MULTI"),
    }
}

/// `WATCH key [key ...]`: remembers the version of each key's records as read now.
async fn watch(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if ctx.session.transaction.is_some() {
        return Reply::err("WATCH inside MULTI is not allowed");
    }
    if args.is_empty() {
        return super::wrong_arity("watch");
    }
    for key in args {
        let pk = match text(key) {
            Ok(pk) => pk,
            Err(e) => return e,
        };
        if ctx
            .session
            .watched
            .iter()
            .any(|(watched, _)| *watched == pk)
        {
            continue;
        }
        // Each watched key is a check in the transaction's log entry, which holds at most this
        // many ops; the bound also keeps the look-up above short.
        let most = ctx.service.limits().max_records;
        if ctx.session.watched.len() >= most {
            return Reply::err(format!(
                "a connection watches at most {most} keys (MAX_RECORDS_PER_REQUEST): each is \
                 checked in the transaction's one log entry. The keys before this one are \
                 watched; UNWATCH, or EXEC the transaction, to start again"
            ));
        }
        let min_offsets = ctx.min_offsets([pk.as_str()]);
        match ctx.service.pk_version(&pk, &min_offsets).await {
            Ok(watched) => {
                if let Some(floor) = watched.floor {
                    let floors = &mut ctx.session.watch_floors;
                    match floors.iter_mut().find(|f| f.partition == floor.partition) {
                        Some(f) => f.offset = f.offset.max(floor.offset),
                        None => floors.push(floor),
                    }
                }
                ctx.session.watched.push((pk, watched.version));
            }
            Err(e) => return super::service_error(e),
        }
    }
    Reply::ok()
}

async fn exec(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return super::wrong_arity("exec");
    }
    let Some(queue) = ctx.session.transaction.take() else {
        return Reply::err("EXEC without MULTI");
    };
    let watched = std::mem::take(&mut ctx.session.watched);
    ctx.session.watch_floors.clear();
    if queue.refused {
        return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
    }
    // The checks of the watched keys come first in the entry: a changed key rejects it whole.
    let checks: Vec<WriteOp> = watched
        .into_iter()
        .map(|(pk, version)| WriteOp {
            op: OpKind::Check,
            pk,
            version: Some(version),
            ..WriteOp::default()
        })
        .collect();
    for _ in 0..POP_ATTEMPTS {
        if let Ran::Done(reply) = run_once(ctx, &queue.commands, checks.clone()).await {
            return reply;
        }
    }
    Reply::err(format!(
        "other clients popped or removed the members SPOP picked inside this transaction, \
         between reading its set and applying the transaction, {POP_ATTEMPTS} times; nothing \
         was written: run it again"
    ))
}

/// How one run of a transaction's commands ended.
enum Ran {
    /// With this reply to `EXEC`.
    Done(Reply),
    /// Rejected, nothing written: a member `SPOP` picked was gone when the entry applied.
    Popped,
}

/// Runs the queued `commands` once, their writes after `checks` (the watched keys'), and sends
/// the entry.
async fn run_once(ctx: &mut Context<'_>, commands: &[Vec<Bytes>], checks: Vec<WriteOp>) -> Ran {
    let check_count = checks.len();
    // Every command in order: writes are collected instead of sent, and reads see the writes
    // collected before them, as in Redis.
    ctx.session.collecting = Some(checks);
    ctx.session.skip_groups.clear();
    ctx.session.deleting_expires.clear();
    ctx.session.popping = None;
    *ctx.session.pending_json_bytes.get_mut() = super::PENDING_JSON_BYTES;
    let mut replies = Vec::with_capacity(commands.len());
    let mut deferred: Vec<(usize, usize, Shape)> = Vec::new();
    let mut pops: Vec<(usize, Popped)> = Vec::new();
    for command in commands {
        let reply = Box::pin(run(ctx, command)).await;
        if let Some((op, shape)) = ctx.session.deferred.take() {
            deferred.push((replies.len(), op, shape));
        }
        if let Some(popped) = ctx.session.popping.take() {
            pops.push((replies.len(), popped));
        }
        replies.push(reply);
    }
    let ops: Vec<WriteOp> = ctx.session.collecting.take().unwrap_or_default();
    if ops.is_empty() {
        return Ran::Done(Reply::Array(replies));
    }
    let wait = check_count > 0 || !deferred.is_empty() || !pops.is_empty();
    let results = match ctx.send(ops, WriteMode::Atomic, wait).await {
        Ok(results) => results,
        Err(e) => return Ran::Done(e),
    };
    if !wait {
        return Ran::Done(Reply::Array(replies));
    }
    let outcome = results.first().and_then(|r| r.outcome.clone()).flatten();
    match &outcome {
        Some(Outcome::Applied(_)) => {}
        // A watched key changed: the transaction did nothing, as Redis answers it.
        Some(Outcome::Rejected(r))
            if r.kind == RejectionKind::ConditionFailed
                && r.op.is_some_and(|op| (op as usize) < check_count) =>
        {
            return Ran::Done(Reply::Null);
        }
        // A member SPOP picked was gone: nothing was written; pick again.
        Some(Outcome::Rejected(r))
            if r.kind == RejectionKind::ConditionFailed
                && r.op.is_some_and(|op| {
                    pops.iter().any(|(_, popped)| popped.removes(op as usize))
                }) =>
        {
            return Ran::Popped;
        }
        Some(Outcome::Rejected(r)) => {
            return Ran::Done(Reply::err(format!(
                "the transaction was rejected when applied, nothing was written: {}",
                r.message
            )));
        }
        Some(Outcome::Expired) | None => {
            return Ran::Done(Reply::err(
                "the transaction is durable but was not applied in time; read its keys to see",
            ));
        }
    }
    for (reply, op, shape) in deferred {
        replies[reply] = deferred_reply(shape, op, |op| (outcome.as_ref(), op));
    }
    if let Some(Outcome::Applied(returned)) = &outcome {
        for (reply, popped) in pops {
            replies[reply] = popped.reply(returned);
        }
    }
    Ran::Done(Reply::Array(replies))
}
