//! OpenID Connect relying party (authorization code flow with PKCE S256), on openidconnect.
//!
//! Discovery and the provider's keys are cached for `sso.discovery_ttl_seconds`; an ID token
//! signed with a key id the cache does not know makes one fresh read of the JWKS, so a key
//! rotation at the provider needs no restart. The ID token is checked for its algorithm (an
//! allow-list of asymmetric algorithms: a client secret never signs), signature, `iss`, `aud`
//! (no audience the client does not know), `azp`, `exp` and `iat` (with the configured skew) and
//! `nonce`. Every failure is a short [`OidcError`] reason that never carries the provider's answer.

use super::ExternalIdentity;
use crate::config::{ClaimPaths, TokenAuth};
use crate::outbound::{HttpClient, OutboundError};
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Largest discovery document, JWKS, token or userinfo answer read from a provider.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How old an ID token may be when it arrives (a login lives ten minutes), before the skew.
const MAX_ID_TOKEN_AGE: i64 = 600;

/// Why a login through the provider failed: a short reason, safe to show and to audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OidcError(pub String);

impl OidcError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// What a provider needs besides its discovery document.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub id: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<crate::crypto::SecretString>,
    pub token_auth: TokenAuth,
    pub scopes: Vec<String>,
    pub algorithms: Vec<String>,
    pub claims: ClaimPaths,
    pub userinfo: bool,
}

/// The start of a login: the URL to send the browser to and what the callback must check.
#[derive(Debug)]
pub struct AuthRequest {
    pub url: String,
    pub state: crate::crypto::SecretString,
    pub nonce: crate::crypto::SecretString,
    pub pkce_verifier: crate::crypto::SecretString,
}

struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// One OpenID provider, with its cached discovery document and keys.
pub struct OidcProvider {
    settings: OidcSettings,
    issuer: IssuerUrl,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    http: HttpClient,
    ttl: Duration,
    skew: i64,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// When discovery last failed, and why: for `FAILURE_HOLD` the answer is the same at once,
    /// so that logins do not queue behind a provider that is down.
    failed: std::sync::Mutex<Option<(Instant, OidcError)>>,
}

/// How long a failed discovery is answered from memory.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("id", &self.settings.id).field("issuer", &self.settings.issuer).finish()
    }
}

fn parse_alg(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    Some(match name {
        "RS256" => A::RsaSsaPkcs1V15Sha256,
        "RS384" => A::RsaSsaPkcs1V15Sha384,
        "RS512" => A::RsaSsaPkcs1V15Sha512,
        "PS256" => A::RsaSsaPssSha256,
        "PS384" => A::RsaSsaPssSha384,
        "PS512" => A::RsaSsaPssSha512,
        "ES256" => A::EcdsaP256Sha256,
        "ES384" => A::EcdsaP384Sha384,
        "EdDSA" => A::EdDsa,
        _ => return None,
    })
}

impl OidcProvider {
    pub fn new(settings: OidcSettings, http: HttpClient, ttl: Duration, skew: Duration) -> Result<Self, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone()).map_err(|_| OidcError::new("the issuer is not a URL"))?;
        let algorithms: Vec<_> = settings.algorithms.iter().filter_map(|a| parse_alg(a)).collect();
        if algorithms.is_empty() {
            return Err(OidcError::new("no accepted ID token algorithm"));
        }
        let skew = i64::try_from(skew.as_secs()).unwrap_or(300);
        Ok(Self {
            settings,
            issuer,
            algorithms,
            http,
            ttl,
            skew,
            cache: tokio::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, OutboundError> {
        self.http.send(req, MAX_ANSWER_BYTES).await
    }

    fn client(&self) -> Http {
        Http(self.http.clone())
    }

    /// The discovery document and keys, from the cache while fresh.
    async fn metadata(&self, refresh_keys: bool) -> Result<CoreProviderMetadata, OidcError> {
        let http = self.client();
        let mut cache = self.cache.lock().await;
        let fresh = cache.as_ref().filter(|c| c.fetched.elapsed() < self.ttl);
        match (fresh, refresh_keys) {
            (Some(c), false) => return Ok(c.metadata.clone()),
            (Some(c), true) => {
                let keys = CoreJsonWebKeySet::fetch_async(c.metadata.jwks_uri(), &http).await.map_err(|e| {
                    tracing::warn!(provider = %self.settings.id, error = %e, "could not read the provider's keys");
                    OidcError::new("the provider's keys could not be read")
                })?;
                let metadata = c.metadata.clone().set_jwks(keys);
                *cache = Some(Cached { metadata: metadata.clone(), fetched: c.fetched });
                return Ok(metadata);
            }
            (None, _) => {}
        }
        if let Some((at, e)) = self.failed.lock().ok().and_then(|f| f.clone()) {
            if at.elapsed() < FAILURE_HOLD {
                return Err(e);
            }
        }
        let discovered = match CoreProviderMetadata::discover_async(self.issuer.clone(), &http).await {
            Ok(m) => Ok(m),
            Err(e) => {
                tracing::warn!(provider = %self.settings.id, error = %e, "OIDC discovery failed");
                Err(OidcError::new("the provider's discovery document could not be read"))
            }
        };
        let metadata = match discovered {
            Ok(m) => m,
            Err(e) => {
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some((Instant::now(), e.clone()));
                }
                return Err(e);
            }
        };
        // The client secret, the code and the access token go to these: TLS only (plain HTTP to
        // a loopback address only).
        let endpoints = [
            Some(metadata.jwks_uri().url().as_str()),
            metadata.token_endpoint().map(|u| u.url().as_str()),
            metadata.userinfo_endpoint().map(|u| u.url().as_str()),
        ];
        if endpoints.into_iter().flatten().any(|u| !crate::config::https_or_loopback_http(u)) {
            tracing::warn!(provider = %self.settings.id, "the discovery document names an endpoint that is not https");
            return Err(OidcError::new("the provider's discovery document names an endpoint that is not https"));
        }
        *cache = Some(Cached { metadata: metadata.clone(), fetched: Instant::now() });
        Ok(metadata)
    }

    /// The authorization request: state, nonce and a PKCE S256 challenge, all fresh.
    pub async fn begin(&self, redirect_uri: &str) -> Result<AuthRequest, OidcError> {
        let metadata = self.metadata(false).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|_| OidcError::new("bad redirect URI"))?;
        let client = CoreClient::from_provider_metadata(metadata, ClientId::new(self.settings.client_id.clone()), None)
            .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(AuthRequest {
            url: url.to_string(),
            state: crate::crypto::SecretString::new(state.secret().clone()),
            nonce: crate::crypto::SecretString::new(nonce.secret().clone()),
            pkce_verifier: crate::crypto::SecretString::new(verifier.secret().clone()),
        })
    }

    /// Exchange the code, check the ID token, merge userinfo when configured.
    pub async fn finish(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<ExternalIdentity, OidcError> {
        let metadata = self.metadata(false).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|_| OidcError::new("bad redirect URI"))?;
        let secret = self.settings.client_secret.as_ref().map(|s| ClientSecret::new(s.expose().to_string()));
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match self.settings.token_auth {
            TokenAuth::ClientSecretBasic => AuthType::BasicAuth,
            TokenAuth::ClientSecretPost => AuthType::RequestBody,
        });
        let http = self.client();
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| OidcError::new("the provider has no token endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %self.settings.id, error = %e, "the token endpoint refused the code");
                OidcError::new("the provider refused the authorization code")
            })?;
        let id_token = token.id_token().ok_or_else(|| OidcError::new("the provider sent no ID token"))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = match self.verify(id_token, &metadata, &nonce, now) {
            Err(Retry::UnknownKey) => {
                // A key the cache does not know: the provider may have rotated its keys.
                let metadata = self.metadata(true).await?;
                self.verify(id_token, &metadata, &nonce, now).map_err(Retry::into_error)?
            }
            other => other.map_err(Retry::into_error)?,
        };
        let mut raw = payload_of(&id_token.to_string()).map_err(OidcError::new)?;
        let subject = claims.0;
        if self.settings.userinfo {
            if let Some(endpoint) = metadata.userinfo_endpoint() {
                let extra = self.userinfo(endpoint.url().as_str(), token.access_token().secret(), &subject).await?;
                for (k, v) in extra {
                    raw.entry(k).or_insert(v);
                }
            }
        }
        Ok(ExternalIdentity::from_claims(&self.settings.id, &claims.1, &subject, raw, &self.settings.claims))
    }

    /// Check the ID token with the keys in `metadata`; `(subject, issuer)`.
    fn verify(
        &self,
        id_token: &CoreIdToken,
        metadata: &CoreProviderMetadata,
        nonce: &Nonce,
        now: OffsetDateTime,
    ) -> Result<(String, String), Retry> {
        let now_s = now.unix_timestamp();
        let skew = self.skew;
        let at = move |secs: i64| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0).unwrap_or_default();
        let client_id = ClientId::new(self.settings.client_id.clone());
        let verifier = CoreIdTokenVerifier::new_confidential_client(
            client_id,
            // HMAC is never on the allow-list: the secret is not needed to verify.
            ClientSecret::new(String::new()),
            metadata.issuer().clone(),
            metadata.jwks().clone(),
        )
        .set_allowed_algs(self.algorithms.clone())
        // `exp` may be up to the skew in the past.
        .set_time_fn(move || at(now_s - skew))
        .set_issue_time_verifier_fn(move |iat| {
            let iat = iat.timestamp();
            if iat > now_s + skew {
                Err("issued in the future".into())
            } else if iat < now_s - MAX_ID_TOKEN_AGE - skew {
                Err("issued too long ago".into())
            } else {
                Ok(())
            }
        });
        let claims = id_token.claims(&verifier, nonce).map_err(Retry::from)?;
        // More than one audience: `azp` must name this client; when present it always must.
        let audiences = claims.audiences();
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.settings.client_id => {
                return Err(Retry::Fail(OidcError::new("ID token: azp is another client")))
            }
            None if audiences.len() > 1 => return Err(Retry::Fail(OidcError::new("ID token: azp missing"))),
            _ => {}
        }
        Ok((claims.subject().as_str().to_string(), claims.issuer().as_str().to_string()))
    }

    async fn userinfo(&self, url: &str, access_token: &str, subject: &str) -> Result<Map<String, Value>, OidcError> {
        let failed = || OidcError::new("the provider's userinfo could not be read");
        let req = openidconnect::http::Request::builder()
            .method("GET")
            .uri(url)
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {access_token}"))
            .body(Vec::new())
            .map_err(|_| failed())?;
        let resp = self.call(req).await.map_err(|_| failed())?;
        if resp.status() != 200 {
            return Err(failed());
        }
        let claims: Map<String, Value> = serde_json::from_slice(resp.body()).map_err(|_| failed())?;
        // The answer must be about the user the ID token names.
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(OidcError::new("the provider's userinfo is about another subject"));
        }
        Ok(claims)
    }
}

/// openidconnect's HTTP client: ours (no redirects, time limits, answers capped in size).
struct Http(HttpClient);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = OutboundError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, OutboundError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.0.send(request, MAX_ANSWER_BYTES))
    }
}

/// A verification failure; `UnknownKey` is worth one fresh read of the provider's keys.
enum Retry {
    UnknownKey,
    Fail(OidcError),
}

impl Retry {
    fn into_error(self) -> OidcError {
        match self {
            Retry::UnknownKey => OidcError::new("ID token: signed by a key the provider does not publish"),
            Retry::Fail(e) => e,
        }
    }
}

impl From<ClaimsVerificationError> for Retry {
    fn from(e: ClaimsVerificationError) -> Self {
        use ClaimsVerificationError as C;
        use SignatureVerificationError as S;
        let reason = match e {
            C::SignatureVerification(S::NoMatchingKey) => return Retry::UnknownKey,
            C::SignatureVerification(S::DisallowedAlg(_) | S::UnsupportedAlg(_)) => "ID token: algorithm not accepted",
            C::SignatureVerification(S::NoSignature) => "ID token: not signed",
            C::SignatureVerification(_) => "ID token: bad signature",
            C::Expired(m) if m.contains("future") => "ID token: issued in the future",
            C::Expired(m) if m.contains("too long ago") => "ID token: issued too long ago",
            C::Expired(_) => "ID token: expired",
            C::InvalidAudience(_) => "ID token: wrong audience",
            C::InvalidIssuer(_) => "ID token: wrong issuer",
            C::InvalidNonce(_) => "ID token: nonce mismatch",
            C::InvalidSubject(_) => "ID token: bad subject",
            _ => "ID token: invalid",
        };
        Retry::Fail(OidcError::new(reason))
    }
}

/// The claims of a JWT, read without checking anything (previews; or after verification).
pub fn payload_of(jwt: &str) -> Result<Map<String, Value>, String> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload)) = (parts.next(), parts.next()) else {
        return Err("not a JWT (header.payload.signature)".into());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the JWT payload is not base64url".to_string())?;
    serde_json::from_slice(&bytes).map_err(|_| "the JWT payload is not a JSON object".to_string())
}
