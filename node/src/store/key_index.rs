//! The key index: one entry per pk (a Redis key) of a partition, kept at apply in the same atomic
//! batch as the records, so counting keys (`DBSIZE`) is a read of one number and walking them
//! (`SCAN`, `KEYS`, `RANDOMKEY`) never touches the records.
//!
//! Entries are ordered by a 48-bit hash of the pk, then the pk. A scan position is therefore a
//! number — (partition, hash) fits a Redis cursor — that means the same on every replica of every
//! region, so any node can continue a scan another began, and a scan that resumes after a hash
//! returns every key present throughout it exactly once.
//!
//! Entry: key `hash48 (6 bytes BE) ++ pk`, value `records (u64 BE) ++ has_string (1 byte)`, where
//! `has_string` says whether the record (pk, "") — a Redis string — exists.

/// Bits of the key hash: a partition id and a hash position share one u64 cursor.
pub const KEY_HASH_BITS: u32 = 48;

/// The position of `pk` in the key index: the top 48 bits of its 64-bit FNV-1a hash. Fixed
/// forever (it orders stored data and cursors).
pub fn key_hash(pk: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in pk.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash >> (64 - KEY_HASH_BITS)
}

/// The index key of `pk`.
pub(super) fn index_key(pk: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(6 + pk.len());
    key.extend_from_slice(&key_hash(pk).to_be_bytes()[2..]);
    key.extend_from_slice(pk.as_bytes());
    key
}

/// The first index key at hash position `hash` or after.
pub(super) fn position_key(hash: u64) -> [u8; 6] {
    let mut key = [0u8; 6];
    key.copy_from_slice(&hash.min((1 << KEY_HASH_BITS) - 1).to_be_bytes()[2..]);
    key
}

pub use crate::model::KeyInfo;

/// Decodes an index entry; `None` for bytes this module never wrote.
pub(super) fn decode_info(key: &[u8], value: &[u8]) -> Option<KeyInfo> {
    if key.len() < 6 || value.len() != 9 {
        return None;
    }
    let mut hash = [0u8; 8];
    hash[2..].copy_from_slice(&key[..6]);
    Some(KeyInfo {
        pk: String::from_utf8(key[6..].to_vec()).ok()?,
        hash: u64::from_be_bytes(hash),
        records: u64::from_be_bytes(value[..8].try_into().ok()?),
        string: value[8] == 1,
    })
}

/// An index entry's value.
pub(super) fn encode_info(records: u64, string: bool) -> [u8; 9] {
    let mut value = [0u8; 9];
    value[..8].copy_from_slice(&records.to_be_bytes());
    value[8] = u8::from(string);
    value
}

/// How one apply batch changed a key: records added minus removed, and whether its string
/// record now exists (when that changed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    pub records: i64,
    pub string: Option<bool>,
}

impl KeyChange {
    /// Notes that record (pk, `sk`) came to exist (`exists`) or stopped existing.
    pub fn note(&mut self, sk: &str, exists: bool) {
        self.records += if exists { 1 } else { -1 };
        if sk.is_empty() {
            self.string = Some(exists);
        }
    }

    /// Adds a later change on top of this one.
    pub fn then(&mut self, later: &KeyChange) {
        self.records += later.records;
        if later.string.is_some() {
            self.string = later.string;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_and_fit_48_bits() {
        // FNV-1a of "" and "a", as published; the index order depends on them never changing.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325 >> 16);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c >> 16);
        assert!(key_hash("anything at all") < 1 << 48);
        let key = index_key("user:1");
        let info = decode_info(&key, &encode_info(3, true)).unwrap();
        assert_eq!(info.pk, "user:1");
        assert_eq!(info.hash, key_hash("user:1"));
        assert_eq!((info.records, info.string), (3, true));
    }
}
