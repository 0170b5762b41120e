//! One dispatcher per served partition fans the partition's change feed out to the watches on
//! it. Each committed batch is read once, and each change goes only to the watches of its pk (one
//! hash lookup) and to the watches of the whole partition, instead of every watch scanning every
//! change in a task of its own: a thousand watches on different keys cost one lookup per change.
//!
//! A watch registers with the dispatcher while holding its registry lock and takes the feed's
//! history at the same moment: the history covers every entry below the feed's next offset, and
//! the dispatcher hands the watch only changes from there on, so each change reaches the watch
//! exactly once. Delivery never waits: a watch whose queue is full (QUEUE_BYTES of changes, or
//! its step bound) is cut off with a reason (its client resumes from the last token it got).

use super::{ChangeEvent, Filter};
use crate::engine::{EntryChanges, PartitionRuntime, Published, TooOld};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{Notify, broadcast, mpsc};

/// Bytes of changes one watch may have queued for its client before it is cut off: the queue
/// holds whole records, and a watcher that stopped reading must not pin the node's memory.
const QUEUE_BYTES: usize = 4 << 20;

/// What a dispatcher queues for a watch: a change, and the position right after it.
pub(super) struct Step {
    pub partition: u32,
    pub after: (u64, u32),
    pub change: Arc<ChangeEvent>,
}

/// What a watch shares with the dispatchers feeding it: the bytes it has queued, and why it
/// ended, once it did.
#[derive(Default)]
pub(super) struct Ending {
    reason: Mutex<Option<(&'static str, String)>>,
    pub notify: Notify,
    queued_bytes: AtomicUsize,
}

impl Ending {
    /// The watch took `step` off its queue.
    pub fn dequeued(&self, step: &Step) {
        self.queued_bytes
            .fetch_sub(step.change.bytes(), Ordering::Relaxed);
    }

    /// Ends the watch with `reason` (the first reason wins).
    pub fn end(&self, code: &'static str, reason: String) {
        let mut slot = self.reason.lock().expect("ending lock");
        if slot.is_none() {
            *slot = Some((code, reason));
            self.notify.notify_one();
        }
    }

    pub fn reason(&self) -> Option<(&'static str, String)> {
        self.reason.lock().expect("ending lock").clone()
    }
}

/// One watch's interest in one partition.
struct Sink {
    id: u64,
    filter: Filter,
    /// The first change this watch gets live: (entry offset, change index).
    start: (u64, u32),
    tx: mpsc::Sender<Step>,
    ending: Arc<Ending>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Watches of one pk, by the pk's stored-key prefix.
    by_pk: HashMap<Vec<u8>, Vec<Sink>>,
    /// Watches of every record of the partition.
    whole: Vec<Sink>,
    /// The partition's feed closed (it left this node): no new watches here.
    closed: bool,
}

impl Registry {
    fn sinks_mut(&mut self) -> impl Iterator<Item = &mut Vec<Sink>> {
        self.by_pk
            .values_mut()
            .chain(std::iter::once(&mut self.whole))
    }
}

/// What a registration gives the watch.
pub(super) struct Registered {
    /// Applied entries from the asked offset, for the watch to replay itself.
    pub backlog: Vec<Arc<EntryChanges>>,
    /// Live changes start here (every change before it is in the backlog or before the ask).
    pub live_start: (u64, u32),
    pub id: u64,
}

/// See the module docs.
pub(super) struct Dispatcher {
    partition: u32,
    runtime: Weak<PartitionRuntime>,
    registry: Mutex<Registry>,
    /// Every change below this offset has been queued for the watches it matched.
    processed: AtomicU64,
}

impl Dispatcher {
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset every change below which was handed to the matching watches.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }

    /// Registers a watch from `from` (from the next entry when `None`).
    pub fn register(
        &self,
        runtime: &PartitionRuntime,
        from: Option<(u64, u32)>,
        filter: Filter,
        tx: mpsc::Sender<Step>,
        ending: Arc<Ending>,
    ) -> Result<Option<Registered>, TooOld> {
        let mut registry = self.registry.lock().expect("dispatcher lock");
        if registry.closed {
            return Ok(None);
        }
        // Under the registry lock: the dispatcher hands out no batch while the history is taken.
        let subscription = runtime.subscribe_changes(from.map(|(offset, _)| offset))?;
        let live_start = from
            .unwrap_or((subscription.next_offset, 0))
            .max((subscription.next_offset, 0));
        registry.next_id += 1;
        let id = registry.next_id;
        let pk = filter.pk_prefix.clone();
        let sink = Sink {
            id,
            filter,
            start: live_start,
            tx,
            ending,
        };
        match pk {
            Some(pk) => registry.by_pk.entry(pk.to_vec()).or_default().push(sink),
            None => registry.whole.push(sink),
        }
        Ok(Some(Registered {
            backlog: subscription.backlog,
            live_start,
            id,
        }))
    }

    /// Forgets watch `id` (dropped).
    /// Only the watch's own list is searched: thousands of watches closing at once must not
    /// each walk every other watch under the lock that dispatch takes.
    pub fn deregister(&self, id: u64, pk_prefix: Option<&[u8]>) {
        let mut registry = self.registry.lock().expect("dispatcher lock");
        match pk_prefix {
            Some(pk) => {
                if let Some(sinks) = registry.by_pk.get_mut(pk) {
                    sinks.retain(|s| s.id != id);
                    if sinks.is_empty() {
                        registry.by_pk.remove(pk);
                    }
                }
            }
            None => registry.whole.retain(|s| s.id != id),
        }
    }

    async fn run(self: Arc<Self>, mut live: broadcast::Receiver<Arc<Published>>) {
        loop {
            match live.recv().await {
                Ok(published) => self.dispatch(&published),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.end_all(false, "watch_fell_behind", |p| {
                        format!(
                            "the node's watches fell {missed} batches behind partition {p}'s \
                             changes and were cut off (the node never waits for a watcher); \
                             reconnect with the last event id to resume"
                        )
                    })
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.end_all(true, "partition_moved", |p| {
                        format!(
                            "partition {p} is no longer served by this node; reconnect (to a node \
                             that serves it) with the last event id to resume"
                        )
                    });
                    return;
                }
            }
        }
    }

    fn end_all(&self, close: bool, code: &'static str, reason: impl Fn(u32) -> String) {
        let mut registry = self.registry.lock().expect("dispatcher lock");
        registry.closed |= close;
        for sinks in registry.sinks_mut() {
            for sink in sinks.drain(..) {
                sink.ending.end(code, reason(self.partition));
            }
        }
        registry.by_pk.clear();
    }

    /// Queues a committed batch's changes for the watches they match.
    fn dispatch(&self, published: &Published) {
        let mut registry = self.registry.lock().expect("dispatcher lock");
        let mut cut = Vec::new();
        if !registry.by_pk.is_empty() || !registry.whole.is_empty() {
            let registry = &*registry;
            for entry in &published.entries {
                for (i, change) in entry.changes.iter().enumerate() {
                    let by_pk = match registry.by_pk.is_empty() {
                        true => None,
                        false => change.pk_prefix().and_then(|pk| registry.by_pk.get(pk)),
                    };
                    let sinks = by_pk.into_iter().flatten().chain(&registry.whole);
                    let position = (entry.offset, i as u32);
                    let after = match i + 1 < entry.changes.len() {
                        true => (entry.offset, i as u32 + 1),
                        false => (entry.offset + 1, 0),
                    };
                    // Built once per change, for the first watch that wants it.
                    let (mut full, mut keys) = (None, None);
                    for sink in sinks {
                        if position < sink.start || !sink.filter.matches(change) {
                            continue;
                        }
                        let event = match (sink.filter.keys_only, &full) {
                            (true, Some(full)) => Arc::clone(full),
                            (true, None) => Arc::clone(keys.get_or_insert_with(|| {
                                Arc::new(ChangeEvent::of(self.partition, entry, change, true))
                            })),
                            (false, _) => Arc::clone(full.get_or_insert_with(|| {
                                Arc::new(ChangeEvent::of(self.partition, entry, change, false))
                            })),
                        };
                        let step = Step {
                            partition: self.partition,
                            after,
                            change: event,
                        };
                        let bytes = step.change.bytes();
                        let queued = sink.ending.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                        let sent = match queued + bytes > QUEUE_BYTES && queued > 0 {
                            true => Err(true),
                            false => sink
                                .tx
                                .try_send(step)
                                .map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_))),
                        };
                        if let Err(full) = sent {
                            if full {
                                sink.ending.end(
                                    "watch_fell_behind",
                                    format!(
                                        "this watch fell too far behind partition {}'s changes \
                                         and was cut off (the node never waits for a watcher); \
                                         reconnect with the last event id to resume",
                                        self.partition
                                    ),
                                );
                            }
                            cut.push(sink.id);
                        }
                    }
                }
            }
        }
        if !cut.is_empty() {
            for sinks in registry.sinks_mut() {
                sinks.retain(|s| !cut.contains(&s.id));
            }
            registry.by_pk.retain(|_, sinks| !sinks.is_empty());
        }
        self.processed
            .store(published.next_offset, Ordering::Release);
    }
}

/// The dispatchers of the partitions watched on this node.
#[derive(Default)]
pub(crate) struct Dispatchers(Mutex<HashMap<u32, Arc<Dispatcher>>>);

impl Dispatchers {
    /// `runtime`'s dispatcher, started on first use (and again after the partition came back).
    pub(super) fn of(&self, runtime: &Arc<PartitionRuntime>) -> Arc<Dispatcher> {
        let mut map = self.0.lock().expect("dispatchers lock");
        let partition = runtime.id();
        if let Some(dispatcher) = map.get(&partition)
            && Weak::ptr_eq(&dispatcher.runtime, &Arc::downgrade(runtime))
            && !dispatcher.registry.lock().expect("dispatcher lock").closed
        {
            return dispatcher.clone();
        }
        let dispatcher = Arc::new(Dispatcher {
            partition,
            runtime: Arc::downgrade(runtime),
            registry: Mutex::new(Registry::default()),
            processed: AtomicU64::new(runtime.change_bounds().1),
        });
        let live = runtime
            .subscribe_changes(None)
            .expect("a subscription from now is always served")
            .live;
        tokio::spawn(dispatcher.clone().run(live));
        map.insert(partition, dispatcher.clone());
        dispatcher
    }
}
