//! Users as the API sees them: the caller's own profile and password, and the platform
//! admin's user management (list with search and cursor, create, update, disable, delete).
//! Disabling or deleting a user ends its sessions and tokens at once; deleting erases the
//! personal data and leaves the audit trail, which names users only by id, as a pseudonym.

use super::audit::{self, Actor, Event, Origin};
use super::auth::Principal;
use super::{accounts, unix_ms};
use crate::crypto::token::{self, Kind};
use crate::crypto::SecretString;
use crate::db::{UserPatch, UserRow};
use crate::error::AppError;
use crate::state::AppState;

pub async fn get(state: &AppState, id: &str) -> Result<UserRow, AppError> {
    state.db.user_cached(id).await?.ok_or(AppError::NotFound)
}

/// The caller must be a platform admin (read fresh: a revoked admin flag counts at once).
pub async fn require_admin(state: &AppState, who: &Principal) -> Result<UserRow, AppError> {
    let me =
        get(state, &who.user_id).await.map_err(|_| AppError::Unauthorized("The account no longer exists.".into()))?;
    if !me.is_admin || me.disabled {
        return Err(AppError::Forbidden("Only platform administrators may do this.".into()));
    }
    Ok(me)
}

/// `PATCH /v1/me`: the caller may change their display name.
pub async fn update_me(
    state: &AppState,
    who: &Principal,
    name: Option<String>,
    origin: &Origin,
) -> Result<UserRow, AppError> {
    if let Some(n) = &name {
        if n.chars().count() > 200 {
            return Err(AppError::Invalid("name must have at most 200 characters".into()));
        }
    }
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let uid = who.user_id.clone();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
            tx.user_patch(&uid, &UserPatch { name: Some(name), ..Default::default() }, unix_ms(now))?;
            audit::record(tx, &key, now, &Event::new("user.updated", actor).target(uid.clone()).origin(&o))?;
            tx.user_by_id(&uid)?.ok_or(AppError::NotFound)
        })
        .await
}

/// `POST /v1/me/password`: check the current password, set the new one, end every other
/// session of the user.
pub async fn change_password(
    state: &AppState,
    who: &Principal,
    current: SecretString,
    new: SecretString,
    origin: &Origin,
) -> Result<usize, AppError> {
    let me = get(state, &who.user_id).await?;
    let email = me.email.clone().unwrap_or_default();
    super::auth::check_account_throttle(state, &me)?;
    let (ok, _) = state.auth.verify_password(current, me.password_hash.clone()).await?;
    if !ok {
        super::auth::record_password_failure(state, &me, "wrong_current_password", origin).await?;
        let event = Event::new("user.password.change_failed", who.actor())
            .target(who.user_id.clone())
            .outcome(audit::Outcome::Failure)
            .origin(origin);
        audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
        return Err(AppError::Forbidden("The current password is incorrect.".into()));
    }
    accounts::check_new_password(new.expose(), &email)?;
    let hash = state.auth.hash_password(new).await?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let actor = who.actor();
    let uid = who.user_id.clone();
    let keep = who.session_id().map(str::to_string);
    let o = origin.clone();
    let st = state.clone();
    state
        .db
        .write(move |tx| {
            tx.user_set_password(&uid, &hash, now_ms)?;
            let others =
                super::sessions::end_all(tx, &st.auth.revocations, &uid, keep.as_deref(), now_ms, "password changed")?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("user.password.changed", actor)
                    .target(uid)
                    .origin(&o)
                    .details(serde_json::json!({ "sessions_revoked": others.len() })),
            )?;
            Ok(others.len())
        })
        .await
}

/// One page of users.
pub async fn list(
    state: &AppState,
    query: Option<String>,
    cursor: Option<String>,
    limit: u32,
) -> Result<(Vec<UserRow>, Option<String>), AppError> {
    let limit = i64::from(limit.clamp(1, 200));
    let after = super::parse_cursor(cursor.as_deref())?;
    let rows = state
        .db
        .read(move |tx| {
            tx.users_page(query.as_deref(), after.as_ref().map(|(t, i)| (*t, i.as_str())), limit + 1)
                .map_err(AppError::from)
        })
        .await?;
    let mut rows = rows;
    let next = if rows.len() as i64 > limit {
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows.last().map(|u| format!("{}_{}", u.created_at_ms, u.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// `POST /v1/users`: an admin creates a local account.
pub async fn create(
    state: &AppState,
    who: &Principal,
    email: &str,
    password: SecretString,
    name: Option<String>,
    origin: &Origin,
) -> Result<UserRow, AppError> {
    let email = accounts::normalize_email(email)?;
    accounts::check_new_password(password.expose(), &email)?;
    let hash = state.auth.hash_password(password).await?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            if tx.user_by_email(&email)?.is_some() {
                return Err(AppError::Conflict("An account with this email already exists.".into()));
            }
            let mut row = UserRow::new(uuid::Uuid::now_v7().to_string(), "local", Some(email), now_ms);
            row.password_hash = Some(hash);
            row.name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
            tx.user_insert(&row)?;
            audit::record(tx, &key, now, &Event::new("user.created", actor).target(row.id.clone()).origin(&o))?;
            Ok(row)
        })
        .await
}

/// Admin changes to a user.
#[derive(Debug, Default)]
pub struct AdminPatch {
    pub name: Option<Option<String>>,
    pub email: Option<String>,
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
}

pub async fn update(
    state: &AppState,
    who: &Principal,
    id: &str,
    patch: AdminPatch,
    origin: &Origin,
) -> Result<UserRow, AppError> {
    let email = patch.email.as_deref().map(accounts::normalize_email).transpose()?;
    if id == who.user_id && (patch.disabled == Some(true) || patch.is_admin == Some(false)) {
        return Err(AppError::Conflict(
            "Administrators cannot disable themselves or drop their own admin role.".into(),
        ));
    }
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    let id = id.to_string();
    let st = state.clone();
    state
        .db
        .write(move |tx| {
            let user = tx.user_by_id(&id)?.ok_or(AppError::NotFound)?;
            let p = UserPatch {
                name: patch.name.map(|n| n.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())),
                email,
                disabled: patch.disabled,
                is_admin: patch.is_admin,
            };
            if p.email.is_some() && user.kind != "local" {
                return Err(AppError::Conflict("Anonymous users have no email to change.".into()));
            }
            tx.user_patch(&id, &p, now_ms).map_err(|e| match e {
                crate::db::DbError::Unique => AppError::Conflict("An account with this email already exists.".into()),
                other => other.into(),
            })?;
            let mut revoked = 0;
            match (user.disabled, p.disabled) {
                (false, Some(true)) => {
                    // Blocked in the view before commit: every credential fails from now on.
                    st.auth.revocations.block_user(&id);
                    // The sessions go into the view too: re-enabling must not revive them.
                    revoked =
                        super::sessions::end_all(tx, &st.auth.revocations, &id, None, now_ms, "user disabled")?.len();
                    tx.pats_revoke_user(&id, now_ms)?;
                    audit::record(
                        tx,
                        &key,
                        now,
                        &Event::new("user.disabled", actor.clone())
                            .target(id.clone())
                            .origin(&o)
                            .details(serde_json::json!({ "sessions_revoked": revoked })),
                    )?;
                }
                (true, Some(false)) => {
                    tx.user_clear_failures(&id)?;
                    audit::record(
                        tx,
                        &key,
                        now,
                        &Event::new("user.enabled", actor.clone()).target(id.clone()).origin(&o),
                    )?;
                }
                _ => {}
            }
            if let Some(admin) = p.is_admin.filter(|a| *a != user.is_admin) {
                let action = if admin { "user.admin.granted" } else { "user.admin.revoked" };
                audit::record(tx, &key, now, &Event::new(action, actor.clone()).target(id.clone()).origin(&o))?;
            }
            if p.name.is_some() || p.email.is_some() {
                let fields: Vec<&str> = [p.name.as_ref().map(|_| "name"), p.email.as_ref().map(|_| "email")]
                    .into_iter()
                    .flatten()
                    .collect();
                audit::record(
                    tx,
                    &key,
                    now,
                    &Event::new("user.updated", actor)
                        .target(id.clone())
                        .origin(&o)
                        .details(serde_json::json!({ "fields": fields, "sessions_revoked": revoked })),
                )?;
            }
            let after = tx.user_by_id(&id)?.ok_or(AppError::NotFound)?;
            if !after.disabled {
                st.auth.revocations.unblock_user(&id);
            }
            Ok(after)
        })
        .await
}

/// `DELETE /v1/users/{id}`: erase the account and everything personal; the audit trail keeps
/// the id.
pub async fn delete(state: &AppState, who: &Principal, id: &str, origin: &Origin) -> Result<(), AppError> {
    if id == who.user_id {
        return Err(AppError::Conflict("Administrators cannot delete their own account.".into()));
    }
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    let id = id.to_string();
    let st = state.clone();
    state
        .db
        .write(move |tx| {
            let user = tx.user_by_id(&id)?.ok_or(AppError::NotFound)?;
            st.auth.revocations.block_user(&id);
            tx.user_tombstone(&id, unix_ms(now))?;
            tx.user_delete(&id)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("user.deleted", actor)
                    .target(id.clone())
                    .origin(&o)
                    .details(serde_json::json!({ "kind": user.kind })),
            )
            .map(|_| ())
        })
        .await
}

/// `POST /v1/users/invites`: an invitation to sign up with `email` (signup mode `invite`).
pub async fn invite(
    state: &AppState,
    who: &Principal,
    email: &str,
    origin: &Origin,
) -> Result<(SecretString, i64), AppError> {
    let email = accounts::normalize_email(email)?;
    let secret = token::generate(Kind::Invite);
    let hash = token::digest(secret.expose());
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let expires = now_ms + state.auth.settings.invite_ms;
    let key = state.auditor.clone();
    let actor = who.actor();
    let by = who.user_id.clone();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            tx.invite_insert(&hash, &email, &by, now_ms, expires)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("user.invited", actor).origin(&o).details(serde_json::json!({ "expires_at_ms": expires })),
            )
            .map(|_| ())
        })
        .await?;
    Ok((secret, expires))
}

/// Purge expired anonymous users (and, by cascade, their sessions). Returns how many.
pub async fn purge_anonymous(state: &AppState) -> Result<usize, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let st = state.clone();
    state
        .db
        .write(move |tx| {
            let ids = tx.expired_anonymous_ids(now_ms, 1000)?;
            for id in &ids {
                st.auth.revocations.block_user(id);
                tx.user_tombstone(id, now_ms)?;
                tx.user_delete(id)?;
            }
            tx.challenges_purge(now_ms)?;
            tx.sessions_purge(now_ms - 7 * 86_400_000)?;
            tx.tombstones_purge(now_ms - st.auth.settings.life.access_ms - 3_600_000)?;
            if !ids.is_empty() {
                audit::record(
                    tx,
                    &key,
                    now,
                    &Event::new("user.anonymous.purged", Actor::System)
                        .details(serde_json::json!({ "count": ids.len() })),
                )?;
            }
            Ok(ids.len())
        })
        .await
}
