//! The numbers Redis's `INCRBYFLOAT` and `HINCRBYFLOAT` compute with: C's `long double`, which
//! on x86-64 (where Redis runs) is the x87 80-bit extended format (64-bit significand), read with
//! `strtold` and written with `%.17Lf`, trailing zeros trimmed. In 64-bit floats `0.1 + 0.2` is
//! `0.30000000000000004`; Redis answers `0.3`, and so does this.
//!
//! In software (LLVM's APFloat, as rustc uses it), never the CPU's floats: every replica on every
//! CPU must compute the same bits in log order, and `long double` is not 80-bit on every CPU
//! Redis itself runs on (aarch64's is 128-bit).

use rustc_apfloat::ieee::X87DoubleExtended;
use rustc_apfloat::{Float, Round, Status};
use std::fmt;

/// The longest text Redis reads as a float (`MAX_LONG_DOUBLE_CHARS`, 5 KiB); longer is not one.
const MAX_TEXT_BYTES: usize = 5 * 1024;

/// Digits after the point Redis writes (`%.17Lf`) before trimming trailing zeros.
const FRACTION_DIGITS: u32 = 17;

/// A number as Redis's float increments hold it: an x87 80-bit extended float.
#[derive(Debug, Clone, Copy)]
pub struct LongDouble(X87DoubleExtended);

impl LongDouble {
    /// Zero, what an absent value counts as.
    pub const ZERO: LongDouble = LongDouble(X87DoubleExtended::ZERO);

    /// Reads `text` as Redis does (`string2ld`: glibc's `strtold` in full): an optional sign,
    /// then a decimal (`1.5`, `.5`, `5.`, `1e-3`), a hexadecimal float (`0x1.8p3`, `0x10`) or
    /// `inf`/`infinity`; nothing before or after it (no spaces), no NaN, at most 5 KiB, and not
    /// so large that it overflows nor so small that it rounds to zero. Rounded to nearest.
    pub fn parse(text: &str) -> Option<LongDouble> {
        if text.is_empty() || text.len() >= MAX_TEXT_BYTES {
            return None;
        }
        let (negative, body) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let magnitude = if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity")
        {
            X87DoubleExtended::INFINITY
        } else {
            let hex = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"));
            // APFloat's reader takes a subset of what strtold does, and more (NaN payloads):
            // only text checked here reaches it, spelled as it wants it.
            let canonical = match hex {
                Some(digits) if has_number_syntax(digits, true) => {
                    let digits = digits.to_ascii_lowercase();
                    if digits.contains('p') {
                        format!("0x{digits}")
                    } else {
                        format!("0x{digits}p0")
                    }
                }
                None if has_number_syntax(body, false) => body.to_owned(),
                _ => return None,
            };
            let read = X87DoubleExtended::from_str_r(&canonical, Round::NearestTiesToEven).ok()?;
            // strtold's ERANGE, which Redis refuses when the result is infinite or zero.
            let overflow = read.status.intersects(Status::OVERFLOW);
            let to_zero = read.value.is_zero() && read.status.intersects(Status::UNDERFLOW);
            if overflow || to_zero {
                return None;
            }
            read.value
        };
        Some(LongDouble(if negative { -magnitude } else { magnitude }))
    }

    /// Whether this is an infinity (`inf` parses; Redis refuses it as an increment).
    pub fn is_infinite(self) -> bool {
        self.0.is_infinite()
    }

    /// `self + other`, rounded to nearest as the x87 unit does; `None` when the sum is infinite
    /// or NaN (Redis: "increment would produce NaN or Infinity").
    pub fn checked_add(self, other: LongDouble) -> Option<LongDouble> {
        let sum = (self.0 + other.0).value;
        sum.is_finite().then_some(LongDouble(sum))
    }
}

/// Whether `text` is a decimal (`hex == false`: digits, an optional point, an optional `e`
/// exponent) or the part of a hexadecimal float after `0x` (hex digits, an optional point, an
/// optional `p` exponent), with at least one digit before the exponent.
fn has_number_syntax(text: &str, hex: bool) -> bool {
    let bytes = text.as_bytes();
    let is_digit = |b: &u8| {
        if hex {
            b.is_ascii_hexdigit()
        } else {
            b.is_ascii_digit()
        }
    };
    let integer = bytes.iter().take_while(|b| is_digit(b)).count();
    let mut rest = &bytes[integer..];
    let mut fraction = 0;
    if let Some(after_point) = rest.strip_prefix(b".") {
        fraction = after_point.iter().take_while(|b| is_digit(b)).count();
        rest = &after_point[fraction..];
    }
    if integer + fraction == 0 {
        return false;
    }
    let Some((letter, exponent)) = rest.split_first() else {
        return true;
    };
    let expected = if hex { b'p' } else { b'e' };
    let exponent = match exponent.split_first() {
        Some((b'+' | b'-', digits)) => digits,
        _ => exponent,
    };
    letter.to_ascii_lowercase() == expected
        && !exponent.is_empty()
        && exponent.iter().all(u8::is_ascii_digit)
}

/// Redis's text of the number (`ld2string` with `LD_STR_HUMAN`): `%.17Lf` as glibc rounds it
/// (exactly, ties to even), trailing zeros and a trailing point removed, `-0` written `0`. Never an
/// exponent; an integer has no point. Infinities are written `inf` and `-inf`.
impl fmt::Display for LongDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_infinite() {
            return f.write_str(if self.0.is_negative() { "-inf" } else { "inf" });
        }
        let bits = self.0.to_bits();
        // The 80-bit layout: sign, 15-bit biased exponent, 64-bit significand whose top bit is
        // the integer bit (so the value is significand * 2^(exponent - bias - 63)).
        let significand = bits as u64;
        let biased = ((bits >> 64) & 0x7fff) as i32;
        let negative = (bits >> 79) & 1 == 1;
        let power_of_two = biased.max(1) - 16383 - 63;
        let mut text = String::new();
        if power_of_two >= 0 {
            // An integer: every fraction digit is a zero, trimmed away.
            text.push_str(&shifted_to_decimal(significand, power_of_two as u32));
        } else {
            let (integer, fraction) = fixed_point(significand, power_of_two.unsigned_abs());
            text.push_str(&integer.to_string());
            if fraction != 0 {
                let digits = format!("{fraction:0width$}", width = FRACTION_DIGITS as usize);
                text.push('.');
                text.push_str(digits.trim_end_matches('0'));
            }
        }
        if negative && text != "0" {
            f.write_str("-")?;
        }
        f.write_str(&text)
    }
}

/// `significand / 2^shift` to [`FRACTION_DIGITS`] decimals, rounded half to even: the integer
/// part and the fraction's digits as an integer. Exact: the significand times 10^17 fits in
/// 121 bits.
fn fixed_point(significand: u64, shift: u32) -> (u128, u128) {
    let scale = 10u128.pow(FRACTION_DIGITS);
    let scaled = u128::from(significand) * scale;
    let rounded = if shift >= 128 {
        // Below 2^-64 here: less than half of the last digit.
        0
    } else {
        let quotient = scaled >> shift;
        let remainder = scaled & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        if remainder > half || (remainder == half && quotient & 1 == 1) {
            quotient + 1
        } else {
            quotient
        }
    };
    (rounded / scale, rounded % scale)
}

/// The decimal digits of `significand * 2^shift` (up to ~2^16384: the largest finite value).
fn shifted_to_decimal(significand: u64, shift: u32) -> String {
    // Little-endian 32-bit limbs of the product, then repeated division by 10^9.
    let (whole, bits) = ((shift / 32) as usize, shift % 32);
    let mut limbs = vec![0u32; whole + 3];
    let wide = u128::from(significand) << bits;
    for (k, limb) in limbs[whole..].iter_mut().enumerate() {
        *limb = (wide >> (32 * k)) as u32;
    }
    let mut groups = Vec::new();
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    while !limbs.is_empty() {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut().rev() {
            let current = (remainder << 32) | u64::from(*limb);
            *limb = (current / 1_000_000_000) as u32;
            remainder = current % 1_000_000_000;
        }
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        groups.push(remainder as u32);
    }
    let mut text = String::with_capacity(groups.len() * 9);
    let mut groups = groups.iter().rev();
    text.push_str(&groups.next().map_or(0, |g| *g).to_string());
    for group in groups {
        text.push_str(&format!("{group:09}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(a: &str, b: &str) -> Option<String> {
        let (a, b) = (LongDouble::parse(a)?, LongDouble::parse(b)?);
        a.checked_add(b).map(|s| s.to_string())
    }

    /// Each expected text is what glibc's `strtold`, x87 addition and `%.17Lf` (Redis's code,
    /// compiled on x86-64) printed for the pair; 200,000 random pairs agreed when this was written.
    #[test]
    fn sums_are_the_ones_redis_prints_on_x86_64() {
        for (a, b, expected) in [
            ("0.1", "0.2", "0.3"),
            ("10.5", "0.1", "10.6"),
            ("5000", "1.5e-5", "5000.00001499999999988"),
            ("0x10", "1", "17"),
            ("0X1.8p1", "0", "3"),
            ("1.", ".5", "1.5"),
            ("+1", "-3", "-2"),
            ("3.0e3", "200", "3200"),
            // A tie at the 17th decimal rounds to even.
            ("0", "0.000003814697265625", "0.00000381469726562"),
            ("0", "-0.000000000000000001", "0"),
            ("-0", "0", "0"),
            ("1e-4940", "0", "0"),
            ("-2.5", "2.5", "0"),
            // 2^64 + 0.25 needs more than 64 significant bits: rounded to 2^64.
            ("18446744073709551616", "0.25", "18446744073709551616"),
        ] {
            assert_eq!(sum(a, b).as_deref(), Some(expected), "{a} + {b}");
        }
        // Past 64-bit floats: Redis answers, with every digit.
        let big = sum("1e308", "1e308").unwrap();
        assert!(big.starts_with("1999999999999999999933717593"), "{big}");
        assert_eq!(big.len(), 309);
        let largest = sum("1e4932", "0").unwrap();
        assert_eq!(largest.len(), 4933);
    }

    #[test]
    fn infinities_and_overflow_are_not_sums() {
        assert_eq!(sum("inf", "1"), None);
        assert_eq!(sum("-Infinity", "1"), None);
        assert_eq!(sum("1e4932", "1e4932"), None);
        assert!(LongDouble::parse("INF").unwrap().is_infinite());
        assert!(!LongDouble::parse("1e4932").unwrap().is_infinite());
    }

    /// Exponents of any length, 5 KiB of digits, the edges of the subnormal and finite ranges:
    /// read as glibc reads them (each expected answer is what its `strtold` and `%.17Lf` gave,
    /// through Redis's code), never a panic or an endless loop.
    #[test]
    fn extreme_texts_read_as_glibc_reads_them() {
        let zeros = "0".repeat(5000);
        let cases: Vec<(String, Option<(&str, usize)>)> = vec![
            ("1e99999999999999999999999999".into(), None),
            ("1e-99999999999999999999999".into(), None),
            ("0x1p99999999999999999999".into(), None),
            ("0x1p-99999999999999999999".into(), None),
            (format!("0.{zeros}1e5000"), Some(("0.1", 3))),
            (format!("1{zeros}e-5000"), Some(("1", 1))),
            (
                "1e+0000000000000000000000000000000001".into(),
                Some(("10", 2)),
            ),
            (format!("0x{}", "f".repeat(5000)), None),
            (format!("0x.{zeros}1p20000"), Some(("0.0625", 6))),
            ("9".repeat(5100), None),
            ("1e-4951".into(), None),
            ("1e-4950".into(), Some(("0", 1))),
            ("0x1p-16445".into(), Some(("0", 1))),
            ("0x1p-16446".into(), None),
            (
                "0x1p16383".into(),
                Some(("594865747678615882542879663314", 4932)),
            ),
            ("0x1p16384".into(), None),
            (
                "-0x1.fffffffffffffffep16383".into(),
                Some(("-11897314953572317650212638530", 4934)),
            ),
            ("1.18973149535723176509e+4932".into(), None),
            ("0e999999999999999999".into(), Some(("0", 1))),
            ("0x0p99999999999999".into(), Some(("0", 1))),
            (
                format!(".{}", "1".repeat(5000)),
                Some(("0.11111111111111111", 19)),
            ),
        ];
        for (text, expected) in cases {
            let got = LongDouble::parse(&text).map(|n| n.to_string());
            match (got.as_deref(), expected) {
                (None, None) => {}
                (Some(got), Some((prefix, len))) if got.starts_with(prefix) && got.len() == len => {
                }
                (got, _) => panic!("{:.60}: {:?}", text, got.map(|g| &g[..g.len().min(40)])),
            }
        }
    }

    #[test]
    fn text_redis_does_not_read_as_a_float_is_refused() {
        for bad in [
            "", " 1", "1 ", "nan", "-nan", "NaN(1)", "infinit", "+", "-", ".", "e5", "1e", "1e+",
            "0x", "0x1p", "0xp3", "0x.p1", "1..2", "--1", "+-1", "1e5.5", "1_0", "１", "1e5000",
            "-1e5000", "1e-5000", "0x1g",
        ] {
            assert!(LongDouble::parse(bad).is_none(), "{bad:?}");
        }
        let long = format!("1.{}", "0".repeat(MAX_TEXT_BYTES));
        assert!(LongDouble::parse(&long).is_none());
        let just_short = format!("1.{}", "0".repeat(MAX_TEXT_BYTES - 3));
        assert_eq!(LongDouble::parse(&just_short).unwrap().to_string(), "1");
        // Exact zeros underflow nothing.
        assert_eq!(LongDouble::parse("0e-99999").unwrap().to_string(), "0");
    }
}
