//! The Prometheus registry served on the internal port. FireScroll's three metrics keep their
//! names and buckets (docs/architecture.md, "FireScroll compatibility"), with a bounded label set; the rest are FireScroll-Rust's own.

mod sharded;

pub use sharded::{ShardedHistogram, ShardedHistogramVec};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// `http_latencies_micro{operation}`: whole HTTP request time, µs.
    pub http_latency: ShardedHistogramVec,
    /// `partition_operation_latencies_micro{operation}`: one partition read or apply, µs.
    pub partition_latency: ShardedHistogramVec,
    /// `partitions`: partitions owned by this node.
    pub partitions: IntGauge,
    /// `firescroll_partitions_standby`: partitions the log took from this node before settling
    /// their next owner, still answering reads from their last state.
    pub partitions_standby: IntGauge,
    /// `firescroll_entries_applied_total{partition}`: entries applied (any outcome).
    pub entries_applied: IntCounterVec,
    /// `firescroll_entry_outcomes_total{outcome}`: applied, or the kind of rejection.
    pub outcomes: IntCounterVec,
    /// `firescroll_apply_lag_entries{partition}`: log end minus next offset to apply.
    pub apply_lag: IntGaugeVec,
    /// `firescroll_applied_offset{partition}`: last applied offset (-1 before any).
    pub applied_offset: IntGaugeVec,
    /// `firescroll_partition_healthy{partition}`: 1 serving, 0 stopped (failure or gap).
    pub partition_healthy: IntGaugeVec,
    /// `firescroll_read_index_bytes{partition}`: bytes the in-memory read index has allocated
    /// (its arenas and tables; 0 when it is off: the partition outgrew READ_INDEX_MAX_BYTES).
    pub read_index_bytes: IntGaugeVec,
    /// `firescroll_watch_history_bytes{partition}`: bytes of recent changes kept for watches to
    /// resume from, as counted against the partition's share of WATCH_HISTORY_BYTES.
    pub watch_history_bytes: IntGaugeVec,
    /// `firescroll_recent_outcomes_bytes{partition}`: bytes of the most recent entries' outcomes
    /// kept in memory for waiting writers (bounded at 8 MiB per partition).
    pub recent_outcomes_bytes: IntGaugeVec,
    /// `resp_latencies_micro{command}`: one Redis command, µs (known commands, else `other`).
    pub resp_latency: ShardedHistogramVec,
    /// `firescroll_cluster_members`: members of this region's gossip cluster with a current
    /// card, this node included (0 with gossip off).
    pub cluster_members: IntGauge,
    /// `firescroll_gossip_dropped_total`: gossip datagrams no key in GOSSIP_KEYS signed
    /// (a node with another key or none, or forged), dropped unread.
    pub gossip_dropped: IntCounter,
    /// `firescroll_proxied_reads_total{operation,result}`: reads sent to another node
    /// (get/list/outcomes; ok, failover, error).
    pub proxied_reads: IntCounterVec,
    /// `firescroll_proxy_latency_micro{operation}`: one proxied request, µs.
    pub proxy_latency: ShardedHistogramVec,
    /// `firescroll_peer_requests_total{operation}`: reads this node answered for its peers.
    pub peer_requests: IntCounterVec,
    /// `firescroll_snapshots_total{result}`: S3 snapshots uploaded (`ok`) or failed (`failed`).
    pub snapshots: IntCounterVec,
    /// `firescroll_snapshot_offset{partition}`: the offset the newest snapshot this node uploaded
    /// of a partition starts after (its next offset).
    pub snapshot_offset: IntGaugeVec,
    /// `firescroll_snapshot_restores_total{result}`: partitions restored from a snapshot
    /// (`ok`), or snapshots skipped because they did not verify (`invalid`) or could not be
    /// fetched (`failed`: S3, or the local disk they are downloaded to).
    pub snapshot_restores: IntCounterVec,
    /// `firescroll_snapshot_age_seconds{partition}`: how old the newest snapshot of a partition
    /// is (this node's upload, or the newest in the bucket), updated every snapshot pass.
    pub snapshot_age: IntGaugeVec,
    /// `firescroll_snapshot_bytes{partition}`: the size of the newest snapshot object this node
    /// uploaded.
    pub snapshot_bytes: IntGaugeVec,
    /// `firescroll_snapshot_duration_seconds`: one partition's snapshot, from reading the store
    /// to the manifest written.
    pub snapshot_duration: Histogram,
    /// `firescroll_requests_refused_total{reason}`: requests refused to protect the node (busy:
    /// too many expensive lists at once; connections: the HTTP connection cap; disk_space;
    /// new_disk: writes to a partition not yet restored onto a new disk).
    pub requests_refused: IntCounterVec,
    /// `firescroll_client_memory_bytes`: requests still arriving and answers not yet taken by
    /// their clients (Redis and HTTP), node-wide (bounded by CLIENT_MEMORY_MAX_BYTES).
    pub client_memory_bytes: IntGauge,
    /// `firescroll_clients_evicted_total{port}`: connections closed because what client
    /// connections held passed CLIENT_MEMORY_MAX_BYTES and they held the most.
    pub clients_evicted: IntCounterVec,
    /// `firescroll_tls_reloads_total{result}`: TLS certificate sets read again after their files
    /// changed or on SIGHUP (`ok`, or `failed`: the previous one is still served).
    pub tls_reloads: IntCounterVec,
    /// `firescroll_tls_certificate_expiry_timestamp_seconds`: when the certificate the TLS ports
    /// serve expires (unix seconds; 0 with TLS off). Alert well before it.
    pub tls_certificate_expiry: IntGauge,
    /// `firescroll_tls_handshake_failures_total{port,reason}`: connections to a TLS port closed
    /// before TLS was up (`plaintext`: the client spoke without TLS; `handshake`; `timeout`).
    pub tls_handshake_failures: IntCounterVec,
    /// `firescroll_reads_cancelled_total`: expensive reads stopped early because their client
    /// went away.
    pub reads_cancelled: IntCounter,
    /// `firescroll_disk_free_bytes`: free space of the data directory's volume, as last looked
    /// up (writes are refused below MIN_FREE_DISK_BYTES).
    pub disk_free_bytes: IntGauge,
    /// `firescroll_partition_stalled{partition}`: 1 while the applier has been on one entry
    /// longer than the stall threshold.
    pub partition_stalled: IntGaugeVec,
    /// `firescroll_records_expired_total`: records removed from the store because the log's
    /// time (entry timestamps) reached their deadline.
    pub records_expired: IntCounter,
    /// `firescroll_apply_missed_wakeups_total`: batches the appliers found only on their
    /// once-a-second sweep, because the log never woke them (should stay 0).
    pub apply_missed_wakeups: IntCounter,
    /// `firescroll_expiry_ticks_total{result}`: tick entries this node appended for quiet
    /// partitions with due deadlines (`ok`, `failed`).
    pub expiry_ticks: IntCounterVec,
    /// Children of the two latency histograms for the hot paths, resolved once: looking a label
    /// up per request costs a hash and a lock.
    hot: Vec<(&'static str, ShardedHistogram, ShardedHistogram)>,
    /// Pre-resolved children of `resp_latency`.
    resp_hot: Vec<(&'static str, ShardedHistogram)>,
    /// Pre-resolved children for proxied point reads, counted and timed once per read.
    proxied_get_ok: IntCounter,
    proxy_get_latency: ShardedHistogram,
}

/// Whole microseconds of `elapsed`, as histograms take them. `Duration::as_micros` is a `u128`,
/// and turning that into a float is a library call, a visible part of a pipelined `GET`.
pub fn micros(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs() * 1_000_000 + u64::from(elapsed.subsec_micros())) as f64
}

/// Redis commands with their own latency label; the rest count as `other` (a bounded set).
pub const RESP_MEASURED: [&str; 17] = [
    "get", "mget", "exists", "set", "del", "hget", "hmget", "hgetall", "hkeys", "hvals", "hlen",
    "hexists", "hset", "hdel", "hscan", "ping", "other",
];

/// One connection's latency histograms of Redis commands: observing takes no atomic (a
/// pipelined `GET` is a microsecond or two, and the shared histogram's atomics were a visible
/// part of it); what was observed reaches the node's histograms on [`RespLatencies::flush`],
/// which a connection calls once per batch of commands it answers, and when dropped (each
/// local histogram flushes itself then).
pub struct RespLatencies {
    hot: Vec<(&'static str, prometheus::local::LocalHistogram)>,
    /// Bit `i` set: `hot[i]` observed something since the last flush.
    touched: u32,
}

impl RespLatencies {
    /// Records a command's latency; commands not in [`RESP_MEASURED`] count as `other`.
    pub fn observe(&mut self, command: &[u8], micros: f64) {
        let index = self
            .hot
            .iter()
            .position(|(name, _)| command.eq_ignore_ascii_case(name.as_bytes()))
            .unwrap_or(self.hot.len() - 1);
        self.hot[index].1.observe(micros);
        self.touched |= 1 << index;
    }

    /// Adds what was observed since the last flush to the node's histograms (only those that
    /// observed anything: a connection answering one command at a time flushes one).
    pub fn flush(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        while touched != 0 {
            let index = touched.trailing_zeros() as usize;
            self.hot[index].1.flush();
            touched &= touched - 1;
        }
    }
}

impl std::fmt::Debug for RespLatencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespLatencies").finish_non_exhaustive()
    }
}

/// The operation labels with pre-resolved histograms: HTTP operations and partition reads.
const HOT_LABELS: [&str; 9] = [
    "get",
    "get_full_miss",
    "list",
    "list_full_miss",
    "put",
    "delete",
    "batch",
    "outcomes",
    "unknown",
];

const HTTP_BUCKETS: &[f64] = &[
    100.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0, 2000.0, 2500.0, 3000.0,
    4000.0, 5000.0, 6000.0, 10000.0, 15000.0,
];
const PARTITION_BUCKETS: &[f64] = &[
    10.0, 15.0, 25.0, 50.0, 75.0, 100.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0,
    2000.0, 2500.0, 3000.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_latency = ShardedHistogramVec::new(
            HistogramOpts::new(
                "http_latencies_micro",
                "Full HTTP request processing latencies in microseconds.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let partition_latency = ShardedHistogramVec::new(
            HistogramOpts::new(
                "partition_operation_latencies_micro",
                "Latency of one partition-level operation in microseconds.",
            )
            .buckets(PARTITION_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let partitions =
            IntGauge::new("partitions", "Partitions owned by this node.").expect("valid metric");
        let partitions_standby = IntGauge::new(
            "firescroll_partitions_standby",
            "Partitions taken from this node before their next owner was settled, still answering reads from their last state.",
        )
        .expect("valid metric");
        let entries_applied = IntCounterVec::new(
            Opts::new(
                "firescroll_entries_applied_total",
                "Log entries applied, any outcome.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let outcomes = IntCounterVec::new(
            Opts::new(
                "firescroll_entry_outcomes_total",
                "Entry outcomes: applied, or the kind of deterministic rejection.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let apply_lag = IntGaugeVec::new(
            Opts::new(
                "firescroll_apply_lag_entries",
                "Entries in the log not yet applied locally.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let applied_offset = IntGaugeVec::new(
            Opts::new(
                "firescroll_applied_offset",
                "Last applied log offset (-1 before any).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let partition_healthy = IntGaugeVec::new(
            Opts::new(
                "firescroll_partition_healthy",
                "1 while the partition applies and serves; 0 when stopped by a failure or a gap.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let read_index_bytes = IntGaugeVec::new(
            Opts::new(
                "firescroll_read_index_bytes",
                "Bytes the partition's in-memory read index has allocated (0 when it is off).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let watch_history_bytes = IntGaugeVec::new(
            Opts::new(
                "firescroll_watch_history_bytes",
                "Bytes of recent changes the partition keeps for watches to resume from, as counted against its share of WATCH_HISTORY_BYTES.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let recent_outcomes_bytes = IntGaugeVec::new(
            Opts::new(
                "firescroll_recent_outcomes_bytes",
                "Bytes of the partition's most recent outcomes kept in memory for waiting writers (at most 8 MiB).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let resp_latency = ShardedHistogramVec::new(
            HistogramOpts::new(
                "resp_latencies_micro",
                "Redis protocol command latencies in microseconds.",
            )
            .buckets(PARTITION_BUCKETS.to_vec()),
            &["command"],
        )
        .expect("valid metric");
        let cluster_members = IntGauge::new(
            "firescroll_cluster_members",
            "Members of this region's gossip cluster with a current card, this node included.",
        )
        .expect("valid metric");
        let gossip_dropped = IntCounter::new(
            "firescroll_gossip_dropped_total",
            "Gossip datagrams dropped unread because no key in GOSSIP_KEYS signed them.",
        )
        .expect("valid metric");
        let proxied_reads = IntCounterVec::new(
            Opts::new(
                "firescroll_proxied_reads_total",
                "Reads sent to another node: ok, failover (tried another owner), error.",
            ),
            &["operation", "result"],
        )
        .expect("valid metric");
        let proxy_latency = ShardedHistogramVec::new(
            HistogramOpts::new(
                "firescroll_proxy_latency_micro",
                "One request to another node for a proxied read, in microseconds.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let peer_requests = IntCounterVec::new(
            Opts::new(
                "firescroll_peer_requests_total",
                "Reads this node answered for other nodes of its region (get, list, outcomes).",
            ),
            &["operation"],
        )
        .expect("valid metric");
        let disk_free_bytes = IntGauge::new(
            "firescroll_disk_free_bytes",
            "Free bytes of the data directory's volume, as last looked up (writes are refused below MIN_FREE_DISK_BYTES).",
        )
        .expect("valid metric");
        let requests_refused = IntCounterVec::new(
            Opts::new(
                "firescroll_requests_refused_total",
                "Requests refused to protect the node: busy (expensive lists), connections (cap), \
                 disk_space (writes while the disk is almost full), new_disk (writes to a \
                 partition not yet restored from S3 onto a new disk).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let client_memory_bytes = IntGauge::new(
            "firescroll_client_memory_bytes",
            "Requests still arriving and answers not yet taken by their clients (Redis and HTTP), node-wide (bounded by CLIENT_MEMORY_MAX_BYTES).",
        )
        .expect("valid metric");
        let clients_evicted = IntCounterVec::new(
            Opts::new(
                "firescroll_clients_evicted_total",
                "Connections closed because what client connections held passed \
                 CLIENT_MEMORY_MAX_BYTES and they held the most (port: redis, http).",
            ),
            &["port"],
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "firescroll_tls_reloads_total",
                "TLS certificate sets read again after their files changed or on SIGHUP (ok; failed: the previous one is still served).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let tls_certificate_expiry = IntGauge::new(
            "firescroll_tls_certificate_expiry_timestamp_seconds",
            "When the certificate the TLS ports serve expires, unix seconds (0 with TLS off): alert well before it.",
        )
        .expect("valid metric");
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "firescroll_tls_handshake_failures_total",
                "Connections to a TLS port closed before TLS was up (plaintext: the client spoke without TLS; handshake; timeout).",
            ),
            &["port", "reason"],
        )
        .expect("valid metric");
        let reads_cancelled = IntCounter::new(
            "firescroll_reads_cancelled_total",
            "Expensive reads (lists with `if`) stopped early because their client went away.",
        )
        .expect("valid metric");
        // Constant 1: which release runs and the newest log format it applies, so an operator
        // can check every node before writers use a newer format (docs/log-entry-v1.md).
        let build_info = IntGaugeVec::new(
            Opts::new(
                "firescroll_build_info",
                "Always 1: the FireScroll release (version) and the newest log entry format it \
                 applies (log_format).",
            ),
            &["version", "log_format"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &crate::model::ENTRY_VERSION.to_string(),
            ])
            .set(1);
        let partition_stalled = IntGaugeVec::new(
            Opts::new(
                "firescroll_partition_stalled",
                "1 while a partition's applier has made no progress on one entry for longer than \
                 STALL_THRESHOLD_MS.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let snapshots = IntCounterVec::new(
            Opts::new(
                "firescroll_snapshots_total",
                "S3 snapshots of partitions this node uploaded (ok) or failed to (failed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let snapshot_offset = IntGaugeVec::new(
            Opts::new(
                "firescroll_snapshot_offset",
                "The next offset of the newest snapshot this node uploaded, per partition.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let snapshot_restores = IntCounterVec::new(
            Opts::new(
                "firescroll_snapshot_restores_total",
                "Partitions restored from an S3 snapshot (ok), or snapshots that did not verify and were skipped (invalid).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let snapshot_age = IntGaugeVec::new(
            Opts::new(
                "firescroll_snapshot_age_seconds",
                "Age of the newest snapshot of each partition this node serves (its own upload or the newest in the bucket).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let snapshot_bytes = IntGaugeVec::new(
            Opts::new(
                "firescroll_snapshot_bytes",
                "Size of the newest snapshot object this node uploaded, per partition.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let snapshot_duration = Histogram::with_opts(
            HistogramOpts::new(
                "firescroll_snapshot_duration_seconds",
                "One partition's snapshot: reading the store, compressing, uploading, manifest.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let records_expired = IntCounter::new(
            "firescroll_records_expired_total",
            "Records removed at apply because the log's time reached their deadline.",
        )
        .expect("valid metric");
        let apply_missed_wakeups = IntCounter::new(
            "firescroll_apply_missed_wakeups_total",
            "Batches the appliers found only on their once-a-second sweep: the log did not wake them (should stay 0).",
        )
        .expect("valid metric");
        let expiry_ticks = IntCounterVec::new(
            Opts::new(
                "firescroll_expiry_ticks_total",
                "Tick entries appended for quiet partitions whose deadlines were due (ok, failed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(records_expired.clone()),
            Box::new(apply_missed_wakeups.clone()),
            Box::new(expiry_ticks.clone()),
            Box::new(snapshot_age.clone()),
            Box::new(snapshot_bytes.clone()),
            Box::new(snapshot_duration.clone()),
            Box::new(snapshot_restores.clone()),
            Box::new(snapshots.clone()),
            Box::new(snapshot_offset.clone()),
            Box::new(requests_refused.clone()),
            Box::new(client_memory_bytes.clone()),
            Box::new(clients_evicted.clone()),
            Box::new(disk_free_bytes.clone()),
            Box::new(partition_stalled.clone()),
            Box::new(build_info),
            Box::new(read_index_bytes.clone()),
            Box::new(watch_history_bytes.clone()),
            Box::new(recent_outcomes_bytes.clone()),
            Box::new(reads_cancelled.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(tls_handshake_failures.clone()),
            Box::new(tls_certificate_expiry.clone()),
            Box::new(partition_latency.clone()),
            Box::new(partitions.clone()),
            Box::new(partitions_standby.clone()),
            Box::new(entries_applied.clone()),
            Box::new(outcomes.clone()),
            Box::new(apply_lag.clone()),
            Box::new(applied_offset.clone()),
            Box::new(partition_healthy.clone()),
            Box::new(resp_latency.clone()),
            Box::new(cluster_members.clone()),
            Box::new(gossip_dropped.clone()),
            Box::new(proxied_reads.clone()),
            Box::new(proxy_latency.clone()),
            Box::new(peer_requests.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        let hot = HOT_LABELS
            .iter()
            .map(|&label| {
                (
                    label,
                    http_latency.with_label_values(&[label]),
                    partition_latency.with_label_values(&[label]),
                )
            })
            .collect();
        let resp_hot = RESP_MEASURED
            .iter()
            .map(|&command| (command, resp_latency.with_label_values(&[command])))
            .collect();
        let proxied_get_ok = proxied_reads.with_label_values(&["get", "ok"]);
        let proxy_get_latency = proxy_latency.with_label_values(&["get"]);
        Metrics {
            hot,
            resp_hot,
            proxied_get_ok,
            proxy_get_latency,
            registry,
            http_latency,
            partition_latency,
            partitions,
            partitions_standby,
            entries_applied,
            outcomes,
            apply_lag,
            applied_offset,
            partition_healthy,
            resp_latency,
            cluster_members,
            gossip_dropped,
            proxied_reads,
            proxy_latency,
            peer_requests,
            requests_refused,
            client_memory_bytes,
            clients_evicted,
            disk_free_bytes,
            partition_stalled,
            read_index_bytes,
            watch_history_bytes,
            recent_outcomes_bytes,
            reads_cancelled,
            tls_reloads,
            tls_handshake_failures,
            tls_certificate_expiry,
            snapshots,
            snapshot_offset,
            snapshot_restores,
            snapshot_age,
            snapshot_bytes,
            snapshot_duration,
            records_expired,
            apply_missed_wakeups,
            expiry_ticks,
        }
    }

    fn hot(&self, label: &str) -> Option<&(&'static str, ShardedHistogram, ShardedHistogram)> {
        self.hot.iter().find(|(l, _, _)| *l == label)
    }

    /// Records an HTTP request's latency under `operation`.
    pub fn observe_http(&self, operation: &str, micros: f64) {
        match self.hot(operation) {
            Some((_, http, _)) => http.observe(micros),
            None => self.http_latency.observe(&[operation], micros),
        }
    }

    /// Counts a read sent to another node (`firescroll_proxied_reads_total`).
    pub fn count_proxied(&self, operation: &str, result: &str) {
        if operation == "get" && result == "ok" {
            self.proxied_get_ok.inc();
        } else {
            self.proxied_reads
                .with_label_values(&[operation, result])
                .inc();
        }
    }

    /// Records one proxied request's latency (`firescroll_proxy_latency_micro`).
    pub fn observe_proxy(&self, operation: &str, micros: f64) {
        if operation == "get" {
            self.proxy_get_latency.observe(micros);
        } else {
            self.proxy_latency.observe(&[operation], micros);
        }
    }

    /// Records a partition-level operation's latency under `operation`.
    pub fn observe_partition(&self, operation: &str, micros: f64) {
        match self.hot(operation) {
            Some((_, _, partition)) => partition.observe(micros),
            None => self.partition_latency.observe(&[operation], micros),
        }
    }

    /// Latency histograms of Redis commands for one connection (see [`RespLatencies`]).
    pub fn resp_latencies(&self) -> RespLatencies {
        const {
            assert!(
                RESP_MEASURED.len() <= 32,
                "RespLatencies::touched has 32 bits"
            )
        };
        RespLatencies {
            hot: self
                .resp_hot
                .iter()
                .map(|(name, histogram)| (*name, histogram.local()))
                .collect(),
            touched: 0,
        }
    }

    /// Drops a partition's gauges when this node stops owning it, so they do not linger stale.
    pub fn forget_partition(&self, partition: u32) {
        let label = partition.to_string();
        for gauge in [
            &self.apply_lag,
            &self.applied_offset,
            &self.partition_healthy,
            &self.snapshot_age,
            &self.snapshot_offset,
            &self.snapshot_bytes,
        ] {
            let _ = gauge.remove_label_values(&[&label]);
        }
    }

    /// Adds metrics owned elsewhere (the plugin host's) to the registry.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "a metric could not be registered");
        }
    }

    /// The text exposition of every metric.
    /// Per Redis command measured ([`RESP_MEASURED`], `other` for the rest): how many were
    /// answered and their latencies' sum in microseconds, since the node started (`INFO
    /// commandstats`). A connection's latest batch of commands may not be in yet.
    pub fn resp_command_totals(&self) -> Vec<(&'static str, u64, f64)> {
        self.resp_hot
            .iter()
            .map(|(name, histogram)| {
                let (calls, micros) = histogram.totals();
                (*name, calls, micros)
            })
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_whole_microseconds_as_before() {
        use std::time::Duration;
        for d in [
            Duration::ZERO,
            Duration::from_nanos(999),
            Duration::from_nanos(10_999),
            Duration::from_micros(1_500_000),
            Duration::new(3, 5_001),
            Duration::from_secs(86_400 * 365),
        ] {
            assert_eq!(micros(d), d.as_micros() as f64, "{d:?}");
        }
    }

    fn count(metrics: &Metrics, command: &str) -> u64 {
        let series = format!("resp_latencies_micro_count{{command=\"{command}\"}} ");
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    #[test]
    fn a_connections_latencies_reach_the_node_when_flushed_or_dropped() {
        let metrics = Metrics::new();
        let mut latencies = metrics.resp_latencies();
        for _ in 0..3 {
            latencies.observe(b"GET", 5.0);
        }
        latencies.observe(b"echo", 1.0);
        assert_eq!(count(&metrics, "get"), 0, "not before a flush");
        latencies.flush();
        assert_eq!(count(&metrics, "get"), 3);
        assert_eq!(
            count(&metrics, "other"),
            1,
            "unmeasured commands count as other"
        );
        latencies.flush();
        assert_eq!(count(&metrics, "get"), 3, "a flush adds only what is new");
        latencies.observe(b"hget", 2.0);
        latencies.observe(b"get", 2.0);
        drop(latencies);
        assert_eq!(count(&metrics, "get"), 4, "dropping flushes");
        assert_eq!(count(&metrics, "hget"), 1);
    }
}
