//! `if` conditions in expr syntax (the `expr-lang` crate), as FireScroll ran them with Go's expr:
//! variables `pk`, `sk`, `data`, `_created_at`, `_updated_at`; any other name (`null` included) is
//! nil, so `data == null` means "no record yet". Programs are compiled once and cached.
//!
//! Writes are checked when they arrive ([`Conditions::check`]); the condition is evaluated at apply
//! time against the *stored* record ([`Conditions::eval`]), where any error or non-boolean result
//! is a deterministic rejection of the entry.

mod compat;
mod json_value;
mod subject;

pub use subject::Subject;

use expr::{Program, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Longest `if` accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Compiled programs kept; the cache starts over when it fills.
const CACHE_CAPACITY: usize = 10_000;

/// Why a condition was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CondError {
    /// The text is not a usable condition (refused when the write arrives).
    #[error("error compiling `if` statement `{expr}`: {reason}")]
    Invalid { expr: String, reason: String },
    /// Evaluation failed or did not produce a boolean (a deterministic rejection at apply time).
    #[error("`if` statement `{expr}` failed: {reason}")]
    Runtime { expr: String, reason: String },
}

/// Compiles, caches and evaluates conditions.
#[derive(Default)]
pub struct Conditions {
    cache: Mutex<HashMap<String, Arc<Program>>>,
}

impl Conditions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled program for `source`, from the cache when possible.
    pub fn compile(&self, source: &str) -> Result<Arc<Program>, CondError> {
        if let Some(program) = self.cache.lock().expect("cache lock").get(source) {
            return Ok(program.clone());
        }
        let invalid = |reason: String| CondError::Invalid {
            expr: source.to_string(),
            reason,
        };
        if source.len() > MAX_CONDITION_BYTES {
            return Err(invalid(format!(
                "it is {} bytes; the limit is {MAX_CONDITION_BYTES}",
                source.len()
            )));
        }
        if has_range_operator(source) {
            // `1..n` builds an n-element array: one write could exhaust every replica's memory.
            return Err(invalid(
                "ranges (`..`) are not allowed in conditions".to_string(),
            ));
        }
        let program = expr::compile(&compat::rewrite_negated_string_ops(source))
            .map_err(|e| invalid(e.to_string()))?;
        let program = Arc::new(program);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(source.to_string(), program.clone());
        Ok(program)
    }

    /// Checks a condition when a write or list arrives: it must compile and must be able to
    /// produce a boolean. Types are only known at apply time, so "able to" is decided by running it
    /// on an absent and an empty record: a string, number, map or array result there can never be
    /// a boolean (`"if": "pk"` is refused as FireScroll did); nil or an error may depend on data.
    pub fn check(&self, source: &str) -> Result<Arc<Program>, CondError> {
        let program = self.compile(source)?;
        let empty = Value::Map(Default::default());
        for data in [Value::Nil, empty] {
            let probe = Subject::probe(data);
            if let Ok(value) = expr::run(&program, &probe)
                && !matches!(value, Value::Bool(_) | Value::Nil)
            {
                return Err(CondError::Invalid {
                    expr: source.to_string(),
                    reason: format!("expected bool, but got {}", type_name(&value)),
                });
            }
        }
        Ok(program)
    }

    /// Evaluates a compiled condition against `subject`. Anything but a boolean is an error.
    pub fn eval(
        &self,
        source: &str,
        program: &Program,
        subject: &Subject,
    ) -> Result<bool, CondError> {
        let runtime = |reason: String| CondError::Runtime {
            expr: source.to_string(),
            reason,
        };
        match expr::run(program, subject) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(runtime(format!(
                "it returned {}, not a boolean",
                type_name(&other)
            ))),
            Err(e) => Err(runtime(e.to_string())),
        }
    }
}

/// Whether `source` uses `..` outside string literals.
fn has_range_operator(source: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '.' if chars.peek() == Some(&'.') => return true,
                _ => {}
            },
        }
    }
    false
}

/// The expr name of a value's type, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "int",
        Value::Bool(_) => "bool",
        Value::Float(_) => "float",
        Value::Nil => "nil",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Bytes(_) => "bytes",
        Value::Map(_) | Value::KeyedMap(_) => "map",
    }
}

#[cfg(test)]
mod tests;
