//! SAML identity providers: their stored settings, the SP keys Gatehouse generates for each
//! (sealed by the vault, AAD `sso_secret:<id>`, never shown), the SP metadata, and the login's
//! end at the assertion consumer service. The login's start is shared with OIDC
//! ([`super::begin`]): the RelayState is the login's single-use handle, the AuthnRequest's ID
//! is sealed in the login row, and the browser that started it must be the one posting back.

use super::{
    audit_failure, internal, login_aad, provision, secret_aad, sign_in, take_login, Client, Failure, Finished, Mode,
    Provider, SsoService, DEFAULT_RETURN_TO,
};
use crate::config::{ClaimPaths, Jit, LinkByEmail, MappingRule, SamlProviderConfig};
use crate::crypto::token;
use crate::crypto::SecretString;
use crate::db::ProviderRow;
use crate::domain::audit::Origin;
use crate::domain::unix_ms;
use crate::error::AppError;
use crate::sso::saml::{self as proto, SamlProvider, SamlSettings, SpKeys};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A SAML provider's settings as stored (the SP's private keys are sealed apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlStored {
    pub display_name: String,
    /// The IdP's metadata XML.
    pub idp_metadata: String,
    /// This SP's entity id; `None`: its metadata URL.
    pub sp_entity_id: Option<String>,
    pub name_id_format: Option<String>,
    /// Attribute names (or friendly names) for email, email_verified, name and groups.
    pub attributes: ClaimPaths,
    pub allowed_email_domains: Vec<String>,
    pub jit: Jit,
    pub link_by_email: LinkByEmail,
    pub trust_email: bool,
    pub sign_requests: bool,
    pub allow_sha1: bool,
    pub allow_unsolicited: bool,
    pub mapping: Vec<MappingRule>,
    pub authoritative: bool,
    /// The SP's certificates (PEM), generated with its keys; empty until then.
    #[serde(default)]
    pub sp_signing_cert: String,
    #[serde(default)]
    pub sp_encryption_cert: String,
}

/// The SP's private keys, as sealed (wiped from memory when dropped).
#[derive(Serialize, Deserialize)]
struct SealedKeys {
    signing_key: String,
    encryption_key: String,
}

impl Drop for SealedKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.signing_key.zeroize();
        self.encryption_key.zeroize();
    }
}

impl SamlStored {
    /// Check what the types do not; the error names the field.
    pub fn check(&self) -> Result<(), AppError> {
        crate::config::check_saml_fields(
            &self.display_name,
            self.sp_entity_id.as_deref(),
            self.name_id_format.as_deref(),
        )
        .and_then(|()| crate::config::check_mapping(&self.mapping))
        .and_then(|()| crate::config::check_email_domains(&self.allowed_email_domains))
        .map_err(AppError::Invalid)?;
        for (name, path) in [
            ("attributes.email", &self.attributes.email),
            ("attributes.email_verified", &self.attributes.email_verified),
            ("attributes.name", &self.attributes.name),
            ("attributes.groups", &self.attributes.groups),
        ] {
            if path.is_empty() || path.len() > 256 || path.contains(char::is_control) {
                return Err(AppError::Invalid(format!("{name}: an attribute name of 1 to 256 characters")));
            }
        }
        proto::parse_idp_metadata(&self.idp_metadata).map_err(|e| AppError::Invalid(e.0))?;
        Ok(())
    }

    pub(super) fn policy(&self, provider_id: &str) -> provision::Policy {
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

    fn entity_id(&self, sso: &SsoService, provider_id: &str) -> String {
        self.sp_entity_id.clone().unwrap_or_else(|| sso.saml_metadata_url(provider_id))
    }
}

/// The protocol client of a stored provider; `keys` is the opened sealed JSON.
pub(super) fn client(
    sso: &SsoService,
    id: &str,
    s: &SamlStored,
    keys: Option<SecretString>,
) -> Result<SamlProvider, String> {
    let keys = keys.ok_or("the SP keys are missing")?;
    let sealed: SealedKeys = serde_json::from_str(keys.expose()).map_err(|_| "the SP keys are unreadable")?;
    let keys = SpKeys::from_pem(&sealed.signing_key, &s.sp_signing_cert, &sealed.encryption_key, &s.sp_encryption_cert)
        .map_err(|e| e.0)?;
    let settings = SamlSettings {
        id: id.to_string(),
        idp_metadata_xml: s.idp_metadata.clone(),
        sp_entity_id: s.entity_id(sso, id),
        acs_url: sso.acs_url(id),
        name_id_format: s.name_id_format.clone(),
        attributes: s.attributes.clone(),
        sign_requests: s.sign_requests,
        allow_sha1: s.allow_sha1,
        allow_unsolicited: s.allow_unsolicited,
        skew: sso.skew(),
    };
    SamlProvider::new(settings, keys).map_err(|e| e.0)
}

/// Generate the SP's signing and encryption keys for provider `id`: the certificates go into
/// `s`, the private keys come back sealed.
pub(super) async fn new_keys(state: &AppState, id: &str, s: &mut SamlStored) -> Result<String, AppError> {
    let cn = format!("Gatehouse SAML SP {id}");
    let pair =
        crate::telemetry::spawn_blocking_in_span(move || generate_keys(&cn)).await.map_err(AppError::internal)??;
    install_keys(state, id, s, pair)
}

/// Two RSA key pairs: (signing, encryption). Blocking (RSA key generation).
fn generate_keys(cn: &str) -> Result<(proto::GeneratedKey, proto::GeneratedKey), AppError> {
    let key = || proto::generate_key(cn).map_err(|e| AppError::internal(e.0));
    Ok((key()?, key()?))
}

/// Put the certificates of `(signing, encryption)` into `s`; the private keys come back sealed.
fn install_keys(
    state: &AppState,
    id: &str,
    s: &mut SamlStored,
    (signing, encryption): (proto::GeneratedKey, proto::GeneratedKey),
) -> Result<String, AppError> {
    s.sp_signing_cert = signing.cert_pem;
    s.sp_encryption_cert = encryption.cert_pem;
    let keys = SealedKeys { signing_key: signing.key_pem.to_string(), encryption_key: encryption.key_pem.to_string() };
    let json = zeroize::Zeroizing::new(serde_json::to_string(&keys).map_err(AppError::internal)?);
    Ok(state.auth.sealing.seal(json.as_bytes(), &secret_aad(id))?)
}

/// A replaced provider keeps its certificates (its keys stay sealed in the row).
pub(super) fn keep_keys(s: &mut SamlStored, old: &ProviderRow) -> Result<(), AppError> {
    let old: SamlStored = serde_json::from_str(&old.settings).map_err(AppError::internal)?;
    s.sp_signing_cert = old.sp_signing_cert;
    s.sp_encryption_cert = old.sp_encryption_cert;
    Ok(())
}

/// A `[[sso.saml]]` provider as stored, with its sealed keys: those of `old` (the same provider
/// stored before) or new ones.
pub(super) fn from_config(
    state: &AppState,
    p: &SamlProviderConfig,
    metadata: &str,
    old: Option<&ProviderRow>,
) -> Result<(SamlStored, String), AppError> {
    let mut stored = SamlStored {
        display_name: p.display_name.clone(),
        idp_metadata: metadata.to_string(),
        sp_entity_id: p.sp_entity_id.clone(),
        name_id_format: p.name_id_format.clone(),
        attributes: p.attributes.clone().into(),
        allowed_email_domains: p.allowed_email_domains.clone(),
        jit: p.jit,
        link_by_email: p.link_by_email,
        trust_email: p.trust_email,
        sign_requests: p.sign_requests,
        allow_sha1: p.allow_sha1,
        allow_unsolicited: p.allow_unsolicited,
        mapping: p.mapping.clone(),
        authoritative: p.authoritative,
        sp_signing_cert: String::new(),
        sp_encryption_cert: String::new(),
    };
    stored.check()?;
    if let Some((old, sealed)) = old.and_then(|o| o.secret_sealed.as_ref().map(|s| (o, s))) {
        keep_keys(&mut stored, old)?;
        if !stored.sp_signing_cert.is_empty() {
            return Ok((stored, sealed.clone()));
        }
    }
    // At start, before the server listens: generating here blocks nothing else.
    let pair = generate_keys(&format!("Gatehouse SAML SP {}", p.id))?;
    let sealed = install_keys(state, &p.id, &mut stored, pair)?;
    Ok((stored, sealed))
}

/// What the admin API shows of a SAML provider: what to give the IdP, and what was read from
/// the IdP's metadata.
#[derive(Debug, Clone)]
pub struct SpView {
    pub sp_entity_id: String,
    pub acs_url: String,
    pub metadata_url: String,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    pub idp_certificate_sha256: Vec<String>,
}

pub(super) fn sp_view(state: &AppState, id: &str, s: &SamlStored) -> SpView {
    let idp = proto::parse_idp_metadata(&s.idp_metadata).ok();
    SpView {
        sp_entity_id: s.entity_id(&state.sso, id),
        acs_url: state.sso.acs_url(id),
        metadata_url: state.sso.saml_metadata_url(id),
        idp_entity_id: idp.as_ref().map(|i| i.entity_id.clone()),
        idp_sso_url: idp.as_ref().map(|i| i.sso_url.clone()),
        idp_certificate_sha256: idp.map(|i| i.cert_fingerprints).unwrap_or_default(),
    }
}

/// `GET /v1/sso/saml/{provider}/metadata`: the SP metadata XML of an enabled SAML provider.
pub fn metadata(state: &AppState, provider_id: &str) -> Result<String, AppError> {
    let provider = state.sso.provider(provider_id).filter(|p| p.row.enabled).ok_or(AppError::NotFound)?;
    let Client::Saml(client) = &provider.client else { return Err(AppError::NotFound) };
    client.sp_metadata().map_err(|e| AppError::internal(e.0))
}

/// What the IdP posted to the ACS.
#[derive(Debug, Default)]
pub struct AcsInput {
    pub saml_response: Option<String>,
    pub relay_state: Option<SecretString>,
}

/// `POST /v1/sso/saml/{provider}/acs`. Every failure is audited as `sso.login.failed`.
pub async fn acs(
    state: &AppState,
    provider_id: &str,
    input: AcsInput,
    browser: Option<SecretString>,
    origin: &Origin,
) -> Result<Finished, Failure> {
    let result = acs_inner(state, provider_id, input, browser, origin).await;
    if let Err(f) = &result {
        audit_failure(state, provider_id, origin, f).await;
    }
    result
}

async fn acs_inner(
    state: &AppState,
    provider_id: &str,
    input: AcsInput,
    browser: Option<SecretString>,
    origin: &Origin,
) -> Result<Finished, Failure> {
    let provider: Arc<Provider> = state
        .sso
        .provider(provider_id)
        .filter(|p| p.row.enabled && matches!(p.client, Client::Saml(_)))
        .ok_or_else(|| Failure::new(404, "unknown identity provider"))?;
    let response = input
        .saml_response
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| Failure::new(400, "SAMLResponse missing"))?;
    let allow_unsolicited = matches!(&provider.settings, super::Stored::Saml(s) if s.allow_unsolicited);
    // The login this response answers: the RelayState names it. Without one, the response is
    // unsolicited, which only a provider that allows it accepts.
    let relay = input.relay_state.filter(|r| token::well_formed(r.expose(), token::Kind::SamlRelayState));
    let (request_id, mode, challenge, return_to) = match relay {
        Some(relay) => {
            let login = take_login(state, provider_id, &relay, browser).await?;
            let secrets = state
                .auth
                .sealing
                .open(&login.secrets, &login_aad(provider_id))
                .map_err(|e| internal(AppError::from(e)))?;
            let secrets: serde_json::Value =
                serde_json::from_slice(&secrets).map_err(|e| internal(AppError::internal(e)))?;
            let request_id = secrets["request_id"].as_str().unwrap_or_default().to_string();
            let mode = if login.mode == "code" { Mode::Code } else { Mode::Cookie };
            (Some(request_id), mode, login.code_challenge.unwrap_or_default(), login.return_to)
        }
        None if allow_unsolicited => (None, Mode::Cookie, String::new(), DEFAULT_RETURN_TO.to_string()),
        None => return Err(Failure::new(400, "RelayState missing: the response answers no login started here")),
    };
    // Signature work runs on the blocking pool; a panic in the XML stack is a refused response,
    // never a crashed worker.
    // At most one signature check per core at a time: each can take a while and some memory.
    let _permit = state.sso.saml_work.acquire().await.map_err(|e| internal(AppError::internal(e)))?;
    let p = provider.clone();
    let verified = crate::telemetry::spawn_blocking_in_span(move || {
        let Client::Saml(client) = &p.client else { return Err(proto::SamlError("not a SAML provider".into())) };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.verify(&response, request_id.as_deref())))
            .unwrap_or_else(|_| Err(proto::SamlError("the response is not a SAML response Gatehouse can read".into())))
    })
    .await
    .map_err(|e| internal(AppError::internal(e)))?
    .map_err(|e| Failure::new(400, e.0))?;
    // An assertion works once: its id is remembered until it expires.
    let now_ms = unix_ms(state.clock.now());
    let id_hash = token::digest(&verified.assertion_id);
    let pid = provider_id.to_string();
    let expires = verified.expires_at_ms.max(now_ms);
    let fresh = state
        .db
        .write(move |tx| tx.saml_assertion_remember(&pid, &id_hash, expires, now_ms).map_err(AppError::from))
        .await
        .map_err(internal)?;
    if !fresh {
        return Err(Failure::new(400, "the assertion was already used (replay)"));
    }
    sign_in(state, &provider, verified.identity, mode, challenge, return_to, origin).await.map_err(internal)
}
