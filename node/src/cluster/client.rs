//! The remote read client: pooled HTTP/1.1 connections to all peers, bounded timeouts, and
//! errors that tell a failover worth trying (the peer is unreachable or cannot serve) from an
//! answer to pass on (the request itself is wrong).
//!
//! Requests go through hyper's pooled client directly; reqwest parsed each request's URL three
//! times (building it, its redirect policy, sending it) and wrapped it in layers a peer request
//! does not use: ~45k instructions of a proxying node's ~62k per peer request (callgrind; ~30k
//! now). With TLS on the API port the same client speaks HTTPS (see `peer_tls`).

use super::peer_tls::PeerTls;
use crate::model::ListRequest;
use crate::model::peer::{
    GET_PATH, GetQuery, GetReply, KEYS_PATH, KeysQuery, KeysReply, LIST_PATH, ListReply,
    OUTCOMES_PATH, OutcomesQuery, OutcomesReply, SCAN_PATH, ScanQuery, ScanReply,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;

/// Header marking a request as proxied once; peers never proxy it again.
pub const HOP_HEADER: &str = "x-firescroll-hop";

/// Why a peer did not answer a read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// Connection refused or reset, a timeout, or an unreadable answer.
    #[error("{addr} did not answer: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    /// The peer answered with an error.
    #[error("{addr} answered {status}: {message}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        code: String,
        message: String,
    },
}

impl PeerError {
    /// The peer's error code and message when it answered that the partition is not ready
    /// there yet (`partition_opening`, `partition_catching_up`): it will be, shortly.
    pub fn not_ready(&self) -> Option<(&'static str, &str)> {
        match self {
            PeerError::Refused { code, message, .. } => match code.as_str() {
                "partition_opening" => Some(("partition_opening", message)),
                "partition_catching_up" => Some(("partition_catching_up", message)),
                _ => None,
            },
            PeerError::Unreachable { .. } => None,
        }
    }

    /// Whether another owner may answer where this one did not: it is unreachable, cannot
    /// serve the partition (503), or failed (500). A 4xx is about the request and a 504 already
    /// waited the whole bound: another owner would answer the same.
    pub fn worth_failover(&self) -> bool {
        match self {
            PeerError::Unreachable { .. } => true,
            PeerError::Refused { status, .. } => matches!(status, 500 | 502 | 503),
        }
    }
}

/// Pooled client for the `/cluster/v1` endpoints of peers; clones share the pools.
#[derive(Clone)]
pub struct PeerClient {
    inner: std::sync::Arc<Clients>,
}

/// What a [`PeerClient`] and its clones share.
struct Clients {
    /// The `/cluster/v1` requests and watch streams.
    pool: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https` when peers' API ports speak TLS, else `http`.
    scheme: &'static str,
    /// `Bearer <token>`, made once (`Err`: the token cannot be sent in an HTTP header).
    authorization: Option<Result<axum::http::HeaderValue, String>>,
    timeout: Duration,
    max_answer_bytes: usize,
}

impl PeerClient {
    /// `timeout` bounds each request beyond any wait it asks of the peer; `token` is presented
    /// as `Authorization: Bearer` when the region requires one; an answer longer than
    /// `max_answer_bytes` is refused as it arrives (something other than a FireScroll node at
    /// a peer's address must not make this node buffer whatever it sends within the timeout).
    /// With `tls`, peers are asked over HTTPS, their certificates checked as it says.
    /// How long one peer request may take (`PROXY_TIMEOUT_MS`), waits for positions aside.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub fn new(
        timeout: Duration,
        token: Option<String>,
        max_answer_bytes: usize,
        tls: Option<PeerTls>,
    ) -> Self {
        let connect_timeout = timeout.min(Duration::from_secs(1));
        let idle = Duration::from_secs(60);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Some(tls) => {
                let builder = builder.with_tls_config(tls.config).https_only();
                match tls.server_name {
                    Some(name) => builder.with_server_name_resolver(
                        hyper_rustls::FixedServerNameResolver::new(name),
                    ),
                    None => builder,
                }
                .enable_http1()
                .wrap_connector(connector)
            }
            // Plain HTTP only: the TLS configuration is never used.
            None => builder
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(crate::tls_files::provider())
                        .with_safe_default_protocol_versions()
                        .expect("aws-lc supports the default versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector),
        };
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let authorization = token.as_ref().map(|t| {
            let mut value = axum::http::HeaderValue::try_from(format!("Bearer {t}")).map_err(
                |_| "this node's read token cannot be sent in an HTTP header (it holds control characters)".to_string(),
            )?;
            value.set_sensitive(true);
            Ok(value)
        });
        PeerClient {
            inner: std::sync::Arc::new(Clients {
                pool,
                scheme,
                authorization,
                timeout,
                max_answer_bytes,
            }),
        }
    }

    /// Point reads at `addr`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        query: &GetQuery,
        peer_wait: Duration,
    ) -> Result<GetReply, PeerError> {
        let reply: GetReply = self.post(addr, GET_PATH, query, peer_wait).await?;
        if reply.records.len() != query.keys.len() {
            return Err(PeerError::Unreachable {
                addr,
                reason: format!(
                    "answered {} records for {} keys",
                    reply.records.len(),
                    query.keys.len()
                ),
            });
        }
        Ok(reply)
    }

    /// A pk listing at `addr`.
    pub async fn list(
        &self,
        addr: SocketAddr,
        query: &ListRequest,
        peer_wait: Duration,
    ) -> Result<ListReply, PeerError> {
        self.post(addr, LIST_PATH, query, peer_wait).await
    }

    /// A page of a partition's key index at `addr`.
    pub async fn keys(
        &self,
        addr: SocketAddr,
        query: &KeysQuery,
        peer_wait: Duration,
    ) -> Result<KeysReply, PeerError> {
        self.post(addr, KEYS_PATH, query, peer_wait).await
    }

    /// A scan's page within one partition at `addr`; `None` when the peer runs a release
    /// without it (it answers 404), so the caller walks the partition key by key instead.
    pub async fn scan(
        &self,
        addr: SocketAddr,
        query: &ScanQuery,
        peer_wait: Duration,
    ) -> Result<Option<ScanReply>, PeerError> {
        self.scan_at(addr, "", query, peer_wait).await
    }

    /// [`PeerClient::scan`] with the path under `prefix` (tests serve both kinds of peer).
    async fn scan_at(
        &self,
        addr: SocketAddr,
        prefix: &str,
        query: &ScanQuery,
        peer_wait: Duration,
    ) -> Result<Option<ScanReply>, PeerError> {
        let path = format!("{prefix}{SCAN_PATH}");
        match self.post(addr, &path, query, peer_wait).await {
            Err(PeerError::Refused { status: 404, .. }) => Ok(None),
            answer => answer.map(Some),
        }
    }

    /// Entry outcomes at `addr`, which may wait up to `query.wait_ms` for each.
    pub async fn outcomes(
        &self,
        addr: SocketAddr,
        query: &OutcomesQuery,
    ) -> Result<OutcomesReply, PeerError> {
        let wait = Duration::from_millis(query.wait_ms);
        let reply: OutcomesReply = self.post(addr, OUTCOMES_PATH, query, wait).await?;
        if reply.outcomes.len() != query.positions.len() {
            return Err(PeerError::Unreachable {
                addr,
                reason: "answered the wrong number of outcomes".into(),
            });
        }
        Ok(reply)
    }

    /// Opens a watch (`GET /records/watch?{query}`) at `addr`, marked as proxied once; the
    /// answer streams until either side closes it (no timeout once it started).
    pub async fn watch(
        &self,
        addr: SocketAddr,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<PeerStream, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable { addr, reason };
        let scheme = self.inner.scheme;
        let mut request =
            axum::http::Request::get(format!("{scheme}://{addr}/records/watch?{query}"))
                .header(HOP_HEADER, "1")
                .header(axum::http::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(authorization) = &self.inner.authorization {
            let value = authorization.clone().map_err(unreachable)?;
            request = request.header(axum::http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(format!("cannot make the request: {e}")))?;
        let response = tokio::time::timeout(self.inner.timeout, self.inner.pool.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(PeerStream(response.into_body()));
        }
        // An error answer is short: read it within the bound and its size.
        let limit = self.inner.max_answer_bytes;
        let read = Limited::new(response.into_body(), limit).collect();
        let bytes = tokio::time::timeout(self.inner.timeout, read)
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(chain(e.as_ref())))?
            .to_bytes();
        let (code, message) = error_of(&bytes);
        Err(PeerError::Refused {
            addr,
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        query: &Q,
        peer_wait: Duration,
    ) -> Result<R, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable { addr, reason };
        let body = serde_json::to_vec(query).expect("queries always serialize");
        let scheme = self.inner.scheme;
        let mut request = axum::http::Request::post(format!("{scheme}://{addr}{path}"))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header(HOP_HEADER, "1");
        if let Some(authorization) = &self.inner.authorization {
            let value = authorization.clone().map_err(unreachable)?;
            request = request.header(axum::http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(format!("cannot make the request: {e}")))?;
        // The whole exchange, the answer's body included, within the bound.
        let exchange = async {
            let response = self
                .inner
                .pool
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = response.status();
            let limit = self.inner.max_answer_bytes;
            let bytes = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        format!("its answer is over {limit} bytes, more than any FireScroll answer")
                    } else {
                        chain(e.as_ref())
                    }
                })?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.inner.timeout + peer_wait, exchange)
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(unreachable)?;
        if !status.is_success() {
            let (code, message) = error_of(&bytes);
            return Err(PeerError::Refused {
                addr,
                status: status.as_u16(),
                code,
                message,
            });
        }
        crate::model::from_json_bytes(&bytes)
            .map_err(|e| unreachable(format!("unreadable answer: {e}")))
    }
}

/// `{"error":{"code","message"}}` of an error answer, or the raw text.
fn error_of(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (
            "peer_error".into(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    }
}

/// Why a request to a peer failed, in one line: a connection that failed says why (refused,
/// or a TLS handshake that did not verify the peer's certificate).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    match (e.is_connect(), std::error::Error::source(e)) {
        (true, Some(cause)) => format!("connection failed: {}", chain(cause)),
        (true, None) => "connection failed".into(),
        (false, _) => chain(e),
    }
}

/// A peer's answer that streams (a watch), read chunk by chunk as it arrives.
pub struct PeerStream(hyper::body::Incoming);

impl PeerStream {
    /// The next bytes; `None` once the peer ended the stream or went away.
    pub async fn chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.0.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Some(data),
                    // Trailers, or an empty frame: read on.
                    _ => continue,
                },
                Err(_) => return None,
            }
        }
    }
}

/// An error and its sources, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a point read at `addr`.
    async fn get_error(client: &PeerClient, addr: SocketAddr) -> PeerError {
        client
            .get(addr, &GetQuery::default(), Duration::ZERO)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_closed_port_is_a_failed_connection_worth_failing_over() {
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = PeerClient::new(Duration::from_secs(2), None, 1 << 20, None);
        let e = get_error(&client, addr).await;
        assert!(
            matches!(&e, PeerError::Unreachable { reason, .. } if reason.starts_with("connection failed")),
            "{e}"
        );
        assert!(e.worth_failover());
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out_within_the_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and reads nothing, answers nothing.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                open.push(listener.accept().await.unwrap());
            }
        });
        let client = PeerClient::new(Duration::from_millis(300), None, 1 << 20, None);
        let started = std::time::Instant::now();
        let e = get_error(&client, addr).await;
        assert!(
            matches!(&e, PeerError::Unreachable { reason, .. } if reason == "timed out"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        held.abort();
    }

    #[tokio::test]
    async fn a_token_no_header_can_carry_is_a_clear_error_not_a_panic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = PeerClient::new(
            Duration::from_secs(2),
            Some("read\ntoken".into()),
            1 << 20,
            None,
        );
        let e = get_error(&client, addr).await;
        assert!(
            e.to_string().contains("cannot be sent in an HTTP header"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_peer_without_scan_pages_is_told_from_one_that_failed() {
        // What a release before `/cluster/v1/scan` answers it (its catch-all `{op}` route), and
        // a peer that is unwell.
        let app = axum::Router::new()
            .route(
                "/old/cluster/v1/scan",
                axum::routing::post(|| async {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        r#"{"code":"not_found","message":"no cluster operation \"scan\""}"#,
                    )
                }),
            )
            .route(
                "/unwell/cluster/v1/scan",
                axum::routing::post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = PeerClient::new(Duration::from_secs(5), None, 1 << 20, None);
        let query = ScanQuery {
            cursor: "0.0".into(),
            limit: 1,
            max_reads: 1,
            min_offsets: Vec::new(),
            pk_prefix: String::new(),
        };
        let old = client
            .scan_at(addr, "/old", &query, Duration::ZERO)
            .await
            .unwrap();
        assert!(old.is_none(), "an older release: walk key by key");
        let e = client
            .scan_at(addr, "/unwell", &query, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.worth_failover(), "{e}");
    }

    #[tokio::test]
    async fn an_answer_longer_than_any_firescroll_answer_is_refused() {
        // Something at a peer's address that streams far more than a FireScroll answer.
        let app = axum::Router::new().route(
            GET_PATH,
            axum::routing::post(|| async { "x".repeat(4 << 20) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = PeerClient::new(Duration::from_secs(5), None, 1 << 20, None);
        let e = get_error(&client, addr).await;
        assert!(
            matches!(&e, PeerError::Unreachable { reason, .. }
                if reason.contains("over 1048576 bytes")),
            "{e}"
        );
    }
}
