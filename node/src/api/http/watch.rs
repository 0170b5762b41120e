//! `GET /records/watch`: changes as Server-Sent Events.
//!
//! `?pk=..[&sk_prefix=..]` watches one pk, `?partition=N` every record of one partition, neither
//! the whole namespace (read access each way); `keys_only=true` leaves the records' data out.
//! Each change is an event `change` whose `id` is the token to resume right after it; a
//! reconnect with `Last-Event-ID` (what EventSource sends) or `?from=` gets exactly the changes
//! after it. The first event, the end of the replay of an earlier token's changes when the
//! partitions had moved past the last one, and one per WATCH_BOOKMARK_MS on a watch that moved
//! on without a matching change, are `bookmark`s carrying the current token. A token older than the node's
//! history is a 410; a watch that falls behind ends with an `error` event (resume from the last
//! id). A pk or partition that another node of the region applies is watched there, through this
//! node (hop limit 1): the stream passes through, and a reconnect resumes on any owner.

use super::records::authorize_for;
use super::response;
use crate::service::{
    Operation, RemoteStream, Service, ServiceError, Token, WatchEvent, WatchRequest,
};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// The query of a watch. An unknown parameter is refused: a misspelled filter (`?pkk=`) would
/// otherwise watch the whole namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    pk: Option<String>,
    #[serde(default)]
    sk_prefix: String,
    partition: Option<u32>,
    #[serde(default)]
    keys_only: bool,
    from: Option<String>,
}

/// Marks a watch proxied once by another node of the region: it is served here or refused,
/// never proxied again.
const HOP_HEADER: &str = "x-firescroll-hop";

/// `GET /records/watch`.
pub async fn watch(
    State(service): State<Service>,
    query: Result<Query<WatchQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return response::query_error(&rejection),
    };
    // A pk or partition that another node of the region applies: that node's stream, passed on.
    let partition = match &query.pk {
        Some(pk) => Some(crate::model::partition_of(pk, service.partition_count())),
        None => query.partition.filter(|&p| p < service.partition_count()),
    };
    if let Some(partition) = partition
        && !headers.contains_key(HOP_HEADER)
    {
        if let Err(e) = authorize_for(&service, &headers, Operation::Read, "/records/watch") {
            return response::error(&e);
        }
        match service
            .watch_remote(
                partition,
                raw.as_deref().unwrap_or(""),
                last_event_id(&headers),
            )
            .await
        {
            Ok(Some(remote)) => return passed_on(remote),
            Ok(None) => {}
            Err(e) => return response::error(&e),
        }
    }
    match start(&service, query, &headers).await {
        Ok(response) => response,
        Err(e) => response::error(&e),
    }
}

/// The `Last-Event-ID` header (EventSource resends the last event's id on reconnect).
fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
}

/// An owner's event stream as this node's answer.
fn passed_on(remote: RemoteStream) -> Response {
    let chunks = futures_util::stream::unfold(remote, |mut remote| async move {
        let chunk = remote.chunk().await?;
        Some((Ok::<_, std::io::Error>(chunk), remote))
    });
    Response::builder()
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .expect("a valid response")
}

async fn start(
    service: &Service,
    query: WatchQuery,
    headers: &HeaderMap,
) -> Result<Response, ServiceError> {
    authorize_for(service, headers, Operation::Read, "/records/watch")?;
    if query.pk.as_deref() == Some("") {
        return Err(ServiceError::bad_request(
            "missing_pk",
            "`pk` is empty: a pk has at least one character (leave `pk` out to watch a partition or the namespace)",
        ));
    }
    if query.pk.is_none() && !query.sk_prefix.is_empty() {
        return Err(ServiceError::bad_request(
            "sk_prefix_without_pk",
            "`sk_prefix` narrows the watch of one `pk`: give the pk too",
        ));
    }
    // EventSource resends the last event's id on reconnect: it wins over the URL's `from`.
    let from = match last_event_id(headers).or(query.from.as_deref()) {
        Some(text) => Some(text.parse::<Token>()?),
        None => None,
    };
    if query.pk.is_some() && query.partition.is_some() {
        return Err(ServiceError::bad_request(
            "pk_and_partition",
            "watch one `pk` or one `partition`, not both",
        ));
    }
    let watch = service
        .watch(WatchRequest {
            pk: query.pk,
            sk_prefix: query.sk_prefix,
            partition: query.partition,
            keys_only: query.keys_only,
            from,
        })
        .await?;
    let events = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<Event, Infallible>(render(event)), watch))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn render(event: WatchEvent) -> Event {
    match event {
        WatchEvent::Change { token, change } => {
            let mut data = Vec::with_capacity(256);
            data.extend_from_slice(b"{\"Op\":");
            response::write_str(&mut data, change.op);
            data.extend_from_slice(
                format!(
                    ",\"Partition\":{},\"Offset\":{},",
                    change.partition, change.offset
                )
                .as_bytes(),
            );
            match &change.record {
                Some(record) => response::write_record_fields(&mut data, record),
                None => {
                    data.extend_from_slice(b"\"Pk\":");
                    response::write_str(&mut data, &change.pk);
                    data.extend_from_slice(b",\"Sk\":");
                    response::write_str(&mut data, &change.sk);
                }
            }
            data.extend_from_slice(b",\"At\":");
            response::write_time(&mut data, change.ts_ms);
            data.push(b'}');
            Event::default()
                .event("change")
                .id(token)
                .data(String::from_utf8(data).expect("JSON is UTF-8"))
        }
        WatchEvent::Bookmark { token } => Event::default()
            .event("bookmark")
            .id(token.clone())
            .data(serde_json::json!({ "Token": token }).to_string()),
        WatchEvent::End { code, reason } => Event::default()
            .event("error")
            .data(serde_json::json!({ "error": { "code": code, "message": reason } }).to_string()),
    }
}
