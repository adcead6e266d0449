//! TLS listener settings: the rustls server configuration built from PEM files at start-up
//! (clear errors naming the file for every problem), mutual TLS with a client CA, and the
//! user name taken from a client certificate.
//!
//! Built once per TLS listener on the main thread and shared read-only by every shard
//! (`Arc<ServerConfig>`). The record layer of a connection is `rt::tls`.
//!
//! Choices: rustls with the ring provider; TLS 1.2 and 1.3; TLS 1.3 resumption with stateless
//! tickets (a device that reconnects after a radio drop skips the certificate exchange and the
//! broker keeps no per-session cache); no ALPN requirement.

use std::io;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// Which client-certificate name becomes the MQTT user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CertName {
    /// The subject's Common Name.
    Cn,
    /// The first DNS, e-mail or URI Subject Alternative Name.
    San,
}

/// The TLS part of a listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates: enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate (default true).
    pub require_client_cert: bool,
    /// Take the MQTT user name from the client certificate (mutual TLS only).
    pub username_from: Option<CertName>,
}

/// Why a TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} file {path}: {why}")]
    Content {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("TLS settings rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA rejected: {0}")]
    Verifier(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let bad = |why: String| TlsError::Content {
        what,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("contains no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Build the server configuration for one TLS listener.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("certificate", &s.cert)?;
    let key_pem = read("key", &s.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Content {
        what: "key",
        path: s.key.clone(),
        why: format!("no usable private key ({e})"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in certs("client CA", path)? {
                roots.add(c).map_err(|e| TlsError::Content {
                    what: "client CA",
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if s.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                v.build().map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Content {
            what: "certificate/key",
            path: s.cert.clone(),
            why: format!("{e} (does the key belong to the certificate?)"),
        })?;
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

/// The name `which` in a DER certificate, if it has one.
pub fn cert_name(der: &[u8], which: CertName) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match which {
        CertName::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        CertName::San => {
            use x509_parser::extensions::GeneralName;
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some(s.to_string())
                }
                _ => None,
            })
        }
    }
}

/// Seal `data` with a parked connection's session and send it without blocking (best
/// effort: used for a last DISCONNECT before the connection is closed).
pub fn send_sealed(fd: RawFd, conn: &mut ServerConnection, data: &[u8]) {
    use std::io::Write;
    if conn.writer().write_all(data).is_err() {
        return;
    }
    let mut out = Vec::new();
    while conn.wants_write() {
        if conn.write_tls(&mut out).is_err() {
            return;
        }
    }
    let _ = crate::rt::net::send_nonblocking(fd, &out);
}
