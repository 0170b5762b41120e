//! The SWIM driver: one task owns the `Foca` instance and feeds it datagrams, timers and
//! ticks; it sends what foca asks to send, schedules what it asks to schedule, and turns
//! membership notifications into partition-map changes. Cards ride foca's custom broadcasts.

use super::auth::{GossipAuth, TAG_BYTES};
use super::card::Card;
use super::identity::NodeId;
use super::table::{Accepted, Table};
use super::{ClusterSettings, Shared};
use bytes::Bytes;
use foca::{AccumulatingRuntime, BroadcastHandler, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Largest gossip datagram: fits Fly.io's WireGuard MTU (1420 less IPv6 and UDP headers, as
/// Corrosion sets it), so no datagram is fragmented or dropped on 6PN.
pub const MAX_PACKET_BYTES: usize = 1372;
/// Largest datagram foca writes: room is left for the tag of a signed one (`GOSSIP_KEYS`).
const MAX_FOCA_BYTES: usize = MAX_PACKET_BYTES - TAG_BYTES;
/// Room a card leaves in a datagram for foca's header and membership updates.
pub const MAX_CARD_BYTES: usize = MAX_FOCA_BYTES - 300;

/// What the driver task reacts to.
pub enum Input {
    Data(Bytes),
    Timer(Timer<NodeId>),
    /// Seeds resolved from GOSSIP_PEERS.
    Seeds(Vec<SocketAddr>),
    /// Leave the cluster, then answer.
    Leave(oneshot::Sender<()>),
}

/// Receives cards into the table; foca re-disseminates those that were new.
pub struct CardHandler {
    table: Arc<Mutex<Table>>,
}

/// A card that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable gossip card: {0}")]
pub struct BadCard(postcard::Error);

impl BroadcastHandler<NodeId> for CardHandler {
    type Key = super::card::CardKey;
    type Error = BadCard;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<Self::Key>, Self::Error> {
        let card = Card::decode(data).map_err(BadCard)?;
        let key = card.key();
        let accepted = self
            .table
            .lock()
            .expect("table lock")
            .accept(card, Instant::now());
        Ok((accepted == Accepted::New).then_some(key))
    }
}

type Swim = Foca<NodeId, PostcardCodec, StdRng, CardHandler>;

/// Runs the driver until asked to leave (or the node stops).
pub async fn drive(
    shared: Arc<Shared>,
    settings: ClusterSettings,
    socket: Arc<UdpSocket>,
    card: Card,
    tx: mpsc::Sender<Input>,
    mut rx: mpsc::Receiver<Input>,
) {
    let mut config = foca::Config::new_lan(std::num::NonZeroU32::new(32).expect("non-zero"));
    config.max_packet_size = std::num::NonZeroUsize::new(MAX_FOCA_BYTES).expect("non-zero");
    let handler = CardHandler {
        table: shared.table.clone(),
    };
    let mut foca: Swim = Foca::with_custom_broadcast(
        shared.local,
        config,
        rand::make_rng(),
        PostcardCodec,
        handler,
    );
    let mut runtime = AccumulatingRuntime::new();
    let mut card = card;
    let mut last_served: Option<(Vec<u32>, Vec<u32>)> = None;
    let mut last_card = Instant::now() - settings.broadcast_interval;
    let mut last_resolve: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut leaving: Option<oneshot::Sender<()>> = None;

    loop {
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                let result = match input {
                    Input::Data(data) => foca.handle_data(&data, &mut runtime),
                    Input::Timer(timer) => foca.handle_timer(timer, &mut runtime),
                    Input::Seeds(addrs) => {
                        let known: HashSet<SocketAddr> =
                            foca.iter_members().map(|m| m.id().addr).collect();
                        for addr in addrs {
                            if addr != shared.local.addr && !known.contains(&addr)
                                && let Err(e) = foca.announce(NodeId::seed(addr), &mut runtime) {
                                    tracing::debug!(%addr, error = %e, "announce failed");
                                }
                        }
                        Ok(())
                    }
                    Input::Leave(done) => {
                        leaving = Some(done);
                        foca.leave_cluster(&mut runtime)
                    }
                };
                if let Err(e) = result {
                    // Stray, duplicated or foreign datagrams land here; none stops gossip.
                    tracing::debug!(error = %e, "gossip input ignored");
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let served = (shared.served)(&|p| {
                    shared.table.lock().expect("table lock").serves(p, now)
                });
                let partitions: Vec<u32> = served.serving.iter().map(|&(p, _)| p).collect();
                let changed = last_served.as_ref() != Some(&(partitions.clone(), served.standby.clone()));
                if changed || now.duration_since(last_card) >= settings.broadcast_interval {
                    card.seq += 1;
                    card.set_partitions(&served.serving);
                    card.set_standby(&served.standby);
                    match card.encode(MAX_CARD_BYTES) {
                        Ok(bytes) => {
                            if let Err(e) = foca.add_broadcast(&bytes) {
                                tracing::warn!(error = %e, "cannot queue this node's card");
                            }
                            if let Err(e) = foca.broadcast(&mut runtime) {
                                tracing::debug!(error = %e, "card broadcast failed");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "this node's card cannot be gossiped"),
                    }
                    if changed {
                        tracing::info!(partitions = ?partitions, standby = ?served.standby, "serving partitions changed; told the region");
                    }
                    last_served = Some((partitions, served.standby));
                    last_card = now;
                }
                // Seeds again: often while alone (a seed may start later), rarely once joined
                // (a DNS name may gain addresses).
                let every = if foca.num_members() == 0 { Duration::from_secs(2) } else { Duration::from_secs(30) };
                if !settings.peers.is_empty() && last_resolve.is_none_or(|at| now.duration_since(at) >= every) {
                    last_resolve = Some(now);
                    tokio::spawn(resolve_seeds(settings.peers.clone(), tx.clone()));
                }
                let members = {
                    let mut table = shared.table.lock().expect("table lock");
                    table.prune(now);
                    table.member_count(now)
                };
                shared.metrics.cluster_members.set(members as i64);
            }
        }

        while let Some((dst, data)) = runtime.to_send() {
            let datagram = settings.auth.seal(&data);
            if let Err(e) = socket.send_to(&datagram, dst.addr).await {
                tracing::debug!(to = %dst, error = %e, "gossip send failed");
            }
        }
        while let Some((delay, timer)) = runtime.to_schedule() {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Input::Timer(timer)).await;
            });
        }
        while let Some(notification) = runtime.to_notify() {
            let now = Instant::now();
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(member = %id, "member up");
                    shared.table.lock().expect("table lock").member_up(id);
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::warn!(member = %id, "member down");
                    shared.table.lock().expect("table lock").remove(id, now);
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(old = %old, new = %new, "member restarted");
                    let mut table = shared.table.lock().expect("table lock");
                    table.remove(old, now);
                    table.member_up(new);
                }
                OwnedNotification::Idle => tracing::info!("no other gossip members yet"),
                OwnedNotification::Defunct => {
                    // Declared down while alive: rejoin under a renewed identity.
                    tracing::warn!("this node was declared down by its peers; rejoining");
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(member = %id, "rejoined under a renewed identity");
                    let old = card.id;
                    card.id = id;
                    let mut table = shared.table.lock().expect("table lock");
                    table.set_local(id);
                    table.remove(old, now);
                    last_served = None;
                }
                _ => {}
            }
        }
        if let Some(done) = leaving.take() {
            let _ = done.send(());
            break;
        }
    }
}

/// Resolves every GOSSIP_PEERS entry to all its addresses and hands them to the driver.
async fn resolve_seeds(peers: Vec<String>, tx: mpsc::Sender<Input>) {
    let mut addrs = Vec::new();
    for peer in &peers {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host(peer.as_str()),
        )
        .await
        {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "GOSSIP_PEERS: cannot resolve"),
            Err(_) => tracing::warn!(peer = %peer, "GOSSIP_PEERS: resolving timed out"),
        }
    }
    if !addrs.is_empty() {
        let _ = tx.send(Input::Seeds(addrs)).await;
    }
}

/// How often a node says it drops gossip no key accepts (a node with another key, or none).
const DROPPED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Feeds received datagrams to the driver: those `auth` accepts, without their tag.
pub async fn receive(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    auth: GossipAuth,
    dropped: prometheus::IntCounter,
) {
    let mut buf = vec![0u8; MAX_PACKET_BYTES + 1];
    let mut warned: Option<Instant> = None;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                let Some(payload) = auth.open(&buf[..len]) else {
                    dropped.inc();
                    if warned.is_none_or(|at| at.elapsed() >= DROPPED_WARNING_EVERY) {
                        warned = Some(Instant::now());
                        tracing::warn!(
                            %from,
                            "dropping gossip no key in GOSSIP_KEYS signed: a node with another \
                             key (or none) cannot join this region (said once a minute; \
                             firescroll_gossip_dropped_total counts them)"
                        );
                    }
                    continue;
                };
                if tx
                    .send(Input::Data(Bytes::copy_from_slice(payload)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
