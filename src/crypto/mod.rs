//! The only place that touches argon2, aes-gcm, jsonwebtoken, aws-lc-rs, hmac, hkdf, sha1, sha2 and rand, behind a small
//! typed API.
//! Nothing here does I/O except reading and writing the master key file (`master_key`).

pub mod checkpoint;
pub mod jwt;
pub mod master_key;
pub mod password;
pub mod random;
pub mod secret;
pub mod token;
pub mod totp;
pub mod vault;
pub mod webhook;

pub use master_key::{AuditKey, MasterKey, PseudonymKey};
pub use secret::{ct_eq, SecretString};
pub use vault::SealingKey;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("key derivation failed")]
    Kdf,
    #[error("sealing failed")]
    Seal,
    #[error("a sealed value could not be opened (wrong key, wrong place or tampered)")]
    Open,
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
}
