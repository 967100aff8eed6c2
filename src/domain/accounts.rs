//! Platform accounts: email normalization, the local password rule, and the operator's
//! break-glass admin (created at the first start or by `gatehouse users add-admin`).

use super::audit::{self, Actor, Event};
use super::unix_ms;
use crate::db::{Tx, UserRow};
use crate::error::AppError;
use time::OffsetDateTime;

/// The admin created on a zero-configuration first start.
pub const BOOTSTRAP_ADMIN_EMAIL: &str = "admin@localhost";
/// Minimum password length, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Maximum password length, in bytes (bounds hashing work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Trim, lower-case the domain, and check the shape of an email address.
pub fn normalize_email(raw: &str) -> Result<String, AppError> {
    let trimmed = raw.trim();
    let invalid = || AppError::Invalid("email must look like name@domain".into());
    if trimmed.len() > 254 || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = trimmed.rsplit_once('@').ok_or_else(invalid)?;
    if local.is_empty() || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') || local.contains('@')
    {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// The length part of the password rule (the common-password list joins it with sign-up).
pub fn check_password_rule(password: &str, email: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AppError::Invalid(format!("password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::Invalid(format!("password must have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        return Err(AppError::Invalid("password must not be the email address".into()));
    }
    Ok(())
}

/// The 10,000 most common passwords, most common first (from the zxcvbn frequency lists, MIT,
/// themselves from public password dumps). Embedded in the binary.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn common_passwords() -> &'static std::collections::HashSet<&'static str> {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

/// The whole rule for a new password: length, not the email, not a common password.
pub fn check_new_password(password: &str, email: &str) -> Result<(), AppError> {
    check_password_rule(password, email)?;
    if common_passwords().contains(password.to_lowercase().as_str()) {
        return Err(AppError::Invalid("password is too common; choose another".into()));
    }
    Ok(())
}

/// What `set_admin` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminChange {
    Created { id: String },
    PasswordReset { id: String },
}

/// Create a platform admin, or make an existing account an admin with a new password and
/// re-enable it (the operator's break-glass). Audited in the same transaction.
pub fn set_admin(
    tx: &Tx<'_>,
    key: &crate::domain::audit::Auditor,
    now: OffsetDateTime,
    actor: Actor,
    email: &str,
    password_hash: &str,
) -> Result<AdminChange, AppError> {
    let now_ms = unix_ms(now);
    match tx.user_by_email(email)? {
        Some(user) => {
            tx.user_reset_admin(&user.id, password_hash, now_ms)?;
            audit::record(
                tx,
                key,
                now,
                &Event::new("user.admin.password_reset", actor)
                    .target(user.id.clone())
                    .details(serde_json::json!({ "email": email })),
            )?;
            Ok(AdminChange::PasswordReset { id: user.id })
        }
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            let mut row = UserRow::new(id.clone(), "local", Some(email.to_string()), now_ms);
            row.password_hash = Some(password_hash.to_string());
            row.is_admin = true;
            tx.user_insert(&row)?;
            audit::record(
                tx,
                key,
                now,
                &Event::new("user.admin.created", actor)
                    .target(id.clone())
                    .details(serde_json::json!({ "email": email })),
            )?;
            Ok(AdminChange::Created { id })
        }
    }
}

/// Whether any platform admin exists.
pub fn has_admin(tx: &Tx<'_>) -> Result<bool, AppError> {
    Ok(tx.admin_count()? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_email() {
        assert_eq!(normalize_email("  Alice@Example.COM ").unwrap(), "Alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "alice@.com", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_rule() {
        assert!(check_password_rule("short", "a@b").is_err());
        assert!(check_password_rule("alice@example.com", "alice@example.com").is_err());
        assert!(check_password_rule(&"x".repeat(1025), "a@b").is_err());
        assert!(check_password_rule("a long enough passphrase", "a@b").is_ok());
        assert_eq!(common_passwords().len(), 10_000);
        assert!(check_new_password("qwerty123456", "a@b").is_err(), "in the common list");
        assert!(check_new_password("QWERTY123456", "a@b").is_err(), "case does not help");
        assert!(check_new_password("a long enough passphrase", "a@b").is_ok());
    }
}
