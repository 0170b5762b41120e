//! Checks of JSON text that let every later stage (conditions, plugins, rendering) read whatever
//! was stored. How deeply it nests: stored data, plugin arguments and transform outputs are
//! limited to [`MAX_JSON_DEPTH`] levels (a write over it is refused, a log entry over it is
//! malformed). And numbers no 64-bit float holds ([`json_number_out_of_range`]): refused at
//! write only, as entries already in logs with one must keep applying the same way everywhere.

/// Deepest nesting of arrays and objects accepted in data and plugin arguments.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether JSON text nests arrays and objects deeper than `max` levels. One pass over the
/// bytes, skipping string contents; stops at the first level over.
pub fn json_nests_deeper_than(json: &[u8], max: usize) -> bool {
    // Fast path for the common case (every entry is checked when applied): fewer opening
    // brackets than the limit cannot nest past it, wherever they are.
    let opening = json.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if opening <= max {
        return false;
    }
    let mut depth = 0usize;
    for (_, b) in structural_bytes(json) {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The first number in JSON text that no 64-bit float can hold (`1e999`, or an integer of
/// more than 309 digits), if any. JSON's grammar has no bound, but conditions, plugins and
/// most clients read numbers as floats and fail on such a record, so writes refuse them. The
/// text must be valid JSON (numbers are found among the bytes outside strings).
pub fn json_number_out_of_range(json: &[u8]) -> Option<&str> {
    let is_number_byte =
        |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let out_of_range = |run: &[u8]| {
        // Only an exponent or a very long integer can overflow; most numbers skip the parse.
        let candidate = (run[0] == b'-' || run[0].is_ascii_digit())
            && (run.len() > 309 || run.iter().any(|&b| b == b'e' || b == b'E'));
        candidate
            && std::str::from_utf8(run)
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
                .is_some_and(|n| n.is_infinite())
    };
    // A run of number bytes: where it starts, and the position after its last byte.
    let mut run: Option<(usize, usize)> = None;
    let ends = structural_bytes(json)
        .map(Some)
        .chain(std::iter::once(None));
    for next in ends {
        match (next, run) {
            (Some((i, b)), Some((start, end))) if i == end && is_number_byte(b) => {
                run = Some((start, i + 1));
            }
            (next, current) => {
                if let Some((start, end)) = current
                    && out_of_range(&json[start..end])
                {
                    return std::str::from_utf8(&json[start..end]).ok();
                }
                run = next
                    .filter(|&(_, b)| is_number_byte(b))
                    .map(|(i, _)| (i, i + 1));
            }
        }
    }
    None
}

/// The first `\uXXXX` escape in JSON text that is half of a UTF-16 surrogate pair without its
/// other half (`"\ud800"`), if any. JSON's grammar lets such text through, but it is not a
/// Unicode character: conditions, plugins and most clients cannot read a string holding one,
/// so writes refuse them (as numbers out of range, at write only). The text must be valid JSON.
pub fn json_lone_surrogate(json: &[u8]) -> Option<&str> {
    // Most data has no `\u` escape at all.
    if !json.windows(2).any(|w| w == b"\\u") {
        return None;
    }
    let hex = |at: usize| {
        json.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        match (in_string, json[i]) {
            (false, b'"') => in_string = true,
            (false, _) => {}
            (true, b'"') => in_string = false,
            (true, b'\\') if json.get(i + 1) == Some(&b'u') => {
                let unit = hex(i + 2)?;
                let escape = &json[i..i + 6];
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (json.get(i + 6..i + 8) == Some(&b"\\u"[..]))
                            .then(|| hex(i + 8))
                            .flatten();
                        if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                            return std::str::from_utf8(escape).ok();
                        }
                        i += 12;
                        continue;
                    }
                    0xDC00..=0xDFFF => return std::str::from_utf8(escape).ok(),
                    _ => {
                        i += 6;
                        continue;
                    }
                }
            }
            // Any other escape: skip the escaped byte (it may be a quote).
            (true, b'\\') => i += 1,
            (true, _) => {}
        }
        i += 1;
    }
    None
}

/// The bytes of JSON text that are outside strings (quotes excluded), with their positions.
pub fn structural_bytes(json: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut in_string = false;
    let mut escaped = false;
    json.iter().enumerate().filter_map(move |(i, &b)| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            None
        } else if b == b'"' {
            in_string = true;
            None
        } else {
            Some((i, b))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_arrays_and_objects_but_not_strings() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(!json_nests_deeper_than(nested(64).as_bytes(), 64));
        assert!(json_nests_deeper_than(nested(65).as_bytes(), 64));
        assert!(!json_nests_deeper_than(br#"{"a":"[[[[[\"[[["}"#, 1));
        assert!(json_nests_deeper_than(br#"{"a":{"b":[]}}"#, 2));
        assert!(!json_nests_deeper_than(br#"{"a":{"b":1},"c":[2]}"#, 2));
    }

    #[test]
    fn finds_surrogate_halves_without_their_other_half() {
        for (json, expected) in [
            (r#""\ud800""#, Some(r"\ud800")),
            (r#"{"a":"x\uDC00y"}"#, Some(r"\uDC00")),
            (r#"["\ud83d\u0041"]"#, Some(r"\ud83d")),
            (r#"["\ud83d"]"#, Some(r"\ud83d")),
            (r#"{"\udfff":1}"#, Some(r"\udfff")),
            (r#""\ud83d\ude00 and \u00e9 and \\ud800""#, None),
            (r#"{"plain":"text","n":[1,2]}"#, None),
            (r#""\\\\u0041\"\u0041""#, None),
        ] {
            assert_eq!(json_lone_surrogate(json.as_bytes()), expected, "{json}");
        }
    }

    #[test]
    fn finds_numbers_no_float_holds() {
        let huge = "9".repeat(400);
        for (json, expected) in [
            (r#"{"a":1e999}"#.to_string(), Some("1e999")),
            (r#"[1,-2.5E+400,3]"#.to_string(), Some("-2.5E+400")),
            ("1e999".to_string(), Some("1e999")),
            (format!(r#"{{"n":{huge}}}"#), Some(huge.as_str())),
            (
                r#"{"a":1e308,"b":-1.7e308,"c":123456789012345678901234567890}"#.to_string(),
                None,
            ),
            (
                r#"{"s":"1e999","true":true,"e":false,"n":null}"#.to_string(),
                None,
            ),
            (r#"{"tiny":1e-999}"#.to_string(), None),
        ] {
            assert_eq!(
                json_number_out_of_range(json.as_bytes()),
                expected,
                "{json}"
            );
        }
    }
}
