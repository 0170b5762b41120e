//! Which log a partition's state was applied from: the last entry it applied, by offset and by
//! the digest of its bytes. Offsets alone do not say it: a Kafka topic deleted and created
//! again, an unclean leader election, or another node's log folder put in place numbers new
//! entries with offsets this state already applied, and a replica that went on reading after
//! its offset would skip them for good and disagree with every replica that did not.

use super::Digest;
use serde::{Deserialize, Serialize};

/// The last entry a partition applied. A log that holds another entry at `offset` (or none) is
/// not the log this state was applied from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntry {
    pub offset: u64,
    /// SHA-256 of the entry's bytes as the log holds them.
    pub sha256: Digest,
}

/// The length of [`AppliedEntry::to_bytes`].
const ENCODED_LEN: usize = 8 + 32;

impl AppliedEntry {
    /// The entry at `offset` whose bytes are `payload`.
    pub fn of(offset: u64, payload: &[u8]) -> Self {
        AppliedEntry {
            offset,
            sha256: Digest::of(payload),
        }
    }

    /// Whether the log's entry at this offset, `payload`, is this one.
    pub fn is(&self, payload: &[u8]) -> bool {
        Digest::of(payload) == self.sha256
    }

    /// Its stored form: the offset (big-endian) and the digest.
    pub fn to_bytes(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.sha256.0);
        out
    }

    /// Reads [`AppliedEntry::to_bytes`]'s form; `None` for bytes of another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        Some(AppliedEntry {
            offset: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            sha256: Digest(bytes[8..].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_known_by_its_bytes_and_round_trips_its_stored_form() {
        let entry = AppliedEntry::of(41, br#"{"v":1,"ts_ms":5,"ops":[]}"#);
        assert!(entry.is(br#"{"v":1,"ts_ms":5,"ops":[]}"#));
        assert!(!entry.is(br#"{"v":1,"ts_ms":6,"ops":[]}"#));
        assert_eq!(AppliedEntry::from_bytes(&entry.to_bytes()), Some(entry));
        assert_eq!(AppliedEntry::from_bytes(&entry.to_bytes()[1..]), None);
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<AppliedEntry>(&json).unwrap(), entry);
    }
}
