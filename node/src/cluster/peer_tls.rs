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
//! The CA file and the name are read at start; the certificate a node presents is the one it
//! serves, so a rotation (see `api::tls`) reaches its peers with the next connection.

use crate::tls_files::{TlsError, provider, read_roots};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;

/// What a node needs to reach its peers over TLS, besides its own certificate.
#[derive(Debug, Clone)]
pub struct PeerTlsSettings {
    /// PEM certificates of the CA that issues the nodes' certificates (`PEER_TLS_CA_PATH`).
    pub ca_path: PathBuf,
    /// The name every node's certificate carries (`PEER_TLS_NAME`).
    pub name: Option<String>,
}

/// This node's side of a TLS connection to a peer: the certificate it serves, asked at each
/// handshake (so it follows rotations), and whether peers ask for it (`TLS_CLIENT_CA_PATH`).
#[derive(Clone)]
pub struct PeerIdentity {
    pub served: Arc<dyn Fn() -> Arc<CertifiedKey> + Send + Sync>,
    pub presented: bool,
}

/// A client configuration for peers and the name their certificates must carry (`None`: the
/// peer's IP address).
pub struct PeerTls {
    pub config: rustls::ClientConfig,
    pub server_name: Option<ServerName<'static>>,
}

/// A client configuration from the CA file `settings` names and this node's `own` identity (its
/// certificate gives the default name; it is presented when peers ask).
pub fn client_config(settings: &PeerTlsSettings, own: &PeerIdentity) -> Result<PeerTls, TlsError> {
    let roots = read_roots("PEER_TLS_CA_PATH", &settings.ca_path)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            setting: "PEER_TLS_CA_PATH",
            path: settings.ca_path.clone(),
            problem: e.to_string(),
        })?
        .with_root_certificates(roots);
    let server_name = match settings
        .name
        .clone()
        .or_else(|| first_dns_name(&(own.served)()))
    {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| TlsError {
            setting: "PEER_TLS_NAME",
            path: PathBuf::from(&name),
            problem: "not a DNS name or an IP address".into(),
        })?),
        None => None,
    };
    let config = if own.presented {
        builder.with_client_cert_resolver(Arc::new(ServedCertificate(own.served.clone())))
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

/// The certificate a node presents to peers that ask for one: the one it serves now.
struct ServedCertificate(Arc<dyn Fn() -> Arc<CertifiedKey> + Send + Sync>);

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServedCertificate")
    }
}

impl rustls::client::ResolvesClientCert for ServedCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some((self.0)())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::ResolvesClientCert;

    /// A self-signed certificate for `names` and its key, written where `settings` reads them.
    fn write_pair(settings: &crate::api::tls::TlsSettings, names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&settings.cert_path, cert.pem()).unwrap();
        std::fs::write(&settings.key_path, key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    #[test]
    fn peers_get_the_certificate_served_now_and_the_name_it_carries() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::api::tls::TlsSettings {
            cert_path: dir.path().join("node.pem"),
            key_path: dir.path().join("node.key"),
            client_ca_path: Some(dir.path().join("ca.pem")),
        };
        let first = write_pair(&settings, &["*.region.example", "nodes.region.example"]);
        std::fs::copy(&settings.cert_path, dir.path().join("ca.pem")).unwrap();
        let served = crate::api::tls::Tls::load(settings.clone()).unwrap();
        let own = served.peer_identity();
        let peers = PeerTlsSettings {
            ca_path: dir.path().join("ca.pem"),
            name: None,
        };
        let tls = client_config(&peers, &own).unwrap();
        // The first name that is not a wildcard.
        assert_eq!(
            tls.server_name,
            Some(ServerName::try_from("nodes.region.example").unwrap())
        );
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        let presented = |resolver: &dyn ResolvesClientCert| {
            resolver.resolve(&[], &[]).unwrap().cert[0]
                .as_ref()
                .to_vec()
        };
        let resolver = tls.config.client_auth_cert_resolver.clone();
        assert_eq!(presented(resolver.as_ref()), first);
        // A rotation is what peers get from the next handshake.
        let second = write_pair(&settings, &["nodes.region.example"]);
        assert!(matches!(served.reload(true), Some(Ok(()))));
        assert_eq!(presented(resolver.as_ref()), second);
        // A name given wins; one that is no name is refused at start, saying which setting.
        let named = PeerTlsSettings {
            name: Some("peers.internal".into()),
            ..peers.clone()
        };
        let tls = client_config(&named, &own).unwrap();
        assert_eq!(
            tls.server_name,
            Some(ServerName::try_from("peers.internal").unwrap())
        );
        let bad = PeerTlsSettings {
            name: Some("not a name".into()),
            ..peers
        };
        let error = client_config(&bad, &own).err().unwrap().to_string();
        assert!(error.starts_with("PEER_TLS_NAME"), "{error}");
    }
}
