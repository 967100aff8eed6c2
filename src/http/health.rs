//! `/healthz` (the process answers) and `/readyz` (the database takes a write, keys are loaded).

use super::edge::RequestInfo;
use super::error::ApiError;
use super::ApiTags;
use crate::domain::unix_ms;
use crate::error::AppError;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

#[derive(Default)]
pub struct HealthApi;

/// A health answer.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` when the server answers 200.
    pub status: String,
}

#[derive(Debug, ApiResponse)]
pub enum HealthResponse {
    /// The process is alive.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// The database accepts writes and the keys are loaded.
    #[oai(status = 200)]
    Ready(Json<Health>),
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness
    ///
    /// Answers 200 while the process runs. Cheap; no dependency is checked.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health { status: "ok".into() }))
    }

    /// Readiness
    ///
    /// Answers 200 when a write transaction on the database commits and the keys are loaded,
    /// 503 otherwise. Orchestrators and load balancers should route traffic only on 200.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&AppState>, info: Data<&RequestInfo>) -> Result<ReadyResponse, ApiError> {
        let now = unix_ms(state.clock.now());
        state
            .db
            .check_writable(now)
            .await
            .map_err(|e| AppError::Unavailable(format!("database not writable: {e}")))
            .map_err(|e| ApiError::from_app(e, &info.request_id))?;
        if state.auth.keys.signer().is_none() {
            return Err(ApiError::from_app(AppError::Unavailable("no signing key loaded".into()), &info.request_id));
        }
        Ok(ReadyResponse::Ready(Json(Health { status: "ready".into() })))
    }
}
