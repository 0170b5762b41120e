//! The Redis port's counters, for `INFO stats` (and `redis-cli --stat`, redis_exporter and
//! the Datadog and Grafana Redis dashboards built on it): commands, connections, network
//! bytes, key lookups that hit or missed, and their rates over the last ~1.6 s as Redis keeps
//! them (`instantaneous_ops_per_sec`).
//!
//! Each connection counts into its own [`Unflushed`] and adds it to the shared [`ServerStats`]
//! once per batch of commands it answers: a shared counter bumped per command moves its cache
//! line between the cores serving connections.

use super::Reply;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the rates are sampled, and how many samples they average: Redis's
/// `STATS_METRIC_SAMPLES` of one per `serverCron` tick (100 ms).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const SAMPLES: usize = 16;

/// Counters of the Redis port, for `INFO`.
#[derive(Debug)]
pub struct ServerStats {
    /// When the port began serving (`uptime_in_seconds`).
    pub started: Instant,
    /// Random per start, as Redis's `run_id`: monitoring tells a restart by it.
    pub run_id: String,
    /// The port served.
    pub port: u16,
    /// Connections served at once (`maxclients`).
    pub max_clients: usize,
    /// Connections open now.
    pub clients: AtomicU64,
    /// Connections accepted since start (or `CONFIG RESETSTAT`).
    pub connections: AtomicU64,
    /// Connections refused past `max_clients` (`rejected_connections`).
    pub rejected: AtomicU64,
    /// What the connections counted, added once per batch.
    totals: Totals,
    /// `firescroll_records_expired_total` and the Redis port's evicted clients at the last
    /// `CONFIG RESETSTAT`: `INFO` shows what came after (the metrics themselves never reset).
    expired_base: AtomicU64,
    evicted_base: AtomicU64,
    rates: Mutex<Rates>,
}

/// Counts shared by the connections, on a cache line of their own: a connection adds what it
/// counted to each at the end of every batch, so after the first the line is already this
/// core's (a counter sharing a line with the others moved it between the cores once more per
/// counter).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Totals {
    commands: AtomicU64,
    net_input: AtomicU64,
    net_output: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What one connection counted and has not yet added to [`ServerStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unflushed {
    pub commands: u64,
    /// Bytes read from the client.
    pub net_input: u64,
    /// Bytes the client's socket took.
    pub net_output: u64,
    /// Key lookups of read commands that found the key (or field), and that did not.
    pub hits: u64,
    pub misses: u64,
}

/// The last [`SAMPLES`] per-second rates of commands, input and output bytes, and the totals
/// they were taken from.
#[derive(Debug)]
struct Rates {
    last: (Instant, Unflushed),
    samples: [[f64; 3]; SAMPLES],
    next: usize,
}

/// A snapshot of the counters, with a connection's own not yet added.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub totals: Unflushed,
    pub ops_per_sec: f64,
    pub input_kbps: f64,
    pub output_kbps: f64,
}

impl ServerStats {
    pub fn new(port: u16, max_clients: usize) -> Self {
        use rand::RngExt as _;
        let mut rng = rand::rng();
        ServerStats {
            started: Instant::now(),
            run_id: (0..40)
                .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
                .collect(),
            port,
            max_clients,
            clients: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            totals: Totals::default(),
            expired_base: AtomicU64::new(0),
            evicted_base: AtomicU64::new(0),
            rates: Mutex::new(Rates {
                last: (Instant::now(), Unflushed::default()),
                samples: [[0.0; 3]; SAMPLES],
                next: 0,
            }),
        }
    }

    /// Adds what a connection counted (and zeroes it).
    pub fn add(&self, counted: &mut Unflushed) {
        let counted = std::mem::take(counted);
        let totals = &self.totals;
        for (total, n) in [
            (&totals.commands, counted.commands),
            (&totals.net_input, counted.net_input),
            (&totals.net_output, counted.net_output),
            (&totals.hits, counted.hits),
            (&totals.misses, counted.misses),
        ] {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// What all connections added so far.
    fn totals(&self) -> Unflushed {
        let t = &self.totals;
        Unflushed {
            commands: t.commands.load(Ordering::Relaxed),
            net_input: t.net_input.load(Ordering::Relaxed),
            net_output: t.net_output.load(Ordering::Relaxed),
            hits: t.hits.load(Ordering::Relaxed),
            misses: t.misses.load(Ordering::Relaxed),
        }
    }

    /// Takes one sample of the rates (every [`SAMPLE_EVERY`]).
    pub fn sample(&self) {
        let now = Instant::now();
        let totals = self.totals();
        let mut rates = self.rates.lock().expect("rates lock");
        let (then, before) = rates.last;
        let seconds = now.duration_since(then).as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        // Saturating: `CONFIG RESETSTAT` may have zeroed a total since the last sample.
        let per_second = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let slot = rates.next;
        rates.samples[slot] = [
            per_second(totals.commands, before.commands),
            per_second(totals.net_input, before.net_input),
            per_second(totals.net_output, before.net_output),
        ];
        rates.next = (slot + 1) % SAMPLES;
        rates.last = (now, totals);
    }

    /// The counters, with `own` (the asking connection's, not yet added) included.
    pub fn snapshot(&self, own: &Unflushed) -> Snapshot {
        let t = self.totals();
        let [ops, input, output] = {
            let rates = self.rates.lock().expect("rates lock");
            let mut sum = [0.0; 3];
            for sample in &rates.samples {
                for (s, v) in sum.iter_mut().zip(sample) {
                    *s += v;
                }
            }
            sum.map(|s| s / SAMPLES as f64)
        };
        Snapshot {
            totals: Unflushed {
                commands: t.commands + own.commands,
                net_input: t.net_input + own.net_input,
                net_output: t.net_output + own.net_output,
                hits: t.hits + own.hits,
                misses: t.misses + own.misses,
            },
            ops_per_sec: ops,
            input_kbps: input / 1024.0,
            output_kbps: output / 1024.0,
        }
    }

    /// `expired` and `evicted` (the node's metrics) as counted since the last reset.
    pub fn since_reset(&self, expired: u64, evicted: u64) -> (u64, u64) {
        (
            expired.saturating_sub(self.expired_base.load(Ordering::Relaxed)),
            evicted.saturating_sub(self.evicted_base.load(Ordering::Relaxed)),
        )
    }

    /// `CONFIG RESETSTAT`: zeroes what `INFO stats` counts; `expired` and `evicted` are the
    /// metrics' values now, counted from here on.
    pub fn reset(&self, expired: u64, evicted: u64) {
        let t = &self.totals;
        for counter in [
            &self.connections,
            &self.rejected,
            &t.commands,
            &t.net_input,
            &t.net_output,
            &t.hits,
            &t.misses,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.expired_base.store(expired, Ordering::Relaxed);
        self.evicted_base.store(evicted, Ordering::Relaxed);
    }
}

/// Counts the key lookups of read command `name` from its `reply`, as Redis counts
/// `keyspace_hits` and `keyspace_misses`: a key (for hash commands, a field) found is a hit,
/// one not found a miss. `keys` is how many keys the command named (`EXISTS`). Errors, and
/// commands that are not reads of keys, count nothing.
pub fn count_lookups(counted: &mut Unflushed, name: &[u8], keys: usize, reply: &Reply) {
    let mut note = |hits: usize, misses: usize| {
        counted.hits += hits as u64;
        counted.misses += misses as u64;
    };
    let is = |command: &[u8]| name.eq_ignore_ascii_case(command);
    match reply {
        Reply::Null | Reply::Bulk(_) if is(b"get") || is(b"hget") || is(b"json.get") => {
            let found = matches!(reply, Reply::Bulk(_));
            note(usize::from(found), usize::from(!found));
        }
        Reply::Array(values) if is(b"mget") || is(b"hmget") => {
            let found = values.iter().filter(|v| !matches!(v, Reply::Null)).count();
            note(found, values.len() - found);
        }
        Reply::Int(n) if is(b"exists") => {
            let found = usize::try_from(*n).unwrap_or(0).min(keys);
            note(found, keys - found);
        }
        Reply::Int(n) if is(b"hexists") || is(b"sismember") => {
            note(usize::from(*n == 1), usize::from(*n != 1));
        }
        Reply::Map(fields) if is(b"hgetall") => note(
            usize::from(!fields.is_empty()),
            usize::from(fields.is_empty()),
        ),
        Reply::Array(fields) if is(b"hgetall") => note(
            usize::from(!fields.is_empty()),
            usize::from(fields.is_empty()),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn counted(name: &str, keys: usize, reply: Reply) -> (u64, u64) {
        let mut counted = Unflushed::default();
        count_lookups(&mut counted, name.as_bytes(), keys, &reply);
        (counted.hits, counted.misses)
    }

    #[test]
    fn lookups_count_as_redis_counts_them() {
        let value = || Reply::Bulk(Bytes::from_static(b"v"));
        assert_eq!(counted("GET", 1, value()), (1, 0));
        assert_eq!(counted("get", 1, Reply::Null), (0, 1));
        assert_eq!(counted("HGET", 2, Reply::Null), (0, 1));
        assert_eq!(
            counted("MGET", 3, Reply::Array(vec![value(), Reply::Null, value()])),
            (2, 1)
        );
        assert_eq!(counted("EXISTS", 3, Reply::Int(1)), (1, 2));
        // A key named twice counts twice, as `EXISTS` counts it.
        assert_eq!(counted("EXISTS", 2, Reply::Int(2)), (2, 0));
        assert_eq!(counted("HEXISTS", 2, Reply::Int(0)), (0, 1));
        assert_eq!(counted("HGETALL", 1, Reply::Map(Vec::new())), (0, 1));
        // Errors, writes and other commands count nothing.
        assert_eq!(counted("GET", 1, Reply::err("WRONGTYPE")), (0, 0));
        assert_eq!(counted("SET", 2, Reply::ok()), (0, 0));
        assert_eq!(counted("DEL", 1, Reply::Int(0)), (0, 0));
    }

    #[test]
    fn rates_average_the_last_samples_and_reset_zeroes_the_totals() {
        let stats = ServerStats::new(6379, 10);
        stats.sample();
        let mut counted = Unflushed {
            commands: 1000,
            net_input: 2048,
            ..Unflushed::default()
        };
        std::thread::sleep(Duration::from_millis(20));
        stats.add(&mut counted);
        assert_eq!(counted, Unflushed::default(), "added counts are taken");
        stats.sample();
        let snapshot = stats.snapshot(&Unflushed {
            commands: 1,
            ..Unflushed::default()
        });
        assert_eq!(snapshot.totals.commands, 1001);
        assert_eq!(snapshot.totals.net_input, 2048);
        // 1,000 commands in one sample of at least 20 ms, averaged over 16 samples.
        assert!(snapshot.ops_per_sec > 0.0, "{snapshot:?}");
        assert!(
            snapshot.ops_per_sec <= 1000.0 / 0.020 / 16.0,
            "{snapshot:?}"
        );
        assert!(snapshot.input_kbps > 0.0 && snapshot.output_kbps == 0.0);
        stats.reset(7, 3);
        assert_eq!(stats.snapshot(&Unflushed::default()).totals.commands, 0);
        assert_eq!(stats.since_reset(10, 3), (3, 0));
        // A sample right after a reset does not go negative.
        stats.sample();
    }
}
