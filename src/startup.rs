//! Wiring: [`prepare`] checks the configuration and opens (or creates) everything in the data
//! folder; [`Application::build`] binds the listener (port 0 works) and assembles the state the
//! same way for `gatehouse serve` and for the tests; [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, then drains in-flight requests for a bounded time.
//!
//! Bad input (unreadable config, missing certificate, wrong master key, corrupt or newer
//! database) is refused with one line naming the file and the fix, before anything is written.

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, MasterKeySource};
use crate::crypto::{password, random, MasterKey, PseudonymKey, SealingKey, SecretString};
use crate::db::{Db, DbOptions};
use crate::domain::accounts::{self, AdminChange, BOOTSTRAP_ADMIN_EMAIL};
use crate::domain::audit::integrity;
use crate::domain::audit::{self, Actor, Event, Outcome};
use crate::domain::auth::{AuthService, AuthSettings};
use crate::error::FatalError;
use crate::metrics::Metrics;
use crate::state::{AppState, HttpSettings, Inner};
use crate::tls;
use futures_util::StreamExt;
use poem::listener::{Acceptor, AcceptorExt, BoxAcceptor, Listener, RustlsCertificate, RustlsConfig, TcpListener};
use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Knobs the binary and the tests set differently.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub clock: SharedClock,
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    pub credentials_dir: Option<PathBuf>,
    /// Create `admin@localhost` with a one-time password when no admin exists.
    pub bootstrap_admin: bool,
    /// Hold the data folder's lock (the server, `init`, `migrate`, `restore`).
    pub exclusive: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            credentials_dir: crate::config::credentials_dir(),
            bootstrap_admin: true,
            exclusive: true,
        }
    }
}

/// Everything opened from the data folder.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub db: Db,
    pub auditor: crate::domain::audit::Auditor,
    pub sealing: SealingKey,
    pub pseudonyms: PseudonymKey,
    /// The master keyring and the data keys.
    pub vault: Arc<crate::domain::vault::Vault>,
    pub metrics: Arc<Metrics>,
    pub metrics_token: Option<SecretString>,
    /// The HMAC key of the alert webhook (`monitoring.webhook_secret_file` or the credential).
    pub webhook_secret: Option<SecretString>,
    /// Client secrets of the `[[sso.oidc]]` providers, by provider id.
    pub sso_secrets: std::collections::HashMap<String, SecretString>,
    /// CA certificates (PEM) of the `[[sso.oidc]]` providers that name a `ca_file`.
    pub sso_ca: std::collections::HashMap<String, String>,
    /// The `[[sso.saml]]` providers, each with its IdP metadata XML (read and checked).
    pub sso_saml: Vec<(crate::config::SamlProviderConfig, String)>,
    /// The one-time password of the admin created at this start, if any.
    pub bootstrap_password: Option<SecretString>,
    /// Held for the life of the process: `restore` refuses while it is taken.
    pub lock: Option<File>,
    /// The checked certificate and key the listener starts with (TLS on).
    pub tls_pair: Option<tls::PemPair>,
}

/// The lock file that marks a data folder in use by a running Gatehouse.
/// It sits beside the database, so that two data folders naming one `database.path` share it.
pub fn lock_path(config: &Config) -> PathBuf {
    let mut path = config.database_path().into_os_string();
    path.push(".lock");
    PathBuf::from(path)
}

/// Take the data folder's lock, or say who holds it.
pub fn take_lock(config: &Config) -> Result<File, FatalError> {
    let path = lock_path(config);
    lock_file(&path, || {
        format!(
            "data folder {} is in use by a running Gatehouse (lock {} is held); stop it first",
            config.data_dir.display(),
            path.display()
        )
    })
}

/// Open (creating) `path` and hold an exclusive lock on it; `held` says why when another process
/// has it.
pub fn lock_file(path: &Path, held: impl FnOnce() -> String) -> Result<File, FatalError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| FatalError::new(format!("cannot open lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(FatalError::new(held())),
    }
}

/// Read the master key; a systemd credential's permissions are systemd's to check.
pub fn load_master_key(source: &MasterKeySource) -> Result<MasterKey, FatalError> {
    crate::domain::vault::KeySource::active_of(source, PathBuf::new()).load_active().map_err(FatalError::from)
}

pub fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, FatalError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FatalError::new(format!("cannot read {what} {}: {e}; check the path and its permissions", path.display()))
    })?;
    let trimmed = text.trim().to_string();
    if trimmed.is_empty() {
        return Err(FatalError::new(format!("{what} {} is empty", path.display())));
    }
    Ok(SecretString::new(trimmed))
}

/// What the checks on existing files found, before anything is written.
#[derive(Debug)]
pub struct Preflight {
    /// The master key, when one exists already.
    pub existing_key: Option<MasterKey>,
    pub key_source: MasterKeySource,
    pub db_path: PathBuf,
    pub metrics_token: Option<SecretString>,
    pub webhook_secret: Option<SecretString>,
    /// The checked certificate and key, when TLS is on and they exist already.
    pub tls_pair: Option<tls::PemPair>,
    pub sso_secrets: std::collections::HashMap<String, SecretString>,
    pub sso_ca: std::collections::HashMap<String, String>,
    sso_saml: Vec<(crate::config::SamlProviderConfig, String)>,
}

/// Validate the configuration and check every file it names that exists already: certificate
/// and key, master key (and that it belongs to the database), database integrity and version,
/// metrics token. Writes nothing. `check-config` is exactly this.
pub fn preflight(config: &Config, creds: Option<&Path>) -> Result<Preflight, FatalError> {
    config.validate()?;
    let (cert_path, key_path, generated_tls) = config.tls_paths();
    // A generated pair with a file missing is made again by `prepare`, not refused.
    let tls_pair = if config.tls.enabled && (!generated_tls || (cert_path.exists() && key_path.exists())) {
        Some(tls::load_pair(&cert_path, &key_path)?)
    } else {
        None
    };
    let key_source = config.master_key_source(creds);
    let db_path = config.database_path();
    let db_exists = db_path.exists();
    if !db_exists {
        // A database outside the data folder needs its folder to exist already.
        let parent = db_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if parent != config.data_dir && !parent.is_dir() {
            return Err(FatalError::new(format!(
                "database.path {}: folder {} does not exist; create it or fix the path",
                db_path.display(),
                parent.display()
            )));
        }
    }
    let existing_key = match &key_source {
        MasterKeySource::DataDir(p) if !p.exists() => {
            if db_exists {
                return Err(FatalError::new(format!(
                    "database {} exists but its master key {} is missing; restore the key file (or set vault.master_key_file)",
                    db_path.display(),
                    p.display()
                )));
            }
            None
        }
        other => Some(load_master_key(other)?),
    };
    if db_exists {
        crate::db::inspect(&db_path)?;
        if let Some(key) = &existing_key {
            check_key_belongs(key, &key_source.describe(), &db_path)?;
        }
    }
    let metrics_token = match config.metrics_token_path(creds) {
        Some(p) => Some(read_secret_file(&p, "metrics token file")?),
        None => None,
    };
    let webhook_secret = match config.webhook_secret_path(creds) {
        Some(p) => Some(read_secret_file(&p, "webhook secret file")?),
        None => None,
    };
    if config.monitoring.webhook_url.is_some() {
        if webhook_secret.is_none() {
            return Err(FatalError::new(
                "monitoring.webhook_url is set but there is no webhook key: set monitoring.webhook_secret_file \
                 (or the systemd credential `webhook_secret`)",
            ));
        }
        // The CA file parses (the client is built again, the same way, at start).
        let ca = config.monitoring.webhook_ca_file.as_deref();
        crate::outbound::HttpClient::new(ca, Duration::from_secs(1), Duration::from_secs(1))
            .map_err(|e| FatalError::new(format!("monitoring.webhook_ca_file: {e}")))?;
    }
    let (sso_secrets, sso_ca) = sso_files(config, creds)?;
    let sso_saml = saml_metadata(config)?;
    Ok(Preflight {
        existing_key,
        key_source,
        db_path,
        metrics_token,
        webhook_secret,
        tls_pair,
        sso_secrets,
        sso_ca,
        sso_saml,
    })
}

/// Each `[[sso.oidc]]` provider's client secret and CA certificates, read from their files.
type SsoFiles = (std::collections::HashMap<String, SecretString>, std::collections::HashMap<String, String>);

fn sso_files(config: &Config, creds: Option<&Path>) -> Result<SsoFiles, FatalError> {
    let mut secrets = std::collections::HashMap::new();
    let mut cas = std::collections::HashMap::new();
    for p in &config.sso.oidc {
        match config.sso_secret_path(p, creds) {
            Some(path) => {
                secrets.insert(p.id.clone(), read_secret_file(&path, &format!("sso.oidc '{}' client secret file", p.id))?);
            }
            None => {
                return Err(FatalError::new(format!(
                    "sso.oidc '{}': no client secret: set client_secret_file (or the systemd credential `sso-{}-client-secret`)",
                    p.id, p.id
                )))
            }
        }
        if let Some(path) = &p.ca_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                FatalError::new(format!("sso.oidc '{}': cannot read ca_file {}: {e}", p.id, path.display()))
            })?;
            crate::outbound::HttpClient::with_ca_pem(
                Some(pem.as_bytes()),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .map_err(|e| FatalError::new(format!("sso.oidc '{}': ca_file {}: {e}", p.id, path.display())))?;
            cas.insert(p.id.clone(), pem);
        }
    }
    Ok((secrets, cas))
}

/// Each `[[sso.saml]]` provider's IdP metadata (inline or from its file), checked: an entity
/// id, an HTTP-Redirect sign-on URL and at least one signing certificate.
fn saml_metadata(config: &Config) -> Result<Vec<(crate::config::SamlProviderConfig, String)>, FatalError> {
    let mut out = Vec::new();
    for p in &config.sso.saml {
        let (xml, source) = match (&p.idp_metadata, &p.idp_metadata_file) {
            (Some(xml), _) => (xml.clone(), "idp_metadata".to_string()),
            (None, Some(path)) => (
                std::fs::read_to_string(path).map_err(|e| {
                    FatalError::new(format!(
                        "sso.saml '{}': cannot read idp_metadata_file {}: {e}",
                        p.id,
                        path.display()
                    ))
                })?,
                format!("idp_metadata_file {}", path.display()),
            ),
            (None, None) => {
                return Err(FatalError::new(format!("sso.saml '{}': set idp_metadata or idp_metadata_file", p.id)))
            }
        };
        crate::sso::saml::parse_idp_metadata(&xml)
            .map_err(|e| FatalError::new(format!("sso.saml '{}': {source}: {e}", p.id)))?;
        out.push((p.clone(), xml));
    }
    Ok(out)
}

/// Validate the configuration and open the data folder, creating what a first start needs.
/// Nothing is written until every check that can fail on existing files has passed.
pub async fn prepare(config: Config, opts: &BuildOptions) -> Result<Prepared, FatalError> {
    // 1. Checks on what already exists; nothing is written yet.
    let Preflight {
        existing_key,
        key_source,
        db_path,
        metrics_token,
        webhook_secret,
        mut tls_pair,
        sso_secrets,
        sso_ca,
        sso_saml,
    } = preflight(&config, opts.credentials_dir.as_deref())?;
    let (cert_path, key_path, generated_tls) = config.tls_paths();

    // 2. Create what a first start needs.
    if !config.data_dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&config.data_dir).map_err(|e| {
            FatalError::new(format!(
                "cannot create data folder {}: {e}; choose another --data-dir",
                config.data_dir.display()
            ))
        })?;
    }
    let lock = if opts.exclusive { Some(take_lock(&config)?) } else { None };
    let master_key = match (existing_key, &key_source) {
        (Some(k), _) => k,
        (None, MasterKeySource::DataDir(path)) => {
            let k = MasterKey::generate(path)?;
            tracing::info!(path = %path.display(), "generated a new master key; back it up with the database");
            k
        }
        (None, other) => return Err(FatalError::new(format!("no master key at {}", other.describe()))),
    };
    if config.tls.enabled && generated_tls && tls::ensure_self_signed(&cert_path, &key_path)? {
        tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate for localhost");
        tls_pair = Some(tls::load_pair(&cert_path, &key_path)?);
    }
    let metrics = Arc::new(Metrics::new());
    let db_options = DbOptions {
        path: db_path.clone(),
        busy_timeout: Duration::from_millis(config.database.busy_timeout_ms),
        read_connections: config.database.read_connections,
    };
    let db_metrics = metrics.clone();
    let db = crate::telemetry::spawn_blocking_in_span(move || Db::open(&db_options, Some(db_metrics))).await??;

    // 3. A new database records which master key it belongs to (checked at every later start).
    let check = master_key.check_value()?;
    let check_id = format!("{KEY_CHECK}:{}", master_key.id()?);
    db.write(move |tx| -> Result<(), crate::db::DbError> {
        if tx.meta_get(KEY_CHECK)?.is_none() {
            tx.meta_set(KEY_CHECK, &check)?;
            tx.meta_set(&check_id, &check)?;
        }
        Ok(())
    })
    .await?;
    // 4. The vault: the master keyring (the active key and older ones kept for data keys that a
    // rotation has not re-wrapped yet) and the system data keys.
    drop(master_key);
    let source =
        crate::domain::vault::KeySource::active_of(&key_source, crate::domain::vault::previous_dir(&config.data_dir));
    let vault = Arc::new(crate::domain::vault::Vault::load(
        source,
        config.vault.data_key_max_seals,
        config.vault.max_secret_bytes,
    )?);
    let now_ms = crate::domain::unix_ms(opts.clock.now());
    let v = vault.clone();
    let (sealing, audit_key, pseudonyms) = db.write(move |tx| v.system_keys(tx, now_ms)).await?;
    let auditor = crate::domain::audit::Auditor::new(audit_key, config.audit.require, Some(metrics.clone()));
    let mut prepared = Prepared {
        config,
        db,
        auditor,
        sealing,
        pseudonyms,
        vault,
        metrics,
        metrics_token,
        webhook_secret,
        sso_secrets,
        sso_ca,
        sso_saml,
        bootstrap_password: None,
        lock,
        tls_pair,
    };
    if opts.bootstrap_admin {
        prepared.bootstrap_password = bootstrap_admin(&prepared, &opts.clock).await?;
    }
    Ok(prepared)
}

/// The `meta` entry proving which master key a database belongs to.
pub use crate::domain::vault::KEY_CHECK;

/// Refuse a master key that is not the one `db_path` was created with (read-only check).
pub fn check_key_belongs(key: &MasterKey, key_place: &str, db_path: &Path) -> Result<(), FatalError> {
    let stored = crate::db::read_meta(db_path, KEY_CHECK)?;
    // A key a rotation has started moving to (`keys rotate-master` records its check value
    // before it swaps the key files) belongs too.
    let by_id = crate::db::read_meta(db_path, &format!("{KEY_CHECK}:{}", key.id()?))?;
    if let Some(v) = by_id {
        if key.matches_check_value(&v)? {
            return Ok(());
        }
    }
    match stored {
        Some(stored) if !key.matches_check_value(&stored)? => Err(FatalError::new(format!(
            "master key {} does not belong to database {}; use the key file created with this database",
            key_place,
            db_path.display()
        ))),
        _ => Ok(()),
    }
}

/// Hash a password on the blocking pool.
pub async fn hash_password(password: SecretString, config: &Config) -> Result<String, FatalError> {
    let policy = AuthSettings::from_config(&config.auth).password;
    crate::telemetry::spawn_blocking_in_span(move || password::hash(&password, policy)).await?.map_err(FatalError::from)
}

/// Create `admin@localhost` with a random password when no platform admin exists.
async fn bootstrap_admin(p: &Prepared, clock: &SharedClock) -> Result<Option<SecretString>, FatalError> {
    let has_admin = p.db.read(accounts::has_admin).await?;
    if has_admin {
        return Ok(None);
    }
    let password = SecretString::new(random::password(24));
    let hash = hash_password(password.clone(), &p.config).await?;
    let key = p.auditor.clone();
    let now = clock.now();
    p.db.write(move |tx| {
        if accounts::has_admin(tx)? {
            return Ok(None);
        }
        accounts::set_admin(tx, &key, now, Actor::System, BOOTSTRAP_ADMIN_EMAIL, &hash).map(Some)
    })
    .await
    .map_err(FatalError::from)
    .map(|change| match change {
        Some(AdminChange::Created { .. }) => Some(password),
        _ => None,
    })
}

/// A running-to-be server: bound, with its state assembled.
pub struct Application {
    local_addr: SocketAddr,
    tls: bool,
    state: AppState,
    acceptor: BoxAcceptor,
    tls_reload: Option<mpsc::UnboundedSender<RustlsConfig>>,
    tls_paths: (PathBuf, PathBuf),
    bootstrap_password: Option<SecretString>,
    grace: Duration,
    /// One per `[[audit.syslog]]` collector, started by [`Application::run_until_stopped`].
    forwarders: Vec<crate::domain::siem::Forwarder>,
    /// The newest audit record before this start: the security log writes the ones after it.
    security_log_after: i64,
    _lock: Option<File>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).field("tls", &self.tls).finish()
    }
}

fn rustls_config(pair: &tls::PemPair) -> RustlsConfig {
    RustlsConfig::new().fallback(RustlsCertificate::new().cert(pair.cert_pem.clone()).key(pair.key_pem.clone()))
}

impl Application {
    /// Prepare the data folder and bind the listener (`server.listen`; port 0 picks a free port).
    /// The bootstrap admin is created only once the address is bound, so that a start refused
    /// for a busy port does not create an admin whose password nobody saw.
    pub async fn build(config: Config, opts: BuildOptions) -> Result<Self, FatalError> {
        let prepared = prepare(config, &BuildOptions { bootstrap_admin: false, ..opts.clone() }).await?;
        Self::from_prepared(prepared, opts).await
    }

    async fn from_prepared(p: Prepared, opts: BuildOptions) -> Result<Self, FatalError> {
        let config = &p.config;
        let listen = config.server.listen;
        let bind_error = |e: std::io::Error| {
            FatalError::new(format!(
                "cannot listen on {listen}: {e}; choose another address with --listen or server.listen"
            ))
        };
        let (cert_path, key_path, _) = config.tls_paths();
        let (acceptor, tls_reload) = if config.tls.enabled {
            let pair = p.tls_pair.as_ref().ok_or_else(|| FatalError::new("TLS is on but no certificate was loaded"))?;
            tls::install_provider();
            let (tx, rx) = mpsc::unbounded_channel::<RustlsConfig>();
            tx.send(rustls_config(pair)).map_err(|_| FatalError::new("TLS reload channel closed"))?;
            let stream = tokio_stream_from(rx);
            let acceptor =
                ConfigFirst(TcpListener::bind(listen)).rustls(stream).into_acceptor().await.map_err(bind_error)?;
            (acceptor.boxed(), Some(tx))
        } else {
            let acceptor = ConfigFirst(TcpListener::bind(listen)).into_acceptor().await.map_err(bind_error)?;
            (acceptor.boxed(), None)
        };
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| FatalError::new(format!("cannot learn the bound address of {listen}")))?;
        // Checked before the bootstrap admin is made (a CA file that does not load stops the
        // start); started with the server.
        let forwarders = crate::domain::siem::forwarders(&config.audit.syslog, &p.db, &p.metrics)
            .map_err(|e| FatalError::new(e.to_string()))?;
        // The security log writes the records from here on (this start's included).
        let security_log_after = p.db.read(|tx| tx.audit_head()).await?.map(|h| h.seq).unwrap_or(0);
        let bootstrap_password = if opts.bootstrap_admin { bootstrap_admin(&p, &opts.clock).await? } else { None };
        let settings = AuthSettings::from_config(&config.auth);
        let hashes = config.auth.password.max_concurrent_hashes;
        let auth = AuthService::new(settings, p.sealing.clone(), p.pseudonyms.clone(), hashes)?;
        let monitoring = crate::domain::monitoring::MonitorService::new(&config.monitoring, p.webhook_secret.clone())
            .map_err(FatalError::new)?;
        let public_url = config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}", if config.tls.enabled { "https" } else { "http" }, local_addr));
        let sso = crate::domain::sso::SsoService::new(&config.sso, public_url);
        let (sso_secrets, sso_ca, sso_saml) = (p.sso_secrets, p.sso_ca, p.sso_saml);
        let state = AppState::new(Inner {
            sso,
            db: p.db,
            clock: opts.clock.clone(),
            auditor: p.auditor,
            audit: crate::state::AuditSettings::from_config(&p.config.audit),
            auth,
            workspaces: crate::domain::workspaces::WorkspaceService::default(),
            vault: p.vault.clone(),
            metrics: p.metrics,
            metrics_token: p.metrics_token,
            monitoring,
            http: HttpSettings {
                tls: config.tls.enabled,
                max_body_bytes: config.server.max_body_bytes,
                trusted_proxies: config.server.trusted_proxies.clone(),
                cors_allowed_origins: config.server.cors_allowed_origins.clone(),
                access_log: config.log.access,
                api_key_headers: config
                    .auth
                    .api_key_headers
                    .iter()
                    .filter_map(|h| poem::http::HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect(),
            },
        });
        // Signing keys ready and the revocation view loaded before the first request.
        maintain_keys(&state).await?;
        crate::domain::sso::sync_config(&state, &config.sso.oidc, sso_secrets, sso_ca, &sso_saml)
            .await
            .map_err(|e| FatalError::new(format!("cannot load the SSO providers: {e}")))?;
        let since = crate::domain::unix_ms(state.clock.now()) - state.auth.settings.life.access_ms - 60_000;
        let st = state.clone();
        state.db.read(move |tx| st.auth.revocations.load(tx, since)).await?;
        // The monitor's first start begins at the head of the audit log, before any request.
        if state.monitoring.enabled {
            crate::domain::monitoring::start_cursor(&state).await?;
        }
        // Recorded once bound: connections wait in the backlog until the server runs.
        record_system_event(
            &state,
            Event::new("server.started", Actor::System).details(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "listen": local_addr.to_string(),
                "tls": config.tls.enabled,
            })),
        )
        .await?;
        Ok(Self {
            local_addr,
            tls: config.tls.enabled,
            state,
            acceptor,
            tls_reload,
            tls_paths: (cert_path, key_path),
            bootstrap_password,
            grace: Duration::from_secs(config.server.shutdown_grace_seconds),
            forwarders,
            security_log_after,
            _lock: p.lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:PORT` (or `http://` when TLS is off).
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.local_addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The one-time password of the admin created at this start. Taken once.
    pub fn take_bootstrap_password(&mut self) -> Option<SecretString> {
        self.bootstrap_password.take()
    }

    /// A handle that re-reads the certificate and key (SIGHUP).
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader { sender: self.tls_reload.clone(), paths: self.tls_paths.clone(), state: self.state.clone() }
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight requests finish
    /// (bounded by `server.shutdown_grace_seconds`) and record `server.stopped`. The syslog
    /// forwarders and the security log run beside the server and stop last.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), FatalError> {
        let state = self.state.clone();
        let app = crate::http::app(state.clone());
        release_startup_memory();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let housekeeping = tokio::spawn(housekeeping(state.clone(), stop_rx.clone()));
        let (audit_stop_tx, audit_stop_rx) = tokio::sync::watch::channel(false);
        let mut audit_tasks = vec![tokio::spawn(crate::domain::siem::log_security_events(
            state.db.clone(),
            self.security_log_after,
            audit_stop_rx.clone(),
        ))];
        for forwarder in self.forwarders {
            audit_tasks.push(tokio::spawn(forwarder.run(audit_stop_rx.clone())));
        }
        audit_tasks.push(tokio::spawn(crate::domain::audit::indexer::run(
            state.db.clone(),
            state.audit.index_interval,
            audit_stop_rx.clone(),
        )));
        let monitor = tokio::spawn(crate::domain::monitoring::run_monitor(state.clone(), stop_rx.clone()));
        let delivery = tokio::spawn(crate::domain::monitoring::run_delivery(state.clone(), stop_rx));
        let result = poem::Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(self.grace))
            .await;
        let _ = stop_tx.send(true);
        let _ = housekeeping.await;
        let _ = monitor.await;
        let _ = delivery.await;
        if let Err(e) = crate::domain::auth::flush_token_uses(&state).await {
            tracing::error!(error = %e, "could not record the last use of tokens");
        }
        if let Err(e) = crate::domain::workspaces::flush_key_uses(&state).await {
            tracing::error!(error = %e, "could not record the last use of API keys");
        }
        let stopped = record_system_event(&state, Event::new("server.stopped", Actor::System)).await;
        let now = state.clock.now();
        if let Err(e) = integrity::checkpoint_now(&state.db, &state.vault, now, integrity::Reason::Shutdown).await {
            tracing::error!(error = %e, "could not write the closing audit checkpoint");
        }
        let _ = audit_stop_tx.send(true);
        for task in audit_tasks {
            let _ = task.await;
        }
        stopped?;
        result.map_err(|e| FatalError::new(format!("server error: {e}")))
    }
}

/// A listener whose first `accept` yields once before accepting. poem's TLS acceptor races its
/// certificate stream against `accept` with an unbiased `select!`: a connection already waiting
/// at start could be picked before the first certificate is loaded and dropped. Yielding on the
/// first call lets the certificate win. Each accepted connection gets TCP_NODELAY.
struct ConfigFirst<L>(L);

struct ConfigFirstAcceptor<A> {
    inner: A,
    first: bool,
}

impl<L: Listener> Listener for ConfigFirst<L>
where
    <L::Acceptor as Acceptor>::Io: NoDelay,
{
    type Acceptor = ConfigFirstAcceptor<L::Acceptor>;

    async fn into_acceptor(self) -> std::io::Result<Self::Acceptor> {
        Ok(ConfigFirstAcceptor { inner: self.0.into_acceptor().await?, first: true })
    }
}

/// A stream whose Nagle delay can be turned off.
trait NoDelay {
    fn no_delay(&self);
}

impl NoDelay for tokio::net::TcpStream {
    fn no_delay(&self) {
        let _ = self.set_nodelay(true);
    }
}

impl<A: Acceptor> Acceptor for ConfigFirstAcceptor<A>
where
    A::Io: NoDelay,
{
    type Io = A::Io;

    fn local_addr(&self) -> Vec<poem::web::LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, poem::web::LocalAddr, poem::web::RemoteAddr, poem::http::uri::Scheme)> {
        if self.first {
            self.first = false;
            tokio::task::yield_now().await;
        }
        let (io, local, remote, scheme) = self.inner.accept().await?;
        // Without TCP_NODELAY, the end of a response larger than a segment can wait for the
        // client's delayed ACK (40 ms on Linux).
        io.no_delay();
        Ok((io, local, remote, scheme))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<RustlsConfig>,
) -> impl futures_util::Stream<Item = RustlsConfig> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Move the signing-key schedule forward and load the key ring.
pub async fn maintain_keys(state: &AppState) -> Result<(), FatalError> {
    let now = state.clock.now();
    let st = state.clone();
    let rows = state
        .db
        .write(move |tx| crate::domain::keys::maintain(tx, &st.auth.sealing, &st.auditor, &st.auth.settings.keys, now))
        .await?;
    state.auth.keys.load(&rows, &state.auth.sealing, crate::domain::unix_ms(now))?;
    Ok(())
}

/// One round of background work: key schedule, expired anonymous users and sessions, expired SSO
/// logins and codes, batched token use times, old entries of the revocation view. Errors are logged; the next round retries.
pub async fn housekeeping_round(state: &AppState) {
    if let Err(e) = maintain_keys(state).await {
        tracing::error!(error = %e, "signing key maintenance failed");
    }
    match crate::domain::users::purge_anonymous(state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "purged expired anonymous users"),
        Err(e) => tracing::error!(error = %e, "purging anonymous users failed"),
    }
    if let Err(e) = crate::domain::sso::purge_expired(state).await {
        tracing::error!(error = %e, "purging expired SSO logins failed");
    }
    if let Err(e) = crate::domain::auth::flush_token_uses(state).await {
        tracing::error!(error = %e, "recording token use failed");
    }
    if let Err(e) = crate::domain::workspaces::flush_key_uses(state).await {
        tracing::error!(error = %e, "recording API key use failed");
    }
    // Master keys added or retired by the CLI; secrets of a replaced data key re-sealed.
    if let Err(e) = state.vault.refresh() {
        tracing::error!(error = %e, "re-reading the master keys failed");
    }
    let now_ms = crate::domain::unix_ms(state.clock.now());
    match crate::domain::vault::reseal_batch(&state.db, &state.vault, 500, now_ms).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(resealed = n, "re-sealed secrets under their workspace's new data key"),
        Err(e) => tracing::error!(error = %e, "re-sealing secrets failed"),
    }
    let horizon = crate::domain::unix_ms(state.clock.now()) - state.auth.settings.life.access_ms - 60_000;
    state.auth.revocations.prune(horizon);
    audit_maintenance(state).await;
}

/// Retention (at most once an hour) and the signed checkpoint when one is due.
async fn audit_maintenance(state: &AppState) {
    use std::sync::atomic::Ordering;
    let a = &state.audit;
    let now = state.clock.now();
    let now_ms = crate::domain::unix_ms(now);
    let last = a.last_purge_ms.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) >= 3_600_000 {
        a.last_purge_ms.store(now_ms, Ordering::Relaxed);
        match integrity::purge(&state.db, &state.auditor, &state.vault, &a.retention, now, 20).await {
            Ok(r) if r.removed > 0 => {
                tracing::info!(removed = r.removed, base_seq = r.base_seq, "purged audit records past their retention")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit retention failed"),
        }
    }
    let due = integrity::checkpoint_if_due(
        &state.db,
        &state.vault,
        now,
        a.checkpoint_every_records,
        a.checkpoint_interval_seconds,
    )
    .await;
    if let Err(e) = due {
        tracing::error!(error = %e, "could not write an audit checkpoint");
    }
}

/// Seconds between housekeeping rounds.
const HOUSEKEEPING_SECONDS: u64 = 15;

async fn housekeeping(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(HOUSEKEEPING_SECONDS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => housekeeping_round(&state).await,
            _ = stop.changed() => return,
        }
    }
}

/// `gatehouse keys rotate`: publish a new signing key now. Returns `(kid, alg, activates_at_ms)`.
pub async fn rotate_signing_key(p: &Prepared, clock: &SharedClock) -> Result<(String, String, i64), FatalError> {
    let settings = AuthSettings::from_config(&p.config.auth);
    let (sealing, key) = (p.sealing.clone(), p.auditor.clone());
    let now = clock.now();
    let alg = settings.keys.alg.as_str().to_string();
    let (kid, at) =
        p.db.write(move |tx| crate::domain::keys::rotate(tx, &sealing, &key, &settings.keys, Actor::Operator, now))
            .await?;
    Ok((kid, alg, at))
}

/// Write one system event in its own transaction.
pub async fn record_system_event(state: &AppState, event: Event) -> Result<(), FatalError> {
    audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await.map(|_| ()).map_err(FatalError::from)
}

/// Re-reads the TLS certificate and key and swaps them into the running listener; existing
/// connections keep theirs. A pair that does not load is refused and audited
/// (`config.rejected`); the server keeps the previous one.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    sender: Option<mpsc::UnboundedSender<RustlsConfig>>,
    paths: (PathBuf, PathBuf),
    state: AppState,
}

impl TlsReloader {
    pub async fn reload(&self) -> Result<(), FatalError> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        match tls::load_pair(&self.paths.0, &self.paths.1) {
            Ok(pair) => {
                sender.send(rustls_config(&pair)).map_err(|_| FatalError::new("the listener has stopped"))?;
                tracing::info!(cert = %self.paths.0.display(), "TLS certificate reloaded");
                record_system_event(
                    &self.state,
                    Event::new("tls.certificate.reloaded", Actor::System)
                        .details(serde_json::json!({ "cert_file": self.paths.0.display().to_string() })),
                )
                .await
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload refused; keeping the current certificate");
                record_system_event(
                    &self.state,
                    Event::new("config.rejected", Actor::System)
                        .outcome(Outcome::Failure)
                        .details(serde_json::json!({ "what": "tls", "reason": e.to_string() })),
                )
                .await?;
                Err(FatalError::new(e.to_string()))
            }
        }
    }
}

/// Hand the memory start-up used and freed (the OpenAPI document and the routes built from it,
/// migrations, the first start's password hash) back to the system. glibc keeps freed heap pages
/// mapped; after a start they are a few megabytes of the idle footprint (3.5 MB measured on a
/// fresh data folder).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_startup_memory() {
    // SAFETY: `malloc_trim` takes an integer, touches only the allocator's own free lists (under
    // its locks), and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_startup_memory() {}
