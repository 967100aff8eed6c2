//! The secrets API: workspace secrets, versioned and sealed by the vault. Values go in with
//! `PUT` and come out only through `reveal` (its own permission, audited, `no-store`).

use super::accounts::Done;
use super::auth::{origin, WorkspaceAuth};
use super::edge::RequestInfo;
use super::error::{fail, ts, ApiError};
use super::ApiTags;
use crate::crypto::SecretString;
use crate::db::{SecretRow, SecretVersionRow};
use crate::domain::secrets;
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

/// A secret's metadata (never its value).
#[derive(Debug, Object)]
pub struct SecretView {
    pub name: String,
    /// The current version (1 for a new secret).
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    pub updated_at: OffsetDateTime,
    pub updated_by: Option<String>,
}

impl From<SecretRow> for SecretView {
    fn from(s: SecretRow) -> Self {
        Self {
            name: s.name,
            version: s.current_version,
            created_at: ts(s.created_at_ms),
            created_by: s.created_by,
            updated_at: ts(s.updated_at_ms),
            updated_by: s.updated_by,
        }
    }
}

/// One version of a secret (never its value).
#[derive(Debug, Object)]
pub struct SecretVersionView {
    pub version: i64,
    /// The value's length in bytes.
    pub size: i64,
    pub created_at: OffsetDateTime,
    pub created_by: Option<String>,
    /// The version this one restored, if it is a restore.
    pub restored_from: Option<i64>,
}

impl From<SecretVersionRow> for SecretVersionView {
    fn from(v: SecretVersionRow) -> Self {
        Self {
            version: v.version,
            size: v.size,
            created_at: ts(v.created_at_ms),
            created_by: v.created_by,
            restored_from: v.restored_from,
        }
    }
}

/// `PUT /v1/workspaces/{ws}/secrets/{name}`.
#[derive(Debug, Object)]
pub struct SecretValue {
    /// 1 byte to `vault.max_secret_bytes` (64 KiB by default) of text.
    pub value: Password,
}

#[derive(Debug, ApiResponse)]
pub enum SecretWritten {
    /// A new version of an existing secret.
    #[oai(status = 200)]
    Updated(Json<SecretView>),
    /// A new secret (version 1).
    #[oai(status = 201)]
    Created(Json<SecretView>),
}

/// `POST /v1/workspaces/{ws}/secrets/{name}/reveal`.
#[derive(Debug, Object)]
pub struct RevealRequest {
    /// Why the value is needed; kept in the audit trail (at most 500 characters).
    #[oai(validator(max_length = 500))]
    pub reason: Option<String>,
    /// A version other than the current one.
    #[oai(validator(minimum(value = "1")))]
    pub version: Option<i64>,
}

/// A revealed value.
#[derive(Object)]
pub struct Revealed {
    pub value: String,
    pub version: i64,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealed").field("value", &"[redacted]").field("version", &self.version).finish()
    }
}

#[derive(Debug, ApiResponse)]
pub enum RevealResponse {
    /// The value. Not to be cached anywhere.
    #[oai(status = 200)]
    Ok(Json<Revealed>, #[oai(header = "Cache-Control")] String),
}

#[derive(Default)]
pub struct SecretsApi;

#[OpenApi]
impl SecretsApi {
    /// List secrets
    ///
    /// Names, versions, who and when; never values. Needs `read` on `secret`.
    #[oai(path = "/v1/workspaces/:ws/secrets", method = "get", tag = "ApiTags::Secrets", operation_id = "listSecrets")]
    async fn list(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Json<Vec<SecretView>>, ApiError> {
        let rows = secrets::list(&state, auth.principal(), &ws.0).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(SecretView::from).collect()))
    }

    /// Write a secret
    ///
    /// Creates the secret or a new version of it. Names match `^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`.
    /// Needs `write` on `secret`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name",
        method = "put",
        tag = "ApiTags::Secrets",
        operation_id = "putSecret"
    )]
    async fn put(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
        body: JsonBody<SecretValue>,
    ) -> Result<SecretWritten, ApiError> {
        let value = SecretString::new(body.0.value.as_str().to_string());
        let (row, created) =
            secrets::put(&state, auth.principal(), &ws.0, &name.0, value, &origin(&info)).await.map_err(fail(&info))?;
        Ok(if created { SecretWritten::Created(Json(row.into())) } else { SecretWritten::Updated(Json(row.into())) })
    }

    /// Get a secret's metadata
    ///
    /// Never the value (see reveal). Needs `read` on `secret`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name",
        method = "get",
        tag = "ApiTags::Secrets",
        operation_id = "getSecret"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
    ) -> Result<Json<SecretView>, ApiError> {
        let row = secrets::get(&state, auth.principal(), &ws.0, &name.0).await.map_err(fail(&info))?;
        Ok(Json(row.into()))
    }

    /// Delete a secret
    ///
    /// Every version is destroyed (zeroed in the database file). Needs `delete` on `secret`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name",
        method = "delete",
        tag = "ApiTags::Secrets",
        operation_id = "deleteSecret"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
    ) -> Result<Done, ApiError> {
        secrets::delete(&state, auth.principal(), &ws.0, &name.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// List a secret's versions
    ///
    /// Newest first, without values. Needs `read` on `secret`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name/versions",
        method = "get",
        tag = "ApiTags::Secrets",
        operation_id = "listSecretVersions"
    )]
    async fn versions(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
    ) -> Result<Json<Vec<SecretVersionView>>, ApiError> {
        let rows = secrets::versions(&state, auth.principal(), &ws.0, &name.0).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(SecretVersionView::from).collect()))
    }

    /// Restore an older version
    ///
    /// Its value becomes a new current version. Needs `write` on `secret`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name/versions/:version/restore",
        method = "post",
        tag = "ApiTags::Secrets",
        operation_id = "restoreSecretVersion"
    )]
    async fn restore(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
        version: Path<i64>,
    ) -> Result<Json<SecretView>, ApiError> {
        let row = secrets::restore(&state, auth.principal(), &ws.0, &name.0, version.0, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Json(row.into()))
    }

    /// Reveal a secret's value
    ///
    /// The current version, or `version`. Needs `reveal` on `secret` (owners have it, editors
    /// and viewers do not). Audited with who and `reason`. Answered with
    /// `Cache-Control: no-store`.
    #[oai(
        path = "/v1/workspaces/:ws/secrets/:name/reveal",
        method = "post",
        tag = "ApiTags::Secrets",
        operation_id = "revealSecret"
    )]
    async fn reveal(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        name: Path<String>,
        body: JsonBody<RevealRequest>,
    ) -> Result<RevealResponse, ApiError> {
        let b = body.0;
        let (value, version) =
            secrets::reveal(&state, auth.principal(), &ws.0, &name.0, b.version, b.reason, &origin(&info))
                .await
                .map_err(fail(&info))?;
        Ok(RevealResponse::Ok(Json(Revealed { value: value.expose().to_string(), version }), "no-store".into()))
    }
}
