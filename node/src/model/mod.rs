//! The data model every other module speaks: records, operations, log entries and the one
//! partition function. Depends on nothing else in the crate.

mod binary;
mod digest;
mod entry;
mod json_bytes;
mod json_path;
mod lineage;
mod nesting;
mod outcome;
mod partition;
pub mod peer;
mod record;

pub use binary::{
    BINARY_KEY_MARK, binary_bytes, binary_capacity, binary_data, binary_key, binary_key_bytes,
    is_binary_data,
};
pub use digest::Digest;
pub use entry::{
    DecodeError, ENTRY_VERSION, ExpireIf, JsonCmd, LogEntry, Op, OpKind, PluginRef, pk_version,
};
pub use json_bytes::from_json_bytes;
pub use json_path::{
    Found, JsonPath, MAX_PATH_BYTES, PathError, READ_ANSWER_BYTES, READ_VISITS, Step, charge_text,
    json_type_name,
};
pub use lineage::AppliedEntry;
pub use nesting::{
    MAX_JSON_DEPTH, json_lone_surrogate, json_nests_deeper_than, json_number_out_of_range,
    structural_bytes,
};
pub use outcome::{Outcome, Rejection, RejectionKind, Returned};
pub use partition::{murmur2, partition_of};
pub use record::{Key, KeyInfo, ListRequest, Position, Record, StoredRecord};

/// Added to the system clock by [`now_ms`]: zero, except where tests make nodes' clocks
/// disagree (`FIRESCROLL_CLOCK_OFFSET_MS`).
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts this process's clock ([`now_ms`]) by `offset_ms`: for tests that show replicas agree
/// although their nodes' clocks do not.
pub fn set_clock_offset_ms(offset_ms: i64) {
    CLOCK_OFFSET_MS.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
}

/// Now, in unix milliseconds: the timestamp the accepting node gives an entry, and the time
/// reads hide expired records at (never read in apply, which uses the entry's own).
pub fn now_ms() -> i64 {
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    system.saturating_add(CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed))
}
