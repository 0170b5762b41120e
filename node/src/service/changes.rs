//! Watches: the changes of one pk (optionally an sk prefix) or of the whole namespace, as they
//! are applied, resumable exactly from a token.
//!
//! A token holds a position per partition: `partition:offset` (resume at that entry) or
//! `partition:offset.index` (resume at change `index` of that entry), joined by `,`. Offsets are
//! the log's, the same on every replica in every region, so a token is valid on any node that
//! still holds the history from there (else the watch is refused with 410 and the oldest
//! position it could serve).

use super::{ErrorKind, Service, ServiceError};
use crate::engine::{Change, EntryChanges, Published, Subscription};
use crate::model::{Record, partition_of};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Steps a watch may have queued for its client; then its partitions' feeds hold the rest,
/// up to WATCH_LAG_BATCHES, before the watch is cut off. Small: steps carry whole records.
const QUEUE: usize = 64;

/// Where a watch is in each partition: the entry to resume at, and how many of its changes
/// were already delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Token(BTreeMap<u32, (u64, u32)>);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (partition, (offset, index))) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{partition}:{offset}")?;
            if *index > 0 {
                write!(f, ".{index}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Token {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Token, ServiceError> {
        let bad = || {
            ServiceError::bad_request(
                "bad_token",
                format!(
                    "{text:?} is not a watch token: use the `id` of a watch event (or a read's \
                     FireScroll-Token header), e.g. `3:1042` or `0:15.2,1:7`"
                ),
            )
        };
        let mut positions = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (partition, position) = part.trim().split_once(':').ok_or_else(bad)?;
            let (offset, index) = match position.split_once('.') {
                Some((offset, index)) => (offset, index.parse().map_err(|_| bad())?),
                None => (position, 0),
            };
            positions.insert(
                partition.parse().map_err(|_| bad())?,
                (offset.parse().map_err(|_| bad())?, index),
            );
        }
        Ok(Token(positions))
    }
}

impl Token {
    /// The position in `partition`, if the token has one.
    pub fn get(&self, partition: u32) -> Option<(u64, u32)> {
        self.0.get(&partition).copied()
    }
}

/// What a watch covers, and from where.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// One pk, or (none) every record of the namespace.
    pub pk: Option<String>,
    /// Only sks starting with this (with a pk).
    pub sk_prefix: String,
    /// Resume here; without it, from now.
    pub from: Option<Token>,
}

/// One change as a watch reports it.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub partition: u32,
    pub offset: u64,
    /// `put`, `delete` or `expired`.
    pub op: &'static str,
    pub pk: String,
    pub sk: String,
    /// The record as the change left it (puts).
    pub record: Option<Record>,
    /// The entry's timestamp.
    pub ts_ms: i64,
}

/// What a watch yields.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A change; `token` resumes right after it.
    Change { token: String, change: ChangeEvent },
    /// Nothing new matched, but the watch moved on: `token` resumes from here.
    Bookmark { token: String },
    /// The watch ended (its client fell behind, or a partition left this node); resume with the
    /// last token.
    End { code: &'static str, reason: String },
}

/// What a partition's forwarder tells the watch.
enum Step {
    Change {
        partition: u32,
        after: (u64, u32),
        change: ChangeEvent,
    },
    End {
        code: &'static str,
        reason: String,
    },
}

/// A running watch: call [`Watch::next`] for each event.
pub struct Watch {
    steps: mpsc::Receiver<Step>,
    /// Per partition: the offset its forwarder has handled every change below (whether it
    /// matched or not), stored after the matching ones were queued. An atomic, not a message:
    /// a busy partition would otherwise wake every watch on every batch.
    advanced: Vec<(u32, Arc<AtomicU64>)>,
    positions: Token,
    /// The token last given to the client.
    told: Option<String>,
    bookmarks: tokio::time::Interval,
    ended: bool,
}

impl Watch {
    /// The next event; `None` once the watch ended. The first event is a bookmark with the
    /// starting token; quiet watches get a bookmark every bookmark interval when they moved on.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if self.ended {
            return None;
        }
        if self.told.is_none() {
            let token = self.positions.to_string();
            self.told = Some(token.clone());
            return Some(WatchEvent::Bookmark { token });
        }
        loop {
            tokio::select! {
                step = self.steps.recv() => return self.take(step),
                _ = self.bookmarks.tick() => {
                    // Loaded before looking at the queue: every change below these offsets
                    // that matched is in the queue by now.
                    let advanced: Vec<(u32, u64)> = self
                        .advanced
                        .iter()
                        .map(|(p, a)| (*p, a.load(Ordering::Acquire)))
                        .collect();
                    match self.steps.try_recv() {
                        Ok(step) => return self.take(Some(step)),
                        Err(mpsc::error::TryRecvError::Disconnected) => return self.take(None),
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                    for (partition, to) in advanced {
                        let at = self.positions.0.entry(partition).or_default();
                        if to > at.0 {
                            *at = (to, 0);
                        }
                    }
                    let token = self.positions.to_string();
                    if self.told.as_deref() != Some(token.as_str()) {
                        self.told = Some(token.clone());
                        return Some(WatchEvent::Bookmark { token });
                    }
                }
            }
        }
    }

    fn take(&mut self, step: Option<Step>) -> Option<WatchEvent> {
        match step {
            Some(Step::Change {
                partition,
                after,
                change,
            }) => {
                self.positions.0.insert(partition, after);
                let token = self.positions.to_string();
                self.told = Some(token.clone());
                Some(WatchEvent::Change { token, change })
            }
            Some(Step::End { code, reason }) => {
                self.ended = true;
                Some(WatchEvent::End { code, reason })
            }
            None => {
                self.ended = true;
                None
            }
        }
    }
}

/// Which changes a watch delivers.
#[derive(Clone)]
struct Filter {
    /// The stored-key prefix of the watched records (none: the whole namespace).
    prefix: Option<Arc<Vec<u8>>>,
}

impl Filter {
    fn event(&self, partition: u32, entry: &EntryChanges, change: &Change) -> Option<ChangeEvent> {
        if let Some(prefix) = &self.prefix
            && !change.has_prefix(prefix)
        {
            return None;
        }
        let (pk, sk) = change.key()?;
        Some(ChangeEvent {
            partition,
            offset: entry.offset,
            op: change.kind.name(),
            pk,
            sk,
            record: change.record(),
            ts_ms: entry.ts_ms,
        })
    }
}

impl Service {
    /// Starts a watch. Every partition it covers must be served by this node; a token older than
    /// what this node can replay is a 410 naming the oldest position it can serve.
    pub fn watch(&self, request: WatchRequest) -> Result<Watch, ServiceError> {
        let partitions: Vec<u32> = match &request.pk {
            Some(pk) => vec![partition_of(pk, self.engine.partition_count())],
            None => (0..self.engine.partition_count()).collect(),
        };
        let filter = Filter {
            prefix: request
                .pk
                .as_ref()
                .map(|pk| Arc::new(crate::engine::watch_prefix(pk, &request.sk_prefix))),
        };
        let mut subscriptions = Vec::with_capacity(partitions.len());
        let mut positions = Token::default();
        let mut too_old = Token::default();
        for &partition in &partitions {
            let runtime = self.readable_partition(partition).map_err(|e| {
                ServiceError::new(
                    ErrorKind::Unavailable,
                    "watch_unavailable",
                    format!(
                        "{}; a watch is served by a node that applies its partitions: connect to \
                         one (GET /records/watch there, with the same token)",
                        e.message
                    ),
                )
            })?;
            let from = request.from.as_ref().and_then(|t| t.get(partition));
            match runtime.subscribe_changes(from.map(|(offset, _)| offset)) {
                Ok(subscription) => {
                    let start = from.unwrap_or((subscription.next_offset, 0));
                    positions.0.insert(partition, start);
                    subscriptions.push((partition, start, subscription));
                }
                Err(e) => {
                    too_old.0.insert(partition, (e.oldest, 0));
                }
            }
        }
        if !too_old.0.is_empty() {
            return Err(ServiceError::new(
                ErrorKind::Gone,
                "token_too_old",
                format!(
                    "this node no longer holds the changes from that token (it keeps \
                     WATCH_HISTORY_BYTES of them in memory, from its start); the oldest positions \
                     it can serve are {too_old}: read the records again, then watch from the \
                     read's FireScroll-Token"
                ),
            ));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut advanced = Vec::with_capacity(subscriptions.len());
        for (partition, start, subscription) in subscriptions {
            let handled = Arc::new(AtomicU64::new(start.0));
            advanced.push((partition, handled.clone()));
            tokio::spawn(forward(
                partition,
                start,
                subscription,
                filter.clone(),
                (tx.clone(), handled),
            ));
        }
        let mut bookmarks = tokio::time::interval(self.config.watch_bookmark);
        bookmarks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        bookmarks.reset();
        Ok(Watch {
            steps: rx,
            advanced,
            positions,
            told: None,
            bookmarks,
            ended: false,
        })
    }

    /// The partitions this node applies and serves now.
    pub fn served_partitions(&self) -> Vec<u32> {
        self.engine
            .partitions()
            .iter()
            .filter(|p| p.serving())
            .map(|p| p.id())
            .collect()
    }

    /// Whether this node applies and serves `partition`.
    pub fn serves(&self, partition: u32) -> bool {
        self.readable_partition(partition).is_ok()
    }

    /// The live changes of `partition` from now, if this node serves it.
    pub fn subscribe_partition(&self, partition: u32) -> Option<Subscription> {
        let runtime = self.readable_partition(partition).ok()?;
        runtime.subscribe_changes(None).ok()
    }

    /// The token of the partitions `pks` are in, as applied on this node now: a read made after
    /// this is at least this new, so a watch from it misses nothing. Partitions this node does not
    /// serve are left out.
    pub fn read_token<'a>(&self, pks: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let partitions = self.engine.partition_count();
        let mut token = Token::default();
        for pk in pks {
            let partition = partition_of(pk, partitions);
            if let Ok(runtime) = self.readable_partition(partition) {
                token.0.insert(partition, (runtime.change_bounds().1, 0));
            }
        }
        (!token.0.is_empty()).then(|| token.to_string())
    }
}

/// Sends one partition's matching changes from `start` on, then live ones, until the watch is
/// dropped, the client falls behind, or the partition goes away.
async fn forward(
    partition: u32,
    start: (u64, u32),
    subscription: Subscription,
    filter: Filter,
    (tx, handled): (mpsc::Sender<Step>, Arc<AtomicU64>),
) {
    let Subscription {
        backlog,
        next_offset,
        mut live,
    } = subscription;
    let mut at = start;
    let send_entries = |entries: &[Arc<EntryChanges>], at: &mut (u64, u32)| {
        let mut steps = Vec::new();
        for entry in entries {
            if entry.offset < at.0 {
                continue;
            }
            let skip = if entry.offset == at.0 { at.1 } else { 0 };
            let last = entry.changes.len() as u32;
            for (i, change) in entry.changes.iter().enumerate().skip(skip as usize) {
                let i = i as u32;
                // After this change: the next one of the entry, or the next entry.
                let after = if i + 1 < last {
                    (entry.offset, i + 1)
                } else {
                    (entry.offset + 1, 0)
                };
                *at = after;
                if let Some(change) = filter.event(partition, entry, change) {
                    steps.push(Step::Change {
                        partition,
                        after,
                        change,
                    });
                }
            }
            *at = (entry.offset + 1, 0);
        }
        steps
    };
    let deliver = |entries: &[Arc<EntryChanges>], next: u64, at: &mut (u64, u32)| {
        let steps = send_entries(entries, at);
        if next > at.0 {
            *at = (next, 0);
        }
        steps
    };
    for step in deliver(&backlog, next_offset.max(start.0), &mut at) {
        if tx.send(step).await.is_err() {
            return;
        }
    }
    handled.store(at.0, Ordering::Release);
    loop {
        let steps = match live.recv().await {
            Ok(published) => {
                let Published {
                    entries,
                    next_offset,
                } = &*published;
                deliver(entries, *next_offset, &mut at)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => vec![Step::End {
                code: "watch_fell_behind",
                reason: format!(
                    "this watch fell {missed} batches behind partition {partition}'s changes and \
                     was cut off (the node never waits for a watcher); reconnect with the last \
                     event id to resume"
                ),
            }],
            Err(broadcast::error::RecvError::Closed) => vec![Step::End {
                code: "partition_moved",
                reason: format!(
                    "partition {partition} is no longer served by this node; reconnect (to a node \
                     that serves it) with the last event id to resume"
                ),
            }],
        };
        let end = matches!(steps.last(), Some(Step::End { .. }));
        for step in steps {
            if tx.send(step).await.is_err() {
                return;
            }
        }
        if at.1 == 0 {
            handled.store(at.0, Ordering::Release);
        }
        if end {
            return;
        }
    }
}

/// How often a quiet watch gets a bookmark, by default.
pub const DEFAULT_BOOKMARK: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_say_what_a_token_is() {
        let token: Token = "3:1042,0:15.2".parse().unwrap();
        assert_eq!(token.get(0), Some((15, 2)));
        assert_eq!(token.get(3), Some((1042, 0)));
        assert_eq!(token.to_string(), "0:15.2,3:1042");
        for bad in ["x", "1:", "1:a", "1:2.x", "-1:5"] {
            let e = bad.parse::<Token>().unwrap_err();
            assert_eq!(e.code, "bad_token", "{bad}");
        }
        assert_eq!("".parse::<Token>().unwrap(), Token::default());
    }
}
