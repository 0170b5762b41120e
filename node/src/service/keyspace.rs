//! The keyspace of the region: counting and walking the keys (pks) of every partition, from this
//! node's key index or an owner's (`SCAN`, `KEYS`, `RANDOMKEY`, `DBSIZE`).
//!
//! A scan cursor is one number: the partition in the high 16 bits, a key hash position in the low
//! 48 ([`crate::store::key_hash`]). Every replica orders its index the same way, so any node of
//! the region can continue a cursor another issued, and a scan returns every key present
//! throughout it exactly once. Cursor 0 starts a scan and marks its end.

use super::route::Route;
use super::{Service, ServiceError};
use crate::model::peer::{KeysQuery, KeysReply};
use crate::model::{KeyInfo, Position, partition_of};
use crate::store::KEY_HASH_BITS;

const HASH_MASK: u64 = (1 << KEY_HASH_BITS) - 1;

/// One step of a scan over the region's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<KeyInfo>,
    /// The cursor to continue with; 0 when the scan has visited every partition.
    pub cursor: u64,
}

impl Service {
    /// About `count` keys from `cursor` on, over the partitions in order (fewer when a
    /// partition ends; a page never splits keys of one hash). At most `MAX_LIST_RECORDS` a
    /// page whatever `count` asks (as Redis, `COUNT` is a hint): `SCAN 0 COUNT 1000000000`
    /// would otherwise answer the whole keyspace in one reply.
    pub async fn scan_keys(
        &self,
        cursor: u64,
        count: usize,
        min_offsets: &[Position],
    ) -> Result<KeyPage, ServiceError> {
        let partitions = self.engine.partition_count();
        let mut partition = (cursor >> KEY_HASH_BITS) as u32;
        let mut from = cursor & HASH_MASK;
        if partition >= partitions {
            return Err(ServiceError::bad_request(
                "invalid_cursor",
                format!(
                    "cursor {cursor} names partition {partition}, but there are {partitions}: \
                     start again from 0"
                ),
            ));
        }
        let count = count.clamp(1, self.config.limits.max_list_records);
        let mut keys = Vec::new();
        loop {
            let reply = self
                .keys_in(partition, from, count - keys.len(), min_offsets)
                .await?;
            keys.extend(reply.keys);
            match reply.next {
                Some(next) => from = next,
                None => {
                    partition += 1;
                    from = 0;
                    if partition == partitions {
                        return Ok(KeyPage { keys, cursor: 0 });
                    }
                }
            }
            if keys.len() >= count {
                return Ok(KeyPage {
                    keys,
                    cursor: (u64::from(partition) << KEY_HASH_BITS) | from,
                });
            }
        }
    }

    /// The key count of every partition, in partition order.
    pub async fn key_counts(&self, min_offsets: &[Position]) -> Result<Vec<u64>, ServiceError> {
        let mut counts = Vec::new();
        for partition in 0..self.engine.partition_count() {
            counts.push(self.keys_in(partition, 0, 0, min_offsets).await?.count);
        }
        Ok(counts)
    }

    /// How many records (hash fields, and the string) `pk` has that a read would return
    /// (`HLEN`): one key index read, here or at an owner. `None` when it cannot answer at once
    /// (a deadline of the partition is due and the key has more records than a list page, or
    /// the owner runs a release that does not count): the caller counts them by pages.
    pub async fn record_count(
        &self,
        pk: &str,
        min_offsets: &[Position],
    ) -> Result<Option<u64>, ServiceError> {
        let partition = partition_of(pk, self.engine.partition_count());
        let mut query = keys_query(partition, 0, 0, min_offsets);
        query.pk = Some(pk.to_string());
        Ok(self.ask_keys(query).await?.records)
    }

    /// A page of one partition's key index, from here or an owner.
    pub(super) async fn keys_in(
        &self,
        partition: u32,
        from: u64,
        limit: usize,
        min_offsets: &[Position],
    ) -> Result<KeysReply, ServiceError> {
        self.ask_keys(keys_query(partition, from, limit, min_offsets))
            .await
    }

    /// Answers `query` from this node's partition or an owner's.
    pub(super) async fn ask_keys(&self, query: KeysQuery) -> Result<KeysReply, ServiceError> {
        let partition = query.partition;
        match self.route_waited(partition, &query.min_offsets).await? {
            Route::Local(_) => self.keys_local(query).await,
            Route::Remote(cluster) => {
                let wait = self.peer_wait(!query.min_offsets.is_empty());
                let owners = cluster.owners(partition);
                self.first_answer(&cluster, "keys", partition, owners, |peer| {
                    cluster.client().keys(peer.api, &query, wait)
                })
                .await
            }
        }
    }

    /// A page of one of this node's partitions' key index (what a peer answers).
    pub async fn keys_local(&self, query: KeysQuery) -> Result<KeysReply, ServiceError> {
        self.check_positions(&query.min_offsets)?;
        if let Some(pk) = &query.pk
            && partition_of(pk, self.engine.partition_count()) != query.partition
        {
            return Err(ServiceError::bad_request(
                "bad_request",
                format!(
                    "pk {pk:?} is not in partition {}: ask its own partition",
                    query.partition
                ),
            ));
        }
        self.wait_for(&query.min_offsets).await?;
        let runtime = self.caught_up_partition(query.partition).await?;
        let limit = query.limit.min(self.config.limits.max_list_records);
        let token = self.partition_positions(query.partition).text_if_any();
        let read = || -> Result<KeysReply, crate::store::StoreError> {
            let count = runtime.key_count()?;
            let records = match &query.pk {
                Some(pk) => runtime.record_count(pk, self.config.limits.max_list_records)?,
                None => None,
            };
            if query.limit == 0 {
                return Ok(KeysReply {
                    keys: Vec::new(),
                    next: Some(query.from),
                    count,
                    records,
                    token: token.clone(),
                });
            }
            let (keys, next) = runtime.scan_keys(query.from & HASH_MASK, limit)?;
            Ok(KeysReply {
                keys,
                next,
                count,
                records,
                token: token.clone(),
            })
        };
        read().map_err(|e| self.read_failed(query.partition, e))
    }
}

/// A query for a page of `partition`'s key index, waiting only for that partition's positions.
pub(super) fn keys_query(
    partition: u32,
    from: u64,
    limit: usize,
    min_offsets: &[Position],
) -> KeysQuery {
    KeysQuery {
        partition,
        from,
        limit,
        min_offsets: min_offsets
            .iter()
            .copied()
            .filter(|p| p.partition == partition)
            .collect(),
        pk: None,
    }
}
