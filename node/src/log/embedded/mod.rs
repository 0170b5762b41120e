//! The embedded log: a durable, partitioned log in local files, for one node that owns every
//! partition. No broker, no setup.
//!
//! Each partition is a directory of segment files. One writer thread serves every partition with
//! group commit: it takes every append that queued up while the previous group was being synced,
//! writes them to their partitions' segment files and to the shared journal, `fdatasync`s the
//! journal once, then acknowledges them all (the `journal` module says why one sync, and how recovery
//! uses it). Readers follow each partition's durable end, taking the latest entries from the
//! partition's in-memory tail (the `tail` module), so the segment files are written in large
//! buffered pieces rather than once per group. Whole segments below the offset the
//! store has durably applied are deleted, so disk use stays bounded.

mod journal;
mod reader;
mod segment;
mod tail;
mod writer;

use super::{Append, AppendFuture, Assignment, LogError, MutationLog, Ownership, PartitionReader};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedLogConfig {
    /// Directory holding one sub-directory per partition.
    pub dir: PathBuf,
    pub partitions: u32,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Largest entry accepted.
    pub max_entry_bytes: usize,
    /// Size the shared journal is reused at; once full, every segment file is synced and it
    /// starts over. Bigger means rarer full syncs; recovery after a crash reads up to this much.
    pub journal_bytes: u64,
}

/// The journal size the node uses.
pub const DEFAULT_JOURNAL_BYTES: u64 = 32 << 20;

/// What readers and the writer of one partition share.
struct PartitionShared {
    id: u32,
    dir: PathBuf,
    state: Mutex<PartitionState>,
    /// Signalled whenever `end` moves.
    appended: Condvar,
    /// The latest entries, for readers that keep up (see [`tail`]).
    tail: Mutex<tail::Tail>,
    /// `state.end`, for readers that do not wait: the appliers read it after every wake-up, and
    /// taking the lock the writer holds while it wakes them made each side wait for the other.
    end: AtomicU64,
}

impl PartitionShared {
    /// Moves the partition's end (the lock held, so that blocked readers see it with their
    /// condition); readers that do not wait see it from then on.
    fn set_end(&self, state: &mut PartitionState, end: u64) {
        state.end = end;
        self.end.store(end, Ordering::Release);
    }

    /// The partition's end as last set, without the lock.
    fn published_end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Tells readers that `state` changed (its end moved, or it failed): those blocked in a
    /// read, and those that asked to be woken. Called with the state locked, so that no reader
    /// misses it between its check and its wait.
    fn announce(&self, state: &PartitionState) {
        // A condvar's notify is a syscall whether or not anyone waits: the writer announces
        // every group to every partition it touched, and readers woken by `wakers` never block.
        if state.blocked > 0 {
            self.appended.notify_all();
        }
        for wake in &state.wakers {
            wake();
        }
    }
}

struct PartitionState {
    /// Bases of the segments on disk, ascending; the last is the one being written.
    segments: Vec<u64>,
    /// Offset the next append gets; everything below is durable.
    end: u64,
    /// Set when a write or sync failed: the partition takes no more appends until a restart
    /// recovers its files (after a failed fsync the file's state is unknown).
    failed: Option<String>,
    /// Called with `appended` (see [`crate::log::PartitionReader::set_waker`]).
    wakers: Vec<crate::log::Waker>,
    /// Readers blocked on `appended` right now.
    blocked: usize,
}

struct AppendRequest {
    partition: u32,
    entries: Vec<Vec<u8>>,
    /// Instead of appending: make the empty partition continue at this offset.
    resume_at: Option<u64>,
    /// Gets the offset of the first entry; the rest follow it contiguously.
    reply: oneshot::Sender<Result<u64, LogError>>,
}

/// The embedded log. See the module docs.
pub struct EmbeddedLog {
    config: EmbeddedLogConfig,
    partitions: Vec<Arc<PartitionShared>>,
    /// `None` once shut down.
    sender: RwLock<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    ownership: watch::Sender<Ownership>,
}

const PARTITION_COUNT_FILE: &str = "partition_count";

impl EmbeddedLog {
    /// Opens (or creates) the log, recovering every partition's tail, and starts the writers.
    pub fn open(config: EmbeddedLogConfig) -> Result<Self, LogError> {
        let storage = |what: &str, e: std::io::Error| {
            LogError::Storage(format!("{what} in {}: {e}", config.dir.display()))
        };
        fs::create_dir_all(&config.dir)
            .map_err(|e| storage("cannot create the log directory", e))?;
        check_partition_count(&config.dir, config.partitions)?;
        let (journal, replay) =
            journal::Journal::open(&config.dir, config.journal_bytes, config.partitions)
                .map_err(|e| storage("cannot read the journal", e))?;

        let mut partitions = Vec::new();
        let mut partition_writers = Vec::new();
        for id in 0..config.partitions {
            let dir = config.dir.join(format!("p{id}"));
            fs::create_dir_all(&dir)
                .map_err(|e| storage("cannot create a partition directory", e))?;
            let checkpoint = replay.checkpoint.as_ref().map(|ends| ends[id as usize]);
            let recovered = writer::Recovered::recover(&dir, config.segment_bytes, checkpoint)
                .map_err(|e| storage(&format!("cannot recover partition {id}"), e))?;
            let shared = Arc::new(PartitionShared {
                id,
                dir,
                state: Mutex::new(PartitionState {
                    segments: recovered.segments.clone(),
                    end: recovered.end,
                    failed: None,
                    wakers: Vec::new(),
                    blocked: 0,
                }),
                appended: Condvar::new(),
                tail: Mutex::new(tail::Tail::new(recovered.end, config.partitions)),
                end: AtomicU64::new(recovered.end),
            });
            partition_writers.push(recovered.into_writer(shared.clone()));
            partitions.push(shared);
        }
        let writer = writer::Writer::new(partition_writers, journal, replay)?;
        let (sender, requests) = mpsc::channel(1024);
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(requests))
            .map_err(|e| storage("cannot start the writer thread", e))?;
        let (ownership, _) = watch::channel(Arc::new(Assignment::all(config.partitions)));
        Ok(EmbeddedLog {
            config,
            partitions,
            sender: RwLock::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            ownership,
        })
    }

    /// How many readers of `partition` asked to be woken (and were not dropped since).
    #[cfg(test)]
    pub(crate) fn reader_wakers(&self, partition: u32) -> usize {
        let shared = self.shared(partition).expect("partition");
        shared.state.lock().expect("partition lock").wakers.len()
    }

    /// How many readers of `partition` are blocked in a read right now.
    #[cfg(test)]
    pub(crate) fn blocked_readers(&self, partition: u32) -> usize {
        let shared = self.shared(partition).expect("partition");
        shared.state.lock().expect("partition lock").blocked
    }

    fn shared(&self, partition: u32) -> Result<&Arc<PartitionShared>, LogError> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            LogError::Storage(format!(
                "partition {partition} does not exist (the log has {})",
                self.config.partitions
            ))
        })
    }
}

/// The partition count is fixed when the log is created; opening it with another is refused,
/// because every key would route to a different partition than the one it was written to.
fn check_partition_count(dir: &Path, partitions: u32) -> Result<(), LogError> {
    let path = dir.join(PARTITION_COUNT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u32 = text.trim().parse().map_err(|_| {
                LogError::Storage(format!("{} does not hold a number", path.display()))
            })?;
            if stored != partitions {
                return Err(LogError::Storage(format!(
                    "the embedded log in {} has {stored} partitions but PARTITIONS is {partitions}: \
                     keys would route to the wrong partitions. Start with PARTITIONS={stored}, or use a new DB_PATH",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let write = || -> std::io::Result<()> {
                let tmp = dir.join(format!("{PARTITION_COUNT_FILE}.tmp"));
                fs::write(&tmp, format!("{partitions}\n"))?;
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| LogError::Storage(format!("cannot write {}: {e}", path.display())))
        }
        Err(e) => Err(LogError::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

impl MutationLog for EmbeddedLog {
    fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    fn append(&self, partition: u32, entries: Vec<Append>) -> AppendFuture {
        // The embedded log has no use for message keys.
        let entries: Vec<Vec<u8>> = entries.into_iter().map(|e| e.payload).collect();
        let limit = self.config.max_entry_bytes;
        let exists = partition < self.config.partitions;
        let sender = self.sender.read().expect("sender lock").clone();
        Box::pin(async move {
            if let Some(size) = entries.iter().map(Vec::len).find(|&len| len > limit) {
                return Err(LogError::TooLarge { size, limit });
            }
            if !exists {
                return Err(LogError::Storage(format!(
                    "partition {partition} does not exist"
                )));
            }
            let sender = sender.ok_or(LogError::Closed)?;
            let count = entries.len() as u64;
            let (reply, response) = oneshot::channel();
            sender
                .send(AppendRequest {
                    partition,
                    entries,
                    resume_at: None,
                    reply,
                })
                .await
                .map_err(|_| LogError::Closed)?;
            let first = response.await.map_err(|_| LogError::Closed)??;
            Ok((first..first + count).collect())
        })
    }

    fn resume_at(&self, partition: u32, offset: u64) -> AppendFuture {
        let exists = partition < self.config.partitions;
        let sender = self.sender.read().expect("sender lock").clone();
        Box::pin(async move {
            if !exists {
                return Err(LogError::Storage(format!(
                    "partition {partition} does not exist"
                )));
            }
            let sender = sender.ok_or(LogError::Closed)?;
            let (reply, response) = oneshot::channel();
            sender
                .send(AppendRequest {
                    partition,
                    entries: Vec::new(),
                    resume_at: Some(offset),
                    reply,
                })
                .await
                .map_err(|_| LogError::Closed)?;
            let at = response.await.map_err(|_| LogError::Closed)??;
            Ok(vec![at])
        })
    }

    fn ownership(&self) -> watch::Receiver<Ownership> {
        self.ownership.subscribe()
    }

    fn reader(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, LogError> {
        let reader = reader::EmbeddedReader::new(self.shared(partition)?.clone(), from)?;
        Ok(Box::new(reader))
    }

    fn bounds(&self, partition: u32) -> Result<(u64, u64), LogError> {
        let state = self
            .shared(partition)?
            .state
            .lock()
            .expect("partition lock");
        Ok((
            state.segments.first().copied().unwrap_or(state.end),
            state.end,
        ))
    }

    fn release(&self, partition: u32, offset: u64) {
        let Ok(shared) = self.shared(partition) else {
            return;
        };
        // A segment can go once the next one starts at or below `offset`: all its entries are
        // applied. The last segment is being written and always stays.
        let doomed: Vec<u64> = {
            let mut state = shared.state.lock().expect("partition lock");
            let keep_from = state
                .segments
                .windows(2)
                .take_while(|w| w[1] <= offset)
                .count();
            state.segments.drain(..keep_from).collect()
        };
        for base in doomed {
            let path = segment::segment_path(&shared.dir, base);
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(partition, base, "released an applied log segment"),
                Err(e) => {
                    tracing::warn!(partition, base, error = %e, "cannot delete an applied log segment")
                }
            }
        }
    }

    fn shutdown(&self) {
        // Dropping the sender lets the writer drain its queue, sync and stop.
        self.sender.write().expect("sender lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }

    fn resumes_after_snapshots(&self) -> bool {
        true
    }

    fn refuses_writes(&self) -> Option<String> {
        // The writer marks every partition at once when it fails.
        let partition = self.partitions.first()?;
        partition
            .state
            .lock()
            .expect("partition lock")
            .failed
            .clone()
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
