//! Where a partition's log ends, asked for requests that name positions this node has not
//! applied (a watch's token, an outcome's position): one past the end holds no entry, so it
//! comes from another log. The Kafka log asks its broker, which may take seconds while the
//! broker is away, so the asks are bounded: a few at once for the whole node, each awaited a
//! short while; a request that cannot get an answer goes on as if the position were ahead of
//! this node only.

use super::Service;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// At most this many asks run at once (each holds a blocking thread until the log answers,
/// even after its request stopped waiting): 10,000 requests at once cannot fill the blocking
/// pool.
const ASKS_AT_ONCE: usize = 4;

/// How long a request waits for the log's answer.
const PATIENCE: Duration = Duration::from_millis(500);

/// The node's allowance of asks in flight.
pub(super) struct LogEndAsks(Arc<Semaphore>);

impl Default for LogEndAsks {
    fn default() -> Self {
        LogEndAsks(Arc::new(Semaphore::new(ASKS_AT_ONCE)))
    }
}

impl Service {
    /// The offset the next append to `partition` gets, if the log says within `PATIENCE` and
    /// fewer than `ASKS_AT_ONCE` asks are already out; `None` otherwise.
    pub(super) async fn log_end(&self, partition: u32) -> Option<u64> {
        let permit = self.log_end_asks.0.clone().try_acquire_owned().ok()?;
        let log = self.log.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let _held_until_answered = permit;
            log.bounds(partition)
        });
        match tokio::time::timeout(PATIENCE, asked).await {
            Ok(Ok(Ok((_, end)))) => Some(end),
            _ => None,
        }
    }
}

/// The error for `position` (named `what` in the request, refused with `code`) past `end`,
/// where its partition's log ends: no entry is there, so it comes from another log.
pub(super) fn past_the_log(
    code: &'static str,
    what: &str,
    position: crate::model::Position,
    end: u64,
) -> super::ServiceError {
    super::ServiceError::bad_request(
        code,
        format!(
            "{what}: no entry is at offset {} of partition {}: its log ends at {end}, so the \
             position comes from another log (another namespace's, or this one's before it was \
             deleted and made again). Positions are those a write to this namespace answered",
            position.offset, position.partition
        ),
    )
}
