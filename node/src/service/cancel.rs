//! Whether the client of the request being served went away. A frontend that can tell runs the
//! request inside [`watch_client`] with a second handle on the client's socket; long reads ask
//! [`Cancellation::is_cancelled`], which peeks at that socket (a closed one reads as end of
//! stream), and stop early, so a client that gave up does not leave its work running.

use std::future::Future;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

tokio::task_local! {
    static CLIENT: Arc<TcpStream>;
}

/// How often a long read looks at its client's socket at most.
const PEEK_EVERY: Duration = Duration::from_millis(20);

/// Runs `request` knowing its client's socket (a duplicate handle, in non-blocking mode, never
/// read from: only peeked at).
pub async fn watch_client<F: Future>(client: Arc<TcpStream>, request: F) -> F::Output {
    CLIENT.scope(client, request).await
}

/// Stops a long read: its caller's future was dropped, or its client went away.
pub(super) struct Cancellation {
    pub(super) dropped: Arc<AtomicBool>,
    client: Option<Arc<TcpStream>>,
    last_peek: std::cell::Cell<Instant>,
}

impl Cancellation {
    /// For the request being served now.
    pub(super) fn for_this_request() -> Self {
        Cancellation {
            dropped: Arc::new(AtomicBool::new(false)),
            client: CLIENT.try_with(Arc::clone).ok(),
            last_peek: std::cell::Cell::new(Instant::now()),
        }
    }

    /// Never cancelled (work that is cheap and bounded by itself).
    pub(super) fn never() -> Self {
        Cancellation {
            dropped: Arc::new(AtomicBool::new(false)),
            client: None,
            last_peek: std::cell::Cell::new(Instant::now()),
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        if self.dropped.load(Ordering::Relaxed) {
            return true;
        }
        let Some(client) = &self.client else {
            return false;
        };
        if self.last_peek.get().elapsed() < PEEK_EVERY {
            return false;
        }
        self.last_peek.set(Instant::now());
        match client.peek(&mut [0u8; 1]) {
            // End of stream: the client closed its side.
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }
}
