//! The path syntax: JSONPath (`$` and segments) and RedisJSON's legacy syntax, into
//! [`super::JsonPath`]'s segments.

use super::{PathError, Segment, Selector};

pub(super) struct Parser<'p> {
    pub(super) path: &'p str,
    pub(super) bytes: &'p [u8],
    pub(super) at: usize,
    /// Where `bytes` starts in `path`, for error positions.
    pub(super) offset: usize,
    /// How deep in filters (and their parentheses) the parser is: names end at an operator
    /// there, and nesting is bounded.
    pub(super) filter_depth: usize,
    /// Whether a filter called a function or tested a pattern.
    pub(super) functions: bool,
}

impl Parser<'_> {
    pub(super) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn error(&self, reason: &'static str) -> PathError {
        PathError::Syntax {
            path: self.path.to_owned(),
            at: self.offset + self.at,
            reason,
        }
    }

    pub(super) fn segment(&mut self) -> Result<Segment, PathError> {
        match self.peek() {
            Some(b'.') if self.bytes.get(self.at + 1) == Some(&b'.') => {
                self.at += 2;
                if self.peek() == Some(b'[') {
                    Ok(Segment::Descendant(self.brackets()?))
                } else {
                    Ok(Segment::Descendant(vec![self.name_or_wildcard()?]))
                }
            }
            Some(b'.') => {
                self.at += 1;
                Ok(Segment::Child(vec![self.name_or_wildcard()?]))
            }
            Some(b'[') => Ok(Segment::Child(self.brackets()?)),
            _ => Err(self.error("expected `.`, `..` or `[`")),
        }
    }

    /// A dot-notation name (up to the next `.` or `[`), or `*`.
    pub(super) fn name_or_wildcard(&mut self) -> Result<Selector, PathError> {
        let start = self.at;
        while let Some(b) = self.peek() {
            if b == b'.' || b == b'[' {
                break;
            }
            // Inside a filter a name ends where an operator or the filter does.
            if self.filter_depth > 0
                && (b.is_ascii_whitespace()
                    || matches!(
                        b,
                        b')' | b']' | b'=' | b'!' | b'<' | b'>' | b'&' | b'|' | b','
                    ))
            {
                break;
            }
            if b.is_ascii_whitespace() || matches!(b, b']' | b'\'' | b'"' | b'(' | b')' | b'?') {
                return Err(
                    self.error("a name after `.` has no spaces, quotes or brackets: use [\"...\"]")
                );
            }
            self.at += 1;
        }
        let name = &self.bytes[start..self.at];
        match name {
            b"" => Err(self.error("expected a name or `*`")),
            b"*" => Ok(Selector::Wildcard),
            _ => Ok(Selector::Name(
                String::from_utf8(name.to_vec()).map_err(|_| self.error("not UTF-8"))?,
            )),
        }
    }

    pub(super) fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// `[selector, ...]`
    pub(super) fn brackets(&mut self) -> Result<Vec<Selector>, PathError> {
        self.at += 1; // `[`
        let mut selectors = Vec::new();
        loop {
            self.skip_spaces();
            let selector = match self.peek() {
                Some(b'?') => {
                    self.at += 1;
                    Selector::Filter(Box::new(self.filter()?))
                }
                Some(b'*') => {
                    self.at += 1;
                    Selector::Wildcard
                }
                Some(quote @ (b'\'' | b'"')) => Selector::Name(self.quoted(quote)?),
                Some(b'-' | b'0'..=b'9' | b':') => self.index_or_slice()?,
                _ => return Err(self.error("expected a quoted name, an index, a slice or `*`")),
            };
            selectors.push(selector);
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(selectors);
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    pub(super) fn integer(&mut self) -> Result<Option<i64>, PathError> {
        self.skip_spaces();
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let text = &self.path[self.offset + start..self.offset + self.at];
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| self.error("not an integer in range"))
    }

    pub(super) fn index_or_slice(&mut self) -> Result<Selector, PathError> {
        let start = self.integer()?;
        self.skip_spaces();
        if self.peek() != Some(b':') {
            return start
                .map(Selector::Index)
                .ok_or_else(|| self.error("expected an index"));
        }
        self.at += 1;
        let end = self.integer()?;
        self.skip_spaces();
        let step = if self.peek() == Some(b':') {
            self.at += 1;
            self.integer()?.unwrap_or(1)
        } else {
            1
        };
        Ok(Selector::Slice { start, end, step })
    }

    /// A quoted name, with JSON's escapes (and `\'`).
    pub(super) fn quoted(&mut self, quote: u8) -> Result<String, PathError> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let rest = &self.path[self.offset + self.at..];
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                return Err(self.error("unterminated quoted name"));
            };
            self.at += c.len_utf8();
            match c {
                c if c as u32 == u32::from(quote) => return Ok(out),
                '\\' => {
                    let Some(escaped) = chars.next() else {
                        return Err(self.error("unterminated quoted name"));
                    };
                    self.at += escaped.len_utf8();
                    out.push(match escaped {
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            let hex = self
                                .path
                                .get(self.offset + self.at..self.offset + self.at + 4)
                                .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
                            let code = u32::from_str_radix(hex, 16)
                                .map_err(|_| self.error("expected four hex digits after \\u"))?;
                            self.at += 4;
                            char::from_u32(code)
                                .ok_or_else(|| self.error("\\u escapes a lone surrogate"))?
                        }
                        '\\' | '/' | '\'' | '"' => escaped,
                        _ => return Err(self.error("unknown escape")),
                    });
                }
                c => out.push(c),
            }
        }
    }
}
