//! WebAssembly plugins: conditions and transforms users write in any language that compiles to
//! WebAssembly, run deterministically so every replica reaches the same outcome
//! (README, "Plugins"; docs/architecture.md, invariant 4).
//!
//! The ABI: a module with no imports exporting `memory`, `alloc(len: i32) -> i32`,
//! `dealloc(ptr: i32, len: i32)`, and `condition(ptr: i32, len: i32) -> i32` (1 true, 0 false,
//! negative error) and/or `transform(ptr: i32, len: i32) -> i64` (`(out_ptr << 32) | out_len`,
//! negative error). The host writes the input — JSON
//! `{op, pk, sk, data, current: {data, _created_at, _updated_at} | null, args}` — into memory it
//! got from `alloc`. Plugins are identified by the SHA-256 of their bytes; names are bindings
//! to a digest, and entries carry the digest, so a later upload under the same name never changes
//! how an entry already in the log applies.

mod host;
mod registry;

pub use host::{Compiled, PluginHost, PluginLimits, PluginMetrics, Session};
pub use registry::{Binding, Registry, check_name};

pub use crate::model::Digest;
use serde::{Deserialize, Serialize};

/// What a plugin can be used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Condition,
    Transform,
    /// Exports both.
    Both,
}

impl PluginKind {
    /// Whether it can be used as an `if_plugin`.
    pub fn is_condition(self) -> bool {
        matches!(self, PluginKind::Condition | PluginKind::Both)
    }

    /// Whether it can be used as a `transform`.
    pub fn is_transform(self) -> bool {
        matches!(self, PluginKind::Transform | PluginKind::Both)
    }
}

/// A plugin that cannot be used: the upload's fault (400), or the host's.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid plugin: {0}")]
    Invalid(String),
    #[error("the plugin host failed: {0}")]
    Host(String),
}

/// A call that did not produce an answer. Deterministic: the same plugin and input fail the
/// same way on every node, so these become the entry's recorded rejection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFailure {
    #[error("ran out of fuel (PLUGIN_FUEL)")]
    OutOfFuel,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned error code {0}")]
    Error(i64),
    #[error("returned invalid output: {0}")]
    Output(String),
    #[error("does not follow the plugin ABI: {0}")]
    Abi(String),
}

impl PluginFailure {
    /// The metric label of this failure.
    pub fn label(&self) -> &'static str {
        match self {
            PluginFailure::OutOfFuel => "out_of_fuel",
            PluginFailure::Trap(_) => "trap",
            PluginFailure::Error(_) => "error_code",
            PluginFailure::Output(_) => "invalid_output",
            PluginFailure::Abi(_) => "abi",
        }
    }
}

/// The input a plugin gets, as JSON: `{op, pk, sk, data, current, args}`. `data` and
/// `current.data` are JSON text, inserted verbatim.
pub struct Input<'a> {
    /// `put`, `delete`, or `read` for a read-time transform.
    pub op: &'a str,
    pub pk: &'a str,
    pub sk: &'a str,
    pub data: Option<&'a str>,
    /// The stored record.
    pub current: Option<crate::model::StoredRecord<'a>>,
    /// The write's `args` JSON text.
    pub args: Option<&'a str>,
}

impl Input<'_> {
    /// The JSON bytes handed to the plugin.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.pk.len()
                + self.sk.len()
                + self.data.map_or(4, str::len)
                + self.current.map_or(4, |c| c.data_json.len() + 64)
                + self.args.map_or(4, str::len),
        );
        let string = |out: &mut Vec<u8>, s: &str| {
            serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail")
        };
        out.extend_from_slice(b"{\"op\":");
        string(&mut out, self.op);
        out.extend_from_slice(b",\"pk\":");
        string(&mut out, self.pk);
        out.extend_from_slice(b",\"sk\":");
        string(&mut out, self.sk);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.unwrap_or("null").as_bytes());
        out.extend_from_slice(b",\"current\":");
        match self.current {
            None => out.extend_from_slice(b"null"),
            Some(current) => {
                out.extend_from_slice(b"{\"data\":");
                out.extend_from_slice(current.data_json);
                out.extend_from_slice(
                    format!(
                        ",\"_created_at\":{},\"_updated_at\":{}",
                        current.created_at_ms, current.updated_at_ms
                    )
                    .as_bytes(),
                );
                // Only records with a deadline carry `_expires_at`, so plugins built before
                // expiry see exactly the input they always did.
                if let Some(deadline) = current.expires_at_ms {
                    out.extend_from_slice(format!(",\"_expires_at\":{deadline}").as_bytes());
                }
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"args\":");
        out.extend_from_slice(self.args.unwrap_or("null").as_bytes());
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests;
