//! Workspace secrets: named values, versioned, sealed under the workspace's data key with AAD
//! `secret:<workspace>:<name>:<version>`. Listing and metadata never show a value; revealing one
//! is its own permission (`reveal` on `secret`), takes an optional reason and is audited.
//! Deleting a secret zeroes its rows in the database file (`secure_delete`) and checkpoints the
//! WAL; deleting a workspace also deletes its data keys.

use super::audit::{self, Event, Origin, Outcome};
use super::auth::Principal;
use super::authz::Resource;
use super::unix_ms;
use super::vault::{aad_for_secret, OpenError};
use super::workspaces::access;
use crate::crypto::SecretString;
use crate::db::{SecretRow, SecretVersionRow};
use crate::error::AppError;
use crate::state::AppState;
use serde_json::json;

/// `^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`.
pub fn check_name(name: &str) -> Result<(), AppError> {
    let b = name.as_bytes();
    let ok = (1..=128).contains(&b.len())
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid("name: 1 to 128 characters of A-Z a-z 0-9 _ . -, starting with a letter or _".into()))
    }
}

fn secret_resource(name: &str) -> Resource {
    Resource::new("secret").with("name", name.to_string())
}

/// `GET /v1/workspaces/{ws}/secrets`: names and versions, never values.
pub async fn list(state: &AppState, who: &Principal, ws: &str) -> Result<Vec<SecretRow>, AppError> {
    let a = access(state, who, ws).await?;
    a.check("read", &Resource::new("secret"))?;
    let id = a.ws.id.clone();
    let rows = state.db.read(move |tx| tx.secrets_of(&id).map_err(AppError::from)).await?;
    Ok(rows.into_iter().filter(|s| a.allows("read", &secret_resource(&s.name))).collect())
}

/// `GET /v1/workspaces/{ws}/secrets/{name}`: metadata.
pub async fn get(state: &AppState, who: &Principal, ws: &str, name: &str) -> Result<SecretRow, AppError> {
    let a = access(state, who, ws).await?;
    check_name(name).map_err(|_| AppError::NotFound)?;
    a.check("read", &secret_resource(name))?;
    let (id, n) = (a.ws.id.clone(), name.to_string());
    state.db.read(move |tx| tx.secret(&id, &n).map_err(AppError::from)).await?.ok_or(AppError::NotFound)
}

/// `GET /v1/workspaces/{ws}/secrets/{name}/versions`: newest first, without values.
pub async fn versions(
    state: &AppState,
    who: &Principal,
    ws: &str,
    name: &str,
) -> Result<Vec<SecretVersionRow>, AppError> {
    let a = access(state, who, ws).await?;
    check_name(name).map_err(|_| AppError::NotFound)?;
    a.check("read", &secret_resource(name))?;
    let (id, n) = (a.ws.id.clone(), name.to_string());
    let rows = state.db.read(move |tx| tx.secret_versions(&id, &n).map_err(AppError::from)).await?;
    if rows.is_empty() {
        return Err(AppError::NotFound);
    }
    Ok(rows)
}

/// Seal `value` as the next version of `name` in the caller's transaction.
#[allow(clippy::too_many_arguments)]
fn write_version(
    tx: &crate::db::Tx<'_>,
    state: &AppState,
    ws_id: &str,
    name: &str,
    value: &[u8],
    actor_id: Option<String>,
    restored_from: Option<i64>,
    now_ms: i64,
) -> Result<SecretRow, AppError> {
    let existing = tx.secret(ws_id, name)?;
    let version = existing.as_ref().map_or(1, |s| s.current_version + 1);
    let key = state.vault.key_for_seal(tx, ws_id, now_ms)?;
    let envelope = key.seal(value, &aad_for_secret(ws_id, name, version))?;
    let row = SecretRow {
        workspace_id: ws_id.to_string(),
        name: name.to_string(),
        current_version: version,
        created_at_ms: existing.as_ref().map_or(now_ms, |s| s.created_at_ms),
        created_by: existing.as_ref().map_or(actor_id.clone(), |s| s.created_by.clone()),
        updated_at_ms: now_ms,
        updated_by: actor_id.clone(),
    };
    tx.secret_upsert(&row)?;
    tx.secret_version_insert(&SecretVersionRow {
        workspace_id: ws_id.to_string(),
        name: name.to_string(),
        version,
        data_key_id: key.id().to_string(),
        envelope,
        size: i64::try_from(value.len()).unwrap_or(i64::MAX),
        created_at_ms: now_ms,
        created_by: actor_id,
        restored_from,
    })?;
    Ok(row)
}

/// `PUT /v1/workspaces/{ws}/secrets/{name}`: a new version. Returns the secret and whether it
/// is new.
pub async fn put(
    state: &AppState,
    who: &Principal,
    ws: &str,
    name: &str,
    value: SecretString,
    origin: &Origin,
) -> Result<(SecretRow, bool), AppError> {
    let a = access(state, who, ws).await?;
    check_name(name)?;
    let checked = a.check("write", &secret_resource(name))?;
    let max = state.vault.max_value_bytes;
    if value.expose().is_empty() || value.expose().len() > max {
        return Err(AppError::Invalid(format!("value: 1 to {max} bytes")));
    }
    let now = state.clock.now();
    let key = state.auditor.clone();
    let event = a.event("secret.written", &checked, origin, json!({ "name": name }));
    let (ws_id, n, st) = (a.ws.id.clone(), name.to_string(), state.clone());
    let actor_id = Some(a.user_id.clone());
    state
        .db
        .write(move |tx| {
            // The workspace may have been deleted since the access check: a 404, not a 500.
            tx.workspace_by_ref(&ws_id)?.ok_or(AppError::NotFound)?;
            let created = tx.secret(&ws_id, &n)?.is_none();
            let row = write_version(tx, &st, &ws_id, &n, value.expose().as_bytes(), actor_id, None, unix_ms(now))?;
            let mut event = event.target(n.clone());
            if let serde_json::Value::Object(m) = &mut event.details {
                m.insert("version".into(), json!(row.current_version));
            }
            audit::record(tx, &key, now, &event)?;
            Ok((row, created))
        })
        .await
}

/// `POST /v1/workspaces/{ws}/secrets/{name}/versions/{version}/restore`: the old value becomes a
/// new version.
pub async fn restore(
    state: &AppState,
    who: &Principal,
    ws: &str,
    name: &str,
    version: i64,
    origin: &Origin,
) -> Result<SecretRow, AppError> {
    let a = access(state, who, ws).await?;
    check_name(name).map_err(|_| AppError::NotFound)?;
    let checked = a.check("write", &secret_resource(name))?;
    let now = state.clock.now();
    let key = state.auditor.clone();
    let event = a.event("secret.restored", &checked, origin, json!({ "name": name, "restored_from": version }));
    let (ws_id, n, st) = (a.ws.id.clone(), name.to_string(), state.clone());
    let actor_id = Some(a.user_id.clone());
    let result = state
        .db
        .write(move |tx| {
            tx.workspace_by_ref(&ws_id)?.ok_or(AppError::NotFound)?;
            let old = tx.secret_version(&ws_id, &n, version)?.ok_or(AppError::NotFound)?;
            let plain = open_version(tx, &st, &old)?;
            let row = write_version(tx, &st, &ws_id, &n, &plain, actor_id, Some(version), unix_ms(now))?;
            let mut event = event.target(n.clone());
            if let serde_json::Value::Object(m) = &mut event.details {
                m.insert("version".into(), json!(row.current_version));
            }
            audit::record(tx, &key, now, &event)?;
            Ok(row)
        })
        .await;
    integrity_audited(state, &a, name, origin, result).await
}

fn open_version(
    tx: &crate::db::Tx<'_>,
    state: &AppState,
    v: &SecretVersionRow,
) -> Result<zeroize::Zeroizing<Vec<u8>>, AppError> {
    let place = format!("secret {} version {}", v.name, v.version);
    let key = state.vault.data_key(tx, &v.data_key_id).map_err(|e| match e {
        OpenError::Integrity { .. } => integrity(&place),
        other => other.into(),
    })?;
    key.open(&v.envelope, &aad_for_secret(&v.workspace_id, &v.name, v.version)).map_err(|_| integrity(&place))
}

/// Marker message of an integrity failure (mapped to 409 with a clear detail, and audited).
const INTEGRITY: &str = "failed its integrity check";

fn integrity(place: &str) -> AppError {
    AppError::Conflict(format!(
        "The stored value of {place} {INTEGRITY}: it was not opened, and the event is audited \
         (vault.integrity_failure). Write a new version or restore an older one."
    ))
}

/// Record `vault.integrity_failure` when `result` is one; pass it through either way.
async fn integrity_audited<T>(
    state: &AppState,
    a: &super::workspaces::Access,
    name: &str,
    origin: &Origin,
    result: Result<T, AppError>,
) -> Result<T, AppError> {
    if let Err(AppError::Conflict(msg)) = &result {
        if msg.contains(INTEGRITY) {
            state.metrics.security_event("vault.integrity_failure");
            tracing::error!(target: "gatehouse::security", workspace = %a.ws.id, secret = %name, "a sealed value failed its integrity check");
            let event = Event::new("vault.integrity_failure", a.actor())
                .workspace(a.ws.id.clone())
                .target(name.to_string())
                .outcome(Outcome::Failure)
                .origin(origin)
                .details(json!({ "name": name }));
            audit::record_alone(&state.db, &state.auditor, state.clock.now(), event).await?;
        }
    }
    result
}

/// `POST /v1/workspaces/{ws}/secrets/{name}/reveal`: the value of the current (or a given)
/// version; audited with who and why.
#[allow(clippy::too_many_arguments)]
pub async fn reveal(
    state: &AppState,
    who: &Principal,
    ws: &str,
    name: &str,
    version: Option<i64>,
    reason: Option<String>,
    origin: &Origin,
) -> Result<(SecretString, i64), AppError> {
    let a = access(state, who, ws).await?;
    check_name(name).map_err(|_| AppError::NotFound)?;
    let checked = a.check("reveal", &secret_resource(name))?;
    if let Some(r) = &reason {
        if r.chars().count() > 500 || r.chars().any(char::is_control) {
            return Err(AppError::Invalid("reason: at most 500 characters, no control characters".into()));
        }
    }
    let now = state.clock.now();
    let key = state.auditor.clone();
    let event = a.event("secret.revealed", &checked, origin, json!({ "name": name, "reason": reason }));
    let (ws_id, n, st) = (a.ws.id.clone(), name.to_string(), state.clone());
    let result = state
        .db
        .write(move |tx| {
            let secret = tx.secret(&ws_id, &n)?.ok_or(AppError::NotFound)?;
            let v = version.unwrap_or(secret.current_version);
            let row = tx.secret_version(&ws_id, &n, v)?.ok_or(AppError::NotFound)?;
            let plain = open_version(tx, &st, &row)?;
            let text = String::from_utf8(plain.to_vec()).map_err(|_| integrity(&format!("secret {n} version {v}")))?;
            let mut event = event.target(n.clone());
            if let serde_json::Value::Object(m) = &mut event.details {
                m.insert("version".into(), json!(v));
            }
            audit::record(tx, &key, now, &event)?;
            Ok((SecretString::new(text), v))
        })
        .await;
    integrity_audited(state, &a, name, origin, result).await
}

/// `DELETE /v1/workspaces/{ws}/secrets/{name}`: every version, zeroed in the file.
pub async fn delete(state: &AppState, who: &Principal, ws: &str, name: &str, origin: &Origin) -> Result<(), AppError> {
    let a = access(state, who, ws).await?;
    check_name(name).map_err(|_| AppError::NotFound)?;
    let checked = a.check("delete", &secret_resource(name))?;
    let now = state.clock.now();
    let key = state.auditor.clone();
    let event = a.event("secret.deleted", &checked, origin, json!({ "name": name }));
    let (ws_id, n) = (a.ws.id.clone(), name.to_string());
    state
        .db
        .write(move |tx| {
            let secret = tx.secret(&ws_id, &n)?.ok_or(AppError::NotFound)?;
            tx.secret_delete(&ws_id, &n)?;
            let mut event = event.target(n.clone());
            if let serde_json::Value::Object(m) = &mut event.details {
                m.insert("versions_destroyed".into(), json!(secret.current_version));
            }
            audit::record(tx, &key, now, &event)?;
            Ok::<_, AppError>(())
        })
        .await?;
    // Old copies of the pages live in the WAL until a checkpoint: fold them back now.
    state.db.checkpoint().await?;
    Ok(())
}
