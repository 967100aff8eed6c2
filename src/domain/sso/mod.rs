//! Single sign-on: the identity providers (from the configuration file and the admin API), the
//! login flow (start, callback, one-time codes) and the dry-run preview. The protocol work is in
//! `crate::sso`; who the identity becomes is [`provision`].
//!
//! A login in flight is a row keyed by the SHA-256 of its `state`, bound to the browser that
//! started it by the SHA-256 of a cookie, holding the nonce and PKCE verifier sealed by the
//! vault, and taken (deleted) by the first callback that names it: a state works once, for ten
//! minutes, in one browser.

pub mod provision;
pub mod saml;

use crate::config::{
    ClaimPaths, Jit, LinkByEmail, MappingRule, OidcProviderConfig, SamlProviderConfig, SsoConfig, TokenAuth,
};
use crate::crypto::token::{self, Kind};
use crate::crypto::{ct_eq, SecretString};
use crate::db::{LoginRow, ProviderRow};
use crate::domain::audit::{self, Actor, Event, Origin, Outcome};
use crate::domain::auth::{Issued, Principal};
use crate::domain::sessions::{self, Method};
use crate::domain::unix_ms;
use crate::error::AppError;
use crate::outbound::HttpClient;
use crate::sso::oidc::{OidcProvider, OidcSettings};
use crate::sso::saml::SamlProvider;
use crate::sso::ExternalIdentity;
use crate::state::AppState;
pub use saml::SamlStored;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a login may take from start to callback.
pub const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a one-time code lives.
pub const CODE_TTL_MS: i64 = 2 * 60 * 1000;
/// Where a browser lands when the login named no `return_to`.
pub const DEFAULT_RETURN_TO: &str = "/docs/";

/// An OIDC provider's settings as stored (no secret: the client secret is sealed apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcStored {
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub token_auth: TokenAuth,
    pub scopes: Vec<String>,
    pub claims: ClaimPaths,
    pub allowed_email_domains: Vec<String>,
    pub jit: Jit,
    pub link_by_email: LinkByEmail,
    #[serde(default)]
    pub trust_email: bool,
    pub userinfo: bool,
    pub algorithms: Vec<String>,
    /// PEM of the CA that signed the provider's certificate (system roots otherwise).
    pub ca_pem: Option<String>,
    pub mapping: Vec<MappingRule>,
    pub authoritative: bool,
}

impl OidcStored {
    /// Check what the types do not; the error names the field.
    pub fn check(&self) -> Result<(), AppError> {
        crate::config::check_oidc_fields(
            &self.display_name,
            &self.issuer,
            &self.client_id,
            &self.scopes,
            &self.algorithms,
        )
        .and_then(|()| crate::config::check_mapping(&self.mapping))
        .and_then(|()| crate::config::check_email_domains(&self.allowed_email_domains))
        .map_err(AppError::Invalid)?;
        for (name, path) in [
            ("claims.email", &self.claims.email),
            ("claims.email_verified", &self.claims.email_verified),
            ("claims.name", &self.claims.name),
            ("claims.groups", &self.claims.groups),
        ] {
            if !crate::config::is_claim_path(path) {
                return Err(AppError::Invalid(format!("{name}: a dotted claim path such as \"email\"")));
            }
        }
        if let Some(pem) = &self.ca_pem {
            if pem.len() > 65_536 || !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(AppError::Invalid("ca_pem: one or more PEM certificates (at most 64 KiB)".into()));
            }
        }
        Ok(())
    }

    fn policy(&self, provider_id: &str) -> provision::Policy {
        provision::Policy {
            provider_id: provider_id.to_string(),
            jit: self.jit,
            link_by_email: self.link_by_email,
            allowed_email_domains: self.allowed_email_domains.clone(),
            mapping: self.mapping.clone(),
            authoritative: self.authoritative,
            trust_email: self.trust_email,
        }
    }
}

/// A provider's settings as stored, by protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Oidc(OidcStored),
    Saml(SamlStored),
}

impl Stored {
    /// Read a stored row's settings.
    pub fn of(row: &ProviderRow) -> Result<Self, String> {
        let unreadable = |e: serde_json::Error| format!("stored settings unreadable: {e}");
        match row.kind.as_str() {
            "oidc" => serde_json::from_str(&row.settings).map(Stored::Oidc).map_err(unreadable),
            "saml" => serde_json::from_str(&row.settings).map(Stored::Saml).map_err(unreadable),
            other => Err(format!("unknown provider kind {other:?}")),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Stored::Oidc(_) => "oidc",
            Stored::Saml(_) => "saml",
        }
    }

    pub fn to_json(&self) -> Result<String, AppError> {
        match self {
            Stored::Oidc(s) => serde_json::to_string(s),
            Stored::Saml(s) => serde_json::to_string(s),
        }
        .map_err(AppError::internal)
    }

    pub fn display_name(&self) -> &str {
        match self {
            Stored::Oidc(s) => &s.display_name,
            Stored::Saml(s) => &s.display_name,
        }
    }

    pub fn check(&self) -> Result<(), AppError> {
        match self {
            Stored::Oidc(s) => s.check(),
            Stored::Saml(s) => s.check(),
        }
    }

    fn policy(&self, provider_id: &str) -> provision::Policy {
        match self {
            Stored::Oidc(s) => s.policy(provider_id),
            Stored::Saml(s) => s.policy(provider_id),
        }
    }

    fn mapping_mut(&mut self) -> &mut Vec<MappingRule> {
        match self {
            Stored::Oidc(s) => &mut s.mapping,
            Stored::Saml(s) => &mut s.mapping,
        }
    }
}

/// The protocol side of a provider the server can use.
#[derive(Debug)]
pub enum Client {
    Oidc(Box<OidcProvider>),
    Saml(Box<SamlProvider>),
}

/// A provider the server can use.
#[derive(Debug)]
pub struct Provider {
    pub row: ProviderRow,
    pub settings: Stored,
    pub client: Client,
}

/// Providers and the settings every login shares.
#[derive(Debug)]
pub struct SsoService {
    /// `https://host[:port]` browsers and providers reach Gatehouse at.
    pub public_url: String,
    pub return_to_origins: Vec<String>,
    ttl: Duration,
    skew: Duration,
    providers: RwLock<HashMap<String, Arc<Provider>>>,
    /// Bounds the SAML responses checked at once (one per core).
    pub saml_work: tokio::sync::Semaphore,
}

impl SsoService {
    pub fn new(config: &SsoConfig, public_url: String) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            return_to_origins: config.return_to_origins.clone(),
            ttl: Duration::from_secs(config.discovery_ttl_seconds),
            skew: Duration::from_secs(config.clock_skew_seconds),
            providers: RwLock::new(HashMap::new()),
            saml_work: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        }
    }

    /// The callback URL to register at the provider.
    pub fn redirect_uri(&self, provider_id: &str) -> String {
        format!("{}/v1/sso/oidc/{provider_id}/callback", self.public_url)
    }

    pub fn provider(&self, id: &str) -> Option<Arc<Provider>> {
        self.providers.read().ok().and_then(|m| m.get(id).cloned())
    }

    fn all(&self) -> Vec<Arc<Provider>> {
        let mut all: Vec<_> = self.providers.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| a.row.id.cmp(&b.row.id));
        all
    }

    fn build(&self, row: ProviderRow, secret: Option<SecretString>) -> Result<Provider, String> {
        let settings = match Stored::of(&row)? {
            Stored::Oidc(s) => s,
            Stored::Saml(s) => {
                let client = saml::client(self, &row.id, &s, secret)?;
                return Ok(Provider { row, settings: Stored::Saml(s), client: Client::Saml(Box::new(client)) });
            }
        };
        let http = http_client(settings.ca_pem.as_deref())?;
        let oidc = OidcProvider::new(
            OidcSettings {
                id: row.id.clone(),
                issuer: settings.issuer.clone(),
                client_id: settings.client_id.clone(),
                client_secret: secret,
                token_auth: settings.token_auth,
                scopes: settings.scopes.clone(),
                algorithms: settings.algorithms.clone(),
                claims: settings.claims.clone(),
                userinfo: settings.userinfo,
            },
            http,
            self.ttl,
            self.skew,
        )
        .map_err(|e| e.0)?;
        Ok(Provider { row, settings: Stored::Oidc(settings), client: Client::Oidc(Box::new(oidc)) })
    }

    /// The SAML assertion consumer service URL.
    pub fn acs_url(&self, provider_id: &str) -> String {
        format!("{}/v1/sso/saml/{provider_id}/acs", self.public_url)
    }

    /// The SAML SP metadata URL (the default SP entity id).
    pub fn saml_metadata_url(&self, provider_id: &str) -> String {
        format!("{}/v1/sso/saml/{provider_id}/metadata", self.public_url)
    }

    /// The clock skew tolerated on ID token and assertion times.
    pub fn skew(&self) -> Duration {
        self.skew
    }
}

fn http_client(ca_pem: Option<&str>) -> Result<HttpClient, String> {
    HttpClient::with_ca_pem(ca_pem.map(str::as_bytes), Duration::from_secs(5), Duration::from_secs(10))
}

/// Where a provider's client secret is sealed (its AAD).
pub fn secret_aad(provider_id: &str) -> String {
    format!("sso_secret:{provider_id}")
}

fn login_aad(provider_id: &str) -> String {
    format!("sso_login:{provider_id}")
}

/// Load every stored provider into the service (at start, and after each change).
pub async fn reload(state: &AppState) -> Result<(), AppError> {
    let rows = state.db.read(|tx| tx.sso_providers().map_err(AppError::from)).await?;
    let mut map = HashMap::new();
    for row in rows {
        let secret = match &row.secret_sealed {
            Some(sealed) => match state.auth.sealing.open(sealed, &secret_aad(&row.id)) {
                Ok(bytes) => Some(SecretString::new(String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) => {
                    tracing::error!(provider = %row.id, error = %e, "cannot open the provider's client secret; provider unavailable");
                    continue;
                }
            },
            None => None,
        };
        let id = row.id.clone();
        match state.sso.build(row, secret) {
            Ok(p) => {
                map.insert(id, Arc::new(p));
            }
            Err(e) => tracing::error!(provider = %id, error = %e, "identity provider unavailable"),
        }
    }
    if let Ok(mut m) = state.sso.providers.write() {
        *m = map;
    }
    Ok(())
}

/// Make the stored `config` providers what the configuration file says: add or replace each
/// one, remove those no longer there. `secrets` holds each OIDC provider's client secret as read
/// from its file; `ca` its CA PEM; `saml` each SAML provider with its IdP metadata XML. A SAML
/// provider keeps the SP keys generated the first time it was stored.
pub async fn sync_config(
    state: &AppState,
    providers: &[OidcProviderConfig],
    secrets: HashMap<String, SecretString>,
    ca: HashMap<String, String>,
    saml_providers: &[(SamlProviderConfig, String)],
) -> Result<(), AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let mut rows = Vec::new();
    for p in providers {
        let stored = OidcStored {
            display_name: p.display_name.clone(),
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            token_auth: p.token_auth,
            scopes: p.scopes.clone(),
            claims: p.claims.clone(),
            allowed_email_domains: p.allowed_email_domains.clone(),
            jit: p.jit,
            link_by_email: p.link_by_email,
            trust_email: p.trust_email,
            userinfo: p.userinfo,
            algorithms: p.algorithms.clone(),
            ca_pem: ca.get(&p.id).cloned(),
            mapping: p.mapping.clone(),
            authoritative: p.authoritative,
        };
        stored.check().map_err(|e| AppError::Invalid(format!("sso.oidc '{}': {e}", p.id)))?;
        let sealed = match secrets.get(&p.id) {
            Some(s) => Some(state.auth.sealing.seal(s.expose().as_bytes(), &secret_aad(&p.id))?),
            None => None,
        };
        rows.push(ProviderRow {
            id: p.id.clone(),
            kind: "oidc".into(),
            source: "config".into(),
            enabled: p.enabled,
            settings: Stored::Oidc(stored).to_json()?,
            secret_sealed: sealed,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        });
    }
    let existing = state.db.read(|tx| tx.sso_providers().map_err(AppError::from)).await?;
    for (p, metadata) in saml_providers {
        let old = existing.iter().find(|o| o.id == p.id && o.kind == "saml" && o.source == "config");
        let (stored, sealed) = saml::from_config(state, p, metadata, old)
            .map_err(|e| AppError::Invalid(format!("sso.saml '{}': {e}", p.id)))?;
        rows.push(ProviderRow {
            id: p.id.clone(),
            kind: "saml".into(),
            source: "config".into(),
            enabled: p.enabled,
            settings: Stored::Saml(stored).to_json()?,
            secret_sealed: Some(sealed),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        });
    }
    state
        .db
        .write(move |tx| {
            let mut rows = rows;
            let existing = tx.sso_providers()?;
            for old in existing.iter().filter(|o| o.source == "config") {
                if !rows.iter().any(|r| r.id == old.id) {
                    tx.sso_provider_delete(&old.id)?;
                }
            }
            for row in rows.iter_mut() {
                // Workspace slugs become ids; a workspace that does not exist yet leaves its
                // rule inactive until the next start.
                let mut stored = Stored::of(row).map_err(AppError::internal)?;
                for r in stored.mapping_mut().iter_mut() {
                    let Some(reference) = r.workspace.clone() else { continue };
                    match tx.workspace_by_ref(&reference)? {
                        Some(ws) => r.workspace = Some(ws.id),
                        None => tracing::warn!(
                            provider = %row.id,
                            workspace = %reference,
                            "an SSO mapping names a workspace that does not exist; the rule applies once it exists and the server restarts"
                        ),
                    }
                }
                row.settings = stored.to_json()?;
            }
            for row in &rows {
                if let Some(old) = existing.iter().find(|o| o.id == row.id) {
                    if old.source == "api" {
                        return Err(AppError::Invalid(format!(
                            "sso.{} '{}': a provider with this id was created through the API; delete it there or \
                             choose another id",
                            row.kind, row.id
                        )));
                    }
                    let same = old.settings == row.settings && old.enabled == row.enabled;
                    let mut keep = row.clone();
                    keep.created_at_ms = old.created_at_ms;
                    if same {
                        keep.updated_at_ms = old.updated_at_ms;
                    }
                    tx.sso_provider_upsert(&keep)?;
                } else {
                    tx.sso_provider_upsert(row)?;
                }
            }
            Ok::<_, AppError>(())
        })
        .await?;
    reload(state).await
}

// ---------------------------------------------------------------------------------------------
// Admin API

/// A provider as the admin API shows it (never its secret or keys).
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub row: ProviderRow,
    pub settings: Stored,
    pub has_client_secret: bool,
    /// OIDC: the callback URL to register at the provider.
    pub redirect_uri: String,
    /// SAML: what the IdP needs to know of this SP.
    pub saml: Option<saml::SpView>,
}

fn view(state: &AppState, row: ProviderRow) -> Result<ProviderView, AppError> {
    let settings = Stored::of(&row).map_err(AppError::internal)?;
    let saml = match &settings {
        Stored::Saml(s) => Some(saml::sp_view(state, &row.id, s)),
        Stored::Oidc(_) => None,
    };
    Ok(ProviderView {
        has_client_secret: row.secret_sealed.is_some() && row.kind == "oidc",
        redirect_uri: if row.kind == "oidc" { state.sso.redirect_uri(&row.id) } else { state.sso.acs_url(&row.id) },
        settings,
        saml,
        row,
    })
}

pub async fn list(state: &AppState, who: &Principal) -> Result<Vec<ProviderView>, AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let rows = state.db.read(|tx| tx.sso_providers().map_err(AppError::from)).await?;
    rows.into_iter().map(|r| view(state, r)).collect()
}

pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<ProviderView, AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let id = id.to_string();
    let row = state.db.read(move |tx| tx.sso_provider(&id).map_err(AppError::from)).await?.ok_or(AppError::NotFound)?;
    view(state, row)
}

/// A provider to create or replace through the API.
#[derive(Debug)]
pub struct ProviderInput {
    pub enabled: bool,
    pub settings: Stored,
    /// OIDC: `None` on replace keeps the stored secret.
    pub client_secret: Option<SecretString>,
}

/// `POST /v1/sso-providers` (`id` new) and `PUT /v1/sso-providers/{id}` (`replace`). A new SAML
/// provider gets its SP keys here; a replaced one keeps them.
pub async fn save(
    state: &AppState,
    who: &Principal,
    id: &str,
    input: ProviderInput,
    replace: bool,
    origin: &Origin,
) -> Result<(ProviderView, bool), AppError> {
    crate::domain::users::require_admin(state, who).await?;
    crate::config::check_provider_id(id).map_err(AppError::Invalid)?;
    input.settings.check()?;
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let (summary, sealed) = match &input.settings {
        Stored::Oidc(o) => {
            if let Some(s) = &input.client_secret {
                if s.expose().is_empty() || s.expose().len() > 1024 {
                    return Err(AppError::Invalid("client_secret: 1 to 1024 characters".into()));
                }
            }
            // The client and CA must load before anything is stored.
            http_client(o.ca_pem.as_deref()).map_err(|e| AppError::Invalid(format!("ca_pem: {e}")))?;
            let sealed = match &input.client_secret {
                Some(s) => Some(state.auth.sealing.seal(s.expose().as_bytes(), &secret_aad(id))?),
                None => None,
            };
            let summary = json!({
                "kind": "oidc", "issuer": o.issuer, "client_id": o.client_id, "enabled": input.enabled,
                "jit": o.jit, "link_by_email": o.link_by_email,
                "mapping_rules": o.mapping.len(), "authoritative": o.authoritative,
                "client_secret_changed": input.client_secret.is_some(),
            });
            (summary, sealed)
        }
        Stored::Saml(s) => {
            if input.client_secret.is_some() {
                return Err(AppError::Invalid("client_secret: a SAML provider has none".into()));
            }
            let idp = crate::sso::saml::parse_idp_metadata(&s.idp_metadata).map_err(|e| AppError::Invalid(e.0))?;
            let summary = json!({
                "kind": "saml", "idp_entity_id": idp.entity_id, "enabled": input.enabled,
                "jit": s.jit, "link_by_email": s.link_by_email,
                "mapping_rules": s.mapping.len(), "authoritative": s.authoritative,
                "idp_certificates": idp.cert_fingerprints,
            });
            (summary, None)
        }
    };
    // A new SAML provider's keys (generated off the request threads: RSA key generation).
    let existing_row = {
        let id = id.to_string();
        state.db.read(move |tx| tx.sso_provider(&id).map_err(AppError::from)).await?
    };
    let mut stored = input.settings.clone();
    let mut sealed = sealed;
    if let Stored::Saml(s) = &mut stored {
        match existing_row.as_ref().filter(|o| o.kind == "saml") {
            Some(old) => saml::keep_keys(s, old)?,
            None => sealed = Some(saml::new_keys(state, id, s).await?),
        }
    }
    let key = state.auditor.clone();
    let actor = who.actor();
    let origin = origin.clone();
    let id = id.to_string();
    let enabled = input.enabled;
    let (row, created) = state
        .db
        .write(move |tx| {
            let existing = tx.sso_provider(&id)?;
            match (&existing, replace) {
                (Some(_), false) => return Err(AppError::Conflict(format!("id: a provider {id:?} exists"))),
                (None, true) => return Err(AppError::NotFound),
                (Some(old), true) if old.source == "config" => {
                    return Err(AppError::Conflict(
                        "This provider is defined in the configuration file; change it there.".into(),
                    ))
                }
                (Some(old), true) if old.kind != stored.kind() => {
                    return Err(AppError::Invalid(format!(
                        "kind: this provider is {}; delete it to make a {} provider with this id",
                        old.kind,
                        stored.kind()
                    )))
                }
                _ => {}
            }
            // Mapping rules keep workspace ids: a slug renamed later cannot redirect a rule.
            if let Err((i, reference)) = provision::resolve_workspaces(tx, stored.mapping_mut())? {
                return Err(AppError::Invalid(format!("mapping[{i}].workspace: there is no workspace {reference:?}")));
            }
            let row = ProviderRow {
                id: id.clone(),
                kind: stored.kind().into(),
                source: "api".into(),
                enabled,
                settings: stored.to_json()?,
                secret_sealed: sealed.or_else(|| existing.as_ref().and_then(|o| o.secret_sealed.clone())),
                created_at_ms: existing.as_ref().map_or(now_ms, |o| o.created_at_ms),
                updated_at_ms: now_ms,
            };
            tx.sso_provider_upsert(&row)?;
            let action = if existing.is_some() { "sso.provider.updated" } else { "sso.provider.created" };
            audit::record(
                tx,
                &key,
                now,
                &Event::new(action, actor).target(id.clone()).origin(&origin).details(summary),
            )?;
            Ok((row, existing.is_none()))
        })
        .await?;
    reload(state).await?;
    Ok((view(state, row)?, created))
}

pub async fn delete(state: &AppState, who: &Principal, id: &str, origin: &Origin) -> Result<(), AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let origin = origin.clone();
    let id = id.to_string();
    state
        .db
        .write(move |tx| {
            let old = tx.sso_provider(&id)?.ok_or(AppError::NotFound)?;
            if old.source == "config" {
                return Err(AppError::Conflict(
                    "This provider is defined in the configuration file; remove it there.".into(),
                ));
            }
            tx.sso_provider_delete(&id)?;
            audit::record(
                tx,
                &key,
                now,
                &Event::new("sso.provider.deleted", actor).target(id.clone()).origin(&origin),
            )?;
            Ok(())
        })
        .await?;
    reload(state).await
}

/// What the preview is given: claims as an OIDC provider would send them, an ID token (decoded
/// without any check), or a SAML assertion's NameID and attributes.
#[derive(Debug)]
pub enum PreviewInput {
    Claims(serde_json::Map<String, serde_json::Value>),
    IdToken(String),
    Saml { name_id: String, name_id_format: Option<String>, attributes: serde_json::Map<String, serde_json::Value> },
}

/// The dry run: what a login with these claims would do. Changes nothing.
pub async fn preview(
    state: &AppState,
    who: &Principal,
    id: &str,
    input: PreviewInput,
    origin: &Origin,
) -> Result<(ExternalIdentity, provision::Plan), AppError> {
    crate::domain::users::require_admin(state, who).await?;
    let provider = state.sso.provider(id).ok_or(AppError::NotFound)?;
    let identity = match (&provider.client, &provider.settings, input) {
        (Client::Saml(client), _, PreviewInput::Saml { name_id, name_id_format, attributes }) => {
            if name_id.trim().is_empty() || name_id.len() > 512 {
                return Err(AppError::Invalid("saml.name_id: 1 to 512 characters".into()));
            }
            client.identity(name_id.trim(), name_id_format.as_deref().unwrap_or_default(), attributes)
        }
        (Client::Saml(_), _, _) => {
            return Err(AppError::Invalid("saml: a SAML provider previews a NameID and attributes".into()))
        }
        (Client::Oidc(_), Stored::Oidc(settings), input) => {
            let claims = match input {
                PreviewInput::IdToken(t) => {
                    crate::sso::oidc::payload_of(&t).map_err(|e| AppError::Invalid(format!("id_token: {e}")))?
                }
                PreviewInput::Claims(c) => c,
                PreviewInput::Saml { .. } => {
                    return Err(AppError::Invalid("saml: this is an OIDC provider; give claims or an id_token".into()))
                }
            };
            let subject = claims.get("sub").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            if subject.is_empty() {
                return Err(AppError::Invalid("claims.sub: the subject is required".into()));
            }
            let issuer =
                claims.get("iss").and_then(|v| v.as_str()).map_or_else(|| settings.issuer.clone(), str::to_string);
            ExternalIdentity::from_claims(&provider.row.id, &issuer, &subject, claims, &settings.claims)
        }
        (Client::Oidc(_), Stored::Saml(_), _) => return Err(AppError::internal("provider kind mismatch")),
    };
    let policy = provider.settings.policy(&provider.row.id);
    let ident = identity.clone();
    let plan = state.db.read(move |tx| provision::plan(tx, &policy, &ident)).await?;
    let event = Event::new("sso.provider.previewed", who.actor())
        .target(provider.row.id.clone())
        .origin(origin)
        .details(json!({"subject": identity.subject}));
    audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
    Ok((identity, plan))
}

// ---------------------------------------------------------------------------------------------
// Login flow

/// How the login ends: a browser session (cookie), or a one-time code for an API client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cookie,
    Code,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Cookie => "cookie",
            Mode::Code => "code",
        }
    }
}

/// A login's start: where to send the browser, and the cookie that binds the login to it.
#[derive(Debug)]
pub struct Started {
    pub location: String,
    pub browser: SecretString,
    /// The login comes back by a cross-site POST (SAML): the binding cookie must be
    /// `SameSite=None` to come with it.
    pub cross_site: bool,
}

/// `return_to` accepts a path on this server, or a URL on an allow-listed origin.
pub fn check_return_to(state: &AppState, return_to: Option<&str>) -> Result<String, AppError> {
    let Some(r) = return_to.filter(|r| !r.is_empty()) else { return Ok(DEFAULT_RETURN_TO.to_string()) };
    let bad = || {
        AppError::Invalid(
            "return_to: a path on this server (/...) or a URL on an origin in sso.return_to_origins".into(),
        )
    };
    if r.len() > 2048 || r.contains('\\') || r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    if r.starts_with('/') {
        return if r.starts_with("//") { Err(bad()) } else { Ok(r.to_string()) };
    }
    let allowed =
        state.sso.return_to_origins.iter().chain(std::iter::once(&state.sso.public_url)).any(|o| {
            r.strip_prefix(o.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
        });
    if allowed {
        Ok(r.to_string())
    } else {
        Err(bad())
    }
}

/// `GET /v1/sso/{provider}/login`.
pub async fn begin(
    state: &AppState,
    provider_id: &str,
    return_to: Option<&str>,
    mode: Mode,
    code_challenge: Option<String>,
    browser: Option<SecretString>,
) -> Result<Started, AppError> {
    let provider = state.sso.provider(provider_id).filter(|p| p.row.enabled).ok_or(AppError::NotFound)?;
    let return_to = check_return_to(state, return_to)?;
    // Code mode: the API client proves at the exchange that it started this login (PKCE S256),
    // so a code carried to another client's page signs no one in there.
    match (mode, &code_challenge) {
        (Mode::Code, Some(c)) if token::pkce_well_formed(c) => {}
        (Mode::Code, _) => {
            return Err(AppError::Invalid(
                "code_challenge: mode=code needs a PKCE S256 challenge (43 to 128 of A-Z a-z 0-9 - . _ ~)".into(),
            ))
        }
        (Mode::Cookie, Some(_)) => {
            return Err(AppError::Invalid("code_challenge: only with mode=code".into()));
        }
        (Mode::Cookie, None) => {}
    }
    // One binding cookie per browser: a second tab's login keeps the first one's working.
    let browser = browser
        .filter(|b| token::well_formed(b.expose(), Kind::SsoBrowser))
        .unwrap_or_else(|| token::generate(Kind::SsoBrowser));
    let (location, login_state, secrets, cross_site) = match &provider.client {
        Client::Oidc(oidc) => {
            let redirect_uri = state.sso.redirect_uri(provider_id);
            let request = oidc.begin(&redirect_uri).await.map_err(|e| AppError::Unavailable(e.0))?;
            let secrets = json!({"nonce": request.nonce.expose(), "verifier": request.pkce_verifier.expose()});
            (request.url, request.state, secrets, false)
        }
        Client::Saml(client) => {
            let relay = token::generate(Kind::SamlRelayState);
            let request_id = format!("_{}", hex::encode(crate::crypto::random::bytes::<16>()));
            let start = client.authn_request(relay.expose(), &request_id).map_err(|e| AppError::Unavailable(e.0))?;
            (start.url, relay, json!({"request_id": start.request_id}), true)
        }
    };
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let sealed = state.auth.sealing.seal(secrets.to_string().as_bytes(), &login_aad(provider_id))?;
    let row = LoginRow {
        provider_id: provider_id.to_string(),
        browser_hash: token::digest(browser.expose()).to_vec(),
        secrets: sealed,
        return_to,
        mode: mode.as_str().to_string(),
        code_challenge,
        expires_at_ms: now_ms + LOGIN_TTL_MS,
    };
    let state_hash = token::digest(login_state.expose());
    state.db.write(move |tx| tx.sso_login_insert(&state_hash, &row, now_ms).map_err(AppError::from)).await?;
    Ok(Started { location, browser, cross_site })
}

/// What the provider sent back to the callback.
#[derive(Debug, Default)]
pub struct CallbackInput {
    pub code: Option<SecretString>,
    pub state: Option<SecretString>,
    pub error: Option<String>,
}

/// How a login ended well.
#[derive(Debug)]
pub enum Finished {
    Session { issued: Issued, return_to: String },
    Code { code: SecretString, return_to: String },
}

/// A failed login: the reason (short, safe to show) and the status to answer with.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub reason: String,
}

impl Failure {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }
}

/// `GET /v1/sso/oidc/{provider}/callback`. Every failure is audited as `sso.login.failed`.
pub async fn callback(
    state: &AppState,
    provider_id: &str,
    input: CallbackInput,
    browser: Option<SecretString>,
    origin: &Origin,
) -> Result<Finished, Failure> {
    let result = finish(state, provider_id, input, browser, origin).await;
    if let Err(f) = &result {
        audit_failure(state, provider_id, origin, f).await;
    }
    result
}

/// Record a failed login as `sso.login.failed`, and log it.
async fn audit_failure(state: &AppState, provider_id: &str, origin: &Origin, f: &Failure) {
    let event = Event::new("sso.login.failed", Actor::Anonymous)
        .target(provider_id.chars().take(64).collect::<String>())
        .origin(origin)
        .outcome(if f.status == 403 { Outcome::Denied } else { Outcome::Failure })
        .details(json!({"provider": provider_id.chars().take(64).collect::<String>(), "reason": f.reason}));
    if let Err(e) = audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await {
        tracing::error!(error = %e, "could not audit a failed SSO login");
    }
    tracing::warn!(target: "gatehouse::security", provider = provider_id, reason = %f.reason, "SSO login failed");
}

fn internal(e: AppError) -> Failure {
    match e {
        AppError::Forbidden(reason) => Failure::new(403, reason),
        AppError::AuditUnavailable => Failure::new(503, "the audit log cannot be written"),
        other => {
            tracing::error!(error = %other, "SSO login failed inside Gatehouse");
            Failure::new(500, "internal error")
        }
    }
}

async fn finish(
    state: &AppState,
    provider_id: &str,
    input: CallbackInput,
    browser: Option<SecretString>,
    origin: &Origin,
) -> Result<Finished, Failure> {
    let provider = state
        .sso
        .provider(provider_id)
        .filter(|p| p.row.enabled)
        .ok_or_else(|| Failure::new(404, "unknown identity provider"))?;
    let Client::Oidc(oidc) = &provider.client else {
        return Err(Failure::new(404, "unknown identity provider"));
    };
    let given_state = input
        .state
        .filter(|s| !s.expose().is_empty() && s.expose().len() <= 512)
        .ok_or_else(|| Failure::new(400, "state missing"))?;
    let now = state.clock.now();
    let login = take_login(state, provider_id, &given_state, browser).await?;
    if let Some(error) = input.error {
        // Only the standard error code, never the provider's description.
        let code: String = error.chars().filter(|c| c.is_ascii_lowercase() || *c == '_').take(40).collect();
        return Err(Failure::new(400, format!("the provider refused the login ({code})")));
    }
    let code = input
        .code
        .filter(|c| !c.expose().is_empty() && c.expose().len() <= 2048)
        .ok_or_else(|| Failure::new(400, "code missing"))?;
    let secrets =
        state.auth.sealing.open(&login.secrets, &login_aad(provider_id)).map_err(|e| internal(AppError::from(e)))?;
    let secrets: serde_json::Value = serde_json::from_slice(&secrets).map_err(|e| internal(AppError::internal(e)))?;
    let nonce = secrets["nonce"].as_str().unwrap_or_default();
    let verifier = secrets["verifier"].as_str().unwrap_or_default();
    let redirect_uri = state.sso.redirect_uri(provider_id);
    let identity = oidc
        .finish(&redirect_uri, code.expose(), verifier, nonce, now)
        .await
        .map_err(|e| Failure::new(if e.0.starts_with("ID token") { 400 } else { 502 }, e.0))?;
    let mode = if login.mode == "code" { Mode::Code } else { Mode::Cookie };
    let challenge = login.code_challenge.unwrap_or_default();
    sign_in(state, &provider, identity, mode, challenge, login.return_to, origin).await.map_err(internal)
}

/// Take (single use) the login in flight that `given_state` names, if this browser started it
/// at this provider and it has not expired. A state seen by someone else cannot be burnt by
/// them.
async fn take_login(
    state: &AppState,
    provider_id: &str,
    given_state: &SecretString,
    browser: Option<SecretString>,
) -> Result<LoginRow, Failure> {
    let now_ms = unix_ms(state.clock.now());
    let state_hash = token::digest(given_state.expose());
    let browser_hash = browser.map(|b| token::digest(b.expose()));
    let pid = provider_id.to_string();
    let taken = state
        .db
        .write(move |tx| {
            let Some(login) = tx.sso_login_get(&state_hash)? else {
                return Ok(Err("unknown or already used login state"));
            };
            if login.provider_id != pid {
                return Ok(Err("the login was started with another provider"));
            }
            if !browser_hash.is_some_and(|h| ct_eq(&h, &login.browser_hash)) {
                return Ok(Err("the login was started in another browser"));
            }
            tx.sso_login_delete(&state_hash)?;
            Ok::<_, AppError>(Ok(login))
        })
        .await
        .map_err(internal)?;
    let login = taken.map_err(|reason| Failure::new(400, reason))?;
    if login.expires_at_ms < now_ms {
        return Err(Failure::new(400, "the login expired; start again"));
    }
    Ok(login)
}

/// Provision the identity and open its session (cookie mode) or mint its one-time code, in one
/// transaction with the audit records.
async fn sign_in(
    state: &AppState,
    provider: &Provider,
    identity: ExternalIdentity,
    mode: Mode,
    code_challenge: String,
    return_to: String,
    origin: &Origin,
) -> Result<Finished, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let policy = provider.settings.policy(&provider.row.id);
    let key = state.auditor.clone();
    let life = state.auth.settings.life;
    let origin = origin.clone();
    let code = (mode == Mode::Code).then(|| token::generate(Kind::SsoCode));
    let code_hash = code.as_ref().map(|c| token::digest(c.expose()));
    let provider_id = provider.row.id.clone();
    let new = state
        .db
        .write(move |tx| {
            let plan = provision::plan(tx, &policy, &identity)?;
            let user_id = provision::apply(tx, &key, now, &policy, &identity, &plan, &origin)?;
            let details = json!({"provider": provider_id, "mode": mode.as_str(), "subject": identity.subject});
            match code_hash {
                Some(hash) => {
                    tx.sso_code_insert(&hash, &user_id, &provider_id, &code_challenge, now_ms, now_ms + CODE_TTL_MS)?;
                    let event = Event::new("sso.login.succeeded", Actor::User(user_id.clone()))
                        .target(user_id.clone())
                        .origin(&origin)
                        .details(details);
                    audit::record(tx, &key, now, &event)?;
                    Ok::<_, AppError>(None)
                }
                None => {
                    let new = sessions::start(tx, &user_id, Method::Sso, &["sso"], false, true, life, &origin, now)?;
                    let event = Event::new("sso.login.succeeded", Actor::User(user_id.clone()))
                        .target(new.row.id.clone())
                        .origin(&origin)
                        .details(details);
                    audit::record(tx, &key, now, &event)?;
                    Ok(Some(new))
                }
            }
        })
        .await?;
    match (new, code) {
        (Some(new), _) => Ok(Finished::Session { issued: crate::domain::auth::issued(state, new, now)?, return_to }),
        (None, Some(code)) => Ok(Finished::Code { code, return_to }),
        (None, None) => Err(AppError::internal("an SSO login ended with neither a session nor a code")),
    }
}

/// `POST /v1/sso/exchange`: a one-time code and the PKCE verifier of the login that made it, for
/// a session's tokens (bearer, or cookie mode). A code is gone after one try, right or wrong.
pub async fn exchange(
    state: &AppState,
    code: SecretString,
    verifier: SecretString,
    cookie_mode: bool,
    origin: Origin,
) -> Result<Issued, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let key = state.auditor.clone();
    let life = state.auth.settings.life;
    let well_formed = token::well_formed(code.expose(), Kind::SsoCode);
    let hash = token::digest(code.expose());
    let o = origin.clone();
    let new = state
        .db
        .write(move |tx| {
            let taken = if well_formed { tx.sso_code_take(&hash, now_ms)? } else { None };
            let Some((user_id, provider_id, challenge)) = taken else { return Ok(None) };
            let proven = token::pkce_well_formed(verifier.expose())
                && ct_eq(token::pkce_s256(verifier.expose()).as_bytes(), challenge.as_bytes());
            if !proven {
                return Ok(None);
            }
            let user = tx.user_by_id(&user_id)?.filter(|u| !u.disabled);
            let Some(user) = user else { return Ok(None) };
            let new = sessions::start(tx, &user.id, Method::Sso, &["sso"], false, cookie_mode, life, &o, now)?;
            let event = Event::new("sso.code.exchanged", Actor::User(user.id.clone()))
                .target(new.row.id.clone())
                .origin(&o)
                .details(json!({"provider": provider_id, "mode": if cookie_mode { "cookie" } else { "bearer" }}));
            audit::record(tx, &key, now, &event)?;
            Ok::<_, AppError>(Some(new))
        })
        .await?;
    match new {
        Some(new) => crate::domain::auth::issued(state, new, now),
        None => {
            let event =
                Event::new("sso.login.failed", Actor::Anonymous).origin(&origin).outcome(Outcome::Denied).details(
                    json!({"reason": "one-time code invalid, expired, already used or without its PKCE verifier"}),
                );
            audit::record_alone(&state.db, &state.auditor, now, event).await?;
            Err(AppError::Unauthorized("The code is invalid, expired or already used.".into()))
        }
    }
}

/// Forget logins in flight and one-time codes past their time (housekeeping).
pub async fn purge_expired(state: &AppState) -> Result<usize, AppError> {
    let now_ms = unix_ms(state.clock.now());
    state.db.write(move |tx| tx.sso_expired_purge(now_ms).map_err(AppError::from)).await
}

/// An enabled provider as a login page lists it.
#[derive(Debug, Clone)]
pub struct LoginOption {
    pub id: String,
    pub display_name: String,
    pub kind: String,
}

/// `GET /v1/sso/providers`: the enabled providers.
pub fn login_options(state: &AppState) -> Vec<LoginOption> {
    state
        .sso
        .all()
        .into_iter()
        .filter(|p| p.row.enabled)
        .map(|p| LoginOption {
            id: p.row.id.clone(),
            display_name: p.settings.display_name().to_string(),
            kind: p.row.kind.clone(),
        })
        .collect()
}
