//! FireScroll's public HTTP API (wire-compatible), plus what it lacked: atomic batches, positions
//! and outcomes for writes, read-your-writes, real list cursors, JSON errors.

mod admin;
mod body;
mod cluster;
mod header_timer;
mod held_body;
mod layers;
mod plugins;
mod records;
mod request;
mod response;
mod server;
mod watch;

pub use server::serve;

use crate::service::{ErrorKind, Service, ServiceError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::cors::CorsLayer;

/// Answers smaller than this go out plain even to clients that accept gzip: a one-record
/// answer (~200 bytes) fits in one packet either way and shrinks by a few dozen bytes, while
/// setting up a gzip stream cost more than the read itself (a one-record get took 41 µs of node
/// CPU gzipped against 20 plain).
const GZIP_MIN_BYTES: u16 = 1024;

/// The public router: the API's routes, each request sent to the variant with the layers it
/// needs (see `layers.rs`). Not wrapped in another `Router`: that matched every path again.
pub fn router(service: Service) -> layers::LayersWhenNeeded {
    let body_limit = service.limits().max_body_bytes;
    let mut api = Router::new()
        .route(
            "/up",
            get(|| async { response::text(StatusCode::OK, "ok") }),
        )
        .route("/ready", get(ready));
    // One route per operation: a parameter in the path costs each request a map of URL
    // parameters and an owned copy of it (~1k instructions); unknown ones still reach
    // `handle`, which names the operations there are.
    for op in records::OPERATIONS {
        api = api.route(
            &format!("/records/{op}"),
            post(move |s, r| records::handle_op(s, op, r)),
        );
    }
    let api = api
        .route("/records/{op}", post(records::handle))
        .route("/plugins", get(plugins::list))
        .route("/admin/snapshots", get(admin::list).post(admin::take))
        .route(
            "/plugins/{name}",
            get(plugins::get).put(plugins::put).delete(plugins::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit));
    let others = Router::new()
        // Watches stream: compressing them would hold events back in the encoder.
        .route(
            "/records/watch",
            get(watch::watch).layer(CorsLayer::permissive()),
        )
        // Reads proxied by the other nodes of the region (gossip on): not for browsers, never
        // compressed (peers do not ask for it), so outside those layers.
        .route(
            "/cluster/v1/{op}",
            post(cluster::handle).layer(DefaultBodyLimit::max(body_limit)),
        );
    // As FireScroll served it: any origin may call the API from a browser, and answers are
    // gzipped for clients that ask (most do by default: browsers, Python's requests, Go's
    // net/http, Node's fetch) once they are worth it. Each layer is applied only where it can
    // change the answer (see `layers.rs`).
    layers::LayersWhenNeeded::new(service.clone(), |gzip, cors| {
        let mut api = api.clone();
        if gzip {
            api = api
                .layer(axum::middleware::from_fn(
                    held_body::count_before_compression,
                ))
                .layer(
                    CompressionLayer::new()
                        .gzip(true)
                        .compress_when(DefaultPredicate::new().and(SizeAbove::new(GZIP_MIN_BYTES))),
                );
        }
        if cors {
            api = api.layer(CorsLayer::permissive());
        }
        api.merge(others.clone()).with_state(service.clone())
    })
}

async fn ready(State(service): State<Service>) -> Response {
    let readiness = service.readiness();
    if readiness.ready {
        response::text(StatusCode::OK, "ok")
    } else {
        response::error(&ServiceError::new(
            ErrorKind::Unavailable,
            "not_ready",
            readiness.problems.join("; "),
        ))
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    response::error(&ServiceError::new(
        ErrorKind::NotFound,
        "not_found",
        format!(
            "no route for {method} {}: the API is POST /records/{{put,get,delete,list,scan,batch,outcomes}}, GET /up, GET /ready, /plugins",
            uri.path()
        ),
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    response::error(&ServiceError::new(
        ErrorKind::MethodNotAllowed,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}: /records/* take POST with a JSON body; /up and /ready take GET",
            uri.path()
        ),
    ))
}
