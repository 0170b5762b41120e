//! Serving a router over TCP with the limits a public port needs: a cap on open connections
//! (beyond it, new ones are closed at once and counted), a timeout for request headers that also
//! closes idle keep-alive connections, a deadline for request bodies, a `Content-Length` over the
//! body limit refused before any of the body is read, and a bounded graceful shutdown.

use crate::config::HttpLimits;
use crate::metrics::Metrics;
use crate::service::{ErrorKind, ServiceError, watch_client};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// A declared body over the limit but within this many times it is read (and dropped) before the
/// 413, so the client sees the answer; a larger one is refused without reading it.
const DRAIN_FACTOR: u64 = 4;

/// How often a refused connection is logged at most (the counter has every one).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Adds the body rules to `router`: a declared body over `max_body_bytes` is refused before it is
/// read, and a body must arrive within `body_timeout`.
pub fn with_body_limits(router: Router, max_body_bytes: usize, body_timeout: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| read_body(request, next, max_body_bytes, body_timeout),
    ))
}

async fn read_body(request: Request, next: Next, limit: usize, timeout: Duration) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        // A client sending a body it was not asked to stop often misses an answer sent early:
        // read and drop a moderately large body first; refuse an absurd one at once.
        if declared <= (limit as u64).saturating_mul(DRAIN_FACTOR) {
            let _ = tokio::time::timeout(timeout, drain(body)).await;
        }
        return super::response::error(&too_large(limit));
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => super::response::error(&too_large(limit)),
        Err(_) => super::response::error(&ServiceError::new(
            ErrorKind::Timeout,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms (HTTP_BODY_TIMEOUT_MS)",
                timeout.as_millis()
            ),
        )),
    }
}

/// Reads a body to its end, keeping nothing.
async fn drain(mut body: Body) {
    while let Some(Ok(_)) = body.frame().await {}
}

fn too_large(limit: usize) -> ServiceError {
    ServiceError::too_large(
        "body_too_large",
        format!("the request body is over {limit} bytes (MAX_BODY_BYTES): split the request"),
    )
}

/// Serves `router` on `listener` until `stop` turns true, then lets open requests finish for at
/// most `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
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
        let first_bytes = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // Telling HTTP/1 from HTTP/2 waits for the first bytes with no timeout of its own: a
            // connection that sends nothing is closed after the header timeout.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_bytes, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            // The client's end of stream, seen on a second descriptor of the socket: hyper does
            // not read while a request is being answered, so it would not notice.
            let gone = Arc::new(AtomicBool::new(false));
            let (stream, eof_watch) = match split_watch(stream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot watch an HTTP connection");
                    return;
                }
            };
            let service = {
                let gone = gone.clone();
                tower::service_fn(move |request: Request<Incoming>| {
                    let (router, gone) = (router.clone(), gone.clone());
                    watch_client(gone, router.oneshot(request))
                })
            };
            let connection = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let client_left = async {
                wait_for_eof(eof_watch).await;
                gone.store(true, Ordering::Relaxed);
                std::future::pending::<()>().await
            };
            tokio::select! {
                ended = watcher.watch(connection) => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                () = client_left => {}
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

/// The stream, and a second handle on the same socket to watch for the client's end of stream.
fn split_watch(stream: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let stream = stream.into_std()?;
    let watch = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, TcpStream::from_std(watch)?))
}

/// Returns once the client has closed its side (or the socket failed). Bytes waiting to be read
/// are hyper's: they are only peeked at, and looked at again a little later.
async fn wait_for_eof(watch: TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match watch.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
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
