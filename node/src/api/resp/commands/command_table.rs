//! `COMMAND`: what this frontend answers, described as Redis 7 describes its commands (arity,
//! flags, key positions, ACL categories), so tools that ask (redis-cli's hints, RedisInsight,
//! cluster-aware clients looking for keys, `COMMAND GETKEYS`) see what they would on Redis.
//!
//! Each entry is the one redis-server 7.0 gives (7.4's and 8's for the hash field expiry
//! commands, RedisJSON's for `JSON.*`); a test compares them with a real redis-server, and
//! another checks that every command the dispatcher runs is listed here.

use super::wrong_arity;
use crate::api::resp::reply::Reply;
use bytes::Bytes;

/// One command as `COMMAND INFO` describes it.
pub(super) struct CommandInfo {
    pub name: &'static str,
    /// Redis's arity: the argument count with the name; negative means at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end), step between keys; zeros when keyless.
    pub keys: (i64, i64, i64),
    pub acl: &'static [&'static str],
}

impl CommandInfo {
    /// Whether the command writes (Redis's `write` flag): it needs write access.
    pub fn writes(&self) -> bool {
        self.flags.contains(&"write")
    }
}

const fn cmd(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    acl: &'static [&'static str],
) -> CommandInfo {
    CommandInfo {
        name,
        arity,
        flags,
        keys,
        acl,
    }
}

const WRITE: &[&str] = &["write", "denyoom", "fast"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const WRITE_SLOW: &[&str] = &["write", "denyoom"];
const READ_FAST: &[&str] = &["readonly", "fast"];
const READ: &[&str] = &["readonly"];
const CONNECTION: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const NO_KEYS: (i64, i64, i64) = (0, 0, 0);

/// Every command the dispatcher runs, sorted by name.
pub(super) const COMMANDS: &[CommandInfo] = &[
    cmd("append", 3, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd("auth", -2, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    cmd("client", -2, &[], NO_KEYS, &["@slow"]),
    cmd("cluster", -2, &[], NO_KEYS, &["@slow"]),
    cmd(
        "command",
        -1,
        &["loading", "stale"],
        NO_KEYS,
        &["@slow", "@connection"],
    ),
    cmd("config", -2, &[], NO_KEYS, &["@slow"]),
    cmd(
        "dbsize",
        1,
        READ_FAST,
        NO_KEYS,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd("decr", 2, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd("decrby", 3, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd(
        "del",
        -2,
        &["write"],
        ALL_KEYS,
        &["@keyspace", "@write", "@slow"],
    ),
    cmd(
        "discard",
        1,
        TRANSACTION,
        NO_KEYS,
        &["@fast", "@transaction"],
    ),
    cmd(
        "echo",
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
        &["@fast", "@connection"],
    ),
    cmd(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NO_KEYS,
        &["@slow", "@transaction"],
    ),
    cmd(
        "exists",
        -2,
        READ_FAST,
        ALL_KEYS,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd(
        "expire",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd(
        "expireat",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd(
        "expiretime",
        2,
        READ_FAST,
        ONE_KEY,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd("get", 2, READ_FAST, ONE_KEY, &["@read", "@string", "@fast"]),
    cmd(
        "getdel",
        2,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@string", "@fast"],
    ),
    cmd(
        "getex",
        -2,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@string", "@fast"],
    ),
    cmd("getrange", 4, READ, ONE_KEY, &["@read", "@string", "@slow"]),
    cmd("getset", 3, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd(
        "hdel",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd("hello", -1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    cmd(
        "hexists",
        3,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    // Redis 7.4's hash field expiry.
    cmd("hexpire", -6, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd(
        "hexpireat",
        -6,
        WRITE,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd(
        "hexpiretime",
        -5,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    cmd("hget", 3, READ_FAST, ONE_KEY, &["@read", "@hash", "@fast"]),
    cmd("hgetall", 2, READ, ONE_KEY, &["@read", "@hash", "@slow"]),
    // Redis 8's.
    cmd(
        "hgetdel",
        -5,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd(
        "hgetex",
        -5,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd("hincrby", 4, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd(
        "hincrbyfloat",
        4,
        WRITE,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd("hkeys", 2, READ, ONE_KEY, &["@read", "@hash", "@slow"]),
    cmd("hlen", 2, READ_FAST, ONE_KEY, &["@read", "@hash", "@fast"]),
    cmd(
        "hmget",
        -3,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    cmd("hmset", -4, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd(
        "hpersist",
        -5,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd(
        "hpexpire",
        -6,
        WRITE,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd(
        "hpexpireat",
        -6,
        WRITE,
        ONE_KEY,
        &["@write", "@hash", "@fast"],
    ),
    cmd(
        "hpexpiretime",
        -5,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    cmd(
        "hpttl",
        -5,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    cmd(
        "hrandfield",
        -2,
        READ,
        ONE_KEY,
        &["@read", "@hash", "@slow"],
    ),
    cmd("hscan", -3, READ, ONE_KEY, &["@read", "@hash", "@slow"]),
    cmd("hset", -4, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd("hsetex", -6, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd("hsetnx", 4, WRITE, ONE_KEY, &["@write", "@hash", "@fast"]),
    cmd(
        "hstrlen",
        3,
        READ_FAST,
        ONE_KEY,
        &["@read", "@hash", "@fast"],
    ),
    cmd("httl", -5, READ_FAST, ONE_KEY, &["@read", "@hash", "@fast"]),
    cmd("hvals", 2, READ, ONE_KEY, &["@read", "@hash", "@slow"]),
    cmd("incr", 2, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd("incrby", 3, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd(
        "incrbyfloat",
        3,
        WRITE,
        ONE_KEY,
        &["@write", "@string", "@fast"],
    ),
    cmd(
        "info",
        -1,
        &["loading", "stale"],
        NO_KEYS,
        &["@slow", "@dangerous"],
    ),
    // RedisJSON's, as that module describes them.
    cmd(
        "json.arrappend",
        -4,
        &["write", "denyoom", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.arrindex",
        -4,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.arrinsert",
        -5,
        &["write", "denyoom", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.arrlen",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.arrpop",
        -2,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.arrtrim",
        5,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.clear",
        -2,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.debug",
        -2,
        &["readonly", "module"],
        (2, 2, 1),
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.del",
        -2,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.forget",
        -2,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.get",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.merge",
        4,
        &["write", "denyoom", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.mget",
        -3,
        &["readonly", "module"],
        (1, -2, 1),
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.mset",
        -4,
        &["write", "denyoom", "module"],
        (1, -1, 3),
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.numincrby",
        4,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.nummultby",
        4,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.objkeys",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.objlen",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.resp",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.set",
        -4,
        &["write", "denyoom", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.strappend",
        -3,
        &["write", "denyoom", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.strlen",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "json.toggle",
        -2,
        &["write", "module"],
        ONE_KEY,
        &["@write", "@json", "@slow"],
    ),
    cmd(
        "json.type",
        -2,
        &["readonly", "module"],
        ONE_KEY,
        &["@read", "@json", "@slow"],
    ),
    cmd(
        "keys",
        2,
        READ,
        NO_KEYS,
        &["@keyspace", "@read", "@slow", "@dangerous"],
    ),
    cmd("memory", -2, &[], NO_KEYS, &["@slow"]),
    cmd(
        "mget",
        -2,
        READ_FAST,
        ALL_KEYS,
        &["@read", "@string", "@fast"],
    ),
    cmd("module", -2, &[], NO_KEYS, &["@slow"]),
    cmd(
        "monitor",
        1,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
        &["@admin", "@slow", "@dangerous"],
    ),
    cmd(
        "mset",
        -3,
        WRITE_SLOW,
        (1, -1, 2),
        &["@write", "@string", "@slow"],
    ),
    cmd(
        "msetnx",
        -3,
        WRITE_SLOW,
        (1, -1, 2),
        &["@write", "@string", "@slow"],
    ),
    cmd("multi", 1, TRANSACTION, NO_KEYS, &["@fast", "@transaction"]),
    cmd(
        "persist",
        2,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd(
        "pexpire",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd(
        "pexpireat",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd(
        "pexpiretime",
        2,
        READ_FAST,
        ONE_KEY,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd("ping", -1, &["fast"], NO_KEYS, &["@fast", "@connection"]),
    cmd(
        "psetex",
        4,
        WRITE_SLOW,
        ONE_KEY,
        &["@write", "@string", "@slow"],
    ),
    cmd("psubscribe", -2, PUBSUB, NO_KEYS, &["@pubsub", "@slow"]),
    cmd(
        "pttl",
        2,
        READ_FAST,
        ONE_KEY,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd("punsubscribe", -1, PUBSUB, NO_KEYS, &["@pubsub", "@slow"]),
    cmd("quit", -1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    cmd(
        "randomkey",
        1,
        READ,
        NO_KEYS,
        &["@keyspace", "@read", "@slow"],
    ),
    cmd(
        "readonly",
        1,
        &["loading", "stale", "fast"],
        NO_KEYS,
        &["@fast", "@connection"],
    ),
    cmd(
        "readwrite",
        1,
        &["loading", "stale", "fast"],
        NO_KEYS,
        &["@fast", "@connection"],
    ),
    cmd("reset", 1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    cmd(
        "role",
        1,
        &["noscript", "loading", "stale", "fast"],
        NO_KEYS,
        &["@admin", "@fast", "@dangerous"],
    ),
    cmd("sadd", -3, WRITE, ONE_KEY, &["@write", "@set", "@fast"]),
    cmd("scan", -2, READ, NO_KEYS, &["@keyspace", "@read", "@slow"]),
    cmd("scard", 2, READ_FAST, ONE_KEY, &["@read", "@set", "@fast"]),
    cmd("sdiff", -2, READ, ALL_KEYS, &["@read", "@set", "@slow"]),
    cmd(
        "select",
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
        &["@fast", "@connection"],
    ),
    cmd(
        "set",
        -3,
        WRITE_SLOW,
        ONE_KEY,
        &["@write", "@string", "@slow"],
    ),
    cmd(
        "setex",
        4,
        WRITE_SLOW,
        ONE_KEY,
        &["@write", "@string", "@slow"],
    ),
    cmd("setnx", 3, WRITE, ONE_KEY, &["@write", "@string", "@fast"]),
    cmd("sinter", -2, READ, ALL_KEYS, &["@read", "@set", "@slow"]),
    cmd(
        "sintercard",
        -3,
        &["readonly", "movablekeys"],
        NO_KEYS,
        &["@read", "@set", "@slow"],
    ),
    cmd(
        "sismember",
        3,
        READ_FAST,
        ONE_KEY,
        &["@read", "@set", "@fast"],
    ),
    cmd("slowlog", -2, &[], NO_KEYS, &["@slow"]),
    cmd("smembers", 2, READ, ONE_KEY, &["@read", "@set", "@slow"]),
    cmd(
        "smismember",
        -3,
        READ_FAST,
        ONE_KEY,
        &["@read", "@set", "@fast"],
    ),
    cmd(
        "spop",
        -2,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@set", "@fast"],
    ),
    cmd(
        "srandmember",
        -2,
        READ,
        ONE_KEY,
        &["@read", "@set", "@slow"],
    ),
    cmd(
        "srem",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@set", "@fast"],
    ),
    cmd("sscan", -3, READ, ONE_KEY, &["@read", "@set", "@slow"]),
    cmd(
        "strlen",
        2,
        READ_FAST,
        ONE_KEY,
        &["@read", "@string", "@fast"],
    ),
    cmd("subscribe", -2, PUBSUB, NO_KEYS, &["@pubsub", "@slow"]),
    cmd("substr", 4, READ, ONE_KEY, &["@read", "@string", "@slow"]),
    cmd("sunion", -2, READ, ALL_KEYS, &["@read", "@set", "@slow"]),
    cmd(
        "time",
        1,
        &["loading", "stale", "fast"],
        NO_KEYS,
        &["@fast"],
    ),
    cmd(
        "touch",
        -2,
        READ_FAST,
        ALL_KEYS,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd(
        "ttl",
        2,
        READ_FAST,
        ONE_KEY,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd(
        "type",
        2,
        READ_FAST,
        ONE_KEY,
        &["@keyspace", "@read", "@fast"],
    ),
    cmd(
        "unlink",
        -2,
        WRITE_FAST,
        ALL_KEYS,
        &["@keyspace", "@write", "@fast"],
    ),
    cmd("unsubscribe", -1, PUBSUB, NO_KEYS, &["@pubsub", "@slow"]),
    cmd(
        "unwatch",
        1,
        TRANSACTION,
        NO_KEYS,
        &["@fast", "@transaction"],
    ),
    cmd("wait", 3, &["noscript"], NO_KEYS, &["@slow", "@connection"]),
    cmd(
        "waitaof",
        4,
        &["noscript"],
        NO_KEYS,
        &["@slow", "@connection"],
    ),
    cmd(
        "watch",
        -2,
        TRANSACTION,
        ALL_KEYS,
        &["@fast", "@transaction"],
    ),
];

/// The entry of `name` (lowercase).
pub(super) fn lookup(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS
        .binary_search_by(|c| c.name.cmp(name))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// `COMMAND [COUNT | DOCS | INFO name... | LIST | GETKEYS command args...]`
pub(super) fn command(args: &[Bytes]) -> Reply {
    let Some((sub, rest)) = args.split_first() else {
        return Reply::Array(COMMANDS.iter().map(describe).collect());
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => Reply::Int(COMMANDS.len() as i64),
        b"HELP" if rest.is_empty() => super::help(&[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all commands this port runs.",
            "COUNT",
            "    Return the total number of commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full command.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands (all of them without a name).",
            "LIST",
            "    Return a list of all commands.",
            "DOCS",
            "    Not kept: answers an error (redis-cli then uses its own help).",
            "HELP",
            "    Print this help.",
        ]),
        // No documentation is kept here. An error (not an empty answer) is what makes
        // redis-cli fall back to its own help table, with its hints and tab completion; an
        // empty map left it with none.
        b"DOCS" => Reply::err(
            "FireScroll keeps no command docs: COMMAND INFO describes each command it runs \
             (redis-cli then uses its own help)",
        ),
        b"LIST" => Reply::Array(COMMANDS.iter().map(|c| Reply::bulk(c.name)).collect()),
        b"INFO" if rest.is_empty() => Reply::Array(COMMANDS.iter().map(describe).collect()),
        b"INFO" => Reply::Array(
            rest.iter()
                .map(|name| {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    lookup(&name).map_or(Reply::Null, describe)
                })
                .collect(),
        ),
        b"GETKEYS" => getkeys(rest),
        _ => Reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// One command as Redis 7 answers it: name, arity, flags, first/last key and step, ACL
/// categories, tips, key specifications and subcommands (the last three empty). The lists are
/// sets under RESP3, as redis-server sends them.
fn describe(info: &CommandInfo) -> Reply {
    let (first, last, step) = info.keys;
    Reply::Array(vec![
        Reply::bulk(info.name),
        Reply::Int(info.arity),
        Reply::Set(info.flags.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
        Reply::Set(info.acl.iter().map(|a| Reply::Simple(a)).collect()),
        Reply::Set(vec![]),
        Reply::Set(vec![]),
        Reply::Set(vec![]),
    ])
}

/// `COMMAND GETKEYS command args...`: the keys that command names, from its key positions.
fn getkeys(command: &[Bytes]) -> Reply {
    let Some(name) = command.first() else {
        return wrong_arity("command|getkeys");
    };
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let Some(info) = lookup(&lower) else {
        return Reply::err("Invalid command specified");
    };
    let count = command.len() as i64;
    if (info.arity > 0 && count != info.arity) || (info.arity < 0 && count < -info.arity) {
        return Reply::err("Invalid number of arguments specified for command");
    }
    let keys: Vec<Reply> = match (info.name, info.keys) {
        // SINTERCARD numkeys key [key ...] [LIMIT limit]
        ("sintercard", _) => {
            let numkeys = std::str::from_utf8(&command[1])
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0 && n + 2 <= command.len());
            match numkeys {
                Some(n) => command[2..2 + n].iter().cloned().map(Reply::Bulk).collect(),
                None => return Reply::err("Invalid arguments specified for command"),
            }
        }
        (_, (0, _, _)) => vec![],
        (_, (first, last, step)) => {
            let last = if last < 0 { count + last } else { last };
            (first..=last.min(count - 1))
                .step_by(step as usize)
                .map(|i| Reply::Bulk(command[i as usize].clone()))
                .collect()
        }
    };
    if keys.is_empty() {
        return Reply::err("The command has no key arguments");
    }
    Reply::Array(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_so_lookup_finds_every_command() {
        assert!(
            COMMANDS.windows(2).all(|w| w[0].name < w[1].name),
            "keep COMMANDS sorted by name"
        );
        for info in COMMANDS {
            assert_eq!(lookup(info.name).map(|i| i.name), Some(info.name));
        }
        assert!(lookup("zadd").is_none());
    }

    fn keys(args: &[&str]) -> Reply {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        getkeys(&args)
    }

    #[test]
    fn getkeys_follows_the_key_positions() {
        let bulk = |s: &str| Reply::Bulk(Bytes::from(s.to_string()));
        assert_eq!(keys(&["GET", "k"]), Reply::Array(vec![bulk("k")]));
        assert_eq!(
            keys(&["mset", "a", "1", "b", "2"]),
            Reply::Array(vec![bulk("a"), bulk("b")])
        );
        assert_eq!(
            keys(&["del", "a", "b", "c"]),
            Reply::Array(vec![bulk("a"), bulk("b"), bulk("c")])
        );
        assert_eq!(
            keys(&["sintercard", "2", "a", "b", "LIMIT", "1"]),
            Reply::Array(vec![bulk("a"), bulk("b")])
        );
        assert!(matches!(keys(&["ping"]), Reply::Error(_)));
        assert!(matches!(keys(&["get"]), Reply::Error(_)));
        assert!(matches!(keys(&["zadd", "k", "1", "m"]), Reply::Error(_)));
    }
}
