//! What to tell a client that sends a Redis command FireScroll does not have: Redis's own
//! `unknown command` error (clients and tools recognise it), and for the commands people reach
//! for most, why not and what to use instead.

/// Lowercase names of Redis commands whose data types FireScroll does not store, by type.
const TYPES: [(&str, &[&str]); 3] = [
    (
        "lists",
        &[
            "blmove",
            "blmpop",
            "blpop",
            "brpop",
            "brpoplpush",
            "lindex",
            "linsert",
            "llen",
            "lmove",
            "lmpop",
            "lpop",
            "lpos",
            "lpush",
            "lpushx",
            "lrange",
            "lrem",
            "lset",
            "ltrim",
            "rpop",
            "rpoplpush",
            "rpush",
            "rpushx",
        ],
    ),
    (
        "sorted sets",
        &[
            "bzmpop",
            "bzpopmax",
            "bzpopmin",
            "zadd",
            "zcard",
            "zcount",
            "zdiff",
            "zdiffstore",
            "zincrby",
            "zinter",
            "zintercard",
            "zinterstore",
            "zlexcount",
            "zmpop",
            "zmscore",
            "zpopmax",
            "zpopmin",
            "zrandmember",
            "zrange",
            "zrangebylex",
            "zrangebyscore",
            "zrangestore",
            "zrank",
            "zrem",
            "zremrangebylex",
            "zremrangebyrank",
            "zremrangebyscore",
            "zrevrange",
            "zrevrangebylex",
            "zrevrangebyscore",
            "zrevrank",
            "zscan",
            "zscore",
            "zunion",
            "zunionstore",
        ],
    ),
    (
        "streams",
        &[
            "xack",
            "xadd",
            "xautoclaim",
            "xclaim",
            "xdel",
            "xgroup",
            "xinfo",
            "xlen",
            "xpending",
            "xrange",
            "xread",
            "xreadgroup",
            "xrevrange",
            "xsetid",
            "xtrim",
        ],
    ),
];

/// Why `name` (lowercase) is not here and what to do instead, for the commands people reach
/// for most; `None` for the rest.
pub(super) fn hint(name: &str) -> Option<String> {
    if let Some((kind, _)) = TYPES.iter().find(|(_, names)| names.contains(&name)) {
        return Some(format!(
            "FireScroll stores strings, hashes, sets and JSON documents; {kind} are not supported"
        ));
    }
    let why = match name {
        "smove" | "sinterstore" | "sunionstore" | "sdiffstore" => {
            "this would read and write different keys in one atomic step, which FireScroll does \
             only within a partition: read with SMEMBERS, SRANDMEMBER or SINTER/SUNION/SDIFF, then \
             write with SADD and SREM (in one MULTI/EXEC when the keys share a partition)"
        }
        "rename" | "renamenx" | "copy" | "move" => {
            "FireScroll does not move or copy keys: write the value under the new name and \
             delete the old one, in one MULTI/EXEC when both keys share a partition"
        }
        "setrange" | "setbit" | "bitfield" => {
            "FireScroll does not rewrite part of a value: SET the whole new value"
        }
        "flushdb" | "flushall" => {
            "FireScroll does not empty the database in one command: find keys with SCAN and \
             delete them with DEL or UNLINK"
        }
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "script" | "fcall" | "fcall_ro"
        | "function" => {
            "FireScroll runs no Lua: use MULTI/EXEC for atomic writes, or a WebAssembly plugin \
             for logic at apply time"
        }
        "object" => {
            "FireScroll keeps no Redis encodings, access times or frequencies (nothing is \
             evicted): TYPE, STRLEN and MEMORY USAGE describe a key"
        }
        "dump" | "restore" | "migrate" => {
            "FireScroll moves data through its log and S3 snapshots, not Redis's serialized \
             values: read the value and SET it"
        }
        "swapdb" => "FireScroll has one database, 0",
        "save" | "bgsave" | "bgrewriteaof" | "lastsave" => {
            "FireScroll has no dump or AOF to write: every acknowledged write is already durable \
             in its log, and partitions are snapshotted to S3 (README: Snapshots to S3)"
        }
        "shutdown" | "debug" | "failover" | "replicaof" | "slaveof" | "sync" | "psync" => {
            "FireScroll nodes are run and replicated through their log, not from a client: stop \
             a node with SIGTERM, and add replicas as nodes of a replica group"
        }
        "publish" | "spublish" | "ssubscribe" | "sunsubscribe" | "pubsub" => {
            "FireScroll's pub/sub carries keyspace notifications (CONFIG SET \
             notify-keyspace-events, then SUBSCRIBE/PSUBSCRIBE), not messages between clients"
        }
        _ => return None,
    };
    Some(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_commands_say_why_and_others_do_not() {
        assert!(hint("lpush").unwrap().contains("lists are not supported"));
        assert!(hint("zadd").unwrap().contains("sorted sets"));
        assert!(hint("xadd").unwrap().contains("streams"));
        assert!(hint("rename").unwrap().contains("new name"));
        assert!(hint("flushall").unwrap().contains("SCAN"));
        assert!(hint("eval").unwrap().contains("MULTI/EXEC"));
        assert!(hint("object").unwrap().contains("MEMORY USAGE"));
        assert!(hint("dump").unwrap().contains("SET"));
        assert!(hint("publish").unwrap().contains("keyspace notifications"));
        assert!(hint("bgsave").unwrap().contains("durable"));
        assert!(hint("shutdown").unwrap().contains("SIGTERM"));
        assert_eq!(hint("nosuch"), None);
        // Each name is listed once, in one type, and none is one of FireScroll's writes.
        let mut all: Vec<&str> = TYPES
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
        for name in all {
            assert!(!super::super::is_write(name), "{name}");
        }
    }
}
