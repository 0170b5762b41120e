//! The Redis protocol frontend (RESP2 and RESP3): any Redis client reads FireScroll, and can write.
//! Commands call the same [`Service`] as HTTP, so both always agree.

mod clients;
mod commands;
mod connection;
pub mod frame;
mod push;
pub mod reply;
mod socket;

pub use frame::FrameLimits;

use crate::api::client_memory::ClientMemory;
use crate::api::tls::{self, Tls, TlsPort};
use crate::service::Service;
use commands::Shared;
use socket::Socket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long a Redis connection is silent before the kernel probes its client (then every
/// third of it, three times), as Redis's default `tcp-keepalive 300`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(300);

/// Settings of the RESP server.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Connections served at once; more are told so and closed.
    pub max_clients: usize,
    /// A connection idle this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    pub limits: FrameLimits,
}

/// What a client that forgot TLS reads on a TLS port.
const PLAINTEXT_ON_TLS_PORT: &[u8] = b"-ERR this port speaks TLS (TLS_CERT_PATH is set): connect \
with TLS (redis-cli --tls --cacert ca.pem, a rediss:// URL)\r\n";

/// Serves RESP on `listener` until `stop` turns true; then stops accepting, lets each connection
/// finish the command it is running, and returns. With `tls`, every connection is TLS. Commands
/// still arriving and replies not yet taken count in `memory`.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    config: RespConfig,
    tls: Option<Arc<Tls>>,
    memory: Arc<ClientMemory>,
    mut stop: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let shared = Arc::new(Shared::new(
        service.partition_count(),
        push::Hub::start(service.clone()),
        port,
        config.max_clients,
    ));
    let permits = Arc::new(Semaphore::new(config.max_clients));
    let ids = AtomicU64::new(1);
    let mut connections = tokio::task::JoinSet::new();
    // `INFO`'s rates (`instantaneous_ops_per_sec`) are sampled here, between accepts.
    let mut sample = tokio::time::interval(commands::SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sample.tick() => {
                shared.stats.sample();
                continue;
            }
            _ = stop.wait_for(|&s| s) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a RESP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Redis's `tcp-keepalive 300`: subscribed and monitoring connections never time out
        // while idle, so one whose host vanished without closing it is found by the kernel.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_IDLE / 3)
            .with_retries(3);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_clients, "RESP connection refused: too many clients");
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            // Said as Redis says it; a TLS client could not read it before its handshake, and
            // is closed (the log and the warning above say why).
            if tls.is_none() {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            }
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (service, shared, config, stop, tls) = (
            service.clone(),
            shared.clone(),
            config.clone(),
            stop.clone(),
            tls.clone(),
        );
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared.stats.clients.fetch_add(1, Ordering::Relaxed);
        let local = stream.local_addr().unwrap_or(peer);
        let client = shared
            .clients
            .register(id, peer, local, memory.holder("redis"));
        connections.spawn(async move {
            let socket = match tls {
                None => Some(Socket::Plain(stream)),
                Some(tls) => tls::accept(
                    &tls,
                    TlsPort::Redis,
                    stream,
                    tls::HANDSHAKE_TIMEOUT,
                    PLAINTEXT_ON_TLS_PORT,
                    service.metrics(),
                )
                .await
                .map(|stream| Socket::Tls(Box::new(stream))),
            };
            if let Some(socket) = socket {
                connection::run(socket, id, &service, &shared, &config, stop, client).await;
            }
            shared.hub.unregister(id);
            shared.clients.unregister(id);
            shared.stats.clients.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}
