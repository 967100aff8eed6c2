//! The audit chain: append-only records, each chained as
//! `hash = HMAC-SHA256(audit key, previous hash || canonical record)`, with the key sealed in the
//! vault, so that someone with only database access cannot rewrite history unnoticed.
//! [`record`] writes in the caller's transaction; [`integrity`] signs checkpoints, purges by
//! retention and verifies; [`query`] reads the log back; [`indexer`] keeps its query index a
//! short time behind the chain.
//!
//! Details never hold a secret: callers pass identifiers and reasons, never values.

pub mod catalogue;
pub mod indexer;
pub mod integrity;
pub mod query;
pub mod service;

pub use integrity::{verify, Verification};

use super::unix_ms;
use crate::crypto::AuditKey;
use crate::db::{AuditRow, Db, Tx};
use crate::error::AppError;
use crate::metrics::Metrics;
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;

/// Writes records: the chain key and the policy for a record that cannot be written.
#[derive(Clone)]
pub struct Auditor {
    key: AuditKey,
    /// `audit.require`: a change whose record cannot be written is refused.
    require: bool,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("require", &self.require).finish_non_exhaustive()
    }
}

impl Auditor {
    pub fn new(key: AuditKey, require: bool, metrics: Option<Arc<Metrics>>) -> Self {
        Self { key, require, metrics }
    }

    /// The chain key (verification).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }
}

/// The hash the first record chains from.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Gatehouse itself (start, stop, background tasks).
    System,
    /// An operator at the command line (`gatehouse users add-admin`, …).
    Operator,
    /// A signed-in user.
    User(String),
    /// A user acting through a personal access token (user id, token id).
    Token(String, String),
    /// A workspace API key (its id).
    ApiKey(String),
    /// Someone not (yet) signed in: a failed login, a sign-up.
    Anonymous,
}

impl Actor {
    pub fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Actor::System => ("system", None),
            Actor::Operator => ("operator", None),
            Actor::User(id) => ("user", Some(id.clone())),
            Actor::Token(user, token) => ("token", Some(format!("{user}/{token}"))),
            Actor::ApiKey(id) => ("api_key", Some(id.clone())),
            Actor::Anonymous => ("anonymous", None),
        }
    }
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Where a request came from, for events caused by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// Dotted name, e.g. `server.started`, `user.admin.created`.
    pub action: &'static str,
    pub actor: Actor,
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    pub outcome: Outcome,
    pub origin: Origin,
    /// Structured context; never a secret.
    pub details: serde_json::Value,
}

impl Event {
    /// A successful event by `actor` with no target.
    pub fn new(action: &'static str, actor: Actor) -> Self {
        Self {
            action,
            actor,
            target: None,
            workspace_id: None,
            outcome: Outcome::Success,
            origin: Origin::default(),
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn origin(mut self, origin: &Origin) -> Self {
        self.origin = origin.clone();
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn workspace(mut self, workspace_id: impl Into<String>) -> Self {
        self.workspace_id = Some(workspace_id.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The bytes the chain covers: every column but the hash, in a fixed order, as JSON.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    seq: i64,
    ts_ms: i64,
    actor_type: &'a str,
    actor_id: Option<&'a str>,
    action: &'a str,
    target: Option<&'a str>,
    workspace_id: Option<&'a str>,
    outcome: &'a str,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    details: &'a str,
}

pub(crate) fn canonical(row: &AuditRow) -> Result<Vec<u8>, AppError> {
    serde_json::to_vec(&Canonical {
        v: 1,
        seq: row.seq,
        ts_ms: row.ts_ms,
        actor_type: &row.actor_type,
        actor_id: row.actor_id.as_deref(),
        action: &row.action,
        target: row.target.as_deref(),
        workspace_id: row.workspace_id.as_deref(),
        outcome: &row.outcome,
        client_ip: row.client_ip.as_deref(),
        user_agent: row.user_agent.as_deref(),
        request_id: row.request_id.as_deref(),
        details: &row.details,
    })
    .map_err(AppError::internal)
}

/// Append `event` in a write transaction of its own (an event that goes with no other change).
pub async fn record_alone(db: &Db, auditor: &Auditor, now: OffsetDateTime, event: Event) -> Result<i64, AppError> {
    let auditor = auditor.clone();
    db.write(move |tx| record(tx, &auditor, now, &event)).await
}

/// Append `event` to the chain inside `tx`. Returns its sequence number (0 when it could not be
/// written and `audit.require` is off: the failure is logged and counted, the change goes on).
/// With `audit.require`, the failure fails the caller's transaction: nothing changes.
pub fn record(tx: &Tx<'_>, auditor: &Auditor, now: OffsetDateTime, event: &Event) -> Result<i64, AppError> {
    debug_assert!(catalogue::find(event.action).is_some(), "audit event {} is not in the catalogue", event.action);
    // The one write is a single INSERT: when it fails, SQLite has undone it and the caller's
    // transaction goes on as if it had not been tried.
    match append(tx, &auditor.key, now, event) {
        Ok(seq) => Ok(seq),
        Err(e) => {
            if let Some(m) = &auditor.metrics {
                m.security_event("audit.write_failed");
            }
            tracing::error!(target: "gatehouse::security", action = event.action, error = %e, "an audit record could not be written");
            if auditor.require || !tx.is_open() {
                Err(AppError::AuditUnavailable)
            } else {
                Ok(0)
            }
        }
    }
}

fn append(tx: &Tx<'_>, key: &AuditKey, now: OffsetDateTime, event: &Event) -> Result<i64, AppError> {
    // After a purge removed the newest records, the chain goes on from the last stub.
    let (last, prev, not_before) = integrity::chain_head(tx)?;
    let seq = last + 1;
    let (actor_type, actor_id) = event.actor.parts();
    let mut row = AuditRow {
        seq,
        // Times never go backwards along the chain, so a time range is a sequence range.
        ts_ms: unix_ms(now).max(not_before),
        actor_type: actor_type.to_string(),
        actor_id,
        action: event.action.to_string(),
        target: event.target.clone(),
        workspace_id: event.workspace_id.clone(),
        outcome: event.outcome.as_str().to_string(),
        client_ip: event.origin.client_ip.clone(),
        user_agent: event.origin.user_agent.clone(),
        request_id: event.origin.request_id.clone(),
        details: serde_json::to_string(&event.details).map_err(AppError::internal)?,
        hash: Vec::new(),
    };
    row.hash = key.chain(&prev, &canonical(&row)?)?.to_vec();
    tx.audit_insert(&row)?;
    Ok(seq)
}
