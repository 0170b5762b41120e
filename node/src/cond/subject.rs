//! What a condition sees: the record an op addresses, as it is stored.

use super::json_value::parse_json_value;
use crate::model::StoredRecord;
use expr::{Context, ContextProvider, Value};

static NIL: Value = Value::Nil;

/// The variables of one evaluation. Names other than the six below resolve to nil, like Go
/// expr's `AllowUndefinedVariables`, which also makes `null` a synonym of `nil`.
pub struct Subject {
    pk: Value,
    sk: Value,
    data: Value,
    created_at: Value,
    updated_at: Value,
    expires_at: Value,
}

impl Subject {
    /// The subject for an op on (pk, sk) and its stored record, or `None` when there is no
    /// record: then `data`, `_created_at`, `_updated_at` and `_expires_at` are all nil
    /// (`_expires_at` is nil too for a record without a deadline).
    pub fn new(pk: &str, sk: &str, stored: Option<StoredRecord<'_>>) -> Result<Self, String> {
        let (data, created_at, updated_at, expires_at) = match stored {
            None => (Value::Nil, Value::Nil, Value::Nil, Value::Nil),
            Some(stored) => (
                parse_json_value(stored.data_json)
                    .map_err(|e| format!("stored data is not JSON: {e}"))?,
                Value::Integer(stored.created_at_ms),
                Value::Integer(stored.updated_at_ms),
                stored.expires_at_ms.map_or(Value::Nil, Value::Integer),
            ),
        };
        Ok(Subject {
            pk: Value::String(pk.to_string()),
            sk: Value::String(sk.to_string()),
            data,
            created_at,
            updated_at,
            expires_at,
        })
    }

    /// A stand-in record used to check a condition's result type when it arrives.
    pub(super) fn probe(data: Value) -> Self {
        let ts = if data == Value::Nil {
            Value::Nil
        } else {
            Value::Integer(0)
        };
        Subject {
            pk: Value::String(String::new()),
            sk: Value::String(String::new()),
            data,
            created_at: ts.clone(),
            updated_at: ts.clone(),
            expires_at: ts,
        }
    }
}

impl ContextProvider for Subject {
    fn get(&self, key: &str) -> Option<&Value> {
        Some(match key {
            "pk" => &self.pk,
            "sk" => &self.sk,
            "data" => &self.data,
            "_created_at" => &self.created_at,
            "_updated_at" => &self.updated_at,
            "_expires_at" => &self.expires_at,
            _ => &NIL,
        })
    }

    fn to_context(&self) -> Context {
        let mut ctx = Context::default();
        ctx.insert("pk", self.pk.clone());
        ctx.insert("sk", self.sk.clone());
        ctx.insert("data", self.data.clone());
        ctx.insert("_created_at", self.created_at.clone());
        ctx.insert("_updated_at", self.updated_at.clone());
        ctx.insert("_expires_at", self.expires_at.clone());
        ctx
    }
}
