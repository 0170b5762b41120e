//! Latency histograms that every request thread observes at once without sharing a cache line.
//!
//! A prometheus `Histogram` is a handful of atomics that every observation updates; with two
//! or more threads observing the same one (every Redis `GET`, every HTTP get), those cache lines
//! bounce between cores, and `Histogram::observe` was the largest single item (14 %) of a
//! pipelined `GET` profile. Here each label set has one histogram per shard, a thread always
//! observes into the shard it was given on first use, and a scrape adds the shards up: the
//! exposition is exactly that of one `HistogramVec`.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per histogram: enough that the threads of a busy node (tokio workers, appliers)
/// rarely share one.
const SHARDS: usize = 8;

/// The calling thread's shard: handed out round-robin on first use.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A `HistogramVec` kept as one copy per shard; register it like one.
#[derive(Clone)]
pub struct ShardedHistogramVec {
    shards: Vec<HistogramVec>,
}

/// One label set's histogram, one copy per shard.
#[derive(Clone)]
pub struct ShardedHistogram {
    shards: Vec<Histogram>,
}

impl ShardedHistogramVec {
    pub fn new(opts: HistogramOpts, labels: &[&str]) -> prometheus::Result<Self> {
        let shards = (0..SHARDS)
            .map(|_| HistogramVec::new(opts.clone(), labels))
            .collect::<prometheus::Result<_>>()?;
        Ok(ShardedHistogramVec { shards })
    }

    /// The histogram of `values` (resolve it once for a hot path: this hashes and locks).
    pub fn with_label_values(&self, values: &[&str]) -> ShardedHistogram {
        ShardedHistogram {
            shards: self
                .shards
                .iter()
                .map(|shard| shard.with_label_values(values))
                .collect(),
        }
    }

    /// Observes `value` under `values` in the calling thread's shard.
    pub fn observe(&self, values: &[&str], value: f64) {
        self.shards[shard()]
            .with_label_values(values)
            .observe(value);
    }
}

impl ShardedHistogram {
    pub fn observe(&self, value: f64) {
        self.shards[shard()].observe(value);
    }

    /// How many values were observed, and their sum, over every shard.
    pub fn totals(&self) -> (u64, f64) {
        self.shards.iter().fold((0, 0.0), |(count, sum), shard| {
            (
                count + shard.get_sample_count(),
                sum + shard.get_sample_sum(),
            )
        })
    }

    /// A histogram that observes without atomics and adds what it observed to the calling
    /// thread's shard when flushed (and when dropped).
    pub fn local(&self) -> prometheus::local::LocalHistogram {
        self.shards[shard()].local()
    }
}

impl Collector for ShardedHistogramVec {
    fn desc(&self) -> Vec<&Desc> {
        self.shards[0].desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.shards[0].collect();
        for shard in &self.shards[1..] {
            for (family, other) in families.iter_mut().zip(shard.collect()) {
                merge(family, other);
            }
        }
        families
    }
}

/// Adds `other`'s histograms into `family`'s, label set by label set.
fn merge(family: &mut MetricFamily, mut other: MetricFamily) {
    for metric in other.take_metric() {
        let labels = metric.get_label();
        let found = family.mut_metric().iter_mut().find(|m| {
            m.get_label().len() == labels.len()
                && m.get_label()
                    .iter()
                    .zip(labels)
                    .all(|(a, b)| a.name() == b.name() && a.value() == b.value())
        });
        let Some(into) = found else {
            family.mut_metric().push(metric);
            continue;
        };
        let (sum, add) = (into.get_histogram(), metric.get_histogram());
        let mut merged = sum.clone();
        merged.set_sample_count(sum.get_sample_count() + add.get_sample_count());
        merged.set_sample_sum(sum.get_sample_sum() + add.get_sample_sum());
        let buckets = sum
            .get_bucket()
            .iter()
            .zip(add.get_bucket())
            .map(|(a, b)| {
                let mut bucket = a.clone();
                bucket.set_cumulative_count(a.cumulative_count() + b.cumulative_count());
                bucket
            })
            .collect();
        merged.set_bucket(buckets);
        into.set_histogram(merged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    #[test]
    fn a_scrape_adds_up_every_threads_observations() {
        let opts = HistogramOpts::new("t_latency", "test").buckets(vec![10.0, 100.0]);
        let sharded = ShardedHistogramVec::new(opts.clone(), &["op"]).unwrap();
        let plain = HistogramVec::new(opts, &["op"]).unwrap();
        let hot = sharded.with_label_values(&["get"]);
        std::thread::scope(|s| {
            for t in 0..(SHARDS + 3) {
                let (hot, sharded, plain) = (&hot, &sharded, &plain);
                s.spawn(move || {
                    for i in 0..100 {
                        let value = (t * 7 + i) as f64;
                        hot.observe(value);
                        plain.with_label_values(&["get"]).observe(value);
                        if i % 3 == 0 {
                            sharded.observe(&["put"], value * 2.0);
                            plain.with_label_values(&["put"]).observe(value * 2.0);
                        }
                    }
                });
            }
        });
        let text = |collector: Box<dyn Collector>| {
            let registry = Registry::new();
            registry.register(collector).unwrap();
            let mut out = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let expected = text(Box::new(plain));
        assert!(
            expected.contains(r#"t_latency_count{op="get"} 1100"#),
            "{expected}"
        );
        assert_eq!(text(Box::new(sharded)), expected);
    }
}
