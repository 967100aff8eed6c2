//! Sealing: AES-256-GCM envelopes with a fresh 96-bit nonce each time and AAD that binds the
//! ciphertext to its place, so that a ciphertext copied to another row fails to open.
//!
//! Envelope text: `gh1.<key id>.<base64url(nonce || ciphertext || tag)>`. The format version
//! (`gh1`) and the key id travel with every value, so that keys can rotate later.
//! Nothing here does I/O or knows where envelopes are stored.

use super::{random, CryptoError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const FORMAT: &str = "gh1";

/// A 256-bit sealing key and its id.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealingKey {
    #[zeroize(skip)]
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({}, _)", self.id)
    }
}

impl SealingKey {
    pub(crate) fn new(id: impl Into<String>, key: [u8; 32]) -> Self {
        Self { id: id.into(), key }
    }

    /// A data key from its bytes (as unwrapped from the vault); exactly 32 bytes.
    pub fn from_bytes(id: impl Into<String>, bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Open)?;
        Ok(Self { id: id.into(), key })
    }

    /// A fresh random data key.
    pub fn generate(id: impl Into<String>) -> Self {
        Self { id: id.into(), key: random::bytes::<32>() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw key, to be wrapped by a master key (never stored or logged as is).
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The key id an envelope was sealed under, without opening it.
    pub fn envelope_key_id(envelope: &str) -> Option<&str> {
        let mut parts = envelope.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(FORMAT), Some(id)) => Some(id),
            _ => None,
        }
    }

    /// Seal `plaintext`, bound to `aad` (the place it is stored, e.g. `signing_key:<kid>`).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<String, CryptoError> {
        let cipher = Aes256Gcm::new_from_slice(&self.key).map_err(|_| CryptoError::Seal)?;
        let nonce = random::bytes::<12>();
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Seal)?;
        let mut blob = Vec::with_capacity(12 + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{FORMAT}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Open an envelope sealed for `aad`. Any change to the envelope, the key or the place fails.
    pub fn open(&self, envelope: &str, aad: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut parts = envelope.splitn(3, '.');
        let (Some(FORMAT), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Open);
        };
        if id != self.id {
            return Err(CryptoError::Open);
        }
        let blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Open)?;
        if blob.len() < 12 + 16 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = blob.split_at(12);
        let cipher = Aes256Gcm::new_from_slice(&self.key).map_err(|_| CryptoError::Open)?;
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = SealingKey::new("t1", [7u8; 32]);
        let env = k.seal(b"secret seed", "totp:alice").unwrap();
        assert!(env.starts_with("gh1.t1."));
        assert!(!env.contains("secret"));
        assert_eq!(&k.open(&env, "totp:alice").unwrap()[..], b"secret seed");
        // Another place, another key, a flipped byte: all fail.
        assert!(k.open(&env, "totp:bob").is_err());
        assert!(SealingKey::new("t1", [8u8; 32]).open(&env, "totp:alice").is_err());
        let mut chars: Vec<char> = env.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        assert!(k.open(&chars.into_iter().collect::<String>(), "totp:alice").is_err());
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(env, k.seal(b"secret seed", "totp:alice").unwrap());
        assert_eq!(format!("{k:?}"), "SealingKey(t1, _)");
    }
}
