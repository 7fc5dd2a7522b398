//! TLS material from PEM files: server configs for the emulators' HTTPS mode (and, with
//! the production edge, casegate's own listeners).

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A rustls server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = crate::upstream::read_ca_file(cert)?;
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
