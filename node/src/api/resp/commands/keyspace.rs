//! The keyspace commands: `SCAN`, `KEYS`, `DBSIZE`, `RANDOMKEY`. A Redis key is a pk (its string
//! record and hash fields); they read every partition's key index, here or at an owner in the
//! region. SCAN cursors are valid on any node of the region (see `service::keyspace`).

use super::keys::records_type;
use super::scan::{glob_match, parse_count, parse_cursor};
use super::{Context, random, service_error, wrong_arity};
use crate::api::resp::reply::Reply;
use bytes::Bytes;

/// Most keys `KEYS` answers; past it, use `SCAN`.
pub const KEYS_LIMIT: usize = 100_000;

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE string|hash|set]`
pub async fn scan(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [cursor, options @ ..] = args else {
        return wrong_arity("scan");
    };
    let cursor = match parse_cursor(cursor) {
        Ok(cursor) => cursor,
        Err(e) => return e,
    };
    let mut pattern: Option<Vec<u8>> = None;
    let mut count = 10usize;
    let mut kind: Option<&'static str> = None;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let Some(value) = options.next() else {
            return Reply::err("syntax error");
        };
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.to_vec()),
            b"COUNT" => match parse_count(value) {
                Ok(n) => count = n,
                Err(e) => return e,
            },
            b"TYPE" => {
                kind = match value.to_ascii_lowercase().as_slice() {
                    b"string" => Some("string"),
                    b"rejson-rl" => Some("ReJSON-RL"),
                    b"hash" => Some("hash"),
                    b"set" => Some("set"),
                    // Redis answers no keys for a type it has none of.
                    _ => return Reply::Array(vec![Reply::bulk("0"), Reply::Array(vec![])]),
                }
            }
            _ => return Reply::err("syntax error"),
        }
    }
    let min_offsets = ctx.all_written();
    let page = match ctx.service.scan_keys(cursor, count, &min_offsets).await {
        Ok(page) => page,
        Err(e) => return service_error(e),
    };
    let mut keys = Vec::new();
    for key in page.keys {
        if !pattern
            .as_deref()
            .is_none_or(|p| glob_match(p, key.pk.as_bytes()))
        {
            continue;
        }
        // A pk with a string record and hash fields is a string (or document) to TYPE, and so
        // here. Strings and documents are told apart by their data, sets and hashes by their
        // first record, as TYPE does: one read per such key, and only when the filter asks.
        let wanted = match kind {
            None => true,
            Some(kind @ ("string" | "ReJSON-RL")) if key.string => {
                match ctx.read_json(&key.pk, "").await {
                    Ok(json) => json.is_some_and(|json| super::keys::value_type(&json) == kind),
                    Err(e) => return e,
                }
            }
            Some("string" | "ReJSON-RL") => false,
            Some(_) if key.string => false,
            Some(kind) => match records_type(ctx, key.pk.clone()).await {
                Ok(found) => found == kind,
                Err(e) => return e,
            },
        };
        if wanted {
            keys.push(Reply::Bulk(super::wire_key(&key.pk)));
        }
    }
    Reply::Array(vec![
        Reply::bulk(page.cursor.to_string()),
        Reply::Array(keys),
    ])
}

/// `KEYS pattern`: every matching key, or an error past [`KEYS_LIMIT`].
pub async fn keys(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [pattern] = args else {
        return wrong_arity("keys");
    };
    let min_offsets = ctx.all_written();
    let mut found = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = 0;
    loop {
        let page = match ctx.service.scan_keys(cursor, 1000, &min_offsets).await {
            Ok(page) => page,
            Err(e) => return service_error(e),
        };
        for key in page.keys {
            if glob_match(pattern, key.pk.as_bytes()) {
                bytes += key.pk.len();
                found.push(Reply::Bulk(super::wire_key(&key.pk)));
            }
        }
        if found.len() > KEYS_LIMIT || bytes > crate::model::READ_ANSWER_BYTES {
            return Reply::err(format!(
                "KEYS would answer more than {KEYS_LIMIT} keys or {} MiB; use SCAN with MATCH to \
                 walk them in pages",
                crate::model::READ_ANSWER_BYTES >> 20
            ));
        }
        if page.cursor == 0 {
            return Reply::Array(found);
        }
        cursor = page.cursor;
    }
}

/// `DBSIZE`: the keys of the region, from each partition's count kept at apply.
pub async fn dbsize(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return wrong_arity("dbsize");
    }
    match ctx.key_count().await {
        Ok(n) => Reply::Int(n as i64),
        Err(e) => e,
    }
}

/// `RANDOMKEY`: a key chosen at random (each key about equally likely), nil when there are none.
pub async fn randomkey(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    if !args.is_empty() {
        return wrong_arity("randomkey");
    }
    let min_offsets = ctx.all_written();
    let counts = match ctx.service.key_counts(&min_offsets).await {
        Ok(counts) => counts,
        Err(e) => return service_error(e),
    };
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Reply::Null;
    }
    // A partition in proportion to its keys, then a random hash position in it: the first key
    // at or after it (wrapping around).
    let mut pick = random() % total;
    let partition = counts
        .iter()
        .position(|&n| {
            if pick < n {
                true
            } else {
                pick -= n;
                false
            }
        })
        .expect("pick < total") as u64;
    let shift = crate::service::KEY_HASH_BITS;
    let from = random() & ((1 << shift) - 1);
    for start in [from, 0] {
        let cursor = (partition << shift) | start;
        match ctx.service.scan_keys(cursor, 1, &min_offsets).await {
            Ok(page) => {
                if let Some(key) = page.keys.into_iter().next() {
                    return Reply::Bulk(super::wire_key(&key.pk));
                }
            }
            Err(e) => return service_error(e),
        }
    }
    Reply::Null
}
