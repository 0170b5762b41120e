//! Reads: point gets and pk listings, each partition from one snapshot, with optional
//! read-your-writes (`min_offsets`). Partitions this node serves are read here; with gossip on,
//! the rest are asked of their owners (`remote.rs`).

use super::{ErrorKind, Service, ServiceError};
use crate::cluster::Cluster;
use crate::engine::{Health, Outcome, PartitionRuntime, WaitError};
use crate::model::{Key, Position, Record, partition_of};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One record's stored value: from the in-memory index when it is on, else from the store.
/// Where one partition's reads go.
pub(super) enum Route {
    /// This node serves it.
    Local(Arc<PartitionRuntime>),
    /// Another node in the region does.
    Remote(Cluster),
}

/// Partitions read locally, with the key indexes of each.
type LocalGroups = Vec<(u32, Arc<PartitionRuntime>, Vec<usize>)>;

impl Service {
    /// The records at `keys` that exist, in the order asked (duplicates repeat). Keys are read
    /// per partition, each partition from one snapshot; partitions this node does not serve are
    /// asked of their owners in the region.
    pub async fn get(
        &self,
        keys: Vec<Key>,
        min_offsets: &[Position],
    ) -> Result<Vec<Record>, ServiceError> {
        self.validate_get(&keys, min_offsets)?;
        let mut local: LocalGroups = Vec::new();
        let mut remote: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let mut cluster = None;
        for (partition, indexes) in self.group_keys(&keys) {
            match self.route(partition)? {
                Route::Local(runtime) => local.push((partition, runtime, indexes)),
                Route::Remote(c) => {
                    cluster = Some(c);
                    remote.insert(partition, indexes);
                }
            }
        }
        let (local_waits, remote_positions) = self.split_positions(min_offsets, &remote);
        // Owners are asked first, so their answers travel while the local partitions are read.
        let remote_reads = async {
            match &cluster {
                Some(c) => self.get_remote(c, &keys, remote, &remote_positions).await,
                None => Ok(Vec::new()),
            }
        };
        let local_reads = async {
            self.wait_for(&local_waits).await?;
            self.read_groups(&keys, local)
        };
        let (local_found, remote_found) = tokio::join!(local_reads, remote_reads);
        let mut found: Vec<Option<Record>> = vec![None; keys.len()];
        for (i, record) in local_found?.into_iter().chain(remote_found?) {
            found[i] = record;
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// What a peer answers for a proxied get: one slot per key, from this node's partitions
    /// only (a partition it does not serve is a 503, so the asker tries another owner).
    pub async fn get_local(
        &self,
        keys: Vec<Key>,
        min_offsets: &[Position],
    ) -> Result<Vec<Option<Record>>, ServiceError> {
        self.validate_get(&keys, min_offsets)?;
        let mut local: LocalGroups = Vec::new();
        for (partition, indexes) in self.group_keys(&keys) {
            local.push((partition, self.readable_partition(partition)?, indexes));
        }
        self.wait_for(min_offsets).await?;
        let mut found: Vec<Option<Record>> = vec![None; keys.len()];
        for (i, record) in self.read_groups(&keys, local)? {
            found[i] = record;
        }
        Ok(found)
    }

    fn validate_get(&self, keys: &[Key], min_offsets: &[Position]) -> Result<(), ServiceError> {
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
        self.check_positions(min_offsets)
    }

    /// Key indexes by partition.
    fn group_keys(&self, keys: &[Key]) -> BTreeMap<u32, Vec<usize>> {
        let partitions = self.engine.partition_count();
        let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            groups
                .entry(partition_of(&key.pk, partitions))
                .or_default()
                .push(i);
        }
        groups
    }

    /// Reads each local partition's keys from one snapshot.
    fn read_groups(
        &self,
        keys: &[Key],
        groups: LocalGroups,
    ) -> Result<Vec<(usize, Option<Record>)>, ServiceError> {
        let mut found = Vec::with_capacity(keys.len());
        for (partition, runtime, indexes) in groups {
            let started = Instant::now();
            let records = if let [i] = indexes[..] {
                // One key is consistent by itself: the in-memory index can answer it.
                let (pk, sk) = (&keys[i].pk, &keys[i].sk);
                let record = runtime
                    .get(pk, sk)
                    .map_err(|e| self.read_failed(partition, e))?;
                vec![record]
            } else {
                runtime
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
            found.extend(indexes.into_iter().zip(records));
        }
        Ok(found)
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
        self.check_positions(min_offsets)?;
        let partition = partition_of(pk, self.engine.partition_count());
        let runtime = match self.route(partition)? {
            Route::Local(runtime) => runtime,
            Route::Remote(cluster) => {
                let keys = [Key {
                    pk: pk.to_string(),
                    sk: sk.to_string(),
                }];
                let (_, positions) =
                    self.split_positions(min_offsets, &BTreeMap::from([(partition, vec![0])]));
                let found = self
                    .get_remote(
                        &cluster,
                        &keys,
                        BTreeMap::from([(partition, vec![0])]),
                        &positions,
                    )
                    .await?;
                return Ok(found
                    .into_iter()
                    .next()
                    .and_then(|(_, record)| record)
                    .map(|r| Bytes::from(r.data_json)));
            }
        };
        if !min_offsets.is_empty() {
            self.wait_for(min_offsets).await?;
        }
        let started = Instant::now();
        let data = runtime
            .get_data(pk, sk)
            .map_err(|e| self.read_failed(partition, e))?;
        self.metrics.observe_partition(
            if data.is_some() {
                "get"
            } else {
                "get_full_miss"
            },
            started.elapsed().as_micros() as f64,
        );
        Ok(data)
    }

    /// The outcome of each position: `None` while not yet applied. Partitions this node does
    /// not serve are asked of an owner.
    pub async fn outcomes(
        &self,
        positions: &[Position],
    ) -> Result<Vec<(Position, Option<Outcome>)>, ServiceError> {
        self.check_positions(positions)?;
        let mut outcomes = vec![None; positions.len()];
        let mut remote = Vec::new();
        let mut cluster = None;
        for (i, &p) in positions.iter().enumerate() {
            match self.route(p.partition)? {
                Route::Local(_) => outcomes[i] = self.local_outcome(p)?,
                Route::Remote(c) => {
                    cluster = Some(c);
                    remote.push(i);
                }
            }
        }
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
        self.check_positions(positions)?;
        let wait = wait.min(self.config.write_wait_timeout);
        let mut outcomes = Vec::with_capacity(positions.len());
        for &p in positions {
            self.readable_partition(p.partition)?;
            match self.engine.wait_applied(p, wait).await {
                Ok(()) => outcomes.push(self.local_outcome(p)?),
                Err(WaitError::Timeout { .. }) => outcomes.push(None),
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

    fn local_outcome(&self, p: Position) -> Result<Option<Outcome>, ServiceError> {
        self.engine.outcome(p).map_err(|e| {
            ServiceError::internal(format!("reading the outcome of {p:?} failed: {e}"))
        })
    }

    /// Whether this node serves `position`'s partition and has applied it: a read here needs not
    /// wait for it.
    pub fn applied_here(&self, position: Position) -> bool {
        self.engine
            .partition(position.partition)
            .is_some_and(|r| r.next_offset() > position.offset)
    }

    /// Refuses positions naming partitions that do not exist.
    pub(super) fn check_positions(&self, positions: &[Position]) -> Result<(), ServiceError> {
        let partitions = self.engine.partition_count();
        match positions.iter().find(|p| p.partition >= partitions) {
            Some(p) => Err(ServiceError::bad_request(
                "bad_min_offsets",
                format!(
                    "min_offsets names partition {}, but there are {partitions} partitions",
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
            } else if self.cluster.is_none() || self.engine.partition(p.partition).is_some() {
                local.push(p);
            }
        }
        (local, elsewhere)
    }

    /// This node's partition if it serves it; else, with gossip on, the region's owners.
    pub(super) fn route(&self, partition: u32) -> Result<Route, ServiceError> {
        // A partition stopped here (a disk failure, a gap) is read from a healthy replica in the
        // region when there is one, else answered 503.
        match (self.readable_partition(partition), &self.cluster) {
            (Ok(runtime), _) => Ok(Route::Local(runtime)),
            (Err(_), Some(cluster)) => Ok(Route::Remote(cluster.clone())),
            (Err(e), None) => Err(e),
        }
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

    pub(super) fn readable_partition(
        &self,
        partition: u32,
    ) -> Result<Arc<PartitionRuntime>, ServiceError> {
        let unavailable = |message: String| {
            ServiceError::new(ErrorKind::Unavailable, "partition_unavailable", message)
        };
        let runtime = self.engine.partition(partition).ok_or_else(|| {
            unavailable(format!("partition {partition} is not served by this node"))
        })?;
        // A partition that stopped applying only has stale state: answering from it would hide
        // acknowledged writes behind a 200.
        if !runtime.serving() {
            return Err(match runtime.health() {
                Health::Gap {
                    next_offset,
                    log_start,
                } => unavailable(format!(
                    "partition {partition} is not served: it needs log entries from offset {next_offset}, \
                     but the log starts at {log_start}"
                )),
                Health::Failed { reason } => unavailable(format!(
                    "partition {partition} is not served: it stopped applying ({reason})"
                )),
                Health::Serving => unavailable(format!("partition {partition} is not served")),
            });
        }
        Ok(runtime)
    }

    pub(super) fn read_failed(&self, partition: u32, e: impl std::fmt::Display) -> ServiceError {
        tracing::error!(partition, error = %e, "read failed");
        ServiceError::internal(format!("reading partition {partition} failed: {e}"))
    }
}
