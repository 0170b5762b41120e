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

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use firescroll_plugin_sdk::serde_json::{self, json};

    /// The examples of RFC 7396, appendix A: (target, patch, result).
    #[test]
    fn rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, result) in cases {
            let mut merged = target.clone();
            merge(&mut merged, patch.clone());
            assert_eq!(merged, result, "{target} + {patch}");
        }
    }

    #[test]
    fn a_first_patch_applies_to_nothing() {
        let input: Input =
            serde_json::from_str(r#"{"op":"put","pk":"a","sk":"","data":{"x":{"y":1},"z":null},"current":null,"args":null}"#)
                .unwrap();
        assert_eq!(patch(input).unwrap(), json!({"x":{"y":1}}));
    }
}
