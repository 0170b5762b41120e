//! Gossip datagrams signed with a key the region's nodes share (`GOSSIP_KEYS`).
//!
//! Gossip decides where reads go: a card names the partitions a node serves and the address its
//! peers send reads to. Unsigned, anyone who can reach the gossip port could announce a member
//! that serves every partition and answer the region's proxied reads with data of its own. With
//! keys, every datagram carries an HMAC-SHA256 of its bytes, and datagrams no key verifies are
//! dropped before foca reads them.
//!
//! The first key signs what this node sends; every key in the list is accepted, so keys rotate
//! without a split: add the new key second on every node, then move it first, then drop the
//! old one. The word `none` in the list stands for unsigned datagrams: first, this node sends
//! unsigned; anywhere, it accepts them. That turns signing on in a running region the same way
//! (`none,KEY` on every node, then `KEY,none`, then `KEY`).

use aws_lc_rs::hmac;

/// Bytes of the HMAC-SHA256 tag after each signed datagram's payload.
pub const TAG_BYTES: usize = 32;
/// The shortest key accepted: shorter ones are guessable.
pub const MIN_KEY_BYTES: usize = 16;
/// The most entries `GOSSIP_KEYS` may list: every datagram that no key signed is checked
/// against each of them, so a forged flood costs at most this many HMACs per datagram.
pub const MAX_KEYS: usize = 8;
/// Signs and checks only gossip: the same key used elsewhere would not sign the same bytes.
const DOMAIN: &[u8] = b"firescroll-gossip-v1\0";

/// What `GOSSIP_KEYS` asks: no keys (every datagram unsigned and accepted), or keys in order.
#[derive(Clone, Default)]
pub struct GossipAuth {
    keys: Vec<Entry>,
}

#[derive(Clone)]
enum Entry {
    // Boxed: aws-lc keeps over a kilobyte of HMAC state per key.
    Key(Box<hmac::Key>),
    Unsigned,
}

/// A `GOSSIP_KEYS` entry that cannot be a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "GOSSIP_KEYS: entry {0} is {1} bytes; a key needs at least {MIN_KEY_BYTES} \
         (`openssl rand -base64 32` makes one)"
    )]
    TooShort(usize, usize),
    #[error("GOSSIP_KEYS: entry {0} is empty")]
    Empty(usize),
    #[error("GOSSIP_KEYS: only `none` is listed; leave GOSSIP_KEYS unset for unsigned gossip")]
    OnlyNone,
    #[error(
        "GOSSIP_KEYS: {0} entries; at most {MAX_KEYS} (a rotation needs two: the new key and \
         the old)"
    )]
    TooMany(usize),
}

impl GossipAuth {
    /// Keys in order (the first signs); `none` stands for unsigned datagrams.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, KeyError> {
        if entries.len() > MAX_KEYS {
            return Err(KeyError::TooMany(entries.len()));
        }
        let mut keys = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            keys.push(match entry {
                "" => return Err(KeyError::Empty(i + 1)),
                "none" => Entry::Unsigned,
                key if key.len() < MIN_KEY_BYTES => {
                    return Err(KeyError::TooShort(i + 1, key.len()));
                }
                key => Entry::Key(Box::new(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))),
            });
        }
        if !keys.is_empty() && keys.iter().all(|k| matches!(k, Entry::Unsigned)) {
            return Err(KeyError::OnlyNone);
        }
        Ok(GossipAuth { keys })
    }

    /// Whether any key is set (else gossip is unsigned, as without `GOSSIP_KEYS`).
    pub fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether datagrams without a valid tag are accepted.
    pub fn accepts_unsigned(&self) -> bool {
        self.keys.is_empty() || self.keys.iter().any(|k| matches!(k, Entry::Unsigned))
    }

    /// What goes on the wire for `payload`: itself, or followed by the first key's tag.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + TAG_BYTES);
        out.extend_from_slice(payload);
        if let Some(Entry::Key(key)) = self.keys.first() {
            out.extend_from_slice(tag_of(key, payload).as_ref());
        }
        out
    }

    /// The payload of a received datagram, or `None` when no key accepts it.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        if let Some(split) = datagram.len().checked_sub(TAG_BYTES) {
            let (payload, tag) = datagram.split_at(split);
            let signed = self.keys.iter().any(|entry| match entry {
                // Compared in constant time: how far a forged tag matches says nothing.
                Entry::Key(key) => aws_lc_rs::constant_time::verify_slices_are_equal(
                    tag_of(key, payload).as_ref(),
                    tag,
                )
                .is_ok(),
                Entry::Unsigned => false,
            });
            if signed {
                return Some(payload);
            }
        }
        self.accepts_unsigned().then_some(datagram)
    }
}

/// HMAC-SHA256 of `payload` under `key`, for gossip only (`DOMAIN` first).
fn tag_of(key: &hmac::Key, payload: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(DOMAIN);
    ctx.update(payload);
    ctx.sign()
}

impl std::fmt::Debug for GossipAuth {
    /// Never the keys: how many, and whether unsigned datagrams pass.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipAuth")
            .field("keys", &self.keys.len())
            .field("accepts_unsigned", &self.accepts_unsigned())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef-first";
    const OTHER: &str = "0123456789abcdef-other";

    fn auth(entries: &[&str]) -> GossipAuth {
        GossipAuth::new(entries).unwrap()
    }

    #[test]
    fn a_signed_datagram_opens_with_its_key_and_with_no_other() {
        let signed = auth(&[KEY]).seal(b"a foca datagram");
        assert_eq!(signed.len(), b"a foca datagram".len() + TAG_BYTES);
        assert_eq!(auth(&[KEY]).open(&signed), Some(&b"a foca datagram"[..]));
        assert_eq!(auth(&[OTHER]).open(&signed), None, "another region's key");
        // Any byte changed, the tag cut short, or nothing but a tag: refused.
        for i in [0, 7, signed.len() - 1] {
            let mut forged = signed.clone();
            forged[i] ^= 1;
            assert_eq!(auth(&[KEY]).open(&forged), None, "byte {i} flipped");
        }
        assert_eq!(auth(&[KEY]).open(&signed[..signed.len() - 1]), None);
        assert_eq!(auth(&[KEY]).open(&signed[..TAG_BYTES - 1]), None);
        let empty = auth(&[KEY]).seal(b"");
        assert_eq!(auth(&[KEY]).open(&empty), Some(&b""[..]));
        // Unsigned datagrams are refused by a keyed node, taken by one without keys.
        assert_eq!(auth(&[KEY]).open(b"unsigned"), None);
        assert_eq!(
            GossipAuth::default().open(b"unsigned"),
            Some(&b"unsigned"[..])
        );
        assert_eq!(GossipAuth::default().seal(b"x"), b"x");
    }

    #[test]
    fn keys_rotate_and_signing_turns_on_without_a_split() {
        // Rotation: `KEY` → `KEY,OTHER` → `OTHER,KEY` → `OTHER`; each step talks to the next.
        let steps = [
            auth(&[KEY]),
            auth(&[KEY, OTHER]),
            auth(&[OTHER, KEY]),
            auth(&[OTHER]),
        ];
        for pair in steps.windows(2) {
            for (from, to) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
                assert_eq!(to.open(&from.seal(b"m")), Some(&b"m"[..]));
            }
        }
        // Turning signing on: unset → `none,KEY` → `KEY,none` → `KEY`.
        let steps = [
            GossipAuth::default(),
            auth(&["none", KEY]),
            auth(&[KEY, "none"]),
            auth(&[KEY]),
        ];
        for pair in steps.windows(2) {
            for (from, to) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
                assert_eq!(to.open(&from.seal(b"m")), Some(&b"m"[..]));
            }
        }
        assert_eq!(
            auth(&["none", KEY]).seal(b"m"),
            b"m",
            "`none` first sends unsigned"
        );
        // Two steps apart they do not: each step must reach every node before the next.
        assert_eq!(auth(&[OTHER]).open(&auth(&[KEY]).seal(b"m")), None);
        assert_eq!(auth(&[KEY]).open(&GossipAuth::default().seal(b"m")), None);
    }

    #[test]
    fn keys_that_cannot_protect_anything_are_refused_with_what_to_do() {
        let error = |entries: &[&str]| GossipAuth::new(entries).err().unwrap().to_string();
        assert!(
            error(&["short"]).contains("openssl rand"),
            "{}",
            error(&["short"])
        );
        assert!(error(&[KEY, ""]).contains("entry 2 is empty"));
        assert!(error(&["none"]).contains("leave GOSSIP_KEYS unset"));
        let many = [KEY; MAX_KEYS + 1];
        assert!(error(&many).contains("at most"), "{}", error(&many));
        assert!(GossipAuth::new(&[KEY; MAX_KEYS]).is_ok());
        assert!(!auth(&[]).is_keyed());
        let shown = format!("{:?}", auth(&[KEY]));
        assert!(!shown.contains(KEY), "never printed: {shown}");
    }
}
