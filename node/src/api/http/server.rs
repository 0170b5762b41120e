//! Serving a router over TCP with the limits a public port needs: a cap on open connections
//! (beyond it, new ones are closed at once and counted), a timeout for request headers that also
//! closes idle keep-alive connections, the body rules of [`super::body`], a second handle on each
//! socket so long reads can stop when their client leaves, a bounded graceful shutdown, and TLS
//! when the node has a certificate (see [`crate::api::tls`]).

use super::body::admit;
use super::header_timer::ConnectionTimer;
use super::held_body::{HYPER_BUFFER_BYTES, counted};
use crate::api::client_memory::ClientMemory;
use crate::api::tls::{self, Tls, TlsPort};
use crate::config::HttpLimits;
use crate::metrics::Metrics;
use crate::service::watch_client;
use axum::extract::Request;
use axum::http::header::ACCEPT_ENCODING;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How often a refused connection is logged at most (the counter has every one).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The answer to a plaintext request on a TLS port (as nginx answers one), in the API's error
/// shape.
fn plaintext_on_tls_port() -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "code": "plain_http_to_https_port",
            "message": "this port speaks HTTPS (TLS_CERT_PATH is set): use an https:// address",
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` (an axum router, or any service answering as one) on `listener` until `stop`
/// turns true, then lets open requests finish for at most `grace` before returning. Request
/// bodies are bounded by `max_body_bytes` and `limits.body_timeout` (see `api/http/body.rs`).
/// With `tls`, every connection is HTTPS (HTTP/2 offered by ALPN). Large request bodies count
/// in `memory` while they arrive, large answers while they are sent; a connection the node
/// closes for what it holds ends at once.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R>(
    listener: TcpListener,
    router: R,
    max_body_bytes: usize,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
    memory: Arc<ClientMemory>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    R: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    R::Future: Send,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The HTTP/1 header timeout's timer is set per connection (below).
    builder
        .http1()
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HYPER_BUFFER_BYTES);
    builder
        .http2()
        .max_send_buf_size(HYPER_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let refused = Refusals::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            metrics
                .requests_refused
                .with_label_values(&["connections"])
                .inc();
            refused.note(limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
        let (tls, metrics) = (tls.clone(), metrics.clone());
        let first_bytes = limits.header_timeout;
        let holder = Arc::new(memory.holder("http"));
        tokio::spawn(async move {
            let _slot = slot;
            // Telling HTTP/1 from HTTP/2 waits for the first bytes with no timeout of its own: a
            // connection that sends nothing is closed after the header timeout. (On a TLS port
            // the handshake's first byte, and ALPN then names the protocol.)
            if tls.is_none() && tls::starts_handshake(&stream, first_bytes).await.is_err() {
                return;
            }
            // A second handle on the socket, for long reads to see whether their client left
            // (hyper does not read while a request is being answered, so it would not notice).
            let (stream, client) = match duplicate(stream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot watch an HTTP connection");
                    return;
                }
            };
            let body_timeout = limits.body_timeout;
            let memory = holder.clone();
            let service = tower::service_fn(move |mut request: Request<Incoming>| {
                let (router, client, memory) = (router.clone(), client.clone(), memory.clone());
                if request.headers().contains_key(ACCEPT_ENCODING) {
                    // For the count inside the compression layer (see `held_body`).
                    request.extensions_mut().insert(memory.clone());
                }
                async move {
                    match admit(request, max_body_bytes, body_timeout, memory.clone()).await {
                        Ok(request) => watch_client(client, router.oneshot(request))
                            .await
                            .map(|response| counted(response, &memory)),
                        Err(refused) => Ok(refused),
                    }
                }
            });
            // Each connection gets its own header timer (see `header_timer`).
            let mut builder = (*builder).clone();
            builder.http1().timer(ConnectionTimer::new());
            let service = TowerToHyperService::new(service);
            let serving = async {
                match tls {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                    Some(tls) => {
                        let Some(stream) = tls::accept(
                            &tls,
                            TlsPort::Http,
                            stream,
                            first_bytes,
                            &plaintext_on_tls_port(),
                            &metrics,
                        )
                        .await
                        else {
                            return Ok(());
                        };
                        // ALPN said which protocol: no waiting for the first bytes to tell.
                        let builder = match stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => builder.http2_only(),
                            _ => builder.http1_only(),
                        };
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                }
            };
            // Closed by the node for what it holds (`client_memory`): dropping the
            // connection drops them.
            let ended = tokio::select! {
                ended = serving => ended,
                () = holder.evicted() => return,
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP requests still open after {} ms (SHUTDOWN_TIMEOUT_MS); closing anyway",
            grace.as_millis()
        );
    }
}

/// The stream, and a second handle on the same socket (not registered with the runtime: it is
/// only peeked at, by long reads, so it costs nothing per request).
fn duplicate(stream: TcpStream) -> std::io::Result<(TcpStream, Arc<std::net::TcpStream>)> {
    let stream = stream.into_std()?;
    let client = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, Arc::new(client)))
}

/// Logs refused connections at most once per [`REFUSAL_LOG_EVERY`], with how many there were.
#[derive(Default)]
struct Refusals {
    since_log: AtomicU64,
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl Refusals {
    fn note(&self, cap: usize) {
        let count = self.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().expect("refusal log lock");
        if last.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            *last = Some(Instant::now());
            self.since_log.store(0, Ordering::Relaxed);
            tracing::warn!(
                refused = count,
                "HTTP connection cap reached (HTTP_MAX_CONNECTIONS={cap}): closing new connections"
            );
        }
    }
}
