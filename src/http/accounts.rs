//! The account API: sign-up, login, anonymous sessions, refresh, logout, TOTP, the caller's
//! profile, sessions and personal access tokens, platform-admin user management, and JWKS.
//! Handlers extract, check the credential kind, call one domain function and map the result.

use super::auth::{origin, session_cookie, AnyAuth, SessionAuth};
use super::edge::RequestInfo;
use super::error::{fail, ts, ApiError};
use super::ApiTags;
use crate::crypto::SecretString;
use crate::db::{PatRow, SessionRow, UserRow};
use crate::domain::auth::{self, Issued, LoginInput, LoginOutcome, SignupInput};
use crate::domain::{mfa, tokens, users};
use crate::error::AppError;
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use time::OffsetDateTime;

/// How the client wants the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Default)]
#[oai(rename_all = "lowercase")]
pub enum SessionMode {
    /// Tokens in the body: an access token (JWT) and a refresh token.
    #[default]
    Bearer,
    /// Browsers: an HTTP-only `__Host-gatehouse_session` cookie and a CSRF token in the body.
    Cookie,
}

/// `POST /v1/auth/signup`.
#[derive(Debug, Object)]
pub struct SignupRequest {
    /// The account's email; the domain part is lower-cased.
    pub email: String,
    /// At least 12 characters, at most 1024 bytes, not the email, not a common password.
    pub password: Password,
    /// Display name.
    pub name: Option<String>,
    /// The invitation, when the server's sign-up mode is `invite`.
    pub invite_token: Option<Password>,
    /// `bearer` (default) or `cookie`.
    pub mode: Option<SessionMode>,
}

/// `POST /v1/auth/login`. Either `email` and `password` (optionally with `totp` or
/// `recovery_code`), or the `challenge` a previous answer gave with `totp` or `recovery_code`.
#[derive(Debug, Object)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub password: Option<Password>,
    /// `bearer` (default) or `cookie`.
    pub mode: Option<SessionMode>,
    /// A current 6-digit TOTP code.
    pub totp: Option<String>,
    /// One of the ten recovery codes (each works once).
    pub recovery_code: Option<Password>,
    /// The MFA challenge from a `202` answer.
    pub challenge: Option<Password>,
}

/// A session's credentials. In `bearer` mode: `access_token` and `refresh_token` (shown once).
/// In `cookie` mode: the cookie is set and `csrf_token` is returned instead.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenResponse {
    /// Session access token (JWT) for `Authorization: Bearer`.
    pub access_token: Option<String>,
    /// Opaque refresh token for `POST /v1/auth/refresh`; rotated on every use.
    pub refresh_token: Option<String>,
    /// `Bearer`, or `cookie` in cookie mode.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Cookie mode: send it in `X-CSRF-Token` on every request that changes state.
    pub csrf_token: Option<String>,
    pub session_id: String,
    pub user_id: String,
}

/// The password was right; complete the login with a second factor.
#[derive(Debug, Object)]
pub struct MfaChallenge {
    pub mfa_required: bool,
    /// Send back as `challenge` with `totp` or `recovery_code`.
    pub challenge: String,
    /// Seconds the challenge stays valid.
    pub expires_in: u64,
    pub methods: Vec<String>,
}

#[derive(Debug, ApiResponse)]
pub enum SessionResponse {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<TokenResponse>, #[oai(header = "Set-Cookie")] Option<String>),
    /// The password was right; a second factor is needed.
    #[oai(status = 202)]
    MfaRequired(Json<MfaChallenge>),
}

pub fn token_response(i: Issued, cookie_mode: bool) -> SessionResponse {
    if cookie_mode {
        let cookie = session_cookie(i.cookie.as_ref(), i.session_expires_in);
        SessionResponse::Ok(
            Json(TokenResponse {
                access_token: None,
                refresh_token: None,
                token_type: "cookie".into(),
                expires_in: i.session_expires_in,
                csrf_token: i.csrf_token.as_ref().map(|c| c.expose().to_string()),
                session_id: i.session_id,
                user_id: i.user_id,
            }),
            Some(cookie),
        )
    } else {
        SessionResponse::Ok(
            Json(TokenResponse {
                access_token: Some(i.access_token.expose().to_string()),
                refresh_token: Some(i.refresh_token.expose().to_string()),
                token_type: "Bearer".into(),
                expires_in: i.expires_in,
                csrf_token: None,
                session_id: i.session_id,
                user_id: i.user_id,
            }),
            None,
        )
    }
}

/// `POST /v1/auth/anonymous`.
#[derive(Debug, Object, Default)]
pub struct AnonymousRequest {
    /// `bearer` (default) or `cookie`.
    pub mode: Option<SessionMode>,
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Object)]
pub struct RefreshRequest {
    pub refresh_token: Password,
}

#[derive(Debug, ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent(#[oai(header = "Set-Cookie")] Option<String>),
}

/// A user, as the API shows it.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserView {
    pub id: String,
    /// `local` or `anonymous`.
    pub kind: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub mfa_enabled: bool,
    /// Anonymous users: when they are purged.
    pub expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            kind: u.kind,
            email: u.email,
            name: u.name,
            is_admin: u.is_admin,
            disabled: u.disabled,
            mfa_enabled: u.totp_enabled,
            expires_at: u.expires_at_ms.map(ts),
            created_at: ts(u.created_at_ms),
            updated_at: ts(u.updated_at_ms),
        }
    }
}

/// `PATCH /v1/me`.
#[derive(Debug, Object)]
pub struct MePatch {
    /// Display name (at most 200 characters); empty clears it.
    pub name: Option<String>,
}

/// `POST /v1/me/password`.
#[derive(Debug, Object)]
pub struct PasswordChange {
    pub current_password: Password,
    pub new_password: Password,
}

/// A session of the caller.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    pub id: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `password` or `anonymous`.
    pub method: String,
    pub mfa: bool,
    /// A browser (cookie) session.
    pub cookie: bool,
    /// The session making this request.
    pub current: bool,
}

fn session_view(s: SessionRow, current: Option<&str>) -> SessionView {
    SessionView {
        current: current == Some(s.id.as_str()),
        id: s.id,
        created_at: ts(s.created_at_ms),
        last_seen_at: ts(s.last_seen_at_ms),
        expires_at: ts(s.expires_at_ms),
        ip: s.ip,
        user_agent: s.user_agent,
        method: s.method,
        mfa: s.mfa,
        cookie: s.cookie_hash.is_some(),
    }
}

/// `POST /v1/me/tokens`.
#[derive(Debug, Object)]
pub struct NewTokenRequest {
    /// What the token is for (1 to 100 characters).
    pub name: String,
    /// Required; at most `auth.pat_max_lifetime_days` away.
    pub expires_at: OffsetDateTime,
}

/// A personal access token, without its secret.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Prefix and last four characters, to recognise it.
    pub hint: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub last_used_ip: Option<String>,
}

impl From<PatRow> for TokenView {
    fn from(p: PatRow) -> Self {
        Self {
            id: p.id,
            name: p.name,
            hint: p.hint,
            created_at: ts(p.created_at_ms),
            expires_at: ts(p.expires_at_ms),
            last_used_at: p.last_used_at_ms.map(ts),
            last_used_ip: p.last_used_ip,
        }
    }
}

/// A new personal access token: `token` is shown this once.
#[derive(Debug, Object)]
pub struct CreatedToken {
    pub id: String,
    /// `gthp_…`: send as `Authorization: Bearer`. Store it now; it cannot be shown again.
    pub token: String,
    pub name: String,
    pub expires_at: OffsetDateTime,
}

/// TOTP enrolment, shown once.
#[derive(Debug, Object)]
pub struct TotpEnrolment {
    /// Base32 seed for manual entry.
    pub secret: String,
    /// `otpauth://totp/…` for authenticator apps.
    pub otpauth_uri: String,
    /// The same URI as a QR code (SVG).
    pub qr_svg: String,
}

/// `POST /v1/auth/mfa/totp/verify`.
#[derive(Debug, Object)]
pub struct TotpCode {
    /// The 6-digit code the device shows now.
    pub code: String,
}

/// TOTP is active; the recovery codes are shown this once.
#[derive(Debug, Object)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// `DELETE /v1/auth/mfa/totp`.
#[derive(Debug, Object)]
pub struct TotpDisable {
    pub password: Password,
    /// A current TOTP code or an unused recovery code.
    pub code: String,
}

/// `POST /v1/users`.
#[derive(Debug, Object)]
pub struct NewUser {
    pub email: String,
    pub password: Password,
    pub name: Option<String>,
}

/// `PATCH /v1/users/{id}`: fields left out are unchanged.
#[derive(Debug, Object)]
pub struct UserPatchRequest {
    /// `true` ends every session and token of the user at once.
    pub disabled: Option<bool>,
    pub is_admin: Option<bool>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// One page of users.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserPage {
    pub items: Vec<UserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/users/invites`.
#[derive(Debug, Object)]
pub struct InviteRequest {
    pub email: String,
}

/// An invitation, shown once: give `invite_token` to the person (sign-up mode `invite`).
#[derive(Debug, Object)]
pub struct Invitation {
    pub email: String,
    pub invite_token: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, ApiResponse)]
pub enum Created<T: poem_openapi::types::ToJSON + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Object)]
pub struct Jwks {
    /// Public keys (`kty`, `kid`, `alg`, `use` and the key's public parameters).
    pub keys: Vec<serde_json::Value>,
}

#[derive(Debug, ApiResponse)]
pub enum JwksResponse {
    /// The public keys that verify Gatehouse access tokens, including the next key before it
    /// signs and retired keys until their tokens have expired.
    #[oai(status = 200, content_type = "application/jwk-set+json")]
    Ok(Json<Jwks>, #[oai(header = "Cache-Control")] String),
}

#[derive(Default)]
pub struct AccountsApi;

#[OpenApi]
impl AccountsApi {
    /// Sign up
    ///
    /// Creates a local account and signs it in. Allowed by the server's `auth.signup` mode:
    /// `open`, `invite` (with `invite_token`) or `disabled` (403). Called with an anonymous
    /// session, the anonymous user becomes this account and keeps its id. Rate limited per
    /// client address (429 with `Retry-After`).
    #[oai(path = "/v1/auth/signup", method = "post", tag = "ApiTags::Auth", operation_id = "signup")]
    async fn signup(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        req: &poem::Request,
        body: JsonBody<SignupRequest>,
    ) -> Result<SessionResponse, ApiError> {
        let o = origin(&info);
        auth::check_rate(&state, &o, info.client_ip, "signup").await.map_err(fail(&info))?;
        let b = body.0;
        let cookie_mode = b.mode.unwrap_or_default() == SessionMode::Cookie;
        // An anonymous caller upgrades in place.
        let anonymous_user = req
            .extensions()
            .get::<super::auth::AuthOutcome>()
            .and_then(|o| o.0.as_ref().ok())
            .map(|p| p.user_id.clone());
        let input = SignupInput {
            email: b.email,
            password: SecretString::new(b.password.0),
            name: b.name,
            invite: b.invite_token.map(|t| SecretString::new(t.0)),
            cookie_mode,
            anonymous_user,
        };
        let issued = auth::signup(&state, input, o).await.map_err(fail(&info))?;
        Ok(token_response(issued, cookie_mode))
    }

    /// Log in
    ///
    /// With `email` and `password`. A wrong email, a wrong password and a disabled account get
    /// the same 401 after the same work. Accounts with TOTP answer 202 with a `challenge`;
    /// complete with `challenge` and `totp` (or `recovery_code`), or send `totp` with the
    /// password at once. Repeated failures slow the account down, then lock it for a while
    /// (429 with `Retry-After`); the client address is rate limited too.
    #[oai(path = "/v1/auth/login", method = "post", tag = "ApiTags::Auth", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        body: JsonBody<LoginRequest>,
    ) -> Result<SessionResponse, ApiError> {
        let o = origin(&info);
        auth::check_rate(&state, &o, info.client_ip, "login").await.map_err(fail(&info))?;
        let b = body.0;
        let cookie_mode = b.mode.unwrap_or_default() == SessionMode::Cookie;
        let input = LoginInput {
            email: b.email,
            password: b.password.map(|p| SecretString::new(p.0)),
            cookie_mode,
            totp: b.totp,
            recovery_code: b.recovery_code.map(|p| SecretString::new(p.0)),
            challenge: b.challenge.map(|p| SecretString::new(p.0)),
        };
        match auth::login(&state, input, o).await.map_err(fail(&info))? {
            LoginOutcome::Session(issued) => {
                let cookie = issued.cookie.is_some();
                Ok(token_response(issued, cookie))
            }
            LoginOutcome::MfaRequired { challenge, expires_in } => {
                Ok(SessionResponse::MfaRequired(Json(MfaChallenge {
                    mfa_required: true,
                    challenge: challenge.expose().to_string(),
                    expires_in,
                    methods: vec!["totp".into(), "recovery_code".into()],
                })))
            }
        }
    }

    /// Anonymous session
    ///
    /// Creates an anonymous user (purged after `auth.anonymous_lifetime_seconds`) and signs it
    /// in. Send `{}` (bearer tokens) or `{"mode": "cookie"}`. Signing up later with this session
    /// keeps the same user id.
    #[oai(path = "/v1/auth/anonymous", method = "post", tag = "ApiTags::Auth", operation_id = "anonymous")]
    async fn anonymous(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        body: JsonBody<AnonymousRequest>,
    ) -> Result<SessionResponse, ApiError> {
        let o = origin(&info);
        auth::check_rate(&state, &o, info.client_ip, "anonymous").await.map_err(fail(&info))?;
        let cookie_mode = body.0.mode.unwrap_or_default() == SessionMode::Cookie;
        let issued = auth::anonymous(&state, cookie_mode, o).await.map_err(fail(&info))?;
        Ok(token_response(issued, cookie_mode))
    }

    /// Refresh
    ///
    /// Trades a refresh token for a new access token and a new refresh token. Each refresh
    /// token works once: presenting one again revokes the whole session (it was copied).
    #[oai(path = "/v1/auth/refresh", method = "post", tag = "ApiTags::Auth", operation_id = "refresh")]
    async fn refresh(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        body: JsonBody<RefreshRequest>,
    ) -> Result<SessionResponse, ApiError> {
        let o = origin(&info);
        auth::check_rate(&state, &o, info.client_ip, "refresh").await.map_err(fail(&info))?;
        let issued = auth::refresh(&state, SecretString::new(body.0.refresh_token.0), o).await.map_err(fail(&info))?;
        Ok(token_response(issued, false))
    }

    /// Log out
    ///
    /// Ends the calling session at once: its access tokens, refresh token and cookie stop
    /// working on the next request.
    #[oai(path = "/v1/auth/logout", method = "post", tag = "ApiTags::Auth", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
    ) -> Result<Done, ApiError> {
        let p = auth.principal();
        let sid = p.session_id().map(str::to_string);
        auth::revoke_sessions(&state, p.actor(), &p.user_id, sid, "session.logout", &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Done::NoContent(Some(session_cookie(None, 0))))
    }

    /// Log out everywhere
    ///
    /// Ends every session of the caller, this one included.
    #[oai(path = "/v1/auth/logout-all", method = "post", tag = "ApiTags::Auth", operation_id = "logoutAll")]
    async fn logout_all(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
    ) -> Result<Done, ApiError> {
        let p = auth.principal();
        auth::revoke_sessions(&state, p.actor(), &p.user_id, None, "session.logout_all", &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Done::NoContent(Some(session_cookie(None, 0))))
    }

    /// Enrol TOTP
    ///
    /// Starts TOTP enrolment: a new seed (sealed at rest), shown once as base32, as an
    /// `otpauth://` URI and as a QR code. Not active until verified. Needs a session.
    #[oai(path = "/v1/auth/mfa/totp/enroll", method = "post", tag = "ApiTags::Auth", operation_id = "totpEnroll")]
    async fn totp_enroll(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
    ) -> Result<Json<TotpEnrolment>, ApiError> {
        let e = mfa::enroll(&state, auth.principal(), &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(TotpEnrolment {
            secret: e.secret.expose().to_string(),
            otpauth_uri: e.otpauth_uri.expose().to_string(),
            qr_svg: e.qr_svg.expose().to_string(),
        }))
    }

    /// Activate TOTP
    ///
    /// Checks a first code and turns TOTP on. Answers ten one-time recovery codes, once.
    #[oai(path = "/v1/auth/mfa/totp/verify", method = "post", tag = "ApiTags::Auth", operation_id = "totpVerify")]
    async fn totp_verify(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
        body: JsonBody<TotpCode>,
    ) -> Result<Json<RecoveryCodes>, ApiError> {
        let codes = mfa::verify(&state, auth.principal(), &body.0.code, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(RecoveryCodes { recovery_codes: codes.iter().map(|c| c.expose().to_string()).collect() }))
    }

    /// Disable TOTP
    ///
    /// Needs the password and a current code (or an unused recovery code).
    #[oai(path = "/v1/auth/mfa/totp", method = "delete", tag = "ApiTags::Auth", operation_id = "totpDisable")]
    async fn totp_disable(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
        body: JsonBody<TotpDisable>,
    ) -> Result<Done, ApiError> {
        let b = body.0;
        mfa::disable(&state, auth.principal(), SecretString::new(b.password.0), &b.code, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// Who am I
    #[oai(path = "/v1/me", method = "get", tag = "ApiTags::Me", operation_id = "getMe")]
    async fn me(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
    ) -> Result<Json<UserView>, ApiError> {
        let u = users::get(&state, &auth.principal().user_id).await.map_err(fail(&info))?;
        Ok(Json(u.into()))
    }

    /// Update my profile
    #[oai(path = "/v1/me", method = "patch", tag = "ApiTags::Me", operation_id = "updateMe")]
    async fn update_me(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        body: JsonBody<MePatch>,
    ) -> Result<Json<UserView>, ApiError> {
        let u = users::update_me(&state, auth.principal(), body.0.name, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(u.into()))
    }

    /// Change my password
    ///
    /// Needs the current password and a session (not a personal access token). Every other
    /// session of the account ends at once.
    #[oai(path = "/v1/me/password", method = "post", tag = "ApiTags::Me", operation_id = "changePassword")]
    async fn change_password(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
        body: JsonBody<PasswordChange>,
    ) -> Result<Done, ApiError> {
        let b = body.0;
        users::change_password(
            &state,
            auth.principal(),
            SecretString::new(b.current_password.0),
            SecretString::new(b.new_password.0),
            &origin(&info),
        )
        .await
        .map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// My sessions
    #[oai(path = "/v1/me/sessions", method = "get", tag = "ApiTags::Me", operation_id = "listMySessions")]
    async fn my_sessions(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
    ) -> Result<Json<Vec<SessionView>>, ApiError> {
        let p = auth.principal().clone();
        let now = crate::domain::unix_ms(state.clock.now());
        let uid = p.user_id.clone();
        let rows = state
            .db
            .read(move |tx| tx.sessions_of_user(&uid, now).map_err(AppError::from))
            .await
            .map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(|s| session_view(s, p.session_id())).collect()))
    }

    /// End one of my sessions
    #[oai(path = "/v1/me/sessions/:id", method = "delete", tag = "ApiTags::Me", operation_id = "revokeMySession")]
    async fn revoke_session(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Done, ApiError> {
        let p = auth.principal();
        auth::revoke_sessions(&state, p.actor(), &p.user_id, Some(id.0), "session.revoked", &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// My personal access tokens
    #[oai(path = "/v1/me/tokens", method = "get", tag = "ApiTags::Me", operation_id = "listMyTokens")]
    async fn my_tokens(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
    ) -> Result<Json<Vec<TokenView>>, ApiError> {
        let rows = tokens::list(&state, auth.principal()).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(TokenView::from).collect()))
    }

    /// Create a personal access token
    ///
    /// Needs a session: a token cannot create tokens. The secret is in the answer, once.
    #[oai(path = "/v1/me/tokens", method = "post", tag = "ApiTags::Me", operation_id = "createMyToken")]
    async fn create_token(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: SessionAuth,
        body: JsonBody<NewTokenRequest>,
    ) -> Result<Created<CreatedToken>, ApiError> {
        let b = body.0;
        let expires = crate::domain::unix_ms(b.expires_at);
        let t =
            tokens::create(&state, auth.principal(), &b.name, expires, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Created::Created(Json(CreatedToken {
            id: t.row.id,
            token: t.token.expose().to_string(),
            name: t.row.name,
            expires_at: ts(t.row.expires_at_ms),
        })))
    }

    /// Revoke a personal access token
    #[oai(path = "/v1/me/tokens/:id", method = "delete", tag = "ApiTags::Me", operation_id = "revokeMyToken")]
    async fn revoke_token(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Done, ApiError> {
        tokens::revoke(&state, auth.principal(), &id.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// List users (platform admin)
    ///
    /// Local users in creation order. `q` matches a part of the email or name; pass
    /// `next_cursor` as `cursor` for the next page.
    #[oai(path = "/v1/users", method = "get", tag = "ApiTags::Users", operation_id = "listUsers")]
    async fn list_users(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        q: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// 1 to 200, default 50.
        limit: Query<Option<u32>>,
    ) -> Result<Json<UserPage>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let (rows, next) = users::list(&state, q.0, cursor.0, limit.0.unwrap_or(50)).await.map_err(fail(&info))?;
        Ok(Json(UserPage { items: rows.into_iter().map(UserView::from).collect(), next_cursor: next }))
    }

    /// Create a user (platform admin)
    #[oai(path = "/v1/users", method = "post", tag = "ApiTags::Users", operation_id = "createUser")]
    async fn create_user(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        body: JsonBody<NewUser>,
    ) -> Result<Created<UserView>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let b = body.0;
        let u =
            users::create(&state, auth.principal(), &b.email, SecretString::new(b.password.0), b.name, &origin(&info))
                .await
                .map_err(fail(&info))?;
        Ok(Created::Created(Json(u.into())))
    }

    /// Invite a user to sign up (platform admin)
    #[oai(path = "/v1/users/invites", method = "post", tag = "ApiTags::Users", operation_id = "inviteUser")]
    async fn invite_user(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        body: JsonBody<InviteRequest>,
    ) -> Result<Created<Invitation>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let email = crate::domain::accounts::normalize_email(&body.0.email).map_err(fail(&info))?;
        let (token, expires) =
            users::invite(&state, auth.principal(), &email, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Created::Created(Json(Invitation {
            email,
            invite_token: token.expose().to_string(),
            expires_at: ts(expires),
        })))
    }

    /// Get a user (platform admin)
    #[oai(path = "/v1/users/:id", method = "get", tag = "ApiTags::Users", operation_id = "getUser")]
    async fn get_user(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Json<UserView>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        Ok(Json(users::get(&state, &id.0).await.map_err(fail(&info))?.into()))
    }

    /// Update a user (platform admin)
    ///
    /// `disabled: true` ends every session and token of the user on the next request.
    #[oai(path = "/v1/users/:id", method = "patch", tag = "ApiTags::Users", operation_id = "updateUser")]
    async fn update_user(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
        body: JsonBody<UserPatchRequest>,
    ) -> Result<Json<UserView>, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        let b = body.0;
        let patch =
            users::AdminPatch { name: b.name.map(Some), email: b.email, disabled: b.disabled, is_admin: b.is_admin };
        let u = users::update(&state, auth.principal(), &id.0, patch, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(u.into()))
    }

    /// Delete a user (platform admin)
    ///
    /// Erases the account and its personal data; the audit trail keeps the user id.
    #[oai(path = "/v1/users/:id", method = "delete", tag = "ApiTags::Users", operation_id = "deleteUser")]
    async fn delete_user(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Done, ApiError> {
        users::require_admin(&state, auth.principal()).await.map_err(fail(&info))?;
        users::delete(&state, auth.principal(), &id.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// JSON Web Key Set
    ///
    /// The public keys that verify Gatehouse access tokens, by `kid`. Cacheable for
    /// `auth.jwks_max_age_seconds`; a new key appears here before it signs anything.
    #[oai(path = "/.well-known/jwks.json", method = "get", tag = "ApiTags::Auth", operation_id = "jwks")]
    async fn jwks(&self, state: Data<&AppState>) -> JwksResponse {
        JwksResponse::Ok(
            Json(Jwks { keys: state.auth.keys.jwks() }),
            format!("public, max-age={}", state.auth.settings.jwks_max_age),
        )
    }
}
