//! The card: what a member tells its region about itself — how to reach it and which
//! partitions it serves, with the offset each has applied. Sent through SWIM's broadcast
//! dissemination every GOSSIP_BROADCAST_MS and whenever what it serves changes.

use super::identity::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A member's card. Postcard-encoded on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub id: NodeId,
    /// Increases with every card a process sends; receivers keep the highest.
    pub seq: u64,
    /// Cards from another namespace or region are ignored: a misconfigured peer list must not
    /// route reads to a node holding other data.
    pub namespace: String,
    pub region: String,
    pub replica_group: String,
    pub instance_id: String,
    /// Where its HTTP API (and the internal read endpoints) listen.
    pub api: SocketAddr,
    /// Where its Redis protocol listens.
    pub resp: SocketAddr,
    /// Bit `p` set: partition `p` is served (owned and readable).
    pub partitions: Vec<u8>,
    /// The next offset to apply of each served partition, ascending by partition; empty when
    /// they did not fit in one datagram.
    pub offsets: Vec<u64>,
    /// Bit `p` set: partition `p` is on standby here — taken by the log before its next owner
    /// was settled, its last state answering reads. Asked only when no member serves it. Last,
    /// so cards of releases without it still decode (as none on standby).
    #[serde(default)]
    pub standby: Vec<u8>,
}

/// A card as releases before standby partitions sent it.
#[derive(Deserialize)]
struct CardWithoutStandby {
    id: NodeId,
    seq: u64,
    namespace: String,
    region: String,
    replica_group: String,
    instance_id: String,
    api: SocketAddr,
    resp: SocketAddr,
    partitions: Vec<u8>,
    offsets: Vec<u64>,
}

/// The dissemination key: a newer card of the same process replaces an older one in every
/// member's send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardKey {
    id: NodeId,
    seq: u64,
}

impl foca::Invalidates for CardKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.seq > other.seq
    }
}

impl Card {
    /// The key SWIM dissemination deduplicates this card by.
    pub fn key(&self) -> CardKey {
        CardKey {
            id: self.id,
            seq: self.seq,
        }
    }

    /// Sets the served partitions (ascending, with their next offsets).
    pub fn set_partitions(&mut self, served: &[(u32, u64)]) {
        self.partitions = bitmap(served.iter().map(|&(p, _)| p));
        self.offsets = served.iter().map(|&(_, o)| o).collect();
    }

    /// Sets the partitions on standby.
    pub fn set_standby(&mut self, standby: &[u32]) {
        self.standby = bitmap(standby.iter().copied());
    }

    /// Whether partition `p` is served.
    pub fn serves(&self, p: u32) -> bool {
        has_bit(&self.partitions, p)
    }

    /// Whether partition `p` is on standby.
    pub fn holds_standby(&self, p: u32) -> bool {
        has_bit(&self.standby, p)
    }

    /// The served partitions, ascending, with their next offsets when the card carries them.
    pub fn served(&self) -> Vec<(u32, Option<u64>)> {
        let partitions = (0..self.partitions.len() as u32 * 8).filter(|&p| self.serves(p));
        let mut offsets = self.offsets.iter().copied();
        partitions.map(|p| (p, offsets.next())).collect()
    }

    /// The next offset partition `p` will apply, if served and carried.
    pub fn next_offset(&self, p: u32) -> Option<u64> {
        if !self.serves(p) || self.offsets.is_empty() {
            return None;
        }
        let rank = (0..p).filter(|&q| self.serves(q)).count();
        self.offsets.get(rank).copied()
    }

    /// The card's bytes, fitting in `max` bytes: offsets are dropped first if need be.
    pub fn encode(&self, max: usize) -> Result<Vec<u8>, CardTooLarge> {
        let bytes = postcard::to_allocvec(self).expect("a card always serializes");
        if bytes.len() <= max {
            return Ok(bytes);
        }
        let bare = Card {
            offsets: Vec::new(),
            ..self.clone()
        };
        let bytes = postcard::to_allocvec(&bare).expect("a card always serializes");
        if bytes.len() <= max {
            Ok(bytes)
        } else {
            Err(CardTooLarge {
                bytes: bytes.len(),
                max,
            })
        }
    }

    /// A card from its bytes (a card of an older release has nothing on standby).
    pub fn decode(bytes: &[u8]) -> Result<Card, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let old: CardWithoutStandby = postcard::from_bytes(bytes).map_err(|_| e)?;
            Ok(Card {
                id: old.id,
                seq: old.seq,
                namespace: old.namespace,
                region: old.region,
                replica_group: old.replica_group,
                instance_id: old.instance_id,
                api: old.api,
                resp: old.resp,
                partitions: old.partitions,
                offsets: old.offsets,
                standby: Vec::new(),
            })
        })
    }
}

/// A bitmap with bit `p` set for each of `partitions`.
fn bitmap(partitions: impl Iterator<Item = u32> + Clone) -> Vec<u8> {
    let top = partitions
        .clone()
        .map(|p| p as usize + 1)
        .max()
        .unwrap_or(0);
    let mut bits = vec![0; top.div_ceil(8)];
    for p in partitions {
        bits[p as usize / 8] |= 1 << (p % 8);
    }
    bits
}

fn has_bit(bits: &[u8], p: u32) -> bool {
    bits.get(p as usize / 8)
        .is_some_and(|byte| byte & (1 << (p % 8)) != 0)
}

/// A card does not fit in one gossip datagram even without offsets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("this node's gossip card is {bytes} bytes, over the {max}-byte datagram limit")]
pub struct CardTooLarge {
    pub bytes: usize,
    pub max: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> Card {
        Card {
            id: NodeId::seed("127.0.0.1:8192".parse().unwrap()),
            seq: 1,
            namespace: "ns".into(),
            region: "local".into(),
            replica_group: "a".into(),
            instance_id: "n1".into(),
            api: "127.0.0.1:8190".parse().unwrap(),
            resp: "127.0.0.1:6379".parse().unwrap(),
            partitions: Vec::new(),
            offsets: Vec::new(),
            standby: Vec::new(),
        }
    }

    #[test]
    fn partitions_and_offsets_round_trip() {
        let mut c = card();
        c.set_partitions(&[(0, 5), (3, 0), (9, 77)]);
        let back = Card::decode(&c.encode(1400).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            back.served(),
            vec![(0, Some(5)), (3, Some(0)), (9, Some(77))]
        );
        assert!(back.serves(9) && !back.serves(1) && !back.serves(10) && !back.serves(1000));
        assert_eq!(back.next_offset(9), Some(77));
        assert_eq!(back.next_offset(2), None);
    }

    #[test]
    fn standby_partitions_round_trip_and_older_cards_decode_without_them() {
        let mut c = card();
        c.set_partitions(&[(1, 5)]);
        c.set_standby(&[0, 9]);
        let back = Card::decode(&c.encode(1400).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(back.holds_standby(0) && back.holds_standby(9) && !back.holds_standby(1));
        assert!(back.serves(1) && !back.serves(0));
        // What a release before standby partitions sends: the same fields, without the last.
        #[derive(Serialize)]
        struct Older<'a> {
            id: NodeId,
            seq: u64,
            namespace: &'a str,
            region: &'a str,
            replica_group: &'a str,
            instance_id: &'a str,
            api: SocketAddr,
            resp: SocketAddr,
            partitions: &'a [u8],
            offsets: &'a [u64],
        }
        let older = postcard::to_allocvec(&Older {
            id: c.id,
            seq: c.seq,
            namespace: &c.namespace,
            region: &c.region,
            replica_group: &c.replica_group,
            instance_id: &c.instance_id,
            api: c.api,
            resp: c.resp,
            partitions: &c.partitions,
            offsets: &c.offsets,
        })
        .unwrap();
        let decoded = Card::decode(&older).unwrap();
        assert_eq!(
            decoded,
            Card {
                standby: Vec::new(),
                ..c.clone()
            }
        );
        // And a release before it decodes a new card, the standby bits past its fields.
        let back: CardWithoutStandby = postcard::from_bytes(&c.encode(1400).unwrap()).unwrap();
        assert_eq!((back.partitions, back.offsets), (c.partitions, c.offsets));
    }

    #[test]
    fn offsets_are_dropped_before_the_card_is_refused() {
        let mut c = card();
        let all: Vec<(u32, u64)> = (0..1024).map(|p| (p, u64::MAX)).collect();
        c.set_partitions(&all);
        let bytes = c.encode(1400).unwrap();
        let back = Card::decode(&bytes).unwrap();
        assert!(back.offsets.is_empty() && back.serves(1023) && back.next_offset(5).is_none());
        assert_eq!(back.served().len(), 1024);
        let huge: Vec<(u32, u64)> = (0..100_000).map(|p| (p, 0)).collect();
        c.set_partitions(&huge);
        assert!(c.encode(1400).is_err());
    }

    #[test]
    fn a_newer_card_of_the_same_process_invalidates_the_older() {
        use foca::Invalidates;
        let old = card();
        let new = Card { seq: 2, ..card() };
        let other = Card {
            id: NodeId::seed("127.0.0.2:8192".parse().unwrap()),
            seq: 9,
            ..card()
        };
        assert!(new.key().invalidates(&old.key()));
        assert!(!old.key().invalidates(&new.key()));
        assert!(!other.key().invalidates(&old.key()));
    }
}
