//! `POST /cluster/v1/{get,list,outcomes,keys,scan}`: what a node answers its region's peers. Answers
//! come from this node's own partitions only — these handlers call the service's local reads,
//! which never proxy — so a proxied request is never proxied again (hop limit 1).

use super::records::authorize_for;
use super::response;
use crate::model::ListRequest;
use crate::model::peer::{
    GetQuery, KeysQuery, OutcomesQuery, OutcomesReply, ScanQuery, render_keyed_record,
    render_record,
};
use crate::service::Operation;
use crate::service::{Service, ServiceError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::time::Duration;

/// `POST /cluster/v1/{op}`.
pub async fn handle(
    State(service): State<Service>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = match authorize_for(&service, &headers, Operation::PeerRead, "/cluster/v1") {
        Err(e) => Err(e),
        Ok(()) => dispatch(&service, &op, &body).await,
    };
    if matches!(op.as_str(), "get" | "list" | "outcomes" | "keys" | "scan") {
        service
            .metrics()
            .peer_requests
            .with_label_values(&[op.as_str()])
            .inc();
    }
    match result {
        Ok(body) => response::json(StatusCode::OK, body),
        Err(e) => response::error(&e),
    }
}

async fn dispatch(service: &Service, op: &str, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
    match op {
        "get" => {
            let query: GetQuery = parse(body)?;
            // Before reading: a watch from it misses nothing the read did not see.
            let token = service.read_token(query.keys.iter().map(|k| k.pk.as_str()));
            let found = service.get_local(query.keys, &query.min_offsets).await?;
            let mut out = b"{\"records\":[".to_vec();
            for (i, slot) in found.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match slot {
                    Some(record) => render_record(&mut out, record, false),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b']');
            if let Some(token) = token {
                out.extend_from_slice(b",\"token\":");
                serde_json::to_writer(&mut out, &token).expect("writing to a Vec");
            }
            out.push(b'}');
            Ok(out)
        }
        "list" => {
            let query: ListRequest = parse(body)?;
            let page = service.list_local(query).await?;
            let mut out = b"{\"records\":[".to_vec();
            for (i, record) in page.records.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render_record(&mut out, record, true);
            }
            out.extend_from_slice(b"],\"next_cursor\":");
            serde_json::to_writer(&mut out, &page.next_cursor).expect("writing to a Vec");
            out.extend_from_slice(b",\"token\":");
            serde_json::to_writer(&mut out, &page.token).expect("writing to a Vec");
            if let Some(read_through) = page.read_through {
                out.extend_from_slice(format!(",\"read_through\":{read_through}").as_bytes());
            }
            out.push(b'}');
            Ok(out)
        }
        "outcomes" => {
            let query: OutcomesQuery = parse(body)?;
            let outcomes = service
                .outcomes_local(&query.positions, Duration::from_millis(query.wait_ms))
                .await?;
            Ok(serde_json::to_vec(&OutcomesReply { outcomes }).expect("serializes"))
        }
        "keys" => {
            let query: KeysQuery = parse(body)?;
            let reply = service.keys_local(query).await?;
            Ok(serde_json::to_vec(&reply).expect("serializes"))
        }
        "scan" => {
            let query: ScanQuery = parse(body)?;
            let part = service.scan_partition_local(query).await?;
            let mut out = b"{\"records\":[".to_vec();
            for (i, record) in part.records.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render_keyed_record(&mut out, record);
            }
            out.extend_from_slice(b"],\"next_cursor\":");
            serde_json::to_writer(&mut out, &part.next_cursor()).expect("writing to a Vec");
            out.extend_from_slice(b",\"token\":");
            serde_json::to_writer(&mut out, &part.token).expect("writing to a Vec");
            out.extend_from_slice(format!(",\"reads\":{}}}", part.reads).as_bytes());
            Ok(out)
        }
        other => Err(ServiceError::new(
            crate::service::ErrorKind::NotFound,
            "not_found",
            format!("no cluster operation {other:?}: get, list, outcomes, keys or scan"),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ServiceError> {
    crate::model::from_json_bytes(body).map_err(|e| {
        ServiceError::bad_request(
            "bad_request",
            format!("not a cluster request from a FireScroll peer: {e}"),
        )
    })
}
