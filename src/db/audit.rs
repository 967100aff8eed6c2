//! SQL for the `audit_log` table. The chain itself is computed in `domain::audit`.

use super::{DbError, Tx};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

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

/// The `meta` key that marks a purge in progress (migration 0005's delete trigger reads it).
const PURGING: &str = "audit.purging";

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
    /// The newest record's sequence number, hash and time.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, DbError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT seq, hash, ts_ms FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok(AuditHead { seq: r.get(0)?, hash: r.get(1)?, ts_ms: r.get(2)? }))
            .optional()?)
    }

    pub fn audit_insert(&self, a: &AuditRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        );
        self.conn().prepare_cached(&sql)?.execute(params![
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
        ])?;
        Ok(())
    }

    /// Records with `seq > after`, oldest first, at most `limit`.
    pub fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records matching `f`, newest first, below `before` (a cursor), at most `limit`.
    pub fn audit_query(&self, f: &AuditFilter, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let (mut clause, mut args) = f.clause();
        if let Some(b) = before {
            clause.push_str(" AND seq < ?");
            args.push(Value::Integer(b));
        }
        args.push(Value::Integer(limit));
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE {clause} ORDER BY seq DESC LIMIT ?");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records matching `f` above `after`, oldest first, at most `limit` (export).
    pub fn audit_query_forward(&self, f: &AuditFilter, after: i64, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let (mut clause, mut args) = f.clause();
        clause.push_str(" AND seq > ?");
        args.push(Value::Integer(after));
        args.push(Value::Integer(limit));
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE {clause} ORDER BY seq LIMIT ?");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The first sequence number recorded at or after `ts_ms` (times never go backwards).
    pub fn audit_seq_from(&self, ts_ms: i64) -> Result<Option<i64>, DbError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT seq FROM audit_log WHERE ts_ms >= ?1 ORDER BY ts_ms, seq LIMIT 1")?
            .query_row([ts_ms], |r| r.get(0))
            .optional()?)
    }

    /// The last sequence number recorded before `ts_ms`.
    pub fn audit_seq_before(&self, ts_ms: i64) -> Result<Option<i64>, DbError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT seq FROM audit_log WHERE ts_ms < ?1 ORDER BY ts_ms DESC, seq DESC LIMIT 1")?
            .query_row([ts_ms], |r| r.get(0))
            .optional()?)
    }

    /// The oldest record still present.
    pub fn audit_first_seq(&self) -> Result<Option<i64>, DbError> {
        Ok(self.conn().query_row("SELECT min(seq) FROM audit_log", [], |r| r.get(0))?)
    }

    /// Records older than `before_ms` after `after`, oldest first: what a purge may remove.
    pub fn audit_purge_candidates(
        &self,
        after: i64,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<PurgeCandidate>, DbError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, action, ts_ms, hash FROM audit_log WHERE seq > ?1 AND ts_ms < ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after, before_ms, limit], |r| {
            Ok(PurgeCandidate { seq: r.get(0)?, action: r.get(1)?, ts_ms: r.get(2)?, hash: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Delete records, keeping a stub (sequence number and hash) of each.
    pub fn audit_purge(&self, records: &[(i64, Vec<u8>)]) -> Result<(), DbError> {
        // The delete trigger lets rows go only while this mark is in `meta`.
        self.meta_set(PURGING, "1")?;
        {
            let mut del = self.conn().prepare_cached("DELETE FROM audit_log WHERE seq = ?1")?;
            let mut stub = self.conn().prepare_cached("INSERT INTO audit_purged (seq, hash) VALUES (?1, ?2)")?;
            for (seq, hash) in records {
                del.execute([seq])?;
                stub.execute(params![seq, hash])?;
            }
        }
        self.meta_delete(PURGING)?;
        Ok(())
    }

    /// The stub of a purged record.
    pub fn audit_stub(&self, seq: i64) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.conn().query_row("SELECT hash FROM audit_purged WHERE seq = ?1", [seq], |r| r.get(0)).optional()?)
    }

    /// Stubs above `after`, in order, at most `limit`.
    pub fn audit_stubs_page(&self, after: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>, DbError> {
        let mut stmt =
            self.conn().prepare_cached("SELECT seq, hash FROM audit_purged WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The largest stub sequence number.
    pub fn audit_last_stub(&self) -> Result<Option<i64>, DbError> {
        Ok(self.conn().query_row("SELECT max(seq) FROM audit_purged", [], |r| r.get(0))?)
    }

    /// Drop the stubs at or below `seq` (the chain's new base covers them).
    pub fn audit_stubs_drop_through(&self, seq: i64) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM audit_purged WHERE seq <= ?1", [seq])?;
        Ok(())
    }

    pub fn checkpoint_last(&self) -> Result<Option<CheckpointRow>, DbError> {
        let sql = format!("SELECT {CP_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1");
        Ok(self.conn().prepare_cached(&sql)?.query_row([], cp_from_row).optional()?)
    }

    /// Checkpoints with `id > after`, oldest first.
    pub fn checkpoints_page(&self, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, DbError> {
        let sql = format!("SELECT {CP_COLUMNS} FROM audit_checkpoints WHERE id > ?1 ORDER BY id LIMIT ?2");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, limit], cp_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Checkpoints with `id < before`, newest first.
    pub fn checkpoints_desc(&self, before: i64, limit: i64) -> Result<Vec<CheckpointRow>, DbError> {
        let sql = format!("SELECT {CP_COLUMNS} FROM audit_checkpoints WHERE id < ?1 ORDER BY id DESC LIMIT ?2");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![before, limit], cp_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn checkpoint_insert(&self, c: &CheckpointRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO audit_checkpoints ({CP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        );
        self.conn().execute(
            &sql,
            params![
                c.id,
                c.ts_ms,
                c.seq,
                c.head_hash,
                c.base_seq,
                c.base_hash,
                c.purged_count,
                c.purged_digest,
                c.prev,
                c.reason,
                c.key_id,
                c.signature
            ],
        )?;
        Ok(())
    }
}

/// The newest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub ts_ms: i64,
}

/// A record a purge may remove.
#[derive(Debug, Clone)]
pub struct PurgeCandidate {
    pub seq: i64,
    pub action: String,
    pub ts_ms: i64,
    pub hash: Vec<u8>,
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub id: i64,
    pub ts_ms: i64,
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub base_seq: i64,
    pub base_hash: Vec<u8>,
    pub purged_count: i64,
    pub purged_digest: Vec<u8>,
    pub prev: Vec<u8>,
    pub reason: String,
    pub key_id: String,
    pub signature: Vec<u8>,
}

const CP_COLUMNS: &str =
    "id, ts_ms, seq, head_hash, base_seq, base_hash, purged_count, purged_digest, prev, reason, key_id, signature";

fn cp_from_row(r: &Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        id: r.get(0)?,
        ts_ms: r.get(1)?,
        seq: r.get(2)?,
        head_hash: r.get(3)?,
        base_seq: r.get(4)?,
        base_hash: r.get(5)?,
        purged_count: r.get(6)?,
        purged_digest: r.get(7)?,
        prev: r.get(8)?,
        reason: r.get(9)?,
        key_id: r.get(10)?,
        signature: r.get(11)?,
    })
}

/// Who a query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorFilter {
    /// `system`, `operator` or `anonymous`.
    Type(String),
    /// An id; a user id also matches that user's personal access tokens (`user/token`).
    Id(String),
}

/// The filters of an audit query, already validated. Time bounds are given both as times and
/// as the sequence range they cover (records' times never go backwards), so that every filter
/// is an index range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub min_seq: Option<i64>,
    pub max_seq: Option<i64>,
    pub actor: Option<ActorFilter>,
    /// A category (`auth.`) or a name with everything below it.
    pub action_prefix: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<String>,
    pub client_ip: Option<String>,
    pub workspace_id: Option<String>,
}

impl AuditFilter {
    fn clause(&self) -> (String, Vec<Value>) {
        let mut sql = String::from("1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut add = |cond: &str, vals: Vec<Value>| {
            sql.push_str(" AND ");
            sql.push_str(cond);
            args.extend(vals);
        };
        if let Some(v) = self.since_ms {
            add("ts_ms >= ?", vec![Value::Integer(v)]);
        }
        if let Some(v) = self.until_ms {
            add("ts_ms < ?", vec![Value::Integer(v)]);
        }
        if let Some(v) = self.min_seq {
            add("seq >= ?", vec![Value::Integer(v)]);
        }
        if let Some(v) = self.max_seq {
            add("seq <= ?", vec![Value::Integer(v)]);
        }
        match &self.actor {
            Some(ActorFilter::Type(t)) => add("actor_type = ?", vec![Value::Text(t.clone())]),
            Some(ActorFilter::Id(id)) => add(
                "(actor_id = ? OR (actor_id >= ? AND actor_id < ?))",
                vec![Value::Text(id.clone()), Value::Text(format!("{id}/")), Value::Text(format!("{id}0"))],
            ),
            None => {}
        }
        if let Some(p) = &self.action_prefix {
            if let Some(cat) = p.strip_suffix('.') {
                add("action >= ? AND action < ?", vec![Value::Text(format!("{cat}.")), Value::Text(format!("{cat}/"))]);
            } else {
                add(
                    "(action = ? OR (action >= ? AND action < ?))",
                    vec![Value::Text(p.clone()), Value::Text(format!("{p}.")), Value::Text(format!("{p}/"))],
                );
            }
        }
        if let Some(v) = &self.target {
            add("target = ?", vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.outcome {
            add("outcome = ?", vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.client_ip {
            add("client_ip = ?", vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.workspace_id {
            add("workspace_id = ?", vec![Value::Text(v.clone())]);
        }
        (sql, args)
    }
}
