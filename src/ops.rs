//! The operator's commands behind the CLI: `serve`, `init`, `check-config`, `migrate`,
//! `openapi`, `backup`, `restore`, `users add-admin`, `audit verify`. Each returns an exit code:
//! 0 success, 1 failure, 2 configuration error. Failures print one line naming the file and
//! the fix.

use crate::cli::{AuditCommand, Cli, Command, KeysCommand, UsersCommand, VaultCommand};
use crate::config::{Config, ConfigError, Sources};
use crate::crypto::SecretString;
use crate::domain::accounts::{self, AdminChange};
use crate::domain::audit::{self, Actor, Event};
use crate::error::FatalError;
use crate::startup::{self, Application, BuildOptions};
use crate::telemetry;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::path::PathBuf;

/// Run a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    if let Command::Openapi = cli.command {
        println!("{}", crate::http::openapi_json());
        return 0;
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: configuration rejected: {e}");
            return 2;
        }
    };
    let _log_guard = telemetry::init(config.log.format, &config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(64).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(cli, config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            1
        }
    }
}

/// Defaults → file → environment → flags.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(&Sources::from_process(cli.config.clone()))?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    if let Command::Serve { listen: Some(listen) } = &cli.command {
        config.server.listen = *listen;
    }
    Ok(config)
}

async fn dispatch(cli: Cli, config: Config) -> Result<(), FatalError> {
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Init => init(config).await,
        Command::CheckConfig => check_config(config),
        Command::Migrate => migrate(config).await,
        Command::Openapi => Ok(()),
        Command::Backup { file } => backup(config, &file).await,
        Command::Restore { file } => restore(config, &file),
        Command::Users { command: UsersCommand::AddAdmin { email, password_file } } => {
            add_admin(config, &email, &password_file).await
        }
        Command::Audit { command: AuditCommand::Verify { anchors } } => audit_verify(config, &anchors).await,
        Command::Keys { command: KeysCommand::Rotate } => keys_rotate(config).await,
        Command::Keys { command: KeysCommand::RotateMaster } => keys_rotate_master(config).await,
        Command::Keys { command: KeysCommand::Retire { id } } => keys_retire(config, &id).await,
        Command::Vault { command: VaultCommand::Verify } => vault_verify(config).await,
    }
}

fn print_bootstrap_password(password: &SecretString) {
    // Printed once, on the terminal only: never through the logger.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n  A platform admin was created.\n    email:    {}\n    password: {}\n  This password is shown once and stored nowhere. Change it after signing in,\n  or reset it with `gatehouse users add-admin`.\n",
        accounts::BOOTSTRAP_ADMIN_EMAIL,
        password.expose()
    );
    let _ = out.flush();
}

async fn serve(config: Config) -> Result<(), FatalError> {
    // Under systemd, standard output goes to the journal: a one-time password printed there
    // would be written down. The operator creates the first admin with `users add-admin`.
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some() && !std::io::stdout().is_terminal();
    let opts = BuildOptions { bootstrap_admin: !under_systemd, ..BuildOptions::default() };
    let mut app = Application::build(config, opts).await?;
    if let Some(password) = app.take_bootstrap_password() {
        print_bootstrap_password(&password);
    }
    if under_systemd {
        let has_admin = app.state().db.read(crate::domain::accounts::has_admin).await?;
        if !has_admin {
            tracing::warn!(
                "no platform admin exists: create one with `gatehouse users add-admin --email E --password-file F`"
            );
        }
    }
    // The signal handlers are in place before anyone is told the server is up: a SIGTERM sent
    // right after "listening" (or READY=1) would otherwise meet the default action and kill the
    // process without its drain.
    let signals = Signals::install().map_err(|e| FatalError::new(format!("cannot install signal handlers: {e}")))?;
    let url = app.base_url();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Gatehouse {} listening on {url}\nPlayground: {url}/docs", env!("CARGO_PKG_VERSION"));
        let _ = out.flush();
    }
    tracing::info!(%url, "listening");
    let reloader = app.tls_reloader();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        watch_signals(signals, reloader, stop_tx).await;
    });
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let shutdown = async move {
        let _ = stop_rx.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    };
    app.run_until_stopped(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The signals `serve` handles, registered with the runtime.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// SIGHUP reloads the TLS certificate; SIGTERM and SIGINT stop the server.
async fn watch_signals(signals: Signals, reloader: startup::TlsReloader, stop: tokio::sync::oneshot::Sender<()>) {
    let Signals { mut hup, mut term, mut int } = signals;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                let _ = reloader.reload().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = stop.send(());
}

async fn init(config: Config) -> Result<(), FatalError> {
    let dir = config.data_dir.clone();
    let prepared = startup::prepare(config, &BuildOptions::default()).await?;
    if let Some(password) = &prepared.bootstrap_password {
        print_bootstrap_password(password);
    }
    println!("Data folder {} is ready.", dir.display());
    Ok(())
}

fn check_config(config: Config) -> Result<(), FatalError> {
    let checked = startup::preflight(&config, crate::config::credentials_dir().as_deref())
        .map_err(|e| FatalError::new(format!("configuration rejected: {e}")))?;
    let db = checked.db_path;
    println!(
        "configuration OK: listen {} ({}), data folder {}, database {}",
        config.server.listen,
        if config.tls.enabled { "TLS" } else { "plain HTTP, loopback only" },
        config.data_dir.display(),
        db.display()
    );
    Ok(())
}

async fn migrate(config: Config) -> Result<(), FatalError> {
    let opts = BuildOptions { bootstrap_admin: false, ..BuildOptions::default() };
    let prepared = startup::prepare(config, &opts).await?;
    println!("database {} is at schema version {}", prepared.db.path(), crate::db::migrate::latest_version());
    Ok(())
}

fn require_database(config: &Config) -> Result<(), FatalError> {
    let db = config.database_path();
    if db.exists() {
        Ok(())
    } else {
        Err(FatalError::new(format!(
            "no database at {}; check --data-dir (or database.path), or run `gatehouse init`",
            db.display()
        )))
    }
}

async fn backup(config: Config, dest: &Path) -> Result<(), FatalError> {
    require_database(&config)?;
    if dest.exists() {
        return Err(FatalError::new(format!("{} already exists; choose a new file name", dest.display())));
    }
    let src = config.database_path();
    crate::db::backup_file(&src, dest).map_err(|e| FatalError::new(format!("backup failed: {e}")))?;
    let version = crate::db::inspect(dest).map_err(|e| FatalError::new(format!("backup check failed: {e}")))?;
    println!(
        "backed up {} to {} (schema {version}); the master key is not in the backup: keep a copy of it too",
        src.display(),
        dest.display()
    );
    Ok(())
}

fn restore(config: Config, src: &Path) -> Result<(), FatalError> {
    let version = crate::db::inspect(src).map_err(|e| FatalError::new(format!("refusing to restore: {e}")))?;
    if !config.data_dir.exists() {
        return Err(FatalError::new(format!(
            "data folder {} does not exist; create it with `gatehouse init` (and put the master key back) first",
            config.data_dir.display()
        )));
    }
    let _lock = startup::take_lock(&config)?;
    let creds = crate::config::credentials_dir();
    let source = config.master_key_source(creds.as_deref());
    let key = startup::load_master_key(&source)?;
    startup::check_key_belongs(&key, &source.describe(), src)
        .map_err(|e| FatalError::new(format!("refusing to restore: {e}; put that backup's key back first")))?;
    let dest = config.database_path();
    crate::db::restore_file(src, &dest).map_err(|e| FatalError::new(format!("restore failed: {e}")))?;
    println!("restored {} into {} (schema {version})", src.display(), dest.display());
    Ok(())
}

fn read_password(path: &Path) -> Result<SecretString, FatalError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| FatalError::new(format!("cannot read the password from standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| FatalError::new(format!("cannot read password file {}: {e}", path.display())))?;
    }
    let password = SecretString::new(text.trim_end_matches(['\r', '\n']).to_string());
    Ok(password)
}

async fn add_admin(config: Config, email: &str, password_file: &Path) -> Result<(), FatalError> {
    let email = accounts::normalize_email(email)?;
    let password = read_password(password_file)?;
    accounts::check_new_password(password.expose(), &email)?;
    let opts = BuildOptions { bootstrap_admin: false, exclusive: false, ..BuildOptions::default() };
    let prepared = startup::prepare(config, &opts).await?;
    let hash = startup::hash_password(password, &prepared.config).await?;
    let key = prepared.auditor.clone();
    let now = opts.clock.now();
    let mail = email.clone();
    let change = prepared.db.write(move |tx| accounts::set_admin(tx, &key, now, Actor::Operator, &mail, &hash)).await?;
    match change {
        AdminChange::Created { id } => println!("created platform admin {email} ({id})"),
        AdminChange::PasswordReset { id } => println!("reset the password of {email} ({id}); it is a platform admin"),
    }
    Ok(())
}

async fn keys_rotate(config: Config) -> Result<(), FatalError> {
    require_database(&config)?;
    let opts = BuildOptions { bootstrap_admin: false, exclusive: false, ..BuildOptions::default() };
    let prepared = startup::prepare(config, &opts).await?;
    let (kid, alg, at) = startup::rotate_signing_key(&prepared, &opts.clock).await?;
    let when = time::OffsetDateTime::from_unix_timestamp(at / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| at.to_string());
    println!("published signing key {kid} ({alg}); it signs from {when}; running servers pick it up within 15 seconds");
    Ok(())
}

async fn audit_verify(config: Config, anchor_files: &[PathBuf]) -> Result<(), FatalError> {
    let mut anchors = Vec::new();
    for file in anchor_files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| FatalError::new(format!("cannot read anchor {}: {e}", file.display())))?;
        let anchor = audit::query::parse_anchor(&text)
            .map_err(|e| FatalError::new(format!("anchor {}: {e}", file.display())))?;
        anchors.push(anchor);
    }
    require_database(&config)?;
    let opts = BuildOptions { bootstrap_admin: false, exclusive: false, ..BuildOptions::default() };
    let prepared = startup::prepare(config, &opts).await?;
    let report = audit::verify(&prepared.db, &prepared.auditor, &prepared.vault, anchors).await?;
    match report.first_broken {
        None => {
            let checkpoint = match report.last_checkpoint {
                Some((id, seq)) => format!("; the latest checkpoint ({id}) covers up to record {seq}"),
                None => "; no checkpoint yet".to_string(),
            };
            println!(
                "audit chain OK: {} records verified, {} purged by retention, {} signed checkpoints{checkpoint}",
                report.records, report.purged, report.checkpoints
            );
            Ok(())
        }
        Some(seq) => Err(FatalError::new(format!(
            "audit chain broken at sequence {seq}: {} ({} records verified before it)",
            report.reason.unwrap_or_default(),
            report.records
        ))),
    }
}

/// Open the database for an operator command that works beside a running server.
async fn prepare_shared(config: Config) -> Result<(startup::Prepared, BuildOptions), FatalError> {
    require_database(&config)?;
    let opts = BuildOptions { bootstrap_admin: false, exclusive: false, ..BuildOptions::default() };
    let prepared = startup::prepare(config, &opts).await?;
    Ok((prepared, opts))
}

/// One master-key operation at a time (`rotate-master`, `retire`): a lock beside the older keys.
fn take_key_lock(dir: &Path) -> Result<std::fs::File, FatalError> {
    let path = dir.join(".lock");
    startup::lock_file(&path, || {
        format!("another master-key operation holds {}; wait for it to finish", path.display())
    })
}

/// Write `key` over `path` atomically: a new file beside it, synced, renamed over it, and the
/// folder synced, so a crash leaves either the old key or the new one, never a torn file.
fn replace_key_file(key: &crate::crypto::MasterKey, path: &Path) -> Result<(), FatalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    key.write_new(&tmp)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| FatalError::new(format!("cannot replace master key file {}: {e}", path.display())))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

async fn keys_rotate_master(config: Config) -> Result<(), FatalError> {
    use crate::crypto::MasterKey;
    use crate::domain::vault::{self, ROTATION_TARGET};
    let creds = crate::config::credentials_dir();
    let configured = config.master_key_source(creds.as_deref());
    if !configured.replaceable() {
        return Err(FatalError::new(format!(
            "the active master key is {}, which Gatehouse cannot replace. Copy it to a file of mode 0600, \
             point vault.master_key_file at that file (GATEHOUSE_VAULT__MASTER_KEY_FILE), run this command \
             again, then install the rotated file as your credential; older keys stay in {}",
            configured.describe(),
            vault::previous_dir(&config.data_dir).display()
        )));
    }
    let batch = config.vault.rewrap_batch_size;
    let (prepared, opts) = prepare_shared(config).await?;
    let (db, v) = (&prepared.db, prepared.vault.clone());
    let source = v.source().clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&source.previous_dir)
        .map_err(|e| FatalError::new(format!("cannot create {}: {e}", source.previous_dir.display())))?;
    let _lock = take_key_lock(&source.previous_dir)?;
    let old_id = v.active_id();
    let target = db.read(|tx| tx.meta_get(ROTATION_TARGET)).await?;
    let new_id = match target {
        Some(id) => {
            println!("resuming the rotation to master key {id}");
            id
        }
        None => {
            // 1. The new key is on disk (beside the older ones) before anything refers to it.
            let new = MasterKey::generate_in_memory();
            let id = new.id()?;
            new.write_new(&source.previous_path(&id))?;
            // 2. The database learns the new key's check value and that a rotation runs.
            let (check_key, check) = (format!("{}:{id}", startup::KEY_CHECK), new.check_value()?);
            let (audit_key, now, nid, from) = (prepared.auditor.clone(), opts.clock.now(), id.clone(), old_id.clone());
            db.write(move |tx| {
                tx.meta_set(&check_key, &check)?;
                tx.meta_set(ROTATION_TARGET, &nid)?;
                let event = Event::new("vault.master_key.rotation_started", Actor::Operator)
                    .target(nid.clone())
                    .details(serde_json::json!({ "from": from, "to": nid }));
                audit::record(tx, &audit_key, now, &event)
            })
            .await?;
            id
        }
    };
    // 3. The new key becomes the active file; the old one stays among the older keys.
    let active = source.load_active()?;
    let active_path = source.active.clone().ok_or_else(|| FatalError::new("the active master key is not a file"))?;
    if active.id()? != new_id {
        let old_path = source.previous_path(&active.id()?);
        if old_path.exists() {
            // Never trust a name alone: the file must hold the key it is named after.
            let kept = MasterKey::load(&old_path, true)?;
            if kept.id()? != active.id()? {
                return Err(FatalError::new(format!(
                    "{} does not hold the key it is named after; move it away and run this command again",
                    old_path.display()
                )));
            }
        } else {
            active.write_new(&old_path)?;
        }
        let new = MasterKey::load(&source.previous_path(&new_id), true)?;
        replace_key_file(&new, &active_path)?;
    }
    v.refresh()?;
    if v.active_id() != new_id {
        return Err(FatalError::new(format!(
            "the active master key is {}, not {new_id}; was it replaced by hand? Restore {} and run this \
             command again",
            v.active_id(),
            active_path.display()
        )));
    }
    // 4. Every data key re-wrapped, a batch per transaction (a crash loses nothing: each row is
    // wrapped by one key or the other, and both are on disk). 5. Then, in one transaction that
    // checks nothing is left (a server that had not re-read the key files may have added a data
    // key under the old one meanwhile), the new key becomes the database's key.
    let check = v.active_master().ok_or_else(|| FatalError::new("the new master key is not loaded"))?.check_value()?;
    let mut total = 0;
    loop {
        loop {
            let n = vault::rewrap_batch(db, &v, batch).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        let (audit_key, now, nid, check) = (prepared.auditor.clone(), opts.clock.now(), new_id.clone(), check.clone());
        let finished = db
            .write(move |tx| {
                if !tx.vault_keys_not_wrapped_by(&nid, 1)?.is_empty() {
                    return Ok::<_, crate::error::AppError>(false);
                }
                if tx.meta_get(ROTATION_TARGET)?.as_deref() != Some(nid.as_str()) {
                    return Err(crate::error::AppError::Conflict(format!(
                        "the rotation to {nid} is no longer the one in progress"
                    )));
                }
                tx.meta_set(startup::KEY_CHECK, &check)?;
                tx.meta_delete(ROTATION_TARGET)?;
                let event = Event::new("vault.master_key.rotated", Actor::Operator)
                    .target(nid.clone())
                    .details(serde_json::json!({ "to": nid, "data_keys_rewrapped": total }));
                audit::record(tx, &audit_key, now, &event)?;
                Ok(true)
            })
            .await?;
        if finished {
            break;
        }
    }
    let _ = std::fs::remove_file(source.previous_path(&new_id));
    let older: Vec<String> = v.loaded_ids().into_iter().filter(|i| *i != new_id).collect();
    println!(
        "master key rotated to {new_id}: {total} data keys re-wrapped. Older keys kept in {}: {}. \
         Running servers pick the new key up within 15 seconds; once they have, remove an old key with \
         `gatehouse keys retire ID`. Back up {} now.",
        source.previous_dir.display(),
        if older.is_empty() { "none".to_string() } else { older.join(", ") },
        active_path.display()
    );
    Ok(())
}

async fn keys_retire(config: Config, id: &str) -> Result<(), FatalError> {
    use crate::domain::vault::ROTATION_TARGET;
    let well_formed = id.len() == 19 && id.starts_with("mk-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(FatalError::new(format!("{id:?} is not a master key id (mk- and 16 hex digits)")));
    }
    let (prepared, opts) = prepare_shared(config).await?;
    let (db, v) = (&prepared.db, prepared.vault.clone());
    let _lock = take_key_lock(&v.source().previous_dir)?;
    if v.active_id() == id {
        return Err(FatalError::new(format!(
            "{id} is the active master key; rotate first (`gatehouse keys rotate-master`)"
        )));
    }
    if let Some(target) = db.read(|tx| tx.meta_get(ROTATION_TARGET)).await? {
        return Err(FatalError::new(format!(
            "a rotation to {target} has not finished; run `gatehouse keys rotate-master` to finish it first"
        )));
    }
    let key_id = id.to_string();
    let used = db.read(move |tx| tx.vault_keys_using(&key_id)).await?;
    if used > 0 {
        return Err(FatalError::new(format!(
            "{used} data keys are still wrapped by {id}; run `gatehouse keys rotate-master` to move them first"
        )));
    }
    let path = v.source().previous_path(id);
    if !path.exists() {
        return Err(FatalError::new(format!("no master key {id}: {} does not exist", path.display())));
    }
    if crate::crypto::MasterKey::load(&path, true)?.id()? != id {
        return Err(FatalError::new(format!("{} does not hold key {id}; it was not removed", path.display())));
    }
    std::fs::remove_file(&path).map_err(|e| FatalError::new(format!("cannot remove {}: {e}", path.display())))?;
    let (audit_key, now, kid) = (prepared.auditor.clone(), opts.clock.now(), id.to_string());
    db.write(move |tx| {
        // A retired key no longer belongs to the database.
        tx.meta_delete(&format!("{}:{kid}", startup::KEY_CHECK))?;
        audit::record(tx, &audit_key, now, &Event::new("vault.master_key.retired", Actor::Operator).target(kid))
    })
    .await?;
    println!("retired master key {id}: {} removed", path.display());
    Ok(())
}

async fn vault_verify(config: Config) -> Result<(), FatalError> {
    let (prepared, opts) = prepare_shared(config).await?;
    let report = crate::domain::vault::verify(&prepared.db, &prepared.vault).await?;
    if report.failures.is_empty() {
        println!(
            "vault OK: {} data keys, {} secret versions and {} system values opened",
            report.data_keys, report.secret_versions, report.system_values
        );
        return Ok(());
    }
    for f in &report.failures {
        eprintln!("  {f}");
    }
    let (audit_key, now, failures) = (prepared.auditor.clone(), opts.clock.now(), report.failures.clone());
    prepared
        .db
        .write(move |tx| {
            let event = Event::new("vault.integrity_failure", Actor::Operator)
                .outcome(crate::domain::audit::Outcome::Failure)
                .details(serde_json::json!({ "found_by": "vault verify", "places": failures }));
            audit::record(tx, &audit_key, now, &event)
        })
        .await?;
    Err(FatalError::new(format!(
        "vault verify: {} failures ({} data keys, {} secret versions and {} system values opened)",
        report.failures.len(),
        report.data_keys,
        report.secret_versions,
        report.system_values
    )))
}
