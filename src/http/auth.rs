//! Credentials on the wire. The edge calls [`authenticate`] once per request that carries a
//! credential (an `Authorization: Bearer` header or the session cookie) and stores the outcome
//! in the request; the security schemes below only read it, so that the OpenAPI document
//! declares what each operation accepts and every rejection is one problem+json answer.

use super::edge::RequestInfo;
use crate::crypto::SecretString;
use crate::domain::audit::Origin;
use crate::domain::auth::{self, Credential, Principal};
use crate::error::AppError;
use crate::state::AppState;
use poem::http::{header, HeaderName, Method, StatusCode};
use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::SecurityScheme;

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "__Host-gatehouse_session";
/// The header a cookie-authenticated request that changes state must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Why a valid API key is refused on an operation outside its workspace.
pub const API_KEY_ELSEWHERE: &str = "API keys act only on their workspace's endpoints (/v1/workspaces/{ws}/...).";
/// The header of workspace API keys (`auth.api_key_headers` adds aliases).
pub const API_KEY_HEADER: &str = "x-api-key";

/// What authentication concluded for this request.
#[derive(Debug, Clone)]
pub struct AuthOutcome(pub Result<Principal, (StatusCode, String)>);

/// The value of cookie `wanted` in the request's `Cookie` headers.
pub fn cookie_value(req: &Request, wanted: &str) -> Option<String> {
    for value in req.headers().get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, v)) = pair.trim().split_once('=') {
                if name == wanted {
                    return Some(v.trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

fn status_of(e: &AppError) -> (StatusCode, String) {
    match e {
        AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
        AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "The service is not ready.".into()),
        other => {
            tracing::error!(error = %other, "authentication failed");
            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
        }
    }
}

/// The API key of a request: `X-Api-Key`, else the first configured alias header. An alias is
/// copied into `X-Api-Key` so that the `apiKey` security scheme finds it.
fn api_key_value(state: &AppState, req: &mut Request) -> Option<SecretString> {
    // A name made once rather than parsed from text on every request.
    const API_KEY: HeaderName = HeaderName::from_static(API_KEY_HEADER);
    if let Some(v) = req.headers().get(API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(SecretString::new(v.trim().to_string()));
    }
    for alias in &state.http.api_key_headers {
        if let Some(raw) = req.headers().get(alias).cloned() {
            req.headers_mut().insert(API_KEY_HEADER, raw.clone());
            return raw.to_str().ok().map(|v| SecretString::new(v.trim().to_string()));
        }
    }
    None
}

/// A credential as a request presents it, read from its headers and not yet checked.
pub enum Presented {
    Bearer(SecretString),
    ApiKey(SecretString),
    Cookie { session: SecretString, csrf: Option<SecretString>, changes: bool },
}

/// The request's credential, if it has one: cheap, nothing is checked here (that is
/// [`authenticate`]). The `Authorization` header wins over an API key, and an API key over the
/// cookie.
pub fn presented(state: &AppState, req: &mut Request) -> Option<Presented> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| SecretString::new(t.trim().to_string()));
    if let Some(token) = bearer {
        return Some(Presented::Bearer(token));
    }
    if let Some(key) = api_key_value(state, req) {
        return Some(Presented::ApiKey(key));
    }
    let session = cookie_value(req, SESSION_COOKIE)?;
    let csrf = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(|s| SecretString::new(s.to_string()));
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    Some(Presented::Cookie { session: SecretString::new(session), csrf, changes })
}

/// Check a credential the request presented.
pub async fn authenticate(state: &AppState, credential: Presented, info: &RequestInfo) -> AuthOutcome {
    let result = match credential {
        Presented::Bearer(token) if token.expose().starts_with("gthp_") => {
            auth::authenticate_pat(state, token, info.client_ip.map(|ip| ip.to_string()), || origin(info)).await
        }
        Presented::Bearer(token) => auth::authenticate_jwt(state, token.expose(), info.client_ip),
        Presented::ApiKey(key) => {
            let ip = info.client_ip.map(|ip| ip.to_string());
            crate::domain::workspaces::authenticate_api_key(state, key, ip, || origin(info)).await
        }
        Presented::Cookie { session, csrf, changes } => {
            auth::authenticate_cookie(state, session, csrf, changes, info.client_ip).await
        }
    };
    AuthOutcome(result.map_err(|e| status_of(&e)))
}

/// What a session without a second factor may still do when `auth.require_mfa` is on.
fn allowed_before_mfa(req: &Request) -> bool {
    matches!(
        (req.method(), req.uri().path()),
        (&Method::GET, "/v1/me")
            | (&Method::POST, "/v1/auth/mfa/totp/enroll")
            | (&Method::POST, "/v1/auth/mfa/totp/verify")
            | (&Method::POST, "/v1/auth/logout")
            | (&Method::POST, "/v1/auth/logout-all")
    )
}

/// Which credentials an operation accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    SessionToken,
    Pat,
    Cookie,
    ApiKey,
}

fn accept(req: &Request, want: Accept) -> poem::Result<Principal> {
    let Some(AuthOutcome(outcome)) = req.extensions().get::<AuthOutcome>() else {
        return Err(poem::Error::from_string("This operation needs a credential.", StatusCode::UNAUTHORIZED));
    };
    let p = outcome.clone().map_err(|(status, msg)| poem::Error::from_string(msg, status))?;
    let kind = match &p.credential {
        Credential::Session { cookie: false, .. } => Accept::SessionToken,
        Credential::Session { cookie: true, .. } => Accept::Cookie,
        Credential::PersonalAccessToken { .. } => Accept::Pat,
        Credential::ApiKey { .. } => Accept::ApiKey,
    };
    if kind == want {
        if let Some(state) = req.data::<AppState>() {
            if p.mfa_pending(state.auth.settings.require_mfa) && !allowed_before_mfa(req) {
                return Err(poem::Error::from_string(
                    "This server requires a second factor: enrol TOTP (POST /v1/auth/mfa/totp/enroll, then \
                     /v1/auth/mfa/totp/verify), then refresh the session or sign in again.",
                    StatusCode::FORBIDDEN,
                ));
            }
        }
        return Ok(p);
    }
    if kind == Accept::ApiKey {
        return Err(poem::Error::from_string(API_KEY_ELSEWHERE, StatusCode::FORBIDDEN));
    }
    if kind == Accept::Pat {
        return Err(poem::Error::from_string(
            "This operation needs a signed-in session; personal access tokens cannot do it.",
            StatusCode::FORBIDDEN,
        ));
    }
    Err(poem::Error::from_string("This credential is not accepted here.", StatusCode::UNAUTHORIZED))
}

/// Session access token (JWT) in `Authorization: Bearer`.
#[derive(SecurityScheme)]
#[oai(rename = "sessionToken", ty = "bearer", bearer_format = "JWT", checker = "check_session_token")]
pub struct SessionToken(pub Principal);

async fn check_session_token(req: &Request, _: Bearer) -> poem::Result<Principal> {
    accept(req, Accept::SessionToken)
}

/// Personal access token in `Authorization: Bearer`.
#[derive(SecurityScheme)]
#[oai(rename = "personalAccessToken", ty = "bearer", checker = "check_pat")]
pub struct PersonalAccessToken(pub Principal);

async fn check_pat(req: &Request, _: Bearer) -> poem::Result<Principal> {
    accept(req, Accept::Pat)
}

/// Browser session cookie (state-changing requests also need `X-CSRF-Token`).
#[derive(SecurityScheme)]
#[oai(
    rename = "sessionCookie",
    ty = "api_key",
    key_name = "__Host-gatehouse_session",
    key_in = "cookie",
    checker = "check_cookie"
)]
pub struct SessionCookie(pub Principal);

async fn check_cookie(req: &Request, _: ApiKey) -> poem::Result<Principal> {
    accept(req, Accept::Cookie)
}

/// Workspace API key in `X-Api-Key` (or a configured alias header).
#[derive(SecurityScheme)]
#[oai(rename = "apiKey", ty = "api_key", key_name = "X-Api-Key", key_in = "header", checker = "check_api_key")]
pub struct ApiKeyAuth(pub Principal);

async fn check_api_key(req: &Request, _: ApiKey) -> poem::Result<Principal> {
    accept(req, Accept::ApiKey)
}

/// Operations inside a workspace: every signed-in caller and the workspace's API keys.
#[derive(SecurityScheme)]
pub enum WorkspaceAuth {
    // As for `AnyAuth`: the bearer schemes, whose checkers report the real reason, come last.
    SessionCookie(SessionCookie),
    ApiKey(ApiKeyAuth),
    PersonalAccessToken(PersonalAccessToken),
    SessionToken(SessionToken),
}

impl WorkspaceAuth {
    pub fn principal(&self) -> &Principal {
        match self {
            WorkspaceAuth::SessionToken(SessionToken(p))
            | WorkspaceAuth::PersonalAccessToken(PersonalAccessToken(p))
            | WorkspaceAuth::SessionCookie(SessionCookie(p))
            | WorkspaceAuth::ApiKey(ApiKeyAuth(p)) => p,
        }
    }
}

/// Operations open to every signed-in caller: session token, personal access token or cookie.
#[derive(SecurityScheme)]
pub enum AnyAuth {
    // Tried in this order; the last one's refusal is the answer, so the bearer schemes (whose
    // checkers report the real reason) come last.
    SessionCookie(SessionCookie),
    PersonalAccessToken(PersonalAccessToken),
    SessionToken(SessionToken),
}

impl AnyAuth {
    pub fn principal(&self) -> &Principal {
        match self {
            AnyAuth::SessionToken(SessionToken(p))
            | AnyAuth::PersonalAccessToken(PersonalAccessToken(p))
            | AnyAuth::SessionCookie(SessionCookie(p)) => p,
        }
    }
}

/// Operations that need a signed-in session (token or cookie), never a personal access token.
#[derive(SecurityScheme)]
pub enum SessionAuth {
    SessionCookie(SessionCookie),
    SessionToken(SessionToken),
}

impl SessionAuth {
    pub fn principal(&self) -> &Principal {
        match self {
            SessionAuth::SessionToken(SessionToken(p)) | SessionAuth::SessionCookie(SessionCookie(p)) => p,
        }
    }
}

/// The audit origin of a request.
pub fn origin(info: &RequestInfo) -> Origin {
    Origin {
        client_ip: info.client_ip.map(|ip| ip.to_string()),
        user_agent: info.user_agent.as_deref().map(str::to_string),
        request_id: Some(info.request_id.to_string()),
    }
}

/// The `Set-Cookie` value of a session cookie (or of its removal, with `None`).
pub fn session_cookie(value: Option<&SecretString>, max_age: u64) -> String {
    match value {
        Some(v) => {
            format!("{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}", v.expose())
        }
        None => format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
    }
}
