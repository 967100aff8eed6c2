//! `AppState`: what every request handler may use. Cheap to clone (one `Arc` inside).

use crate::clock::SharedClock;
use crate::crypto::SecretString;
use crate::db::Db;
use crate::metrics::Metrics;
use ipnet::IpNet;
use std::sync::Arc;

/// Settings the HTTP layer reads on every request.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub tls: bool,
    pub max_body_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub cors_allowed_origins: Vec<String>,
    /// Write one access line per request.
    pub access_log: bool,
    /// Extra header names that carry a workspace API key (`auth.api_key_headers`).
    pub api_key_headers: Vec<poem::http::HeaderName>,
}

#[derive(Debug)]
pub struct Inner {
    pub db: Db,
    pub clock: SharedClock,
    pub auditor: crate::domain::audit::Auditor,
    /// Sign-in settings, signing keys, the revocation view and the throttles.
    pub auth: crate::domain::auth::AuthService,
    /// Workspace, role and API key caches; batched API key use.
    pub workspaces: crate::domain::workspaces::WorkspaceService,
    /// The master keyring and the data keys (workspace secrets).
    pub vault: Arc<crate::domain::vault::Vault>,
    pub metrics: Arc<Metrics>,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub metrics_token: Option<SecretString>,
    /// Security monitoring: thresholds, the webhook, the delivery task's wake-up.
    pub monitoring: crate::domain::monitoring::MonitorService,
    pub http: HttpSettings,
    pub audit: AuditSettings,
    /// Single sign-on: identity providers and login settings.
    pub sso: crate::domain::sso::SsoService,
}

/// `[audit]` settings the running server applies.
#[derive(Debug)]
pub struct AuditSettings {
    /// Record `api.read` for every read.
    pub record_reads: bool,
    pub checkpoint_every_records: u64,
    pub checkpoint_interval_seconds: u64,
    /// How often the query index is brought up to the chain head.
    pub index_interval: std::time::Duration,
    pub retention: crate::domain::audit::integrity::Retention,
    /// When retention last ran (ms since the epoch): it runs at most once an hour.
    pub last_purge_ms: std::sync::atomic::AtomicI64,
}

impl AuditSettings {
    pub fn from_config(c: &crate::config::AuditConfig) -> Self {
        Self {
            record_reads: c.record_reads,
            checkpoint_every_records: c.checkpoint_every_records,
            checkpoint_interval_seconds: c.checkpoint_interval_seconds,
            index_interval: std::time::Duration::from_millis(c.index_interval_ms),
            retention: crate::domain::audit::integrity::Retention::from_config(&c.retention_days),
            last_purge_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
