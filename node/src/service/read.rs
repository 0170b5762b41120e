//! Reads: point gets and pk listings from owned partitions, each partition from one snapshot,
//! with optional read-your-writes (`min_offsets`).

use super::{ErrorKind, Service, ServiceError};
use crate::cond::Subject;
use crate::engine::Lookup;
use crate::engine::{Health, Outcome, PartitionRuntime, WaitError};
use crate::model::{Key, Position, Record, partition_of};
use crate::store::{HEADER_LEN, StoreError, decode_value, encode_key, to_record};
use bytes::Bytes;
use fjall::Slice;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A list call: `pk`'s records whose sk starts with `sk_prefix`, in sk byte order.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub pk: String,
    pub sk_prefix: String,
    /// Most records returned; 0 means the node's maximum page (then a cursor marks the rest).
    pub limit: u64,
    /// Keep only records for which this condition is true.
    pub cond: Option<String>,
    /// Stop at the first record for which `cond` is false.
    pub if_stop: bool,
    /// Skip the record whose sk equals a non-empty `sk_prefix` (FireScroll's list did; its
    /// `sk_prefix` doubled as "continue after").
    pub skip_prefix_itself: bool,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Wait until these positions are applied before reading.
    pub min_offsets: Vec<Position>,
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub records: Vec<Record>,
    /// Present when more records may follow: pass it as `cursor` to get them.
    pub next_cursor: Option<String>,
}

/// One record's stored value: from the in-memory index when it is on, else from the store.
fn read_one(runtime: &PartitionRuntime, pk: &str, sk: &str) -> Result<Option<Slice>, StoreError> {
    let key = encode_key(pk, sk);
    match runtime.index.get(&key) {
        Lookup::Found(value) => Ok(Some(value)),
        Lookup::Absent => Ok(None),
        Lookup::Unknown => runtime.store.get_raw(&key),
    }
}

impl Service {
    /// The records at `keys` that exist, in the order asked (duplicates repeat). Keys are read
    /// per partition, each partition from one snapshot.
    pub async fn get(
        &self,
        keys: Vec<Key>,
        min_offsets: &[Position],
    ) -> Result<Vec<Record>, ServiceError> {
        if keys.is_empty() {
            return Err(ServiceError::bad_request(
                "empty_records",
                "`Records` must hold at least one key",
            ));
        }
        if keys.len() > self.config.limits.max_records {
            return Err(ServiceError::bad_request(
                "too_many_records",
                format!(
                    "{} keys in one request; the limit is {} (MAX_RECORDS_PER_REQUEST)",
                    keys.len(),
                    self.config.limits.max_records
                ),
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            self.validate_key(i, &key.pk, &key.sk)?;
        }
        self.wait_for(min_offsets).await?;
        let partitions = self.engine.partition_count();
        let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            groups
                .entry(partition_of(&key.pk, partitions))
                .or_default()
                .push(i);
        }
        let mut found: Vec<Option<Record>> = vec![None; keys.len()];
        for (partition, indexes) in groups {
            let runtime = self.readable_partition(partition)?;
            let started = Instant::now();
            let records = if let [i] = indexes[..] {
                // One key is consistent by itself: the in-memory index can answer it.
                let (pk, sk) = (&keys[i].pk, &keys[i].sk);
                let value =
                    read_one(&runtime, pk, sk).map_err(|e| self.read_failed(partition, e))?;
                let record = value
                    .map(|v| to_record(pk.clone(), sk.clone(), &v))
                    .transpose()
                    .map_err(|e| self.read_failed(partition, e))?;
                vec![record]
            } else {
                runtime
                    .store
                    .get_many(
                        indexes
                            .iter()
                            .map(|&i| (keys[i].pk.as_str(), keys[i].sk.as_str())),
                    )
                    .map_err(|e| self.read_failed(partition, e))?
            };
            let hits = records.iter().filter(|r| r.is_some()).count();
            self.metrics.observe_partition(
                if hits == 0 { "get_full_miss" } else { "get" },
                started.elapsed().as_micros() as f64,
            );
            for (i, record) in indexes.into_iter().zip(records) {
                found[i] = record;
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// The data (JSON text) of one record, without copying it out of the store: the hot path of
    /// Redis `GET`/`HGET`. Same rules as [`Service::get`].
    pub async fn get_data(
        &self,
        pk: &str,
        sk: &str,
        min_offsets: &[Position],
    ) -> Result<Option<Bytes>, ServiceError> {
        self.validate_key(0, pk, sk)?;
        if !min_offsets.is_empty() {
            self.wait_for(min_offsets).await?;
        }
        let partition = partition_of(pk, self.engine.partition_count());
        let runtime = self.readable_partition(partition)?;
        let started = Instant::now();
        let value = read_one(&runtime, pk, sk).map_err(|e| self.read_failed(partition, e))?;
        self.metrics.observe_partition(
            if value.is_some() {
                "get"
            } else {
                "get_full_miss"
            },
            started.elapsed().as_micros() as f64,
        );
        let Some(value) = value else { return Ok(None) };
        if decode_value(&value).is_none() {
            return Err(self.read_failed(
                partition,
                format!("value of {pk:?}/{sk:?} has no valid header"),
            ));
        }
        Ok(Some(Bytes::from_owner(value).slice(HEADER_LEN..)))
    }

    /// One page of `pk`'s records. FireScroll semantics: `sk_prefix` filters by prefix and skips
    /// the record whose sk equals a non-empty prefix; `limit` counts returned records; `if`
    /// filters; `if_stop` ends the scan at the first record the condition rejects.
    pub async fn list(&self, request: ListRequest) -> Result<ListPage, ServiceError> {
        self.validate_key(0, &request.pk, &request.sk_prefix)?;
        let program = match &request.cond {
            None => None,
            Some(source) => Some(
                self.engine
                    .conditions()
                    .check(source)
                    .map_err(|e| ServiceError::bad_request("invalid_if", e.to_string()))?,
            ),
        };
        self.wait_for(&request.min_offsets).await?;
        let partition = partition_of(&request.pk, self.engine.partition_count());
        let runtime = self.readable_partition(partition)?;
        let max = self.config.limits.max_list_records as u64;
        let limit = if request.limit == 0 {
            max
        } else {
            request.limit.min(max)
        } as usize;
        let started = Instant::now();
        let mut scan =
            runtime
                .store
                .scan(&request.pk, &request.sk_prefix, request.cursor.as_deref());
        let mut page = ListPage::default();
        let mut stopped = false;
        for record in scan.by_ref() {
            let record = record.map_err(|e| self.read_failed(partition, e))?;
            if request.skip_prefix_itself
                && !request.sk_prefix.is_empty()
                && record.sk == request.sk_prefix
            {
                continue;
            }
            if let (Some(source), Some(program)) = (&request.cond, &program) {
                let subject = Subject::new(
                    &record.pk,
                    &record.sk,
                    Some((
                        record.data_json.as_bytes(),
                        record.created_at_ms,
                        record.updated_at_ms,
                    )),
                )
                .map_err(|e| self.read_failed(partition, e))?;
                let keep = self
                    .engine
                    .conditions()
                    .eval(source, program, &subject)
                    .map_err(|e| ServiceError::bad_request("if_failed", e.to_string()))?;
                if !keep {
                    if request.if_stop {
                        stopped = true;
                        break;
                    }
                    continue;
                }
            }
            page.records.push(record);
            if page.records.len() >= limit {
                break;
            }
        }
        if !stopped && page.records.len() >= limit && scan.next().is_some() {
            page.next_cursor = page.records.last().map(|r| r.sk.clone());
        }
        let label = if page.records.is_empty() {
            "list_full_miss"
        } else {
            "list"
        };
        self.metrics
            .observe_partition(label, started.elapsed().as_micros() as f64);
        Ok(page)
    }

    /// The outcome of each position: `None` while not yet applied here.
    pub async fn outcomes(
        &self,
        positions: &[Position],
    ) -> Result<Vec<(Position, Option<Outcome>)>, ServiceError> {
        positions
            .iter()
            .map(|&p| {
                self.readable_partition(p.partition)?;
                let outcome = self.engine.outcome(p).map_err(|e| {
                    ServiceError::internal(format!("reading the outcome of {p:?} failed: {e}"))
                })?;
                Ok((p, outcome))
            })
            .collect()
    }

    /// Waits (bounded) until every position is applied here: read-your-writes.
    async fn wait_for(&self, positions: &[Position]) -> Result<(), ServiceError> {
        for &position in positions {
            if position.partition >= self.engine.partition_count() {
                return Err(ServiceError::bad_request(
                    "bad_min_offsets",
                    format!(
                        "min_offsets names partition {}, but there are {} partitions",
                        position.partition,
                        self.engine.partition_count()
                    ),
                ));
            }
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

    fn readable_partition(&self, partition: u32) -> Result<Arc<PartitionRuntime>, ServiceError> {
        let unavailable = |message: String| {
            ServiceError::new(ErrorKind::Unavailable, "partition_unavailable", message)
        };
        let runtime = self.engine.partition(partition).ok_or_else(|| {
            unavailable(format!("partition {partition} is not served by this node"))
        })?;
        if !runtime.readable()
            && let Health::Gap {
                next_offset,
                log_start,
            } = runtime.health()
        {
            return Err(unavailable(format!(
                "partition {partition} is not served: it needs log entries from offset {next_offset}, \
                 but the log starts at {log_start}"
            )));
        }
        Ok(runtime)
    }

    fn read_failed(&self, partition: u32, e: impl std::fmt::Display) -> ServiceError {
        tracing::error!(partition, error = %e, "read failed");
        ServiceError::internal(format!("reading partition {partition} failed: {e}"))
    }
}
