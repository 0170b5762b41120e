//! Large answers counted in the node's bound on answers clients have not taken
//! ([`crate::api::client_memory`]), while they are being sent.
//!
//! An answer's body is counted from when it is built until it is dropped. hyper takes a body
//! frame by frame, asking for the next only while its write buffer has room, so the body is
//! handed over in slices: it stays alive, and counted, until the client has taken all but the
//! last few hundred KB (a body given whole would be dropped at once, uncounted, its bytes still
//! queued in hyper for a client that may never read them).

use crate::api::client_memory::{COUNTED_FROM, MemoryHolder};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// How much of an answer is handed to hyper at once.
const SLICE: usize = 64 * 1024;

/// Marks an answer already counted (inside the compression layer, which hides an answer's size
/// from the server; an answer it leaves alone passes the server's count too).
#[derive(Clone, Copy)]
struct Counted;

/// `response`, its body counted in `holder` while it is sent if it is large.
pub fn counted(mut response: Response, holder: &Arc<MemoryHolder>) -> Response {
    if response.extensions().get::<Counted>().is_some() {
        return response;
    }
    match response.body().size_hint().exact() {
        // Smaller answers go out in one write; counting them would cost every small read (the
        // common case) two atomic operations.
        Some(bytes) if bytes >= COUNTED_FROM as u64 => {
            let bytes = bytes as usize;
            holder.add(bytes);
            response.extensions_mut().insert(Counted);
            response.map(|inner| {
                Body::new(HeldBody {
                    inner,
                    rest: Bytes::new(),
                    holder: holder.clone(),
                    bytes,
                })
            })
        }
        _ => response,
    }
}

/// Counts a large answer before the compression layer hides its size: for requests that accept
/// compressed answers, whose connection's account the server put in the request's extensions.
pub async fn count_before_compression(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let holder = request.extensions().get::<Arc<MemoryHolder>>().cloned();
    let response = next.run(request).await;
    match holder {
        Some(holder) => counted(response, &holder),
        None => response,
    }
}

/// A body counted as held until it is dropped, handed out in slices.
struct HeldBody {
    inner: Body,
    /// What the inner body gave and is not handed out yet.
    rest: Bytes,
    holder: Arc<MemoryHolder>,
    bytes: usize,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.rest.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return Poll::Ready(other),
            }
        }
        let slice = self.rest.len().min(SLICE);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(slice)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        self.holder.release(self.bytes);
    }
}
