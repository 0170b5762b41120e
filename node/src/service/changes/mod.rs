//! Watches: the changes of one pk (optionally an sk prefix) or of the whole namespace, as they
//! are applied, resumable exactly from a token.
//!
//! A token holds a position per partition: `partition:offset` (resume at that entry) or
//! `partition:offset.index` (resume at change `index` of that entry), joined by `,`. Offsets are
//! the log's, the same on every replica in every region, so a token is valid on any node that
//! still holds the history from there (else the watch is refused with 410 and the oldest
//! position it could serve).

mod dispatch;
mod follow;

pub(crate) use dispatch::Dispatchers;
pub use follow::Follow;

use super::{ErrorKind, Service, ServiceError};
use crate::engine::{Change, EntryChanges, Subscription};
use crate::model::{Record, partition_of};
use dispatch::{Dispatcher, Ending, Step};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Changes a watch may have queued for its client before it is cut off (the node never waits
/// for a watcher); their bytes are bounded too (see `dispatch`).
const QUEUE: usize = 4096;

/// Where a watch is in each partition: the entry to resume at, and how many of its changes
/// were already delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Token(BTreeMap<u32, (u64, u32)>);

impl Token {
    /// The token's text (`partition:offset[.index]`, comma-separated). Every HTTP read's answer
    /// carries one: written directly, numbers through `itoa` (the formatter's machinery was
    /// most of a read's token).
    fn text(&self) -> String {
        let mut text = String::with_capacity(24 * self.0.len());
        let mut number = itoa::Buffer::new();
        for (i, (partition, (offset, index))) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(number.format(*partition));
            text.push(':');
            text.push_str(number.format(*offset));
            if *index > 0 {
                text.push('.');
                text.push_str(number.format(*index));
            }
        }
        text
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
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
        // Digits only: Rust's integer parse also takes a leading `+`, which no token has.
        if text.contains('+') {
            return Err(bad());
        }
        let mut positions = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (partition, position) = part.trim().split_once(':').ok_or_else(bad)?;
            let (offset, index) = match position.split_once('.') {
                Some((offset, index)) => (offset, index.parse().map_err(|_| bad())?),
                None => (position, 0),
            };
            // Each partition at most once: which of two positions would be meant?
            if positions
                .insert(
                    partition.parse().map_err(|_| bad())?,
                    (offset.parse().map_err(|_| bad())?, index),
                )
                .is_some()
            {
                return Err(bad());
            }
        }
        Ok(Token(positions))
    }
}

impl Token {
    /// The position in `partition`, if the token has one.
    pub fn get(&self, partition: u32) -> Option<(u64, u32)> {
        self.0.get(&partition).copied()
    }

    /// Takes `other`'s positions in `partitions` (those it has).
    pub fn take_from(&mut self, other: &Token, partitions: &[u32]) {
        for &partition in partitions {
            if let Some(position) = other.get(partition) {
                self.0.insert(partition, position);
            }
        }
    }

    /// Adds `partition`'s position now, if `service` serves it.
    fn note_partition(&mut self, service: &Service, partition: u32) {
        if let Some(runtime) = service.serving_partition(partition) {
            self.0.insert(partition, (runtime.change_bounds().1, 0));
        }
    }

    /// Takes `other`'s position in `partition` unless this token has one already (the earlier
    /// position of a read stays: a watch from it misses nothing read after).
    pub fn keep_first(&mut self, other: &Token, partition: u32) {
        if let (None, Some(position)) = (self.get(partition), other.get(partition)) {
            self.0.insert(partition, position);
        }
    }

    /// The token's text, or `None` when it has no position.
    pub fn text_if_any(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.text())
    }

    /// The highest partition the token has a position in.
    pub fn highest_partition(&self) -> Option<u32> {
        self.0.keys().next_back().copied()
    }
}

/// What a watch covers, and from where.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// One pk; without it every record of `partition`, or of the namespace.
    pub pk: Option<String>,
    /// Only sks starting with this (with a pk).
    pub sk_prefix: String,
    /// Every record of this partition (without a pk).
    pub partition: Option<u32>,
    /// Changes without the records' data (which key changed, and how).
    pub keys_only: bool,
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
    /// The record as the change left it (puts, unless the watch is keys only).
    pub record: Option<Record>,
    /// The entry's timestamp.
    pub ts_ms: i64,
}

/// What a watch yields.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A change; `token` resumes right after it.
    Change {
        token: String,
        change: Arc<ChangeEvent>,
    },
    /// Nothing new matched, but the watch moved on: `token` resumes from here.
    Bookmark { token: String },
    /// The watch ended (its client fell behind, or a partition left this node); resume with the
    /// last token.
    End { code: &'static str, reason: String },
}

impl ChangeEvent {
    /// About the memory the event holds.
    fn bytes(&self) -> usize {
        let record = self.record.as_ref();
        64 + self.pk.len() + self.sk.len() + record.map_or(0, |r| r.data_json.len() + 64)
    }

    fn of(partition: u32, entry: &EntryChanges, change: &Change, keys_only: bool) -> ChangeEvent {
        let (pk, sk) = change.key().unwrap_or_default();
        ChangeEvent {
            partition,
            offset: entry.offset,
            op: change.kind.name(),
            pk,
            sk,
            record: if keys_only { None } else { change.record() },
            ts_ms: entry.ts_ms,
        }
    }
}

/// Which changes a watch delivers.
#[derive(Clone)]
pub(super) struct Filter {
    /// The stored-key prefix of the watched pk (none: the whole partition).
    pk_prefix: Option<Arc<[u8]>>,
    /// The stored-key prefix of the watched records (the pk's, and the sk prefix).
    prefix: Option<Arc<[u8]>>,
    keys_only: bool,
}

impl Filter {
    fn new(request: &WatchRequest) -> Filter {
        Filter {
            pk_prefix: request
                .pk
                .as_deref()
                .map(|pk| Arc::from(crate::store::pk_prefix(pk))),
            prefix: request
                .pk
                .as_deref()
                .map(|pk| Arc::from(crate::engine::watch_prefix(pk, &request.sk_prefix))),
            keys_only: request.keys_only,
        }
    }

    fn matches(&self, change: &Change) -> bool {
        self.prefix.as_ref().is_none_or(|p| change.has_prefix(p))
    }
}

/// The changes of one partition that a watch replays itself before its live ones: those the
/// partition applied before the watch registered.
struct Backlog {
    partition: u32,
    entries: VecDeque<Arc<EntryChanges>>,
    /// The next change to look at in the first entry.
    at: (u64, u32),
    /// Live changes start here.
    live_start: (u64, u32),
}

/// A running watch: call [`Watch::next`] for each event.
pub struct Watch {
    steps: mpsc::Receiver<Step>,
    backlogs: VecDeque<Backlog>,
    filter: Filter,
    /// The partitions' dispatchers, and this watch's id with each.
    dispatchers: Vec<(Arc<Dispatcher>, u64)>,
    ending: Arc<Ending>,
    positions: Token,
    /// The token last given to the client.
    told: Option<String>,
    bookmarks: tokio::time::Interval,
    /// Whether the watch replayed its backlogs and said where that left it.
    caught_up: bool,
    ended: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for (dispatcher, id) in &self.dispatchers {
            dispatcher.deregister(*id, self.filter.pk_prefix.as_deref());
        }
    }
}

impl Watch {
    /// The next event; `None` once the watch ended. The first event is a bookmark with the
    /// starting token, and the replay of what was applied before the watch began ends with
    /// one when it moved past the last change given; quiet watches get a bookmark every
    /// bookmark interval when they moved on.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if self.ended {
            return None;
        }
        if self.told.is_none() {
            let token = self.positions.to_string();
            self.told = Some(token.clone());
            return Some(WatchEvent::Bookmark { token });
        }
        if let Some(end) = self.end() {
            return Some(end);
        }
        if let Some(event) = self.replay() {
            return Some(event);
        }
        if !self.caught_up {
            // The backlogs are replayed: the watch is at what its partitions had applied when it
            // began. Said at once when that moved the token (entries that changed nothing
            // watched, rejected writes say), so a client waiting to reach a position (a copy's
            // catch-up) need not wait for the next bookmark tick.
            self.caught_up = true;
            let token = self.positions.to_string();
            if self.told.as_deref() != Some(token.as_str()) {
                self.told = Some(token.clone());
                return Some(WatchEvent::Bookmark { token });
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = self.ending.notify.notified() => {
                    if let Some(end) = self.end() {
                        return Some(end);
                    }
                }
                step = self.steps.recv() => return self.take(step),
                _ = self.bookmarks.tick() => {
                    // Loaded before looking at the queue: every change below these offsets
                    // that matched is in the queue by now.
                    let processed: Vec<(u32, u64)> = self
                        .dispatchers
                        .iter()
                        .map(|(d, _)| (d.partition(), d.processed()))
                        .collect();
                    match self.steps.try_recv() {
                        Ok(step) => return self.take(Some(step)),
                        Err(mpsc::error::TryRecvError::Disconnected) => return self.take(None),
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                    for (partition, to) in processed {
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

    fn end(&mut self) -> Option<WatchEvent> {
        let (code, reason) = self.ending.reason()?;
        self.ended = true;
        Some(WatchEvent::End { code, reason })
    }

    /// The next matching change of the backlogs, moving their positions on.
    fn replay(&mut self) -> Option<WatchEvent> {
        while let Some(backlog) = self.backlogs.front_mut() {
            let partition = backlog.partition;
            let Some(entry) = backlog.entries.front().cloned() else {
                let at = self.positions.0.entry(partition).or_default();
                *at = (*at).max(backlog.live_start);
                self.backlogs.pop_front();
                continue;
            };
            if entry.offset < backlog.at.0 {
                backlog.entries.pop_front();
                continue;
            }
            let first = if entry.offset == backlog.at.0 {
                backlog.at.1 as usize
            } else {
                0
            };
            for (i, change) in entry.changes.iter().enumerate().skip(first) {
                let after = if i + 1 < entry.changes.len() {
                    (entry.offset, i as u32 + 1)
                } else {
                    (entry.offset + 1, 0)
                };
                backlog.at = after;
                if self.filter.matches(change) {
                    let change = ChangeEvent::of(partition, &entry, change, self.filter.keys_only);
                    return Some(self.changed(partition, after, Arc::new(change)));
                }
            }
            backlog.at = (entry.offset + 1, 0);
            backlog.entries.pop_front();
        }
        None
    }

    fn changed(
        &mut self,
        partition: u32,
        after: (u64, u32),
        change: Arc<ChangeEvent>,
    ) -> WatchEvent {
        self.positions.0.insert(partition, after);
        let token = self.positions.to_string();
        self.told = Some(token.clone());
        WatchEvent::Change { token, change }
    }

    fn take(&mut self, step: Option<Step>) -> Option<WatchEvent> {
        match step {
            Some(step) => {
                self.ending.dequeued(&step);
                Some(self.changed(step.partition, step.after, step.change))
            }
            None => {
                self.ended = true;
                None
            }
        }
    }
}

impl Service {
    /// Starts a watch. Every partition it covers must be served by this node; a token older than
    /// what this node can replay is a 410 naming the oldest position it can serve, and one past
    /// the end of a partition's log a 400 (it is not of this log).
    pub async fn watch(&self, request: WatchRequest) -> Result<Watch, ServiceError> {
        let partitions = self.watched_partitions(&request)?;
        if let Some(from) = &request.from {
            self.check_token_within_log(from, &partitions).await?;
        }
        self.register_watch(request, partitions)
    }

    /// Refuses a token at a position past the end of a partition's log: no entry of this log
    /// is there, so it comes from another log (another namespace's, or this one's before it
    /// was deleted and created again), and waiting for the log to get there would skip every
    /// change until then. The log is asked only for positions this node has not applied yet
    /// (a token from a replica ahead of this one is fine); when it cannot say
    /// (`Service::log_end`), the watch goes on as before.
    async fn check_token_within_log(
        &self,
        from: &Token,
        partitions: &[u32],
    ) -> Result<(), ServiceError> {
        for &partition in partitions {
            let Some((offset, _)) = from.get(partition) else {
                continue;
            };
            if self
                .engine
                .partition(partition)
                .is_some_and(|runtime| offset <= runtime.next_offset())
            {
                continue;
            }
            // A log that cannot say for one partition now will not for the next either:
            // one wait per request at most.
            let Some(end) = self.log_end(partition).await else {
                break;
            };
            if offset > end {
                return Err(ServiceError::bad_request(
                    "token_mismatch",
                    format!(
                        "the token {from} is at offset {offset} of partition {partition}, but \
                         that partition's log ends at {end}: it comes from another log (another \
                         namespace's, or this one's before it was deleted and created again). \
                         Read the records again and watch from the read's FireScroll-Token, or \
                         watch without a token to start now"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The partitions `request` watches, once its token is checked to be of this namespace
    /// and to cover them.
    fn watched_partitions(&self, request: &WatchRequest) -> Result<Vec<u32>, ServiceError> {
        let count = self.engine.partition_count();
        let partitions: Vec<u32> = match (&request.pk, request.partition) {
            (Some(pk), _) => vec![partition_of(pk, count)],
            (None, Some(partition)) if partition < count => vec![partition],
            (None, Some(partition)) => {
                return Err(ServiceError::bad_request(
                    "bad_partition",
                    format!("partition {partition} does not exist: the namespace has {count}"),
                ));
            }
            (None, None) => (0..count).collect(),
        };
        // Partition numbers past the namespace's: a token of another namespace (or partition
        // count), whose offsets mean nothing here.
        if let Some(from) = &request.from
            && let Some(highest) = from.highest_partition()
            && highest >= count
        {
            return Err(ServiceError::bad_request(
                "token_mismatch",
                format!(
                    "the token {from} has a position in partition {highest}, but the namespace \
                     has {count} partitions (0 to {}): it comes from another namespace. Watch \
                     from the id of one of this namespace's watch events (or a read's \
                     FireScroll-Token), or without a token to start now",
                    count - 1
                ),
            ));
        }
        // A token with no position for the one partition watched comes from a read or watch of
        // other partitions: starting from now instead would silently skip what changed since
        // the caller's read. (A whole-namespace watch starts the partitions its token lacks
        // from now: the caller read nothing of them.)
        if let ([partition], Some(from)) = (&partitions[..], &request.from)
            && from.get(*partition).is_none()
            && from.text_if_any().is_some()
        {
            let what = match &request.pk {
                Some(pk) => format!("partition {partition}, where pk {pk:?} is"),
                None => format!("partition {partition}"),
            };
            return Err(ServiceError::bad_request(
                "token_mismatch",
                format!(
                    "the token {from} has no position in {what}: it comes from a read or watch \
                     of other partitions. Watch from the FireScroll-Token of a read of this pk \
                     (or the id of this watch's last event), or without a token to start now"
                ),
            ));
        }
        Ok(partitions)
    }

    /// Registers the watch of `request` over `partitions` with their dispatchers.
    fn register_watch(
        &self,
        request: WatchRequest,
        partitions: Vec<u32>,
    ) -> Result<Watch, ServiceError> {
        let filter = Filter::new(&request);
        let (tx, rx) = mpsc::channel(QUEUE);
        let ending = Arc::new(Ending::default());
        let mut watch = Watch {
            steps: rx,
            backlogs: VecDeque::new(),
            filter: filter.clone(),
            dispatchers: Vec::with_capacity(partitions.len()),
            ending: ending.clone(),
            positions: Token::default(),
            told: None,
            bookmarks: tokio::time::interval(self.config.watch_bookmark),
            caught_up: false,
            ended: false,
        };
        let mut too_old = Token::default();
        for &partition in &partitions {
            let unavailable = |message: &str| {
                ServiceError::new(
                    ErrorKind::Unavailable,
                    "watch_unavailable",
                    format!(
                        "{message}; a watch is served by a node that applies its partitions: \
                         connect to one (GET /records/watch there, with the same token)"
                    ),
                )
            };
            let runtime = self
                .applying_partition(partition)
                .map_err(|e| unavailable(&e.message))?;
            let dispatcher = self.dispatchers.of(&runtime);
            let from = request.from.as_ref().and_then(|t| t.get(partition));
            match dispatcher.register(&runtime, from, filter.clone(), tx.clone(), ending.clone()) {
                Ok(Some(registered)) => {
                    let start = from.unwrap_or(registered.live_start);
                    watch.positions.0.insert(partition, start);
                    watch.dispatchers.push((dispatcher, registered.id));
                    watch.backlogs.push_back(Backlog {
                        partition,
                        entries: registered.backlog.into(),
                        at: start,
                        live_start: registered.live_start,
                    });
                }
                Ok(None) => {
                    return Err(unavailable(&format!(
                        "partition {partition} just left this node"
                    )));
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
        watch
            .bookmarks
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watch.bookmarks.reset();
        Ok(watch)
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
        self.serving_partition(partition).is_some()
    }

    /// The live changes of `partition` from now, if this node serves it.
    pub fn subscribe_partition(&self, partition: u32) -> Option<Subscription> {
        let runtime = self.serving_partition(partition)?;
        runtime.subscribe_changes(None).ok()
    }

    /// The token of the partitions `pks` are in, as applied on this node now: a read made after
    /// this is at least this new, so a watch from it misses nothing. Partitions this node does not
    /// serve are left out (a read of them through an owner takes the owner's, see
    /// [`Service::get_with_token`]).
    pub fn read_token<'a>(&self, pks: impl IntoIterator<Item = &'a str>) -> Option<String> {
        self.read_positions(pks).text_if_any()
    }

    /// [`Service::read_token`] as positions.
    pub fn read_positions<'a>(&self, pks: impl IntoIterator<Item = &'a str>) -> Token {
        let partitions = self.engine.partition_count();
        let mut token = Token::default();
        for pk in pks {
            token.note_partition(self, partition_of(pk, partitions));
        }
        token
    }

    /// The watch token of one partition this node serves (empty when it does not), taken now.
    pub fn partition_positions(&self, partition: u32) -> Token {
        let mut token = Token::default();
        token.note_partition(self, partition);
        token
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
        for bad in [
            "x", "1:", "1:a", "1:2.x", "-1:5", "0:1,0:2", "+1:5", "1:+5", "1:5.+2",
        ] {
            let e = bad.parse::<Token>().unwrap_err();
            assert_eq!(e.code, "bad_token", "{bad}");
        }
        assert_eq!("".parse::<Token>().unwrap(), Token::default());
    }
}
