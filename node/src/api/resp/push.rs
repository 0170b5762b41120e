//! Messages the server sends a connection on its own: client-side caching invalidations
//! (`CLIENT TRACKING`) and pub/sub messages (keyspace notifications).
//!
//! One hub per node follows the change feed of every partition this node serves and turns each
//! change into invalidations for the connections tracking that key (or a prefix of it, in
//! broadcast mode) and into keyspace notifications for matching subscribers. Nothing here slows
//! apply: the hub reads the feed like any watch, and a connection whose pushes pile up
//! (`PUSH_QUEUE`) is disconnected, as Redis does with its output buffer limit — a client that
//! cannot keep up would otherwise keep serving stale cached values.

use super::reply::Reply;
use crate::engine::ChangeKind;
use crate::service::{ErrorKind, Service, Token, WatchEvent};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Pushes one connection may have queued before it is disconnected.
const PUSH_QUEUE: usize = 4096;

/// Keys the node tracks for default-mode clients at most (Redis's `tracking-table-max-keys`
/// default). Past it, the oldest-looking keys are invalidated and forgotten, so clients reading
/// ever new keys cannot grow the table without bound.
const MAX_TRACKED_KEYS: usize = 1_000_000;

/// Channels and patterns one connection may subscribe to: every notification is checked
/// against every pattern, so a client cannot make that unbounded.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// The pub/sub channel invalidations go to for `CLIENT TRACKING ... REDIRECT` (RESP2 clients).
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// A message for one connection.
#[derive(Debug, Clone)]
pub enum Push {
    /// RESP3 `invalidate`: these keys changed (`None`: every key, the cache must be flushed).
    Invalidate(Option<Vec<Bytes>>),
    /// A pub/sub message (`pattern` set for a pattern subscription).
    Message {
        pattern: Option<Bytes>,
        channel: Bytes,
        payload: Reply,
    },
}

impl Push {
    /// The frame to write for a connection speaking `proto`.
    pub fn into_reply(self, proto: u8) -> Reply {
        match self {
            Push::Invalidate(keys) => {
                let keys = keys.map_or(Reply::Null, |k| {
                    Reply::Array(k.into_iter().map(Reply::Bulk).collect())
                });
                Reply::Push(vec![Reply::bulk("invalidate"), keys])
            }
            Push::Message {
                pattern,
                channel,
                payload,
            } => {
                let mut items = Vec::with_capacity(4);
                match pattern {
                    Some(pattern) => {
                        items.push(Reply::bulk("pmessage"));
                        items.push(Reply::Bulk(pattern));
                    }
                    None => items.push(Reply::bulk("message")),
                }
                items.push(Reply::Bulk(channel));
                items.push(payload);
                // RESP2 has no push type: a message is an array, as Redis sends it.
                if proto >= 3 {
                    Reply::Push(items)
                } else {
                    Reply::Array(items)
                }
            }
        }
    }
}

/// How a connection tracks keys for its client-side cache (`CLIENT TRACKING ON ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Broadcast mode: every key under `prefixes` (all keys without any), read or not.
    pub bcast: bool,
    pub prefixes: Vec<Bytes>,
    /// Track only reads after `CLIENT CACHING yes`.
    pub optin: bool,
    /// Track reads unless after `CLIENT CACHING no`.
    pub optout: bool,
    /// No invalidations for this connection's own writes.
    pub noloop: bool,
    /// Send the invalidations to this connection instead (RESP2 clients, through
    /// `__redis__:invalidate`).
    pub redirect: Option<u64>,
}

/// One subscriber fewer to `name`; forgotten with its last.
fn release(counts: &mut HashMap<Bytes, usize>, name: &Bytes) {
    if let Some(count) = counts.get_mut(name) {
        *count -= 1;
        if *count == 0 {
            counts.remove(name);
        }
    }
}

/// Most invalidations a NOLOOP connection's writes in flight hold back; past it they go out
/// (a client told of its own write only drops a cached value).
const MAX_HELD_INVALIDATIONS: usize = 1024;

struct Conn {
    tx: mpsc::Sender<Push>,
    tracking: Option<Tracking>,
    /// Positions this connection wrote (for NOLOOP), newest last.
    own_writes: std::collections::VecDeque<(u32, u64)>,
    /// Its writes on their way (for NOLOOP): a change applied meanwhile may be one of them,
    /// its position not known here yet.
    writes_in_flight: u32,
    /// Invalidations held until its writes in flight are known (key, partition, offset).
    held: Vec<(Bytes, u32, u64)>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    /// Set when its queue overflowed: the connection closes.
    overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// Default-mode tracking: key → connections that read it since its last invalidation, each
    /// with the offset its latest read saw at least up to.
    tracked: HashMap<Bytes, HashMap<u64, u64>>,
    /// How many connections are subscribed to each channel (`[0]`) and pattern (`[1]`):
    /// `INFO`'s `pubsub_channels`/`pubsub_patterns` without walking every connection under the
    /// lock the pushes take.
    subscribed: [HashMap<Bytes, usize>; 2],
}

/// See the module docs.
pub struct Hub {
    state: Mutex<State>,
    /// Connections with tracking or subscriptions: the feed is skipped while there are none.
    active: AtomicUsize,
    /// `notify-keyspace-events` as Redis's flag letters, parsed ([`NotifyFlags`]).
    notify: AtomicU32,
    /// Per partition: whether its changes reach the hub now (reads of it may be tracked).
    followed: Vec<AtomicBool>,
    /// Per partition: the offset after the last change the hub handled (moved under the state
    /// lock).
    handled: Vec<AtomicU64>,
    /// Wakes the loop that starts followers.
    wake: Notify,
}

/// Which keyspace notifications are on (`CONFIG SET notify-keyspace-events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyFlags(u32);

impl NotifyFlags {
    const KEYSPACE: u32 = 1;
    const KEYEVENT: u32 = 2;
    const GENERIC: u32 = 4;
    const STRING: u32 = 8;
    const HASH: u32 = 16;
    const EXPIRED: u32 = 32;

    /// Parses Redis's letters (`K`, `E`, `g`, `$`, `h`, `x`, `A`; the ones for types FireScroll
    /// does not have are accepted and mean nothing). `None` for other letters.
    pub fn parse(text: &str) -> Option<NotifyFlags> {
        let mut flags = 0;
        for c in text.chars() {
            flags |= match c {
                'K' => Self::KEYSPACE,
                'E' => Self::KEYEVENT,
                'g' => Self::GENERIC,
                '$' => Self::STRING,
                'h' => Self::HASH,
                'x' => Self::EXPIRED,
                'A' => Self::GENERIC | Self::STRING | Self::HASH | Self::EXPIRED,
                'l' | 's' | 'z' | 'e' | 't' | 'm' | 'd' | 'n' => 0,
                _ => return None,
            };
        }
        Some(NotifyFlags(flags))
    }

    /// The letters, as `CONFIG GET` shows them.
    pub fn letters(self) -> String {
        let mut out = String::new();
        let all = Self::GENERIC | Self::STRING | Self::HASH | Self::EXPIRED;
        for (bit, letter) in [(Self::KEYSPACE, 'K'), (Self::KEYEVENT, 'E')] {
            if self.0 & bit != 0 {
                out.push(letter);
            }
        }
        if self.0 & all == all {
            out.push('A');
        } else {
            for (bit, letter) in [
                (Self::GENERIC, 'g'),
                (Self::STRING, '$'),
                (Self::HASH, 'h'),
                (Self::EXPIRED, 'x'),
            ] {
                if self.0 & bit != 0 {
                    out.push(letter);
                }
            }
        }
        out
    }

    /// Redis's event for a change (by its effect), if the flags want that class.
    fn event(self, kind: ChangeKind, sk: &str) -> Option<&'static str> {
        let (event, class) = match (kind, sk.is_empty()) {
            (ChangeKind::Put, true) => ("set", Self::STRING),
            (ChangeKind::Put, false) => ("hset", Self::HASH),
            (ChangeKind::Delete, true) => ("del", Self::GENERIC),
            (ChangeKind::Delete, false) => ("hdel", Self::HASH),
            (ChangeKind::Expired, _) => ("expired", Self::EXPIRED),
        };
        (self.0 & class != 0 && self.0 & (Self::KEYSPACE | Self::KEYEVENT) != 0).then_some(event)
    }
}

impl Hub {
    /// A hub for a namespace of `partitions`, following their changes (see [`Hub::start`]).
    fn new(partitions: u32) -> Hub {
        Hub {
            state: Mutex::default(),
            active: AtomicUsize::new(0),
            notify: AtomicU32::new(0),
            followed: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            handled: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            wake: Notify::new(),
        }
    }

    /// Starts following the changes of every partition — here, or through an owner's watch when
    /// another node of the region applies it — while connections track keys or subscribe (with
    /// none, writes cost the hub nothing). Checks every second, and at once when a connection
    /// needs them.
    pub fn start(service: Service) -> Arc<Hub> {
        let hub = Arc::new(Hub::new(service.partition_count()));
        let following = hub.clone();
        tokio::spawn(async move {
            let mut followed: HashSet<u32> = HashSet::new();
            let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
            loop {
                let active = following.active.load(Ordering::Relaxed) > 0;
                for partition in 0..service.partition_count() {
                    if followed.contains(&partition) || !active {
                        continue;
                    }
                    followed.insert(partition);
                    let (hub, service, done) =
                        (following.clone(), service.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        hub.follow(&service, partition).await;
                        let _ = done.send(partition);
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = following.wake.notified() => {}
                    Some(partition) = done_rx.recv() => { followed.remove(&partition); }
                }
            }
        });
        hub
    }

    /// Follows `partition`'s changes, resuming exactly from the last token when the stream ends
    /// (an owner went away, the partition moved, the follower fell behind). Returns once no
    /// connection needs pushes (seen at the next event or bookmark).
    async fn follow(&self, service: &Service, partition: u32) {
        let mut token: Option<Token> = None;
        'follow: loop {
            if self.active.load(Ordering::Relaxed) == 0 {
                break;
            }
            match service.follow_partition(partition, token.clone()).await {
                Ok(mut stream) => {
                    while let Some(event) = stream.next().await {
                        match event {
                            WatchEvent::Bookmark { token: at } => {
                                token = at.parse().ok();
                                self.followed[partition as usize].store(true, Ordering::Release);
                                // A partition that came here is followed here.
                                if !stream.is_local() && service.serves(partition) {
                                    break;
                                }
                            }
                            WatchEvent::Change { token: at, change } => {
                                token = at.parse().ok();
                                if let Some(kind) = ChangeKind::from_name(change.op) {
                                    self.changed(
                                        partition,
                                        change.offset,
                                        &change.pk,
                                        &change.sk,
                                        kind,
                                    );
                                }
                            }
                            WatchEvent::End { .. } => break,
                        }
                        if self.active.load(Ordering::Relaxed) == 0 {
                            break 'follow;
                        }
                    }
                }
                Err(e) => {
                    self.followed[partition as usize].store(false, Ordering::Release);
                    if e.kind == ErrorKind::Gone {
                        // Changes were missed: which keys changed is unknown.
                        token = None;
                        self.flush_all();
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Until the stream is back, reads of this partition are not tracked (they are
            // invalidated at once); keys tracked before get the changes missed meanwhile.
            self.followed[partition as usize].store(false, Ordering::Release);
        }
        self.followed[partition as usize].store(false, Ordering::Release);
    }

    /// Waits (at most `limit`) until every partition's changes are followed, so a connection
    /// that just subscribed or turned tracking on gets the changes of every key from now.
    pub async fn wait_followed(&self, limit: Duration) {
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        while self.followed.iter().any(|f| !f.load(Ordering::Acquire))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The offset after the last change of `partition` the hub handled (pushed to whoever
    /// tracked or subscribed then).
    pub fn handled(&self, partition: u32) -> u64 {
        self.handled
            .get(partition as usize)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Registers connection `id` for pushes (once); returns its queue and overflow flag.
    pub fn register(&self, id: u64) -> (mpsc::Receiver<Push>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut state = self.state.lock().expect("hub lock");
        state.conns.insert(
            id,
            Conn {
                tx,
                tracking: None,
                own_writes: Default::default(),
                writes_in_flight: 0,
                held: Vec::new(),
                channels: HashSet::new(),
                patterns: HashSet::new(),
                overflowed: overflowed.clone(),
            },
        );
        self.active.store(state.conns.len(), Ordering::Relaxed);
        (rx, overflowed)
    }

    /// Forgets connection `id` (closed).
    pub fn unregister(&self, id: u64) {
        let mut state = self.state.lock().expect("hub lock");
        if let Some(conn) = state.conns.remove(&id) {
            for (names, counts) in [conn.channels, conn.patterns]
                .into_iter()
                .zip(state.subscribed.iter_mut())
            {
                for name in names {
                    release(counts, &name);
                }
            }
            state.tracked.retain(|_, ids| {
                ids.remove(&id);
                !ids.is_empty()
            });
        }
        self.active.store(state.conns.len(), Ordering::Relaxed);
    }

    /// Sets (or with `None` turns off) connection `id`'s tracking.
    pub fn set_tracking(&self, id: u64, tracking: Option<Tracking>) {
        let mut state = self.state.lock().expect("hub lock");
        if tracking.is_none() {
            state.tracked.retain(|_, ids| {
                ids.remove(&id);
                !ids.is_empty()
            });
        }
        if let Some(conn) = state.conns.get_mut(&id) {
            conn.tracking = tracking;
        }
    }

    /// Connection `id` read `keys` (default mode), each with its partition and an offset the
    /// read saw at least up to: a key is tracked when its partition is followed and the hub has
    /// handled no change of it past that offset (such a change may be the key's, the read may
    /// not have seen it, and it was pushed before this connection tracked the key); otherwise it
    /// is invalidated at once, so the client does not keep it.
    pub fn track(&self, id: u64, keys: Vec<(Bytes, u32, u64)>) {
        let mut state = self.state.lock().expect("hub lock");
        let mut not_tracked = Vec::new();
        for (key, partition, seen) in keys {
            let followed = self
                .followed
                .get(partition as usize)
                .is_some_and(|f| f.load(Ordering::Acquire));
            if followed && self.handled(partition) <= seen {
                let read_up_to = state.tracked.entry(key).or_default().entry(id).or_default();
                *read_up_to = (*read_up_to).max(seen);
            } else {
                not_tracked.push(key);
            }
        }
        if !not_tracked.is_empty()
            && let Some(conn) = state.conns.get(&id)
        {
            let target = conn
                .tracking
                .as_ref()
                .and_then(|t| t.redirect)
                .unwrap_or(id);
            send_invalidation(&state, target, Some(not_tracked));
        }
        while state.tracked.len() > MAX_TRACKED_KEYS {
            let Some(key) = state.tracked.keys().next().cloned() else {
                break;
            };
            let ids = state.tracked.remove(&key).unwrap_or_default();
            for id in ids.into_keys() {
                let target = state
                    .conns
                    .get(&id)
                    .and_then(|c| c.tracking.as_ref()?.redirect)
                    .unwrap_or(id);
                send_invalidation(&state, target, Some(vec![key.clone()]));
            }
        }
    }

    /// Connection `id` sends a write to the log (for NOLOOP): until the returned guard drops
    /// (after [`Hub::wrote`] noted where it went), an invalidation for it waits, since the
    /// change may be that write's own, applied before its position came back here.
    pub fn writing(&self, id: u64) -> WriteInFlight<'_> {
        let mut state = self.state.lock().expect("hub lock");
        let counted = match state.conns.get_mut(&id) {
            Some(conn) if conn.tracking.as_ref().is_some_and(|t| t.noloop) => {
                conn.writes_in_flight += 1;
                true
            }
            _ => false,
        };
        WriteInFlight {
            hub: self,
            id,
            counted,
        }
    }

    /// A write of connection `id` came back: once none is in flight, the invalidations held
    /// meanwhile go out, but for the connection's own writes.
    fn write_done(&self, id: u64) {
        let mut state = self.state.lock().expect("hub lock");
        let State { conns, tracked, .. } = &mut *state;
        let Some(conn) = conns.get_mut(&id) else {
            return;
        };
        conn.writes_in_flight = conn.writes_in_flight.saturating_sub(1);
        if conn.writes_in_flight > 0 || conn.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut conn.held);
        let own = &conn.own_writes;
        let target = conn
            .tracking
            .as_ref()
            .and_then(|t| t.redirect)
            .unwrap_or(id);
        let mut foreign = Vec::new();
        for (key, partition, offset) in held {
            if own.contains(&(partition, offset)) {
                continue;
            }
            // Kept tracked while held; told now, it is dropped unless read again since.
            if let Some(readers) = tracked.get_mut(&key)
                && readers.get(&id) == Some(&(offset + 1))
            {
                readers.remove(&id);
                if readers.is_empty() {
                    tracked.remove(&key);
                }
            }
            foreign.push(key);
        }
        for key in foreign {
            send_invalidation(&state, target, Some(vec![key]));
        }
    }

    /// Connection `id` wrote at `position` (for NOLOOP).
    pub fn wrote(&self, id: u64, position: (u32, u64)) {
        let mut state = self.state.lock().expect("hub lock");
        if let Some(conn) = state.conns.get_mut(&id)
            && conn.tracking.as_ref().is_some_and(|t| t.noloop)
        {
            conn.own_writes.push_back(position);
            if conn.own_writes.len() > 1024 {
                conn.own_writes.pop_front();
            }
        }
    }

    /// (Un)subscribes connection `id` to `channel` (a pattern when `pattern`); returns how many
    /// channels and patterns it is subscribed to now.
    pub fn subscribe(&self, id: u64, channel: Bytes, pattern: bool, on: bool) -> usize {
        let mut state = self.state.lock().expect("hub lock");
        let State {
            conns, subscribed, ..
        } = &mut *state;
        let Some(conn) = conns.get_mut(&id) else {
            return 0;
        };
        let (set, counts) = if pattern {
            (&mut conn.patterns, &mut subscribed[1])
        } else {
            (&mut conn.channels, &mut subscribed[0])
        };
        if on {
            if set.insert(channel.clone()) {
                *counts.entry(channel).or_default() += 1;
            }
        } else if set.remove(&channel) {
            release(counts, &channel);
        }
        conn.channels.len() + conn.patterns.len()
    }

    /// How many distinct channels, and patterns, some connection is subscribed to (`INFO
    /// stats` `pubsub_channels`, `pubsub_patterns`).
    pub fn subscribed_counts(&self) -> (usize, usize) {
        let state = self.state.lock().expect("hub lock");
        (state.subscribed[0].len(), state.subscribed[1].len())
    }

    /// Each subscribed connection's channel and pattern counts (`CLIENT LIST`'s `sub`, `psub`).
    pub fn subscription_counts(&self) -> HashMap<u64, (usize, usize)> {
        let state = self.state.lock().expect("hub lock");
        state
            .conns
            .iter()
            .filter(|(_, c)| !(c.channels.is_empty() && c.patterns.is_empty()))
            .map(|(&id, c)| (id, (c.channels.len(), c.patterns.len())))
            .collect()
    }

    /// Connection `id`'s channel and pattern counts (`CLIENT INFO`).
    pub fn subscription_count(&self, id: u64) -> (usize, usize) {
        let state = self.state.lock().expect("hub lock");
        state
            .conns
            .get(&id)
            .map_or((0, 0), |c| (c.channels.len(), c.patterns.len()))
    }

    /// The channels (or patterns) connection `id` is subscribed to.
    pub fn subscriptions(&self, id: u64, pattern: bool) -> Vec<Bytes> {
        let state = self.state.lock().expect("hub lock");
        state.conns.get(&id).map_or_else(Vec::new, |c| {
            let set = if pattern { &c.patterns } else { &c.channels };
            set.iter().cloned().collect()
        })
    }

    /// The keyspace notification flags.
    pub fn notify_flags(&self) -> NotifyFlags {
        NotifyFlags(self.notify.load(Ordering::Relaxed))
    }

    pub fn set_notify_flags(&self, flags: NotifyFlags) {
        self.notify.store(flags.0, Ordering::Relaxed);
    }

    fn flush_all(&self) {
        let state = self.state.lock().expect("hub lock");
        let targets: Vec<u64> = state
            .conns
            .iter()
            .filter_map(|(id, c)| c.tracking.as_ref().map(|t| t.redirect.unwrap_or(*id)))
            .collect();
        for target in targets {
            send_invalidation(&state, target, None);
        }
    }

    fn changed(&self, partition: u32, offset: u64, pk: &str, sk: &str, kind: ChangeKind) {
        let mut state = self.state.lock().expect("hub lock");
        if let Some(handled) = self.handled.get(partition as usize) {
            handled.fetch_max(offset + 1, Ordering::AcqRel);
        }
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        // As clients sent it (a binary key's bytes): what they track and match prefixes on.
        let key = super::commands::wire_key(pk);
        // Default mode: whoever read the key since its last invalidation, once. A read that saw
        // this change already (it waited for it, and the hub handles changes after reads may
        // see them) keeps the key tracked: its client holds the changed value, and telling it
        // to drop that would only cost it a miss.
        let mut kept = HashMap::new();
        let mut targets = Vec::new();
        for (id, read_up_to) in state.tracked.remove(&key).unwrap_or_default() {
            if read_up_to > offset {
                kept.insert(id, read_up_to);
            } else {
                targets.push(id);
            }
        }
        for (id, conn) in &state.conns {
            if let Some(t) = &conn.tracking
                && t.bcast
                && (t.prefixes.is_empty() || t.prefixes.iter().any(|p| key.starts_with(p)))
            {
                targets.push(*id);
            }
        }
        targets.sort_unstable();
        targets.dedup();
        let mut held = Vec::new();
        for id in targets {
            let Some(conn) = state.conns.get(&id) else {
                continue;
            };
            let Some(tracking) = &conn.tracking else {
                continue;
            };
            let own = tracking.noloop && conn.own_writes.contains(&(partition, offset));
            // Maybe its own: one of its writes is on its way.
            let maybe_own = tracking.noloop
                && !own
                && conn.writes_in_flight > 0
                && conn.held.len() < MAX_HELD_INVALIDATIONS;
            if own || maybe_own {
                // Not told of its own write, so it must stay tracked: the key is dropped from
                // the table only together with an invalidation (this one may apply after the
                // connection read the key again).
                if !tracking.bcast {
                    kept.insert(id, offset + 1);
                }
                if maybe_own {
                    held.push(id);
                }
                continue;
            }
            let target = tracking.redirect.unwrap_or(id);
            send_invalidation(&state, target, Some(vec![key.clone()]));
        }
        for id in held {
            if let Some(conn) = state.conns.get_mut(&id) {
                conn.held.push((key.clone(), partition, offset));
            }
        }
        if !kept.is_empty() {
            state.tracked.entry(key.clone()).or_default().extend(kept);
        }
        let flags = self.notify_flags();
        if let Some(event) = flags.event(kind, sk) {
            let mut messages = Vec::new();
            if flags.0 & NotifyFlags::KEYSPACE != 0 {
                let mut channel = b"__keyspace@0__:".to_vec();
                channel.extend_from_slice(&key);
                let channel = Bytes::from(channel);
                messages.push((channel, Reply::bulk(event)));
            }
            if flags.0 & NotifyFlags::KEYEVENT != 0 {
                let channel = Bytes::from(format!("__keyevent@0__:{event}"));
                messages.push((channel, Reply::Bulk(key.clone())));
            }
            for (channel, payload) in messages {
                publish(&state, &channel, payload);
            }
        }
    }
}

/// Queues an invalidation for connection `target`: RESP3 `invalidate`, or for a redirect
/// target subscribed to `__redis__:invalidate`, a message there.
fn send_invalidation(state: &State, target: u64, keys: Option<Vec<Bytes>>) {
    let Some(conn) = state.conns.get(&target) else {
        return;
    };
    let push = if conn.channels.contains(INVALIDATE_CHANNEL) {
        Push::Message {
            pattern: None,
            channel: Bytes::from_static(INVALIDATE_CHANNEL),
            payload: keys.map_or(Reply::Null, |k| {
                Reply::Array(k.into_iter().map(Reply::Bulk).collect())
            }),
        }
    } else {
        Push::Invalidate(keys)
    };
    queue(conn, push);
}

/// Delivers a message on `channel` to its subscribers and matching pattern subscribers.
fn publish(state: &State, channel: &[u8], payload: Reply) {
    for conn in state.conns.values() {
        if conn.channels.contains(channel) {
            queue(
                conn,
                Push::Message {
                    pattern: None,
                    channel: Bytes::copy_from_slice(channel),
                    payload: payload.clone(),
                },
            );
        }
        for pattern in &conn.patterns {
            if super::commands::glob_match(pattern, channel) {
                queue(
                    conn,
                    Push::Message {
                        pattern: Some(pattern.clone()),
                        channel: Bytes::copy_from_slice(channel),
                        payload: payload.clone(),
                    },
                );
            }
        }
    }
}

fn queue(conn: &Conn, push: Push) {
    if conn.tx.try_send(push).is_err() {
        conn.overflowed.store(true, Ordering::Relaxed);
    }
}

/// A NOLOOP connection's write on its way ([`Hub::writing`]).
pub struct WriteInFlight<'a> {
    hub: &'a Hub,
    id: u64,
    counted: bool,
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.hub.write_done(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidated(rx: &mut mpsc::Receiver<Push>) -> Option<Vec<Bytes>> {
        match rx.try_recv() {
            Ok(Push::Invalidate(keys)) => keys,
            other => panic!("expected an invalidation, got {other:?}"),
        }
    }

    #[test]
    fn a_read_is_tracked_only_when_no_change_of_its_partition_slipped_in() {
        let hub = Hub::new(2);
        let (mut rx, _) = hub.register(1);
        hub.set_tracking(1, Some(Tracking::default()));
        let key = Bytes::from_static(b"k");
        // Partition 0 is not followed yet: the key is invalidated at once, not tracked.
        hub.track(1, vec![(key.clone(), 0, hub.handled(0))]);
        assert_eq!(invalidated(&mut rx), Some(vec![key.clone()]));
        hub.followed[0].store(true, Ordering::Release);
        // A change of the partition handled between the read's start and its end, past what the
        // read is known to have seen: it may have missed it, so the key is invalidated at once.
        let seen = hub.handled(0);
        hub.changed(0, 7, "other", "", ChangeKind::Put);
        hub.track(1, vec![(key.clone(), 0, seen)]);
        assert_eq!(invalidated(&mut rx), Some(vec![key.clone()]));
        // A change the read waited for (the connection's own write at offset 8, seen up to 9):
        // tracked, and invalidated by the key's next change.
        hub.changed(0, 8, "k", "", ChangeKind::Put);
        hub.track(1, vec![(key.clone(), 0, 9)]);
        assert!(rx.try_recv().is_err());
        hub.changed(0, 9, "k", "", ChangeKind::Put);
        assert_eq!(invalidated(&mut rx), Some(vec![key.clone()]));
        // The same the other way round: the read waited for a write at offset 10 (another
        // connection's) and was answered before the hub handled it. The client holds the new
        // value, so that change is not an invalidation; the next one is.
        hub.track(1, vec![(key.clone(), 0, 11)]);
        hub.changed(0, 10, "k", "", ChangeKind::Put);
        assert!(rx.try_recv().is_err(), "the read already saw offset 10");
        hub.changed(0, 11, "k", "", ChangeKind::Put);
        assert_eq!(invalidated(&mut rx), Some(vec![key]));
    }

    #[test]
    fn noloop_holds_an_invalidation_until_its_write_in_flight_is_known() {
        let hub = Hub::new(2);
        let (mut rx, _) = hub.register(1);
        hub.set_tracking(
            1,
            Some(Tracking {
                noloop: true,
                ..Tracking::default()
            }),
        );
        hub.followed[0].store(true, Ordering::Release);
        let key = Bytes::from_static(b"k");
        // Its own write, applied before its position came back to the connection: no
        // invalidation, and the key stays tracked.
        hub.track(1, vec![(key.clone(), 0, hub.handled(0))]);
        let write = hub.writing(1);
        hub.changed(0, 3, "k", "", ChangeKind::Put);
        hub.wrote(1, (0, 3));
        drop(write);
        assert!(rx.try_recv().is_err(), "told of its own write");
        // Another client's write while one of its own is on its way: told once that write is
        // known not to be it.
        let write = hub.writing(1);
        hub.changed(0, 4, "k", "", ChangeKind::Put);
        assert!(rx.try_recv().is_err(), "held while its write is in flight");
        hub.wrote(1, (1, 0));
        drop(write);
        assert_eq!(invalidated(&mut rx), Some(vec![key.clone()]));
        // Told, the key is no longer tracked: the next change says nothing.
        hub.changed(0, 5, "k", "", ChangeKind::Put);
        assert!(rx.try_recv().is_err(), "tracked after its invalidation");
        // A write that failed (no position came back) lets what it held go out.
        hub.track(1, vec![(key.clone(), 0, hub.handled(0))]);
        let write = hub.writing(1);
        hub.changed(0, 6, "k", "", ChangeKind::Put);
        drop(write);
        assert_eq!(invalidated(&mut rx), Some(vec![key]));
    }

    #[test]
    fn notify_flags_parse_and_print_as_redis_does() {
        let all = NotifyFlags::parse("KEA").unwrap();
        assert_eq!(all.letters(), "KEA");
        assert_eq!(all.event(ChangeKind::Put, ""), Some("set"));
        assert_eq!(all.event(ChangeKind::Delete, "f"), Some("hdel"));
        let expired = NotifyFlags::parse("Ex").unwrap();
        assert_eq!(expired.event(ChangeKind::Expired, ""), Some("expired"));
        assert_eq!(expired.event(ChangeKind::Put, ""), None);
        assert_eq!(
            NotifyFlags::parse("").unwrap().event(ChangeKind::Put, ""),
            None
        );
        assert!(NotifyFlags::parse("Q").is_none());
    }
}
