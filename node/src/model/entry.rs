//! Log entry v1: the documented unit of the write-ahead log (see `docs/log-entry-v1.md`).
//!
//! ```json
//! {"v":1,"ts_ms":1732590000000,"ops":[{"op":"put","pk":"a","sk":"b","data":{"x":1},"if":"data == null"}]}
//! ```
//!
//! FireScroll's single-mutation message (`{"pk","sk","data","ts_ms","mutation","if"}`) decodes as an
//! entry of one op, so logs written by FireScroll (or producers built for it) keep working.

use super::Digest;
use super::json_bytes::from_json_bytes;
use super::nesting::{MAX_JSON_DEPTH, json_nests_deeper_than};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The newest entry format this build applies. It writes each entry in the oldest format that
/// holds its ops (v1 unless an op uses a field or op kind of a later one), and never newer than the node's write
/// version.
pub const ENTRY_VERSION: u32 = 9;

/// What an operation does to its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Replace the record's data (creating the record if needed).
    #[default]
    Put,
    /// Remove the record (absent records are fine).
    Delete,
    /// Remove every record of `pk`, whatever its sk (Redis `DEL` of a key: the string and every
    /// hash field).
    DeleteKey,
    /// Add `data` (a JSON integer) to the record's integer value, computed at apply: a JSON
    /// number stays a number, a string holding an integer stays a string, an absent record
    /// becomes the string of `data`. Anything else, or an overflow, rejects the entry
    /// (`value_error`). The new data is returned in the outcome (Redis `INCR`, `HINCRBY`).
    Incr,
    /// As `incr`, with a JSON number added as a 64-bit float.
    IncrFloat,
    /// Format v4. As `incr`, adding `data` (a JSON string holding a number in Redis's float
    /// syntax, or a JSON number) as Redis `INCRBYFLOAT` and `HINCRBYFLOAT` do: in x87 80-bit
    /// extended precision, the result written `%.17Lf` with trailing zeros trimmed (`0.1` plus
    /// `0.2` is `0.3`). See [`crate::engine::LongDouble`].
    IncrLongDouble,
    /// Append `data` (a JSON string) to the record's string value (absent: the empty string);
    /// the new data is returned in the outcome (Redis `APPEND`).
    Append,
    /// Write nothing; reject the entry (`condition_failed`) unless the records of `pk` (every
    /// sk) are exactly those `version` names (Redis `WATCH`). See [`pk_version`].
    Check,
    /// Set (`expires_at`) or remove (no `expires_at`) the deadline of the record (pk, sk),
    /// keeping its data and times, if `expire_if` allows. Returns Redis `HEXPIRE`'s codes: `-2`
    /// no record, `0` refused by `expire_if` (or nothing to remove), `1` set, `2` removed (a
    /// deadline already reached); with `return_old`, the data instead (Redis `GETEX`).
    Expire,
    /// As `expire`, for every record of `pk` together: the key's deadline is the latest of its
    /// records' (none if any record has none). Redis `EXPIRE`, `PERSIST`.
    ExpireKey,
    /// Format v4. Write nothing; return the deadline of the Redis key `pk` (unix ms) as the
    /// entry sees it at this op: its string record's, else as `expire_key` computes it; `-1`
    /// when it has none, `-2` when `pk` has no live record (Redis `TTL` inside `MULTI` of a key
    /// the transaction writes).
    Deadline,
    /// Format v6. Edit the JSON document that is the record's data at `path` (RedisJSON's
    /// syntax, see [`crate::model::JsonPath`]) as `json_cmd` says, with `data` as its operand,
    /// computed at apply; the record keeps its deadline. Returns the command's reply as JSON
    /// (see [`JsonCmd`]). A command its document cannot take rejects the entry (`value_error`).
    Json,
}

/// What a `json` op does at its path (Redis `JSON.SET`, `JSON.NUMINCRBY`, ...), with the op's
/// `data` as operand. Each returns its reply as JSON: for a JSONPath (`$...`) one element per
/// match (`null` where the match is not of the kind the command takes), for a legacy path the
/// first match's alone (none, or one of the wrong kind, rejects the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonCmd {
    /// Put `data` at every match, or, with none, add it as the last name of the path to the
    /// objects its parent path matches. `true` when written, `null` when not.
    Set,
    /// As `set`, only when the path matches nothing (`NX`).
    SetIfAbsent,
    /// As `set`, only where the path matches (`XX`).
    SetIfPresent,
    /// Remove every match (the root: the record). The count removed.
    Del,
    /// Empty every array and object match, zero every number. The count changed.
    Clear,
    /// Flip every boolean match: 1 or 0 (legacy: `"true"`/`"false"`).
    Toggle,
    /// Add the number `data` to every number match: the new values, as JSON text.
    NumIncrBy,
    /// Multiply every number match by `data`: the new values, as JSON text.
    NumMultBy,
    /// Append the string `data` to every string match: the new lengths.
    StrAppend,
    /// Append the values of the array `data` to every array match: the new lengths.
    ArrAppend,
    /// `data` is `[index, value, ...]`: insert the values before `index` (negative from the
    /// end) of every array match: the new lengths.
    ArrInsert,
    /// Remove and return the element at the index `data` (negative from the end) of every
    /// array match, as JSON text (`null` for an empty array).
    ArrPop,
    /// `data` is `[start, stop]`: keep only those elements (inclusive, negative from the end)
    /// of every array match: the new lengths.
    ArrTrim,
    /// Merge `data` into every match as RFC 7396 says (`null` members remove); with no match,
    /// add it as `set` does. `true`.
    Merge,
}

/// When an `expire` op may change a deadline, compared with the current one (Redis `EXPIRE`'s
/// options; no deadline counts as an infinite one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpireIf {
    /// Only when there is no deadline.
    Nx,
    /// Only when there is one.
    Xx,
    /// Only when the new one is later.
    Gt,
    /// Only when the new one is earlier.
    Lt,
}

impl OpKind {
    /// The op's name in entries (and what plugins see as `op`).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::DeleteKey => "delete_key",
            OpKind::Incr => "incr",
            OpKind::IncrFloat => "incr_float",
            OpKind::IncrLongDouble => "incr_long_double",
            OpKind::Append => "append",
            OpKind::Check => "check",
            OpKind::Expire => "expire",
            OpKind::ExpireKey => "expire_key",
            OpKind::Deadline => "deadline",
            OpKind::Json => "json",
        }
    }

    /// Whether the op computes its new value from the stored one at apply (and returns it).
    pub fn is_read_modify_write(self) -> bool {
        matches!(
            self,
            OpKind::Incr | OpKind::IncrFloat | OpKind::IncrLongDouble | OpKind::Append
        )
    }
}

/// One operation of an entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Op {
    pub op: OpKind,
    pub pk: String,
    #[serde(default)]
    pub sk: String,
    /// The new data for a put, as JSON text; `None` means JSON `null`. Ignored for deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// An `if` condition (expr syntax) evaluated against the stored record at apply time.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub cond: Option<String>,
    /// A condition plugin that must also pass: in the log, pinned by the digest of its module;
    /// in a request, by name (the accepting node pins it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_plugin: Option<PluginRef>,
    /// A transform plugin whose output replaces a put's data (named like `if_plugin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<PluginRef>,
    /// Arguments handed to the op's plugins (any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    /// For `check`: the version (hex) the records of `pk` must still have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `put` and `delete`: return the record's data as it was before the op, in the
    /// outcome (Redis `GETSET`, `SET ... GET`, `GETDEL`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_old: bool,
    /// For `put`, `delete` and `delete_key`: return whether the record (for `delete_key`, any
    /// record of the pk) existed before the op, as `"1"` or `"0"` in the outcome — the counts
    /// Redis `DEL`, `HDEL` and `HSET` answer, decided in log order like the write itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_existed: bool,
    /// For `put`: the new record's deadline (unix ms); for `expire`: the deadline to set (none
    /// removes it). Always absolute: the accepting node turns a relative TTL into one, so every
    /// replica agrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// For `put`: keep the current record's deadline instead of setting `expires_at` (Redis
    /// `SET ... KEEPTTL`, `HSET` of a field).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_ttl: bool,
    /// For `expire`: when the deadline may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_if: Option<ExpireIf>,
    /// Format v2. For a `put` with `keep_ttl` and the read-modify-write ops: a record this op
    /// creates takes its key's deadline (that of the pk's first other live record, in sk
    /// order), as Redis keeps a key's TTL when `HSET` adds a field. Ignored in v1 entries, as a
    /// v1 node ignores it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_ttl: bool,
    /// Format v3. For `expire` and a `put` with `expires_at`: the deadline set is the record's
    /// own (a Redis hash field's `HEXPIRE`, `HSETEX ... EX`), which records `key_ttl` ops create
    /// never take. For a `put` with `keep_ttl` and `key_ttl`: keep an own deadline (`HSETEX
    /// ... KEEPTTL`) instead of dropping it for the key's (`HSET`). Ignored in v1 and v2 entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_ttl: bool,
    /// Format v4. For a `put` with `if`: a false condition skips the op (it writes nothing and
    /// the rest of the entry goes on) instead of rejecting the entry; the op returns `"1"` when
    /// it wrote and `"0"` when skipped (Redis `SET ... NX` and `SETNX` inside `MULTI`). Not with
    /// `return_old` or `return_existed`. Ignored in older entries, as their nodes ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_skips: bool,
    /// Format v8. For an `if_skips` put: it and the next `skips_with` ops (each an `if_skips`
    /// put) write together or not at all. Their `if`s are all evaluated, against the records as
    /// they are when the first is reached, before any of them writes: when every one holds,
    /// each writes in order (its `if` not evaluated again) and returns `"1"`; otherwise none
    /// writes and each returns `"0"` (Redis `MSETNX` and `HSETEX ... FNX|FXX` inside `MULTI`,
    /// where the rest of the transaction goes on). Ignored in older entries, as their nodes
    /// ignore it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skips_with: u32,
    /// Format v9. For the read-modify-write ops and `json`: a value this op's computation
    /// cannot use (`incr` of text, a result past its bounds, a JSON path that does not fit the
    /// document) skips this op alone — it writes nothing and returns the error (`Returned`'s
    /// `error`) — instead of rejecting the entry, and the rest of the entry goes on (a Redis
    /// `INCR` inside `MULTI` that fails while the transaction's other commands run). Running
    /// out of the entry's read budget still rejects the entry. Ignored on other ops, and in
    /// older entries, as their nodes ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fails_alone: bool,
    /// Format v5. For `expire`: the op is about the record's own deadline alone (a Redis hash
    /// field's TTL, `HEXPIRE`, `HPERSIST`, `HGETEX`), as Redis keeps a field's TTL apart from
    /// its key's: a deadline the record has from its key counts as none for `expire_if`, and
    /// removing one (`expires_at` none) leaves such a deadline where it is, while removing the
    /// record's own gives it its key's. Ignored in older entries, as their nodes ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub field_ttl: bool,
    /// Format v6. For `json`: what it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_cmd: Option<JsonCmd>,
    /// Format v6. For `json`: where in the document, in RedisJSON's path syntax (from v7 its
    /// filters may call functions and test patterns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Not in the log: set when the op was read from an entry older than v7, whose `path` is
    /// applied as a node of that format applies it (a filter function or pattern there is a
    /// path it cannot parse).
    #[serde(skip)]
    pub path_before_v7: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Op {
    /// Whether this is a `json` op whose path's filters call a function or test a pattern
    /// (log format v7).
    pub fn path_uses_functions(&self) -> bool {
        self.op == OpKind::Json
            && self
                .path
                .as_deref()
                .and_then(|path| super::JsonPath::parse(path).ok())
                .is_some_and(|path| path.uses_functions())
    }
}

/// A plugin an op names: by digest in the log (what every replica runs), by name in a request
/// until the accepting node pins it. In entries it is the digest's 64 hex digits; anything else
/// there is a name, which apply rejects (`plugin_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    Digest(Digest),
    Name(String),
}

impl std::fmt::Display for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginRef::Digest(d) => write!(f, "{d}"),
            PluginRef::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for PluginRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.parse::<Digest>() {
            Ok(digest) => PluginRef::Digest(digest),
            Err(_) => PluginRef::Name(text),
        })
    }
}

/// The version of a pk's records that a `check` op compares: SHA-256 over each record's
/// (encoded key length, encoded key, stored value length, stored value) in key order, as hex.
/// Any write to any of them (even of the same data, which moves `_updated_at` or not) that
/// changes a stored byte changes it; a pk without records has the hash of nothing.
pub fn pk_version<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in records {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    Digest::from(hasher).to_string()
}

/// One atomic unit of the log: every op is in one partition and they apply together or not at all.
/// An entry without ops is a *tick*: it writes nothing itself, but like every entry it removes
/// the partition's records whose deadline its `ts_ms` has reached (see `docs/log-entry-v1.md`).
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub v: u32,
    /// Set once, by the node that accepted the write; every replica uses it as the write time.
    pub ts_ms: i64,
    pub ops: Vec<Op>,
}

/// Why bytes from the log are not an entry this build can apply. Every replica reaches the same
/// verdict for the same bytes, so these become the entry's (deterministic) rejection.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("entry is not valid JSON for a log entry: {0}")]
    Malformed(String),
    #[error("entry version {0} is not supported by this node (it applies version {ENTRY_VERSION})")]
    UnsupportedVersion(u64),
    /// A format newer than this build's. Not a verdict on the entry: a newer node may apply it,
    /// so rejecting it here would make replicas of different versions disagree. The partition
    /// stops before it instead (see `docs/log-entry-v1.md`, "Versions and upgrades").
    #[error(
        "entry is log format v{0}, newer than this node's (it applies formats up to v{ENTRY_VERSION}): \
         run a FireScroll release that applies v{0} on this node"
    )]
    Newer(u64),
    #[error("op {op}: `{field}` nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep { op: usize, field: &'static str },
}

/// Everything any supported format may carry, parsed in one pass; `decode` then picks the format.
#[derive(Deserialize)]
struct AnyFormat {
    v: Option<u64>,
    ts_ms: Option<i64>,
    ops: Option<Vec<Op>>,
    // FireScroll's legacy single-mutation fields.
    mutation: Option<OpKind>,
    pk: Option<String>,
    sk: Option<String>,
    data: Option<Box<RawValue>>,
    #[serde(rename = "if")]
    cond: Option<String>,
}

/// Only the version of an entry of any format (the rest skipped unread).
#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u64>,
}

impl LogEntry {
    /// An entry stamped with `ts_ms`, in the oldest format that holds its ops: v9 when an op
    /// fails alone (`fails_alone`), v8 when puts skip together (`skips_with`), v7 when a `json`
    /// op's path has a filter function or pattern, v6 when an op is a `json` edit, v5 when one uses `field_ttl`, v4 when one is an `incr_long_double` or a `deadline` or uses
    /// `if_skips`, v3 when one sets or keeps a record's own deadline (`own_ttl`), v2 when one
    /// asks for its key's (`key_ttl`), else v1, which every release applies.
    pub fn new(ts_ms: i64, ops: Vec<Op>) -> Self {
        let v = if ops.iter().any(|op| op.fails_alone) {
            9
        } else if ops.iter().any(|op| op.skips_with > 0) {
            8
        } else if ops.iter().any(Op::path_uses_functions) {
            7
        } else if ops.iter().any(|op| op.op == OpKind::Json) {
            6
        } else if ops.iter().any(|op| op.field_ttl) {
            5
        } else if ops
            .iter()
            .any(|op| matches!(op.op, OpKind::IncrLongDouble | OpKind::Deadline) || op.if_skips)
        {
            4
        } else if ops.iter().any(|op| op.own_ttl) {
            3
        } else if ops.iter().any(|op| op.key_ttl) {
            2
        } else {
            1
        };
        LogEntry { v, ts_ms, ops }
    }

    /// A tick: an entry without ops, stamped `ts_ms`, that only moves the partition's log time
    /// (and so removes records whose deadline it reached).
    pub fn tick(ts_ms: i64) -> Self {
        LogEntry::new(ts_ms, Vec::new())
    }

    /// The entry's bytes as they go into the log.
    pub fn encode(&self) -> Vec<u8> {
        // Sized for the whole entry up front: growing from empty reallocated a 4-op entry's
        // buffer six times, a sixth of its encoding.
        let texts: usize = self
            .ops
            .iter()
            .map(|op| {
                op.pk.len()
                    + op.sk.len()
                    + op.data.as_ref().map_or(0, |d| d.get().len())
                    + op.cond.as_ref().map_or(0, String::len)
                    + op.args.as_ref().map_or(0, |a| a.get().len())
            })
            .sum();
        let mut bytes = Vec::with_capacity(48 + texts + 64 * self.ops.len());
        serde_json::to_writer(&mut bytes, self).expect("entries always serialize");
        bytes
    }

    /// Decodes v1 entries and FireScroll's legacy single-mutation messages. Data or arguments
    /// nested deeper than [`MAX_JSON_DEPTH`] make the entry malformed (no write accepts them).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let entry = Self::decode_any(bytes)?;
        for (op, o) in entry.ops.iter().enumerate() {
            for (field, json) in [("data", &o.data), ("args", &o.args)] {
                if let Some(json) = json
                    && json_nests_deeper_than(json.get().as_bytes(), MAX_JSON_DEPTH)
                {
                    return Err(DecodeError::TooDeep { op, field });
                }
            }
        }
        Ok(entry)
    }

    fn decode_any(bytes: &[u8]) -> Result<Self, DecodeError> {
        let any: AnyFormat = from_json_bytes(bytes).map_err(|e| {
            // A newer format may not parse as this one (an op kind added since, say): what its
            // version says decides, read on this failure path only.
            // (An object only: serde would also take `[2]` as a struct's fields in order.)
            let object = bytes.trim_ascii_start().starts_with(b"{");
            match from_json_bytes::<VersionOnly>(bytes) {
                Ok(VersionOnly { v: Some(v) }) if object && v > u64::from(ENTRY_VERSION) => {
                    DecodeError::Newer(v)
                }
                _ => DecodeError::Malformed(e.to_string()),
            }
        })?;
        match (any.v, any.mutation) {
            (Some(v), _) if v > u64::from(ENTRY_VERSION) => Err(DecodeError::Newer(v)),
            (Some(0), _) => Err(DecodeError::UnsupportedVersion(0)),
            (Some(v), _) => {
                let mut ops = any
                    .ops
                    .ok_or_else(|| DecodeError::Malformed("missing `ops`".into()))?;
                let ts_ms = any
                    .ts_ms
                    .ok_or_else(|| DecodeError::Malformed("missing `ts_ms`".into()))?;
                // Fields of newer formats: a node of the entry's format ignores them, so this
                // one must too.
                if v < 2 {
                    ops.iter_mut().for_each(|op| op.key_ttl = false);
                }
                if v < 3 {
                    ops.iter_mut().for_each(|op| op.own_ttl = false);
                }
                if v < 4 {
                    ops.iter_mut().for_each(|op| op.if_skips = false);
                }
                if v < 5 {
                    ops.iter_mut().for_each(|op| op.field_ttl = false);
                }
                if v < 6 {
                    ops.iter_mut().for_each(|op| {
                        op.json_cmd = None;
                        op.path = None;
                    });
                }
                if v < 7 {
                    ops.iter_mut().for_each(|op| op.path_before_v7 = true);
                }
                if v < 8 {
                    ops.iter_mut().for_each(|op| op.skips_with = 0);
                }
                if v < 9 {
                    ops.iter_mut().for_each(|op| op.fails_alone = false);
                }
                // An op kind of a newer format: a node of the entry's format does not know it.
                if v < 4
                    && let Some(op) = ops
                        .iter()
                        .find(|op| matches!(op.op, OpKind::IncrLongDouble | OpKind::Deadline))
                {
                    return Err(DecodeError::Malformed(format!(
                        "`{}` ops are log format v4, in a v{v} entry",
                        op.op.name()
                    )));
                }
                if v < 6 && ops.iter().any(|op| op.op == OpKind::Json) {
                    return Err(DecodeError::Malformed(format!(
                        "`json` ops are log format v6, in a v{v} entry"
                    )));
                }
                Ok(LogEntry {
                    v: v as u32,
                    ts_ms,
                    ops,
                })
            }
            (None, Some(kind @ (OpKind::IncrLongDouble | OpKind::Deadline))) => {
                Err(DecodeError::Malformed(format!(
                    "`{}` is log format v4, not a FireScroll mutation",
                    kind.name()
                )))
            }
            (None, Some(OpKind::Json)) => Err(DecodeError::Malformed(
                "`json` is log format v6, not a FireScroll mutation".into(),
            )),
            (None, Some(kind)) => {
                let pk = any
                    .pk
                    .ok_or_else(|| DecodeError::Malformed("legacy mutation without `pk`".into()))?;
                let ts_ms = any.ts_ms.ok_or_else(|| {
                    DecodeError::Malformed("legacy mutation without `ts_ms`".into())
                })?;
                let op = Op {
                    op: kind,
                    pk,
                    sk: any.sk.unwrap_or_default(),
                    data: if kind == OpKind::Put { any.data } else { None },
                    cond: any.cond,
                    ..Op::default()
                };
                Ok(LogEntry::new(ts_ms, vec![op]))
            }
            (None, None) => Err(DecodeError::Malformed(
                "neither a v1 entry (`v`) nor a FireScroll mutation (`mutation`)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_round_trips_with_data_bytes_verbatim() {
        let bytes = br#"{"v":1,"ts_ms":5,"ops":[{"op":"put","pk":"a","sk":"b","data":{"z":1,"a":[1.50,"x"]},"if":"data == null"},{"op":"delete","pk":"a","sk":"c"}]}"#;
        let entry = LogEntry::decode(bytes).unwrap();
        assert_eq!(entry.ts_ms, 5);
        assert_eq!(entry.ops.len(), 2);
        assert_eq!(
            entry.ops[0].data.as_ref().unwrap().get(),
            r#"{"z":1,"a":[1.50,"x"]}"#
        );
        assert_eq!(entry.ops[0].cond.as_deref(), Some("data == null"));
        assert_eq!(entry.ops[1].op, OpKind::Delete);
        assert_eq!(
            LogEntry::decode(&entry.encode()).unwrap().encode(),
            entry.encode()
        );
    }

    #[test]
    fn legacy_firescroll_mutation_is_one_op() {
        let bytes = br#"{"pk":"pk1","sk":"sk1","data":{"hey":"ho"},"ts_ms":1683468191123,"mutation":"put","if":null}"#;
        let entry = LogEntry::decode(bytes).unwrap();
        assert_eq!(entry.ts_ms, 1683468191123);
        assert_eq!(entry.ops.len(), 1);
        assert_eq!(entry.ops[0].op, OpKind::Put);
        assert_eq!(entry.ops[0].data.as_ref().unwrap().get(), r#"{"hey":"ho"}"#);
        assert!(entry.ops[0].cond.is_none());

        let del = br#"{"pk":"pk1","sk":"sk1","data":null,"ts_ms":1,"mutation":"delete","if":"_updated_at > 1"}"#;
        let entry = LogEntry::decode(del).unwrap();
        assert_eq!(entry.ops[0].op, OpKind::Delete);
        assert_eq!(entry.ops[0].cond.as_deref(), Some("_updated_at > 1"));
    }

    #[test]
    fn bad_entries_say_why() {
        assert!(matches!(
            LogEntry::decode(b"nope"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            LogEntry::decode(br#"{"v":0,"ts_ms":1,"ops":[]}"#),
            Err(DecodeError::UnsupportedVersion(0))
        ));
        // No ops is a tick, not an error.
        assert!(
            LogEntry::decode(br#"{"v":1,"ts_ms":1,"ops":[]}"#)
                .unwrap()
                .ops
                .is_empty()
        );
        assert!(matches!(
            LogEntry::decode(br#"{"x":1}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            LogEntry::decode(br#"{"v":1,"ts_ms":1,"ops":[{"op":"upsert","pk":"a"}]}"#),
            Err(DecodeError::Malformed(_))
        ));
        // Nothing within v1 nests deeper, whatever the data.
        let deep = format!(
            r#"{{"v":1,"ts_ms":1,"ops":[{{"op":"put","pk":"a","data":{}1{}}}]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(
            LogEntry::decode(deep.as_bytes()),
            Err(DecodeError::TooDeep {
                op: 0,
                field: "data"
            })
        ));
    }

    #[test]
    fn an_entry_is_written_in_the_oldest_format_that_holds_it() {
        let plain = Op {
            pk: "a".into(),
            keep_ttl: true,
            ..Op::default()
        };
        let v1 = LogEntry::new(5, vec![plain.clone()]);
        assert_eq!(v1.v, 1);
        assert!(v1.encode().starts_with(br#"{"v":1,"#));
        let keyed = Op {
            key_ttl: true,
            ..plain
        };
        let v2 = LogEntry::new(5, vec![Op::default(), keyed.clone()]);
        assert_eq!(v2.v, 2);
        let decoded = LogEntry::decode(&v2.encode()).unwrap();
        assert_eq!((decoded.v, decoded.ops[1].key_ttl), (2, true));
        // v1 has no `key_ttl`: a v1 node ignores it, and so does this one.
        let v1_with_it = br#"{"v":1,"ts_ms":1,"ops":[{"op":"put","pk":"a","key_ttl":true}]}"#;
        let decoded = LogEntry::decode(v1_with_it).unwrap();
        assert_eq!((decoded.v, decoded.ops[0].key_ttl), (1, false));
        let own = Op {
            own_ttl: true,
            ..keyed
        };
        let v3 = LogEntry::new(5, vec![Op::default(), own]);
        assert_eq!(v3.v, 3);
        let decoded = LogEntry::decode(&v3.encode()).unwrap();
        assert_eq!((decoded.v, decoded.ops[1].own_ttl), (3, true));
        // v2 has no `own_ttl`: ignored there, as a v2 node ignores it.
        let v2_with_it =
            br#"{"v":2,"ts_ms":1,"ops":[{"op":"put","pk":"a","key_ttl":true,"own_ttl":true}]}"#;
        let decoded = LogEntry::decode(v2_with_it).unwrap();
        assert_eq!(
            (decoded.v, decoded.ops[0].key_ttl, decoded.ops[0].own_ttl),
            (2, true, false)
        );
    }

    #[test]
    fn skipping_conditions_are_v4_and_ignored_in_older_entries() {
        let op = Op {
            pk: "a".into(),
            cond: Some("data == nil".into()),
            if_skips: true,
            ..Op::default()
        };
        let v4 = LogEntry::new(5, vec![op]);
        assert_eq!(v4.v, 4);
        let decoded = LogEntry::decode(&v4.encode()).unwrap();
        assert!(decoded.ops[0].if_skips);
        // A v3 node ignores the field (its `if` rejects the entry): so does this one.
        let v3_with_it =
            br#"{"v":3,"ts_ms":1,"ops":[{"op":"put","pk":"a","if":"false","if_skips":true}]}"#;
        assert!(!LogEntry::decode(v3_with_it).unwrap().ops[0].if_skips);
    }

    #[test]
    fn puts_that_skip_together_are_v8_and_ignored_in_older_entries() {
        let put = |pk: &str, skips_with| Op {
            pk: pk.into(),
            cond: Some("data == nil".into()),
            if_skips: true,
            skips_with,
            ..Op::default()
        };
        let v8 = LogEntry::new(5, vec![put("a", 1), put("b", 0)]);
        assert_eq!(v8.v, 8);
        let decoded = LogEntry::decode(&v8.encode()).unwrap();
        assert_eq!(
            (decoded.ops[0].skips_with, decoded.ops[1].skips_with),
            (1, 0)
        );
        // Not written when zero: entries without it are as before.
        assert!(
            !String::from_utf8(LogEntry::new(5, vec![put("a", 0)]).encode())
                .unwrap()
                .contains("skips_with")
        );
        let v7_with_it = br#"{"v":7,"ts_ms":1,"ops":[{"op":"put","pk":"a","if":"false","if_skips":true,"skips_with":1},{"op":"put","pk":"b","if":"true","if_skips":true}]}"#;
        assert_eq!(LogEntry::decode(v7_with_it).unwrap().ops[0].skips_with, 0);
    }

    #[test]
    fn ops_that_fail_alone_are_v9_and_ignored_in_older_entries() {
        let incr = Op {
            op: OpKind::Incr,
            pk: "a".into(),
            data: Some(RawValue::from_string("1".into()).unwrap()),
            fails_alone: true,
            ..Op::default()
        };
        let v9 = LogEntry::new(5, vec![Op::default(), incr]);
        assert_eq!(v9.v, 9);
        let decoded = LogEntry::decode(&v9.encode()).unwrap();
        assert!(!decoded.ops[0].fails_alone);
        assert!(decoded.ops[1].fails_alone);
        // Not written when false: entries without it are as before.
        assert!(
            !String::from_utf8(LogEntry::new(5, vec![Op::default()]).encode())
                .unwrap()
                .contains("fails_alone")
        );
        let v8_with_it =
            br#"{"v":8,"ts_ms":1,"ops":[{"op":"incr","pk":"a","data":1,"fails_alone":true}]}"#;
        assert!(!LogEntry::decode(v8_with_it).unwrap().ops[0].fails_alone);
    }

    #[test]
    fn field_deadlines_are_v5_and_ignored_in_older_entries() {
        let op = Op {
            op: OpKind::Expire,
            pk: "a".into(),
            sk: "f".into(),
            field_ttl: true,
            ..Op::default()
        };
        let v5 = LogEntry::new(5, vec![Op::default(), op]);
        assert_eq!(v5.v, 5);
        let decoded = LogEntry::decode(&v5.encode()).unwrap();
        assert!(decoded.ops[1].field_ttl);
        // A v4 node ignores the field (its `expire` sees the key's deadline): so does this one.
        let v4_with_it =
            br#"{"v":4,"ts_ms":1,"ops":[{"op":"expire","pk":"a","sk":"f","field_ttl":true}]}"#;
        assert!(!LogEntry::decode(v4_with_it).unwrap().ops[0].field_ttl);
    }

    #[test]
    fn json_edits_are_v6_and_malformed_in_older_entries() {
        let op = Op {
            op: OpKind::Json,
            pk: "a".into(),
            data: Some(RawValue::from_string("2".into()).unwrap()),
            json_cmd: Some(JsonCmd::NumIncrBy),
            path: Some("$.n".into()),
            ..Op::default()
        };
        let v6 = LogEntry::new(5, vec![Op::default(), op]);
        assert_eq!(v6.v, 6);
        let text = String::from_utf8(v6.encode()).unwrap();
        assert!(
            text.contains(
                r#""op":"json","pk":"a","sk":"","data":2,"json_cmd":"num_incr_by","path":"$.n""#
            ),
            "{text}"
        );
        let decoded = LogEntry::decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.ops[1].json_cmd, Some(JsonCmd::NumIncrBy));
        assert_eq!(decoded.ops[1].path.as_deref(), Some("$.n"));
        // An older node does not know the op, nor the fields (a put keeps them unread).
        let v5 = text.replacen(r#""v":6"#, r#""v":5"#, 1);
        let e = LogEntry::decode(v5.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("`json` ops are log format v6"), "{e}");
        let put_v5 =
            br#"{"v":5,"ts_ms":1,"ops":[{"op":"put","pk":"a","json_cmd":"del","path":"$"}]}"#;
        let decoded = LogEntry::decode(put_v5).unwrap();
        assert_eq!(
            (decoded.ops[0].json_cmd, decoded.ops[0].path.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn json_paths_with_filter_functions_are_v7_and_read_as_older_nodes_read_them_before() {
        let op = |path: &str| Op {
            op: OpKind::Json,
            pk: "a".into(),
            json_cmd: Some(JsonCmd::Del),
            path: Some(path.into()),
            ..Op::default()
        };
        for (path, v) in [
            ("$.hosts[?@ == 'x']", 6),
            ("$.hosts[?@ =~ 'x']", 7),
            ("$.hosts[?length(@) > 2]", 7),
            ("$[?@.a[?match(@, 'x')]]", 7),
            // A put's path is not read (and a path that does not parse has no functions).
            ("$[?length(", 6),
        ] {
            assert_eq!(LogEntry::new(1, vec![op(path)]).v, v, "{path}");
        }
        let v7 = LogEntry::new(1, vec![op("$.hosts[?@ =~ 'x']")]);
        let decoded = LogEntry::decode(&v7.encode()).unwrap();
        assert!(!decoded.ops[0].path_before_v7);
        // In an older entry the same path is applied as its nodes apply it.
        let v6 = String::from_utf8(v7.encode())
            .unwrap()
            .replacen(r#""v":7"#, r#""v":6"#, 1);
        assert!(LogEntry::decode(v6.as_bytes()).unwrap().ops[0].path_before_v7);
    }

    #[test]
    fn long_double_increments_are_v4_and_malformed_in_older_entries() {
        let op = Op {
            op: OpKind::IncrLongDouble,
            pk: "a".into(),
            data: Some(RawValue::from_string(r#""0.1""#.into()).unwrap()),
            own_ttl: true,
            ..Op::default()
        };
        let v4 = LogEntry::new(5, vec![Op::default(), op]);
        assert_eq!(v4.v, 4);
        let bytes = v4.encode();
        assert!(
            String::from_utf8_lossy(&bytes).contains(r#""op":"incr_long_double""#),
            "the op's name in the log"
        );
        let decoded = LogEntry::decode(&bytes).unwrap();
        assert_eq!(decoded.ops[1].op, OpKind::IncrLongDouble);
        let deadline = Op {
            op: OpKind::Deadline,
            pk: "a".into(),
            ..Op::default()
        };
        assert_eq!(LogEntry::new(5, vec![deadline]).v, 4);
        // A v3 node does not know the op kind: to it such an entry is malformed, and so it
        // must be here (the same verdict on every replica), as is a legacy mutation of it.
        for older in [
            &br#"{"v":3,"ts_ms":1,"ops":[{"op":"incr_long_double","pk":"a","data":"1"}]}"#[..],
            br#"{"v":1,"ts_ms":1,"ops":[{"op":"incr_long_double","pk":"a","data":"1"}]}"#,
            br#"{"mutation":"incr_long_double","pk":"a","ts_ms":1}"#,
            br#"{"v":3,"ts_ms":1,"ops":[{"op":"deadline","pk":"a"}]}"#,
            br#"{"mutation":"deadline","pk":"a","ts_ms":1}"#,
        ] {
            let text = String::from_utf8_lossy(older);
            assert!(
                matches!(LogEntry::decode(older), Err(DecodeError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn newer_formats_are_told_apart_from_malformed_entries() {
        // A newer entry that would parse as v1, and ones that would not (an op kind, a field
        // type or a shape v1 does not have): all are "newer", never a verdict on the entry.
        let newer = ENTRY_VERSION + 1;
        for text in [
            format!(r#"{{"v":{newer},"ts_ms":1,"ops":[]}}"#),
            format!(r#"{{"v":{newer},"ts_ms":1,"ops":[{{"op":"rename","pk":"a","to":"b"}}]}}"#),
            format!(r#"{{"ops":{{"put":[]}},"v":{newer}}}"#),
            r#"{"v":18446744073709551615}"#.to_owned(),
        ] {
            match LogEntry::decode(text.as_bytes()) {
                Err(DecodeError::Newer(v)) => {
                    assert!(v >= u64::from(newer), "{text}");
                    let message = DecodeError::Newer(v).to_string();
                    assert!(message.contains(&format!("v{v}")), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // Not JSON, a version that is not a number, or not an object: malformed, whatever else.
        for bytes in [
            &br#"{"v":2,"ts_ms":1,"ops":["#[..],
            br#"{"v":"2","ts_ms":1,"ops":[]}"#,
            br#"[2]"#,
            br#"{"v":-1,"ts_ms":1,"ops":[]}"#,
        ] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                matches!(LogEntry::decode(bytes), Err(DecodeError::Malformed(_))),
                "{text}"
            );
        }
    }
}
