//! `SLOWLOG`: the commands of this node's Redis port that took at least
//! `slowlog-log-slower-than` microseconds, newest first, kept as Redis keeps them (the last
//! `slowlog-max-len`, arguments shortened the same way, passwords redacted), so `SLOWLOG GET`,
//! monitoring agents (Datadog, redis_exporter) and RedisInsight show them.
//!
//! A command's time is from when it could start to when its reply was ready. For a write that
//! includes waiting for the log to make it durable (and, for a counter, for its entry to apply):
//! where a slow write spends its time, unlike Redis, whose writes never wait.

use crate::api::resp::reply::Reply;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// Redis's defaults.
const DEFAULT_SLOWER_THAN_MICROS: i64 = 10_000;
const DEFAULT_MAX_LEN: usize = 128;
/// Arguments kept per entry, and bytes per argument (Redis's `SLOWLOG_ENTRY_MAX_ARGC` and
/// `SLOWLOG_ENTRY_MAX_STRING`).
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 128;
/// The most entries `slowlog-max-len` may keep (Redis takes any number): with the arguments
/// bounded above, an entry holds at most ~4.5 KiB, so the slow log stays within ~45 MiB.
const MAX_LEN_LIMIT: i64 = 10_000;
/// How many entries `SLOWLOG GET` returns without a count.
const DEFAULT_GET: usize = 10;

/// The slow log of one node's Redis port.
#[derive(Debug)]
pub struct SlowLog {
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
    /// Negative: nothing is logged; 0: every command is.
    slower_than_micros: AtomicI64,
    max_len: AtomicUsize,
}

#[derive(Debug, Clone)]
struct SlowEntry {
    id: u64,
    unix_seconds: i64,
    micros: u64,
    args: Vec<Bytes>,
    client: String,
    name: Bytes,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            slower_than_micros: AtomicI64::new(DEFAULT_SLOWER_THAN_MICROS),
            max_len: AtomicUsize::new(DEFAULT_MAX_LEN),
        }
    }
}

impl SlowLog {
    /// Whether a command that took `micros` belongs in the log: one atomic load, as every
    /// command asks.
    pub fn wants(&self, micros: u64) -> bool {
        let threshold = self.slower_than_micros.load(Ordering::Relaxed);
        threshold >= 0 && micros >= threshold as u64
    }

    /// Adds a command (its name first) that took `micros`, run by the client at `client`
    /// named `name`.
    pub fn record(&self, command: &[Bytes], micros: u64, client: SocketAddr, name: Option<&Bytes>) {
        let max_len = self.max_len.load(Ordering::Relaxed);
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_seconds: crate::model::now_ms().div_euclid(1000),
            micros,
            args: shortened(command),
            client: client.to_string(),
            name: name.map(|n| Bytes::copy_from_slice(n)).unwrap_or_default(),
        };
        let mut entries = self.lock();
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SlowEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `SLOWLOG GET [count] | LEN | RESET | HELP`.
    pub fn command(&self, args: &[Bytes]) -> Reply {
        let Some(sub) = args.first() else {
            return super::wrong_arity("slowlog");
        };
        match (sub.to_ascii_uppercase().as_slice(), &args[1..]) {
            (b"GET", rest @ ([] | [_])) => {
                let count = rest
                    .first()
                    .map(|c| std::str::from_utf8(c).ok()?.parse::<i64>().ok());
                let count = match count {
                    None => DEFAULT_GET,
                    Some(Some(-1)) => usize::MAX,
                    Some(Some(n)) if n >= 0 => n as usize,
                    Some(Some(_)) => {
                        return Reply::err("count should be greater than or equal to -1");
                    }
                    Some(None) => return Reply::err("value is not an integer or out of range"),
                };
                Reply::Array(
                    self.lock()
                        .iter()
                        .take(count)
                        .map(SlowEntry::reply)
                        .collect(),
                )
            }
            (b"LEN", []) => Reply::Int(self.lock().len() as i64),
            (b"RESET", []) => {
                self.lock().clear();
                Reply::ok()
            }
            (b"HELP", []) => super::help(&[
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Print this help.",
            ]),
            (b"GET" | b"LEN" | b"RESET" | b"HELP", _) => Reply::err(format!(
                "wrong number of arguments for 'slowlog|{}' command",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            )),
            _ => Reply::err(format!(
                "unknown subcommand '{}'. Try SLOWLOG HELP.",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// Its settings as `CONFIG GET` shows them, by name.
    pub fn settings(&self) -> [(&'static str, String); 2] {
        [
            (
                "slowlog-log-slower-than",
                self.slower_than_micros.load(Ordering::Relaxed).to_string(),
            ),
            (
                "slowlog-max-len",
                self.max_len.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }

    /// `CONFIG SET name value` of one of its settings; `None` when `name` is not one.
    pub fn set(&self, name: &[u8], value: &[u8]) -> Option<Result<(), Reply>> {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let parsed = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<i64>().ok());
        let invalid = |why: &str| {
            Err(Reply::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - {why}"
            )))
        };
        Some(match (name.as_str(), parsed) {
            ("slowlog-log-slower-than", Some(micros)) => {
                self.slower_than_micros.store(micros, Ordering::Relaxed);
                Ok(())
            }
            ("slowlog-max-len", Some(len)) if (0..=MAX_LEN_LIMIT).contains(&len) => {
                self.max_len.store(len as usize, Ordering::Relaxed);
                self.lock().truncate(len as usize);
                Ok(())
            }
            ("slowlog-max-len", Some(_)) => invalid(&format!(
                "argument must be between 0 and {MAX_LEN_LIMIT} inclusive (FireScroll bounds the \
                 slow log's memory)"
            )),
            ("slowlog-log-slower-than" | "slowlog-max-len", None) => {
                invalid("argument couldn't be parsed into an integer")
            }
            _ => return None,
        })
    }
}

impl SlowEntry {
    fn reply(&self) -> Reply {
        Reply::Array(vec![
            Reply::Int(self.id as i64),
            Reply::Int(self.unix_seconds),
            Reply::Int(self.micros as i64),
            Reply::Array(self.args.iter().cloned().map(Reply::Bulk).collect()),
            Reply::bulk(self.client.clone()),
            Reply::Bulk(self.name.clone()),
        ])
    }
}

/// A command's arguments as the slow log keeps them and `MONITOR` shows them: at most
/// [`MAX_ARGS`] (the last saying how many more there were), each at most [`MAX_ARG_BYTES`]
/// (saying how many more bytes), and the secrets of `AUTH` and `HELLO ... AUTH` as
/// `(redacted)`, as Redis's slow log does.
pub(super) fn shortened(command: &[Bytes]) -> Vec<Bytes> {
    let name = command
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let secret = |i: usize| is_secret(command, &name, i);
    let kept = command.len().min(MAX_ARGS);
    (0..kept)
        .map(|i| {
            let arg = &command[i];
            if kept < command.len() && i == kept - 1 {
                Bytes::from(format!("... ({} more arguments)", command.len() - kept + 1))
            } else if secret(i) {
                Bytes::from_static(b"(redacted)")
            } else if arg.len() > MAX_ARG_BYTES {
                let mut short = arg[..MAX_ARG_BYTES].to_vec();
                short.extend_from_slice(
                    format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes(),
                );
                Bytes::from(short)
            } else {
                // A copy: the argument is a slice of the connection's read buffer, which a
                // kept reference would hold whole (a pipeline's worth) as long as the entry.
                Bytes::copy_from_slice(arg)
            }
        })
        .collect()
}

/// Whether argument `i` of `command` (named `lower_name`, lowercase) is a secret that
/// [`shortened`] shows as `(redacted)`: `AUTH`'s credentials, and those after `HELLO`'s
/// `AUTH`.
fn is_secret(command: &[Bytes], lower_name: &[u8], i: usize) -> bool {
    match lower_name {
        b"auth" => i >= 1,
        b"hello" => command
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"auth"))
            .is_some_and(|at| at >= 1 && (i == at + 1 || i == at + 2)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn keeps_the_newest_commands_over_the_threshold_shortened_like_redis() {
        let log = SlowLog::default();
        assert!(!log.wants(9_999));
        assert!(log.wants(10_000));
        let mut long = vec![Bytes::from("hset"), Bytes::from("h")];
        long.extend((0..40).map(|i| Bytes::from(format!("f{i}"))));
        log.record(&long, 12_000, addr(), None);
        let big = Bytes::from("x".repeat(200));
        log.record(
            &[Bytes::from("SET"), Bytes::from("k"), big],
            20_000,
            addr(),
            Some(&Bytes::from("app")),
        );
        log.record(&args(&["AUTH", "default", "hunter2"]), 30_000, addr(), None);
        log.record(
            &args(&["HELLO", "3", "AUTH", "default", "hunter2", "SETNAME", "x"]),
            30_000,
            addr(),
            None,
        );

        let Reply::Array(all) = log.command(&args(&["GET", "-1"])) else {
            panic!()
        };
        assert_eq!(all.len(), 4);
        let field = |entry: &Reply, i: usize| match entry {
            Reply::Array(fields) => fields[i].clone(),
            _ => panic!("{entry:?}"),
        };
        let words = |entry: &Reply| match field(entry, 3) {
            Reply::Array(a) => a
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(b) => String::from_utf8(b.to_vec()).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        // Newest first, ids counting up from 0.
        assert_eq!(field(&all[0], 0), Reply::Int(3));
        assert_eq!(field(&all[3], 0), Reply::Int(0));
        assert_eq!(
            words(&all[0]),
            [
                "HELLO",
                "3",
                "AUTH",
                "(redacted)",
                "(redacted)",
                "SETNAME",
                "x"
            ]
        );
        assert_eq!(words(&all[1]), ["AUTH", "(redacted)", "(redacted)"]);
        let set = words(&all[2]);
        assert_eq!(set[2], format!("{}... (72 more bytes)", "x".repeat(128)));
        assert_eq!(field(&all[2], 2), Reply::Int(20_000));
        assert_eq!(field(&all[2], 4), Reply::bulk("127.0.0.1:5000"));
        assert_eq!(field(&all[2], 5), Reply::bulk("app"));
        let hset = words(&all[3]);
        assert_eq!(hset.len(), 32);
        assert_eq!(hset[30], "f28");
        assert_eq!(hset[31], "... (11 more arguments)");

        // GET without a count: 10 at most; a count; LEN; a bad count.
        assert!(matches!(log.command(&args(&["GET", "2"])), Reply::Array(a) if a.len() == 2));
        assert_eq!(log.command(&args(&["LEN"])), Reply::Int(4));
        assert!(matches!(
            log.command(&args(&["GET", "-2"])),
            Reply::Error(_)
        ));
        assert!(matches!(log.command(&args(&["NOPE"])), Reply::Error(_)));
    }

    #[test]
    fn entries_hold_copies_not_the_connections_read_buffer() {
        let log = SlowLog::default();
        // Arguments are slices of one read buffer; an entry must not keep it alive.
        let buffer = Bytes::from(b"SETk1worker".repeat(1000));
        let inside = |b: &Bytes| {
            let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
            range.contains(&(b.as_ptr() as usize))
        };
        let command = [buffer.slice(0..3), buffer.slice(3..5)];
        let name = buffer.slice(5..11);
        log.record(&command, 20_000, addr(), Some(&name));
        let entries = log.lock();
        let entry = &entries[0];
        assert_eq!(entry.args, [Bytes::from("SET"), Bytes::from("k1")]);
        assert_eq!(entry.name, Bytes::from("worker"));
        assert!(!entry.args.iter().any(inside) && !inside(&entry.name));
    }

    #[test]
    fn settings_bound_and_disable_it() {
        let log = SlowLog::default();
        for _ in 0..5 {
            log.record(&args(&["GET", "k"]), 50_000, addr(), None);
        }
        assert!(log.set(b"slowlog-max-len", b"2").unwrap().is_ok());
        assert_eq!(
            log.command(&args(&["LEN"])),
            Reply::Int(2),
            "shrunk at once"
        );
        log.record(&args(&["GET", "k"]), 50_000, addr(), None);
        assert_eq!(log.command(&args(&["LEN"])), Reply::Int(2));
        assert!(log.set(b"SLOWLOG-LOG-SLOWER-THAN", b"-1").unwrap().is_ok());
        assert!(!log.wants(u64::MAX));
        assert!(log.set(b"slowlog-log-slower-than", b"0").unwrap().is_ok());
        assert!(log.wants(0));
        assert!(log.set(b"slowlog-max-len", b"-3").unwrap().is_err());
        assert!(log.set(b"slowlog-max-len", b"10001").unwrap().is_err());
        assert!(log.set(b"slowlog-max-len", b"10000").unwrap().is_ok());
        assert!(log.set(b"slowlog-max-len", b"2").unwrap().is_ok());
        assert!(
            log.set(b"slowlog-log-slower-than", b"soon")
                .unwrap()
                .is_err()
        );
        assert!(log.set(b"maxmemory", b"1").is_none());
        assert_eq!(log.command(&args(&["RESET"])), Reply::ok());
        assert_eq!(log.command(&args(&["LEN"])), Reply::Int(0));
        assert_eq!(
            log.settings(),
            [
                ("slowlog-log-slower-than", "0".to_string()),
                ("slowlog-max-len", "2".to_string())
            ]
        );
    }
}
