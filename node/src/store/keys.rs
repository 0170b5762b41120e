//! Order-preserving, total key encoding: `escape(pk) 0x00 0x01 sk`.
//!
//! In `pk`, byte `0x00` is written as `0x00 0xFF`, and the pk ends with the terminator `0x00 0x01`,
//! which sorts below every escaped byte. So keys sort by (pk, sk) byte-wise, one pk's records are one
//! contiguous range, any byte (`\0` included, which broke FireScroll) works in pk and sk, and the
//! sk needs no escaping because it is last.

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// The stored key of (pk, sk).
pub fn encode_key(pk: &str, sk: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(pk.len() + 2 + sk.len());
    push_pk_prefix(&mut key, pk);
    key.extend_from_slice(sk.as_bytes());
    key
}

/// The prefix shared by every key of `pk` (and of no other pk).
pub fn pk_prefix(pk: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(pk.len() + 2 + 16);
    push_pk_prefix(&mut out, pk);
    out
}

/// Appends `pk`'s prefix to `out`. Every read encodes its key: a pk without the escape byte
/// (almost all of them) is copied whole, not byte by byte.
fn push_pk_prefix(out: &mut Vec<u8>, pk: &str) {
    let pk = pk.as_bytes();
    if !pk.contains(&ESCAPE) {
        out.extend_from_slice(pk);
    } else {
        for &b in pk {
            out.push(b);
            if b == ESCAPE {
                out.push(ESCAPED_ZERO);
            }
        }
    }
    out.push(ESCAPE);
    out.push(TERMINATOR);
}

/// The length of a stored key's pk prefix (what [`pk_prefix`] gives for its pk), found without
/// decoding. `None` for bytes `encode_key` never produces.
pub fn pk_prefix_len(key: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < key.len() {
        if key[i] != ESCAPE {
            i += 1;
            continue;
        }
        match *key.get(i + 1)? {
            ESCAPED_ZERO => i += 2,
            TERMINATOR => return Some(i + 2),
            _ => return None,
        }
    }
    None
}

/// Splits a stored key back into (pk, sk). `None` for bytes `encode_key` never produces.
pub fn decode_key(key: &[u8]) -> Option<(String, String)> {
    let mut pk = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        let b = key[i];
        if b != ESCAPE {
            pk.push(b);
            i += 1;
            continue;
        }
        match *key.get(i + 1)? {
            ESCAPED_ZERO => {
                pk.push(0);
                i += 2;
            }
            TERMINATOR => {
                let sk = key[i + 2..].to_vec();
                return Some((String::from_utf8(pk).ok()?, String::from_utf8(sk).ok()?));
            }
            _ => return None,
        }
    }
    None
}

/// The sort key of a stored key whose pk prefix is already known to be `prefix_len` bytes.
pub fn sk_of(key: &[u8], prefix_len: usize) -> Option<&str> {
    std::str::from_utf8(key.get(prefix_len..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_bytes_and_unicode_round_trip() {
        for (pk, sk) in [
            ("a\0b", "\0"),
            ("", ""),
            ("ünï", "日本\0語"),
            ("\0\0", "x\u{1}"),
        ] {
            assert_eq!(
                decode_key(&encode_key(pk, sk)),
                Some((pk.to_string(), sk.to_string()))
            );
            assert_eq!(
                pk_prefix_len(&encode_key(pk, sk)),
                Some(pk_prefix(pk).len())
            );
        }
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert_eq!(decode_key(b"abc"), None);
        assert_eq!(decode_key(b"a\0\x02"), None);
        assert_eq!(decode_key(b"a\0"), None);
    }

    proptest! {
        #[test]
        fn round_trip(pk in any::<String>(), sk in any::<String>()) {
            prop_assert_eq!(decode_key(&encode_key(&pk, &sk)), Some((pk, sk)));
        }

        #[test]
        fn order_is_pk_then_sk(a in any::<(String, String)>(), b in any::<(String, String)>()) {
            let by_tuple = (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes()));
            prop_assert_eq!(encode_key(&a.0, &a.1).cmp(&encode_key(&b.0, &b.1)), by_tuple);
        }

        #[test]
        fn zero_heavy_order(a in "[\\x00\\x01a]{0,4}", b in "[\\x00\\x01a]{0,4}", s in "[\\x00a]{0,3}", t in "[\\x00a]{0,3}") {
            let by_tuple = (a.as_bytes(), s.as_bytes()).cmp(&(b.as_bytes(), t.as_bytes()));
            prop_assert_eq!(encode_key(&a, &s).cmp(&encode_key(&b, &t)), by_tuple);
        }

        #[test]
        fn pk_prefix_holds_exactly_that_pk(a in any::<String>(), b in any::<String>(), sk in any::<String>()) {
            let key = encode_key(&b, &sk);
            prop_assert_eq!(key.starts_with(&pk_prefix(&a)), a == b);
        }
    }
}
