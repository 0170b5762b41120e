//! Versions of a pk's records, for Redis `WATCH`: read here, carried in the entry as a `check`
//! op, and compared at apply on every replica alike.

use super::{Service, ServiceError};
use crate::model::{ListRequest, Position, pk_version};
use crate::store::{encode_key, encode_value};

impl Service {
    /// The version of `pk`'s records (every sk) as this node reads them once `min_offsets` are
    /// applied: what a `check` op naming it compares at apply ([`pk_version`]).
    pub async fn pk_version(
        &self,
        pk: &str,
        min_offsets: &[Position],
    ) -> Result<String, ServiceError> {
        let mut stored: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
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
            // Records carry their data verbatim, so this is the stored value byte for byte.
            stored.extend(page.records.iter().map(|r| {
                (
                    encode_key(&r.pk, &r.sk),
                    encode_value(r.created_at_ms, r.updated_at_ms, r.data_json.as_bytes()),
                )
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(pk_version(
            stored.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        ))
    }
}
