//! Regular expressions in filters: RedisJSON's `=~` (does the string contain a match) and RFC
//! 9535's `match()` (does the whole string match) and `search()` (does a part), in the `regex`
//! crate's syntax, which RedisJSON's `=~` takes too (`(?i)watch`, `^T`, `\\.example\\.com$`).
//!
//! A filter also runs at apply, so what a pattern costs is bounded and charged alike on every
//! replica: a pattern compiles to an automaton of at most [`MAX_AUTOMATON_BYTES`]; compiling it
//! costs visits in proportion to the automaton's states, and each match the string's bytes times
//! the states — the worst case of the regex crate's slowest engine (a PikeVM steps every state
//! on every byte), so no pattern can make a match cost more than it was charged.
//!
//! What a pattern matches must be the same on every replica: the crates are pinned by
//! Cargo.lock, and their Unicode tables (`\w`, `\p{L}`, `(?i)`) are held by a unit test, so an
//! upgrade that changes them is noticed before it can make two releases disagree.

use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use std::sync::{Arc, OnceLock};

/// Heap one pattern's automaton may take while it compiles (and its lazy DFA's cache).
pub(super) const MAX_AUTOMATON_BYTES: usize = 256 << 10;

/// The longest pattern a document may supply (`@.host =~ $.rule`); one written in the path is
/// bounded by the path's length.
pub(super) const MAX_PATTERN_BYTES: usize = 1024;

/// How deep groups and repetitions may nest in a pattern.
const MAX_NESTING: u32 = 32;

/// Visits compiling a pattern costs per automaton state (and [`Compiled::BASE_VISITS`] before
/// its size is known).
const COMPILE_VISITS_PER_STATE: u64 = 8;

/// The least heap an automaton state takes (a small pattern's average is ~80 bytes): how many
/// states the largest automaton may have.
const BYTES_PER_STATE: u64 = 48;

/// A match costs one visit per this many (byte × state) steps of the worst case.
const STEPS_PER_VISIT: u64 = 32;

/// A compiled pattern and the size of its automaton, which prices each match.
#[derive(Debug)]
pub(super) struct Compiled {
    regex: regex::Regex,
    states: u64,
}

impl Compiled {
    /// Visits compiling any pattern costs, charged before it is compiled.
    pub(super) const BASE_VISITS: u64 = 16;

    /// Compiles `source`; `whole` anchors it at both ends (`match()`). The error says why not.
    pub(super) fn new(source: &str, whole: bool) -> Result<Compiled, String> {
        let anchored;
        let pattern = if whole {
            anchored = format!("^(?:{source})$");
            anchored.as_str()
        } else {
            source
        };
        // The bounded automaton first: a pattern too large for it stops there, before the regex
        // crate builds its own (forward and reverse) ones.
        let automaton = thompson::Compiler::new()
            .syntax(syntax::Config::new().nest_limit(MAX_NESTING))
            .configure(thompson::Config::new().nfa_size_limit(Some(MAX_AUTOMATON_BYTES)))
            .build(pattern)
            .map_err(|e| why(&e))?;
        let regex = regex::RegexBuilder::new(pattern)
            .nest_limit(MAX_NESTING)
            // Its automata are about the size of the one above, which is within bounds.
            .size_limit(4 * MAX_AUTOMATON_BYTES)
            .dfa_size_limit(MAX_AUTOMATON_BYTES)
            .build()
            .map_err(|e| why(&e))?;
        Ok(Compiled {
            regex,
            states: automaton.states().len() as u64,
        })
    }

    /// Visits a pattern that did not compile is charged, besides [`Compiled::BASE_VISITS`]: as
    /// much as the largest that does, for finding that out may have cost that much.
    pub(super) const FAILED_VISITS: u64 =
        (MAX_AUTOMATON_BYTES as u64 / BYTES_PER_STATE) * COMPILE_VISITS_PER_STATE;

    /// Visits compiling this pattern cost, besides [`Compiled::BASE_VISITS`].
    pub(super) fn compile_visits(&self) -> u64 {
        self.states * COMPILE_VISITS_PER_STATE
    }

    /// Visits a match against `text` costs: its worst case, whatever engine answers.
    pub(super) fn match_visits(&self, text: &str) -> u64 {
        1 + (text.len() as u64).saturating_mul(self.states) / STEPS_PER_VISIT
    }

    pub(super) fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// Why a pattern did not compile, on one line: the innermost error's message (a syntax error's
/// last line says what is wrong; the lines above it draw the pattern), and what to do when a
/// pattern is too large.
fn why(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let message = innermost.to_string();
    if message.contains("exceeded") || message.contains("limit") {
        format!(
            "it compiles to more than {} KiB; use a simpler pattern (Unicode classes such as \
             `\\w` are large, `[A-Za-z0-9_]` is small)",
            MAX_AUTOMATON_BYTES >> 10
        )
    } else {
        let last = message.lines().last().unwrap_or_default();
        last.strip_prefix("error: ").unwrap_or(last).to_owned()
    }
}

/// A pattern written in the path. It is compiled when a query first needs it, and charged to
/// that query then, once per parsed path (a read of many documents compiles it once).
#[derive(Debug, Clone)]
pub(super) struct FixedPattern {
    source: String,
    whole: bool,
    compiled: OnceLock<Result<Arc<Compiled>, String>>,
}

impl PartialEq for FixedPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.whole == other.whole
    }
}

impl FixedPattern {
    pub(super) fn new(source: String, whole: bool) -> Self {
        FixedPattern {
            source,
            whole,
            compiled: OnceLock::new(),
        }
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// The compiled pattern once it has been compiled.
    pub(super) fn compiled(&self) -> Option<&Result<Arc<Compiled>, String>> {
        self.compiled.get()
    }

    /// Keeps what compiling it gave (a query that raced another keeps the first).
    pub(super) fn keep(
        &self,
        compiled: Result<Arc<Compiled>, String>,
    ) -> &Result<Arc<Compiled>, String> {
        let _ = self.compiled.set(compiled);
        self.compiled.get().expect("just set")
    }

    pub(super) fn whole(&self) -> bool {
        self.whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn search_finds_a_part_and_match_the_whole() {
        let search = Compiled::new("Blue", false).unwrap();
        assert!(search.is_match("Navy Blue Shirt"));
        let whole = Compiled::new("Blue", true).unwrap();
        assert!(!whole.is_match("Navy Blue Shirt"));
        assert!(whole.is_match("Blue"));
        // An alternation is anchored as a whole, not only its first branch.
        let either = Compiled::new("a|b", true).unwrap();
        assert!(either.is_match("b") && !either.is_match("ab"));
        assert!(
            Compiled::new("(?i)watch", false)
                .unwrap()
                .is_match("Silver Watch")
        );
    }

    #[test]
    fn bad_and_huge_patterns_are_refused_with_why() {
        let e = Compiled::new("(unclosed", false).unwrap_err();
        assert_eq!(e, "unclosed group");
        let e = Compiled::new(r"\w{100}", false).unwrap_err();
        assert!(e.contains("compiles to more than 256 KiB"), "{e}");
        let nested = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(Compiled::new(&nested, false).is_err());
    }

    #[test]
    fn a_match_is_charged_its_worst_case() {
        let small = Compiled::new("Blue", false).unwrap();
        let large = Compiled::new("(?:[ab]*a[ab]{12}){20}c", false).unwrap();
        assert!(
            large.states > 20 * small.states,
            "{} vs {}",
            large.states,
            small.states
        );
        let text = "ab".repeat(5_000);
        assert!(large.match_visits(&text) > 20 * small.match_visits(&text));
        assert!(large.compile_visits() > small.compile_visits());
        assert_eq!(small.match_visits(""), 1);
    }

    /// What `\w`, `\d`, `\s`, `\p{..}` and case-insensitive matching match comes from the regex
    /// crates' Unicode tables. A filter decides writes at apply, so two releases whose tables
    /// differ could apply one entry differently: if this fails after an upgrade of `regex` or
    /// `regex-syntax`, what patterns match changed, and the upgrade must come with a new log
    /// format (as any change to what apply decides), not alone.
    #[test]
    fn the_unicode_tables_patterns_match_by_are_the_pinned_ones() {
        let mut digest = Sha256::new();
        for pattern in [
            r"\w",
            r"\d",
            r"\s",
            r"\b",
            r"\p{L}",
            r"\p{Lu}",
            r"\p{Ll}",
            r"\p{N}",
            r"\p{P}",
            r"\p{Greek}",
            r"(?i)[a-zß-ǿ]",
            r"(?i)\p{Lu}",
            r"(?i)k",
        ] {
            let hir = syntax::parse(pattern).unwrap();
            digest.update(format!("{pattern}={hir:?};").as_bytes());
        }
        let digest = format!("{:x}", digest.finalize());
        assert_eq!(
            digest, "23d600ee19fcc97054f2fd90a3c7b64032cdde147e021561f9e8652148a269df",
            "the regex crates' Unicode tables changed: see this test's comment"
        );
    }
}
