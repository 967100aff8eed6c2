//! The audit log API: query (platform-wide for administrators, per workspace with `read` on
//! `audit`), NDJSON export, verification, and the signed checkpoints for anchoring elsewhere.
//! Every read of the log is itself recorded.

use super::auth::{origin, AnyAuth, WorkspaceAuth};
use super::edge::RequestInfo;
use super::error::{fail, ApiError};
use super::ApiTags;
use crate::db::{AuditRow, CheckpointRow};
use crate::domain::audit::integrity;
use crate::domain::audit::query::{format_ms, Params, RecordView};
use crate::domain::audit::service;
use crate::error::AppError;
use crate::state::AppState;
use poem::web::Data;
use poem::Body;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

/// One audit record.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditRecord {
    /// Position in the chain (ascending, gap-free until retention purges).
    pub seq: i64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `system`, `operator`, `user`, `token`, `api_key` or `anonymous`.
    pub actor_type: String,
    /// A user id, `user/token` for a personal access token, an API key id.
    pub actor_id: Option<String>,
    /// Dotted event name, see the event catalogue.
    pub action: String,
    pub target: Option<String>,
    pub workspace_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Event fields (never a secret).
    pub details: serde_json::Value,
    /// The record's keyed chain hash, hex.
    pub hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        let v = RecordView::from(r);
        Self {
            seq: v.seq,
            time: v.time,
            actor_type: v.actor_type,
            actor_id: v.actor_id,
            action: v.action,
            target: v.target,
            workspace_id: v.workspace_id,
            outcome: v.outcome,
            client_ip: v.client_ip,
            user_agent: v.user_agent,
            request_id: v.request_id,
            details: v.details,
            hash: v.hash,
        }
    }
}

/// A page of records, newest first.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// Pass as `cursor`, with the same filters, for the next (older) page.
    pub next_cursor: Option<String>,
}

/// The outcome of `GET /v1/audit/verify`.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct VerifyReport {
    /// Whether everything verified.
    pub ok: bool,
    /// Records whose hash and position were checked.
    pub records: i64,
    /// Records removed by retention, walked over by their stubs.
    pub purged: i64,
    /// Signed checkpoints checked.
    pub checkpoints: i64,
    /// The newest record reached.
    pub head_seq: i64,
    /// The retained chain starts after this record.
    pub base_seq: i64,
    /// The newest checkpoint's id.
    pub last_checkpoint_id: Option<i64>,
    /// The record the newest checkpoint signed.
    pub last_checkpoint_seq: Option<i64>,
    /// The first record that does not verify.
    pub first_broken: Option<i64>,
    pub reason: Option<String>,
}

/// One signed checkpoint, as exported for anchoring.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Checkpoint {
    pub id: i64,
    pub time: String,
    /// The newest record when it was signed.
    pub seq: i64,
    /// That record's chain hash, hex.
    pub head_hash: String,
    /// The retained chain starts after this record...
    pub base_seq: i64,
    /// ...whose hash this is.
    pub base_hash: String,
    /// Purged records above the base, kept as stubs.
    pub purged_count: i64,
    /// SHA-256 of those stubs, hex.
    pub purged_digest: String,
    /// SHA-256 of the previous checkpoint's signature, hex.
    pub prev: String,
    /// `records`, `interval`, `purge`, `shutdown` or `manual`.
    pub reason: String,
    pub key_id: String,
    /// The exact bytes signed (JSON).
    pub statement: String,
    /// Ed25519 signature of `statement`, base64.
    pub signature: String,
}

impl Checkpoint {
    /// The stored checkpoint with its signed statement, hashes in hex, signature in base64.
    fn of(c: &CheckpointRow) -> Result<Self, AppError> {
        use base64::Engine;
        let statement = String::from_utf8(integrity::statement(c)?).map_err(AppError::internal)?;
        Ok(Self {
            id: c.id,
            time: format_ms(c.ts_ms),
            seq: c.seq,
            head_hash: hex::encode(&c.head_hash),
            base_seq: c.base_seq,
            base_hash: hex::encode(&c.base_hash),
            purged_count: c.purged_count,
            purged_digest: hex::encode(&c.purged_digest),
            prev: hex::encode(&c.prev),
            reason: c.reason.clone(),
            key_id: c.key_id.clone(),
            statement,
            signature: base64::engine::general_purpose::STANDARD.encode(&c.signature),
        })
    }
}

/// Checkpoints, newest first, and the key that signs them.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CheckpointPage {
    pub key_id: Option<String>,
    /// The Ed25519 public key, raw 32 bytes in base64.
    pub public_key: Option<String>,
    /// The same key as a PEM SubjectPublicKeyInfo (`openssl pkeyutl -verify -rawin`).
    pub public_key_pem: Option<String>,
    pub items: Vec<Checkpoint>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, ApiResponse)]
pub enum ExportResponse {
    /// One JSON record per line, oldest first.
    #[oai(status = 200, content_type = "application/x-ndjson")]
    Ok(Binary<Body>, #[oai(header = "Cache-Control")] String),
}

#[derive(Default)]
pub struct AuditApi;

#[allow(clippy::too_many_arguments)]
fn params(
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    ip: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
) -> Params {
    Params { since, until, actor, action, target, outcome, ip, limit, cursor }
}

#[OpenApi]
impl AuditApi {
    /// Query the audit log
    ///
    /// Platform administrators. Newest first. Filters combine: `since` (inclusive) and `until`
    /// (exclusive) as RFC 3339 times; `actor` (a user id, which also matches that user's personal
    /// access tokens, an API key id, or `system`/`operator`/`anonymous`); `action` (a prefix:
    /// `auth.` matches every authentication event, `auth.login` the `auth.login.*` ones);
    /// `target`; `outcome` (`success`, `failure`, `denied`); `ip`; `workspace` (id or slug).
    /// A `cursor` works only with the filters it came with. The query is itself recorded.
    #[oai(path = "/v1/audit", method = "get", tag = "ApiTags::Audit", operation_id = "queryAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn query(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        since: Query<Option<String>>,
        until: Query<Option<String>>,
        actor: Query<Option<String>>,
        action: Query<Option<String>>,
        target: Query<Option<String>>,
        outcome: Query<Option<String>>,
        ip: Query<Option<String>>,
        workspace: Query<Option<String>>,
        /// 1 to 1000, default 100.
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPage>, ApiError> {
        let p = params(since.0, until.0, actor.0, action.0, target.0, outcome.0, ip.0, limit.0, cursor.0);
        let (rows, next) = service::search_all(&state, auth.principal(), &origin(&info), &p, workspace.0.as_deref())
            .await
            .map_err(fail(&info))?;
        Ok(Json(AuditPage { items: rows.into_iter().map(AuditRecord::from).collect(), next_cursor: next }))
    }

    /// Export the audit log as NDJSON
    ///
    /// Platform administrators. The records matching the filters of `GET /v1/audit` (without
    /// `limit` and `cursor`), oldest first, up to the newest record at the start of the export,
    /// streamed as they are read. The export is itself recorded.
    #[oai(path = "/v1/audit/export", method = "get", tag = "ApiTags::Audit", operation_id = "exportAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        since: Query<Option<String>>,
        until: Query<Option<String>>,
        actor: Query<Option<String>>,
        action: Query<Option<String>>,
        target: Query<Option<String>>,
        outcome: Query<Option<String>>,
        ip: Query<Option<String>>,
        workspace: Query<Option<String>>,
        /// Not accepted: an export is the whole range.
        limit: Query<Option<i64>>,
        /// Not accepted: an export is the whole range.
        cursor: Query<Option<String>>,
    ) -> Result<ExportResponse, ApiError> {
        let p = params(since.0, until.0, actor.0, action.0, target.0, outcome.0, ip.0, limit.0, cursor.0);
        let filter = service::export_filter(&state, auth.principal(), &origin(&info), &p, workspace.0.as_deref())
            .await
            .map_err(fail(&info))?;
        let stream = crate::domain::audit::query::export(state.db.clone(), filter);
        Ok(ExportResponse::Ok(Binary(Body::from_bytes_stream(stream)), "no-store".into()))
    }

    /// Verify the audit log
    ///
    /// Platform administrators. Checks every signed checkpoint (signature and order), that the
    /// stubs of purged records are the ones the latest checkpoint signed, every record's keyed
    /// hash and position, every checkpointed head, and that the log still reaches the latest
    /// checkpoint. Names the first record that fails. The check is itself recorded.
    #[oai(path = "/v1/audit/verify", method = "get", tag = "ApiTags::Audit", operation_id = "verifyAudit")]
    async fn verify(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
    ) -> Result<Json<VerifyReport>, ApiError> {
        let r = service::verify(&state, auth.principal(), &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(VerifyReport {
            ok: r.first_broken.is_none(),
            records: r.records,
            purged: r.purged,
            checkpoints: r.checkpoints,
            head_seq: r.head_seq,
            base_seq: r.base_seq,
            last_checkpoint_id: r.last_checkpoint.map(|c| c.0),
            last_checkpoint_seq: r.last_checkpoint.map(|c| c.1),
            first_broken: r.first_broken,
            reason: r.reason,
        }))
    }

    /// List the signed checkpoints
    ///
    /// Platform administrators. Newest first, with the Ed25519 public key. Keep copies off the
    /// machine: `gatehouse audit verify --anchor FILE` then proves the log still contains them.
    #[oai(
        path = "/v1/audit/checkpoints",
        method = "get",
        tag = "ApiTags::Audit",
        operation_id = "listAuditCheckpoints"
    )]
    async fn checkpoints(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        /// 1 to 1000, default 100.
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<CheckpointPage>, ApiError> {
        use base64::Engine;
        let (public, items, next) =
            service::checkpoints(&state, auth.principal(), &origin(&info), cursor.0.as_deref(), limit.0)
                .await
                .map_err(fail(&info))?;
        Ok(Json(CheckpointPage {
            key_id: public.as_ref().map(|p| p.key_id.clone()),
            public_key: public.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p.raw)),
            public_key_pem: public.map(|p| p.pem),
            items: items.iter().map(Checkpoint::of).collect::<Result<_, _>>().map_err(fail(&info))?,
            next_cursor: next,
        }))
    }

    /// Query a workspace's audit log
    ///
    /// Needs `read` on `audit` in the workspace (owners have it). The records of this workspace
    /// only, with the filters of `GET /v1/audit`. The query is itself recorded.
    #[oai(
        path = "/v1/workspaces/:ws/audit",
        method = "get",
        tag = "ApiTags::Audit",
        operation_id = "queryWorkspaceAudit"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn workspace(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        since: Query<Option<String>>,
        until: Query<Option<String>>,
        actor: Query<Option<String>>,
        action: Query<Option<String>>,
        target: Query<Option<String>>,
        outcome: Query<Option<String>>,
        ip: Query<Option<String>>,
        /// 1 to 1000, default 100.
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPage>, ApiError> {
        let p = params(since.0, until.0, actor.0, action.0, target.0, outcome.0, ip.0, limit.0, cursor.0);
        let (rows, next) = service::search_workspace(&state, auth.principal(), &origin(&info), &ws.0, &p)
            .await
            .map_err(fail(&info))?;
        Ok(Json(AuditPage { items: rows.into_iter().map(AuditRecord::from).collect(), next_cursor: next }))
    }
}
