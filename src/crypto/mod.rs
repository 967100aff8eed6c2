//! The only place that touches argon2, hmac, hkdf, sha2 and rand, behind a small typed API.
//! Nothing here does I/O except reading and writing the master key file (`master_key`).

pub mod master_key;
pub mod password;
pub mod random;
pub mod secret;

pub use master_key::{AuditKey, MasterKey};
pub use secret::{ct_eq, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("key derivation failed")]
    Kdf,
}
