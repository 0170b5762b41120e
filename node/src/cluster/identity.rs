//! Who a member is to SWIM: its gossip address plus the time its process started, so a
//! restarted node (same address, same INSTANCE_ID) is a new member and never mistaken for its
//! old, dead self — and, being later, wins the address over it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// A member's identity in the gossip cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// Where its gossip (UDP) socket is reached.
    pub addr: SocketAddr,
    /// Unix microseconds when the process started; bumped if SWIM declares this process down
    /// while it is alive, so it can rejoin as a new member.
    pub incarnation: u64,
}

impl NodeId {
    /// A fresh identity for this process.
    pub fn fresh(addr: SocketAddr) -> Self {
        NodeId {
            addr,
            // Never 0: 0 marks a seed known only by address.
            incarnation: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64))
            .max(1),
        }
    }

    /// A seed known only by address: SWIM accepts an announce sent to its address.
    pub fn seed(addr: SocketAddr) -> Self {
        NodeId {
            addr,
            incarnation: 0,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}", self.addr, self.incarnation)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            addr: self.addr,
            incarnation: self.incarnation.wrapping_add(1).max(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The later process wins: a restarted node replaces its old self at once.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}
