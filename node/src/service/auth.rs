//! Who may do what (README, "Auth"): tokens at three levels, each implying the ones before it —
//! read, write, admin. Both frontends ask the same question here. With no token configured the
//! node is open (a dev node, like Redis without requirepass) and says so at start.

use sha2::{Digest, Sha256};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
    Admin,
}

impl Access {
    /// The lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// What a caller asks to do, as far as access goes. Every frontend (HTTP, RESP, the peer API)
/// names its requests with these, and [`Operation::needs`] is the one table of what each takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Say who you are or leave (`AUTH`, `HELLO`, `QUIT`, `RESET`).
    Connect,
    /// Read records, keys, outcomes, plugin bindings.
    Read,
    /// A peer of the region reading on a client's behalf (it presents the region's token).
    PeerRead,
    /// Write records (any op).
    Write,
    /// Upload or unbind plugins.
    ManagePlugins,
    /// Operate the node: snapshots.
    Administer,
}

impl Operation {
    /// The access `self` takes.
    pub fn needs(self) -> Access {
        match self {
            Operation::Connect => Access::None,
            Operation::Read | Operation::PeerRead => Access::Read,
            Operation::Write => Access::Write,
            Operation::ManagePlugins | Operation::Administer => Access::Admin,
        }
    }

    /// Whether `granted` allows `self`: `Err` names what was needed.
    pub fn check(self, granted: Access) -> Result<(), Denied> {
        let needed = self.needs();
        match granted {
            granted if granted >= needed => Ok(()),
            Access::None => Err(Denied::NoToken),
            granted => Err(Denied::TooWeak { needed, granted }),
        }
    }
}

/// Why an operation was refused; each frontend says it in its protocol's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No valid token was presented.
    NoToken,
    /// The token is valid but below what the operation needs.
    TooWeak { needed: Access, granted: Access },
}

/// The configured tokens, kept only as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<([u8; 32], Access)>,
    /// The least powerful configured token, kept to present to peers for proxied reads
    /// (nodes of a region share their tokens).
    peer: Option<Secret>,
}

/// A token that never shows in logs or `Debug` output.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Tokens {
    /// Tokens per level (READ_TOKENS, WRITE_TOKENS, ADMIN_TOKENS).
    pub fn new(read: &[String], write: &[String], admin: &[String]) -> Self {
        let mut tokens = Vec::new();
        let mut peer = None;
        for (list, access) in [
            (read, Access::Read),
            (write, Access::Write),
            (admin, Access::Admin),
        ] {
            for token in list.iter().filter(|t| !t.is_empty()) {
                tokens.push((digest(token), access));
                peer.get_or_insert_with(|| Secret(token.clone()));
            }
        }
        Tokens { tokens, peer }
    }

    /// The token this node presents to peers: its least powerful one (a read token if any;
    /// reads are all it asks of them). `None` for an open node.
    pub fn peer_token(&self) -> Option<String> {
        self.peer.as_ref().map(|s| s.0.clone())
    }

    /// Whether any token is configured (else everyone is admin).
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// What `token` grants: with no tokens configured, everything.
    pub fn access(&self, token: Option<&str>) -> Access {
        if !self.required() {
            return Access::Admin;
        }
        let Some(token) = token else {
            return Access::None;
        };
        let presented = digest(token);
        // Compare against every token, in constant time, and keep the highest grant.
        self.tokens
            .iter()
            .filter(|(d, _)| constant_time_eq(d, &presented))
            .map(|(_, access)| *access)
            .max()
            .unwrap_or(Access::None)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_says_what_each_operation_needs() {
        use Operation::*;
        assert_eq!(Connect.check(Access::None), Ok(()));
        assert_eq!(Read.check(Access::None), Err(Denied::NoToken));
        assert_eq!(PeerRead.check(Access::Read), Ok(()));
        assert_eq!(
            Write.check(Access::Read),
            Err(Denied::TooWeak {
                needed: Access::Write,
                granted: Access::Read
            })
        );
        assert_eq!(Write.check(Access::Admin), Ok(()));
        assert!(ManagePlugins.check(Access::Write).is_err());
        assert_eq!(ManagePlugins.check(Access::Admin), Ok(()));
    }

    #[test]
    fn levels_and_open_nodes() {
        let open = Tokens::default();
        assert!(!open.required());
        assert_eq!(open.access(None), Access::Admin);
        let t = Tokens::new(&["r".into()], &["w".into()], &["a".into(), "".into()]);
        assert!(t.required());
        assert_eq!(t.access(None), Access::None);
        assert_eq!(t.access(Some("")), Access::None);
        assert_eq!(t.access(Some("nope")), Access::None);
        assert_eq!(t.access(Some("r")), Access::Read);
        assert_eq!(t.access(Some("w")), Access::Write);
        assert_eq!(t.access(Some("a")), Access::Admin);
        assert!(Access::Admin > Access::Write && Access::Write > Access::Read);
    }
}
