//! `firescroll copy`: every record of one namespace into another through their HTTP APIs, then
//! the source's changes, until the copy has caught up (with `--follow`, until stopped). For
//! growing the partition count (fixed per namespace), moving to another region or cloud, or a
//! staging copy of production's config.
//!
//! It scans the source (`POST /records/scan`), writing each page to the target as puts and
//! noting the first watch position the scan gives for each partition; then it watches each
//! partition from there (`GET /records/watch?partition=N&from=...`) and writes every change in
//! order, up to where the source was when the scan ended. Writes are puts and deletes of whole
//! records, so running it again, or `--resume` from the positions it printed, is safe. Records
//! keep their data and deadlines; the target gives them new CreatedAt/UpdatedAt.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Writes to the target hold at most this much JSON (well under the default MAX_BODY_BYTES).
const MAX_WRITE_BYTES: usize = 1 << 20;

/// Copies every record of one FireScroll namespace into another (one with more partitions, in
/// another region or cloud), then the changes made meanwhile. Prints the positions it reached:
/// `--resume` continues from them.
#[derive(Debug, clap::Parser)]
#[command(name = "firescroll copy", version)]
pub struct CopyArgs {
    /// The source node's HTTP API, e.g. http://old-node:8190 (any node of its region).
    #[arg(long)]
    pub from: String,
    /// The target node's HTTP API, e.g. https://new-node:8190.
    #[arg(long)]
    pub to: String,
    /// Bearer token for the source (read access).
    #[arg(long, env = "COPY_FROM_AUTH", hide_env_values = true)]
    pub from_auth: Option<String>,
    /// Bearer token for the target (write access).
    #[arg(long, env = "COPY_TO_AUTH", hide_env_values = true)]
    pub to_auth: Option<String>,
    /// PEM CA certificates to trust for https:// addresses instead of the system's.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Skip the scan: follow the source's changes from these positions (what a previous copy
    /// printed, e.g. `0:1042,1:77`).
    #[arg(long)]
    pub resume: Option<String>,
    /// Once caught up, keep copying the source's changes until interrupted (SIGINT/SIGTERM),
    /// for a switch-over with no gap; then print the positions reached.
    #[arg(long)]
    pub follow: bool,
    /// Records per scan page and per write.
    #[arg(long, default_value_t = 500)]
    pub page: usize,
}

/// Runs `firescroll copy` with `args` (the program name first).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = CopyArgs::command()
        .bin_name("firescroll copy")
        .get_matches_from(args);
    let args = CopyArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    match runtime.block_on(run(args)) {
        Ok(positions) => {
            println!("{positions}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("firescroll copy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Copies, and answers the positions reached (`partition:offset`, comma-separated).
pub async fn run(args: CopyArgs) -> anyhow::Result<String> {
    anyhow::ensure!(args.page > 0, "--page must be at least 1");
    let client = http_client(args.cacert.as_deref())?;
    let source = Api::new(
        &args.from,
        args.from_auth.as_deref(),
        client.clone(),
        "--from",
    )?;
    let target = Api::new(&args.to, args.to_auth.as_deref(), client, "--to")?;
    let starts = match &args.resume {
        Some(positions) => parse_positions(positions)?,
        None => copy_records(&source, &target, args.page).await?,
    };
    let ends = if args.follow {
        None
    } else {
        let mut ends = BTreeMap::new();
        for &partition in starts.keys() {
            ends.insert(partition, source_position(&source, partition).await?);
        }
        Some(ends)
    };
    let reached = Arc::new(Mutex::new(starts.clone()));
    let follows = starts.iter().map(|(&partition, &start)| {
        let end = ends.as_ref().and_then(|e| e.get(&partition).copied());
        let (source, target, reached) = (&source, &target, reached.clone());
        async move {
            copy_changes(source, target, partition, start, end, args.page, &reached).await
        }
    });
    let all = futures_util::future::try_join_all(follows);
    if args.follow {
        eprintln!("following the source's changes; stop with Ctrl-C (SIGINT) or SIGTERM");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            done = all => { done?; }
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    } else {
        all.await?;
    }
    let reached = reached.lock().expect("positions lock").clone();
    Ok(format_positions(&reached))
}

/// The scan: every record of the source written to the target. Answers where to watch each
/// partition from.
async fn copy_records(
    source: &Api,
    target: &Api,
    page: usize,
) -> anyhow::Result<BTreeMap<u32, Position>> {
    let mut starts = BTreeMap::new();
    let mut writer = Writer::new(target, page);
    let mut cursor: Option<String> = None;
    let mut copied = 0u64;
    loop {
        let mut body = json!({ "limit": page });
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let (answer, token) = source.post("/records/scan", &body).await?;
        for (partition, position) in parse_positions(token.as_deref().unwrap_or_default())? {
            starts.entry(partition).or_insert(position);
        }
        let records = answer["Records"]
            .as_array()
            .context("the scan answered no Records")?;
        for record in records {
            let mut put = json!({ "pk": record["Pk"], "sk": record["Sk"], "data": record["Data"] });
            if let Some(deadline) = record.get("ExpiresAt") {
                put["expires_at"] = deadline.clone();
            }
            writer.write(Kind::Put, put).await?;
        }
        copied += records.len() as u64;
        match answer["NextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        if copied % 10_000 < page as u64 {
            eprintln!("copied {copied} records");
        }
    }
    writer.flush().await?;
    let partitions = starts.keys().max().map_or(0, |p| p + 1);
    if starts.len() as u32 != partitions || partitions == 0 {
        bail!(
            "the source's scan gave watch positions for partitions {:?} only: every node of its \
             region must run a release with /records/scan",
            starts.keys().collect::<Vec<_>>()
        );
    }
    eprintln!("copied {copied} records of {partitions} partitions; now the changes made meanwhile");
    Ok(starts)
}

/// Where `partition` of the source is now (a one-record scan of it answers its position).
async fn source_position(source: &Api, partition: u32) -> anyhow::Result<Position> {
    let body = json!({ "cursor": format!("{partition}.0"), "limit": 1 });
    let (_, token) = source.post("/records/scan", &body).await?;
    parse_positions(token.as_deref().unwrap_or_default())?
        .remove(&partition)
        .with_context(|| format!("the source gave no position for partition {partition}"))
}

/// Copies `partition`'s changes from `start` on (to `end`, when given), noting in `reached`
/// the position of every change the target has taken.
async fn copy_changes(
    source: &Api,
    target: &Api,
    partition: u32,
    start: Position,
    end: Option<Position>,
    page: usize,
    reached: &Mutex<BTreeMap<u32, Position>>,
) -> anyhow::Result<()> {
    let mut writer = Writer::new(target, page);
    let mut at = start;
    let done = |at: Position| end.is_some_and(|end| at.0 >= end.0);
    while !done(at) {
        let mut events = source.watch(partition, at).await?;
        // The position after the last change handed to the writer (taken once flushed).
        let mut pending = at;
        loop {
            let event = match events.next_now() {
                Some(event) => event,
                None => {
                    // Nothing more arrived yet: what was read is written before waiting.
                    at = writer.flush_to(pending, partition, reached).await?;
                    if done(at) {
                        return Ok(());
                    }
                    match events.next().await? {
                        Some(event) => event,
                        // The stream ended (the node restarted, say): resume from `at`.
                        None => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            break;
                        }
                    }
                }
            };
            match event.kind.as_str() {
                "change" => {
                    let change: Value = serde_json::from_str(&event.data)
                        .context("the source sent a change that is not JSON")?;
                    let key = json!({ "pk": change["Pk"], "sk": change["Sk"] });
                    match change["Op"].as_str() {
                        Some("put") => {
                            let mut put = key;
                            put["data"] = change["Data"].clone();
                            if let Some(deadline) = change.get("ExpiresAt") {
                                put["expires_at"] = deadline.clone();
                            }
                            writer.write(Kind::Put, put).await?;
                        }
                        Some("delete" | "expired") => writer.write(Kind::Delete, key).await?,
                        other => bail!("the source sent a change of an unknown kind: {other:?}"),
                    }
                    pending = position_of(&event.id, partition)?;
                }
                "bookmark" => pending = position_of(&event.id, partition)?.max(pending),
                // The watch ended (it fell behind, say): resume from the last position.
                "error" => break,
                _ => {}
            }
        }
        at = writer.flush_to(pending, partition, reached).await?;
    }
    Ok(())
}

/// A position in one partition's log: (offset, change within the entry).
type Position = (u64, u32);

/// `partition:offset[.index],...` as positions.
fn parse_positions(text: &str) -> anyhow::Result<BTreeMap<u32, Position>> {
    let mut positions = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || anyhow::anyhow!("{part:?} is not a position (`partition:offset`)");
        let (partition, position) = part.split_once(':').ok_or_else(bad)?;
        let (offset, index) = position.split_once('.').unwrap_or((position, "0"));
        positions.insert(
            partition.parse().map_err(|_| bad())?,
            (
                offset.parse().map_err(|_| bad())?,
                index.parse().map_err(|_| bad())?,
            ),
        );
    }
    Ok(positions)
}

fn format_positions(positions: &BTreeMap<u32, Position>) -> String {
    positions
        .iter()
        .map(|(partition, (offset, index))| match index {
            0 => format!("{partition}:{offset}"),
            i => format!("{partition}:{offset}.{i}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A watch event's position in `partition`.
fn position_of(id: &str, partition: u32) -> anyhow::Result<Position> {
    parse_positions(id)?
        .remove(&partition)
        .with_context(|| format!("a watch event of partition {partition} had the id {id:?}"))
}

/// An HTTPS-capable client (plain http:// too).
fn http_client(
    cacert: Option<&std::path::Path>,
) -> anyhow::Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = match cacert {
        None => builder
            .with_native_roots()
            .context("cannot load the system's CA certificates (give --cacert)")?,
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("--cacert {}", path.display()))?
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
struct Api {
    base: String,
    flag: &'static str,
    authorization: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    fn new(
        base: &str,
        token: Option<&str>,
        client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(Value, Option<String>)> {
        let response = self
            .send("POST", path, Bytes::from(body.to_string()))
            .await?;
        let status = response.status();
        let token = response
            .headers()
            .get("firescroll-token")
            .and_then(|t| t.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| {
                format!(
                    "{} {}: the answer to {path} broke off",
                    self.flag, self.base
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
    async fn watch(&self, partition: u32, at: Position) -> anyhow::Result<Events> {
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
            buffer: Vec::new(),
        })
    }
}

/// A watch's Server-Sent Events.
struct Events {
    body: Incoming,
    buffer: Vec<u8>,
}

struct Event {
    kind: String,
    id: String,
    data: String,
}

impl Events {
    /// The next event already received, if any.
    fn next_now(&mut self) -> Option<Event> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
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
            // Comments (keep-alives) carry no event.
            if !event.id.is_empty() || event.kind == "error" {
                return Some(event);
            }
        }
    }

    /// The next event, waiting for it; `None` when the stream ends.
    async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.next_now() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
}

/// Writes to the target, batched: a batch holds one kind of write and each key once, so the
/// target applies them in the order they came.
struct Writer<'a> {
    target: &'a Api,
    kind: Kind,
    records: Vec<Value>,
    keys: HashSet<(String, String)>,
    bytes: usize,
    max_records: usize,
}

impl<'a> Writer<'a> {
    fn new(target: &'a Api, max_records: usize) -> Self {
        Writer {
            target,
            kind: Kind::Put,
            records: Vec::new(),
            keys: HashSet::new(),
            bytes: 0,
            max_records,
        }
    }

    async fn write(&mut self, kind: Kind, record: Value) -> anyhow::Result<()> {
        let key = (
            record["pk"].as_str().unwrap_or_default().to_string(),
            record["sk"].as_str().unwrap_or_default().to_string(),
        );
        let size = record.to_string().len();
        if kind != self.kind
            || self.keys.contains(&key)
            || self.records.len() >= self.max_records
            || self.bytes + size > MAX_WRITE_BYTES
        {
            self.flush().await?;
        }
        self.kind = kind;
        self.keys.insert(key);
        self.bytes += size;
        self.records.push(record);
        Ok(())
    }

    /// Flushes, then notes `position` (the position after the last change written) as
    /// reached in `partition`, and answers it.
    async fn flush_to(
        &mut self,
        position: Position,
        partition: u32,
        reached: &Mutex<BTreeMap<u32, Position>>,
    ) -> anyhow::Result<Position> {
        self.flush().await?;
        reached
            .lock()
            .expect("positions lock")
            .insert(partition, position);
        Ok(position)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let path = match self.kind {
            Kind::Put => "/records/put",
            Kind::Delete => "/records/delete",
        };
        let body = json!({ "Records": std::mem::take(&mut self.records) });
        self.target.post(path, &body).await?;
        self.keys.clear();
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let positions = parse_positions("3:1042, 0:15.2,1:0").unwrap();
        assert_eq!(positions[&0], (15, 2));
        assert_eq!(format_positions(&positions), "0:15.2,1:0,3:1042");
        assert!(parse_positions("3").is_err());
        assert!(parse_positions("a:1").is_err());
        assert_eq!(position_of("2:7.1", 2).unwrap(), (7, 1));
        assert!(position_of("2:7", 1).is_err());
    }
}
