//! `/metrics` in the Prometheus text format. Open to loopback clients only, unless a bearer
//! token is configured (`metrics.token_file` or the `metrics_token` credential), in which case
//! the token is required from everyone.

use super::edge::RequestInfo;
use super::error::ApiError;
use super::ApiTags;
use crate::crypto::ct_eq;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::PlainText;
use poem_openapi::{ApiResponse, OpenApi, SecurityScheme};

#[derive(Default)]
pub struct MetricsApi;

/// The operator's metrics token (`metrics.token_file`), sent as `Authorization: Bearer`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "metricsToken")]
pub struct MetricsToken(Bearer);

/// The token when one was sent; loopback clients may call without one.
#[derive(SecurityScheme)]
pub enum MetricsAuth {
    Token(MetricsToken),
    #[oai(fallback)]
    Anonymous,
}

#[derive(Debug, ApiResponse)]
pub enum MetricsResponse {
    /// Metrics in the Prometheus text exposition format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Ok(PlainText<String>),
}

#[OpenApi(tag = "ApiTags::Operations")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// Requests by route template and status, request latency, database timings and build
    /// info. Without a configured token only loopback clients may read it; with one, the
    /// token is required.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: MetricsAuth,
    ) -> Result<MetricsResponse, ApiError> {
        match &state.metrics_token {
            Some(expected) => {
                let given = match auth {
                    MetricsAuth::Token(t) => t.0.token,
                    MetricsAuth::Anonymous => String::new(),
                };
                if !ct_eq(given.as_bytes(), expected.expose().as_bytes()) {
                    return Err(ApiError::unauthorized("A valid metrics bearer token is required.", &info.request_id));
                }
            }
            None => {
                if !info.client_ip.is_some_and(|ip| ip.is_loopback()) {
                    return Err(ApiError::forbidden(
                        "Metrics are served to loopback clients only; configure metrics.token_file to allow others.",
                        &info.request_id,
                    ));
                }
            }
        }
        Ok(MetricsResponse::Ok(PlainText(state.metrics.render())))
    }
}
