//! Security monitoring, end to end: each rule raises exactly one alert at its threshold (and
//! none one below it, and one, not many, for a flood); alerts are listed, filtered and
//! acknowledged by platform admins only; bad filters are 400s naming the field; the counter is
//! in /metrics; the webhook gets a signed POST (verified here, and a tampered body fails), is
//! retried until the receiver is up, and an unreachable one does not slow requests.
//!
//! The monitor reads the audit log in order, so when an alert raised after some events is
//! listed, those events have been counted: each "none" below is checked after such a sentinel.

use crate::helpers::{spawn_app_with, test_time, TestApp};
use gatehouse::config::{Config, SignupMode};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery staple 42";
const WRONG: &str = "wrong password 12345";
const WEBHOOK_KEY: &str = "whsec-test-0123456789abcdef";

/// Open sign-up, generous limits, loopback as a trusted proxy (tests vary the client address
/// with X-Forwarded-For), high thresholds that each test lowers for the rule it exercises.
fn base(c: &mut Config) {
    c.auth.signup = SignupMode::Open;
    c.auth.rate_limit.burst = 10_000;
    c.auth.rate_limit.per_minute = 60_000;
    c.auth.lockout.backoff_after = 100;
    c.auth.lockout.lock_after = 101;
    c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    c.monitoring.failed_logins_per_account = 1000;
    c.monitoring.failed_logins_per_ip = 1000;
    c.monitoring.rate_limited_per_ip = 1000;
    c.monitoring.secret_reveals_per_actor = 1000;
}

async fn app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        base(c);
        tweak(c);
    })
    .await
}

/// A credential for `call`.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Key(&'a str),
}

async fn call_from(
    app: &TestApp,
    method: Method,
    path: &str,
    cred: Cred<'_>,
    body: Option<Value>,
    ip: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    req = match cred {
        Cred::None => req,
        Cred::Bearer(t) => req.bearer_auth(t),
        Cred::Key(k) => req.header("X-Api-Key", k),
    };
    if let Some(ip) = ip {
        req = req.header("X-Forwarded-For", ip);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(!status.is_server_error(), "{path}: {status} {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn call(app: &TestApp, method: Method, path: &str, cred: Cred<'_>, body: Option<Value>) -> (StatusCode, Value) {
    call_from(app, method, path, cred, body, None).await
}

/// A signed-up user: (access token, user id, the whole answer).
async fn user(app: &TestApp, email: &str) -> (String, String, Value) {
    let (s, b) =
        call(app, Method::POST, "/v1/auth/signup", Cred::None, Some(json!({"email": email, "password": PW}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (b["access_token"].as_str().unwrap().to_string(), b["user_id"].as_str().unwrap().to_string(), b)
}

async fn fail_login(app: &TestApp, email: &str, ip: Option<&str>) -> StatusCode {
    let body = json!({"email": email, "password": WRONG});
    call_from(app, Method::POST, "/v1/auth/login", Cred::None, Some(body), ip).await.0
}

/// The bootstrap admin's (access token, user id).
async fn admin(app: &TestApp) -> (String, String) {
    let pw = app.bootstrap_password.clone().unwrap();
    let body = json!({"email": "admin@localhost", "password": pw});
    let (s, b) = call_from(app, Method::POST, "/v1/auth/login", Cred::None, Some(body), Some("10.9.9.9")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (b["access_token"].as_str().unwrap().to_string(), b["user_id"].as_str().unwrap().to_string())
}

async fn alerts(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (s, b) = call(app, Method::GET, &format!("/v1/security/alerts?{query}"), Cred::Bearer(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

/// Poll the list until `query` gives at least `n` alerts (the monitor runs in the background).
async fn wait_alerts(app: &TestApp, token: &str, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let items = alerts(app, token, query).await;
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < deadline, "no {n} alerts for {query:?} in time: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn grant_admin(app: &TestApp, admin_token: &str, user_id: &str) {
    let (s, b) = call(
        app,
        Method::PATCH,
        &format!("/v1/users/{user_id}"),
        Cred::Bearer(admin_token),
        Some(json!({"is_admin": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

fn keys(items: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = items.iter().map(|a| a["key"].as_str().unwrap().to_string()).collect();
    k.sort();
    k
}

async fn audit_rows(app: &TestApp, action: &str) -> Vec<(Option<String>, Value)> {
    let path = app.config.database_path();
    let action = action.to_string();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT target, details FROM audit_log WHERE action = ?1 ORDER BY seq").unwrap();
        stmt.query_map([action], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(|r| {
                let (t, d) = r.unwrap();
                (t, serde_json::from_str(&d).unwrap())
            })
            .collect()
    })
    .await
    .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn failed_logins_for_one_account_raise_one_alert_at_the_threshold() {
    let app = app_with(|c| c.monitoring.failed_logins_per_account = 3).await;
    let (token, _) = admin(&app).await;
    let (_, alice, _) = user(&app, "alice@example.com").await;
    let (_, bob, _) = user(&app, "bob@example.com").await;
    let (_, carol, _) = user(&app, "carol@example.com").await;
    // One below the threshold: nothing.
    for _ in 0..2 {
        assert_eq!(fail_login(&app, "alice@example.com", None).await, StatusCode::UNAUTHORIZED);
    }
    // The threshold, then a flood: one alert.
    for _ in 0..15 {
        assert_eq!(fail_login(&app, "bob@example.com", None).await, StatusCode::UNAUTHORIZED);
    }
    // Sentinel.
    for _ in 0..3 {
        fail_login(&app, "carol@example.com", None).await;
    }
    let items = wait_alerts(&app, &token, "rule=failed_logins_account", 2).await;
    // Nothing else arrives late.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let items_after = alerts(&app, &token, "rule=failed_logins_account").await;
    assert_eq!(items_after.len(), 2, "{items_after:?}");
    let mut want = vec![bob.clone(), carol.clone()];
    want.sort();
    assert_eq!(keys(&items), want);
    assert!(!keys(&items).contains(&alice));
    let bob_alert = items.iter().find(|a| a["key"] == bob.as_str()).unwrap();
    assert_eq!(bob_alert["count"], 3);
    assert_eq!(bob_alert["severity"], "medium");
    assert_eq!(bob_alert["status"], "open");
    assert_eq!(bob_alert["window_seconds"], 300);
    assert_eq!(bob_alert["delivery"]["status"], "none");
    assert_eq!(bob_alert["details"]["action"], "auth.login.failed");
    assert!(bob_alert["first_seq"].as_i64().unwrap() < bob_alert["last_seq"].as_i64().unwrap());
    // Audited, with the alert's id and why.
    let raised = audit_rows(&app, "alert.raised").await;
    assert_eq!(raised.len(), 2, "{raised:?}");
    let (target, details) = raised.iter().find(|(_, d)| d["key"] == bob.as_str()).unwrap();
    assert_eq!(target.as_deref(), bob_alert["id"].as_str());
    assert_eq!(details["rule"], "failed_logins_account");
    assert_eq!(details["alert_id"], bob_alert["id"]);
    assert_eq!((details["count"].clone(), details["window_seconds"].clone()), (json!(3), json!(300)));
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_from_one_address_raise_one_alert_and_are_counted_in_metrics() {
    let app = app_with(|c| c.monitoring.failed_logins_per_ip = 4).await;
    let (token, _) = admin(&app).await;
    for i in 0..3 {
        fail_login(&app, &format!("nobody{i}@example.com"), Some("203.0.113.8")).await;
    }
    for i in 0..10 {
        fail_login(&app, &format!("someone{i}@example.com"), Some("203.0.113.7")).await;
    }
    wait_alerts(&app, &token, "rule=failed_logins_ip", 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let items = alerts(&app, &token, "rule=failed_logins_ip").await;
    assert_eq!(keys(&items), ["203.0.113.7"], "{items:?}");
    assert_eq!(items[0]["count"], 4);
    assert!(
        metrics(&app).await.contains("gatehouse_security_alerts_total{rule=\"failed_logins_ip\"} 1"),
        "the counter is exported"
    );
    app.stop().await;
}

#[tokio::test]
async fn rate_limited_addresses_raise_an_alert() {
    let app = app_with(|c| {
        c.auth.rate_limit.burst = 2;
        c.auth.rate_limit.per_minute = 1;
        c.monitoring.rate_limited_per_ip = 3;
    })
    .await;
    let (token, _) = admin(&app).await;
    // Two refused (one below the threshold) from one address…
    for _ in 0..4 {
        fail_login(&app, "x@example.com", Some("198.51.100.5")).await;
    }
    // …and five from another.
    let mut refused = 0;
    for _ in 0..7 {
        if fail_login(&app, "x@example.com", Some("198.51.100.4")).await == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    wait_alerts(&app, &token, "rule=rate_limited_ip", 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let items = alerts(&app, &token, "rule=rate_limited_ip").await;
    assert_eq!(keys(&items), ["198.51.100.4"]);
    assert_eq!(items[0]["severity"], "low");
    app.stop().await;
}

#[tokio::test]
async fn a_lockout_and_a_reused_refresh_token_raise_alerts() {
    let app = app_with(|c| {
        c.auth.lockout.backoff_after = 1;
        c.auth.lockout.backoff_base_seconds = 1;
        c.auth.lockout.backoff_max_seconds = 1;
        c.auth.lockout.lock_after = 2;
    })
    .await;
    let (token, _) = admin(&app).await;
    let (_, erin, _) = user(&app, "erin@example.com").await;
    fail_login(&app, "erin@example.com", None).await;
    app.clock.advance(time::Duration::seconds(2));
    fail_login(&app, "erin@example.com", None).await;
    let locked = wait_alerts(&app, &token, "rule=account_locked", 1).await;
    assert_eq!(keys(&locked), [erin]);

    let (_, frank, s) = user(&app, "frank@example.com").await;
    let old = json!({"refresh_token": s["refresh_token"]});
    let (st, _) = call(&app, Method::POST, "/v1/auth/refresh", Cred::None, Some(old.clone())).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&app, Method::POST, "/v1/auth/refresh", Cred::None, Some(old)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "reuse");
    let reused = wait_alerts(&app, &token, "rule=refresh_token_reused", 1).await;
    assert_eq!(keys(&reused), [frank]);
    assert_eq!(reused[0]["severity"], "high");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_and_tokens_used_from_a_new_address_raise_alerts() {
    let app = app_with(|_| {}).await;
    let (token, admin_id) = admin(&app).await;
    let (s, ws) =
        call(&app, Method::POST, "/v1/workspaces", Cred::Bearer(&token), Some(json!({"slug": "acme", "name": "Acme"})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{ws}");
    let ws = ws["id"].as_str().unwrap().to_string();
    let rules = json!([{"effect": "allow", "actions": ["read"], "subjects": ["workspace"]}]);
    let (s, k) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{ws}/api-keys"),
        Cred::Bearer(&token),
        Some(json!({"name": "ci", "rules": rules})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let (key, key_id) = (k["key"].as_str().unwrap().to_string(), k["id"].as_str().unwrap().to_string());
    let expires = (test_time() + time::Duration::days(30)).format(&time::format_description::well_known::Rfc3339);
    let (s, t) = call(
        &app,
        Method::POST,
        "/v1/me/tokens",
        Cred::Bearer(&token),
        Some(json!({"name": "script", "expires_at": expires.unwrap()})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (pat, pat_id) = (t["token"].as_str().unwrap().to_string(), t["id"].as_str().unwrap().to_string());

    // The first address is no news; a second one is; a third within the window adds nothing.
    for ip in ["192.0.2.10", "192.0.2.10", "192.0.2.11", "192.0.2.12"] {
        let (s, _) =
            call_from(&app, Method::GET, &format!("/v1/workspaces/{ws}"), Cred::Key(&key), None, Some(ip)).await;
        assert_eq!(s, StatusCode::OK);
    }
    for ip in ["192.0.2.20", "192.0.2.20", "192.0.2.21", "192.0.2.22"] {
        let (s, _) = call_from(&app, Method::GET, "/v1/me", Cred::Bearer(&pat), None, Some(ip)).await;
        assert_eq!(s, StatusCode::OK);
    }
    // Sentinel.
    let (_, gail, _) = user(&app, "gail@example.com").await;
    grant_admin(&app, &token, &gail).await;
    wait_alerts(&app, &token, "rule=admin_granted", 1).await;
    let items = alerts(&app, &token, "rule=credential_new_ip").await;
    assert_eq!(keys(&items), [format!("api_key:{key_id}"), format!("token:{pat_id}")], "{items:?}");
    let key_alert = items.iter().find(|a| a["key"] == format!("api_key:{key_id}")).unwrap();
    assert_eq!(key_alert["details"]["ip"], "192.0.2.11");
    assert_eq!(key_alert["details"]["workspace_id"], ws.as_str());
    let pat_alert = items.iter().find(|a| a["key"] == format!("token:{pat_id}")).unwrap();
    assert_eq!(pat_alert["details"]["ip"], "192.0.2.21");
    assert_eq!(pat_alert["details"]["actor"], format!("token:{admin_id}/{pat_id}"));

    // Tokens now audit their first use from each address, as API keys do.
    let used = audit_rows(&app, "token.used_from_new_ip").await;
    let seen: Vec<(String, bool)> = used
        .iter()
        .map(|(t, d)| {
            assert_eq!(t.as_deref(), Some(pat_id.as_str()));
            (d["ip"].as_str().unwrap().to_string(), d["first_address"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        seen,
        [("192.0.2.20".into(), true), ("192.0.2.21".into(), false), ("192.0.2.22".into(), false)],
        "once per address"
    );
    let key_firsts: Vec<bool> = audit_rows(&app, "api_key.used_from_new_ip")
        .await
        .iter()
        .map(|(_, d)| d["first_address"].as_bool().unwrap())
        .collect();
    assert_eq!(key_firsts, [true, false, false]);
    app.stop().await;
}

#[tokio::test]
async fn admin_grants_and_many_secret_reveals_raise_alerts() {
    let app = app_with(|c| c.monitoring.secret_reveals_per_actor = 3).await;
    let (token, admin_id) = admin(&app).await;
    let (s, ws) =
        call(&app, Method::POST, "/v1/workspaces", Cred::Bearer(&token), Some(json!({"slug": "acme", "name": "Acme"})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{ws}");
    let secret = format!("/v1/workspaces/{}/secrets/DB_PASSWORD", ws["id"].as_str().unwrap());
    let (s, b) =
        call(&app, Method::PUT, &secret, Cred::Bearer(&token), Some(json!({"value": "hunter2-hunter2"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let reveal = format!("{secret}/reveal");
    for _ in 0..2 {
        let (s, _) = call(&app, Method::POST, &reveal, Cred::Bearer(&token), Some(json!({}))).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (_, hal, _) = user(&app, "hal@example.com").await;
    grant_admin(&app, &token, &hal).await;
    let granted = wait_alerts(&app, &token, "rule=admin_granted", 1).await;
    assert_eq!(keys(&granted), [hal]);
    assert_eq!(granted[0]["severity"], "high");
    assert_eq!(granted[0]["details"]["actor"], format!("user:{admin_id}"));
    assert!(alerts(&app, &token, "rule=secret_reveals_actor").await.is_empty(), "two reveals are below three");

    for _ in 0..8 {
        call(&app, Method::POST, &reveal, Cred::Bearer(&token), Some(json!({}))).await;
    }
    let (_, ivy, _) = user(&app, "ivy@example.com").await;
    grant_admin(&app, &token, &ivy).await;
    wait_alerts(&app, &token, "rule=admin_granted", 2).await;
    let reveals = alerts(&app, &token, "rule=secret_reveals_actor").await;
    assert_eq!(keys(&reveals), [format!("user:{admin_id}")], "a flood gives one alert");
    assert_eq!(reveals[0]["count"], 3);
    // The alert never carries the value.
    assert!(!reveals[0].to_string().contains("hunter2"));
    app.stop().await;
}

#[tokio::test]
async fn alerts_are_listed_filtered_and_acknowledged_by_admins_only() {
    let app = app_with(|_| {}).await;
    let (token, admin_id) = admin(&app).await;
    let (carol_token, _, _) = user(&app, "carol@example.com").await;
    let (_, dave, _) = user(&app, "dave@example.com").await;
    grant_admin(&app, &token, &dave).await;
    // Reusing a refresh token revokes the session: someone else's.
    let (_, eve, s) = user(&app, "eve@example.com").await;
    let old = json!({"refresh_token": s["refresh_token"]});
    call(&app, Method::POST, "/v1/auth/refresh", Cred::None, Some(old.clone())).await;
    call(&app, Method::POST, "/v1/auth/refresh", Cred::None, Some(old)).await;
    let all = wait_alerts(&app, &token, "", 2).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["rule"], "refresh_token_reused", "newest first");
    assert_eq!(all[1]["rule"], "admin_granted");
    let id = all[1]["id"].as_str().unwrap().to_string();

    // Filters.
    assert_eq!(keys(&alerts(&app, &token, "rule=admin_granted").await), vec![dave.clone()]);
    assert_eq!(keys(&alerts(&app, &token, "rule=refresh_token_reused").await), [eve]);
    assert_eq!(alerts(&app, &token, "status=open").await.len(), 2);
    assert!(alerts(&app, &token, "status=acknowledged").await.is_empty());
    assert_eq!(alerts(&app, &token, "since=2026-11-29T12:00:00Z").await.len(), 2);
    assert!(alerts(&app, &token, "since=2026-11-29T12:00:01Z").await.is_empty());
    assert!(alerts(&app, &token, "until=2026-11-29T12:00:00Z").await.is_empty(), "until is exclusive");
    assert_eq!(alerts(&app, &token, "since=2026-11-29T11:00:00Z&until=2026-11-29T13:00:00Z").await.len(), 2);
    // Pages.
    let (s, p1) = call(&app, Method::GET, "/v1/security/alerts?limit=1", Cred::Bearer(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p1["items"].as_array().unwrap().len(), 1);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) =
        call(&app, Method::GET, &format!("/v1/security/alerts?limit=1&cursor={cursor}"), Cred::Bearer(&token), None)
            .await;
    assert_eq!(p2["items"][0]["id"], id.as_str());
    assert!(p2.get("next_cursor").is_none(), "{p2}");

    // Bad filters: 400 naming the field.
    for (query, field) in [
        ("status=closed", "status"),
        ("rule=nope", "rule"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=2026-11-29T13:00:00Z&until=2026-11-29T12:00:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let (s, b) = call(&app, Method::GET, &format!("/v1/security/alerts?{query}"), Cred::Bearer(&token), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        assert_eq!(b["status"], 400);
        assert!(b["detail"].as_str().unwrap().contains(field), "{query}: {b}");
    }

    // One alert.
    let path = format!("/v1/security/alerts/{id}");
    let (s, one) = call(&app, Method::GET, &path, Cred::Bearer(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one, all[1]);
    let (s, _) = call(&app, Method::GET, "/v1/security/alerts/nope", Cred::Bearer(&token), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Who may not: a non-admin's session and token, an API key, no credential. No data leaks.
    let (_, ws) = call(
        &app,
        Method::POST,
        "/v1/workspaces",
        Cred::Bearer(&carol_token),
        Some(json!({"slug": "carols", "name": "Carol's"})),
    )
    .await;
    let (_, k) = call(
        &app,
        Method::POST,
        &format!("/v1/workspaces/{}/api-keys", ws["id"].as_str().unwrap()),
        Cred::Bearer(&carol_token),
        Some(json!({"name": "ci", "rules": [{"effect": "allow", "actions": ["read"], "subjects": ["workspace"]}]})),
    )
    .await;
    let key = k["key"].as_str().unwrap().to_string();
    let expires = (test_time() + time::Duration::days(30)).format(&time::format_description::well_known::Rfc3339);
    let (_, t) = call(
        &app,
        Method::POST,
        "/v1/me/tokens",
        Cred::Bearer(&carol_token),
        Some(json!({"name": "script", "expires_at": expires.unwrap()})),
    )
    .await;
    let carol_pat = t["token"].as_str().unwrap().to_string();
    let ack = format!("{path}/acknowledge");
    for (cred, want) in [
        (Cred::Bearer(&carol_token), StatusCode::FORBIDDEN),
        (Cred::Bearer(&carol_pat), StatusCode::FORBIDDEN),
        (Cred::Key(&key), StatusCode::FORBIDDEN),
        (Cred::None, StatusCode::UNAUTHORIZED),
    ] {
        for (method, p, body) in [
            (Method::GET, "/v1/security/alerts", None),
            (Method::GET, path.as_str(), None),
            (Method::POST, ack.as_str(), Some(json!({"note": "not mine to close"}))),
        ] {
            let (s, b) = call(&app, method.clone(), p, cred, body).await;
            assert_eq!(s, want, "{method} {p}: {b}");
            assert_eq!(b["status"], want.as_u16());
            assert!(b.get("items").is_none() && !b.to_string().contains(&dave), "{b}");
        }
    }

    // Acknowledge: bad notes change nothing; then once with a note; twice is a conflict.
    for note in [json!(""), json!("   "), json!("x".repeat(1001)), json!(12)] {
        let (s, b) = call(&app, Method::POST, &ack, Cred::Bearer(&token), Some(json!({ "note": note }))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("note"), "{b}");
    }
    let (s, b) = call(&app, Method::POST, &ack, Cred::Bearer(&token), Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(alerts(&app, &token, "status=open").await.len(), 2, "nothing changed");
    let (s, a) =
        call(&app, Method::POST, &ack, Cred::Bearer(&token), Some(json!({"note": "Dave joined the ops team."}))).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["status"], "acknowledged");
    assert_eq!(a["note"], "Dave joined the ops team.");
    assert_eq!(a["acknowledged_by"], admin_id.as_str());
    assert!(a["acknowledged_at"].is_string());
    let (s, b) = call(&app, Method::POST, &ack, Cred::Bearer(&token), Some(json!({"note": "again"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (_, still) = call(&app, Method::GET, &path, Cred::Bearer(&token), None).await;
    assert_eq!(still["note"], "Dave joined the ops team.", "the first note stays");
    let (s, _) = call(
        &app,
        Method::POST,
        "/v1/security/alerts/nope/acknowledge",
        Cred::Bearer(&token),
        Some(json!({"note": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(alerts(&app, &token, "status=acknowledged").await.len(), 1);
    assert_eq!(alerts(&app, &token, "status=open").await.len(), 1);
    let acked = audit_rows(&app, "alert.acknowledged").await;
    assert_eq!(acked.len(), 1, "{acked:?}");
    assert_eq!(acked[0].0.as_deref(), Some(id.as_str()));
    assert_eq!(acked[0].1["rule"], "admin_granted");
    app.stop().await;
}

/// What the test receiver got: (signature header, alert id header, body).
type Got = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

#[poem::handler]
async fn hook(req: &poem::Request, body: Vec<u8>, got: poem::web::Data<&Got>) -> poem::http::StatusCode {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    got.lock().unwrap().push((header("x-gatehouse-signature"), header("x-gatehouse-alert-id"), body));
    poem::http::StatusCode::NO_CONTENT
}

/// A loopback webhook receiver on `listener`.
fn receiver(listener: tokio::net::TcpListener, got: Got) -> tokio::task::JoinHandle<()> {
    use poem::EndpointExt;
    let app = poem::Route::new().at("/hook", poem::post(hook)).data(got);
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    })
}

/// The receiver's side of the signature check, written independently of Gatehouse's code.
fn signature_ok(key: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

fn webhook_key_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook-key");
    std::fs::write(&path, format!("{WEBHOOK_KEY}\n")).unwrap();
    (dir, path)
}

#[tokio::test]
async fn the_webhook_gets_a_signed_post_after_retrying_until_the_receiver_is_up() {
    // A free port with nobody listening yet: the first attempt fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_keep, key_file) = webhook_key_file();
    let app = app_with(|c| {
        c.monitoring.webhook_url = Some(format!("http://127.0.0.1:{port}/hook"));
        c.monitoring.webhook_secret_file = Some(key_file.clone());
    })
    .await;
    let (token, _) = admin(&app).await;
    let (_, jo, _) = user(&app, "jo@example.com").await;
    grant_admin(&app, &token, &jo).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let items = alerts(&app, &token, "").await;
        if items.first().is_some_and(|a| a["delivery"]["attempts"] == 1) {
            break items[0].clone();
        }
        assert!(Instant::now() < deadline, "no failed attempt: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["delivery"]["status"], "pending");
    assert_eq!(first["delivery"]["last_error"], "connection failed");
    assert_eq!(first["delivery"]["next_attempt_at"], "2026-11-29T12:00:10Z", "10 s back-off");
    assert!(!first.to_string().contains(WEBHOOK_KEY));

    // The receiver comes up; the retry is due 10 s later.
    let got: Got = Arc::default();
    let server = receiver(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), got.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(got.lock().unwrap().is_empty(), "not before the back-off");
    app.clock.advance(time::Duration::seconds(11));
    let deadline = Instant::now() + Duration::from_secs(15);
    let delivered = loop {
        let (_, a) = call(
            &app,
            Method::GET,
            &format!("/v1/security/alerts/{}", first["id"].as_str().unwrap()),
            Cred::Bearer(&token),
            None,
        )
        .await;
        if a["delivery"]["status"] == "delivered" {
            break a;
        }
        assert!(Instant::now() < deadline, "not delivered: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered["delivery"]["attempts"], 2);
    assert_eq!(delivered["delivery"]["delivered_at"], "2026-11-29T12:00:11Z");
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let (signature, alert_id, body) = &posts[0];
    assert_eq!(alert_id, first["id"].as_str().unwrap());
    assert!(signature.starts_with(&format!("t={},v1=", (test_time() + time::Duration::seconds(11)).unix_timestamp())));
    assert!(signature_ok(WEBHOOK_KEY, signature, body), "{signature}");
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (sent["id"].clone(), sent["rule"].clone(), sent["key"].clone()),
        (first["id"].clone(), json!("admin_granted"), json!(jo))
    );
    assert!(!String::from_utf8_lossy(body).contains(WEBHOOK_KEY), "the key is never sent");
    // A tampered body, another key, or a moved timestamp fail verification.
    let tampered = String::from_utf8(body.clone()).unwrap().replace("admin_granted", "rate_limited_ip");
    assert!(!signature_ok(WEBHOOK_KEY, signature, tampered.as_bytes()));
    assert!(!signature_ok("another key", signature, body));
    let t = signature.split(',').next().unwrap();
    let moved = signature.replace(t, "t=1");
    assert!(!signature_ok(WEBHOOK_KEY, &moved, body));
    let m = metrics(&app).await;
    assert!(m.contains("gatehouse_security_alert_webhook_deliveries_total{outcome=\"failed\"} 1"), "{m}");
    assert!(m.contains("gatehouse_security_alert_webhook_deliveries_total{outcome=\"delivered\"} 1"), "{m}");
    server.abort();
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_webhook_does_not_slow_requests() {
    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    let (_keep, key_file) = webhook_key_file();
    let app = app_with(|c| {
        c.monitoring.webhook_url = Some(format!("http://127.0.0.1:{port}/hook"));
        c.monitoring.webhook_secret_file = Some(key_file.clone());
    })
    .await;
    let (token, _) = admin(&app).await;
    let mut slowest = Duration::ZERO;
    for i in 0..4 {
        let (_, id, _) = user(&app, &format!("k{i}@example.com")).await;
        let started = Instant::now();
        grant_admin(&app, &token, &id).await;
        slowest = slowest.max(started.elapsed());
    }
    // The deliveries hang on the silent receiver meanwhile; requests go on as before.
    wait_alerts(&app, &token, "rule=admin_granted", 4).await;
    for _ in 0..10 {
        let started = Instant::now();
        let (s, _) = call(&app, Method::GET, "/v1/security/alerts", Cred::Bearer(&token), None).await;
        assert_eq!(s, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?}");
    let items = alerts(&app, &token, "").await;
    assert!(items.iter().all(|a| a["delivery"]["status"] == "pending"), "{items:?}");
    // Stopping does not wait for the hanging call either.
    let started = Instant::now();
    app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "stop took {:?}", started.elapsed());
    held.abort();
}

#[tokio::test]
async fn the_monitor_resumes_from_its_cursor_and_a_first_start_begins_at_the_head() {
    let app = app_with(|_| {}).await;
    let (token, _) = admin(&app).await;
    let (_, kim, _) = user(&app, "kim@example.com").await;
    grant_admin(&app, &token, &kim).await;
    wait_alerts(&app, &token, "rule=admin_granted", 1).await;
    let config = app.config.clone();
    let dir = app.stop().await;

    // A restart carries on after what was counted: the old grant does not alert again.
    let app = crate::helpers::spawn_app_in(dir, config.clone()).await;
    // The bootstrap password was shown at the first start only: sign in as kim, an admin now.
    let pw = pw_of(&app, "kim@example.com").await;
    let (_, lee, _) = user(&app, "lee@example.com").await;
    grant_admin(&app, &pw, &lee).await;
    let items = wait_alerts(&app, &pw, "rule=admin_granted", 2).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let dir = app.stop().await;

    // Without a stored cursor (a database from before monitoring), the history is not replayed.
    let db = config.database_path();
    rusqlite::Connection::open(&db).unwrap().execute("DELETE FROM meta WHERE key = 'monitor.cursor'", []).unwrap();
    let app = crate::helpers::spawn_app_in(dir, config).await;
    let (_, mo, _) = user(&app, "mo@example.com").await;
    let token = pw_of(&app, "kim@example.com").await;
    grant_admin(&app, &token, &mo).await;
    let items = wait_alerts(&app, &token, "rule=admin_granted", 3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(alerts(&app, &token, "rule=admin_granted").await.len(), 3, "{items:?}");
    app.stop().await;
}

async fn pw_of(app: &TestApp, email: &str) -> String {
    let body = json!({"email": email, "password": PW});
    let (s, b) = call(app, Method::POST, "/v1/auth/login", Cred::None, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["access_token"].as_str().unwrap().to_string()
}

#[test]
fn a_webhook_without_its_key_or_with_a_broken_ca_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.monitoring.webhook_url = Some("https://alerts.example.com/hook".into());
    let err = gatehouse::startup::preflight(&config, None).unwrap_err().to_string();
    assert!(err.contains("webhook_secret_file"), "{err}");

    let (_keep, key_file) = webhook_key_file();
    config.monitoring.webhook_secret_file = Some(key_file.clone());
    let bad_ca = dir.path().join("ca.pem");
    std::fs::write(&bad_ca, "not a certificate").unwrap();
    config.monitoring.webhook_ca_file = Some(bad_ca);
    let err = gatehouse::startup::preflight(&config, None).unwrap_err().to_string();
    assert!(err.contains("webhook_ca_file"), "{err}");
    assert!(!err.contains(WEBHOOK_KEY));

    config.monitoring.webhook_ca_file = None;
    config.monitoring.webhook_secret_file = Some(dir.path().join("missing-key"));
    let err = gatehouse::startup::preflight(&config, None).unwrap_err().to_string();
    assert!(err.contains("missing-key"), "{err}");
    config.monitoring.webhook_secret_file = Some(key_file);
    assert!(gatehouse::startup::preflight(&config, None).is_ok());
    assert!(!dir.path().join("data").exists(), "nothing was written");
}

#[tokio::test]
async fn an_https_webhook_is_trusted_through_its_ca_file_only() {
    // A receiver with a self-signed certificate for 127.0.0.1.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    gatehouse::tls::ensure_self_signed(&cert, &key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let got: Got = Arc::default();
    let server = {
        use poem::listener::{Listener, RustlsCertificate, RustlsConfig};
        use poem::EndpointExt;
        let tls = RustlsConfig::new()
            .fallback(RustlsCertificate::new().cert(std::fs::read(&cert).unwrap()).key(std::fs::read(&key).unwrap()));
        let listener = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}")).rustls(tls);
        let app = poem::Route::new().at("/hook", poem::post(hook)).data(got.clone());
        tokio::spawn(async move {
            let _ = poem::Server::new(listener).run(app).await;
        })
    };
    let (_keep, key_file) = webhook_key_file();
    let url = format!("https://127.0.0.1:{port}/hook");
    let with_ca = app_with(|c| {
        c.monitoring.webhook_url = Some(url.clone());
        c.monitoring.webhook_secret_file = Some(key_file.clone());
        c.monitoring.webhook_ca_file = Some(cert.clone());
    })
    .await;
    let without_ca = app_with(|c| {
        c.monitoring.webhook_url = Some(url.clone());
        c.monitoring.webhook_secret_file = Some(key_file.clone());
    })
    .await;
    let mut outcomes = Vec::new();
    for app in [&with_ca, &without_ca] {
        let (token, _) = admin(app).await;
        let (_, id, _) = user(app, "nia@example.com").await;
        grant_admin(app, &token, &id).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let alert = loop {
            let items = alerts(app, &token, "").await;
            if let Some(a) = items.first().filter(|a| a["delivery"]["attempts"] == 1) {
                break a.clone();
            }
            assert!(Instant::now() < deadline, "no attempt: {items:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        outcomes.push(alert["delivery"].clone());
    }
    assert_eq!(outcomes[0]["status"], "delivered", "{outcomes:?}");
    assert_eq!(outcomes[1]["status"], "pending", "an unknown certificate is refused: {outcomes:?}");
    assert!(outcomes[1]["last_error"].is_string());
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "only the server that trusts the CA delivered");
    assert!(signature_ok(WEBHOOK_KEY, &posts[0].0, &posts[0].2));
    server.abort();
    with_ca.stop().await;
    without_ca.stop().await;
}
