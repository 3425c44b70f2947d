//! `[server] tls_cert` and `tls_key`: the listener's certificate chain and
//! private key, read and checked once, at config load.
//!
//! Everything that can be wrong with them is found here, so `check-config`
//! reports it at the key (`FILE:LINE:COL`) and the daemon never starts with a
//! certificate it cannot serve: an unreadable file, a file with no PEM
//! certificate or no private key, a key rustls (ring) cannot use, a key that
//! does not belong to the certificate. The result is a ready
//! [`rustls::ServerConfig`] (ring provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`), which the listener wraps in its acceptor as is.

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::sign::CertifiedKey;

/// The certificate and key the listener serves HTTPS with.
///
/// `Debug` shows the paths and the size of the chain, never the key; two
/// values are equal when they were read from the same paths with the same
/// content (a reload compares them to notice a new certificate).
#[derive(Clone)]
pub struct TlsConfig {
    /// The PEM certificate chain, server certificate first, resolved against
    /// the main file's directory.
    pub cert_path: PathBuf,
    /// The PEM private key, resolved against the main file's directory.
    pub key_path: PathBuf,
    /// The chain as read, server certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// SHA-256 of the key's DER, so that a changed key makes the value
    /// differ without the key being kept outside `server_config`.
    key_digest: [u8; 32],
    /// What the listener's TLS acceptor is built from.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.chain == other.chain
            && self.key_digest == other.key_digest
    }
}

impl Eq for TlsConfig {}

/// Which of the two keys a problem is reported at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsKey {
    Cert,
    Key,
}

/// The ALPN protocols offered, in order of preference: the listener serves
/// HTTP/2 and HTTP/1.1 on one port, with TLS as without.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl TlsConfig {
    /// Reads and checks `cert_path` and `key_path` (already resolved).
    /// `Err` names the key at fault and says what is wrong, in words for the
    /// operator (the key's content is never part of it); a problem with each
    /// file is reported at once.
    pub(super) fn load(
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<TlsConfig, Vec<(TlsKey, String)>> {
        let (chain, key) = match (read_chain(cert_path), read_key(key_path)) {
            (Ok(chain), Ok(key)) => (chain, key),
            (chain, key) => {
                let mut problems = Vec::new();
                if let Err(m) = chain {
                    problems.push((TlsKey::Cert, m));
                }
                if let Err(m) = key {
                    problems.push((TlsKey::Key, m));
                }
                return Err(problems);
            }
        };
        let key_digest: [u8; 32] = Sha256::digest(key.secret_der()).into();

        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        check_pair(&provider, &chain, &key, cert_path, key_path).map_err(|p| vec![p])?;

        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            // TLS 1.2 and 1.3: Cisco ISE speaks both.
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![(TlsKey::Cert, format!("cannot set up TLS: {e}"))])?
            .with_no_client_auth()
            // Checks the pair again (as `check_pair` did, with its own words).
            .with_single_cert(chain.clone(), key)
            .map_err(|e| {
                vec![(
                    TlsKey::Key,
                    format!(
                        "the certificate {} and the key {} cannot be used together: {e}",
                        cert_path.display(),
                        key_path.display()
                    ),
                )]
            })?;
        server_config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConfig {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            chain,
            key_digest,
            server_config: Arc::new(server_config),
        })
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// A PEM syntax error in words (pki-types' own text prints bytes as numbers).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        other => other.to_string(),
    }
}

/// Every `CERTIFICATE` block of the file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "certificate chain")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{} is not a valid PEM file: {}",
                path.display(),
                pem_error(&e)
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks, \
             the server's certificate first, then its intermediate CAs",
            path.display()
        ));
    }
    Ok(chain)
}

/// The one private key of the file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "private key")?;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{} is not a valid PEM file: {}",
                path.display(),
                pem_error(&e)
            )
        })?;
    let mut keys: Vec<PrivateKeyDer<'static>> = sections
        .into_iter()
        .filter_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if contains(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(format!(
            "the private key in {} is encrypted, and the daemon cannot ask for its passphrase: \
             decrypt it (e.g. `openssl pkey -in {0} -out server.key`) and make the file \
             readable by the service user only",
            path.display()
        )),
        0 => Err(format!(
            "{} holds no private key: expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY` block",
            path.display()
        )),
        n => Err(format!(
            "{} holds {n} private keys: expected only the key of the server's certificate",
            path.display()
        )),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The key is one ring can sign with, and it belongs to the chain's first
/// certificate (rustls compares the public keys).
fn check_pair(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), (TlsKey, String)> {
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            (
                TlsKey::Key,
                format!(
                    "the private key in {} is not supported ({e}): use an RSA (2048 bits or more), \
                     ECDSA P-256 or P-384, or Ed25519 key",
                    key_path.display()
                ),
            )
        })?;
    let certified = CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key cannot say its public key: rustls accepts it, so do we.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            TlsKey::Key,
            format!(
                "the private key in {} does not belong to the certificate in {} (the first \
                 certificate of the chain must be the server's own, issued for this key)",
                key_path.display(),
                cert_path.display()
            ),
        )),
        Err(e) => Err((
            TlsKey::Cert,
            format!(
                "the first certificate in {} cannot be read: {e}",
                cert_path.display()
            ),
        )),
    }
}
