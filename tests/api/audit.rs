//! The audit chain: start-up and admin events are recorded and chained; a row edited with plain
//! SQL, or a deleted row, is detected and named by `gatehouse audit verify`.

use crate::helpers::{gatehouse, run, serve_cmd, spawn_app, ServeProcess};
use gatehouse::domain::audit;

fn db_path(data: &std::path::Path) -> std::path::PathBuf {
    data.join("gatehouse.db")
}

fn actions(db: &std::path::Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT seq, action FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn start_and_admin_creation_are_chained() {
    let app = spawn_app().await;
    assert!(app.bootstrap_password.is_some());
    let report = audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![]).await.unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.records >= 2, "{report:?}");
    let data = app.config.data_dir.clone();
    let _dir = app.stop().await;
    let acts: Vec<String> = actions(&db_path(&data)).into_iter().map(|(_, a)| a).collect();
    assert_eq!(acts, ["user.admin.created", "key.signing.created", "server.started", "server.stopped"]);
}

#[test]
fn tampering_with_one_row_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let server = ServeProcess::start(serve_cmd(&data, &[]));
    let (status, _, _) = server.terminate();
    assert!(status.success());
    for _ in 0..2 {
        let server = ServeProcess::start(serve_cmd(&data, &[]));
        server.terminate();
    }
    let (code, out, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain OK: 8 records verified"), "{out}");

    // An attacker with database access rewrites one record.
    let db = db_path(&data);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let updated = conn.execute("UPDATE audit_log SET details = '{\"listen\":\"0.0.0.0:1\"}' WHERE seq = 4", []);
        assert!(updated.is_err(), "the table refuses updates");
        conn.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
        conn.execute("UPDATE audit_log SET details = '{\"listen\":\"0.0.0.0:1\"}' WHERE seq = 4", []).unwrap();
    }
    let (code, _, err) = run(gatehouse(&["audit", "verify", "--data-dir", data_s]));
    assert_eq!(code, 1);
    assert!(err.contains("broken at sequence 4"), "{err}");

    // Recomputing a plain SHA-256 does not help: the chain is keyed.
    // Deleting a record instead of editing it is detected too.
    let dir2 = tempfile::tempdir().unwrap();
    let data2 = dir2.path().join("data");
    let server = ServeProcess::start(serve_cmd(&data2, &[]));
    server.terminate();
    let server = ServeProcess::start(serve_cmd(&data2, &[]));
    server.terminate();
    let conn = rusqlite::Connection::open(db_path(&data2)).unwrap();
    assert!(conn.execute("DELETE FROM audit_log WHERE seq = 2", []).is_err(), "the table refuses deletes");
    conn.execute_batch("DROP TRIGGER audit_log_no_delete").unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq = 2", []).unwrap();
    drop(conn);
    let (code, _, err) = run(gatehouse(&["audit", "verify", "--data-dir", data2.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("broken at sequence 2"), "{err}");
}

// --- the audit API, integrity attacks, retention, fail-closed ------------------------------

mod api {
    use crate::helpers::{gatehouse, run, spawn_app_in, test_config, TestApp};
    use gatehouse::config::SignupMode;
    use reqwest::{Method, StatusCode};
    use serde_json::{json, Value};

    const PW: &str = "correct horse battery staple 42";

    async fn app_with(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(dir.path());
        c.auth.signup = SignupMode::Open;
        c.auth.rate_limit.burst = 10_000;
        c.auth.rate_limit.per_minute = 60_000;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        tweak(&mut c);
        spawn_app_in(dir, c).await
    }

    async fn call(
        app: &TestApp,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = app.client.request(method, app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
        call(app, Method::GET, path, Some(token), None).await
    }

    async fn signup(app: &TestApp, email: &str) -> (String, String) {
        let (s, b) =
            call(app, Method::POST, "/v1/auth/signup", None, Some(json!({"email": email, "password": PW}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        (b["access_token"].as_str().unwrap().to_string(), b["user_id"].as_str().unwrap().to_string())
    }

    async fn admin(app: &TestApp) -> String {
        let pw = app.bootstrap_password.clone().unwrap();
        let (s, b) =
            call(app, Method::POST, "/v1/auth/login", None, Some(json!({"email": "admin@localhost", "password": pw})))
                .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["access_token"].as_str().unwrap().to_string()
    }

    async fn failed_login(app: &TestApp, email: &str, ip: &str) {
        let resp = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("X-Forwarded-For", ip)
            .json(&json!({"email": email, "password": "wrong password entirely"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    fn items(b: &Value) -> Vec<Value> {
        b["items"].as_array().unwrap().clone()
    }

    fn problem_names(b: &Value, field: &str) {
        assert!(b["detail"].as_str().unwrap_or("").starts_with(&format!("{field}:")), "{b}");
    }

    #[tokio::test]
    async fn admins_query_with_every_filter_and_a_cursor_bound_to_its_query() {
        let app = app_with(|_| {}).await;
        let root = admin(&app).await;
        let (alice, alice_id) = signup(&app, "alice@example.com").await;
        for ip in ["10.1.1.1", "10.1.1.1", "10.2.2.2"] {
            failed_login(&app, "alice@example.com", ip).await;
        }
        let (s, ws) =
            call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "acme", "name": "Acme"})))
                .await;
        assert_eq!(s, StatusCode::CREATED, "{ws}");

        // Action prefix: `auth.` is the category; `auth.login` everything below it.
        let (s, b) = get(&app, "/v1/audit?action=auth.login.failed", &root).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(items(&b).len(), 3);
        assert!(items(&b).iter().all(|r| r["outcome"] == "failure" && r["action"] == "auth.login.failed"));
        let (_, b) = get(&app, "/v1/audit?action=auth.", &root).await;
        assert!(items(&b).len() >= 4 && items(&b).iter().all(|r| r["action"].as_str().unwrap().starts_with("auth.")));
        let (_, b) = get(&app, "/v1/audit?action=auth.login", &root).await;
        assert!(items(&b).iter().all(|r| r["action"].as_str().unwrap().starts_with("auth.login.")), "{b}");
        // IP, outcome, actor, target, workspace.
        let (_, b) = get(&app, "/v1/audit?ip=10.1.1.1&outcome=failure", &root).await;
        assert_eq!(items(&b).len(), 2, "{b}");
        let (_, b) = get(&app, &format!("/v1/audit?actor={alice_id}"), &root).await;
        assert!(items(&b).iter().any(|r| r["action"] == "workspace.created"), "{b}");
        assert!(items(&b).iter().all(|r| r["actor_id"] == alice_id.as_str()));
        let ws_id = ws["id"].as_str().unwrap();
        let (_, b) = get(&app, "/v1/audit?workspace=acme", &root).await;
        assert!(!items(&b).is_empty() && items(&b).iter().all(|r| r["workspace_id"] == ws_id), "{b}");
        let (_, b) = get(&app, &format!("/v1/audit?target={ws_id}&action=workspace."), &root).await;
        assert_eq!(items(&b).len(), 1, "{b}");
        // Time range: everything happened at the test clock's instant.
        let (_, b) = get(&app, "/v1/audit?since=2030-01-01T00:00:00Z", &root).await;
        assert!(items(&b).is_empty(), "{b}");
        let (_, b) = get(&app, "/v1/audit?until=2000-01-01T00:00:00Z", &root).await;
        assert!(items(&b).is_empty(), "{b}");
        let (_, b) = get(
            &app,
            "/v1/audit?since=2000-01-01T00:00:00Z&until=2030-01-01T00:00:00Z&action=auth.login.failed",
            &root,
        )
        .await;
        assert_eq!(items(&b).len(), 3);

        // Pages: newest first, no record twice, none skipped.
        let (_, all) = get(&app, "/v1/audit?limit=1000", &root).await;
        let all: Vec<i64> = items(&all).iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert!(all.windows(2).all(|w| w[0] > w[1]), "{all:?}");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/audit?limit=3&cursor={c}"),
                None => "/v1/audit?limit=3".to_string(),
            };
            let (s, b) = get(&app, &path, &root).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            seen.extend(items(&b).iter().map(|r| r["seq"].as_i64().unwrap()).filter(|s| *s <= all[0]));
            match b["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, all);

        // A cursor from another query, bad filters, a reversed range: 400 naming the field.
        let (_, b) = get(&app, "/v1/audit?limit=1&action=auth.", &root).await;
        let other = b["next_cursor"].as_str().unwrap().to_string();
        let (s, b) = get(&app, &format!("/v1/audit?limit=1&action=user.&cursor={other}"), &root).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        problem_names(&b, "cursor");
        for (query, field) in [
            ("since=yesterday", "since"),
            ("until=2026-13-01T00:00:00Z", "until"),
            ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
            ("outcome=maybe", "outcome"),
            ("ip=10.0.0.300", "ip"),
            ("action=AUTH", "action"),
            ("action=.auth", "action"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("cursor=abc", "cursor"),
            ("workspace=no-such-workspace", "workspace"),
        ] {
            let (s, b) = get(&app, &format!("/v1/audit?{query}"), &root).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
            problem_names(&b, field);
            assert_eq!(b["status"], 400);
        }

        // Only platform administrators; the queries themselves are recorded.
        let (s, _) = get(&app, "/v1/audit", &alice).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(&app, Method::GET, "/v1/audit", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (_, b) = get(&app, "/v1/audit?action=audit.queried&limit=1000", &root).await;
        assert!(items(&b).len() >= 10, "{b}");
        assert!(items(&b).iter().any(|r| r["details"]["action"] == "auth.login.failed"), "{b}");
        app.stop().await;
    }

    #[tokio::test]
    async fn a_workspace_audit_log_shows_that_workspace_only_to_those_allowed() {
        let app = app_with(|_| {}).await;
        let (alice, _) = signup(&app, "alice@example.com").await;
        let (bob, bob_id) = signup(&app, "bob@example.com").await;
        let (carol, carol_id) = signup(&app, "carol@example.com").await;
        for (t, slug) in [(&alice, "alpha"), (&bob, "bravo")] {
            let (s, _) =
                call(&app, Method::POST, "/v1/workspaces", Some(t), Some(json!({"slug": slug, "name": slug}))).await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let (s, _) = call(
            &app,
            Method::PUT,
            &format!("/v1/workspaces/alpha/members/{bob_id}"),
            Some(&alice),
            Some(json!({"roles": ["viewer"]})),
        )
        .await;
        assert!(s.is_success(), "{s}");
        let (s, b) = get(&app, "/v1/workspaces/alpha/audit", &alice).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let alpha: Vec<Value> = items(&b);
        assert!(alpha.iter().any(|r| r["action"] == "member.added"));
        let alpha_id = alpha[0]["workspace_id"].as_str().unwrap().to_string();
        assert!(alpha.iter().all(|r| r["workspace_id"] == alpha_id.as_str()), "{b}");
        // A viewer has no `read` on `audit`; an outsider does not see the workspace at all.
        let (s, b) = get(&app, "/v1/workspaces/alpha/audit", &bob).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b) = get(&app, "/v1/workspaces/alpha/audit", &carol).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        assert!(!b.to_string().contains(&alpha_id));
        // A custom role with `read` on `audit` opens it.
        let (s, b) = call(
            &app,
            Method::POST,
            "/v1/workspaces/alpha/roles",
            Some(&alice),
            Some(
                json!({"name": "auditor", "rules": [{"effect": "allow", "actions": ["read"], "subjects": ["audit"]}]}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, _) = call(
            &app,
            Method::PUT,
            &format!("/v1/workspaces/alpha/members/{carol_id}"),
            Some(&alice),
            Some(json!({"roles": ["auditor"]})),
        )
        .await;
        assert!(s.is_success(), "{s}");
        let (s, b) = get(&app, "/v1/workspaces/alpha/audit?action=role.", &carol).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(items(&b).len(), 1);
        // The read is recorded in the workspace's own log.
        let (_, b) = get(&app, "/v1/workspaces/alpha/audit?action=audit.queried", &alice).await;
        assert!(items(&b).len() >= 2, "{b}");
        app.stop().await;
    }

    #[tokio::test]
    async fn an_export_streams_ndjson_oldest_first_and_matches_the_query() {
        let app = app_with(|_| {}).await;
        let root = admin(&app).await;
        for i in 0..30 {
            failed_login(&app, &format!("nobody{i}@example.com"), "10.9.9.9").await;
        }
        let resp = app
            .client
            .get(app.url("/v1/audit/export?action=auth.login.failed&ip=10.9.9.9"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let text = resp.text().await.unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 30);
        assert!(lines.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
        assert!(lines.iter().all(|r| r["client_ip"] == "10.9.9.9" && r["hash"].as_str().unwrap().len() == 64));
        // The same records as the query.
        let (_, b) = get(&app, "/v1/audit?action=auth.login.failed&ip=10.9.9.9&limit=1000", &root).await;
        let mut q: Vec<i64> = items(&b).iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        q.reverse();
        let e: Vec<i64> = lines.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert_eq!(q, e);
        // Bad input, other callers; the export is recorded.
        let (s, b) = get(&app, "/v1/audit/export?limit=5", &root).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        problem_names(&b, "limit");
        let (alice, _) = signup(&app, "alice@example.com").await;
        let (s, _) = get(&app, "/v1/audit/export", &alice).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (_, b) = get(&app, "/v1/audit?action=audit.exported", &root).await;
        assert_eq!(items(&b).len(), 1, "{b}");
        assert_eq!(items(&b)[0]["details"]["ip"], "10.9.9.9");
        app.stop().await;
    }

    #[tokio::test]
    async fn checkpoints_are_signed_and_verify_with_openssl() {
        let app = app_with(|_| {}).await;
        let root = admin(&app).await;
        gatehouse::startup::housekeeping_round(&app.state).await;
        let (s, b) = get(&app, "/v1/audit/checkpoints", &root).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let cp = &b["items"][0];
        assert!(cp["seq"].as_i64().is_some_and(|s| s >= 1), "{b}");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("pub.pem");
        let stmt = dir.path().join("statement");
        let sig = dir.path().join("sig");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        std::fs::write(&pem, b["public_key_pem"].as_str().unwrap()).unwrap();
        std::fs::write(&stmt, cp["statement"].as_str().unwrap()).unwrap();
        std::fs::write(&sig, b64.decode(cp["signature"].as_str().unwrap()).unwrap()).unwrap();
        let verify = |statement: &std::path::Path| {
            std::process::Command::new("openssl")
                .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
                .arg(&pem)
                .arg("-rawin")
                .arg("-in")
                .arg(statement)
                .arg("-sigfile")
                .arg(&sig)
                .output()
                .unwrap()
        };
        let out = verify(&stmt);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        // The statement carries the head the checkpoint signed.
        let parsed: Value = serde_json::from_str(cp["statement"].as_str().unwrap()).unwrap();
        assert_eq!(parsed["head_hash"], cp["head_hash"]);
        assert_eq!(parsed["seq"], cp["seq"]);
        let forged = dir.path().join("forged");
        std::fs::write(&forged, cp["statement"].as_str().unwrap().replace("\"seq\":", "\"seq\":1")).unwrap();
        assert!(!verify(&forged).status.success());
        // The verification API agrees and is recorded.
        let (s, v) = get(&app, "/v1/audit/verify", &root).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["checkpoints"].as_i64().unwrap() >= 1, "{v}");
        let (_, b) = get(&app, "/v1/audit?action=audit.verified", &root).await;
        assert_eq!(items(&b).len(), 1);
        let (alice, _) = signup(&app, "alice@example.com").await;
        for path in ["/v1/audit/verify", "/v1/audit/checkpoints"] {
            let (s, _) = get(&app, path, &alice).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        }
        app.stop().await;
    }

    #[tokio::test]
    async fn fail_closed_refuses_the_change_when_its_record_cannot_be_written() {
        for require in [true, false] {
            let app = app_with(|c| c.audit.require = require).await;
            let (alice, _) = signup(&app, "alice@example.com").await;
            // The audit table stops accepting rows (a full disk, a broken file...).
            let db = app.config.database_path();
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .unwrap();
            let (s, b) =
                call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "acme", "name": "Acme"})))
                    .await;
            let count: i64 = conn.query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0)).unwrap();
            if require {
                assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
                assert!(b["detail"].as_str().unwrap().contains("audit log"), "{b}");
                assert_eq!(count, 0, "nothing changed");
            } else {
                assert_eq!(s, StatusCode::CREATED, "{b}");
                assert_eq!(count, 1);
            }
            let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
            assert!(metrics.contains("event=\"audit.write_failed\""), "{metrics}");
            conn.execute_batch("DROP TRIGGER audit_broken").unwrap();
            let (s, _) =
                call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "beta", "name": "Beta"})))
                    .await;
            assert_eq!(s, StatusCode::CREATED);
            drop(conn);
            app.stop().await;
        }
    }

    #[tokio::test]
    async fn reads_are_recorded_only_when_asked() {
        for record in [true, false] {
            let app = app_with(|c| c.audit.record_reads = record).await;
            let (alice, alice_id) = signup(&app, "alice@example.com").await;
            let (s, _) = get(&app, "/v1/me", &alice).await;
            assert_eq!(s, StatusCode::OK);
            let (s, _) = get(&app, "/v1/workspaces/nope", &alice).await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            // A refused credential is an authentication event: always recorded.
            let (s, _) = get(&app, "/v1/me", "eyJhbGciOiJub25lIn0.e30.").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
            let db = app.config.database_path();
            let conn = rusqlite::Connection::open(&db).unwrap();
            let (outcome, route): (String, String) = conn
                .query_row(
                    "SELECT outcome, json_extract(details, '$.route') FROM audit_log WHERE action = 'auth.credential.rejected'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((outcome.as_str(), route.as_str()), ("denied", "/v1/me"));
            let mut stmt = conn
                .prepare("SELECT target, outcome, actor_id FROM audit_log WHERE action = 'api.read' ORDER BY seq")
                .unwrap();
            let rows: Vec<(String, String, String)> =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
            if record {
                assert_eq!(
                    rows,
                    [
                        ("/v1/me".to_string(), "success".to_string(), alice_id.clone()),
                        ("/v1/workspaces/nope".to_string(), "denied".to_string(), alice_id.clone())
                    ]
                );
            } else {
                assert!(rows.is_empty(), "{rows:?}");
            }
            drop(stmt);
            drop(conn);
            app.stop().await;
        }
    }

    /// Records older than their category's retention go; the rest still verifies; a record
    /// deleted and disguised as purged is caught.
    #[tokio::test]
    async fn retention_purges_by_category_and_what_remains_verifies() {
        let app = app_with(|c| {
            c.audit.retention_days = [("auth".to_string(), 1), ("default".to_string(), 30)].into_iter().collect();
        })
        .await;
        let (alice, _) = signup(&app, "alice@example.com").await;
        for i in 0..5 {
            failed_login(&app, &format!("nobody{i}@example.com"), "10.3.3.3").await;
        }
        let (s, _) =
            call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "acme", "name": "Acme"})))
                .await;
        assert_eq!(s, StatusCode::CREATED);
        gatehouse::startup::housekeeping_round(&app.state).await;
        let db = app.config.database_path();
        let count =
            |sql: &str| -> i64 { rusqlite::Connection::open(&db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap() };
        let auth_before = count("SELECT count(*) FROM audit_log WHERE action LIKE 'auth.%'");
        assert!(auth_before >= 5);
        let others_before = count("SELECT count(*) FROM audit_log WHERE action NOT LIKE 'auth.%'");

        // The newest record is an auth one too: the purge removes the tail of the chain, and its
        // own record must go on from the last stub.
        failed_login(&app, "late@example.com", "10.3.3.3").await;
        let newest: String = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, "auth.login.failed");

        // Two days later the auth records are past their day; the rest within its 30 days.
        app.clock.advance(time::Duration::days(2));
        gatehouse::startup::housekeeping_round(&app.state).await;
        assert_eq!(count("SELECT count(*) FROM audit_log WHERE action LIKE 'auth.%'"), 0);
        // Everything else stays (plus the purge's own record and this round's).
        assert!(count("SELECT count(*) FROM audit_log WHERE action NOT LIKE 'auth.%'") > others_before);
        assert_eq!(count("SELECT count(*) FROM audit_log WHERE action = 'audit.purged'"), 1);
        assert_eq!(count("SELECT count(*) FROM audit_checkpoints WHERE reason = 'purge'"), 1);
        let report = gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![])
            .await
            .unwrap();
        assert_eq!(report.first_broken, None, "{report:?}");
        assert!(report.purged + report.base_seq >= auth_before, "{report:?}");

        // An attacker deletes a record and leaves a stub as if retention had removed it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        let (seq, hash): (i64, Vec<u8>) = conn
            .query_row("SELECT seq, hash FROM audit_log WHERE action = 'workspace.created'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        conn.execute_batch("DROP TRIGGER audit_log_no_delete").unwrap();
        conn.execute("DELETE FROM audit_log WHERE seq = ?1", [seq]).unwrap();
        conn.execute("INSERT INTO audit_purged (seq, hash) VALUES (?1, ?2)", rusqlite::params![seq, hash]).unwrap();
        drop(conn);
        let report = gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![])
            .await
            .unwrap();
        assert!(report.first_broken.is_some(), "{report:?}");
        assert!(report.reason.unwrap().contains("outside retention"));
        app.stop().await;
    }

    /// The sequence numbers a query gives, page after page of `limit`.
    async fn seqs_paged(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let (s, b) = get(app, &format!("/v1/audit?{query}&limit={limit}{cursor}"), token).await;
            assert_eq!(s, StatusCode::OK, "{query}: {b}");
            out.extend(items(&b).iter().map(|r| r["seq"].as_i64().unwrap()));
            match b["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return out,
            }
        }
    }

    /// A record is found by every filter from the moment it is appended: before the indexer
    /// files it (the tail above the watermark is scanned), after (the index), and in pages and
    /// exports that cross the watermark.
    #[tokio::test]
    async fn queries_see_records_before_and_after_the_indexer_files_them() {
        // The indexer runs at start and then not for an hour: the test moves it by hand.
        let app = app_with(|c| c.audit.index_interval_ms = 3_600_000).await;
        let indexer = gatehouse::domain::audit::indexer::catch_up;
        let lag = gatehouse::domain::audit::indexer::lag;
        let root = admin(&app).await;
        let (alice, alice_id) = signup(&app, "alice@example.com").await;
        for (i, ip) in ["10.5.5.5", "10.6.6.6", "10.5.5.5"].into_iter().enumerate() {
            failed_login(&app, &format!("nobody{i}@example.com"), ip).await;
        }
        let (s, ws) =
            call(&app, Method::POST, "/v1/workspaces", Some(&alice), Some(json!({"slug": "acme", "name": "Acme"})))
                .await;
        assert_eq!(s, StatusCode::CREATED, "{ws}");
        let ws_id = ws["id"].as_str().unwrap().to_string();
        let watermark = indexer(&app.state.db).await.unwrap();
        // The same kinds of records again, not filed yet.
        for (i, ip) in ["10.5.5.5", "10.6.6.6"].into_iter().enumerate() {
            failed_login(&app, &format!("later{i}@example.com"), ip).await;
        }
        let (s, b) =
            call(&app, Method::PATCH, "/v1/workspaces/acme", Some(&alice), Some(json!({"name": "Acme Corporation"})))
                .await;
        assert!(s.is_success(), "{s} {b}");
        let (head, still) = lag(&app.state.db).await.unwrap();
        assert_eq!(still, watermark);
        assert!(head >= watermark + 3, "{head} {watermark}");

        // One page across the watermark: the newest from the tail, the next from the index.
        let both = seqs_paged(&app, &root, "ip=10.5.5.5", 2).await;
        assert_eq!(both.len(), 3, "{both:?}");
        assert!(both[0] > watermark && both[1] <= watermark && both[2] <= watermark, "{both:?} {watermark}");
        let queries = [
            "ip=10.5.5.5".to_string(),
            "ip=10.6.6.6&action=auth.login.failed".into(),
            "action=auth.login".into(),
            "action=auth.".into(),
            "outcome=failure".into(),
            format!("actor={alice_id}"),
            format!("actor={alice_id}&action=workspace."),
            format!("target={ws_id}"),
            "workspace=acme".into(),
            "since=2026-11-29T00:00:00Z&until=2026-11-30T00:00:00Z&ip=10.6.6.6".into(),
        ];
        let mut answers = Vec::new();
        for q in &queries {
            let whole = seqs_paged(&app, &root, q, 1000).await;
            assert!(whole.iter().any(|s| *s > watermark) && whole.iter().any(|s| *s <= watermark), "{q}: {whole:?}");
            assert!(whole.windows(2).all(|w| w[0] > w[1]), "{q}: {whole:?}");
            assert_eq!(seqs_paged(&app, &root, q, 1).await, whole, "{q}");
            answers.push(get(&app, &format!("/v1/audit?{q}&limit=1000"), &root).await.1["items"].clone());
        }
        assert_eq!(seqs_paged(&app, &root, "ip=10.6.6.6", 10).await.len(), 2);
        assert!(seqs_paged(&app, &root, &format!("target={ws_id}&action=workspace.updated"), 10).await[0] > watermark);
        // The export crosses the watermark oldest first.
        let text = app
            .client
            .get(app.url("/v1/audit/export?ip=10.5.5.5"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let exported: Vec<i64> =
            text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap()).collect();
        assert_eq!(exported, both.iter().rev().copied().collect::<Vec<_>>());

        // Filed: the same answers, record for record.
        let filed = indexer(&app.state.db).await.unwrap();
        assert!(filed >= head);
        for (q, answer) in queries.iter().zip(&answers) {
            let (_, b) = get(&app, &format!("/v1/audit?{q}&limit=1000"), &root).await;
            assert_eq!(&b["items"], answer, "{q}");
        }
        app.stop().await;
    }

    /// A purge deletes the index entries of the records it deletes, filed or not yet; nothing
    /// else may delete one.
    #[tokio::test]
    async fn a_purge_takes_the_index_entries_of_its_records() {
        let app = app_with(|c| {
            c.audit.retention_days = [("auth".to_string(), 1)].into_iter().collect();
            c.audit.index_interval_ms = 3_600_000;
        })
        .await;
        for i in 0..4 {
            failed_login(&app, &format!("nobody{i}@example.com"), "10.7.7.7").await;
        }
        gatehouse::domain::audit::indexer::catch_up(&app.state.db).await.unwrap();
        for i in 4..6 {
            failed_login(&app, &format!("nobody{i}@example.com"), "10.7.7.7").await;
        }
        let db = app.config.database_path();
        let count =
            |sql: &str| -> i64 { rusqlite::Connection::open(&db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM audit_index WHERE kind = 5 AND key = '10.7.7.7'"), 4);
        let refused = rusqlite::Connection::open(&db).unwrap().execute("DELETE FROM audit_index WHERE kind = 5", []);
        assert!(refused.unwrap_err().to_string().contains("removed only with their records"));

        app.clock.advance(time::Duration::days(2));
        gatehouse::startup::housekeeping_round(&app.state).await;
        assert_eq!(count("SELECT count(*) FROM audit_log WHERE client_ip = '10.7.7.7'"), 0);
        gatehouse::domain::audit::indexer::catch_up(&app.state.db).await.unwrap();
        assert_eq!(count("SELECT count(*) FROM audit_index WHERE seq NOT IN (SELECT seq FROM audit_log)"), 0);
        assert_eq!(count("SELECT count(*) FROM audit_index WHERE kind = 2 AND key = 'auth'"), 0);
        // What stays is still filed: the purge's own record and the other categories.
        assert_eq!(count("SELECT count(*) FROM audit_index WHERE kind = 2 AND key = 'audit.purged'"), 1);
        // Two days on, the first sign-in has expired.
        let root = admin(&app).await;
        let (_, b) = get(&app, "/v1/audit?ip=10.7.7.7", &root).await;
        assert!(items(&b).is_empty(), "{b}");
        let (_, b) = get(&app, "/v1/audit?action=audit.purged", &root).await;
        assert_eq!(items(&b).len(), 1, "{b}");
        let report = gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![])
            .await
            .unwrap();
        assert_eq!(report.first_broken, None, "{report:?}");
        app.stop().await;
    }

    fn cli_verify(data: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["audit", "verify", "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(gatehouse(&args))
    }

    /// A data folder with some history and a checkpoint, stopped, and its checkpoint exported.
    async fn stopped_with_history() -> (tempfile::TempDir, std::path::PathBuf, String) {
        let app = app_with(|_| {}).await;
        let root = admin(&app).await;
        for i in 0..6 {
            failed_login(&app, &format!("x{i}@example.com"), "10.4.4.4").await;
        }
        gatehouse::startup::housekeeping_round(&app.state).await;
        let (_, b) = get(&app, "/v1/audit/checkpoints", &root).await;
        let anchor = b["items"][0].to_string();
        for i in 0..4 {
            failed_login(&app, &format!("y{i}@example.com"), "10.4.4.4").await;
        }
        let data = app.config.data_dir.clone();
        let dir = app.stop().await;
        (dir, data, anchor)
    }

    fn sql(data: &std::path::Path, statements: &str) {
        let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
        conn.execute_batch(statements).unwrap();
    }

    #[tokio::test]
    async fn verification_catches_edits_insertions_reordering_and_a_cut_tail() {
        let (_dir, data, anchor) = stopped_with_history().await;
        let (code, out, err) = cli_verify(&data, &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("audit chain OK") && out.contains("signed checkpoints"), "{out}");
        let anchor_file = data.parent().unwrap().join("anchor.json");
        std::fs::write(&anchor_file, &anchor).unwrap();
        let (code, out, err) = cli_verify(&data, &["--anchor", anchor_file.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");

        let copy = |name: &str| {
            let to = data.parent().unwrap().join(name);
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&data).unwrap() {
                let f = f.unwrap();
                if f.file_type().unwrap().is_file() {
                    std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
                }
            }
            let tls = to.join("tls");
            std::fs::create_dir_all(&tls).unwrap();
            for f in std::fs::read_dir(data.join("tls")).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), tls.join(f.file_name())).unwrap();
            }
            to
        };
        let unlocked = "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;";

        // Inserted: a forged record slipped in, later ones renumbered.
        let d = copy("inserted");
        sql(&d, &format!("{unlocked} UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 5; UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1005; INSERT INTO audit_log SELECT 5, ts_ms, actor_type, actor_id, 'user.created', target, workspace_id, outcome, client_ip, user_agent, request_id, details, hash FROM audit_log WHERE seq = 4;"));
        let (code, _, err) = cli_verify(&d, &[]);
        assert_eq!(code, 1);
        assert!(err.contains("broken at sequence 5"), "{err}");

        // Reordered: two records swap places.
        let d = copy("reordered");
        sql(&d, &format!("{unlocked} UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 7; UPDATE audit_log SET seq = 7 WHERE seq = -1;"));
        let (code, _, err) = cli_verify(&d, &[]);
        assert_eq!(code, 1);
        assert!(err.contains("broken at sequence 6"), "{err}");

        // Truncated past the last checkpoint.
        let d = copy("truncated");
        let cp_seq: i64 = rusqlite::Connection::open(d.join("gatehouse.db"))
            .unwrap()
            .query_row("SELECT max(seq) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap();
        sql(&d, &format!("{unlocked} DELETE FROM audit_log WHERE seq >= {};", cp_seq - 1));
        let (code, _, err) = cli_verify(&d, &[]);
        assert_eq!(code, 1);
        assert!(err.contains("removed from the end"), "{err}");

        // A checkpoint removed from the middle of their chain.
        let d = copy("checkpoint-gone");
        let n: i64 = rusqlite::Connection::open(d.join("gatehouse.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap();
        assert!(n >= 2, "{n}");
        sql(&d, "DELETE FROM audit_checkpoints WHERE id = 1;");
        let (code, _, err) = cli_verify(&d, &[]);
        assert_eq!(code, 1);
        assert!(err.contains("checkpoint 1 is missing"), "{err}");

        // A forged checkpoint (the attacker has no signing key).
        let d = copy("checkpoint-forged");
        sql(&d, "DROP TRIGGER audit_checkpoints_no_update; UPDATE audit_checkpoints SET seq = seq - 1 WHERE id = (SELECT max(id) FROM audit_checkpoints);");
        let (code, _, err) = cli_verify(&d, &[]);
        assert_eq!(code, 1);
        assert!(err.contains("does not match its signature"), "{err}");

        // Everything after the anchored checkpoint cut, checkpoints included: only the anchor
        // held elsewhere shows it.
        let d = copy("rolled-back");
        let anchored: Value = serde_json::from_str(&anchor).unwrap();
        let (id, seq) = (anchored["id"].as_i64().unwrap(), anchored["seq"].as_i64().unwrap());
        sql(
            &d,
            &format!(
                "{unlocked} DELETE FROM audit_checkpoints WHERE id >= {id}; DELETE FROM audit_log WHERE seq > {};",
                seq - 3
            ),
        );
        let (code, out, err) = cli_verify(&d, &[]);
        assert_eq!(code, 0, "without the anchor the shorter log looks whole: {out}{err}");
        let (code, _, err) = cli_verify(&d, &["--anchor", anchor_file.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains("anchored checkpoint"), "{err}");
    }
}
