//! The binary: zero-configuration start, refusal of bad input without touching the disk,
//! backup and restore, the break-glass admin, systemd notification and draining on SIGTERM.

use crate::helpers::{client, files_below, gatehouse, run, serve_cmd, ServeProcess};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn password_in(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:").map(|p| p.trim().to_string()))
        .expect("a one-time password is printed")
}

/// Every file below `dir` with its bytes, to prove a refused start wrote nothing.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = files_below(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    files.sort();
    files
}

#[test]
fn version_is_printed() {
    let (code, out, _) = run(gatehouse(&["--version"]));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("gatehouse {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn zero_config_start_creates_everything_once_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    // No --data-dir: ./gatehouse-data in the working directory.
    let mut cmd = gatehouse(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.current_dir(dir.path());
    let server = ServeProcess::start(cmd);
    assert!(server.base.starts_with("https://127.0.0.1:"));
    let out = server.stdout.lock().unwrap().clone();
    assert!(out.contains("admin@localhost"));
    assert!(out.contains(&format!("Playground: {}/docs", server.base)));
    let password = password_in(&out);
    assert!(password.len() >= 20);
    let (status, _, err) = server.terminate();
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains(&password), "the password never reaches the log");

    let data = dir.path().join("gatehouse-data");
    let key = data.join("master.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(data.join("gatehouse.db")).unwrap().permissions().mode() & 0o077, 0);
    assert!(data.join("tls/cert.pem").exists());
    for (path, bytes) in snapshot(&data) {
        assert!(
            !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
            "the one-time password is written nowhere: found in {}",
            path.display()
        );
    }
    let key_before = std::fs::read(&key).unwrap();
    let cert_before = std::fs::read(data.join("tls/cert.pem")).unwrap();

    let mut cmd = gatehouse(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.current_dir(dir.path());
    let server = ServeProcess::start(cmd);
    let out = server.stdout.lock().unwrap().clone();
    assert!(!out.contains("password:"), "no second admin: {out}");
    server.terminate();
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
    assert_eq!(std::fs::read(data.join("tls/cert.pem")).unwrap(), cert_before);
}

/// Start once to create a data folder, and return it.
fn initialized() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = run(gatehouse(&["init", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    (dir, data)
}

fn refused(cmd: std::process::Command, data: &Path) -> String {
    let before = snapshot(data);
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0, "start must be refused");
    assert_eq!(snapshot(data), before, "a refused start changes nothing on disk");
    let line = err.lines().last().unwrap_or_default().to_string();
    assert!(line.starts_with("gatehouse: "), "{err}");
    line
}

#[test]
fn loose_master_key_permissions_are_refused() {
    let (_dir, data) = initialized();
    let key = data.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let line = refused(serve_cmd(&data, &[]), &data);
    assert!(line.contains(key.to_str().unwrap()) && line.contains("chmod 600"), "{line}");
}

#[test]
fn a_wrong_master_key_is_refused() {
    let (_dir, data) = initialized();
    std::fs::write(data.join("master.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    let line = refused(serve_cmd(&data, &[]), &data);
    assert!(line.contains("does not belong to database"), "{line}");
    assert!(line.contains("master.key"), "{line}");
}

#[test]
fn a_missing_master_key_for_an_existing_database_is_refused() {
    let (_dir, data) = initialized();
    std::fs::remove_file(data.join("master.key")).unwrap();
    let line = refused(serve_cmd(&data, &[]), &data);
    assert!(line.contains("master key") && line.contains("missing"), "{line}");
}

#[test]
fn a_corrupt_database_is_refused() {
    let (_dir, data) = initialized();
    let db = data.join("gatehouse.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(100).take(4000) {
        *b = 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let line = refused(serve_cmd(&data, &[]), &data);
    assert!(line.contains("gatehouse.db"), "{line}");
}

#[test]
fn a_database_from_a_newer_gatehouse_is_refused() {
    let (_dir, data) = initialized();
    {
        let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
        conn.pragma_update(None, "user_version", 9999).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    let line = refused(serve_cmd(&data, &[]), &data);
    assert!(line.contains("newer") && line.contains("gatehouse.db"), "{line}");
}

#[test]
fn bad_configuration_is_refused_naming_the_file_and_key() {
    let (dir, data) = initialized();
    let cfg = dir.path().join("bad.toml");
    let data_s = data.to_str().unwrap();

    std::fs::write(&cfg, "[server\nlisten = 1").unwrap();
    let before = snapshot(&data);
    let (code, _, err) = run(gatehouse(&["serve", "--data-dir", data_s, "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(err.contains("bad.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    std::fs::write(&cfg, "[server]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, err) = run(gatehouse(&["serve", "--data-dir", data_s, "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(err.contains("server.listen_adress") && err.contains("bad.toml"), "{err}");

    let (code, _, err) = run(gatehouse(&["serve", "--data-dir", data_s, "--config", "/nonexistent/gatehouse.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/gatehouse.toml"), "{err}");

    let fresh = dir.path().join("fresh");
    let mut cmd = gatehouse(&["serve", "--data-dir", fresh.to_str().unwrap()]);
    cmd.env("GATEHOUSE_DATABASE__PATH", "/nonexistent/folder/gatehouse.db");
    let (code, _, err) = run(cmd);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/folder"), "{err}");
    assert!(!fresh.exists(), "nothing created for a start that cannot open its database");

    let mut cmd = gatehouse(&["serve", "--data-dir", data_s]);
    cmd.env("GATEHOUSE_SERVER__LISTEN", "not-an-address");
    let (code, _, err) = run(cmd);
    assert_eq!(code, 2);
    assert!(err.contains("server.listen"), "{err}");

    std::fs::write(&cfg, "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n")
        .unwrap();
    let (code, _, err) = run(gatehouse(&["serve", "--data-dir", data_s, "--config", cfg.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    std::fs::write(&cfg, "[tls]\nenabled = false\n[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let (code, _, err) = run(gatehouse(&["check-config", "--data-dir", data_s, "--config", cfg.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(snapshot(&data), before, "nothing changed on disk");

    let (code, out, err) = run(gatehouse(&["check-config", "--data-dir", data_s]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"), "{out}");
}

#[test]
fn environment_and_credentials_directory_are_read() {
    let (dir, data) = initialized();
    // The master key through a systemd credential, the data folder through the environment.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::rename(data.join("master.key"), creds.join("master_key")).unwrap();
    let mut cmd = gatehouse(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.env("GATEHOUSE_DATA_DIR", &data).env("CREDENTIALS_DIRECTORY", &creds).env("GATEHOUSE_LOG__FORMAT", "json");
    let server = ServeProcess::start(cmd);
    std::thread::sleep(Duration::from_millis(200));
    let err = server.stderr.lock().unwrap().clone();
    assert!(err.lines().any(|l| l.starts_with('{')), "JSON logs from the environment: {err}");
    let (status, _, _) = server.terminate();
    assert!(status.success());
    assert!(!data.join("master.key").exists(), "no key generated when the credential is given");
}

#[test]
fn backup_while_running_then_restore_when_stopped() {
    let (dir, data) = initialized();
    let data_s = data.to_str().unwrap();
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let backup = dir.path().join("backup.db");
    let (code, out, err) = run(gatehouse(&["backup", backup.to_str().unwrap(), "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = rusqlite::Connection::open(&backup).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let started: i64 =
        conn.query_row("SELECT count(*) FROM audit_log WHERE action = 'server.started'", [], |r| r.get(0)).unwrap();
    assert_eq!(started, 1, "the backup holds what the running server wrote");
    drop(conn);
    let (code, _, err) = run(gatehouse(&["backup", backup.to_str().unwrap(), "--data-dir", data_s]));
    assert_ne!(code, 0, "never overwrites a file");
    assert!(err.contains("already exists"), "{err}");

    let (code, _, err) = run(gatehouse(&["restore", backup.to_str().unwrap(), "--data-dir", data_s]));
    assert_ne!(code, 0);
    assert!(err.contains("in use"), "restore refuses while the server runs: {err}");
    let (status, _, _) = server.terminate();
    assert!(status.success());

    // A corrupt file is refused before anything is touched.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"SQLite format 3\0 but not really a database at all, just junk bytes").unwrap();
    let before = snapshot(&data);
    let (code, _, err) = run(gatehouse(&["restore", junk.to_str().unwrap(), "--data-dir", data_s]));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to restore"), "{err}");
    assert_eq!(snapshot(&data), before);

    // The live database is damaged: that is what restore is for.
    std::fs::write(data.join("gatehouse.db"), vec![0x42u8; 8192]).unwrap();
    let (code, out, err) = run(gatehouse(&["restore", backup.to_str().unwrap(), "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 0, "the restored chain verifies: {out}{err}");
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn add_admin_creates_then_resets_and_is_audited() {
    let (dir, data) = initialized();
    let data_s = data.to_str().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let add_admin = |email: &str| {
        run(gatehouse(&[
            "users",
            "add-admin",
            "--email",
            email,
            "--password-file",
            pw.to_str().unwrap(),
            "--data-dir",
            data_s,
        ]))
    };
    let (code, out, err) = add_admin(" Ops@Example.COM ");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created platform admin Ops@example.com"), "{out}");
    let (code, out, _) = add_admin("ops@EXAMPLE.com");
    assert_eq!(code, 0);
    assert!(out.contains("reset the password of ops@example.com"), "emails match without case: {out}");
    let (code, out, _) = add_admin("Ops@example.com");
    assert_eq!(code, 0);
    assert!(out.contains("reset the password of Ops@example.com"), "{out}");

    std::fs::write(&pw, "short\n").unwrap();
    let (code, _, err) = add_admin("x@example.com");
    assert_ne!(code, 0);
    assert!(err.contains("at least 12"), "{err}");

    let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
    let hash: String =
        conn.query_row("SELECT password_hash FROM users WHERE email = 'Ops@example.com'", [], |r| r.get(0)).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    let mut stmt =
        conn.prepare("SELECT action, actor_type FROM audit_log WHERE action LIKE 'user.admin.%' ORDER BY seq").unwrap();
    let rows: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        rows,
        [
            ("user.admin.created".to_string(), "system".to_string()),
            ("user.admin.created".to_string(), "operator".to_string()),
            ("user.admin.password_reset".to_string(), "operator".to_string()),
            ("user.admin.password_reset".to_string(), "operator".to_string()),
        ]
    );
    let (code, _, _) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 0);
}

#[test]
fn notifies_systemd_when_ready_and_drains_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut cmd = serve_cmd(&data, &[]);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let server = ServeProcess::start(cmd);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");

    // An in-flight request: a streamed body that is still arriving when SIGTERM comes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = server.url("/v1/slow-upload");
    let pending = rt.spawn(async move {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        client().post(url).body(reqwest::Body::wrap_stream(stream)).send().await.map(|r| r.status().as_u16())
    });
    rt.block_on(async {
        tx.send(Ok(b"first part ".to_vec())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    server.signal("TERM");
    let n = sock.recv(&mut buf).unwrap();
    assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("STOPPING=1"));
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(Ok(b"last part".to_vec())).await.unwrap();
        drop(tx);
    });
    let status = rt.block_on(pending).unwrap().expect("the in-flight request is answered");
    assert_eq!(status, 404, "the request was completed, not cut");
    let mut server = server;
    let exit = server.wait_timeout(Duration::from_secs(20)).expect("exits");
    assert!(exit.success(), "exit 0 after SIGTERM: {exit:?}");
}

#[test]
fn a_busy_port_on_first_start_creates_no_admin_whose_password_nobody_saw() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().to_string();
    let (code, out, err) = run(gatehouse(&["serve", "--listen", &busy, "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&busy) && err.contains("--listen"), "{err}");
    assert!(!out.contains("password:"), "{out}");
    drop(holder);
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let out = server.stdout.lock().unwrap().clone();
    password_in(&out);
    server.terminate();
}

#[test]
fn keys_rotate_publishes_the_next_key_to_a_running_server() {
    let (_dir, data) = initialized();
    let data_s = data.to_str().unwrap();
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kids = |url: String| -> Vec<String> {
        rt.block_on(async {
            let v: serde_json::Value = client().get(url).send().await.unwrap().json().await.unwrap();
            v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
        })
    };
    let before = kids(server.url("/.well-known/jwks.json"));
    assert_eq!(before.len(), 1);
    let (code, out, err) = run(gatehouse(&["keys", "rotate", "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("published signing key") && out.contains("ES256"), "{out}");
    // The running server publishes it at its next housekeeping round (every 15 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let now = kids(server.url("/.well-known/jwks.json"));
        if now.len() == 2 {
            assert!(now.contains(&before[0]), "the current key stays published");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new key never appeared: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (status, _, _) = server.terminate();
    assert!(status.success());
    let (code, out, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
    let rotated: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'key.signing.rotated' AND actor_type = 'operator'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rotated, 1);
}
