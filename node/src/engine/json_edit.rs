//! `json` ops: a JSON document edited at a path (RedisJSON's `JSON.SET doc $.a.b 5`,
//! `JSON.NUMINCRBY`, `JSON.ARRAPPEND`, ...), computed at apply from the stored document so every
//! replica makes the same document and the same reply in log order. Pure functions of their
//! inputs; every node a path visits and every byte a command adds is bounded by the caller.
//!
//! Objects keep their members' order (serde_json's `preserve_order`); numbers are read as
//! serde_json reads them (integers up to 64 bits exactly, others as 64-bit floats) and written
//! back as it writes them.

use crate::model::{
    JsonCmd, JsonPath, MAX_JSON_DEPTH, PathError, Step, json_nests_deeper_than, json_type_name,
};
use serde_json::{Number, Value};

/// Why a `json` op cannot run on the stored document. Deterministic: every replica rejects the
/// entry with the same message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonEditError {
    #[error("could not perform this operation on a key that doesn't exist")]
    NoDocument,
    #[error("new objects must be created at the root")]
    NotAtRoot,
    #[error("Path '{0}' does not exist")]
    NoSuchPath(String),
    #[error("wrong type of path value - expected {expected} but found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("the op's `data` must be {0} for its `json_cmd`")]
    BadOperand(&'static str),
    #[error("index out of bounds")]
    IndexOutOfBounds,
    #[error("result is not a finite number")]
    NotFinite,
    #[error("the stored data is not a JSON document")]
    NotJson,
    #[error(
        "JSON path {0:?} has a filter function or pattern, which an entry older than log \
         format v7 does not take (its nodes cannot parse it)"
    )]
    BeforeV7(String),
    #[error("the document would grow past {0} bytes")]
    TooLarge(usize),
    #[error("the document would nest arrays and objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

impl JsonEditError {
    /// Whether the path ran out of the entry's budget of nodes to visit: the entry's, not the
    /// op's, failure (it rejects the entry even when the op fails alone).
    pub fn too_costly(&self) -> bool {
        matches!(self, JsonEditError::Path(PathError::TooCostly(_)))
    }
}

/// What a `json` op did.
#[derive(Debug, PartialEq)]
pub struct Edited {
    /// The new data, if the op changed any: `Some(None)` removes the record.
    pub data: Option<Option<String>>,
    /// The command's reply, as JSON (see [`JsonCmd`]).
    pub reply: Value,
}

impl Edited {
    /// An op that changed nothing, answering `reply`.
    fn unchanged(reply: Value) -> Self {
        Edited { data: None, reply }
    }
}

/// Bounds on the work of `json` ops.
#[derive(Debug, Clone, Copy)]
pub struct EditLimits {
    /// Nodes path queries may still visit: each op spends from it.
    pub visits: u64,
    /// Bytes its document may grow to.
    pub max_bytes: usize,
    /// Whether paths are read as entries older than v7 read them: a filter function or pattern
    /// is a path they cannot parse.
    pub paths_before_v7: bool,
}

/// The operand (`data`) `cmd` takes, in words.
pub fn operand_expected(cmd: JsonCmd) -> &'static str {
    match cmd {
        JsonCmd::Set | JsonCmd::SetIfAbsent | JsonCmd::SetIfPresent | JsonCmd::Merge => {
            "the JSON value to write"
        }
        JsonCmd::Del | JsonCmd::Clear | JsonCmd::Toggle => "absent (it is not read)",
        JsonCmd::NumIncrBy | JsonCmd::NumMultBy => "a number",
        JsonCmd::StrAppend => "a JSON string",
        JsonCmd::ArrAppend => "an array of the values to append",
        JsonCmd::ArrInsert => "[index, value, ...]",
        JsonCmd::ArrPop => "an integer index",
        JsonCmd::ArrTrim => "[start, stop]",
    }
}

/// Whether `operand` (the op's `data` as JSON text, `None` when absent) is what `cmd` takes:
/// checked when a write arrives and again at apply (an entry may come from another producer).
pub fn operand_fits(cmd: JsonCmd, operand: Option<&str>) -> bool {
    let value = || operand.and_then(|o| serde_json::from_str::<Value>(o).ok());
    match cmd {
        JsonCmd::Set | JsonCmd::SetIfAbsent | JsonCmd::SetIfPresent | JsonCmd::Merge => {
            value().is_some()
        }
        JsonCmd::Del | JsonCmd::Clear | JsonCmd::Toggle => true,
        JsonCmd::NumIncrBy | JsonCmd::NumMultBy => value().is_some_and(|v| v.is_number()),
        JsonCmd::StrAppend => value().is_some_and(|v| v.is_string()),
        JsonCmd::ArrAppend => value().is_some_and(|v| v.is_array()),
        JsonCmd::ArrInsert => value().is_some_and(|v| {
            v.as_array()
                .and_then(|items| items.first())
                .is_some_and(Value::is_i64)
        }),
        JsonCmd::ArrPop => value().is_some_and(|v| v.is_i64()),
        JsonCmd::ArrTrim => operand.is_some_and(|o| serde_json::from_str::<[i64; 2]>(o).is_ok()),
    }
}

/// Runs `cmd` at `path` with `operand` (JSON text) over the stored document `current` (JSON
/// text, `None` when there is no record), spending from `limits.visits`.
pub fn edit(
    cmd: JsonCmd,
    current: Option<&[u8]>,
    path: &str,
    operand: &str,
    limits: &mut EditLimits,
) -> Result<Edited, JsonEditError> {
    let path = JsonPath::parse(path)?;
    if limits.paths_before_v7 && path.uses_functions() {
        return Err(JsonEditError::BeforeV7(path.text().to_owned()));
    }
    // Each command parses its operand where it uses it, refusing as `operand_fits` does (a unit
    // test holds them together), so a valid one is parsed once.
    let bad_operand = || JsonEditError::BadOperand(operand_expected(cmd));
    let visits = &mut limits.visits;
    let Some(current) = current else {
        return match cmd {
            JsonCmd::Del => Ok(Edited::unchanged(Value::from(0))),
            JsonCmd::Set | JsonCmd::SetIfAbsent | JsonCmd::Merge if path.is_root() => {
                let value = operand_value(cmd, operand)?;
                let value = match (cmd, value) {
                    // A merge into nothing is the patch with its `null` members taken out.
                    (JsonCmd::Merge, patch) => {
                        let mut doc = Value::Null;
                        merge(&mut doc, &patch);
                        doc
                    }
                    (_, value) => value,
                };
                Ok(Edited {
                    data: Some(Some(value.to_string())),
                    reply: Value::Bool(true),
                })
            }
            JsonCmd::SetIfPresent => Ok(Edited::unchanged(Value::Null)),
            JsonCmd::Set | JsonCmd::SetIfAbsent | JsonCmd::Merge => Err(JsonEditError::NotAtRoot),
            _ => Err(JsonEditError::NoDocument),
        };
    };
    let mut doc: Value = serde_json::from_slice(current).map_err(|_| JsonEditError::NotJson)?;
    let locations: Vec<Vec<Step>> = path
        .query(&doc, visits)?
        .into_iter()
        .map(|found| found.location)
        .collect();
    let legacy = path.is_legacy();
    let mut growth = Growth {
        left: limits.max_bytes.saturating_sub(current.len()),
        max: limits.max_bytes,
    };
    let missing = || JsonEditError::NoSuchPath(path.text().to_owned());
    let reply = match cmd {
        JsonCmd::Set | JsonCmd::SetIfAbsent | JsonCmd::SetIfPresent | JsonCmd::Merge => {
            let operand = operand_value(cmd, operand)?;
            let wrote = if locations.is_empty() {
                if cmd == JsonCmd::SetIfPresent {
                    false
                } else {
                    add_at_parent(&path, &mut doc, &operand, visits, &mut growth)?
                }
            } else if cmd == JsonCmd::SetIfAbsent {
                false
            } else {
                for location in &locations {
                    if let Some(target) = at_mut(&mut doc, location) {
                        growth.take(operand_size(&operand))?;
                        if cmd == JsonCmd::Merge {
                            merge(target, &operand);
                        } else {
                            *target = operand.clone();
                        }
                    }
                }
                true
            };
            if !wrote {
                return Ok(Edited::unchanged(Value::Null));
            }
            Value::Bool(true)
        }
        JsonCmd::Del => {
            if locations.iter().any(Vec::is_empty) {
                return Ok(Edited {
                    data: Some(None),
                    reply: Value::from(1),
                });
            }
            // Last first: later siblings before earlier ones (their indexes stay right) and
            // descendants before their ancestors (each removal is counted).
            let mut sorted = locations;
            sorted.sort();
            let mut removed = 0u64;
            for location in sorted.iter().rev() {
                let (last, parent) = location.split_last().expect("not the root");
                match (at_mut(&mut doc, parent), last) {
                    (Some(Value::Object(map)), Step::Key(key)) => {
                        removed += u64::from(map.shift_remove(key).is_some());
                    }
                    (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
                        items.remove(*i);
                        removed += 1;
                    }
                    _ => {}
                }
            }
            if removed == 0 {
                return Ok(Edited::unchanged(Value::from(0)));
            }
            Value::from(removed)
        }
        JsonCmd::Clear => {
            let mut cleared = 0u64;
            for location in &locations {
                let Some(target) = at_mut(&mut doc, location) else {
                    continue;
                };
                let changed = match target {
                    Value::Object(map) if !map.is_empty() => {
                        map.clear();
                        true
                    }
                    Value::Array(items) if !items.is_empty() => {
                        items.clear();
                        true
                    }
                    Value::Number(n) if n.as_f64() != Some(0.0) => {
                        *target = Value::from(0);
                        true
                    }
                    _ => false,
                };
                cleared += u64::from(changed);
            }
            if cleared == 0 {
                return Ok(Edited::unchanged(Value::from(0)));
            }
            Value::from(cleared)
        }
        JsonCmd::Toggle => {
            let mut replies = Vec::with_capacity(locations.len());
            for location in &locations {
                replies.push(match at_mut(&mut doc, location) {
                    Some(Value::Bool(b)) => {
                        *b = !*b;
                        Value::Bool(*b)
                    }
                    Some(other) if legacy => {
                        return Err(wrong_type("a boolean", other));
                    }
                    _ => Value::Null,
                });
            }
            match (legacy, replies.first()) {
                (true, None) => return Err(missing()),
                (true, Some(Value::Bool(b))) => Value::from(b.to_string()),
                _ => Value::Array(
                    replies
                        .into_iter()
                        .map(|r| {
                            r.as_bool()
                                .map_or(Value::Null, |b| Value::from(u8::from(b)))
                        })
                        .collect(),
                ),
            }
        }
        JsonCmd::NumIncrBy | JsonCmd::NumMultBy => {
            let by: Number = serde_json::from_str(operand).map_err(|_| bad_operand())?;
            let mut replies = Vec::with_capacity(locations.len());
            for location in &locations {
                replies.push(match at_mut(&mut doc, location) {
                    Some(Value::Number(n)) => {
                        let new = arithmetic(cmd, n, &by)?;
                        let longer = new.to_string().len().saturating_sub(n.to_string().len());
                        growth.take(longer)?;
                        *n = new.clone();
                        Value::Number(new)
                    }
                    Some(other) if legacy => return Err(wrong_type("a number", other)),
                    _ => Value::Null,
                });
            }
            if legacy {
                let first = replies.into_iter().next().ok_or_else(missing)?;
                Value::from(first.to_string())
            } else {
                Value::from(Value::Array(replies).to_string())
            }
        }
        JsonCmd::StrAppend => {
            let Ok(Value::String(suffix)) = serde_json::from_str::<Value>(operand) else {
                return Err(bad_operand());
            };
            per_match(
                &locations,
                &mut doc,
                legacy,
                "a string",
                missing,
                |target| {
                    let Value::String(s) = target else {
                        return Ok(None);
                    };
                    growth.take(suffix.len())?;
                    s.push_str(&suffix);
                    Ok(Some(Value::from(s.len())))
                },
            )?
        }
        JsonCmd::ArrAppend | JsonCmd::ArrInsert => {
            let Ok(Value::Array(mut values)) = serde_json::from_str::<Value>(operand) else {
                return Err(bad_operand());
            };
            let at = if cmd == JsonCmd::ArrInsert {
                if values.is_empty() {
                    return Err(bad_operand());
                }
                let index = values.remove(0);
                Some(index.as_i64().ok_or_else(bad_operand)?)
            } else {
                None
            };
            let size: usize = values.iter().map(operand_size).sum();
            per_match(
                &locations,
                &mut doc,
                legacy,
                "an array",
                missing,
                |target| {
                    let Value::Array(items) = target else {
                        return Ok(None);
                    };
                    let position = match at {
                        None => items.len(),
                        Some(index) => {
                            let len = items.len() as i64;
                            let position = if index < 0 { len + index } else { index };
                            if !(0..=len).contains(&position) {
                                return Err(JsonEditError::IndexOutOfBounds);
                            }
                            position as usize
                        }
                    };
                    growth.take(size)?;
                    items.splice(position..position, values.iter().cloned());
                    Ok(Some(Value::from(items.len())))
                },
            )?
        }
        JsonCmd::ArrTrim => {
            let Ok([start, stop]) = serde_json::from_str::<[i64; 2]>(operand) else {
                return Err(bad_operand());
            };
            per_match(
                &locations,
                &mut doc,
                legacy,
                "an array",
                missing,
                |target| {
                    let Value::Array(items) = target else {
                        return Ok(None);
                    };
                    let len = items.len() as i64;
                    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
                    let (start, stop) = (from_end(start), from_end(stop).min(len - 1));
                    if start >= len || start > stop {
                        items.clear();
                    } else {
                        items.truncate(stop as usize + 1);
                        items.drain(..start as usize);
                    }
                    Ok(Some(Value::from(items.len())))
                },
            )?
        }
        JsonCmd::ArrPop => {
            let index: i64 = serde_json::from_str(operand).map_err(|_| bad_operand())?;
            let mut replies = Vec::with_capacity(locations.len());
            for location in &locations {
                replies.push(match at_mut(&mut doc, location) {
                    Some(Value::Array(items)) if items.is_empty() => Value::Null,
                    Some(Value::Array(items)) => {
                        // Out of range rounds to the nearest end, as RedisJSON does.
                        let len = items.len() as i64;
                        let i = if index < 0 { len + index } else { index };
                        let popped = items.remove(i.clamp(0, len - 1) as usize);
                        Value::from(popped.to_string())
                    }
                    Some(other) if legacy => return Err(wrong_type("an array", other)),
                    _ => Value::Null,
                });
            }
            if legacy {
                replies.into_iter().next().ok_or_else(missing)?
            } else {
                Value::Array(replies)
            }
        }
    };
    let text = doc.to_string();
    if text.len() > limits.max_bytes {
        return Err(JsonEditError::TooLarge(limits.max_bytes));
    }
    if json_nests_deeper_than(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(JsonEditError::TooDeep);
    }
    let changed = text.as_bytes() != current;
    Ok(Edited {
        data: changed.then_some(Some(text)),
        reply,
    })
}

/// Runs `each` on every match and answers as the length-returning commands do: for JSONPath a
/// list (`null` where `each` found the wrong kind), for a legacy path the first match's alone.
fn per_match(
    locations: &[Vec<Step>],
    doc: &mut Value,
    legacy: bool,
    expected: &'static str,
    missing: impl Fn() -> JsonEditError,
    mut each: impl FnMut(&mut Value) -> Result<Option<Value>, JsonEditError>,
) -> Result<Value, JsonEditError> {
    let mut replies = Vec::with_capacity(locations.len());
    for location in locations {
        let Some(target) = at_mut(doc, location) else {
            replies.push(Value::Null);
            continue;
        };
        match each(target)? {
            Some(reply) => replies.push(reply),
            None if legacy => return Err(wrong_type(expected, target)),
            None => replies.push(Value::Null),
        }
    }
    if legacy {
        replies.into_iter().next().ok_or_else(missing)
    } else {
        Ok(Value::Array(replies))
    }
}

/// What the document may still grow by.
struct Growth {
    left: usize,
    max: usize,
}

impl Growth {
    fn take(&mut self, bytes: usize) -> Result<(), JsonEditError> {
        self.left = self
            .left
            .checked_sub(bytes)
            .ok_or(JsonEditError::TooLarge(self.max))?;
        Ok(())
    }
}

/// A value's size as JSON text, near enough to bound growth.
fn operand_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(operand_size).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 3 + operand_size(v))
                .sum::<usize>()
        }
    }
}

fn operand_value(cmd: JsonCmd, operand: &str) -> Result<Value, JsonEditError> {
    serde_json::from_str(operand).map_err(|_| JsonEditError::BadOperand(operand_expected(cmd)))
}

/// With a path that matched nothing: `value` added under the path's last name to every object
/// its parent path matches. Whether any was.
fn add_at_parent(
    path: &JsonPath,
    doc: &mut Value,
    value: &Value,
    visits: &mut u64,
    growth: &mut Growth,
) -> Result<bool, JsonEditError> {
    let Some((parent, key)) = path.parent_and_new_key() else {
        return Ok(false);
    };
    let parents: Vec<Vec<Step>> = parent
        .query(doc, visits)?
        .into_iter()
        .filter(|found| found.value.is_object())
        .map(|found| found.location)
        .collect();
    let mut added = false;
    for location in &parents {
        if let Some(Value::Object(map)) = at_mut(doc, location) {
            growth.take(key.len() + operand_size(value))?;
            let mut value = value.clone();
            if value.is_object() {
                // As a merge into nothing would: a new member holds no `null` to remove.
                let patch = value;
                value = Value::Null;
                merge(&mut value, &patch);
            }
            map.insert(key.to_owned(), value);
            added = true;
        }
    }
    Ok(added)
}

/// The node at `location`, if the document still has one there.
fn at_mut<'a>(doc: &'a mut Value, location: &[Step]) -> Option<&'a mut Value> {
    location
        .iter()
        .try_fold(doc, |node, step| match (node, step) {
            (Value::Object(map), Step::Key(key)) => map.get_mut(key),
            (Value::Array(items), Step::Index(i)) => items.get_mut(*i),
            _ => None,
        })
}

/// RFC 7396: `patch` merged into `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in members {
        if value.is_null() {
            map.shift_remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `n + by` or `n * by`: integers while both are and the result fits, else 64-bit floats.
fn arithmetic(cmd: JsonCmd, n: &Number, by: &Number) -> Result<Number, JsonEditError> {
    if let (Some(a), Some(b)) = (n.as_i64(), by.as_i64()) {
        let exact = if cmd == JsonCmd::NumIncrBy {
            a.checked_add(b)
        } else {
            a.checked_mul(b)
        };
        if let Some(result) = exact {
            return Ok(Number::from(result));
        }
    }
    let (a, b) = (
        n.as_f64().ok_or(JsonEditError::NotFinite)?,
        by.as_f64().ok_or(JsonEditError::NotFinite)?,
    );
    let result = if cmd == JsonCmd::NumIncrBy {
        a + b
    } else {
        a * b
    };
    Number::from_f64(result).ok_or(JsonEditError::NotFinite)
}

fn wrong_type(expected: &'static str, found: &Value) -> JsonEditError {
    JsonEditError::WrongType {
        expected,
        found: json_type_name(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> EditLimits {
        EditLimits {
            visits: 10_000,
            max_bytes: 1 << 20,
            paths_before_v7: false,
        }
    }

    fn run(
        cmd: JsonCmd,
        doc: &str,
        path: &str,
        operand: &str,
    ) -> Result<(String, Value), JsonEditError> {
        let edited = edit(cmd, Some(doc.as_bytes()), path, operand, &mut limits())?;
        let data = match edited.data {
            None => doc.to_owned(),
            Some(None) => "<deleted>".to_owned(),
            Some(Some(data)) => data,
        };
        Ok((data, edited.reply))
    }

    const DOC: &str = r#"{"z":1,"a":{"n":2,"s":"ab","list":[1,2,3],"on":true},"b":{"n":"x"}}"#;

    #[test]
    fn set_replaces_matches_adds_a_last_name_and_keeps_member_order() {
        let (doc, reply) = run(JsonCmd::Set, DOC, "$.a.n", "5").unwrap();
        assert_eq!(reply, json!(true));
        assert_eq!(
            doc,
            r#"{"z":1,"a":{"n":5,"s":"ab","list":[1,2,3],"on":true},"b":{"n":"x"}}"#
        );
        let (doc, _) = run(JsonCmd::Set, DOC, "$.a.new", r#"{"k":[1]}"#).unwrap();
        assert!(doc.contains(r#""on":true,"new":{"k":[1]}}"#), "{doc}");
        let (doc, _) = run(JsonCmd::Set, DOC, "$..n", "0").unwrap();
        assert_eq!(
            doc,
            r#"{"z":1,"a":{"n":0,"s":"ab","list":[1,2,3],"on":true},"b":{"n":0}}"#
        );
        // A parent that is not there: nothing written, nil.
        assert_eq!(
            run(JsonCmd::Set, DOC, "$.x.y", "1").unwrap(),
            (DOC.to_owned(), Value::Null)
        );
        assert_eq!(
            run(JsonCmd::SetIfAbsent, DOC, "$.a.n", "1").unwrap().1,
            Value::Null
        );
        assert_eq!(
            run(JsonCmd::SetIfPresent, DOC, "$.a.q", "1").unwrap().1,
            Value::Null
        );
        assert_eq!(
            run(JsonCmd::SetIfAbsent, DOC, "$.a.q", "1").unwrap().1,
            json!(true)
        );
    }

    #[test]
    fn a_missing_document_is_created_at_the_root_only() {
        let created = edit(JsonCmd::Set, None, "$", r#"{"a":1}"#, &mut limits()).unwrap();
        assert_eq!(created.data, Some(Some(r#"{"a":1}"#.to_owned())));
        assert_eq!(
            edit(JsonCmd::Set, None, "$.a", "1", &mut limits()),
            Err(JsonEditError::NotAtRoot)
        );
        assert_eq!(
            edit(JsonCmd::NumIncrBy, None, "$.a", "1", &mut limits()),
            Err(JsonEditError::NoDocument)
        );
        assert_eq!(
            edit(JsonCmd::Del, None, "$.a", "null", &mut limits())
                .unwrap()
                .reply,
            json!(0)
        );
    }

    #[test]
    fn del_and_clear_count_what_they_changed() {
        let (doc, reply) = run(JsonCmd::Del, DOC, "$..n", "null").unwrap();
        assert_eq!(
            (doc.as_str(), reply),
            (
                r#"{"z":1,"a":{"s":"ab","list":[1,2,3],"on":true},"b":{}}"#,
                json!(2)
            )
        );
        let (doc, reply) = run(JsonCmd::Del, DOC, "$.a.list[0,2]", "null").unwrap();
        assert!(doc.contains(r#""list":[2]"#), "{doc}");
        assert_eq!(reply, json!(2));
        assert_eq!(
            run(JsonCmd::Del, DOC, "$", "null").unwrap(),
            ("<deleted>".into(), json!(1))
        );
        let (doc, reply) = run(JsonCmd::Clear, DOC, "$.a.*", "null").unwrap();
        assert!(
            doc.contains(r#""a":{"n":0,"s":"ab","list":[],"on":true}"#),
            "{doc}"
        );
        assert_eq!(reply, json!(2));
    }

    #[test]
    fn numbers_strings_booleans_and_arrays_answer_per_match() {
        let (doc, reply) = run(JsonCmd::NumIncrBy, DOC, "$..n", "1.5").unwrap();
        assert_eq!(reply, json!("[3.5,null]"));
        assert!(doc.contains(r#""n":3.5"#));
        assert_eq!(
            run(JsonCmd::NumIncrBy, DOC, ".a.n", "3").unwrap().1,
            json!("5")
        );
        assert_eq!(
            run(JsonCmd::NumMultBy, DOC, "$.a.n", "4").unwrap().1,
            json!("[8]")
        );
        assert_eq!(
            run(JsonCmd::NumIncrBy, DOC, ".b.n", "1"),
            Err(JsonEditError::WrongType {
                expected: "a number",
                found: "string"
            })
        );
        assert_eq!(
            run(JsonCmd::NumIncrBy, DOC, ".a.none", "1"),
            Err(JsonEditError::NoSuchPath(".a.none".into()))
        );
        assert_eq!(
            run(JsonCmd::NumMultBy, DOC, "$.a.n", "1e308"),
            Err(JsonEditError::NotFinite)
        );
        assert_eq!(
            run(JsonCmd::StrAppend, DOC, "$..s", r#""cd""#).unwrap().1,
            json!([4])
        );
        assert_eq!(
            run(JsonCmd::Toggle, DOC, "$.a.on", "null").unwrap().1,
            json!([0])
        );
        assert_eq!(
            run(JsonCmd::Toggle, DOC, ".a.on", "null").unwrap().1,
            json!("false")
        );
        let (doc, reply) = run(JsonCmd::ArrAppend, DOC, "$.a.list", "[4,5]").unwrap();
        assert!(doc.contains("[1,2,3,4,5]"));
        assert_eq!(reply, json!([5]));
        let (doc, _) = run(JsonCmd::ArrInsert, DOC, "$.a.list", r#"[-1,"x"]"#).unwrap();
        assert!(doc.contains(r#"[1,2,"x",3]"#), "{doc}");
        assert_eq!(
            run(JsonCmd::ArrInsert, DOC, "$.a.list", "[9,0]"),
            Err(JsonEditError::IndexOutOfBounds)
        );
        let (doc, reply) = run(JsonCmd::ArrPop, DOC, "$.a.list", "99").unwrap();
        assert_eq!((doc.contains("[1,2]"), reply), (true, json!(["3"])));
        let (doc, reply) = run(JsonCmd::ArrTrim, DOC, "$.a.list", "[1,-1]").unwrap();
        assert_eq!((doc.contains("[2,3]"), reply), (true, json!([2])));
        let (doc, _) = run(
            JsonCmd::Merge,
            DOC,
            "$.a",
            r#"{"n":null,"m":{"x":null,"y":1}}"#,
        )
        .unwrap();
        assert!(
            doc.contains(r#""a":{"s":"ab","list":[1,2,3],"on":true,"m":{"y":1}}"#),
            "{doc}"
        );
    }

    #[test]
    fn edits_refuse_exactly_the_operands_writes_are_refused() {
        use JsonCmd::*;
        let operands = [
            "null",
            "1",
            "-2",
            "1.5",
            "\"s\"",
            "[]",
            "[1]",
            "[1,2]",
            "[0,\"x\"]",
            "[1.5,2]",
            "{}",
            "true",
        ];
        let doc = r#"{"n":1,"s":"x","a":[1,2,3],"b":true,"o":{}}"#;
        for cmd in [
            Set,
            SetIfAbsent,
            SetIfPresent,
            Merge,
            Del,
            Clear,
            Toggle,
            NumIncrBy,
            NumMultBy,
            StrAppend,
            ArrAppend,
            ArrInsert,
            ArrPop,
            ArrTrim,
        ] {
            for operand in operands {
                let refused = matches!(
                    edit(cmd, Some(doc.as_bytes()), "$.*", operand, &mut limits()),
                    Err(JsonEditError::BadOperand(_))
                );
                assert_eq!(
                    refused,
                    !operand_fits(cmd, Some(operand)),
                    "{cmd:?} with {operand}"
                );
            }
        }
    }

    #[test]
    fn an_entry_older_than_v7_reads_filter_functions_as_its_nodes_did() {
        let doc = json!({"hosts": ["a.internal", "b.example.com"]}).to_string();
        let path = r"$.hosts[?@ =~ '\\.internal$']";
        let edited = edit(
            JsonCmd::Del,
            Some(doc.as_bytes()),
            path,
            "null",
            &mut limits(),
        )
        .unwrap();
        assert_eq!(edited.reply, json!(1));
        let mut older = EditLimits {
            paths_before_v7: true,
            ..limits()
        };
        let e = edit(JsonCmd::Del, Some(doc.as_bytes()), path, "null", &mut older).unwrap_err();
        assert!(e.to_string().contains("older than log format v7"), "{e}");
        // Paths without them are read alike.
        let plain = "$.hosts[?@ == 'a.internal']";
        assert_eq!(
            edit(
                JsonCmd::Del,
                Some(doc.as_bytes()),
                plain,
                "null",
                &mut older
            )
            .unwrap()
            .reply,
            json!(1)
        );
    }

    #[test]
    fn work_and_growth_are_bounded() {
        let wide = Value::Array(vec![json!([0, 0, 0, 0]); 1000]).to_string();
        let mut tight = EditLimits {
            visits: 1000,
            max_bytes: 1 << 20,
            paths_before_v7: false,
        };
        assert!(matches!(
            edit(
                JsonCmd::NumIncrBy,
                Some(wide.as_bytes()),
                "$..*",
                "1",
                &mut tight
            ),
            Err(JsonEditError::Path(PathError::TooCostly(1000)))
        ));
        let mut small = EditLimits {
            visits: 100_000,
            max_bytes: 20_000,
            paths_before_v7: false,
        };
        let big = format!("[{}]", vec!["\"0123456789\""; 1000].join(","));
        assert_eq!(
            edit(
                JsonCmd::ArrAppend,
                Some(wide.as_bytes()),
                "$[*]",
                &big,
                &mut small
            ),
            Err(JsonEditError::TooLarge(20_000))
        );
    }
}
