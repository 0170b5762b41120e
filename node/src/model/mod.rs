//! The data model every other module speaks: records, operations, log entries and the one
//! partition function. Depends on nothing else in the crate.

mod digest;
mod entry;
mod nesting;
mod outcome;
mod partition;
pub mod peer;
mod record;

pub use digest::Digest;
pub use entry::{DecodeError, ENTRY_VERSION, LogEntry, Op, OpKind, PluginRef, pk_version};
pub use nesting::{MAX_JSON_DEPTH, json_nests_deeper_than, structural_bytes};
pub use outcome::{Outcome, Rejection, RejectionKind, Returned};
pub use partition::{murmur2, partition_of};
pub use record::{Key, KeyInfo, ListRequest, Position, Record, StoredRecord};

/// Now, in unix milliseconds: the timestamp the accepting node gives an entry (never read in
/// apply, which uses the entry's own).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
