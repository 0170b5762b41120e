//! Filter selectors (`[?@.price < 10]`, `[?(@.region == 'ams' && @.on)]`), as RFC 9535 defines
//! them without its functions: comparisons of literals and singular queries (`@.a`, `$.b[0]`),
//! existence tests (`@.tags`), `!`, `&&`, `||` and parentheses. Their queries spend from the
//! same budget as the path around them, and they nest at most [`MAX_FILTER_NESTING`] deep, so a
//! filter's cost and the stack it needs are bounded.

use super::parse::Parser;
use super::{PathError, Segment, Selector, Walk};
use serde_json::Value;
use std::cmp::Ordering;

/// How deep filters and parentheses may nest inside one another.
pub(super) const MAX_FILTER_NESTING: usize = 16;

/// A filter's logical expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Filter {
    Or(Vec<Filter>),
    And(Vec<Filter>),
    Not(Box<Filter>),
    /// True when the query matches anything.
    Exists(FilterQuery),
    Compare(Operand, CmpOp, Operand),
}

/// A query inside a filter: from the current node (`@`) or from the document's root (`$`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FilterQuery {
    relative: bool,
    segments: Vec<Segment>,
}

/// One side of a comparison: a literal, or a singular query (none or one node).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    Literal(Value),
    Query(FilterQuery),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Parser<'_> {
    /// A filter selector's expression, after its `?`.
    pub(super) fn filter(&mut self) -> Result<Filter, PathError> {
        self.nested(Self::logical_or)
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_FILTER_NESTING`].
    fn nested<T>(&mut self, parse: fn(&mut Self) -> Result<T, PathError>) -> Result<T, PathError> {
        if self.filter_depth >= MAX_FILTER_NESTING {
            return Err(self.error("filters, parentheses and `!` nest at most 16 deep"));
        }
        self.filter_depth += 1;
        let parsed = parse(self);
        self.filter_depth -= 1;
        parsed
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.bytes[self.at..].starts_with(token.as_bytes()) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn logical_or(&mut self) -> Result<Filter, PathError> {
        self.joined("||", Self::logical_and, Filter::Or)
    }

    fn logical_and(&mut self) -> Result<Filter, PathError> {
        self.joined("&&", Self::basic, Filter::And)
    }

    /// Terms `term` parses, joined by `token`: the one term, or `join` of them all.
    fn joined(
        &mut self,
        token: &str,
        term: fn(&mut Self) -> Result<Filter, PathError>,
        join: fn(Vec<Filter>) -> Filter,
    ) -> Result<Filter, PathError> {
        let mut terms = vec![term(self)?];
        while self.eat(token) {
            terms.push(term(self)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            join(terms)
        })
    }

    fn basic(&mut self) -> Result<Filter, PathError> {
        self.skip_spaces();
        if self.peek() == Some(b'!') && self.bytes.get(self.at + 1) != Some(&b'=') {
            self.at += 1;
            // Counted as nesting: a path of 1,000 `!`s would otherwise recurse 1,000 deep.
            return Ok(Filter::Not(Box::new(self.nested(Self::basic)?)));
        }
        if self.eat("(") {
            let inner = self.nested(Self::logical_or)?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let left = self.operand()?;
        let op = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, op)| op);
        match (op, left) {
            (None, Operand::Query(query)) => Ok(Filter::Exists(query)),
            (None, Operand::Literal(_)) => Err(self.error("a literal alone is not a test")),
            (Some(op), left) => {
                let right = self.operand()?;
                for side in [&left, &right] {
                    if let Operand::Query(query) = side
                        && !query.is_singular()
                    {
                        return Err(self.error(
                            "a comparison takes singular queries (names and indexes only)",
                        ));
                    }
                }
                Ok(Filter::Compare(left, op, right))
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, PathError> {
        self.skip_spaces();
        match self.peek() {
            Some(start @ (b'@' | b'$')) => {
                self.at += 1;
                let mut segments = Vec::new();
                while matches!(self.peek(), Some(b'.' | b'[')) {
                    segments.push(self.segment()?);
                }
                Ok(Operand::Query(FilterQuery {
                    relative: start == b'@',
                    segments,
                }))
            }
            Some(quote @ (b'\'' | b'"')) => Ok(Operand::Literal(Value::from(self.quoted(quote)?))),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self.peek().is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.at += 1;
                }
                let text = &self.path[self.offset + start..self.offset + self.at];
                serde_json::from_str::<serde_json::Number>(text)
                    .map(|n| Operand::Literal(Value::Number(n)))
                    .map_err(|_| self.error("not a JSON number"))
            }
            _ => {
                for (word, value) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.eat(word) {
                        return Ok(Operand::Literal(value));
                    }
                }
                // A name followed by `(`: one of RFC 9535's functions.
                let name_end = self.bytes[self.at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(self.bytes.len(), |n| self.at + n);
                if name_end > self.at && self.bytes.get(name_end) == Some(&b'(') {
                    return Err(PathError::Unsupported(
                        self.path.to_owned(),
                        "a function in a filter (length, count, match, search, value)",
                    ));
                }
                Err(self.error("expected `@`, `$`, a string, a number, true, false or null"))
            }
        }
    }
}

impl FilterQuery {
    /// Whether it names at most one node: only single names and indexes.
    fn is_singular(&self) -> bool {
        self.segments.iter().all(|segment| {
            matches!(segment, Segment::Child(s)
                if matches!(s.as_slice(), [Selector::Name(_) | Selector::Index(_)]))
        })
    }
}

/// Whether `filter` holds for `current`, its queries spending from `walk`'s budget.
pub(super) fn holds<'a>(
    walk: &mut Walk<'a, '_>,
    filter: &Filter,
    current: &'a Value,
) -> Result<bool, PathError> {
    Ok(match filter {
        Filter::Or(terms) => {
            for term in terms {
                if holds(walk, term, current)? {
                    return Ok(true);
                }
            }
            false
        }
        Filter::And(terms) => {
            for term in terms {
                if !holds(walk, term, current)? {
                    return Ok(false);
                }
            }
            true
        }
        Filter::Not(inner) => !holds(walk, inner, current)?,
        Filter::Exists(query) => !run(walk, query, current)?.is_empty(),
        Filter::Compare(left, op, right) => {
            let left = operand(walk, left, current)?;
            let right = operand(walk, right, current)?;
            compare(left, *op, right)
        }
    })
}

fn run<'a>(
    walk: &mut Walk<'a, '_>,
    query: &FilterQuery,
    current: &'a Value,
) -> Result<Vec<&'a Value>, PathError> {
    let start = if query.relative { current } else { walk.root };
    Ok(walk
        .segments(&query.segments, start)?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

/// An operand's value: the literal, or the one node its singular query matches (none: nothing).
fn operand<'x, 'a: 'x>(
    walk: &mut Walk<'a, '_>,
    operand: &'x Operand,
    current: &'a Value,
) -> Result<Option<&'x Value>, PathError> {
    Ok(match operand {
        Operand::Literal(value) => Some(value),
        Operand::Query(query) => run(walk, query, current)?.first().copied(),
    })
}

/// RFC 9535's comparisons: nothing equals only nothing; numbers compare by value, strings by
/// code points; `<` and friends are false for other kinds.
fn compare(left: Option<&Value>, op: CmpOp, right: Option<&Value>) -> bool {
    let equal = || match (left, right) {
        (None, None) => true,
        (Some(a), Some(b)) => json_equal(a, b),
        _ => false,
    };
    let less = |a: Option<&Value>, b: Option<&Value>| matches!(order(a, b), Some(Ordering::Less));
    match op {
        CmpOp::Eq => equal(),
        CmpOp::Ne => !equal(),
        CmpOp::Lt => less(left, right),
        CmpOp::Gt => less(right, left),
        CmpOp::Le => less(left, right) || equal(),
        CmpOp::Ge => less(right, left) || equal(),
    }
}

fn order(a: Option<&Value>, b: Option<&Value>) -> Option<Ordering> {
    match (a?, b?) {
        (Value::Number(a), Value::Number(b)) => number_order(a, b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn number_order(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Deep equality with numbers compared by value (`1 == 1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => number_order(a, b) == Some(Ordering::Equal),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, value)| b.get(key).is_some_and(|other| json_equal(value, other)))
        }
        (a, b) => a == b,
    }
}
