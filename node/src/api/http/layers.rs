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

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::http::header::{ACCEPT_ENCODING, ORIGIN};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The same routes with and without the layers: index bit 0 is gzip, bit 1 is CORS.
///
/// Shared behind one `Arc`: the server clones its service for every request, and four routers
/// would be four reference counts bounced between the cores each time.
#[derive(Clone)]
pub struct LayersWhenNeeded {
    variants: Arc<[Router; 4]>,
}

impl LayersWhenNeeded {
    /// The four routers `build(gzip, cors)` makes, one for each need.
    pub fn new(build: impl Fn(bool, bool) -> Router) -> Self {
        LayersWhenNeeded {
            variants: Arc::new([
                build(false, false),
                build(true, false),
                build(false, true),
                build(true, true),
            ]),
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
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut variant = self.variants[Self::pick(&request)].clone();
        tower::Service::call(&mut variant, request)
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
