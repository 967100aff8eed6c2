//! SQL for the `users` table.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

/// A stored user row.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// PHC string; `None` for accounts without a local password.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const COLUMNS: &str = "id, email, name, password_hash, is_admin, disabled, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        password_hash: r.get(3)?,
        is_admin: r.get(4)?,
        disabled: r.get(5)?,
        created_at_ms: r.get(6)?,
        updated_at_ms: r.get(7)?,
    })
}

impl Tx<'_> {
    pub fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = ?1");
        Ok(self.conn().query_row(&sql, [email], from_row).optional()?)
    }

    pub fn user_insert(&self, u: &UserRow) -> Result<(), DbError> {
        let sql = format!("INSERT INTO users ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
        self.conn().execute(
            &sql,
            params![u.id, u.email, u.name, u.password_hash, u.is_admin, u.disabled, u.created_at_ms, u.updated_at_ms],
        )?;
        Ok(())
    }

    /// Set password and admin flag, re-enable the account.
    pub fn user_reset_admin(&self, id: &str, password_hash: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, is_admin = 1, disabled = 0, updated_at = ?3 WHERE id = ?1",
            params![id, password_hash, now_ms],
        )?;
        Ok(())
    }

    pub fn admin_count(&self) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT count(*) FROM users WHERE is_admin = 1", [], |r| r.get(0))?)
    }
}
