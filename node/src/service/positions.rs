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

    /// Refuses `min_offsets` naming partitions that do not exist.
    pub(super) fn check_positions(&self, positions: &[Position]) -> Result<(), ServiceError> {
        self.check_partitions(positions, "bad_min_offsets", "min_offsets")
    }

    /// Refuses positions naming partitions that do not exist, with error `code`; `what` names
    /// the positions in the message.
    pub(super) fn check_partitions(
        &self,
        positions: &[Position],
        code: &'static str,
        what: &str,
    ) -> Result<(), ServiceError> {
        let partitions = self.engine.partition_count();
        match positions.iter().find(|p| p.partition >= partitions) {
            Some(p) => Err(ServiceError::bad_request(
                code,
                format!(
                    "{what} names partition {}, but there are {partitions} partitions",
                    p.partition
                ),
            )),
            None => Ok(()),
        }
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
            } else if self.cluster.is_none() || self.engine.holds(p.partition) {
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
                Err(e @ WaitError::Opening { .. }) => {
                    return Err(ServiceError::new(
                        ErrorKind::Unavailable,
                        "partition_opening",
                        format!("{e}; try again shortly"),
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
