//! One typed [`Config`]: defaults → TOML file → `GATEHOUSE_*` environment (`__` for nesting) →
//! command-line flags. Secrets are never inline values: they come from `*_file` paths or from
//! `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`). Unknown keys are errors that name the
//! key and the file. [`Config::validate`] runs once at boot and gives actionable messages.
//!
//! Every key is documented, with its default and environment name, in `packaging/gatehouse.toml`.

use crate::telemetry::LogFormat;
use figment::providers::{Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Name of the systemd credential that holds the master key.
pub const CREDENTIAL_MASTER_KEY: &str = "master_key";
/// Name of the systemd credential that holds the metrics bearer token.
pub const CREDENTIAL_METRICS_TOKEN: &str = "metrics_token";
/// Name of the systemd credential that holds the alert webhook's HMAC secret.
pub const CREDENTIAL_WEBHOOK_SECRET: &str = "webhook_secret";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder for the database, generated keys and certificate.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub vault: VaultConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub monitoring: MonitoringConfig,
    pub sso: SsoConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace_seconds: u64,
    pub trusted_proxies: Vec<IpNet>,
    pub cors_allowed_origins: Vec<String>,
    /// The address browsers and identity providers reach Gatehouse at (`https://host[:port]`,
    /// no path): SSO redirect and ACS URLs are built from it. Default: the listen address.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: Option<PathBuf>,
    pub busy_timeout_ms: u64,
    pub read_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    pub master_key_file: Option<PathBuf>,
    /// The name of an environment variable holding the master key (64 hex digits).
    pub master_key_env: Option<String>,
    /// Largest secret value, in bytes.
    pub max_secret_bytes: usize,
    /// Seals a workspace data key makes before it is replaced (AES-GCM with random 96-bit
    /// nonces must stay far below 2^32).
    pub data_key_max_seals: i64,
    /// Data keys re-wrapped per transaction by `keys rotate-master`.
    pub rewrap_batch_size: i64,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_key_file: None,
            master_key_env: None,
            max_secret_bytes: 65_536,
            data_key_max_seals: 1 << 30,
            rewrap_batch_size: 500,
        }
    }
}

/// The audit log: what is recorded, checkpoints, retention, forwarding.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Refuse a state-changing request whose audit record cannot be written.
    pub require: bool,
    /// Record read access (`api.read`) as well as changes.
    pub record_reads: bool,
    /// A signed checkpoint after this many new records...
    pub checkpoint_every_records: u64,
    /// ...or after this many seconds with at least one new record.
    pub checkpoint_interval_seconds: u64,
    /// How often (milliseconds) the background indexer files the new records in the query index.
    /// Queries scan the records not yet filed, so a longer interval costs queries a longer scan
    /// and saves appends index writes (a batch dirties each index page once).
    pub index_interval_ms: u64,
    /// Days a record is kept, by category (the first part of the event name: `auth`, `secret`,
    /// ...), with `default` for the others. A category not named (and no `default`) is kept forever.
    pub retention_days: std::collections::BTreeMap<String, u32>,
    /// Collectors that receive every record as RFC 5424 syslog.
    pub syslog: Vec<SyslogTarget>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            require: false,
            record_reads: false,
            checkpoint_every_records: 10_000,
            checkpoint_interval_seconds: 300,
            index_interval_ms: 500,
            retention_days: std::collections::BTreeMap::new(),
            syslog: Vec::new(),
        }
    }
}

/// How a syslog collector is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

/// One `[[audit.syslog]]` collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTarget {
    /// A short name, unique among targets: it keys the durable cursor.
    pub name: String,
    pub transport: SyslogTransport,
    /// `host:port` of the collector.
    pub address: String,
    /// PEM file of the CA that signed the collector's certificate (TLS; system roots otherwise).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the collector's certificate must carry (TLS; default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// RFC 5424 APP-NAME.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// RFC 5424 HOSTNAME (default: the machine's host name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Syslog facility name (`auth`, `authpriv`, `local0`...`local7`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// SD-ID of the structured data element that carries the event fields.
    #[serde(default = "default_sd_id")]
    pub sd_id: String,
}

fn default_app_name() -> String {
    "gatehouse".into()
}

fn default_facility() -> String {
    "authpriv".into()
}

fn default_sd_id() -> String {
    "gatehouse@32473".into()
}

/// Security monitoring: threshold rules over the audit stream that raise alerts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enabled: bool,
    /// The sliding window the counting rules use.
    pub window_seconds: u64,
    /// Failed logins for one account within the window that raise an alert.
    pub failed_logins_per_account: u32,
    /// Failed logins from one address within the window that raise an alert.
    pub failed_logins_per_ip: u32,
    /// Refused requests (rate limit, 429) from one address within the window.
    pub rate_limited_per_ip: u32,
    /// Secret reveals by one actor within the window.
    pub secret_reveals_per_actor: u32,
    /// An https:// (or loopback http://) URL that receives each alert as a signed JSON POST.
    pub webhook_url: Option<String>,
    /// File holding the HMAC-SHA256 key for the webhook signature (or the `webhook_secret` credential).
    pub webhook_secret_file: Option<PathBuf>,
    /// PEM file of the CA for an https webhook with a private certificate.
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_seconds: 300,
            failed_logins_per_account: 5,
            failed_logins_per_ip: 20,
            rate_limited_per_ip: 10,
            secret_reveals_per_actor: 50,
            webhook_url: None,
            webhook_secret_file: None,
            webhook_ca_file: None,
        }
    }
}

/// Single sign-on: settings shared by every provider, and the `[[sso.oidc]]` providers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// Origins (`https://host[:port]`) a login's `return_to` may name besides relative paths.
    pub return_to_origins: Vec<String>,
    /// Seconds an identity provider's discovery document (and its keys) are kept.
    pub discovery_ttl_seconds: u64,
    /// Seconds of clock difference tolerated on ID token and assertion times.
    pub clock_skew_seconds: u64,
    /// OpenID Connect providers defined here (read-only through the admin API).
    pub oidc: Vec<OidcProviderConfig>,
    /// SAML 2.0 identity providers defined here (read-only through the admin API).
    pub saml: Vec<SamlProviderConfig>,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            return_to_origins: Vec::new(),
            discovery_ttl_seconds: 3600,
            clock_skew_seconds: 60,
            oidc: Vec::new(),
            saml: Vec::new(),
        }
    }
}

/// Whether a login without a linked account creates one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jit {
    /// Link by email when `link_by_email` allows, else create the account.
    #[default]
    Create,
    /// Link by email when `link_by_email` allows; never create.
    LinkOnly,
    /// Only identities already linked sign in.
    Off,
}

/// How an OIDC client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// Whether an unknown identity may be linked to an existing account with the same email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkByEmail {
    /// Only when the provider says the email is verified.
    VerifiedOnly,
    #[default]
    Never,
}

/// Where each user attribute is found in the provider's claims: a dotted path
/// (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimPaths {
    pub email: String,
    pub email_verified: String,
    pub name: String,
    pub groups: String,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        Self {
            email: "email".into(),
            email_verified: "email_verified".into(),
            name: "name".into(),
            groups: "groups".into(),
        }
    }
}

/// One mapping rule: when the claim at `claim` (a dotted path) equals `value` (or, for a list,
/// contains it), grant the platform role and/or the roles in the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    pub claim: String,
    pub value: String,
    /// `admin`: a platform admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_role: Option<String>,
    /// A workspace id or slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Role names in that workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// One `[[sso.oidc]]` provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short name used in URLs (`/v1/sso/{id}/login`): 1 to 64 of `a-z 0-9 -`.
    pub id: String,
    pub display_name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The issuer URL; discovery is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret (default: the credential `sso-{id}-client-secret`).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub token_auth: TokenAuth,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimPaths,
    /// When not empty, only emails in these domains sign in.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default)]
    pub jit: Jit,
    #[serde(default)]
    pub link_by_email: LinkByEmail,
    /// Take the provider's emails as verified even without `email_verified = true` (Entra ID
    /// sends no such claim). Only for a provider that owns the mail domains it signs in.
    #[serde(default)]
    pub trust_email: bool,
    /// Also read the userinfo endpoint and merge its claims (the ID token's win on conflict).
    #[serde(default)]
    pub userinfo: bool,
    /// ID token signature algorithms accepted.
    #[serde(default = "default_oidc_algorithms")]
    pub algorithms: Vec<String>,
    /// PEM file of the CA for a provider with a private certificate (system roots otherwise).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub mapping: Vec<MappingRule>,
    /// The mapping decides the user's roles in every workspace it names (roles given by hand
    /// there are removed) and, when a rule names a platform role, the platform role.
    #[serde(default)]
    pub authoritative: bool,
}

/// Which SAML attributes carry the user's email, name and groups: the attribute's `Name` (a
/// short name or a URI) or its `FriendlyName`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlAttributeNames {
    pub email: String,
    /// An attribute whose value `true` says the email is verified (rarely sent; see
    /// `trust_email`).
    pub email_verified: String,
    pub name: String,
    pub groups: String,
}

impl Default for SamlAttributeNames {
    fn default() -> Self {
        Self {
            email: "email".into(),
            email_verified: "email_verified".into(),
            name: "displayName".into(),
            groups: "groups".into(),
        }
    }
}

impl From<SamlAttributeNames> for ClaimPaths {
    fn from(a: SamlAttributeNames) -> Self {
        Self { email: a.email, email_verified: a.email_verified, name: a.name, groups: a.groups }
    }
}

/// One `[[sso.saml]]` identity provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamlProviderConfig {
    /// Short name used in URLs (`/v1/sso/{id}/login`): 1 to 64 of `a-z 0-9 -`.
    pub id: String,
    pub display_name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The IdP's metadata XML, inline.
    #[serde(default)]
    pub idp_metadata: Option<String>,
    /// A file holding the IdP's metadata XML (instead of `idp_metadata`).
    #[serde(default)]
    pub idp_metadata_file: Option<PathBuf>,
    /// This service provider's entity id (default: its metadata URL,
    /// `{public_url}/v1/sso/saml/{id}/metadata`).
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// The NameID format asked for (default: none, the IdP's choice).
    #[serde(default)]
    pub name_id_format: Option<String>,
    #[serde(default)]
    pub attributes: SamlAttributeNames,
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default)]
    pub jit: Jit,
    #[serde(default)]
    pub link_by_email: LinkByEmail,
    /// Take the IdP's emails as verified (SAML has no standard way to say so). Only for an IdP
    /// that owns the mail domains it signs in.
    #[serde(default)]
    pub trust_email: bool,
    /// Sign AuthnRequests (RSA-SHA256 over the redirect's query).
    #[serde(default = "yes")]
    pub sign_requests: bool,
    /// Accept SHA-1 signatures and digests (old ADFS). Off: SHA-1 is refused.
    #[serde(default)]
    pub allow_sha1: bool,
    /// Accept responses no login started (IdP-initiated). Off: every response must answer a
    /// request this server sent from the same browser.
    #[serde(default)]
    pub allow_unsolicited: bool,
    #[serde(default)]
    pub mapping: Vec<MappingRule>,
    /// As for OIDC providers: the mapping decides the roles in every workspace it names.
    #[serde(default)]
    pub authoritative: bool,
}

fn yes() -> bool {
    true
}

pub fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

pub fn default_oidc_algorithms() -> Vec<String> {
    ["RS256", "ES256"].map(String::from).to_vec()
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// One `request completed` line per request (target `gatehouse::access`).
    pub access: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("gatehouse-data"),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            vault: VaultConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            monitoring: MonitoringConfig::default(),
            sso: SsoConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 10,
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            public_url: None,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { enabled: true, cert_file: None, key_file: None }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { path: None, busy_timeout_ms: 5000, read_connections: 4 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".into(), access: true }
    }
}

/// Who may create a local account with `POST /v1/auth/signup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone.
    Open,
    /// Only with an invitation a platform admin made (`POST /v1/users/invites`).
    Invite,
    /// Nobody; admins create accounts with `POST /v1/users`.
    Disabled,
}

/// Accounts, sessions and credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub signup: SignupMode,
    /// `iss` of the access tokens Gatehouse signs.
    pub issuer: String,
    /// `aud` of the access tokens Gatehouse signs and accepts.
    pub audience: String,
    /// `ES256`, `RS256` or `EdDSA`.
    pub jwt_algorithm: String,
    pub access_token_ttl_seconds: u64,
    /// Sliding: every refresh extends the session by this much, up to `session_max_lifetime_seconds`.
    pub refresh_token_ttl_seconds: u64,
    pub session_max_lifetime_seconds: u64,
    pub anonymous_lifetime_seconds: u64,
    pub signing_key_rotation_days: u64,
    /// `Cache-Control: max-age` of `/.well-known/jwks.json`; the next key is published twice this
    /// long before it signs.
    pub jwks_max_age_seconds: u64,
    /// Local accounts must enrol TOTP: until they do, their sessions may only enrol.
    pub require_mfa: bool,
    pub mfa_challenge_ttl_seconds: u64,
    pub pat_max_lifetime_days: u64,
    pub invite_ttl_hours: u64,
    /// Header names accepted as well as `X-Api-Key` for workspace API keys (lower-case), for
    /// platforms that already send keys under a name of their own.
    pub api_key_headers: Vec<String>,
    pub password: PasswordConfig,
    pub lockout: LockoutConfig,
    pub rate_limit: RateLimitConfig,
}

/// argon2id cost.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Password hashes computed at once (0: one per CPU core).
    pub max_concurrent_hashes: usize,
}

/// Per-account throttling of failed logins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures before back-off starts.
    pub backoff_after: u32,
    /// Back-off doubles from this many seconds…
    pub backoff_base_seconds: u64,
    /// …up to this many.
    pub backoff_max_seconds: u64,
    /// Failures that lock the account for `lock_seconds`.
    pub lock_after: u32,
    pub lock_seconds: u64,
}

/// Per-client-address rate limit on the sign-in endpoints (a token bucket).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signup: SignupMode::Invite,
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            jwt_algorithm: "ES256".into(),
            access_token_ttl_seconds: 15 * 60,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            session_max_lifetime_seconds: 90 * 24 * 3600,
            anonymous_lifetime_seconds: 24 * 3600,
            signing_key_rotation_days: 30,
            jwks_max_age_seconds: 300,
            require_mfa: false,
            mfa_challenge_ttl_seconds: 300,
            pat_max_lifetime_days: 365,
            invite_ttl_hours: 72,
            api_key_headers: Vec::new(),
            password: PasswordConfig::default(),
            lockout: LockoutConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1, max_concurrent_hashes: 0 }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self { backoff_after: 3, backoff_base_seconds: 1, backoff_max_seconds: 60, lock_after: 10, lock_seconds: 900 }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { per_minute: 60, burst: 20 }
    }
}

/// A configuration that cannot be used; the message names the key or file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config`); none means defaults and environment only.
    pub file: Option<PathBuf>,
    /// Environment variables (normally `std::env::vars()`), so tests can pass their own.
    pub env: Vec<(String, String)>,
}

impl Sources {
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self { file, env: std::env::vars().collect() }
    }
}

/// Environment variables that name the config file rather than a key in it.
const NOT_KEYS: &[&str] = &["GATEHOUSE_CONFIG"];

impl Config {
    /// Load defaults, then the file, then `GATEHOUSE_*` variables.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = &sources.file {
            // Read it ourselves first: figment silently skips a missing file.
            std::fs::read_to_string(file).map_err(|e| {
                ConfigError(format!("cannot read configuration file {}: {e}; check the --config path", file.display()))
            })?;
            figment = figment.merge(Toml::file_exact(file));
        }
        let vars: Vec<(String, String)> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("GATEHOUSE_") && !NOT_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        let env_values = figment::providers::Serialized::globals(env_to_tree(&vars));
        figment = figment.merge(env_values);
        figment.extract::<Config>().map_err(|e| ConfigError(describe(e, sources.file.as_deref())))
    }

    /// Check what types cannot: relations between keys, paths that must exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = &self.vault;
        if let Some(name) = &v.master_key_env {
            let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok || name.starts_with("GATEHOUSE_") {
                return Err(ConfigError(format!(
                    "vault.master_key_env: {name:?} is not usable: an environment variable name of letters, digits \
                     and _, not starting with GATEHOUSE_ (those are configuration)"
                )));
            }
        }
        if !(1..=1_048_576).contains(&v.max_secret_bytes) {
            return Err(ConfigError("vault.max_secret_bytes must be between 1 and 1048576".into()));
        }
        if !(1..=(1i64 << 30)).contains(&v.data_key_max_seals) {
            return Err(ConfigError("vault.data_key_max_seals must be between 1 and 1073741824 (2^30)".into()));
        }
        if !(1..=10_000).contains(&v.rewrap_batch_size) {
            return Err(ConfigError("vault.rewrap_batch_size must be between 1 and 10000".into()));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError(
                "server.max_body_bytes must be at least 1024 (GATEHOUSE_SERVER__MAX_BODY_BYTES)".into(),
            ));
        }
        if self.database.read_connections == 0 || self.database.read_connections > 64 {
            return Err(ConfigError("database.read_connections must be between 1 and 64".into()));
        }
        if !self.tls.enabled && !self.server.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "tls.enabled = false is allowed only on a loopback address, behind a local reverse proxy; \
                 server.listen is {}: set it to 127.0.0.1:PORT or enable TLS",
                self.server.listen
            )));
        }
        if !self.tls.enabled && self.server.trusted_proxies.is_empty() {
            return Err(ConfigError(
                "tls.enabled = false means a local reverse proxy terminates TLS: set server.trusted_proxies to its \
                 address (for example [\"127.0.0.1/32\"]) so that clients are told apart from the proxy"
                    .into(),
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError(
                    "tls.cert_file and tls.key_file go together: set both, or neither to use the generated self-signed certificate".into(),
                ))
            }
            (Some(cert), Some(key)) if self.tls.enabled => {
                for (name, path) in [("tls.cert_file", cert), ("tls.key_file", key)] {
                    std::fs::metadata(path).map_err(|e| {
                        ConfigError(format!("{name}: cannot read {}: {e}; check the path and its permissions", path.display()))
                    })?;
                }
            }
            _ => {}
        }
        for origin in &self.server.cors_allowed_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && !origin.contains('*');
            if !ok {
                return Err(ConfigError(format!(
                    "server.cors_allowed_origins: {origin:?} is not an origin; write scheme://host[:port] without a path or wildcard"
                )));
            }
        }
        self.validate_auth()?;
        self.validate_audit()?;
        self.validate_monitoring()?;
        self.validate_sso()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError(format!(
                "log.level: {:?} is not a valid filter (try \"info\" or \"gatehouse=debug,info\")",
                self.log.level
            )));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        let bad = |msg: String| Err(ConfigError(msg));
        if crate::crypto::jwt::JwtAlg::parse(&a.jwt_algorithm).is_none() {
            return bad(format!(
                "auth.jwt_algorithm: {:?} is not supported; use ES256, RS256 or EdDSA",
                a.jwt_algorithm
            ));
        }
        if a.issuer.trim().is_empty() || a.audience.trim().is_empty() {
            return bad("auth.issuer and auth.audience must not be empty".into());
        }
        if !(60..=24 * 3600).contains(&a.access_token_ttl_seconds) {
            return bad("auth.access_token_ttl_seconds must be between 60 and 86400".into());
        }
        if a.refresh_token_ttl_seconds < a.access_token_ttl_seconds {
            return bad("auth.refresh_token_ttl_seconds must not be shorter than auth.access_token_ttl_seconds".into());
        }
        if a.session_max_lifetime_seconds < a.refresh_token_ttl_seconds {
            return bad(
                "auth.session_max_lifetime_seconds must not be shorter than auth.refresh_token_ttl_seconds".into()
            );
        }
        if a.anonymous_lifetime_seconds < 60 {
            return bad("auth.anonymous_lifetime_seconds must be at least 60".into());
        }
        if a.signing_key_rotation_days == 0 {
            return bad("auth.signing_key_rotation_days must be at least 1".into());
        }
        if a.jwks_max_age_seconds == 0 || a.jwks_max_age_seconds * 2 >= a.signing_key_rotation_days * 24 * 3600 {
            return bad("auth.jwks_max_age_seconds must be positive and well under the rotation period".into());
        }
        if !(30..=3600).contains(&a.mfa_challenge_ttl_seconds) {
            return bad("auth.mfa_challenge_ttl_seconds must be between 30 and 3600".into());
        }
        if a.pat_max_lifetime_days == 0 || a.invite_ttl_hours == 0 {
            return bad("auth.pat_max_lifetime_days and auth.invite_ttl_hours must be at least 1".into());
        }
        for h in &a.api_key_headers {
            let reserved = ["authorization", "cookie", "host", "content-type", "content-length", "x-forwarded-for"];
            let ok = (1..=64).contains(&h.len())
                && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !reserved.contains(&h.as_str());
            if !ok {
                return bad(format!(
                    "auth.api_key_headers: '{h}' is not a usable header name (lower-case letters, digits and -, \
                     not a standard header)"
                ));
            }
        }
        let p = &a.password;
        if p.memory_kib < 8 * 1024 || p.iterations == 0 || p.parallelism == 0 || p.parallelism > 16 {
            return bad(
                "auth.password: memory_kib must be at least 8192, iterations at least 1, parallelism 1 to 16".into()
            );
        }
        let l = &a.lockout;
        if l.lock_after <= l.backoff_after || l.lock_seconds == 0 || l.backoff_max_seconds < l.backoff_base_seconds {
            return bad("auth.lockout: lock_after must exceed backoff_after, lock_seconds must be positive and backoff_max_seconds at least backoff_base_seconds".into());
        }
        if a.rate_limit.per_minute == 0 || a.rate_limit.burst == 0 {
            return bad("auth.rate_limit.per_minute and auth.rate_limit.burst must be at least 1".into());
        }
        Ok(())
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        let a = &self.audit;
        let bad = |msg: String| Err(ConfigError(msg));
        if !(10..=1_000_000).contains(&a.checkpoint_every_records) {
            return bad("audit.checkpoint_every_records must be between 10 and 1000000".into());
        }
        if !(10..=86_400).contains(&a.checkpoint_interval_seconds) {
            return bad("audit.checkpoint_interval_seconds must be between 10 and 86400".into());
        }
        if !(10..=3_600_000).contains(&a.index_interval_ms) {
            return bad("audit.index_interval_ms must be between 10 and 3600000".into());
        }
        for (category, days) in &a.retention_days {
            if category != "default" && !crate::domain::audit::catalogue::is_category(category) {
                return bad(format!(
                    "audit.retention_days: '{category}' is not an event category; use one of {} or default",
                    crate::domain::audit::catalogue::categories().join(", ")
                ));
            }
            if !(1..=36_500).contains(days) {
                return bad(format!("audit.retention_days.{category} must be between 1 and 36500 days"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &a.syslog {
            let ok = (1..=32).contains(&t.name.len())
                && t.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok {
                return bad(format!("audit.syslog: name {:?} is not usable (1 to 32 of a-z, 0-9, - and _)", t.name));
            }
            if !names.insert(t.name.clone()) {
                return bad(format!("audit.syslog: the name '{}' is used twice", t.name));
            }
            let Some((host, port)) = t.address.rsplit_once(':') else {
                return bad(format!("audit.syslog '{}': address {:?} is not host:port", t.name, t.address));
            };
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return bad(format!("audit.syslog '{}': address {:?} is not host:port", t.name, t.address));
            }
            if t.transport != SyslogTransport::Tls && (t.ca_file.is_some() || t.server_name.is_some()) {
                return bad(format!(
                    "audit.syslog '{}': ca_file and server_name apply to transport = \"tls\" only",
                    t.name
                ));
            }
            if let Some(ca) = &t.ca_file {
                std::fs::metadata(ca).map_err(|e| {
                    ConfigError(format!("audit.syslog '{}': cannot read ca_file {}: {e}", t.name, ca.display()))
                })?;
            }
            if crate::domain::siem::facility_code(&t.facility).is_none() {
                return bad(format!(
                    "audit.syslog '{}': facility {:?} is not one of kern, user, auth, authpriv, daemon, local0 to local7",
                    t.name, t.facility
                ));
            }
            let printable =
                |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b));
            if !printable(&t.app_name, 48) || !t.hostname.as_deref().is_none_or(|h| printable(h, 255)) {
                return bad(format!(
                    "audit.syslog '{}': app_name (1 to 48) and hostname (1 to 255) must be printable ASCII without spaces",
                    t.name
                ));
            }
            let sd_ok = printable(&t.sd_id, 32) && !t.sd_id.contains(['=', ']', '"']);
            if !sd_ok {
                return bad(format!("audit.syslog '{}': sd_id {:?} is not a valid SD-ID", t.name, t.sd_id));
            }
        }
        Ok(())
    }

    fn validate_monitoring(&self) -> Result<(), ConfigError> {
        let m = &self.monitoring;
        let bad = |msg: String| Err(ConfigError(msg));
        if !(10..=86_400).contains(&m.window_seconds) {
            return bad("monitoring.window_seconds must be between 10 and 86400".into());
        }
        let thresholds = [
            ("failed_logins_per_account", m.failed_logins_per_account),
            ("failed_logins_per_ip", m.failed_logins_per_ip),
            ("rate_limited_per_ip", m.rate_limited_per_ip),
            ("secret_reveals_per_actor", m.secret_reveals_per_actor),
        ];
        for (name, value) in thresholds {
            if value == 0 {
                return bad(format!("monitoring.{name} must be at least 1"));
            }
        }
        if let Some(url) = &m.webhook_url {
            if !https_or_loopback_http(url) || url.contains(char::is_whitespace) {
                return bad(format!(
                    "monitoring.webhook_url: {url:?} must be an https:// URL (http:// only to a loopback address)"
                ));
            }
        }
        if let Some(ca) = &m.webhook_ca_file {
            std::fs::metadata(ca)
                .map_err(|e| ConfigError(format!("monitoring.webhook_ca_file: cannot read {}: {e}", ca.display())))?;
        }
        Ok(())
    }

    fn validate_sso(&self) -> Result<(), ConfigError> {
        let s = &self.sso;
        if let Some(url) = &self.server.public_url {
            check_origin(url).map_err(|e| ConfigError(format!("server.public_url: {e}")))?;
        }
        for origin in &s.return_to_origins {
            check_origin(origin).map_err(|e| ConfigError(format!("sso.return_to_origins: {e}")))?;
        }
        if !(60..=86_400).contains(&s.discovery_ttl_seconds) {
            return Err(ConfigError("sso.discovery_ttl_seconds must be between 60 and 86400".into()));
        }
        if s.clock_skew_seconds > 300 {
            return Err(ConfigError("sso.clock_skew_seconds must be at most 300".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &s.oidc {
            let at = format!("sso.oidc '{}'", p.id);
            check_provider_id(&p.id).map_err(|e| ConfigError(format!("sso.oidc: {e}")))?;
            if !seen.insert(p.id.as_str()) {
                return Err(ConfigError(format!("{at}: the id is used twice; provider ids must be unique")));
            }
            check_oidc_fields(&p.display_name, &p.issuer, &p.client_id, &p.scopes, &p.algorithms)
                .and_then(|()| check_mapping(&p.mapping))
                .and_then(|()| check_email_domains(&p.allowed_email_domains))
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
            for (name, path) in [("client_secret_file", &p.client_secret_file), ("ca_file", &p.ca_file)] {
                if let Some(path) = path {
                    std::fs::metadata(path)
                        .map_err(|e| ConfigError(format!("{at}: {name}: cannot read {}: {e}", path.display())))?;
                }
            }
        }
        for p in &s.saml {
            let at = format!("sso.saml '{}'", p.id);
            check_provider_id(&p.id).map_err(|e| ConfigError(format!("sso.saml: {e}")))?;
            if !seen.insert(p.id.as_str()) {
                return Err(ConfigError(format!("{at}: the id is used twice; provider ids must be unique")));
            }
            match (&p.idp_metadata, &p.idp_metadata_file) {
                (Some(_), None) => {}
                (None, Some(path)) => {
                    std::fs::metadata(path).map_err(|e| {
                        ConfigError(format!("{at}: idp_metadata_file: cannot read {}: {e}", path.display()))
                    })?;
                }
                _ => return Err(ConfigError(format!("{at}: set one of idp_metadata and idp_metadata_file"))),
            }
            check_saml_fields(&p.display_name, p.sp_entity_id.as_deref(), p.name_id_format.as_deref())
                .and_then(|()| check_mapping(&p.mapping))
                .and_then(|()| check_email_domains(&p.allowed_email_domains))
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
        }
        Ok(())
    }

    /// The file holding the client secret of the OIDC provider `id`, if any.
    ///
    /// (SAML providers need no secret from the operator: their keys are generated and sealed.)
    pub fn sso_secret_path(&self, p: &OidcProviderConfig, credentials_dir: Option<&Path>) -> Option<PathBuf> {
        if let Some(f) = &p.client_secret_file {
            return Some(f.clone());
        }
        credentials_dir.map(|d| d.join(format!("sso-{}-client-secret", p.id))).filter(|f| f.exists())
    }

    /// The file holding the alert webhook's HMAC secret, if any.
    pub fn webhook_secret_path(&self, credentials_dir: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = &self.monitoring.webhook_secret_file {
            return Some(p.clone());
        }
        credentials_dir.map(|d| d.join(CREDENTIAL_WEBHOOK_SECRET)).filter(|p| p.exists())
    }

    pub fn database_path(&self) -> PathBuf {
        self.database.path.clone().unwrap_or_else(|| self.data_dir.join("gatehouse.db"))
    }

    /// The generated certificate and key, used when no `tls.cert_file`/`key_file` is set.
    pub fn generated_tls_paths(&self) -> (PathBuf, PathBuf) {
        let dir = self.data_dir.join("tls");
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    /// The certificate and key in use, and whether they are the generated ones.
    pub fn tls_paths(&self) -> (PathBuf, PathBuf, bool) {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => {
                let (c, k) = self.generated_tls_paths();
                (c, k, true)
            }
        }
    }

    /// Where the master key is read from, and whether it is the file Gatehouse may generate.
    /// Order: `vault.master_key_file`, then the variable `vault.master_key_env` names, then
    /// `$CREDENTIALS_DIRECTORY/master_key`, then the data folder's `master.key`.
    pub fn master_key_source(&self, credentials_dir: Option<&Path>) -> MasterKeySource {
        if let Some(p) = &self.vault.master_key_file {
            return MasterKeySource::File(p.clone());
        }
        if let Some(name) = &self.vault.master_key_env {
            return MasterKeySource::Env(name.clone());
        }
        if let Some(dir) = credentials_dir {
            let p = dir.join(CREDENTIAL_MASTER_KEY);
            if p.exists() {
                return MasterKeySource::Credential(p);
            }
        }
        MasterKeySource::DataDir(self.data_dir.join("master.key"))
    }

    /// The file holding the metrics bearer token, if any.
    pub fn metrics_token_path(&self, credentials_dir: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = &self.metrics.token_file {
            return Some(p.clone());
        }
        credentials_dir.map(|d| d.join(CREDENTIAL_METRICS_TOKEN)).filter(|p| p.exists())
    }
}

/// An origin: `https://host[:port]` (`http://` only for a loopback host), no path.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://").filter(|r| is_loopback_host(r)))
        .ok_or_else(|| format!("{origin:?} must start with https:// (http:// only for a loopback address)"))?;
    let ok = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && !rest.starts_with(':');
    if !ok {
        return Err(format!("{origin:?} is not an origin; write scheme://host[:port] without a path"));
    }
    Ok(())
}

/// `https://…`, or `http://` to 127.0.0.1, localhost or [::1]: where Gatehouse sends a secret
/// (an alert's signature, an OIDC client secret, a code, an access token).
pub fn https_or_loopback_http(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    url.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    })
}

fn is_loopback_host(rest: &str) -> bool {
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| &h[1..]).unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A provider id: 1 to 64 of `a-z 0-9 -`, starting with a letter or digit.
pub fn check_provider_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("id {id:?} must be 1 to 64 of a-z, 0-9 and -, not starting with -"))
    }
}

/// ID token algorithms Gatehouse verifies (asymmetric only: a client secret never signs).
pub const OIDC_ALGORITHMS: [&str; 9] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// The fields of an OIDC provider that need more than their type.
pub fn check_oidc_fields(
    display_name: &str,
    issuer: &str,
    client_id: &str,
    scopes: &[String],
    algorithms: &[String],
) -> Result<(), String> {
    if display_name.trim().is_empty() || display_name.chars().count() > 100 {
        return Err("display_name: 1 to 100 characters".into());
    }
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://").filter(|r| is_loopback_host(r)))
        .ok_or_else(|| format!("issuer: {issuer:?} must be an https:// URL"))?;
    if rest.is_empty() || issuer.len() > 512 || issuer.contains(char::is_whitespace) || issuer.contains(['?', '#']) {
        return Err(format!("issuer: {issuer:?} is not a usable issuer URL"));
    }
    if client_id.is_empty() || client_id.len() > 256 || client_id.contains(char::is_control) {
        return Err("client_id: 1 to 256 printable characters".into());
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err("scopes: must include \"openid\"".into());
    }
    if scopes.len() > 32
        || scopes.iter().any(|s| {
            s.is_empty() || s.len() > 128 || !s.bytes().all(|b| (33..=126).contains(&b) && b != b'"' && b != b'\\')
        })
    {
        return Err("scopes: at most 32 scope tokens of printable ASCII".into());
    }
    if algorithms.is_empty() {
        return Err(format!("algorithms: name at least one of {}", OIDC_ALGORITHMS.join(", ")));
    }
    for alg in algorithms {
        if !OIDC_ALGORITHMS.contains(&alg.as_str()) {
            return Err(format!("algorithms: {alg:?} is not accepted; use {}", OIDC_ALGORITHMS.join(", ")));
        }
    }
    Ok(())
}

/// The fields of a SAML provider that need more than their type (the metadata is read apart).
pub fn check_saml_fields(
    display_name: &str,
    sp_entity_id: Option<&str>,
    name_id_format: Option<&str>,
) -> Result<(), String> {
    if display_name.trim().is_empty() || display_name.chars().count() > 100 {
        return Err("display_name: 1 to 100 characters".into());
    }
    if let Some(e) = sp_entity_id {
        if e.is_empty() || e.len() > 1024 || e.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("sp_entity_id: a URI of 1 to 1024 characters without spaces".into());
        }
    }
    if let Some(f) = name_id_format {
        if !f.starts_with("urn:oasis:names:tc:SAML:") || f.len() > 256 || f.contains(char::is_whitespace) {
            return Err("name_id_format: a NameID format URI (urn:oasis:names:tc:SAML:…)".into());
        }
    }
    Ok(())
}

/// Email domains: lower-case host names.
pub fn check_email_domains(domains: &[String]) -> Result<(), String> {
    for d in domains {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !d.starts_with('.')
            && !d.ends_with('.');
        if !ok {
            return Err(format!("allowed_email_domains: {d:?} is not a lower-case domain name"));
        }
    }
    Ok(())
}

/// A dotted claim path (`groups`, `realm_access.roles`): 1 to 256 characters, no empty part.
pub fn is_claim_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= 256 && !path.split('.').any(str::is_empty)
}

/// Mapping rules: each grants something, a role needs its workspace.
pub fn check_mapping(rules: &[MappingRule]) -> Result<(), String> {
    if rules.len() > 256 {
        return Err("mapping: at most 256 rules".into());
    }
    for (i, r) in rules.iter().enumerate() {
        let at = format!("mapping[{i}]");
        if !is_claim_path(&r.claim) {
            return Err(format!("{at}.claim: a dotted claim path such as \"groups\" or \"realm_access.roles\""));
        }
        if r.value.len() > 512 {
            return Err(format!("{at}.value: at most 512 characters"));
        }
        if let Some(role) = &r.platform_role {
            if role != "admin" {
                return Err(format!("{at}.platform_role: {role:?} is not a platform role; the one there is \"admin\""));
            }
        }
        match (&r.workspace, r.roles.is_empty()) {
            (Some(_), true) => return Err(format!("{at}.roles: name the roles to grant in the workspace")),
            (None, false) => return Err(format!("{at}.workspace: roles need the workspace they are granted in")),
            (None, true) if r.platform_role.is_none() => {
                return Err(format!("{at}: a rule grants a platform_role, or roles in a workspace"))
            }
            _ => {}
        }
        if let Some(ws) = &r.workspace {
            if ws.is_empty() || ws.len() > 64 {
                return Err(format!("{at}.workspace: a workspace id or slug"));
            }
        }
        if r.roles.len() > 64 || r.roles.iter().any(|n| n.is_empty() || n.len() > 64) {
            return Err(format!("{at}.roles: 1 to 64 role names"));
        }
    }
    Ok(())
}

/// `$CREDENTIALS_DIRECTORY`, where systemd puts `LoadCredential=` files.
pub fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

/// Where the master key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `vault.master_key_file`: must exist.
    File(PathBuf),
    /// A systemd credential: must exist, permissions are systemd's.
    Credential(PathBuf),
    /// `<data_dir>/master.key`: generated on first start.
    DataDir(PathBuf),
    /// An environment variable (its name): must be set.
    Env(String),
}

impl MasterKeySource {
    /// The file, when the key is in one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) | Self::Credential(p) | Self::DataDir(p) => Some(p),
            Self::Env(_) => None,
        }
    }

    /// Where the key is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable {name}"),
            other => other.path().map(|p| p.display().to_string()).unwrap_or_default(),
        }
    }

    /// Whether Gatehouse may replace the key (rotation): not a systemd credential or a variable.
    pub fn replaceable(&self) -> bool {
        matches!(self, Self::File(_) | Self::DataDir(_))
    }
}

/// Turn `GATEHOUSE_A__B_C=v` into `{a: {b_c: v}}`, parsing values as TOML scalars or arrays
/// when they look like one (`true`, `42`, `["10.0.0.0/8"]`), as strings otherwise.
fn env_to_tree(vars: &[(String, String)]) -> toml_value::Table {
    let mut root = toml_value::Table::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("GATEHOUSE_") else { continue };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value = toml_value::parse_scalar(raw);
        toml_value::insert(&mut root, &path, value);
    }
    root
}

/// Minimal value tree for the environment overlay.
mod toml_value {
    use std::collections::BTreeMap;

    pub type Table = BTreeMap<String, figment::value::Value>;

    pub fn parse_scalar(raw: &str) -> figment::value::Value {
        use figment::value::Value;
        let wrapped = format!("v = {raw}");
        if let Ok(doc) = toml::from_str::<BTreeMap<String, Value>>(&wrapped) {
            if let Some(v) = doc.get("v") {
                return v.clone();
            }
        }
        Value::from(raw.to_string())
    }

    pub fn insert(table: &mut Table, path: &[String], value: figment::value::Value) {
        use figment::value::{Dict, Value};
        match path {
            [] => {}
            [last] => {
                table.insert(last.clone(), value);
            }
            [first, rest @ ..] => {
                let entry = table.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
                if let Value::Dict(_, dict) = entry {
                    let mut sub: Table = dict.clone().into_iter().collect();
                    insert(&mut sub, rest, value);
                    *entry = Value::from(sub.into_iter().collect::<Dict>());
                }
            }
        }
    }
}

/// Parser messages can span several lines (a source snippet with a caret): keep the first and
/// the last, which say where and what.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect();
    match lines.as_slice() {
        [] => String::new(),
        [only] => (*only).to_string(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

/// One line naming the key, where it came from, and what is wrong.
fn describe(e: figment::Error, file: Option<&Path>) -> String {
    let mut lines = Vec::new();
    for err in e {
        let key = if err.path.is_empty() { String::new() } else { err.path.join(".") };
        let source = match err.metadata.as_ref().map(|m| m.name.as_ref()) {
            Some(name) if name.contains("TOML") => {
                file.map(|f| format!("in {}", f.display())).unwrap_or_else(|| "in the configuration file".into())
            }
            Some(_) => "in GATEHOUSE_* environment variables".to_string(),
            None => match file {
                Some(f) => format!("in {}", f.display()),
                None => "in the configuration".into(),
            },
        };
        let what = match &err.kind {
            figment::error::Kind::UnknownField(name, _) => {
                // Depending on the provider, the path already ends with the unknown name.
                let full = if key.is_empty() {
                    name.clone()
                } else if key == *name || key.ends_with(&format!(".{name}")) {
                    key.clone()
                } else {
                    format!("{key}.{name}")
                };
                format!(
                    "unknown key `{full}` {source}; remove it or check its spelling against packaging/gatehouse.toml"
                )
            }
            other => {
                let other = one_line(&other.to_string());
                if key.is_empty() {
                    format!("{other} {source}")
                } else {
                    format!("key `{key}` {source}: {other}")
                }
            }
        };
        lines.push(what);
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_validate() {
        let c = Config::load(&Sources::default()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\nmax_body_bytes = 4096\n").unwrap();
        let sources = Sources {
            file: Some(file),
            env: env(&[
                ("GATEHOUSE_SERVER__LISTEN", "127.0.0.1:9443"),
                ("GATEHOUSE_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("GATEHOUSE_LOG__FORMAT", "json"),
                ("GATEHOUSE_DATA_DIR", "/var/lib/gatehouse"),
                ("GATEHOUSE_CONFIG", "/ignored"),
                ("OTHER", "x"),
            ]),
        };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(c.server.max_body_bytes, 4096);
        assert_eq!(c.server.trusted_proxies.len(), 1);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/gatehouse"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "[server]\nlisten_addr = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load(&Sources { file: Some(file.clone()), env: vec![] }).unwrap_err().to_string();
        assert!(err.contains("`server.listen_addr`"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let err = Config::load(&Sources { file: None, env: env(&[("GATEHOUSE_SERVER__LISTN", "x")]) })
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listn"), "{err}");
        assert!(err.contains("GATEHOUSE_"), "{err}");
    }

    #[test]
    fn bad_value_names_key() {
        let err = Config::load(&Sources { file: None, env: env(&[("GATEHOUSE_SERVER__LISTEN", "nowhere")]) })
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut c = Config::default();
        c.tls.enabled = false;
        assert!(c.validate().unwrap_err().to_string().contains("trusted_proxies"));
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.validate().unwrap();
        c.server.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("loopback"));
    }

    #[test]
    fn master_key_source_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config { data_dir: dir.path().join("data"), ..Config::default() };
        assert!(matches!(c.master_key_source(None), MasterKeySource::DataDir(_)));
        std::fs::write(dir.path().join("master_key"), "x").unwrap();
        assert!(matches!(c.master_key_source(Some(dir.path())), MasterKeySource::Credential(_)));
        c.vault.master_key_file = Some(dir.path().join("k"));
        assert!(matches!(c.master_key_source(Some(dir.path())), MasterKeySource::File(_)));
    }
}
