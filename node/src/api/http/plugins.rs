//! `/plugins`: upload (admin), list, fetch and unbind WebAssembly plugins.

use super::records::authorize_for;
use super::response;
use crate::service::Binding;
use crate::service::{Operation, Service};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

fn render(binding: &Binding) -> Vec<u8> {
    serde_json::to_vec(binding).expect("bindings serialize")
}

/// `PUT /plugins/{name}`: the body is the module's bytes.
pub async fn put(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    response::json_or_error(
        async {
            authorize_for(&service, &headers, Operation::ManagePlugins, "PUT /plugins")?;
            Ok(render(&service.put_plugin(&name, body).await?))
        }
        .await,
    )
}

/// `GET /plugins`: every binding.
pub async fn list(State(service): State<Service>, headers: HeaderMap) -> Response {
    response::json_or_error(
        authorize_for(&service, &headers, Operation::Read, "GET /plugins").map(|()| {
            serde_json::to_vec(&serde_json::json!({ "plugins": service.plugins() }))
                .expect("bindings serialize")
        }),
    )
}

/// `GET /plugins/{name}`: the binding; with `?bytes=1`, the module itself.
pub async fn get(
    State(service): State<Service>,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return response::query_error(&rejection),
    };
    if let Err(e) = authorize_for(&service, &headers, Operation::Read, "GET /plugins") {
        return response::error(&e);
    }
    if query.get("bytes").is_some_and(|v| v == "1" || v == "true") {
        return match service.plugin_module(&name) {
            Ok(bytes) => {
                let mut r = (StatusCode::OK, bytes).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/wasm"),
                );
                r
            }
            Err(e) => response::error(&e),
        };
    }
    response::json_or_error(service.plugin(&name).map(|b| render(&b)))
}

/// `DELETE /plugins/{name}`: unbinds the name (entries pinned to its digest still apply).
pub async fn delete(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    response::json_or_error(
        async {
            authorize_for(
                &service,
                &headers,
                Operation::ManagePlugins,
                "DELETE /plugins",
            )?;
            Ok(render(&service.delete_plugin(&name).await?))
        }
        .await,
    )
}
