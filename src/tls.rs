//! TLS material: the process-wide rustls crypto provider (TLS 1.2 and 1.3, ECDHE key exchange,
//! AEAD suites only), loading and checking PEM certificate/key pairs, and the self-signed
//! certificate generated for a zero-configuration start.

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, SupportedCipherSuite};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// The suites Gatehouse offers, strongest first. All are AEAD with ephemeral ECDHE key exchange.
const ALLOWED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The provider with only [`ALLOWED_SUITES`].
pub fn provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    for wanted in ALLOWED_SUITES {
        if let Some(s) = provider.cipher_suites.iter().find(|s| s.suite() == *wanted) {
            suites.push(*s);
        }
    }
    provider.cipher_suites = suites;
    provider
}

/// Install [`provider`] as the process default (the HTTPS listener builds its configuration
/// from it). Safe to call more than once.
pub fn install_provider() {
    let _ = provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {source}; check tls.cert_file / tls.key_file and their permissions")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("TLS {what} {path} holds no usable PEM {what}; provide a PEM file")]
    Empty { what: &'static str, path: String },
    #[error("TLS certificate {cert} and key {key} do not belong together or are unusable ({detail}); install the matching pair")]
    Mismatch { cert: String, key: String, detail: String },
    #[error("cannot write the generated TLS certificate in {dir}: {detail}")]
    Generate { dir: String, detail: String },
}

/// A checked certificate chain and key, as PEM, ready for the listener.
#[derive(Clone)]
pub struct PemPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").field("cert_pem_len", &self.cert_pem.len()).field("key_pem", &"_").finish()
    }
}

/// Read a certificate chain and private key and prove that they match.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<PemPair, TlsError> {
    let cert_shown = cert_path.display().to_string();
    let key_shown = key_path.display().to_string();
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert_shown.clone(),
        source,
    })?;
    let key_pem =
        std::fs::read(key_path).map_err(|source| TlsError::Read { what: "key", path: key_shown.clone(), source })?;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Empty { what: "certificate", path: cert_shown });
    }
    let key: PrivateKeyDer<'static> = match rustls_pemfile::private_key(&mut key_pem.as_slice()) {
        Ok(Some(k)) => k,
        _ => return Err(TlsError::Empty { what: "key", path: key_shown }),
    };
    let provider = Arc::new(provider());
    rustls::sign::CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Mismatch {
        cert: cert_shown,
        key: key_shown,
        detail: e.to_string(),
    })?;
    Ok(PemPair { cert_pem, key_pem })
}

/// Create a self-signed certificate for localhost, 127.0.0.1 and ::1 unless both files exist.
/// Returns whether it generated one.
pub fn ensure_self_signed(cert_path: &Path, key_path: &Path) -> Result<bool, TlsError> {
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    let err = |detail: String| TlsError::Generate { dir: dir.display().to_string(), detail };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| err(e.to_string()))?;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key_path)
        .map_err(|e| err(e.to_string()))?;
    key_file.write_all(generated.signing_key.serialize_pem().as_bytes()).map_err(|e| err(e.to_string()))?;
    key_file.sync_all().map_err(|e| err(e.to_string()))?;
    std::fs::write(cert_path, generated.cert.pem()).map_err(|e| err(e.to_string()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = (dir.path().join("a/cert.pem"), dir.path().join("a/key.pem"));
        let (c2, k2) = (dir.path().join("b/cert.pem"), dir.path().join("b/key.pem"));
        assert!(ensure_self_signed(&c1, &k1).unwrap());
        assert!(!ensure_self_signed(&c1, &k1).unwrap());
        ensure_self_signed(&c2, &k2).unwrap();
        load_pair(&c1, &k1).unwrap();
        assert!(matches!(load_pair(&c1, &k2), Err(TlsError::Mismatch { .. })));
        assert!(matches!(load_pair(&k1, &k1), Err(TlsError::Empty { .. })));
    }

    #[test]
    fn only_aead_ecdhe_suites() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"), "{name}");
            assert!(name.contains("GCM") || name.contains("CHACHA20_POLY1305"), "{name}");
        }
    }
}
