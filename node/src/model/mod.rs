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
