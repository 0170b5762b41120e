//! Request bodies at the door: a body declared over the limit is refused (after draining a
//! moderately large one, so the client sees the answer), and a body must arrive by a deadline.

use super::response;
use crate::api::client_memory::{COUNTED_FROM, MemoryHolder};
use crate::service::{ErrorKind, ServiceError};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A declared body over the limit but within this many times it is read (and dropped) before the
/// 413, so the client sees the answer; a larger one is refused without reading it.
const DRAIN_FACTOR: u64 = 4;

/// The request, its body bounded by `timeout` and counted in `holder` as it arrives, or the
/// answer that refuses it.
pub async fn admit(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    holder: Arc<MemoryHolder>,
) -> Result<Request, Response> {
    // A compressed body would otherwise be refused as invalid JSON, which sends its sender
    // looking in the wrong place.
    let has_body = request.body().size_hint().exact() != Some(0);
    if let Some(encoding) = request
        .headers()
        .get(CONTENT_ENCODING)
        .filter(|e| has_body && !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(response::error(&ServiceError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_content_encoding",
            format!(
                "request bodies are read as they are sent, and Content-Encoding {:?} is not \
                 supported: send the body uncompressed (responses are gzipped when asked with \
                 Accept-Encoding)",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        )));
    }
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    let body = TimedBody {
        inner: body,
        deadline: Instant::now() + timeout,
        timeout,
        sleep: None,
        holder: Some(holder),
        received: 0,
        counted: 0,
    };
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        if declared <= (limit as u64).saturating_mul(DRAIN_FACTOR) {
            // Dropped as it arrives: nothing is held.
            let mut body = body;
            body.holder = None;
            while let Some(Ok(_)) = body.frame().await {}
        }
        return Err(response::error(&ServiceError::too_large(
            "body_too_large",
            format!("the request body is over {limit} bytes (MAX_BODY_BYTES): split the request"),
        )));
    }
    Ok(Request::from_parts(parts, Body::new(body)))
}

/// A body that fails once its deadline passes. The timer is only set up when the body is still
/// on its way: most bodies arrive with their headers. A large body counts in its connection's
/// client memory as it arrives, until it is read whole (or given up).
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Where it counts (`None`: a body read only to be dropped).
    holder: Option<Arc<MemoryHolder>>,
    /// Bytes arrived so far, and how many of them are counted in `holder`.
    received: usize,
    counted: usize,
}

impl TimedBody {
    /// Notes `frame`'s bytes as arrived; counted once they reach [`COUNTED_FROM`] (a small
    /// body, the usual one, costs nothing).
    fn arrived(&mut self, frame: &Frame<Bytes>) {
        if let (Some(data), Some(holder)) = (frame.data_ref(), &self.holder) {
            self.received += data.len();
            if self.received >= COUNTED_FROM {
                holder.add(self.received - self.counted);
                self.counted = self.received;
            }
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.as_ref().filter(|_| self.counted > 0) {
            holder.release(self.counted);
        }
    }
}

/// A body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} ms (HTTP_BODY_TIMEOUT_MS)")]
pub struct BodyTimeout(u128);

impl BodyTimeout {
    /// The error for a body that failed with `e`, if it failed by timing out.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<ServiceError> {
        let mut cause = Some(e);
        while let Some(e) = cause {
            if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
                return Some(ServiceError::new(
                    ErrorKind::RequestTimeout,
                    "body_timeout",
                    timeout.to_string(),
                ));
            }
            cause = e.source();
        }
        None
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame {
                this.arrived(frame);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout.as_millis())))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
