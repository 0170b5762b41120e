//! Content digests: the SHA-256 of some bytes, shown as 64 lowercase hex digits. Plugins are
//! named by the digest of their module in every entry; partition digests and `check` versions
//! are shown the same way.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest (a plugin's identity is the digest of its module).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s).as_bytes();
        // Checked byte by byte before any pair is read: the text may come from any producer's
        // entry, and a pair cut through a character of several bytes (or `u8::from_str_radix`
        // taking a `+` for a sign) must be a refusal, not a panic or a digest.
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("{s:?} is not a sha256 digest (64 hex digits)"));
        }
        let digit = |b: u8| (b as char).to_digit(16).expect("checked above") as u8;
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Sha256> for Digest {
    fn from(hasher: Sha256) -> Self {
        Digest(hasher.finalize().into())
    }
}
