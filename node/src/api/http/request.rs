//! Request bodies. Field names match case-insensitively, as Go's `encoding/json` did for
//! FireScroll (`Records`, `records`, `pk`, `Pk` all work), and the last of duplicate fields wins,
//! also as in Go. Unlike Go, an unknown field is an error that lists the known ones: Go ignored
//! it, so a misspelled condition (`"iff"`) or deadline wrote unconditionally, or forever. Still
//! accepted and ignored: what the API's own answers hold (records read, positions written, a
//! list's cursor), so an answer can be sent back as it came, and what Go's request type carried
//! and its server overwrote (a record's `ts_ms` and `mutation`).

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// An object key, borrowed from the body when it has no escapes.
struct FieldName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Declares a request struct whose JSON fields match case-insensitively.
macro_rules! case_insensitive {
    ($(#[$meta:meta])* pub struct $name:ident { $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $json:literal ),* $(,)? } $(ignoring [$($ignored:literal),*])?) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($name), ")"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        const FIELDS: &[&str] = &[$($json),*];
                        let mut out = $name::default();
                        while let Some(FieldName(key)) = map.next_key()? {
                            $(
                                if key.eq_ignore_ascii_case($json) {
                                    out.$field = map.next_value()?;
                                    continue;
                                }
                            )*
                            $($(
                                if key.eq_ignore_ascii_case($ignored) {
                                    map.next_value::<IgnoredAny>()?;
                                    continue;
                                }
                            )*)?
                            // Named in the answer: at most its first 64 characters (a
                            // body may hold a name of megabytes).
                            let shown: String = key.chars().take(64).collect();
                            return Err(de::Error::unknown_field(&shown, FIELDS));
                        }
                        Ok(out)
                    }
                }
                deserializer.deserialize_map(V)
            }
        }
    };
}

case_insensitive! {
    /// A log position, as writes return them and `min_offsets` takes them back.
    pub struct PositionBody {
        pub partition: Option<i64> = "partition",
        pub offset: Option<i64> = "offset",
    }
    // A write's answer: its positions go back as `min_offsets` as they came.
    ignoring ["outcome"]
}

case_insensitive! {
    /// A record's address in a get.
    pub struct KeyBody {
        pub pk: String = "pk",
        pub sk: String = "sk",
    }
    // A read's answer: its records go back as keys as they came.
    ignoring ["data", "createdat", "updatedat", "expiresat", "ownttl"]
}

case_insensitive! {
    /// `POST /records/get`.
    pub struct GetBody {
        pub records: Option<Vec<KeyBody>> = "records",
        pub min_offsets: Option<Vec<PositionBody>> = "min_offsets",
        pub transform: Option<String> = "transform",
        pub args: Option<Box<RawValue>> = "args",
        /// A RedisJSON path: each record's `Data` is what it selects from the stored document.
        pub path: Option<String> = "path",
    }
}

case_insensitive! {
    /// One record of a put, delete or batch.
    pub struct RecordBody {
        /// Only in batches: `put`, `delete` or `json`.
        pub op: Option<String> = "op",
        /// `json` ops: what the edit does (`set`, `num_incr_by`, ...).
        pub json_cmd: Option<String> = "json_cmd",
        /// `json` ops: where in the document (a RedisJSON path).
        pub path: Option<String> = "path",
        pub pk: String = "pk",
        pub sk: String = "sk",
        pub data: Option<Box<RawValue>> = "data",
        pub cond: Option<String> = "if",
        /// Puts with an `if`: when it is false, skip this put alone (the rest of a batch still
        /// applies) instead of rejecting the entry; the outcome's `Returned` says which wrote.
        pub if_skips: Option<bool> = "if_skips",
        /// `json` ops: when the edit cannot run on the document (a path it does not have, a
        /// value of another type), it alone writes nothing (the rest of a batch still applies)
        /// instead of rejecting the entry; the outcome's `Returned` gives its `Error`.
        pub fails_alone: Option<bool> = "fails_alone",
        pub if_plugin: Option<String> = "if_plugin",
        pub transform: Option<String> = "transform",
        pub args: Option<Box<RawValue>> = "args",
        /// Puts: the record expires this many ms after the accepting node received it.
        pub ttl_ms: Option<Box<RawValue>> = "ttl_ms",
        /// Puts: the record expires at this time (unix ms, or an RFC 3339 string).
        pub expires_at: Option<Box<RawValue>> = "expires_at",
        /// Puts: keep the record's current deadline (otherwise a put without one drops it).
        pub keep_ttl: Option<bool> = "keep_ttl",
        /// Puts with a deadline: it is the record's own, not its pk's (a Redis hash field's
        /// `HEXPIRE`): fields Redis `HSET` adds to the pk later do not take it.
        pub own_ttl: Option<bool> = "own_ttl",
    }
    // Go's `RecordMutation` carried the first two, which its server overwrote; a read's answer
    // the rest, so a record read can be written back as it came.
    ignoring ["ts_ms", "mutation", "createdat", "updatedat", "expiresat", "ownttl"]
}

case_insensitive! {
    /// `POST /records/{put,delete,batch}`.
    pub struct MutateBody {
        pub records: Option<Vec<RecordBody>> = "records",
        pub wait: Option<bool> = "wait",
    }
    // A list's answer, written back as it came.
    ignoring ["nextcursor"]
}

case_insensitive! {
    /// `POST /records/list`.
    pub struct ListBody {
        pub pk: String = "pk",
        pub sk_prefix: String = "sk_prefix",
        pub limit: Option<i64> = "limit",
        pub cond: Option<String> = "if",
        pub if_stop: Option<bool> = "if_stop",
        pub cursor: Option<String> = "cursor",
        pub min_offsets: Option<Vec<PositionBody>> = "min_offsets",
        pub transform: Option<String> = "transform",
        pub args: Option<Box<RawValue>> = "args",
    }
}

case_insensitive! {
    /// `POST /records/scan`.
    pub struct ScanBody {
        pub cursor: Option<String> = "cursor",
        pub limit: Option<i64> = "limit",
        pub min_offsets: Option<Vec<PositionBody>> = "min_offsets",
        pub pk_prefix: Option<String> = "pk_prefix",
    }
}

case_insensitive! {
    /// `POST /records/outcomes`.
    pub struct OutcomesBody {
        pub positions: Option<Vec<PositionBody>> = "positions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_in_any_case() {
        let body: MutateBody = serde_json::from_str(
            r#"{"RECORDS":[{"Pk":"a","sK":"b","DATA":{"x":[1, 2]},"If":"data == null"}],"Wait":true}"#,
        )
        .unwrap();
        let records = body.records.unwrap();
        assert_eq!(records[0].pk, "a");
        assert_eq!(records[0].sk, "b");
        assert_eq!(records[0].data.as_ref().unwrap().get(), "{\"x\":[1, 2]}");
        assert_eq!(records[0].cond.as_deref(), Some("data == null"));
        assert_eq!(body.wait, Some(true));
    }

    #[test]
    fn an_unknown_field_is_an_error_that_lists_the_known_ones() {
        // A misspelled condition must not write unconditionally.
        let e = serde_json::from_str::<MutateBody>(
            r#"{"records":[{"pk":"a","sk":"b","data":1,"iff":"false"}]}"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("unknown field `iff`, expected one of"),
            "{text}"
        );
        assert!(text.contains("`if`") && text.contains("`ttl_ms`"), "{text}");
        // A huge name is not echoed whole.
        let huge = format!(r#"{{"records":[],"{}":1}}"#, "x".repeat(100_000));
        let e = serde_json::from_str::<MutateBody>(&huge)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1_000, "{} bytes", e.len());
        // At every level, on reads too.
        assert!(serde_json::from_str::<MutateBody>(r#"{"records":[],"if":"false"}"#).is_err());
        assert!(serde_json::from_str::<ListBody>(r#"{"pk":"a","limt":5}"#).is_err());
        assert!(
            serde_json::from_str::<GetBody>(r#"{"Records":[{"pk":"a","sk":"b","x":1}]}"#).is_err()
        );
        // Go's RecordMutation fields, which its server overwrote, are still taken and ignored.
        let go: MutateBody = serde_json::from_str(
            r#"{"Records":[{"pk":"a","sk":"b","data":1,"ts_ms":5,"mutation":"put","if":null}]}"#,
        )
        .unwrap();
        assert_eq!(go.records.unwrap()[0].pk, "a");
        // What answers hold goes back as it came: positions as `min_offsets`, records as keys
        // and as records to write.
        let echoed: GetBody = serde_json::from_str(
            r#"{"Records":[{"Pk":"a","Sk":"b","Data":1,"CreatedAt":"x","UpdatedAt":"y","ExpiresAt":"z","OwnTtl":true}],
                "min_offsets":[{"Partition":1,"Offset":2,"Outcome":{"Status":"applied"}}]}"#,
        )
        .unwrap();
        assert_eq!(echoed.min_offsets.unwrap()[0].offset, Some(2));
        let written: MutateBody = serde_json::from_str(
            r#"{"Records":[{"Pk":"a","Sk":"b","Data":1,"CreatedAt":"x","UpdatedAt":"y"}],"NextCursor":"c"}"#,
        )
        .unwrap();
        assert_eq!(written.records.unwrap()[0].sk, "b");
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(serde_json::from_str::<GetBody>(r#"{"Records":[{"pk":5}]}"#).is_err());
        assert!(serde_json::from_str::<GetBody>(r#"{"Records":{}}"#).is_err());
        assert!(serde_json::from_str::<GetBody>(r#"[]"#).is_err());
        let escaped: KeyBody = serde_json::from_str(r#"{"p\u006b":"x"}"#).unwrap();
        assert_eq!(escaped.pk, "x");
    }
}
