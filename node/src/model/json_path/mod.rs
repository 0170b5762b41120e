//! RedisJSON's paths into a JSON document: JSONPath (`$.a.b`, `$..name`, `$.list[0,-1]`,
//! `$.list[1:3]`, `$.*`) and the legacy syntax its older commands take (`.a.b`, `a.b`, `.`,
//! `["a b"]`). Read at the Redis edge (`JSON.GET`) and at apply (`JSON.SET` at a path), so a
//! query is a pure function of the path and the document, and bounded: every node it visits is
//! charged to a budget the caller gives, and a query past it fails alike everywhere.
//!
//! Filters (`[?@.price < 10]`, `[?length(@.tags) > 2]`, `[?@.name =~ '(?i)^ams']`) are RFC
//! 9535's, with its functions `length`, `count`, `value`, `match` and `search`, and RedisJSON's
//! `=~` (`filter.rs`, patterns in `pattern.rs`). Matches are returned in document order of the
//! query's steps, each node at most once.

mod filter;
mod parse;
mod pattern;

use parse::Parser;
use serde_json::Value;

/// The longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Nodes one read's path queries may visit together: reads run on request tasks, so this
/// bounds how long one can hold its thread (tens of milliseconds).
pub const READ_VISITS: u64 = 1_000_000;

/// Bytes of JSON one read's answers may add up to (a read may name a whole document under many
/// paths, or many documents): past it the read answers an error before copying more.
pub const READ_ANSWER_BYTES: usize = 64 << 20;

/// A parsed path. `legacy` paths (not starting with `$`) answer with one value where JSONPath
/// answers with every match, as RedisJSON does.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    /// As written, for messages.
    text: String,
    legacy: bool,
    segments: Vec<Segment>,
    /// Whether a filter calls a function or tests a pattern (log format v7).
    functions: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// Selects among a node's children.
    Child(Vec<Selector>),
    /// Selects among a node's descendants (itself included, as `..` in RFC 9535: the node and
    /// everything under it are each asked the selectors).
    Descendant(Vec<Selector>),
}

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Name(String),
    Index(i64),
    Wildcard,
    Slice {
        start: Option<i64>,
        end: Option<i64>,
        step: i64,
    },
    /// The children for which the filter holds.
    Filter(Box<filter::Filter>),
}

/// One step from a node to a child: where a match is, from the root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A node a query matched, and where it is.
#[derive(Debug)]
pub struct Found<'a> {
    pub location: Vec<Step>,
    pub value: &'a Value,
}

/// Why a path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("JSON path {path:?} is not valid at byte {at}: {reason}")]
    Syntax {
        path: String,
        at: usize,
        reason: &'static str,
    },
    #[error("JSON path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error(
        "JSON path {0:?} uses {1}, which FireScroll does not support: use names, indexes, \
         slices, `*`, `..` and RFC 9535's filters"
    )]
    Unsupported(String, &'static str),
    #[error("the pattern {pattern:?} in a JSON path is not one FireScroll can use: {reason}")]
    BadPattern { pattern: String, reason: String },
    /// Past the query's budget (the visits that were left to it).
    #[error(
        "the JSON path would visit more nodes, or match patterns over more text, than one \
         command may; use a narrower path or a simpler pattern"
    )]
    TooCostly(u64),
    /// Past [`READ_ANSWER_BYTES`] (the bound callers give reads).
    #[error(
        "the answer would be larger than {} MiB; ask for fewer or narrower paths",
        READ_ANSWER_BYTES >> 20
    )]
    AnswerTooLarge,
}

impl JsonPath {
    /// Parses a JSONPath (`$...`) or a legacy path (anything else; `.` is the root).
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let (legacy, body) = match text.strip_prefix('$') {
            Some(rest) => (false, rest),
            None if text == "." => (true, ""),
            // Legacy: `.a`, `["a"]`, or a bare first name (`a.b`).
            None if text.starts_with('.') || text.starts_with('[') => (true, text),
            None => (true, text),
        };
        let mut parser = Parser {
            path: text,
            bytes: body.as_bytes(),
            at: 0,
            offset: text.len() - body.len(),
            filter_depth: 0,
            functions: false,
        };
        let mut segments = Vec::new();
        if legacy && !body.is_empty() && !body.starts_with('.') && !body.starts_with('[') {
            // The bare first name of a legacy path.
            segments.push(Segment::Child(vec![parser.name_or_wildcard()?]));
        }
        while !parser.done() {
            segments.push(parser.segment()?);
        }
        Ok(JsonPath {
            text: text.to_owned(),
            legacy,
            segments,
            functions: parser.functions,
        })
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the path is in the legacy syntax (answered with one value, not a list).
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Whether a filter of the path calls a function (`length()`, `match()`, ...) or tests a
    /// pattern (`=~`): what log format v7 added to the paths of `json` ops.
    pub fn uses_functions(&self) -> bool {
        self.functions
    }

    /// Whether the path is the document's root (`$` or `.`).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The path without its last segment, and that segment's name when it is a child by one
    /// name (`$.a.b` → `$.a`, `b`): where `JSON.SET` may add a key.
    pub fn parent_and_new_key(&self) -> Option<(JsonPath, &str)> {
        let (last, parent) = self.segments.split_last()?;
        match last {
            Segment::Child(selectors) => match selectors.as_slice() {
                [Selector::Name(name)] => Some((
                    JsonPath {
                        text: self.text.clone(),
                        legacy: self.legacy,
                        segments: parent.to_vec(),
                        functions: self.functions,
                    },
                    name,
                )),
                _ => None,
            },
            Segment::Descendant(_) => None,
        }
    }

    /// What a read at this path answers from `doc`: under a JSONPath every match, as an array;
    /// under a legacy path the first match (`None` when there is none). Queries spend from
    /// `visits`, and the answer's JSON size from `bytes` (counted without copying and stopped
    /// as soon as it is over, so a charge costs at most what is left).
    pub fn answer(
        &self,
        doc: &Value,
        visits: &mut u64,
        bytes: &mut usize,
    ) -> Result<Option<Value>, PathError> {
        let found = self.query(doc, visits)?;
        let mut charge = |value: &Value| charge_text(value, bytes).map(|_| value.clone());
        if self.legacy {
            return found.first().map(|f| charge(f.value)).transpose();
        }
        found
            .iter()
            .map(|f| charge(f.value))
            .collect::<Result<Vec<_>, _>>()
            .map(|values| Some(Value::Array(values)))
    }

    /// Compiles the patterns written in the path (`=~ '...'`, `match(@, '...')`), spending from
    /// `budget` as a query would: refuses one that does not compile before any query meets it.
    pub fn compile_patterns(&self, budget: &mut u64) -> Result<(), PathError> {
        let limit = *budget;
        let mut walk = Walk {
            trail: Vec::new(),
            budget,
            limit,
            root: &Value::Null,
            patterns: Vec::new(),
        };
        let mut fixed = Vec::new();
        filter::fixed_patterns_of(&self.segments, &mut fixed);
        for pattern in fixed {
            walk.fixed_pattern(pattern)?;
        }
        Ok(())
    }

    /// Every node of `doc` the path matches, in order, each once. Each node visited costs one
    /// from `budget`; past it the query fails with [`PathError::TooCostly`]. A visit costs the
    /// same however deep the node is: where each node is stays a link to its parent until the
    /// matches are known.
    pub fn query<'a>(&self, doc: &'a Value, budget: &mut u64) -> Result<Vec<Found<'a>>, PathError> {
        let limit = *budget;
        let mut walk = Walk {
            trail: Vec::new(),
            budget,
            limit,
            root: doc,
            patterns: Vec::new(),
        };
        walk.charge(1)?;
        let current = walk.segments(&self.segments, doc)?;
        Ok(current
            .into_iter()
            .map(|(at, value)| Found {
                location: walk.location(at),
                value,
            })
            .collect())
    }
}

/// The size of `value`'s compact JSON text, charged to `bytes` (what an answer may still hold),
/// counted without writing it out and stopped as soon as it is over.
pub fn charge_text(value: &Value, bytes: &mut usize) -> Result<usize, PathError> {
    let before = *bytes;
    serde_json::to_writer(Counter(bytes), value).map_err(|_| PathError::AnswerTooLarge)?;
    Ok(before - *bytes)
}

/// Counts bytes written into it down from what is left, failing once past it.
struct Counter<'a>(&'a mut usize);

impl std::io::Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        *self.0 = self
            .0
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over the answer's bound"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The trail index of the document's root.
const ROOT: usize = usize::MAX;

/// A step as a query takes it, borrowing the key from the document.
#[derive(Clone, Copy)]
enum StepRef<'a> {
    Key(&'a str),
    Index(usize),
}

/// A query under way: every step taken, each with the index of the step before it.
struct Walk<'a, 'b> {
    trail: Vec<(usize, StepRef<'a>)>,
    budget: &'b mut u64,
    limit: u64,
    /// The document (`$` inside filters).
    root: &'a Value,
    /// Patterns read from the document, compiled (`None`: they do not compile).
    patterns: Vec<(String, bool, Option<std::sync::Arc<pattern::Compiled>>)>,
}

impl<'a> Walk<'a, '_> {
    /// What `segments` match from `start`, each with its index in the trail.
    fn segments(
        &mut self,
        segments: &[Segment],
        start: &'a Value,
    ) -> Result<Vec<(usize, &'a Value)>, PathError> {
        let mut current: Vec<(usize, &'a Value)> = vec![(ROOT, start)];
        for segment in segments {
            let mut next = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for &(at, value) in &current {
                match segment {
                    Segment::Child(selectors) => {
                        self.select(at, value, selectors, &mut next, &mut seen)?;
                    }
                    Segment::Descendant(selectors) => {
                        // The node and each descendant, depth first in document order.
                        let mut stack = vec![(at, value)];
                        while let Some((at, value)) = stack.pop() {
                            self.charge(1)?;
                            self.select(at, value, selectors, &mut next, &mut seen)?;
                            let first = stack.len();
                            match value {
                                Value::Object(map) => {
                                    for (key, child) in map {
                                        stack.push((self.step(at, StepRef::Key(key)), child));
                                    }
                                }
                                Value::Array(items) => {
                                    for (i, child) in items.iter().enumerate() {
                                        stack.push((self.step(at, StepRef::Index(i)), child));
                                    }
                                }
                                _ => {}
                            }
                            stack[first..].reverse();
                        }
                    }
                }
            }
            current = next;
        }
        Ok(current)
    }

    fn charge(&mut self, n: u64) -> Result<(), PathError> {
        if n > *self.budget {
            *self.budget = 0;
            return Err(PathError::TooCostly(self.limit));
        }
        *self.budget -= n;
        Ok(())
    }

    /// Records a step from the node at `from`: the new node's index.
    fn step(&mut self, from: usize, step: StepRef<'a>) -> usize {
        self.trail.push((from, step));
        self.trail.len() - 1
    }

    /// Where the node at `at` is, from the root.
    fn location(&self, mut at: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        while at != ROOT {
            let (from, step) = self.trail[at];
            steps.push(match step {
                StepRef::Key(key) => Step::Key(key.to_owned()),
                StepRef::Index(i) => Step::Index(i),
            });
            at = from;
        }
        steps.reverse();
        steps
    }

    /// Adds the children of the node at `at` that `selectors` pick to `out`, skipping nodes
    /// already there.
    fn select(
        &mut self,
        at: usize,
        value: &'a Value,
        selectors: &[Selector],
        out: &mut Vec<(usize, &'a Value)>,
        seen: &mut std::collections::HashSet<*const Value>,
    ) -> Result<(), PathError> {
        let mut push = |walk: &mut Self, step: StepRef<'a>, child: &'a Value| {
            walk.charge(1)?;
            if seen.insert(child as *const Value) {
                let index = walk.step(at, step);
                out.push((index, child));
            }
            Ok(())
        };
        for selector in selectors {
            match (selector, value) {
                (Selector::Name(name), Value::Object(map)) => {
                    if let Some((key, child)) = map.get_key_value(name.as_str()) {
                        push(self, StepRef::Key(key), child)?;
                    }
                }
                (Selector::Wildcard, Value::Object(map)) => {
                    for (key, child) in map {
                        push(self, StepRef::Key(key), child)?;
                    }
                }
                (Selector::Wildcard, Value::Array(items)) => {
                    for (i, child) in items.iter().enumerate() {
                        push(self, StepRef::Index(i), child)?;
                    }
                }
                (Selector::Index(index), Value::Array(items)) => {
                    if let Some(i) = resolve_index(*index, items.len()) {
                        push(self, StepRef::Index(i), &items[i])?;
                    }
                }
                (&Selector::Slice { start, end, step }, Value::Array(items)) => {
                    for i in slice_indexes(start, end, step, items.len()) {
                        push(self, StepRef::Index(i), &items[i])?;
                    }
                }
                (Selector::Filter(test), Value::Object(map)) => {
                    for (key, child) in map {
                        self.charge(1)?;
                        if filter::holds(self, test, child)? {
                            push(self, StepRef::Key(key), child)?;
                        }
                    }
                }
                (Selector::Filter(test), Value::Array(items)) => {
                    for (i, child) in items.iter().enumerate() {
                        self.charge(1)?;
                        if filter::holds(self, test, child)? {
                            push(self, StepRef::Index(i), child)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A value's type as RedisJSON names it (`JSON.TYPE`).
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An index counted from the end when negative, if it is inside an array of `len`.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// The indexes a slice `[start:end:step]` picks from an array of `len`, as RFC 9535 says.
fn slice_indexes(start: Option<i64>, end: Option<i64>, step: i64, len: usize) -> Vec<usize> {
    let len = len as i64;
    let normalize = |i: i64| if i < 0 { len + i } else { i };
    let mut out = Vec::new();
    if step > 0 {
        let lower = normalize(start.unwrap_or(0)).clamp(0, len);
        let upper = normalize(end.unwrap_or(len)).clamp(0, len);
        let mut i = lower;
        while i < upper {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    } else if step < 0 {
        let upper = normalize(start.unwrap_or(len - 1)).clamp(-1, len - 1);
        let lower = normalize(end.unwrap_or(-len - 1)).clamp(-1, len - 1);
        let mut i = upper;
        while lower < i {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(path: &str, doc: &Value) -> Vec<Value> {
        let mut budget = 1_000;
        JsonPath::parse(path)
            .unwrap()
            .query(doc, &mut budget)
            .unwrap()
            .into_iter()
            .map(|f| f.value.clone())
            .collect()
    }

    fn doc() -> Value {
        json!({"a": {"b": 1, "c": [10, 20, 30, 40]}, "b": "top", "x y": true, "list": [{"b": 2}, {"b": 3}]})
    }

    #[test]
    fn jsonpath_and_legacy_paths_select_what_redisjson_selects() {
        let d = doc();
        assert_eq!(matches("$", &d), vec![d.clone()]);
        assert_eq!(matches(".", &d), vec![d.clone()]);
        assert_eq!(matches("$.a.b", &d), vec![json!(1)]);
        assert_eq!(matches(".a.b", &d), vec![json!(1)]);
        assert_eq!(matches("a.b", &d), vec![json!(1)]);
        assert_eq!(matches("$['x y']", &d), vec![json!(true)]);
        assert_eq!(matches(r#"["x y"]"#, &d), vec![json!(true)]);
        assert_eq!(matches("$.a.c[0]", &d), vec![json!(10)]);
        assert_eq!(matches("$.a.c[-1]", &d), vec![json!(40)]);
        assert_eq!(matches("$.a.c[9]", &d), Vec::<Value>::new());
        assert_eq!(matches("$.a.c[1:3]", &d), vec![json!(20), json!(30)]);
        assert_eq!(matches("$.a.c[::-2]", &d), vec![json!(40), json!(20)]);
        assert_eq!(matches("$.a.c[0, -1, 0]", &d), vec![json!(10), json!(40)]);
        // Steps at the ends of i64 end the slice instead of wrapping around.
        assert_eq!(
            matches("$.a.c[1::9223372036854775807]", &d),
            vec![json!(20)]
        );
        assert_eq!(
            matches("$.a.c[::-9223372036854775808]", &d),
            vec![json!(40)]
        );
        assert_eq!(
            matches("$.a.c[-9223372036854775808:9223372036854775807]", &d).len(),
            4
        );
        // RFC 9535 order: the node itself is asked first, then its descendants in order.
        assert_eq!(
            matches("$..b", &d),
            vec![json!("top"), json!(1), json!(2), json!(3)]
        );
        assert_eq!(matches("$.list[*].b", &d), vec![json!(2), json!(3)]);
        assert_eq!(
            matches("$.a.*", &d),
            vec![json!(1), json!([10, 20, 30, 40])]
        );
        assert_eq!(matches("$.nope.b", &d), Vec::<Value>::new());
        assert!(JsonPath::parse("$").unwrap().is_root());
        assert!(JsonPath::parse(".").unwrap().is_legacy());
        assert!(!JsonPath::parse("$.a").unwrap().is_legacy());
    }

    #[test]
    fn filters_compare_and_test_as_rfc_9535_says() {
        let d = doc();
        assert_eq!(matches("$.list[?@.b > 2]", &d), vec![json!({"b": 3})]);
        assert_eq!(
            matches("$.list[?(@.b == 2 || @.b == 3) && !@.x]", &d),
            vec![json!({"b": 2}), json!({"b": 3})]
        );
        assert_eq!(matches("$.a.c[?@ >= 30]", &d), vec![json!(30), json!(40)]);
        assert_eq!(
            matches("$.a.c[?@ != 20 && @ < 35]", &d),
            vec![json!(10), json!(30)]
        );
        // Existence; the document's root inside a filter; numbers by value; strings.
        assert_eq!(
            matches("$[?@.b]", &d),
            vec![json!({"b": 1, "c": [10, 20, 30, 40]})]
        );
        assert_eq!(matches("$.list[?@.b == $.a.b]", &d).len(), 0);
        assert_eq!(matches("$.a[?@ == 1.0]", &d), vec![json!(1)]);
        assert_eq!(matches("$[?@ == 'top']", &d), vec![json!("top")]);
        assert_eq!(
            matches("$[?@ == \"top\" || @ == true]", &d),
            vec![json!("top"), json!(true)]
        );
        // Nothing equals nothing; `<` is false across kinds.
        assert_eq!(matches("$.list[?@.x == @.y]", &d).len(), 2);
        assert_eq!(matches("$.list[?@.b < 'z']", &d).len(), 0);
        // Nested filters.
        assert_eq!(matches("$[?@.c[?@ > 35]]", &d).len(), 1);
    }

    fn inventory() -> Value {
        json!({"inventory": [
            {"id": 15970, "description": "Turtle Check Men Navy Blue Shirt", "season": ["Fall", "Winter"], "re": "^T"},
            {"id": 59263, "description": "Titan Women Silver Watch", "season": ["Fall", "Winter", "Spring", "Summer"], "re": "("},
            {"id": 46885, "description": "Ben 10 Boys Navy Blue Slippers", "season": ["Fall"], "re": 7},
        ]})
    }

    fn ids(path: &str) -> Vec<i64> {
        let mut budget = 100_000;
        JsonPath::parse(path)
            .unwrap()
            .query(&inventory(), &mut budget)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_iter()
            .map(|f| f.value["id"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn patterns_filter_as_redisjson_and_rfc_9535_say() {
        // RedisJSON's `=~` (its documentation's examples): a match anywhere in a string.
        assert_eq!(
            ids("$.inventory[?(@.description =~ \"Blue\")]"),
            [15970, 46885]
        );
        assert_eq!(
            ids("$.inventory[?(@.description =~ \"(?i)watch\")]"),
            [59263]
        );
        assert_eq!(ids("$.inventory[?@.description=~'^T']"), [15970, 59263]);
        // RFC 9535: match() is the whole string, search() a part.
        assert_eq!(
            ids("$.inventory[?match(@.description, 'T.*Watch')]"),
            [59263]
        );
        assert_eq!(
            ids("$.inventory[?match(@.description, 'Watch')]"),
            Vec::<i64>::new()
        );
        assert_eq!(ids("$.inventory[?search(@.description, 'Watch')]"), [59263]);
        assert_eq!(
            ids("$.inventory[?!search(@.description, 'Blue') && @.id > 0]"),
            [59263]
        );
        // A pattern read from the document: one that does not compile, or is not a string,
        // matches nothing (as in RedisJSON).
        assert_eq!(ids("$.inventory[?@.description =~ @.re]"), [15970]);
        // Not a string: no match, no error.
        assert_eq!(ids("$.inventory[?@.id =~ '1']"), Vec::<i64>::new());
        assert_eq!(ids("$.inventory[?@.nope =~ '.*']"), Vec::<i64>::new());
    }

    #[test]
    fn functions_give_values_as_rfc_9535_says() {
        assert_eq!(ids("$.inventory[?length(@.season) > 2]"), [59263]);
        assert_eq!(ids("$.inventory[?length(@.description) == 30]"), [46885]);
        assert_eq!(ids("$.inventory[?count(@.season[*]) == 1]"), [46885]);
        assert_eq!(ids("$.inventory[?count(@..*) > 7]"), [59263]);
        assert_eq!(ids("$.inventory[?value(@.season[0]) == 'Fall']").len(), 3);
        // value() of several nodes, and length() of a number, are nothing.
        assert_eq!(ids("$.inventory[?value(@.season[*]) == 'Fall']"), [46885]);
        assert_eq!(ids("$.inventory[?length(@.id) == 5]"), Vec::<i64>::new());
        assert_eq!(ids("$.inventory[?length(@.id) == @.nope]").len(), 3);
        // Characters, not bytes; literals and nested calls.
        assert_eq!(
            matches("$[?length(@) == 3]", &json!(["añb", "añbc"])),
            [json!("añb")]
        );
        assert_eq!(matches("$[?length('abc') == 3]", &json!([1])), [json!(1)]);
        assert_eq!(
            matches(
                "$[?length(value(@.*)) == 2]",
                &json!([{"a": "xy"}, {"a": "x", "b": "y"}])
            ),
            [json!({"a": "xy"})]
        );
    }

    #[test]
    fn functions_and_patterns_are_refused_where_rfc_9535_refuses_them() {
        for (bad, why) in [
            ("$[?length(@)]", "give a value"),
            ("$[?match(@, 'a') == true]", "are tests"),
            ("$[?length(match(@, 'a')) > 1]", "are tests, not values"),
            ("$[?length(@.*) > 1]", "singular"),
            ("$[?@.* =~ 'a']", "singular"),
            ("$[?count(1) > 1]", "take a query"),
            ("$[?@ =~ 1]", "a pattern is a string"),
            ("$[?match(@)]", "two arguments"),
            ("$[?length(@, 1) > 1]", "expected `)`"),
            ("$[?keys(@) > 1]", "function other than"),
        ] {
            let e = JsonPath::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // A pattern written in the path that does not compile fails the query, saying why.
        let path = JsonPath::parse("$[?@ =~ '(unclosed']").unwrap();
        let e = path
            .query(&json!(["a"]), &mut 1_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(unclosed") && e.contains("unclosed group"),
            "{e}"
        );
        let path = JsonPath::parse(r"$[?@ =~ '\\w{100}']").unwrap();
        let e = path
            .query(&json!(["a"]), &mut 1_000_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("compiles to more than 256 KiB"), "{e}");
        // Calls nest as deep as parentheses do.
        let deep = format!("$[?{}@{} > 1]", "length(value(".repeat(9), "))".repeat(9));
        let e = JsonPath::parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nest at most 16"), "{e}");
    }

    #[test]
    fn a_pattern_is_compiled_once_per_path_and_charged_its_worst_case() {
        let path = JsonPath::parse("$[?@ =~ '(?:[ab]*a[ab]{12}){20}c']").unwrap();
        let text = Value::from("ab".repeat(2_000));
        let docs = Value::Array(vec![text; 10]);
        // Compiling it, and then each match: 4,000 bytes by its hundreds of states.
        let mut budget = u64::MAX;
        path.query(&docs, &mut budget).unwrap();
        let first = u64::MAX - budget;
        assert!(first > 10 * 4_000 * 300 / 32, "{first}");
        // The same path again does not pay for compiling twice.
        let mut budget = u64::MAX;
        path.query(&docs, &mut budget).unwrap();
        let again = u64::MAX - budget;
        assert!(again < first, "{again} vs {first}");
        // Within a small budget it stops, as any query past its budget does.
        let fresh = JsonPath::parse("$[?@ =~ '(?:[ab]*a[ab]{12}){20}c']").unwrap();
        assert_eq!(
            fresh.query(&docs, &mut 100_000).unwrap_err(),
            PathError::TooCostly(100_000)
        );
        // Patterns read from documents are charged too, each compiled once per query.
        let read = JsonPath::parse("$[?@.s =~ @.p]").unwrap();
        let pairs = Value::Array(vec![
            json!({"s": "ab".repeat(2_000), "p": "(?:[ab]*a[ab]{12}){20}c"});
            10
        ]);
        let mut budget = u64::MAX;
        read.query(&pairs, &mut budget).unwrap();
        assert!(u64::MAX - budget > 10 * 4_000 * 300 / 32);
        // One that does not compile is charged as the largest that does (finding out may cost
        // as much): many distinct ones cannot make a query compile for free.
        let bad = Value::Array(
            (0..100)
                .map(|i| json!({"s": "x", "p": format!("\\w{{100}}{i}")}))
                .collect(),
        );
        assert_eq!(
            read.query(&bad, &mut 1_000_000).unwrap_err(),
            PathError::TooCostly(1_000_000)
        );
    }

    #[test]
    fn a_read_answers_every_match_or_the_first_within_its_bytes() {
        let d = doc();
        let (mut visits, mut bytes) = (1_000, 1_000);
        let answer = |path: &str, visits: &mut u64, bytes: &mut usize| {
            JsonPath::parse(path).unwrap().answer(&d, visits, bytes)
        };
        assert_eq!(
            answer("$..b", &mut visits, &mut bytes),
            Ok(Some(json!(["top", 1, 2, 3])))
        );
        assert_eq!(
            answer(".list[1].b", &mut visits, &mut bytes),
            Ok(Some(json!(3)))
        );
        assert_eq!(answer(".nope", &mut visits, &mut bytes), Ok(None));
        assert_eq!(
            answer("$.nope", &mut visits, &mut bytes),
            Ok(Some(json!([])))
        );
        // The bytes are the answers' together: the document is 77 bytes of JSON.
        let mut bytes = 170;
        assert!(answer("$", &mut visits, &mut bytes).is_ok());
        assert!(answer("$", &mut visits, &mut bytes).is_ok());
        assert_eq!(bytes, 16);
        assert_eq!(
            answer("$", &mut visits, &mut bytes),
            Err(PathError::AnswerTooLarge)
        );
    }

    #[test]
    fn locations_lead_back_to_the_matches() {
        let d = doc();
        let mut budget = 1_000;
        let found = JsonPath::parse("$..b")
            .unwrap()
            .query(&d, &mut budget)
            .unwrap();
        let locations: Vec<_> = found.into_iter().map(|f| f.location).collect();
        assert_eq!(
            locations[2],
            vec![
                Step::Key("list".into()),
                Step::Index(0),
                Step::Key("b".into())
            ]
        );
        let path = JsonPath::parse("$.a.new").unwrap();
        let (parent, key) = path.parent_and_new_key().unwrap();
        assert_eq!(parent.segments, JsonPath::parse("$.a").unwrap().segments);
        assert_eq!(key, "new");
        assert!(
            JsonPath::parse("$.a[0]")
                .unwrap()
                .parent_and_new_key()
                .is_none()
        );
    }

    #[test]
    fn bad_paths_are_refused_with_where_and_why() {
        for bad in [
            "$.",
            "$a",
            "$[",
            "$['a'",
            "$[1",
            "$..",
            "$.a b",
            "$[x]",
            "a..",
            "$[99999999999999999999]",
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(matches!(e, PathError::Syntax { .. }), "{bad}: {e}");
        }
        let e = JsonPath::parse("$[?sum(@) > 1]").unwrap_err();
        assert!(e.to_string().contains("function other than"), "{e}");
        for bad in [
            "$[?@..b == 1]",
            "$[?1]",
            "$[?(@.a]",
            "$[?@.a = 1]",
            "$[?@.a == 1e]",
            "$[?x]",
            "$[?@.a == nul]",
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(matches!(e, PathError::Syntax { .. }), "{bad}: {e}");
        }
        let deep = format!("$[?{}@.a{}]", "(".repeat(20), ")".repeat(20));
        let e = JsonPath::parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nest at most 16"), "{e}");
        let nots = format!("$[?{}@.a]", "!".repeat(1000));
        let e = JsonPath::parse(&nots).unwrap_err().to_string();
        assert!(e.contains("nest at most 16"), "{e}");
        assert_eq!(JsonPath::parse(&"a".repeat(2000)), Err(PathError::TooLong));
    }

    #[test]
    fn a_query_stops_at_its_budget() {
        // 100 arrays of 100: `$..*` alone visits 10,101 nodes.
        let wide = Value::Array(vec![Value::Array(vec![json!(0); 100]); 100]);
        let path = JsonPath::parse("$..*").unwrap();
        let mut budget = 5_000;
        assert_eq!(
            path.query(&wide, &mut budget).unwrap_err(),
            PathError::TooCostly(5_000)
        );
        // A filter's own queries spend from the same budget.
        let filtered = JsonPath::parse("$[?@[?@ == 1]]").unwrap();
        let mut budget = 5_000;
        assert_eq!(
            filtered.query(&wide, &mut budget).unwrap_err(),
            PathError::TooCostly(5_000)
        );
        assert_eq!(budget, 0);
    }

    /// Paths made of the syntax's own pieces, in any order: each parses or answers an error,
    /// and a parsed one queries any document within its budget — never a panic, never past it.
    mod arbitrary {
        use super::*;
        use proptest::prelude::*;

        fn pieces() -> impl Strategy<Value = String> {
            let piece = prop::sample::select(vec![
                "$", "@", ".", "..", "[", "]", "?", "(", ")", "*", ",", ":", "-1", "0", "2", "a",
                "b", "'a'", "\"b\"", "==", "!=", "<", ">=", "=~", "!", "&&", "||", " ", "length(",
                "count(", "value(", "match(", "search(", "'^a'", "'(?i)B'", "'('", "'.*'", "true",
                "null", "1.5",
            ]);
            prop::collection::vec(piece, 0..24).prop_map(|p| format!("${}", p.concat()))
        }

        fn document() -> Value {
            json!({"a": [{"a": "ab", "b": 2}, {"a": "B", "b": [1, "a"]}], "b": {"a": null, "b": "aaa"}})
        }

        /// Paths shaped as paths, with filters of every kind: most of these parse.
        fn shaped() -> impl Strategy<Value = String> {
            let term = prop::sample::select(vec![
                "@",
                "@.a",
                "@.b",
                "$.b.b",
                "@[0]",
                "'ab'",
                "2",
                "null",
                "length(@)",
                "length(@.a)",
                "count(@.*)",
                "count(@..*)",
                "value(@..b)",
                "value($.a[0].a)",
            ]);
            let test = (
                term.clone(),
                prop::sample::select(vec!["==", "!=", "<", ">=", "=~"]),
                term,
            )
                .prop_map(|(l, op, r)| {
                    // A pattern is a string or a query (a number there is a syntax error).
                    let r = if op == "=~" && matches!(r, "2" | "null") {
                        "'a'"
                    } else {
                        r
                    };
                    format!("{l} {op} {r}")
                });
            let call = prop::sample::select(vec![
                "match(@, 'a.')",
                "search(@.a, '(?i)B')",
                "match(@, @.a)",
                "search(@, '(')",
                "@.a =~ '^a+$'",
                "!@.b",
                "@.a",
            ])
            .prop_map(str::to_owned);
            let filter = prop::collection::vec(prop_oneof![test, call], 1..4)
                .prop_map(|terms| format!("[?{}]", terms.join(" && ")));
            let segment = prop_oneof![
                prop::sample::select(vec![".a", ".b", "[0]", "[-1]", "[*]", "..a", "..*", "[1:]"])
                    .prop_map(str::to_owned),
                filter,
            ];
            prop::collection::vec(segment, 0..5).prop_map(|s| format!("${}", s.concat()))
        }

        proptest! {
            #[test]
            fn a_shaped_path_parses_and_queries_within_its_budget(path in shaped()) {
                let parsed = JsonPath::parse(&path);
                prop_assert!(parsed.is_ok(), "{path}: {parsed:?}");
                let mut budget = 100_000;
                match parsed.unwrap().query(&document(), &mut budget) {
                    Ok(_) | Err(PathError::BadPattern { .. }) | Err(PathError::TooCostly(_)) => {}
                    Err(e) => prop_assert!(false, "{path}: {e}"),
                }
            }

            #[test]
            fn any_path_parses_or_errs_and_queries_within_its_budget(path in pieces()) {
                if let Ok(parsed) = JsonPath::parse(&path) {
                    let mut budget = 100_000;
                    let _ = parsed.query(&document(), &mut budget);
                    prop_assert!(budget <= 100_000);
                    let mut budget = 100_000;
                    let _ = parsed.compile_patterns(&mut budget);
                }
            }
        }
    }
}
