//! Connection and server commands stock clients send: HELLO, AUTH, CLIENT, COMMAND, INFO, CONFIG,
//! SELECT, PING, ECHO, TIME, QUIT, RESET.

use super::{Context, Session, wrong_arity};
use crate::api::resp::clients::KillFilter;
use crate::api::resp::reply::Reply;
use crate::service::Access;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// The Redis version FireScroll answers with; clients gate features on it (redis-py's
/// client-side cache needs 7.4; FireScroll has 7.4's hash field expiry too).
const REDIS_VERSION: &str = "7.4.0";

/// Runs a connection or server command; `None` if `name` is not one.
pub fn execute(ctx: &mut Context<'_>, name: &str, args: &[Bytes]) -> Option<Reply> {
    Some(match name {
        "ping" => match args {
            [] => Reply::Simple("PONG"),
            [msg] => Reply::Bulk(msg.clone()),
            _ => wrong_arity("ping"),
        },
        "time" => match args {
            [] => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Reply::Array(vec![
                    Reply::bulk(now.as_secs().to_string()),
                    Reply::bulk(now.subsec_micros().to_string()),
                ])
            }
            _ => wrong_arity("time"),
        },
        "echo" => match args {
            [msg] => Reply::Bulk(msg.clone()),
            _ => wrong_arity("echo"),
        },
        "quit" => {
            ctx.session.closing = true;
            Reply::ok()
        }
        "reset" => {
            // RESET also forgets the connection's authentication, tracking and subscriptions,
            // as in Redis.
            ctx.hub.unregister(ctx.session.id);
            *ctx.session = Session::new(ctx.session.id, ctx.service.access(None));
            Reply::Simple("RESET")
        }
        "select" => match args {
            [db] => match std::str::from_utf8(db)
                .ok()
                .and_then(crate::service::parse_redis_integer)
            {
                Some(0) => Reply::ok(),
                Some(_) => Reply::err("DB index is out of range (FireScroll has one database, 0)"),
                None => Reply::err("value is not an integer or out of range"),
            },
            _ => wrong_arity("select"),
        },
        "auth" => auth(ctx, args),
        "hello" => hello(ctx, args),
        "client" => client(ctx, args),
        "command" => super::command_table::command(args),
        "module" => module(args),
        "config" => config(ctx, args),
        "role" => match args {
            // A master with no replicas: see `INFO replication`.
            [] => Reply::Array(vec![
                Reply::bulk("master"),
                Reply::Int(0),
                Reply::Array(Vec::new()),
            ]),
            _ => wrong_arity("role"),
        },
        // Redis's answer on a server without cluster mode, which clients that probe for a
        // cluster (`CLUSTER SLOTS`, `CLUSTER INFO`) know to mean "standalone": FireScroll has no
        // slots to route by, since every node of a region serves every key.
        "cluster" | "readonly" | "readwrite" => {
            Reply::err("This instance has cluster support disabled")
        }
        _ => return None,
    })
}

/// `AUTH [user] token`: the token decides; the user name is ignored.
fn auth(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let token = match args {
        [token] | [_, token] => token,
        _ => return wrong_arity("auth"),
    };
    if !ctx.service.auth_required() {
        return Reply::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    }
    authenticate(ctx, token).map_or_else(|e| e, |()| Reply::ok())
}

fn authenticate(ctx: &mut Context<'_>, token: &Bytes) -> Result<(), Reply> {
    match ctx.service.access(std::str::from_utf8(token).ok()) {
        Access::None => Err(Reply::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        )),
        granted => {
            ctx.session.access = granted;
            Ok(())
        }
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`
fn hello(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let mut proto = ctx.session.proto;
    let mut rest = args;
    if let [version, tail @ ..] = args {
        match version.as_ref() {
            b"2" => proto = 2,
            b"3" => proto = 3,
            _ => return Reply::Error("NOPROTO unsupported protocol version".into()),
        }
        rest = tail;
    }
    let mut name = None;
    while let [option, tail @ ..] = rest {
        match (option.to_ascii_uppercase().as_slice(), tail) {
            (b"AUTH", [_, token, more @ ..]) => {
                // On an open node any credentials are accepted, as Redis's default user does.
                if ctx.service.auth_required()
                    && let Err(denied) = authenticate(ctx, token)
                {
                    return denied;
                }
                rest = more;
            }
            (b"SETNAME", [new_name, more @ ..]) => {
                if let Err(refused) = client_name(new_name) {
                    return refused;
                }
                name = Some(Bytes::copy_from_slice(new_name));
                rest = more;
            }
            _ => {
                return Reply::err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ));
            }
        }
    }
    if ctx.session.access == Access::None {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    let session = &mut *ctx.session;
    session.proto = proto;
    if name.is_some() {
        session.name = name;
    }
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Int(i64::from(session.proto))),
        (Reply::bulk("id"), Reply::Int(session.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![rejson()])),
    ])
}

/// The RedisJSON version whose commands FireScroll answers (2.6: `JSON.MERGE`, `JSON.MSET`),
/// as `MODULE LIST` and `INFO modules` give it.
const REJSON_VERSION: i64 = 20600;

/// RedisJSON as `MODULE LIST` (and `HELLO`) describe a loaded module: clients and tools that
/// look for `ReJSON` there before using `JSON.*` (older redis-om, RedisInsight) find it, as
/// FireScroll answers its commands itself.
fn rejson() -> Reply {
    Reply::Map(vec![
        (Reply::bulk("name"), Reply::bulk("ReJSON")),
        (Reply::bulk("ver"), Reply::Int(REJSON_VERSION)),
        (Reply::bulk("path"), Reply::bulk("")),
        (Reply::bulk("args"), Reply::Array(vec![])),
    ])
}

/// `MODULE LIST`; loading and unloading are refused, saying why.
fn module(args: &[Bytes]) -> Reply {
    match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
        Some(b"LIST") if args.len() == 1 => Reply::Array(vec![rejson()]),
        Some(b"LOAD" | b"LOADEX" | b"UNLOAD") => Reply::err(
            "FireScroll loads no modules: it answers RedisJSON's commands itself (MODULE LIST \
             shows ReJSON); code that runs on writes is a WebAssembly plugin",
        ),
        Some(b"HELP") => super::help(&[
            "MODULE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "LIST",
            "    Return a list of loaded modules (FireScroll: ReJSON, built in).",
            "HELP",
            "    Print this help.",
        ]),
        Some(_) => Reply::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try MODULE HELP.",
            String::from_utf8_lossy(&args[0])
        )),
        None => wrong_arity("module"),
    }
}

/// Refuses a connection name Redis refuses: one with a space, a newline or a byte outside
/// printable ASCII, which would break (or forge lines of) `CLIENT LIST`'s one line per client.
fn client_name(name: &[u8]) -> Result<(), Reply> {
    client_attribute(name, "Client names")
}

/// The longest connection name, library name or version kept: each connection keeps its own
/// until it closes, and up to `RESP_MAX_CLIENTS` of them are open (Redis sets no bound; a
/// client's name is a few dozen bytes).
const CLIENT_ATTRIBUTE_BYTES: usize = 1024;

/// Refuses, as Redis does, a `CLIENT LIST` field (`what`) with a byte outside printable ASCII,
/// and one longer than [`CLIENT_ATTRIBUTE_BYTES`].
fn client_attribute(value: &[u8], what: &str) -> Result<(), Reply> {
    if value.len() > CLIENT_ATTRIBUTE_BYTES {
        return Err(Reply::err(format!(
            "{what} may be at most {CLIENT_ATTRIBUTE_BYTES} bytes long here"
        )));
    }
    if value.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Reply::err(format!(
            "{what} cannot contain spaces, newlines or special characters."
        )))
    }
}

fn client(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [sub, rest @ ..] = args else {
        return wrong_arity("client");
    };
    match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"TRACKING", options) => return super::pubsub::tracking(ctx, options),
        (b"CACHING", options) => return super::pubsub::caching(ctx, options),
        (b"TRACKINGINFO", []) => return super::pubsub::tracking_info(ctx),
        (b"GETREDIR", []) => return super::pubsub::get_redirect(ctx),
        _ => {}
    }
    let session = &mut *ctx.session;
    match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"LIST", options) => {
            let name = session
                .name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            let me = (session.id, name.as_str(), session.proto);
            let subscribed = ctx.hub.subscription_counts();
            let list = |only: Option<&[u64]>, pubsub: Option<bool>| {
                Reply::Verbatim(ctx.clients.list(only, me, &subscribed, pubsub).into())
            };
            match options {
                [] => list(None, None),
                // Subscribers, or the other connections (no replicas here).
                [ty, kind] if ty.eq_ignore_ascii_case(b"TYPE") => {
                    if kind.eq_ignore_ascii_case(b"normal") {
                        list(None, Some(false))
                    } else if kind.eq_ignore_ascii_case(b"pubsub") {
                        list(None, Some(true))
                    } else if [&b"master"[..], b"replica", b"slave"]
                        .iter()
                        .any(|k| kind.eq_ignore_ascii_case(k))
                    {
                        Reply::Verbatim(Bytes::new())
                    } else {
                        Reply::err(format!(
                            "Unknown client type '{}'",
                            String::from_utf8_lossy(kind)
                        ))
                    }
                }
                [id_word, ids @ ..] if id_word.eq_ignore_ascii_case(b"ID") && !ids.is_empty() => {
                    let parsed: Option<Vec<u64>> = ids
                        .iter()
                        .map(|id| std::str::from_utf8(id).ok()?.parse().ok())
                        .collect();
                    match parsed {
                        Some(ids) => list(Some(&ids), None),
                        None => Reply::err("Invalid client ID"),
                    }
                }
                _ => Reply::err("syntax error"),
            }
        }
        (b"HELP", []) => super::help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CACHING (YES|NO)",
            "GETNAME",
            "GETREDIR",
            "ID",
            "INFO",
            "KILL <ip:port> | KILL <option> <value> [<option> <value> [...]]",
            "    Options: ID, ADDR, LADDR, SKIPME (yes|no), TYPE normal, USER default.",
            "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]]",
            "NO-EVICT (ON|OFF)",
            "NO-TOUCH (ON|OFF)",
            "SETINFO <LIB-NAME|LIB-VER> <value>",
            "SETNAME <name>",
            "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]] [OPTIN] \
                 [OPTOUT] [NOLOOP]",
            "TRACKINGINFO",
            "HELP",
        ]),
        // The old form: `CLIENT KILL addr:port`.
        (b"KILL", [addr]) => {
            let filter = KillFilter {
                addr: Some(String::from_utf8_lossy(addr).into_owned()),
                ..KillFilter::default()
            };
            match ctx.clients.kill(&filter) {
                0 => Reply::err("No such client"),
                _ => Reply::ok(),
            }
        }
        (b"KILL", filters) if !filters.is_empty() && filters.len() % 2 == 0 => {
            let mut filter = KillFilter {
                skip: Some(session.id),
                ..KillFilter::default()
            };
            for pair in filters.chunks(2) {
                let value = String::from_utf8_lossy(&pair[1]).into_owned();
                match pair[0].to_ascii_uppercase().as_slice() {
                    b"ID" => match value.parse() {
                        Ok(id) => filter.id = Some(id),
                        Err(_) => return Reply::err("client-id should be greater than 0"),
                    },
                    b"ADDR" => filter.addr = Some(value),
                    b"LADDR" => filter.laddr = Some(value),
                    b"SKIPME" => match value.to_ascii_lowercase().as_str() {
                        "yes" => filter.skip = Some(session.id),
                        "no" => filter.skip = None,
                        _ => return Reply::err("syntax error"),
                    },
                    b"TYPE" if value.eq_ignore_ascii_case("normal") => {}
                    b"USER" if value == "default" => {}
                    _ => {
                        return Reply::err(
                            "CLIENT KILL takes ID, ADDR, LADDR, SKIPME (and TYPE normal, USER default)",
                        );
                    }
                }
            }
            Reply::Int(ctx.clients.kill(&filter) as i64)
        }
        (b"SETNAME", [name]) => {
            if let Err(refused) = client_name(name) {
                return refused;
            }
            // A copy, not a slice of the read buffer (which the name would keep whole).
            session.name = Some(Bytes::copy_from_slice(name));
            Reply::ok()
        }
        (b"GETNAME", []) => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        (b"ID", []) => Reply::Int(session.id as i64),
        (b"SETINFO", [attribute, value]) => {
            let lib_version = match attribute.to_ascii_lowercase().as_slice() {
                b"lib-name" => false,
                b"lib-ver" => true,
                _ => {
                    return Reply::err(format!(
                        "Unrecognized option '{}'",
                        String::from_utf8_lossy(attribute)
                    ));
                }
            };
            let what = String::from_utf8_lossy(attribute);
            if let Err(refused) = client_attribute(value, &what) {
                return refused;
            }
            // Printable ASCII, so UTF-8.
            ctx.client
                .set_lib(lib_version, std::str::from_utf8(value).unwrap_or_default());
            Reply::ok()
        }
        // As in Redis, an administrator's (`permitted` asks for an admin token): the connection
        // is then never closed past `CLIENT_MEMORY_MAX_BYTES`, the others closed for it.
        (b"NO-EVICT", [mode])
            if mode.eq_ignore_ascii_case(b"on") || mode.eq_ignore_ascii_case(b"off") =>
        {
            ctx.client.set_no_evict(mode.eq_ignore_ascii_case(b"on"));
            Reply::ok()
        }
        // No access time is kept: nothing to leave untouched.
        (b"NO-TOUCH", [mode])
            if mode.eq_ignore_ascii_case(b"on") || mode.eq_ignore_ascii_case(b"off") =>
        {
            Reply::ok()
        }
        (b"NO-EVICT" | b"NO-TOUCH", [_]) => Reply::err("syntax error"),
        (b"INFO", []) => {
            let name = session
                .name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            let subscribed = ctx.hub.subscription_count(session.id);
            match ctx
                .clients
                .info(session.id, &name, session.proto, subscribed)
            {
                Some(line) => Reply::Verbatim(line.into()),
                None => Reply::err("this connection is not registered (it is closing)"),
            }
        }
        (
            b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO" | b"KILL" | b"NO-EVICT"
            | b"NO-TOUCH" | b"HELP",
            _,
        ) => Reply::err(format!(
            "wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        )),
        _ => Reply::err(format!(
            "unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// The sections `INFO args` asks for, lowercase, and whether that is all of them.
fn wanted_sections(args: &[Bytes]) -> (Vec<String>, bool) {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    (wanted, all)
}

/// `INFO commandstats`, as Redis writes it (`cmdstat_<name>:calls=..,usec=..,usec_per_call=..`),
/// for the commands the node measures (`other`: all the rest together). Unlike Redis, `usec` is
/// each command's time until answered (a write's wait for the log included), not CPU time, and
/// counts from the node's start (`CONFIG RESETSTAT` does not reset it). Not in the default
/// `INFO`, as in Redis: asked for by name, or with `all` / `everything`.
fn commandstats(ctx: &Context<'_>) -> String {
    let mut text = String::new();
    for (name, calls, micros) in ctx.service.metrics().resp_command_totals() {
        if calls == 0 {
            continue;
        }
        text.push_str(&format!(
            "cmdstat_{name}:calls={calls},usec={},usec_per_call={:.2},rejected_calls=0,failed_calls=0\r\n",
            micros.round() as u64,
            micros / calls as f64
        ));
    }
    text
}

/// Whether `INFO args` shows the keyspace section (which needs the key count).
pub fn wants_keyspace(args: &[Bytes]) -> bool {
    let (wanted, all) = wanted_sections(args);
    all || wanted.iter().any(|w| w == "keyspace")
}

/// `INFO [section ...]`: the sections asked for (all of them without one), in Redis's format.
/// `keys` is the region's key count, when the keyspace section is asked for.
pub fn info(ctx: &Context<'_>, args: &[Bytes], keys: Option<u64>) -> Reply {
    let (wanted, all) = wanted_sections(args);
    let stats = ctx.stats;
    let memory = resident_bytes();
    let (clients_memory, clients_bound) = ctx.client.clients_memory();
    let uptime = stats.started.elapsed().as_secs();
    let keyspace = match keys {
        Some(0) | None => String::new(),
        Some(n) => format!("db0:keys={n},expires=0,avg_ttl=0\r\n"),
    };
    let everything = wanted
        .iter()
        .any(|w| matches!(w.as_str(), "all" | "everything" | "commandstats"));
    // `INFO persistence`: FireScroll's persistence is the log, every acknowledged write in it
    // durably (so `aof_enabled:1`); `loading` while partitions open from a snapshot (their reads
    // answer `LOADING`), and a write refused for every client shows as a failed write.
    let write_status = match ctx.service.write_refusal() {
        Some(_) => "err",
        None => "ok",
    };
    let (cpu_user, cpu_sys) = cpu_seconds();
    let sections: [(&str, String); 11] = [
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nfirescroll_version:{}\r\n\
                 os:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
                 uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                stats.run_id,
                stats.port,
                uptime / 86_400,
            ),
        ),
        (
            "clients",
            format!(
                "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n",
                stats.clients.load(Ordering::Relaxed),
                stats.max_clients
            ),
        ),
        (
            "memory",
            format!(
                "used_memory:{memory}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{memory}\r\n\
                 maxmemory:0\r\nmaxmemory_policy:noeviction\r\n\
                 mem_clients_normal:{clients_memory}\r\nmaxmemory_clients:{clients_bound}\r\n",
                memory as f64 / (1024.0 * 1024.0)
            ),
        ),
        (
            "persistence",
            format!(
                "loading:{}\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\n\
                 rdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\n\
                 aof_rewrite_in_progress:0\r\naof_rewrite_scheduled:0\r\n\
                 aof_last_bgrewrite_status:ok\r\naof_last_write_status:{write_status}\r\n",
                u8::from(ctx.service.loading())
            ),
        ),
        ("stats", stats_section(ctx)),
        (
            "replication",
            // Every node takes writes (through the log) and serves every key: to its clients
            // each is a master. The other nodes of the region are peers, not replicas a client
            // could follow, so none are listed.
            format!(
                "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
                 master_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:0\r\n\
                 second_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
                stats.run_id,
                "0".repeat(40)
            ),
        ),
        (
            "cpu",
            format!(
                "used_cpu_sys:{cpu_sys:.6}\r\nused_cpu_user:{cpu_user:.6}\r\n\
                 used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n"
            ),
        ),
        (
            "modules",
            format!(
                "module:name=ReJSON,ver={REJSON_VERSION},api=1,filters=0,usedby=[],using=[],\
                 options=[]\r\n"
            ),
        ),
        ("cluster", "cluster_enabled:0\r\n".to_string()),
        (
            "firescroll",
            format!(
                "partitions:{}\r\nowned_partitions:{}\r\nready:{}\r\n",
                ctx.service.partition_count(),
                ctx.service.owned_partition_count(),
                u8::from(ctx.service.readiness().ready)
            ),
        ),
        ("keyspace", keyspace),
    ];
    let mut text = String::new();
    for (name, body) in sections {
        if all || wanted.iter().any(|w| w == name) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            match name {
                "cpu" => title.make_ascii_uppercase(),
                _ => title[..1].make_ascii_uppercase(),
            }
            text.push_str(&format!("# {title}\r\n{body}"));
        }
    }
    if everything {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str("# Commandstats\r\n");
        text.push_str(&commandstats(ctx));
    }
    Reply::Verbatim(text.into())
}

/// `INFO stats`: Redis's fields that this node counts, with this connection's counts of the
/// batch running now. `expired_keys` counts records (strings, and hash fields) the log's time
/// removed from partitions this node serves; `keyspace_hits`/`misses` the lookups of read
/// commands (a hash field found or not counts as a key does); the `instantaneous_` rates
/// average the last 1.6 s, as Redis's.
fn stats_section(ctx: &Context<'_>) -> String {
    let stats = ctx.stats;
    let now = stats.snapshot(&ctx.session.counted);
    let metrics = ctx.service.metrics();
    // Redis 7's count of clients closed past `maxmemory-clients`: this port's.
    let (expired, evicted_clients) = stats.since_reset(
        metrics.records_expired.get(),
        metrics.clients_evicted.with_label_values(&["redis"]).get(),
    );
    let (channels, patterns) = ctx.hub.subscribed_counts();
    let totals = now.totals;
    format!(
        "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
         instantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\n\
         total_net_output_bytes:{}\r\ninstantaneous_input_kbps:{:.2}\r\n\
         instantaneous_output_kbps:{:.2}\r\nrejected_connections:{}\r\n\
         expired_keys:{expired}\r\nevicted_keys:0\r\nevicted_clients:{evicted_clients}\r\n\
         keyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{channels}\r\n\
         pubsub_patterns:{patterns}\r\nlatest_fork_usec:0\r\n",
        stats.connections.load(Ordering::Relaxed),
        totals.commands,
        now.ops_per_sec.round() as u64,
        totals.net_input,
        totals.net_output,
        now.input_kbps,
        now.output_kbps,
        stats.rejected.load(Ordering::Relaxed),
        totals.hits,
        totals.misses,
    )
}

/// The CPU time this process has used, user and system, in seconds (Linux's
/// `/proc/self/stat`, in its clock ticks of 1/100 s; zeros where it cannot be read).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (in parentheses, which may hold spaces): state, then fields 4 to
    // 13, then utime and stime.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let seconds = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(0.0, |ticks| ticks as f64 / 100.0)
    };
    (seconds(11), seconds(12))
}

/// This process's resident memory in bytes (Linux; 0 where it cannot be read).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Settings `CONFIG GET` shows that FireScroll does not let Redis change: name, value, and why
/// it is fixed. What tools read to plan around the server, as FireScroll is: nothing is ever
/// evicted (Sidekiq warns unless `noeviction`), there is one database (RedisInsight lists
/// `databases` of them), and every acknowledged write is in the log, durably (redis-benchmark
/// reads `save` and `appendonly` and warns when it cannot).
const FIXED_SETTINGS: [(&str, &str, &str); 5] = [
    ("maxmemory", "0", "nothing is evicted"),
    ("maxmemory-policy", "noeviction", "nothing is evicted"),
    ("databases", "1", "there is one database"),
    (
        "appendonly",
        "yes",
        "every acknowledged write is durably in the log",
    ),
    (
        "save",
        "",
        "the log is the store's persistence, not snapshots",
    ),
];

/// `CONFIG GET pattern [pattern ...]`: the few settings the Redis port has of its own
/// (`notify-keyspace-events`, the slow log's) and the [`FIXED_SETTINGS`], matched by glob;
/// anything else is configured through FireScroll's settings and answers nothing. `CONFIG SET`
/// takes the Redis port's own settings (for this node, until it restarts). `CONFIG RESETSTAT`
/// zeroes the counters `INFO stats` shows.
fn config(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    match args {
        [sub] if sub.eq_ignore_ascii_case(b"RESETSTAT") => {
            let metrics = ctx.service.metrics();
            ctx.stats.reset(
                metrics.records_expired.get(),
                metrics.clients_evicted.with_label_values(&["redis"]).get(),
            );
            ctx.session.counted = Default::default();
            Reply::ok()
        }
        [sub, patterns @ ..] if sub.eq_ignore_ascii_case(b"GET") && !patterns.is_empty() => {
            let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
            let mut settings = vec![("notify-keyspace-events", ctx.hub.notify_flags().letters())];
            settings.extend(ctx.slowlog.settings());
            settings.extend(FIXED_SETTINGS.map(|(name, value, _)| (name, value.to_string())));
            Reply::Map(
                settings
                    .into_iter()
                    .filter(|(name, _)| {
                        patterns
                            .iter()
                            .any(|p| super::glob_match(p, name.as_bytes()))
                    })
                    .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                    .collect(),
            )
        }
        [sub, name, value]
            if sub.eq_ignore_ascii_case(b"SET")
                && name.eq_ignore_ascii_case(b"notify-keyspace-events") =>
        {
            super::pubsub::set_notify_config(ctx, value)
        }
        [sub, name, value] if sub.eq_ignore_ascii_case(b"SET") => {
            match ctx.slowlog.set(name, value) {
                Some(Ok(())) => Reply::ok(),
                Some(Err(e)) => e,
                None => match FIXED_SETTINGS
                    .iter()
                    .find(|(fixed, _, _)| name.eq_ignore_ascii_case(fixed.as_bytes()))
                {
                    Some((fixed, _, why)) => {
                        Reply::err(format!("{fixed} is fixed in FireScroll: {why}"))
                    }
                    None => Reply::err(
                        "FireScroll is configured through its settings; CONFIG SET takes only \
                         notify-keyspace-events, slowlog-log-slower-than and slowlog-max-len",
                    ),
                },
            }
        }
        [sub, ..] if sub.eq_ignore_ascii_case(b"SET") => {
            Reply::err("FireScroll's CONFIG SET takes one setting at a time: CONFIG SET name value")
        }
        [sub] if sub.eq_ignore_ascii_case(b"HELP") => super::help(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value> (FireScroll: notify-keyspace-events,",
            "    slowlog-log-slower-than, slowlog-max-len; the rest are the node's settings).",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "HELP",
            "    Print this help.",
        ]),
        [sub, ..]
            if [&b"GET"[..], b"RESETSTAT", b"HELP"]
                .iter()
                .any(|known| sub.eq_ignore_ascii_case(known)) =>
        {
            Reply::err(format!(
                "wrong number of arguments for 'config|{}' command",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            ))
        }
        [sub, ..] => Reply::err(format!(
            "unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(sub)
        )),
        [] => wrong_arity("config"),
    }
}
