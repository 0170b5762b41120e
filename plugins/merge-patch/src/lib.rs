//! Transform: JSON Merge Patch (RFC 7396). A put's `data` is a patch applied to the stored
//! data, so clients update a field without reading the record first — and concurrent patches
//! to different fields both land, because each applies to the state its entry sees in the log.
//!
//! `{"pk":"flags","sk":"checkout","data":{"rollout":{"percent":25},"old_field":null},"transform":"merge-patch"}`
#![no_std]
extern crate alloc;

use firescroll_plugin_sdk::serde_json::Value;
use firescroll_plugin_sdk::{Input, Reject, transform};

/// RFC 7396: objects merge key by key, `null` removes a key, anything else replaces.
fn merge(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            merge(target.entry(key).or_insert(Value::Null), value);
        }
    }
}

fn patch(input: Input) -> Result<Value, Reject> {
    let mut data = input.current.map(|c| c.data).unwrap_or(Value::Null);
    merge(&mut data, input.data);
    Ok(data)
}

transform!(patch);
