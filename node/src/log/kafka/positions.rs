//! How far each open partition reader has got in its partition, delivered or not: librdkafka's
//! application position, which a poll moves past transaction markers and aborted records it
//! consumes without returning them.
//!
//! Asking librdkafka (`Consumer::position`) is a round trip to its group thread that waits
//! without a bound, so appliers never ask: the group's poller thread does, every
//! [`REFRESH_EVERY`], and keeps each reader's answer in a [`ReaderPosition`] that the reader only
//! loads. When a position moves, the poller wakes the reader's partition, since a marker
//! consumed without a delivery wakes nobody else.

use super::GroupContext;
use crate::log::Waker;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the poller thread asks librdkafka where the open readers are.
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// One reader's position, as the poller last read it.
#[derive(Default)]
pub(super) struct ReaderPosition {
    /// The offset after the last record passed over, plus one; 0 while unknown.
    next_plus_one: AtomicU64,
    /// The reader's partition's waker, once the engine has set it.
    waker: Mutex<Option<Waker>>,
}

impl ReaderPosition {
    /// The offset after the last record the reader passed over, if librdkafka has said.
    pub(super) fn get(&self) -> Option<u64> {
        self.next_plus_one.load(Ordering::Acquire).checked_sub(1)
    }

    /// Who to wake when the position moves.
    pub(super) fn set_waker(&self, waker: Waker) {
        *self.waker.lock().expect("position waker lock") = Some(waker);
    }

    /// Moves the position forward to `next` (never back) and wakes the partition if it moved.
    fn advance(&self, next: u64) {
        let previous = self
            .next_plus_one
            .fetch_max(next.saturating_add(1), Ordering::AcqRel);
        if previous < next.saturating_add(1) {
            let waker = self.waker.lock().expect("position waker lock").clone();
            if let Some(wake) = waker {
                wake();
            }
        }
    }
}

/// The positions of the partitions that have a reader open on this node.
#[derive(Default)]
pub(super) struct ReaderPositions {
    open: Mutex<HashMap<u32, Arc<ReaderPosition>>>,
}

impl ReaderPositions {
    /// A fresh, unknown position for a reader of `partition` being opened (one from an earlier
    /// assignment of the partition never carries over).
    pub(super) fn open(&self, partition: u32) -> Arc<ReaderPosition> {
        let position = Arc::new(ReaderPosition::default());
        self.open
            .lock()
            .expect("positions lock")
            .insert(partition, position.clone());
        position
    }

    /// Forgets `position` when its reader closes (unless a newer reader took its place).
    pub(super) fn close(&self, partition: u32, position: &Arc<ReaderPosition>) {
        let mut open = self.open.lock().expect("positions lock");
        if open
            .get(&partition)
            .is_some_and(|p| Arc::ptr_eq(p, position))
        {
            open.remove(&partition);
        }
    }

    /// Asks librdkafka where every open reader is and records the answers. Runs on the group's
    /// poller thread: the call waits on librdkafka's group thread.
    pub(super) fn refresh(&self, consumer: &BaseConsumer<GroupContext>, topic: &str) {
        // Taken before asking, so an answer from an earlier assignment can only reach the
        // positions of readers that were open before it.
        let open: Vec<(u32, Arc<ReaderPosition>)> = self
            .open
            .lock()
            .expect("positions lock")
            .iter()
            .map(|(&p, position)| (p, position.clone()))
            .collect();
        if open.is_empty() {
            return;
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        for (partition, position) in open {
            let Some(element) = positions.find_partition(topic, partition as i32) else {
                continue;
            };
            if let Offset::Offset(next) = element.offset()
                && let Ok(next) = u64::try_from(next)
            {
                position.advance(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_position_only_moves_forward_and_wakes_its_partition_when_it_does() {
        let position = ReaderPosition::default();
        assert_eq!(position.get(), None, "unknown until librdkafka says");
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        position.set_waker(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        position.advance(0);
        assert_eq!(position.get(), Some(0));
        position.advance(5);
        assert_eq!(position.get(), Some(5));
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
        position.advance(5);
        position.advance(3);
        assert_eq!(position.get(), Some(5), "never back");
        assert_eq!(wakes.load(Ordering::SeqCst), 2, "no wake-up without a move");
    }

    #[test]
    fn a_closed_reader_forgets_its_position_unless_a_newer_one_took_its_place() {
        let positions = ReaderPositions::default();
        let old = positions.open(3);
        old.advance(40);
        let new = positions.open(3);
        assert_eq!(new.get(), None, "a reopened partition starts unknown");
        positions.close(3, &old);
        assert!(positions.open.lock().unwrap().contains_key(&3));
        positions.close(3, &new);
        assert!(positions.open.lock().unwrap().is_empty());
    }
}
