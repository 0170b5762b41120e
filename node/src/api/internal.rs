//! The internal port: Prometheus metrics and operator views. Keep it off the public network.

use crate::service::Service;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The internal router: `/metrics`, `/debug/partitions`, `/debug/cluster`, `/up`.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/partitions", get(partitions))
        .route("/debug/cluster", get(cluster))
        .route("/up", get(|| async { "ok" }))
        .with_state(service)
}

async fn metrics(State(service): State<Service>) -> Response {
    service.refresh_disk_space();
    let mut response = service.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Every owned partition: applied offset, log bounds, lag, health, record count, digest; and
/// under `standby`, those the log took from this node without settling their next owner yet.
async fn partitions(State(service): State<Service>) -> Response {
    let reports = tokio::task::spawn_blocking(move || {
        (service.partition_reports(), service.standby_reports())
    })
    .await;
    match reports {
        Ok((reports, standby)) => {
            axum::Json(serde_json::json!({ "partitions": reports, "standby": standby }))
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Members, their states and partitions, and partition → owners, as this node sees them.
async fn cluster(State(service): State<Service>) -> Response {
    match service.cluster() {
        Some(cluster) => axum::Json(cluster.view()).into_response(),
        None => axum::Json(serde_json::json!({
            "gossip": "off",
            "hint": "set ADVERTISE_ADDR (and GOSSIP_PEERS) with KAFKA_SEEDS to join a region"
        }))
        .into_response(),
    }
}
