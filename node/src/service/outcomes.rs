//! Outcomes of entries by position: from this node once applied here, else from an owner.

use super::route::Route;
use super::{ErrorKind, Service, ServiceError};
use crate::engine::{Outcome, WaitError};
use crate::model::Position;
use std::time::{Duration, Instant};

/// One request asks for at most this many outcomes per record a write may carry
/// (`MAX_RECORDS_PER_REQUEST`): each may read and parse a stored chunk of returned values.
const POSITIONS_PER_RECORD: usize = 10;

impl Service {
    /// Refuses more positions than one request may ask for, and partitions that do not exist.
    fn check_outcome_positions(&self, positions: &[Position]) -> Result<(), ServiceError> {
        let most = self.config.limits.max_records * POSITIONS_PER_RECORD;
        if positions.len() > most {
            return Err(ServiceError::bad_request(
                "too_many_positions",
                format!(
                    "at most {most} positions per request ({POSITIONS_PER_RECORD} times MAX_RECORDS_PER_REQUEST), got {}; ask in several requests",
                    positions.len()
                ),
            ));
        }
        self.check_partitions(positions, "bad_position", "a position")
    }

    /// The outcome of each position: `None` while not yet applied. Partitions this node does
    /// not serve are asked of an owner.
    pub async fn outcomes(
        &self,
        positions: &[Position],
    ) -> Result<Vec<(Position, Option<Outcome>)>, ServiceError> {
        self.check_outcome_positions(positions)?;
        let mut outcomes = vec![None; positions.len()];
        let mut remote = Vec::new();
        let mut cluster = None;
        let mut pending = Vec::new();
        for (i, &p) in positions.iter().enumerate() {
            match self.route(p.partition)? {
                Route::Local(_) => {
                    outcomes[i] = self.local_outcome(p)?;
                    if outcomes[i].is_none() {
                        pending.push(p);
                    }
                }
                Route::Remote(c) => {
                    cluster = Some(c);
                    remote.push(i);
                }
            }
        }
        self.refuse_positions_past_the_log(&pending).await?;
        if let Some(cluster) = cluster {
            let asked: Vec<Position> = remote.iter().map(|&i| positions[i]).collect();
            let answers = self
                .outcomes_remote(&cluster, &asked, Duration::ZERO)
                .await?;
            for (i, outcome) in remote.into_iter().zip(answers) {
                outcomes[i] = outcome;
            }
        }
        Ok(positions.iter().copied().zip(outcomes).collect())
    }

    /// What a peer answers when asked for outcomes: each position's outcome once applied here,
    /// waiting up to `wait` for each; `None` where the wait ran out.
    pub async fn outcomes_local(
        &self,
        positions: &[Position],
        wait: Duration,
    ) -> Result<Vec<Option<Outcome>>, ServiceError> {
        self.check_outcome_positions(positions)?;
        let wait = wait.min(self.config.write_wait_timeout);
        let mut outcomes = Vec::with_capacity(positions.len());
        for &p in positions {
            self.readable_partition(p.partition)?;
            match self.engine.wait_applied(p, wait).await {
                Ok(()) => outcomes.push(self.local_outcome(p)?),
                Err(WaitError::Timeout { .. } | WaitError::Opening { .. }) => outcomes.push(None),
                Err(e @ WaitError::NotOwned(_)) => {
                    return Err(ServiceError::new(
                        ErrorKind::Unavailable,
                        "partition_unavailable",
                        e.to_string(),
                    ));
                }
            }
        }
        Ok(outcomes)
    }

    /// Refuses positions not applied here that lie past the end of their partition's log: no
    /// entry is there, so they come from another log (another namespace's, or this one's
    /// before it was deleted and made again), and `pending` would be answered forever (or for
    /// another entry, once the log got there). The log is asked once per partition; when it
    /// cannot say (`Service::log_end`), the position stays pending.
    async fn refuse_positions_past_the_log(
        &self,
        pending: &[Position],
    ) -> Result<(), ServiceError> {
        let mut furthest = std::collections::BTreeMap::new();
        for p in pending {
            let offset = furthest.entry(p.partition).or_insert(p.offset);
            *offset = (*offset).max(p.offset);
        }
        for (partition, offset) in furthest {
            // A log that cannot say for one partition now will not for the next either:
            // one wait per request at most.
            let Some(end) = self.log_end(partition).await else {
                break;
            };
            if offset >= end {
                let position = Position { partition, offset };
                return Err(super::log_end::past_the_log(
                    "no_entry",
                    "Positions",
                    position,
                    end,
                ));
            }
        }
        Ok(())
    }

    fn local_outcome(&self, p: Position) -> Result<Option<Outcome>, ServiceError> {
        self.engine.outcome(p).map_err(|e| {
            ServiceError::internal(format!("reading the outcome of {p:?} failed: {e}"))
        })
    }

    /// Waits until `deadline` at most for the entry at `position` to be applied here and returns
    /// its outcome, or `None` if the wait ran out. When another node applies that partition, an
    /// owner in the region is asked (it waits the same bound). One deadline for every entry of a
    /// request: `WRITE_WAIT_TIMEOUT_MS` bounds the whole wait, not each entry's.
    pub async fn await_outcome(
        &self,
        position: Position,
        deadline: Instant,
    ) -> Result<Option<Outcome>, ServiceError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.engine.wait_applied(position, wait).await {
            Ok(()) => {}
            // The write is durable either way: never answer it with an error a client would retry.
            Err(WaitError::Timeout { .. } | WaitError::Opening { .. }) => return Ok(None),
            // Another node applies this partition: ask an owner in the region, if gossip is on.
            Err(WaitError::NotOwned(_)) => {
                let Some(cluster) = &self.cluster else {
                    return Ok(None);
                };
                return Ok(self
                    .outcomes_remote(cluster, &[position], wait)
                    .await
                    .inspect_err(
                        |e| tracing::debug!(?position, error = %e, "no owner told the outcome"),
                    )
                    .ok()
                    .and_then(|mut o| o.pop().flatten()));
            }
        }
        self.engine
            .outcome(position)
            .map_err(|e| ServiceError::internal(format!("reading the outcome failed: {e}")))
    }
}
