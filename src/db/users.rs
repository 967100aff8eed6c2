//! SQL for the `users`, `recovery_codes` and `invites` tables.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

/// A stored user row.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    /// `local` or `anonymous`.
    pub kind: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// PHC string; `None` for accounts without a local password.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub expires_at_ms: Option<i64>,
    pub failed_logins: i64,
    pub last_failed_at_ms: Option<i64>,
    pub locked_until_ms: Option<i64>,
    /// Sealed TOTP seed.
    pub totp_seed: Option<String>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl UserRow {
    /// A new local or anonymous user with nothing but identity and times set.
    pub fn new(id: String, kind: &str, email: Option<String>, now_ms: i64) -> Self {
        Self {
            id,
            kind: kind.to_string(),
            email,
            name: None,
            password_hash: None,
            is_admin: false,
            disabled: false,
            expires_at_ms: None,
            failed_logins: 0,
            last_failed_at_ms: None,
            locked_until_ms: None,
            totp_seed: None,
            totp_enabled: false,
            totp_last_step: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
}

const COLUMNS: &str = "id, kind, email, name, password_hash, is_admin, disabled, expires_at, failed_logins, \
last_failed_at, locked_until, totp_seed, totp_enabled, totp_last_step, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        email: r.get(2)?,
        name: r.get(3)?,
        password_hash: r.get(4)?,
        is_admin: r.get(5)?,
        disabled: r.get(6)?,
        expires_at_ms: r.get(7)?,
        failed_logins: r.get(8)?,
        last_failed_at_ms: r.get(9)?,
        locked_until_ms: r.get(10)?,
        totp_seed: r.get(11)?,
        totp_enabled: r.get(12)?,
        totp_last_step: r.get(13)?,
        created_at_ms: r.get(14)?,
        updated_at_ms: r.get(15)?,
    })
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub name: Option<Option<String>>,
    pub email: Option<String>,
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

impl Tx<'_> {
    pub fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = ?1");
        Ok(self.conn().prepare_cached(&sql)?.query_row([email], from_row).optional()?)
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
        Ok(self.conn().prepare_cached(&sql)?.query_row([id], from_row).optional()?)
    }

    pub fn user_insert(&self, u: &UserRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO users ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        );
        self.conn().execute(
            &sql,
            params![
                u.id,
                u.kind,
                u.email,
                u.name,
                u.password_hash,
                u.is_admin,
                u.disabled,
                u.expires_at_ms,
                u.failed_logins,
                u.last_failed_at_ms,
                u.locked_until_ms,
                u.totp_seed,
                u.totp_enabled,
                u.totp_last_step,
                u.created_at_ms,
                u.updated_at_ms
            ],
        )?;
        Ok(())
    }

    /// Set password and admin flag, re-enable the account, clear throttling.
    pub fn user_reset_admin(&self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, is_admin = 1, disabled = 0, failed_logins = 0, locked_until = NULL, \
             updated_at = ?3 WHERE id = ?1",
            params![id, password_hash, now_ms],
        )?;
        Ok(())
    }

    pub fn admin_count(&self) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT count(*) FROM users WHERE is_admin = 1 AND disabled = 0", [], |r| r.get(0))?)
    }

    pub fn user_set_password(&self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, password_hash, now_ms],
        )?;
        Ok(())
    }

    /// Turn an anonymous user into a local one, keeping its id.
    pub fn user_upgrade_anonymous(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET kind = 'local', email = ?2, password_hash = ?3, expires_at = NULL, updated_at = ?4 \
             WHERE id = ?1 AND kind = 'anonymous'",
            params![id, email, password_hash, now_ms],
        )?;
        Ok(())
    }

    /// Count one failed sign-in; returns the new count.
    pub fn user_count_failure(&self, id: &str, now_ms: i64) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "UPDATE users SET failed_logins = failed_logins + 1, last_failed_at = ?2 WHERE id = ?1 RETURNING failed_logins",
            params![id, now_ms],
            |r| r.get(0),
        )?)
    }

    pub fn user_lock(&self, id: &str, until_ms: i64) -> Result<(), DbError> {
        self.conn().execute("UPDATE users SET locked_until = ?2 WHERE id = ?1", params![id, until_ms])?;
        Ok(())
    }

    /// Remember a deleted user, so that a restart keeps refusing its unexpired access tokens.
    pub fn user_tombstone(&self, id: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn()
            .execute("INSERT OR REPLACE INTO deleted_users (id, deleted_at) VALUES (?1, ?2)", params![id, now_ms])?;
        Ok(())
    }

    /// Users deleted since `since_ms`.
    pub fn users_deleted_since(&self, since_ms: i64) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare("SELECT id FROM deleted_users WHERE deleted_at >= ?1")?;
        let rows = stmt.query_map([since_ms], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn tombstones_purge(&self, before_ms: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute("DELETE FROM deleted_users WHERE deleted_at < ?1", [before_ms])?)
    }

    pub fn user_clear_failures(&self, id: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET failed_logins = 0, last_failed_at = NULL, locked_until = NULL WHERE id = ?1 AND failed_logins > 0",
            [id],
        )?;
        Ok(())
    }

    pub fn user_patch(&self, id: &str, patch: &UserPatch, now_ms: i64) -> Result<(), DbError> {
        let c = self.conn();
        if let Some(name) = &patch.name {
            c.execute("UPDATE users SET name = ?2, updated_at = ?3 WHERE id = ?1", params![id, name, now_ms])?;
        }
        if let Some(email) = &patch.email {
            c.execute("UPDATE users SET email = ?2, updated_at = ?3 WHERE id = ?1", params![id, email, now_ms])?;
        }
        if let Some(disabled) = patch.disabled {
            c.execute("UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1", params![id, disabled, now_ms])?;
        }
        if let Some(admin) = patch.is_admin {
            c.execute("UPDATE users SET is_admin = ?2, updated_at = ?3 WHERE id = ?1", params![id, admin, now_ms])?;
            if !admin {
                // An admin role an SSO mapping granted, taken away: the mapping's no more.
                c.execute("DELETE FROM sso_admin_grants WHERE user_id = ?1", [id])?;
            }
        }
        Ok(())
    }

    pub fn user_delete(&self, id: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
    }

    /// Local users in creation order after the cursor `(created_at, id)`, filtered by a
    /// case-insensitive substring of email or name.
    pub fn users_page(
        &self,
        query: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<UserRow>, DbError> {
        let pattern = query.map(|q| {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let (after_ts, after_id) = after.map(|(t, i)| (t, i.to_string())).unwrap_or((i64::MIN, String::new()));
        let sql = format!(
            "SELECT {COLUMNS} FROM users WHERE kind = 'local' \
             AND (?1 IS NULL OR email LIKE ?1 ESCAPE '\\' OR name LIKE ?1 ESCAPE '\\') \
             AND (created_at > ?2 OR (created_at = ?2 AND id > ?3)) ORDER BY created_at, id LIMIT ?4"
        );
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map(params![pattern, after_ts, after_id, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Ids of disabled users (for the revocation view).
    pub fn disabled_user_ids(&self) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare("SELECT id FROM users WHERE disabled = 1")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Anonymous users whose time is up.
    pub fn expired_anonymous_ids(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare(
            "SELECT id FROM users WHERE kind = 'anonymous' AND expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn user_set_totp(&self, id: &str, sealed: Option<&str>, enabled: bool, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET totp_seed = ?2, totp_enabled = ?3, totp_last_step = NULL, updated_at = ?4 WHERE id = ?1",
            params![id, sealed, enabled, now_ms],
        )?;
        Ok(())
    }

    pub fn user_set_totp_step(&self, id: &str, step: i64) -> Result<(), DbError> {
        self.conn().execute("UPDATE users SET totp_last_step = ?2 WHERE id = ?1", params![id, step])?;
        Ok(())
    }

    pub fn recovery_codes_replace(&self, user_id: &str, hashes: &[[u8; 32]]) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
        let mut stmt = self.conn().prepare("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)")?;
        for h in hashes {
            stmt.execute(params![user_id, &h[..]])?;
        }
        Ok(())
    }

    /// Mark an unused recovery code used; false when there is no such unused code.
    pub fn recovery_code_use(&self, user_id: &str, hash: &[u8; 32], now_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL",
            params![user_id, &hash[..], now_ms],
        )? == 1)
    }

    pub fn recovery_codes_left(&self, user_id: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL",
            [user_id],
            |r| r.get(0),
        )?)
    }

    pub fn invite_insert(
        &self,
        hash: &[u8; 32],
        email: &str,
        created_by: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO invites (hash, email, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&hash[..], email, created_by, now_ms, expires_ms],
        )?;
        Ok(())
    }

    /// Use an invitation for `email`; false when none is valid.
    pub fn invite_use(&self, hash: &[u8; 32], email: &str, now_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE invites SET used_at = ?3 WHERE hash = ?1 AND email = ?2 AND used_at IS NULL AND expires_at > ?3",
            params![&hash[..], email, now_ms],
        )? == 1)
    }
}
