//! HSCAN/SSCAN cursors that any node of the region can continue.
//!
//! A cursor names "after field S of hash K" and is a plain number below 2^53 (clients parse
//! cursors as u64, node-redis 4 as a JavaScript number): bits 51–52 say how many leading bytes of
//! S follow (0–2, whole characters), bits 35–50 are those bytes, bits 0–34 a hash of (K, S).
//!
//! The node that issued a cursor keeps its exact position for [`CURSOR_TTL`] (a table lookup).
//! Any other node — or this one after a restart — finds it again by walking the fields of K that
//! begin with S's leading bytes for the one whose hash matches, and continues after it. If S was
//! deleted meanwhile, nothing matches and the scan continues after those leading bytes: fields
//! between them and S are returned again, which Redis allows (an element may be returned more than
//! once), and no field present throughout the scan is skipped, since every field before S was
//! returned already. The walk costs one pass over the fields sharing S's leading bytes, once per
//! switch of node.

use crate::api::resp::reply::Reply;
use crate::service::{ListRequest, Service};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the issuing node holds a cursor's exact position (others find it by walking).
pub const CURSOR_TTL: Duration = Duration::from_secs(600);
const MAX_CURSORS: usize = 100_000;
/// Leading bytes of the field a cursor carries.
const PREFIX_BYTES: usize = 2;
const HASH_BITS: u32 = 35;
const PREFIX_SHIFT: u32 = HASH_BITS;
const LENGTH_SHIFT: u32 = HASH_BITS + 8 * PREFIX_BYTES as u32;
/// Every cursor is below this (2^53).
const CURSOR_LIMIT: u64 = 1 << (LENGTH_SHIFT + 2);

struct Held {
    pk: String,
    after: String,
    issued: Instant,
}

/// The positions of the cursors this node issued.
#[derive(Default)]
pub struct ScanCursors {
    open: Mutex<HashMap<u64, Held>>,
}

impl ScanCursors {
    /// The cursor for "after field `after` of `pk`", remembered here.
    pub(super) fn issue(&self, pk: String, after: String) -> u64 {
        let cursor = cursor_for(&pk, &after);
        let mut open = self.open.lock().expect("cursor lock");
        if open.len() >= MAX_CURSORS {
            open.retain(|_, held| held.issued.elapsed() < CURSOR_TTL);
            if open.len() >= MAX_CURSORS {
                open.clear();
            }
        }
        open.insert(
            cursor,
            Held {
                pk,
                after,
                issued: Instant::now(),
            },
        );
        cursor
    }

    /// Where `cursor` continues the scan of `pk`: the field to continue after. Held here, or
    /// found by walking the fields (`narrowed_to`: the scan's literal MATCH prefix, which every
    /// field it returned begins with).
    pub(super) async fn resume(
        &self,
        service: &Service,
        cursor: u64,
        pk: &str,
        narrowed_to: &str,
        min_offsets: Vec<crate::model::Position>,
    ) -> Result<String, Reply> {
        if let Some(after) = self.held(cursor, pk) {
            return Ok(after);
        }
        let Some((leading, hash)) = decode(cursor) else {
            return Err(Reply::err(
                "invalid cursor: use 0 to start, then the cursor each reply gives",
            ));
        };
        // Both are leading bytes of the field: the longer one narrows the walk more.
        let walk_prefix = if leading.starts_with(narrowed_to) {
            leading.clone()
        } else if narrowed_to.starts_with(&leading) {
            narrowed_to.to_owned()
        } else {
            // Not a cursor of this MATCH: nothing to find; continue after its leading bytes.
            return Ok(leading);
        };
        let mut walk_cursor = None;
        loop {
            let page = service
                .list(ListRequest {
                    pk: pk.to_owned(),
                    sk_prefix: walk_prefix.clone(),
                    limit: 0,
                    cursor: walk_cursor.take(),
                    min_offsets: min_offsets.clone(),
                    ..ListRequest::default()
                })
                .await
                .map_err(super::service_error)?;
            if let Some(found) = page.records.iter().find(|r| field_hash(pk, &r.sk) == hash) {
                return Ok(found.sk.clone());
            }
            match page.next_cursor {
                Some(next) => walk_cursor = Some(next),
                // The field is gone: continue after its leading bytes (at most a repeat).
                None => return Ok(leading),
            }
        }
    }

    fn held(&self, cursor: u64, pk: &str) -> Option<String> {
        let open = self.open.lock().expect("cursor lock");
        let held = open.get(&cursor)?;
        (held.pk == pk && held.issued.elapsed() < CURSOR_TTL).then(|| held.after.clone())
    }
}

/// The cursor for "after field `sk` of `pk`": the same on every node and every release.
pub fn cursor_for(pk: &str, sk: &str) -> u64 {
    let leading = leading_bytes(sk);
    let mut prefix = [0u8; PREFIX_BYTES];
    prefix[..leading.len()].copy_from_slice(leading.as_bytes());
    let prefix = u64::from(u16::from_be_bytes(prefix));
    ((leading.len() as u64) << LENGTH_SHIFT) | (prefix << PREFIX_SHIFT) | field_hash(pk, sk)
}

/// A cursor's leading bytes and hash; `None` for a number no node issues.
fn decode(cursor: u64) -> Option<(String, u64)> {
    if cursor == 0 || cursor >= CURSOR_LIMIT {
        return None;
    }
    let length = (cursor >> LENGTH_SHIFT) as usize;
    let prefix = ((cursor >> PREFIX_SHIFT) as u16).to_be_bytes();
    let hash = cursor & ((1 << HASH_BITS) - 1);
    if length > PREFIX_BYTES || prefix[length..].iter().any(|&b| b != 0) || hash == 0 {
        return None;
    }
    let leading = std::str::from_utf8(&prefix[..length]).ok()?;
    // A cut through a character is never issued.
    (leading_bytes(leading) == leading).then(|| (leading.to_owned(), hash))
}

/// The first [`PREFIX_BYTES`] bytes of `sk`, fewer where that would cut a character.
fn leading_bytes(sk: &str) -> &str {
    let mut end = sk.len().min(PREFIX_BYTES);
    while !sk.is_char_boundary(end) {
        end -= 1;
    }
    &sk[..end]
}

/// FNV-1a of `pk`, a 0 byte and `sk`, folded to [`HASH_BITS`] bits and never 0 (a cursor of 0
/// means "start" and "done"). Fixed forever: cursors outlive releases.
fn field_hash(pk: &str, sk: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in pk.as_bytes().iter().chain(&[0]).chain(sk.as_bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash ^ (hash >> HASH_BITS)) & ((1 << HASH_BITS) - 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_the_fields_leading_bytes_and_stay_below_2_pow_53() {
        for sk in [
            "",
            "a",
            "ab",
            "abc",
            "é",
            "aé",
            "日本",
            "🦀x",
            "user:000123",
        ] {
            let cursor = cursor_for("k", sk);
            assert!(cursor > 0 && cursor < CURSOR_LIMIT, "{sk}: {cursor}");
            let (leading, hash) = decode(cursor).expect(sk);
            assert!(sk.starts_with(&leading), "{sk} begins with {leading}");
            assert_eq!(leading, leading_bytes(sk));
            assert_eq!(hash, field_hash("k", sk));
        }
        assert_eq!(leading_bytes("aé"), "a");
        assert_eq!(leading_bytes("日本"), "");
        assert_ne!(cursor_for("k1", "f"), cursor_for("k2", "f"));
        assert_ne!(cursor_for("k", "f1"), cursor_for("k", "f2"));
    }

    #[test]
    fn numbers_no_node_issues_are_refused() {
        assert!(decode(0).is_none());
        assert!(decode(CURSOR_LIMIT).is_none());
        assert!(decode(u64::MAX).is_none());
        // Length 3 (more bytes than a cursor carries).
        assert!(decode((3 << LENGTH_SHIFT) | 1).is_none());
        // Length 1 but a second byte set.
        assert!(decode((1 << LENGTH_SHIFT) | (0x6162 << PREFIX_SHIFT) | 1).is_none());
        // Half of a two-byte character.
        assert!(decode((1 << LENGTH_SHIFT) | (0xc300 << PREFIX_SHIFT) | 1).is_none());
        // Hash 0 is never issued.
        assert!(decode(1 << LENGTH_SHIFT | (0x6100 << PREFIX_SHIFT)).is_none());
    }
}
