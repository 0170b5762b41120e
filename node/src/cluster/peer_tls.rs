//! HTTPS between the nodes of a region whose API port speaks TLS (`TLS_CERT_PATH`).
//!
//! A node reaches its peers at the addresses their cards give (IP addresses), so it cannot
//! check their certificates the way a browser checks a host name. It trusts the CA the
//! operator names (`PEER_TLS_CA_PATH`: the one that issues the nodes' certificates) and checks
//! that each peer's certificate carries the name the nodes share: `PEER_TLS_NAME`, or else the
//! first DNS name of this node's own certificate (nodes behind one name share it), or else the
//! peer's IP address. When the port asks clients for certificates (`TLS_CLIENT_CA_PATH`), a node
//! presents its own (which then must be good for client authentication too).
//!
//! Read once at start: a rotated certificate is served at once (see `api::tls`), and peers
//! present the new one from the next start.

use crate::api::tls::{TlsError, TlsSettings, certified_key, provider, read_certificates};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;

/// What a node needs to reach its peers over TLS.
#[derive(Debug, Clone)]
pub struct PeerTlsSettings {
    /// PEM certificates of the CA that issues the nodes' certificates (`PEER_TLS_CA_PATH`).
    pub ca_path: PathBuf,
    /// The name every node's certificate carries (`PEER_TLS_NAME`).
    pub name: Option<String>,
    /// This node's own TLS files: the default name, and its client certificate.
    pub own: TlsSettings,
}

/// A client configuration for peers and the name their certificates must carry (`None`: the
/// peer's IP address).
pub struct PeerTls {
    pub config: rustls::ClientConfig,
    pub server_name: Option<ServerName<'static>>,
}

/// Reads the files `settings` names into a client configuration.
pub fn client_config(settings: &PeerTlsSettings) -> Result<PeerTls, TlsError> {
    let ca_error = |problem: String| TlsError {
        setting: "PEER_TLS_CA_PATH",
        path: settings.ca_path.clone(),
        problem,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(&settings.ca_path).map_err(ca_error)? {
        roots
            .add(cert)
            .map_err(|e| ca_error(format!("not a CA certificate: {e}")))?;
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(e.to_string()))?
        .with_root_certificates(roots);
    let own = certified_key(&settings.own, &provider)?;
    let server_name = match settings.name.clone().or_else(|| first_dns_name(&own)) {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| TlsError {
            setting: "PEER_TLS_NAME",
            path: PathBuf::from(&name),
            problem: "not a DNS name or an IP address".into(),
        })?),
        None => None,
    };
    let config = if settings.own.client_ca_path.is_some() {
        builder.with_client_cert_resolver(Arc::new(OwnCertificate(Arc::new(own))))
    } else {
        builder.with_no_client_auth()
    };
    Ok(PeerTls {
        config,
        server_name,
    })
}

/// The first DNS name (not a wildcard) among the subject alternative names of `key`'s leaf
/// certificate.
fn first_dns_name(key: &CertifiedKey) -> Option<String> {
    let (_, leaf) = x509_parser::parse_x509_certificate(key.cert.first()?.as_ref()).ok()?;
    let names = leaf.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            // A wildcard is no name to ask for.
            x509_parser::extensions::GeneralName::DNSName(dns) if !dns.starts_with('*') => {
                Some(dns.to_string())
            }
            _ => None,
        })
}

/// The certificate a node presents to peers that ask for one.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
