//! SQL for the `meta` key/value table.

use super::{DbError, Tx};
use rusqlite::OptionalExtension;

impl Tx<'_> {
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value])?;
        Ok(())
    }

    pub fn meta_delete(&self, key: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }
}
