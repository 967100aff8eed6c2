//! Single sign-on: the login page's provider list, the login start, the OIDC callback, the
//! one-time code exchange, and the platform admin's provider management with its dry-run
//! preview. Errors at the callback are a plain HTML page with the request id and a short
//! reason, never the provider's answer.

use super::accounts::SessionMode;
use super::auth::{origin, session_cookie, AnyAuth};
use super::edge::RequestInfo;
use super::error::{fail, ts, ApiError};
use super::ApiTags;
use crate::config::{ClaimPaths, Jit, LinkByEmail, MappingRule, TokenAuth};
use crate::crypto::SecretString;
use crate::domain::auth::Issued;
use crate::domain::sso::{self, provision, CallbackInput, Finished, Mode, OidcStored, PreviewInput, ProviderInput};
use crate::error::AppError;
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::http::header;
use poem::web::Data;
use poem::IntoResponse;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json};
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use time::OffsetDateTime;

/// The cookie that binds a login in flight to the browser that started it.
pub const BROWSER_COOKIE: &str = "__Host-gatehouse_sso";
/// After an SSO login in cookie mode: the session's CSRF token, readable by the pages of this
/// origin (send it back in `X-CSRF-Token`).
pub const CSRF_COOKIE: &str = "__Host-gatehouse_csrf";

/// The browser-binding cookie of a login in flight, when the request carries one.
fn browser_cookie(req: &poem::Request) -> Option<SecretString> {
    super::auth::cookie_value(req, BROWSER_COOKIE).map(SecretString::new)
}

// ---------------------------------------------------------------------------------------------
// DTOs

/// An identity provider on the login page.
#[derive(Debug, Object)]
pub struct LoginProvider {
    pub id: String,
    pub display_name: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// Where the login button points.
    pub login_url: String,
}

#[derive(Debug, Object)]
pub struct LoginProviders {
    pub items: Vec<LoginProvider>,
}

/// How the login ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Default)]
#[oai(rename_all = "lowercase")]
pub enum LoginMode {
    /// A browser session: the session cookie is set and the browser goes to `return_to`.
    #[default]
    Cookie,
    /// A one-time code (`code=` on `return_to`) that an API client exchanges at `POST /v1/sso/exchange`.
    Code,
}

#[derive(Debug, ApiResponse)]
pub enum Redirect {
    /// To the identity provider (login start), or back to `return_to` (callback).
    #[oai(status = 302)]
    Found(#[oai(header = "Location")] String, #[oai(header = "Set-Cookie")] Option<String>),
}

#[derive(Debug, ApiResponse)]
pub enum CallbackPage {
    /// Signed in: back to `return_to`, with the session cookie (cookie mode) or `code=` (code mode).
    #[oai(status = 302)]
    Found(#[oai(header = "Location")] String),
    /// The login failed: a plain page with the request id and a short reason.
    #[oai(status = 400)]
    Failed(Html<String>),
    /// The account may not sign in (disabled, not linked, domain not allowed).
    #[oai(status = 403)]
    Refused(Html<String>),
    /// No such provider (or disabled).
    #[oai(status = 404)]
    Unknown(Html<String>),
    /// Too many callbacks from this address (the sign-in rate limit).
    #[oai(status = 429)]
    TooMany(Html<String>),
    /// Gatehouse failed.
    #[oai(status = 500)]
    Internal(Html<String>),
    /// The identity provider could not be reached or refused the code.
    #[oai(status = 502)]
    BadGateway(Html<String>),
    /// The audit log cannot be written (`audit.require`).
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

/// A response with extra `Set-Cookie` headers (poem-openapi sets one header per name).
pub struct WithCookies<T>(pub T, pub Vec<String>);

impl<T: ApiResponse> ApiResponse for WithCookies<T> {
    fn meta() -> MetaResponses {
        T::meta()
    }
    fn register(registry: &mut Registry) {
        T::register(registry)
    }
}

impl<T: IntoResponse> IntoResponse for WithCookies<T> {
    fn into_response(self) -> poem::Response {
        let mut resp = self.0.into_response();
        for c in self.1 {
            if let Ok(v) = header::HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

/// `POST /v1/sso/exchange`.
#[derive(Debug, Object)]
pub struct ExchangeRequest {
    /// The one-time code from `return_to` (`gthc_…`); it works once, for two minutes.
    pub code: Password,
    /// The PKCE verifier whose S256 challenge the login started with (`code_challenge`).
    pub code_verifier: Password,
    /// `bearer` (default) or `cookie`.
    pub mode: Option<SessionMode>,
}

/// Where each user attribute is in the provider's claims (dotted paths).
#[derive(Debug, Object, Clone)]
pub struct ClaimPathsDto {
    /// Default `email`.
    pub email: Option<String>,
    /// Default `email_verified`.
    pub email_verified: Option<String>,
    /// Default `name`.
    pub name: Option<String>,
    /// Default `groups`; `realm_access.roles` for Keycloak realm roles.
    pub groups: Option<String>,
}

impl From<ClaimPathsDto> for ClaimPaths {
    fn from(d: ClaimPathsDto) -> Self {
        let def = ClaimPaths::default();
        Self {
            email: d.email.unwrap_or(def.email),
            email_verified: d.email_verified.unwrap_or(def.email_verified),
            name: d.name.unwrap_or(def.name),
            groups: d.groups.unwrap_or(def.groups),
        }
    }
}

/// A mapping rule: when the claim at `claim` equals `value` (or is a list holding it), grant
/// `platform_role` and/or `roles` in `workspace`.
#[derive(Debug, Object, Clone)]
#[oai(skip_serializing_if_is_none)]
pub struct MappingRuleDto {
    /// Dotted claim path: `groups`, `realm_access.roles`, `department`.
    pub claim: String,
    pub value: String,
    /// `admin`.
    pub platform_role: Option<String>,
    /// Workspace id or slug.
    pub workspace: Option<String>,
    /// Role names in the workspace.
    #[oai(default)]
    pub roles: Vec<String>,
}

impl From<MappingRuleDto> for MappingRule {
    fn from(d: MappingRuleDto) -> Self {
        Self { claim: d.claim, value: d.value, platform_role: d.platform_role, workspace: d.workspace, roles: d.roles }
    }
}

impl From<MappingRule> for MappingRuleDto {
    fn from(r: MappingRule) -> Self {
        Self { claim: r.claim, value: r.value, platform_role: r.platform_role, workspace: r.workspace, roles: r.roles }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum JitDto {
    /// Link by email when allowed, else create the account.
    Create,
    /// Link by email when allowed; never create.
    LinkOnly,
    /// Only identities already linked sign in.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LinkByEmailDto {
    /// Link to the account with the same email when the provider says it is verified.
    VerifiedOnly,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TokenAuthDto {
    ClientSecretBasic,
    ClientSecretPost,
}

/// An OIDC identity provider to create (`POST`, with `id`) or replace (`PUT`).
#[derive(Debug, Object)]
pub struct ProviderRequest {
    /// 1 to 64 of `a-z 0-9 -`; used in URLs. Required on `POST`, ignored on `PUT`.
    pub id: Option<String>,
    /// `oidc` (the default; SAML providers come from a later release).
    pub kind: Option<String>,
    pub display_name: String,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// The issuer URL: discovery is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// Sealed by the vault and never returned. Required on `POST`; omitted on `PUT`, the stored
    /// one is kept.
    pub client_secret: Option<Password>,
    /// Default `client_secret_basic`.
    pub token_auth: Option<TokenAuthDto>,
    /// Default `["openid", "email", "profile"]`; must hold `openid`.
    pub scopes: Option<Vec<String>>,
    pub claims: Option<ClaimPathsDto>,
    /// When not empty, only emails in these domains sign in.
    pub allowed_email_domains: Option<Vec<String>>,
    /// Default `create`.
    pub jit: Option<JitDto>,
    /// Default `never`.
    pub link_by_email: Option<LinkByEmailDto>,
    /// Take the provider's emails as verified even without `email_verified = true` (Entra ID
    /// sends no such claim). Default `false`: an unverified email is never stored or linked.
    pub trust_email: Option<bool>,
    /// Also read userinfo and merge its claims (the ID token's win). Default `false`.
    pub userinfo: Option<bool>,
    /// ID token algorithms accepted; default `["RS256", "ES256"]`. Asymmetric only.
    pub algorithms: Option<Vec<String>>,
    /// PEM of the CA that signed the provider's certificate (system roots otherwise).
    pub ca_pem: Option<String>,
    pub mapping: Option<Vec<MappingRuleDto>>,
    /// The mapping decides the roles in every workspace it names (hand-given roles there are
    /// removed) and, when a rule names a platform role, the platform role. Default `false`.
    pub authoritative: Option<bool>,
}

/// An identity provider as the admin API shows it (never its secret).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProviderDto {
    pub id: String,
    pub kind: String,
    /// `config` (the configuration file; read-only here) or `api`.
    pub source: String,
    pub enabled: bool,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub has_client_secret: bool,
    pub token_auth: TokenAuthDto,
    pub scopes: Vec<String>,
    pub claims: ClaimPathsDto,
    pub allowed_email_domains: Vec<String>,
    pub jit: JitDto,
    pub link_by_email: LinkByEmailDto,
    pub trust_email: bool,
    pub userinfo: bool,
    pub algorithms: Vec<String>,
    pub ca_pem: Option<String>,
    pub mapping: Vec<MappingRuleDto>,
    pub authoritative: bool,
    /// The callback URL to register at the identity provider.
    pub redirect_uri: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<sso::ProviderView> for ProviderDto {
    fn from(v: sso::ProviderView) -> Self {
        let s = v.settings;
        Self {
            id: v.row.id,
            kind: v.row.kind,
            source: v.row.source,
            enabled: v.row.enabled,
            display_name: s.display_name,
            issuer: s.issuer,
            client_id: s.client_id,
            has_client_secret: v.has_client_secret,
            token_auth: match s.token_auth {
                TokenAuth::ClientSecretBasic => TokenAuthDto::ClientSecretBasic,
                TokenAuth::ClientSecretPost => TokenAuthDto::ClientSecretPost,
            },
            scopes: s.scopes,
            claims: ClaimPathsDto {
                email: Some(s.claims.email),
                email_verified: Some(s.claims.email_verified),
                name: Some(s.claims.name),
                groups: Some(s.claims.groups),
            },
            allowed_email_domains: s.allowed_email_domains,
            jit: match s.jit {
                Jit::Create => JitDto::Create,
                Jit::LinkOnly => JitDto::LinkOnly,
                Jit::Off => JitDto::Off,
            },
            link_by_email: match s.link_by_email {
                LinkByEmail::VerifiedOnly => LinkByEmailDto::VerifiedOnly,
                LinkByEmail::Never => LinkByEmailDto::Never,
            },
            trust_email: s.trust_email,
            userinfo: s.userinfo,
            algorithms: s.algorithms,
            ca_pem: s.ca_pem,
            mapping: s.mapping.into_iter().map(Into::into).collect(),
            authoritative: s.authoritative,
            redirect_uri: v.redirect_uri,
            created_at: ts(v.row.created_at_ms),
            updated_at: ts(v.row.updated_at_ms),
        }
    }
}

impl ProviderRequest {
    fn into_input(self) -> Result<ProviderInput, AppError> {
        if let Some(kind) = &self.kind {
            if kind != "oidc" {
                return Err(AppError::Invalid(format!("kind: {kind:?} is not supported here; use \"oidc\"")));
            }
        }
        let settings = OidcStored {
            display_name: self.display_name,
            issuer: self.issuer,
            client_id: self.client_id,
            token_auth: match self.token_auth {
                Some(TokenAuthDto::ClientSecretPost) => TokenAuth::ClientSecretPost,
                _ => TokenAuth::ClientSecretBasic,
            },
            scopes: self.scopes.unwrap_or_else(crate::config::default_oidc_scopes),
            claims: self.claims.map(Into::into).unwrap_or_default(),
            allowed_email_domains: self.allowed_email_domains.unwrap_or_default(),
            jit: match self.jit {
                Some(JitDto::LinkOnly) => Jit::LinkOnly,
                Some(JitDto::Off) => Jit::Off,
                _ => Jit::Create,
            },
            link_by_email: match self.link_by_email {
                Some(LinkByEmailDto::VerifiedOnly) => LinkByEmail::VerifiedOnly,
                _ => LinkByEmail::Never,
            },
            trust_email: self.trust_email.unwrap_or(false),
            userinfo: self.userinfo.unwrap_or(false),
            algorithms: self.algorithms.unwrap_or_else(crate::config::default_oidc_algorithms),
            ca_pem: self.ca_pem,
            mapping: self.mapping.unwrap_or_default().into_iter().map(Into::into).collect(),
            authoritative: self.authoritative.unwrap_or(false),
        };
        Ok(ProviderInput {
            enabled: self.enabled.unwrap_or(true),
            settings,
            client_secret: self.client_secret.map(|p| SecretString::new(p.0)),
        })
    }
}

#[derive(Debug, Object)]
pub struct ProviderList {
    pub items: Vec<ProviderDto>,
}

#[derive(Debug, ApiResponse)]
pub enum ProviderSaved {
    /// Created.
    #[oai(status = 201)]
    Created(Json<ProviderDto>),
    /// Replaced.
    #[oai(status = 200)]
    Ok(Json<ProviderDto>),
}

#[derive(Debug, ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// `POST /v1/sso-providers/{id}/preview`: claims as the provider would send them (with `sub`),
/// or an ID token (decoded without any check: it is only read).
#[derive(Debug, Object)]
pub struct PreviewRequest {
    pub claims: Option<serde_json::Value>,
    pub id_token: Option<String>,
}

/// The user a login would match, link or create.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PreviewUser {
    /// `linked` (already linked), `link_by_email`, `create` or `refuse`.
    pub action: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Why the login would be refused.
    pub reason: Option<String>,
    /// Profile fields the login would update (`email`, `name`).
    pub profile_changes: Vec<String>,
}

/// One workspace membership the login would change.
#[derive(Debug, Object)]
pub struct PreviewMembership {
    pub workspace_id: String,
    pub workspace_slug: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// What a login with these claims would do. Nothing was changed.
#[derive(Debug, Object)]
pub struct PreviewResponse {
    pub subject: String,
    pub issuer: String,
    pub email_verified: bool,
    pub groups: Vec<String>,
    pub user: PreviewUser,
    /// `admin` or `user`, after the login.
    pub platform_role: String,
    /// `grant`, `revoke` or `none`.
    pub platform_role_change: String,
    pub memberships: Vec<PreviewMembership>,
    /// Rules that could not apply (unknown workspace or role) and changes held back.
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------

fn page(title: &str, reason: &str, request_id: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body>\n\
         <h1>{t}</h1>\n<p id=\"reason\">{r}</p>\n<p>Request id: <code id=\"request-id\">{id}</code></p>\n\
         <p><a href=\"/login\">Back to sign-in</a></p>\n</body></html>\n",
        t = esc(title),
        r = esc(reason),
        id = esc(request_id)
    )
}

/// `return_to` with `key=value` added to its query.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, fragment) = url.split_once('#').map_or((url, None), |(b, f)| (b, Some(f)));
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{key}={value}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn session_cookies(i: &Issued) -> Vec<String> {
    let mut v = vec![session_cookie(i.cookie.as_ref(), i.session_expires_in)];
    if let Some(csrf) = &i.csrf_token {
        v.push(format!(
            "{CSRF_COOKIE}={}; Path=/; Secure; SameSite=Strict; Max-Age={}",
            csrf.expose(),
            i.session_expires_in
        ));
    }
    v
}

pub struct SsoApi;

#[OpenApi]
impl SsoApi {
    /// Identity providers for a login page
    ///
    /// The enabled providers, with the URL their login button points at. No credential needed.
    #[oai(path = "/v1/sso/providers", method = "get", tag = "ApiTags::Sso", operation_id = "listLoginProviders")]
    async fn login_providers(&self, state: Data<&AppState>) -> Json<LoginProviders> {
        let items = sso::login_options(&state)
            .into_iter()
            .map(|o| LoginProvider {
                login_url: format!("/v1/sso/{}/login", o.id),
                id: o.id,
                display_name: o.display_name,
                kind: o.kind,
            })
            .collect();
        Json(LoginProviders { items })
    }

    /// Start a login at an identity provider
    ///
    /// Redirects the browser to the provider with a fresh `state` (single use, ten minutes,
    /// bound to this browser by a cookie), `nonce` and PKCE S256 challenge. `return_to` is a
    /// path on this server or a URL on an origin in `sso.return_to_origins` (default `/docs/`).
    /// `mode=code` ends the login with a one-time code on `return_to` instead of a session
    /// cookie, for API clients: start it with a PKCE S256 `code_challenge` and exchange the code
    /// with its `code_verifier` at `POST /v1/sso/exchange`. Rate limited per client
    /// address like the other sign-in endpoints (429 with `Retry-After`).
    #[oai(path = "/v1/sso/:provider/login", method = "get", tag = "ApiTags::Sso", operation_id = "ssoLogin")]
    #[allow(clippy::too_many_arguments)]
    async fn login(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        req: &poem::Request,
        provider: Path<String>,
        return_to: Query<Option<String>>,
        mode: Query<Option<LoginMode>>,
        /// `mode=code` only, and then required: the PKCE S256 challenge
        /// (base64url(SHA-256(verifier))) of a verifier the API client keeps for the exchange.
        code_challenge: Query<Option<String>>,
    ) -> Result<Redirect, ApiError> {
        // Each start stores a login for ten minutes: the sign-in rate limit applies.
        crate::domain::auth::check_rate(&state, &origin(&info), info.client_ip, "sso.login")
            .await
            .map_err(fail(&info))?;
        let mode = match mode.0.unwrap_or_default() {
            LoginMode::Cookie => Mode::Cookie,
            LoginMode::Code => Mode::Code,
        };
        let browser = browser_cookie(req);
        let started = sso::begin(&state, &provider.0, return_to.0.as_deref(), mode, code_challenge.0, browser)
            .await
            .map_err(fail(&info))?;
        let binding = format!(
            "{BROWSER_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            started.browser.expose(),
            sso::LOGIN_TTL_MS / 1000
        );
        Ok(Redirect::Found(started.location, Some(binding)))
    }

    /// OIDC callback
    ///
    /// Where the provider sends the browser back. Checks the state (single use, this browser),
    /// exchanges the code with the PKCE verifier, validates the ID token (algorithm allow-list,
    /// signature, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`), merges userinfo when configured,
    /// provisions the user and applies the mapping, then signs the user in. A failure is a plain
    /// page with the request id and a short reason, audited as `sso.login.failed`.
    #[oai(
        path = "/v1/sso/oidc/:provider/callback",
        method = "get",
        tag = "ApiTags::Sso",
        operation_id = "oidcCallback"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn callback(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        req: &poem::Request,
        provider: Path<String>,
        code: Query<Option<String>>,
        #[oai(name = "state")] login_state: Query<Option<String>>,
        error: Query<Option<String>>,
    ) -> WithCookies<CallbackPage> {
        let o = origin(&info);
        // Each callback costs a write and an audit record: the sign-in rate limit applies.
        if crate::domain::auth::check_rate(&state, &o, info.client_ip, "sso.callback").await.is_err() {
            let html =
                Html(page("Sign-in failed", "too many attempts from this address; try again later", &info.request_id));
            return WithCookies(CallbackPage::TooMany(html), Vec::new());
        }
        let input = CallbackInput {
            code: code.0.map(SecretString::new),
            state: login_state.0.map(SecretString::new),
            error: error.0,
        };
        match sso::callback(&state, &provider.0, input, browser_cookie(req), &o).await {
            Ok(Finished::Session { issued, return_to }) => {
                WithCookies(CallbackPage::Found(return_to), session_cookies(&issued))
            }
            Ok(Finished::Code { code, return_to }) => {
                WithCookies(CallbackPage::Found(with_param(&return_to, "code", code.expose())), Vec::new())
            }
            Err(f) => {
                let html = Html(page("Sign-in failed", &f.reason, &info.request_id));
                let page = match f.status {
                    403 => CallbackPage::Refused(html),
                    404 => CallbackPage::Unknown(html),
                    502 => CallbackPage::BadGateway(html),
                    503 => CallbackPage::Unavailable(html),
                    500 => CallbackPage::Internal(html),
                    _ => CallbackPage::Failed(html),
                };
                WithCookies(page, Vec::new())
            }
        }
    }

    /// Exchange a one-time SSO code for a session
    ///
    /// The code an SSO login in `mode=code` put on `return_to`, with the PKCE verifier of the
    /// `code_challenge` that login started with. A code works once (right or wrong), for two
    /// minutes.
    /// Rate limited per client address like the other sign-in endpoints.
    #[oai(path = "/v1/sso/exchange", method = "post", tag = "ApiTags::Sso", operation_id = "ssoExchange")]
    async fn exchange(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        body: JsonBody<ExchangeRequest>,
    ) -> Result<super::accounts::SessionResponse, ApiError> {
        let o = origin(&info);
        crate::domain::auth::check_rate(&state, &o, info.client_ip, "sso.exchange").await.map_err(fail(&info))?;
        let cookie_mode = body.0.mode.unwrap_or_default() == SessionMode::Cookie;
        let (code, verifier) = (SecretString::new(body.0.code.0), SecretString::new(body.0.code_verifier.0));
        let issued = sso::exchange(&state, code, verifier, cookie_mode, o).await.map_err(fail(&info))?;
        Ok(super::accounts::token_response(issued, cookie_mode))
    }

    /// List identity providers (platform admin)
    #[oai(path = "/v1/sso-providers", method = "get", tag = "ApiTags::Sso", operation_id = "listSsoProviders")]
    async fn list(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
    ) -> Result<Json<ProviderList>, ApiError> {
        let items = sso::list(&state, auth.principal()).await.map_err(fail(&info))?;
        Ok(Json(ProviderList { items: items.into_iter().map(Into::into).collect() }))
    }

    /// Add an identity provider (platform admin)
    ///
    /// The client secret is sealed by the vault and never shown again. Register the answer's
    /// `redirect_uri` at the provider.
    #[oai(path = "/v1/sso-providers", method = "post", tag = "ApiTags::Sso", operation_id = "createSsoProvider")]
    async fn create(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        body: JsonBody<ProviderRequest>,
    ) -> Result<ProviderSaved, ApiError> {
        let id = body.0.id.clone().ok_or_else(|| AppError::Invalid("id: required".into())).map_err(fail(&info))?;
        if body.0.client_secret.is_none() {
            return Err(fail(&info)(AppError::Invalid("client_secret: required".into())));
        }
        let input = body.0.into_input().map_err(fail(&info))?;
        let (v, _) =
            sso::save(&state, auth.principal(), &id, input, false, &origin(&info)).await.map_err(fail(&info))?;
        Ok(ProviderSaved::Created(Json(v.into())))
    }

    /// An identity provider (platform admin)
    #[oai(path = "/v1/sso-providers/:id", method = "get", tag = "ApiTags::Sso", operation_id = "getSsoProvider")]
    async fn get(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Json<ProviderDto>, ApiError> {
        let v = sso::get(&state, auth.principal(), &id.0).await.map_err(fail(&info))?;
        Ok(Json(v.into()))
    }

    /// Replace an identity provider's settings (platform admin)
    ///
    /// Every field is replaced; `client_secret` omitted keeps the stored one. Providers from the
    /// configuration file are read-only here (409).
    #[oai(path = "/v1/sso-providers/:id", method = "put", tag = "ApiTags::Sso", operation_id = "updateSsoProvider")]
    async fn update(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
        body: JsonBody<ProviderRequest>,
    ) -> Result<ProviderSaved, ApiError> {
        let input = body.0.into_input().map_err(fail(&info))?;
        let (v, _) =
            sso::save(&state, auth.principal(), &id.0, input, true, &origin(&info)).await.map_err(fail(&info))?;
        Ok(ProviderSaved::Ok(Json(v.into())))
    }

    /// Delete an identity provider (platform admin)
    ///
    /// Its links to users go with it (the users stay). Providers from the configuration file
    /// are read-only here (409).
    #[oai(path = "/v1/sso-providers/:id", method = "delete", tag = "ApiTags::Sso", operation_id = "deleteSsoProvider")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
    ) -> Result<Deleted, ApiError> {
        sso::delete(&state, auth.principal(), &id.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Deleted::NoContent)
    }

    /// Dry run of a provider's provisioning and mapping (platform admin)
    ///
    /// Paste the claims a provider would send (with `sub`), or an ID token (decoded without
    /// checking anything), and see the user it would match, link or create, the platform role and
    /// the membership changes. Changes nothing.
    #[oai(
        path = "/v1/sso-providers/:id/preview",
        method = "post",
        tag = "ApiTags::Sso",
        operation_id = "previewSsoProvider"
    )]
    async fn preview(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: AnyAuth,
        id: Path<String>,
        body: JsonBody<PreviewRequest>,
    ) -> Result<Json<PreviewResponse>, ApiError> {
        let input = match (body.0.claims, body.0.id_token) {
            (Some(serde_json::Value::Object(c)), None) => PreviewInput::Claims(c),
            (Some(_), None) => return Err(fail(&info)(AppError::Invalid("claims: a JSON object".into()))),
            (None, Some(t)) => PreviewInput::IdToken(t),
            _ => return Err(fail(&info)(AppError::Invalid("claims: give either claims or id_token".into()))),
        };
        let (identity, plan) =
            sso::preview(&state, auth.principal(), &id.0, input, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(preview_response(identity, plan)))
    }
}

fn preview_response(identity: crate::sso::ExternalIdentity, plan: provision::Plan) -> PreviewResponse {
    use provision::{AdminChange, UserMatch};
    let (action, user_id, reason) = match &plan.user {
        UserMatch::Linked { user_id } => ("linked", Some(user_id.clone()), None),
        UserMatch::LinkByEmail { user_id } => ("link_by_email", Some(user_id.clone()), None),
        UserMatch::Create { .. } => ("create", None, None),
        UserMatch::Refuse { reason } => ("refuse", None, Some(reason.clone())),
    };
    PreviewResponse {
        subject: identity.subject,
        issuer: identity.issuer,
        email_verified: identity.email_verified,
        groups: identity.groups,
        user: PreviewUser {
            action: action.into(),
            user_id,
            email: plan.email.clone(),
            name: plan.name.clone(),
            reason,
            profile_changes: plan.profile_changes.iter().map(|s| s.to_string()).collect(),
        },
        platform_role: if plan.admin_after { "admin" } else { "user" }.into(),
        platform_role_change: match plan.admin {
            AdminChange::Grant => "grant",
            AdminChange::Revoke => "revoke",
            AdminChange::None => "none",
        }
        .into(),
        memberships: plan
            .memberships
            .into_iter()
            .map(|m| PreviewMembership {
                workspace_id: m.workspace_id,
                workspace_slug: m.workspace_slug,
                add: m.add.into_iter().map(|r| r.1).collect(),
                remove: m.remove.into_iter().map(|r| r.1).collect(),
                before: m.before,
                after: m.after,
            })
            .collect(),
        notes: plan.notes,
    }
}
