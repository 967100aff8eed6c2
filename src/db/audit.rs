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

/// The `meta` key that marks a purge in progress (the delete triggers of migrations 0005 and
/// 0008 read it).
const PURGING: &str = "audit.purging";

/// The `meta` key holding the last sequence number written to `audit_index` (migration 0008).
const INDEXED_THROUGH: &str = "audit.indexed_through";

/// `audit_index.block` is a record's sequence number shifted right by this many bits: entries
/// are grouped by block of 65,536 records first, then by key. The indexer's writes then stay
/// within the newest block's pages, however long the log; a query reads each block of its range
/// in turn, newest first.
/// (Unit tests use blocks of 32 records, so that a few hundred records span many.)
const BLOCK_BITS: u32 = if cfg!(test) { 5 } else { 16 };

fn block_of(seq: i64) -> i64 {
    seq >> BLOCK_BITS
}

/// Sequence order of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    NewestFirst,
    OldestFirst,
}

impl Order {
    fn sql(self) -> &'static str {
        match self {
            Order::NewestFirst => "DESC",
            Order::OldestFirst => "ASC",
        }
    }
}

/// `audit_index.kind` (migration 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum IndexKind {
    Actor = 1,
    Action = 2,
    Target = 3,
    Workspace = 4,
    Ip = 5,
}

/// The columns of a record that `audit_index` keys.
struct IndexedColumns {
    actor_id: Option<String>,
    action: String,
    target: Option<String>,
    workspace_id: Option<String>,
    client_ip: Option<String>,
}

impl IndexedColumns {
    /// Call `f` with each key of the record. An actor id is also found under each part of it
    /// before a '/', an action under each part before a '.': the key a filter looks up (see
    /// [`AuditFilter::index_keys`]) then holds every record the filter can match.
    fn for_each_key(&self, mut f: impl FnMut(IndexKind, &str)) {
        let mut with_parts = |kind: IndexKind, value: &str, sep: char| {
            for (at, _) in value.match_indices(sep) {
                f(kind, &value[..at]);
            }
            f(kind, value);
        };
        if let Some(a) = &self.actor_id {
            with_parts(IndexKind::Actor, a, '/');
        }
        with_parts(IndexKind::Action, &self.action, '.');
        if let Some(t) = &self.target {
            f(IndexKind::Target, t);
        }
        if let Some(w) = &self.workspace_id {
            f(IndexKind::Workspace, w);
        }
        if let Some(ip) = &self.client_ip {
            f(IndexKind::Ip, ip);
        }
    }
}

const COLUMNS: &str = "seq, ts_ms, actor_type, actor_id, action, target, workspace_id, outcome, client_ip, user_agent, request_id, details, hash";

/// The records in a sequence range (`?`, `?`) that match `clause`, at most `?`. NOT INDEXED:
/// the range of the rowid leads, never the time index.
fn scan_sql(clause: &str, order: Order) -> String {
    format!(
        "SELECT {COLUMNS} FROM audit_log NOT INDEXED WHERE seq >= ? AND seq <= ? AND {clause} ORDER BY seq {} LIMIT ?",
        order.sql()
    )
}

/// The records of one block (`?`) filed under one key (`?`, `?`) in a sequence range (`?`,
/// `?`) that match `clause` (over `l.`), at most `?`. CROSS JOIN keeps the index entries as the
/// outer loop, so that they come in sequence order and the query stops at the limit.
fn indexed_sql(clause: &str, order: Order) -> String {
    let columns = COLUMNS.split(", ").map(|c| format!("l.{c}")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {columns} FROM audit_index AS i CROSS JOIN audit_log AS l NOT INDEXED \
         WHERE i.block = ? AND i.kind = ? AND i.key = ? AND i.seq >= ? AND i.seq <= ? AND l.seq = i.seq \
         AND {clause} ORDER BY i.seq {} LIMIT ?",
        order.sql()
    )
}

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
        let hi = before.map_or(i64::MAX, |b| b.saturating_sub(1));
        self.audit_select(f, i64::MIN, hi, Order::NewestFirst, limit)
    }

    /// Records matching `f` above `after`, oldest first, at most `limit` (export).
    pub fn audit_query_forward(&self, f: &AuditFilter, after: i64, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        self.audit_select(f, after.saturating_add(1), i64::MAX, Order::OldestFirst, limit)
    }

    /// Records matching `f` with a sequence number in `lo..=hi`, in `order`, at most `limit`.
    /// Up to the indexer's watermark, the filter's keys in `audit_index` lead (block by block,
    /// the one with the fewest entries); above it, the few records not yet indexed are scanned.
    /// Both parts test every filter on the record itself.
    fn audit_select(
        &self,
        f: &AuditFilter,
        lo: i64,
        hi: i64,
        order: Order,
        limit: i64,
    ) -> Result<Vec<AuditRow>, DbError> {
        let lo = lo.max(f.min_seq.unwrap_or(i64::MIN));
        let hi = hi.min(f.max_seq.unwrap_or(i64::MAX));
        if lo > hi || limit <= 0 {
            return Ok(Vec::new());
        }
        let keys = f.index_keys();
        if keys.is_empty() {
            return self.audit_scan(f, lo, hi, order, limit);
        }
        let watermark = self.audit_indexed_through()?;
        let indexed = (lo, hi.min(watermark));
        let tail = (lo.max(watermark.saturating_add(1)), hi);
        let scan_tail = |n: i64| {
            if tail.0 > tail.1 || n <= 0 {
                return Ok(Vec::new());
            }
            self.audit_scan(f, tail.0, tail.1, order, n)
        };
        let scan_indexed = |n: i64| {
            if indexed.0 > indexed.1 || n <= 0 {
                return Ok(Vec::new());
            }
            self.audit_scan_indexed(f, &keys, indexed.0, indexed.1, order, n)
        };
        // The tail holds the newest records: first when newest first, last otherwise.
        let mut rows = match order {
            Order::NewestFirst => scan_tail(limit)?,
            Order::OldestFirst => scan_indexed(limit)?,
        };
        let rest = limit - rows.len() as i64;
        rows.extend(match order {
            Order::NewestFirst => scan_indexed(rest)?,
            Order::OldestFirst => scan_tail(rest)?,
        });
        Ok(rows)
    }

    /// `audit_log` in sequence order over `lo..=hi`, every filter tested on the row.
    fn audit_scan(
        &self,
        f: &AuditFilter,
        lo: i64,
        hi: i64,
        order: Order,
        limit: i64,
    ) -> Result<Vec<AuditRow>, DbError> {
        let (clause, mut args) = f.clause("");
        let mut all = vec![Value::Integer(lo), Value::Integer(hi)];
        all.append(&mut args);
        all.push(Value::Integer(limit));
        let mut stmt = self.conn().prepare_cached(&scan_sql(&clause, order))?;
        let rows = stmt.query_map(params_from_iter(all), from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The records over `lo..=hi` filed in `audit_index` under one of `keys` (in each block, the
    /// key with the fewest entries leads), in sequence order, block after block until `limit`;
    /// each record read and every filter tested on it.
    fn audit_scan_indexed(
        &self,
        f: &AuditFilter,
        keys: &[(IndexKind, &str)],
        lo: i64,
        hi: i64,
        order: Order,
        limit: i64,
    ) -> Result<Vec<AuditRow>, DbError> {
        // Blocks below the oldest record (gone by retention) hold nothing.
        let Some(first) = self.audit_first_seq()? else { return Ok(Vec::new()) };
        let lo = lo.max(first);
        if lo > hi {
            return Ok(Vec::new());
        }
        let (clause, args) = f.clause("l.");
        let mut stmt = self.conn().prepare_cached(&indexed_sql(&clause, order))?;
        let blocks = block_of(lo)..=block_of(hi);
        let blocks: Box<dyn Iterator<Item = i64>> = match order {
            Order::NewestFirst => Box::new(blocks.rev()),
            Order::OldestFirst => Box::new(blocks),
        };
        let mut rows = Vec::new();
        for block in blocks {
            let (from, to) = (lo.max(block << BLOCK_BITS), hi.min(((block + 1) << BLOCK_BITS) - 1));
            let (kind, key) = self.audit_lead_key(keys, block, from, to)?;
            let mut all = vec![
                Value::Integer(block),
                Value::Integer(kind as i64),
                Value::Text(key.to_string()),
                Value::Integer(from),
                Value::Integer(to),
            ];
            all.extend(args.iter().cloned());
            all.push(Value::Integer(limit - rows.len() as i64));
            let found = stmt.query_map(params_from_iter(all), from_row)?;
            for row in found {
                rows.push(row?);
            }
            if rows.len() as i64 >= limit {
                break;
            }
        }
        Ok(rows)
    }

    /// Of the filter's keys, the one with the fewest entries in `block` over `from..=to`
    /// (counted up to a bound: past it any of them leads well enough).
    fn audit_lead_key<'k>(
        &self,
        keys: &[(IndexKind, &'k str)],
        block: i64,
        from: i64,
        to: i64,
    ) -> Result<(IndexKind, &'k str), DbError> {
        const COUNT_UP_TO: i64 = 256;
        let mut best: Option<((IndexKind, &'k str), i64)> = None;
        if keys.len() > 1 {
            let mut stmt = self.conn().prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM audit_index \
                 WHERE block = ?1 AND kind = ?2 AND key = ?3 AND seq >= ?4 AND seq <= ?5 LIMIT ?6)",
            )?;
            for &(kind, key) in keys {
                let n: i64 = stmt.query_row(params![block, kind as i64, key, from, to, COUNT_UP_TO], |r| r.get(0))?;
                if best.is_none_or(|(_, b)| n < b) {
                    best = Some(((kind, key), n));
                }
            }
        }
        match (best, keys.first()) {
            (Some((k, _)), _) => Ok(k),
            (None, Some(&k)) => Ok(k),
            (None, None) => Err(DbError::Sqlite("an indexed audit query without a key".into())),
        }
    }

    /// The last sequence number the indexer wrote to `audit_index` (0 before the first).
    pub fn audit_indexed_through(&self) -> Result<i64, DbError> {
        match self.meta_get(INDEXED_THROUGH)? {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| DbError::Sqlite(format!("meta {INDEXED_THROUGH} holds {v:?}, not a sequence number"))),
        }
    }

    /// Index the records after the watermark, at most `max` of them, in one batch sorted by key,
    /// and move the watermark past them. Returns the new watermark and how many were indexed.
    pub fn audit_index_pending(&self, max: i64) -> Result<(i64, i64), DbError> {
        let watermark = self.audit_indexed_through()?;
        let mut entries: Vec<(i64, IndexKind, String, i64)> = Vec::new();
        let mut last = watermark;
        let mut count = 0;
        {
            let mut stmt = self.conn().prepare_cached(
                "SELECT seq, actor_id, action, target, workspace_id, client_ip FROM audit_log \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![watermark, max])?;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let keys = IndexedColumns {
                    actor_id: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    workspace_id: r.get(4)?,
                    client_ip: r.get(5)?,
                };
                keys.for_each_key(|kind, key| entries.push((block_of(seq), kind, key.to_string(), seq)));
                last = seq;
                count += 1;
            }
        }
        if count == 0 {
            return Ok((watermark, 0));
        }
        // In key order, a batch dirties each leaf page of audit_index once.
        entries.sort_unstable();
        let mut insert = self
            .conn()
            .prepare_cached("INSERT OR IGNORE INTO audit_index (block, kind, key, seq) VALUES (?1, ?2, ?3, ?4)")?;
        for (block, kind, key, seq) in &entries {
            insert.execute(params![block, *kind as i64, key, seq])?;
        }
        self.meta_set(INDEXED_THROUGH, &last.to_string())?;
        Ok((last, count))
    }

    /// Index every record present (migration 0008).
    pub(super) fn audit_index_backfill(&self) -> Result<(), DbError> {
        while self.audit_index_pending(50_000)?.1 > 0 {}
        Ok(())
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
        Ok(self.conn().prepare_cached("SELECT min(seq) FROM audit_log")?.query_row([], |r| r.get(0))?)
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

    /// Delete records, keeping a stub (sequence number and hash) of each, and their entries in
    /// `audit_index`.
    pub fn audit_purge(&self, records: &[(i64, Vec<u8>)]) -> Result<(), DbError> {
        // The delete triggers let rows go only while this mark is in `meta`.
        self.meta_set(PURGING, "1")?;
        let watermark = self.audit_indexed_through()?;
        {
            let mut read = self.conn().prepare_cached(
                "SELECT actor_id, action, target, workspace_id, client_ip FROM audit_log WHERE seq = ?1",
            )?;
            let mut unindex = self
                .conn()
                .prepare_cached("DELETE FROM audit_index WHERE block = ?1 AND kind = ?2 AND key = ?3 AND seq = ?4")?;
            let mut del = self.conn().prepare_cached("DELETE FROM audit_log WHERE seq = ?1")?;
            let mut stub = self.conn().prepare_cached("INSERT INTO audit_purged (seq, hash) VALUES (?1, ?2)")?;
            for (seq, hash) in records {
                if *seq <= watermark {
                    let keys = read
                        .query_row([seq], |r| {
                            Ok(IndexedColumns {
                                actor_id: r.get(0)?,
                                action: r.get(1)?,
                                target: r.get(2)?,
                                workspace_id: r.get(3)?,
                                client_ip: r.get(4)?,
                            })
                        })
                        .optional()?;
                    if let Some(keys) = keys {
                        let mut failed = None;
                        keys.for_each_key(|kind, key| {
                            if failed.is_none() {
                                failed = unindex.execute(params![block_of(*seq), kind as i64, key, seq]).err();
                            }
                        });
                        if let Some(e) = failed {
                            return Err(e.into());
                        }
                    }
                }
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
        // Read at every append: prepared once.
        Ok(self.conn().prepare_cached("SELECT max(seq) FROM audit_purged")?.query_row([], |r| r.get(0))?)
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
/// as the sequence range they cover (records' times never go backwards), so that a time range
/// is a range of the rowid and of `audit_index`.
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
    /// The `audit_index` keys that hold every record this filter can match, one per indexed
    /// filter, most selective kinds first. An actor id finds its own records and those of its
    /// personal access tokens (`id/…`); an action prefix `auth.` or `auth.login` the records
    /// filed under that part of their name. Empty when no filter has a key (time, outcome, an
    /// actor type): such a query reads the log in sequence order.
    fn index_keys(&self) -> Vec<(IndexKind, &str)> {
        let mut keys = Vec::new();
        if let Some(t) = &self.target {
            keys.push((IndexKind::Target, t.as_str()));
        }
        if let Some(ip) = &self.client_ip {
            keys.push((IndexKind::Ip, ip.as_str()));
        }
        if let Some(ActorFilter::Id(id)) = &self.actor {
            keys.push((IndexKind::Actor, id.as_str()));
        }
        if let Some(w) = &self.workspace_id {
            keys.push((IndexKind::Workspace, w.as_str()));
        }
        if let Some(p) = &self.action_prefix {
            keys.push((IndexKind::Action, p.strip_suffix('.').unwrap_or(p)));
        }
        keys
    }

    /// The filter as SQL over `audit_log`'s columns, each named with `table` in front (`l.` or
    /// nothing), and its arguments.
    fn clause(&self, table: &str) -> (String, Vec<Value>) {
        let mut sql = String::from("1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut add = |cond: String, vals: Vec<Value>| {
            sql.push_str(" AND ");
            sql.push_str(&cond);
            args.extend(vals);
        };
        let t = table;
        if let Some(v) = self.since_ms {
            add(format!("{t}ts_ms >= ?"), vec![Value::Integer(v)]);
        }
        if let Some(v) = self.until_ms {
            add(format!("{t}ts_ms < ?"), vec![Value::Integer(v)]);
        }
        if let Some(v) = self.min_seq {
            add(format!("{t}seq >= ?"), vec![Value::Integer(v)]);
        }
        if let Some(v) = self.max_seq {
            add(format!("{t}seq <= ?"), vec![Value::Integer(v)]);
        }
        match &self.actor {
            Some(ActorFilter::Type(ty)) => add(format!("{t}actor_type = ?"), vec![Value::Text(ty.clone())]),
            Some(ActorFilter::Id(id)) => add(
                format!("({t}actor_id = ? OR ({t}actor_id >= ? AND {t}actor_id < ?))"),
                vec![Value::Text(id.clone()), Value::Text(format!("{id}/")), Value::Text(format!("{id}0"))],
            ),
            None => {}
        }
        if let Some(p) = &self.action_prefix {
            if let Some(cat) = p.strip_suffix('.') {
                add(
                    format!("{t}action >= ? AND {t}action < ?"),
                    vec![Value::Text(format!("{cat}.")), Value::Text(format!("{cat}/"))],
                );
            } else {
                add(
                    format!("({t}action = ? OR ({t}action >= ? AND {t}action < ?))"),
                    vec![Value::Text(p.clone()), Value::Text(format!("{p}.")), Value::Text(format!("{p}/"))],
                );
            }
        }
        if let Some(v) = &self.target {
            add(format!("{t}target = ?"), vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.outcome {
            add(format!("{t}outcome = ?"), vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.client_ip {
            add(format!("{t}client_ip = ?"), vec![Value::Text(v.clone())]);
        }
        if let Some(v) = &self.workspace_id {
            add(format!("{t}workspace_id = ?"), vec![Value::Text(v.clone())]);
        }
        (sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn open() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate::run(&mut conn, "mem").unwrap();
        conn
    }

    /// Records with every shape a filter distinguishes: ids that are prefixes of others (`u1`,
    /// `u10`, `u1/t1`), actions at every depth and a category that starts like another
    /// (`door`, `doorz`), absent values.
    fn fill(tx: &Tx<'_>, n: i64) {
        let actors: [(&str, Option<&str>); 8] = [
            ("system", None),
            ("anonymous", None),
            ("user", Some("u1")),
            ("user", Some("u10")),
            ("user", Some("u2")),
            ("token", Some("u1/t1")),
            ("token", Some("u1/t2")),
            ("api_key", Some("k1")),
        ];
        // A made-up category: a real one's names would read as events the catalogue lacks.
        let actions = ["door.lock.failed", "door.lock", "door", "door.unlock", "doorz.x", "api.read", "a.b.c.d"];
        let targets = [None, Some("t1"), Some("t10"), Some("t2")];
        let workspaces = [None, Some("w1"), Some("w2")];
        let ips = [None, Some("10.0.0.1"), Some("10.0.0.10"), Some("::1"), Some("10.0.0.1")];
        let outcomes = ["success", "failure", "denied"];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pick = |len: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % len as u64) as usize
        };
        for seq in 1..=n {
            let (actor_type, actor_id) = actors[pick(actors.len())];
            tx.audit_insert(&AuditRow {
                seq,
                ts_ms: 1_000 + seq / 3 * 10,
                actor_type: actor_type.into(),
                actor_id: actor_id.map(Into::into),
                action: actions[pick(actions.len())].into(),
                target: targets[pick(targets.len())].map(Into::into),
                workspace_id: workspaces[pick(workspaces.len())].map(Into::into),
                outcome: outcomes[pick(outcomes.len())].into(),
                client_ip: ips[pick(ips.len())].map(Into::into),
                user_agent: None,
                request_id: None,
                details: "{}".into(),
                hash: vec![0; 32],
            })
            .unwrap();
        }
    }

    /// One filter per field value worth telling apart, then pairs of different fields.
    fn filters() -> Vec<AuditFilter> {
        let base = AuditFilter::default;
        let mut single: Vec<(usize, AuditFilter)> = Vec::new();
        for id in ["u1", "u10", "u1/t1", "k1", "nobody"] {
            single.push((0, AuditFilter { actor: Some(ActorFilter::Id(id.into())), ..base() }));
        }
        for ty in ["system", "anonymous"] {
            single.push((0, AuditFilter { actor: Some(ActorFilter::Type(ty.into())), ..base() }));
        }
        for p in ["door.", "door", "door.lock", "door.lock.", "doorz.", "a.b.", "a.b.c.d", "api.read", "zz."] {
            single.push((1, AuditFilter { action_prefix: Some(p.into()), ..base() }));
        }
        for t in ["t1", "t10"] {
            single.push((2, AuditFilter { target: Some(t.into()), ..base() }));
        }
        for w in ["w1", "w2"] {
            single.push((3, AuditFilter { workspace_id: Some(w.into()), ..base() }));
        }
        for ip in ["10.0.0.1", "::1"] {
            single.push((4, AuditFilter { client_ip: Some(ip.into()), ..base() }));
        }
        single.push((5, AuditFilter { outcome: Some("failure".into()), ..base() }));
        single.push((6, AuditFilter { since_ms: Some(1_300), until_ms: Some(1_900), ..base() }));
        single.push((6, AuditFilter { min_seq: Some(50), max_seq: Some(420), ..base() }));
        let mut all: Vec<AuditFilter> = vec![base()];
        all.extend(single.iter().map(|(_, f)| f.clone()));
        for (i, (ka, a)) in single.iter().enumerate() {
            for (kb, b) in &single[i + 1..] {
                if ka == kb {
                    continue;
                }
                all.push(AuditFilter {
                    since_ms: a.since_ms.or(b.since_ms),
                    until_ms: a.until_ms.or(b.until_ms),
                    min_seq: a.min_seq.or(b.min_seq),
                    max_seq: a.max_seq.or(b.max_seq),
                    actor: a.actor.clone().or(b.actor.clone()),
                    action_prefix: a.action_prefix.clone().or(b.action_prefix.clone()),
                    target: a.target.clone().or(b.target.clone()),
                    outcome: a.outcome.clone().or(b.outcome.clone()),
                    client_ip: a.client_ip.clone().or(b.client_ip.clone()),
                    workspace_id: a.workspace_id.clone().or(b.workspace_id.clone()),
                });
            }
        }
        all
    }

    /// What the query answered before `audit_index`: the filter on the whole table.
    fn reference(tx: &Tx<'_>, f: &AuditFilter) -> Vec<AuditRow> {
        let (clause, args) = f.clause("");
        let sql = format!("SELECT {COLUMNS} FROM audit_log NOT INDEXED WHERE {clause} ORDER BY seq DESC");
        let mut stmt = tx.conn().prepare(&sql).unwrap();
        let rows = stmt.query_map(params_from_iter(args), from_row).unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap()
    }

    fn seqs(rows: &[AuditRow]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    fn pages_newest_first(tx: &Tx<'_>, f: &AuditFilter, limit: i64) -> Vec<AuditRow> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let page = tx.audit_query(f, before, limit).unwrap();
            assert!(page.len() as i64 <= limit);
            let full = page.len() as i64 == limit;
            before = page.last().map(|r| r.seq);
            out.extend(page);
            if !full {
                return out;
            }
        }
    }

    fn pages_oldest_first(tx: &Tx<'_>, f: &AuditFilter, limit: i64) -> Vec<AuditRow> {
        let mut out: Vec<AuditRow> = Vec::new();
        loop {
            let after = out.last().map_or(0, |r| r.seq);
            let page = tx.audit_query_forward(f, after, limit).unwrap();
            let full = page.len() as i64 == limit;
            out.extend(page);
            if !full {
                return out;
            }
        }
    }

    /// Wherever the watermark stands (nothing indexed, part, all), every filter gives the
    /// records the plain filter gives, in the same order, page after page, both ways.
    #[test]
    fn queries_answer_the_same_across_the_watermark() {
        let conn = open();
        let tx = Tx { conn: &conn };
        fill(&tx, 600);
        let filters = filters();
        assert!(filters.len() > 250, "{}", filters.len());
        let mut matched = 0;
        for indexed_now in [0, 1, 237, 362, 0] {
            if indexed_now > 0 {
                tx.audit_index_pending(indexed_now).unwrap();
            }
            let watermark = tx.audit_indexed_through().unwrap();
            for f in &filters {
                let expected = reference(&tx, f);
                matched += expected.len();
                for limit in [1, 7, 1000] {
                    let got = pages_newest_first(&tx, f, limit);
                    assert_eq!(
                        seqs(&got),
                        seqs(&expected),
                        "newest first, limit {limit}, watermark {watermark}: {f:?}"
                    );
                    assert!(got == expected);
                }
                let mut forward = expected.clone();
                forward.reverse();
                let got = pages_oldest_first(&tx, f, 7);
                assert_eq!(seqs(&got), seqs(&forward), "oldest first, watermark {watermark}: {f:?}");
                assert!(got == forward);
            }
        }
        assert_eq!(tx.audit_indexed_through().unwrap(), 600);
        assert!(matched > 10_000, "the filters match too little to tell anything: {matched}");
        // A cursor in the middle of the indexed part, and one in the tail.
        fill_more(&tx, 601, 40);
        let f = AuditFilter { client_ip: Some("10.0.0.1".into()), ..AuditFilter::default() };
        for before in [620, 601, 300, 2] {
            let expected: Vec<AuditRow> = reference(&tx, &f).into_iter().filter(|r| r.seq < before).take(5).collect();
            assert_eq!(seqs(&tx.audit_query(&f, Some(before), 5).unwrap()), seqs(&expected), "before {before}");
        }
    }

    fn fill_more(tx: &Tx<'_>, from: i64, n: i64) {
        for seq in from..from + n {
            tx.audit_insert(&AuditRow {
                seq,
                ts_ms: 10_000 + seq,
                actor_type: "user".into(),
                actor_id: Some("u1".into()),
                action: "auth.login.failed".into(),
                target: None,
                workspace_id: None,
                outcome: "failure".into(),
                client_ip: Some("10.0.0.1".into()),
                user_agent: None,
                request_id: None,
                details: "{}".into(),
                hash: vec![1; 32],
            })
            .unwrap();
        }
    }

    fn index_table(tx: &Tx<'_>) -> Vec<(i64, String, i64)> {
        let mut stmt = tx.conn().prepare("SELECT kind, key, seq FROM audit_index ORDER BY kind, key, seq").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap()
    }

    #[test]
    fn a_record_is_filed_under_each_part_of_its_actor_and_action() {
        let conn = open();
        let tx = Tx { conn: &conn };
        tx.audit_insert(&AuditRow {
            seq: 1,
            ts_ms: 1,
            actor_type: "token".into(),
            actor_id: Some("u1/t1".into()),
            action: "door.lock.failed".into(),
            target: Some("t".into()),
            workspace_id: Some("w".into()),
            outcome: "failure".into(),
            client_ip: Some("::1".into()),
            user_agent: Some("ua".into()),
            request_id: Some("r".into()),
            details: "{}".into(),
            hash: vec![0; 32],
        })
        .unwrap();
        assert_eq!(tx.audit_index_pending(100).unwrap(), (1, 1));
        let got: Vec<(i64, String)> = index_table(&tx).into_iter().map(|(k, key, _)| (k, key)).collect();
        let want: Vec<(i64, String)> = [
            (1, "u1"),
            (1, "u1/t1"),
            (2, "door"),
            (2, "door.lock"),
            (2, "door.lock.failed"),
            (3, "t"),
            (4, "w"),
            (5, "::1"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(tx.audit_index_pending(100).unwrap(), (1, 0));
    }

    /// A purge deletes the entries of the records it deletes, indexed or not yet; nothing else
    /// may delete or change an entry.
    #[test]
    fn a_purge_removes_the_entries_of_its_records_and_only_a_purge_may() {
        let conn = open();
        let tx = Tx { conn: &conn };
        fill(&tx, 300);
        let everything = index_table(&tx);
        assert!(everything.is_empty());
        tx.audit_index_pending(200).unwrap();
        let doomed: Vec<(i64, Vec<u8>)> =
            (1..=300).filter(|s| s % 3 == 0 || (150..=250).contains(s)).map(|s| (s, vec![0; 32])).collect();
        tx.audit_purge(&doomed).unwrap();
        tx.audit_index_pending(1000).unwrap();
        let orphans: i64 = conn
            .query_row("SELECT count(*) FROM audit_index WHERE seq NOT IN (SELECT seq FROM audit_log)", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(orphans, 0);
        // What remains is exactly the index of the records that remain.
        let kept = index_table(&tx);
        conn.execute_batch("DROP TRIGGER audit_index_no_delete; DELETE FROM audit_index;").unwrap();
        tx.meta_set(INDEXED_THROUGH, "0").unwrap();
        tx.audit_index_pending(1000).unwrap();
        assert_eq!(index_table(&tx), kept);
        let f = AuditFilter { action_prefix: Some("door.".into()), ..AuditFilter::default() };
        assert_eq!(pages_newest_first(&tx, &f, 10), reference(&tx, &f));

        let conn = open();
        let tx = Tx { conn: &conn };
        fill(&tx, 10);
        tx.audit_index_pending(10).unwrap();
        let refused = conn.execute("DELETE FROM audit_index WHERE seq = 3", []).unwrap_err();
        assert!(refused.to_string().contains("removed only with their records"), "{refused}");
        let refused = conn.execute("UPDATE audit_index SET seq = 99 WHERE seq = 3", []).unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
    }

    /// The query plans: the index leads in sequence order (no sort), the tail is a rowid range.
    #[test]
    fn the_index_leads_in_sequence_order_and_the_tail_is_a_rowid_range() {
        let conn = open();
        let plan = |sql: &str, n: usize| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params: Vec<Value> = (0..n).map(|_| Value::Integer(1)).collect();
            let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join(" | ")
        };
        let f = AuditFilter {
            actor: Some(ActorFilter::Id("u1".into())),
            since_ms: Some(1),
            until_ms: Some(2),
            min_seq: Some(1),
            max_seq: Some(2),
            ..AuditFilter::default()
        };
        let (clause, args) = f.clause("l.");
        let indexed = plan(&indexed_sql(&clause, Order::NewestFirst), args.len() + 6);
        assert!(
            indexed.contains("SEARCH i USING PRIMARY KEY (block=? AND kind=? AND key=? AND seq>? AND seq<?)"),
            "{indexed}"
        );
        assert!(indexed.contains("SEARCH l USING INTEGER PRIMARY KEY (rowid=?)"), "{indexed}");
        assert!(!indexed.contains("TEMP B-TREE"), "{indexed}");
        let (clause, args) = f.clause("");
        let tail = plan(&scan_sql(&clause, Order::NewestFirst), args.len() + 3);
        assert!(tail.contains("SEARCH audit_log USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"), "{tail}");
        assert!(!tail.contains("TEMP B-TREE"), "{tail}");
    }
}
