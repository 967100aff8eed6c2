//! SQL for the `audit_log` table. The chain itself is computed in `domain::audit`.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: String,
    pub hash: Vec<u8>,
}

const COLUMNS: &str = "seq, ts_ms, actor_type, actor_id, action, target, workspace_id, outcome, client_ip, user_agent, request_id, details, hash";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        ts_ms: r.get(1)?,
        actor_type: r.get(2)?,
        actor_id: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        workspace_id: r.get(6)?,
        outcome: r.get(7)?,
        client_ip: r.get(8)?,
        user_agent: r.get(9)?,
        request_id: r.get(10)?,
        details: r.get(11)?,
        hash: r.get(12)?,
    })
}

impl Tx<'_> {
    /// The sequence number and hash of the newest record.
    pub fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, DbError> {
        Ok(self
            .conn()
            .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn audit_insert(&self, a: &AuditRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        );
        self.conn().execute(
            &sql,
            params![
                a.seq,
                a.ts_ms,
                a.actor_type,
                a.actor_id,
                a.action,
                a.target,
                a.workspace_id,
                a.outcome,
                a.client_ip,
                a.user_agent,
                a.request_id,
                a.details,
                a.hash
            ],
        )?;
        Ok(())
    }

    /// Records with `seq > after`, oldest first, at most `limit`.
    pub fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
