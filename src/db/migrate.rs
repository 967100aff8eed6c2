//! Embedded, numbered, forward-only migrations. Each step runs in one transaction with the
//! version bump (`PRAGMA user_version`) inside it. A shipped migration is never edited.

use super::{DbError, Tx};
use rusqlite::Connection;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/0001_init.sql") },
    Migration { version: 2, name: "accounts", sql: include_str!("migrations/0002_accounts.sql") },
    Migration { version: 3, name: "workspaces", sql: include_str!("migrations/0003_workspaces.sql") },
    Migration { version: 4, name: "vault", sql: include_str!("migrations/0004_vault.sql") },
    Migration { version: 5, name: "audit", sql: include_str!("migrations/0005_audit.sql") },
    Migration { version: 6, name: "monitoring", sql: include_str!("migrations/0006_monitoring.sql") },
    Migration { version: 7, name: "sso", sql: include_str!("migrations/0007_sso.sql") },
    Migration { version: 8, name: "audit_index", sql: include_str!("migrations/0008_audit_index.sql") },
    Migration { version: 9, name: "saml", sql: include_str!("migrations/0009_saml.sql") },
];

/// What a step does after its SQL, in the same transaction: data that only Rust derives.
fn after_sql(version: i64, tx: &Tx<'_>) -> Result<(), DbError> {
    match version {
        // The audit query index of the records already present, with the indexer's own code.
        8 => tx.audit_index_backfill(),
        _ => Ok(()),
    }
}

/// The schema version this binary writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// The version recorded in a database.
pub fn current_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Refuse a database written by a newer Gatehouse.
pub fn check_not_newer(conn: &Connection, path: &str) -> Result<i64, DbError> {
    let current = current_version(conn)?;
    if current > latest_version() {
        return Err(DbError::TooNew { path: path.to_string(), found: current, supported: latest_version() });
    }
    Ok(current)
}

/// Apply every pending migration. Returns the names applied.
pub fn run(conn: &mut Connection, path: &str) -> Result<Vec<String>, DbError> {
    let current = check_not_newer(conn, path)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(m.sql)?;
        after_sql(m.version, &Tx { conn: &tx })?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
        applied.push(format!("{:04}_{}", m.version, m.name));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(run(&mut conn, "mem").unwrap().len(), MIGRATIONS.len());
        assert!(run(&mut conn, "mem").unwrap().is_empty());
        conn.pragma_update(None, "user_version", latest_version() + 1).unwrap();
        let err = run(&mut conn, "mem").unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    /// Migration 8 files the records an older Gatehouse wrote, exactly as the indexer would, and
    /// leaves only the append-only indexes on audit_log.
    #[test]
    fn the_audit_index_migration_files_the_records_already_there() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 8) {
            conn.execute_batch(m.sql).unwrap();
            conn.pragma_update(None, "user_version", m.version).unwrap();
        }
        for seq in 1..=1000i64 {
            conn.execute(
                "INSERT INTO audit_log (seq, ts_ms, actor_type, actor_id, action, target, workspace_id, outcome, \
                 client_ip, details, hash) VALUES (?1, ?1, 'token', ?2, ?3, ?4, ?5, 'success', ?6, '{}', x'00')",
                rusqlite::params![
                    seq,
                    format!("u{}/t{}", seq % 7, seq % 3),
                    ["auth.login.failed", "secret.revealed", "api.read"][(seq % 3) as usize],
                    (seq % 2 == 0).then(|| format!("t{}", seq % 11)),
                    (seq % 5 == 0).then_some("w1"),
                    format!("10.0.0.{}", seq % 13),
                ],
            )
            .unwrap();
        }
        run(&mut conn, "mem").unwrap();
        let tx = Tx { conn: &conn };
        assert_eq!(tx.audit_indexed_through().unwrap(), 1000);
        let table = |conn: &Connection| -> Vec<(i64, String, i64)> {
            let mut stmt = conn.prepare("SELECT kind, key, seq FROM audit_index ORDER BY kind, key, seq").unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
            rows.map(Result::unwrap).collect()
        };
        let migrated = table(&conn);
        // actor and its user, action and its category (3 parts for a login), ip; half a target, a fifth a workspace.
        assert_eq!(migrated.len(), 1000 * 2 + (333 * 3 + 667 * 2) + 1000 + 500 + 200);
        conn.execute_batch(
            "DROP TRIGGER audit_index_no_delete; DELETE FROM audit_index; \
             DELETE FROM meta WHERE key = 'audit.indexed_through';",
        )
        .unwrap();
        let tx = Tx { conn: &conn };
        assert_eq!(tx.audit_index_pending(10_000).unwrap(), (1000, 1000));
        assert_eq!(table(&conn), migrated);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, ["audit_log_time"]);
    }

    #[test]
    fn versions_are_increasing() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
