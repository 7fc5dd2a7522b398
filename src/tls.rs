//! TLS material from PEM files: certificates (an upstream's `ca_file`, a server's chain)
//! and server configs for the emulators' HTTPS mode (and, with the production edge,
//! casegate's own listeners).

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the PEM certificates of a file (a `ca_file`, or a certificate chain).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A rustls server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = read_certs(cert)?;
    let key_pem =
        std::fs::read(key).map_err(|e| format!("cannot read {}: {}", key.display(), e.kind()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| format!("{} is not a PEM private key", key.display()))?
        .ok_or_else(|| format!("{} holds no private key", key.display()))?;
    server_config_der(chain, key)
}

/// A rustls server config from DER material.
pub fn server_config_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS server: {e}"))
}
