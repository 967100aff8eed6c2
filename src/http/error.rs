//! Errors on the wire: every error is `application/problem+json` (RFC 9457). [`ApiError`] maps
//! [`AppError`] in one `match`; 5xx bodies are generic and the detail goes to the log with the
//! request id.

use crate::error::AppError;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when the status says it all.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, safe to show to the caller.
    pub detail: String,
    /// The request id, as in the `X-Request-Id` response header.
    pub request_id: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>, request_id: &str) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: request_id.into(),
        }
    }

    /// The generic body of every 5xx.
    pub fn internal(request_id: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server could not complete the request. Quote the request id to the operator.",
            request_id,
        )
    }
}

/// The error responses an operation may return. Each operation documents the ones it uses.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or fails validation.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid credential was presented.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// The caller may not do this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// The object does not exist or is not visible to the caller.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The change conflicts with the current state.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request body is larger than `server.max_body_bytes`.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// Too many attempts from this client or against this account; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// Something failed on the server; the detail is in the server log under the request id.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// A component is not ready.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl ApiError {
    /// Map a core error. Internal details are logged here, never sent.
    pub fn from_app(e: AppError, request_id: &str) -> Self {
        let p = |status: StatusCode, detail: String| Json(Problem::new(status, detail, request_id));
        match e {
            AppError::Invalid(msg) => Self::BadRequest(p(StatusCode::BAD_REQUEST, msg)),
            AppError::NotFound => Self::NotFound(p(StatusCode::NOT_FOUND, "Not found.".into())),
            AppError::Conflict(msg) => Self::Conflict(p(StatusCode::CONFLICT, msg)),
            AppError::Unauthorized(msg) => Self::Unauthorized(p(StatusCode::UNAUTHORIZED, msg)),
            AppError::Forbidden(msg) => Self::Forbidden(p(StatusCode::FORBIDDEN, msg)),
            AppError::RateLimited { retry_after } => Self::TooManyRequests(
                p(StatusCode::TOO_MANY_REQUESTS, format!("Too many attempts. Retry after {retry_after} seconds.")),
                retry_after,
            ),
            AppError::AuditUnavailable => Self::Unavailable(p(
                StatusCode::SERVICE_UNAVAILABLE,
                "The audit log cannot be written, so the change was not made. Retry later.".into(),
            )),
            AppError::Unavailable(msg) => {
                tracing::warn!(request_id, reason = %msg, "not ready");
                Self::Unavailable(p(StatusCode::SERVICE_UNAVAILABLE, "The service is not ready.".into()))
            }
            other @ (AppError::Db(_) | AppError::Crypto(_) | AppError::Internal(_)) => {
                tracing::error!(request_id, error = %other, "request failed");
                Self::Internal(Json(Problem::internal(request_id)))
            }
        }
    }

    pub fn unauthorized(detail: &str, request_id: &str) -> Self {
        Self::Unauthorized(Json(Problem::new(StatusCode::UNAUTHORIZED, detail, request_id)))
    }

    pub fn forbidden(detail: &str, request_id: &str) -> Self {
        Self::Forbidden(Json(Problem::new(StatusCode::FORBIDDEN, detail, request_id)))
    }
}

/// A stored instant (milliseconds since the epoch) as the API shows it.
pub fn ts(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Map a core error to the operation's problem answer, with the request's id.
pub fn fail(info: &super::edge::RequestInfo) -> impl Fn(AppError) -> ApiError + '_ {
    move |e| ApiError::from_app(e, &info.request_id)
}
