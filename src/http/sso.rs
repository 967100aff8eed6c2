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
use crate::domain::sso::{
    self, provision, CallbackInput, Finished, Mode, OidcStored, PreviewInput, ProviderInput, SamlStored, Stored,
};
use crate::error::AppError;
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::http::header;
use poem::web::Data;
use poem::IntoResponse;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Form, Html, Json, PlainText};
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

/// The IdP's HTTP-POST to the assertion consumer service.
#[derive(Debug, Object, serde::Deserialize)]
pub struct AcsForm {
    /// The base64 Response.
    #[oai(rename = "SAMLResponse")]
    #[serde(rename = "SAMLResponse")]
    pub saml_response: Option<String>,
    /// The handle of the login this browser started (`gthl_…`).
    #[oai(rename = "RelayState")]
    #[serde(rename = "RelayState")]
    pub relay_state: Option<String>,
}

/// Largest body the assertion consumer service reads.
pub const ACS_MAX_BODY_BYTES: usize = 512 * 1024;

#[derive(Debug, ApiResponse)]
pub enum SamlMetadata {
    /// The SP metadata (an `md:EntityDescriptor`).
    #[oai(status = 200, content_type = "application/samlmetadata+xml")]
    Ok(PlainText<String>),
}

#[derive(Debug, ApiResponse)]
pub enum AcsPage {
    /// Signed in: on to `return_to`, with the session cookie (cookie mode) or `code=` (code mode).
    #[oai(status = 303)]
    SeeOther(#[oai(header = "Location")] String),
    /// The response was refused: a plain page with the request id and a short reason.
    #[oai(status = 400)]
    Failed(Html<String>),
    /// The account may not sign in (disabled, not linked, domain not allowed).
    #[oai(status = 403)]
    Refused(Html<String>),
    /// No such SAML provider (or disabled).
    #[oai(status = 404)]
    Unknown(Html<String>),
    /// The body is over 512 KiB (refused before it is read).
    #[oai(status = 413, content_type = "application/problem+json")]
    TooLarge(Json<super::error::Problem>),
    /// The body is not `application/x-www-form-urlencoded`.
    #[oai(status = 415, content_type = "application/problem+json")]
    WrongType(Json<super::error::Problem>),
    /// Too many responses from this address (the sign-in rate limit).
    #[oai(status = 429)]
    TooMany(Html<String>),
    /// Gatehouse failed.
    #[oai(status = 500)]
    Internal(Html<String>),
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

/// An identity provider to create (`POST`, with `id`) or replace (`PUT`): OIDC (the default)
/// with `issuer`, `client_id` and `client_secret`, or SAML (`kind: "saml"`) with `saml`.
#[derive(Debug, Object)]
pub struct ProviderRequest {
    /// 1 to 64 of `a-z 0-9 -`; used in URLs. Required on `POST`, ignored on `PUT`.
    pub id: Option<String>,
    /// `oidc` (the default) or `saml`.
    pub kind: Option<String>,
    pub display_name: String,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// OIDC, required: the issuer URL; discovery is read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    /// OIDC, required.
    pub client_id: Option<String>,
    /// OIDC: sealed by the vault and never returned. Required on `POST`; omitted on `PUT`, the
    /// stored one is kept.
    pub client_secret: Option<Password>,
    /// OIDC. Default `client_secret_basic`.
    pub token_auth: Option<TokenAuthDto>,
    /// OIDC. Default `["openid", "email", "profile"]`; must hold `openid`.
    pub scopes: Option<Vec<String>>,
    /// OIDC: where each user attribute is in the claims.
    pub claims: Option<ClaimPathsDto>,
    /// SAML, required: the IdP and how to read its assertions.
    pub saml: Option<SamlRequestDto>,
    /// When not empty, only emails in these domains sign in.
    pub allowed_email_domains: Option<Vec<String>>,
    /// Default `create`.
    pub jit: Option<JitDto>,
    /// Default `never`.
    pub link_by_email: Option<LinkByEmailDto>,
    /// Take the provider's emails as verified even without `email_verified = true` (Entra ID
    /// sends no such claim; SAML has no standard way to say so). Default `false`: an unverified
    /// email is never stored or linked.
    pub trust_email: Option<bool>,
    /// OIDC: also read userinfo and merge its claims (the ID token's win). Default `false`.
    pub userinfo: Option<bool>,
    /// OIDC: ID token algorithms accepted; default `["RS256", "ES256"]`. Asymmetric only.
    pub algorithms: Option<Vec<String>>,
    /// OIDC: PEM of the CA that signed the provider's certificate (system roots otherwise).
    pub ca_pem: Option<String>,
    pub mapping: Option<Vec<MappingRuleDto>>,
    /// The mapping decides the roles in every workspace it names (hand-given roles there are
    /// removed) and, when a rule names a platform role, the platform role. Default `false`.
    pub authoritative: Option<bool>,
}

/// Which SAML attributes (their `Name`, short or URI, or `FriendlyName`) carry what.
#[derive(Debug, Object, Clone)]
pub struct SamlAttributesDto {
    /// Default `email`; an email-format NameID is used when no such attribute comes.
    pub email: Option<String>,
    /// Default `email_verified` (rarely sent: see `trust_email`).
    pub email_verified: Option<String>,
    /// Default `displayName`.
    pub name: Option<String>,
    /// Default `groups`; Entra ID: `http://schemas.microsoft.com/ws/2008/06/identity/claims/groups`.
    pub groups: Option<String>,
}

/// A SAML identity provider's own settings.
#[derive(Debug, Object, Clone)]
pub struct SamlRequestDto {
    /// The IdP's metadata XML (an `EntityDescriptor` with an `IDPSSODescriptor`): its entity id,
    /// its HTTP-Redirect sign-on URL and its signing certificates (several during a rollover).
    pub idp_metadata: String,
    /// This SP's entity id; default: its metadata URL.
    pub sp_entity_id: Option<String>,
    /// The NameID format to ask for; default: none (the IdP's choice).
    pub name_id_format: Option<String>,
    pub attributes: Option<SamlAttributesDto>,
    /// Sign AuthnRequests (RSA-SHA256 over the redirect's query). Default `true`.
    pub sign_requests: Option<bool>,
    /// Accept SHA-1 signatures and digests (old ADFS). Default `false`.
    pub allow_sha1: Option<bool>,
    /// Accept responses no login started here (IdP-initiated). Default `false`.
    pub allow_unsolicited: Option<bool>,
}

/// A SAML provider as the admin API shows it: what to give the IdP, and what its metadata says.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SamlDto {
    pub idp_metadata: String,
    pub sp_entity_id: String,
    /// Where the IdP posts responses (HTTP-POST binding).
    pub acs_url: String,
    /// This SP's metadata, for the IdP: `GET` it, no credential needed.
    pub metadata_url: String,
    pub name_id_format: Option<String>,
    pub attributes: SamlAttributesDto,
    pub sign_requests: bool,
    pub allow_sha1: bool,
    pub allow_unsolicited: bool,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    /// SHA-256 fingerprints (hex) of the IdP signing certificates trusted.
    pub idp_certificate_sha256: Vec<String>,
    /// The SP's signing certificate (PEM); its key is sealed by the vault.
    pub sp_signing_certificate: String,
    /// The SP's encryption certificate (PEM); its key is sealed by the vault.
    pub sp_encryption_certificate: String,
}

/// An identity provider as the admin API shows it (never its secret or keys).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProviderDto {
    pub id: String,
    /// `oidc` or `saml`.
    pub kind: String,
    /// `config` (the configuration file; read-only here) or `api`.
    pub source: String,
    pub enabled: bool,
    pub display_name: String,
    /// OIDC: the issuer URL. SAML: the IdP's entity id.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub has_client_secret: bool,
    pub token_auth: Option<TokenAuthDto>,
    pub scopes: Option<Vec<String>>,
    pub claims: Option<ClaimPathsDto>,
    pub saml: Option<SamlDto>,
    pub allowed_email_domains: Vec<String>,
    pub jit: JitDto,
    pub link_by_email: LinkByEmailDto,
    pub trust_email: bool,
    pub userinfo: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub ca_pem: Option<String>,
    pub mapping: Vec<MappingRuleDto>,
    pub authoritative: bool,
    /// OIDC: the callback URL to register at the identity provider. SAML: the ACS URL.
    pub redirect_uri: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

fn jit_dto(j: Jit) -> JitDto {
    match j {
        Jit::Create => JitDto::Create,
        Jit::LinkOnly => JitDto::LinkOnly,
        Jit::Off => JitDto::Off,
    }
}

fn link_dto(l: LinkByEmail) -> LinkByEmailDto {
    match l {
        LinkByEmail::VerifiedOnly => LinkByEmailDto::VerifiedOnly,
        LinkByEmail::Never => LinkByEmailDto::Never,
    }
}

impl From<sso::ProviderView> for ProviderDto {
    fn from(v: sso::ProviderView) -> Self {
        let base = |display_name: String,
                    allowed_email_domains: Vec<String>,
                    jit: Jit,
                    link: LinkByEmail,
                    trust_email: bool,
                    mapping: Vec<MappingRule>,
                    authoritative: bool| Self {
            id: v.row.id.clone(),
            kind: v.row.kind.clone(),
            source: v.row.source.clone(),
            enabled: v.row.enabled,
            display_name,
            issuer: None,
            client_id: None,
            has_client_secret: v.has_client_secret,
            token_auth: None,
            scopes: None,
            claims: None,
            saml: None,
            allowed_email_domains,
            jit: jit_dto(jit),
            link_by_email: link_dto(link),
            trust_email,
            userinfo: None,
            algorithms: None,
            ca_pem: None,
            mapping: mapping.into_iter().map(Into::into).collect(),
            authoritative,
            redirect_uri: v.redirect_uri.clone(),
            created_at: ts(v.row.created_at_ms),
            updated_at: ts(v.row.updated_at_ms),
        };
        match v.settings.clone() {
            Stored::Oidc(s) => Self {
                issuer: Some(s.issuer),
                client_id: Some(s.client_id),
                token_auth: Some(match s.token_auth {
                    TokenAuth::ClientSecretBasic => TokenAuthDto::ClientSecretBasic,
                    TokenAuth::ClientSecretPost => TokenAuthDto::ClientSecretPost,
                }),
                scopes: Some(s.scopes),
                claims: Some(ClaimPathsDto {
                    email: Some(s.claims.email),
                    email_verified: Some(s.claims.email_verified),
                    name: Some(s.claims.name),
                    groups: Some(s.claims.groups),
                }),
                userinfo: Some(s.userinfo),
                algorithms: Some(s.algorithms),
                ca_pem: s.ca_pem,
                ..base(
                    s.display_name,
                    s.allowed_email_domains,
                    s.jit,
                    s.link_by_email,
                    s.trust_email,
                    s.mapping,
                    s.authoritative,
                )
            },
            Stored::Saml(s) => {
                let sp = v.saml.clone();
                let saml = sp.map(|sp| SamlDto {
                    idp_metadata: s.idp_metadata.clone(),
                    sp_entity_id: sp.sp_entity_id,
                    acs_url: sp.acs_url,
                    metadata_url: sp.metadata_url,
                    name_id_format: s.name_id_format.clone(),
                    attributes: SamlAttributesDto {
                        email: Some(s.attributes.email.clone()),
                        email_verified: Some(s.attributes.email_verified.clone()),
                        name: Some(s.attributes.name.clone()),
                        groups: Some(s.attributes.groups.clone()),
                    },
                    sign_requests: s.sign_requests,
                    allow_sha1: s.allow_sha1,
                    allow_unsolicited: s.allow_unsolicited,
                    idp_entity_id: sp.idp_entity_id,
                    idp_sso_url: sp.idp_sso_url,
                    idp_certificate_sha256: sp.idp_certificate_sha256,
                    sp_signing_certificate: s.sp_signing_cert.clone(),
                    sp_encryption_certificate: s.sp_encryption_cert.clone(),
                });
                let issuer = saml.as_ref().and_then(|d| d.idp_entity_id.clone());
                Self {
                    issuer,
                    saml,
                    ..base(
                        s.display_name,
                        s.allowed_email_domains,
                        s.jit,
                        s.link_by_email,
                        s.trust_email,
                        s.mapping,
                        s.authoritative,
                    )
                }
            }
        }
    }
}

impl ProviderRequest {
    fn into_input(self) -> Result<ProviderInput, AppError> {
        let jit = match self.jit {
            Some(JitDto::LinkOnly) => Jit::LinkOnly,
            Some(JitDto::Off) => Jit::Off,
            _ => Jit::Create,
        };
        let link_by_email = match self.link_by_email {
            Some(LinkByEmailDto::VerifiedOnly) => LinkByEmail::VerifiedOnly,
            _ => LinkByEmail::Never,
        };
        let mapping: Vec<MappingRule> = self.mapping.unwrap_or_default().into_iter().map(Into::into).collect();
        let settings = match self.kind.as_deref().unwrap_or("oidc") {
            "oidc" => {
                if self.saml.is_some() {
                    return Err(AppError::Invalid("saml: only with kind \"saml\"".into()));
                }
                Stored::Oidc(OidcStored {
                    display_name: self.display_name,
                    issuer: self.issuer.ok_or_else(|| AppError::Invalid("issuer: required".into()))?,
                    client_id: self.client_id.ok_or_else(|| AppError::Invalid("client_id: required".into()))?,
                    token_auth: match self.token_auth {
                        Some(TokenAuthDto::ClientSecretPost) => TokenAuth::ClientSecretPost,
                        _ => TokenAuth::ClientSecretBasic,
                    },
                    scopes: self.scopes.unwrap_or_else(crate::config::default_oidc_scopes),
                    claims: self.claims.map(Into::into).unwrap_or_default(),
                    allowed_email_domains: self.allowed_email_domains.unwrap_or_default(),
                    jit,
                    link_by_email,
                    trust_email: self.trust_email.unwrap_or(false),
                    userinfo: self.userinfo.unwrap_or(false),
                    algorithms: self.algorithms.unwrap_or_else(crate::config::default_oidc_algorithms),
                    ca_pem: self.ca_pem,
                    mapping,
                    authoritative: self.authoritative.unwrap_or(false),
                })
            }
            "saml" => {
                let oidc_only = [
                    ("issuer", self.issuer.is_some()),
                    ("client_id", self.client_id.is_some()),
                    ("client_secret", self.client_secret.is_some()),
                    ("token_auth", self.token_auth.is_some()),
                    ("scopes", self.scopes.is_some()),
                    ("claims", self.claims.is_some()),
                    ("userinfo", self.userinfo.is_some()),
                    ("algorithms", self.algorithms.is_some()),
                    ("ca_pem", self.ca_pem.is_some()),
                ];
                if let Some((name, _)) = oidc_only.iter().find(|(_, set)| *set) {
                    return Err(AppError::Invalid(format!("{name}: OIDC only; a SAML provider takes `saml`")));
                }
                let saml = self.saml.ok_or_else(|| AppError::Invalid("saml: required for kind \"saml\"".into()))?;
                let def = crate::config::SamlAttributeNames::default();
                let a = saml.attributes.unwrap_or(SamlAttributesDto {
                    email: None,
                    email_verified: None,
                    name: None,
                    groups: None,
                });
                Stored::Saml(SamlStored {
                    display_name: self.display_name,
                    idp_metadata: saml.idp_metadata,
                    sp_entity_id: saml.sp_entity_id,
                    name_id_format: saml.name_id_format,
                    attributes: ClaimPaths {
                        email: a.email.unwrap_or(def.email),
                        email_verified: a.email_verified.unwrap_or(def.email_verified),
                        name: a.name.unwrap_or(def.name),
                        groups: a.groups.unwrap_or(def.groups),
                    },
                    allowed_email_domains: self.allowed_email_domains.unwrap_or_default(),
                    jit,
                    link_by_email,
                    trust_email: self.trust_email.unwrap_or(false),
                    sign_requests: saml.sign_requests.unwrap_or(true),
                    allow_sha1: saml.allow_sha1.unwrap_or(false),
                    allow_unsolicited: saml.allow_unsolicited.unwrap_or(false),
                    mapping,
                    authoritative: self.authoritative.unwrap_or(false),
                    sp_signing_cert: String::new(),
                    sp_encryption_cert: String::new(),
                })
            }
            other => return Err(AppError::Invalid(format!("kind: {other:?} is not \"oidc\" or \"saml\""))),
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

/// `POST /v1/sso-providers/{id}/preview`: for an OIDC provider, claims as it would send them
/// (with `sub`) or an ID token (decoded without any check: it is only read); for a SAML
/// provider, an assertion's NameID and attributes.
#[derive(Debug, Object)]
pub struct PreviewRequest {
    pub claims: Option<serde_json::Value>,
    pub id_token: Option<String>,
    pub saml: Option<SamlPreviewDto>,
}

/// What a SAML assertion says: its NameID and its attributes (name → value or list of values).
#[derive(Debug, Object)]
pub struct SamlPreviewDto {
    pub name_id: String,
    pub name_id_format: Option<String>,
    /// Attribute `Name` (or `FriendlyName`) → a string or a list of strings.
    pub attributes: Option<serde_json::Value>,
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

#[derive(Default)]
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
        // A SAML response comes back by a cross-site POST, which carries only SameSite=None
        // cookies; an OIDC callback is a top-level GET, which carries Lax ones.
        let same_site = if started.cross_site { "None" } else { "Lax" };
        let binding = format!(
            "{BROWSER_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={}",
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

    /// SAML service provider metadata
    ///
    /// What the IdP needs: this SP's entity id, its assertion consumer service (HTTP-POST), the
    /// NameID format asked for, the certificate it signs AuthnRequests with and the one
    /// assertions are encrypted to (their keys were generated by Gatehouse and are sealed by the
    /// vault). No credential needed.
    #[oai(
        path = "/v1/sso/saml/:provider/metadata",
        method = "get",
        tag = "ApiTags::Sso",
        operation_id = "samlMetadata"
    )]
    async fn saml_metadata(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        provider: Path<String>,
    ) -> Result<SamlMetadata, ApiError> {
        let xml = sso::saml::metadata(&state, &provider.0).map_err(fail(&info))?;
        Ok(SamlMetadata::Ok(PlainText(xml)))
    }

    /// SAML assertion consumer service
    ///
    /// Where the IdP posts its Response (HTTP-POST binding; the body is capped at 512 KiB). The
    /// RelayState names the login this browser started (single use, ten minutes); the Response
    /// must answer its AuthnRequest (`InResponseTo`). Before anything in it is believed: no DTD,
    /// comment or processing instruction; exactly one assertion, directly in the Response; a
    /// signature on the Assertion or on the Response around it, covering the element that
    /// carries it, with an allowed algorithm (SHA-1 only when allowed), verified against the
    /// IdP certificates configured, never a key in the message; an encrypted assertion decrypted
    /// with the SP key; `Destination`, `Issuer`, `Audience`, `Recipient`, `NotBefore` and
    /// `NotOnOrAfter` (with `sso.clock_skew_seconds`), status Success. An assertion works once.
    /// Then the user is provisioned and mapped as for OIDC. A failure is a plain page with the
    /// request id and a short reason, audited as `sso.login.failed`.
    #[oai(path = "/v1/sso/saml/:provider/acs", method = "post", tag = "ApiTags::Sso", operation_id = "samlAcs")]
    async fn saml_acs(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        req: &poem::Request,
        provider: Path<String>,
        form: Form<AcsForm>,
    ) -> WithCookies<AcsPage> {
        let o = origin(&info);
        if crate::domain::auth::check_rate(&state, &o, info.client_ip, "sso.acs").await.is_err() {
            let html =
                Html(page("Sign-in failed", "too many attempts from this address; try again later", &info.request_id));
            return WithCookies(AcsPage::TooMany(html), Vec::new());
        }
        let input = sso::saml::AcsInput {
            saml_response: form.0.saml_response,
            relay_state: form.0.relay_state.map(SecretString::new),
        };
        match sso::saml::acs(&state, &provider.0, input, browser_cookie(req), &o).await {
            Ok(Finished::Session { issued, return_to }) => {
                WithCookies(AcsPage::SeeOther(return_to), session_cookies(&issued))
            }
            Ok(Finished::Code { code, return_to }) => {
                WithCookies(AcsPage::SeeOther(with_param(&return_to, "code", code.expose())), Vec::new())
            }
            Err(f) => {
                let html = Html(page("Sign-in failed", &f.reason, &info.request_id));
                let page = match f.status {
                    403 => AcsPage::Refused(html),
                    404 => AcsPage::Unknown(html),
                    503 => AcsPage::Unavailable(html),
                    500 => AcsPage::Internal(html),
                    _ => AcsPage::Failed(html),
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
        if body.0.client_secret.is_none() && body.0.kind.as_deref().unwrap_or("oidc") == "oidc" {
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
        let input = match (body.0.claims, body.0.id_token, body.0.saml) {
            (Some(serde_json::Value::Object(c)), None, None) => PreviewInput::Claims(c),
            (Some(_), None, None) => return Err(fail(&info)(AppError::Invalid("claims: a JSON object".into()))),
            (None, Some(t), None) => PreviewInput::IdToken(t),
            (None, None, Some(s)) => {
                let attributes = match s.attributes {
                    None => serde_json::Map::new(),
                    Some(serde_json::Value::Object(a)) => a,
                    Some(_) => {
                        return Err(fail(&info)(AppError::Invalid("saml.attributes: a JSON object".into())));
                    }
                };
                PreviewInput::Saml { name_id: s.name_id, name_id_format: s.name_id_format, attributes }
            }
            _ => {
                return Err(fail(&info)(AppError::Invalid(
                    "claims: give one of claims, id_token (OIDC) or saml (SAML)".into(),
                )))
            }
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
