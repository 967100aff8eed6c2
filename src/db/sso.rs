//! SQL for single sign-on: `sso_providers`, `sso_identities`, `sso_logins`, `sso_codes`,
//! `sso_grants` and `sso_admin_grants`. What a login means is `domain::sso`'s business.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

/// A stored identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRow {
    pub id: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// `config` or `api`.
    pub source: String,
    pub enabled: bool,
    /// JSON: everything but secrets.
    pub settings: String,
    /// Sealed client secret.
    pub secret_sealed: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const PROVIDER_COLUMNS: &str = "id, kind, source, enabled, settings, secret_sealed, created_at, updated_at";

fn provider_from_row(r: &Row<'_>) -> rusqlite::Result<ProviderRow> {
    Ok(ProviderRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        source: r.get(2)?,
        enabled: r.get(3)?,
        settings: r.get(4)?,
        secret_sealed: r.get(5)?,
        created_at_ms: r.get(6)?,
        updated_at_ms: r.get(7)?,
    })
}

/// A login in flight, as the callback finds it.
#[derive(Debug, Clone)]
pub struct LoginRow {
    pub provider_id: String,
    pub browser_hash: Vec<u8>,
    pub secrets: String,
    pub return_to: String,
    pub mode: String,
    pub code_challenge: Option<String>,
    pub expires_at_ms: i64,
}

/// A user's link to an external identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub provider_id: String,
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    pub email: Option<String>,
    pub created_at_ms: i64,
    pub last_login_at_ms: i64,
}

impl Tx<'_> {
    pub fn sso_providers(&self) -> Result<Vec<ProviderRow>, DbError> {
        let mut stmt = self.conn().prepare(&format!("SELECT {PROVIDER_COLUMNS} FROM sso_providers ORDER BY id"))?;
        let rows = stmt.query_map([], provider_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sso_provider(&self, id: &str) -> Result<Option<ProviderRow>, DbError> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM sso_providers WHERE id = ?1");
        Ok(self.conn().query_row(&sql, [id], provider_from_row).optional()?)
    }

    /// Insert or replace a provider (its creation time is kept).
    pub fn sso_provider_upsert(&self, p: &ProviderRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sso_providers (id, kind, source, enabled, settings, secret_sealed, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, \
             source = excluded.source, enabled = excluded.enabled, settings = excluded.settings, \
             secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
            params![p.id, p.kind, p.source, p.enabled, p.settings, p.secret_sealed, p.created_at_ms, p.updated_at_ms],
        )?;
        Ok(())
    }

    pub fn sso_provider_delete(&self, id: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute("DELETE FROM sso_providers WHERE id = ?1", [id])? > 0)
    }

    pub fn sso_login_insert(&self, state_hash: &[u8; 32], row: &LoginRow, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sso_logins (state_hash, provider_id, browser_hash, secrets, return_to, mode, code_challenge, \
             created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                &state_hash[..],
                row.provider_id,
                row.browser_hash,
                row.secrets,
                row.return_to,
                row.mode,
                row.code_challenge,
                now_ms,
                row.expires_at_ms
            ],
        )?;
        Ok(())
    }

    /// The login a `state` names.
    pub fn sso_login_get(&self, state_hash: &[u8; 32]) -> Result<Option<LoginRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT provider_id, browser_hash, secrets, return_to, mode, expires_at, code_challenge FROM sso_logins \
                 WHERE state_hash = ?1",
                [&state_hash[..]],
                |r| {
                    Ok(LoginRow {
                        provider_id: r.get(0)?,
                        browser_hash: r.get(1)?,
                        secrets: r.get(2)?,
                        return_to: r.get(3)?,
                        mode: r.get(4)?,
                        expires_at_ms: r.get(5)?,
                        code_challenge: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// A state is good once: its login goes when taken.
    pub fn sso_login_delete(&self, state_hash: &[u8; 32]) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM sso_logins WHERE state_hash = ?1", [&state_hash[..]])?;
        Ok(())
    }

    /// Forget logins and codes that expired before `now_ms`.
    pub fn sso_expired_purge(&self, now_ms: i64) -> Result<usize, DbError> {
        let c = self.conn();
        let logins = c.execute("DELETE FROM sso_logins WHERE expires_at < ?1", [now_ms])?;
        let codes = c.execute("DELETE FROM sso_codes WHERE expires_at < ?1", [now_ms])?;
        let seen = c.execute("DELETE FROM sso_saml_assertions WHERE expires_at < ?1", [now_ms])?;
        Ok(logins + codes + seen)
    }

    /// Remember a SAML assertion's id until it expires; `false` when it was seen already.
    pub fn saml_assertion_remember(
        &self,
        provider_id: &str,
        id_hash: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let c = self.conn();
        // A row past its time is only waiting for housekeeping: it no longer blocks the id.
        c.execute(
            "DELETE FROM sso_saml_assertions WHERE provider_id = ?1 AND id_hash = ?2 AND expires_at < ?3",
            params![provider_id, &id_hash[..], now_ms],
        )?;
        let added = c.execute(
            "INSERT INTO sso_saml_assertions (provider_id, id_hash, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (provider_id, id_hash) DO NOTHING",
            params![provider_id, &id_hash[..], expires_at_ms],
        )?;
        Ok(added == 1)
    }

    pub fn sso_code_insert(
        &self,
        code_hash: &[u8; 32],
        user_id: &str,
        provider_id: &str,
        code_challenge: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sso_codes (code_hash, user_id, provider_id, code_challenge, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![&code_hash[..], user_id, provider_id, code_challenge, now_ms, expires_at_ms],
        )?;
        Ok(())
    }

    /// Take a one-time code (it is gone after this, used or not) still valid at `now_ms`:
    /// `(user id, provider id, PKCE challenge)`.
    pub fn sso_code_take(
        &self,
        code_hash: &[u8; 32],
        now_ms: i64,
    ) -> Result<Option<(String, String, String)>, DbError> {
        let taken: Option<(String, String, String, i64)> = self
            .conn()
            .query_row(
                "DELETE FROM sso_codes WHERE code_hash = ?1 RETURNING user_id, provider_id, code_challenge, expires_at",
                [&code_hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        Ok(taken.filter(|t| t.3 >= now_ms).map(|t| (t.0, t.1, t.2)))
    }

    pub fn sso_identity(&self, provider_id: &str, issuer: &str, subject: &str) -> Result<Option<IdentityRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT provider_id, issuer, subject, user_id, email, created_at, last_login_at FROM sso_identities \
                 WHERE provider_id = ?1 AND issuer = ?2 AND subject = ?3",
                [provider_id, issuer, subject],
                |r| {
                    Ok(IdentityRow {
                        provider_id: r.get(0)?,
                        issuer: r.get(1)?,
                        subject: r.get(2)?,
                        user_id: r.get(3)?,
                        email: r.get(4)?,
                        created_at_ms: r.get(5)?,
                        last_login_at_ms: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// How many identities of `provider_id` the user is linked to.
    pub fn sso_identity_count(&self, provider_id: &str, user_id: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM sso_identities WHERE provider_id = ?1 AND user_id = ?2",
            [provider_id, user_id],
            |r| r.get(0),
        )?)
    }

    pub fn sso_identity_insert(&self, i: &IdentityRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sso_identities (provider_id, issuer, subject, user_id, email, created_at, last_login_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![i.provider_id, i.issuer, i.subject, i.user_id, i.email, i.created_at_ms, i.last_login_at_ms],
        )?;
        Ok(())
    }

    pub fn sso_identity_touch(
        &self,
        provider_id: &str,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE sso_identities SET email = ?4, last_login_at = ?5 \
             WHERE provider_id = ?1 AND issuer = ?2 AND subject = ?3",
            params![provider_id, issuer, subject, email, now_ms],
        )?;
        Ok(())
    }

    /// The (workspace id, role id) pairs the provider's mapping granted the user.
    pub fn sso_grants_of(&self, provider_id: &str, user_id: &str) -> Result<Vec<(String, String)>, DbError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT workspace_id, role_id FROM sso_grants WHERE provider_id = ?1 AND user_id = ?2 \
             ORDER BY workspace_id, role_id",
        )?;
        let rows = stmt.query_map([provider_id, user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sso_grant_insert(
        &self,
        provider_id: &str,
        workspace_id: &str,
        user_id: &str,
        role_id: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO sso_grants (provider_id, workspace_id, user_id, role_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![provider_id, workspace_id, user_id, role_id, now_ms],
        )?;
        Ok(())
    }

    pub fn sso_grant_delete(
        &self,
        provider_id: &str,
        workspace_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "DELETE FROM sso_grants WHERE provider_id = ?1 AND workspace_id = ?2 AND user_id = ?3 AND role_id = ?4",
            [provider_id, workspace_id, user_id, role_id],
        )?;
        Ok(())
    }

    pub fn sso_admin_granted(&self, provider_id: &str, user_id: &str) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM sso_admin_grants WHERE provider_id = ?1 AND user_id = ?2",
                [provider_id, user_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn sso_admin_grant_set(
        &self,
        provider_id: &str,
        user_id: &str,
        granted: bool,
        now_ms: i64,
    ) -> Result<(), DbError> {
        if granted {
            self.conn().execute(
                "INSERT OR IGNORE INTO sso_admin_grants (provider_id, user_id, created_at) VALUES (?1, ?2, ?3)",
                params![provider_id, user_id, now_ms],
            )?;
        } else {
            self.conn().execute(
                "DELETE FROM sso_admin_grants WHERE provider_id = ?1 AND user_id = ?2",
                [provider_id, user_id],
            )?;
        }
        Ok(())
    }

    /// Give the member one more role (making it a member when it is not).
    pub fn member_role_add(
        &self,
        workspace_id: &str,
        user_id: &str,
        role_id: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.member_upsert(workspace_id, user_id, now_ms)?;
        self.conn().execute(
            "INSERT OR IGNORE INTO member_roles (workspace_id, user_id, role_id) VALUES (?1, ?2, ?3)",
            params![workspace_id, user_id, role_id],
        )?;
        Ok(())
    }

    /// Take one role from a member; a member left with no role stops being a member.
    pub fn member_role_remove(
        &self,
        workspace_id: &str,
        user_id: &str,
        role_id: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let c = self.conn();
        c.execute(
            "DELETE FROM member_roles WHERE workspace_id = ?1 AND user_id = ?2 AND role_id = ?3",
            [workspace_id, user_id, role_id],
        )?;
        let left: i64 = c.query_row(
            "SELECT count(*) FROM member_roles WHERE workspace_id = ?1 AND user_id = ?2",
            [workspace_id, user_id],
            |r| r.get(0),
        )?;
        if left == 0 {
            c.execute("DELETE FROM members WHERE workspace_id = ?1 AND user_id = ?2", [workspace_id, user_id])?;
        } else {
            c.execute(
                "UPDATE members SET updated_at = ?3 WHERE workspace_id = ?1 AND user_id = ?2",
                params![workspace_id, user_id, now_ms],
            )?;
        }
        Ok(())
    }
}
