//! Waiting for positions to be applied, and the outcomes of applied entries.

use super::*;
use crate::model::Position;
use crate::store::StoreError;
use std::time::{Duration, Instant};

/// Why waiting for a position ended without it being applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WaitError {
    #[error("partition {0} is not served by this node")]
    NotOwned(u32),
    #[error(
        "partition {partition} has not applied offset {offset} within {waited_ms} ms (it applies offset {next} next)"
    )]
    Timeout {
        partition: u32,
        offset: u64,
        next: u64,
        waited_ms: u128,
    },
    #[error(
        "partition {partition} is still opening on this node after {waited_ms} ms ({})",
        super::OPENING
    )]
    Opening { partition: u32, waited_ms: u128 },
}

/// Why an outcome could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("partition {0} is not served by this node")]
    NotOwned(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Waits until `position` is applied on this node, up to `timeout`. A partition the log
    /// took from this node without settling its next owner (see [`Engine::standby`]) is waited
    /// for until it comes back here (or is settled elsewhere: then it is not owned).
    pub async fn wait_applied(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let started = Instant::now();
        // Subscribed before each look, so a change between the look and the wait is seen.
        let mut changes = self.watch_changes();
        loop {
            let runtime = match self.partition(position.partition) {
                Some(runtime) => runtime,
                // Still opening here (a restore waiting on S3): its writes are applied once it is.
                None if self.is_opening(position.partition) => {
                    self.wait_opened(
                        position.partition,
                        timeout.saturating_sub(started.elapsed()),
                    )
                    .await?
                }
                None => match self.standby(position.partition) {
                    Some(standby) if standby.next_offset() > position.offset => return Ok(()),
                    Some(standby) => {
                        let left = timeout.saturating_sub(started.elapsed());
                        match tokio::time::timeout(left, changes.changed()).await {
                            Ok(Ok(())) => {
                                changes.borrow_and_update();
                                continue;
                            }
                            Ok(Err(_)) => return Err(WaitError::NotOwned(position.partition)),
                            Err(_) => {
                                return Err(WaitError::Timeout {
                                    partition: position.partition,
                                    offset: position.offset,
                                    next: standby.next_offset(),
                                    waited_ms: started.elapsed().as_millis(),
                                });
                            }
                        }
                    }
                    None => return Err(WaitError::NotOwned(position.partition)),
                },
            };
            if runtime.next_offset() > position.offset {
                return Ok(());
            }
            let mut next = runtime.subscribe();
            let left = timeout.saturating_sub(started.elapsed());
            let applied = next.wait_for(|&n| n > position.offset);
            tokio::select! {
                waited = tokio::time::timeout(left, applied) => {
                    return match waited {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(_)) => Err(WaitError::NotOwned(position.partition)),
                        Err(_) => Err(WaitError::Timeout {
                            partition: position.partition,
                            offset: position.offset,
                            next: runtime.next_offset(),
                            waited_ms: started.elapsed().as_millis(),
                        }),
                    };
                }
                // Released meanwhile (perhaps to standby): look again.
                Ok(()) = changes.changed() => {
                    changes.borrow_and_update();
                }
            }
        }
    }

    /// Waits up to `timeout` for `partition` to leave the opening list; its runtime once open.
    pub(super) async fn wait_opened(
        &self,
        partition: u32,
        timeout: Duration,
    ) -> Result<Arc<PartitionRuntime>, WaitError> {
        let mut opening = self.inner.opening.subscribe();
        let opened = opening.wait_for(|opening| !opening.contains(&partition));
        match tokio::time::timeout(timeout, opened).await {
            Ok(Ok(_)) => self
                .partition(partition)
                .ok_or(WaitError::NotOwned(partition)),
            Ok(Err(_)) => Err(WaitError::NotOwned(partition)),
            Err(_) => Err(WaitError::Opening {
                partition,
                waited_ms: timeout.as_millis(),
            }),
        }
    }

    /// How far this node has applied `partition` (the offset it applies next), as its applier
    /// says, or, while the partition is not open here, as its store last committed (`None` when
    /// unreadable). The log numbers an entry appended after this was read at or after it,
    /// unless the log went backwards (a topic deleted and created again, an unclean leader
    /// election): an outcome this node holds below it is another entry's.
    pub fn applied_floor(&self, partition: u32) -> Option<u64> {
        match self.with_partition(partition, |runtime| runtime.next_offset()) {
            Some(next) => Some(next),
            None => self.inner.store.next_offset(partition).ok(),
        }
    }

    /// The outcome of the entry at `position`: `None` while it is not applied here yet, or
    /// while the partition's state is not the log's (a gap, a diverged log: the entry there
    /// may be another than the one this state applied at that offset).
    pub fn outcome(&self, position: Position) -> Result<Option<Outcome>, OutcomeError> {
        let runtime = self
            .partition(position.partition)
            .or_else(|| self.standby(position.partition))
            .ok_or(OutcomeError::NotOwned(position.partition))?;
        let next = runtime.next_offset();
        if next <= position.offset || !runtime.readable() {
            return Ok(None);
        }
        if position.offset < next.saturating_sub(self.inner.config.outcome_retention) {
            return Ok(Some(Outcome::Expired));
        }
        // Applied lately by this node: no store reads.
        if let Some(outcome) = runtime
            .recent
            .lock()
            .expect("recent outcomes")
            .get(position.offset)
        {
            return Ok(Some(outcome));
        }
        // Restored from a snapshot: what became of the entries before it is not known here.
        if let Some((restored, _)) = runtime.store.restored_from()?
            && position.offset < restored
        {
            return Ok(Some(Outcome::Expired));
        }
        match runtime.store.rejection(position.offset)? {
            None => {
                let returned = runtime.store.returned(position.offset)?;
                Ok(Some(Outcome::Applied(returned.unwrap_or_default())))
            }
            Some(bytes) => {
                let rejection: Rejection = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Corrupt(format!("stored outcome at {position:?}: {e}"))
                })?;
                Ok(Some(Outcome::Rejected(rejection)))
            }
        }
    }
}
