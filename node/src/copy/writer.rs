//! Writes to the target, batched.

use super::Position;
use super::api::Api;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Writes to the target hold at most this much JSON (well under the default MAX_BODY_BYTES).
const MAX_WRITE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Put,
    Delete,
}

/// Writes to the target, batched: a batch holds one kind of write and each key once, so the
/// target applies them in the order they came.
pub(super) struct Writer<'a> {
    target: &'a Api,
    kind: Kind,
    records: Vec<Value>,
    keys: HashSet<(String, String)>,
    bytes: usize,
    max_records: usize,
}

impl<'a> Writer<'a> {
    pub(super) fn new(target: &'a Api, max_records: usize) -> Self {
        Writer {
            target,
            kind: Kind::Put,
            records: Vec::new(),
            keys: HashSet::new(),
            bytes: 0,
            max_records,
        }
    }

    pub(super) async fn write(&mut self, kind: Kind, record: Value) -> anyhow::Result<()> {
        let key = (
            record["pk"].as_str().unwrap_or_default().to_string(),
            record["sk"].as_str().unwrap_or_default().to_string(),
        );
        let size = record.to_string().len();
        if kind != self.kind
            || self.keys.contains(&key)
            || self.records.len() >= self.max_records
            || self.bytes + size > MAX_WRITE_BYTES
        {
            self.flush().await?;
        }
        self.kind = kind;
        self.keys.insert(key);
        self.bytes += size;
        self.records.push(record);
        Ok(())
    }

    /// Flushes, then notes `position` (the position after the last change written) as
    /// reached in `partition`, and answers it.
    pub(super) async fn flush_to(
        &mut self,
        position: Position,
        partition: u32,
        reached: &Mutex<BTreeMap<u32, Position>>,
    ) -> anyhow::Result<Position> {
        self.flush().await?;
        reached
            .lock()
            .expect("positions lock")
            .insert(partition, position);
        Ok(position)
    }

    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let path = match self.kind {
            Kind::Put => "/records/put",
            Kind::Delete => "/records/delete",
        };
        let body = json!({ "Records": std::mem::take(&mut self.records) });
        self.target.post(path, &body).await?;
        self.keys.clear();
        self.bytes = 0;
        Ok(())
    }
}
