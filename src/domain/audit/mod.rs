//! The audit chain: append-only records, each chained as
//! `hash = HMAC-SHA256(audit key, previous hash || canonical record)`, with the key derived from
//! the master key, so that someone with only database access cannot rewrite history unnoticed.
//! [`record`] writes in the caller's transaction; [`verify`] walks the chain.
//!
//! Details never hold a secret: callers pass identifiers and reasons, never values.

pub mod catalogue;

use super::unix_ms;
use crate::crypto::AuditKey;
use crate::db::{AuditRow, Db, Tx};
use crate::error::AppError;
use serde::Serialize;
use time::OffsetDateTime;

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
    fn parts(&self) -> (&'static str, Option<String>) {
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
    fn as_str(self) -> &'static str {
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

fn canonical(row: &AuditRow) -> Result<Vec<u8>, AppError> {
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
pub async fn record_alone(db: &Db, key: &AuditKey, now: OffsetDateTime, event: Event) -> Result<i64, AppError> {
    let key = key.clone();
    db.write(move |tx| record(tx, &key, now, &event)).await
}

/// Append `event` to the chain inside `tx`. Returns its sequence number.
pub fn record(tx: &Tx<'_>, key: &AuditKey, now: OffsetDateTime, event: &Event) -> Result<i64, AppError> {
    let (seq, prev) = match tx.audit_head()? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_vec()),
    };
    let (actor_type, actor_id) = event.actor.parts();
    let mut row = AuditRow {
        seq,
        ts_ms: unix_ms(now),
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

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records checked.
    pub records: i64,
    /// The first sequence number whose record, hash or position does not verify.
    pub first_broken: Option<i64>,
    /// Why it broke.
    pub reason: Option<String>,
}

/// Walk the whole chain in one read snapshot.
pub async fn verify(db: &Db, key: &AuditKey) -> Result<Verification, AppError> {
    let key = key.clone();
    db.read(move |tx| {
        let mut prev = GENESIS.to_vec();
        let mut expected_seq = 1;
        let mut records = 0;
        let mut after = 0;
        loop {
            let page = tx.audit_page(after, 1000)?;
            if page.is_empty() {
                return Ok(Verification { records, first_broken: None, reason: None });
            }
            for row in page {
                if row.seq != expected_seq {
                    return Ok(Verification {
                        records,
                        first_broken: Some(expected_seq),
                        reason: Some(format!("record {expected_seq} is missing (next present is {})", row.seq)),
                    });
                }
                if !key.verify(&prev, &canonical(&row)?, &row.hash)? {
                    return Ok(Verification {
                        records,
                        first_broken: Some(row.seq),
                        reason: Some(format!("record {} does not match its hash", row.seq)),
                    });
                }
                records += 1;
                expected_seq += 1;
                after = row.seq;
                prev = row.hash;
            }
        }
    })
    .await
}
