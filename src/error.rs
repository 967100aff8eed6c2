//! `AppError`: what can go wrong in the core, without any HTTP in it. `http::error` maps it to
//! problem+json in one `match`; the CLI maps it to a one-line message and an exit code.

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The caller's input is invalid; the message is safe to show to the client.
    #[error("{0}")]
    Invalid(String),
    /// The object does not exist (or is not visible to the caller).
    #[error("not found")]
    NotFound,
    /// The object already exists or the change conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// No valid credential; the message is safe to show (it never says which part was wrong
    /// when that would help an attacker).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts; try again after this many seconds.
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// A component is not ready (database not writable, keys not loaded).
    #[error("not ready: {0}")]
    Unavailable(String),
    /// `audit.require` is on and the change's audit record could not be written: refused.
    #[error("the audit log cannot be written")]
    AuditUnavailable,
    /// Storage failed; the detail is for the log only.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Cryptography failed; the detail is for the log only.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// Anything else internal; the detail is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

/// A start-up or operator-command failure: one actionable line for the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FatalError(pub String);

impl FatalError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl From<AppError> for FatalError {
    fn from(e: AppError) -> Self {
        Self(e.to_string())
    }
}

/// The errors whose message is already the one line an operator needs.
macro_rules! fatal_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for FatalError {
            fn from(e: $t) -> Self {
                Self(e.to_string())
            }
        })*
    };
}

fatal_from!(
    DbError,
    crate::config::ConfigError,
    crate::crypto::CryptoError,
    crate::crypto::master_key::MasterKeyError,
    crate::tls::TlsError,
    tokio::task::JoinError,
);
