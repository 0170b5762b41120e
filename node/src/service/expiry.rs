//! Ticks for quiet partitions: records are removed when an entry's timestamp reaches their
//! deadline (never by a node's clock, so replicas stay identical), so a partition nobody
//! writes to would keep its expired records forever. This node appends a small tick entry
//! (an entry without ops, `docs/log-entry-v1.md`) to each partition it serves whose earliest
//! deadline has been due for a while; applying it removes them on every replica alike.
//!
//! Every replica may send ticks for the same partition; they are idempotent and tiny, and only
//! sent while deadlines are due and no other entry has reached them.

use super::Service;
use crate::log::Append;
use crate::model::{LogEntry, now_ms};
use std::collections::HashMap;
use std::time::{Duration, Instant};

impl Service {
    /// Appends a tick to every served partition whose earliest deadline is more than `grace`
    /// in the past, unless this node sent it one less than `grace` ago (`sent` remembers when).
    pub async fn tick_due_partitions(&self, grace: Duration, sent: &mut HashMap<u32, Instant>) {
        let now = now_ms();
        let grace_ms = grace.as_millis() as i64;
        for runtime in self.engine.partitions() {
            if !runtime.serving() {
                continue;
            }
            let id = runtime.id();
            let due = match runtime.first_deadline() {
                Ok(Some(deadline)) => deadline <= now - grace_ms,
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(partition = id, error = %e, "reading the deadline index failed");
                    false
                }
            };
            if !due || sent.get(&id).is_some_and(|at| at.elapsed() < grace) {
                continue;
            }
            sent.insert(id, Instant::now());
            let tick = Append {
                key: String::new(),
                payload: LogEntry::tick(now).encode(),
            };
            let result = match self.log.append(id, vec![tick]).await {
                Ok(_) => "ok",
                Err(e) => {
                    tracing::warn!(partition = id, error = %e, "appending an expiry tick failed");
                    "failed"
                }
            };
            self.metrics.expiry_ticks.with_label_values(&[result]).inc();
        }
    }
}
