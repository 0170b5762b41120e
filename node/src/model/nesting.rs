//! How deeply JSON text nests. Stored data, plugin arguments and transform outputs are limited to
//! [`MAX_JSON_DEPTH`] levels, so every later stage (conditions, plugins, rendering) can read
//! whatever was stored: a write over it is refused, a log entry over it is malformed.

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
}
