//! SQL for `signing_keys` and `personal_access_tokens`.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub private_sealed: String,
    pub public_jwk: String,
    pub created_at_ms: i64,
    pub activates_at_ms: i64,
    pub retired_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct PatRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub hint: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub last_used_ip: Option<String>,
    pub revoked_at_ms: Option<i64>,
}

const PAT_COLUMNS: &str = "id, user_id, name, hint, created_at, expires_at, last_used_at, last_used_ip, revoked_at";

fn pat_from_row(r: &Row<'_>) -> rusqlite::Result<PatRow> {
    Ok(PatRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        hint: r.get(3)?,
        created_at_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
        last_used_at_ms: r.get(6)?,
        last_used_ip: r.get(7)?,
        revoked_at_ms: r.get(8)?,
    })
}

/// A PAT found by its hash, with what authentication needs of its owner.
#[derive(Debug, Clone)]
pub struct PatAuthRow {
    pub pat: PatRow,
    pub user_disabled: bool,
}

impl Tx<'_> {
    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, DbError> {
        let mut stmt = self.conn().prepare(
            "SELECT kid, alg, private_sealed, public_jwk, created_at, activates_at, retired_at, expires_at \
             FROM signing_keys ORDER BY activates_at, kid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SigningKeyRow {
                kid: r.get(0)?,
                alg: r.get(1)?,
                private_sealed: r.get(2)?,
                public_jwk: r.get(3)?,
                created_at_ms: r.get(4)?,
                activates_at_ms: r.get(5)?,
                retired_at_ms: r.get(6)?,
                expires_at_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn signing_key_insert(&self, k: &SigningKeyRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO signing_keys (kid, alg, private_sealed, public_jwk, created_at, activates_at, retired_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                k.kid,
                k.alg,
                k.private_sealed,
                k.public_jwk,
                k.created_at_ms,
                k.activates_at_ms,
                k.retired_at_ms,
                k.expires_at_ms
            ],
        )?;
        Ok(())
    }

    pub fn signing_key_retire(&self, kid: &str, retired_ms: i64, expires_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE signing_keys SET retired_at = ?2, expires_at = ?3 WHERE kid = ?1 AND retired_at IS NULL",
            params![kid, retired_ms, expires_ms],
        )?;
        Ok(())
    }

    /// Pull a pending key's start forward (a forced rotation).
    pub fn signing_key_activate_at(&self, kid: &str, at_ms: i64) -> Result<(), DbError> {
        self.conn().execute("UPDATE signing_keys SET activates_at = ?2 WHERE kid = ?1", params![kid, at_ms])?;
        Ok(())
    }

    pub fn signing_keys_drop_expired(&self, now_ms: i64) -> Result<usize, DbError> {
        Ok(self
            .conn()
            .execute("DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= ?1", [now_ms])?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn pat_insert(
        &self,
        id: &str,
        user_id: &str,
        name: &str,
        hash: &[u8; 32],
        hint: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO personal_access_tokens (id, user_id, name, token_hash, hint, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, user_id, name, &hash[..], hint, now_ms, expires_ms],
        )?;
        Ok(())
    }

    pub fn pat_by_hash(&self, hash: &[u8; 32]) -> Result<Option<PatAuthRow>, DbError> {
        let sql = format!(
            "SELECT {}, u.disabled FROM personal_access_tokens p JOIN users u ON u.id = p.user_id WHERE p.token_hash = ?1",
            PAT_COLUMNS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ")
        );
        Ok(self
            .conn()
            .prepare_cached(&sql)?
            .query_row([&hash[..]], |r| Ok(PatAuthRow { pat: pat_from_row(r)?, user_disabled: r.get(9)? }))
            .optional()?)
    }

    pub fn pats_of_user(&self, user_id: &str) -> Result<Vec<PatRow>, DbError> {
        let sql = format!(
            "SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE user_id = ?1 AND revoked_at IS NULL \
             ORDER BY created_at DESC, id DESC"
        );
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map([user_id], pat_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn pat_revoke(&self, user_id: &str, id: &str, now_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE personal_access_tokens SET revoked_at = ?3 WHERE id = ?2 AND user_id = ?1 AND revoked_at IS NULL",
            params![user_id, id, now_ms],
        )? == 1)
    }

    pub fn pats_revoke_user(&self, user_id: &str, now_ms: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute(
            "UPDATE personal_access_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            params![user_id, now_ms],
        )?)
    }

    /// Record last use, never moving it backwards.
    pub fn pat_touch(&self, id: &str, at_ms: i64, ip: Option<&str>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE personal_access_tokens SET last_used_at = ?2, last_used_ip = ?3 \
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            params![id, at_ms, ip],
        )?;
        Ok(())
    }
}
