//! Deterministic evaluation budgets (a FireScroll addition to expr-lang; see FIRESCROLL.md).
//!
//! A program run with [`run_bounded`] is charged, by the evaluator itself and never by a clock:
//! - one **step** per evaluated node, plus the comparisons of the functions whose work grows
//!   faster than their input (`sort`, `uniq`, `groupBy`, `fromPairs`, ...);
//! - the **bytes** of every value a node produces (a value's [`weight`]), so the work of copying
//!   and building values is paid for, and functions whose output can dwarf their input (`repeat`,
//!   `replace`, `join`, `split`, ranges) check what they would build before they allocate;
//! - the evaluation **depth** (nested nodes) and the nesting depth of every value produced.
//!
//! Running out is [`Error::BudgetExceeded`] at the same point on every machine that runs the
//! same program on the same input: the charges depend only on the program and the values.
//! Outside `run_bounded` nothing is charged, so [`crate::run`] behaves as upstream.

use crate::ast::node::Node;
use crate::ast::postfix_operator::PostfixOperator;
use crate::ast::program::Program;
use crate::eval::DEFAULT_ENVIRONMENT;
use crate::{ContextProvider, Error, Result, Value};
use std::cell::Cell;

/// What one budget allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Evaluation steps (nodes evaluated, plus comparisons in superlinear functions).
    pub steps: u64,
    /// Total weight, in bytes, of the values produced.
    pub bytes: u64,
    /// Deepest nesting of nodes being evaluated (and of a compiled program's tree).
    pub depth: u32,
    /// Deepest nesting of arrays and maps inside one produced value.
    pub value_depth: u32,
}

/// A budget that one or several evaluations spend from, in turn.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    steps_used: u64,
    bytes_used: u64,
}

impl Budget {
    /// A full budget.
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            steps_used: 0,
            bytes_used: 0,
        }
    }

    /// The limits this budget started from.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Steps spent so far.
    pub fn steps_used(&self) -> u64 {
        self.steps_used
    }

    /// Bytes spent so far.
    pub fn bytes_used(&self) -> u64 {
        self.bytes_used
    }

    /// Whether the steps or bytes are all spent.
    pub fn is_exhausted(&self) -> bool {
        self.steps_used >= self.limits.steps || self.bytes_used >= self.limits.bytes
    }
}

/// The budget of the evaluation running on this thread.
#[derive(Clone, Copy)]
struct Meter {
    steps_left: u64,
    bytes_left: u64,
    depth: u32,
    max_depth: u32,
    max_value_depth: u32,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// Stack kept free below an evaluation frame before a new stack segment is used.
const STACK_RED_ZONE: usize = 128 * 1024;
/// Size of each extra stack segment.
const STACK_SEGMENT: usize = 2 * 1024 * 1024;
/// Stack a compilation runs on (the parser and the tree builder recurse per nesting level).
const COMPILE_STACK: usize = 16 * 1024 * 1024;

/// Runs `program` against `ctx` with the default environment, charging `budget`.
///
/// The budget may be shared by several runs (the conditions of one log entry): each run spends
/// from what the previous ones left.
pub fn run_bounded(program: &Program, ctx: &dyn ContextProvider, budget: &mut Budget) -> Result<Value> {
    let limits = budget.limits;
    let meter = Meter {
        steps_left: limits.steps.saturating_sub(budget.steps_used),
        bytes_left: limits.bytes.saturating_sub(budget.bytes_used),
        depth: 0,
        max_depth: limits.depth,
        max_value_depth: limits.value_depth,
    };
    // Restores the previous meter even if the evaluation panics.
    struct Installed(Option<Meter>);
    impl Drop for Installed {
        fn drop(&mut self) {
            METER.with(|m| m.set(self.0));
        }
    }
    let previous = METER.with(|m| m.replace(Some(meter)));
    let guard = Installed(previous);
    let result = DEFAULT_ENVIRONMENT.run(program, ctx);
    if let Some(left) = METER.with(|m| m.get()) {
        budget.steps_used = limits.steps - left.steps_left.min(limits.steps);
        budget.bytes_used = limits.bytes - left.bytes_left.min(limits.bytes);
    }
    drop(guard);
    result
}

/// Compiles `code` like [`crate::compile`], on a stack of its own (no input can overflow the
/// caller's), and refuses programs whose tree is deeper than `max_depth`.
pub fn compile_bounded(code: &str, max_depth: u32) -> Result<Program> {
    check_nesting(code, max_depth / 4)?;
    stacker::grow(COMPILE_STACK, || {
        let program = crate::compile(code)?;
        let depth = program_depth(&program, max_depth + 1);
        if depth > max_depth {
            // Dropped here, on the big stack: a deep tree is dropped recursively.
            drop(program);
            return Err(Error::ParseError(format!(
                "expression is nested too deeply (more than {max_depth} levels)"
            )));
        }
        Ok(program)
    })
}

/// Refuses, before the parser sees it, source whose brackets nest deeper than `max` or that
/// chains more than `max` conditionals (`?:`, `??`, `if`): the parser recurses once per level
/// of both, and a few kilobytes of them could otherwise need more stack than any thread has.
fn check_nesting(code: &str, max: u32) -> Result<()> {
    let bytes = code.as_bytes();
    let (mut depth, mut deepest, mut chains) = (0u32, 0u32, 0u32);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' && quote != b'`' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' if bytes.get(i + 1) == Some(&b'.') => i += 1,
            b'?' => {
                chains += 1;
                if bytes.get(i + 1) == Some(&b'?') {
                    i += 1;
                }
            }
            b'i' if bytes.get(i + 1) == Some(&b'f')
                && (i == 0 || !is_word_byte(bytes[i - 1]))
                && !bytes.get(i + 2).is_some_and(|b| is_word_byte(*b)) =>
            {
                chains += 1;
            }
            _ => {}
        }
        i += 1;
    }
    if deepest > max {
        return Err(Error::ParseError(format!(
            "expression is nested too deeply: brackets nest {deepest} levels, at most {max} are allowed"
        )));
    }
    if chains > max {
        return Err(Error::ParseError(format!(
            "expression has {chains} conditionals (`?:`, `??`, `if`), at most {max} are allowed"
        )));
    }
    Ok(())
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'#'
}

/// Runs `f` on a stack with room for it: a new segment when this one is nearly used up.
pub(crate) fn with_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, f)
}

/// Charges one step and enters one level of evaluation.
#[inline]
pub(crate) fn enter() -> Result<()> {
    METER.with(|m| {
        let Some(mut meter) = m.get() else {
            return Ok(());
        };
        if meter.steps_left == 0 {
            return Err(Error::BudgetExceeded("evaluation budget exceeded: too many steps".into()));
        }
        if meter.depth >= meter.max_depth {
            return Err(Error::BudgetExceeded(format!(
                "evaluation budget exceeded: nested deeper than {} levels",
                meter.max_depth
            )));
        }
        meter.steps_left -= 1;
        meter.depth += 1;
        m.set(Some(meter));
        Ok(())
    })
}

/// Leaves one level of evaluation.
#[inline]
pub(crate) fn leave() {
    METER.with(|m| {
        if let Some(mut meter) = m.get() {
            meter.depth = meter.depth.saturating_sub(1);
            m.set(Some(meter));
        }
    })
}

/// Charges `n` steps of work done inside a function.
#[inline]
pub(crate) fn steps(n: u64) -> Result<()> {
    METER.with(|m| {
        let Some(mut meter) = m.get() else {
            return Ok(());
        };
        if meter.steps_left < n {
            meter.steps_left = 0;
            m.set(Some(meter));
            return Err(Error::BudgetExceeded("evaluation budget exceeded: too many steps".into()));
        }
        meter.steps_left -= n;
        m.set(Some(meter));
        Ok(())
    })
}

/// Refuses to build a value of about `bytes` bytes when the budget cannot pay for it (checked
/// before allocating; the value is charged once built, by the node that produced it).
pub(crate) fn ensure_bytes(bytes: u128) -> Result<()> {
    METER.with(|m| match m.get() {
        Some(meter) if bytes > u128::from(meter.bytes_left) => Err(Error::BudgetExceeded(
            "evaluation budget exceeded: the value would be too large".into(),
        )),
        _ => Ok(()),
    })
}

/// Charges the weight of a value a node produced, and checks its nesting.
#[inline]
pub(crate) fn charge_value(value: &Value) -> Result<()> {
    METER.with(|m| {
        let Some(mut meter) = m.get() else {
            return Ok(());
        };
        let weight = match weight(value, meter.bytes_left, meter.max_value_depth) {
            Ok(w) => w,
            Err(Excess::Bytes) => {
                meter.bytes_left = 0;
                m.set(Some(meter));
                return Err(Error::BudgetExceeded(
                    "evaluation budget exceeded: too many bytes of values".into(),
                ));
            }
            Err(Excess::Depth) => {
                return Err(Error::BudgetExceeded(format!(
                    "evaluation budget exceeded: a value nested deeper than {} levels",
                    meter.max_value_depth
                )));
            }
        };
        meter.bytes_left -= weight;
        m.set(Some(meter));
        Ok(())
    })
}

enum Excess {
    Bytes,
    Depth,
}

/// Fixed cost of any value.
const VALUE_BYTES: u64 = 16;
/// Extra fixed cost of a string, array or map (its header).
const CONTAINER_BYTES: u64 = 24;

/// The weight of a value in bytes: 16 per value, plus for strings and byte arrays 24 and their
/// length, for arrays 24 and their items, for maps 24 and, per entry, 24 and the key and value.
/// Stops counting as soon as the weight passes `cap` or the value nests deeper than `max_depth`,
/// so weighing costs at most what the budget had left.
pub fn value_weight(value: &Value, cap: u64, max_depth: u32) -> Option<u64> {
    weight(value, cap, max_depth).ok()
}

fn weight(value: &Value, cap: u64, max_depth: u32) -> std::result::Result<u64, Excess> {
    let mut total = 0u64;
    add_weight(value, &mut total, cap, 0, max_depth)?;
    Ok(total)
}

fn add_weight(
    value: &Value,
    total: &mut u64,
    cap: u64,
    depth: u32,
    max_depth: u32,
) -> std::result::Result<(), Excess> {
    let add = |n: u64, total: &mut u64| {
        *total = total.saturating_add(n);
        if *total > cap { Err(Excess::Bytes) } else { Ok(()) }
    };
    match value {
        Value::String(s) => add(VALUE_BYTES + CONTAINER_BYTES + s.len() as u64, total),
        Value::Bytes(b) => add(VALUE_BYTES + CONTAINER_BYTES + b.len() as u64, total),
        Value::Array(items) => {
            if depth >= max_depth {
                return Err(Excess::Depth);
            }
            add(VALUE_BYTES + CONTAINER_BYTES, total)?;
            for item in items {
                add_weight(item, total, cap, depth + 1, max_depth)?;
            }
            Ok(())
        }
        Value::Map(map) => {
            if depth >= max_depth {
                return Err(Excess::Depth);
            }
            add(VALUE_BYTES + CONTAINER_BYTES, total)?;
            for (key, item) in map {
                add(CONTAINER_BYTES + key.len() as u64, total)?;
                add_weight(item, total, cap, depth + 1, max_depth)?;
            }
            Ok(())
        }
        Value::KeyedMap(entries) => {
            if depth >= max_depth {
                return Err(Excess::Depth);
            }
            add(VALUE_BYTES + CONTAINER_BYTES, total)?;
            for (key, item) in entries {
                add_weight(key, total, cap, depth + 1, max_depth)?;
                add_weight(item, total, cap, depth + 1, max_depth)?;
            }
            Ok(())
        }
        _ => add(VALUE_BYTES, total),
    }
}

/// Depth of a program's tree, counting no further than `cap`.
fn program_depth(program: &Program, cap: u32) -> u32 {
    let lines = program.lines.iter().map(|(_, node)| node_depth(node, cap));
    lines.chain([node_depth(&program.expr, cap)]).max().unwrap_or(0)
}

fn node_depth(node: &Node, cap: u32) -> u32 {
    if cap == 0 {
        return 1;
    }
    let below = cap - 1;
    let children = match node {
        Node::Ident(_) | Node::Value(_) => 0,
        Node::Array(items) => items.iter().map(|n| node_depth(n, below)).max().unwrap_or(0),
        Node::Range(a, b) => node_depth(a, below).max(node_depth(b, below)),
        Node::Func { args, predicate, .. } => args
            .iter()
            .map(|n| node_depth(n, below))
            .chain(predicate.iter().map(|p| program_depth(p, below)))
            .max()
            .unwrap_or(0),
        Node::Unary { node, .. } => node_depth(node, below),
        Node::Operation { left, right, .. } => node_depth(left, below).max(node_depth(right, below)),
        Node::Postfix { operator, node } => {
            let operand = node_depth(node, below);
            let op = match operator {
                PostfixOperator::Index { idx, .. } => node_depth(idx, below),
                PostfixOperator::Range { start, end } => start
                    .iter()
                    .chain(end)
                    .map(|n| node_depth(n, below))
                    .max()
                    .unwrap_or(0),
                PostfixOperator::Default(n) | PostfixOperator::Pipe(n) => node_depth(n, below),
                PostfixOperator::Ternary { left, right } => {
                    node_depth(left, below).max(node_depth(right, below))
                }
                PostfixOperator::Method { args, .. } => {
                    args.iter().map(|n| node_depth(n, below)).max().unwrap_or(0)
                }
            };
            operand.max(op)
        }
        Node::Conditional { condition, consequent, alternative } => node_depth(condition, below)
            .max(program_depth(consequent, below))
            .max(program_depth(alternative, below)),
    };
    1 + children
}
