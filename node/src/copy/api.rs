//! The copy's HTTP side: a client for http:// and https:// nodes, requests with the node's
//! token, answers with the node's own error messages, and a watch read as Server-Sent Events.

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
use std::sync::Arc;

/// The most one answer (a scan page, an error) or one watch event may hold: far above what a
/// node sends (a page of MAX_LIST_RECORDS values of MAX_VALUE_BYTES), and a bound on what
/// something else at the address can make the copy hold.
const MAX_ANSWER_BYTES: usize = 1 << 30;

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
}

impl Api {
    pub(super) fn new(
        base: &str,
        token: Option<&str>,
        client: HttpsClient,
        flag: &'static str,
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
        })
    }

    /// Sends `method path` with `body`: the answer's head, its body to read.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let request = self.request(method, path, body)?;
        self.client
            .request(request)
            .await
            .with_context(|| format!("{} {}: cannot reach it", self.flag, self.base))
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
        let response = self
            .send("POST", path, Bytes::from(body.to_string()))
            .await?;
        let status = response.status();
        let token = response
            .headers()
            .get("firescroll-token")
            .and_then(|t| t.to_str().ok())
            .map(str::to_string);
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} {}: the answer to {path} broke off or passed {MAX_ANSWER_BYTES} bytes: {e}",
                    self.flag,
                    self.base
                )
            })?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{} {}{path} answered {status}: {}",
                self.flag,
                self.base,
                answer["error"]["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string
                )
            );
        }
        Ok((answer, token))
    }

    /// A watch of `partition` from `at`, as events.
    pub(super) async fn watch(&self, partition: u32, at: Position) -> anyhow::Result<Events> {
        let from = format_positions(&BTreeMap::from([(partition, at)]));
        let path = format!("/records/watch?partition={partition}&from={from}");
        let response = self.send("GET", &path, Bytes::new()).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            bail!(
                "{} {}: the watch of partition {partition} from {from} answered {status}: {}{}",
                self.flag,
                self.base,
                answer["error"]["message"].as_str().unwrap_or_default(),
                if status.as_u16() == 410 {
                    " (the source no longer holds the changes since then: copy again without --resume)"
                } else {
                    ""
                }
            );
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
            match self.body.frame().await {
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
