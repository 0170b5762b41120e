//! Positions in the log as reads use them: which are applied here, waiting (bounded) for
//! the rest (read-your-writes), and which a peer must wait for instead.

use super::route::Route;
use super::{ErrorKind, Service, ServiceError};
use crate::engine::WaitError;
use crate::model::Position;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a read waits for a position before asking the log whether one is there at all: a
/// write's own positions are applied within milliseconds, so the log (a broker round trip on
/// Kafka) is asked only for the rare one that is not.
const ASK_THE_LOG_AFTER: Duration = Duration::from_millis(250);

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
        match self.wait_here(positions).await? {
            Waited::Applied => Ok(()),
            Waited::Moved(partition) => Err(not_here(partition)),
        }
    }

    /// [`Service::route`] for a read that must see `positions`: when it is answered here, the
    /// positions of partitions held here are waited for first, and a partition that left this
    /// node meanwhile (a standby copy ended: another member serves it now) is routed again,
    /// to where it is served now — instead of failing a read that member can answer.
    pub(super) async fn route_waited(
        &self,
        partition: u32,
        positions: &[Position],
    ) -> Result<Route, ServiceError> {
        let mut moves = 0;
        loop {
            let route = self.route(partition)?;
            let catching_up = match &route {
                Route::Local(runtime) => runtime.catching_up().is_some(),
                Route::Remote(_) => return Ok(route),
            };
            if positions.is_empty() && !catching_up {
                return Ok(route);
            }
            let (here, _) = self.split_positions(positions, &BTreeMap::<u32, ()>::new());
            let started = Instant::now();
            let waited = match self.wait_here(&here).await? {
                Waited::Applied => {
                    // One bound for the read: what the positions took is not waited again.
                    let left = self
                        .config
                        .read_wait_timeout
                        .saturating_sub(started.elapsed());
                    self.wait_caught_up(partition, left).await?
                }
                moved => moved,
            };
            match waited {
                Waited::Applied => return Ok(route),
                // Routed again: it is not held here now, so the next route goes elsewhere
                // (twice at most: ownership that keeps moving is answered as unavailable).
                Waited::Moved(_) if moves < 2 => moves += 1,
                Waited::Moved(moved) => return Err(not_here(moved)),
            }
        }
    }

    /// Waits (bounded) until every position is applied here; with gossip on, a partition that
    /// left this node while the read waited is `Moved` (its reads go to the member serving it).
    /// `READ_WAIT_TIMEOUT_MS` bounds the whole wait, however many positions it names.
    /// A position past the end of its partition's log (another log's: no entry is there) is
    /// refused, once the wait for it has lasted `ASK_THE_LOG_AFTER`, instead of waiting out the
    /// bound.
    pub(super) async fn wait_here(&self, positions: &[Position]) -> Result<Waited, ServiceError> {
        self.check_positions(positions)?;
        let deadline = Instant::now() + self.config.read_wait_timeout;
        let mut asked = false;
        for &position in positions {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut result = self
                .engine
                .wait_applied(position, left.min(ASK_THE_LOG_AFTER))
                .await;
            // Not applied yet, or its partition still opening: either way the read goes on
            // waiting its whole bound (an opening partition once answered after 250 ms).
            if matches!(
                result,
                Err(WaitError::Timeout { .. } | WaitError::Opening { .. })
            ) && left > ASK_THE_LOG_AFTER
            {
                // One ask per read at most (a log that cannot say for one partition now will
                // not for the next either).
                if !asked {
                    asked = true;
                    if let Some(end) = self.log_end(position.partition).await
                        && position.offset >= end
                    {
                        return Err(super::log_end::past_the_log(
                            "bad_min_offsets",
                            "min_offsets",
                            position,
                            end,
                        ));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                result = self.engine.wait_applied(position, left).await;
            }
            let waited = self.waited(result, |e| {
                ServiceError::new(
                    ErrorKind::Timeout,
                    "min_offsets_timeout",
                    format!("{e}; retry, or read without min_offsets"),
                )
            })?;
            if let Waited::Moved(_) = waited {
                return Ok(waited);
            }
        }
        Ok(Waited::Applied)
    }

    /// How a wait here ended, as a read takes it: applied, moved away (with gossip on), or the
    /// error to answer (`timed_out` makes the one of a wait past its bound).
    fn waited(
        &self,
        result: Result<(), WaitError>,
        timed_out: impl FnOnce(WaitError) -> ServiceError,
    ) -> Result<Waited, ServiceError> {
        match result {
            Ok(()) => Ok(Waited::Applied),
            Err(WaitError::NotOwned(partition)) if self.cluster.is_some() => {
                Ok(Waited::Moved(partition))
            }
            Err(WaitError::NotOwned(partition)) => Err(not_here(partition)),
            // The wait ran its whole bound, the partition opening all along: the same answer as
            // a wait that ran out on an open partition (HTTP 504; a 503 once broke that promise
            // when a partition the log gave back took seconds to open), saying why.
            Err(e @ (WaitError::Opening { .. } | WaitError::Timeout { .. })) => Err(timed_out(e)),
        }
    }

    /// Waits (bounded) until `partition`, when this node applies it, has applied what the log
    /// held when it opened here (a restart after a crash replays what the store had not kept;
    /// a partition moved here replays what it never had): its reads answer no older state than
    /// was answered before. Past `bound`, a `partition_catching_up` error (Redis `LOADING`).
    pub(super) async fn wait_caught_up(
        &self,
        partition: u32,
        bound: Duration,
    ) -> Result<Waited, ServiceError> {
        let Some(runtime) = self.engine.partition(partition) else {
            return Ok(Waited::Applied);
        };
        let Some(to) = runtime.catching_up() else {
            return Ok(Waited::Applied);
        };
        let position = Position {
            partition,
            offset: to - 1,
        };
        self.waited(self.engine.wait_applied(position, bound).await, |e| {
            let next = match e {
                WaitError::Timeout { next, .. } => next,
                _ => runtime.next_offset(),
            };
            ServiceError::new(
                ErrorKind::Unavailable,
                "partition_catching_up",
                format!(
                    "partition {partition} is catching up on this node: it opened behind the \
                     log and has applied {next} of the {to} entries the log held then; its \
                     reads wait until it has, so they never answer older data than was \
                     answered before; try again shortly"
                ),
            )
        })
    }

    /// The runtime of `partition` for a read answered here (a peer's, or one routed here):
    /// [`Service::readable_partition`], once it has caught up ([`Service::wait_caught_up`]).
    /// A peer's read waits at most half its request's bound (`PROXY_TIMEOUT_MS`): answered
    /// `partition_catching_up` then, the asker tries another owner before its own bound runs
    /// out (a read routed here has waited in [`Service::route_waited`] already).
    pub(super) async fn caught_up_partition(
        &self,
        partition: u32,
    ) -> Result<std::sync::Arc<crate::engine::PartitionRuntime>, ServiceError> {
        let runtime = self.readable_partition(partition)?;
        if runtime.catching_up().is_none() {
            return Ok(runtime);
        }
        let bound = match &self.cluster {
            Some(cluster) => (cluster.client().timeout() / 2).min(self.config.read_wait_timeout),
            None => self.config.read_wait_timeout,
        };
        match self.wait_caught_up(partition, bound).await? {
            Waited::Applied => self.readable_partition(partition),
            Waited::Moved(partition) => Err(not_here(partition)),
        }
    }
}

/// How a wait for positions here ended.
pub(super) enum Waited {
    /// Every position is applied here.
    Applied,
    /// This partition left the node while the read waited for it.
    Moved(u32),
}

/// The error of a read that waited here for a partition this node no longer holds.
pub(super) fn not_here(partition: u32) -> ServiceError {
    ServiceError::new(
        ErrorKind::Unavailable,
        "partition_unavailable",
        WaitError::NotOwned(partition).to_string(),
    )
}
