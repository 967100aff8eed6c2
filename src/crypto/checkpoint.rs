//! Ed25519 signatures over audit checkpoints. The private key is a 32-byte seed kept as a vault
//! data key (sealed by the master key); the public key is exported for anchoring elsewhere.

use super::CryptoError;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// The checkpoint signing key.
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey").field("public", &hex::encode(self.public_key())).finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// The key whose seed is `seed` (32 bytes).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CryptoError::Kdf)?;
        Ok(Self { pair })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let pk = self.pair.public_key().as_ref();
        if pk.len() == 32 {
            out.copy_from_slice(pk);
        }
        out
    }

    pub fn sign(&self, statement: &[u8]) -> Vec<u8> {
        self.pair.sign(statement).as_ref().to_vec()
    }
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `statement`.
pub fn verify(public_key: &[u8], statement: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(statement, signature).is_ok()
}

/// The public key as a PEM SubjectPublicKeyInfo, for `openssl pkeyutl -verify`.
pub fn public_key_pem(public_key: &[u8; 32]) -> String {
    use base64::Engine;
    // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING { key } }
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(public_key);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// SHA-256, for chaining checkpoints and digesting purged records.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// An incremental SHA-256 (the purged-record digest).
#[derive(Default)]
pub struct Digest256(Sha256);

impl Digest256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_a_changed_statement() {
        let key = CheckpointKey::from_seed(&[7u8; 32]).unwrap();
        let sig = key.sign(b"statement");
        assert!(verify(&key.public_key(), b"statement", &sig));
        assert!(!verify(&key.public_key(), b"statemenT", &sig));
        let other = CheckpointKey::from_seed(&[8u8; 32]).unwrap();
        assert!(!verify(&other.public_key(), b"statement", &sig));
        assert!(public_key_pem(&key.public_key()).starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
    }
}
