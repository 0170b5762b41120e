//! `POST /records/{op}`: parse the body, call the service, render.

use super::request::{
    GetBody, ListBody, MutateBody, OutcomesBody, PositionBody, RecordBody, ScanBody,
};
use super::response;
use crate::model::{JsonCmd, JsonPath, Key, OpKind, Position};
use crate::service::{
    Denied, ErrorKind, JsonRead, ListRequest, Operation, PluginRef, Service, ServiceError,
    WriteMode, WriteOp, WriteRequest,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::time::Instant;

/// The operations of `/records/{op}`; anything else is a 400 that lists them.
pub(super) const OPERATIONS: [&str; 7] =
    ["put", "get", "delete", "list", "scan", "batch", "outcomes"];

/// `op` as one of [`OPERATIONS`] (with its static name), if it is one.
pub(super) fn operation(op: &str) -> Option<&'static str> {
    OPERATIONS.iter().copied().find(|known| *known == op)
}

/// `POST /records/{op}` for an operation without a route of its own: answers what there is.
pub async fn handle(
    State(service): State<Service>,
    Path(op): Path<String>,
    request: Request,
) -> Response {
    handle_op(State(service), &op, request).await
}

/// `POST /records/{op}`. Takes the request whole: its headers are read in place and its body
/// gathered here (axum's `HeaderMap` and `Bytes` extractors copied the headers and listed the
/// body's frames first, ~3k instructions of a ~35k-instruction get).
pub async fn handle_op(State(service): State<Service>, op: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let started = Instant::now();
    let label = operation(op).unwrap_or("unknown");
    let result = async {
        authorize(&service, headers, label)?;
        let body = read_body(&service, body).await?;
        dispatch(&service, op, &body).await
    }
    .await;
    let response = match result {
        Ok((body, token)) => {
            let mut response = response::json(StatusCode::OK, body);
            if let Some(token) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
                response.headers_mut().insert(TOKEN_HEADER, token);
            }
            response
        }
        Err(e) => response::error(&e),
    };
    service
        .metrics()
        .observe_http(label, crate::metrics::micros(started.elapsed()));
    response
}

/// Checks the caller's `Authorization: Bearer <token>` against what `operation` needs.
pub(super) fn authorize(
    service: &Service,
    headers: &HeaderMap,
    operation: &str,
) -> Result<(), ServiceError> {
    if !service.auth_required() {
        // An open node: nothing to check, and no message to build for every request.
        return Ok(());
    }
    let needed = match operation {
        "put" | "delete" | "batch" => Operation::Write,
        _ => Operation::Read,
    };
    authorize_for(service, headers, needed, &format!("/records/{operation}"))
}

/// Checks the caller's bearer token grants `needed` for `what` (named in the error).
pub(super) fn authorize_for(
    service: &Service,
    headers: &HeaderMap,
    operation: Operation,
    what: &str,
) -> Result<(), ServiceError> {
    if !service.auth_required() {
        return Ok(());
    }
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match operation.check(service.access(token)) {
        Ok(()) => Ok(()),
        Err(Denied::NoToken) => Err(ServiceError::new(
            ErrorKind::Unauthorized,
            "unauthorized",
            if token.is_some() {
                "the bearer token is not valid"
            } else {
                "this node requires a token: send `Authorization: Bearer <token>`"
            },
        )),
        Err(Denied::TooWeak { needed, granted }) => Err(ServiceError::new(
            ErrorKind::Forbidden,
            "forbidden",
            format!(
                "{what} needs a {} token; this one may only {}",
                needed.name(),
                granted.name()
            ),
        )),
    }
}

/// A read's answer carries the watch token of the partitions it read (those this node
/// serves), taken before reading: a watch from it misses nothing the read did not show.
const TOKEN_HEADER: &str = "firescroll-token";

async fn dispatch(
    service: &Service,
    op: &str,
    body: &[u8],
) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    // A get's future is awaited in place; the others are boxed, so what every request's future
    // holds (and is copied with, when it is boxed and moved) is sized for a get, not for the
    // largest operation: it was 5 KiB.
    match op {
        "get" => get(service, body).await,
        "list" => Box::pin(list(service, body)).await,
        "scan" => Box::pin(scan(service, body)).await,
        "put" | "delete" | "batch" => Box::pin(mutate(service, op, body)).await,
        "outcomes" => Box::pin(outcomes(service, body)).await,
        other => Err(ServiceError::bad_request(
            "unknown_operation",
            format!(
                "unknown operation '{other}': use one of {}",
                OPERATIONS.map(|o| format!("/records/{o}")).join(", ")
            ),
        )),
    }
}

/// `/records/get`.
async fn get(service: &Service, body: &[u8]) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    let req: GetBody = parse(body)?;
    let keys: Vec<Key> = required_records(req.records)?
        .into_iter()
        .map(|k| Key { pk: k.pk, sk: k.sk })
        .collect();
    let path = req.path.as_deref().map(read_path).transpose()?;
    if path.is_some() && req.transform.is_some() {
        return Err(ServiceError::bad_request(
            "bad_path",
            "`path` selects from the stored document and `transform` rewrites it: use \
             one of them",
        ));
    }
    let min_offsets = positions(req.min_offsets)?;
    let (mut records, token) = service.get_with_token(keys, &min_offsets).await?;
    if let Some(name) = &req.transform {
        records = service.read_transform(name, req.args, records).await?;
    }
    if let Some(path) = &path {
        JsonRead::default().select(path, &mut records)?;
    }
    Ok((response::records(&records, None), token))
}

/// `/records/list`.
async fn list(service: &Service, body: &[u8]) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    let req: ListBody = parse(body)?;
    let limit = page_limit(req.limit)?;
    let page = service
        .list(ListRequest {
            pk: req.pk,
            sk_prefix: req.sk_prefix,
            limit,
            cond: req.cond,
            if_stop: req.if_stop.unwrap_or(false),
            skip_prefix_itself: true,
            cursor: req.cursor,
            min_offsets: positions(req.min_offsets)?,
        })
        .await?;
    let records = match &req.transform {
        Some(name) => service.read_transform(name, req.args, page.records).await?,
        None => page.records,
    };
    Ok((
        response::records(&records, page.next_cursor.as_deref()),
        page.token,
    ))
}

/// `/records/scan`.
async fn scan(service: &Service, body: &[u8]) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    let req: ScanBody = parse(body)?;
    let limit = page_limit(req.limit)? as usize;
    let page = service
        .scan(
            req.cursor.as_deref(),
            req.pk_prefix.as_deref().unwrap_or_default(),
            limit,
            &positions(req.min_offsets)?,
        )
        .await?;
    Ok((
        response::records(&page.records, page.next_cursor.as_deref()),
        page.token.text_if_any(),
    ))
}

/// `/records/put`, `/records/delete` and `/records/batch`.
async fn mutate(
    service: &Service,
    op: &str,
    body: &[u8],
) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    let req: MutateBody = parse(body)?;
    let records = required_records(req.records)?;
    let (mode, fixed) = match op {
        "put" => (WriteMode::PerRecord, Some(OpKind::Put)),
        "delete" => (WriteMode::PerRecord, Some(OpKind::Delete)),
        _ => (WriteMode::Atomic, None),
    };
    let ops = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| write_op(i, r, fixed))
        .collect::<Result<_, _>>()?;
    let results = service
        .mutate(WriteRequest {
            ops,
            mode,
            wait: req.wait.unwrap_or(false),
        })
        .await?;
    Ok((response::positions(&results), None))
}

/// `/records/outcomes`.
async fn outcomes(
    service: &Service,
    body: &[u8],
) -> Result<(Vec<u8>, Option<String>), ServiceError> {
    let req: OutcomesBody = parse(body)?;
    let positions = positions(req.positions)?;
    if positions.is_empty() {
        return Err(ServiceError::bad_request(
            "empty_positions",
            "`Positions` must hold at least one {\"Partition\",\"Offset\"}",
        ));
    }
    Ok((
        response::outcomes(&service.outcomes(&positions).await?),
        None,
    ))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::bad_request(
            "empty_body",
            "the request body is empty: send a JSON object",
        ));
    }
    crate::model::from_json_bytes(body).map_err(|e: serde_json::Error| {
        // serde's own wording, which lists the fields the body may hold.
        let code = if e.is_data() && e.to_string().starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_json"
        };
        ServiceError::bad_request(code, format!("invalid JSON body: {e}"))
    })
}

fn required_records<T>(records: Option<Vec<T>>) -> Result<Vec<T>, ServiceError> {
    match records {
        Some(records) if !records.is_empty() => Ok(records),
        _ => Err(ServiceError::bad_request(
            "empty_records",
            "`Records` must hold at least one record",
        )),
    }
}

/// A get's `path`, parsed.
fn read_path(text: &str) -> Result<JsonPath, ServiceError> {
    JsonPath::parse(text).map_err(|e| ServiceError::bad_request("bad_path", e.to_string()))
}

fn write_op(index: usize, r: RecordBody, fixed: Option<OpKind>) -> Result<WriteOp, ServiceError> {
    let op = match (fixed, r.op.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some(op)) if op.eq_ignore_ascii_case("put") => OpKind::Put,
        (None, Some(op)) if op.eq_ignore_ascii_case("delete") => OpKind::Delete,
        (None, Some(op)) if op.eq_ignore_ascii_case("json") => OpKind::Json,
        (None, Some(op)) if op.eq_ignore_ascii_case("expire") => OpKind::Expire,
        (None, other) => {
            return Err(ServiceError::bad_request(
                "bad_op",
                format!(
                    "record {index}: `op` must be \"put\", \"delete\", \"json\" or \"expire\" in a \
                     batch, not {}",
                    other.map_or("missing".to_string(), |o| format!("{o:?}"))
                ),
            ));
        }
    };
    if op == OpKind::Expire && (r.data.is_some() || r.keep_ttl.is_some()) {
        return Err(ServiceError::bad_request(
            "bad_expire",
            format!(
                "record {index}: an `expire` op sets the record's deadline (`ttl_ms` or \
                 `expires_at`) or, with neither, removes it, keeping its data: it takes no \
                 `data` or `keep_ttl`"
            ),
        ));
    }
    let expires_at = deadline(index, op, &r)?;
    let json_cmd = match &r.json_cmd {
        None => None,
        Some(name) => Some(
            serde_json::from_value::<JsonCmd>(serde_json::Value::from(name.as_str())).map_err(
                |_| {
                    ServiceError::bad_request(
                        "bad_operand",
                        format!(
                            "record {index}: `json_cmd` {name:?} is not one of set, \
                             set_if_absent, set_if_present, merge, del, clear, toggle, \
                             num_incr_by, num_mult_by, str_append, arr_append, arr_insert, \
                             arr_pop, arr_trim"
                        ),
                    )
                },
            )?,
        ),
    };
    Ok(WriteOp {
        json_cmd,
        path: r.path,
        op,
        pk: r.pk,
        sk: r.sk,
        data: r.data,
        cond: r.cond,
        if_skips: r.if_skips.unwrap_or(false),
        fails_alone: r.fails_alone.unwrap_or(false),
        if_plugin: r.if_plugin.map(PluginRef::Name),
        transform: r.transform.map(PluginRef::Name),
        args: r.args,
        expires_at,
        keep_ttl: r.keep_ttl.unwrap_or(false),
        own_ttl: r.own_ttl.unwrap_or(false),
        ..WriteOp::default()
    })
}

/// A record's deadline (unix ms) from its `ttl_ms` (relative to now, on this node) or
/// `expires_at` (unix ms or RFC 3339): computed once here, so every replica agrees.
fn deadline(index: usize, op: OpKind, r: &RecordBody) -> Result<Option<i64>, ServiceError> {
    let bad = |message: String| {
        ServiceError::bad_request("bad_expiry", format!("record {index}: {message}"))
    };
    let given = r.ttl_ms.is_some() || r.expires_at.is_some();
    if given && !matches!(op, OpKind::Put | OpKind::Expire) {
        return Err(bad(
            "only puts and `expire` ops take `ttl_ms`/`expires_at`; a delete removes the record \
             now"
            .into(),
        ));
    }
    if r.own_ttl == Some(true) && !given {
        return Err(bad(
            "`own_ttl` says whose the deadline given with `ttl_ms`/`expires_at` is (the record's \
             own, not its pk's): give one of them with it"
                .into(),
        ));
    }
    if given && r.keep_ttl == Some(true) {
        return Err(bad(
            "`keep_ttl` keeps the current deadline, so it cannot come with `ttl_ms`/`expires_at`"
                .into(),
        ));
    }
    match (&r.ttl_ms, &r.expires_at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(
            "give `ttl_ms` (relative) or `expires_at` (absolute), not both".into(),
        )),
        (Some(ttl), None) => {
            let ttl = ttl
                .get()
                .parse::<i64>()
                .ok()
                .filter(|ttl| *ttl > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "`ttl_ms` must be a positive whole number of milliseconds, not {}",
                        ttl.get()
                    ))
                })?;
            crate::model::now_ms()
                .checked_add(ttl)
                .filter(|at| *at <= response::LAST_RFC3339_MS)
                .map(Some)
                .ok_or_else(|| {
                    bad(format!(
                        "`ttl_ms` {ttl} is too far in the future: deadlines end with the year 9999"
                    ))
                })
        }
        (None, Some(at)) => {
            let text = at.get();
            let parsed = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Number(n)) => n.as_i64(),
                Ok(serde_json::Value::String(s)) => humantime::parse_rfc3339(&s)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok()),
                _ => None,
            };
            match parsed {
                Some(ms) if ms > 0 && ms <= response::LAST_RFC3339_MS => Ok(Some(ms)),
                Some(ms) if ms > 0 => Err(bad(format!(
                    "`expires_at` {text} is past the year 9999, where deadlines end (RFC 3339 \
                     cannot write it); leave the record without a deadline instead"
                ))),
                _ => Err(bad(format!(
                    "`expires_at` must be unix milliseconds or an RFC 3339 time such as \
                     \"2026-12-31T23:59:59Z\", not {text}"
                ))),
            }
        }
    }
}

/// A page's `limit`: 0 (or none) asks for a full page (MAX_LIST_RECORDS).
fn page_limit(limit: Option<i64>) -> Result<u64, ServiceError> {
    match limit {
        None => Ok(0),
        Some(l) if l >= 0 => Ok(l as u64),
        Some(l) => Err(ServiceError::bad_request(
            "bad_limit",
            format!("`limit` must be 0 (a full page) or more, not {l}"),
        )),
    }
}

fn positions(list: Option<Vec<PositionBody>>) -> Result<Vec<Position>, ServiceError> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, p)| match (p.partition, p.offset) {
            (Some(partition), Some(offset)) if partition >= 0 && offset >= 0 => Ok(Position {
                partition: u32::try_from(partition).map_err(|_| bad_position(i))?,
                offset: offset as u64,
            }),
            _ => Err(bad_position(i)),
        })
        .collect()
}

fn bad_position(index: usize) -> ServiceError {
    ServiceError::bad_request(
        "bad_position",
        format!(
            "position {index} needs a non-negative `Partition` and `Offset`, as a write's `Positions` return them"
        ),
    )
}

/// The request's whole body, at most `MAX_BODY_BYTES` (a body that declared more was refused at
/// the door, see `body.rs`; one sent without a length stops here). A body that came in one frame,
/// as small ones do with their headers, is taken as it is, without a copy.
async fn read_body(service: &Service, mut body: Body) -> Result<Bytes, ServiceError> {
    let limit = service.limits().max_body_bytes;
    let too_large = || {
        ServiceError::too_large(
            "body_too_large",
            format!(
                "the request body is over {limit} bytes (MAX_BODY_BYTES): send fewer records per request"
            ),
        )
    };
    let mut first: Option<Bytes> = None;
    let mut gathered: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            super::body::BodyTimeout::find(&e).unwrap_or_else(|| {
                ServiceError::bad_request("bad_body", format!("cannot read the request body: {e}"))
            })
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let so_far =
            first.as_ref().map_or(0, Bytes::len) + gathered.as_ref().map_or(0, BytesMut::len);
        if so_far + data.len() > limit {
            return Err(too_large());
        }
        match (&mut gathered, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut all = BytesMut::with_capacity(earlier.len() + data.len());
                all.extend_from_slice(&earlier);
                all.extend_from_slice(&data);
                gathered = Some(all);
            }
        }
    }
    Ok(match gathered {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}
