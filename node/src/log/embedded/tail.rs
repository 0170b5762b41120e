//! A partition's latest entries, kept in memory for readers that keep up with the log.
//!
//! The appliers read what the writer has just made durable. Read back from the segment file,
//! that cost the writer a `write(2)` per partition per group (so the file had every entry a
//! reader might look for) and each applier a `read(2)` per turn. From here they take a copy
//! instead, and the writer hands its segment buffer to the file only when it is full, when an
//! entry leaves the tail without being in the file yet, or when it syncs. Readers that fall
//! further behind than the tail read the segment files as before, going on from where they left
//! them (a reader notes its place in the file, and holds no file open, while it takes entries
//! from here).

use std::collections::VecDeque;

/// Memory for the tails of all partitions together, bytes (beyond 512 partitions, each still
/// gets [`MIN_BYTES`]; a tail only holds memory while its partition is written to).
const TOTAL_BYTES: usize = 8 << 20;
/// Bounds of one partition's share of [`TOTAL_BYTES`], bytes.
const MIN_BYTES: usize = 16 << 10;
const MAX_BYTES: usize = 1 << 20;

/// The latest entries of one partition: contiguous offsets from `start` up to the offset the
/// writer gives next (including entries not yet durable: readers stop at the durable end).
pub struct Tail {
    /// Offset of the first entry kept.
    start: u64,
    entries: VecDeque<Vec<u8>>,
    /// Payload bytes kept.
    bytes: usize,
    /// Payload bytes kept at most.
    budget: usize,
}

impl Tail {
    /// An empty tail whose next entry gets `offset`, for a log of `partitions` partitions.
    pub fn new(offset: u64, partitions: u32) -> Self {
        Tail {
            start: offset,
            entries: VecDeque::new(),
            bytes: 0,
            budget: (TOTAL_BYTES / partitions.max(1) as usize).clamp(MIN_BYTES, MAX_BYTES),
        }
    }

    /// Offset of the first entry kept (the next entry's when none is).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Adds the entry that follows the last one kept.
    pub fn push(&mut self, entry: &[u8]) {
        self.bytes += entry.len();
        self.entries.push_back(entry.to_vec());
    }

    /// Where the tail will start once [`Tail::trim`] has brought it within its budget, if
    /// entries must leave: the writer makes sure those are in the segment file first.
    pub fn start_after_trim(&self) -> Option<u64> {
        if self.bytes <= self.budget {
            return None;
        }
        let mut bytes = self.bytes;
        let mut start = self.start;
        for entry in &self.entries {
            if bytes <= self.budget {
                break;
            }
            bytes -= entry.len();
            start += 1;
        }
        Some(start)
    }

    /// Drops the oldest entries until the tail is within its budget.
    pub fn trim(&mut self) {
        while self.bytes > self.budget {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= entry.len();
            self.start += 1;
        }
    }

    /// Forgets everything; the next entry gets `offset` (an empty partition moved its
    /// numbering).
    pub fn restart_at(&mut self, offset: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.start = offset;
    }

    /// Copies the entries kept from `offset` on, below `end` and at most `max` of them, into
    /// `out`; returns how many (none when `offset` is before [`Tail::start`]).
    pub fn copy_into(
        &self,
        offset: u64,
        end: u64,
        max: usize,
        out: &mut Vec<crate::log::LogRecord>,
    ) -> usize {
        let Some(skip) = offset.checked_sub(self.start) else {
            return 0;
        };
        let kept = self.entries.len();
        let from = (skip as usize).min(kept);
        let count = (end.saturating_sub(offset).min(max as u64) as usize).min(kept - from);
        out.extend(self.entries.range(from..from + count).zip(offset..).map(
            |(payload, offset)| crate::log::LogRecord {
                offset,
                payload: payload.clone(),
            },
        ));
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(tail: &Tail, from: u64, end: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        tail.copy_into(from, end, max, &mut out);
        out.into_iter().map(|r| (r.offset, r.payload)).collect()
    }

    #[test]
    fn keeps_the_latest_entries_within_its_budget() {
        // 128 partitions: each gets 64 KiB.
        let mut tail = Tail::new(10, 128);
        assert_eq!(tail.budget, 64 << 10);
        assert_eq!(Tail::new(0, 4096).budget, MIN_BYTES);
        assert_eq!(tail.start_after_trim(), None);
        tail.push(&[1; 40 << 10]);
        tail.push(&[2; 20 << 10]);
        assert_eq!(tail.start_after_trim(), None);
        assert_eq!(
            offsets(&tail, 10, 12, 10),
            vec![(10, vec![1; 40 << 10]), (11, vec![2; 20 << 10])]
        );
        tail.push(&[3; 10 << 10]);
        // 70 KiB: the oldest must go (offset 10), so the tail will start at 11.
        assert_eq!(tail.start_after_trim(), Some(11));
        tail.trim();
        assert_eq!(tail.start(), 11);
        assert_eq!(tail.start_after_trim(), None);
        assert_eq!(offsets(&tail, 12, 13, 10), vec![(12, vec![3; 10 << 10])]);
    }

    #[test]
    fn copies_only_below_the_end_and_at_most_max_and_nothing_before_its_start() {
        let mut tail = Tail::new(5, 4);
        for i in 0..4u8 {
            tail.push(&[i]);
        }
        // Entries 5..9 are kept; the durable end is 8.
        assert_eq!(offsets(&tail, 6, 8, 10), vec![(6, vec![1]), (7, vec![2])]);
        assert_eq!(offsets(&tail, 5, 8, 1), vec![(5, vec![0])]);
        assert_eq!(offsets(&tail, 4, 8, 10), vec![]);
        assert_eq!(offsets(&tail, 8, 8, 10), vec![]);
    }

    #[test]
    fn an_entry_larger_than_the_budget_leaves_at_once() {
        let mut tail = Tail::new(0, 1);
        tail.push(&[1; 10]);
        tail.push(&vec![0; MAX_BYTES + 1]);
        // Both go: the small one is older, and the large one alone is over the budget.
        assert_eq!(tail.start_after_trim(), Some(2));
        tail.trim();
        assert_eq!(tail.start(), 2);
        assert_eq!(offsets(&tail, 0, 2, 10), vec![]);
        tail.restart_at(7);
        assert_eq!(tail.start(), 7);
        assert_eq!(tail.start_after_trim(), None);
    }
}
