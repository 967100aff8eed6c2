//! Embedded, numbered, forward-only migrations. Each step runs in one transaction with the
//! version bump (`PRAGMA user_version`) inside it. A shipped migration is never edited.

use super::DbError;
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
];

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

    #[test]
    fn versions_are_increasing() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
