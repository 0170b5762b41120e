//! A Redis client's connection: plain TCP, or TLS over it (TLS_CERT_PATH). Beyond reading, the
//! connection loop needs three things of it: writing what the socket takes *now* without
//! waiting (a client may still be sending its pipeline, and not reading, while replies pile
//! up), waiting for room to write while still reading commands, and a last write on close; and
//! noticing that the client left while a command blocks (`WAIT`).

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// One client's socket.
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What [`Socket::read_or_write`] did.
pub enum Progress {
    /// Read this many bytes of commands (0: the client closed its side).
    Read(usize),
    /// Wrote some of the held replies.
    Wrote,
}

/// How often a blocked command looks again whether its client left, while what the client sent
/// since waits unread.
const PEER_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

impl Socket {
    /// Resolves once the client closed its side of the connection (or it broke), reading
    /// nothing: what a command that blocks (`WAIT`) races, so a client that leaves does not
    /// leave it running.
    pub async fn peer_closed(&self) {
        let tcp = match self {
            Socket::Plain(stream) => stream,
            Socket::Tls(stream) => stream.get_ref().0,
        };
        loop {
            match tcp.ready(Interest::READABLE).await {
                // Commands (or a TLS alert) waiting unread keep the socket readable: look again
                // later, when a close shows as read-closed.
                Ok(ready) if !ready.is_read_closed() => tokio::time::sleep(PEER_CHECK).await,
                _ => return,
            }
        }
    }

    /// Waits until commands arrive (read into `input`) or, while `output` holds replies the
    /// client has not taken, until the socket takes some of them.
    pub async fn read_or_write(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> io::Result<Progress> {
        match self {
            Socket::Plain(stream) => {
                // Borrowed halves: the read keeps tokio's "a short read drained the socket"
                // shortcut (one recvfrom per read, not a second that answers EAGAIN), and the
                // wait for room to write runs beside it.
                let (mut receiving, sending) = stream.split();
                tokio::select! {
                    read = receiving.read_buf(input) => read.map(Progress::Read),
                    ready = sending.writable(), if !output.is_empty() => {
                        ready?;
                        write_now_plain(stream, output)?;
                        Ok(Progress::Wrote)
                    }
                }
            }
            Socket::Tls(stream) => {
                std::future::poll_fn(|cx| poll_tls(stream, cx, input, output)).await
            }
        }
    }

    /// Writes from the front of `output` what the socket takes without waiting; what it does
    /// not take stays in `output`. `Err` when the connection is broken.
    pub fn write_now(&mut self, output: &mut BytesMut) -> io::Result<()> {
        match self {
            Socket::Plain(stream) => write_now_plain(stream, output),
            Socket::Tls(stream) => {
                // Polled once, without a waker: `read_or_write` waits for the rest.
                let mut cx = Context::from_waker(Waker::noop());
                while !output.is_empty() {
                    match Pin::new(&mut **stream).poll_write(&mut cx, output) {
                        Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Poll::Ready(Ok(n)) => output.advance(n),
                        Poll::Ready(Err(e)) => return Err(e),
                        Poll::Pending => return Ok(()),
                    }
                }
                output.clear();
                // Records the TLS layer still holds go now if the socket takes them, else
                // from `read_or_write`.
                match Pin::new(&mut **stream).poll_flush(&mut cx) {
                    Poll::Ready(Err(e)) => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Waits until the socket takes some of `output` (at least one byte), and writes what it
    /// takes.
    pub async fn write_some(&mut self, output: &mut BytesMut) -> io::Result<()> {
        match self {
            Socket::Plain(stream) => {
                stream.writable().await?;
                write_now_plain(stream, output)
            }
            Socket::Tls(stream) => {
                std::future::poll_fn(|cx| match Pin::new(&mut **stream).poll_write(cx, output) {
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        output.advance(n);
                        if output.is_empty() {
                            output.clear();
                        }
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                })
                .await
            }
        }
    }

    /// Writes all of `bytes`, waiting as long as it takes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Socket::Plain(stream) => stream.write_all(bytes).await,
            Socket::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    /// The last write before the connection closes (an error, `QUIT`): TLS also says goodbye
    /// (close_notify), so the client reads it as the end, not as a cut connection. A client
    /// that takes nothing for `within` is left at that.
    pub async fn close_with(&mut self, bytes: &[u8], within: std::time::Duration) {
        let _ = tokio::time::timeout(within, async {
            let _ = self.write_all(bytes).await;
            if let Socket::Tls(stream) = self {
                let _ = stream.shutdown().await;
            }
        })
        .await;
    }
}

fn write_now_plain(stream: &TcpStream, output: &mut BytesMut) -> io::Result<()> {
    while !output.is_empty() {
        match stream.try_write(output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => output.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    // Empty: start the next replies at the front of the buffer again.
    output.clear();
    Ok(())
}

/// One poll of [`Socket::read_or_write`] over TLS: held replies (or records the TLS layer still
/// holds) go first, then a read.
fn poll_tls(
    stream: &mut TlsStream<TcpStream>,
    cx: &mut Context<'_>,
    input: &mut BytesMut,
    output: &mut BytesMut,
) -> Poll<io::Result<Progress>> {
    if !output.is_empty() {
        if let Poll::Ready(written) = Pin::new(&mut *stream).poll_write(cx, output) {
            match written? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => output.advance(n),
            }
            if output.is_empty() {
                output.clear();
            }
            return Poll::Ready(Ok(Progress::Wrote));
        }
    } else if stream.get_ref().1.wants_write()
        && let Poll::Ready(flushed) = Pin::new(&mut *stream).poll_flush(cx)
    {
        flushed?;
        return Poll::Ready(Ok(Progress::Wrote));
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, input).map_ok(Progress::Read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use std::sync::Arc;
    use std::time::Duration;

    /// A TLS connection over loopback whose server side has a tiny send buffer, so the TLS layer
    /// holds records the socket has no room for: (server side, client side).
    async fn tls_pair() -> (
        TlsStream<TcpStream>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Accepted sockets take the listener's send buffer size.
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_send_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, connected) = tokio::join!(listener.accept(), connecting);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (server, client) = tokio::join!(
            acceptor.accept(accepted.unwrap().0),
            connector.connect(
                ServerName::try_from("localhost").unwrap(),
                connected.unwrap()
            )
        );
        (server.unwrap(), client.unwrap())
    }

    #[tokio::test]
    async fn records_the_tls_layer_still_holds_are_sent_while_waiting_for_commands() {
        let (server, mut client) = tls_pair().await;
        let mut socket = Socket::Tls(Box::new(server));
        let replies = vec![b'r'; 1 << 20];
        let mut output = BytesMut::from(&replies[..]);
        let mut input = BytesMut::new();
        // A client that reads its replies slowly.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while got.len() < 1 << 20 {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            got
        });
        // As the connection loop does: write what the socket takes now, then wait for room
        // (or commands).
        socket.write_now(&mut output).unwrap();
        while !output.is_empty() {
            socket.read_or_write(&mut input, &mut output).await.unwrap();
            socket.write_now(&mut output).unwrap();
        }
        // Every reply has left `output`; the loop now waits for commands, and the records the
        // TLS layer could not hand the socket yet must still reach the client meanwhile.
        // (Once the reader has everything it closes its side: the wait ends there.)
        let waiting = async {
            while let Ok(Progress::Wrote | Progress::Read(1..)) =
                socket.read_or_write(&mut input, &mut output).await
            {}
            std::future::pending::<()>().await
        };
        tokio::select! {
            got = reader => assert!(got.unwrap() == replies, "every reply byte, in order"),
            () = waiting => unreachable!("pending forever"),
            () = tokio::time::sleep(Duration::from_secs(10)) => {
                panic!("the last replies stayed in the TLS layer")
            }
        }
    }
}
