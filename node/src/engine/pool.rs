//! The applier pool: a few threads (one per core by default, `APPLY_THREADS`) apply every
//! partition this node owns.
//!
//! With a thread per partition, every group the log made durable woke one thread per partition
//! it touched, and on a small machine those context switches cost more than the applying:
//! `SET -c50` on 2 cores ran 25-35 % slower with 32 partitions than with 4, the log writer
//! spending 41 % of its time waking appliers (benches/README, thirteenth session). Here a
//! partition's reader wakes the pool when its log has entries (its waker); a thread that is
//! already running picks the partition up without any wake-up at all.
//!
//! A turn applies at most one batch of one partition, so partitions share the threads fairly
//! (round robin). Each partition is applied by one thread at a time, in offset order, exactly as
//! before. A tick (every 100 ms) re-examines partitions that wait on something other than their
//! log (a plugin this node does not have yet, a read error to retry), and once a second every
//! partition is read again whatever its waker said. A thread stuck in one turn (a plugin given
//! fuel for minutes) is replaced once the turn passes the stall threshold, so the other
//! partitions keep as many threads as before.
//!
//! Locks: `ready` is never held with another; a slot's `sched` is taken inside `slots` (the
//! tick), never the other way round.

use super::partition::PartitionRuntime;
use super::{Engine, Inner};
use crate::log::{LogRecord, PartitionReader};
use crate::model::{AppliedEntry, Digest};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often partitions that wait on something other than their log are looked at again.
const TICK: Duration = Duration::from_millis(100);

/// How often every other partition is read again anyway: a safety net under the logs' wakers
/// (the threads per partition this pool replaced woke ten times a second each).
const SWEEP: Duration = Duration::from_secs(1);

/// What a partition's applier carries from one turn to the next.
pub(super) struct Work {
    /// The partition's log; dropped (with its waker) by the thread whose turn finished the
    /// partition, before anyone learns it finished.
    pub reader: Option<Box<dyn PartitionReader>>,
    /// Entries read but not applied yet: they follow one that waits for a plugin.
    pub carried: Vec<LogRecord>,
    /// The plugin the partition waits for (it travels through the log separately from the
    /// entries that use it), and the offset it waits at.
    pub waiting_for: Option<(Digest, u64)>,
    /// After a failed read: not before this instant again.
    pub retry_at: Option<Instant>,
    /// The last entry the partition's state applied, until the log has shown it holds that
    /// entry at its offset (the reader starts there; see `model/lineage.rs`).
    pub lineage: Option<AppliedEntry>,
}

/// How a turn ended.
pub(super) enum Turn {
    /// Nothing to do until the log wakes the partition.
    Idle,
    /// Waiting for something other than the log (a plugin, a read to retry): looked at again
    /// on the next tick.
    Waiting,
    /// A batch was applied: there may be more.
    More,
    /// The partition stopped (asked to, or it cannot go on): it leaves the pool.
    Finished,
}

#[derive(Default)]
struct Sched {
    /// In the ready queue.
    queued: bool,
    /// A thread is in a turn of it.
    running: bool,
    /// Woken during a turn: run again after it.
    woken: bool,
    /// Its last turn ended [`Turn::Waiting`].
    waiting: bool,
    /// Queued by the sweep alone: if its turn finds entries, the log's waker missed them.
    swept: bool,
    finished: bool,
}

/// One partition in the pool.
pub(super) struct Slot {
    runtime: Arc<PartitionRuntime>,
    sched: Mutex<Sched>,
    finished: Condvar,
    work: Mutex<Work>,
}

struct Ready {
    queue: VecDeque<Arc<Slot>>,
    /// Threads waiting for a slot, the one that ran most recently last: a push wakes that one,
    /// whose caches still hold the partition it applied (a condition variable shared by all
    /// wakes the longest waiter, and a busy partition then hopped between threads).
    idle: Vec<Arc<Worker>>,
    last_tick: Instant,
    last_sweep: Instant,
}

/// A pool thread as the others see it.
struct Worker {
    /// Signalled (with `ready` locked) when a slot is queued for it.
    wakeup: Condvar,
    /// Since when it is in its current turn.
    turn_since: Mutex<Option<Instant>>,
    /// Another thread took its place (it was stuck): it leaves after its turn.
    replaced: AtomicBool,
}

struct Shared {
    ready: Mutex<Ready>,
    slots: Mutex<Vec<Weak<Slot>>>,
    workers: Mutex<Vec<Arc<Worker>>>,
    spawned: AtomicUsize,
    shutdown: AtomicBool,
    /// The engine the threads apply for (set once, by `start`).
    engine: OnceLock<Weak<Inner>>,
}

/// The pool (see the module docs).
pub(super) struct ApplierPool {
    shared: Arc<Shared>,
    threads: usize,
}

impl ApplierPool {
    /// A pool of `threads` threads (0: one per core), started by [`ApplierPool::start`].
    pub(super) fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        ApplierPool {
            shared: Arc::new(Shared {
                ready: Mutex::new(Ready {
                    queue: VecDeque::new(),
                    idle: Vec::new(),
                    last_tick: Instant::now(),
                    last_sweep: Instant::now(),
                }),
                slots: Mutex::new(Vec::new()),
                workers: Mutex::new(Vec::new()),
                spawned: AtomicUsize::new(0),
                shutdown: AtomicBool::new(false),
                engine: OnceLock::new(),
            }),
            threads,
        }
    }

    /// Starts the threads; they hold the engine only during a turn.
    pub(super) fn start(&self, engine: Weak<Inner>) {
        if self.shared.engine.set(engine).is_err() {
            return;
        }
        for _ in 0..self.threads {
            spawn_worker(&self.shared);
        }
    }

    /// Applies `runtime` from `reader` until it stops: returns its slot, to stop it with.
    pub(super) fn add(
        &self,
        runtime: Arc<PartitionRuntime>,
        mut reader: Box<dyn PartitionReader>,
        lineage: Option<AppliedEntry>,
    ) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            runtime,
            sched: Mutex::new(Sched::default()),
            finished: Condvar::new(),
            work: Mutex::new(Work {
                reader: None,
                carried: Vec::new(),
                waiting_for: None,
                retry_at: None,
                lineage,
            }),
        });
        // The waker holds the slot: a slot dropped inside a log's callback would drop its
        // reader there, under the log's own lock. The cycle (slot, reader, waker, slot) ends
        // when a turn finishes the partition and its thread drops the reader.
        let (me, shared) = (slot.clone(), Arc::downgrade(&self.shared));
        reader.set_waker(Arc::new(move || {
            if let Some(shared) = shared.upgrade() {
                wake(&shared, &me);
            }
        }));
        slot.work.lock().expect("work lock").reader = Some(reader);
        self.shared
            .slots
            .lock()
            .expect("slots lock")
            .push(Arc::downgrade(&slot));
        // Whatever the log held before the waker was set.
        wake(&self.shared, &slot);
        slot
    }

    /// Asks `slot`'s partition to stop (its `stop` flag is set) and waits until no thread is in
    /// a turn of it, at most `patience`; false if one still is (stuck inside one entry: it is
    /// left behind, and its thread replaced).
    pub(super) fn stop(&self, slot: &Arc<Slot>, patience: Duration) -> bool {
        wake(&self.shared, slot);
        let sched = slot.sched.lock().expect("sched lock");
        let (sched, _) = slot
            .finished
            .wait_timeout_while(sched, patience, |s| !s.finished)
            .expect("sched lock");
        let finished = sched.finished;
        drop(sched);
        if !finished {
            self.replace_stuck(patience);
        }
        finished
    }

    /// Replaces every thread that has been in one turn for longer than `threshold`, so the
    /// other partitions keep their threads; each replaced thread leaves once its turn ends.
    pub(super) fn replace_stuck(&self, threshold: Duration) {
        let stuck: Vec<Arc<Worker>> = self
            .shared
            .workers
            .lock()
            .expect("workers lock")
            .iter()
            .filter(|w| !w.replaced.load(Ordering::SeqCst))
            .filter(|w| {
                w.turn_since
                    .lock()
                    .expect("turn lock")
                    .is_some_and(|since| since.elapsed() > threshold)
            })
            .cloned()
            .collect();
        for worker in stuck {
            worker.replaced.store(true, Ordering::SeqCst);
            tracing::warn!(
                "an applier thread has been in one batch for over {} ms; starting another in its place",
                threshold.as_millis()
            );
            spawn_worker(&self.shared);
        }
    }

    /// Stops the threads (after every partition was stopped).
    pub(super) fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let ready = self.shared.ready.lock().expect("ready lock");
        for worker in &ready.idle {
            worker.wakeup.notify_one();
        }
    }
}

impl Drop for ApplierPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn_worker(shared: &Arc<Shared>) {
    let worker = Arc::new(Worker {
        wakeup: Condvar::new(),
        turn_since: Mutex::new(None),
        replaced: AtomicBool::new(false),
    });
    shared
        .workers
        .lock()
        .expect("workers lock")
        .push(worker.clone());
    let n = shared.spawned.fetch_add(1, Ordering::SeqCst);
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("apply-{n}"))
        .spawn(move || run_worker(&shared, &worker))
        .expect("spawning an applier thread");
}

fn run_worker(shared: &Arc<Shared>, me: &Arc<Worker>) {
    while let Some(slot) = next_slot(shared, me) {
        let Some(inner) = shared.engine.get().and_then(Weak::upgrade) else {
            break;
        };
        let engine = Engine { inner };
        let swept = {
            let mut sched = slot.sched.lock().expect("sched lock");
            sched.queued = false;
            sched.running = true;
            sched.woken = false;
            std::mem::take(&mut sched.swept)
        };
        *me.turn_since.lock().expect("turn lock") = Some(Instant::now());
        let (turn, finished_reader) = {
            let mut work = slot.work.lock().expect("work lock");
            // A panic is a bug, and the same entry would meet it again on every retry (and
            // on every replica): the partition stops, visibly, and this thread goes on with
            // the others, instead of dying with the partition marked running forever.
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.apply_turn(&slot.runtime, &mut work)
            }))
            .unwrap_or_else(|panic| engine.turn_panicked(&slot.runtime, panic.as_ref()));
            let reader = match turn {
                Turn::Finished => work.reader.take(),
                _ => None,
            };
            (turn, reader)
        };
        // Entries announced during the turn set `woken` (the logs call the waker before a read
        // can see what it announces): only unannounced ones count as missed.
        if swept && matches!(turn, Turn::More) && !slot.sched.lock().expect("sched lock").woken {
            engine.note_missed_wakeup(&slot.runtime);
        }
        // Before the partition is reported finished: whoever stopped it may open it again
        // (Kafka: split its queue anew) as soon as it is.
        drop(finished_reader);
        *me.turn_since.lock().expect("turn lock") = None;
        // A replaced thread leaves after this turn: a partition it requeues must wake another.
        let leaving = me.replaced.load(Ordering::SeqCst);
        end_turn(shared, &slot, turn, leaving);
        if leaving {
            break;
        }
    }
    shared
        .workers
        .lock()
        .expect("workers lock")
        .retain(|w| !Arc::ptr_eq(w, me));
}

/// The next slot to run a turn of; `None` once the pool shuts down.
fn next_slot(shared: &Shared, me: &Arc<Worker>) -> Option<Arc<Slot>> {
    // After a turn a thread waits first in line; after a wait that timed out, last.
    let mut warm = true;
    loop {
        let sweep = {
            let mut ready = shared.ready.lock().expect("ready lock");
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return None;
                }
                if ready.last_tick.elapsed() >= TICK {
                    ready.last_tick = Instant::now();
                    let sweep = ready.last_sweep.elapsed() >= SWEEP;
                    if sweep {
                        ready.last_sweep = ready.last_tick;
                    }
                    break sweep;
                }
                if let Some(slot) = ready.queue.pop_front() {
                    return Some(slot);
                }
                if warm {
                    ready.idle.push(me.clone());
                } else {
                    ready.idle.insert(0, me.clone());
                }
                let (woken, timeout) = me.wakeup.wait_timeout(ready, TICK).expect("ready lock");
                ready = woken;
                warm = !timeout.timed_out();
                ready.idle.retain(|w| !Arc::ptr_eq(w, me));
            }
        };
        tick(shared, sweep);
    }
}

/// Queues the partitions waiting on something other than their log (with `sweep`, every one
/// not queued or running), to look again.
fn tick(shared: &Shared, sweep: bool) {
    let slots: Vec<Arc<Slot>> = {
        let mut slots = shared.slots.lock().expect("slots lock");
        slots.retain(|s| {
            s.upgrade()
                .is_some_and(|s| !s.sched.lock().expect("sched lock").finished)
        });
        slots.iter().filter_map(Weak::upgrade).collect()
    };
    for slot in slots {
        let waiting = slot.sched.lock().expect("sched lock").waiting;
        if waiting {
            wake(shared, &slot);
        } else if sweep {
            wake_for(shared, &slot, true);
        }
    }
}

/// The log (or a stop, or a tick) has something for `slot`.
fn wake(shared: &Shared, slot: &Arc<Slot>) {
    wake_for(shared, slot, false);
}

/// [`wake`]; `swept` when only the sweep asks (not the log, a stop or a waiting partition).
fn wake_for(shared: &Shared, slot: &Arc<Slot>, swept: bool) {
    let push = {
        let mut sched = slot.sched.lock().expect("sched lock");
        if !swept {
            sched.swept = false;
        }
        if sched.finished || sched.queued {
            false
        } else if sched.running {
            sched.woken = true;
            false
        } else {
            sched.queued = true;
            sched.swept = swept;
            true
        }
    };
    if push {
        push_ready(shared, slot.clone(), true);
    }
}

/// Ends a turn of `slot`; `leaving` when the thread that ran it leaves the pool after it.
fn end_turn(shared: &Shared, slot: &Arc<Slot>, turn: Turn, leaving: bool) {
    let push = {
        let mut sched = slot.sched.lock().expect("sched lock");
        sched.running = false;
        let again = match turn {
            Turn::Finished => {
                sched.finished = true;
                slot.finished.notify_all();
                false
            }
            Turn::More => true,
            Turn::Idle | Turn::Waiting => sched.woken,
        };
        sched.waiting = matches!(turn, Turn::Waiting);
        sched.queued = again;
        again
    };
    if push {
        // The thread that ran the turn takes the next one itself: waking another would move
        // a busy partition from thread to thread with a wake-up for every batch.
        push_ready(shared, slot.clone(), leaving);
    }
}

/// Queues `slot`; with `wake_idle`, a thread waiting for work is woken for it (one already
/// running takes it after its turn).
fn push_ready(shared: &Shared, slot: Arc<Slot>, wake_idle: bool) {
    let mut ready = shared.ready.lock().expect("ready lock");
    ready.queue.push_back(slot);
    if wake_idle && let Some(worker) = ready.idle.pop() {
        worker.wakeup.notify_one();
    }
}
