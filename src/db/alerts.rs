//! SQL for `security_alerts` (alerts raised by the monitor, their acknowledgement and webhook
//! delivery state) and `pat_ips` (the addresses each personal access token was used from).
//! Deciding when an alert is raised, and what is delivered, is `domain::monitoring`'s job.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

/// One stored alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub key: String,
    pub count: i64,
    pub window_seconds: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// JSON object.
    pub details: String,
    pub created_at_ms: i64,
    pub status: String,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_note: Option<String>,
    pub delivery_status: String,
    pub delivery_attempts: i64,
    pub delivery_next_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub delivery_last_error: Option<String>,
}

const COLUMNS: &str = "id, rule, severity, key, count, window_seconds, first_seq, last_seq, details, created_at, \
     status, acknowledged_by, acknowledged_at, acknowledged_note, delivery_status, delivery_attempts, \
     delivery_next_at, delivered_at, delivery_last_error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        rule: r.get(1)?,
        severity: r.get(2)?,
        key: r.get(3)?,
        count: r.get(4)?,
        window_seconds: r.get(5)?,
        first_seq: r.get(6)?,
        last_seq: r.get(7)?,
        details: r.get(8)?,
        created_at_ms: r.get(9)?,
        status: r.get(10)?,
        acknowledged_by: r.get(11)?,
        acknowledged_at_ms: r.get(12)?,
        acknowledged_note: r.get(13)?,
        delivery_status: r.get(14)?,
        delivery_attempts: r.get(15)?,
        delivery_next_at_ms: r.get(16)?,
        delivered_at_ms: r.get(17)?,
        delivery_last_error: r.get(18)?,
    })
}

/// Filters of an alert list; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<String>,
    pub rule: Option<String>,
    /// Created at or after (ms).
    pub since_ms: Option<i64>,
    /// Created before (ms).
    pub until_ms: Option<i64>,
    /// Strictly older than this `(created_at, id)`: the page cursor.
    pub before: Option<(i64, String)>,
}

impl Tx<'_> {
    pub fn alert_insert(&self, a: &AlertRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO security_alerts ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        );
        self.conn().execute(
            &sql,
            params![
                a.id,
                a.rule,
                a.severity,
                a.key,
                a.count,
                a.window_seconds,
                a.first_seq,
                a.last_seq,
                a.details,
                a.created_at_ms,
                a.status,
                a.acknowledged_by,
                a.acknowledged_at_ms,
                a.acknowledged_note,
                a.delivery_status,
                a.delivery_attempts,
                a.delivery_next_at_ms,
                a.delivered_at_ms,
                a.delivery_last_error
            ],
        )?;
        Ok(())
    }

    pub fn alert(&self, id: &str) -> Result<Option<AlertRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM security_alerts WHERE id = ?1");
        Ok(self.conn().query_row(&sql, [id], from_row).optional()?)
    }

    /// Newest first, at most `limit`.
    pub fn alerts_page(&self, f: &AlertFilter, limit: i64) -> Result<Vec<AlertRow>, DbError> {
        let (before_ts, before_id) = match &f.before {
            Some((t, i)) => (Some(*t), Some(i.as_str())),
            None => (None, None),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM security_alerts \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR rule = ?2) \
             AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4) \
             AND (?5 IS NULL OR created_at < ?5 OR (created_at = ?5 AND id < ?6)) \
             ORDER BY created_at DESC, id DESC LIMIT ?7"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows =
            stmt.query_map(params![f.status, f.rule, f.since_ms, f.until_ms, before_ts, before_id, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Mark an open alert acknowledged. `false` when it is not open (or does not exist).
    pub fn alert_acknowledge(&self, id: &str, by: &str, at_ms: i64, note: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE security_alerts SET status = 'acknowledged', acknowledged_by = ?2, acknowledged_at = ?3, \
             acknowledged_note = ?4 WHERE id = ?1 AND status = 'open'",
            params![id, by, at_ms, note],
        )? == 1)
    }

    /// Alerts whose webhook delivery is due at `now_ms`, oldest first.
    pub fn alerts_due(&self, now_ms: i64, limit: i64) -> Result<Vec<AlertRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM security_alerts WHERE delivery_status = 'pending' \
             AND delivery_next_at <= ?1 ORDER BY delivery_next_at, id LIMIT ?2"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now_ms, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Record a delivery attempt's outcome.
    pub fn alert_delivery(
        &self,
        id: &str,
        status: &str,
        attempts: i64,
        next_at_ms: Option<i64>,
        delivered_at_ms: Option<i64>,
        last_error: Option<&str>,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE security_alerts SET delivery_status = ?2, delivery_attempts = ?3, delivery_next_at = ?4, \
             delivered_at = ?5, delivery_last_error = ?6 WHERE id = ?1",
            params![id, status, attempts, next_at_ms, delivered_at_ms, last_error],
        )?;
        Ok(())
    }

    /// Remember that a token was used from `ip`; `Some(known)` (how many addresses it was used
    /// from before) when the address is new, `None` when it was seen already or the token is gone.
    pub fn pat_ip_first_seen(&self, id: &str, ip: &str, at_ms: i64) -> Result<Option<i64>, DbError> {
        let known: i64 =
            self.conn().query_row("SELECT count(*) FROM pat_ips WHERE token_id = ?1", [id], |r| r.get(0))?;
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO pat_ips (token_id, ip, first_seen_at) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM personal_access_tokens WHERE id = ?1)",
            params![id, ip, at_ms],
        )? > 0;
        Ok(inserted.then_some(known))
    }
}
