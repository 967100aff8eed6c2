//! The vault: workspace secrets end to end, known secrets absent from the raw database file, its
//! WAL and a backup, tampered envelopes refused and audited, and master-key rotation (online,
//! killed with SIGKILL half-way, resumed, the old key retired).

use crate::helpers::{gatehouse, run, spawn_app_in, spawn_app_with, test_config, TestApp};
use gatehouse::config::SignupMode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const PW: &str = "correct horse battery staple 42";

async fn open_app_in(dir: tempfile::TempDir) -> TestApp {
    let mut c = test_config(dir.path());
    c.auth.signup = SignupMode::Open;
    c.auth.rate_limit.burst = 10_000;
    c.auth.rate_limit.per_minute = 60_000;
    c.vault.max_secret_bytes = 4096;
    spawn_app_in(dir, c).await
}

async fn open_app() -> TestApp {
    open_app_in(tempfile::tempdir().unwrap()).await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

async fn user(app: &TestApp, email: &str) -> (String, String) {
    let (s, b, _) =
        call(app, Method::POST, "/v1/auth/signup", None, Some(json!({"email": email, "password": PW}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (b["access_token"].as_str().unwrap().to_string(), b["user_id"].as_str().unwrap().to_string())
}

async fn workspace(app: &TestApp, token: &str, slug: &str) -> String {
    let (s, b, _) =
        call(app, Method::POST, "/v1/workspaces", Some(token), Some(json!({"slug": slug, "name": slug}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_string()
}

async fn audit_count(app: &TestApp, action: &str) -> i64 {
    let path = app.config.database_path();
    let action = action.to_string();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM audit_log WHERE action = ?1", [action], |r| r.get(0)).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn secrets_are_versioned_revealed_with_permission_and_destroyed() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let (bob, bob_id) = user(&app, "bob@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let base = format!("/v1/workspaces/{ws}/secrets");

    let (s, b, _) =
        call(&app, Method::PUT, &format!("{base}/DB_PASSWORD"), Some(&alice), Some(json!({"value": "first value"})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["version"], 1);
    let (s, b, _) =
        call(&app, Method::PUT, &format!("{base}/DB_PASSWORD"), Some(&alice), Some(json!({"value": "second value"})))
            .await;
    assert_eq!((s, b["version"].clone()), (StatusCode::OK, json!(2)), "{b}");

    // Listing, metadata and versions never show a value.
    for path in [base.clone(), format!("{base}/DB_PASSWORD"), format!("{base}/DB_PASSWORD/versions")] {
        let (s, b, _) = call(&app, Method::GET, &path, Some(&alice), None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert!(!b.to_string().contains("value\""), "{path}: {b}");
        assert!(!b.to_string().contains("second value") && !b.to_string().contains("first value"), "{b}");
    }
    let (_, versions, _) = call(&app, Method::GET, &format!("{base}/DB_PASSWORD/versions"), Some(&alice), None).await;
    let listed: Vec<i64> = versions.as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(listed, [2, 1]);

    // Reveal: the current version or an older one, never cached, audited with the reason.
    let (s, b, h) = call(
        &app,
        Method::POST,
        &format!("{base}/DB_PASSWORD/reveal"),
        Some(&alice),
        Some(json!({"reason": "rotate the DB user"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"value": "second value", "version": 2}));
    assert_eq!(h["cache-control"], "no-store");
    let (_, b, _) =
        call(&app, Method::POST, &format!("{base}/DB_PASSWORD/reveal"), Some(&alice), Some(json!({"version": 1})))
            .await;
    assert_eq!(b["value"], "first value");
    assert_eq!(audit_count(&app, "secret.revealed").await, 2);
    let path = app.config.database_path();
    let reason: String = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT details FROM audit_log WHERE action = 'secret.revealed' ORDER BY seq LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap()
    })
    .await
    .unwrap();
    assert!(reason.contains("rotate the DB user") && !reason.contains("second value"), "{reason}");

    // Restore an older version: it becomes the newest.
    let (s, b, _) =
        call(&app, Method::POST, &format!("{base}/DB_PASSWORD/versions/1/restore"), Some(&alice), None).await;
    assert_eq!((s, b["version"].clone()), (StatusCode::OK, json!(3)), "{b}");
    let (_, b, _) =
        call(&app, Method::POST, &format!("{base}/DB_PASSWORD/reveal"), Some(&alice), Some(json!({}))).await;
    assert_eq!(b, json!({"value": "first value", "version": 3}));
    let (s, _, _) =
        call(&app, Method::POST, &format!("{base}/DB_PASSWORD/versions/9/restore"), Some(&alice), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Editors write but cannot reveal; viewers only read metadata.
    let members = format!("/v1/workspaces/{ws}/members/{bob_id}");
    call(&app, Method::PUT, &members, Some(&alice), Some(json!({"roles": ["editor"]}))).await;
    let (s, _, _) =
        call(&app, Method::PUT, &format!("{base}/API_TOKEN"), Some(&bob), Some(json!({"value": "bob's"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b, _) = call(&app, Method::POST, &format!("{base}/API_TOKEN/reveal"), Some(&bob), Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("reveal on secret"), "{b}");
    call(&app, Method::PUT, &members, Some(&alice), Some(json!({"roles": ["viewer"]}))).await;
    let (s, _, _) = call(&app, Method::GET, &base, Some(&bob), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) =
        call(&app, Method::PUT, &format!("{base}/API_TOKEN"), Some(&bob), Some(json!({"value": "x"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Bad names and values: 400 naming the field, nothing written.
    for bad in ["9lives", "with space", "a/b", "ü", &"x".repeat(129)] {
        let path = format!("{base}/{}", urlencoding(bad));
        let (s, b, _) = call(&app, Method::PUT, &path, Some(&alice), Some(json!({"value": "v"}))).await;
        assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND, "{bad}: {s} {b}");
    }
    for value in [String::new(), "x".repeat(4097)] {
        let (s, b, _) =
            call(&app, Method::PUT, &format!("{base}/BIG"), Some(&alice), Some(json!({"value": value}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("value"), "{b}");
    }
    let (s, _, _) = call(&app, Method::PUT, &format!("{base}/BIG"), Some(&alice), Some(json!({"value": 42}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a number is not a value");
    let (s, _, _) = call(&app, Method::GET, &format!("{base}/BIG"), Some(&alice), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Delete destroys every version: not even the ciphertexts stay in the file or the WAL.
    let path = app.config.database_path();
    let envelopes: Vec<String> = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT envelope FROM secret_versions WHERE name = 'DB_PASSWORD'").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    })
    .await
    .unwrap();
    assert_eq!(envelopes.len(), 3);
    let (s, _, _) = call(&app, Method::DELETE, &format!("{base}/DB_PASSWORD"), Some(&alice), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for (m, path) in
        [(Method::GET, format!("{base}/DB_PASSWORD")), (Method::POST, format!("{base}/DB_PASSWORD/reveal"))]
    {
        let (s, _, _) = call(&app, m, &path, Some(&alice), Some(json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let path = app.config.database_path();
    let left: i64 = tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM secret_versions WHERE name = 'DB_PASSWORD'", [], |r| r.get(0)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(left, 0);
    let db = app.config.database_path();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let (file, wal) = (read_all(&db), read_all(Path::new(&wal)));
    for e in &envelopes {
        let body = e.rsplit('.').next().unwrap();
        assert!(
            !contains(&file, body.as_bytes()) && !contains(&wal, body.as_bytes()),
            "a destroyed ciphertext remains"
        );
    }
    app.stop().await;
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Known secrets written through every path that takes one are nowhere in the raw database
/// file, its WAL or a backup.
#[tokio::test]
async fn known_secrets_are_in_no_file() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let mut known: Vec<String> = vec![PW.to_string()];
    for i in 0..5 {
        let value = format!("kn0wn-secret-value-{i}-{}", uuid::Uuid::new_v4());
        let (s, _, _) = call(
            &app,
            Method::PUT,
            &format!("/v1/workspaces/{ws}/secrets/S{i}"),
            Some(&alice),
            Some(json!({"value": value})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        known.push(value);
    }
    // A TOTP seed, a refresh token, a personal access token, an API key.
    let (s, e, _) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&alice), Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    known.push(e["secret"].as_str().unwrap().to_string());
    let (_, l, _) =
        call(&app, Method::POST, "/v1/auth/login", None, Some(json!({"email": "alice@example.com", "password": PW})))
            .await;
    known.push(l["refresh_token"].as_str().unwrap().to_string());
    let expires = (crate::helpers::test_time() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, t, _) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&alice), Some(json!({"name": "t", "expires_at": expires})))
            .await;
    known.push(t["token"].as_str().unwrap().to_string());
    let (_, k, _) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{ws}/api-keys"),
        Some(&alice),
        Some(json!({"name": "k", "rules": []})),
    )
    .await;
    known.push(k["key"].as_str().unwrap().to_string());
    assert!(known.iter().all(|k| k.len() >= 16), "{known:?}");

    let backup = app.dir.path().join("backup.db");
    app.state.db.backup_to(backup.clone()).await.unwrap();
    let db = app.config.database_path();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let files = [read_all(&db), read_all(Path::new(&wal)), read_all(&backup)];
    assert!(!files[0].is_empty() && !files[2].is_empty());
    for secret in &known {
        for (i, bytes) in files.iter().enumerate() {
            assert!(!contains(bytes, secret.as_bytes()), "a known secret is in file #{i} (db, wal, backup)");
        }
    }
    app.stop().await;
}

/// A tampered ciphertext, nonce or AAD does not open: a clear 409, an audit event, and the rest
/// keeps working. `vault verify` names the broken value and exits non-zero.
#[tokio::test]
async fn tampered_envelopes_are_refused_and_audited() {
    let app = open_app().await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    let base = format!("/v1/workspaces/{ws}/secrets");
    for (name, value) in [("A", "value of a"), ("B", "value of b"), ("C", "value of c")] {
        call(&app, Method::PUT, &format!("{base}/{name}"), Some(&alice), Some(json!({"value": value}))).await;
    }
    let path = app.config.database_path();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        // A: one flipped character of the ciphertext. B: C's envelope copied into B's row.
        let env: String = conn.query_row("SELECT envelope FROM secret_versions WHERE name = 'A'", [], |r| r.get(0)).unwrap();
        let mut chars: Vec<char> = env.chars().collect();
        let i = chars.len() - 5;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        conn.execute("UPDATE secret_versions SET envelope = ?1 WHERE name = 'A'", [tampered]).unwrap();
        conn.execute(
            "UPDATE secret_versions SET envelope = (SELECT envelope FROM secret_versions WHERE name = 'C') WHERE name = 'B'",
            [],
        )
        .unwrap();
    })
    .await
    .unwrap();
    for name in ["A", "B"] {
        let (s, b, _) = call(&app, Method::POST, &format!("{base}/{name}/reveal"), Some(&alice), Some(json!({}))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("integrity check"), "{b}");
        assert!(!b.to_string().contains("value of c") && !b.to_string().contains("value of a"), "{b}");
    }
    assert_eq!(audit_count(&app, "vault.integrity_failure").await, 2);
    let (s, b, _) = call(&app, Method::POST, &format!("{base}/C/reveal"), Some(&alice), Some(json!({}))).await;
    assert_eq!((s, b["value"].clone()), (StatusCode::OK, json!("value of c")));
    let (s, _, _) = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);

    let data = app.config.data_dir.clone();
    let (code, out, err) = run(gatehouse(&["vault", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("secret A version 1") && err.contains("secret B version 1"), "{err}");
    for v in ["value of a", "value of b", "value of c"] {
        assert!(!err.contains(v) && !out.contains(v), "{out}{err}");
    }
    app.stop().await;
}

fn db_count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// Rotate the master key while a server runs, kill the rotation with SIGKILL half-way, run it
/// again to finish, retire the old key: nothing is lost, and the server never stops answering.
#[tokio::test]
async fn master_key_rotation_survives_a_kill_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app_in(dir).await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let mut workspaces = Vec::new();
    for i in 0..120 {
        let ws = workspace(&app, &alice, &format!("ws-{i:03}")).await;
        if i % 10 == 0 {
            call(
                &app,
                Method::PUT,
                &format!("/v1/workspaces/{ws}/secrets/TOKEN"),
                Some(&alice),
                Some(json!({"value": format!("token {i}")})),
            )
            .await;
        }
        workspaces.push(ws);
    }
    let data = app.config.data_dir.clone();
    let db = app.config.database_path();
    let total = db_count(&db, "SELECT count(*) FROM vault_keys");
    assert!(total >= 123, "{total}");
    let old_id = app.state.vault.active_id();

    // One data key per transaction, so that the kill lands in the middle.
    let mut cmd = gatehouse(&["keys", "rotate-master", "--data-dir", data.to_str().unwrap()]);
    cmd.env("GATEHOUSE_VAULT__REWRAP_BATCH_SIZE", "1");
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let moved = |db: &Path| {
        db_count(
            db,
            "SELECT count(*) FROM vault_keys WHERE kek_id = (SELECT value FROM meta WHERE key = 'vault_rotation_target')",
        )
    };
    let started = std::time::Instant::now();
    loop {
        let n = moved(&db);
        if n >= 5 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the rotation did not start");
        assert!(child.try_wait().unwrap().is_none(), "the rotation finished before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let half = moved(&db);
    assert!(half > 0 && half < total, "killed half-way: {half} of {total}");

    // Meanwhile the server keeps answering, old- and new-wrapped keys alike.
    for (i, ws) in workspaces.iter().enumerate().step_by(10) {
        let (s, b, _) = call(
            &app,
            Method::POST,
            &format!("/v1/workspaces/{ws}/secrets/TOKEN/reveal"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
        assert_eq!((s, b["value"].clone()), (StatusCode::OK, json!(format!("token {i}"))), "{b}");
    }

    // The old key cannot be retired while data keys still use it; the next run finishes.
    let (code, _, err) = run(gatehouse(&["keys", "retire", &old_id, "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("rotate-master"), "{err}");
    let (code, out, err) = run(gatehouse(&["keys", "rotate-master", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resuming") && out.contains("rotated"), "{out}");
    assert_eq!(
        db_count(
            &db,
            "SELECT count(*) FROM vault_keys WHERE kek_id = (SELECT kek_id FROM vault_keys WHERE id = 'audit')"
        ),
        total
    );
    assert_eq!(db_count(&db, "SELECT count(*) FROM meta WHERE key = 'vault_rotation_target'"), 0);
    let (code, out, err) = run(gatehouse(&["vault", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");

    // The running server picks the new key up; then the old key can go.
    gatehouse::startup::housekeeping_round(&app.state).await;
    assert_ne!(app.state.vault.active_id(), old_id);
    // A path instead of an id, or a file that does not hold the key it is named after: refused.
    let (code, _, err) = run(gatehouse(&["keys", "retire", "../master", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("not a master key id"), "{err}");
    assert!(data.join("master.key").exists());
    let decoy = data.join("master-keys").join("mk-0000000000000000.key");
    std::fs::copy(data.join("master-keys").join(format!("{old_id}.key")), &decoy).unwrap();
    let (code, _, err) =
        run(gatehouse(&["keys", "retire", "mk-0000000000000000", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("does not hold key"), "{err}");
    std::fs::remove_file(&decoy).unwrap();
    let (code, out, err) = run(gatehouse(&["keys", "retire", &old_id, "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let (s, _, _) =
        call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "after-rotation", "name": "x"})))
            .await;
    assert_eq!(s, StatusCode::CREATED);
    let dir = app.stop().await;

    // A restart with the new key alone opens everything, and the audit chain still verifies.
    let mut c = test_config(dir.path());
    c.auth.signup = SignupMode::Open;
    let app = spawn_app_in(dir, c).await;
    for (i, ws) in workspaces.iter().enumerate().step_by(10) {
        let (_, l, _) = call(
            &app,
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "alice@example.com", "password": PW})),
        )
        .await;
        let t = l["access_token"].as_str().unwrap().to_string();
        let (s, b, _) =
            call(&app, Method::POST, &format!("/v1/workspaces/{ws}/secrets/TOKEN/reveal"), Some(&t), Some(json!({})))
                .await;
        assert_eq!((s, b["value"].clone()), (StatusCode::OK, json!(format!("token {i}"))), "{b}");
    }
    let report =
        gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![]).await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(audit_count(&app, "vault.master_key.rotated").await, 1);
    assert_eq!(audit_count(&app, "vault.master_key.retired").await, 1);
    app.stop().await;
}

/// A master key that is not the database's refuses start-up and changes nothing on disk.
#[tokio::test]
async fn a_wrong_master_key_refuses_start_and_modifies_nothing() {
    let app = spawn_app_with(|_| {}).await;
    let data = app.config.data_dir.clone();
    let dir = app.stop().await;
    let key = data.join("master.key");
    std::fs::remove_file(&key).unwrap();
    gatehouse::crypto::MasterKey::generate(&key).unwrap();
    let db = data.join("gatehouse.db");
    let before = std::fs::read(&db).unwrap();
    let listing = |d: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let files_before = listing(&data);
    let (code, _, err) = run(gatehouse(&["check-config", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("does not belong to database"), "{err}");
    let (code, _, err) = run(gatehouse(&["vault", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("does not belong"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database is untouched");
    assert_eq!(listing(&data), files_before);
    drop(dir);
}

/// A workspace data key that reached `vault.data_key_max_seals` is replaced; the background
/// re-seals what it sealed and drops it. Deleting the workspace deletes its data keys.
#[tokio::test]
async fn data_keys_rotate_by_seal_count_and_die_with_their_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.auth.signup = SignupMode::Open;
    c.vault.data_key_max_seals = 3;
    let app = spawn_app_in(dir, c).await;
    let (alice, _) = user(&app, "alice@example.com").await;
    let ws = workspace(&app, &alice, "acme").await;
    for i in 1..=4 {
        let (s, _, _) = call(
            &app,
            Method::PUT,
            &format!("/v1/workspaces/{ws}/secrets/K"),
            Some(&alice),
            Some(json!({"value": format!("v{i}")})),
        )
        .await;
        assert!(s.is_success());
    }
    let db = app.config.database_path();
    let keys_of_ws = format!("SELECT count(*) FROM vault_keys WHERE workspace_id = '{ws}'");
    assert_eq!(db_count(&db, &keys_of_ws), 2, "4 seals at 3 per key");
    assert_eq!(db_count(&db, "SELECT count(DISTINCT data_key_id) FROM secret_versions"), 2);
    gatehouse::startup::housekeeping_round(&app.state).await;
    assert_eq!(
        db_count(&db, "SELECT count(*) FROM vault_keys WHERE retired_at IS NOT NULL AND purpose = 'workspace'"),
        0
    );
    assert_eq!(
        db_count(&db, &format!("SELECT count(*) FROM secret_versions v JOIN vault_keys k ON k.id = v.data_key_id WHERE k.workspace_id = '{ws}' AND k.retired_at IS NULL")),
        4,
        "every version under a live key"
    );
    for v in 1..=4 {
        let (s, b, _) = call(
            &app,
            Method::POST,
            &format!("/v1/workspaces/{ws}/secrets/K/reveal"),
            Some(&alice),
            Some(json!({"version": v})),
        )
        .await;
        assert_eq!((s, b["value"].clone()), (StatusCode::OK, json!(format!("v{v}"))), "{b}");
    }
    let (s, _, _) = call(&app, Method::DELETE, &format!("/v1/workspaces/{ws}"), Some(&alice), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(db_count(&db, &keys_of_ws), 0, "the key material went with the workspace");
    assert_eq!(db_count(&db, "SELECT count(*) FROM secret_versions"), 0);
    app.stop().await;
}

/// The master key may come from an environment variable (named by `vault.master_key_env`).
#[tokio::test]
async fn the_master_key_can_come_from_an_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = run(gatehouse(&["init", "--data-dir", d]));
    assert_eq!(code, 0, "{out}{err}");
    let hex = std::fs::read_to_string(data.join("master.key")).unwrap();
    std::fs::rename(data.join("master.key"), dir.path().join("elsewhere.key")).unwrap();
    let with_env = |set: bool, args: &[&str]| {
        let mut cmd = gatehouse(args);
        cmd.env("GATEHOUSE_VAULT__MASTER_KEY_ENV", "GH_TEST_MASTER_KEY");
        if set {
            cmd.env("GH_TEST_MASTER_KEY", hex.trim());
        }
        run(cmd)
    };
    let (code, out, err) = with_env(true, &["vault", "verify", "--data-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("vault OK"), "{out}");
    let (code, _, err) = with_env(false, &["vault", "verify", "--data-dir", d]);
    assert_ne!(code, 0);
    assert!(err.contains("GH_TEST_MASTER_KEY"), "{err}");
    let (code, _, err) = with_env(true, &["keys", "rotate-master", "--data-dir", d]);
    assert_ne!(code, 0, "a key in a variable cannot be replaced by Gatehouse");
    assert!(err.contains("environment variable GH_TEST_MASTER_KEY"), "{err}");
    assert!(!err.contains(hex.trim()), "the key itself is never printed");
}
