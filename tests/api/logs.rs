//! Secrets never reach a log: a known secret sent in headers, body and query is absent from
//! everything the server printed, at debug level, while the request lines are there.

use crate::helpers::{client, gatehouse, ServeProcess};

#[test]
fn secrets_in_requests_never_reach_the_logs() {
    const SECRET: &str = "SuperSecretValue-7f3a9c1e";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd =
        gatehouse(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-format", "json"]);
    cmd.env("GATEHOUSE_LOG__LEVEL", "debug");
    let server = ServeProcess::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let mut ids = Vec::new();
    rt.block_on(async {
        let requests = vec![
            c.get(server.url("/healthz")).bearer_auth(SECRET),
            c.get(server.url("/metrics")).header("cookie", format!("__Host-session={SECRET}")),
            c.get(server.url("/readyz")).header("x-api-key", SECRET).header("x-csrf-token", SECRET),
            c.get(server.url(&format!("/healthz?token={SECRET}&password={SECRET}"))),
            c.get(server.url(&format!("/v1/reset/{SECRET}"))),
            c.post(server.url("/v1/auth/login")).json(&serde_json::json!({"email": "a@b.c", "password": SECRET})),
            c.post(server.url("/healthz"))
                .header("content-type", "application/json")
                .body(format!("{{\"secret\": \"{SECRET}\"")),
            c.get(server.url("/healthz")).header("user-agent", "probe").header("x-forwarded-for", SECRET),
        ];
        for r in requests {
            let res = r.send().await.unwrap();
            ids.push(res.headers()["x-request-id"].to_str().unwrap().to_string());
        }
    });
    let (status, out, err) = server.terminate();
    assert!(status.success());
    let all = format!("{out}\n{err}");
    for id in &ids {
        assert!(all.contains(id.as_str()), "every request is logged with its id ({id})");
    }
    assert!(!all.contains(SECRET), "the secret leaked into the logs:\n{all}");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
        if v["target"] == "gatehouse::access" {
            for field in ["request_id", "method"] {
                assert!(!v["span"][field].is_null(), "{field} missing from the request span in {line}");
            }
            for field in ["route", "status", "latency_ms"] {
                assert!(!v["fields"][field].is_null(), "{field} missing from the access line in {line}");
            }
        }
    }
}

#[test]
fn access_lines_can_be_turned_off_but_server_errors_and_spans_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd =
        gatehouse(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-format", "json"]);
    cmd.env("GATEHOUSE_LOG__ACCESS", "false");
    let server = ServeProcess::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let res = client().get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    });
    let (status, _, err) = server.terminate();
    assert!(status.success());
    assert!(!err.contains("request completed"), "no access line when log.access = false:\n{err}");
}

#[test]
fn account_secrets_never_reach_the_logs() {
    const PW: &str = "Logged-Never-Passphrase-93";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd =
        gatehouse(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-format", "json"]);
    cmd.env("GATEHOUSE_LOG__LEVEL", "debug").env("GATEHOUSE_AUTH__SIGNUP", "open");
    let server = ServeProcess::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let mut secrets: Vec<String> = vec![PW.into()];
    rt.block_on(async {
        let post = |path: &str, bearer: Option<&str>, body: serde_json::Value| {
            let mut r = c.post(server.url(path)).json(&body);
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            async move { r.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
        };
        let s = post("/v1/auth/signup", None, serde_json::json!({"email": "log@example.com", "password": PW})).await;
        let access = s["access_token"].as_str().unwrap().to_string();
        let r = post("/v1/auth/refresh", None, serde_json::json!({"refresh_token": s["refresh_token"]})).await;
        let t = post(
            "/v1/me/tokens",
            Some(&access),
            serde_json::json!({"name": "ci", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
        // A far-future expiry is refused (the cap), so make one within it.
        let t = if t["token"].is_string() {
            t
        } else {
            let exp = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            post("/v1/me/tokens", Some(&access), serde_json::json!({"name": "ci", "expires_at": exp})).await
        };
        let pat = t["token"].as_str().unwrap().to_string();
        c.get(server.url("/v1/me")).bearer_auth(&pat).send().await.unwrap();
        let e = post("/v1/auth/mfa/totp/enroll", Some(&access), serde_json::json!({})).await;
        let cookie = c
            .post(server.url("/v1/auth/login"))
            .json(&serde_json::json!({"email": "log@example.com", "password": PW, "mode": "cookie"}))
            .send()
            .await
            .unwrap();
        let set_cookie = cookie.headers()["set-cookie"].to_str().unwrap().to_string();
        let body: serde_json::Value = cookie.json().await.unwrap();
        let cookie_value = set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        secrets.extend([
            access,
            s["refresh_token"].as_str().unwrap().to_string(),
            r["access_token"].as_str().unwrap().to_string(),
            r["refresh_token"].as_str().unwrap().to_string(),
            pat,
            e["secret"].as_str().unwrap().to_string(),
            cookie_value,
            body["csrf_token"].as_str().unwrap().to_string(),
        ]);
    });
    let (status, out, err) = server.terminate();
    assert!(status.success());
    let all = format!("{out}\n{err}");
    assert!(all.contains("auth.login") || all.contains("/v1/auth/login"), "the requests were logged");
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "a secret leaked into the logs: {}…", &s[..6]);
    }
}
