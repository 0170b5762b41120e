//! Records as readers see them, and the addresses of things in the log.

/// A record's address: partition key and sort key. Any UTF-8 is allowed in both, `\0` included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

/// Where an entry sits in the log: what a write returns, and what `min_offsets` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}
