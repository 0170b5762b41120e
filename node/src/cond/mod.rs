//! `if` conditions in expr syntax (the `expr-lang` crate), as FireScroll ran them with Go's expr:
//! variables `pk`, `sk`, `data`, `_created_at`, `_updated_at`, `_expires_at`; any other name (`null` included) is
//! nil, so `data == null` means "no record yet". Programs are compiled once and cached.
//!
//! Writes are checked when they arrive ([`Conditions::check`]); the condition is evaluated at apply
//! time against the *stored* record ([`Conditions::eval`]), where any error or non-boolean result
//! is a deterministic rejection of the entry.
//!
//! Every evaluation spends from a [`Budget`] (steps, bytes of values, depth) counted by the
//! evaluator, never by a clock, so a hostile condition fails at the same point on every replica:
//! the conditions of one entry share [`ENTRY_LIMITS`], a list request's [`LIST_LIMITS`].

mod compat;
mod json_value;
mod subject;

pub use expr::{Budget, Limits};
pub use subject::Subject;

use expr::{Program, Value};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

/// Longest `if` accepted, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Deepest expression tree accepted (brackets may nest a quarter of it).
pub const MAX_CONDITION_DEPTH: u32 = 256;
/// Compiled programs kept; the cache starts over when it fills.
const CACHE_CAPACITY: usize = 10_000;

/// What all the conditions of one log entry may spend together, on every replica alike. Part of
/// the log entry format (docs/log-entry-v1.md): changing it changes which entries apply.
pub const ENTRY_LIMITS: Limits = Limits {
    steps: 1_000_000,
    bytes: 64 << 20,
    depth: MAX_CONDITION_DEPTH,
    value_depth: 128,
};

/// What the `if` of one list request may spend over all the records it looks at.
pub const LIST_LIMITS: Limits = Limits {
    steps: 10_000_000,
    bytes: 512 << 20,
    depth: MAX_CONDITION_DEPTH,
    value_depth: 128,
};

/// What checking the conditions of one request on arrival may spend (on an absent and an empty
/// record each).
const CHECK_LIMITS: Limits = Limits {
    steps: 100_000,
    bytes: 8 << 20,
    depth: MAX_CONDITION_DEPTH,
    value_depth: 128,
};

/// A budget for checking the conditions of one request when it arrives.
pub fn arrival_budget() -> Budget {
    Budget::new(CHECK_LIMITS)
}

/// Why a condition was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CondError {
    /// The text is not a usable condition (refused when the write arrives).
    #[error("error compiling `if` statement `{expr}`: {reason}")]
    Invalid { expr: String, reason: String },
    /// Evaluation failed or did not produce a boolean (a deterministic rejection at apply time).
    #[error("`if` statement `{expr}` failed: {reason}")]
    Runtime { expr: String, reason: String },
    /// The budget ran out during this evaluation (deterministic: same step on every replica).
    #[error("`if` statement `{expr}` failed: {reason}")]
    BudgetExceeded { expr: String, reason: String },
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

    /// The compiled program for `source`, from the cache when possible. Compiling is bounded:
    /// no text can overflow the stack or build a tree deeper than [`MAX_CONDITION_DEPTH`].
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
        let rewritten = compat::rewrite_negated_string_ops(source);
        let program = expr::compile_bounded(&rewritten, MAX_CONDITION_DEPTH)
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
    /// A condition that exhausts [`arrival_budget`] even there is refused too.
    pub fn check(&self, source: &str) -> Result<Arc<Program>, CondError> {
        self.check_within(source, &mut arrival_budget())
    }

    /// [`Conditions::check`], spending from `budget`: the conditions of one request share one,
    /// so a request with many conditions cannot multiply the work done before it is accepted.
    pub fn check_within(
        &self,
        source: &str,
        budget: &mut Budget,
    ) -> Result<Arc<Program>, CondError> {
        let program = self.compile(source)?;
        let empty = Value::Map(Default::default());
        for data in [Value::Nil, empty] {
            let probe = Subject::probe(data);
            match run(source, &program, &probe, budget) {
                Ok(Value::Bool(_) | Value::Nil) | Err(CondError::Runtime { .. }) => {}
                Ok(value) => {
                    return Err(CondError::Invalid {
                        expr: source.to_string(),
                        reason: format!("expected bool, but got {}", type_name(&value)),
                    });
                }
                Err(
                    CondError::BudgetExceeded { reason, .. } | CondError::Invalid { reason, .. },
                ) => {
                    return Err(CondError::Invalid {
                        expr: source.to_string(),
                        reason: format!(
                            "{reason}, even on an empty record (a request's conditions may spend \
                             {} steps and {} MiB there)",
                            CHECK_LIMITS.steps,
                            CHECK_LIMITS.bytes >> 20
                        ),
                    });
                }
            }
        }
        Ok(program)
    }

    /// Evaluates a compiled condition against `subject`, spending from `budget`. Anything but a
    /// boolean is an error; so is running out of budget.
    pub fn eval(
        &self,
        source: &str,
        program: &Program,
        subject: &Subject,
        budget: &mut Budget,
    ) -> Result<bool, CondError> {
        match run(source, program, subject, budget)? {
            Value::Bool(b) => Ok(b),
            other => Err(CondError::Runtime {
                expr: source.to_string(),
                reason: format!("it returned {}, not a boolean", type_name(&other)),
            }),
        }
    }
}

/// Runs a program under `budget`. A panic in the evaluator is a failure of this evaluation (the
/// same on every replica, as the evaluator is deterministic), never of the node.
fn run(
    source: &str,
    program: &Program,
    subject: &Subject,
    budget: &mut Budget,
) -> Result<Value, CondError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        expr::run_bounded(program, subject, budget)
    }));
    let runtime = |reason: String| CondError::Runtime {
        expr: source.to_string(),
        reason,
    };
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(expr::Error::BudgetExceeded(reason))) => Err(CondError::BudgetExceeded {
            expr: source.to_string(),
            reason,
        }),
        Ok(Err(e)) => Err(runtime(e.to_string())),
        Err(_) => Err(runtime(
            "the evaluator failed (panicked) on this input".into(),
        )),
    }
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
