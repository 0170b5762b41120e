//! `HSCAN key cursor [MATCH pattern] [COUNT n]`.
//!
//! Cursors are decimal numbers, as clients expect (several parse them as u64), that any node of
//! the region can continue (see `field_cursor`): a scan sees every field that exists throughout
//! it, in field order, whatever is written meanwhile — exactly once while one node serves it.
//! `MATCH` patterns are Redis globs; a literal prefix (`user:*`) narrows the scan itself,
//! anything else filters what is scanned.

use super::{Context, text, value_of};
use crate::api::resp::reply::Reply;
use crate::service::ListRequest;
use bytes::Bytes;

/// `HSCAN key cursor [MATCH pattern] [COUNT n] [NOVALUES]`.
pub async fn hscan(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    scan_fields(ctx, args, "hscan").await
}

/// `SSCAN key cursor [MATCH pattern] [COUNT n]`: a set's members are its fields.
pub async fn sscan(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    scan_fields(ctx, args, "sscan").await
}

/// HSCAN (fields and values, or with NOVALUES fields only) and SSCAN (members: fields only).
async fn scan_fields(ctx: &mut Context<'_>, args: &[Bytes], name: &str) -> Reply {
    let [pk, cursor, options @ ..] = args else {
        return super::wrong_arity(name);
    };
    let mut with_values = name == "hscan";
    let pk = match text(pk) {
        Ok(pk) => pk,
        Err(e) => return e,
    };
    let cursor = match parse_cursor(cursor) {
        Ok(cursor) => cursor,
        Err(e) => return e,
    };
    let mut pattern: Option<Vec<u8>> = None;
    let mut count = 10u64;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let option = option.to_ascii_uppercase();
        // NOVALUES takes no value, and may come anywhere among the options, as in Redis.
        if option == b"NOVALUES" && name == "hscan" {
            with_values = false;
            continue;
        }
        match (option.as_slice(), options.next()) {
            (b"MATCH", Some(p)) => pattern = Some(p.to_vec()),
            (b"COUNT", Some(n)) => match parse_count(n) {
                Ok(n) => count = n as u64,
                Err(e) => return e,
            },
            _ => return Reply::err("syntax error"),
        }
    }
    let prefix = pattern.as_deref().map(literal_prefix).unwrap_or_default();
    let prefix = String::from_utf8_lossy(&prefix).into_owned();
    let min_offsets = ctx.min_offsets([pk.as_str()]);
    let after = match cursor {
        0 => None,
        cursor => {
            let resumed = ctx
                .scans
                .resume(ctx.service, cursor, &pk, &prefix, min_offsets.clone())
                .await;
            match resumed {
                Ok(after) => Some(after),
                Err(e) => return e,
            }
        }
    };
    let page = ctx
        .service
        .list(ListRequest {
            pk: pk.clone(),
            sk_prefix: prefix,
            limit: count,
            cursor: after,
            min_offsets,
            ..ListRequest::default()
        })
        .await;
    let page = match page {
        Ok(page) => page,
        Err(e) => return super::service_error(e),
    };
    let mut items = Vec::new();
    for record in &page.records {
        if pattern
            .as_deref()
            .is_none_or(|p| glob_match(p, record.sk.as_bytes()))
        {
            items.push(Reply::Bulk(super::wire_key(&record.sk)));
            if with_values {
                items.push(Reply::Bulk(value_of(record)));
            }
        }
    }
    let next = match page.next_cursor {
        Some(last) => ctx.scans.issue(pk, last),
        None => 0,
    };
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(items)])
}

/// A SCAN/HSCAN cursor: a decimal u64, as clients send and parse it.
pub(super) fn parse_cursor(arg: &Bytes) -> Result<u64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))
}

/// A scan's `COUNT`: a positive integer (Redis answers a syntax error for one below 1).
pub(super) fn parse_count(arg: &Bytes) -> Result<usize, Reply> {
    match std::str::from_utf8(arg)
        .ok()
        .and_then(|n| n.parse::<i64>().ok())
    {
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(_) => Err(Reply::err("syntax error")),
        None => Err(Reply::err("value is not an integer or out of range")),
    }
}

/// The part of a glob before its first special character.
fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    pattern
        .iter()
        .take_while(|&&b| !matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .copied()
        .collect()
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star_p, mut star_t) = (None, 0);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_t = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t])
                        && matched
                    {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_t += 1;
                t = star_t;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`: (matched, index after `]`).
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (i < pattern.len()).then_some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("user:*", "user:42", true),
            ("user:*", "users", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("\\*x", "*x", true),
            ("\\*x", "ax", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                *want,
                "{pattern} ~ {text}"
            );
        }
        assert_eq!(literal_prefix(b"user:*:x"), b"user:");
        assert_eq!(literal_prefix(b"*"), b"");
    }
}
