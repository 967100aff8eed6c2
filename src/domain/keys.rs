//! JWT signing keys: generated here, stored sealed, rotated on a schedule while the server
//! runs. A key is published in JWKS from its creation, signs from `activates_at` (at least
//! twice the JWKS cache lifetime later, so that caches have seen it), and leaves JWKS once every
//! token it signed has expired. [`KeyRing`] is the in-memory view requests use; [`maintain`]
//! moves the schedule forward inside a write transaction.

use super::audit::{self, Actor, Event};
use super::unix_ms;
use crate::crypto::jwt::{self, JwtAlg, Signer, Verifier};
use crate::crypto::SealingKey;
use crate::db::{SigningKeyRow, Tx};
use crate::error::AppError;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// The schedule.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub alg: JwtAlg,
    pub rotation_ms: i64,
    /// How long before it signs a new key is published.
    pub publish_ahead_ms: i64,
    /// How long a retired key stays published: the access-token lifetime plus a margin.
    pub keep_after_retire_ms: i64,
}

/// What requests see: the key that signs now, every published key by `kid`, and the JWKS text.
#[derive(Debug, Default)]
struct Snapshot {
    signer: Option<Arc<Signer>>,
    verifiers: HashMap<String, Arc<Verifier>>,
    jwks: Vec<serde_json::Value>,
    fingerprint: String,
}

#[derive(Debug, Default)]
pub struct KeyRing {
    current: RwLock<Arc<Snapshot>>,
}

impl KeyRing {
    fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.snapshot().signer.clone()
    }

    pub fn verifier(&self, kid: &str) -> Option<Arc<Verifier>> {
        self.snapshot().verifiers.get(kid).cloned()
    }

    /// The published public keys (JWKS `keys`).
    pub fn jwks(&self) -> Vec<serde_json::Value> {
        self.snapshot().jwks.clone()
    }

    /// Rebuild the view from the stored keys when they changed. Returns whether it did.
    pub fn load(&self, rows: &[SigningKeyRow], sealing: &SealingKey, now_ms: i64) -> Result<bool, AppError> {
        let fingerprint = rows
            .iter()
            .map(|r| format!("{}:{}:{:?}:{:?}", r.kid, r.activates_at_ms, r.retired_at_ms, r.expires_at_ms))
            .collect::<Vec<_>>()
            .join(",");
        // The signer also depends on time (a pending key starts signing at activates_at).
        let signing = current_signer(rows, now_ms).map(|r| r.kid.clone());
        let fingerprint = format!("{fingerprint}|{signing:?}");
        if self.snapshot().fingerprint == fingerprint {
            return Ok(false);
        }
        let mut verifiers = HashMap::new();
        let mut jwks_keys = Vec::new();
        let mut signer = None;
        for r in rows {
            let alg = JwtAlg::parse(&r.alg)
                .ok_or_else(|| AppError::internal(format!("signing key {} has unknown alg", r.kid)))?;
            verifiers
                .insert(r.kid.clone(), Arc::new(Verifier::from_jwk(alg, &r.public_jwk).map_err(AppError::internal)?));
            jwks_keys.push(serde_json::from_str::<serde_json::Value>(&r.public_jwk).map_err(AppError::internal)?);
            if Some(&r.kid) == signing.as_ref() {
                let pem = sealing.open(&r.private_sealed, &aad(&r.kid))?;
                let pem = std::str::from_utf8(&pem).map_err(AppError::internal)?;
                signer = Some(Arc::new(Signer::from_pem(r.kid.clone(), alg, pem).map_err(AppError::internal)?));
            }
        }
        let snap = Arc::new(Snapshot { signer, verifiers, jwks: jwks_keys, fingerprint });
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
        Ok(true)
    }
}

/// The AAD a signing key's private half is sealed with.
pub fn aad(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// The key that signs at `now`: the newest active one that is not retired.
fn current_signer(rows: &[SigningKeyRow], now_ms: i64) -> Option<&SigningKeyRow> {
    rows.iter().filter(|r| r.activates_at_ms <= now_ms && r.retired_at_ms.is_none()).max_by_key(|r| r.activates_at_ms)
}

fn new_key(
    tx: &Tx<'_>,
    sealing: &SealingKey,
    alg: JwtAlg,
    now_ms: i64,
    activates_ms: i64,
) -> Result<SigningKeyRow, AppError> {
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let generated = jwt::generate(alg, kid.clone()).map_err(AppError::internal)?;
    let row = SigningKeyRow {
        kid: kid.clone(),
        alg: alg.as_str().to_string(),
        private_sealed: sealing.seal(generated.private_pem.as_bytes(), &aad(&kid))?,
        public_jwk: generated.public_jwk,
        created_at_ms: now_ms,
        activates_at_ms: activates_ms,
        retired_at_ms: None,
        expires_at_ms: None,
    };
    tx.signing_key_insert(&row)?;
    Ok(row)
}

/// Move the schedule forward at `now`: create the first key, publish the next one ahead of
/// time, retire keys a newer one replaced, drop keys whose tokens have all expired. Audited.
/// Returns the stored keys afterwards.
pub fn maintain(
    tx: &Tx<'_>,
    sealing: &SealingKey,
    audit_key: &crate::domain::audit::Auditor,
    policy: &KeyPolicy,
    now: OffsetDateTime,
) -> Result<Vec<SigningKeyRow>, AppError> {
    let now_ms = unix_ms(now);
    let dropped = tx.signing_keys_drop_expired(now_ms)?;
    if dropped > 0 {
        audit::record(
            tx,
            audit_key,
            now,
            &Event::new("key.signing.removed", Actor::System).details(serde_json::json!({ "count": dropped })),
        )?;
    }
    let mut rows = tx.signing_keys()?;
    let current = current_signer(&rows, now_ms).cloned();
    // Retire every active key older than the current one.
    if let Some(cur) = &current {
        for r in rows.iter().filter(|r| r.kid != cur.kid && r.activates_at_ms <= now_ms && r.retired_at_ms.is_none()) {
            tx.signing_key_retire(&r.kid, now_ms, now_ms + policy.keep_after_retire_ms)?;
            audit::record(
                tx,
                audit_key,
                now,
                &Event::new("key.signing.retired", Actor::System).target(r.kid.clone()).details(
                    serde_json::json!({ "replaced_by": cur.kid, "published_until_ms": now_ms + policy.keep_after_retire_ms }),
                ),
            )?;
        }
    }
    let pending = rows.iter().any(|r| r.activates_at_ms > now_ms);
    match &current {
        None if !pending => {
            // No key at all (first start, or every key retired): one that signs at once; no
            // client can have cached anything it would miss.
            let row = new_key(tx, sealing, policy.alg, now_ms, now_ms)?;
            audit::record(
                tx,
                audit_key,
                now,
                &Event::new("key.signing.created", Actor::System)
                    .target(row.kid.clone())
                    .details(serde_json::json!({ "alg": row.alg, "activates_at_ms": now_ms })),
            )?;
        }
        Some(cur) if !pending && cur.activates_at_ms + policy.rotation_ms - policy.publish_ahead_ms <= now_ms => {
            let activates = (cur.activates_at_ms + policy.rotation_ms).max(now_ms + policy.publish_ahead_ms);
            let row = new_key(tx, sealing, policy.alg, now_ms, activates)?;
            audit::record(
                tx,
                audit_key,
                now,
                &Event::new("key.signing.created", Actor::System)
                    .target(row.kid.clone())
                    .details(serde_json::json!({ "alg": row.alg, "activates_at_ms": activates, "reason": "schedule" })),
            )?;
        }
        _ => {}
    }
    rows = tx.signing_keys()?;
    Ok(rows)
}

/// A forced rotation (`gatehouse keys rotate`): publish a new key now that takes over after the
/// publication window; a pending key is replaced by it. Returns `(kid, activates_at_ms)`.
pub fn rotate(
    tx: &Tx<'_>,
    sealing: &SealingKey,
    audit_key: &crate::domain::audit::Auditor,
    policy: &KeyPolicy,
    actor: Actor,
    now: OffsetDateTime,
) -> Result<(String, i64), AppError> {
    let now_ms = unix_ms(now);
    let rows = tx.signing_keys()?;
    // With no key signing yet (a database that never served), the new key signs at once.
    let activates = if current_signer(&rows, now_ms).is_some() { now_ms + policy.publish_ahead_ms } else { now_ms };
    // A pending key nobody has signed with is brought forward instead of piling up.
    let row = match rows.iter().find(|r| r.activates_at_ms > now_ms) {
        Some(p) => {
            let at = p.activates_at_ms.min(activates);
            tx.signing_key_activate_at(&p.kid, at)?;
            SigningKeyRow { activates_at_ms: at, ..p.clone() }
        }
        None => new_key(tx, sealing, policy.alg, now_ms, activates)?,
    };
    audit::record(
        tx,
        audit_key,
        now,
        &Event::new("key.signing.rotated", actor)
            .target(row.kid.clone())
            .details(serde_json::json!({ "alg": row.alg, "activates_at_ms": row.activates_at_ms })),
    )?;
    Ok((row.kid, row.activates_at_ms))
}
