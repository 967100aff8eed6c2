//! Personal access tokens: created by a signed-in user (with a session, never with another
//! token), shown once, stored as SHA-256, required expiry capped by configuration, listed
//! without secrets, revoked at once.

use super::audit::{self, Event, Origin};
use super::auth::{Credential, Principal};
use super::unix_ms;
use crate::crypto::token::{self, Kind};
use crate::crypto::SecretString;
use crate::db::PatRow;
use crate::error::AppError;
use crate::state::AppState;

/// A new token and its record.
#[derive(Debug)]
pub struct NewToken {
    pub token: SecretString,
    pub row: PatRow,
}

/// Operations that need a session refuse other credentials with this.
pub fn require_session(who: &Principal) -> Result<(), AppError> {
    match who.credential {
        Credential::Session { .. } => Ok(()),
        Credential::PersonalAccessToken { .. } => Err(AppError::Forbidden(
            "This operation needs a signed-in session; personal access tokens cannot do it.".into(),
        )),
        Credential::ApiKey { .. } => {
            Err(AppError::Forbidden("This operation needs a signed-in session; API keys cannot do it.".into()))
        }
    }
}

pub async fn create(
    state: &AppState,
    who: &Principal,
    name: &str,
    expires_at_ms: i64,
    origin: &Origin,
) -> Result<NewToken, AppError> {
    require_session(who)?;
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::Invalid("name must have 1 to 100 characters".into()));
    }
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    if expires_at_ms <= now_ms {
        return Err(AppError::Invalid("expires_at must be in the future".into()));
    }
    if expires_at_ms > now_ms + state.auth.settings.pat_max_ms {
        return Err(AppError::Invalid(format!(
            "expires_at is too far away: tokens live at most {} days on this server",
            state.auth.settings.pat_max_ms / 86_400_000
        )));
    }
    let secret = token::generate(Kind::PersonalAccessToken);
    let hash = token::digest(secret.expose());
    let row = PatRow {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: who.user_id.clone(),
        name,
        hint: token::hint(secret.expose()),
        created_at_ms: now_ms,
        expires_at_ms,
        last_used_at_ms: None,
        last_used_ip: None,
        revoked_at_ms: None,
    };
    let key = state.auditor.clone();
    let actor = who.actor();
    let o = origin.clone();
    let r = row.clone();
    state
        .db
        .write(move |tx| {
            let user = tx.user_by_id(&r.user_id)?.ok_or(AppError::NotFound)?;
            if user.kind != "local" {
                return Err(AppError::Forbidden("Anonymous users cannot create tokens; sign up first.".into()));
            }
            tx.pat_insert(&r.id, &r.user_id, &r.name, &hash, &r.hint, r.created_at_ms, r.expires_at_ms)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("token.created", actor)
                    .target(r.id.clone())
                    .origin(&o)
                    .details(serde_json::json!({ "name": r.name, "expires_at_ms": r.expires_at_ms })),
            )
            .map(|_| ())
        })
        .await?;
    Ok(NewToken { token: secret, row })
}

pub async fn list(state: &AppState, who: &Principal) -> Result<Vec<PatRow>, AppError> {
    // Pending last-use times first, so the list is current.
    super::auth::flush_token_uses(state).await?;
    let uid = who.user_id.clone();
    state.db.read(move |tx| tx.pats_of_user(&uid).map_err(AppError::from)).await
}

pub async fn revoke(state: &AppState, who: &Principal, id: &str, origin: &Origin) -> Result<(), AppError> {
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let uid = who.user_id.clone();
    let id = id.to_string();
    let o = origin.clone();
    state
        .db
        .write(move |tx| {
            if !tx.pat_revoke(&uid, &id, unix_ms(now))? {
                return Err(AppError::NotFound);
            }
            audit::record(tx, &key, now, &Event::new("token.revoked", actor).target(id).origin(&o)).map(|_| ())
        })
        .await
}
