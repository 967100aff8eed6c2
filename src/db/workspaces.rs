//! SQL for `workspaces`, `roles`, `members`, `member_roles`, `api_keys` and `api_key_ips`.
//! Every query of a workspace's objects is keyed by the workspace id, so an id from another
//! workspace finds nothing.

use super::{DbError, Tx};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct WorkspaceRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const WS_COLUMNS: &str = "id, slug, name, created_by, created_at, updated_at";

fn ws_from_row(r: &Row<'_>) -> rusqlite::Result<WorkspaceRow> {
    Ok(WorkspaceRow {
        id: r.get(0)?,
        slug: r.get(1)?,
        name: r.get(2)?,
        created_by: r.get(3)?,
        created_at_ms: r.get(4)?,
        updated_at_ms: r.get(5)?,
    })
}

#[derive(Debug, Clone)]
pub struct RoleRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: Option<String>,
    pub builtin: bool,
    /// The rules as canonical JSON (`[]` for built-in roles: their rules are in the code).
    pub rules: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const ROLE_COLUMNS: &str = "id, workspace_id, name, description, builtin, rules, created_at, updated_at";

fn role_from_row(r: &Row<'_>) -> rusqlite::Result<RoleRow> {
    Ok(RoleRow {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        builtin: r.get(4)?,
        rules: r.get(5)?,
        created_at_ms: r.get(6)?,
        updated_at_ms: r.get(7)?,
    })
}

/// A member with what a listing shows of the user.
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub disabled: bool,
    /// Role ids.
    pub role_ids: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub hint: String,
    pub rules: String,
    pub created_by: String,
    pub enabled: bool,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub rotated_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub last_used_ip: Option<String>,
}

const KEY_COLUMNS: &str = "id, workspace_id, name, hint, rules, created_by, enabled, expires_at, created_at, \
                           updated_at, rotated_at, last_used_at, last_used_ip";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        name: r.get(2)?,
        hint: r.get(3)?,
        rules: r.get(4)?,
        created_by: r.get(5)?,
        enabled: r.get(6)?,
        expires_at_ms: r.get(7)?,
        created_at_ms: r.get(8)?,
        updated_at_ms: r.get(9)?,
        rotated_at_ms: r.get(10)?,
        last_used_at_ms: r.get(11)?,
        last_used_ip: r.get(12)?,
    })
}

/// What a key's change may set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyPatch {
    pub name: Option<String>,
    pub rules: Option<String>,
    pub enabled: Option<bool>,
    pub expires_at_ms: Option<Option<i64>>,
}

impl Tx<'_> {
    pub fn workspace_insert(&self, w: &WorkspaceRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO workspaces (id, slug, name, created_by, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![w.id, w.slug, w.name, w.created_by, w.created_at_ms, w.updated_at_ms],
        )?;
        Ok(())
    }

    /// A workspace by id or by slug.
    pub fn workspace_by_ref(&self, reference: &str) -> Result<Option<WorkspaceRow>, DbError> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("SELECT {WS_COLUMNS} FROM workspaces WHERE id = ?1 OR slug = ?1 LIMIT 1"))?;
        Ok(stmt.query_row([reference], ws_from_row).optional()?)
    }

    /// Workspaces in creation order after the cursor `(created_at, id)`: all of them, or those
    /// `member` belongs to.
    pub fn workspaces_page(
        &self,
        member: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<WorkspaceRow>, DbError> {
        let (ts, id) = after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {WS_COLUMNS} FROM workspaces w WHERE (?1 IS NULL OR EXISTS \
             (SELECT 1 FROM members m WHERE m.workspace_id = w.id AND m.user_id = ?1)) \
             AND (created_at > ?2 OR (created_at = ?2 AND id > ?3)) ORDER BY created_at, id LIMIT ?4"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![member, ts, id, limit], ws_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn workspace_update(&self, id: &str, slug: &str, name: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE workspaces SET slug = ?2, name = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, slug, name, now_ms],
        )?;
        Ok(())
    }

    /// Delete a workspace and everything in it, in an order the foreign keys accept.
    pub fn workspace_delete(&self, id: &str) -> Result<(), DbError> {
        let c = self.conn();
        c.execute("DELETE FROM member_roles WHERE workspace_id = ?1", [id])?;
        c.execute("DELETE FROM members WHERE workspace_id = ?1", [id])?;
        c.execute("DELETE FROM api_keys WHERE workspace_id = ?1", [id])?;
        self.vault_delete_workspace(id)?;
        c.execute("DELETE FROM roles WHERE workspace_id = ?1", [id])?;
        c.execute("DELETE FROM workspaces WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn workspace_counts(&self, id: &str) -> Result<(i64, i64), DbError> {
        let members =
            self.conn().query_row("SELECT count(*) FROM members WHERE workspace_id = ?1", [id], |r| r.get(0))?;
        let keys =
            self.conn().query_row("SELECT count(*) FROM api_keys WHERE workspace_id = ?1", [id], |r| r.get(0))?;
        Ok((members, keys))
    }

    pub fn role_insert(&self, r: &RoleRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO roles (id, workspace_id, name, description, builtin, rules, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![r.id, r.workspace_id, r.name, r.description, r.builtin, r.rules, r.created_at_ms, r.updated_at_ms],
        )?;
        Ok(())
    }

    pub fn roles_of(&self, workspace_id: &str) -> Result<Vec<RoleRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE workspace_id = ?1 ORDER BY builtin DESC, created_at, name"
        ))?;
        let rows = stmt.query_map([workspace_id], role_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A role of the workspace by id or by name.
    pub fn role_by_ref(&self, workspace_id: &str, reference: &str) -> Result<Option<RoleRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2) \
             ORDER BY id = ?2 DESC LIMIT 1"
        ))?;
        Ok(stmt.query_row([workspace_id, reference], role_from_row).optional()?)
    }

    pub fn role_update(
        &self,
        id: &str,
        name: &str,
        description: Option<&str>,
        rules: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE roles SET name = ?2, description = ?3, rules = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, name, description, rules, now_ms],
        )?;
        Ok(())
    }

    pub fn role_delete(&self, id: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM roles WHERE id = ?1", [id])?;
        Ok(())
    }

    /// How many members hold the role.
    pub fn role_assignments(&self, role_id: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT count(*) FROM member_roles WHERE role_id = ?1", [role_id], |r| r.get(0))?)
    }

    /// The role ids of a member, or `None` when the user is not a member.
    pub fn member_role_ids(&self, workspace_id: &str, user_id: &str) -> Result<Option<Vec<String>>, DbError> {
        let mut stmt = self.conn().prepare_cached("SELECT 1 FROM members WHERE workspace_id = ?1 AND user_id = ?2")?;
        if stmt.query_row([workspace_id, user_id], |_| Ok(())).optional()?.is_none() {
            return Ok(None);
        }
        let mut stmt = self.conn().prepare_cached(
            "SELECT role_id FROM member_roles WHERE workspace_id = ?1 AND user_id = ?2 ORDER BY role_id",
        )?;
        let rows = stmt.query_map([workspace_id, user_id], |r| r.get(0))?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }

    pub fn members_of(&self, workspace_id: &str) -> Result<Vec<MemberRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT m.user_id, u.email, u.name, u.disabled, m.created_at, m.updated_at, \
             (SELECT group_concat(role_id, ' ') FROM member_roles r WHERE r.workspace_id = m.workspace_id \
              AND r.user_id = m.user_id) \
             FROM members m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ?1 ORDER BY m.created_at, m.user_id",
        )?;
        let rows = stmt.query_map([workspace_id], |r| {
            let roles: Option<String> = r.get(6)?;
            Ok(MemberRow {
                user_id: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
                disabled: r.get(3)?,
                created_at_ms: r.get(4)?,
                updated_at_ms: r.get(5)?,
                role_ids: roles.map(|s| s.split(' ').map(str::to_string).collect()).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Make the user a member (its roles untouched), or mark the membership updated.
    pub fn member_upsert(&self, workspace_id: &str, user_id: &str, now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO members (workspace_id, user_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET updated_at = excluded.updated_at",
            params![workspace_id, user_id, now_ms],
        )?;
        Ok(())
    }

    /// Make the user a member with exactly these roles.
    pub fn member_set(
        &self,
        workspace_id: &str,
        user_id: &str,
        role_ids: &[String],
        now_ms: i64,
    ) -> Result<(), DbError> {
        let c = self.conn();
        self.member_upsert(workspace_id, user_id, now_ms)?;
        c.execute("DELETE FROM member_roles WHERE workspace_id = ?1 AND user_id = ?2", [workspace_id, user_id])?;
        // A role an SSO mapping granted and a person now takes away is the mapping's no more:
        // given again by hand, it stays hand-given.
        let granted: Vec<String> = c
            .prepare_cached("SELECT role_id FROM sso_grants WHERE workspace_id = ?1 AND user_id = ?2")?
            .query_map([workspace_id, user_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for role in granted.iter().filter(|r| !role_ids.contains(r)) {
            c.execute(
                "DELETE FROM sso_grants WHERE workspace_id = ?1 AND user_id = ?2 AND role_id = ?3",
                [workspace_id, user_id, role.as_str()],
            )?;
        }
        for role in role_ids {
            c.execute(
                "INSERT OR IGNORE INTO member_roles (workspace_id, user_id, role_id) VALUES (?1, ?2, ?3)",
                params![workspace_id, user_id, role],
            )?;
        }
        Ok(())
    }

    pub fn member_delete(&self, workspace_id: &str, user_id: &str) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .execute("DELETE FROM members WHERE workspace_id = ?1 AND user_id = ?2", [workspace_id, user_id])?
            > 0)
    }

    /// Members that hold the role, other than `except`.
    pub fn role_holders_except(&self, role_id: &str, except: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM member_roles WHERE role_id = ?1 AND user_id <> ?2",
            [role_id, except],
            |r| r.get(0),
        )?)
    }

    pub fn api_key_insert(&self, k: &ApiKeyRow, hash: &[u8; 32]) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO api_keys (id, workspace_id, name, hint, secret_hash, rules, created_by, enabled, expires_at, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                k.id,
                k.workspace_id,
                k.name,
                k.hint,
                &hash[..],
                k.rules,
                k.created_by,
                k.enabled,
                k.expires_at_ms,
                k.created_at_ms,
                k.updated_at_ms
            ],
        )?;
        Ok(())
    }

    pub fn api_keys_of(&self, workspace_id: &str) -> Result<Vec<ApiKeyRow>, DbError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([workspace_id], key_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn api_key(&self, workspace_id: &str, id: &str) -> Result<Option<ApiKeyRow>, DbError> {
        let mut stmt = self
            .conn()
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 AND id = ?2"))?;
        Ok(stmt.query_row([workspace_id, id], key_from_row).optional()?)
    }

    pub fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, DbError> {
        let mut stmt =
            self.conn().prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1"))?;
        Ok(stmt.query_row([&hash[..]], key_from_row).optional()?)
    }

    pub fn api_key_update(&self, id: &str, p: &ApiKeyPatch, now_ms: i64) -> Result<(), DbError> {
        let c = self.conn();
        if let Some(name) = &p.name {
            c.execute("UPDATE api_keys SET name = ?2 WHERE id = ?1", params![id, name])?;
        }
        if let Some(rules) = &p.rules {
            c.execute("UPDATE api_keys SET rules = ?2 WHERE id = ?1", params![id, rules])?;
        }
        if let Some(enabled) = p.enabled {
            c.execute("UPDATE api_keys SET enabled = ?2 WHERE id = ?1", params![id, enabled])?;
        }
        if let Some(expires) = p.expires_at_ms {
            c.execute("UPDATE api_keys SET expires_at = ?2 WHERE id = ?1", params![id, expires])?;
        }
        c.execute("UPDATE api_keys SET updated_at = ?2 WHERE id = ?1", params![id, now_ms])?;
        Ok(())
    }

    pub fn api_key_rotate(&self, id: &str, hint: &str, hash: &[u8; 32], now_ms: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE api_keys SET hint = ?2, secret_hash = ?3, rotated_at = ?4, updated_at = ?4 WHERE id = ?1",
            params![id, hint, &hash[..], now_ms],
        )?;
        Ok(())
    }

    pub fn api_key_delete(&self, id: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM api_keys WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn api_key_touch(&self, id: &str, at_ms: i64, ip: Option<&str>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2), \
             last_used_ip = coalesce(?3, last_used_ip) WHERE id = ?1",
            params![id, at_ms, ip],
        )?;
        Ok(())
    }

    /// Record that the key was used from `ip`; `true` when that address is new for the key.
    pub fn api_key_ip_first_seen(&self, id: &str, ip: &str, at_ms: i64) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO api_key_ips (key_id, ip, first_seen_at) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)",
            params![id, ip, at_ms],
        )? > 0)
    }

    /// How many addresses an API key was used from.
    pub fn api_key_ip_count(&self, id: &str) -> Result<i64, DbError> {
        Ok(self.conn().query_row("SELECT count(*) FROM api_key_ips WHERE key_id = ?1", [id], |r| r.get(0))?)
    }
}
