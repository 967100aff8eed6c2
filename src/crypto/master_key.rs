//! The master key (KEK): 256 bits, kept in a file of 64 hex digits with mode 0600, and the keys
//! derived from it with HKDF-SHA256 (the audit MAC key, the key check value).

use super::{ct_eq, random, CryptoError};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// The 256-bit master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(_)")
    }
}

/// Why a master key file could not be used. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("cannot read master key file {path}: {source}; check the path and that the service may read it")]
    Read { path: String, source: std::io::Error },
    #[error("master key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("master key {path} must hold exactly 64 hexadecimal digits (256 bits); restore the right key")]
    Format { path: String },
    #[error("the master key variable {name} is not set; set it, or unset vault.master_key_env")]
    MissingEnv { name: String },
    #[error("cannot create master key file {path}: {source}")]
    Create { path: String, source: std::io::Error },
}

impl MasterKey {
    /// Read a master key file. `check_mode` refuses a file readable by group or others
    /// (systemd credentials are checked by systemd and passed with `false`).
    pub fn load(path: &Path, check_mode: bool) -> Result<Self, MasterKeyError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| MasterKeyError::Read { path: shown.clone(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if check_mode && mode & 0o077 != 0 {
            return Err(MasterKeyError::Permissions { path: shown, mode });
        }
        let mut text =
            std::fs::read_to_string(path).map_err(|source| MasterKeyError::Read { path: shown.clone(), source })?;
        let mut bytes = [0u8; 32];
        let decoded = hex::decode_to_slice(text.trim(), &mut bytes);
        text.zeroize();
        decoded.map_err(|_| MasterKeyError::Format { path: shown })?;
        Ok(Self(bytes))
    }

    /// A key from 64 hex digits (an environment variable); `what` names it in the error.
    pub fn from_hex(text: &str, what: &str) -> Result<Self, MasterKeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| MasterKeyError::Format { path: what.to_string() })?;
        Ok(Self(bytes))
    }

    /// Generate a new key and write it to `path` (created with mode 0600, never overwritten).
    pub fn generate(path: &Path) -> Result<Self, MasterKeyError> {
        let key = Self::generate_in_memory();
        key.write_new(path)?;
        Ok(key)
    }

    fn derive(&self, info: &[u8]) -> Result<[u8; 32], CryptoError> {
        let hk = Hkdf::<Sha256>::new(Some(b"gatehouse"), &self.0);
        let mut out = [0u8; 32];
        hk.expand(info, &mut out).map_err(|_| CryptoError::Kdf)?;
        Ok(out)
    }

    /// A new random key, in memory only (see [`MasterKey::write_new`]).
    pub fn generate_in_memory() -> Self {
        Self(random::bytes::<32>())
    }

    /// Write this key to a new file `path` (mode 0600; never overwrites). Crash-safe: the key
    /// goes to a private temporary file, synced, which is then linked in as `path` (so `path`
    /// appears whole or not at all), and the folder is synced.
    pub fn write_new(&self, path: &Path) -> Result<(), MasterKeyError> {
        let shown = path.display().to_string();
        let err = |source| MasterKeyError::Create { path: shown.clone(), source };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", hex::encode(random::bytes::<6>())));
        let tmp = std::path::PathBuf::from(tmp);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            let mut text = hex::encode(self.0);
            text.push('\n');
            let w = file.write_all(text.as_bytes()).and_then(|_| file.sync_all());
            text.zeroize();
            w?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }

    /// The key's id (`mk-` and 16 hex digits of a keyed fingerprint): names it in envelopes,
    /// file names and the CLI without revealing anything about it.
    pub fn id(&self) -> Result<String, CryptoError> {
        let k = self.derive(b"gatehouse key id v1")?;
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&k).map_err(|_| CryptoError::Kdf)?;
        mac.update(b"gatehouse master key id");
        Ok(format!("mk-{}", &hex::encode(mac.finalize().into_bytes())[..16]))
    }

    /// The key-encryption key that wraps data keys, under this key's id.
    pub fn wrapping_key(&self) -> Result<super::vault::SealingKey, CryptoError> {
        let k = self.derive(b"gatehouse kek v1")?;
        Ok(super::vault::SealingKey::new(self.id()?, k))
    }

    /// The bytes the system keys had when they were derived from the master key (databases
    /// created before the vault): the vault stores them once, wrapped, so that later master
    /// keys keep opening what was sealed before.
    pub fn legacy_system_key(&self, purpose: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, CryptoError> {
        let info: &[u8] = match purpose {
            "audit" => b"gatehouse audit mac v1",
            "system" => b"gatehouse system seal v1",
            "pseudonym" => b"gatehouse pseudonym v1",
            _ => return Err(CryptoError::Kdf),
        };
        self.derive(info).map(zeroize::Zeroizing::new)
    }

    /// The key that chains audit records.
    pub fn audit_key(&self) -> Result<AuditKey, CryptoError> {
        self.derive(b"gatehouse audit mac v1").map(AuditKey)
    }

    /// The key that seals the secrets Gatehouse keeps for itself (JWT signing keys, TOTP seeds).
    pub fn sealing_key(&self) -> Result<super::vault::SealingKey, CryptoError> {
        self.derive(b"gatehouse system seal v1").map(|k| super::vault::SealingKey::new(MASTER_KEY_ID, k))
    }

    /// The key that turns identifiers such as an unknown email into stable pseudonyms for the
    /// audit trail and the throttling tables, so that neither stores them in clear.
    pub fn pseudonym_key(&self) -> Result<PseudonymKey, CryptoError> {
        self.derive(b"gatehouse pseudonym v1").map(PseudonymKey)
    }

    /// A value stored in the database that proves later starts use the same master key,
    /// without revealing anything about the key.
    pub fn check_value(&self) -> Result<String, CryptoError> {
        let k = self.derive(b"gatehouse key check v1")?;
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&k).map_err(|_| CryptoError::Kdf)?;
        mac.update(b"gatehouse master key check");
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `stored` is this key's check value, in constant time.
    pub fn matches_check_value(&self, stored: &str) -> Result<bool, CryptoError> {
        Ok(ct_eq(self.check_value()?.as_bytes(), stored.as_bytes()))
    }
}

/// The id envelopes sealed under (a key derived from) the master key carry. Master-key rotation
/// (issue "vault") introduces further ids.
pub const MASTER_KEY_ID: &str = "mk1";

impl AuditKey {
    /// The audit MAC key from its bytes (as unwrapped from the vault).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(Self).map_err(|_| CryptoError::Open)
    }
}

impl PseudonymKey {
    /// The pseudonym key from its bytes (as unwrapped from the vault).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(Self).map_err(|_| CryptoError::Open)
    }
}

/// Keyed pseudonyms: `HMAC-SHA256(key, value)`, hex.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PseudonymKey([u8; 32]);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(_)")
    }
}

impl PseudonymKey {
    /// A stable pseudonym of `value` (32 hex digits), not reversible without the master key.
    pub fn of(&self, value: &str) -> String {
        match <HmacSha256 as Mac>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(value.as_bytes());
                hex::encode(&mac.finalize().into_bytes()[..16])
            }
            Err(_) => String::from("unavailable"),
        }
    }
}

/// The MAC key of the audit chain, derived from the master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(_)")
    }
}

impl AuditKey {
    /// `HMAC-SHA256(key, prev_hash || record)`.
    pub fn chain(&self, prev_hash: &[u8], record: &[u8]) -> Result<[u8; 32], CryptoError> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).map_err(|_| CryptoError::Kdf)?;
        mac.update(prev_hash);
        mac.update(record);
        Ok(mac.finalize().into_bytes().into())
    }

    /// Whether `hash` is the chain value of `prev_hash || record`, in constant time.
    pub fn verify(&self, prev_hash: &[u8], record: &[u8], hash: &[u8]) -> Result<bool, CryptoError> {
        Ok(ct_eq(&self.chain(prev_hash, record)?, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_derive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = MasterKey::load(&path, true).unwrap();
        assert!(again.matches_check_value(&key.check_value().unwrap()).unwrap());
        assert!(MasterKey::generate(&path).is_err(), "never overwrites");
        assert_eq!(format!("{key:?}"), "MasterKey(_)");
    }

    #[test]
    fn refuses_loose_permissions_and_bad_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(MasterKey::load(&path, true), Err(MasterKeyError::Permissions { .. })));
        std::fs::write(&path, "zz").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(MasterKey::load(&path, true), Err(MasterKeyError::Format { .. })));
    }

    #[test]
    fn audit_chain_depends_on_key_and_input() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = MasterKey::generate(&dir.path().join("a")).unwrap().audit_key().unwrap();
        let k2 = MasterKey::generate(&dir.path().join("b")).unwrap().audit_key().unwrap();
        let h = k1.chain(&[0; 32], b"record").unwrap();
        assert!(k1.verify(&[0; 32], b"record", &h).unwrap());
        assert!(!k1.verify(&[0; 32], b"recorD", &h).unwrap());
        assert!(!k2.verify(&[0; 32], b"record", &h).unwrap());
    }
}
