//! The change feed of one partition: what each applied entry changed, published once its batch
//! is committed, to live subscribers and into a bounded in-memory history that a watch resumes
//! from.
//!
//! Publishing never waits for a subscriber: live delivery is a bounded broadcast channel, and a
//! subscriber that falls further behind than it holds learns it was cut off. The history is
//! bounded in bytes; the oldest entries go first, and a subscription from before what is left
//! is refused with the oldest offset that can still be served (the client reads again, then
//! watches from there). An orderly stop saves the history and the next start at the same offset
//! takes it back (`feed_file`); otherwise a restart's history starts empty at the partition's
//! next offset.

use crate::model::Record;
use crate::store::{decode_key, to_record};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Bytes counted per change on top of its key and value: the change itself, its allocation's
/// rounding, and its share of its entry (an entry of one change costs ~100 bytes of its own).
/// Measured with benches/memory.sh: at 64 (when a change had two allocations) the history held
/// about 1.5 times its budget; with 1M records loaded, a 32 MiB history now holds 16-22 MB.
const CHANGE_OVERHEAD: usize = 128;

/// How a record changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Written (created, replaced, or its deadline changed): the record as it now is.
    Put,
    /// Removed by an op.
    Delete,
    /// Removed because the log's time reached its deadline.
    Expired,
}

impl ChangeKind {
    /// The op's name in watch events.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
            ChangeKind::Expired => "expired",
        }
    }

    /// The kind [`ChangeKind::name`] names.
    pub fn from_name(name: &str) -> Option<ChangeKind> {
        match name {
            "put" => Some(ChangeKind::Put),
            "delete" => Some(ChangeKind::Delete),
            "expired" => Some(ChangeKind::Expired),
            _ => None,
        }
    }
}

/// The stored-key prefix of `pk`'s records whose sk starts with `sk_prefix`.
pub fn watch_prefix(pk: &str, sk_prefix: &str) -> Vec<u8> {
    crate::store::encode_key(pk, sk_prefix)
}

/// One record's change, in the store's encoding (decoded only by who reads it).
#[derive(Debug, Clone)]
pub struct Change {
    /// The stored key, then the stored value after the change (none when removed), in one
    /// allocation: the history holds many changes, and separate key and value buffers cost ~40 %
    /// more per small record.
    bytes: Box<[u8]>,
    key_len: u32,
    pub kind: ChangeKind,
}

impl Change {
    /// A change to the record at stored key `key`; `value` is what it holds now (none: removed).
    pub fn new(key: &[u8], value: Option<&[u8]>, kind: ChangeKind) -> Change {
        let value = value.unwrap_or_default();
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Change {
            bytes: bytes.into_boxed_slice(),
            key_len: u32::try_from(key.len()).expect("stored keys are far shorter than 4 GiB"),
            kind,
        }
    }

    /// The stored key's length, and the key and value bytes together (what a saved history
    /// holds).
    pub(super) fn parts(&self) -> (u32, &[u8]) {
        (self.key_len, &self.bytes)
    }

    fn stored_key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// The stored value after the change; none when the record was removed.
    fn value(&self) -> Option<&[u8]> {
        match self.kind {
            ChangeKind::Put => Some(&self.bytes[self.key_len as usize..]),
            ChangeKind::Delete | ChangeKind::Expired => None,
        }
    }

    /// Whether the record's stored key starts with `prefix` ([`watch_prefix`]): checked without
    /// decoding, as a watch checks every change of its partition.
    pub fn has_prefix(&self, prefix: &[u8]) -> bool {
        self.stored_key().starts_with(prefix)
    }

    /// The stored-key prefix of the record's pk ([`crate::store::pk_prefix`]), without decoding.
    pub fn pk_prefix(&self) -> Option<&[u8]> {
        let key = self.stored_key();
        Some(&key[..crate::store::pk_prefix_len(key)?])
    }

    /// The record's (pk, sk).
    pub fn key(&self) -> Option<(String, String)> {
        decode_key(self.stored_key())
    }

    /// The record as the change left it (none when removed).
    pub fn record(&self) -> Option<Record> {
        let (pk, sk) = self.key()?;
        to_record(pk, sk, self.value()?).ok()
    }

    fn bytes(&self) -> usize {
        self.bytes.len() + CHANGE_OVERHEAD
    }
}

/// What one applied entry changed, in order. Rejected entries change nothing and are not here
/// (records their time expired still are).
#[derive(Debug, Clone)]
pub struct EntryChanges {
    pub offset: u64,
    pub ts_ms: i64,
    pub changes: Vec<Change>,
}

/// One committed batch as live subscribers get it: its entries' changes, and the offset the
/// partition applies next (every entry below it is covered).
#[derive(Debug)]
pub struct Published {
    pub entries: Vec<Arc<EntryChanges>>,
    pub next_offset: u64,
}

/// A subscription: the history from the asked offset, then the live batches after it.
pub struct Subscription {
    /// Entries at or after the asked offset that were already applied, in order.
    pub backlog: Vec<Arc<EntryChanges>>,
    /// The backlog covers every entry below this.
    pub next_offset: u64,
    /// Batches published after the backlog.
    pub live: broadcast::Receiver<Arc<Published>>,
}

/// The asked offset is older than the history: it starts at `oldest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    pub oldest: u64,
}

/// See the module docs.
pub struct Feed {
    state: Mutex<History>,
    live: broadcast::Sender<Arc<Published>>,
    budget: usize,
}

struct History {
    entries: VecDeque<Arc<EntryChanges>>,
    bytes: usize,
    /// The history holds every change of the entries from this offset on.
    start: u64,
    /// The offset the partition applies next.
    next: u64,
}

impl Feed {
    /// A feed for a partition that applies `next_offset` next, keeping about `budget` bytes of
    /// history; a live subscriber more than `lag` batches behind is cut off.
    pub fn new(next_offset: u64, budget: usize, lag: usize) -> Feed {
        Feed {
            state: Mutex::new(History {
                entries: VecDeque::new(),
                bytes: 0,
                start: next_offset,
                next: next_offset,
            }),
            live: broadcast::channel(lag.max(1)).0,
            budget,
        }
    }

    /// A feed whose history is `saved` (see `feed_file`), when given; else [`Feed::new`].
    pub(super) fn with_history(
        saved: Option<super::feed_file::SavedHistory>,
        next_offset: u64,
        budget: usize,
        lag: usize,
    ) -> Feed {
        let feed = Feed::new(next_offset, budget, lag);
        if let Some(saved) = saved.filter(|s| s.next == next_offset) {
            let mut history = feed.state.lock().expect("feed lock");
            history.start = saved.start;
            for entry in saved.entries {
                history.bytes += entry.changes.iter().map(Change::bytes).sum::<usize>();
                history.entries.push_back(entry);
            }
            // A budget lowered since: the oldest go first, as when publishing.
            while history.bytes > budget {
                let Some(oldest) = history.entries.pop_front() else {
                    break;
                };
                history.bytes -= oldest.changes.iter().map(Change::bytes).sum::<usize>();
                history.start = oldest.offset + 1;
            }
            if history.entries.is_empty() && budget == 0 {
                history.start = next_offset;
            }
        }
        feed
    }

    /// The bytes the history holds, as counted against its budget.
    pub(super) fn bytes(&self) -> usize {
        self.state.lock().expect("feed lock").bytes
    }

    /// The history as it is, to save when the node stops (see `feed_file`).
    pub(super) fn saved(&self) -> super::feed_file::SavedHistory {
        let history = self.state.lock().expect("feed lock");
        super::feed_file::SavedHistory {
            start: history.start,
            next: history.next,
            entries: history.entries.iter().cloned().collect(),
        }
    }

    /// Publishes a committed batch: its entries' changes, and the next offset after it. Returns
    /// the bytes the history now holds, as counted against its budget.
    pub(super) fn publish(&self, entries: Vec<EntryChanges>, next_offset: u64) -> usize {
        let entries: Vec<Arc<EntryChanges>> = entries.into_iter().map(Arc::new).collect();
        let mut history = self.state.lock().expect("feed lock");
        for entry in &entries {
            history.bytes += entry.changes.iter().map(Change::bytes).sum::<usize>();
            history.entries.push_back(entry.clone());
        }
        history.next = next_offset;
        while history.bytes > self.budget {
            let Some(oldest) = history.entries.pop_front() else {
                break;
            };
            history.bytes -= oldest.changes.iter().map(Change::bytes).sum::<usize>();
            history.start = oldest.offset + 1;
        }
        if history.entries.is_empty() && history.bytes == 0 && self.budget == 0 {
            history.start = next_offset;
        }
        // Under the lock, so a subscriber gets each batch once: in its backlog or live.
        let _ = self.live.send(Arc::new(Published {
            entries,
            next_offset,
        }));
        history.bytes
    }

    /// Subscribes from `from` (the next offset when `None`): the history from there, then live.
    pub fn subscribe(&self, from: Option<u64>) -> Result<Subscription, TooOld> {
        let history = self.state.lock().expect("feed lock");
        let from = from.unwrap_or(history.next);
        if from < history.start {
            return Err(TooOld {
                oldest: history.start,
            });
        }
        let backlog = history
            .entries
            .iter()
            .filter(|e| e.offset >= from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            next_offset: history.next,
            live: self.live.subscribe(),
        })
    }

    /// The oldest offset a subscription may start at, and the next offset.
    pub fn bounds(&self) -> (u64, u64) {
        let history = self.state.lock().expect("feed lock");
        (history.start, history.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{encode_key, encode_value};

    fn entry(offset: u64, n: usize) -> EntryChanges {
        EntryChanges {
            offset,
            ts_ms: 1,
            changes: (0..n)
                .map(|i| {
                    Change::new(
                        &encode_key("pk", &format!("{offset}-{i}")),
                        Some(&encode_value(1, 1, None, false, b"1")),
                        ChangeKind::Put,
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_subscriber_gets_every_batch_once_from_history_then_live() {
        let feed = Feed::new(10, 1 << 20, 16);
        feed.publish(vec![entry(10, 1), entry(12, 2)], 13);
        let mut sub = feed.subscribe(Some(11)).unwrap();
        assert_eq!(
            sub.backlog.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [12]
        );
        assert_eq!(sub.next_offset, 13);
        feed.publish(vec![entry(13, 1)], 15);
        let live = sub.live.try_recv().unwrap();
        assert_eq!((live.entries[0].offset, live.next_offset), (13, 15));
        assert!(sub.live.try_recv().is_err());
        let record = live.entries[0].changes[0].record().unwrap();
        assert_eq!((record.pk.as_str(), record.sk.as_str()), ("pk", "13-0"));
        // From now: no backlog.
        assert!(feed.subscribe(None).unwrap().backlog.is_empty());
    }

    #[test]
    fn the_history_is_bounded_and_older_offsets_are_refused() {
        let one = entry(0, 1).changes[0].bytes();
        let feed = Feed::new(0, 3 * one, 16);
        for offset in 0..5 {
            feed.publish(vec![entry(offset, 1)], offset + 1);
        }
        assert_eq!(feed.bounds(), (2, 5));
        assert_eq!(feed.subscribe(Some(1)).err(), Some(TooOld { oldest: 2 }));
        assert_eq!(feed.subscribe(Some(2)).unwrap().backlog.len(), 3);
        // Without history, only "from now" works, and the next offset moves with the log.
        let none = Feed::new(7, 0, 16);
        none.publish(vec![entry(7, 1)], 9);
        assert_eq!(none.bounds(), (9, 9));
        assert!(none.subscribe(Some(8)).is_err());
        assert!(none.subscribe(Some(9)).unwrap().backlog.is_empty());
    }

    #[test]
    fn a_saved_history_is_served_as_if_the_node_had_not_stopped() {
        let feed = Feed::new(10, 1 << 20, 16);
        feed.publish(vec![entry(10, 1), entry(12, 2)], 13);
        let back = Feed::with_history(Some(feed.saved()), 13, 1 << 20, 16);
        assert_eq!(back.bounds(), (10, 13));
        let sub = back.subscribe(Some(11)).unwrap();
        assert_eq!(
            sub.backlog.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [12]
        );
        // Saved at another offset: not taken.
        let elsewhere = Feed::with_history(Some(feed.saved()), 14, 1 << 20, 16);
        assert_eq!(elsewhere.bounds(), (14, 14));
        // A smaller budget than the history's: the newest entries kept.
        let one = entry(0, 1).changes[0].bytes();
        let smaller = Feed::with_history(Some(feed.saved()), 13, 3 * one, 16);
        assert_eq!(smaller.bounds(), (11, 13));
    }

    #[test]
    fn a_subscriber_that_falls_behind_learns_it() {
        let feed = Feed::new(0, 0, 16);
        let mut sub = feed.subscribe(None).unwrap();
        for offset in 0..21 {
            feed.publish(vec![entry(offset, 1)], offset + 1);
        }
        assert!(matches!(
            sub.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
