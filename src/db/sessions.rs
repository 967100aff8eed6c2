//! SQL for `sessions`, `refresh_tokens` and `login_challenges`.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub expires_at_ms: i64,
    pub max_expires_at_ms: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: String,
    /// JSON array of RFC 8176 method references.
    pub amr: String,
    pub mfa: bool,
    pub cookie_hash: Option<Vec<u8>>,
    pub csrf_hash: Option<Vec<u8>>,
    pub revoked_at_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, user_id, created_at, last_seen_at, expires_at, max_expires_at, ip, user_agent, method, amr, \
mfa, cookie_hash, csrf_hash, revoked_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        created_at_ms: r.get(2)?,
        last_seen_at_ms: r.get(3)?,
        expires_at_ms: r.get(4)?,
        max_expires_at_ms: r.get(5)?,
        ip: r.get(6)?,
        user_agent: r.get(7)?,
        method: r.get(8)?,
        amr: r.get(9)?,
        mfa: r.get(10)?,
        cookie_hash: r.get(11)?,
        csrf_hash: r.get(12)?,
        revoked_at_ms: r.get(13)?,
    })
}

/// What a refresh token lookup finds.
#[derive(Debug, Clone)]
pub struct RefreshRow {
    pub session_id: String,
    pub used_at_ms: Option<i64>,
}

/// A pending second factor.
#[derive(Debug, Clone)]
pub struct ChallengeRow {
    pub user_id: String,
    pub mode: String,
    pub expires_at_ms: i64,
    pub attempts: i64,
}

impl Tx<'_> {
    pub fn session_insert(&self, s: &SessionRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        );
        self.conn().execute(
            &sql,
            params![
                s.id,
                s.user_id,
                s.created_at_ms,
                s.last_seen_at_ms,
                s.expires_at_ms,
                s.max_expires_at_ms,
                s.ip,
                s.user_agent,
                s.method,
                s.amr,
                s.mfa,
                s.cookie_hash,
                s.csrf_hash,
                s.revoked_at_ms
            ],
        )?;
        Ok(())
    }

    pub fn session_by_id(&self, id: &str) -> Result<Option<SessionRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1");
        Ok(self.conn().prepare_cached(&sql)?.query_row([id], from_row).optional()?)
    }

    pub fn session_by_cookie(&self, cookie_hash: &[u8; 32]) -> Result<Option<SessionRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE cookie_hash = ?1");
        Ok(self.conn().prepare_cached(&sql)?.query_row([&cookie_hash[..]], from_row).optional()?)
    }

    /// The user's live sessions, newest first.
    pub fn sessions_of_user(&self, user_id: &str, now_ms: i64) -> Result<Vec<SessionRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at DESC, id DESC"
        );
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map(params![user_id, now_ms], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Revoke one session; false when it was already revoked or does not exist.
    pub fn session_revoke(&self, id: &str, now_ms: i64, reason: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms, reason],
        )? == 1)
    }

    /// Revoke every live session of a user except `keep`; returns the ids revoked.
    pub fn sessions_revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now_ms: i64,
        reason: &str,
    ) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare(
            "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?4 \
             WHERE user_id = ?1 AND revoked_at IS NULL AND (?2 IS NULL OR id <> ?2) RETURNING id",
        )?;
        let rows = stmt.query_map(params![user_id, keep, now_ms, reason], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Sessions revoked since `since_ms` (their access tokens may still be unexpired).
    pub fn sessions_revoked_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, DbError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= ?1")?;
        let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn session_touch(&self, id: &str, now_ms: i64, expires_ms: i64, ip: Option<&str>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE sessions SET last_seen_at = ?2, expires_at = ?3, ip = coalesce(?4, ip) WHERE id = ?1",
            params![id, now_ms, expires_ms, ip],
        )?;
        Ok(())
    }

    /// Record a session's last use, never moving it backwards.
    pub fn session_seen(&self, id: &str, at_ms: i64, ip: Option<&str>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE sessions SET last_seen_at = ?2, ip = coalesce(?3, ip) WHERE id = ?1 AND last_seen_at < ?2",
            params![id, at_ms, ip],
        )?;
        Ok(())
    }

    /// Record that a session passed a second factor.
    pub fn session_set_mfa(&self, id: &str, amr: &str) -> Result<(), DbError> {
        self.conn().execute("UPDATE sessions SET mfa = 1, amr = ?2 WHERE id = ?1", params![id, amr])?;
        Ok(())
    }

    /// Remove sessions that ended (expired or revoked) before `before_ms`.
    pub fn sessions_purge(&self, before_ms: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute(
            "DELETE FROM sessions WHERE max_expires_at < ?1 OR expires_at < ?1 OR (revoked_at IS NOT NULL AND revoked_at < ?1)",
            [before_ms],
        )?)
    }

    pub fn refresh_insert(&self, hash: &[u8; 32], session_id: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?1, ?2, ?3)",
            params![&hash[..], session_id, now_ms],
        )?;
        Ok(())
    }

    pub fn refresh_lookup(&self, hash: &[u8; 32]) -> Result<Option<RefreshRow>, DbError> {
        Ok(self
            .conn()
            .query_row("SELECT session_id, used_at FROM refresh_tokens WHERE hash = ?1", [&hash[..]], |r| {
                Ok(RefreshRow { session_id: r.get(0)?, used_at_ms: r.get(1)? })
            })
            .optional()?)
    }

    /// Mark a refresh token used; false when it already was (a concurrent use).
    pub fn refresh_mark_used(&self, hash: &[u8; 32], now_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
            params![&hash[..], now_ms],
        )? == 1)
    }

    pub fn challenge_insert(&self, hash: &[u8; 32], user_id: &str, mode: &str, expires_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO login_challenges (hash, user_id, mode, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![&hash[..], user_id, mode, expires_ms],
        )?;
        Ok(())
    }

    pub fn challenge_lookup(&self, hash: &[u8; 32]) -> Result<Option<ChallengeRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT user_id, mode, expires_at, attempts FROM login_challenges WHERE hash = ?1",
                [&hash[..]],
                |r| {
                    Ok(ChallengeRow {
                        user_id: r.get(0)?,
                        mode: r.get(1)?,
                        expires_at_ms: r.get(2)?,
                        attempts: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Count one try at a challenge; false when it is used up, expired or gone.
    pub fn challenge_attempt(&self, hash: &[u8; 32], max: i64, now_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE login_challenges SET attempts = attempts + 1 WHERE hash = ?1 AND attempts < ?2 AND expires_at > ?3",
            params![&hash[..], max, now_ms],
        )? == 1)
    }

    pub fn challenge_delete(&self, hash: &[u8; 32]) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM login_challenges WHERE hash = ?1", [&hash[..]])?;
        Ok(())
    }

    pub fn challenges_purge(&self, now_ms: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute("DELETE FROM login_challenges WHERE expires_at <= ?1", [now_ms])?)
    }
}
