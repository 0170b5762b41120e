//! The copy's HTTP side: a client for http:// and https:// nodes, requests with the node's
//! token, answers with the node's own error messages, and a watch read as Server-Sent Events.
//! A side that does not answer for a while (a restart, a deploy, a 503 while it takes its
//! partitions over) is asked again, with pauses, for up to `--retry-secs`; every request the
//! copy makes can be repeated (reads, and writes of the source's values).

use super::{Position, format_positions};
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most one answer (a scan page, an error) or one watch event may hold: far above what a
/// node sends (a page of MAX_LIST_RECORDS values of MAX_VALUE_BYTES), and a bound on what
/// something else at the address can make the copy hold.
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// How long one request may take before it counts as not answered (and is tried again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a watch may send nothing before it counts as gone: a node sends a keep-alive every
/// 15 s, so a silent stream is a node stopped or cut off, and the copy watches again.
const WATCH_SILENCE: Duration = Duration::from_secs(60);

/// The longest pause between tries of a side that does not answer.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Why a request failed: worth another try later, or not.
enum Failure {
    /// The side did not answer, broke off, or said it cannot now (502, 503, 504).
    Transient(anyhow::Error),
    /// Its answer stands (a refusal, a malformed request, a 410).
    Fatal(anyhow::Error),
}

/// Whether a request failed in its TLS handshake (a certificate not trusted, for a name it
/// does not cover, a plaintext server): asking again gives the same answer. rustls's errors
/// reach here as I/O errors of kind `InvalidData`, inside other I/O errors (whose `source`
/// skips what they wrap: `get_ref` looks inside).
fn refused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => e.source(),
        };
    }
    false
}

/// The message of a node's error answer (`{"error":{"message"}}`), read up to 64 KiB.
async fn error_message(response: hyper::Response<Incoming>) -> Option<String> {
    let bytes = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).ok()?;
    answer["error"]["message"].as_str().map(str::to_string)
}

/// The client both sides share.
pub(super) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS-capable client (plain http:// too).
pub(super) fn http_client(cacert: Option<&std::path::Path>) -> anyhow::Result<HttpsClient> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = match cacert {
        // A machine without a CA store (a slim container) still copies over http://; an
        // https:// address then fails naming the certificate, and --cacert is the way.
        None => builder
            .clone()
            .with_native_roots()
            .unwrap_or_else(|_| builder.with_root_certificates(rustls::RootCertStore::empty())),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("--cacert {}: cannot read it", path.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("--cacert {}", path.display()))?)
                    .with_context(|| {
                        format!("--cacert {}: not a CA certificate", path.display())
                    })?;
            }
            builder.with_root_certificates(roots)
        }
    }
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// One side of the copy: its base address and token.
pub(super) struct Api {
    base: String,
    flag: &'static str,
    authorization: Option<HeaderValue>,
    client: HttpsClient,
    /// How long to keep trying a side that does not answer.
    retry_for: Duration,
    /// When the side last said it is failing, while it does: the partitions' watches and the
    /// writer retry at once, and say so once.
    outage: std::sync::Mutex<Option<Instant>>,
}

impl Api {
    pub(super) fn new(
        base: &str,
        token: Option<&str>,
        client: HttpsClient,
        flag: &'static str,
        retry_for: Duration,
    ) -> anyhow::Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("{flag} {base:?}: give the node's HTTP API address, e.g. http://host:8190");
        }
        let authorization = token
            .map(|t| HeaderValue::try_from(format!("Bearer {t}")))
            .transpose()
            .with_context(|| format!("{flag}'s token cannot be sent in an HTTP header"))?;
        Ok(Api {
            base,
            flag,
            authorization,
            client,
            retry_for,
            outage: std::sync::Mutex::new(None),
        })
    }

    /// Sends `method path` with `body`: the answer's head, its body to read. A 502, 503 or 504
    /// is a failure worth another try.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let request = self.request(method, path, body).map_err(Failure::Fatal)?;
        let response =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    let fatal = refused_by_tls(&e);
                    let e = anyhow::Error::new(e)
                        .context(format!("{} {}: cannot reach it", self.flag, self.base));
                    return Err(if fatal {
                        Failure::Fatal(e)
                    } else {
                        Failure::Transient(e)
                    });
                }
                Err(_) => {
                    return Err(Failure::Transient(anyhow::anyhow!(
                        "{} {}: no answer to {path} within {} s",
                        self.flag,
                        self.base,
                        REQUEST_TIMEOUT.as_secs()
                    )));
                }
            };
        let status = response.status().as_u16();
        if matches!(status, 502..=504) {
            let message = error_message(response).await;
            return Err(Failure::Transient(anyhow::anyhow!(
                "{} {}{path} answered {status}: {}",
                self.flag,
                self.base,
                message.as_deref().unwrap_or("unavailable")
            )));
        }
        Ok(response)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the side has not answered for
    /// `retry_for`; says on stderr what it waits for (at most every 10 s).
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut failing_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match attempt().await {
                Ok(value) => {
                    if self.outage.lock().expect("outage lock").take().is_some() {
                        eprintln!("{} {}: answering again", self.flag, self.base);
                    }
                    return Ok(value);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.retry_for {
                        return Err(e.context(format!(
                            "gave up after trying for {} s (--retry-secs)",
                            self.retry_for.as_secs()
                        )));
                    }
                    {
                        let mut said = self.outage.lock().expect("outage lock");
                        if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                            eprintln!(
                                "{e:#}; trying again for up to {} s",
                                self.retry_for.saturating_sub(since.elapsed()).as_secs()
                            );
                            *said = Some(Instant::now());
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        Ok(request.body(Full::new(body))?)
    }

    /// `POST path` with a JSON body: its JSON answer and FireScroll-Token header, or an error
    /// with the node's own message.
    pub(super) async fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let body = Bytes::from(body.to_string());
        self.retrying(|| self.post_once(path, body.clone())).await
    }

    async fn post_once(&self, path: &str, body: Bytes) -> Result<(Value, Option<String>), Failure> {
        let response = self.send("POST", path, body).await?;
        let status = response.status();
        let token = response
            .headers()
            .get("firescroll-token")
            .and_then(|t| t.to_str().ok())
            .map(str::to_string);
        let read = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect();
        let bytes = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "{} {}: the answer to {path} passed {MAX_ANSWER_BYTES} bytes",
                    self.flag,
                    self.base
                )));
            }
            Ok(Err(e)) => {
                return Err(Failure::Transient(anyhow::anyhow!(
                    "{} {}: the answer to {path} broke off: {e}",
                    self.flag,
                    self.base
                )));
            }
            Err(_) => {
                return Err(Failure::Transient(anyhow::anyhow!(
                    "{} {}: the answer to {path} stalled for {} s",
                    self.flag,
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                )));
            }
        };
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "{} {}{path} answered {status}: {}",
                self.flag,
                self.base,
                answer["error"]["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string
                )
            )));
        }
        Ok((answer, token))
    }

    /// A watch of `partition` from `at`, as events.
    pub(super) async fn watch(&self, partition: u32, at: Position) -> anyhow::Result<Events> {
        self.retrying(|| self.watch_once(partition, at)).await
    }

    async fn watch_once(&self, partition: u32, at: Position) -> Result<Events, Failure> {
        let from = format_positions(&BTreeMap::from([(partition, at)]));
        let path = format!("/records/watch?partition={partition}&from={from}");
        let response = self.send("GET", &path, Bytes::new()).await?;
        let status = response.status();
        if !status.is_success() {
            let message = error_message(response).await;
            return Err(Failure::Fatal(anyhow::anyhow!(
                "{} {}: the watch of partition {partition} from {from} answered {status}: {}{}",
                self.flag,
                self.base,
                message.unwrap_or_default(),
                if status.as_u16() == 410 {
                    " (the source no longer holds the changes since then: copy again without --resume)"
                } else {
                    ""
                }
            )));
        }
        Ok(Events {
            body: response.into_body(),
            parser: EventParser::default(),
        })
    }
}

/// A watch's Server-Sent Events.
pub(super) struct Events {
    body: Incoming,
    parser: EventParser,
}

pub(super) struct Event {
    pub(super) kind: String,
    pub(super) id: String,
    pub(super) data: String,
}

/// The events of a stream's bytes, as they arrive in any pieces.
#[derive(Default)]
struct EventParser {
    buffer: Vec<u8>,
    /// The buffer before this holds no event's end.
    searched: usize,
}

impl EventParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole event received, if any; comments (keep-alives) are skipped.
    fn next(&mut self) -> Option<Event> {
        loop {
            // Each byte is searched once, however many pieces an event arrives in.
            let from = self.searched.saturating_sub(1);
            let Some(end) = self.buffer[from..].windows(2).position(|w| w == b"\n\n") else {
                self.searched = self.buffer.len();
                return None;
            };
            let end = from + end;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            self.searched = 0;
            let text = String::from_utf8_lossy(&block);
            let mut event = Event {
                kind: "message".into(),
                id: String::new(),
                data: String::new(),
            };
            for line in text.lines() {
                let Some((field, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.kind = value.to_string(),
                    "id" => event.id = value.to_string(),
                    "data" => event.data.push_str(value),
                    _ => {}
                }
            }
            if !event.id.is_empty() || event.kind == "error" {
                return Some(event);
            }
        }
    }
}

impl Events {
    /// The next event already received, if any.
    pub(super) fn next_now(&mut self) -> Option<Event> {
        self.parser.next()
    }

    /// The next event, waiting for it; `None` when the stream ends.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.parser.next() {
                return Ok(Some(event));
            }
            // A node sends a keep-alive every 15 s: silence this long is a node gone quiet
            // (stopped, cut off), and the stream counts as ended.
            let Ok(frame) = tokio::time::timeout(WATCH_SILENCE, self.body.frame()).await else {
                return Ok(None);
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                    if self.parser.buffer.len() > MAX_ANSWER_BYTES {
                        anyhow::bail!(
                            "the source's watch sent {} bytes without ending an event: is it a \
                             FireScroll node?",
                            self.parser.buffer.len()
                        );
                    }
                }
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_whole_however_the_stream_is_cut() {
        let stream = b": keep-alive\n\nevent: bookmark\nid: 0:7\ndata: {\"Token\":\"0:7\"}\n\n\
            event: change\nid: 0:8\ndata: {\"Op\":\"put\"}\n\nevent: error\ndata: {}\n\n";
        for cut in 1..stream.len() {
            let mut parser = EventParser::default();
            let mut events = Vec::new();
            for piece in stream.chunks(cut) {
                parser.push(piece);
                while let Some(event) = parser.next() {
                    events.push((event.kind, event.id, event.data));
                }
            }
            assert_eq!(
                events,
                [
                    ("bookmark".into(), "0:7".into(), r#"{"Token":"0:7"}"#.into()),
                    ("change".into(), "0:8".into(), r#"{"Op":"put"}"#.into()),
                    ("error".into(), String::new(), "{}".into()),
                ],
                "pieces of {cut} bytes"
            );
        }
    }
}
