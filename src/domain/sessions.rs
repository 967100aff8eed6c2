//! Sessions: the row that holds a sign-in's state, the short-lived access token (JWT) that
//! points at it, the refresh token that renews it (rotated on every use; reuse of a used one
//! revokes the whole session), and the browser cookie with its CSRF token.
//!
//! [`Revocations`] is the in-memory view that makes revocation take effect on the very next
//! request: a revoked session id stays in it until every access token of that session has
//! expired, and a disabled or deleted user stays in it until re-enabled. It is updated before
//! the transaction that revokes commits (a failed commit over-revokes, never under-revokes) and
//! loaded from the database at start.

use super::audit::{self, Actor, Event, Origin, Outcome};
use super::unix_ms;
use crate::crypto::jwt::TimeClaims;
use crate::crypto::token::{self, Kind};
use crate::crypto::SecretString;
use crate::db::{SessionRow, Tx};
use crate::error::AppError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use time::OffsetDateTime;

/// The claims of a Gatehouse access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// RFC 8176 authentication method references: `pwd`, `otp`, `anon`, …
    pub amr: Vec<String>,
}

impl TimeClaims for AccessClaims {
    fn iat(&self) -> i64 {
        self.iat
    }
    fn exp(&self) -> i64 {
        self.exp
    }
}

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    Anonymous,
    /// Single sign-on through an identity provider.
    Sso,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Anonymous => "anonymous",
            Method::Sso => "sso",
        }
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access_ms: i64,
    pub refresh_ms: i64,
    pub max_ms: i64,
}

/// A new session's secrets, shown once.
#[derive(Debug)]
pub struct NewSession {
    pub row: SessionRow,
    pub refresh_token: SecretString,
    pub cookie: Option<SecretString>,
    pub csrf_token: Option<SecretString>,
}

/// Create a session for `user_id` (in `tx`). Cookie mode adds a cookie secret and a CSRF token.
#[allow(clippy::too_many_arguments)]
pub fn start(
    tx: &Tx<'_>,
    user_id: &str,
    method: Method,
    amr: &[&str],
    mfa: bool,
    cookie_mode: bool,
    life: Lifetimes,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<NewSession, AppError> {
    let now_ms = unix_ms(now);
    let (cookie, csrf) = if cookie_mode {
        (Some(token::generate(Kind::SessionCookie)), Some(token::generate(Kind::CsrfToken)))
    } else {
        (None, None)
    };
    let max = now_ms + life.max_ms;
    let row = SessionRow {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_string(),
        created_at_ms: now_ms,
        last_seen_at_ms: now_ms,
        expires_at_ms: (now_ms + life.refresh_ms).min(max),
        max_expires_at_ms: max,
        ip: origin.client_ip.clone(),
        user_agent: origin.user_agent.clone(),
        method: method.as_str().to_string(),
        amr: serde_json::to_string(amr).map_err(AppError::internal)?,
        mfa,
        cookie_hash: cookie.as_ref().map(|c| token::digest(c.expose()).to_vec()),
        csrf_hash: csrf.as_ref().map(|c| token::digest(c.expose()).to_vec()),
        revoked_at_ms: None,
    };
    tx.session_insert(&row)?;
    let refresh_token = token::generate(Kind::RefreshToken);
    tx.refresh_insert(&token::digest(refresh_token.expose()), &row.id, now_ms)?;
    Ok(NewSession { row, refresh_token, cookie, csrf_token: csrf })
}

/// The access token claims for a session at `now`; never outlives the session.
pub fn access_claims(
    row: &SessionRow,
    issuer: &str,
    audience: &str,
    life: Lifetimes,
    now: OffsetDateTime,
) -> AccessClaims {
    let iat = now.unix_timestamp();
    let exp = (iat + life.access_ms / 1000).min(row.expires_at_ms / 1000).max(iat + 1);
    AccessClaims {
        iss: issuer.to_string(),
        aud: audience.to_string(),
        sub: row.user_id.clone(),
        sid: row.id.clone(),
        iat,
        exp,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        amr: serde_json::from_str(&row.amr).unwrap_or_default(),
    }
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Refreshed {
    /// A fresh pair; the old token is now used.
    Rotated { row: Box<SessionRow>, refresh_token: SecretString },
    /// The token was already used: the session is revoked (theft suspected).
    Reused { session_id: String, user_id: String },
    /// Unknown token, or its session is over.
    Invalid,
}

/// Rotate a refresh token (in `tx`). Audits reuse.
pub fn refresh(
    tx: &Tx<'_>,
    key: &crate::domain::audit::Auditor,
    presented: &SecretString,
    life: Lifetimes,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Refreshed, AppError> {
    let now_ms = unix_ms(now);
    if !token::well_formed(presented.expose(), Kind::RefreshToken) {
        return Ok(Refreshed::Invalid);
    }
    let hash = token::digest(presented.expose());
    let Some(found) = tx.refresh_lookup(&hash)? else { return Ok(Refreshed::Invalid) };
    let Some(session) = tx.session_by_id(&found.session_id)? else { return Ok(Refreshed::Invalid) };
    if found.used_at_ms.is_some() || !tx.refresh_mark_used(&hash, now_ms)? {
        let revoked = tx.session_revoke(&session.id, now_ms, "refresh token reused")?;
        audit::record(
            tx,
            key,
            now,
            &Event::new("auth.refresh.reused", Actor::User(session.user_id.clone()))
                .target(session.id.clone())
                .outcome(Outcome::Denied)
                .origin(origin)
                .details(serde_json::json!({ "session_revoked": revoked })),
        )?;
        return Ok(Refreshed::Reused { session_id: session.id, user_id: session.user_id });
    }
    if session.revoked_at_ms.is_some() || session.expires_at_ms <= now_ms || session.max_expires_at_ms <= now_ms {
        return Ok(Refreshed::Invalid);
    }
    let expires = (now_ms + life.refresh_ms).min(session.max_expires_at_ms);
    tx.session_touch(&session.id, now_ms, expires, origin.client_ip.as_deref())?;
    let refresh_token = token::generate(Kind::RefreshToken);
    tx.refresh_insert(&token::digest(refresh_token.expose()), &session.id, now_ms)?;
    audit::record(
        tx,
        key,
        now,
        &Event::new("session.refreshed", Actor::User(session.user_id.clone()))
            .target(session.id.clone())
            .origin(origin),
    )?;
    let row = SessionRow { last_seen_at_ms: now_ms, expires_at_ms: expires, ..session };
    Ok(Refreshed::Rotated { row: Box::new(row), refresh_token })
}

/// End every live session of `user_id` except `keep` (in `tx`). Their ids enter the revocation
/// view before the transaction commits. Returns them.
pub fn end_all(
    tx: &Tx<'_>,
    view: &Revocations,
    user_id: &str,
    keep: Option<&str>,
    now_ms: i64,
    reason: &str,
) -> Result<Vec<String>, AppError> {
    let ended = tx.sessions_revoke_user(user_id, keep, now_ms, reason)?;
    view.revoke_sessions(ended.iter().map(String::as_str), now_ms);
    Ok(ended)
}

/// The revocation view. See the module documentation.
#[derive(Debug, Default)]
pub struct Revocations {
    sessions: RwLock<HashMap<String, i64>>,
    users: RwLock<HashSet<String>>,
}

impl Revocations {
    pub fn session_revoked(&self, sid: &str) -> bool {
        self.sessions.read().map(|m| m.contains_key(sid)).unwrap_or(true)
    }

    pub fn user_blocked(&self, uid: &str) -> bool {
        self.users.read().map(|s| s.contains(uid)).unwrap_or(true)
    }

    pub fn revoke_sessions<'a>(&self, ids: impl IntoIterator<Item = &'a str>, now_ms: i64) {
        let mut m = match self.sessions.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for id in ids {
            m.insert(id.to_string(), now_ms);
        }
    }

    pub fn block_user(&self, uid: &str) {
        let mut s = match self.users.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.insert(uid.to_string());
    }

    pub fn unblock_user(&self, uid: &str) {
        let mut s = match self.users.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.remove(uid);
    }

    /// Forget session revocations older than `before_ms` (no token of theirs is still valid).
    pub fn prune(&self, before_ms: i64) {
        if let Ok(mut m) = self.sessions.write() {
            m.retain(|_, at| *at >= before_ms);
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (self.sessions.read().map(|m| m.len()).unwrap_or(0), self.users.read().map(|s| s.len()).unwrap_or(0))
    }

    /// Load from the database: sessions revoked within the access-token lifetime, disabled users,
    /// users deleted within the access-token lifetime.
    pub fn load(&self, tx: &Tx<'_>, since_ms: i64) -> Result<(), AppError> {
        let revoked = tx.sessions_revoked_since(since_ms)?;
        let mut disabled = tx.disabled_user_ids()?;
        disabled.extend(tx.users_deleted_since(since_ms)?);
        for (id, at) in revoked {
            self.revoke_sessions([id.as_str()], at);
        }
        for uid in disabled {
            self.block_user(&uid);
        }
        Ok(())
    }
}
