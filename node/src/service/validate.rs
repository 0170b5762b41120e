//! Checks every request shares, reads and writes alike.

use super::{Service, ServiceError};

impl Service {
    /// Checks one record's address. Shared by reads and writes. `index`: which of a request's
    /// records it is, named in the error; `None` for a request of one key (a list, whose `sk`
    /// is its `sk_prefix`).
    pub(super) fn validate_key(
        &self,
        index: Option<usize>,
        pk: &str,
        sk: &str,
    ) -> Result<(), ServiceError> {
        let max = self.config.limits.max_key_bytes;
        let record = index.map_or_else(String::new, |i| format!("record {i}: "));
        if pk.is_empty() {
            return Err(ServiceError::bad_request(
                "missing_pk",
                format!("{record}`pk` is required and must not be empty"),
            ));
        }
        let sk_name = if index.is_some() { "sk" } else { "sk_prefix" };
        for (name, value) in [("pk", pk), (sk_name, sk)] {
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
                        "{record}`{name}` is {} bytes; the limit is {max} (MAX_KEY_BYTES){binary}",
                        value.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}
