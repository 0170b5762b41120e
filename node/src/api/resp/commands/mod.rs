//! Command dispatch. Reads and writes go through [`Service`], exactly as HTTP's do.
//!
//! The mapping (README, "Reading (and writing) with any Redis client"): a Redis key is a pk, a hash whose fields are sks. `GET`/`SET`/`DEL`/`EXISTS`
//! address the record (pk = key, sk = ""). A written value is stored as a JSON string of exactly
//! its bytes and read back as those bytes; data that is any other JSON value reads as its JSON
//! text. `JSON.SET`/`JSON.GET` write and read JSON documents.

mod command_table;
mod counter;
mod expiry;
mod field_cursor;
mod hash;
mod hash_expiry;
mod json;
mod keys;
mod keyspace;
mod monitor;
mod pubsub;
mod replicas;
mod scan;
mod server;
mod set;
mod slowlog;
mod stats;
mod transaction;
mod unsupported;
mod written;

pub use field_cursor::ScanCursors;
pub(super) use scan::glob_match;
pub use stats::{SAMPLE_EVERY, ServerStats};
pub use written::{WriteSlots, WrittenPositions};

use super::clients::{ClientHandle, ClientRegistry};
use super::push::{Hub, Push};
use super::reply::Reply;
use crate::model::{JsonCmd, Key, OpKind, Position, Record, partition_of};
use crate::service::{
    Access, Denied, ListRequest, Operation, Service, ServiceError, WriteMode, WriteOp,
    WriteRequest, compute_read_modify_write, edit_json_alone,
};
use bytes::Bytes;
pub use monitor::Line as MonitorLine;
use monitor::Monitors;
use serde_json::value::RawValue;
use slowlog::SlowLog;
use std::borrow::Cow;
use std::sync::Arc;

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    /// What this connection may do: everything on an open node, nothing until `AUTH` otherwise.
    pub access: Access,
    /// RESP protocol version in use: 2 until `HELLO 3`.
    pub proto: u8,
    pub name: Option<Bytes>,
    /// Set by `QUIT`: close after replying.
    pub closing: bool,
    /// Commands queued since `MULTI`.
    transaction: Option<transaction::Queued>,
    /// While `EXEC` runs a transaction's writes: their ops, collected into one entry.
    collecting: Option<Vec<WriteOp>>,
    /// The groups of collected ops that write together or not at all (`MSETNX`, `HSETEX
    /// FNX|FXX`: `skips_with`), and whether this node, reading now, expects them to write: how
    /// the transaction's later reads see them.
    skip_groups: Vec<(std::ops::Range<usize>, bool)>,
    /// The collected `expire_key` and `expire` ops whose deadline is already past and which
    /// this node, reading now, expects to delete their key or field (`EXPIRE k 0`, `HEXPIRE k
    /// 0 FIELDS 1 f`): how the transaction's later reads see them.
    deleting_expires: Vec<usize>,
    /// Set by a collected command (inside `EXEC` or a pipeline's group) whose reply is made
    /// from what its ops return at apply: (index of its first op among the collected ones, how
    /// to make the reply).
    deferred: Option<(usize, Shape)>,
    /// Set by `SPOP` inside `EXEC`: the members it chose and where their removals are among
    /// the collected ops (its reply is the members the removals found, once applied).
    popping: Option<transaction::Popped>,
    /// Bytes of documents the reads inside this `EXEC` may still parse to replay its pending
    /// JSON edits (each read replays every edit before it: unbounded, 500 edits read 500 times
    /// would hold the connection's thread for minutes). Atomic only because reads borrow the
    /// session shared; one connection's task uses it.
    pending_json_bytes: std::sync::atomic::AtomicU64,
    /// The last entry this connection wrote in each partition it wrote to (`WAIT`).
    pub last_written: Vec<Position>,
    /// Keys under `WATCH`, with the version of their records when watched.
    watched: Vec<(String, String)>,
    /// Per partition of a watched key, the last entry a watched version may reflect: reads
    /// made while watching wait for it (see `service::Watched`).
    watch_floors: Vec<Position>,
    /// Pushes for this connection (invalidations, pub/sub messages), once it asked for any;
    /// and whether they overflowed (the connection then closes).
    pub pushes: Option<(
        tokio::sync::mpsc::Receiver<Push>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
    /// The command stream, after `MONITOR`.
    pub monitor: Option<monitor::Monitor>,
    /// `CLIENT TRACKING` settings, when on (the hub has them too).
    tracking: Option<super::push::Tracking>,
    /// `CLIENT CACHING yes|no` for the next command.
    caching: Option<bool>,
    /// Channels and patterns subscribed to: in RESP2 the connection is then in subscribe mode.
    subscriptions: usize,
    /// Their names' bytes, which the hub keeps for this connection (in its client memory).
    subscribed_bytes: usize,
    /// The bytes of the `CLIENT TRACKING` prefixes kept, here and in the hub.
    tracking_bytes: usize,
    /// The command last noted in the client registry for `CLIENT LIST` (a copy: the command
    /// itself shares the connection's input buffer, which must not be kept alive by it), and
    /// when.
    noted: Option<(NotedName, std::time::Instant)>,
    /// What this connection counted for `INFO stats` and not yet added to the node's counts
    /// (once per batch it answers: see [`stats`]).
    pub counted: stats::Unflushed,
}

/// How a command's reply is made from the data its op returned at apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The value as an integer (`INCR`, `HINCRBY`).
    Integer,
    /// The value itself, nil for none (`INCRBYFLOAT`, `GETSET`, `GETDEL`, `SET ... GET`).
    Bulk,
    /// The value's length in bytes (`APPEND`).
    Length,
    /// A hash field's counter: as `Integer` (`HINCRBY`) or, `float`, `Bulk` (`HINCRBYFLOAT`),
    /// refusing a field that holds no number in Redis's words for a hash value.
    FieldCounter { float: bool },
    /// How many of the command's `n` ops found their record (or key) there: `DEL`, `HDEL`.
    Existed(u32),
    /// How many of the command's `n` ops did not: the new fields of `HSET`.
    Added(u32),
    /// Whether an `if_skips` put wrote (it returns `"1"`) or its condition skipped it: as `OK`
    /// or nil (`SET ... NX` inside `MULTI`), or, `flag`, as 1 or 0 (`SETNX`, `HSETNX`).
    Ran { flag: bool },
    /// A key's deadline from a `deadline` op (unix ms, `-1` none, `-2` no key), as `TTL`,
    /// `PTTL`, `EXPIRETIME` or `PEXPIRETIME` answers it (`TTL` inside `MULTI`).
    Deadline(expiry::DeadlineAs),
    /// A `json` op's reply, returned as JSON (see [`crate::model::JsonCmd`]).
    Json,
    /// One reply per op of the command's `n`, as an array: `HEXPIRE`'s codes, the values
    /// `HGETEX` and `HGETDEL` read.
    PerOp(u32, Each),
}

/// How each op of a [`Shape::PerOp`] command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Each {
    /// Redis 7.4's per-field code (`-2` when the op returned none: no such field); `persist`
    /// answers `HPERSIST`'s -1 for "no deadline to remove".
    ExpireCode { persist: bool },
    /// The value the op returned, nil for none.
    Value,
}

impl Each {
    fn reply(self, data: Option<&str>) -> Reply {
        match self {
            Each::ExpireCode { persist } => {
                let code = data.and_then(|d| d.parse::<i64>().ok()).unwrap_or(-2);
                Reply::Int(if persist && code == 0 { -1 } else { code })
            }
            Each::Value => Shape::Bulk.reply(data),
        }
    }
}

impl Shape {
    /// The reply for returned `data` (JSON text; `None`: no record).
    fn reply(self, data: Option<&str>) -> Reply {
        let value = data.map(|d| wire_value(Bytes::copy_from_slice(d.as_bytes())));
        match self {
            Shape::Bulk | Shape::FieldCounter { float: true } => {
                value.map_or(Reply::Null, Reply::Bulk)
            }
            Shape::Length => Reply::Int(value.map_or(0, |v| v.len() as i64)),
            Shape::Deadline(shown_as) => match data.and_then(|d| d.parse::<i64>().ok()) {
                Some(deadline) if deadline < 0 => Reply::Int(deadline),
                Some(deadline) => Reply::Int(shown_as.show(deadline)),
                None => Reply::err("a deadline op returned no deadline"),
            },
            Shape::Ran { flag } => match (data == Some("1"), flag) {
                (ran, true) => Reply::Int(i64::from(ran)),
                (true, false) => Reply::ok(),
                (false, false) => Reply::Null,
            },
            Shape::Integer | Shape::FieldCounter { float: false } => {
                match value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()) {
                    Some(n) => Reply::Int(n),
                    None => Reply::err("value is not an integer or out of range"),
                }
            }
            Shape::Json => json::reply_from_returned(data),
            // Counts and lists are made by `deferred_reply` from all their ops.
            Shape::Existed(_) | Shape::Added(_) | Shape::PerOp(..) => {
                Reply::err("a reply of several ops needs their outcomes")
            }
        }
    }

    /// The reply for an op rejected with `message`.
    fn rejected(self, message: &str) -> Reply {
        let hash_value = match (self, message) {
            (Shape::FieldCounter { .. }, "value is not an integer or out of range") => {
                "hash value is not an integer"
            }
            (Shape::FieldCounter { .. }, "value is not a valid float") => {
                "hash value is not a float"
            }
            // Said in the terms of a Redis client, which stored bytes, not JSON.
            (Shape::Length, message)
                if message == crate::service::RmwError::NotAString.to_string() =>
            {
                "APPEND takes UTF-8 text here: the key holds a binary value (or a JSON \
                 document, or JSON written over HTTP), which is stored whole: SET the new value"
            }
            _ => message,
        };
        Reply::err(hash_value.to_string())
    }

    /// How many ops of the write the reply is made from.
    fn ops(self) -> usize {
        match self {
            Shape::Existed(n) | Shape::Added(n) | Shape::PerOp(n, _) => n as usize,
            _ => 1,
        }
    }
}

impl Session {
    /// Whether the connection is kept for what the node sends it unasked: subscribed to
    /// channels or patterns, or monitoring. Redis never closes those for being idle.
    pub fn waits_for_pushes(&self) -> bool {
        self.subscriptions > 0 || self.monitor.is_some()
    }

    /// What the session keeps beyond its buffers, for the node's bound on client memory: the
    /// names of its subscriptions and its tracking prefixes.
    pub fn held_bytes(&self) -> usize {
        self.subscribed_bytes + self.tracking_bytes
    }

    /// What collected op `index` does to the records the transaction's later reads see: its
    /// kind, a delete for an `EXPIRE`/`HEXPIRE`/`GETEX` to a deadline already past that this
    /// node expects to hold (of the key, `DeleteKey`; of a field or string, `Delete`) and for a
    /// put whose deadline is already past (`SET ... EXAT 1`: written expired, as Redis deletes
    /// it), `None` for the ops that change no record's value (checks, other deadlines).
    fn pending_kind(&self, index: usize, op: &WriteOp) -> Option<OpKind> {
        // Pushed as ops were collected: in order, so searched, not walked.
        let deleting = || self.deleting_expires.binary_search(&index).is_ok();
        match op.op {
            OpKind::ExpireKey if deleting() => Some(OpKind::DeleteKey),
            OpKind::Expire if deleting() => Some(OpKind::Delete),
            OpKind::Put if op.expires_at.is_some_and(|at| at <= crate::model::now_ms()) => {
                Some(OpKind::Delete)
            }
            OpKind::Check | OpKind::Expire | OpKind::ExpireKey | OpKind::Deadline => None,
            kind => Some(kind),
        }
    }

    /// Whether pipelined writes are being collected (outside a transaction).
    pub fn collecting_pipeline(&self) -> bool {
        self.collecting.is_some() && self.transaction.is_none()
    }

    /// Starts collecting pipelined writes, if not already.
    pub fn start_collecting(&mut self) {
        self.collecting.get_or_insert_with(Vec::new);
    }

    /// Adds what this connection counted since the last call (commands, bytes, key lookups)
    /// to the node's counts.
    pub fn count_commands(&mut self, stats: &ServerStats) {
        stats.add(&mut self.counted);
    }

    pub fn new(id: u64, access: Access) -> Self {
        Session {
            id,
            access,
            proto: 2,
            name: None,
            closing: false,
            transaction: None,
            collecting: None,
            skip_groups: Vec::new(),
            deleting_expires: Vec::new(),
            deferred: None,
            popping: None,
            pending_json_bytes: std::sync::atomic::AtomicU64::new(0),
            last_written: Vec::new(),
            watched: Vec::new(),
            watch_floors: Vec::new(),
            pushes: None,
            monitor: None,
            tracking: None,
            caching: None,
            subscriptions: 0,
            subscribed_bytes: 0,
            tracking_bytes: 0,
            noted: None,
            counted: stats::Unflushed::default(),
        }
    }

    /// Whether `command`, finished at `at`, must be noted in the client registry: `CLIENT
    /// LIST` shows the last command and the idle time in whole seconds, so a run of the same
    /// command (a pipeline of `GET`s) is noted once per [`NOTE_EVERY`] instead of taking the
    /// registry entry's lock every time; commands that change the name or protocol it shows
    /// are always noted.
    fn must_note(&mut self, command: &[u8], at: std::time::Instant) -> bool {
        let same = self.noted.as_ref().is_some_and(|((name, len), noted_at)| {
            name[..usize::from(*len)].eq_ignore_ascii_case(command)
                && at.duration_since(*noted_at) < NOTE_EVERY
        });
        let changes_what_is_shown =
            command.eq_ignore_ascii_case(b"client") || command.eq_ignore_ascii_case(b"hello");
        if same && !changes_what_is_shown {
            return false;
        }
        // A name longer than any command is not kept: it is noted every time.
        self.noted = (command.len() <= NOTED_NAME_MAX).then(|| {
            let mut name = [0u8; NOTED_NAME_MAX];
            name[..command.len()].copy_from_slice(command);
            ((name, command.len() as u8), at)
        });
        true
    }
}

/// What all the connections of the Redis port share.
pub struct Shared {
    /// Invalidations and pub/sub messages for the connections.
    pub hub: Arc<Hub>,
    pub clients: ClientRegistry,
    pub scans: ScanCursors,
    pub written: WrittenPositions,
    pub stats: ServerStats,
    pub slowlog: SlowLog,
    pub monitors: Monitors,
}

impl Shared {
    pub fn new(partitions: u32, hub: Arc<Hub>, port: u16, max_clients: usize) -> Self {
        Shared {
            hub,
            clients: ClientRegistry::default(),
            scans: ScanCursors::default(),
            written: WrittenPositions::new(partitions),
            stats: ServerStats::new(port, max_clients),
            slowlog: SlowLog::default(),
            monitors: Monitors::default(),
        }
    }
}

/// What a command runs with.
pub struct Context<'a> {
    pub service: &'a Service,
    pub hub: &'a Hub,
    pub scans: &'a ScanCursors,
    pub written: &'a WrittenPositions,
    pub stats: &'a ServerStats,
    pub slowlog: &'a SlowLog,
    pub monitors: &'a Monitors,
    pub clients: &'a ClientRegistry,
    /// This connection's entry in `clients`.
    pub client: &'a ClientHandle,
    pub session: &'a mut Session,
}

/// The longest command name [`Session::must_note`] remembers (every command's name is shorter).
const NOTED_NAME_MAX: usize = 32;

/// A copy of a command's name, and its length.
type NotedName = ([u8; NOTED_NAME_MAX], u8);

/// How often a run of the same command is noted in the client registry (see
/// [`Session::must_note`]).
const NOTE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long SUBSCRIBE and CLIENT TRACKING wait for the changes of every partition to reach this
/// node (the partitions other nodes serve are followed through them).
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs one command and records its latency in the connection's `latencies`. `clock` is when
/// the command could start (when its bytes were read, or when the command before it in the
/// pipeline finished) and is moved to when it finished: commands of a pipeline run back to back,
/// so one clock read per command times them all (a clock read is a visible part of a pipelined
/// `GET`).
pub async fn execute(
    ctx: &mut Context<'_>,
    args: Vec<Bytes>,
    latencies: &mut crate::metrics::RespLatencies,
    clock: &mut std::time::Instant,
) -> Reply {
    let started = *clock;
    let name = args.first().cloned().unwrap_or_default();
    // With CLIENT TRACKING on, the keys a read command reads are remembered after it ran, if
    // no change of their partitions slipped in meanwhile (see `Hub::track`).
    let tracked = ctx.session.tracking.as_ref().map(|_| {
        let lower = String::from_utf8_lossy(&name).to_ascii_lowercase();
        let keys = pubsub::read_keys(&lower, args.get(1..).unwrap_or_default());
        (lower, pubsub::before_read(ctx, keys))
    });
    // Compared in place: this runs for every command.
    let pushes_wanted = name.eq_ignore_ascii_case(b"subscribe")
        || name.eq_ignore_ascii_case(b"psubscribe")
        || (name.eq_ignore_ascii_case(b"client")
            && args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"tracking")));
    let reply = run(ctx, &args).await;
    if let Some((lower, keys)) = tracked
        && lower != "client"
        && !matches!(reply, Reply::Error(_))
    {
        pubsub::track(ctx, keys);
    }
    if pushes_wanted && !matches!(reply, Reply::Error(_)) {
        // The changes of partitions served elsewhere reach this node once their followers are
        // connected: the reply waits for that (briefly), so what follows it is not missed.
        ctx.hub.wait_followed(FOLLOW_WAIT).await;
    }
    ctx.session.counted.commands += 1;
    let finished = std::time::Instant::now();
    *clock = finished;
    if ctx.session.must_note(&name, finished) {
        ctx.client.ran(
            &name,
            finished,
            ctx.session.proto,
            ctx.session.name.as_deref(),
        );
    }
    let took = finished.duration_since(started);
    latencies.observe(&name, crate::metrics::micros(took));
    let micros = took.as_micros() as u64;
    if ctx.slowlog.wants(micros) {
        ctx.slowlog
            .record(&args, micros, ctx.client.addr(), ctx.session.name.as_ref());
    }
    reply
}

/// Notes that a command was refused before it could run (a transaction open now fails at
/// `EXEC`, as in Redis).
pub fn refused_while_queuing(ctx: &mut Context<'_>) {
    transaction::refused_while_queuing(ctx);
}

/// Runs one command (a transaction's too), then shows it to the monitors if there are any: as
/// in Redis, a command shows once it has run, so one queued by `MULTI` shows when `EXEC` runs it.
pub(super) async fn run(ctx: &mut Context<'_>, command: &[Bytes]) -> Reply {
    let queued = ctx.session.transaction.is_some()
        && !command.first().is_some_and(|name| {
            [&b"multi"[..], b"exec", b"discard", b"watch"]
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t))
        });
    let reply = run_command(ctx, command).await;
    if !queued && let Some(name) = command.first() {
        stats::count_lookups(&mut ctx.session.counted, name, command.len() - 1, &reply);
    }
    if ctx.monitors.active() && !queued {
        ctx.monitors.feed(ctx.client.addr(), command);
    }
    reply
}

async fn run_command(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some(original) = args.first() else {
        return Reply::err("empty command");
    };
    let mut lower = [0u8; 32];
    let name = lowercase(original, &mut lower);
    let name: &str = &name;
    let args = &args[1..];
    if let Err(denied) = permitted(ctx.session.access, name, args) {
        transaction::refused_while_queuing(ctx);
        return denied;
    }
    if ctx.session.subscriptions > 0
        && ctx.session.proto < 3
        && !pubsub::ALLOWED_WHILE_SUBSCRIBED.contains(&name)
    {
        return Reply::err(format!(
            "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ));
    }
    if let Some(reply) = transaction::intercept(ctx, original, name, args).await {
        return reply;
    }
    match name {
        "subscribe" => pubsub::subscribe(ctx, args, false),
        "psubscribe" => pubsub::subscribe(ctx, args, true),
        "unsubscribe" => pubsub::unsubscribe(ctx, args, false),
        "punsubscribe" => pubsub::unsubscribe(ctx, args, true),
        "ping" if ctx.session.subscriptions > 0 && ctx.session.proto < 3 => Reply::Array(vec![
            Reply::bulk("pong"),
            Reply::Bulk(args.first().cloned().unwrap_or_default()),
        ]),
        "get" => keys::get(ctx, args).await,
        "mget" => keys::mget(ctx, args).await,
        "exists" => keys::exists(ctx, args).await,
        "touch" => keys::touch(ctx, args).await,
        "memory" => keys::memory(ctx, args).await,
        "getrange" | "substr" => keys::getrange(ctx, args, name).await,
        "set" => keys::set(ctx, args).await,
        "getset" => keys::getset(ctx, args).await,
        "getdel" => keys::getdel(ctx, args).await,
        "incr" | "decr" | "incrby" | "decrby" => counter::incr(ctx, args, name).await,
        "incrbyfloat" | "hincrbyfloat" => counter::incrbyfloat(ctx, args, name).await,
        "hincrby" => counter::hincrby(ctx, args).await,
        "append" => counter::append(ctx, args).await,
        "setnx" => keys::setnx(ctx, args).await,
        "setex" | "psetex" => expiry::setex(ctx, args, name).await,
        "getex" => expiry::getex(ctx, args).await,
        "expire" | "pexpire" | "expireat" | "pexpireat" => expiry::expire(ctx, args, name).await,
        "persist" => expiry::persist(ctx, args).await,
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => expiry::ttl(ctx, args, name).await,
        "hexpire" | "hpexpire" | "hexpireat" | "hpexpireat" | "hpersist" => {
            expiry::hexpire(ctx, args, name).await
        }
        "httl" | "hpttl" | "hexpiretime" | "hpexpiretime" => expiry::httl(ctx, args, name).await,
        "hsetex" => hash_expiry::hsetex(ctx, args).await,
        "hgetex" => hash_expiry::hgetex(ctx, args).await,
        "hgetdel" => hash_expiry::hgetdel(ctx, args).await,
        "mset" => keys::mset(ctx, args, false).await,
        "msetnx" => keys::mset(ctx, args, true).await,
        "strlen" => keys::strlen(ctx, args).await,
        "del" | "unlink" => keys::del(ctx, args, name).await,
        "type" => keys::type_of(ctx, args).await,
        "hget" => hash::hget(ctx, args).await,
        "hmget" => hash::hmget(ctx, args).await,
        "hgetall" => hash::hgetall(ctx, args).await,
        "hkeys" => hash::hkeys(ctx, args).await,
        "hvals" => hash::hvals(ctx, args).await,
        "hlen" => hash::hlen(ctx, args).await,
        "slowlog" => ctx.slowlog.command(args),
        "monitor" => {
            if !args.is_empty() {
                return wrong_arity("monitor");
            }
            if ctx.session.monitor.is_none() {
                ctx.session.monitor = Some(ctx.monitors.watch());
            }
            Reply::ok()
        }
        "hexists" => hash::hexists(ctx, args).await,
        "hset" | "hmset" => hash::hset(ctx, args, name).await,
        "hsetnx" => hash::hsetnx(ctx, args).await,
        "hstrlen" => hash::hstrlen(ctx, args).await,
        "hdel" => hash::hdel(ctx, args).await,
        "hscan" => scan::hscan(ctx, args).await,
        "hrandfield" => hash::hrandfield(ctx, args).await,
        "sadd" => set::sadd(ctx, args).await,
        "srem" => set::srem(ctx, args).await,
        "sismember" => set::sismember(ctx, args).await,
        "smismember" => set::smismember(ctx, args).await,
        "scard" => set::scard(ctx, args).await,
        "smembers" => set::smembers(ctx, args).await,
        "srandmember" => set::srandmember(ctx, args).await,
        "sscan" => scan::sscan(ctx, args).await,
        "sinter" => set::combine(ctx, args, set::Combine::Inter, name).await,
        "sunion" => set::combine(ctx, args, set::Combine::Union, name).await,
        "sdiff" => set::combine(ctx, args, set::Combine::Diff, name).await,
        "sintercard" => set::sintercard(ctx, args).await,
        "spop" => set::spop(ctx, args).await,
        "scan" => keyspace::scan(ctx, args).await,
        "keys" => keyspace::keys(ctx, args).await,
        "dbsize" => keyspace::dbsize(ctx, args).await,
        "randomkey" => keyspace::randomkey(ctx, args).await,
        "info" => {
            let keys = match server::wants_keyspace(args) {
                true => ctx.key_count().await.ok(),
                false => None,
            };
            server::info(ctx, args, keys)
        }
        "wait" => replicas::wait(ctx, args).await,
        "waitaof" => replicas::waitaof(ctx, args).await,
        "json.set" => json::set(ctx, args).await,
        "json.get" => json::get(ctx, args).await,
        "json.del" | "json.forget" => json::del(ctx, args).await,
        "json.merge" => json::merge(ctx, args).await,
        "json.mset" => json::mset(ctx, args).await,
        "json.arrindex" => json::arrindex(ctx, args).await,
        "json.clear" | "json.toggle" => json::path_only(ctx, args, name).await,
        "json.numincrby" | "json.nummultby" => json::number(ctx, args, name).await,
        "json.strappend" => json::strappend(ctx, args).await,
        "json.arrappend" | "json.arrinsert" => json::arrappend(ctx, args, name).await,
        "json.arrpop" => json::arrpop(ctx, args).await,
        "json.arrtrim" => json::arrtrim(ctx, args).await,
        "json.mget" => json::mget(ctx, args).await,
        "json.type" | "json.objkeys" | "json.objlen" | "json.arrlen" | "json.strlen"
        | "json.resp" => json::inspect(ctx, args, name).await,
        "json.debug" => json::debug(ctx, args).await,
        _ => match server::execute(ctx, name, args) {
            Some(reply) => reply,
            None => unknown_command(&String::from_utf8_lossy(original), args),
        },
    }
}

/// `name` in lowercase, in `buf` when it fits (every command name does): no allocation per
/// command.
fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; 32]) -> std::borrow::Cow<'b, str> {
    if let Some(out) = buf.get_mut(..name.len()) {
        out.copy_from_slice(name);
        out.make_ascii_lowercase();
        if let Ok(text) = std::str::from_utf8(out) {
            return std::borrow::Cow::Borrowed(text);
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Whether a command may wait long for something other than its own work (`WAIT`, `WAITAOF`):
/// the connection then ends it when its client leaves.
pub fn blocks(args: &[Bytes]) -> bool {
    args.first().is_some_and(|name| {
        name.eq_ignore_ascii_case(b"wait") || name.eq_ignore_ascii_case(b"waitaof")
    })
}

/// Whether a pipelined command can join a group of writes sent to the log together: plain writes
/// whose replies do not depend on an outcome, outside a transaction.
pub fn collectable(ctx: &Context<'_>, args: &[Bytes]) -> bool {
    if ctx.session.transaction.is_some() || args.is_empty() {
        return false;
    }
    // A group stays well inside what one write may hold (records, and bytes of one entry), so
    // it never fails where its commands one by one would not; a full group is sent first.
    if let Some(collected) = &ctx.session.collecting {
        let limits = ctx.service.limits();
        let bytes: usize = collected
            .iter()
            .map(|op| op.data.as_ref().map_or(0, |d| d.get().len()) + op.pk.len() + op.sk.len())
            .sum::<usize>()
            + args.iter().map(Bytes::len).sum::<usize>();
        if collected.len() + args.len() > limits.max_records / 2
            || bytes > limits.max_entry_bytes / 2
        {
            return false;
        }
    }
    let name = &args[0];
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    (is("set") && args.len() == 3)
        || (is("json.set") && args.len() == 4)
        || is("hset")
        || is("hmset")
        || is("hdel")
        || is("sadd")
        || is("srem")
        || is("del")
        || is("unlink")
        // Computed at apply: their replies are filled in from the entries' outcomes.
        || is("incr")
        || is("decr")
        || is("incrby")
        || is("decrby")
        || is("incrbyfloat")
        || is("hincrby")
        || is("hincrbyfloat")
        || is("append")
}

/// Bytes of documents one `EXEC`'s reads may parse replaying its pending JSON edits (as one
/// entry's apply may read: `ENTRY_READ_BYTES`).
pub(super) const PENDING_JSON_BYTES: u64 = crate::engine::ENTRY_READ_BYTES;

/// A collected command whose reply comes from its op's outcome: (its reply's place among the
/// held replies, its op's index among the collected ops, the reply's shape).
pub type Deferred = (usize, usize, Shape);

/// The command just run was collected and its reply must wait for its op's outcome: its op's
/// index among the collected ops, and the reply's shape.
pub fn take_deferred(ctx: &mut Context<'_>) -> Option<(usize, Shape)> {
    ctx.session.deferred.take()
}

/// Sends the pipelined writes collected so far to the log (per record, as they would have gone
/// one by one), and remembers where they went. When some replies are `deferred`, waits for the
/// outcomes and returns those replies (their places among the held replies, and the reply).
pub async fn send_collected(
    ctx: &mut Context<'_>,
    deferred: &[Deferred],
) -> Result<Vec<(usize, Reply)>, Reply> {
    let ops = ctx.session.collecting.take().unwrap_or_default();
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let wait = !deferred.is_empty();
    let slots = ctx.written.slots_of(&ops);
    let _in_flight = ctx.in_flight();
    let (results, located) = ctx
        .service
        .mutate_located(WriteRequest {
            ops,
            mode: WriteMode::Pipeline,
            wait,
        })
        .await
        .map_err(service_error)?;
    ctx.note_written(&results, &slots);
    Ok(deferred
        .iter()
        .map(|&(place, op, shape)| (place, located_reply(&results, &located, op, shape)))
        .collect())
}

/// The reply of a command whose ops start at `first` among a per-record write's ops, which
/// went where `located` says.
fn located_reply(
    results: &[crate::service::EntryResult],
    located: &[(usize, u32)],
    first: usize,
    shape: Shape,
) -> Reply {
    deferred_reply(shape, first, |op| {
        let (entry, index) = located[op];
        (
            results[entry].outcome.as_ref().and_then(Option::as_ref),
            index as usize,
        )
    })
}

/// Whether `name` (lowercase) writes, so needs write access: its `write` flag in `COMMAND`'s
/// table (a binary search, as every command asks).
pub(super) fn is_write(name: &str) -> bool {
    command_table::lookup(name).is_some_and(command_table::CommandInfo::writes)
}

/// Whether a connection with `access` may run `name` with `args`, in Redis's words when not.
fn permitted(access: Access, name: &str, args: &[Bytes]) -> Result<(), Reply> {
    // Only the operator's commands need more than write access: for the rest, nothing to
    // look up.
    let operator = matches!(name, "monitor" | "config" | "slowlog" | "client");
    if access == Access::Admin || (access >= Access::Write && !operator) {
        return Ok(());
    }
    let sub = |names: &[&str]| {
        args.first()
            .is_some_and(|a| names.iter().any(|n| a.eq_ignore_ascii_case(n.as_bytes())))
    };
    let operation = match name {
        "auth" | "hello" | "quit" | "reset" => Operation::Connect,
        // What changes the node for every client, or shows or ends other clients' commands
        // (Redis's @admin): an admin token's.
        "monitor" => Operation::Administer,
        "config" if sub(&["set", "resetstat"]) => Operation::Administer,
        "slowlog" if sub(&["reset"]) => Operation::Administer,
        "client" if sub(&["kill", "no-evict"]) => Operation::Administer,
        name if is_write(name) => Operation::Write,
        _ => Operation::Read,
    };
    operation.check(access).map_err(|denied| match denied {
        Denied::NoToken => Reply::Error("NOAUTH Authentication required.".into()),
        Denied::TooWeak { .. } => Reply::Error(format!(
            "NOPERM this token has no permissions to run the '{name}' command"
        )),
    })
}

/// Redis's message for an unknown command, with why and what instead for the commands people
/// reach for most (`unsupported.rs`).
pub(super) fn unknown_command(name: &str, args: &[Bytes]) -> Reply {
    let beginning: String = args
        .iter()
        .take(3)
        .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
        .collect();
    let hint = unsupported::hint(&name.to_ascii_lowercase())
        .map(|why| format!("({why})"))
        .unwrap_or_default();
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {beginning}{hint}"
    ))
}

/// A `HELP` subcommand's answer: its lines, as simple strings (as Redis answers them).
fn help(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().copied().map(Reply::Simple).collect())
}

/// Redis's message for a wrong argument count.
fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// A key or field argument as the pk or sk it names: itself when UTF-8, else the binary key
/// standing for its bytes ([`crate::model::binary_key`]).
fn text(arg: &Bytes) -> Result<String, Reply> {
    text_ref(arg).map(Cow::into_owned)
}

/// [`text`], borrowed when the key is UTF-8: what a read needs (no copy per key read).
fn text_ref(arg: &Bytes) -> Result<Cow<'_, str>, Reply> {
    match std::str::from_utf8(arg) {
        Ok(text)
            if text.starts_with(crate::model::BINARY_KEY_MARK)
                && crate::model::binary_key_bytes(text).is_some() =>
        {
            Err(Reply::err(
                "keys and fields of U+10FFFF followed by base64 stand for binary keys here \
                 (send the bytes themselves)",
            ))
        }
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => Ok(Cow::Owned(crate::model::binary_key(arg))),
    }
}

/// The bytes a pk or sk stands for on the wire: the bytes of a binary key, else its text.
pub(crate) fn wire_key(key: &str) -> Bytes {
    match crate::model::binary_key_bytes(key) {
        Some(bytes) => Bytes::from(bytes),
        None => Bytes::copy_from_slice(key.as_bytes()),
    }
}

pub(super) fn service_error(e: ServiceError) -> Reply {
    match e.code {
        // Redis takes "" as a key; FireScroll's pk cannot be empty. Said in Redis's terms (the
        // service's message speaks of `pk` and the request's records).
        "missing_pk" => {
            Reply::err("empty keys are not supported here: a key needs at least one character")
        }
        // Redis refuses writes it cannot persist with MISCONF: what Redis users' runbooks and
        // alerts look for when a disk fills.
        "disk_full" => Reply::Error(format!("MISCONF {}", e.message)),
        // Redis answers LOADING while it loads its data at start: clients know to wait and retry
        // (redis-py's BusyLoadingError).
        // So does a partition replaying the log after it opened here behind it.
        "partition_opening" | "partition_catching_up" => {
            Reply::Error(format!("LOADING {}", e.message))
        }
        // A read waits for the writes this node answered to its keys; `min_offsets` is HTTP's.
        "min_offsets_timeout" => Reply::err(format!(
            "{}: a write this node answered to these keys is not applied here yet; retry shortly",
            e.message
                .trim_end_matches("; retry, or read without min_offsets")
        )),
        _ => Reply::err(e.message),
    }
}

/// The wire value of a record: its JSON text, or a JSON string's contents.
fn value_of(record: &Record) -> Bytes {
    wire_value(Bytes::from(record.data_json.clone()))
}

/// The wire value of data JSON: itself, a JSON string's contents (without copying when the
/// string has no escapes), or the bytes of a binary value (see [`data_of`]).
fn wire_value(json: Bytes) -> Bytes {
    if json.first() == Some(&b'{') {
        return crate::model::binary_bytes(&json).map_or(json, Bytes::from);
    }
    if json.first() != Some(&b'"') {
        return json;
    }
    if json.len() >= 2 && !json.contains(&b'\\') {
        return json.slice(1..json.len() - 1);
    }
    match serde_json::from_slice::<String>(&json) {
        Ok(s) => Bytes::from(s),
        Err(_) => json,
    }
}

/// The reply of a command whose op (`op`, in its entry) returns a value, from the entry's
/// outcome (`None`: not applied within the write wait).
fn outcome_reply(outcome: Option<&crate::service::Outcome>, op: usize, shape: Shape) -> Reply {
    use crate::service::{Outcome, RejectionKind};
    match outcome {
        // An op that failed alone (log format v9): its error, the rest of the entry applied.
        Some(Outcome::Applied(returned)) => match failed_alone(returned, op) {
            Some(message) => shape.rejected(message),
            None => shape.reply(returned_by(returned, op)),
        },
        // `SET ... XX GET` of an absent key: nothing was set and there was no old value.
        Some(Outcome::Rejected(r)) if r.kind == RejectionKind::ConditionFailed => Reply::Null,
        Some(Outcome::Rejected(r)) => shape.rejected(&r.message),
        Some(Outcome::Expired) | None => not_applied_in_time(),
    }
}

/// What op `op` of an applied entry returned.
fn returned_by(returned: &[crate::model::Returned], op: usize) -> Option<&str> {
    returned
        .iter()
        .find(|r| r.op as usize == op)
        .and_then(|r| r.data.as_deref())
}

/// Why op `op` of an applied entry failed alone (log format v9), if it did.
fn failed_alone(returned: &[crate::model::Returned], op: usize) -> Option<&str> {
    returned
        .iter()
        .find(|r| r.op as usize == op)
        .and_then(|r| r.error.as_deref())
}

fn not_applied_in_time() -> Reply {
    Reply::err("the write is durable but was not applied in time; read the key to see")
}

/// The reply of a command whose `shape.ops()` ops start at `first` among a write's ops, from
/// their entries' outcomes: `locate` gives an op's entry outcome and its index in that entry.
/// Counts add up what each op returned; a rejected op answers its rejection.
fn deferred_reply<'a>(
    shape: Shape,
    first: usize,
    locate: impl Fn(usize) -> (Option<&'a crate::service::Outcome>, usize),
) -> Reply {
    use crate::service::Outcome;
    if let Shape::PerOp(n, each) = shape {
        let mut replies = Vec::with_capacity(n as usize);
        for op in first..first + n as usize {
            match locate(op) {
                (Some(Outcome::Applied(returned)), index) => {
                    replies.push(each.reply(returned_by(returned, index)));
                }
                (Some(Outcome::Rejected(r)), _) => return Reply::err(r.message.clone()),
                (Some(Outcome::Expired) | None, _) => return not_applied_in_time(),
            }
        }
        return Reply::Array(replies);
    }
    let (existed, mut count) = match shape {
        Shape::Existed(_) => ("1", 0),
        Shape::Added(_) => ("0", 0),
        _ => {
            let (outcome, index) = locate(first);
            return outcome_reply(outcome, index, shape);
        }
    };
    for op in first..first + shape.ops() {
        match locate(op) {
            (Some(Outcome::Applied(returned)), index) => {
                count += i64::from(returned_by(returned, index) == Some(existed));
            }
            (Some(Outcome::Rejected(r)), _) => return Reply::err(r.message.clone()),
            (Some(Outcome::Expired) | None, _) => return not_applied_in_time(),
        }
    }
    Reply::Int(count)
}

/// A random number from the standard library's per-process random hash keys.
pub(super) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Redis's error for writes that must be atomic but span partitions.
fn crossslot() -> Reply {
    Reply::Error(
        "CROSSSLOT Keys in request don't hash to the same slot: these writes are one atomic log \
         entry, so they must be in one partition. The fields of one hash (and the key of the same \
         name) always are; write other keys separately. Nothing was written."
            .into(),
    )
}

/// JSON `null`, for a put without data.
#[allow(non_snake_case)]
fn NULL_JSON() -> &'static RawValue {
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// A record a transaction has written but not yet applied, as its reads see it.
fn pending_record(pk: &str, sk: &str, data: String) -> Record {
    Record {
        pk: pk.to_string(),
        sk: sk.to_string(),
        data_json: data,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: None,
        own_deadline: false,
    }
}

/// The data a written value becomes: a JSON string holding exactly the bytes the client sent,
/// so a read returns them unchanged (`"quoted"`, `{"a": 1}` and `8080` included). JSON documents
/// are written with `JSON.SET`. Bytes that are not UTF-8 (a pickle, a protobuf, gzip) cannot be
/// a JSON string: they are stored as `{"$base64":"<their standard base64>"}`, which reads
/// return as the bytes again (and HTTP readers see as that object).
fn data_of(value: &Bytes) -> Box<RawValue> {
    let Ok(text) = std::str::from_utf8(value) else {
        return crate::model::binary_data(value);
    };
    // Serialized straight into a raw value: `RawValue::from_string` would parse the quoted
    // text again to check it is JSON, which a serialized string always is.
    serde_json::value::to_raw_value(text).expect("strings serialize")
}

impl<'a> Context<'a> {
    /// Marks a write of this connection on its way, for NOLOOP tracking (see
    /// [`Hub::writing`]); `None` for a connection that does not track.
    fn in_flight(&self) -> Option<super::push::WriteInFlight<'a>> {
        let hub: &'a Hub = self.hub;
        self.session
            .tracking
            .is_some()
            .then(|| hub.writing(self.session.id))
    }
}

impl Context<'_> {
    /// What a read of `pks` waits for: the writes answered through this node's Redis port in
    /// their partitions.
    fn min_offsets<'a>(&self, pks: impl IntoIterator<Item = &'a str>) -> Vec<Position> {
        let applied = |p| self.service.applied_here(p);
        let tracking = self.session.tracking.is_some();
        if self.session.watch_floors.is_empty() && !tracking {
            return self.written.min_offsets(pks, applied);
        }
        let pks: Vec<&str> = pks.into_iter().collect();
        let mut waits = self.written.min_offsets(pks.iter().copied(), applied);
        let partitions = self.written.partitions();
        // While watching: also what the watched versions reflect, in the keys' partitions.
        for &floor in &self.session.watch_floors {
            if pks
                .iter()
                .any(|pk| partition_of(pk, partitions) == floor.partition)
                && !applied(floor)
            {
                waits.push(floor);
            }
        }
        // While tracking: what the hub has handled of the keys' partitions. A read answered
        // by a replica behind it (another owner that lags, a node catching up) gave the client
        // a value the hub had already sent the invalidation of, and tracked it as if it were
        // newer: the client kept it until the key changed again (chaos runs: counters stale
        // for good once writes stopped).
        if tracking {
            for pk in &pks {
                let partition = partition_of(pk, partitions);
                let Some(offset) = self.hub.handled(partition).checked_sub(1) else {
                    continue;
                };
                let position = Position { partition, offset };
                if !applied(position) && !waits.contains(&position) {
                    waits.push(position);
                }
            }
        }
        waits
    }

    /// What a read of the whole keyspace waits for: every write answered through this node's
    /// Redis port and not applied yet.
    fn all_written(&self) -> Vec<Position> {
        self.written.all(|p| self.service.applied_here(p))
    }

    /// The keys of the region (`DBSIZE`, `INFO keyspace`).
    async fn key_count(&self) -> Result<u64, Reply> {
        let counts = self
            .service
            .key_counts(&self.all_written())
            .await
            .map_err(service_error)?;
        Ok(counts.iter().sum())
    }

    /// How many fields `pk` has (`HLEN`; its string record counts as one): one key index read,
    /// unless `EXEC` is running writes to it or its owner is a release that cannot count.
    async fn field_count(&self, pk: String) -> Result<u64, Reply> {
        if self.session.collecting.is_none() {
            let counted = self
                .service
                .record_count(&pk, &self.min_offsets([pk.as_str()]))
                .await
                .map_err(service_error)?;
            if let Some(count) = counted {
                return Ok(count);
            }
        }
        Ok(self.scan_all(pk, String::new()).await?.len() as u64)
    }

    /// The wire value of one record, after this connection's own writes are applied.
    async fn read_one(&self, pk: &str, sk: &str) -> Result<Option<Bytes>, Reply> {
        Ok(self.read_json(pk, sk).await?.map(wire_value))
    }

    /// The data (JSON) of (pk, sk) after the writes of the transaction `EXEC` is running, if it
    /// wrote to it: `Ok(None)` for a delete. The transaction's reads see its earlier writes, as in
    /// Redis; values computed at apply (`INCR`, `APPEND`) are computed here from what this node
    /// reads now, and so is whether an NX/XX put is skipped — the reply of the command itself
    /// comes from the applied entry.
    async fn pending(&self, pk: &str, sk: &str) -> Option<Result<Option<String>, Reply>> {
        // Owned, so nothing borrowed from an iterator lives across the awaits below.
        type PendingOp = (
            OpKind,
            String,
            Option<bool>,
            Option<(JsonCmd, String)>,
            bool,
        );
        let groups = &self.session.skip_groups;
        // Groups are pushed in op order and never overlap: the last one starting at or before
        // `index` is the only one that may hold it.
        let group_of = |index: usize| {
            let after = groups.partition_point(|(ops, _)| ops.start <= index);
            after
                .checked_sub(1)
                .map(|i| &groups[i])
                .filter(|(ops, _)| ops.contains(&index))
        };
        let ops: Vec<PendingOp> = self
            .session
            .collecting
            .as_ref()?
            .iter()
            .enumerate()
            .filter(|(index, op)| {
                if op.pk != pk {
                    return false;
                }
                let kind = self.session.pending_kind(*index, op);
                kind.is_some()
                    && (op.sk == sk || kind == Some(OpKind::DeleteKey))
                    // Of a group expected not to write: as if absent.
                    && group_of(*index).is_none_or(|(_, writes)| *writes)
            })
            .map(|(index, op)| {
                let data = op.data.as_deref().unwrap_or(NULL_JSON());
                // A put its NX/XX condition may skip (`if_skips`): whether it needs a record.
                // One of a group expected to write writes whatever it finds.
                let needs_record = (op.if_skips && group_of(index).is_none())
                    .then(|| op.cond.as_deref() == Some("data != nil"));
                let json = op.json_cmd.zip(op.path.clone());
                let kind = self.session.pending_kind(index, op).unwrap_or(op.op);
                (
                    kind,
                    data.get().to_string(),
                    needs_record,
                    json,
                    op.fails_alone,
                )
            })
            .collect();
        if ops.is_empty() {
            return None;
        }
        // `None` until known: the stored value is read only if an op needs it.
        let mut state: Option<Option<String>> = None;
        for (kind, data, needs_record, json, fails_alone) in ops {
            if let Some(needs_record) = needs_record {
                let base = match state.take() {
                    Some(known) => known,
                    None => match self.stored_json(pk, sk).await {
                        Ok(stored) => stored.map(|b| String::from_utf8_lossy(&b).into_owned()),
                        Err(e) => return Some(Err(e)),
                    },
                };
                // Skipped, as apply will skip it: the value stays what it was.
                if base.is_some() != needs_record {
                    state = Some(base);
                    continue;
                }
                state = Some(base);
            }
            state = Some(match kind {
                OpKind::Put => Some(data),
                OpKind::Delete | OpKind::DeleteKey | OpKind::Check => None,
                kind => {
                    let base = match state {
                        Some(known) => known,
                        None => match self.stored_json(pk, sk).await {
                            Ok(stored) => stored.map(|b| String::from_utf8_lossy(&b).into_owned()),
                            Err(e) => return Some(Err(e)),
                        },
                    };
                    let base_bytes = base.as_deref().map(str::as_bytes);
                    if let Some((cmd, path)) = &json {
                        let cost = (base.as_ref().map_or(0, String::len) + data.len() + 64) as u64;
                        let budget = &self.session.pending_json_bytes;
                        let left = budget.load(std::sync::atomic::Ordering::Relaxed);
                        if cost > left {
                            return Some(Err(Reply::err(format!(
                                "this transaction's reads of the documents it edits would parse \
                                 more than {} MiB; read them after EXEC",
                                PENDING_JSON_BYTES >> 20
                            ))));
                        }
                        budget.store(left - cost, std::sync::atomic::Ordering::Relaxed);
                        // As apply will edit it.
                        match edit_json_alone(*cmd, base_bytes, path, &data) {
                            Ok(edited) => edited.data.unwrap_or(base),
                            // Fails alone at apply (log format v9): the value stays.
                            Err(e) if fails_alone && !e.too_costly() => base,
                            Err(e) => return Some(Err(Reply::err(e.to_string()))),
                        }
                    } else {
                        match compute_read_modify_write(kind, base_bytes, &data) {
                            Ok(data) => Some(data),
                            Err(_) if fails_alone => base,
                            Err(e) => return Some(Err(Reply::err(e))),
                        }
                    }
                }
            });
        }
        state.map(Ok)
    }

    /// The data JSON of one record as this node reads it (after this connection's writes).
    async fn stored_json(&self, pk: &str, sk: &str) -> Result<Option<Bytes>, Reply> {
        let min_offsets = self.min_offsets([pk]);
        self.service
            .get_data(pk, sk, &min_offsets)
            .await
            .map_err(service_error)
    }

    /// The data JSON of one record, as stored (`JSON.GET`).
    async fn read_json(&self, pk: &str, sk: &str) -> Result<Option<Bytes>, Reply> {
        // Outside `EXEC` there is nothing pending (checked here: this runs for every `GET`).
        if self.session.collecting.is_some()
            && let Some(pending) = self.pending(pk, sk).await
        {
            return Ok(pending?.map(Bytes::from));
        }
        self.stored_json(pk, sk).await
    }

    /// Reads `keys`, after this connection's own writes are applied.
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Record>, Reply> {
        let min_offsets = self.min_offsets(keys.iter().map(|k| k.pk.as_str()));
        let mut records = self
            .service
            .get(keys.clone(), &min_offsets)
            .await
            .map_err(service_error)?;
        if self.session.collecting.is_some() {
            for key in &keys {
                if let Some(pending) = self.pending(&key.pk, &key.sk).await {
                    records.retain(|r| r.pk != key.pk || r.sk != key.sk);
                    records.extend(pending?.map(|data| pending_record(&key.pk, &key.sk, data)));
                }
            }
        }
        Ok(records)
    }

    /// The values of `keys`, in the order asked (nil where there is no record): MGET and HMGET.
    async fn read_values(&self, keys: Vec<Key>) -> Reply {
        match self.read(keys.clone()).await {
            Ok(records) => Reply::Array(
                keys.iter()
                    .map(|k| {
                        records
                            .iter()
                            .find(|r| r.pk == k.pk && r.sk == k.sk)
                            .map_or(Reply::Null, |r| Reply::Bulk(value_of(r)))
                    })
                    .collect(),
            ),
            Err(e) => e,
        }
    }

    /// Whether each of `keys` exists, in order.
    async fn exist(&self, keys: &[Key]) -> Result<Vec<bool>, Reply> {
        // One key (HEXISTS, TYPE): its data alone, no record built (this ran before
        // every HSET once, and was 14 % of a profile of them).
        if let [key] = keys {
            return Ok(vec![self.read_json(&key.pk, &key.sk).await?.is_some()]);
        }
        let found: std::collections::HashSet<(String, String)> = self
            .read(keys.to_vec())
            .await?
            .into_iter()
            .map(|r| (r.pk, r.sk))
            .collect();
        Ok(keys
            .iter()
            .map(|k| found.contains(&(k.pk.clone(), k.sk.clone())))
            .collect())
    }

    /// Hands each page of the stored records of `pk` whose sk starts with `prefix` to `each`,
    /// in sk order, until it answers false; only one page is held at a time (the transaction's
    /// writes are not seen).
    async fn scan_pages(
        &self,
        pk: &str,
        prefix: &str,
        mut each: impl FnMut(Vec<Record>) -> bool,
    ) -> Result<(), Reply> {
        let mut cursor = None;
        loop {
            let page = self
                .service
                .list(ListRequest {
                    pk: pk.to_string(),
                    sk_prefix: prefix.to_string(),
                    cursor,
                    min_offsets: self.min_offsets([pk]),
                    ..ListRequest::default()
                })
                .await
                .map_err(service_error)?;
            let go_on = each(page.records);
            match page.next_cursor {
                Some(next) if go_on => cursor = Some(next),
                _ => return Ok(()),
            }
        }
    }

    /// Every record of `pk` whose sk starts with `prefix`, with a transaction's earlier writes.
    async fn scan_all(&self, pk: String, prefix: String) -> Result<Vec<Record>, Reply> {
        self.scan_within(pk, prefix, usize::MAX).await
    }

    /// [`Context::scan_all`] for an answer: refused once the records read pass `most` bytes
    /// (a hash of 200,000 fields of 512 KiB was read whole for one `HGETALL`).
    async fn scan_within(
        &self,
        pk: String,
        prefix: String,
        most: usize,
    ) -> Result<Vec<Record>, Reply> {
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut past = false;
        self.scan_pages(&pk, &prefix, |page| {
            bytes += page
                .iter()
                .map(|r| r.sk.len() + r.data_json.len())
                .sum::<usize>();
            past = bytes > most;
            if !past {
                records.extend(page);
            }
            !past
        })
        .await?;
        if past {
            return Err(Reply::err(format!(
                "the key holds more than {} MiB, more than one answer may: read it in parts \
                 (HSCAN, SSCAN)",
                most >> 20
            )));
        }
        // Inside EXEC: the transaction's earlier writes to this hash, in sk order.
        if let Some(ops) = &self.session.collecting {
            // A deleted key loses every record read; what was written after comes back below.
            if ops.iter().enumerate().any(|(index, op)| {
                op.pk == pk && self.session.pending_kind(index, op) == Some(OpKind::DeleteKey)
            }) {
                records.clear();
            }
            let mut written: Vec<&str> = ops
                .iter()
                .enumerate()
                .filter(|(index, op)| {
                    op.pk == pk
                        && op.sk.starts_with(&prefix)
                        && self.session.pending_kind(*index, op).is_some()
                })
                .map(|(_, op)| op.sk.as_str())
                .collect();
            written.sort_unstable();
            written.dedup();
            for sk in written {
                // None: nothing the transaction wrote there takes effect (a group of writes
                // expected to be skipped), and the stored record stays.
                let Some(pending) = self.pending(&pk, sk).await else {
                    continue;
                };
                records.retain(|r| r.sk != sk);
                if let Some(data) = pending? {
                    records.push(pending_record(&pk, sk, data));
                }
            }
            records.sort_by(|a, b| a.sk.cmp(&b.sk));
        }
        Ok(records)
    }

    /// Whether each Redis key (a pk: its string record or any hash field) exists, in order.
    async fn keys_exist(&self, pks: &[String]) -> Result<Vec<bool>, Reply> {
        let mut found = Vec::with_capacity(pks.len());
        for pk in pks {
            let in_transaction = self
                .session
                .collecting
                .as_ref()
                .is_some_and(|ops| ops.iter().any(|op| op.pk == *pk));
            let exists = if in_transaction {
                !self.scan_all(pk.clone(), String::new()).await?.is_empty()
            } else if self.stored_json(pk, "").await?.is_some() {
                // A string: one point read, no page built.
                true
            } else {
                let page = self
                    .service
                    .list(ListRequest {
                        pk: pk.clone(),
                        limit: 1,
                        min_offsets: self.min_offsets([pk.as_str()]),
                        ..ListRequest::default()
                    })
                    .await
                    .map_err(service_error)?;
                !page.records.is_empty()
            };
            found.push(exists);
        }
        Ok(found)
    }

    /// Deletes records (`HDEL` fields, `JSON.DEL` documents) through the log; replies with how
    /// many of them existed (Redis's count, decided at apply).
    async fn delete_records(&mut self, keys: Vec<Key>) -> Reply {
        let shape = Shape::Existed(keys.len() as u32);
        let ops = keys
            .into_iter()
            .map(|k| WriteOp {
                op: OpKind::Delete,
                pk: k.pk,
                sk: k.sk,
                return_existed: true,
                ..WriteOp::default()
            })
            .collect();
        self.write_counting(ops, shape).await
    }

    /// Deletes the Redis keys `pks` (every record of each) through the log; replies with how
    /// many of them existed (Redis's count, decided at apply: `DEL k k` is 1).
    async fn delete_keys(&mut self, pks: Vec<String>) -> Reply {
        let shape = Shape::Existed(pks.len() as u32);
        let ops = pks
            .into_iter()
            .map(|pk| WriteOp {
                op: OpKind::DeleteKey,
                pk,
                return_existed: true,
                ..WriteOp::default()
            })
            .collect();
        self.write_counting(ops, shape).await
    }

    /// Writes `ops` through the log, each record standing alone; replies once durable. `wait`
    /// also waits for the outcome.
    async fn write(
        &mut self,
        ops: Vec<WriteOp>,
        wait: bool,
    ) -> Result<Vec<crate::service::EntryResult>, Reply> {
        self.send(ops, WriteMode::PerRecord, wait).await
    }

    /// Writes `ops` as one atomic log entry (`MSET`, `MSETNX`).
    async fn write_atomic(
        &mut self,
        ops: Vec<WriteOp>,
        wait: bool,
    ) -> Result<Vec<crate::service::EntryResult>, Reply> {
        self.send(ops, WriteMode::Atomic, wait).await
    }

    /// Writes `ops` through the log in `mode`, and remembers where they went. Inside `EXEC` or a
    /// run of pipelined writes they are collected instead, and go to the log together
    /// afterwards. Atomic writes that span partitions are Redis's CROSSSLOT error.
    async fn send(
        &mut self,
        ops: Vec<WriteOp>,
        mode: WriteMode,
        wait: bool,
    ) -> Result<Vec<crate::service::EntryResult>, Reply> {
        if let Some(collected) = self.session.collecting.as_mut() {
            collected.extend(ops);
            return Ok(Vec::new());
        }
        let slots = self.written.slots_of(&ops);
        let _in_flight = self.in_flight();
        let results = self
            .service
            .mutate(WriteRequest { ops, mode, wait })
            .await
            .map_err(|e| match e.code {
                "batch_spans_partitions" => crossslot(),
                _ => service_error(e),
            })?;
        self.note_written(&results, &slots);
        Ok(results)
    }

    /// Writes `op`, whose reply is made from what it returns at apply (`shape`): the new value
    /// of `INCR`, the old one of `GETSET`. Inside `EXEC` the reply is filled in once the
    /// transaction has applied.
    /// Inside `EXEC`: adds `ops`, the puts of one command under one `if` each (`MSETNX`,
    /// `HSETEX FNX|FXX`), as a group that writes together or not at all (log format v8,
    /// `skips_with`), decided at apply while the rest of the transaction goes on; its reply, 1
    /// or 0, comes from the applied entry. Later reads of the transaction see the group as this
    /// node expects it to go from what it reads now, as they see `INCR`'s value.
    async fn write_skip_group(&mut self, name: &str, mut ops: Vec<WriteOp>) -> Reply {
        if self.service.entry_write_version() < 8 {
            return Reply::err(format!(
                "{name} inside MULTI needs log format v8 (ENTRY_WRITE_VERSION=8, once every node \
                 runs a release that applies it): below it its condition would decide the whole \
                 transaction; run it on its own"
            ));
        }
        let keys: Vec<Key> = ops
            .iter()
            .map(|op| Key {
                pk: op.pk.clone(),
                sk: op.sk.clone(),
            })
            .collect();
        let found = match self.read(keys).await {
            Ok(found) => found,
            Err(e) => return e,
        };
        let writes = ops.iter().all(|op| {
            let exists = found.iter().any(|r| r.pk == op.pk && r.sk == op.sk);
            match op.cond.as_deref() {
                Some("data == nil") => !exists,
                Some("data != nil") => exists,
                _ => true,
            }
        });
        let Some(collected) = self.session.collecting.as_mut() else {
            return Reply::err("a group of writes outside a transaction");
        };
        let Some(members) = u32::try_from(ops.len()).ok().filter(|&n| n > 0) else {
            return Reply::err("a group of writes needs a write");
        };
        for op in &mut ops {
            op.if_skips = true;
        }
        ops[0].skips_with = members - 1;
        let start = collected.len();
        self.session
            .skip_groups
            .push((start..start + ops.len(), writes));
        self.session.deferred = Some((start, Shape::Ran { flag: true }));
        collected.extend(ops);
        Reply::Null
    }

    async fn write_returning(&mut self, mut op: WriteOp, shape: Shape) -> Reply {
        if let Some(collected) = &self.session.collecting {
            self.session.deferred = Some((collected.len(), shape));
            // Among other commands' writes (a transaction, a pipeline's group), a value this
            // command cannot use fails it alone and the others' writes go on, as in Redis
            // (log format v9; below it the entry is rejected whole).
            op.fails_alone = self.service.entry_write_version() >= 9
                && (op.op.is_read_modify_write() || op.op == OpKind::Json);
        }
        let results = match self.send(vec![op], WriteMode::PerRecord, true).await {
            Ok(results) => results,
            Err(e) => return e,
        };
        let Some(result) = results.first() else {
            // Collected by EXEC: the placeholder is replaced after apply.
            return Reply::Null;
        };
        outcome_reply(result.outcome.as_ref().and_then(Option::as_ref), 0, shape)
    }

    /// Writes `ops` as one atomic entry and answers one reply per op, made as `each` says from
    /// what the op returned at apply. Inside `EXEC` the ops join the transaction's entry and
    /// the replies are filled in once it applied.
    async fn write_per_op(&mut self, ops: Vec<WriteOp>, each: Each) -> Reply {
        let shape = Shape::PerOp(ops.len() as u32, each);
        if let Some(collected) = self.session.collecting.as_mut() {
            self.session.deferred = Some((collected.len(), shape));
            collected.extend(ops);
            return Reply::Null;
        }
        let results = match self.write_atomic(ops, true).await {
            Ok(results) => results,
            Err(e) => return e,
        };
        let outcome = results
            .first()
            .and_then(|r| r.outcome.as_ref())
            .and_then(Option::as_ref);
        deferred_reply(shape, 0, |op| (outcome, op))
    }

    /// Writes `ops` (each record standing alone, all with `return_existed`) and answers the
    /// count `shape` makes of what they found, decided at apply in log order: two clients
    /// deleting one key get 1 and 0, as from Redis. Inside `EXEC` or a pipeline's group the ops
    /// are collected and the count is filled in after apply.
    async fn write_counting(&mut self, ops: Vec<WriteOp>, shape: Shape) -> Reply {
        debug_assert_eq!(ops.len(), shape.ops());
        if let Some(collected) = self.session.collecting.as_mut() {
            self.session.deferred = Some((collected.len(), shape));
            collected.extend(ops);
            return Reply::Null;
        }
        match self.send_waited(ops).await {
            Ok((results, located)) => located_reply(&results, &located, 0, shape),
            Err(e) => e,
        }
    }

    /// Writes `ops` as a pipeline's writes (each op's outcome its own), waits for their
    /// outcomes, and remembers where they went: the results, and each op's entry and index.
    async fn send_waited(
        &mut self,
        ops: Vec<WriteOp>,
    ) -> Result<(Vec<crate::service::EntryResult>, Vec<(usize, u32)>), Reply> {
        let slots = self.written.slots_of(&ops);
        let _in_flight = self.in_flight();
        let (results, located) = self
            .service
            .mutate_located(WriteRequest {
                ops,
                mode: WriteMode::Pipeline,
                wait: true,
            })
            .await
            .map_err(service_error)?;
        self.note_written(&results, &slots);
        Ok((results, located))
    }

    /// Writes `ops` (each with `return_existed`) outside any pipeline group, waits for their
    /// outcomes, and answers what each returned, in order (`None`: rejected, or not applied
    /// within the write wait).
    async fn write_each(&mut self, ops: Vec<WriteOp>) -> Result<Vec<Option<String>>, Reply> {
        let (results, located) = self.send_waited(ops).await?;
        Ok(located
            .iter()
            .map(
                |&(entry, index)| match results[entry].outcome.as_ref().and_then(Option::as_ref) {
                    Some(crate::service::Outcome::Applied(returned)) => {
                        returned_by(returned, index as usize).map(str::to_string)
                    }
                    _ => None,
                },
            )
            .collect())
    }

    /// Remembers where writes went, so that every later read on this node waits for them.
    fn note_written(&mut self, results: &[crate::service::EntryResult], slots: &WriteSlots) {
        self.written.record(results, slots);
        for r in results {
            let written = &mut self.session.last_written;
            match written
                .iter_mut()
                .find(|p| p.partition == r.position.partition)
            {
                Some(last) => last.offset = last.offset.max(r.position.offset),
                None => written.push(r.position),
            }
            if self.session.tracking.is_some() {
                self.hub
                    .wrote(self.session.id, (r.position.partition, r.position.offset));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_write_follows_the_write_flag_of_the_command_table() {
        for name in [
            "set", "hset", "del", "json.set", "incr", "spop", "getex", "hgetdel",
        ] {
            assert!(is_write(name), "{name}");
        }
        for name in ["get", "hget", "mget", "ping", "scan", "client", "zzz", ""] {
            assert!(!is_write(name), "{name}");
        }
    }

    #[test]
    fn a_run_of_one_command_is_noted_once_per_interval_others_always() {
        let mut session = Session::new(1, Access::Write);
        let t0 = std::time::Instant::now();
        let get = Bytes::from_static(b"GET");
        assert!(session.must_note(&get, t0), "the first command");
        assert!(!session.must_note(&Bytes::from_static(b"get"), t0));
        assert!(!session.must_note(&get, t0 + NOTE_EVERY / 2));
        assert!(
            session.must_note(&get, t0 + NOTE_EVERY),
            "the interval passed"
        );
        assert!(session.must_note(&Bytes::from_static(b"SET"), t0 + NOTE_EVERY));
        let client = Bytes::from_static(b"CLIENT");
        assert!(session.must_note(&client, t0 + NOTE_EVERY));
        assert!(
            session.must_note(&client, t0 + NOTE_EVERY),
            "CLIENT SETNAME changes the name CLIENT LIST shows"
        );
        let long = vec![b'x'; 100];
        assert!(session.must_note(&long, t0 + NOTE_EVERY));
        assert!(
            session.must_note(&long, t0 + NOTE_EVERY),
            "a name too long to keep is noted every time"
        );
    }
}
