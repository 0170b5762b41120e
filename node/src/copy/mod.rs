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
use api::{Api, http_client};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use writer::{Kind, Writer};

mod api;
mod from_redis;
mod writer;

/// Copies every record of one FireScroll namespace into another (one with more partitions, in
/// another region or cloud), then the changes made meanwhile. Prints the positions it reached:
/// `--resume` continues from them.
#[derive(Debug, clap::Parser)]
#[command(name = "firescroll copy", version)]
pub struct CopyArgs {
    /// The source node's HTTP API, e.g. http://old-node:8190 (any node of its region); or a
    /// Redis server, `redis://[:password@]host:6379[/db]` (`rediss://` over TLS), whose
    /// strings, hashes and sets are copied once.
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
    /// PEM CA certificates to trust for https:// and rediss:// addresses instead of the
    /// system's.
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
    /// Copy only the records (and changes) of pks starting with this, e.g. `flags:` — a
    /// staging copy of one kind of record.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub pk_prefix: String,
    /// How long to keep trying a side that does not answer (restarting, being deployed,
    /// unreachable) before stopping; the positions reached are printed then too, for
    /// `--resume`.
    #[arg(long, default_value_t = 300)]
    pub retry_secs: u64,
}

/// Where the target stood when a copy stopped on an error after it took some of the source's
/// changes: what to `--resume` from (printed on stdout as a finished copy prints it).
#[derive(Debug)]
struct Reached(String);

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped with the target holding the source's changes up to {0}: continue with \
             --resume {0}",
            self.0
        )
    }
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
            if !positions.is_empty() {
                println!("{positions}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(Reached(positions)) = e.downcast_ref::<Reached>() {
                println!("{positions}");
            }
            eprintln!("firescroll copy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Copies, and answers the positions reached (`partition:offset`, comma-separated).
pub async fn run(args: CopyArgs) -> anyhow::Result<String> {
    anyhow::ensure!(args.page > 0, "--page must be at least 1");
    let client = http_client(args.cacert.as_deref())?;
    if ["redis://", "rediss://", "redis+unix://"]
        .iter()
        .any(|scheme| args.from.starts_with(scheme))
    {
        return copy_redis(&args, client).await;
    }
    let retry_for = std::time::Duration::from_secs(args.retry_secs);
    let source = Api::new(
        &args.from,
        args.from_auth.as_deref(),
        client.clone(),
        "--from",
        retry_for,
    )?;
    let target = Api::new(&args.to, args.to_auth.as_deref(), client, "--to", retry_for)?;
    let starts = match &args.resume {
        Some(positions) => parse_positions(positions)?,
        None => copy_records(&source, &target, &args).await?,
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
        let (source, target, args, reached) = (&source, &target, &args, reached.clone());
        async move { copy_changes(source, target, partition, start, end, args, &reached).await }
    });
    let all = futures_util::future::try_join_all(follows);
    let followed = if args.follow {
        eprintln!("following the source's changes; stop with Ctrl-C (SIGINT) or SIGTERM");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            done = all => done.map(|_| ()),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    } else {
        all.await.map(|_| ())
    };
    let positions = format_positions(&reached.lock().expect("positions lock"));
    followed.map_err(|e| e.context(Reached(positions.clone())))?;
    Ok(positions)
}

/// A Redis source: one pass. Answers no positions (Redis has no change feed).
async fn copy_redis(args: &CopyArgs, client: api::HttpsClient) -> anyhow::Result<String> {
    if args.resume.is_some() || args.follow {
        bail!(
            "--resume and --follow need a FireScroll source: Redis has no change feed to follow \
             (stop writes to it before copying, or copy again to pick up changes)"
        );
    }
    let retry_for = std::time::Duration::from_secs(args.retry_secs);
    let target = Api::new(&args.to, args.to_auth.as_deref(), client, "--to", retry_for)?;
    let copied = from_redis::copy_from_redis(
        &args.from,
        args.cacert.as_deref(),
        &args.pk_prefix,
        &target,
        args.page,
    )
    .await?;
    eprintln!(
        "copied {} keys ({} records) from Redis",
        copied.keys, copied.records
    );
    if !copied.skipped.is_empty() {
        let skipped: Vec<String> = copied
            .skipped
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        eprintln!(
            "not copied: {} (FireScroll stores strings, hashes, sets and JSON documents)",
            skipped.join(", ")
        );
    }
    Ok(String::new())
}

/// Gives `put` the deadline of `record` (a source's record or change), and says whether it is
/// the record's own (`OwnTtl`), as the source's HTTP API shows them.
fn keep_deadline(put: &mut Value, record: &Value) {
    if let Some(deadline) = record.get("ExpiresAt") {
        put["expires_at"] = deadline.clone();
        if record["OwnTtl"] == true {
            put["own_ttl"] = true.into();
        }
    }
}

/// The scan: every record of the source written to the target. Answers where to watch each
/// partition from.
async fn copy_records(
    source: &Api,
    target: &Api,
    args: &CopyArgs,
) -> anyhow::Result<BTreeMap<u32, Position>> {
    let page = args.page;
    let mut starts = BTreeMap::new();
    let mut writer = Writer::new(target, page);
    let mut cursor: Option<String> = None;
    let mut copied = 0u64;
    loop {
        let mut body = json!({ "limit": page, "pk_prefix": args.pk_prefix });
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
        // A source of a release without pk_prefix answers every record.
        let wanted = records.iter().filter(|r| has_prefix(r, &args.pk_prefix));
        for record in wanted {
            let mut put = json!({ "pk": record["Pk"], "sk": record["Sk"], "data": record["Data"] });
            keep_deadline(&mut put, record);
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
    args: &CopyArgs,
    reached: &Mutex<BTreeMap<u32, Position>>,
) -> anyhow::Result<()> {
    let page = args.page;
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
                    if !has_prefix(&change, &args.pk_prefix) {
                        // Not copied, but passed: the position moves on.
                        pending = position_of(&event.id, partition)?;
                        continue;
                    }
                    let key = json!({ "pk": change["Pk"], "sk": change["Sk"] });
                    match change["Op"].as_str() {
                        Some("put") => {
                            let mut put = key;
                            put["data"] = change["Data"].clone();
                            keep_deadline(&mut put, &change);
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

/// Whether a record or change (`{"Pk": ...}`) is one of the pks copied.
fn has_prefix(record: &Value, pk_prefix: &str) -> bool {
    record["Pk"]
        .as_str()
        .is_some_and(|pk| pk.starts_with(pk_prefix))
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
