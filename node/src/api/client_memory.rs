//! Memory the node holds for its clients' connections, node-wide, over the Redis and HTTP
//! ports (`CLIENT_MEMORY_MAX_BYTES`): requests still arriving, and answers their clients have
//! not taken yet.
//!
//! A client that asks for large answers and does not read them (slowly, or on purpose) makes
//! the node hold them: four connections each sending `MGET` of a 500 KB value 1,000 times and
//! never reading held 3.4 GB, and forty would have ended the process. A client that sends most
//! of a large request and stops does too: 100 connections each 7.9 MB into an 8 MB `SET` held
//! 830 MB, and `RESP_MAX_CLIENTS` allows 10,000. Each connection notes here what it holds; past
//! the bound, the connections holding the most are closed until the rest fit, as Redis 7
//! closes clients past `maxmemory-clients` (Redis leaves that off by default, and its process
//! then grows without bound). A connection whose client sends small requests and reads its
//! answers holds nothing worth noting between them, so noting costs it nothing.
//!
//! Stalled connections go first: those whose holding waits on their client and has not moved
//! for [`STALLED_AFTER`] (a client that takes nothing and sends nothing; state a connection keeps
//! while idle, its subscriptions, never stalls), the largest of them first, and only then the
//! largest of the rest. Largest-first alone let a thousand stuck watches, each just under a
//! writer's request body, fill the bound and close every larger write as it arrived.

use prometheus::{IntCounterVec, IntGauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Less than this held by a connection is noted as nothing: a connection's buffers hold that
/// much between ordinary commands, and the node's total (one cache line every connection
/// writes) is then left alone. 10,000 connections below it hold at most 640 MiB.
pub const COUNTED_FROM: usize = 64 * 1024;

/// A connection whose holding has not changed (nor its transfer moved on) for this long is
/// stalled, and closed before the others past the bound.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// `firescroll_client_memory_stalled_bytes`, computed when scraped: what connections whose
/// clients neither took nor sent anything for [`STALLED_AFTER`] hold (the part of
/// `firescroll_client_memory_bytes` closed first past the bound).
pub struct StalledBytes {
    memory: std::sync::Weak<ClientMemory>,
    gauge: IntGauge,
}

impl StalledBytes {
    /// The metric of `memory`'s stalled connections.
    pub fn new(memory: &Arc<ClientMemory>) -> Self {
        StalledBytes {
            memory: Arc::downgrade(memory),
            gauge: IntGauge::new(
                "firescroll_client_memory_stalled_bytes",
                "What connections whose clients neither took nor sent anything for a second \
                 hold (closed first past CLIENT_MEMORY_MAX_BYTES).",
            )
            .expect("valid metric"),
        }
    }
}

impl prometheus::core::Collector for StalledBytes {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        if let Some(memory) = self.memory.upgrade() {
            self.gauge.set(memory.stalled_bytes() as i64);
        }
        self.gauge.collect()
    }
}

/// What every connection of the node holds, and the bound on it.
pub struct ClientMemory {
    limit: usize,
    /// What holdings' change times count from.
    epoch: Instant,
    stalled_after: Duration,
    total: AtomicUsize,
    holders: Mutex<HashMap<u64, Arc<Holding>>>,
    next_id: AtomicU64,
    held_gauge: IntGauge,
    evicted: IntCounterVec,
}

/// What one connection holds, and how it learns that it was closed for it.
struct Holding {
    held: AtomicUsize,
    /// When the holding last changed or its transfer moved on, in µs from the node's epoch.
    moved_us: AtomicU64,
    /// Whether what it holds waits on its client (an answer not taken, a request not all
    /// arrived), as opposed to state it keeps while idle (a Redis connection's subscriptions):
    /// only a waiting holding can stall.
    waiting: AtomicBool,
    /// Chosen to be closed: not chosen again, nor counted as memory that will stay.
    evicted: AtomicBool,
    /// Never chosen (an administrator's `CLIENT NO-EVICT on`): what it holds still counts, and
    /// the others are closed for it, as Redis treats a no-evict client.
    exempt: AtomicBool,
    close: Notify,
    port: &'static str,
}

/// One connection's account (dropped with it: what it held is released).
pub struct MemoryHolder {
    memory: Arc<ClientMemory>,
    id: u64,
    holding: Arc<Holding>,
}

impl ClientMemory {
    /// A bound of `limit` bytes for the node, measured in `held_gauge`
    /// (`firescroll_client_memory_bytes`), closed connections counted in `evicted`
    /// (`firescroll_clients_evicted_total{port}`).
    pub fn new(limit: usize, held_gauge: IntGauge, evicted: IntCounterVec) -> Arc<Self> {
        Self::with_stall(limit, STALLED_AFTER, held_gauge, evicted)
    }

    /// As [`ClientMemory::new`], with holdings stalled after `stalled_after`.
    fn with_stall(
        limit: usize,
        stalled_after: Duration,
        held_gauge: IntGauge,
        evicted: IntCounterVec,
    ) -> Arc<Self> {
        Arc::new(ClientMemory {
            limit,
            epoch: Instant::now(),
            stalled_after,
            total: AtomicUsize::new(0),
            holders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            held_gauge,
            evicted,
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now, node-wide.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// An account for a new connection of `port` (`redis`, `http`).
    pub fn holder(self: &Arc<Self>, port: &'static str) -> MemoryHolder {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let holding = Arc::new(Holding {
            held: AtomicUsize::new(0),
            moved_us: AtomicU64::new(self.now_us()),
            waiting: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            exempt: AtomicBool::new(false),
            close: Notify::new(),
            port,
        });
        self.lock().insert(id, holding.clone());
        MemoryHolder {
            memory: self.clone(),
            id,
            holding,
        }
    }

    /// Microseconds since the epoch.
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Closes connections until what the others hold fits the bound: the stalled ones first,
    /// those holding the most first, and of those holding alike, the one that moved least
    /// recently (many watches hold the same event: the one whose client is taking it stays).
    fn evict_past_limit(&self) {
        let holders = self.lock();
        // Connections already chosen are on their way out: what they hold is going.
        let mut staying: usize = holders
            .values()
            .filter(|h| !h.evicted.load(Ordering::Relaxed))
            .map(|h| h.held.load(Ordering::Relaxed))
            .sum();
        if staying <= self.limit {
            return;
        }
        // Idle connections hold nothing: closing them would free nothing.
        let mut by_size: Vec<&Arc<Holding>> = holders
            .values()
            .filter(|h| {
                !h.evicted.load(Ordering::Relaxed)
                    && !h.exempt.load(Ordering::Relaxed)
                    && h.held.load(Ordering::Relaxed) > 0
            })
            .collect();
        let now = self.now_us();
        let stalled = |h: &Holding| self.is_stalled(h, now);
        by_size.sort_by_key(|h| {
            (
                std::cmp::Reverse(stalled(h)),
                std::cmp::Reverse(h.held.load(Ordering::Relaxed)),
                h.moved_us.load(Ordering::Relaxed),
            )
        });
        for holding in by_size {
            if staying <= self.limit {
                break;
            }
            let held = holding.held.load(Ordering::Relaxed);
            let stalled = stalled(holding);
            holding.evicted.store(true, Ordering::Relaxed);
            // A permit if the connection is not waiting on it right now.
            holding.close.notify_one();
            self.evicted.with_label_values(&[holding.port]).inc();
            tracing::warn!(
                port = holding.port,
                held_bytes = held,
                stalled,
                limit = self.limit,
                "closing a client connection: the requests and answers client connections \
                 hold pass CLIENT_MEMORY_MAX_BYTES, and it holds the most (of the stalled \
                 ones, if any: their clients neither took nor sent anything for a second)"
            );
            staying -= held;
        }
    }

    /// Whether `holding` waits on its client and has not moved for `stalled_after` at `now`.
    fn is_stalled(&self, holding: &Holding, now: u64) -> bool {
        holding.waiting.load(Ordering::Relaxed)
            && now.saturating_sub(holding.moved_us.load(Ordering::Relaxed))
                >= self.stalled_after.as_micros() as u64
    }

    /// What the stalled connections hold now (those closed first past the bound).
    pub fn stalled_bytes(&self) -> usize {
        let now = self.now_us();
        self.lock()
            .values()
            .filter(|h| !h.evicted.load(Ordering::Relaxed) && self.is_stalled(h, now))
            .map(|h| h.held.load(Ordering::Relaxed))
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Holding>>> {
        self.holders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryHolder {
    /// Notes that the connection now holds `bytes` (of requests and answers) (in
    /// place of what it noted before). Past the node's bound, the connections holding the most
    /// — this one, perhaps — are told to close ([`MemoryHolder::evicted`]).
    pub fn hold(&self, bytes: usize) {
        self.hold_waiting(bytes, true);
    }

    /// As [`MemoryHolder::hold`], saying whether any of it waits on the client (`false`: only
    /// state the connection keeps while idle, which never counts as stalled).
    pub fn hold_waiting(&self, bytes: usize, waiting: bool) {
        if self.holding.waiting.load(Ordering::Relaxed) != waiting {
            self.holding.waiting.store(waiting, Ordering::Relaxed);
        }
        // Small buffers are not worth an update of the node's total per command.
        let bytes = if bytes < COUNTED_FROM { 0 } else { bytes };
        // The usual case, a client that took every reply: nothing to write.
        if self.holding.held.load(Ordering::Relaxed) == bytes {
            return;
        }
        let before = self.holding.held.swap(bytes, Ordering::Relaxed);
        self.changed(before, bytes);
    }

    /// Notes `bytes` more held (a request's body arriving, an answer built), beside what the
    /// connection holds already (other requests of an HTTP/2 connection).
    pub fn add(&self, bytes: usize) {
        let before = self.holding.held.fetch_add(bytes, Ordering::Relaxed);
        self.changed(before, before + bytes);
    }

    /// Notes `bytes` of what [`MemoryHolder::add`] noted released.
    pub fn release(&self, bytes: usize) {
        let before = self.holding.held.fetch_sub(bytes, Ordering::Relaxed);
        self.changed(before, before - bytes);
    }

    /// Notes that the connection's transfer moved on (its client took part of an answer)
    /// though what it holds did not change: it is not stalled.
    pub fn moved(&self) {
        self.holding
            .moved_us
            .store(self.memory.now_us(), Ordering::Relaxed);
    }

    /// Moves the node's total from `before` to `bytes` for this connection.
    fn changed(&self, before: usize, bytes: usize) {
        if before == bytes {
            return;
        }
        self.moved();
        let total = if bytes > before {
            self.memory
                .total
                .fetch_add(bytes - before, Ordering::Relaxed)
                + (bytes - before)
        } else {
            self.memory
                .total
                .fetch_sub(before - bytes, Ordering::Relaxed)
                - (before - bytes)
        };
        self.memory.held_gauge.set(total as i64);
        if bytes > before && total > self.memory.limit {
            self.memory.evict_past_limit();
        }
    }

    /// Exempts the connection from being closed past the bound (`CLIENT NO-EVICT on`), or
    /// ends that (`off`). What it holds still counts.
    pub fn set_exempt(&self, exempt: bool) {
        self.holding.exempt.store(exempt, Ordering::Relaxed);
    }

    /// Whether the connection is exempt ([`MemoryHolder::set_exempt`]).
    pub fn exempt(&self) -> bool {
        self.holding.exempt.load(Ordering::Relaxed)
    }

    /// The node's bound this account is part of.
    pub fn node(&self) -> &ClientMemory {
        &self.memory
    }

    /// What the connection holds, as it last noted.
    pub fn held(&self) -> usize {
        self.holding.held.load(Ordering::Relaxed)
    }

    /// Resolves once the node chose to close this connection for what it holds.
    pub async fn evicted(&self) {
        self.holding.close.notified().await
    }
}

impl Drop for MemoryHolder {
    fn drop(&mut self) {
        self.hold(0);
        self.memory.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;
    use std::time::Duration;

    /// The unit of the tests' holdings: the least that is counted.
    const K: usize = COUNTED_FROM;

    fn memory(limit: usize) -> Arc<ClientMemory> {
        ClientMemory::new(
            limit,
            IntGauge::new("held", "held").unwrap(),
            IntCounterVec::new(Opts::new("evicted", "evicted"), &["port"]).unwrap(),
        )
    }

    /// A bound whose holdings stall after 50 ms.
    fn memory_stalling(limit: usize) -> Arc<ClientMemory> {
        ClientMemory::with_stall(
            limit,
            Duration::from_millis(50),
            IntGauge::new("held", "held").unwrap(),
            IntCounterVec::new(Opts::new("evicted", "evicted"), &["port"]).unwrap(),
        )
    }

    async fn is_evicted(holder: &MemoryHolder) -> bool {
        tokio::time::timeout(Duration::from_millis(20), holder.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn past_the_bound_the_largest_holders_are_closed_until_the_rest_fit() {
        let memory = memory(100 * K);
        let (small, large, middle) = (
            memory.holder("redis"),
            memory.holder("http"),
            memory.holder("redis"),
        );
        small.hold(10 * K);
        large.hold(60 * K);
        middle.hold(30 * K);
        assert_eq!(memory.held(), 100 * K);
        assert!(!is_evicted(&large).await, "at the bound, nobody is closed");
        // 120 held: closing the largest (60) leaves 60.
        middle.hold(50 * K);
        assert!(is_evicted(&large).await, "the largest holder is closed");
        assert!(!is_evicted(&middle).await && !is_evicted(&small).await);
        assert_eq!(memory.evicted.with_label_values(&["http"]).get(), 1);
        // The closed connection's answers count until it is gone, but it is not chosen twice,
        // and what it holds is not held against the others.
        middle.hold(80 * K);
        assert!(!is_evicted(&middle).await, "10 + 80 is within the bound");
        drop(large);
        assert_eq!(memory.held(), 90 * K);
        assert_eq!(memory.held_gauge.get(), (90 * K) as i64);
        // One connection alone past the bound is closed too.
        middle.hold(150 * K);
        assert!(is_evicted(&middle).await);
        assert!(!is_evicted(&small).await);
        drop(middle);
        drop(small);
        assert_eq!(memory.held(), 0);
        assert!(
            memory.lock().is_empty(),
            "every account left with its connection"
        );
    }

    #[tokio::test]
    async fn taking_answers_never_closes_a_connection() {
        let memory = memory(100 * K);
        let (a, b) = (memory.holder("redis"), memory.holder("redis"));
        a.hold(40 * K);
        b.hold(60 * K);
        // A connection whose client reads shrinks its holding: that alone closes nobody.
        b.hold(10 * K);
        assert!(!is_evicted(&a).await && !is_evicted(&b).await);
        assert_eq!(memory.held(), 50 * K);
        // A new large answer past the bound closes the one holding it, the largest.
        let c = memory.holder("redis");
        c.hold(70 * K);
        assert!(is_evicted(&c).await);
        assert!(!is_evicted(&a).await && !is_evicted(&b).await);
    }

    #[tokio::test]
    async fn buffers_below_the_counted_size_hold_nothing() {
        let memory = memory(100 * K);
        let a = memory.holder("redis");
        a.hold(K - 1);
        assert_eq!((memory.held(), a.held()), (0, 0));
        a.hold(K);
        assert_eq!(memory.held(), K);
        a.hold(K - 1);
        assert_eq!(
            memory.held(),
            0,
            "shrinking below it releases what was counted"
        );
    }

    #[tokio::test]
    async fn stalled_holders_are_closed_before_larger_ones_that_move() {
        let memory = memory_stalling(100 * K);
        // Three stuck watches, each holding an event its client does not take.
        let stuck: Vec<MemoryHolder> = (0..3).map(|_| memory.holder("http")).collect();
        for holder in &stuck {
            holder.hold(30 * K);
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        // A write's body arriving, larger than any of them, passes the bound: stuck ones go,
        // the largest first, until the rest fit (90 + 40 - 30 = 100).
        assert_eq!(memory.stalled_bytes(), 90 * K);
        let writer = memory.holder("http");
        writer.add(20 * K);
        writer.add(20 * K);
        assert!(!is_evicted(&writer).await, "the moving writer stays");
        let closed = futures_util::future::join_all(stuck.iter().map(is_evicted)).await;
        assert_eq!(closed.iter().filter(|&&c| c).count(), 1, "{closed:?}");
        assert_eq!(
            memory.stalled_bytes(),
            60 * K,
            "the one closed no longer counts, nor the moving writer"
        );
    }

    #[tokio::test]
    async fn a_transfer_that_moves_on_is_not_stalled() {
        let memory = memory_stalling(100 * K);
        let (stuck, reading) = (memory.holder("http"), memory.holder("http"));
        stuck.hold(40 * K);
        reading.hold(40 * K);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Its client took a slice of a large answer: the same amount is counted until the end.
        reading.moved();
        let new = memory.holder("redis");
        new.hold(30 * K);
        assert!(is_evicted(&stuck).await);
        assert!(!is_evicted(&reading).await && !is_evicted(&new).await);
    }

    #[tokio::test]
    async fn of_those_holding_alike_the_one_that_moved_least_recently_goes() {
        // Many watches stuck on one event hold the same as the watch whose client is taking it.
        let memory = memory(100 * K);
        let (stuck, taking) = (memory.holder("http"), memory.holder("http"));
        stuck.hold(40 * K);
        taking.hold(40 * K);
        tokio::time::sleep(Duration::from_millis(2)).await;
        taking.moved();
        memory.holder("http").hold(30 * K);
        assert!(is_evicted(&stuck).await);
        assert!(!is_evicted(&taking).await);
    }

    #[tokio::test]
    async fn idle_connections_are_never_closed_for_memory() {
        let memory = memory_stalling(100 * K);
        // Stalled, but holding nothing: closing it would free nothing.
        let idle = memory.holder("redis");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (a, b) = (memory.holder("http"), memory.holder("http"));
        a.hold(60 * K);
        b.hold(60 * K);
        assert!(!is_evicted(&idle).await);
        assert_eq!(memory.evicted.with_label_values(&["http"]).get(), 1);
        assert_eq!(memory.evicted.with_label_values(&["redis"]).get(), 0);
    }

    #[tokio::test]
    async fn state_kept_while_idle_never_stalls() {
        let memory = memory_stalling(100 * K);
        // A subscriber's channel names: held, unchanged, but waiting on nobody.
        let subscriber = memory.holder("redis");
        subscriber.hold_waiting(20 * K, false);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (a, b) = (memory.holder("redis"), memory.holder("redis"));
        a.hold(50 * K);
        b.hold(50 * K);
        assert!(!is_evicted(&subscriber).await);
        assert_eq!(memory.evicted.with_label_values(&["redis"]).get(), 1);
    }

    #[tokio::test]
    async fn an_exempt_connection_is_never_closed_but_its_holding_counts() {
        let memory = memory(100 * K);
        let (admin, other) = (memory.holder("redis"), memory.holder("redis"));
        admin.set_exempt(true);
        admin.hold(70 * K);
        other.hold(40 * K);
        // The largest holder is exempt: the other goes, though it alone fits the bound.
        assert!(!is_evicted(&admin).await);
        assert!(is_evicted(&other).await);
        drop(other);
        // Alone past the bound, it stays.
        admin.hold(150 * K);
        assert!(!is_evicted(&admin).await);
        // Without the exemption it goes as any other.
        admin.set_exempt(false);
        admin.hold(151 * K);
        assert!(is_evicted(&admin).await);
    }
}
