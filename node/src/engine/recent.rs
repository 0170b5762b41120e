//! The outcomes of the entries a partition applied most recently, kept in memory: a write that
//! waits for its outcome (`INCR`, `HSET`'s count, a conditional put) reads it here instead of
//! making three store reads on the request thread. The store keeps every outcome too (for other
//! nodes and after a restart); this is only the fast path, bounded in entries and bytes.

use crate::model::{Outcome, Rejection, Returned};
use std::collections::VecDeque;

/// Most offsets covered.
const KEPT_OFFSETS: u64 = 1 << 16;
/// Most bytes of returned values and rejection messages kept (values may be up to 1 MiB each).
const KEPT_BYTES: usize = 8 << 20;

/// Outcomes of the offsets `from..to`, all applied by this partition's applier since it started.
#[derive(Debug)]
pub struct RecentOutcomes {
    from: u64,
    to: u64,
    /// The outcomes in range other than "applied, nothing returned", in offset order.
    notable: VecDeque<(u64, Outcome)>,
    bytes: usize,
}

impl RecentOutcomes {
    /// Nothing covered yet; the first batch is expected at `next_offset`.
    pub fn new(next_offset: u64) -> Self {
        RecentOutcomes {
            from: next_offset,
            to: next_offset,
            notable: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records a batch that applied `first..next` with these rejections and returned values
    /// (each in offset order). A batch that does not continue the covered range starts it over.
    pub fn record(
        &mut self,
        first: u64,
        next: u64,
        rejections: Vec<(u64, Rejection)>,
        returned: Vec<(u64, Vec<Returned>)>,
    ) {
        if first != self.to || next < first {
            self.notable.clear();
            self.bytes = 0;
            self.from = first;
        }
        let mut batch: Vec<(u64, Outcome)> = rejections
            .into_iter()
            .map(|(offset, r)| (offset, Outcome::Rejected(r)))
            .chain(
                returned
                    .into_iter()
                    .map(|(offset, values)| (offset, Outcome::Applied(values))),
            )
            .filter(|(offset, _)| (first..next).contains(offset))
            .collect();
        batch.sort_unstable_by_key(|(offset, _)| *offset);
        for (offset, outcome) in batch {
            self.bytes += size_of(&outcome);
            self.notable.push_back((offset, outcome));
        }
        self.to = next.max(first);
        // Whatever falls out moves the start of the covered range past it.
        while self.bytes > KEPT_BYTES
            || self
                .notable
                .front()
                .is_some_and(|(offset, _)| *offset < self.to.saturating_sub(KEPT_OFFSETS))
        {
            let Some((offset, outcome)) = self.notable.pop_front() else {
                break;
            };
            self.bytes -= size_of(&outcome);
            self.from = offset + 1;
        }
        self.from = self.from.max(self.to.saturating_sub(KEPT_OFFSETS));
    }

    /// Bytes kept, as counted against the bound (returned values and rejection messages, and a
    /// fixed overhead per kept outcome).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The outcome of the entry at `offset`, if it is covered.
    pub fn get(&self, offset: u64) -> Option<Outcome> {
        if !(self.from..self.to).contains(&offset) {
            return None;
        }
        // Where every entry returned something (a run of `INCR`s, `HSET`s), the outcome of
        // `offset` sits exactly as far from the first kept one: one look instead of a binary
        // search over up to `KEPT_OFFSETS` entries, a cache miss each (every such write asks).
        let dense = self.notable.front().and_then(|(first, _)| {
            let i = usize::try_from(offset.checked_sub(*first)?).ok()?;
            self.notable.get(i).filter(|(at, _)| *at == offset)
        });
        if let Some((_, outcome)) = dense {
            return Some(outcome.clone());
        }
        Some(
            match self.notable.binary_search_by_key(&offset, |(o, _)| *o) {
                Ok(i) => self.notable[i].1.clone(),
                Err(_) => Outcome::Applied(Vec::new()),
            },
        )
    }
}

/// What an outcome counts against [`KEPT_BYTES`].
fn size_of(outcome: &Outcome) -> usize {
    64 + match outcome {
        Outcome::Applied(values) => values
            .iter()
            .map(|v| 32 + v.data.as_ref().map_or(0, String::len))
            .sum(),
        Outcome::Rejected(r) => r.message.len(),
        Outcome::Expired => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RejectionKind;

    fn rejection(message: &str) -> Rejection {
        Rejection {
            kind: RejectionKind::ConditionFailed,
            op: Some(0),
            message: message.into(),
        }
    }

    fn returned(data: &str) -> Vec<Returned> {
        vec![Returned::data(0, Some(data.into()))]
    }

    #[test]
    fn answers_the_covered_offsets_only() {
        let mut recent = RecentOutcomes::new(10);
        assert_eq!(recent.get(10), None);
        recent.record(
            10,
            14,
            vec![(11, rejection("no"))],
            vec![(13, returned("1"))],
        );
        assert_eq!(recent.get(9), None);
        assert_eq!(recent.get(10), Some(Outcome::Applied(vec![])));
        assert_eq!(recent.get(11), Some(Outcome::Rejected(rejection("no"))));
        assert_eq!(recent.get(12), Some(Outcome::Applied(vec![])));
        assert_eq!(recent.get(13), Some(Outcome::Applied(returned("1"))));
        assert_eq!(recent.get(14), None, "not applied yet");
        recent.record(14, 15, vec![], vec![(14, returned("2"))]);
        assert_eq!(recent.get(11), Some(Outcome::Rejected(rejection("no"))));
        assert_eq!(recent.get(14), Some(Outcome::Applied(returned("2"))));
    }

    #[test]
    fn answers_runs_where_every_entry_returned_and_runs_with_holes_alike() {
        let mut recent = RecentOutcomes::new(0);
        // Every offset returned a value (INCRs), then a hole at 7..9 (plain puts), then more.
        recent.record(
            0,
            7,
            vec![],
            (0..7).map(|o| (o, returned(&o.to_string()))).collect(),
        );
        recent.record(7, 9, vec![], vec![]);
        recent.record(
            9,
            12,
            vec![(10, rejection("no"))],
            vec![(9, returned("9")), (11, returned("11"))],
        );
        for o in 0..7 {
            assert_eq!(
                recent.get(o),
                Some(Outcome::Applied(returned(&o.to_string())))
            );
        }
        assert_eq!(recent.get(7), Some(Outcome::Applied(vec![])));
        assert_eq!(recent.get(8), Some(Outcome::Applied(vec![])));
        assert_eq!(recent.get(9), Some(Outcome::Applied(returned("9"))));
        assert_eq!(recent.get(10), Some(Outcome::Rejected(rejection("no"))));
        assert_eq!(recent.get(11), Some(Outcome::Applied(returned("11"))));
        assert_eq!(recent.get(12), None);
    }

    #[test]
    fn a_batch_that_does_not_continue_starts_over() {
        let mut recent = RecentOutcomes::new(0);
        recent.record(0, 5, vec![(2, rejection("no"))], vec![]);
        // A restore moved the partition ahead: nothing before it is known here.
        recent.record(100, 101, vec![], vec![]);
        assert_eq!(recent.get(2), None);
        assert_eq!(recent.get(3), None);
        assert_eq!(recent.get(100), Some(Outcome::Applied(vec![])));
    }

    #[test]
    fn stays_within_its_offsets_and_bytes() {
        let mut recent = RecentOutcomes::new(0);
        let big = "x".repeat(1 << 20);
        for offset in 0..20u64 {
            recent.record(offset, offset + 1, vec![], vec![(offset, returned(&big))]);
        }
        assert!(recent.bytes <= KEPT_BYTES, "{}", recent.bytes);
        // The oldest fell out and are no longer answered (the store answers them).
        assert_eq!(recent.get(0), None);
        assert_eq!(recent.get(19), Some(Outcome::Applied(returned(&big))));
        let mut recent = RecentOutcomes::new(0);
        let end = 200_000;
        assert!(end > KEPT_OFFSETS * 3);
        for offset in (0..end).step_by(1000) {
            recent.record(
                offset,
                offset + 1000,
                vec![(offset, rejection("no"))],
                vec![],
            );
        }
        assert!(recent.notable.len() as u64 <= KEPT_OFFSETS / 1000 + 1);
        assert_eq!(recent.get(0), None);
        assert_eq!(recent.get(end - 1), Some(Outcome::Applied(vec![])));
        assert_eq!(
            recent.get(end - 1000),
            Some(Outcome::Rejected(rejection("no")))
        );
    }
}
