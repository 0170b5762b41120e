//! TLS on the client-facing ports — the HTTP API and the Redis port — from PEM files the operator
//! points at: `TLS_CERT_PATH` (the chain, leaf first), `TLS_KEY_PATH`, and optionally
//! `TLS_CLIENT_CA_PATH` (then every client must present a certificate that CA signed, as Redis's
//! `tls-auth-clients yes`). The internal port stays plaintext: it is for the region's own nodes.
//!
//! The files are read again when they change (looked at every [`RELOAD_EVERY`]) or on `SIGHUP`,
//! so a rotated certificate (cert-manager, certbot, a Kubernetes secret) is served to new
//! connections without a restart. A new set that does not load is logged and counted, and the
//! node goes on serving the last good one: a half-written rotation never takes the ports down.

use crate::metrics::Metrics;
pub use crate::tls_files::TlsError;
use crate::tls_files::{pem_problem, provider, read_certificates, read_roots};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The first byte a TLS client sends (the record type of its ClientHello). Anything else on a TLS
/// port is a client that forgot TLS, and is told so in its own protocol.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// How often a failed handshake is logged with its reason at most (the metric counts every
/// one): often enough to tell an operator why a client with the wrong certificate is refused,
/// rarely enough that scanners do not fill the log.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A certificate expiring in fewer days than this is warned about at load and reload.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Longest a Redis client may take to start and finish its TLS handshake (HTTP uses its header
/// timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate, its key and (for client certificates) the CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub client_ca_path: Option<PathBuf>,
}

/// Which port a connection came to: HTTP offers HTTP/2 by ALPN, Redis offers nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPort {
    Http,
    Redis,
}

impl TlsPort {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TlsPort::Http => "http",
            TlsPort::Redis => "redis",
        }
    }
}

/// The node's TLS configuration, swapped whole when the files change.
pub struct Tls {
    settings: TlsSettings,
    acceptors: ArcSwap<Acceptors>,
    /// What the files looked like when last loaded (or last failed to load).
    seen: Mutex<Vec<Stamp>>,
    /// When a failed handshake was last logged at info (see [`FAILURE_LOG_EVERY`]).
    failure_logged: Mutex<Option<Instant>>,
}

struct Acceptors {
    http: TlsAcceptor,
    redis: TlsAcceptor,
    /// The certificate and key both serve (and present to peers that ask for one).
    key: Arc<CertifiedKey>,
    /// When the served certificate (the chain's first) expires, unix seconds.
    expires_at: Option<i64>,
}

/// A file's identity and version: a rotation that swaps a symlink (Kubernetes) or rewrites the
/// file changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files; an error names the setting and says what to fix.
    pub fn load(settings: TlsSettings) -> Result<Arc<Tls>, TlsError> {
        let seen = stamps(&settings);
        let acceptors = build(&settings)?;
        Ok(Arc::new(Tls {
            settings,
            acceptors: ArcSwap::from_pointee(acceptors),
            seen: Mutex::new(seen),
            failure_logged: Mutex::new(None),
        }))
    }

    /// The certificate and key served now: what this node presents to its peers when they ask
    /// for a client certificate, so a rotation reaches them too.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.acceptors.load().key.clone()
    }

    /// This node's side of its connections to peers: the certificate served at each moment,
    /// presented when the ports ask clients for one (`TLS_CLIENT_CA_PATH`).
    pub fn peer_identity(self: &Arc<Self>) -> crate::cluster::PeerIdentity {
        let tls = self.clone();
        crate::cluster::PeerIdentity {
            served: Arc::new(move || tls.certified_key()),
            presented: self.settings.client_ca_path.is_some(),
        }
    }

    /// When the served certificate expires, unix seconds (when it could be read).
    pub fn expires_at(&self) -> Option<i64> {
        self.acceptors.load().expires_at
    }

    /// Publishes the served certificate's expiry, and warns when it is near or past: a
    /// rotation that stopped (cert-manager, certbot) shows here weeks before clients refuse the
    /// node.
    fn note_expiry(&self, metrics: &Metrics) {
        let Some(at) = self.expires_at() else {
            return;
        };
        metrics.tls_certificate_expiry.set(at);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let days = (at - now).div_euclid(86_400);
        if at <= now {
            tracing::error!(
                path = %self.settings.cert_path.display(),
                "the TLS certificate (TLS_CERT_PATH) has EXPIRED: clients refuse it; put a new one in place (read again within {} s)",
                RELOAD_EVERY.as_secs()
            );
        } else if days < EXPIRY_WARNING_DAYS {
            tracing::warn!(
                path = %self.settings.cert_path.display(),
                days,
                "the TLS certificate (TLS_CERT_PATH) expires in {days} days: rotate it"
            );
        }
    }

    /// The acceptor for a new connection to `port` (the current certificate).
    pub fn acceptor(&self, port: TlsPort) -> TlsAcceptor {
        let acceptors = self.acceptors.load();
        match port {
            TlsPort::Http => acceptors.http.clone(),
            TlsPort::Redis => acceptors.redis.clone(),
        }
    }

    /// Reads the files again if they changed since they were last read (`force`: anyway).
    /// `None` when nothing changed; else whether the new set is now served.
    pub fn reload(&self, force: bool) -> Option<Result<(), TlsError>> {
        let now = stamps(&self.settings);
        {
            let mut seen = self.seen.lock().expect("tls stamps lock");
            if !force && *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(build(&self.settings).map(|acceptors| self.acceptors.store(Arc::new(acceptors))))
    }

    /// Reloads on a change of the files (looked at every [`RELOAD_EVERY`]) and on `SIGHUP`,
    /// logging and counting each outcome.
    pub fn spawn_reloader(self: &Arc<Self>, metrics: Arc<Metrics>) {
        let tls = self.clone();
        tls.note_expiry(&metrics);
        tokio::spawn(async move {
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = hangup => true,
                };
                let reloading = tls.clone();
                let reloaded = tokio::task::spawn_blocking(move || reloading.reload(forced)).await;
                match reloaded {
                    Ok(None) => {}
                    Ok(Some(Ok(()))) => {
                        metrics.tls_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(
                            trigger = if forced { "SIGHUP" } else { "files changed" },
                            "TLS certificate reloaded: new connections get the new one"
                        );
                        tls.note_expiry(&metrics);
                    }
                    Ok(Some(Err(e))) => {
                        metrics.tls_reloads.with_label_values(&["failed"]).inc();
                        tracing::error!(
                            error = %e,
                            "TLS files changed but do not load; still serving the previous certificate"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
                }
            }
        });
    }
}

impl Tls {
    /// Whether a failed handshake should be logged at info now (at most once per
    /// [`FAILURE_LOG_EVERY`]).
    fn log_failure_now(&self) -> bool {
        let mut last = self.failure_logged.lock().expect("tls log lock");
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < FAILURE_LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Waits for a TLS client's first byte: `Ok(true)` when it starts a TLS handshake, `Ok(false)`
/// when it speaks something else (plaintext), `Err` when it sends nothing in time or leaves.
pub async fn starts_handshake(stream: &TcpStream, wait: Duration) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => Ok(first[0] == HANDSHAKE_RECORD),
        Ok(Ok(_)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Accepts a TLS connection on `stream`: answers a plaintext client `plaintext_reply` (in its
/// protocol, saying to use TLS) and closes, and bounds the wait for the first byte and then the
/// handshake by `wait` each. `None` when the connection is closed instead (counted).
pub async fn accept(
    tls: &Tls,
    port: TlsPort,
    mut stream: TcpStream,
    wait: Duration,
    plaintext_reply: &[u8],
    metrics: &Metrics,
) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match starts_handshake(&stream, wait).await {
        Ok(true) => {}
        Ok(false) => {
            metrics
                .tls_handshake_failures
                .with_label_values(&[port.label(), "plaintext"])
                .inc();
            let _ = stream.write_all(plaintext_reply).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Err(_) => return None,
    }
    let acceptor = tls.acceptor(port);
    match tokio::time::timeout(wait, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            metrics
                .tls_handshake_failures
                .with_label_values(&[port.label(), "handshake"])
                .inc();
            if tls.log_failure_now() {
                tracing::info!(?peer, port = port.label(), error = %e, "TLS handshake failed (more are counted in firescroll_tls_handshake_failures_total, logged at debug)");
            } else {
                tracing::debug!(?peer, port = port.label(), error = %e, "TLS handshake failed");
            }
            None
        }
        Err(_) => {
            metrics
                .tls_handshake_failures
                .with_label_values(&[port.label(), "timeout"])
                .inc();
            None
        }
    }
}

fn stamps(settings: &TlsSettings) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    [
        Some(&settings.cert_path),
        Some(&settings.key_path),
        settings.client_ca_path.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| match std::fs::metadata(path) {
        Ok(meta) => Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        },
        Err(_) => Stamp {
            modified: None,
            len: 0,
            inode: 0,
        },
    })
    .collect()
}

/// Both ports' server configurations from the files.
fn build(settings: &TlsSettings) -> Result<Acceptors, TlsError> {
    let provider = provider();
    let key = Arc::new(certified_key(settings, &provider)?);
    let verifier = match &settings.client_ca_path {
        Some(path) => Some(client_verifier(path, &provider)?),
        None => None,
    };
    let config = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                setting: "TLS_CERT_PATH",
                path: settings.cert_path.clone(),
                problem: e.to_string(),
            })?;
        let builder = match &verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(key.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    };
    Ok(Acceptors {
        http: config(&[b"h2", b"http/1.1"])?,
        redis: config(&[])?,
        expires_at: key.cert.first().and_then(expiry),
        key,
    })
}

/// A certificate's notAfter, unix seconds (`None` for one x509-parser cannot read; rustls took
/// it, so it is served anyway).
fn expiry(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// The one certificate both ports present (swapped by building new acceptors).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn certified_key(
    settings: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |problem: String| TlsError {
        setting: "TLS_CERT_PATH",
        path: settings.cert_path.clone(),
        problem,
    };
    let key_error = |problem: String| TlsError {
        setting: "TLS_KEY_PATH",
        path: settings.key_path.clone(),
        problem,
    };
    let chain = read_certificates(&settings.cert_path).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|e| {
        key_error(pem_problem(
            e,
            "private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_error(format!(
            "this key does not belong to the certificate in TLS_CERT_PATH ({})",
            settings.cert_path.display()
        )),
        rustls::Error::InvalidCertificate(_) | rustls::Error::General(_) => {
            cert_error(format!("not a certificate rustls can use: {e}"))
        }
        other => key_error(format!("not a key rustls can use: {other}")),
    })
}

fn client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let roots = read_roots("TLS_CLIENT_CA_PATH", path)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError {
            setting: "TLS_CLIENT_CA_PATH",
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn settings(cert_path: PathBuf, key_path: PathBuf) -> TlsSettings {
        TlsSettings {
            cert_path,
            key_path,
            client_ca_path: None,
        }
    }

    #[test]
    fn a_matching_pair_loads_and_an_unchanged_one_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let tls = Tls::load(settings(cert, key)).unwrap();
        assert!(tls.reload(false).is_none(), "nothing changed");
        assert!(matches!(tls.reload(true), Some(Ok(()))));
    }

    #[test]
    fn errors_name_the_setting_and_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let missing = dir.path().join("nope.pem");
        let e = Tls::load(settings(missing.clone(), key.clone())).unwrap_err();
        assert_eq!(e.setting, "TLS_CERT_PATH");
        assert!(e.to_string().contains("cannot read it"), "{e}");

        // The key in the certificate's place, and the certificate in the key's.
        let e = Tls::load(settings(key.clone(), key.clone())).unwrap_err();
        assert_eq!(e.setting, "TLS_CERT_PATH");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = Tls::load(settings(cert.clone(), cert.clone())).unwrap_err();
        assert_eq!(e.setting, "TLS_KEY_PATH");
        assert!(e.to_string().contains("no private key"), "{e}");

        // Another pair's key.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path(), &["localhost"]);
        let e = Tls::load(settings(cert.clone(), other_key)).unwrap_err();
        assert_eq!(e.setting, "TLS_KEY_PATH");
        assert!(e.to_string().contains("does not belong"), "{e}");

        let e = Tls::load(TlsSettings {
            client_ca_path: Some(key.clone()),
            ..settings(cert, key)
        })
        .unwrap_err();
        assert_eq!(e.setting, "TLS_CLIENT_CA_PATH");
    }

    #[test]
    fn a_bad_rotation_keeps_the_last_good_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let tls = Tls::load(settings(cert.clone(), key)).unwrap();
        let before = Arc::as_ptr(&tls.acceptor(TlsPort::Redis).config().clone());
        std::fs::write(&cert, "half a file").unwrap();
        let e = tls.reload(false).expect("changed").unwrap_err();
        assert_eq!(e.setting, "TLS_CERT_PATH");
        let after = Arc::as_ptr(&tls.acceptor(TlsPort::Redis).config().clone());
        assert_eq!(before, after, "the last good configuration is still served");
        // Looked at once per change, not logged again on every pass.
        assert!(tls.reload(false).is_none());
        // The rotation completes: served.
        write_pair(dir.path(), &["localhost"]);
        assert!(matches!(tls.reload(false), Some(Ok(()))));
        let rotated = Arc::as_ptr(&tls.acceptor(TlsPort::Redis).config().clone());
        assert_ne!(before, rotated);
    }
}
