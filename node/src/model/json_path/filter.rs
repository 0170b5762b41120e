//! Filter selectors (`[?@.price < 10]`, `[?(@.region == 'ams' && @.on)]`), as RFC 9535 defines
//! them: comparisons of literals, singular queries (`@.a`, `$.b[0]`) and the functions
//! `length()`, `count()` and `value()`; existence tests (`@.tags`); the tests `match()` and
//! `search()` and RedisJSON's `=~` (regular expressions, `pattern.rs`); `!`, `&&`, `||` and
//! parentheses. Their queries spend from the same budget as the path around them, and they nest
//! at most [`MAX_FILTER_NESTING`] deep, so a filter's cost and the stack it needs are bounded.

use super::parse::Parser;
use super::pattern::{Compiled, FixedPattern, MAX_PATTERN_BYTES};
use super::{PathError, Segment, Selector, Walk};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// How deep filters, parentheses, `!` and function calls may nest inside one another.
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
    /// Whether `subject` is a string with a match of `pattern` (`=~` and `search()`), or one
    /// the whole of which matches (`match()`, `whole`).
    Pattern {
        subject: Operand,
        pattern: PatternOperand,
        whole: bool,
    },
}

/// A query inside a filter: from the current node (`@`) or from the document's root (`$`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FilterQuery {
    relative: bool,
    segments: Vec<Segment>,
}

/// A value in a filter: a literal, a singular query (none or one node), or a function of them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    Literal(Value),
    Query(FilterQuery),
    Call(Box<ValueCall>),
}

/// RFC 9535's functions that give a value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ValueCall {
    /// Characters of a string, elements of an array, members of an object; else nothing.
    Length(Operand),
    /// How many nodes the query matches.
    Count(FilterQuery),
    /// The node the query matches when it matches exactly one; else nothing.
    Value(FilterQuery),
}

/// A pattern: written in the path (compiled once), or read from the document at each node.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PatternOperand {
    Fixed(FixedPattern),
    Read(Operand),
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

/// What a term of a filter is: a value (to compare) or a test.
enum Term {
    Value(Operand),
    Test(Filter),
}

impl Parser<'_> {
    /// A filter selector's expression, after its `?`.
    pub(super) fn filter(&mut self) -> Result<Filter, PathError> {
        self.nested(Self::logical_or)
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_FILTER_NESTING`].
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, PathError>,
    ) -> Result<T, PathError> {
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
        let left = match self.term()? {
            Term::Test(test) => {
                if self.comparison_follows() {
                    return Err(self.error(
                        "match() and search() are tests: use them alone or with !, && and ||",
                    ));
                }
                return Ok(test);
            }
            Term::Value(left) => left,
        };
        if self.eat("=~") {
            self.functions = true;
            let pattern = self.pattern(false)?;
            self.singular(&left)?;
            return Ok(Filter::Pattern {
                subject: left,
                pattern,
                whole: false,
            });
        }
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
            (None, Operand::Call(_)) => Err(self.error(
                "length(), count() and value() give a value: compare it, as in length(@.tags) > 2",
            )),
            (Some(op), left) => {
                let right = self.operand()?;
                self.singular(&left)?;
                self.singular(&right)?;
                Ok(Filter::Compare(left, op, right))
            }
        }
    }

    /// Whether a comparison operator comes next.
    fn comparison_follows(&mut self) -> bool {
        self.skip_spaces();
        let rest = &self.bytes[self.at..];
        ["==", "!=", "<", ">", "=~"]
            .iter()
            .any(|op| rest.starts_with(op.as_bytes()))
    }

    /// Refuses a query that may match more than one node where a value is compared.
    fn singular(&self, operand: &Operand) -> Result<(), PathError> {
        match operand {
            Operand::Query(query) if !query.is_singular() => Err(self.error(
                "a comparison, length(), match() and search() take singular queries (names and \
                 indexes only)",
            )),
            _ => Ok(()),
        }
    }

    /// A value: what comparisons and functions take.
    fn operand(&mut self) -> Result<Operand, PathError> {
        match self.term()? {
            Term::Value(operand) => Ok(operand),
            Term::Test(_) => Err(self.error(
                "match() and search() are tests, not values: use them alone or with !, && and ||",
            )),
        }
    }

    /// The pattern of `=~`, `match()` or `search()`: a string written here, or a value read from
    /// the document.
    fn pattern(&mut self, whole: bool) -> Result<PatternOperand, PathError> {
        match self.operand()? {
            Operand::Literal(Value::String(source)) => {
                Ok(PatternOperand::Fixed(FixedPattern::new(source, whole)))
            }
            Operand::Literal(_) => Err(self.error("a pattern is a string, or a query of one")),
            read => {
                self.singular(&read)?;
                Ok(PatternOperand::Read(read))
            }
        }
    }

    /// A function's arguments, after its name and `(`.
    fn call(&mut self, name: &str) -> Result<Term, PathError> {
        self.functions = true;
        let term = match name {
            "length" => {
                let arg = self.operand()?;
                self.singular(&arg)?;
                Term::Value(Operand::Call(Box::new(ValueCall::Length(arg))))
            }
            "count" | "value" => {
                let Operand::Query(query) = self.operand()? else {
                    return Err(self.error("count() and value() take a query (`@...` or `$...`)"));
                };
                Term::Value(Operand::Call(Box::new(if name == "count" {
                    ValueCall::Count(query)
                } else {
                    ValueCall::Value(query)
                })))
            }
            "match" | "search" => {
                let subject = self.operand()?;
                self.singular(&subject)?;
                if !self.eat(",") {
                    return Err(self
                        .error("match() and search() take two arguments: a string and a pattern"));
                }
                let whole = name == "match";
                Term::Test(Filter::Pattern {
                    subject,
                    pattern: self.pattern(whole)?,
                    whole,
                })
            }
            _ => {
                return Err(PathError::Unsupported(
                    self.path.to_owned(),
                    "a function other than length, count, value, match and search",
                ));
            }
        };
        if !self.eat(")") {
            return Err(self.error("expected `)` after the function's arguments"));
        }
        Ok(term)
    }

    /// A literal, a query or a function call.
    fn term(&mut self) -> Result<Term, PathError> {
        self.skip_spaces();
        let value = match self.peek() {
            Some(start @ (b'@' | b'$')) => {
                self.at += 1;
                let mut segments = Vec::new();
                while matches!(self.peek(), Some(b'.' | b'[')) {
                    segments.push(self.segment()?);
                }
                Operand::Query(FilterQuery {
                    relative: start == b'@',
                    segments,
                })
            }
            Some(quote @ (b'\'' | b'"')) => Operand::Literal(Value::from(self.quoted(quote)?)),
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
                    .map_err(|_| self.error("not a JSON number"))?
            }
            _ => {
                // A name followed by `(`: one of RFC 9535's functions.
                let name_end = self.bytes[self.at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(self.bytes.len(), |n| self.at + n);
                if name_end > self.at && self.bytes.get(name_end) == Some(&b'(') {
                    let name = self.path[self.offset + self.at..self.offset + name_end].to_owned();
                    self.at = name_end + 1;
                    return self.nested(|parser| parser.call(&name));
                }
                let literal = [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ]
                .into_iter()
                .find(|(word, _)| self.eat(word));
                match literal {
                    Some((_, value)) => Operand::Literal(value),
                    None => {
                        return Err(self.error(
                            "expected `@`, `$`, a string, a number, true, false, null or a function",
                        ));
                    }
                }
            }
        };
        Ok(Term::Value(value))
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
            compare(left.as_deref(), *op, right.as_deref())
        }
        Filter::Pattern {
            subject,
            pattern,
            whole,
        } => {
            let subject = operand(walk, subject, current)?;
            let Some(Value::String(text)) = subject.as_deref() else {
                return Ok(false);
            };
            let compiled = match pattern {
                PatternOperand::Fixed(fixed) => Some(walk.fixed_pattern(fixed)?),
                PatternOperand::Read(read) => match operand(walk, read, current)?.as_deref() {
                    Some(Value::String(source)) => walk.read_pattern(source, *whole)?,
                    _ => None,
                },
            };
            match compiled {
                Some(compiled) => {
                    walk.charge(compiled.match_visits(text))?;
                    compiled.is_match(text)
                }
                None => false,
            }
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

/// An operand's value: the literal, the one node its singular query matches, what its function
/// gives (none: nothing).
fn operand<'x, 'a: 'x>(
    walk: &mut Walk<'a, '_>,
    value: &'x Operand,
    current: &'a Value,
) -> Result<Option<Cow<'x, Value>>, PathError> {
    Ok(match value {
        Operand::Literal(value) => Some(Cow::Borrowed(value)),
        Operand::Query(query) => run(walk, query, current)?
            .first()
            .copied()
            .map(Cow::Borrowed),
        Operand::Call(call) => match &**call {
            ValueCall::Length(arg) => {
                let length = match operand(walk, arg, current)?.as_deref() {
                    Some(Value::String(text)) => {
                        // Characters are counted one by one.
                        walk.charge(text.len() as u64 / 64)?;
                        Some(text.chars().count())
                    }
                    Some(Value::Array(items)) => Some(items.len()),
                    Some(Value::Object(members)) => Some(members.len()),
                    _ => None,
                };
                length.map(|n| Cow::Owned(Value::from(n)))
            }
            ValueCall::Count(query) => {
                Some(Cow::Owned(Value::from(run(walk, query, current)?.len())))
            }
            ValueCall::Value(query) => match run(walk, query, current)?.as_slice() {
                [only] => Some(Cow::Borrowed(*only)),
                _ => None,
            },
        },
    })
}

/// The patterns written in `segments`' filters, nested ones included.
pub(super) fn fixed_patterns_of<'f>(segments: &'f [Segment], out: &mut Vec<&'f FixedPattern>) {
    fn in_operand<'f>(operand: &'f Operand, out: &mut Vec<&'f FixedPattern>) {
        match operand {
            Operand::Literal(_) => {}
            Operand::Query(query) => fixed_patterns_of(&query.segments, out),
            Operand::Call(call) => match &**call {
                ValueCall::Length(arg) => in_operand(arg, out),
                ValueCall::Count(query) | ValueCall::Value(query) => {
                    fixed_patterns_of(&query.segments, out);
                }
            },
        }
    }
    fn in_filter<'f>(filter: &'f Filter, out: &mut Vec<&'f FixedPattern>) {
        match filter {
            Filter::Or(terms) | Filter::And(terms) => {
                terms.iter().for_each(|term| in_filter(term, out));
            }
            Filter::Not(inner) => in_filter(inner, out),
            Filter::Exists(query) => fixed_patterns_of(&query.segments, out),
            Filter::Compare(left, _, right) => {
                in_operand(left, out);
                in_operand(right, out);
            }
            Filter::Pattern {
                subject, pattern, ..
            } => {
                in_operand(subject, out);
                match pattern {
                    PatternOperand::Fixed(fixed) => out.push(fixed),
                    PatternOperand::Read(read) => in_operand(read, out),
                }
            }
        }
    }
    for segment in segments {
        let (Segment::Child(selectors) | Segment::Descendant(selectors)) = segment;
        for selector in selectors {
            if let Selector::Filter(filter) = selector {
                in_filter(filter, out);
            }
        }
    }
}

impl Walk<'_, '_> {
    /// A pattern written in the path, compiled (and charged) the first time any query of the
    /// path needs it; one that does not compile fails the query, saying why.
    pub(super) fn fixed_pattern(
        &mut self,
        fixed: &FixedPattern,
    ) -> Result<Arc<Compiled>, PathError> {
        let compiled = match fixed.compiled() {
            Some(compiled) => compiled,
            None => {
                let compiled = self.compile(fixed.source(), fixed.whole())?;
                fixed.keep(compiled)
            }
        };
        compiled.clone().map_err(|reason| PathError::BadPattern {
            pattern: fixed.source().to_owned(),
            reason,
        })
    }

    /// A pattern read from the document, compiled once per query (and charged then); one that
    /// does not compile, or is longer than [`MAX_PATTERN_BYTES`], matches nothing, as in
    /// RedisJSON.
    fn read_pattern(
        &mut self,
        source: &str,
        whole: bool,
    ) -> Result<Option<Arc<Compiled>>, PathError> {
        /// Patterns one query keeps compiled; past it each is compiled (and charged) again.
        const KEPT: usize = 16;
        if source.len() > MAX_PATTERN_BYTES {
            return Ok(None);
        }
        if let Some((_, _, compiled)) = self
            .patterns
            .iter()
            .find(|(kept, kept_whole, _)| kept == source && *kept_whole == whole)
        {
            return Ok(compiled.clone());
        }
        let compiled = self.compile(source, whole)?.ok();
        if self.patterns.len() < KEPT {
            self.patterns
                .push((source.to_owned(), whole, compiled.clone()));
        }
        Ok(compiled)
    }

    /// Compiles a pattern, charging for it: a fixed part first, then its automaton's size.
    fn compile(
        &mut self,
        source: &str,
        whole: bool,
    ) -> Result<Result<Arc<Compiled>, String>, PathError> {
        self.charge(Compiled::BASE_VISITS)?;
        match Compiled::new(source, whole) {
            Ok(compiled) => {
                self.charge(compiled.compile_visits())?;
                Ok(Ok(Arc::new(compiled)))
            }
            // Why it did not compile says more than the budget would; a charge past the budget
            // has still spent it all, so the query ends at its next visit.
            Err(why) => {
                let _ = self.charge(Compiled::FAILED_VISITS);
                Ok(Err(why))
            }
        }
    }
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
