//! Read transform: projection and redaction. With `args` `{"fields":["a","b"]}` only those
//! top-level fields are returned; with `{"redact":["token"]}` those fields are removed at any
//! depth. With no args, fields whose name starts with `secret` are removed, so a read-only client
//! can be given records without credentials in them.
//!
//! `{"Records":[{"pk":"svc","sk":"config"}],"transform":"redact","args":{"redact":["password"]}}`
#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use firescroll_plugin_sdk::serde_json::Value;
use firescroll_plugin_sdk::{Input, Reject, transform};

fn names(v: &Value) -> Option<Vec<String>> {
    Some(
        v.as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
    )
}

fn remove(value: &mut Value, drop: &dyn Fn(&str) -> bool) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !drop(k));
            map.values_mut().for_each(|v| remove(v, drop));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remove(v, drop)),
        _ => {}
    }
}

fn redact(input: Input) -> Result<Value, Reject> {
    let mut data = input.data;
    if let Some(keep) = names(&input.args["fields"]) {
        if let Value::Object(map) = &mut data {
            map.retain(|k, _| keep.iter().any(|f| f == k));
        }
        return Ok(data);
    }
    match names(&input.args["redact"]) {
        Some(fields) => remove(&mut data, &|k| fields.iter().any(|f| f == k)),
        None => remove(&mut data, &|k| k.starts_with("secret")),
    }
    Ok(data)
}

transform!(redact);

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use firescroll_plugin_sdk::serde_json::{self, json};

    fn run(data: Value, args: Value) -> Value {
        let input = json!({"op":"read","pk":"p","sk":"s","data":data,"current":null,"args":args});
        redact(serde_json::from_value(input).unwrap()).unwrap()
    }

    #[test]
    fn projects_redacts_and_defaults_to_secrets() {
        let data = json!({"a": 1, "password": "x", "nested": [{"password": 2, "b": 3}], "secret_key": "k"});
        assert_eq!(
            run(data.clone(), json!({"fields": ["a", "nope"]})),
            json!({"a": 1})
        );
        assert_eq!(
            run(data.clone(), json!({"redact": ["password"]})),
            json!({"a": 1, "nested": [{"b": 3}], "secret_key": "k"})
        );
        assert_eq!(
            run(data, json!(null)),
            json!({"a": 1, "password": "x", "nested": [{"password": 2, "b": 3}]})
        );
        assert_eq!(run(json!("scalar"), json!(null)), json!("scalar"));
    }
}
