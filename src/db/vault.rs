//! SQL for `vault_keys`, `secrets` and `secret_versions`.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct VaultKeyRow {
    pub id: String,
    pub purpose: String,
    pub workspace_id: Option<String>,
    pub kek_id: String,
    pub wrapped: String,
    pub seals: i64,
    pub created_at_ms: i64,
    pub retired_at_ms: Option<i64>,
}

const VK_COLUMNS: &str = "id, purpose, workspace_id, kek_id, wrapped, seals, created_at, retired_at";

fn vk_from_row(r: &Row<'_>) -> rusqlite::Result<VaultKeyRow> {
    Ok(VaultKeyRow {
        id: r.get(0)?,
        purpose: r.get(1)?,
        workspace_id: r.get(2)?,
        kek_id: r.get(3)?,
        wrapped: r.get(4)?,
        seals: r.get(5)?,
        created_at_ms: r.get(6)?,
        retired_at_ms: r.get(7)?,
    })
}

#[derive(Debug, Clone)]
pub struct SecretRow {
    pub workspace_id: String,
    pub name: String,
    pub current_version: i64,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
    pub updated_at_ms: i64,
    pub updated_by: Option<String>,
}

const SECRET_COLUMNS: &str = "workspace_id, name, current_version, created_at, created_by, updated_at, updated_by";

fn secret_from_row(r: &Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        workspace_id: r.get(0)?,
        name: r.get(1)?,
        current_version: r.get(2)?,
        created_at_ms: r.get(3)?,
        created_by: r.get(4)?,
        updated_at_ms: r.get(5)?,
        updated_by: r.get(6)?,
    })
}

#[derive(Debug, Clone)]
pub struct SecretVersionRow {
    pub workspace_id: String,
    pub name: String,
    pub version: i64,
    pub data_key_id: String,
    pub envelope: String,
    pub size: i64,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
    pub restored_from: Option<i64>,
}

const VERSION_COLUMNS: &str =
    "workspace_id, name, version, data_key_id, envelope, size, created_at, created_by, restored_from";

fn version_from_row(r: &Row<'_>) -> rusqlite::Result<SecretVersionRow> {
    Ok(SecretVersionRow {
        workspace_id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        data_key_id: r.get(3)?,
        envelope: r.get(4)?,
        size: r.get(5)?,
        created_at_ms: r.get(6)?,
        created_by: r.get(7)?,
        restored_from: r.get(8)?,
    })
}

impl Tx<'_> {
    pub fn vault_key_insert(&self, k: &VaultKeyRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO vault_keys (id, purpose, workspace_id, kek_id, wrapped, seals, created_at, retired_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![k.id, k.purpose, k.workspace_id, k.kek_id, k.wrapped, k.seals, k.created_at_ms, k.retired_at_ms],
        )?;
        Ok(())
    }

    pub fn vault_key(&self, id: &str) -> Result<Option<VaultKeyRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {VK_COLUMNS} FROM vault_keys WHERE id = ?1"))?;
        Ok(stmt.query_row([id], vk_from_row).optional()?)
    }

    /// The active (not retired) data key of a workspace.
    pub fn vault_key_active(&self, workspace_id: &str) -> Result<Option<VaultKeyRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {VK_COLUMNS} FROM vault_keys WHERE workspace_id = ?1 AND purpose = 'workspace' \
             AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
        ))?;
        Ok(stmt.query_row([workspace_id], vk_from_row).optional()?)
    }

    /// Up to `limit` keys wrapped by a master key other than `kek_id`.
    pub fn vault_keys_not_wrapped_by(&self, kek_id: &str, limit: i64) -> Result<Vec<VaultKeyRow>, DbError> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("SELECT {VK_COLUMNS} FROM vault_keys WHERE kek_id <> ?1 ORDER BY id LIMIT ?2"))?;
        let rows = stmt.query_map(params![kek_id, limit], vk_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn vault_keys_all(&self) -> Result<Vec<VaultKeyRow>, DbError> {
        let mut stmt = self.conn().prepare(&format!("SELECT {VK_COLUMNS} FROM vault_keys ORDER BY id"))?;
        let rows = stmt.query_map([], vk_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn vault_keys_using(&self, kek_id: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT count(*) FROM vault_keys WHERE kek_id = ?1", [kek_id], |r| r.get(0))?)
    }

    pub fn vault_key_rewrap(&self, id: &str, old_kek: &str, kek_id: &str, wrapped: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE vault_keys SET kek_id = ?3, wrapped = ?4 WHERE id = ?1 AND kek_id = ?2",
            params![id, old_kek, kek_id, wrapped],
        )? > 0)
    }

    /// Count `n` seals under a key; returns the new total.
    pub fn vault_key_count_seals(&self, id: &str, n: i64) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "UPDATE vault_keys SET seals = seals + ?2 WHERE id = ?1 RETURNING seals",
            params![id, n],
            |r| r.get(0),
        )?)
    }

    pub fn vault_key_retire(&self, id: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE vault_keys SET retired_at = ?2 WHERE id = ?1 AND retired_at IS NULL",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// Retired workspace keys that nothing is sealed under any more.
    /// Delete them; returns their ids.
    pub fn vault_keys_delete_unused_retired(&self) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare(
            "DELETE FROM vault_keys WHERE purpose = 'workspace' AND retired_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM secret_versions v WHERE v.data_key_id = vault_keys.id) RETURNING id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Secret versions sealed under a retired data key (for re-sealing), at most `limit`.
    pub fn secret_versions_under_retired_keys(&self, limit: i64) -> Result<Vec<SecretVersionRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {} FROM secret_versions v JOIN vault_keys k ON k.id = v.data_key_id \
             WHERE k.retired_at IS NOT NULL ORDER BY v.workspace_id, v.name, v.version LIMIT ?1",
            VERSION_COLUMNS.split(", ").map(|c| format!("v.{c}")).collect::<Vec<_>>().join(", ")
        ))?;
        let rows = stmt.query_map([limit], version_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn secret_version_reseal(
        &self,
        v: &SecretVersionRow,
        data_key_id: &str,
        envelope: &str,
    ) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE secret_versions SET data_key_id = ?5, envelope = ?6 \
             WHERE workspace_id = ?1 AND name = ?2 AND version = ?3 AND data_key_id = ?4",
            params![v.workspace_id, v.name, v.version, v.data_key_id, data_key_id, envelope],
        )? > 0)
    }

    pub fn secret(&self, workspace_id: &str, name: &str) -> Result<Option<SecretRow>, DbError> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE workspace_id = ?1 AND name = ?2"))?;
        Ok(stmt.query_row([workspace_id, name], secret_from_row).optional()?)
    }

    pub fn secrets_of(&self, workspace_id: &str) -> Result<Vec<SecretRow>, DbError> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE workspace_id = ?1 ORDER BY name"))?;
        let rows = stmt.query_map([workspace_id], secret_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn secret_upsert(&self, s: &SecretRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO secrets (workspace_id, name, current_version, created_at, created_by, updated_at, updated_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (workspace_id, name) DO UPDATE SET \
             current_version = excluded.current_version, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![s.workspace_id, s.name, s.current_version, s.created_at_ms, s.created_by, s.updated_at_ms, s.updated_by],
        )?;
        Ok(())
    }

    pub fn secret_version_insert(&self, v: &SecretVersionRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO secret_versions (workspace_id, name, version, data_key_id, envelope, size, created_at, \
             created_by, restored_from) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                v.workspace_id,
                v.name,
                v.version,
                v.data_key_id,
                v.envelope,
                v.size,
                v.created_at_ms,
                v.created_by,
                v.restored_from
            ],
        )?;
        Ok(())
    }

    pub fn secret_versions(&self, workspace_id: &str, name: &str) -> Result<Vec<SecretVersionRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE workspace_id = ?1 AND name = ?2 ORDER BY version DESC"
        ))?;
        let rows = stmt.query_map([workspace_id, name], version_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn secret_version(
        &self,
        workspace_id: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<SecretVersionRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE workspace_id = ?1 AND name = ?2 AND version = ?3"
        ))?;
        Ok(stmt.query_row(params![workspace_id, name, version], version_from_row).optional()?)
    }

    pub fn secret_versions_all(&self) -> Result<Vec<SecretVersionRow>, DbError> {
        let mut stmt = self.conn().prepare(&format!("SELECT {VERSION_COLUMNS} FROM secret_versions"))?;
        let rows = stmt.query_map([], version_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete a secret and every version (the rows are zeroed in the file: `secure_delete`).
    pub fn secret_delete(&self, workspace_id: &str, name: &str) -> Result<bool, DbError> {
        self.conn()
            .execute("DELETE FROM secret_versions WHERE workspace_id = ?1 AND name = ?2", [workspace_id, name])?;
        Ok(self.conn().execute("DELETE FROM secrets WHERE workspace_id = ?1 AND name = ?2", [workspace_id, name])? > 0)
    }

    /// Everything of the vault a workspace holds: its secrets and its data keys.
    pub fn vault_delete_workspace(&self, workspace_id: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM secret_versions WHERE workspace_id = ?1", [workspace_id])?;
        self.conn().execute("DELETE FROM secrets WHERE workspace_id = ?1", [workspace_id])?;
        self.conn().execute("DELETE FROM vault_keys WHERE workspace_id = ?1", [workspace_id])?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Every value sealed under the system data key: (signing key id, envelope) of the JWT
    /// signing keys, and (user id, envelope) of the TOTP seeds.
    #[allow(clippy::type_complexity)]
    pub fn system_sealed_values(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>), DbError> {
        let pairs = |sql: &str| -> Result<Vec<(String, String)>, DbError> {
            let mut stmt = self.conn().prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok((
            pairs("SELECT kid, private_sealed FROM signing_keys")?,
            pairs("SELECT id, totp_seed FROM users WHERE totp_seed IS NOT NULL")?,
        ))
    }
}

impl Tx<'_> {
    /// The ids of a workspace's data keys.
    pub fn vault_key_ids_of(&self, workspace_id: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self.conn().prepare("SELECT id FROM vault_keys WHERE workspace_id = ?1")?;
        let rows = stmt.query_map([workspace_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Tx<'_> {
    /// How many retired workspace data keys remain.
    pub fn vault_retired_count(&self) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM vault_keys WHERE purpose = 'workspace' AND retired_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }
}
