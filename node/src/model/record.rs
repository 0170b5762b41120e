//! Records as readers see them, the addresses of things in the log, and list requests.

use serde::{Deserialize, Serialize};

/// A record's address: partition key and sort key. Any UTF-8 is allowed in both, `\0` included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

/// A stored record. `data_json` is the JSON text of the record's data exactly as stored, so readers
/// copy it to the wire without re-serializing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pk: String,
    pub sk: String,
    pub data_json: String,
    /// Unix milliseconds of the entry that first created the record.
    pub created_at_ms: i64,
    /// Unix milliseconds of the entry that last wrote the record.
    pub updated_at_ms: i64,
    /// The record's deadline (unix ms), if it expires: reads hide it from then on.
    pub expires_at_ms: Option<i64>,
    /// The deadline is the record's own (a Redis hash field's `HEXPIRE`), not its key's.
    pub own_deadline: bool,
}

/// Where an entry sits in the log: what a write returns, and what `min_offsets` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A list call: `pk`'s records whose sk starts with `sk_prefix`, in sk byte order. The same
/// request travels to a peer when another node serves the partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListRequest {
    pub pk: String,
    pub sk_prefix: String,
    /// Most records returned; 0 means the node's maximum page (then a cursor marks the rest).
    pub limit: u64,
    /// Keep only records for which this condition is true.
    pub cond: Option<String>,
    /// Stop at the first record for which `cond` is false.
    pub if_stop: bool,
    /// Skip the record whose sk equals a non-empty `sk_prefix` (FireScroll's list did; its
    /// `sk_prefix` doubled as "continue after").
    pub skip_prefix_itself: bool,
    /// Continue after this cursor (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Wait until these positions are applied before reading.
    pub min_offsets: Vec<Position>,
}

/// A stored record as conditions, plugins and apply see it: its data (JSON text, as stored),
/// timestamps and deadline. The store's value format decodes to it without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    pub data_json: &'a [u8],
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Its deadline (unix ms), if it expires.
    pub expires_at_ms: Option<i64>,
    /// The deadline is the record's own (a Redis hash field's `HEXPIRE`), not its key's: a
    /// field added to the key does not take it.
    pub own_deadline: bool,
}

impl Record {
    /// This record as a [`StoredRecord`].
    pub fn stored(&self) -> StoredRecord<'_> {
        StoredRecord {
            data_json: self.data_json.as_bytes(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            expires_at_ms: self.expires_at_ms,
            own_deadline: self.own_deadline,
        }
    }
}

/// One key (pk) of a partition, as its key index knows it: what `SCAN`, `KEYS` and `DBSIZE` see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub pk: String,
    /// Its position in the index: a fixed 48-bit hash of the pk.
    pub hash: u64,
    /// How many records (sks) it has.
    pub records: u64,
    /// Whether the record (pk, "") exists: a Redis string, else a hash.
    pub string: bool,
}
