//! Positions in the log as reads use them: which are applied here, waiting (bounded) for
//! the rest (read-your-writes), and which a peer must wait for instead.

use super::{ErrorKind, Service, ServiceError};
use crate::engine::WaitError;
use crate::model::Position;
use std::collections::BTreeMap;

impl Service {
    /// Whether this node serves `position`'s partition and has applied it: a read here needs not
    /// wait for it.
    pub fn applied_here(&self, position: Position) -> bool {
        self.engine
            .with_partition(position.partition, |r| r.next_offset() > position.offset)
            .unwrap_or(false)
    }

    /// Refuses positions naming partitions that do not exist.
    pub(super) fn check_positions(&self, positions: &[Position]) -> Result<(), ServiceError> {
        match self.unknown_partition(positions) {
            Some((partition, partitions)) => Err(ServiceError::bad_request(
                "bad_min_offsets",
                format!(
                    "min_offsets names partition {partition}, but there are {partitions} partitions"
                ),
            )),
            None => Ok(()),
        }
    }

    /// The first partition among `positions` that does not exist, with the partition count.
    pub(super) fn unknown_partition(&self, positions: &[Position]) -> Option<(u32, u32)> {
        let partitions = self.engine.partition_count();
        positions
            .iter()
            .find(|p| p.partition >= partitions)
            .map(|p| (p.partition, partitions))
    }

    /// Read-your-writes positions split into those to wait for here (partitions this node
    /// serves) and those an owner waits for (`remote` partitions read elsewhere). Positions of
    /// partitions neither served here nor read are irrelevant to this read.
    pub(super) fn split_positions<T>(
        &self,
        positions: &[Position],
        remote: &BTreeMap<u32, T>,
    ) -> (Vec<Position>, Vec<Position>) {
        let mut local = Vec::new();
        let mut elsewhere = Vec::new();
        for &p in positions {
            if remote.contains_key(&p.partition) {
                elsewhere.push(p);
            } else if self.cluster.is_none() || self.engine.partition(p.partition).is_some() {
                local.push(p);
            }
        }
        (local, elsewhere)
    }

    /// Waits (bounded) until every position is applied here: read-your-writes.
    pub(super) async fn wait_for(&self, positions: &[Position]) -> Result<(), ServiceError> {
        self.check_positions(positions)?;
        for &position in positions {
            match self
                .engine
                .wait_applied(position, self.config.read_wait_timeout)
                .await
            {
                Ok(()) => {}
                Err(e @ WaitError::NotOwned(_)) => {
                    return Err(ServiceError::new(
                        ErrorKind::Unavailable,
                        "partition_unavailable",
                        e.to_string(),
                    ));
                }
                Err(e @ WaitError::Timeout { .. }) => {
                    return Err(ServiceError::new(
                        ErrorKind::Timeout,
                        "min_offsets_timeout",
                        format!("{e}; retry, or read without min_offsets"),
                    ));
                }
            }
        }
        Ok(())
    }
}
