//! The audit log's API operations: who may read what, and reading is itself recorded.

use super::integrity::{self, Verification};
use super::query::{self, Params, Query};
use super::{record_alone, Event, Origin};
use crate::db::{AuditFilter, AuditRow, CheckpointRow};
use crate::domain::auth::Principal;
use crate::domain::authz::Resource;
use crate::error::AppError;
use crate::state::AppState;
use serde_json::json;

/// The filters of a query, for its own audit record (absent ones left out).
fn filters_of(p: &Params, workspace: Option<&str>) -> serde_json::Value {
    let all = [
        ("since", p.since.as_deref()),
        ("until", p.until.as_deref()),
        ("actor", p.actor.as_deref()),
        ("action", p.action.as_deref()),
        ("target", p.target.as_deref()),
        ("outcome", p.outcome.as_deref()),
        ("ip", p.ip.as_deref()),
        ("workspace", workspace),
    ];
    let mut m = serde_json::Map::new();
    for (k, v) in all {
        if let Some(v) = v {
            m.insert(k.to_string(), json!(v));
        }
    }
    if p.cursor.is_some() {
        m.insert("cursor".into(), json!(true));
    }
    serde_json::Value::Object(m)
}

/// `GET /v1/audit` (platform administrators): every workspace, or the one `workspace` names.
pub async fn search_all(
    state: &AppState,
    who: &Principal,
    origin: &Origin,
    params: &Params,
    workspace: Option<&str>,
) -> Result<(Vec<AuditRow>, Option<String>), AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let ws_id = resolve_workspace(state, workspace).await?;
    let q = query::parse(params, ws_id.clone())?;
    let (rows, next) = query::search(&state.db, &q).await?;
    let mut details = filters_of(params, ws_id.as_deref());
    details["returned"] = json!(rows.len());
    let event = Event::new("audit.queried", who.actor()).origin(origin).details(details);
    record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok((rows, next))
}

/// `GET /v1/workspaces/{ws}/audit`: the workspace's records, for those with `read` on `audit`.
pub async fn search_workspace(
    state: &AppState,
    who: &Principal,
    origin: &Origin,
    reference: &str,
    params: &Params,
) -> Result<(Vec<AuditRow>, Option<String>), AppError> {
    let a = crate::domain::workspaces::access(state, who, reference).await?;
    let checked = a.check("read", &Resource::new("audit"))?;
    let q = query::parse(params, Some(a.ws.id.clone()))?;
    let (rows, next) = query::search(&state.db, &q).await?;
    let mut details = filters_of(params, None);
    details["returned"] = json!(rows.len());
    let event = a.event("audit.queried", &checked, origin, details);
    record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok((rows, next))
}

/// `GET /v1/audit/export`: the validated filter of a streamed export, recorded before it starts.
pub async fn export_filter(
    state: &AppState,
    who: &Principal,
    origin: &Origin,
    params: &Params,
    workspace: Option<&str>,
) -> Result<AuditFilter, AppError> {
    crate::domain::users::require_admin(state, who).await?;
    if params.cursor.is_some() || params.limit.is_some() {
        let field = if params.cursor.is_some() { "cursor" } else { "limit" };
        return Err(AppError::Invalid(format!(
            "{field}: an export streams the whole range; narrow it with since and until"
        )));
    }
    let ws_id = resolve_workspace(state, workspace).await?;
    let q: Query = query::parse(params, ws_id.clone())?;
    let event = Event::new("audit.exported", who.actor()).origin(origin).details(filters_of(params, ws_id.as_deref()));
    record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok(q.filter)
}

/// `GET /v1/audit/verify`.
pub async fn verify(state: &AppState, who: &Principal, origin: &Origin) -> Result<Verification, AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let report = integrity::verify(&state.db, &state.auditor, &state.vault, Vec::new()).await?;
    let outcome = if report.first_broken.is_none() { super::Outcome::Success } else { super::Outcome::Failure };
    let event = Event::new("audit.verified", who.actor()).origin(origin).outcome(outcome).details(json!({
        "ok": report.first_broken.is_none(),
        "records": report.records,
        "checkpoints": report.checkpoints,
        "first_broken": report.first_broken,
    }));
    record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok(report)
}

/// The checkpoint public key: raw (base64) and PEM.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key_id: String,
    pub raw: [u8; 32],
    pub pem: String,
}

/// `GET /v1/audit/checkpoints`: signed checkpoints, newest first, with the public key.
pub async fn checkpoints(
    state: &AppState,
    who: &Principal,
    origin: &Origin,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<(Option<PublicKey>, Vec<CheckpointRow>, Option<String>), AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::Invalid("limit: between 1 and 1000".into()));
    }
    let before = match cursor {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| AppError::Invalid("cursor: not one this server gave".into()))?),
    };
    let (items, next) = query::checkpoints(&state.db, before, limit).await?;
    let vault = state.vault.clone();
    let public = state.db.read(move |tx| vault.checkpoint_key(tx, 0, false)).await?.map(|k| {
        let raw = k.public_key();
        PublicKey {
            key_id: crate::domain::vault::CHECKPOINT_KEY_ID.to_string(),
            raw,
            pem: crate::crypto::checkpoint::public_key_pem(&raw),
        }
    });
    let event =
        Event::new("audit.checkpoints_listed", who.actor()).origin(origin).details(json!({"returned": items.len()}));
    record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok((public, items, next))
}

async fn resolve_workspace(state: &AppState, workspace: Option<&str>) -> Result<Option<String>, AppError> {
    match workspace {
        None => Ok(None),
        Some(r) => match crate::domain::workspaces::workspace(state, r).await {
            Ok(ws) => Ok(Some(ws.id)),
            Err(AppError::NotFound) => Err(AppError::Invalid("workspace: no such workspace".into())),
            Err(e) => Err(e),
        },
    }
}
