//! The region's partition → owners table, built from members' cards. A member that SWIM
//! declares down or that leaves is removed at once; a card not refreshed for `stale_after` stops
//! counting, so a member whose broadcasts stopped reaching us is not routed to forever.

use super::card::Card;
use super::identity::NodeId;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A member that serves a partition, as a read router needs it. Made for every proxied read:
/// its names are shared with the table, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub instance_id: Arc<str>,
    pub replica_group: Arc<str>,
    pub api: SocketAddr,
    /// The next offset it applies of the partition asked about, when its card carried it.
    pub next_offset: Option<u64>,
    /// Whether it applies the partition asked about; else it keeps it on standby (answers its
    /// reads from its last state, but cannot follow its changes).
    pub applies: bool,
}

struct Known {
    card: Card,
    received: Instant,
    /// The card's `instance_id` and `replica_group`, for the [`Peer`]s made from it.
    instance_id: Arc<str>,
    replica_group: Arc<str>,
}

/// Cards by member, and members known to be gone.
pub struct Table {
    local: NodeId,
    namespace: String,
    region: String,
    stale_after: Duration,
    cards: HashMap<NodeId, Known>,
    /// Identities SWIM declared down: their late or re-gossiped cards are ignored. An identity
    /// is never reused (a restarted process has a new one), so this only grows by departures
    /// and is trimmed after an hour.
    gone: HashMap<NodeId, Instant>,
    /// The other members SWIM reports alive (its `MemberUp` notifications), whether or not
    /// their cards have reached us yet: a node that just joined knows them from the join's
    /// member feed a moment before their cards arrive.
    alive: HashSet<NodeId>,
    /// Members whose cards name another namespace or region (gossip seeds shared by
    /// mistake): never waited for.
    strangers: HashSet<NodeId>,
}

/// Whether a received card was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newer than what we had: keep it and pass it on.
    New,
    /// Seen already, from a member that is gone, or from another namespace or region.
    Ignored,
}

impl Table {
    pub fn new(local: NodeId, namespace: &str, region: &str, stale_after: Duration) -> Self {
        Table {
            local,
            namespace: namespace.to_string(),
            region: region.to_string(),
            stale_after,
            cards: HashMap::new(),
            gone: HashMap::new(),
            alive: HashSet::new(),
            strangers: HashSet::new(),
        }
    }

    /// This node renewed its identity (it was declared down while alive and rejoined).
    pub fn set_local(&mut self, id: NodeId) {
        self.local = id;
    }

    /// Takes a card if it is newer than the one held for its member.
    pub fn accept(&mut self, card: Card, now: Instant) -> Accepted {
        if card.namespace != self.namespace || card.region != self.region {
            tracing::warn!(
                member = %card.id, namespace = %card.namespace, region = %card.region,
                "ignoring a gossip card from another namespace or region: check GOSSIP_PEERS"
            );
            // Its card will never count: a start must not wait for it.
            self.alive.remove(&card.id);
            self.strangers.insert(card.id);
            return Accepted::Ignored;
        }
        if self.gone.contains_key(&card.id) {
            return Accepted::Ignored;
        }
        // One member per gossip address, the later process winning (as SWIM resolves it): a
        // restarted node's old self, still gossiped about, must not come back.
        if card.id.addr == self.local.addr && card.id != self.local {
            return Accepted::Ignored;
        }
        let rival = self
            .cards
            .keys()
            .find(|id| id.addr == card.id.addr && **id != card.id)
            .copied();
        if let Some(rival) = rival {
            if rival.incarnation > card.id.incarnation {
                self.gone.insert(card.id, now);
                self.alive.remove(&card.id);
                return Accepted::Ignored;
            }
            self.cards.remove(&rival);
            self.gone.insert(rival, now);
            // Its restarted self is the member now: no card of the old one will come.
            self.alive.remove(&rival);
        }
        if let Some(known) = self.cards.get(&card.id)
            && known.card.seq >= card.seq
        {
            return Accepted::Ignored;
        }
        self.cards.insert(
            card.id,
            Known {
                instance_id: card.instance_id.as_str().into(),
                replica_group: card.replica_group.as_str().into(),
                card,
                received: now,
            },
        );
        Accepted::New
    }

    /// SWIM reports `id` alive (it joined, or this node just learned of it). Another
    /// process's identity at this node's own address (this node before a restart) is not a
    /// member to hear from.
    pub fn member_up(&mut self, id: NodeId) {
        if id.addr != self.local.addr
            && !self.gone.contains_key(&id)
            && !self.strangers.contains(&id)
        {
            self.alive.insert(id);
        }
    }

    /// Whether this node has a current card from every member SWIM reports alive, and knows
    /// of at least one: until then a read of a partition served elsewhere may find no owner
    /// only because the owner's card has not arrived yet.
    pub fn heard_from_every_member(&self, now: Instant) -> bool {
        !self.alive.is_empty()
            && self.alive.iter().all(|id| {
                self.cards
                    .get(id)
                    .is_some_and(|k| now.duration_since(k.received) < self.stale_after)
            })
    }

    /// SWIM declared `id` down, or it left: it serves nothing from now on.
    pub fn remove(&mut self, id: NodeId, now: Instant) {
        self.alive.remove(&id);
        self.strangers.remove(&id);
        if self.cards.remove(&id).is_some() {
            tracing::info!(member = %id, "member left the partition map");
        }
        self.gone.insert(id, now);
        self.gone
            .retain(|_, at| now.duration_since(*at) < Duration::from_secs(3600));
    }

    /// Forgets cards stale for twice the staleness bound (they already route nothing).
    pub fn prune(&mut self, now: Instant) {
        let bound = self.stale_after * 2;
        self.cards
            .retain(|id, k| *id == self.local || now.duration_since(k.received) < bound);
    }

    /// Whether another member serves `partition` now.
    pub fn serves(&self, partition: u32, now: Instant) -> bool {
        self.current(now).any(|k| k.card.serves(partition))
    }

    /// Whether another member serves `partition` and, by its card, has applied every entry
    /// below `next` (a card without offsets, too long for one datagram, counts as having).
    pub fn serves_from(&self, partition: u32, next: u64, now: Instant) -> bool {
        self.current(now).any(|k| {
            k.card.serves(partition) && k.card.next_offset(partition).is_none_or(|o| o >= next)
        })
    }

    /// The other members' current cards.
    fn current(&self, now: Instant) -> impl Iterator<Item = &Known> {
        self.cards.values().filter(move |k| {
            k.card.id != self.local && now.duration_since(k.received) < self.stale_after
        })
    }

    /// The other members serving `partition` now (never this node); when none does, those
    /// keeping it on standby.
    pub fn owners(&self, partition: u32, now: Instant) -> Vec<Peer> {
        // No member serves it (the group is rebalancing, or the broker is away): those keeping
        // it on standby answer from their last state.
        let serves = self.serves(partition, now);
        self.current(now)
            .filter(|k| {
                if serves {
                    k.card.serves(partition)
                } else {
                    k.card.holds_standby(partition)
                }
            })
            .map(|k| Peer {
                id: k.card.id,
                instance_id: k.instance_id.clone(),
                replica_group: k.replica_group.clone(),
                api: k.card.api,
                next_offset: k.card.next_offset(partition),
                applies: serves,
            })
            .collect()
    }

    /// Members with a current card, this node included.
    pub fn member_count(&self, now: Instant) -> usize {
        self.cards
            .values()
            .filter(|k| {
                k.card.id == self.local || now.duration_since(k.received) < self.stale_after
            })
            .count()
    }

    /// What `/debug/cluster` shows.
    pub fn view(&self, now: Instant) -> ClusterView {
        let mut members: Vec<MemberView> = self
            .cards
            .values()
            .map(|k| MemberView {
                id: k.card.id.to_string(),
                local: k.card.id == self.local,
                instance_id: k.card.instance_id.clone(),
                replica_group: k.card.replica_group.clone(),
                api: k.card.api.to_string(),
                resp: k.card.resp.to_string(),
                gossip: k.card.id.addr.to_string(),
                state: if k.card.id == self.local
                    || now.duration_since(k.received) < self.stale_after
                {
                    "alive"
                } else {
                    "stale"
                },
                card_age_ms: now.duration_since(k.received).as_millis() as u64,
                partitions: k
                    .card
                    .served()
                    .into_iter()
                    .map(|(partition, next_offset)| PartitionView {
                        partition,
                        next_offset,
                    })
                    .collect(),
            })
            .collect();
        members.sort_by(|a, b| a.instance_id.cmp(&b.instance_id).then(a.id.cmp(&b.id)));
        let mut owners: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for m in members.iter().filter(|m| m.state == "alive") {
            for p in &m.partitions {
                owners
                    .entry(p.partition)
                    .or_default()
                    .push(m.instance_id.clone());
            }
        }
        ClusterView {
            local: self.local.to_string(),
            members,
            partition_owners: owners,
            departed: self.gone.len(),
        }
    }
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub local: String,
    pub members: Vec<MemberView>,
    /// Partition → instance ids of the members serving it (this node included).
    pub partition_owners: std::collections::BTreeMap<u32, Vec<String>>,
    /// Members that left or were declared down in the last hour.
    pub departed: usize,
}

/// One member in [`ClusterView`].
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub local: bool,
    pub instance_id: String,
    pub replica_group: String,
    pub api: String,
    pub resp: String,
    pub gossip: String,
    pub state: &'static str,
    pub card_age_ms: u64,
    pub partitions: Vec<PartitionView>,
}

/// One served partition in [`MemberView`].
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    pub next_offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, n], 8192)),
            incarnation: 1,
        }
    }

    fn card(n: u8, seq: u64, partitions: &[u32]) -> Card {
        let mut c = Card {
            id: id(n),
            seq,
            namespace: "ns".into(),
            region: "r".into(),
            replica_group: "g".into(),
            instance_id: format!("n{n}"),
            api: SocketAddr::from(([127, 0, 0, n], 8190)),
            resp: SocketAddr::from(([127, 0, 0, n], 6379)),
            partitions: Vec::new(),
            offsets: Vec::new(),
            standby: Vec::new(),
        };
        c.set_partitions(&partitions.iter().map(|&p| (p, 10)).collect::<Vec<_>>());
        c
    }

    fn owner_names(t: &Table, p: u32, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = t
            .owners(p, now)
            .into_iter()
            .map(|o| o.instance_id.to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_member_is_heard_from_once_every_live_members_card_arrived() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(5));
        assert!(!t.heard_from_every_member(now), "nobody known yet");
        // This node's own earlier process, still in the others' feeds, is nobody to wait for.
        t.member_up(NodeId {
            addr: id(1).addr,
            incarnation: 0,
        });
        assert!(!t.heard_from_every_member(now));
        t.member_up(id(2));
        t.member_up(id(3));
        t.accept(card(2, 1, &[0]), now);
        assert!(
            !t.heard_from_every_member(now),
            "n3's card (which may name the partition a read wants) has not arrived"
        );
        t.accept(card(3, 1, &[1]), now);
        assert!(t.heard_from_every_member(now));
        // A card gone stale is a member not heard from.
        assert!(!t.heard_from_every_member(now + Duration::from_secs(6)));
        // A member that left is not waited for.
        t.remove(id(3), now);
        assert!(t.heard_from_every_member(now));
        t.member_up(id(3));
        assert!(t.heard_from_every_member(now), "departures are final");
        // A member restarted (a new identity at its address) whose card came before SWIM said
        // so: its old self is not waited for.
        t.member_up(id(4));
        t.accept(card(4, 1, &[2]), now);
        let restarted = NodeId {
            incarnation: 2,
            ..id(4)
        };
        t.member_up(restarted);
        let mut renewed = card(4, 1, &[2]);
        renewed.id = restarted;
        t.accept(renewed, now);
        assert!(t.heard_from_every_member(now));
        // A member of another namespace on the same gossip seeds: its cards never count, so
        // it is not waited for, whether its card comes before SWIM's word of it or after.
        t.member_up(id(5));
        let mut stranger = card(5, 1, &[3]);
        stranger.namespace = "other".into();
        assert_eq!(t.accept(stranger.clone(), now), Accepted::Ignored);
        assert!(t.heard_from_every_member(now));
        t.member_up(id(5));
        assert!(t.heard_from_every_member(now));
        let mut far = card(6, 1, &[3]);
        far.region = "elsewhere".into();
        t.accept(far, now);
        t.member_up(id(6));
        assert!(t.heard_from_every_member(now));
    }

    #[test]
    fn newest_card_wins_and_departures_are_final() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        assert_eq!(t.accept(card(1, 1, &[0]), now), Accepted::New);
        assert_eq!(t.accept(card(2, 2, &[0, 1]), now), Accepted::New);
        assert_eq!(t.accept(card(3, 1, &[1]), now), Accepted::New);
        assert_eq!(owner_names(&t, 0, now), ["n2"], "never routes to itself");
        assert_eq!(owner_names(&t, 1, now), ["n2", "n3"]);
        // An older card of n2 arriving late changes nothing.
        assert_eq!(t.accept(card(2, 1, &[]), now), Accepted::Ignored);
        assert_eq!(owner_names(&t, 1, now), ["n2", "n3"]);
        // n2 gives up partition 1.
        assert_eq!(t.accept(card(2, 3, &[0]), now), Accepted::New);
        assert_eq!(owner_names(&t, 1, now), ["n3"]);
        // n3 dies; a re-gossiped card of it does not bring it back.
        t.remove(id(3), now);
        assert!(owner_names(&t, 1, now).is_empty());
        assert_eq!(t.accept(card(3, 9, &[1]), now), Accepted::Ignored);
        assert!(t.owners(1, now).is_empty());
        assert_eq!(t.owners(0, now)[0].next_offset, Some(10));
    }

    #[test]
    fn members_keeping_a_partition_on_standby_are_asked_only_while_none_serves_it() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        let mut standby = card(2, 1, &[0]);
        standby.set_standby(&[1]);
        t.accept(standby, now);
        let mut own = card(1, 1, &[]);
        own.set_standby(&[1, 2]);
        t.accept(own, now);
        assert_eq!(owner_names(&t, 1, now), ["n2"], "never itself");
        assert!(t.owners(2, now).is_empty());
        assert_eq!(t.owners(1, now)[0].next_offset, None);
        assert!(
            !t.owners(1, now)[0].applies,
            "a standby copy follows no changes"
        );
        // n3 serves partition 1 again: only it is asked.
        t.accept(card(3, 1, &[1]), now);
        assert_eq!(owner_names(&t, 1, now), ["n3"]);
        assert!(t.owners(1, now)[0].applies);
        assert_eq!(owner_names(&t, 0, now), ["n2"]);
    }

    #[test]
    fn a_member_serves_from_an_offset_when_its_card_has_applied_that_far() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        // Every partition of `card` has applied up to offset 10.
        t.accept(card(2, 1, &[0]), now);
        assert!(t.serves_from(0, 10, now));
        assert!(!t.serves_from(0, 11, now), "behind the offset asked");
        assert!(!t.serves_from(1, 0, now), "not served");
        // A card whose offsets did not fit: serving is all it says.
        let mut long = card(3, 1, &[0]);
        long.offsets.clear();
        t.accept(long, now);
        assert!(t.serves_from(0, 11, now));
        // This node's own card never counts.
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        t.accept(card(1, 1, &[0]), now);
        assert!(!t.serves_from(0, 0, now));
    }

    #[test]
    fn one_member_per_address_and_the_later_process_wins() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        let old = card(2, 5, &[0]);
        let mut restarted = card(2, 1, &[1]);
        restarted.id.incarnation = 2;
        t.accept(old.clone(), now);
        assert_eq!(t.accept(restarted, now), Accepted::New);
        assert_eq!(owner_names(&t, 1, now), ["n2"]);
        assert!(t.owners(0, now).is_empty(), "the old process is gone");
        assert_eq!(t.accept(old, now), Accepted::Ignored);
        // This node's own old self, gossiped back to it after a restart.
        let mut old_self = card(1, 9, &[3]);
        old_self.id.incarnation = 0;
        assert_eq!(t.accept(old_self, now), Accepted::Ignored);
        assert_eq!(t.view(now).members.len(), 1);
    }

    #[test]
    fn stale_cards_stop_counting_and_strangers_are_ignored() {
        let now = Instant::now();
        let mut t = Table::new(id(1), "ns", "r", Duration::from_secs(10));
        t.accept(card(2, 1, &[0]), now);
        assert_eq!(owner_names(&t, 0, now + Duration::from_secs(9)), ["n2"]);
        assert!(t.owners(0, now + Duration::from_secs(11)).is_empty());
        let mut stranger = card(4, 1, &[0]);
        stranger.region = "elsewhere".into();
        assert_eq!(t.accept(stranger, now), Accepted::Ignored);
        let view = t.view(now + Duration::from_secs(11));
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.members[0].state, "stale");
        assert!(view.partition_owners.is_empty());
        t.prune(now + Duration::from_secs(21));
        assert!(
            t.view(now).members.is_empty(),
            "long-stale cards are forgotten"
        );
    }
}
