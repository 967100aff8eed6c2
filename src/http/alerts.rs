//! The security alert API (platform admins): list with filters and cursor, get one,
//! acknowledge with a note. Alerts are raised by `domain::monitoring`, never through the API.

use super::auth::{origin, AnyAuth};
use super::edge::RequestInfo;
use super::error::{fail, ts, ApiError};
use super::ApiTags;
use crate::db::AlertRow;
use crate::domain::{monitoring, users};
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use time::OffsetDateTime;

/// Whether someone has looked at the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
}

/// The rule that raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AlertRule {
    /// `monitoring.failed_logins_per_account` failed logins for one account within the window.
    FailedLoginsAccount,
    /// `monitoring.failed_logins_per_ip` failed logins from one client address within the window.
    FailedLoginsIp,
    /// An account was locked after too many failures.
    AccountLocked,
    /// A refresh token was used twice (the session was revoked).
    RefreshTokenReused,
    /// `monitoring.rate_limited_per_ip` rate-limited or throttled sign-in attempts from one address.
    RateLimitedIp,
    /// An API key or personal access token was used from an address it had not used before
    /// (not its very first use).
    CredentialNewIp,
    /// Someone was made a platform admin.
    AdminGranted,
    /// `monitoring.secret_reveals_per_actor` secret reveals by one actor within the window.
    SecretRevealsActor,
}

impl AlertRule {
    fn as_str(self) -> &'static str {
        let rule = match self {
            AlertRule::FailedLoginsAccount => monitoring::Rule::FailedLoginsAccount,
            AlertRule::FailedLoginsIp => monitoring::Rule::FailedLoginsIp,
            AlertRule::AccountLocked => monitoring::Rule::AccountLocked,
            AlertRule::RefreshTokenReused => monitoring::Rule::RefreshTokenReused,
            AlertRule::RateLimitedIp => monitoring::Rule::RateLimitedIp,
            AlertRule::CredentialNewIp => monitoring::Rule::CredentialNewIp,
            AlertRule::AdminGranted => monitoring::Rule::AdminGranted,
            AlertRule::SecretRevealsActor => monitoring::Rule::SecretRevealsActor,
        };
        rule.as_str()
    }
}

/// Webhook delivery of an alert.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryView {
    /// `none` (no webhook was configured when it was raised), `pending`, `delivered`, or
    /// `failed` (gave up after the last attempt).
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due (while `pending`).
    pub next_attempt_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
    /// Why the last attempt failed (`HTTP 503`, `timed out`, `connection failed`…).
    pub last_error: Option<String>,
}

/// A security alert.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertView {
    pub id: String,
    /// The rule that raised it (see the `rule` filter for the list).
    pub rule: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// What the rule counted by: an account (user id), a client address, an actor
    /// (`user:<id>`, `api_key:<id>`, `token:<user>/<token>`) or a credential (`api_key:<id>`,
    /// `token:<id>`).
    pub key: String,
    /// Matching events within the window when it was raised.
    pub count: i64,
    pub window_seconds: i64,
    /// The audit records it covers, from `first_seq` to `last_seq` (see `GET /v1/audit`).
    pub first_seq: i64,
    pub last_seq: i64,
    /// Context from the record that raised it: `action`, `actor`, `target`, `workspace_id`,
    /// `client_ip`, `ip` (identifiers only).
    pub details: serde_json::Value,
    pub created_at: OffsetDateTime,
    /// `open` or `acknowledged`.
    pub status: String,
    /// The user who acknowledged it.
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<OffsetDateTime>,
    pub note: Option<String>,
    pub delivery: DeliveryView,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        Self {
            details: serde_json::from_str(&a.details).unwrap_or_else(|_| serde_json::json!({})),
            id: a.id,
            rule: a.rule,
            severity: a.severity,
            key: a.key,
            count: a.count,
            window_seconds: a.window_seconds,
            first_seq: a.first_seq,
            last_seq: a.last_seq,
            created_at: ts(a.created_at_ms),
            status: a.status,
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at_ms.map(ts),
            note: a.acknowledged_note,
            delivery: DeliveryView {
                status: a.delivery_status,
                attempts: a.delivery_attempts,
                next_attempt_at: a.delivery_next_at_ms.map(ts),
                delivered_at: a.delivered_at_ms.map(ts),
                last_error: a.delivery_last_error,
            },
        }
    }
}

/// One page of alerts, newest first.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertPage {
    pub items: Vec<AlertView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/security/alerts/{id}/acknowledge`.
#[derive(Debug, Object)]
pub struct AcknowledgeRequest {
    /// What was found or done: 1 to 1000 characters.
    pub note: String,
}

#[derive(Default)]
pub struct AlertsApi;

#[OpenApi]
impl AlertsApi {
    /// List security alerts (platform admin)
    ///
    /// Alerts raised by the monitoring rules, newest first. Filters: `status`, `rule`, and the
    /// creation time: `since` (inclusive) and `until` (exclusive), RFC 3339 instants. Pass
    /// `next_cursor` as `cursor` for the next page. An invalid filter is a 400 naming it.
    #[oai(path = "/v1/security/alerts", method = "get", tag = "ApiTags::Security", operation_id = "listAlerts")]
    #[allow(clippy::too_many_arguments)]
    async fn list_alerts(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        status: Query<Option<AlertStatus>>,
        rule: Query<Option<AlertRule>>,
        since: Query<Option<OffsetDateTime>>,
        until: Query<Option<OffsetDateTime>>,
        cursor: Query<Option<String>>,
        /// 1 to 200, default 50.
        limit: Query<Option<u32>>,
    ) -> Result<Json<AlertPage>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let q = monitoring::ListQuery {
            status: status.0.map(|s| match s {
                AlertStatus::Open => "open".to_string(),
                AlertStatus::Acknowledged => "acknowledged".to_string(),
            }),
            rule: rule.0.map(|r| r.as_str().to_string()),
            since_ms: since.0.map(crate::domain::unix_ms),
            until_ms: until.0.map(crate::domain::unix_ms),
            cursor: cursor.0,
            limit: limit.0,
        };
        let (rows, next) = monitoring::list(&state, q).await.map_err(fail(&info))?;
        Ok(Json(AlertPage { items: rows.into_iter().map(AlertView::from).collect(), next_cursor: next }))
    }

    /// Get a security alert (platform admin)
    #[oai(path = "/v1/security/alerts/:id", method = "get", tag = "ApiTags::Security", operation_id = "getAlert")]
    async fn get_alert(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Json<AlertView>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        Ok(Json(monitoring::get(&state, &id.0).await.map_err(fail(&info))?.into()))
    }

    /// Acknowledge a security alert (platform admin)
    ///
    /// Records who looked at it, when, and a note (1 to 1000 characters). An alert
    /// acknowledged already is a 409. Audited as `alert.acknowledged`.
    #[oai(
        path = "/v1/security/alerts/:id/acknowledge",
        method = "post",
        tag = "ApiTags::Security",
        operation_id = "acknowledgeAlert"
    )]
    async fn acknowledge_alert(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
        body: JsonBody<AcknowledgeRequest>,
    ) -> Result<Json<AlertView>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let a = monitoring::acknowledge(&state, auth.principal(), &id.0, &body.0.note, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Json(a.into()))
    }
}
