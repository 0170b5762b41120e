//! Go expr syntax the Rust crate lacks: `a not contains b` (also `not startsWith`, `not endsWith`,
//! `not matches`), which FireScroll users wrote (its own records.http does). Rewritten to
//! `!(a contains b)` before compiling.
//!
//! These operators share the comparison precedence level, so an operand runs until the nearest
//! token at that level or lower (comparisons, `&&`, `||`, `?`, `:`, `,`, `;`, `|`) or an
//! unbalanced bracket.

const NEGATABLE: [&str; 4] = ["contains", "startsWith", "endsWith", "matches"];
const BOUNDARIES: [&str; 19] = [
    "==", "!=", "<", "<=", ">", ">=", "&&", "||", "and", "or", "in", "not", "?", ":", ",", ";",
    "|", "let", "contains",
];

#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
}

fn tokenize(src: &str) -> Vec<Token> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' && c != b'`' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'#' || c >= 0x80 {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || matches!(bytes[i], b'_' | b'$' | b'#')
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            i += if ["==", "!=", "<=", ">=", "&&", "||", "??", "?.", ".."].contains(&two) {
                2
            } else {
                1
            };
        }
        tokens.push(Token { start, end: i });
    }
    tokens
}

fn is_boundary(text: &str) -> bool {
    BOUNDARIES.contains(&text) || NEGATABLE.contains(&text)
}

/// Rewrites every `a not OP b` into `!(a OP b)`; other text is returned unchanged.
pub fn rewrite_negated_string_ops(src: &str) -> String {
    let mut src = src.to_string();
    loop {
        let tokens = tokenize(&src);
        let text = |t: &Token| &src[t.start..t.end];
        let Some(i) = (0..tokens.len().saturating_sub(1))
            .find(|&i| text(&tokens[i]) == "not" && NEGATABLE.contains(&text(&tokens[i + 1])))
        else {
            return src;
        };
        // Left operand: back to a boundary or an unmatched opening bracket.
        let mut depth = 0i32;
        let mut left = i;
        while left > 0 {
            let t = text(&tokens[left - 1]);
            match t {
                ")" | "]" | "}" => depth += 1,
                "(" | "[" | "{" if depth == 0 => break,
                "(" | "[" | "{" => depth -= 1,
                _ if depth == 0 && is_boundary(t) => break,
                _ => {}
            }
            left -= 1;
        }
        // Right operand: forward to a boundary or an unmatched closing bracket.
        let mut depth = 0i32;
        let mut right = i + 2;
        while right < tokens.len() {
            let t = text(&tokens[right]);
            match t {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" if depth == 0 => break,
                ")" | "]" | "}" => depth -= 1,
                _ if depth == 0 && is_boundary(t) => break,
                _ => {}
            }
            right += 1;
        }
        if left == i || right == i + 2 {
            // An operand is missing: leave the text for the compiler to report.
            return src;
        }
        let lhs = &src[tokens[left].start..tokens[i].start];
        let op = text(&tokens[i + 1]);
        let rhs = &src[tokens[i + 2].start..tokens[right - 1].end];
        let replaced = format!("!({} {op} {})", lhs.trim_end(), rhs);
        src = format!(
            "{}{}{}",
            &src[..tokens[left].start],
            replaced,
            &src[tokens[right - 1].end..]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_negated_string_ops as rw;

    #[test]
    fn rewrites_at_comparison_precedence() {
        assert_eq!(
            rw(r#"sk > "sk3" && sk not contains "_a""#),
            r#"sk > "sk3" && !(sk contains "_a")"#
        );
        assert_eq!(
            rw(r#"data.a + "x" not startsWith "y""#),
            r#"!(data.a + "x" startsWith "y")"#
        );
        assert_eq!(
            rw(r#"(pk not endsWith "z") || f(a, b not matches "^q")"#),
            r#"(!(pk endsWith "z")) || f(a, !(b matches "^q"))"#
        );
        assert_eq!(
            rw(r#"a not contains "x" and b not contains "y""#),
            r#"!(a contains "x") and !(b contains "y")"#
        );
    }

    #[test]
    fn leaves_everything_else_alone() {
        for s in [
            r#"x not in ["a"]"#,
            r#"not (a contains "b")"#,
            r#""not contains" == pk"#,
            "not",
            "a not contains",
        ] {
            assert_eq!(rw(s), s);
        }
    }
}
