//! Point reads: each partition from one snapshot, with optional read-your-writes
//! (`min_offsets`). Partitions this node serves are read here; with gossip on, the rest are asked
//! of their owners (`remote.rs`). Routing is `route.rs`, waiting `positions.rs`, lists `list.rs`.

use super::positions::{Waited, not_here};
use super::route::Route;
use super::{Service, ServiceError, Token};
use crate::engine::PartitionRuntime;
use crate::model::{Key, Position, READ_ANSWER_BYTES, Record, partition_of};
use crate::store::StoreError;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What one record adds to an answer, as the bound on answers counts it: its keys and data.
pub(super) fn answer_bytes(record: &Record) -> usize {
    record.pk.len() + record.sk.len() + record.data_json.len()
}

/// The error of a read whose answer would pass `limit` bytes.
pub(super) fn too_large(limit: usize) -> ServiceError {
    ServiceError::bad_request(
        "read_too_large",
        format!(
            "the records this read answers add up to more than {} MiB, more than one answer \
             may hold: read fewer at a time",
            limit >> 20
        ),
    )
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
        self.get_and_token(keys, min_offsets, None).await
    }

    /// [`Service::get`], and the watch token of the partitions read: this node's for those it
    /// serves, the answering owner's for the others (each taken before reading; an owner that
    /// predates it sends none). Read, then watch from it, and no change is missed.
    pub async fn get_with_token(
        &self,
        keys: Vec<Key>,
        min_offsets: &[Position],
    ) -> Result<(Vec<Record>, Option<String>), ServiceError> {
        let mut token = self.read_positions(keys.iter().map(|k| k.pk.as_str()));
        let records = self
            .get_and_token(keys, min_offsets, Some(&mut token))
            .await?;
        Ok((records, token.text_if_any()))
    }

    async fn get_and_token(
        &self,
        keys: Vec<Key>,
        min_offsets: &[Position],
        mut token: Option<&mut Token>,
    ) -> Result<Vec<Record>, ServiceError> {
        self.validate_get(&keys, min_offsets)?;
        // The usual case, kept cheap: one key of a partition served here, nothing to wait for
        // (the grouping, routing and joining below cost a one-record HTTP get ~5 %).
        if let [key] = &keys[..]
            && min_offsets.is_empty()
            && let Some(runtime) =
                self.serving_partition(partition_of(&key.pk, self.engine.partition_count()))
            && runtime.catching_up().is_none()
        {
            return Ok(self.read_one(&runtime, key)?.into_iter().collect());
        }
        // A partition that leaves this node while the read waits for it here is routed again
        // (once): the member serving it now answers. Boxed: the routed read's future (waits,
        // owners asked, joins) is kilobytes, and every HTTP get's future would otherwise be as
        // large and be copied whole as it is boxed and moved, the usual case above included.
        let found = match Box::pin(self.get_routed(&keys, min_offsets, token.as_deref_mut(), true))
            .await?
        {
            Some(found) => found,
            None => Box::pin(self.get_routed(&keys, min_offsets, token, false))
                .await?
                .ok_or_else(|| ServiceError::internal("a read that may not move moved"))?,
        };
        // Each owner bounded its part; together they answer no more than one node would.
        let bytes: usize = found.iter().flatten().map(answer_bytes).sum();
        if bytes > READ_ANSWER_BYTES {
            return Err(too_large(READ_ANSWER_BYTES));
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// One slot per key, each partition read here or asked of an owner; `None` (when `may_move`)
    /// if a partition left this node while the read waited for it here.
    async fn get_routed(
        &self,
        keys: &[Key],
        min_offsets: &[Position],
        token: Option<&mut Token>,
        may_move: bool,
    ) -> Result<Option<Vec<Option<Record>>>, ServiceError> {
        let mut local: LocalGroups = Vec::new();
        let mut remote: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let mut cluster = None;
        for (partition, indexes) in self.group_keys(keys) {
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
                Some(c) => {
                    self.get_remote(c, keys, remote, &remote_positions, token)
                        .await
                }
                None => Ok(Vec::new()),
            }
        };
        let local_reads = async {
            // One bound for the read, however many partitions it waits for.
            let deadline = Instant::now() + self.config.read_wait_timeout;
            let mut waited = self.wait_here(&local_waits).await?;
            for (partition, runtime, _) in &local {
                if !matches!(waited, Waited::Applied) {
                    break;
                }
                if runtime.catching_up().is_some() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    waited = self.wait_caught_up(*partition, left).await?;
                }
            }
            match waited {
                Waited::Applied => self.read_groups(keys, local).map(Some),
                Waited::Moved(_) if may_move => Ok(None),
                Waited::Moved(partition) => Err(not_here(partition)),
            }
        };
        let (local_found, remote_found) = tokio::join!(local_reads, remote_reads);
        let Some(local_found) = local_found? else {
            return Ok(None);
        };
        let mut found: Vec<Option<Record>> = vec![None; keys.len()];
        for (i, record) in local_found.into_iter().chain(remote_found?) {
            found[i] = record;
        }
        Ok(Some(found))
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
            local.push((
                partition,
                self.caught_up_partition(partition).await?,
                indexes,
            ));
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
                    "{} keys in one request; the limit is {} (MAX_RECORDS_PER_REQUEST): split \
                     the request",
                    keys.len(),
                    self.config.limits.max_records
                ),
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            self.validate_key(Some(i), &key.pk, &key.sk)?;
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

    /// Reads each local partition's keys from one snapshot, within [`READ_ANSWER_BYTES`]
    /// together (a request naming a 512 KiB value 1,000 times built 500 MB answers, several
    /// times over, before this bound).
    fn read_groups(
        &self,
        keys: &[Key],
        groups: LocalGroups,
    ) -> Result<Vec<(usize, Option<Record>)>, ServiceError> {
        let mut found = Vec::with_capacity(keys.len());
        let mut left = READ_ANSWER_BYTES;
        for (partition, runtime, indexes) in groups {
            if let [i] = indexes[..] {
                let record = self.read_one(&runtime, &keys[i])?;
                let bytes = record.as_ref().map_or(0, answer_bytes);
                left = left
                    .checked_sub(bytes)
                    .ok_or_else(|| too_large(READ_ANSWER_BYTES))?;
                found.push((i, record));
                continue;
            }
            let started = Instant::now();
            let records = runtime
                .get_many(
                    indexes
                        .iter()
                        .map(|&i| (keys[i].pk.as_str(), keys[i].sk.as_str())),
                    left,
                )
                .map_err(|e| match e {
                    StoreError::AnswerTooLarge { .. } => too_large(READ_ANSWER_BYTES),
                    e => self.read_failed(partition, e),
                })?;
            // Stored values and answered records differ by headers and keys: the bound is
            // on the latter.
            let bytes: usize = records.iter().flatten().map(answer_bytes).sum();
            left = left
                .checked_sub(bytes)
                .ok_or_else(|| too_large(READ_ANSWER_BYTES))?;
            let hits = records.iter().filter(|r| r.is_some()).count();
            self.metrics.observe_partition(
                if hits == 0 { "get_full_miss" } else { "get" },
                crate::metrics::micros(started.elapsed()),
            );
            found.extend(indexes.into_iter().zip(records));
        }
        Ok(found)
    }

    /// One key of a partition served here, timed. One key is consistent by itself: the
    /// in-memory index can answer it.
    fn read_one(
        &self,
        runtime: &PartitionRuntime,
        key: &Key,
    ) -> Result<Option<Record>, ServiceError> {
        self.timed_point_read(runtime, |r| r.get(&key.pk, &key.sk))
    }

    /// The data (JSON text) of one record, without copying it out of the store: the hot path of
    /// Redis `GET`/`HGET`. Same rules as [`Service::get`].
    pub async fn get_data(
        &self,
        pk: &str,
        sk: &str,
        min_offsets: &[Position],
    ) -> Result<Option<Bytes>, ServiceError> {
        self.validate_key(Some(0), pk, sk)?;
        self.check_positions(min_offsets)?;
        let partition = partition_of(pk, self.engine.partition_count());
        // The usual case, kept cheap: a partition served here, nothing to wait for.
        if min_offsets.is_empty()
            && let Some(read) = self
                .engine
                .with_partition(partition, |runtime| {
                    runtime.current().then(|| self.read_data(runtime, pk, sk))
                })
                .flatten()
        {
            return read;
        }
        let runtime = match self.route_waited(partition, min_offsets).await? {
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
                        None,
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
        self.read_data(&runtime, pk, sk)
    }

    /// One record's data from a partition served here, timed.
    fn read_data(
        &self,
        runtime: &PartitionRuntime,
        pk: &str,
        sk: &str,
    ) -> Result<Option<Bytes>, ServiceError> {
        self.timed_point_read(runtime, |r| r.get_data(pk, sk))
    }

    /// A point read of a partition served here, timed as a `get` (or a `get_full_miss`).
    fn timed_point_read<T>(
        &self,
        runtime: &PartitionRuntime,
        read: impl FnOnce(&PartitionRuntime) -> Result<Option<T>, crate::store::StoreError>,
    ) -> Result<Option<T>, ServiceError> {
        let started = Instant::now();
        let found = read(runtime).map_err(|e| self.read_failed(runtime.id(), e))?;
        self.metrics.observe_partition(
            if found.is_some() {
                "get"
            } else {
                "get_full_miss"
            },
            crate::metrics::micros(started.elapsed()),
        );
        Ok(found)
    }
}
