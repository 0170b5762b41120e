//! Membership of a region (SWIM gossip on foca, over UDP on GOSSIP_PORT), the partition →
//! owners map built from members' cards, and the client that reads from those owners.
//!
//! Every member broadcasts a card — its addresses, replica group and the partitions it
//! serves with their applied offsets — every GOSSIP_BROADCAST_MS and whenever what it serves
//! changes. SWIM detects dead members; a dead or departed member leaves the map at once. The
//! service asks [`Cluster::owners`] where to send reads for partitions this node does not serve.

mod auth;
mod batcher;
mod card;
mod client;
mod gossip;
mod identity;
mod peer_tls;
mod table;

pub use auth::{GossipAuth, KeyError as GossipKeyError};
pub use card::CardTooLarge;
pub use client::{HOP_HEADER, PeerClient, PeerError, PeerStream};
pub use identity::NodeId;
pub use peer_tls::{PeerIdentity, PeerTlsSettings};
pub use table::{ClusterView, Peer};

use crate::metrics::Metrics;
use crate::model::Key;
use crate::model::peer::GetReply;
use card::Card;
use rand::seq::SliceRandom;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use table::Table;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Gossip settings (from ADVERTISE_ADDR, GOSSIP_PORT, GOSSIP_PEERS and friends).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where the gossip socket binds (LISTEN_ADDR:GOSSIP_PORT).
    pub bind: SocketAddr,
    /// The host peers reach this node at; API, RESP and gossip are on it at their ports.
    pub advertise_host: String,
    pub gossip_port: u16,
    pub api_port: u16,
    pub resp_port: u16,
    /// Seeds, `host:port`; names resolve to all their addresses, again and again.
    pub peers: Vec<String>,
    pub broadcast_interval: Duration,
    /// Bound of one proxied request, beyond any read-your-writes wait it carries.
    pub read_timeout: Duration,
    pub namespace: String,
    pub region: String,
    pub replica_group: String,
    pub instance_id: String,
    /// Presented to peers when the region requires tokens.
    pub token: Option<String>,
    /// The most bytes a peer's answer may have (see [`PeerClient::new`]).
    pub max_answer_bytes: usize,
    /// The most keys a peer accepts in one read (MAX_RECORDS_PER_REQUEST): coalesced reads
    /// stay within it.
    pub max_keys_per_request: usize,
    /// How datagrams are signed and which are accepted (GOSSIP_KEYS).
    pub auth: GossipAuth,
    /// Peers are asked over HTTPS, checked so (TLS_CERT_PATH with PEER_TLS_CA_PATH).
    pub tls: Option<PeerTlsSettings>,
}

/// How long an owner that failed a read is tried last.
pub const SHUN_FOR: Duration = Duration::from_secs(10);

/// What this node can answer now: the partitions it serves, with the next offset each
/// applies, and those on standby (see `Card::standby`). Given whether another member serves
/// a partition, so a standby copy ends once one does.
pub type Served = Arc<dyn Fn(&dyn Fn(u32) -> bool) -> ServedNow + Send + Sync>;

/// What [`Served`] tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedNow {
    pub serving: Vec<(u32, u64)>,
    pub standby: Vec<u32>,
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("GOSSIP_PORT: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ADVERTISE_ADDR: cannot resolve {host:?}: {reason}")]
    Advertise { host: String, reason: String },
    #[error("{0}; use fewer PARTITIONS per namespace")]
    CardTooLarge(#[from] CardTooLarge),
    #[error("{0}")]
    Tls(#[from] crate::tls_files::TlsError),
}

/// Whether gossip sent to `addr` reaches this node's own socket: its port on the address it
/// advertises or binds, or on loopback (`localhost` resolves to `::1` too).
fn is_own_address(addr: SocketAddr, advertised: SocketAddr, bind: SocketAddr) -> bool {
    addr.port() == bind.port()
        && (addr.ip() == advertised.ip() || addr.ip() == bind.ip() || addr.ip().is_loopback())
}

/// What the driver task and the read path share.
pub(crate) struct Shared {
    local: NodeId,
    replica_group: String,
    table: Arc<Mutex<Table>>,
    served: Served,
    metrics: Arc<Metrics>,
}

/// A handle on this node's membership. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    /// Owners that recently failed a proxied read, and when: tried last for a while, so a hung
    /// owner costs one timeout rather than one per read until SWIM declares it down.
    failed: Arc<Mutex<std::collections::HashMap<NodeId, Instant>>>,
    client: PeerClient,
    batcher: Arc<batcher::GetBatcher>,
    input: mpsc::Sender<gossip::Input>,
    /// Every seed (`GOSSIP_PEERS`) is this node's own gossip address: nobody to wait for.
    seeds_are_self: bool,
}

impl Cluster {
    /// Binds the gossip socket, joins through the seeds and starts broadcasting this node's card.
    /// `tls`: this node's side of TLS, when its API port speaks it (peers are then asked over
    /// HTTPS, as `settings.tls` says).
    pub async fn start(
        settings: ClusterSettings,
        served: Served,
        metrics: Arc<Metrics>,
        tls: Option<PeerIdentity>,
    ) -> Result<Cluster, ClusterError> {
        let advertise = |port: u16| {
            let host = settings.advertise_host.clone();
            async move {
                let reason = match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(mut addrs) => match addrs.next() {
                        Some(addr) => return Ok(addr),
                        None => "no address".to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                Err(ClusterError::Advertise { host, reason })
            }
        };
        let gossip_addr = advertise(settings.gossip_port).await?;
        let mut seeds_are_self = true;
        for seed in &settings.peers {
            let own = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(addrs) => addrs
                    .into_iter()
                    .all(|a| is_own_address(a, gossip_addr, settings.bind)),
                Err(_) => false,
            };
            seeds_are_self &= own;
        }
        let local = NodeId::fresh(gossip_addr);
        let card = Card {
            id: local,
            seq: 0,
            namespace: settings.namespace.clone(),
            region: settings.region.clone(),
            replica_group: settings.replica_group.clone(),
            instance_id: settings.instance_id.clone(),
            api: SocketAddr::new(gossip_addr.ip(), settings.api_port),
            resp: SocketAddr::new(gossip_addr.ip(), settings.resp_port),
            partitions: Vec::new(),
            offsets: Vec::new(),
            standby: Vec::new(),
        };
        // Refuse at start what could never be gossiped: a card serving every partition.
        let mut widest = card.clone();
        let top = served(&|_| false)
            .serving
            .iter()
            .map(|&(p, _)| p)
            .max()
            .unwrap_or(0);
        widest.set_partitions(&(0..=top).map(|p| (p, 0)).collect::<Vec<_>>());
        widest.encode(gossip::MAX_CARD_BYTES)?;

        let socket = UdpSocket::bind(settings.bind)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: settings.bind,
                source,
            })?;
        let socket = Arc::new(socket);
        let stale_after = (settings.broadcast_interval * 10).max(Duration::from_secs(5));
        let shared = Arc::new(Shared {
            local,
            replica_group: settings.replica_group.clone(),
            table: Arc::new(Mutex::new(Table::new(
                local,
                &settings.namespace,
                &settings.region,
                stale_after,
            ))),
            served,
            metrics,
        });
        let (tx, rx) = mpsc::channel(1024);
        tracing::info!(
            id = %local,
            bind = %settings.bind,
            api = %card.api,
            seeds = ?settings.peers,
            signed = settings.auth.is_keyed(),
            "gossip started"
        );
        let peer_tls = match (&settings.tls, &tls) {
            (Some(peers), Some(own)) => Some(peer_tls::client_config(peers, own)?),
            _ => None,
        };
        let client = PeerClient::new(
            settings.read_timeout,
            settings.token.clone(),
            settings.max_answer_bytes,
            peer_tls,
        );
        let max_keys_per_request = settings.max_keys_per_request;
        tokio::spawn(gossip::receive(
            socket.clone(),
            tx.clone(),
            settings.auth.clone(),
            shared.metrics.gossip_dropped.clone(),
        ));
        tokio::spawn(gossip::drive(
            shared.clone(),
            settings,
            socket,
            card,
            tx.clone(),
            rx,
        ));
        Ok(Cluster {
            shared,
            failed: Arc::default(),
            batcher: Arc::new(batcher::GetBatcher::new(
                client.clone(),
                max_keys_per_request,
            )),
            client,
            input: tx,
            seeds_are_self,
        })
    }

    /// Waits, up to `bound`, until this node has the card of every member of the region SWIM
    /// reports alive (and knows of one) — unless every seed is this node itself (the first
    /// member of a region has nobody to hear from). Until then it knows no owner of what it
    /// does not serve: a node restarted into a live region answered its first reads "no node
    /// in this region serves it" for the few milliseconds gossip took, and waiting for only the
    /// first card was not enough when that member did not serve the partition asked for. False
    /// when the bound ran out.
    pub async fn wait_for_region(&self, bound: Duration) -> bool {
        if self.seeds_are_self {
            return true;
        }
        let deadline = Instant::now() + bound;
        loop {
            let now = Instant::now();
            if self
                .shared
                .table
                .lock()
                .expect("table lock")
                .heard_from_every_member(now)
            {
                return true;
            }
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The other members serving `partition` (or, when none does, keeping it on standby), in
    /// random order so reads spread over replicas; owners that failed a read in the last
    /// [`SHUN_FOR`] come last.
    pub fn owners(&self, partition: u32) -> Vec<Peer> {
        let now = Instant::now();
        let mut owners = self
            .shared
            .table
            .lock()
            .expect("table lock")
            .owners(partition, now);
        owners.shuffle(&mut rand::rng());
        let mut failed = self.failed.lock().expect("failed lock");
        if !failed.is_empty() {
            failed.retain(|_, at| now.duration_since(*at) < SHUN_FOR);
            owners.sort_by_key(|o| failed.contains_key(&o.id));
        }
        owners
    }

    /// Whether another member serves `partition` now (standby copies aside).
    pub fn served_elsewhere(&self, partition: u32) -> bool {
        self.shared
            .table
            .lock()
            .expect("table lock")
            .serves(partition, Instant::now())
    }

    /// Whether another member serves `partition` and, by its last card (at most
    /// GOSSIP_BROADCAST_MS old), has applied every entry below `next`: one a read may go to
    /// instead of waiting for this node to get that far.
    pub fn served_elsewhere_from(&self, partition: u32, next: u64) -> bool {
        self.shared
            .table
            .lock()
            .expect("table lock")
            .serves_from(partition, next, Instant::now())
    }

    /// Notes that `id` failed a proxied read (unreachable, or could not serve).
    pub fn note_failure(&self, id: NodeId) {
        self.failed
            .lock()
            .expect("failed lock")
            .insert(id, Instant::now());
    }

    /// Like [`Cluster::owners`], but this node's replica group first: what "applied by the
    /// local replica group" means for a write's outcome.
    pub fn owners_own_group_first(&self, partition: u32) -> Vec<Peer> {
        let mut owners = self.owners(partition);
        let failed = self.failed.lock().expect("failed lock");
        owners.sort_by_key(|o| {
            (
                failed.contains_key(&o.id),
                *o.replica_group != *self.shared.replica_group,
            )
        });
        owners
    }

    /// Point reads of `keys` at the owner `addr`, coalesced with other callers' reads bound for
    /// it (one slot per key, in order).
    pub async fn get_coalesced(
        &self,
        addr: SocketAddr,
        keys: Vec<Key>,
    ) -> Result<GetReply, PeerError> {
        self.batcher.get(addr, keys).await
    }

    /// The client for reading from owners.
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    /// The cluster as this node sees it (`/debug/cluster`).
    pub fn view(&self) -> ClusterView {
        self.shared
            .table
            .lock()
            .expect("table lock")
            .view(Instant::now())
    }

    /// Leaves the cluster, telling a few members so the region learns at once rather than
    /// after SWIM's suspicion timeout. Bounded: a stuck driver does not hold up shutdown.
    pub async fn leave(&self) {
        let (done, wait) = oneshot::channel();
        if self.input.send(gossip::Input::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
        tracing::info!(id = %self.shared.local, "left the gossip cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_that_are_this_node_are_told_from_other_members() {
        let bind: SocketAddr = "0.0.0.0:8192".parse().unwrap();
        let advertised: SocketAddr = "[fdaa::3]:8192".parse().unwrap();
        for own in [
            "[fdaa::3]:8192",
            "127.0.0.1:8192",
            "[::1]:8192",
            "0.0.0.0:8192",
        ] {
            assert!(
                is_own_address(own.parse().unwrap(), advertised, bind),
                "{own}"
            );
        }
        for other in ["[fdaa::4]:8192", "127.0.0.1:8202", "10.0.0.2:8192"] {
            assert!(
                !is_own_address(other.parse().unwrap(), advertised, bind),
                "{other}"
            );
        }
    }
}
