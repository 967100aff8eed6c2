//! The rules. Each function takes what it needs (a transaction, a clock reading, keys) as
//! parameters and never imports poem. The audit record of a change is written in the same
//! transaction as the change.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod keys;
pub mod mfa;
pub mod monitoring;
pub mod secrets;
pub mod sessions;
pub mod siem;
pub mod sso;
pub mod tokens;
pub mod users;
pub mod vault;
pub mod workspaces;

use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, the storage form of every timestamp.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A page cursor `<created_at ms>_<id>` as the list operations give it (`None` for the first
/// page).
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<(i64, String)>, crate::error::AppError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => {
            let bad = || crate::error::AppError::Invalid("cursor: not one this server gave".into());
            let (ts, id) = c.split_once('_').ok_or_else(bad)?;
            Ok(Some((ts.parse().map_err(|_| bad())?, id.to_string())))
        }
    }
}
