//! Read-after-write across connections: what a Redis read waits for so that, once a write is
//! answered, a read of its key on any connection to this node sees it (as with one Redis
//! server).

use crate::model::{Position, partition_of};
use crate::service::{EntryResult, WriteOp};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Key slots per partition, at most. A read waits only for the writes to keys of its slots, so
/// under a steady stream of writes most reads of other keys wait for nothing (with one position
/// per partition, every read waited for the applier to finish the batch in flight: `GET` p99
/// 8–10 ms beside pipelined `SET`s). Keys sharing a slot only make a read wait a little longer,
/// never see less. 4,096 slots of 8 bytes: 32 KiB per partition.
const MAX_KEY_SLOTS: usize = 4096;

/// Key slots of all partitions together, at most: a namespace of many partitions gets fewer per
/// partition (at least one, which is one position per partition), so the slots stay within
/// 512 KiB or 8 bytes per partition.
const TOTAL_KEY_SLOTS: usize = 1 << 16;

/// The latest positions written through this node's Redis port: per partition, and per key slot
/// of each partition. Every Redis read waits (bounded) until they are applied.
pub struct WrittenPositions {
    /// Per partition: the latest offset written plus one (0: none yet). What reads of a whole
    /// partition wait for (`SCAN`, `DBSIZE`, a subscription's start).
    next: Vec<AtomicU64>,
    /// Per partition, per key slot: the latest offset written to a key of the slot, plus one.
    keys: Vec<Box<[AtomicU64]>>,
    /// Picks a key's slot (seeded per node: a client cannot aim its keys at one slot).
    hasher: foldhash::fast::RandomState,
}

/// Where the ops of a write are noted once written: each op's partition and key slot.
pub struct WriteSlots(Vec<(u32, usize)>);

impl WrittenPositions {
    pub fn new(partitions: u32) -> Self {
        let slots = (TOTAL_KEY_SLOTS / partitions.max(1) as usize).clamp(1, MAX_KEY_SLOTS);
        WrittenPositions {
            next: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            keys: (0..partitions)
                .map(|_| (0..slots).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The namespace's partition count.
    pub fn partitions(&self) -> u32 {
        self.next.len() as u32
    }

    fn slot_of(&self, pk: &str) -> (u32, usize) {
        let partition = partition_of(pk, self.partitions());
        (partition, self.slot_in_partition(pk))
    }

    fn slot_in_partition(&self, pk: &str) -> usize {
        let slots = self.keys.first().map_or(1, |k| k.len());
        self.hasher.hash_one(pk) as usize % slots
    }

    /// The slots of `ops`' keys, taken before the ops are handed to the log.
    pub fn slots_of(&self, ops: &[WriteOp]) -> WriteSlots {
        let mut slots: Vec<(u32, usize)> = ops.iter().map(|op| self.slot_of(&op.pk)).collect();
        slots.sort_unstable();
        slots.dedup();
        WriteSlots(slots)
    }

    /// Notes where a write's entries went, before its reply is sent. Each op's slot gets the
    /// latest entry of the write in the op's partition (at or after the op's own entry).
    pub fn record(&self, results: &[EntryResult], slots: &WriteSlots) {
        // Each written partition's latest entry, in partition order (as `slots` are sorted).
        let mut latest: Vec<(u32, u64)> = results
            .iter()
            .map(|r| (r.position.partition, r.position.offset + 1))
            .collect();
        latest.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        latest.dedup_by_key(|(partition, _)| *partition);
        for &(partition, next) in &latest {
            if let Some(at) = self.next.get(partition as usize) {
                at.fetch_max(next, Ordering::Relaxed);
            }
        }
        let mut written = latest.iter().peekable();
        for &(partition, slot) in &slots.0 {
            while written.next_if(|(p, _)| *p < partition).is_some() {}
            if let (Some(&&(p, next)), Some(keys)) =
                (written.peek(), self.keys.get(partition as usize))
                && p == partition
            {
                keys[slot].fetch_max(next, Ordering::Relaxed);
            }
        }
    }

    /// What a read of every partition waits for: the latest writes of each not applied yet.
    pub fn all(&self, applied: impl Fn(Position) -> bool) -> Vec<Position> {
        self.next
            .iter()
            .enumerate()
            .filter_map(|(partition, next)| {
                let offset = next.load(Ordering::Relaxed).checked_sub(1)?;
                let position = Position {
                    partition: partition as u32,
                    offset,
                };
                (!applied(position)).then_some(position)
            })
            .collect()
    }

    /// The offset after the last write through this node to `partition` (0 before any): a read
    /// of the whole partition (`SCAN`, `DBSIZE`) sees at least up to there. A read of some keys
    /// waits only for their slots: see [`WrittenPositions::key_next`].
    pub fn next(&self, partition: u32) -> u64 {
        self.next
            .get(partition as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The offset after the last write through this node to `pk`'s key slot (0 before any): a
    /// read of `pk` on this node sees at least up to there (it waits for it), but not
    /// necessarily the partition's later writes to other slots.
    pub fn key_next(&self, pk: &str) -> u64 {
        let (partition, slot) = self.slot_of(pk);
        self.keys
            .get(partition as usize)
            .map_or(0, |keys| keys[slot].load(Ordering::Relaxed))
    }

    /// What a read of `pks` waits for: the latest writes to their key slots that `applied` says
    /// are not applied yet, one position per partition (the latest: a partition applies in
    /// offset order), so a read of many keys waits for as many positions as it reads partitions.
    /// Allocates nothing when everything is applied (the usual case).
    pub fn min_offsets<'a>(
        &self,
        pks: impl IntoIterator<Item = &'a str>,
        applied: impl Fn(Position) -> bool,
    ) -> Vec<Position> {
        let mut waits: Vec<Position> = Vec::new();
        for pk in pks {
            let partition = partition_of(pk, self.partitions());
            // Everything written to the partition applied (no writes in flight, the usual
            // case): no key of it to hash.
            let Some(offset) = self.next(partition).checked_sub(1) else {
                continue;
            };
            if applied(Position { partition, offset }) {
                continue;
            }
            let slot = self.slot_in_partition(pk);
            let Some(offset) = self.keys[partition as usize][slot]
                .load(Ordering::Relaxed)
                .checked_sub(1)
            else {
                continue;
            };
            let position = Position { partition, offset };
            if applied(position) {
                continue;
            }
            match waits.iter_mut().find(|w| w.partition == partition) {
                Some(wait) => wait.offset = wait.offset.max(offset),
                None => waits.push(position),
            }
        }
        waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(pk: &str) -> WriteOp {
        WriteOp {
            pk: pk.into(),
            ..WriteOp::default()
        }
    }

    fn written_at(partition: u32, offset: u64) -> EntryResult {
        EntryResult {
            position: Position { partition, offset },
            outcome: None,
        }
    }

    /// A pk of `partition` whose slot differs from `other`'s.
    fn another_key(written: &WrittenPositions, other: &str) -> String {
        let (partition, slot) = written.slot_of(other);
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| {
                let (p, s) = written.slot_of(k);
                p == partition && s != slot
            })
            .unwrap()
    }

    #[test]
    fn a_read_waits_for_writes_to_its_keys_only() {
        let written = WrittenPositions::new(4);
        let nothing_applied = |_: Position| false;
        let key = "user:1";
        let other = another_key(&written, key);
        let (partition, _) = written.slot_of(key);
        let slots = written.slots_of(&[op(key)]);
        written.record(&[written_at(partition, 41)], &slots);
        // The written key waits for its entry; another key of the same partition does not.
        assert_eq!(
            written.min_offsets([key], nothing_applied),
            vec![Position {
                partition,
                offset: 41
            }]
        );
        assert!(
            written
                .min_offsets([other.as_str()], nothing_applied)
                .is_empty()
        );
        // What each read sees at least (for client tracking) is what it waits for.
        assert_eq!(written.key_next(key), 42);
        assert_eq!(
            written.key_next(&other),
            0,
            "not the partition's last write"
        );
        // Reads of the whole keyspace and subscriptions still wait for the partition.
        assert_eq!(written.next(partition), 42);
        assert_eq!(written.all(nothing_applied).len(), 1);
        // Once applied, nothing to wait for.
        assert!(written.min_offsets([key], |p| p.offset <= 41).is_empty());
    }

    #[test]
    fn a_write_over_several_partitions_notes_each_slot_in_its_own_partition() {
        let written = WrittenPositions::new(4);
        // Keys in three different partitions, written by one request whose entries come back
        // in no particular partition order.
        let mut keys: Vec<String> = Vec::new();
        for i in 0.. {
            let key = format!("k{i}");
            if !keys
                .iter()
                .any(|k| written.slot_of(k).0 == written.slot_of(&key).0)
            {
                keys.push(key);
            }
            if keys.len() == 3 {
                break;
            }
        }
        let ops: Vec<WriteOp> = keys.iter().map(|k| op(k)).collect();
        let partitions: Vec<u32> = keys.iter().map(|k| written.slot_of(k).0).collect();
        let results = [
            written_at(partitions[2], 30),
            written_at(partitions[0], 10),
            written_at(partitions[2], 31),
            written_at(partitions[1], 20),
            written_at(partitions[0], 12),
        ];
        written.record(&results, &written.slots_of(&ops));
        for (key, (partition, offset)) in keys.iter().zip([
            (partitions[0], 12),
            (partitions[1], 20),
            (partitions[2], 31),
        ]) {
            assert_eq!(
                written.min_offsets([key.as_str()], |_| false),
                vec![Position { partition, offset }],
                "{key}"
            );
            assert_eq!(written.next(partition), offset + 1);
        }
        // The fourth partition was not written.
        let untouched = (0..4).find(|p| !partitions.contains(p)).unwrap();
        assert_eq!(written.next(untouched), 0);
    }

    #[test]
    fn many_partitions_share_a_bounded_number_of_slots() {
        let few = WrittenPositions::new(4);
        assert!(few.keys.iter().all(|k| k.len() == MAX_KEY_SLOTS));
        let many = WrittenPositions::new(100_000);
        assert!(many.keys.iter().all(|k| k.len() == 1));
        // One slot per partition: a read waits for its partition's latest write, as before.
        let key = "user:1";
        let (partition, slot) = many.slot_of(key);
        assert_eq!(slot, 0);
        many.record(&[written_at(partition, 5)], &many.slots_of(&[op(key)]));
        assert_eq!(
            many.min_offsets([another_key_of(&many, partition).as_str()], |_| false),
            vec![Position {
                partition,
                offset: 5
            }]
        );
    }

    /// Some pk of `partition`.
    fn another_key_of(written: &WrittenPositions, partition: u32) -> String {
        (0..)
            .map(|i| format!("other{i}"))
            .find(|k| written.slot_of(k).0 == partition)
            .unwrap()
    }

    #[test]
    fn a_read_of_many_keys_waits_once_per_partition_for_the_latest_of_them() {
        let written = WrittenPositions::new(2);
        // Every key written by its own write, each at a later offset of its partition.
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let mut offsets = [0u64; 2];
        let mut latest = [None; 2];
        for key in &keys {
            let (partition, _) = written.slot_of(key);
            let offset = offsets[partition as usize];
            offsets[partition as usize] += 1;
            written.record(
                &[written_at(partition, offset)],
                &written.slots_of(&[op(key)]),
            );
            latest[partition as usize] = Some(offset);
        }
        let mut waits = written.min_offsets(keys.iter().map(String::as_str), |_| false);
        waits.sort_unstable_by_key(|w| w.partition);
        let expected: Vec<Position> = (0..2)
            .filter_map(|p| {
                latest[p].map(|offset| Position {
                    partition: p as u32,
                    offset,
                })
            })
            .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn a_slot_keeps_the_latest_write_and_never_goes_back() {
        let written = WrittenPositions::new(2);
        let key = "counter";
        let (partition, _) = written.slot_of(key);
        let slots = written.slots_of(&[op(key), op(key)]);
        written.record(
            &[written_at(partition, 7), written_at(partition, 9)],
            &slots,
        );
        // An older write answered later (another connection's) does not lower it.
        written.record(&[written_at(partition, 3)], &slots);
        let waits = written.min_offsets([key], |_| false);
        assert_eq!(
            waits,
            vec![Position {
                partition,
                offset: 9
            }]
        );
    }
}
