//! The baseline for `http_get.sh`: an axum hello-world that answers `POST /records/get` with a
//! fixed body the size of a one-record FireScroll answer, on the same runtime settings. The
//! gap between it and FireScroll is what FireScroll's own work costs.

use axum::Router;
use axum::http::header;
use axum::routing::post;

const BODY: &str = r#"{"Records":[{"Pk":"key-000000000042","Sk":"","Data":{"id":42,"enabled":true,"version":3,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"CreatedAt":"2026-11-26T05:20:51.335Z","UpdatedAt":"2026-11-26T05:20:51.335Z"}]}"#;

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "18192".into());
    let app = Router::new().route(
        "/records/get",
        post(|_body: axum::body::Bytes| async {
            ([(header::CONTENT_TYPE, "application/json")], BODY)
        }),
    );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
