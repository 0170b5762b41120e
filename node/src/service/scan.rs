//! Walking every record of the region a page at a time (`POST /records/scan`): the keys (pks) of
//! each partition in key index order (see `keyspace`), each key's records in sk order (as
//! `list` gives them). For exports, admin views, and copying a namespace into another, one with
//! more partitions say: scan, then watch each partition from the scan's token.
//!
//! A cursor says where the walk is: the partition, the key's hash position and the key, and
//! where in its records. Key index order and list cursors are the same on every replica, so any
//! node of the region can continue a cursor another issued. A record present throughout a scan
//! is returned once (a record written during it may be returned or not: a watch from the
//! scan's token sees that write).
//!
//! A partition this node does not serve is read by an owner, a page part at a time
//! (`/cluster/v1/scan`, answered by [`Service::scan_partition_local`]); only for an owner of a
//! release without it is it walked here key by key through proxied reads.

use super::keyspace::keys_query;
use super::read::answer_bytes;
use super::route::Route;
use super::{Service, ServiceError, Token};
use crate::model::peer::ScanQuery;
use crate::model::{ListRequest, Position, READ_ANSWER_BYTES, Record};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One page of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    pub records: Vec<Record>,
    /// Present when the scan has not reached the end: pass it as `cursor` for the next page.
    pub next_cursor: Option<String>,
    /// For each partition this page read, its watch position from before the page read it.
    /// The first position a scan gives for a partition is where to watch it from.
    pub token: Token,
}

/// Where a scan stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    partition: u32,
    /// The key index position to read keys from.
    hash: u64,
    /// The key being walked (at `hash`), and how far.
    key: Option<(String, Within)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Within {
    /// Its records from this list cursor on.
    From(String),
    /// All of its records were returned.
    Done,
}

impl Cursor {
    const START: Cursor = Cursor {
        partition: 0,
        hash: 0,
        key: None,
    };

    /// `partition.hash`, then `.d.<key>` (done) or `.c.<key>.<list cursor>`; the key in
    /// URL-safe base64 (any bytes, no dots).
    fn encode(&self) -> String {
        let mut text = format!("{}.{}", self.partition, self.hash);
        match &self.key {
            None => {}
            Some((pk, Within::Done)) => {
                text.push_str(".d.");
                text.push_str(&URL_SAFE_NO_PAD.encode(pk));
            }
            Some((pk, Within::From(list))) => {
                text.push_str(".c.");
                text.push_str(&URL_SAFE_NO_PAD.encode(pk));
                text.push('.');
                text.push_str(list);
            }
        }
        text
    }

    fn decode(text: &str, partitions: u32) -> Result<Cursor, ServiceError> {
        let bad = || {
            ServiceError::bad_request(
                "invalid_cursor",
                format!(
                    "{text:?} is not a scan cursor: pass a page's NextCursor as it came, or none \
                     to start"
                ),
            )
        };
        let mut parts = text.splitn(5, '.');
        let partition: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let hash: u64 = parts.next().and_then(|h| h.parse().ok()).ok_or_else(bad)?;
        if partition >= partitions {
            return Err(ServiceError::bad_request(
                "invalid_cursor",
                format!(
                    "the cursor names partition {partition}, but there are {partitions}: \
                     start again without a cursor"
                ),
            ));
        }
        let key = match parts.next() {
            None => None,
            Some(state) => {
                let pk = parts
                    .next()
                    .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(bad)?;
                let within = match (state, parts.next()) {
                    ("d", None) => Within::Done,
                    ("c", Some(list)) => Within::From(list.to_string()),
                    _ => return Err(bad()),
                };
                Some((pk, within))
            }
        };
        Ok(Cursor {
            partition,
            hash,
            key,
        })
    }

    /// Whether the key at (`hash`, `pk`) was walked already (it sorts before the cursor's key,
    /// or is that key, done).
    fn passed(&self, hash: u64, pk: &str) -> bool {
        match &self.key {
            Some((at, within)) if hash == self.hash => match pk.as_bytes().cmp(at.as_bytes()) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => *within == Within::Done,
                std::cmp::Ordering::Greater => false,
            },
            _ => false,
        }
    }
}

/// One partition's part of a scan page.
#[derive(Debug, Default)]
pub struct PartitionScan {
    pub records: Vec<Record>,
    /// Where to continue within the partition; `None` when the part walked to its end.
    next: Option<Cursor>,
    /// The partition's watch token where it was read, taken before reading.
    pub token: Option<String>,
    /// The reads it took (key index entries asked, key lists).
    pub reads: usize,
}

impl PartitionScan {
    /// [`PartitionScan::next`] as a cursor's text.
    pub fn next_cursor(&self) -> Option<String> {
        self.next.as_ref().map(Cursor::encode)
    }
}

/// What a partition's part of a scan page reads.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    /// Only pks starting with this.
    pk_prefix: &'a str,
    /// Most records.
    limit: usize,
    /// Most reads (key index entries asked, key lists).
    max_reads: usize,
    /// The partition's positions to wait for.
    min_offsets: &'a [Position],
}

/// Where a partition's keys and records are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// This node's own store only: what a peer answers (it never proxies again).
    Local,
    /// Here or at an owner, read by read: for an owner whose release has no scan page.
    Routed,
}

impl Service {
    /// About `limit` records of pks starting with `pk_prefix` from `cursor` on (0: the node's
    /// list page size), over every partition of the region in order, read here or at an owner
    /// (one request per partition part of the page). A page may hold fewer (even none) and
    /// still have a cursor: it reads about four times `limit` keys at most, and ends once its
    /// records pass [`READ_ANSWER_BYTES`].
    pub async fn scan(
        &self,
        cursor: Option<&str>,
        pk_prefix: &str,
        limit: usize,
        min_offsets: &[Position],
    ) -> Result<ScanPage, ServiceError> {
        if pk_prefix.len() > self.config.limits.max_key_bytes {
            return Err(ServiceError::bad_request(
                "key_too_large",
                format!(
                    "pk_prefix is {} bytes, longer than any pk (MAX_KEY_BYTES {})",
                    pk_prefix.len(),
                    self.config.limits.max_key_bytes
                ),
            ));
        }
        let partitions = self.engine.partition_count();
        let mut at = match cursor.filter(|c| !c.is_empty()) {
            None => Cursor::START,
            Some(text) => Cursor::decode(text, partitions)?,
        };
        self.check_positions(min_offsets)?;
        let max = self.config.limits.max_list_records;
        let limit = if limit == 0 { max } else { limit.min(max) };
        let mut page = ScanPage::default();
        // Keys whose records are all expired (not yet removed), or of another prefix, give
        // nothing: a page also ends after this many reads (index entries and key lists), with a
        // cursor, so no request walks an unbounded keyspace.
        let max_reads = max_reads(limit);
        let mut reads = 0usize;
        let mut bytes = 0usize;
        loop {
            let partition = at.partition;
            let part = self
                .scan_partition_anywhere(
                    at,
                    pk_prefix,
                    limit - page.records.len(),
                    max_reads - reads,
                    min_offsets,
                )
                .await?;
            bytes += part.records.iter().map(answer_bytes).sum::<usize>();
            page.records.extend(part.records);
            reads = reads.saturating_add(part.reads);
            if let Some(text) = &part.token {
                page.token.keep_first(&text.parse()?, partition);
            }
            if let Some(next) = part.next {
                page.next_cursor = Some(next.encode());
                return Ok(page);
            }
            if partition + 1 == partitions {
                return Ok(page);
            }
            at = Cursor {
                partition: partition + 1,
                ..Cursor::START
            };
            if page.records.len() >= limit || reads >= max_reads || bytes >= READ_ANSWER_BYTES {
                page.next_cursor = Some(at.encode());
                return Ok(page);
            }
        }
    }

    /// A scan's page within one partition this node serves, from `query.cursor` on (what a
    /// peer answers for a scan through a node that does not serve the partition).
    pub async fn scan_partition_local(
        &self,
        query: ScanQuery,
    ) -> Result<PartitionScan, ServiceError> {
        let at = Cursor::decode(&query.cursor, self.engine.partition_count())?;
        let limit = query.limit.clamp(1, self.config.limits.max_list_records);
        let max_reads = query.max_reads.clamp(1, max_reads(limit));
        let min_offsets: Vec<Position> = query
            .min_offsets
            .into_iter()
            .filter(|p| p.partition == at.partition)
            .collect();
        let scope = Scope {
            pk_prefix: &query.pk_prefix,
            limit,
            max_reads,
            min_offsets: &min_offsets,
        };
        self.scan_partition(at, scope, Reach::Local).await
    }

    /// A scan's page within `at`'s partition: from this node when it serves the partition, else
    /// in one request to an owner.
    async fn scan_partition_anywhere(
        &self,
        at: Cursor,
        pk_prefix: &str,
        limit: usize,
        max_reads: usize,
        min_offsets: &[Position],
    ) -> Result<PartitionScan, ServiceError> {
        let partition = at.partition;
        let min_offsets: Vec<Position> = min_offsets
            .iter()
            .copied()
            .filter(|p| p.partition == partition)
            .collect();
        let scope = Scope {
            pk_prefix,
            limit,
            max_reads,
            min_offsets: &min_offsets,
        };
        let cluster = match self.route_waited(partition, &min_offsets).await? {
            Route::Local(_) => return self.scan_partition(at, scope, Reach::Local).await,
            Route::Remote(cluster) => cluster,
        };
        let query = ScanQuery {
            cursor: at.encode(),
            limit,
            max_reads,
            min_offsets: min_offsets.clone(),
            pk_prefix: pk_prefix.to_string(),
        };
        let wait = self.peer_wait(!query.min_offsets.is_empty());
        let owners = cluster.owners(partition);
        let reply = self
            .first_answer(&cluster, "scan", partition, owners, |peer| {
                cluster.client().scan(peer.api, &query, wait)
            })
            .await?;
        let Some(reply) = reply else {
            return self.scan_partition(at, scope, Reach::Routed).await;
        };
        let next = match reply.next_cursor {
            None => None,
            Some(text) => match Cursor::decode(&text, self.engine.partition_count()) {
                Ok(next) if next.partition == partition => Some(next),
                _ => {
                    return Err(ServiceError::internal(format!(
                        "an owner of partition {partition} answered a scan with the cursor \
                         {text:?}, not one of that partition"
                    )));
                }
            },
        };
        let records = reply
            .records
            .into_iter()
            .map(|r| {
                let pk = r.pk.clone().unwrap_or_default();
                let sk = r.sk.clone().unwrap_or_default();
                r.into_record(pk, sk)
            })
            // An owner of a release without the prefix answers every pk.
            .filter(|r| r.pk.starts_with(pk_prefix))
            .collect();
        Ok(PartitionScan {
            records,
            next,
            token: reply.token,
            reads: reply.reads,
        })
    }

    /// Up to `scope.limit` records of `at`'s partition from `at` on, in at most about
    /// `scope.max_reads` reads, read as `reach` says.
    async fn scan_partition(
        &self,
        mut at: Cursor,
        scope: Scope<'_>,
        reach: Reach,
    ) -> Result<PartitionScan, ServiceError> {
        let Scope {
            pk_prefix,
            limit,
            max_reads,
            min_offsets,
        } = scope;
        let partition = at.partition;
        let mut part = PartitionScan::default();
        // What the part answers: it ends, with a cursor, once past READ_ANSWER_BYTES (each
        // key's list page is bounded so too).
        let mut bytes = 0usize;
        loop {
            let ask = limit - part.records.len();
            let query = keys_query(partition, at.hash, ask, min_offsets);
            let reply = match reach {
                Reach::Local => self.keys_local(query).await?,
                Reach::Routed => self.ask_keys(query).await?,
            };
            // The index entries that read looked at (keys with nothing live are left out of
            // its answer, but were read).
            part.reads += ask;
            if part.token.is_none() {
                part.token = reply.token;
            }
            for key in reply.keys {
                // Keys of other prefixes cost their index read only (counted above).
                if at.passed(key.hash, &key.pk) || !key.pk.starts_with(pk_prefix) {
                    continue;
                }
                let mut list_cursor = match at.key.take() {
                    Some((pk, Within::From(list))) if pk == key.pk => Some(list),
                    _ => None,
                };
                loop {
                    let request = ListRequest {
                        pk: key.pk.clone(),
                        sk_prefix: String::new(),
                        limit: (limit - part.records.len()) as u64,
                        cond: None,
                        if_stop: false,
                        skip_prefix_itself: true,
                        cursor: list_cursor,
                        min_offsets: min_offsets.to_vec(),
                    };
                    let listed = match reach {
                        Reach::Local => self.list_local(request).await?,
                        Reach::Routed => self.list(request).await?,
                    };
                    bytes += listed.records.iter().map(answer_bytes).sum::<usize>();
                    part.records.extend(listed.records);
                    list_cursor = listed.next_cursor;
                    part.reads += 1;
                    let full = part.records.len() >= limit
                        || part.reads >= max_reads
                        || bytes >= READ_ANSWER_BYTES;
                    if list_cursor.is_none() || full {
                        break;
                    }
                }
                if part.records.len() >= limit
                    || part.reads >= max_reads
                    || bytes >= READ_ANSWER_BYTES
                {
                    let within = list_cursor.map_or(Within::Done, Within::From);
                    part.next = Some(Cursor {
                        partition,
                        hash: key.hash,
                        key: Some((key.pk, within)),
                    });
                    return Ok(part);
                }
            }
            let Some(hash) = reply.next else {
                return Ok(part);
            };
            at = Cursor {
                partition,
                hash,
                key: None,
            };
            if part.reads >= max_reads {
                part.next = Some(at);
                return Ok(part);
            }
        }
    }
}

/// Most reads a page of `limit` records takes.
fn max_reads(limit: usize) -> usize {
    limit.saturating_mul(4).saturating_add(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_say_what_to_do() {
        for cursor in [
            Cursor::START,
            Cursor {
                partition: 3,
                hash: 42,
                key: Some(("a.b\u{0}{é}".into(), Within::Done)),
            },
            Cursor {
                partition: 1,
                hash: (1 << 48) - 1,
                key: Some(("k".into(), Within::From("c.with.dots".into()))),
            },
            // After the record with the empty sk (a Redis string).
            Cursor {
                partition: 2,
                hash: 5,
                key: Some(("k".into(), Within::From(String::new()))),
            },
        ] {
            assert_eq!(Cursor::decode(&cursor.encode(), 4).unwrap(), cursor);
        }
        for bad in [
            "x",
            "1",
            "1.x",
            "1.2.q.aw",
            "1.2.d",
            "1.2.c.aw",
            "1.2.d.!!",
            "1.2.d.aw.x",
        ] {
            let e = Cursor::decode(bad, 4).unwrap_err();
            assert_eq!(e.code, "invalid_cursor", "{bad}");
        }
        let e = Cursor::decode("9.0", 4).unwrap_err();
        assert!(e.message.contains("there are 4"), "{}", e.message);
    }

    #[test]
    fn a_resumed_scan_skips_only_the_keys_it_walked() {
        let at = Cursor {
            partition: 0,
            hash: 7,
            key: Some(("m".into(), Within::From("x".into()))),
        };
        assert!(at.passed(7, "a"));
        assert!(!at.passed(7, "m"), "the key itself is not done");
        assert!(!at.passed(7, "z"));
        assert!(!at.passed(8, "a"), "a later hash");
        let done = Cursor {
            key: Some(("m".into(), Within::Done)),
            ..at
        };
        assert!(done.passed(7, "m"));
    }
}
