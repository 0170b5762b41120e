//! Large answers counted in the node's bound on answers clients have not taken
//! ([`crate::api::client_memory`]), while they are being sent.
//!
//! An answer's body is counted from when it is built until it is dropped. hyper takes a body
//! frame by frame, asking for the next only while its write buffer has room, so the body is
//! handed over in slices: it stays alive, and counted, until the client has taken all but the
//! last [`HYPER_BUFFER_BYTES`] or so (a body given whole would be dropped at once, uncounted,
//! its bytes still queued in hyper for a client that may never read them).
//!
//! A stream of unknown length (a watch's events) is counted frame by frame instead: each large
//! frame from when the stream gives it until hyper, having taken its last slice, asks for the
//! next. A watch whose client stopped reading therefore stays counted for the event it is stuck
//! on, and past the bound it is closed like any other connection (its client resumes from its
//! last event id); smaller events wait in hyper's buffer, which the server keeps at
//! [`HYPER_BUFFER_BYTES`].

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

/// What hyper may buffer of a connection's answers (HTTP/1) or of each stream's (HTTP/2)
/// before it stops taking more: set on the server, so that what a connection holds outside
/// this count stays near one slice (hyper's default, ~400 KB, let a thousand watches whose
/// clients stopped reading hold 400 MB uncounted).
pub const HYPER_BUFFER_BYTES: usize = 64 * 1024;

/// Marks an answer already counted (inside the compression layer, which hides an answer's size
/// from the server; an answer it leaves alone passes the server's count too).
#[derive(Clone, Copy)]
struct Counted;

/// `response`, its body counted in `holder` while it is sent if it is large.
pub fn counted(mut response: Response, holder: &Arc<MemoryHolder>) -> Response {
    if response.extensions().get::<Counted>().is_some() {
        return response;
    }
    let (held, per_frame) = match response.body().size_hint().exact() {
        // Smaller answers go out in one write; counting them would cost every small read (the
        // common case) two atomic operations.
        Some(bytes) if bytes < COUNTED_FROM as u64 => return response,
        Some(bytes) => (bytes as usize, false),
        // A stream: counted frame by frame, as they come.
        None => (0, true),
    };
    if held > 0 {
        holder.add(held);
    }
    response.extensions_mut().insert(Counted);
    response.map(|inner| {
        Body::new(HeldBody {
            inner,
            rest: Bytes::new(),
            holder: holder.clone(),
            held,
            per_frame,
        })
    })
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

/// A body counted as held until it is dropped (or, `per_frame`, each large frame until it is
/// handed over), handed out in slices.
struct HeldBody {
    inner: Body,
    /// What the inner body gave and is not handed out yet.
    rest: Bytes,
    holder: Arc<MemoryHolder>,
    /// Counted now.
    held: usize,
    /// A stream of unknown length: each frame of at least [`COUNTED_FROM`] is counted from when
    /// the inner body gives it until hyper asks for what follows its last slice.
    per_frame: bool,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.rest.is_empty() {
            if self.per_frame && self.held > 0 {
                // hyper took the last slice and has room again: the frame is its now.
                let held = std::mem::take(&mut self.held);
                self.holder.release(held);
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if self.per_frame && data.len() < COUNTED_FROM => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) => {
                        if self.per_frame {
                            self.held = data.len();
                            self.holder.add(data.len());
                        }
                        self.rest = data;
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return Poll::Ready(other),
            }
        }
        if self.held > 0 {
            // hyper had room for more: the client is taking the answer (it is not stalled).
            self.holder.moved();
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
        self.holder.release(self.held);
    }
}
