//! Entry outcomes: what happened to an entry, the same on every replica.

use serde::{Deserialize, Serialize};

/// Why an entry was rejected. Every replica reaches the same verdict (docs/architecture.md invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// An op's `if` evaluated to false.
    ConditionFailed,
    /// An op's `if` failed to compile or run, or did not return a boolean.
    ConditionError,
    /// The entry's bytes are not a supported entry.
    MalformedEntry,
    /// An op's pk belongs to another partition than the one the entry is in.
    WrongPartition,
    /// An op's `if_plugin` returned false.
    PluginConditionFailed,
    /// An op's plugin trapped, ran out of fuel, returned an error code or invalid output.
    PluginError,
    /// A read-modify-write op (`incr`, `append`) found a value it cannot work on, or its result
    /// would overflow.
    ValueError,
}

impl RejectionKind {
    /// The metric label of this kind.
    pub fn label(self) -> &'static str {
        match self {
            RejectionKind::ConditionFailed => "condition_failed",
            RejectionKind::ConditionError => "condition_error",
            RejectionKind::MalformedEntry => "malformed_entry",
            RejectionKind::WrongPartition => "wrong_partition",
            RejectionKind::PluginConditionFailed => "plugin_condition_failed",
            RejectionKind::PluginError => "plugin_error",
            RejectionKind::ValueError => "value_error",
        }
    }
}

/// A rejected entry's recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    #[serde(rename = "Kind")]
    pub kind: RejectionKind,
    /// Index of the op that caused it, when one did.
    #[serde(rename = "Op", default, skip_serializing_if = "Option::is_none")]
    pub op: Option<u32>,
    #[serde(rename = "Message")]
    pub message: String,
}

/// A value an op of an applied entry returned: the new data of a read-modify-write op, or the
/// data before a `return_old` op; or why an op that fails alone (`fails_alone`, format v9)
/// wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Returned {
    /// Index of the op in its entry.
    #[serde(rename = "Op")]
    pub op: u32,
    /// The data as JSON text; `None` when there was no record (or the op failed).
    #[serde(rename = "Data")]
    pub data: Option<String>,
    /// Why the op failed alone: it wrote nothing, and the rest of the entry applied.
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Returned {
    /// What op `op` returned: `data` (JSON text, `None` for no record).
    pub fn data(op: u32, data: Option<String>) -> Self {
        Returned {
            op,
            data,
            error: None,
        }
    }
}

/// What became of an entry. Serializable so a node can answer another node's question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every op took effect; the values its ops returned, if any asked to.
    Applied(Vec<Returned>),
    /// Nothing took effect, for this reason.
    Rejected(Rejection),
    /// Applied long enough ago that its outcome is no longer kept (OUTCOME_RETENTION).
    Expired,
}
