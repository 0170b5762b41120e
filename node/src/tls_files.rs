//! What every TLS user in the node reads from the operator's PEM files — the ports
//! (`api::tls`) and the peer client (`cluster::peer_tls`) — with errors that name the setting
//! and the file.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate set that does not load: which setting, which file, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{setting} ({}): {problem}", path.display())]
pub struct TlsError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

/// The crypto every TLS configuration of the node uses (aws-lc, which rustls already builds).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file, at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_problem(e, "certificate (-----BEGIN CERTIFICATE-----)"))?;
    if chain.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in this file".into());
    }
    Ok(chain)
}

/// The CA certificates of the PEM file `setting` names, as trust roots.
pub fn read_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |problem: String| TlsError {
        setting,
        path: path.to_path_buf(),
        problem,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path).map_err(error)? {
        roots
            .add(cert)
            .map_err(|e| error(format!("not a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What is wrong with a PEM file that should hold a `what`.
pub fn pem_problem(e: rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => format!("no {what} in this file"),
        other => format!("not a PEM file of a {what}: {other}"),
    }
}
