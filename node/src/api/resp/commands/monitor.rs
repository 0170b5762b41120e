//! `MONITOR`: every command this node's Redis port runs, streamed to the connections that asked,
//! one line each in Redis's format (`+1733390000.123456 [0 127.0.0.1:5000] "SET" "k" "v"`), so
//! `redis-cli monitor` shows what is hitting a node.
//!
//! As in Redis: a command shows when it has run (the commands of a transaction when `EXEC` runs
//! them, not when queued); `AUTH` and `HELLO ... AUTH` secrets show as `(redacted)`. Unlike
//! Redis, long commands are shortened as the slow log shortens them (32 arguments of 128
//! bytes), so a line stays small whatever a command carries. The
//! administrative commands (`MONITOR`, `CONFIG`, `SLOWLOG`) do not show. Commands of HTTP
//! clients do not either: they are not Redis commands. A monitor that falls more than
//! [`BACKLOG`] lines behind is told so and disconnected, as Redis disconnects one past its output
//! buffer limit: a slow monitor never holds memory or the commands up.

use bytes::Bytes;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::broadcast;

/// Lines a monitor may fall behind before it is disconnected (the channel keeps this many:
/// at most ~70 MiB of the longest lines, a few hundred KiB of usual ones).
pub const BACKLOG: usize = 4096;

/// The monitors of one node's Redis port.
pub struct Monitors {
    /// Connections in monitor mode: commands are formatted only while there are any.
    watching: Arc<AtomicUsize>,
    lines: broadcast::Sender<Arc<str>>,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            watching: Arc::new(AtomicUsize::new(0)),
            lines: broadcast::channel(BACKLOG).0,
        }
    }
}

/// A connection's view of the monitor stream; it stops counting as a monitor when dropped.
#[derive(Debug)]
pub struct Monitor {
    lines: broadcast::Receiver<Arc<str>>,
    watching: Arc<AtomicUsize>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a monitor receives next.
pub enum Line {
    /// A command's line, without the leading `+` and the line end.
    Command(Arc<str>),
    /// The monitor fell this many lines behind.
    Behind(u64),
}

impl Monitor {
    /// The next line.
    pub async fn next(&mut self) -> Line {
        match self.lines.recv().await {
            Ok(line) => Line::Command(line),
            Err(broadcast::error::RecvError::Lagged(missed)) => Line::Behind(missed),
            // The sender lives as long as the port: never closed while a connection runs.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// The next line if one is waiting.
    pub fn try_next(&mut self) -> Option<Line> {
        match self.lines.try_recv() {
            Ok(line) => Some(Line::Command(line)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(Line::Behind(missed)),
            Err(_) => None,
        }
    }
}

impl Monitors {
    /// Whether any connection monitors: one atomic load, as every command asks.
    pub fn active(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    /// Starts a monitor.
    pub fn watch(&self) -> Monitor {
        self.watching.fetch_add(1, Ordering::Relaxed);
        Monitor {
            lines: self.lines.subscribe(),
            watching: self.watching.clone(),
        }
    }

    /// Shows `command` (its name first, as the client sent it), run by the client at `client`,
    /// to every monitor, unless Redis would not show it.
    pub fn feed(&self, client: SocketAddr, command: &[Bytes]) {
        let Some(name) = command.first() else {
            return;
        };
        if [&b"monitor"[..], b"config", b"slowlog"]
            .iter()
            .any(|hidden| name.eq_ignore_ascii_case(hidden))
        {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = format!("{}.{:06} [0 {client}]", now.as_secs(), now.subsec_micros());
        // Shortened as the slow log shortens them: a line is then at most ~17 KiB (32
        // arguments of 128 bytes, each escaped to at most four characters a byte), so the
        // backlog is bounded in bytes too, whatever the commands carry (Redis shows them whole).
        for arg in super::slowlog::shortened(command) {
            line.push(' ');
            quote(&mut line, &arg);
        }
        // With no monitor left (it just went), nobody needs the line.
        let _ = self.lines.send(Arc::from(line));
    }
}

/// Appends `arg` quoted and escaped as Redis's `sdscatrepr` does.
fn quote(out: &mut String, arg: &[u8]) {
    out.push('"');
    for &b in arg {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(char::from(b)),
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w)).collect()
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn next_line(monitor: &mut Monitor) -> String {
        match monitor.try_next() {
            Some(Line::Command(line)) => {
                // Drop the timestamp: seconds.micros, then a space.
                let (time, rest) = line.split_once(' ').unwrap();
                let (secs, micros) = time.split_once('.').unwrap();
                assert!(secs.parse::<u64>().unwrap() > 1_700_000_000 && micros.len() == 6);
                rest.to_string()
            }
            Some(Line::Behind(n)) => panic!("behind {n}"),
            None => panic!("no line"),
        }
    }

    #[test]
    fn lines_read_as_redis_writes_them_and_only_while_someone_monitors() {
        let monitors = Monitors::default();
        assert!(!monitors.active());
        let mut monitor = monitors.watch();
        assert!(monitors.active());
        monitors.feed(addr(), &args(&[b"SET", b"k", b"a \"b\"\n\\\x00\xff"]));
        monitors.feed(addr(), &args(&[b"AUTH", b"default", b"hunter2"]));
        monitors.feed(addr(), &args(&[b"CONFIG", b"SET", b"x", b"y"]));
        monitors.feed(addr(), &args(&[b"get", b"k"]));
        assert_eq!(
            next_line(&mut monitor),
            r#"[0 127.0.0.1:5000] "SET" "k" "a \"b\"\n\\\x00\xff""#
        );
        assert_eq!(
            next_line(&mut monitor),
            r#"[0 127.0.0.1:5000] "AUTH" "(redacted)" "(redacted)""#
        );
        assert_eq!(next_line(&mut monitor), r#"[0 127.0.0.1:5000] "get" "k""#);
        assert!(monitor.try_next().is_none());
        // A long command is shortened, as the slow log shortens it: the line stays small.
        let mut long = args(&[b"HSET", b"h"]);
        long.extend((0..1000).map(|_| Bytes::from(vec![0u8; 100_000])));
        monitors.feed(addr(), &long);
        let line = next_line(&mut monitor);
        assert!(line.len() < 20_000, "{} bytes", line.len());
        assert!(
            line.ends_with(r#""... (971 more arguments)""#),
            "{}",
            &line[line.len() - 60..]
        );
        assert!(line.contains("... (99872 more bytes)"));
        drop(monitor);
        assert!(!monitors.active());
    }

    #[test]
    fn a_monitor_that_falls_behind_is_told_how_far() {
        let monitors = Monitors::default();
        let mut monitor = monitors.watch();
        for _ in 0..BACKLOG + 5 {
            monitors.feed(addr(), &args(&[b"PING"]));
        }
        assert!(matches!(monitor.try_next(), Some(Line::Behind(5))));
    }
}
