//! Warnings that repeat while the broker is away, logged once per interval instead of each
//! time. librdkafka reports every failed connect and every "all brokers are down", and the
//! consumers every failed poll: about 20 lines a second per node for as long as an outage
//! lasts, which buries everything else an operator looks for. The first of a kind is logged at
//! once; the same kind again within [`EVERY`] is counted, and the next line of that kind says
//! how many were left out.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per kind of repeated warning this often.
pub(super) const EVERY: Duration = Duration::from_secs(30);

/// Kinds remembered at most (librdkafka's facilities and error codes are a few dozen): past
/// it, the oldest are forgotten, which only means one more line gets logged.
const MAX_KINDS: usize = 256;

/// Counts repeats of each kind of warning; see the module docs.
pub(super) struct Repeats {
    kinds: Mutex<HashMap<String, Seen>>,
    every: Duration,
}

/// One kind of warning: when it was last logged, and how many were left out since.
struct Seen {
    logged: Instant,
    left_out: u64,
}

impl Repeats {
    /// Repeats logged at most once per `every` per kind.
    pub(super) fn new(every: Duration) -> Repeats {
        Repeats {
            kinds: Mutex::new(HashMap::new()),
            every,
        }
    }

    /// Whether a warning of `kind` is logged now: `Some(left_out)`, how many of its kind were
    /// not logged since the last one that was; `None` to leave this one out.
    pub(super) fn admit(&self, kind: &str) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().expect("repeats lock");
        if let Some(seen) = kinds.get_mut(kind) {
            if now.duration_since(seen.logged) < self.every {
                seen.left_out += 1;
                return None;
            }
            let left_out = std::mem::take(&mut seen.left_out);
            seen.logged = now;
            return Some(left_out);
        }
        if kinds.len() >= MAX_KINDS
            && let Some(oldest) = kinds
                .iter()
                .min_by_key(|(_, seen)| seen.logged)
                .map(|(k, _)| k.clone())
        {
            kinds.remove(&oldest);
        }
        kinds.insert(
            kind.to_string(),
            Seen {
                logged: now,
                left_out: 0,
            },
        );
        Some(0)
    }
}

/// The kind of a Kafka error, for [`Repeats`]: its code, without the text that varies.
pub(super) fn error_kind(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => error.to_string(),
    }
}

/// A librdkafka client context that logs to tracing, repeats once per [`EVERY`] per kind
/// (librdkafka's facility for its logs, the error code for its errors).
pub(super) struct QuietContext {
    repeats: Repeats,
}

impl QuietContext {
    pub(super) fn new() -> QuietContext {
        QuietContext {
            repeats: Repeats::new(EVERY),
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let error = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => true,
            RDKafkaLogLevel::Warning => false,
            _ => {
                tracing::debug!(target: "librdkafka", facility, "{message}");
                return;
            }
        };
        let Some(left_out) = self.repeats.admit(&format!("log {facility} {error}")) else {
            return;
        };
        if error {
            tracing::error!(target: "librdkafka", facility, left_out, "{message}");
        } else {
            tracing::warn!(target: "librdkafka", facility, left_out, "{message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(left_out) = self.repeats.admit(&format!("error {}", error_kind(&error))) {
            tracing::warn!(target: "librdkafka", %error, left_out, "{reason}");
        }
    }
}

/// Also a consumer's context (the plugins topic's reader: no group, no rebalances).
impl ConsumerContext for QuietContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_kind_is_logged_once_per_interval_with_what_was_left_out() {
        let repeats = Repeats::new(Duration::from_millis(200));
        assert_eq!(repeats.admit("down"), Some(0), "the first is logged");
        assert_eq!(repeats.admit("down"), None);
        assert_eq!(repeats.admit("down"), None);
        assert_eq!(repeats.admit("refused"), Some(0), "kinds are counted apart");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            repeats.admit("down"),
            Some(2),
            "the next says how many were left out"
        );
        assert_eq!(repeats.admit("down"), None);
        assert_eq!(repeats.admit("refused"), Some(0));
    }

    #[test]
    fn kinds_past_the_bound_forget_the_oldest() {
        let repeats = Repeats::new(Duration::from_secs(60));
        for k in 0..MAX_KINDS + 10 {
            assert_eq!(repeats.admit(&k.to_string()), Some(0));
        }
        assert!(repeats.kinds.lock().unwrap().len() <= MAX_KINDS);
        assert_eq!(repeats.admit(&(MAX_KINDS + 9).to_string()), None);
    }
}
