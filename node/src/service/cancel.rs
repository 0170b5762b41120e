//! Whether the client of the request being served went away. A frontend that can tell (the HTTP
//! server watches each connection for the client's end of stream) runs the request inside
//! [`watch_client`]; long reads ask [`client_gone`] and stop early, so a client that gave up does
//! not leave its work running.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

tokio::task_local! {
    static CLIENT_GONE: Arc<AtomicBool>;
}

/// Runs `request` with `gone` as its client's flag: set once the client has gone away.
pub async fn watch_client<F: Future>(gone: Arc<AtomicBool>, request: F) -> F::Output {
    CLIENT_GONE.scope(gone, request).await
}

/// The current request's flag, when its frontend watches the client.
pub(super) fn client_flag() -> Option<Arc<AtomicBool>> {
    CLIENT_GONE.try_with(Arc::clone).ok()
}

/// Stops a long read: its caller's future was dropped, or its client went away.
pub(super) struct Cancellation {
    pub(super) dropped: Arc<AtomicBool>,
    pub(super) client: Option<Arc<AtomicBool>>,
}

impl Cancellation {
    /// For the request being served now.
    pub(super) fn for_this_request() -> Self {
        Cancellation {
            dropped: Arc::new(AtomicBool::new(false)),
            client: client_flag(),
        }
    }

    /// Never cancelled (work that is cheap and bounded by itself).
    pub(super) fn never() -> Self {
        Cancellation {
            dropped: Arc::new(AtomicBool::new(false)),
            client: None,
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
            || self
                .client
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}
