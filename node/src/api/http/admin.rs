//! `/admin/snapshots`: S3 snapshots on an operator's request (admin token when tokens are set).

use super::records::authorize_for;
use super::response;
use crate::service::{Manifest, Operation, Service};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

/// One snapshot as `POST /admin/snapshots` answers it.
#[derive(Serialize)]
struct Taken<'a> {
    #[serde(rename = "Partition")]
    partition: u32,
    /// The offset the partition applies next: the snapshot holds every entry below it.
    #[serde(rename = "Offset")]
    offset: u64,
    #[serde(rename = "Key")]
    key: &'a str,
    #[serde(rename = "Records")]
    records: u64,
    #[serde(rename = "Sha256")]
    sha256: &'a str,
}

/// `POST /admin/snapshots`: snapshots every partition this node serves, now.
pub async fn take(State(service): State<Service>, headers: HeaderMap) -> Response {
    response::json_or_error(
        async {
            authorize_for(
                &service,
                &headers,
                Operation::Administer,
                "POST /admin/snapshots",
            )?;
            let manifests: Vec<Manifest> = service.snapshot_now().await?;
            let taken: Vec<Taken<'_>> = manifests
                .iter()
                .map(|m| Taken {
                    partition: m.partition,
                    offset: m.next_offset,
                    key: &m.object_key,
                    records: m.records,
                    sha256: &m.content_sha256,
                })
                .collect();
            Ok(serde_json::to_vec(&serde_json::json!({ "Snapshots": taken })).expect("serializes"))
        }
        .await,
    )
}

/// `GET /admin/snapshots`: every snapshot manifest the bucket holds for the namespace.
pub async fn list(State(service): State<Service>, headers: HeaderMap) -> Response {
    response::json_or_error(
        async {
            authorize_for(
                &service,
                &headers,
                Operation::Administer,
                "GET /admin/snapshots",
            )?;
            let manifests = service.list_snapshots().await?;
            Ok(
                serde_json::to_vec(&serde_json::json!({ "Snapshots": manifests }))
                    .expect("serializes"),
            )
        }
        .await,
    )
}
