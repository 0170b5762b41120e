//! The write-ahead log: `trait MutationLog` and its backends.
//!
//! The log is the only source of truth (docs/architecture.md invariant 2). Callers append entry bytes to an
//! explicit partition and get durable offsets back; the engine reads owned partitions in offset
//! order through [`PartitionReader`]s and learns which partitions it owns from [`Ownership`].
//! The embedded backend owns every partition; a Kafka backend reports its group assignment.

pub mod embedded;
pub mod kafka;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the log could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The log cannot take writes right now (broker away, disk failing). Retrying later may work.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// The entries before `start` were removed (retention or truncation): reading from `requested`
    /// would silently skip entries.
    #[error("offset {requested} of partition {partition} is gone: the log starts at {start}")]
    Truncated {
        partition: u32,
        requested: u64,
        start: u64,
    },
    /// The entry is larger than the log accepts.
    #[error("entry of {size} bytes is over the log's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The broker refused the entry as too large (its topic's `max.message.bytes` is below this
    /// node's MAX_ENTRY_BYTES).
    #[error(
        "entry of {size} bytes is over the broker's message size limit (the topic's max.message.bytes); \
         raise it, or lower MAX_ENTRY_BYTES to match"
    )]
    BrokerTooLarge { size: usize },
    /// The log's files or settings are not usable.
    #[error("log storage error: {0}")]
    Storage(String),
    /// The log is shutting down.
    #[error("the log is shut down")]
    Closed,
}

/// One entry read back from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// The partitions this node currently owns (and must apply and serve), and those taken from it
/// while the assignment is in flux.
pub type Ownership = Arc<Assignment>;

/// What the log assigns to this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions to apply and serve.
    pub owned: BTreeSet<u32>,
    /// Partitions taken away and not given back since: the group rebalanced them (perhaps to
    /// another member), or this node lost its session with the broker (which then revokes
    /// every partition until it is back). Until another member serves one, nobody applies it,
    /// so this node's last state of it still answers reads, as a replica that lags would.
    pub unsettled: BTreeSet<u32>,
    /// Rebalances this node completed (assignments received): one after a partition was taken
    /// away, the group had its say about it.
    pub rebalances: u64,
}

impl Assignment {
    /// Every partition owned, none in flux (a log whose assignment never changes).
    pub fn all(partitions: u32) -> Self {
        Assignment {
            owned: (0..partitions).collect(),
            unsettled: BTreeSet::new(),
            rebalances: 0,
        }
    }

    /// Whether this node owns `partition`.
    pub fn contains(&self, partition: &u32) -> bool {
        self.owned.contains(partition)
    }
}

/// An entry to append: its bytes, and the message key (the pk of its first op) that Kafka tools
/// and compaction see.
#[derive(Debug, Clone)]
pub struct Append {
    pub key: String,
    pub payload: Vec<u8>,
}

/// A future resolving to the offsets of the appended entries, in order, once they are durable.
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Vec<u64>, LogError>> + Send>>;

/// Called by a log, from any thread, when entries (or an error) may have arrived for a reader.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Reads one partition in offset order.
pub trait PartitionReader: Send {
    /// Blocks up to `wait` for entries; returns between 0 and `max` of them, in offset order,
    /// starting where the previous call stopped.
    fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// Has the log call `waker` whenever this partition gets entries (or an error) that a
    /// `read` made after the call would return: the appliers share a few threads, which read
    /// without waiting and sleep until a partition they apply has something. A wake-up may be
    /// spurious; what was already there when the waker was set is not announced.
    fn set_waker(&mut self, waker: Waker);

    /// The log's end (the offset after its last entry) when the reader was opened, if the log
    /// said: what a partition opened behind it must apply before its reads are answered (so
    /// they never answer older data than was answered before).
    fn end_at_open(&self) -> Option<u64>;

    /// The offset after the last record the reader has passed over, delivered or not, when it
    /// passes over records it never delivers: Kafka's transaction markers and the records of
    /// aborted transactions take offsets no entry has, so the log's end can lie beyond the
    /// last entry applied. `None` for a log whose every offset is an entry (the embedded log).
    /// Never waits: a log whose client must be asked keeps the answer current elsewhere and
    /// calls the waker when it moves past offsets it delivered nothing for, as such a move is
    /// no delivery and would wake nobody otherwise.
    fn position(&self) -> Option<u64> {
        None
    }
}

/// A partitioned, durable, ordered log of entries.
pub trait MutationLog: Send + Sync {
    /// How many partitions the namespace has.
    fn partition_count(&self) -> u32;

    /// Appends `entries` to `partition` in order and resolves to their offsets once they are
    /// durable (acknowledged writes are never lost, invariant 6).
    fn append(&self, partition: u32, entries: Vec<Append>) -> AppendFuture;

    /// The partitions this node owns, updated as ownership changes.
    fn ownership(&self) -> watch::Receiver<Ownership>;

    /// A reader of `partition` starting at offset `from`. Fails with [`LogError::Truncated`] if
    /// `from` is below the log's start offset.
    fn reader(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, LogError>;

    /// `(start, end)`: the first offset still held and the offset the next append gets.
    fn bounds(&self, partition: u32) -> Result<(u64, u64), LogError>;

    /// Tells the log that every entry of `partition` below `offset` is durably applied, so it may
    /// reclaim them (the embedded log deletes whole segments; Kafka would commit the offset).
    fn release(&self, partition: u32, offset: u64);

    /// Stops accepting appends and flushes what was accepted.
    fn shutdown(&self);

    /// Makes an empty `partition` continue at `offset` (its next append gets `offset`): a
    /// partition restored from a snapshot onto an empty disk keeps numbering after it. Logs
    /// whose offsets are not theirs to choose (Kafka) refuse, as does a partition that holds
    /// entries.
    fn resume_at(&self, partition: u32, offset: u64) -> AppendFuture {
        let _ = (partition, offset);
        Box::pin(async {
            Err(LogError::Storage(
                "this log cannot continue a partition at a chosen offset".into(),
            ))
        })
    }

    /// Whether [`MutationLog::resume_at`] can make an empty partition continue after a
    /// snapshot: true for a log whose entries live on this node's disk (the embedded log), so
    /// that a lost disk takes them with it and only S3 snapshots hold the partition's past.
    fn resumes_after_snapshots(&self) -> bool {
        false
    }

    /// Why the log refuses every append until the node restarts, if it does (the embedded log
    /// after a failed write or sync, or once its files were deleted under it). A log that may
    /// recover by itself (a broker that went away) says `None`: its appends fail one by one.
    fn refuses_writes(&self) -> Option<String> {
        None
    }

    /// Where plugins travel to the other nodes, when there are other nodes (the Kafka log's
    /// compacted plugins topic). `None` on the embedded log: the node is alone.
    fn plugin_feed(&self) -> Option<&dyn PluginFeed> {
        None
    }
}

/// A future resolving once a plugin record is durable in the log.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send + 'a>>;

/// Receives every plugin record of the namespace (`key`, and `None` for a removal), from the
/// beginning and as they come.
pub type PluginSink = Arc<dyn Fn(&str, Option<&[u8]>) + Send + Sync>;

/// Plugin modules and name bindings as log records: `wasm:<digest hex>` → module bytes,
/// `name:<name>` → binding JSON (a tombstone unbinds). Compaction keeps the latest of each key.
pub trait PluginFeed: Send + Sync {
    /// Writes one record (durably: acks=all).
    fn publish<'a>(&'a self, key: String, value: Option<Vec<u8>>) -> PublishFuture<'a>;

    /// Starts delivering every record, old and new, to `sink` (once).
    fn follow(&self, sink: PluginSink);
}
