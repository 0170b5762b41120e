//! Versions of a pk's records, for Redis `WATCH`: read here, carried in the entry as a `check`
//! op, and compared at apply on every replica alike.

use super::{Service, ServiceError};
use crate::model::{ListRequest, Position};

impl Service {
    /// The version of `pk`'s records (every sk) as this node reads them once `min_offsets` are
    /// applied: what a `check` op naming it compares at apply ([`crate::model::pk_version`]).
    pub async fn pk_version(
        &self,
        pk: &str,
        min_offsets: &[Position],
    ) -> Result<String, ServiceError> {
        let mut records = Vec::new();
        let mut cursor = None;
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
        // Lists read the store, point reads the read index, which follows a commit by a
        // moment. Were a GET after WATCH to see an older value than the version read here,
        // a transaction built on it would pass its check and lose an update: wait until
        // everything committed when the version was read is visible to point reads too.
        let partition = crate::model::partition_of(pk, self.engine.partition_count());
        if let super::route::Route::Local(runtime) = self.route(partition)? {
            let committed = runtime
                .committed_next_offset()
                .map_err(|e| self.read_failed(partition, e))?;
            if let Some(offset) = committed.checked_sub(1) {
                self.wait_for(&[Position { partition, offset }]).await?;
            }
        }
        // Records carry their data verbatim, so this is the version of the stored bytes.
        Ok(crate::store::version_of(&records))
    }
}
