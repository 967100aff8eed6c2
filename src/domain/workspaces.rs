//! Workspaces and what lives in them: members and their roles, custom roles, workspace API
//! keys, and the decision API for backend services.
//!
//! Every operation starts with [`access`]: it finds the workspace (by id or slug) and the
//! caller's rights in it. A caller with no rights there (not a member, not a platform admin, an
//! API key of another workspace) gets `NotFound`, exactly as for a workspace that does not
//! exist. Then [`Access::check`] asks the one decision function (`authz::decide`) for the action;
//! no operation decides on its own. Objects inside a workspace are looked up by (workspace,
//! id), so an id from another workspace is not found either.

use super::audit::{self, Actor, Event, Origin};
use super::auth::{Credential, Principal};
use super::authz::{self, Decision, Resource, Rights, Rule, RuleInput, RuleSet, UserContext};
use super::unix_ms;
use crate::crypto::token::{self, Kind};
use crate::crypto::SecretString;
use crate::db::{ApiKeyPatch, ApiKeyRow, Db, MemberRow, RoleRow, UserRow, WorkspaceRow};
use crate::error::AppError;
use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

/// A read-through cache whose entries are current while no write has committed since they were
/// read (`Db::generation`).
struct GenCache<K, V> {
    map: RwLock<HashMap<K, (u64, V)>>,
}

impl<K: Hash + Eq, V: Clone> GenCache<K, V> {
    fn new() -> Self {
        Self { map: RwLock::new(HashMap::new()) }
    }

    fn get(&self, db: &Db, key: &K) -> Option<V> {
        let now = db.generation();
        let map = self.map.read().ok()?;
        map.get(key).filter(|(g, _)| *g == now).map(|(_, v)| v.clone())
    }

    fn put(&self, seen: u64, key: K, value: V) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= 10_000 {
                map.clear();
            }
            map.insert(key, (seen, value));
        }
    }
}

/// A role with its rules parsed and compiled.
#[derive(Debug)]
pub struct CachedRole {
    pub row: RoleRow,
    pub rules: Vec<Rule>,
    pub set: RuleSet,
}

/// An API key with its rules parsed and compiled.
#[derive(Debug)]
pub struct CachedKey {
    pub row: ApiKeyRow,
    pub rules: Vec<Rule>,
    pub set: RuleSet,
}

/// Caches and batched bookkeeping of workspaces and API keys.
pub struct WorkspaceService {
    by_ref: GenCache<String, WorkspaceRow>,
    roles: GenCache<String, Arc<HashMap<String, Arc<CachedRole>>>>,
    memberships: GenCache<(String, String), Option<Vec<String>>>,
    keys_by_hash: GenCache<[u8; 32], Arc<CachedKey>>,
    keys_by_id: GenCache<String, Arc<CachedKey>>,
    /// Keys used since the last flush: last-use time and address, written in batches.
    key_uses: Mutex<HashMap<String, (i64, Option<String>)>>,
    /// Key id → addresses already recorded, so a known address costs no write.
    key_ips: Mutex<HashMap<String, HashSet<String>>>,
}

impl std::fmt::Debug for WorkspaceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkspaceService")
    }
}

impl Default for WorkspaceService {
    fn default() -> Self {
        Self {
            by_ref: GenCache::new(),
            roles: GenCache::new(),
            memberships: GenCache::new(),
            keys_by_hash: GenCache::new(),
            keys_by_id: GenCache::new(),
            key_uses: Mutex::new(HashMap::new()),
            key_ips: Mutex::new(HashMap::new()),
        }
    }
}

fn parse_stored_rules(text: &str) -> Vec<Rule> {
    // Stored rules were checked when written; a row that does not parse grants nothing.
    serde_json::from_str(text).unwrap_or_default()
}

fn compile_role(row: RoleRow) -> CachedRole {
    let rules = if row.builtin { authz::builtin_rules(&row.name) } else { parse_stored_rules(&row.rules) };
    let set = RuleSet::from_rules(&rules, &row.name);
    CachedRole { row, rules, set }
}

fn compile_key(row: ApiKeyRow) -> CachedKey {
    let rules = parse_stored_rules(&row.rules);
    let set = RuleSet::from_rules(&rules, "api_key");
    CachedKey { row, rules, set }
}

pub(crate) async fn workspace(state: &AppState, reference: &str) -> Result<WorkspaceRow, AppError> {
    let svc = &state.workspaces;
    if let Some(w) = svc.by_ref.get(&state.db, &reference.to_string()) {
        return Ok(w);
    }
    let seen = state.db.generation();
    let r = reference.to_string();
    let row = state.db.read(move |tx| tx.workspace_by_ref(&r).map_err(AppError::from)).await?;
    let row = row.ok_or(AppError::NotFound)?;
    svc.by_ref.put(seen, reference.to_string(), row.clone());
    Ok(row)
}

async fn roles_of(state: &AppState, ws_id: &str) -> Result<Arc<HashMap<String, Arc<CachedRole>>>, AppError> {
    let svc = &state.workspaces;
    if let Some(r) = svc.roles.get(&state.db, &ws_id.to_string()) {
        return Ok(r);
    }
    let seen = state.db.generation();
    let id = ws_id.to_string();
    let rows = state.db.read(move |tx| tx.roles_of(&id).map_err(AppError::from)).await?;
    let book: HashMap<_, _> = rows.into_iter().map(|r| (r.id.clone(), Arc::new(compile_role(r)))).collect();
    let book = Arc::new(book);
    svc.roles.put(seen, ws_id.to_string(), book.clone());
    Ok(book)
}

async fn membership(state: &AppState, ws_id: &str, user_id: &str) -> Result<Option<Vec<String>>, AppError> {
    let svc = &state.workspaces;
    let key = (ws_id.to_string(), user_id.to_string());
    if let Some(m) = svc.memberships.get(&state.db, &key) {
        return Ok(m);
    }
    let seen = state.db.generation();
    let (w, u) = key.clone();
    let roles = state.db.read(move |tx| tx.member_role_ids(&w, &u).map_err(AppError::from)).await?;
    svc.memberships.put(seen, key, roles.clone());
    Ok(roles)
}

/// Whether the user is a member of the workspace (from the cache, without copying its roles).
async fn is_member(state: &AppState, ws_id: &str, user_id: &str) -> Result<bool, AppError> {
    Ok(membership(state, ws_id, user_id).await?.is_some())
}

/// A user's rights in a workspace: `None` when not a member.
async fn member_rights(
    state: &AppState,
    ws_id: &str,
    user: &UserRow,
) -> Result<Option<(RuleSet, Vec<Rule>, Vec<String>)>, AppError> {
    let Some(role_ids) = membership(state, ws_id, &user.id).await? else { return Ok(None) };
    let book = roles_of(state, ws_id).await?;
    let mut set = RuleSet::default();
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for id in &role_ids {
        if let Some(role) = book.get(id) {
            set.extend(&role.set);
            rules.extend(role.rules.iter().cloned());
            names.push(role.row.name.clone());
        }
    }
    Ok(Some((set, rules, names)))
}

fn user_context(u: &UserRow) -> UserContext {
    UserContext { id: u.id.clone(), email: u.email.clone() }
}

/// The rules of a platform administrator who is not a member: everything (made once).
fn admin_rules() -> &'static (Vec<Rule>, RuleSet) {
    static ADMIN: std::sync::LazyLock<(Vec<Rule>, RuleSet)> = std::sync::LazyLock::new(|| {
        let rules = authz::builtin_rules("owner");
        let set = RuleSet::from_rules(&rules, "platform_admin");
        (rules, set)
    });
    &ADMIN
}

/// The rights of a user (by row) in a workspace, as the decision API and API keys need them.
async fn rights_of_user(state: &AppState, ws_id: &str, user: &UserRow) -> Result<(Rights, Vec<Rule>), AppError> {
    if user.disabled || state.auth.revocations.user_blocked(&user.id) {
        return Ok((Rights::None, Vec::new()));
    }
    if user.is_admin {
        return Ok((Rights::PlatformAdmin, admin_rules().0.clone()));
    }
    match member_rights(state, ws_id, user).await? {
        Some((set, rules, _)) => Ok((Rights::Member { user: user_context(user), rules: set }, rules)),
        None => Ok((Rights::None, Vec::new())),
    }
}

/// The caller's standing in one workspace.
#[derive(Debug)]
pub struct Access {
    pub ws: WorkspaceRow,
    pub rights: Rights,
    /// The rule sets a grant must stay within (a member's roles; an API key's own rules and
    /// its creator's).
    granter: Vec<Vec<Rule>>,
    /// A platform administrator (its decisions are audited as admin actions when its own
    /// memberships would not allow them).
    admin: bool,
    actor: Actor,
    /// The user behind the caller (an API key's creator).
    pub user_id: String,
    pub is_api_key: bool,
}

/// What [`Access::check`] concluded.
#[derive(Debug)]
pub struct Checked {
    pub decision: Decision,
    pub as_admin: bool,
}

impl Access {
    /// Ask the decision function; a platform administrator is allowed what its roles are not,
    /// and that is remembered so that the audit record says so.
    pub fn check(&self, action: &str, res: &Resource) -> Result<Checked, AppError> {
        let decision = authz::decide(&self.rights, action, res);
        if decision.allowed {
            let as_admin = matches!(self.rights, Rights::PlatformAdmin);
            return Ok(Checked { decision, as_admin });
        }
        if self.admin {
            return Ok(Checked {
                decision: Decision::allow("platform administrators may do everything", None),
                as_admin: true,
            });
        }
        Err(AppError::Forbidden(format!("You may not do this: {}.", decision.reason)))
    }

    /// Whether the decision function allows it (for filtering lists).
    pub fn allows(&self, action: &str, res: &Resource) -> bool {
        self.check(action, res).is_ok()
    }

    /// A grant (a role's rules, an API key's rules) must give nothing the caller lacks.
    pub fn within(&self, wanted: &[Rule]) -> Result<(), AppError> {
        if self.admin || matches!(self.rights, Rights::PlatformAdmin) {
            return Ok(());
        }
        for rules in &self.granter {
            authz::check_within(&self.rights, rules, wanted)?;
        }
        Ok(())
    }

    /// The audit actor of this caller.
    pub fn actor(&self) -> Actor {
        self.actor.clone()
    }

    /// An audit event in this workspace by this caller (marked `as_admin` when so).
    pub fn event(&self, action: &'static str, checked: &Checked, origin: &Origin, details: Value) -> Event {
        let mut details = match details {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        if checked.as_admin {
            details.insert("as_admin".into(), Value::Bool(true));
        }
        Event::new(action, self.actor.clone())
            .workspace(self.ws.id.clone())
            .origin(origin)
            .details(Value::Object(details))
    }
}

/// Find the workspace and the caller's rights in it. Not found when the caller has none.
pub async fn access(state: &AppState, who: &Principal, reference: &str) -> Result<Access, AppError> {
    let ws = workspace(state, reference).await?;
    let user = super::users::get(state, &who.user_id)
        .await
        .map_err(|_| AppError::Unauthorized("The account no longer exists.".into()))?;
    if user.disabled {
        return Err(AppError::Unauthorized("The account is disabled.".into()));
    }
    match &who.credential {
        Credential::ApiKey { key_id, workspace_id } => {
            if *workspace_id != ws.id {
                return Err(AppError::NotFound);
            }
            let key = key_by_id(state, &ws.id, key_id).await?.ok_or(AppError::NotFound)?;
            let (creator_rights, creator_rules) = rights_of_user(state, &ws.id, &user).await?;
            let creator_set = match &creator_rights {
                Rights::Member { rules, .. } => rules.clone(),
                Rights::PlatformAdmin => admin_rules().1.clone(),
                _ => RuleSet::default(),
            };
            Ok(Access {
                ws,
                rights: Rights::ApiKey {
                    key_id: key_id.clone(),
                    creator: user_context(&user),
                    own: key.set.clone(),
                    creator_rules: creator_set,
                },
                granter: vec![key.rules.clone(), creator_rules],
                admin: false,
                actor: who.actor(),
                user_id: user.id.clone(),
                is_api_key: true,
            })
        }
        _ => {
            let rights = member_rights(state, &ws.id, &user).await?;
            let (rights, granter) = match rights {
                Some((set, rules, _)) => (Rights::Member { user: user_context(&user), rules: set }, rules),
                None if user.is_admin => (Rights::PlatformAdmin, admin_rules().0.clone()),
                None => return Err(AppError::NotFound),
            };
            Ok(Access {
                ws,
                rights,
                granter: vec![granter],
                admin: user.is_admin,
                actor: who.actor(),
                user_id: user.id.clone(),
                is_api_key: false,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workspaces

fn check_slug(slug: &str) -> Result<(), AppError> {
    let b = slug.as_bytes();
    let ok = (3..=64).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && uuid::Uuid::parse_str(slug).is_err();
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid("slug: 3 to 64 characters of a-z, 0-9 and -, not starting or ending with -".into()))
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<String, AppError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!("{field}: 1 to {max} characters, no control characters")));
    }
    Ok(v.to_string())
}

fn workspace_resource(ws: &WorkspaceRow) -> Resource {
    Resource::new("workspace").with("id", ws.id.clone()).with("slug", ws.slug.clone())
}

/// `POST /v1/workspaces`: the creator becomes its owner.
pub async fn create(
    state: &AppState,
    who: &Principal,
    slug: String,
    name: String,
    origin: &Origin,
) -> Result<WorkspaceRow, AppError> {
    if matches!(who.credential, Credential::ApiKey { .. }) {
        return Err(AppError::Forbidden("API keys cannot create workspaces.".into()));
    }
    let me = super::users::get(state, &who.user_id).await?;
    if me.kind == "anonymous" {
        return Err(AppError::Forbidden("Anonymous users cannot create workspaces; sign up first.".into()));
    }
    check_slug(&slug)?;
    let name = check_text("name", &name, 200)?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let ws = WorkspaceRow {
        id: uuid::Uuid::new_v4().to_string(),
        slug,
        name,
        created_by: Some(me.id.clone()),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    };
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    let row = ws.clone();
    let vault = state.vault.clone();
    state
        .db
        .write(move |tx| {
            if tx.workspace_by_ref(&row.slug)?.is_some() {
                return Err(AppError::Conflict("slug: a workspace with this slug already exists".into()));
            }
            tx.workspace_insert(&row).map_err(|e| match e {
                crate::db::DbError::Unique => {
                    AppError::Conflict("slug: a workspace with this slug already exists".into())
                }
                e => e.into(),
            })?;
            let mut owner_id = String::new();
            for name in authz::BUILTIN_ROLES {
                let id = uuid::Uuid::new_v4().to_string();
                if *name == "owner" {
                    owner_id = id.clone();
                }
                tx.role_insert(&RoleRow {
                    id,
                    workspace_id: row.id.clone(),
                    name: name.to_string(),
                    description: None,
                    builtin: true,
                    rules: "[]".into(),
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                })?;
            }
            tx.member_set(&row.id, &me.id, &[owner_id], now_ms)?;
            vault.create_workspace_key(tx, &row.id, now_ms)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("workspace.created", actor)
                    .workspace(row.id.clone())
                    .target(row.id.clone())
                    .origin(&o)
                    .details(json!({ "slug": row.slug, "name": row.name, "owner": me.id })),
            )?;
            Ok(row)
        })
        .await
}

/// `GET /v1/workspaces`: those the caller belongs to (all of them for a platform admin; its
/// own for an API key).
pub async fn list(
    state: &AppState,
    who: &Principal,
    cursor: Option<String>,
    limit: u32,
) -> Result<(Vec<WorkspaceRow>, Option<String>), AppError> {
    if let Credential::ApiKey { workspace_id, .. } = &who.credential {
        let a = access(state, who, workspace_id).await?;
        let visible = a.allows("read", &workspace_resource(&a.ws));
        return Ok((if visible { vec![a.ws] } else { Vec::new() }, None));
    }
    let me = super::users::get(state, &who.user_id).await?;
    let limit = i64::from(limit.clamp(1, 200));
    let after = super::parse_cursor(cursor.as_deref())?;
    let member = if me.is_admin { None } else { Some(me.id.clone()) };
    let mut rows = state
        .db
        .read(move |tx| {
            tx.workspaces_page(member.as_deref(), after.as_ref().map(|(t, i)| (*t, i.as_str())), limit + 1)
                .map_err(AppError::from)
        })
        .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows.last().map(|w| format!("{}_{}", w.created_at_ms, w.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// `GET /v1/workspaces/{ws}`.
pub async fn get(state: &AppState, who: &Principal, reference: &str) -> Result<WorkspaceRow, AppError> {
    let a = access(state, who, reference).await?;
    a.check("read", &workspace_resource(&a.ws))?;
    Ok(a.ws)
}

/// `PATCH /v1/workspaces/{ws}`.
pub async fn update(
    state: &AppState,
    who: &Principal,
    reference: &str,
    slug: Option<String>,
    name: Option<String>,
    origin: &Origin,
) -> Result<WorkspaceRow, AppError> {
    let a = access(state, who, reference).await?;
    let checked = a.check("update", &workspace_resource(&a.ws))?;
    if let Some(s) = &slug {
        check_slug(s)?;
    }
    let name = name.map(|n| check_text("name", &n, 200)).transpose()?;
    let now = state.clock.now();
    let key = state.auditor.clone();
    let before = a.ws.clone();
    let new_slug = slug.unwrap_or_else(|| before.slug.clone());
    let new_name = name.unwrap_or_else(|| before.name.clone());
    let event = a.event(
        "workspace.updated",
        &checked,
        origin,
        json!({ "before": { "slug": before.slug, "name": before.name }, "after": { "slug": new_slug, "name": new_name } }),
    );
    let id = before.id.clone();
    state
        .db
        .write(move |tx| {
            if new_slug != before.slug {
                if let Some(other) = tx.workspace_by_ref(&new_slug)? {
                    if other.id != id {
                        return Err(AppError::Conflict("slug: a workspace with this slug already exists".into()));
                    }
                }
            }
            tx.workspace_update(&id, &new_slug, &new_name, unix_ms(now)).map_err(|e| match e {
                crate::db::DbError::Unique => {
                    AppError::Conflict("slug: a workspace with this slug already exists".into())
                }
                e => e.into(),
            })?;
            audit::record(tx, &key, now, &event.target(id.clone()))?;
            tx.workspace_by_ref(&id)?.ok_or(AppError::NotFound)
        })
        .await
}

/// `DELETE /v1/workspaces/{ws}`: members, roles and keys go with it.
pub async fn delete(state: &AppState, who: &Principal, reference: &str, origin: &Origin) -> Result<(), AppError> {
    let a = access(state, who, reference).await?;
    let checked = a.check("delete", &workspace_resource(&a.ws))?;
    let now = state.clock.now();
    let key = state.auditor.clone();
    let ws = a.ws.clone();
    let event = a.event("workspace.deleted", &checked, origin, json!({ "slug": ws.slug, "name": ws.name }));
    state
        .db
        .write(move |tx| {
            let (members, keys) = tx.workspace_counts(&ws.id)?;
            let data_keys = tx.vault_key_ids_of(&ws.id)?;
            tx.workspace_delete(&ws.id)?;
            let mut event = event.target(ws.id.clone());
            if let Value::Object(m) = &mut event.details {
                m.insert("members_removed".into(), json!(members));
                m.insert("api_keys_deleted".into(), json!(keys));
            }
            audit::record(tx, &key, now, &event)?;
            Ok(data_keys)
        })
        .await
        .map(|data_keys| {
            // Its secrets are gone with their data keys: none stays in memory either.
            for id in data_keys {
                state.vault.forget(&id);
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Members

/// A member with role names.
#[derive(Debug, Clone)]
pub struct Member {
    pub row: MemberRow,
    pub roles: Vec<String>,
}

/// The rules of the roles with these ids.
fn rules_of_roles(book: &HashMap<String, Arc<CachedRole>>, ids: &[String]) -> Vec<Rule> {
    ids.iter().filter_map(|id| book.get(id)).flat_map(|r| r.rules.iter().cloned()).collect()
}

/// The id of the workspace's built-in `owner` role.
fn owner_role_id(book: &HashMap<String, Arc<CachedRole>>) -> Option<String> {
    book.values().find(|r| r.row.builtin && r.row.name == "owner").map(|r| r.row.id.clone())
}

fn role_names(book: &HashMap<String, Arc<CachedRole>>, ids: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ids.iter().filter_map(|id| book.get(id).map(|r| r.row.name.clone())).collect();
    names.sort();
    names
}

fn member_resource(user_id: &str) -> Resource {
    Resource::new("member").with("id", user_id.to_string())
}

/// `GET /v1/workspaces/{ws}/members`.
pub async fn members(state: &AppState, who: &Principal, reference: &str) -> Result<Vec<Member>, AppError> {
    let a = access(state, who, reference).await?;
    a.check("read", &Resource::new("member"))?;
    let book = roles_of(state, &a.ws.id).await?;
    let id = a.ws.id.clone();
    let rows = state.db.read(move |tx| tx.members_of(&id).map_err(AppError::from)).await?;
    Ok(rows
        .into_iter()
        .filter(|m| a.allows("read", &member_resource(&m.user_id)))
        .map(|row| Member { roles: role_names(&book, &row.role_ids), row })
        .collect())
}

/// The most roles one member may hold.
pub const MAX_MEMBER_ROLES: usize = 64;

/// Resolve role names or ids of this workspace; unknown ones are a 400 naming the entry.
fn resolve_roles(book: &HashMap<String, Arc<CachedRole>>, wanted: &[String]) -> Result<Vec<Arc<CachedRole>>, AppError> {
    if wanted.is_empty() || wanted.len() > MAX_MEMBER_ROLES {
        return Err(AppError::Invalid(format!("roles: give 1 to {MAX_MEMBER_ROLES} roles")));
    }
    let mut out: Vec<Arc<CachedRole>> = Vec::new();
    for (i, r) in wanted.iter().enumerate() {
        let found = book.get(r).or_else(|| book.values().find(|c| c.row.name == *r));
        match found {
            Some(c) if !out.iter().any(|o| o.row.id == c.row.id) => out.push(c.clone()),
            Some(_) => {}
            None => {
                return Err(AppError::Invalid(format!(
                    "roles[{i}]: no role '{}' in this workspace",
                    r.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    Ok(out)
}

async fn find_user(state: &AppState, reference: &str) -> Result<UserRow, AppError> {
    let r = reference.to_string();
    let found = state
        .db
        .read(move |tx| {
            if r.contains('@') {
                tx.user_by_email(&r).map_err(AppError::from)
            } else {
                tx.user_by_id(&r).map_err(AppError::from)
            }
        })
        .await?;
    found.ok_or(AppError::NotFound)
}

/// `PUT /v1/workspaces/{ws}/members/{user}`: add the user (by id or email) or set its roles.
/// Returns the member and whether it is new.
pub async fn set_member(
    state: &AppState,
    who: &Principal,
    reference: &str,
    user_ref: &str,
    roles: Vec<String>,
    origin: &Origin,
) -> Result<(Member, bool), AppError> {
    let a = access(state, who, reference).await?;
    let user = find_user(state, user_ref).await?;
    let book = roles_of(state, &a.ws.id).await?;
    let current = membership(state, &a.ws.id, &user.id).await?;
    let action = if current.is_some() { "update" } else { "create" };
    let checked = a.check(action, &member_resource(&user.id))?;
    let granted = resolve_roles(&book, &roles)?;
    let granted_rules: Vec<Rule> = granted.iter().flat_map(|r| r.rules.iter().cloned()).collect();
    a.within(&granted_rules)?;
    if let Some(ids) = &current {
        if user.id != a.user_id {
            let held = rules_of_roles(&book, ids);
            a.within(&held).map_err(|_| {
                AppError::Forbidden("This member has rights you do not have; you may not change its roles.".into())
            })?;
        }
    }
    if user.kind == "anonymous" && granted.iter().any(|r| r.row.name == "owner") {
        return Err(AppError::Invalid("roles: an anonymous user cannot be an owner".into()));
    }
    let before = current.as_ref().map(|ids| role_names(&book, ids));
    let after_ids: Vec<String> = granted.iter().map(|r| r.row.id.clone()).collect();
    let after = role_names(&book, &after_ids);
    let owner_id = owner_role_id(&book);
    let event = a.event(
        if current.is_some() { "member.updated" } else { "member.added" },
        &checked,
        origin,
        json!({ "before": before, "after": after }),
    );
    let now = state.clock.now();
    let key = state.auditor.clone();
    let ws_id = a.ws.id.clone();
    let uid = user.id.clone();
    let created = current.is_none();
    state
        .db
        .write(move |tx| {
            // The last owner stays an owner (checked in the transaction, against current data).
            let held = tx.member_role_ids(&ws_id, &uid)?;
            if let (Some(owner), Some(held)) = (&owner_id, &held) {
                if held.contains(owner) && !after_ids.contains(owner) && tx.role_holders_except(owner, &uid)? == 0 {
                    return Err(AppError::Conflict("roles: the workspace's last owner cannot be demoted".into()));
                }
            }
            tx.member_set(&ws_id, &uid, &after_ids, unix_ms(now))?;
            audit::record(tx, &key, now, &event.target(uid.clone()))?;
            let row = tx
                .members_of(&ws_id)?
                .into_iter()
                .find(|m| m.user_id == uid)
                .ok_or_else(|| AppError::internal("member vanished in its own transaction"))?;
            Ok(row)
        })
        .await
        .map(|row| (Member { roles: after, row }, created))
}

/// `DELETE /v1/workspaces/{ws}/members/{user}`. A member may always leave (unless it is the
/// last owner).
pub async fn remove_member(
    state: &AppState,
    who: &Principal,
    reference: &str,
    user_ref: &str,
    origin: &Origin,
) -> Result<(), AppError> {
    let a = access(state, who, reference).await?;
    let user = find_user(state, user_ref).await?;
    let book = roles_of(state, &a.ws.id).await?;
    let current = membership(state, &a.ws.id, &user.id).await?.ok_or(AppError::NotFound)?;
    let leaving = user.id == a.user_id && !a.is_api_key;
    let checked = if leaving {
        Checked { decision: Decision::allow("a member may leave", None), as_admin: false }
    } else {
        let c = a.check("delete", &member_resource(&user.id))?;
        let held = rules_of_roles(&book, &current);
        a.within(&held).map_err(|_| {
            AppError::Forbidden("This member has rights you do not have; you may not remove it.".into())
        })?;
        c
    };
    let owner_id = owner_role_id(&book);
    let event =
        a.event("member.removed", &checked, origin, json!({ "before": role_names(&book, &current), "after": null }));
    let now = state.clock.now();
    let key = state.auditor.clone();
    let ws_id = a.ws.id.clone();
    let uid = user.id.clone();
    state
        .db
        .write(move |tx| {
            let held = tx.member_role_ids(&ws_id, &uid)?.ok_or(AppError::NotFound)?;
            if let Some(owner) = &owner_id {
                if held.contains(owner) && tx.role_holders_except(owner, &uid)? == 0 {
                    return Err(AppError::Conflict("The workspace's last owner cannot be removed.".into()));
                }
            }
            tx.member_delete(&ws_id, &uid)?;
            audit::record(tx, &key, now, &event.target(uid.clone()))?;
            Ok(())
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Roles

/// A role as the API shows it, with the number of members holding it.
#[derive(Debug, Clone)]
pub struct RoleView {
    pub row: RoleRow,
    pub rules: Vec<Rule>,
}

fn role_resource(r: &RoleRow) -> Resource {
    Resource::new("role").with("id", r.id.clone()).with("name", r.name.clone())
}

fn check_role_name(name: &str) -> Result<(), AppError> {
    let b = name.as_bytes();
    let ok = (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
        && !authz::BUILTIN_ROLES.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(
            "name: 1 to 64 characters of a-z, 0-9, - and _, starting with a letter, not owner, editor or viewer".into(),
        ))
    }
}

fn rules_json(rules: &[Rule]) -> Result<String, AppError> {
    serde_json::to_string(rules).map_err(AppError::internal)
}

/// What changed between two rule lists, for the audit record.
fn rule_diff(before: &[Rule], after: &[Rule]) -> Value {
    let added: Vec<&Rule> = after.iter().filter(|r| !before.contains(r)).collect();
    let removed: Vec<&Rule> = before.iter().filter(|r| !after.contains(r)).collect();
    json!({ "added": added, "removed": removed })
}

/// `GET /v1/workspaces/{ws}/roles`.
pub async fn roles(state: &AppState, who: &Principal, reference: &str) -> Result<Vec<RoleView>, AppError> {
    let a = access(state, who, reference).await?;
    a.check("read", &Resource::new("role"))?;
    let book = roles_of(state, &a.ws.id).await?;
    let mut out: Vec<RoleView> = book
        .values()
        .filter(|r| a.allows("read", &role_resource(&r.row)))
        .map(|r| RoleView { row: r.row.clone(), rules: r.rules.clone() })
        .collect();
    // Built-in roles first, in their fixed order; then custom roles by age.
    let rank = |r: &RoleRow| match authz::BUILTIN_ROLES.iter().position(|b| r.builtin && *b == r.name) {
        Some(i) => i as i64 - 10,
        None => 0,
    };
    out.sort_by(|x, y| {
        rank(&x.row)
            .cmp(&rank(&y.row))
            .then(x.row.created_at_ms.cmp(&y.row.created_at_ms))
            .then(x.row.name.cmp(&y.row.name))
    });
    Ok(out)
}

async fn find_role(state: &AppState, ws_id: &str, reference: &str) -> Result<Arc<CachedRole>, AppError> {
    let book = roles_of(state, ws_id).await?;
    book.get(reference).or_else(|| book.values().find(|r| r.row.name == reference)).cloned().ok_or(AppError::NotFound)
}

/// `GET /v1/workspaces/{ws}/roles/{role}`.
pub async fn role(state: &AppState, who: &Principal, reference: &str, role: &str) -> Result<RoleView, AppError> {
    let a = access(state, who, reference).await?;
    let r = find_role(state, &a.ws.id, role).await?;
    a.check("read", &role_resource(&r.row))?;
    Ok(RoleView { row: r.row.clone(), rules: r.rules.clone() })
}

/// `POST /v1/workspaces/{ws}/roles`.
pub async fn create_role(
    state: &AppState,
    who: &Principal,
    reference: &str,
    name: String,
    description: Option<String>,
    rules: Vec<RuleInput>,
    origin: &Origin,
) -> Result<RoleView, AppError> {
    let a = access(state, who, reference).await?;
    let checked = a.check("create", &Resource::new("role").with("name", name.clone()))?;
    check_role_name(&name)?;
    let description = description.map(|d| check_text("description", &d, 500)).transpose()?;
    let rules = authz::parse_rules(rules, "rules")?;
    a.within(&rules)?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let row = RoleRow {
        id: uuid::Uuid::new_v4().to_string(),
        workspace_id: a.ws.id.clone(),
        name,
        description,
        builtin: false,
        rules: rules_json(&rules)?,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    };
    let event = a.event("role.created", &checked, origin, json!({ "name": row.name, "rules": rule_diff(&[], &rules) }));
    let key = state.auditor.clone();
    let r = row.clone();
    state
        .db
        .write(move |tx| {
            if tx.role_by_ref(&r.workspace_id, &r.name)?.is_some() {
                return Err(AppError::Conflict("name: a role with this name already exists".into()));
            }
            tx.role_insert(&r)?;
            audit::record(tx, &key, now, &event.target(r.id.clone()))?;
            Ok(())
        })
        .await?;
    Ok(RoleView { row, rules })
}

/// `PUT /v1/workspaces/{ws}/roles/{role}`: replace name, description and rules.
#[allow(clippy::too_many_arguments)]
pub async fn update_role(
    state: &AppState,
    who: &Principal,
    reference: &str,
    role: &str,
    name: String,
    description: Option<String>,
    rules: Vec<RuleInput>,
    origin: &Origin,
) -> Result<RoleView, AppError> {
    let a = access(state, who, reference).await?;
    let current = find_role(state, &a.ws.id, role).await?;
    let checked = a.check("update", &role_resource(&current.row))?;
    if current.row.builtin {
        return Err(AppError::Conflict("Built-in roles cannot be changed; create a custom role instead.".into()));
    }
    check_role_name(&name)?;
    let description = description.map(|d| check_text("description", &d, 500)).transpose()?;
    let rules = authz::parse_rules(rules, "rules")?;
    a.within(&rules)?;
    a.within(&current.rules)
        .map_err(|_| AppError::Forbidden("This role has rights you do not have; you may not change it.".into()))?;
    let now = state.clock.now();
    let mut row = current.row.clone();
    row.name = name;
    row.description = description;
    row.rules = rules_json(&rules)?;
    row.updated_at_ms = unix_ms(now);
    let event = a.event(
        "role.updated",
        &checked,
        origin,
        json!({ "before": { "name": current.row.name }, "after": { "name": row.name }, "rules": rule_diff(&current.rules, &rules) }),
    );
    let key = state.auditor.clone();
    let r = row.clone();
    state
        .db
        .write(move |tx| {
            if let Some(other) = tx.role_by_ref(&r.workspace_id, &r.name)? {
                if other.id != r.id {
                    return Err(AppError::Conflict("name: a role with this name already exists".into()));
                }
            }
            tx.role_update(&r.id, &r.name, r.description.as_deref(), &r.rules, r.updated_at_ms)?;
            audit::record(tx, &key, now, &event.target(r.id.clone()))?;
            Ok(())
        })
        .await?;
    Ok(RoleView { row, rules })
}

/// `DELETE /v1/workspaces/{ws}/roles/{role}`: refused while a member holds it.
pub async fn delete_role(
    state: &AppState,
    who: &Principal,
    reference: &str,
    role: &str,
    origin: &Origin,
) -> Result<(), AppError> {
    let a = access(state, who, reference).await?;
    let current = find_role(state, &a.ws.id, role).await?;
    let checked = a.check("delete", &role_resource(&current.row))?;
    if current.row.builtin {
        return Err(AppError::Conflict("Built-in roles cannot be deleted.".into()));
    }
    a.within(&current.rules)
        .map_err(|_| AppError::Forbidden("This role has rights you do not have; you may not delete it.".into()))?;
    let event = a.event(
        "role.deleted",
        &checked,
        origin,
        json!({ "name": current.row.name, "rules": rule_diff(&current.rules, &[]) }),
    );
    let key = state.auditor.clone();
    let now = state.clock.now();
    let id = current.row.id.clone();
    state
        .db
        .write(move |tx| {
            let n = tx.role_assignments(&id)?;
            if n > 0 {
                return Err(AppError::Conflict(format!(
                    "This role is still assigned to {n} member(s); change their roles first."
                )));
            }
            tx.role_delete(&id)?;
            audit::record(tx, &key, now, &event.target(id.clone()))?;
            Ok(())
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Decisions for backend services

/// One question: may `principal` (a user id; `None` for the caller) do `action` on a resource
/// of `subject` with these attributes?
#[derive(Debug, Clone)]
pub struct Check {
    pub principal: Option<String>,
    pub action: String,
    pub subject: String,
    pub resource: BTreeMap<String, Value>,
}

/// The most questions one request may ask.
pub const MAX_CHECKS: usize = 1000;

fn check_question(c: &Check, at: &str) -> Result<(), AppError> {
    let name_ok = |s: &str| {
        (1..=64).contains(&s.len())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
    };
    if !name_ok(&c.action) {
        return Err(AppError::Invalid(format!("{at}action: a lower-case name of 1 to 64 characters")));
    }
    if !name_ok(&c.subject) {
        return Err(AppError::Invalid(format!("{at}subject: a lower-case name of 1 to 64 characters")));
    }
    if c.resource.len() > 32 {
        return Err(AppError::Invalid(format!("{at}resource: at most 32 attributes")));
    }
    for (k, v) in &c.resource {
        let scalar = matches!(v, Value::String(s) if s.len() <= 1024) || matches!(v, Value::Number(_) | Value::Bool(_));
        if k.is_empty() || k.len() > 64 || !scalar {
            return Err(AppError::Invalid(format!(
                "{at}resource.{}: attribute names have 1 to 64 characters and values are strings (at most 1024 \
                 bytes), numbers or booleans",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// `POST /v1/workspaces/{ws}/authorize`: answers each question in order. Asking about another
/// user needs `authorize` on `workspace`.
pub async fn authorize(
    state: &AppState,
    who: &Principal,
    reference: &str,
    checks: Vec<Check>,
    batch: bool,
) -> Result<Vec<Decision>, AppError> {
    let a = access(state, who, reference).await?;
    if checks.is_empty() || checks.len() > MAX_CHECKS {
        return Err(AppError::Invalid(format!("checks: give 1 to {MAX_CHECKS} checks")));
    }
    for (i, c) in checks.iter().enumerate() {
        let at = if batch { format!("checks[{i}].") } else { String::new() };
        check_question(c, &at)?;
    }
    let asks_for_others = checks.iter().any(|c| c.principal.as_deref().is_some_and(|p| p != a.user_id || a.is_api_key));
    if asks_for_others {
        a.check("authorize", &workspace_resource(&a.ws))?;
    }
    let mut others: HashMap<String, Rights> = HashMap::new();
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        let res = Resource { subject: c.subject, attributes: c.resource };
        let rights = match c.principal {
            None => &a.rights,
            Some(p) if p == a.user_id && !a.is_api_key => &a.rights,
            Some(p) => {
                if !others.contains_key(&p) {
                    let user = state.db.user_cached(&p).await?;
                    let r = match user {
                        Some(u) => rights_of_user(state, &a.ws.id, &u).await?.0,
                        None => Rights::None,
                    };
                    others.insert(p.clone(), r);
                }
                others.get(&p).unwrap_or(&Rights::None)
            }
        };
        out.push(authz::decide(rights, &c.action, &res));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// API keys

fn key_resource(k: &ApiKeyRow) -> Resource {
    Resource::new("api_key").with("id", k.id.clone()).with("created_by", k.created_by.clone())
}

async fn key_by_id(state: &AppState, ws_id: &str, id: &str) -> Result<Option<Arc<CachedKey>>, AppError> {
    let svc = &state.workspaces;
    if let Some(k) = svc.keys_by_id.get(&state.db, &id.to_string()) {
        return Ok((k.row.workspace_id == ws_id).then_some(k));
    }
    let seen = state.db.generation();
    let (w, i) = (ws_id.to_string(), id.to_string());
    let row = state.db.read(move |tx| tx.api_key(&w, &i).map_err(AppError::from)).await?;
    let Some(row) = row else { return Ok(None) };
    let k = Arc::new(compile_key(row));
    svc.keys_by_id.put(seen, id.to_string(), k.clone());
    Ok(Some(k))
}

/// A new key's secret, shown once.
#[derive(Debug)]
pub struct NewKey {
    pub key: SecretString,
    pub row: ApiKeyRow,
    pub rules: Vec<Rule>,
}

fn check_expiry(state: &AppState, expires_at_ms: Option<i64>) -> Result<(), AppError> {
    if let Some(t) = expires_at_ms {
        if t <= unix_ms(state.clock.now()) {
            return Err(AppError::Invalid("expires_at: must be in the future".into()));
        }
    }
    Ok(())
}

/// `GET /v1/workspaces/{ws}/api-keys`.
pub async fn api_keys(
    state: &AppState,
    who: &Principal,
    reference: &str,
) -> Result<Vec<(ApiKeyRow, Vec<Rule>)>, AppError> {
    let a = access(state, who, reference).await?;
    a.check("read", &Resource::new("api_key"))?;
    let id = a.ws.id.clone();
    let rows = state.db.read(move |tx| tx.api_keys_of(&id).map_err(AppError::from)).await?;
    Ok(rows
        .into_iter()
        .filter(|k| a.allows("read", &key_resource(k)))
        .map(|k| {
            let rules = parse_stored_rules(&k.rules);
            (k, rules)
        })
        .collect())
}

/// `GET /v1/workspaces/{ws}/api-keys/{id}`.
pub async fn api_key(
    state: &AppState,
    who: &Principal,
    reference: &str,
    id: &str,
) -> Result<(ApiKeyRow, Vec<Rule>), AppError> {
    let a = access(state, who, reference).await?;
    let k = key_by_id(state, &a.ws.id, id).await?.ok_or(AppError::NotFound)?;
    a.check("read", &key_resource(&k.row))?;
    Ok((k.row.clone(), k.rules.clone()))
}

/// `POST /v1/workspaces/{ws}/api-keys`: the key's rules must stay within the caller's rights.
pub async fn create_api_key(
    state: &AppState,
    who: &Principal,
    reference: &str,
    name: String,
    rules: Vec<RuleInput>,
    expires_at_ms: Option<i64>,
    origin: &Origin,
) -> Result<NewKey, AppError> {
    let a = access(state, who, reference).await?;
    if a.is_api_key {
        return Err(AppError::Forbidden("API keys cannot create API keys.".into()));
    }
    let checked = a.check("create", &Resource::new("api_key").with("created_by", a.user_id.clone()))?;
    let name = check_text("name", &name, 100)?;
    let rules = authz::parse_rules(rules, "rules")?;
    a.within(&rules)?;
    check_expiry(state, expires_at_ms)?;
    let secret = token::generate(Kind::ApiKey);
    let hash = token::digest(secret.expose());
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let row = ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        workspace_id: a.ws.id.clone(),
        name,
        hint: token::hint(secret.expose()),
        rules: rules_json(&rules)?,
        created_by: a.user_id.clone(),
        enabled: true,
        expires_at_ms,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        rotated_at_ms: None,
        last_used_at_ms: None,
        last_used_ip: None,
    };
    let event = a.event(
        "api_key.created",
        &checked,
        origin,
        json!({ "name": row.name, "rules": rules, "expires_at": expires_at_ms }),
    );
    let key = state.auditor.clone();
    let r = row.clone();
    state
        .db
        .write(move |tx| {
            tx.api_key_insert(&r, &hash)?;
            audit::record(tx, &key, now, &event.target(r.id.clone()))?;
            Ok::<_, AppError>(())
        })
        .await?;
    Ok(NewKey { key: secret, row, rules })
}

/// What `PATCH /v1/workspaces/{ws}/api-keys/{id}` may change.
#[derive(Debug, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub rules: Option<Vec<RuleInput>>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the expiry.
    pub expires_at_ms: Option<Option<i64>>,
}

/// `PATCH /v1/workspaces/{ws}/api-keys/{id}`.
pub async fn update_api_key(
    state: &AppState,
    who: &Principal,
    reference: &str,
    id: &str,
    change: KeyChange,
    origin: &Origin,
) -> Result<(ApiKeyRow, Vec<Rule>), AppError> {
    let a = access(state, who, reference).await?;
    let current = key_by_id(state, &a.ws.id, id).await?.ok_or(AppError::NotFound)?;
    let checked = a.check("update", &key_resource(&current.row))?;
    let name = change.name.map(|n| check_text("name", &n, 100)).transpose()?;
    let rules = change.rules.map(|r| authz::parse_rules(r, "rules")).transpose()?;
    if let Some(r) = &rules {
        a.within(r)?;
    }
    if let Some(e) = change.expires_at_ms {
        check_expiry(state, e)?;
    }
    let mut details = serde_json::Map::new();
    if let Some(n) = &name {
        details.insert("name".into(), json!({ "before": current.row.name, "after": n }));
    }
    if let Some(r) = &rules {
        details.insert("rules".into(), rule_diff(&current.rules, r));
    }
    if let Some(e) = change.enabled {
        details.insert("enabled".into(), json!({ "before": current.row.enabled, "after": e }));
    }
    if let Some(e) = change.expires_at_ms {
        details.insert("expires_at".into(), json!({ "before": current.row.expires_at_ms, "after": e }));
    }
    let action = match change.enabled {
        Some(false) if current.row.enabled => "api_key.disabled",
        Some(true) if !current.row.enabled => "api_key.enabled",
        _ => "api_key.updated",
    };
    let event = a.event(action, &checked, origin, Value::Object(details));
    let patch = ApiKeyPatch {
        name,
        rules: rules.as_ref().map(|r| rules_json(r)).transpose()?,
        enabled: change.enabled,
        expires_at_ms: change.expires_at_ms,
    };
    let now = state.clock.now();
    let key = state.auditor.clone();
    let (ws_id, kid) = (a.ws.id.clone(), current.row.id.clone());
    let row = state
        .db
        .write(move |tx| {
            tx.api_key_update(&kid, &patch, unix_ms(now))?;
            audit::record(tx, &key, now, &event.target(kid.clone()))?;
            tx.api_key(&ws_id, &kid)?.ok_or(AppError::NotFound)
        })
        .await?;
    let rules = parse_stored_rules(&row.rules);
    Ok((row, rules))
}

/// `POST /v1/workspaces/{ws}/api-keys/{id}/rotate`: a new secret; the old one stops at once.
pub async fn rotate_api_key(
    state: &AppState,
    who: &Principal,
    reference: &str,
    id: &str,
    origin: &Origin,
) -> Result<NewKey, AppError> {
    let a = access(state, who, reference).await?;
    let current = key_by_id(state, &a.ws.id, id).await?.ok_or(AppError::NotFound)?;
    let checked = a.check("rotate", &key_resource(&current.row))?;
    let secret = token::generate(Kind::ApiKey);
    let hash = token::digest(secret.expose());
    let hint = token::hint(secret.expose());
    let event = a.event("api_key.rotated", &checked, origin, json!({ "name": current.row.name }));
    let now = state.clock.now();
    let key = state.auditor.clone();
    let (ws_id, kid) = (a.ws.id.clone(), current.row.id.clone());
    let row = state
        .db
        .write(move |tx| {
            tx.api_key_rotate(&kid, &hint, &hash, unix_ms(now))?;
            audit::record(tx, &key, now, &event.target(kid.clone()))?;
            tx.api_key(&ws_id, &kid)?.ok_or(AppError::NotFound)
        })
        .await?;
    Ok(NewKey { key: secret, rules: current.rules.clone(), row })
}

/// `DELETE /v1/workspaces/{ws}/api-keys/{id}`.
pub async fn delete_api_key(
    state: &AppState,
    who: &Principal,
    reference: &str,
    id: &str,
    origin: &Origin,
) -> Result<(), AppError> {
    let a = access(state, who, reference).await?;
    let current = key_by_id(state, &a.ws.id, id).await?.ok_or(AppError::NotFound)?;
    let checked = a.check("delete", &key_resource(&current.row))?;
    let event = a.event("api_key.deleted", &checked, origin, json!({ "name": current.row.name }));
    let now = state.clock.now();
    let key = state.auditor.clone();
    let kid = current.row.id.clone();
    state
        .db
        .write(move |tx| {
            tx.api_key_delete(&kid)?;
            audit::record(tx, &key, now, &event.target(kid.clone()))?;
            Ok(())
        })
        .await
}

/// Check an API key: well-formed, known, enabled, not expired, and its creator still an active
/// member of its workspace (or a platform admin). Its last use is recorded in batches; its first
/// use from an address is audited.
pub async fn authenticate_api_key(
    state: &AppState,
    secret: SecretString,
    ip: Option<String>,
    origin: impl FnOnce() -> Origin,
) -> Result<Principal, AppError> {
    let refuse = |state: &AppState, msg: &str| {
        state.metrics.security_event("auth.api_key.rejected");
        AppError::Unauthorized(msg.to_string())
    };
    if !token::well_formed(secret.expose(), Kind::ApiKey) {
        return Err(refuse(state, "The API key is invalid."));
    }
    let hash = token::digest(secret.expose());
    let svc = &state.workspaces;
    let key = match svc.keys_by_hash.get(&state.db, &hash) {
        Some(k) => Some(k),
        None => {
            let seen = state.db.generation();
            let row = state.db.read(move |tx| tx.api_key_by_hash(&hash).map_err(AppError::from)).await?;
            row.map(|r| {
                let k = Arc::new(compile_key(r));
                svc.keys_by_hash.put(seen, hash, k.clone());
                k
            })
        }
    };
    let now_ms = unix_ms(state.clock.now());
    let Some(key) = key.filter(|k| k.row.enabled && k.row.expires_at_ms.is_none_or(|t| t > now_ms)) else {
        return Err(refuse(state, "The API key is invalid, disabled or expired."));
    };
    let creator = state.db.user_cached_map(&key.row.created_by, |u| (u.disabled, u.is_admin)).await?;
    let creator_ok = match creator {
        Some((false, is_admin)) if !state.auth.revocations.user_blocked(&key.row.created_by) => {
            is_admin || is_member(state, &key.row.workspace_id, &key.row.created_by).await?
        }
        _ => false,
    };
    if !creator_ok {
        return Err(refuse(state, "The API key no longer works: its creator left the workspace or was disabled."));
    }
    if let Some(ip) = &ip {
        note_key_ip(state, &key.row, ip, now_ms, origin).await?;
    }
    if let Ok(mut uses) = svc.key_uses.lock() {
        match uses.get_mut(&key.row.id) {
            Some(last) => *last = (now_ms, ip),
            None => {
                uses.insert(key.row.id.clone(), (now_ms, ip));
            }
        }
    }
    Ok(Principal {
        user_id: key.row.created_by.clone(),
        credential: Credential::ApiKey { key_id: key.row.id.clone(), workspace_id: key.row.workspace_id.clone() },
    })
}

async fn note_key_ip(
    state: &AppState,
    key: &ApiKeyRow,
    ip: &str,
    now_ms: i64,
    origin: impl FnOnce() -> Origin,
) -> Result<(), AppError> {
    let seen = state.workspaces.key_ips.lock().is_ok_and(|s| s.get(&key.id).is_some_and(|ips| ips.contains(ip)));
    if seen {
        return Ok(());
    }
    let origin = &origin();
    let pair = (key.id.clone(), ip.to_string());
    let now = state.clock.now();
    let audit_key = state.auditor.clone();
    let event = Event::new("api_key.used_from_new_ip", Actor::ApiKey(key.id.clone()))
        .workspace(key.workspace_id.clone())
        .target(key.id.clone())
        .origin(origin);
    let (kid, addr) = pair.clone();
    state
        .db
        .write(move |tx| {
            let known = tx.api_key_ip_count(&kid)?;
            if tx.api_key_ip_first_seen(&kid, &addr, now_ms)? {
                // `first_address`: the key's very first use, which the monitor does not alert on.
                let event = event.details(json!({ "ip": addr, "first_address": known == 0 }));
                audit::record(tx, &audit_key, now, &event)?;
            }
            Ok::<_, AppError>(())
        })
        .await?;
    if let Ok(mut s) = state.workspaces.key_ips.lock() {
        // Bounded by addresses, not keys: one key seen from many addresses must not grow it.
        if s.values().map(HashSet::len).sum::<usize>() >= 100_000 {
            s.clear();
        }
        s.entry(pair.0).or_default().insert(pair.1);
    }
    Ok(())
}

/// Write the batched last-use times of API keys.
pub async fn flush_key_uses(state: &AppState) -> Result<(), AppError> {
    let uses: Vec<_> = match state.workspaces.key_uses.lock() {
        Ok(mut m) => m.drain().collect(),
        Err(_) => Vec::new(),
    };
    if uses.is_empty() {
        return Ok(());
    }
    state
        .db
        .write(move |tx| {
            for (id, (at, ip)) in &uses {
                tx.api_key_touch(id, *at, ip.as_deref())?;
            }
            Ok::<_, AppError>(())
        })
        .await
}
