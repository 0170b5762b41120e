//! Checks every request shares, reads and writes alike.

use super::{Service, ServiceError};

impl Service {
    /// Checks one record's address. Shared by reads and writes.
    pub(super) fn validate_key(
        &self,
        index: usize,
        pk: &str,
        sk: &str,
    ) -> Result<(), ServiceError> {
        let max = self.config.limits.max_key_bytes;
        if pk.is_empty() {
            return Err(ServiceError::bad_request(
                "missing_pk",
                format!("record {index}: `pk` is required and must not be empty"),
            ));
        }
        for (name, value) in [("pk", pk), ("sk", sk)] {
            if value.len() > max {
                // A binary key's bytes are stored as base64 (4/3 of them) after a 4-byte mark.
                let binary = match crate::model::binary_key_bytes(value) {
                    Some(_) => format!(
                        " (a key that is not UTF-8 is stored as base64, 4/3 of its size: at most \
                         {} bytes of binary fit)",
                        max.saturating_sub(crate::model::BINARY_KEY_MARK.len_utf8()) / 4 * 3
                    ),
                    None => String::new(),
                };
                return Err(ServiceError::bad_request(
                    "key_too_large",
                    format!(
                        "record {index}: `{name}` is {} bytes; the limit is {max} (MAX_KEY_BYTES){binary}",
                        value.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}
