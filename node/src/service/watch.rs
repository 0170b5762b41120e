//! Versions of a pk's records, for Redis `WATCH`: read here, carried in the entry as a `check`
//! op, and compared at apply on every replica alike.

use super::{Service, ServiceError};
use crate::model::{ListRequest, Position};

/// A watched pk's version, and the position reads made after it must have applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// What the transaction's `check` op compares at apply ([`crate::model::pk_version`]).
    pub version: String,
    /// The last entry the version may reflect. A transaction computes its writes from reads
    /// made after `WATCH`: were one of them answered by a replica that had not applied this far
    /// (another owner than the version's, which lags), the check would pass on values older
    /// than the version and lose an update — so those reads wait for it (`min_offsets`).
    /// `None` when nothing was applied yet, or an owner that predates it answered.
    pub floor: Option<Position>,
}

impl Service {
    /// The version of `pk`'s records (every sk) as this node reads them once `min_offsets` are
    /// applied, with the position later reads must wait for (see [`Watched`]).
    pub async fn pk_version(
        &self,
        pk: &str,
        min_offsets: &[Position],
    ) -> Result<Watched, ServiceError> {
        let partition = crate::model::partition_of(pk, self.engine.partition_count());
        let mut records = Vec::new();
        let mut cursor = None;
        let mut floor: Option<u64> = None;
        loop {
            let page = self
                .list(ListRequest {
                    pk: pk.to_string(),
                    cursor,
                    min_offsets: min_offsets.to_vec(),
                    ..ListRequest::default()
                })
                .await?;
            records.extend(page.records);
            if let Some(through) = page.read_through.and_then(|next| next.checked_sub(1)) {
                floor = Some(floor.map_or(through, |f| f.max(through)));
            }
            // A key whose check could never fit in an entry is refused here, before it is all
            // held in memory.
            let bytes: usize = records
                .iter()
                .map(|r| r.sk.len() + r.data_json.len() + 64)
                .sum();
            if bytes as u64 > crate::engine::ENTRY_READ_BYTES {
                return Err(ServiceError::bad_request(
                    "key_too_large",
                    format!(
                        "pk {pk:?} holds more than {} MiB: too large to WATCH",
                        crate::engine::ENTRY_READ_BYTES >> 20
                    ),
                ));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let floor = floor.map(|offset| Position { partition, offset });
        // Lists read the store, point reads the read index, which follows a commit by a
        // moment: when this node answers the reads, it waits here until everything committed
        // when the version was read is visible to point reads too (elsewhere, the reads wait).
        if let (Some(floor), super::route::Route::Local(_)) = (floor, self.route(partition)?) {
            self.wait_for(&[floor]).await?;
        }
        // Records carry their data verbatim, so this is the version of the stored bytes.
        Ok(Watched {
            version: crate::store::version_of(&records),
            floor,
        })
    }
}
