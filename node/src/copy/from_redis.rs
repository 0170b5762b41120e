//! A Redis server as the copy's source (`--from redis://host:6379`): moving a config store that
//! lives in Redis — feature flags, settings, allowlists — into FireScroll. Strings, hashes and
//! sets are copied with their deadlines, byte for byte as FireScroll's own Redis port would
//! store them (text as a JSON string, other bytes as `{"$base64": ...}`, keys and fields that
//! are not UTF-8 in FireScroll's binary key form), so every Redis client reads back what it
//! wrote; RedisJSON documents (`ReJSON-RL`) as documents. Keys of other types are counted and named, not copied. Redis has no change feed to
//! resume from: the copy is one pass over `SCAN` (stop writes to the source first, or copy
//! again to pick up what changed).

use super::api::Api;
use super::writer::{Kind, Writer};
use crate::model::{BINARY_KEY_MARK, binary_data, binary_key};
use anyhow::{Context, bail};
use redis::Value as Reply;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// What one pass copied and what it left.
#[derive(Debug, Default)]
pub(super) struct Copied {
    pub records: u64,
    pub keys: u64,
    /// Keys not copied, by Redis type (lists, sorted sets, streams ...).
    pub skipped: BTreeMap<String, u64>,
}

/// Copies every string, hash and set of the Redis server at `url` whose key starts with
/// `key_prefix` into `target`. A `rediss://` server (TLS) is checked against `cacert`'s PEM
/// certificates when given, else the system's.
pub(super) async fn copy_from_redis(
    url: &str,
    cacert: Option<&Path>,
    key_prefix: &str,
    target: &Api,
    page: usize,
) -> anyhow::Result<Copied> {
    // SCAN's MATCH with the prefix's glob characters escaped: keys starting with it, as sent.
    let pattern: std::sync::Arc<[u8]> = key_prefix
        .bytes()
        .flat_map(|b| match b {
            b'*' | b'?' | b'[' | b']' | b'\\' => vec![b'\\', b],
            b => vec![b],
        })
        .chain([b'*'])
        .collect();
    // Messages name the server without its password.
    let shown = without_password(url);
    let client = redis_client(url, cacert).with_context(|| format!("--from {shown}"))?;
    // Bounded: a server that never answers (rediss:// to a plaintext port waits for a line
    // that never comes) must not hold the copy forever.
    let tls = url.starts_with("rediss://");
    let mut connection = tokio::task::spawn_blocking(move || {
        let connection = client.get_connection_with_timeout(REDIS_CONNECT_TIMEOUT)?;
        connection.set_read_timeout(Some(REDIS_READ_TIMEOUT))?;
        connection.set_write_timeout(Some(REDIS_READ_TIMEOUT))?;
        Ok::<_, redis::RedisError>(connection)
    })
    .await?
    .map_err(|e| match e.is_timeout() {
        true => anyhow::anyhow!(
            "no answer within {} s{}",
            REDIS_CONNECT_TIMEOUT.as_secs(),
            match tls {
                true => " (rediss:// needs the server's TLS port; redis:// is plaintext)",
                false => "",
            }
        ),
        false => e.into(),
    })
    .with_context(|| format!("--from {shown}: cannot connect"))?;
    let mut writer = Writer::new(target, page);
    let mut copied = Copied::default();
    let mut cursor = 0u64;
    // Whether to ask hash fields' own deadlines (`HPTTL`, Redis 7.4), and whether the server
    // was probed for it yet.
    let mut field_ttls = (true, false);
    loop {
        let pattern = pattern.clone();
        let (con, asked, read) = tokio::task::spawn_blocking(move || {
            let (ask, probed) = &mut field_ttls;
            let read = read_page(&mut connection, cursor, &pattern, page, (ask, probed));
            (connection, field_ttls, read)
        })
        .await?;
        connection = con;
        field_ttls = asked;
        let read = read.with_context(|| format!("--from {shown}"))?;
        for record in read.records {
            writer.write(Kind::Put, record).await?;
            copied.records += 1;
        }
        copied.keys += read.keys;
        for (kind, n) in read.skipped {
            *copied.skipped.entry(kind).or_default() += n;
        }
        cursor = read.next;
        if cursor == 0 {
            break;
        }
    }
    writer.flush().await?;
    Ok(copied)
}

/// How long connecting to a Redis source (TLS handshake and AUTH included) may take.
const REDIS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one answer of a Redis source may take (a page's pipelined reads).
const REDIS_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `url` with its password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// A client of the Redis server at `url`.
fn redis_client(url: &str, cacert: Option<&Path>) -> anyhow::Result<redis::Client> {
    if !url.starts_with("rediss://") {
        return Ok(redis::Client::open(url)?);
    }
    // The redis crate builds its rustls configuration with the process's provider: the one the
    // rest of FireScroll uses (already installed is fine).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root_cert = match cacert {
        None => return Ok(redis::Client::open(url)?),
        Some(path) => std::fs::read(path)
            .with_context(|| format!("--cacert {}: cannot read it", path.display()))?,
    };
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    Ok(redis::Client::build_with_tls(url, certificates)?)
}

/// One `SCAN` page's keys read as records.
struct Page {
    next: u64,
    records: Vec<Value>,
    keys: u64,
    skipped: BTreeMap<String, u64>,
}

/// A key read from the source: its records as (field bytes, sk, data), and its deadline.
struct Found {
    key: Vec<u8>,
    pk: String,
    deadline: Option<i64>,
    is_hash: bool,
    entries: Vec<(Vec<u8>, String, Value)>,
}

/// How much earlier than its key's a field's deadline must be to count as its own, ms: more
/// than the time between asking the key's TTL and the fields' (and the clock's steps).
const OWN_TTL_SLACK_MS: i64 = 1_000;

/// The deadline of each field of each hash in `found` (Redis 7.4's `HPTTL`), in one round
/// trip: per key `None` for a key that is not a hash, else per field `Some(deadline or none)`,
/// or `None` for a field gone since it was read. A server without `HPTTL` (before 7.4, where
/// fields have no deadlines of their own) turns `ask` off, for the rest of the copy.
#[allow(clippy::type_complexity)]
fn field_ttls(
    con: &mut redis::Connection,
    found: &[Found],
    now_ms: i64,
    (ask, asked_before): (&mut bool, &mut bool),
) -> anyhow::Result<Vec<Option<Vec<Option<Option<i64>>>>>> {
    let hashes: Vec<&Found> = found
        .iter()
        .filter(|f| f.is_hash && !f.entries.is_empty())
        .collect();
    if hashes.is_empty() {
        return Ok(vec![None; found.len()]);
    }
    if !*asked_before {
        // Once per copy, a probe whose every argument is text: on a server before 7.4 the
        // "unknown command" error quotes the arguments, which may be binary fields here.
        *asked_before = true;
        let probe = redis::cmd("HPTTL")
            .arg("firescroll:copy:probe")
            .arg("FIELDS")
            .arg(1)
            .arg("f")
            .query::<Reply>(con);
        if let Err(e) = probe {
            if e.to_string()
                .to_ascii_lowercase()
                .contains("unknown command")
            {
                *ask = false;
                return Ok(vec![None; found.len()]);
            }
            return Err(e.into());
        }
    }
    let mut pipe = redis::pipe();
    for hash in &hashes {
        pipe.cmd("HPTTL")
            .arg(&hash.key)
            .arg("FIELDS")
            .arg(hash.entries.len());
        for (field, _, _) in &hash.entries {
            pipe.arg(field);
        }
    }
    let replies: Vec<Reply> = pipe.query(con)?;
    let mut replies = replies.into_iter();
    Ok(found
        .iter()
        .map(|f| {
            if !f.is_hash || f.entries.is_empty() {
                return None;
            }
            // Nil: the key is gone since HGETALL (so are its fields: -2).
            let ttls: Vec<i64> = match replies.next() {
                Some(Reply::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Reply::Int(n) => *n,
                        _ => -1,
                    })
                    .collect(),
                _ => vec![-2; f.entries.len()],
            };
            Some(
                (0..f.entries.len())
                    .map(|i| match ttls.get(i).copied().unwrap_or(-1) {
                        -2 => None,
                        ms if ms >= 0 => Some(Some(now_ms + ms)),
                        _ => Some(None),
                    })
                    .collect(),
            )
        })
        .collect())
}

fn read_page(
    con: &mut redis::Connection,
    cursor: u64,
    pattern: &[u8],
    count: usize,
    (ask_field_ttls, probed): (&mut bool, &mut bool),
) -> anyhow::Result<Page> {
    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query(con)?;
    let mut page = Page {
        next,
        records: Vec::new(),
        keys: 0,
        skipped: BTreeMap::new(),
    };
    if keys.is_empty() {
        return Ok(page);
    }
    // Each key's type and deadline, then its value, in two round trips per page.
    let mut meta = redis::pipe();
    for key in &keys {
        meta.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
    }
    let meta: Vec<Reply> = meta.query(con)?;
    let mut values = redis::pipe();
    let mut wanted = Vec::new();
    for (key, pair) in keys.iter().zip(meta.chunks(2)) {
        let kind = match &pair[0] {
            Reply::SimpleString(kind) => kind.as_str(),
            Reply::Okay => "string",
            other => bail!("TYPE answered {other:?}"),
        };
        let pttl = match pair[1] {
            Reply::Int(ms) => ms,
            _ => -1,
        };
        match kind {
            "string" => values.cmd("GET").arg(key),
            "hash" => values.cmd("HGETALL").arg(key),
            "set" => values.cmd("SMEMBERS").arg(key),
            // A RedisJSON document (Redis Stack, or a FireScroll node's document): its JSON.
            "ReJSON-RL" => values.cmd("JSON.GET").arg(key),
            // Gone since SCAN saw it.
            "none" => continue,
            other => {
                *page.skipped.entry(other.to_string()).or_default() += 1;
                continue;
            }
        };
        wanted.push((key, kind, pttl));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let replies: Vec<Reply> = values.query(con)?;
    let mut found: Vec<Found> = Vec::new();
    for ((key, kind, pttl), reply) in wanted.into_iter().zip(replies) {
        let Some(pk) = key_text(key) else {
            *page
                .skipped
                .entry("key of FireScroll's binary form".into())
                .or_default() += 1;
            continue;
        };
        let mut key_found = Found {
            key: key.clone(),
            pk,
            deadline: (pttl > 0).then(|| now_ms + pttl),
            is_hash: kind == "hash",
            entries: Vec::new(),
        };
        let mut add = |field: &[u8], data: Value| {
            if let Some(sk) = key_text(field) {
                key_found.entries.push((field.to_vec(), sk, data));
            }
        };
        match (kind, reply) {
            // Deleted between the two round trips.
            (_, Reply::Nil) => continue,
            ("string", Reply::BulkString(bytes)) => {
                key_found
                    .entries
                    .push((Vec::new(), String::new(), value_json(&bytes)));
            }
            ("ReJSON-RL", Reply::BulkString(json)) => {
                let document = serde_json::from_slice(&json).map_err(|e| {
                    anyhow::anyhow!("JSON.GET of a ReJSON-RL key answered no JSON: {e}")
                })?;
                key_found
                    .entries
                    .push((Vec::new(), String::new(), document));
            }
            ("hash", Reply::Array(items)) => {
                for pair in items.chunks(2) {
                    if let [Reply::BulkString(field), Reply::BulkString(value)] = pair {
                        add(field, value_json(value));
                    }
                }
            }
            ("hash", Reply::Map(pairs)) => {
                for (field, value) in pairs {
                    if let (Reply::BulkString(field), Reply::BulkString(value)) = (field, value) {
                        add(&field, value_json(&value));
                    }
                }
            }
            ("set", Reply::Array(members) | Reply::Set(members)) => {
                for member in members {
                    if let Reply::BulkString(member) = member {
                        add(&member, json!(true));
                    }
                }
            }
            (kind, other) => bail!("{kind} key answered {other:?}"),
        }
        page.keys += 1;
        found.push(key_found);
    }
    let field_ttls = if *ask_field_ttls {
        field_ttls(con, &found, now_ms, (ask_field_ttls, probed))?
    } else {
        vec![None; found.len()]
    };
    for (key, field_ttls) in found.into_iter().zip(field_ttls) {
        for (i, (_, sk, data)) in key.entries.into_iter().enumerate() {
            // A field goes at its own deadline or its key's, whichever comes first.
            let field = field_ttls.as_ref().map_or(Some(None), |ttls| ttls[i]);
            let Some(field) = field else {
                // Gone since HGETALL.
                continue;
            };
            // The field's own when it comes first: fields added to the key later must not
            // take it (they take the key's). Both were asked as times left, in two round
            // trips: within a second of the key's, it is the key's (a FireScroll source
            // writing log format 4 or older answers a field's `HPTTL` with its key's TTL where
            // Redis 7.4 answers -1).
            let (deadline, own) = match (key.deadline, field) {
                (Some(a), Some(b)) => (Some(a.min(b)), b < a.saturating_sub(OWN_TTL_SLACK_MS)),
                (None, Some(b)) => (Some(b), true),
                (a, None) => (a, false),
            };
            let mut record = json!({ "pk": key.pk, "sk": sk, "data": data });
            if let Some(at) = deadline {
                record["expires_at"] = json!(at);
                if own {
                    record["own_ttl"] = json!(true);
                }
            }
            page.records.push(record);
        }
    }
    Ok(page)
}

/// A Redis key or field as FireScroll's Redis port names it: the text, or the binary key form
/// for bytes that are not UTF-8. `None` for text that is itself of the binary form (FireScroll's
/// Redis port refuses it too: it would read back as other bytes).
fn key_text(bytes: &[u8]) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.starts_with(BINARY_KEY_MARK) => None,
        Ok(text) => Some(text.to_string()),
        Err(_) => Some(binary_key(bytes)),
    }
}

/// A Redis value as FireScroll's Redis port stores it.
fn value_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => serde_json::from_str(binary_data(bytes).get()).expect("binary data is JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_server_without_its_password() {
        for (url, shown) in [
            ("rediss://:s3cret@host:6380", "rediss://:***@host:6380"),
            (
                "redis://default:p@ss:w@host:6379/2",
                "redis://default:***@host:6379/2",
            ),
            ("redis://user@host", "redis://user@host"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }

    #[test]
    fn keys_and_values_take_the_redis_ports_forms() {
        assert_eq!(key_text(b"flags"), Some("flags".into()));
        assert_eq!(key_text(&[0xff, 0]), Some(binary_key(&[0xff, 0])));
        assert_eq!(key_text(binary_key(&[0xff]).as_bytes()), None);
        assert_eq!(
            value_json(b"{\"a\":1}"),
            json!("{\"a\":1}"),
            "text stays text"
        );
        let binary = value_json(&[0, 0xff]);
        assert!(binary["$base64"].is_string(), "{binary}");
    }
}
