//! The browser and compression layers, applied only to requests they can change.
//!
//! CORS and gzip cost every request that passes through them (header work, a body wrapper, a
//! clone of the CORS settings): 12–15 % of a one-record get, measured. They change nothing for
//! a request that asks for neither: the compression layer leaves an answer alone unless the
//! request sends `Accept-Encoding`, and CORS headers only matter to browsers, which send
//! `Origin` on every cross-origin call (and every preflight). So the router is built four times
//! over — with neither layer, either, or both — and each request goes to the one it needs.
//! Requests other than `POST` always get the CORS layer: its `Vary: Origin` then keeps a cache
//! from handing a browser an answer without CORS headers (POST answers are not cached).
//!
//! A `POST /records/{op}` that needs neither layer — what API clients send, the hot path — goes
//! straight to its handler: the router would only match its path to that same handler, through
//! a path match, a cloned router, and four nested futures (~20 % of a one-record get's
//! instructions outside the handler, measured).

use super::records;
use crate::service::Service;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::{ACCEPT_ENCODING, ORIGIN};
use axum::response::Response;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The same routes with and without the layers: index bit 0 is gzip, bit 1 is CORS.
///
/// Shared behind one `Arc`: the server clones its service for every request, and four routers
/// would be four reference counts bounced between the cores each time.
#[derive(Clone)]
pub struct LayersWhenNeeded {
    shared: Arc<Shared>,
}

struct Shared {
    variants: [Router; 4],
    /// What the `/records` handlers serve, for the requests that go straight to them.
    service: Service,
}

impl LayersWhenNeeded {
    /// The four routers `build(gzip, cors)` makes, one for each need; `/records` requests that
    /// need neither layer are answered from `service` directly.
    pub fn new(service: Service, build: impl Fn(bool, bool) -> Router) -> Self {
        LayersWhenNeeded {
            shared: Arc::new(Shared {
                variants: [
                    build(false, false),
                    build(true, false),
                    build(false, true),
                    build(true, true),
                ],
                service,
            }),
        }
    }

    /// Which variant `request` needs.
    fn pick(request: &Request) -> usize {
        let headers = request.headers();
        let gzip = headers.contains_key(ACCEPT_ENCODING);
        let cors = request.method() != Method::POST || headers.contains_key(ORIGIN);
        usize::from(gzip) | usize::from(cors) << 1
    }
}

impl tower::Service<Request> for LayersWhenNeeded {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let variant = Self::pick(&request);
        // Variant 0 is a POST (see `pick`); its route is exactly `/records/{op}` (an escaped or
        // unknown op takes the router's way, as before).
        if variant == 0
            && let Some(op) = request
                .uri()
                .path()
                .strip_prefix("/records/")
                .and_then(records::operation)
        {
            let service = self.shared.service.clone();
            return Box::pin(
                async move { Ok(records::handle_op(State(service), op, request).await) },
            );
        }
        let mut router = self.shared.variants[variant].clone();
        Box::pin(tower::Service::call(&mut router, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri("/records/get");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn each_request_gets_the_layers_that_can_change_its_answer() {
        let pick = |method, headers| LayersWhenNeeded::pick(&request(method, headers));
        assert_eq!(
            pick(Method::POST, &[]),
            0,
            "an API client that asks for neither"
        );
        assert_eq!(pick(Method::POST, &[("accept-encoding", "gzip")]), 1);
        assert_eq!(pick(Method::POST, &[("origin", "https://app.example")]), 2);
        assert_eq!(
            pick(
                Method::POST,
                &[("origin", "https://a.example"), ("accept-encoding", "br")]
            ),
            3
        );
        assert_eq!(
            pick(Method::GET, &[]),
            2,
            "GET answers carry Vary for caches"
        );
        assert_eq!(
            pick(
                Method::OPTIONS,
                &[
                    ("origin", "https://a.example"),
                    ("access-control-request-method", "POST")
                ]
            ),
            2,
            "a preflight"
        );
    }
}
