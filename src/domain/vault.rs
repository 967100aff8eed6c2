//! The vault: one key hierarchy for everything secret Gatehouse keeps.
//!
//! Master keys (KEKs, from files) → data keys (DEKs), stored in `vault_keys` wrapped by a master
//! key → values sealed by a data key (AES-256-GCM, fresh nonce, AAD binding each value to its
//! place). Data keys: `system` (seals JWT signing keys and TOTP seeds; id `mk1`, the id those
//! envelopes have always carried), `audit` (the audit MAC key), `pseudonym`, and one active
//! `workspace` key per workspace (workspace secrets). Rotating the master key re-wraps data keys
//! only; rotating a data key re-seals what it sealed.

use crate::crypto::{AuditKey, CryptoError, MasterKey, PseudonymKey, SealingKey};
use crate::db::{Db, Tx, VaultKeyRow};
use crate::error::AppError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The id of the system data key (what envelopes sealed before the vault already carry).
pub const SYSTEM_KEY_ID: &str = "mk1";
const AUDIT_KEY_ID: &str = "audit";
const PSEUDONYM_KEY_ID: &str = "pseudonym";
/// The data key whose 32 bytes are the seed of the audit checkpoints' Ed25519 key.
pub const CHECKPOINT_KEY_ID: &str = "auditsig";

/// The `meta` entry proving which master key a database belongs to (the active key's check
/// value; `<KEY_CHECK>:<id>` holds each key's).
pub const KEY_CHECK: &str = "master_key_check";

/// The `meta` entry naming the master key a rotation moves to, while it runs.
pub const ROTATION_TARGET: &str = "vault_rotation_target";

/// Where master keys come from: the active one, and a folder of older ones (kept while data keys
/// are still wrapped by them; `keys retire` removes them).
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The active key's file (`None`: the variable `env` holds it).
    pub active: Option<PathBuf>,
    pub env: Option<String>,
    /// Refuse an active key file readable by group or others (not for systemd credentials).
    pub check_mode: bool,
    pub previous_dir: PathBuf,
}

impl KeySource {
    /// The source of the configured active key, with older keys in `previous_dir`.
    pub fn active_of(source: &crate::config::MasterKeySource, previous_dir: PathBuf) -> Self {
        use crate::config::MasterKeySource as S;
        Self {
            active: source.path().map(Path::to_path_buf),
            env: match source {
                S::Env(name) => Some(name.clone()),
                _ => None,
            },
            check_mode: !matches!(source, S::Credential(_)),
            previous_dir,
        }
    }

    /// Read the active key.
    pub fn load_active(&self) -> Result<MasterKey, crate::crypto::master_key::MasterKeyError> {
        use crate::crypto::master_key::MasterKeyError;
        match (&self.active, &self.env) {
            (Some(path), _) => MasterKey::load(path, self.check_mode),
            (None, Some(name)) => {
                let value = std::env::var(name).map_err(|_| MasterKeyError::MissingEnv { name: name.clone() })?;
                MasterKey::from_hex(&value, &format!("variable {name}"))
            }
            (None, None) => Err(MasterKeyError::MissingEnv { name: String::new() }),
        }
    }

    /// The file of an older master key.
    pub fn previous_path(&self, id: &str) -> PathBuf {
        self.previous_dir.join(format!("{id}.key"))
    }
}

/// The master keys loaded now.
struct Keyring {
    active: String,
    keys: HashMap<String, MasterKey>,
}

fn load_keyring(source: &KeySource) -> Result<Keyring, AppError> {
    let active = source.load_active().map_err(|e| AppError::Internal(e.to_string()))?;
    let active_id = active.id()?;
    let mut keys = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(&source.previous_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("key") {
                continue;
            }
            let key = MasterKey::load(&path, true).map_err(|e| AppError::Internal(e.to_string()))?;
            keys.insert(key.id()?, key);
        }
    }
    keys.insert(active_id.clone(), active);
    Ok(Keyring { active: active_id, keys })
}

/// Why a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data key's master key is not loaded (a retired or missing key file).
    #[error("data key {key} is wrapped by master key {kek}, which is not loaded; put its file in {dir}")]
    MissingMasterKey { key: String, kek: String, dir: String },
    /// The ciphertext, nonce, key or AAD does not match: tampering or a value moved to another row.
    #[error("integrity check failed for {place}")]
    Integrity { place: String },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<OpenError> for AppError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Db(e) => AppError::Db(e),
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// The vault service: the master keyring and the unwrapped data keys in use.
pub struct Vault {
    source: KeySource,
    keyring: RwLock<Arc<Keyring>>,
    data_keys: RwLock<HashMap<String, SealingKey>>,
    /// Seals a workspace data key may make before it is replaced (AES-GCM nonce bound).
    pub max_seals: i64,
    /// Largest secret value, in bytes.
    pub max_value_bytes: usize,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("source", &self.source).finish_non_exhaustive()
    }
}

fn aad_for_key(id: &str, purpose: &str, workspace: Option<&str>) -> String {
    format!("vault_key:{id}:{purpose}:{}", workspace.unwrap_or("-"))
}

/// The AAD of a secret version: its workspace, name and version.
pub fn aad_for_secret(workspace: &str, name: &str, version: i64) -> String {
    format!("secret:{workspace}:{name}:{version}")
}

impl Vault {
    pub fn load(source: KeySource, max_seals: i64, max_value_bytes: usize) -> Result<Self, AppError> {
        let keyring = load_keyring(&source)?;
        Ok(Self {
            source,
            keyring: RwLock::new(Arc::new(keyring)),
            data_keys: RwLock::new(HashMap::new()),
            max_seals,
            max_value_bytes,
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    fn ring(&self) -> Arc<Keyring> {
        self.keyring.read().map(|r| r.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-read the key files (after `keys rotate-master` or `keys retire`).
    pub fn refresh(&self) -> Result<(), AppError> {
        let ring = Arc::new(load_keyring(&self.source)?);
        if let Ok(mut r) = self.keyring.write() {
            *r = ring;
        }
        Ok(())
    }

    /// The id of the active master key.
    pub fn active_id(&self) -> String {
        self.ring().active.clone()
    }

    /// The active master key itself (for its check value).
    pub fn active_master(&self) -> Option<MasterKey> {
        let ring = self.ring();
        ring.keys.get(&ring.active).cloned()
    }

    /// The ids of every loaded master key.
    pub fn loaded_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.ring().keys.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn kek(&self, id: &str) -> Option<SealingKey> {
        let find = |ring: &Keyring| ring.keys.get(id).and_then(|k| k.wrapping_key().ok());
        if let Some(k) = find(&self.ring()) {
            return Some(k);
        }
        // A rotation by another process may have added it since: read the files once more.
        self.refresh().ok()?;
        find(&self.ring())
    }

    /// Wrap a data key under the active master key.
    pub fn wrap(&self, key: &SealingKey, purpose: &str, workspace: Option<&str>) -> Result<(String, String), AppError> {
        let active = self.active_id();
        let kek = self.kek(&active).ok_or_else(|| AppError::internal("the active master key is not loaded"))?;
        let wrapped = kek.seal(key.expose_bytes(), &aad_for_key(key.id(), purpose, workspace))?;
        Ok((active, wrapped))
    }

    /// Unwrap a data key row (from the cache when it was unwrapped before).
    pub fn unwrap(&self, row: &VaultKeyRow) -> Result<SealingKey, OpenError> {
        if let Some(k) = self.data_keys.read().ok().and_then(|m| m.get(&row.id).cloned()) {
            return Ok(k);
        }
        let key = self.unwrap_fresh(row)?;
        if let Ok(mut m) = self.data_keys.write() {
            m.insert(row.id.clone(), key.clone());
        }
        Ok(key)
    }

    /// Unwrap without the cache (rotation and `vault verify` check what is stored).
    pub fn unwrap_fresh(&self, row: &VaultKeyRow) -> Result<SealingKey, OpenError> {
        let kek = self.kek(&row.kek_id).ok_or_else(|| OpenError::MissingMasterKey {
            key: row.id.clone(),
            kek: row.kek_id.clone(),
            dir: self.source.previous_dir.display().to_string(),
        })?;
        let aad = aad_for_key(&row.id, &row.purpose, row.workspace_id.as_deref());
        let bytes =
            kek.open(&row.wrapped, &aad).map_err(|_| OpenError::Integrity { place: format!("data key {}", row.id) })?;
        SealingKey::from_bytes(row.id.clone(), &bytes)
            .map_err(|_| OpenError::Integrity { place: format!("data key {}", row.id) })
    }

    /// Forget an unwrapped data key (its workspace was deleted).
    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.data_keys.write() {
            m.remove(id);
        }
    }

    /// The system data keys, created on first use: from the bytes the master key derived
    /// before the vault existed (so that what was sealed and chained then still opens and
    /// verifies), wrapped by the active master key.
    pub fn system_keys(&self, tx: &Tx<'_>, now_ms: i64) -> Result<(SealingKey, AuditKey, PseudonymKey), AppError> {
        let mut out = Vec::new();
        for (id, purpose) in [(SYSTEM_KEY_ID, "system"), (AUDIT_KEY_ID, "audit"), (PSEUDONYM_KEY_ID, "pseudonym")] {
            let key = match tx.vault_key(id)? {
                Some(row) => self.unwrap(&row)?,
                None => {
                    let master = self.active_master().ok_or_else(|| AppError::internal("no active master key"))?;
                    let bytes = master.legacy_system_key(purpose)?;
                    let key = SealingKey::from_bytes(id, &bytes[..])?;
                    self.store(tx, &key, purpose, None, now_ms)?;
                    key
                }
            };
            out.push(key);
        }
        let [system, audit, pseudonym]: [SealingKey; 3] =
            out.try_into().map_err(|_| AppError::internal("system keys"))?;
        Ok((system, AuditKey::from_bytes(audit.expose_bytes())?, PseudonymKey::from_bytes(pseudonym.expose_bytes())?))
    }

    /// The audit checkpoint signing key: a random data key used as an Ed25519 seed, created on
    /// first use when `create` (a read-only caller gets `None` before then).
    pub fn checkpoint_key(
        &self,
        tx: &Tx<'_>,
        now_ms: i64,
        create: bool,
    ) -> Result<Option<crate::crypto::checkpoint::CheckpointKey>, AppError> {
        let key = match tx.vault_key(CHECKPOINT_KEY_ID)? {
            Some(row) => self.unwrap(&row)?,
            None if create => {
                let key = SealingKey::generate(CHECKPOINT_KEY_ID);
                self.store(tx, &key, "audit", None, now_ms)?;
                key
            }
            None => return Ok(None),
        };
        Ok(Some(crate::crypto::checkpoint::CheckpointKey::from_seed(key.expose_bytes())?))
    }

    /// Store a new data key, wrapped by the active master key.
    fn store(
        &self,
        tx: &Tx<'_>,
        key: &SealingKey,
        purpose: &str,
        workspace: Option<&str>,
        now_ms: i64,
    ) -> Result<(), AppError> {
        let (kek_id, wrapped) = self.wrap(key, purpose, workspace)?;
        tx.vault_key_insert(&VaultKeyRow {
            id: key.id().to_string(),
            purpose: purpose.to_string(),
            workspace_id: workspace.map(str::to_string),
            kek_id,
            wrapped,
            seals: 0,
            created_at_ms: now_ms,
            retired_at_ms: None,
        })?;
        Ok(())
    }

    /// Give a workspace a new data key (at creation, and when its key has sealed enough).
    pub fn create_workspace_key(&self, tx: &Tx<'_>, workspace_id: &str, now_ms: i64) -> Result<SealingKey, AppError> {
        // A rotation by `keys rotate-master` moves the database to a new active key: wrap under
        // that one even before the next periodic re-read, or `keys retire` could remove the key
        // this data key would otherwise be wrapped by.
        if let (Some(stored), Some(active)) = (tx.meta_get(KEY_CHECK)?, self.active_master()) {
            if !active.matches_check_value(&stored)? {
                self.refresh()?;
            }
        }
        let key = SealingKey::generate(format!("dk-{}", uuid::Uuid::new_v4().simple()));
        self.store(tx, &key, "workspace", Some(workspace_id), now_ms)?;
        if let Ok(mut m) = self.data_keys.write() {
            m.insert(key.id().to_string(), key.clone());
        }
        Ok(key)
    }

    /// The workspace's data key for one more seal, counted; a key that reached `max_seals` is
    /// retired and replaced (housekeeping re-seals what it sealed).
    pub fn key_for_seal(&self, tx: &Tx<'_>, workspace_id: &str, now_ms: i64) -> Result<SealingKey, AppError> {
        self.key_for(tx, workspace_id, now_ms, self.max_seals)
    }

    /// The same for re-sealing a retired key's values: up to twice `max_seals` (still far
    /// below the AES-GCM bound, which `vault.data_key_max_seals` ≤ 2^30 guarantees), so that
    /// re-sealing into a fresh key does not itself fill that key up.
    fn key_for_reseal(&self, tx: &Tx<'_>, workspace_id: &str, now_ms: i64) -> Result<SealingKey, AppError> {
        self.key_for(tx, workspace_id, now_ms, self.max_seals.saturating_mul(2))
    }

    fn key_for(&self, tx: &Tx<'_>, workspace_id: &str, now_ms: i64, limit: i64) -> Result<SealingKey, AppError> {
        let row = match tx.vault_key_active(workspace_id)? {
            Some(row) => row,
            None => {
                return self.create_workspace_key(tx, workspace_id, now_ms).and_then(|k| {
                    tx.vault_key_count_seals(k.id(), 1)?;
                    Ok(k)
                })
            }
        };
        if row.seals >= limit {
            tx.vault_key_retire(&row.id, now_ms)?;
            let k = self.create_workspace_key(tx, workspace_id, now_ms)?;
            tx.vault_key_count_seals(k.id(), 1)?;
            return Ok(k);
        }
        let key = self.unwrap(&row)?;
        tx.vault_key_count_seals(&row.id, 1)?;
        Ok(key)
    }

    /// The data key with this id.
    pub fn data_key(&self, tx: &Tx<'_>, id: &str) -> Result<SealingKey, OpenError> {
        if let Some(k) = self.data_keys.read().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(k);
        }
        let row =
            tx.vault_key(id)?.ok_or_else(|| OpenError::Integrity { place: format!("data key {id} (missing)") })?;
        self.unwrap(&row)
    }
}

/// Re-wrap up to `batch` data keys not yet wrapped by the active master key, in one
/// transaction. Returns how many it re-wrapped (0: done).
pub async fn rewrap_batch(db: &Db, vault: &Arc<Vault>, batch: i64) -> Result<usize, AppError> {
    let v = vault.clone();
    db.write(move |tx| {
        let active = v.active_id();
        let rows = tx.vault_keys_not_wrapped_by(&active, batch)?;
        let mut n = 0;
        for row in rows {
            let key = v.unwrap_fresh(&row)?;
            let (kek_id, wrapped) = v.wrap(&key, &row.purpose, row.workspace_id.as_deref())?;
            if tx.vault_key_rewrap(&row.id, &row.kek_id, &kek_id, &wrapped)? {
                n += 1;
            }
        }
        Ok::<_, AppError>(n)
    })
    .await
}

/// Re-seal up to `batch` secret versions sealed under retired workspace data keys with their
/// workspace's active key, then drop retired keys nothing uses. Returns how many it re-sealed.
pub async fn reseal_batch(db: &Db, vault: &Arc<Vault>, batch: i64, now_ms: i64) -> Result<usize, AppError> {
    // Most rounds have nothing to do: find that out without a write transaction.
    let retired = db.read(|tx| tx.vault_retired_count().map_err(AppError::from)).await?;
    if retired == 0 {
        return Ok(0);
    }
    let v = vault.clone();
    db.write(move |tx| {
        let versions = tx.secret_versions_under_retired_keys(batch)?;
        let mut n = 0;
        for ver in &versions {
            let aad = aad_for_secret(&ver.workspace_id, &ver.name, ver.version);
            // One value that does not open (tampered, or its master key missing) must not stop the
            // others: it stays under its old key, and `vault verify` names it.
            let opened = v.data_key(tx, &ver.data_key_id).ok().and_then(|k| k.open(&ver.envelope, &aad).ok());
            let Some(plain) = opened else {
                tracing::error!(target: "gatehouse::security", workspace = %ver.workspace_id, secret = %ver.name,
                    version = ver.version, "a sealed value did not open while re-sealing; run `gatehouse vault verify`");
                continue;
            };
            let new = v.key_for_reseal(tx, &ver.workspace_id, now_ms)?;
            let envelope = new.seal(&plain, &aad)?;
            if tx.secret_version_reseal(ver, new.id(), &envelope)? {
                n += 1;
            }
        }
        let deleted = tx.vault_keys_delete_unused_retired()?;
        Ok::<_, AppError>((n, deleted))
    })
    .await
    .map(|(n, deleted)| {
        // Gone from the database: gone from memory too.
        for id in deleted {
            vault.forget(&id);
        }
        n
    })
}

/// What `vault verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub data_keys: usize,
    pub secret_versions: usize,
    pub system_values: usize,
    /// Where something failed to open (never a value).
    pub failures: Vec<String>,
}

/// Open every data key and every value sealed under one, reporting failures by place.
pub async fn verify(db: &Db, vault: &Arc<Vault>) -> Result<VerifyReport, AppError> {
    let v = vault.clone();
    db.read(move |tx| {
        let mut report = VerifyReport::default();
        let mut keys: HashMap<String, SealingKey> = HashMap::new();
        for row in tx.vault_keys_all()? {
            match v.unwrap_fresh(&row) {
                Ok(k) => {
                    keys.insert(row.id.clone(), k);
                    report.data_keys += 1;
                }
                Err(e) => report.failures.push(e.to_string()),
            }
        }
        for ver in tx.secret_versions_all()? {
            let place = format!("secret {} version {} of workspace {}", ver.name, ver.version, ver.workspace_id);
            let opened = keys
                .get(&ver.data_key_id)
                .map(|k| k.open(&ver.envelope, &aad_for_secret(&ver.workspace_id, &ver.name, ver.version)).is_ok());
            match opened {
                Some(true) => report.secret_versions += 1,
                Some(false) => report.failures.push(format!("integrity check failed for {place}")),
                None => report.failures.push(format!("{place}: its data key {} did not open", ver.data_key_id)),
            }
        }
        if let Some(system) = keys.get(SYSTEM_KEY_ID) {
            let (signing, seeds) = tx.system_sealed_values()?;
            let signing =
                signing.into_iter().map(|(kid, env)| (format!("signing key {kid}"), env, super::keys::aad(&kid)));
            let seeds =
                seeds.into_iter().map(|(id, env)| (format!("TOTP seed of user {id}"), env, super::mfa::seed_aad(&id)));
            let sso = tx.sso_providers()?.into_iter().filter_map(|p| {
                let env = p.secret_sealed?;
                let what = if p.kind == "saml" { "SAML SP keys" } else { "client secret" };
                Some((format!("{what} of identity provider {}", p.id), env, super::sso::secret_aad(&p.id)))
            });
            for (place, envelope, aad) in signing.chain(seeds).chain(sso) {
                if system.open(&envelope, &aad).is_ok() {
                    report.system_values += 1;
                } else {
                    report.failures.push(format!("integrity check failed for {place}"));
                }
            }
        }
        Ok::<_, AppError>(report)
    })
    .await
}

/// Whether an error means a stored value failed its integrity check.
pub fn is_integrity_failure(e: &CryptoError) -> bool {
    matches!(e, CryptoError::Open)
}

/// The folder of older master keys beside an active key file.
pub fn previous_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("master-keys")
}
