//! Accounts and sessions, end to end against the running server, with every attack as a
//! negative test: forged, expired, wrong-audience, wrong-issuer, `alg: none`, key-confusion and
//! unknown-`kid` JWTs; revoked sessions; refresh reuse; CSRF; TOTP replay; lockout engaging and
//! releasing; tokens where a session is required; a disabled user's every credential.

use crate::helpers::{spawn_app_with, TestApp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::clock::Clock;
use gatehouse::config::SignupMode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PW: &str = "correct horse battery staple 42";

async fn open_app() -> TestApp {
    spawn_app_with(|c| {
        c.auth.signup = SignupMode::Open;
        c.auth.rate_limit.burst = 1000;
        c.auth.rate_limit.per_minute = 6000;
    })
    .await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn signup(app: &TestApp, email: &str) -> Value {
    let (s, b) = call(app, Method::POST, "/v1/auth/signup", None, Some(json!({"email": email, "password": PW}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn login(app: &TestApp, email: &str, pw: &str) -> (StatusCode, Value) {
    call(app, Method::POST, "/v1/auth/login", None, Some(json!({"email": email, "password": pw}))).await
}

/// An RFC 3339 instant `d` after the tests' start time (token expiries).
fn expires_in(d: time::Duration) -> String {
    (crate::helpers::test_time() + d).format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn at(v: &Value) -> String {
    v["access_token"].as_str().unwrap().to_string()
}

async fn me_status(app: &TestApp, bearer: &str) -> StatusCode {
    call(app, Method::GET, "/v1/me", Some(bearer), None).await.0
}

fn assert_problem(s: StatusCode, b: &Value, want: StatusCode) {
    assert_eq!(s, want, "{b}");
    assert_eq!(b["status"], want.as_u16(), "{b}");
    assert!(b["request_id"].is_string(), "{b}");
}

#[tokio::test]
async fn signup_login_refresh_rotation_and_logout() {
    let app = open_app().await;
    let s = signup(&app, "Alice@Example.COM").await;
    assert_eq!(s["token_type"], "Bearer");
    assert_eq!(s["expires_in"], 900);
    let (st, me) = call(&app, Method::GET, "/v1/me", Some(&at(&s)), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["email"], "Alice@example.com");
    assert_eq!(me["kind"], "local");

    // The password policy.
    for (pw, why) in [("short", "12"), ("qwerty123456", "common"), ("bob@example.com", "email")] {
        let (st, b) = call(
            &app,
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(json!({"email": "bob@example.com", "password": pw})),
        )
        .await;
        assert_problem(st, &b, StatusCode::BAD_REQUEST);
        assert!(b["detail"].as_str().unwrap().contains(why), "{b}");
    }
    let (st, b) =
        call(&app, Method::POST, "/v1/auth/signup", None, Some(json!({"email": "alice@example.com", "password": PW})))
            .await;
    assert_problem(st, &b, StatusCode::CONFLICT);
    // An explicit null is refused, naming the field; unknown members are ignored.
    let (st, b) = call(&app, Method::POST, "/v1/auth/login", None, Some(json!({"email": null, "password": PW}))).await;
    assert_problem(st, &b, StatusCode::BAD_REQUEST);
    assert!(b["detail"].as_str().unwrap().contains("`email`"), "{b}");
    let body = json!({"email": "alice@example.com", "password": PW, "x": null});
    assert_eq!(call(&app, Method::POST, "/v1/auth/login", None, Some(body)).await.0, StatusCode::OK);

    // Refresh rotates; the old refresh token presented again revokes the whole session.
    let (st, r1) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::OK, "{r1}");
    assert_ne!(r1["refresh_token"], s["refresh_token"]);
    assert_eq!(me_status(&app, &at(&r1)).await, StatusCode::OK);
    let (st, b) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_problem(st, &b, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &at(&r1)).await, StatusCode::UNAUTHORIZED, "reuse revoked the session at once");
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": r1["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the newest refresh token of a revoked session is dead too");

    // Log in again, list sessions, log out: the token dies on the next request.
    let (st, l) = login(&app, "alice@EXAMPLE.com", PW).await;
    assert_eq!(st, StatusCode::OK, "{l}");
    let (_, sessions) = call(&app, Method::GET, "/v1/me/sessions", Some(&at(&l)), None).await;
    let list = sessions.as_array().unwrap();
    assert!(list.iter().any(|x| x["current"] == true && x["id"] == l["session_id"]), "{sessions}");
    let (st, _) = call(&app, Method::POST, "/v1/auth/logout", Some(&at(&l)), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&l)).await, StatusCode::UNAUTHORIZED);
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": l["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The audit trail has the story, and the chain holds.
    let report =
        gatehouse::domain::audit::verify(&app.state.db, &app.state.auditor, &app.state.vault, vec![]).await.unwrap();
    assert_eq!(report.first_broken, None);
    app.stop().await;
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn forged_and_misdirected_jwts_are_refused() {
    let app = open_app().await;
    let s = signup(&app, "carol@example.com").await;
    let token = at(&s);
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    for c in ["iss", "aud", "sub", "sid", "iat", "exp", "jti", "amr"] {
        assert!(claims.get(c).is_some(), "claim {c} missing: {claims}");
    }
    assert_eq!(me_status(&app, &token).await, StatusCode::OK);

    // Claims changed under the original signature.
    let mut admin = claims.clone();
    admin["sub"] = json!("someone-else");
    let forged = format!("{}.{}.{}", parts[0], b64(&admin), parts[2]);
    // alg: none.
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": header["kid"]})), parts[1]);
    // HS256 keyed with the published public key (key confusion).
    let jwks: Value = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let public = serde_json::to_string(&jwks["keys"][0]).unwrap();
    let hs_header = b64(&json!({"alg": "HS256", "kid": header["kid"], "typ": "JWT"}));
    let signing_input = format!("{hs_header}.{}", parts[1]);
    let mac = {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).unwrap();
        m.update(signing_input.as_bytes());
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    };
    let confused = format!("{signing_input}.{mac}");
    // Unknown kid.
    let mut h2 = header.clone();
    h2["kid"] = json!("not-a-key");
    let unknown_kid = format!("{}.{}.{}", b64(&h2), parts[1], parts[2]);
    // Wrong issuer / audience, correctly signed by the real key.
    let signer = app.state.auth.keys.signer().unwrap();
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-service");
    let wrong_iss = signer.sign(&wrong_iss).unwrap();
    let wrong_aud = signer.sign(&wrong_aud).unwrap();
    for (name, t) in [
        ("forged", forged),
        ("none", none),
        ("hs256", confused),
        ("kid", unknown_kid),
        ("iss", wrong_iss),
        ("aud", wrong_aud),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let (st, b) = call(&app, Method::GET, "/v1/me", Some(&t), None).await;
        assert_problem(st, &b, StatusCode::UNAUTHORIZED);
        assert!(!b.to_string().contains("someone-else"), "{name}: {b}");
    }

    // Expiry: 15 minutes later the token is refused; the refresh token still works.
    app.clock.advance(time::Duration::minutes(16));
    let (st, b) = call(&app, Method::GET, "/v1/me", Some(&token), None).await;
    assert_problem(st, &b, StatusCode::UNAUTHORIZED);
    assert!(b["detail"].as_str().unwrap().contains("expired"), "{b}");
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_to_change_state() {
    let app = open_app().await;
    signup(&app, "dave@example.com").await;
    let resp = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "dave@example.com", "password": PW, "mode": "cookie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["__Host-gatehouse_session=gths_", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let body: Value = resp.json().await.unwrap();
    assert!(body["access_token"].is_null() && body["refresh_token"].is_null(), "{body}");
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    let with_cookie = |m: Method, p: &str| app.client.request(m, app.url(p)).header("cookie", cookie.clone());
    assert_eq!(with_cookie(Method::GET, "/v1/me").send().await.unwrap().status(), StatusCode::OK);
    // No CSRF token, a wrong one, another session's: 403, and the session survives.
    let r = with_cookie(Method::POST, "/v1/auth/logout").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = with_cookie(Method::POST, "/v1/auth/logout").header("x-csrf-token", "gthx_wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = with_cookie(Method::PATCH, "/v1/me").json(&json!({"name": "Mallory"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(with_cookie(Method::GET, "/v1/me").send().await.unwrap().status(), StatusCode::OK);
    // A Bearer request needs no CSRF token.
    let (_, l) = login(&app, "dave@example.com", PW).await;
    let (st, _) = call(&app, Method::PATCH, "/v1/me", Some(&at(&l)), Some(json!({"name": "Dave"}))).await;
    assert_eq!(st, StatusCode::OK);
    // With the token: allowed; the cookie is cleared and dead.
    let r = with_cookie(Method::POST, "/v1/auth/logout").header("x-csrf-token", csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(with_cookie(Method::GET, "/v1/me").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn lockout_engages_and_releases_and_does_not_reveal_accounts() {
    let app = open_app().await;
    signup(&app, "erin@example.com").await;
    // The same answer for a wrong password and an unknown email.
    let (s1, b1) = login(&app, "erin@example.com", "wrong password 123").await;
    let (s2, b2) = login(&app, "nobody@example.com", "wrong password 123").await;
    assert_eq!((s1, s2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(b1["detail"], b2["detail"]);
    for _ in 0..2 {
        login(&app, "erin@example.com", "wrong password 123").await;
        login(&app, "nobody@example.com", "wrong password 123").await;
    }
    // Back-off: even the right password waits; unknown emails behave the same.
    for email in ["erin@example.com", "nobody@example.com"] {
        let r = app
            .client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": PW}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        assert!(r.headers().get("retry-after").is_some());
    }
    app.clock.advance(time::Duration::seconds(2));
    let (st, _) = login(&app, "erin@example.com", PW).await;
    assert_eq!(st, StatusCode::OK, "back-off released and success resets the count");

    // Ten failures lock the account for 15 minutes.
    for _ in 0..10 {
        login(&app, "erin@example.com", "wrong password 123").await;
        app.clock.advance(time::Duration::seconds(61));
    }
    let (st, _) = login(&app, "erin@example.com", PW).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    app.clock.advance(time::Duration::minutes(16));
    let (st, _) = login(&app, "erin@example.com", PW).await;
    assert_eq!(st, StatusCode::OK, "the lock releases by itself");

    let acts = audit_actions(&app).await;
    for a in ["auth.login.failed", "auth.login.throttled", "auth.account.locked", "auth.login.succeeded"] {
        assert!(acts.iter().any(|x| x == a), "{a} not audited: {acts:?}");
    }
    app.stop().await;
}

async fn audit_actions(app: &TestApp) -> Vec<String> {
    let path = app.config.database_path();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT action FROM audit_log ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_client_address_is_rate_limited_and_recovers() {
    let app = spawn_app_with(|c| {
        c.auth.signup = SignupMode::Open;
        c.auth.rate_limit.burst = 3;
        c.auth.rate_limit.per_minute = 60;
    })
    .await;
    for _ in 0..3 {
        let (st, _) = login(&app, "x@example.com", "whatever password").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "y@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let (st, _) = call(&app, Method::POST, "/v1/auth/anonymous", None, Some(json!({}))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "the limit covers every sign-in endpoint");
    app.clock.advance(time::Duration::seconds(1));
    let (st, _) = call(&app, Method::POST, "/v1/auth/anonymous", None, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK);
    assert!(audit_actions(&app).await.iter().any(|a| a == "auth.rate_limited"));
    app.stop().await;
}

#[tokio::test]
async fn anonymous_users_upgrade_in_place_and_expire() {
    let app = open_app().await;
    let (st, a) = call(&app, Method::POST, "/v1/auth/anonymous", None, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (_, me) = call(&app, Method::GET, "/v1/me", Some(&at(&a)), None).await;
    assert_eq!(me["kind"], "anonymous");
    assert!(me["email"].is_null());
    let (st, s) = call(
        &app,
        Method::POST,
        "/v1/auth/signup",
        Some(&at(&a)),
        Some(json!({"email": "frank@example.com", "password": PW})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{s}");
    assert_eq!(s["user_id"], a["user_id"], "signing up keeps the anonymous user's id");
    assert_eq!(me_status(&app, &at(&a)).await, StatusCode::UNAUTHORIZED, "the anonymous session ended");
    let (_, me) = call(&app, Method::GET, "/v1/me", Some(&at(&s)), None).await;
    assert_eq!(me["kind"], "local");

    // Another anonymous user, left to expire: purged with its sessions.
    let (_, b) = call(&app, Method::POST, "/v1/auth/anonymous", None, Some(json!({}))).await;
    app.clock.advance(time::Duration::hours(25));
    gatehouse::startup::housekeeping_round(&app.state).await;
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": b["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let uid = b["user_id"].as_str().unwrap().to_string();
    let gone = app.state.db.read(move |tx| tx.user_by_id(&uid)).await.unwrap();
    assert!(gone.is_none());
    // The upgraded user stays.
    let (st, _) = login(&app, "frank@example.com", PW).await;
    assert_eq!(st, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn personal_access_tokens_work_and_stay_in_their_lane() {
    let app = open_app().await;
    let s = signup(&app, "gina@example.com").await;
    let session = at(&s);
    let expires = expires_in(time::Duration::days(30));
    let (st, t) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&session), Some(json!({"name": "ci", "expires_at": expires})))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let pat = t["token"].as_str().unwrap().to_string();
    assert!(pat.starts_with("gthp_") && pat.len() == 41, "{pat}");
    assert!(gatehouse::crypto::token::well_formed(&pat, gatehouse::crypto::token::Kind::PersonalAccessToken));

    assert_eq!(me_status(&app, &pat).await, StatusCode::OK);
    // What a token may not do.
    let (st, b) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&pat), Some(json!({"name": "x", "expires_at": expires}))).await;
    assert_problem(st, &b, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/me/password",
        Some(&pat),
        Some(json!({"current_password": PW, "new_password": "another long passphrase"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&pat), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Expiry beyond the cap, or in the past.
    let far = expires_in(time::Duration::days(400));
    let (st, _) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&session), Some(json!({"name": "x", "expires_at": far}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A token with a broken checksum or unknown to the server.
    let mut bad = pat.clone().into_bytes();
    bad[8] = if bad[8] == b'a' { b'b' } else { b'a' };
    assert_eq!(me_status(&app, std::str::from_utf8(&bad).unwrap()).await, StatusCode::UNAUTHORIZED);

    // Listed without the secret, with its last use.
    let (_, list) = call(&app, Method::GET, "/v1/me/tokens", Some(&session), None).await;
    let entry = &list.as_array().unwrap()[0];
    assert!(!list.to_string().contains(&pat[5..]), "{list}");
    assert_eq!(entry["last_used_ip"], "127.0.0.1");
    assert!(entry["last_used_at"].is_string());

    // Revoked: refused on the very next request.
    let (st, _) =
        call(&app, Method::DELETE, &format!("/v1/me/tokens/{}", t["id"].as_str().unwrap()), Some(&session), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &pat).await, StatusCode::UNAUTHORIZED);

    // Expired.
    let (_, t2) = call(
        &app,
        Method::POST,
        "/v1/me/tokens",
        Some(&session),
        Some(json!({"name": "short", "expires_at": expires_in(time::Duration::hours(1))})),
    )
    .await;
    let pat2 = t2["token"].as_str().unwrap().to_string();
    assert_eq!(me_status(&app, &pat2).await, StatusCode::OK);
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(me_status(&app, &pat2).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn admin_token(app: &TestApp) -> String {
    let pw = app.bootstrap_password.clone().unwrap();
    let (st, b) = login(app, "admin@localhost", &pw).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    at(&b)
}

#[tokio::test]
async fn a_disabled_user_loses_every_credential_at_once() {
    let app = open_app().await;
    let admin = admin_token(&app).await;
    let s = signup(&app, "hank@example.com").await;
    let expires = expires_in(time::Duration::days(1));
    let (_, t) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&at(&s)), Some(json!({"name": "ci", "expires_at": expires})))
            .await;
    let pat = t["token"].as_str().unwrap().to_string();
    let cookie_login = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "hank@example.com", "password": PW, "mode": "cookie"}))
        .send()
        .await
        .unwrap();
    let cookie = cookie_login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let uid = s["user_id"].as_str().unwrap();

    // A non-admin cannot.
    let (st, _) =
        call(&app, Method::PATCH, &format!("/v1/users/{uid}"), Some(&at(&s)), Some(json!({"disabled": true}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, u) =
        call(&app, Method::PATCH, &format!("/v1/users/{uid}"), Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["disabled"], true);

    assert_eq!(me_status(&app, &at(&s)).await, StatusCode::UNAUTHORIZED, "access token");
    assert_eq!(me_status(&app, &pat).await, StatusCode::UNAUTHORIZED, "personal access token");
    let r = app.client.get(app.url("/v1/me")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "cookie");
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "refresh token");
    let (st, b) = login(&app, "hank@example.com", PW).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(b["detail"], "The email or password is incorrect.", "a disabled account answers like a wrong password");

    // Re-enabled: a new login works; the old credentials stay dead.
    let (st, _) =
        call(&app, Method::PATCH, &format!("/v1/users/{uid}"), Some(&admin), Some(json!({"disabled": false}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, l) = login(&app, "hank@example.com", PW).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me_status(&app, &at(&l)).await, StatusCode::OK);
    assert_eq!(me_status(&app, &pat).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &at(&s)).await, StatusCode::UNAUTHORIZED, "re-enabling does not revive old sessions");
    app.stop().await;
}

#[tokio::test]
async fn totp_enrolment_login_replay_and_recovery() {
    let app = open_app().await;
    let s = signup(&app, "ivy@example.com").await;
    let (st, e) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&at(&s)), None).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert!(e["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Gatehouse:ivy%40example.com?secret="));
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let seed = base32_decode(e["secret"].as_str().unwrap());
    let now = || app.clock.now().unix_timestamp();
    let code = |t: i64| gatehouse::crypto::totp::code_at(&seed, gatehouse::crypto::totp::step_of(t));

    let (st, _) =
        call(&app, Method::POST, "/v1/auth/mfa/totp/verify", Some(&at(&s)), Some(json!({"code": "000000"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, rc) =
        call(&app, Method::POST, "/v1/auth/mfa/totp/verify", Some(&at(&s)), Some(json!({"code": code(now())}))).await;
    assert_eq!(st, StatusCode::OK, "{rc}");
    let recovery: Vec<String> =
        rc["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(recovery.len(), 10);

    // The password alone gets a challenge, not a session.
    app.clock.advance(time::Duration::seconds(30));
    let (st, ch) = login(&app, "ivy@example.com", PW).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ch}");
    assert!(ch["access_token"].is_null());
    let challenge = ch["challenge"].as_str().unwrap().to_string();
    let (st, b) =
        call(&app, Method::POST, "/v1/auth/login", None, Some(json!({"challenge": challenge, "totp": "123456"}))).await;
    assert_problem(st, &b, StatusCode::UNAUTHORIZED);
    let c = code(now());
    let (st, ok) =
        call(&app, Method::POST, "/v1/auth/login", None, Some(json!({"challenge": challenge, "totp": c}))).await;
    assert_eq!(st, StatusCode::OK, "{ok}");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(at(&ok).split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    // Replay of the same code, even with a fresh challenge: refused.
    let (_, ch2) = login(&app, "ivy@example.com", PW).await;
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/login", None, Some(json!({"challenge": ch2["challenge"], "totp": c}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a used code is refused");
    // The challenge is single-use after success too.
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"challenge": challenge, "totp": code(now() + 30)})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A recovery code works once, in one call with the password.
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"email": "ivy@example.com", "password": PW, "recovery_code": recovery[0]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"email": "ivy@example.com", "password": PW, "recovery_code": recovery[0]})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Disabling needs the password and a current code.
    app.clock.advance(time::Duration::seconds(60));
    let (st, _) = call(
        &app,
        Method::DELETE,
        "/v1/auth/mfa/totp",
        Some(&at(&ok)),
        Some(json!({"password": "wrong password 12", "code": code(now())})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &app,
        Method::DELETE,
        "/v1/auth/mfa/totp",
        Some(&at(&ok)),
        Some(json!({"password": PW, "code": code(now())})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = login(&app, "ivy@example.com", PW).await;
    assert_eq!(st, StatusCode::OK);
    app.stop().await;
}

fn base32_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        buf = (buf << 5) | alphabet.iter().position(|a| *a == c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            out.push((buf >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

#[tokio::test]
async fn password_change_ends_the_other_sessions() {
    let app = open_app().await;
    let a = signup(&app, "jack@example.com").await;
    let (_, b) = login(&app, "jack@example.com", PW).await;
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/me/password",
        Some(&at(&a)),
        Some(json!({"current_password": "not the password", "new_password": "a brand new passphrase"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/me/password",
        Some(&at(&a)),
        Some(json!({"current_password": PW, "new_password": "a brand new passphrase"})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&a)).await, StatusCode::OK, "the session that changed it stays");
    assert_eq!(me_status(&app, &at(&b)).await, StatusCode::UNAUTHORIZED, "the others end at once");
    assert_eq!(login(&app, "jack@example.com", PW).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&app, "jack@example.com", "a brand new passphrase").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn admins_manage_users_with_search_pagination_and_erasure() {
    let app = spawn_app_with(|c| c.auth.rate_limit.burst = 1000).await;
    let admin = admin_token(&app).await;
    // Sign-up is by invitation by default.
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/signup", None, Some(json!({"email": "kim@example.com", "password": PW})))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, inv) =
        call(&app, Method::POST, "/v1/users/invites", Some(&admin), Some(json!({"email": "kim@example.com"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(json!({"email": "other@example.com", "password": PW, "invite_token": inv["invite_token"]})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an invitation is for its email only");
    let (st, kim) = call(
        &app,
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(json!({"email": "kim@example.com", "password": PW, "invite_token": inv["invite_token"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{kim}");
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(json!({"email": "kim2@example.com", "password": PW, "invite_token": inv["invite_token"]})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "used once");

    for i in 0..5 {
        let (st, b) = call(
            &app,
            Method::POST,
            "/v1/users",
            Some(&admin),
            Some(json!({"email": format!("user{i}@corp.example"), "password": PW, "name": format!("User {i}")})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    let (st, _) = call(&app, Method::GET, "/v1/users", Some(&at(&kim)), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "not an admin");
    let (_, page1) = call(&app, Method::GET, "/v1/users?q=corp.example&limit=2", Some(&admin), None).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> =
        page1["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_string()).collect();
    let mut cursor = page1["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let (_, p) =
            call(&app, Method::GET, &format!("/v1/users?q=corp.example&limit=2&cursor={c}"), Some(&admin), None).await;
        seen.extend(p["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_string()));
        cursor = p["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, (0..5).map(|i| format!("user{i}@corp.example")).collect::<Vec<_>>());

    // Deleting erases the account; the audit trail keeps only the id.
    let uid = kim["user_id"].as_str().unwrap().to_string();
    let (st, _) = call(&app, Method::DELETE, &format!("/v1/users/{uid}"), Some(&admin), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&kim)).await, StatusCode::UNAUTHORIZED);
    let (st, _) = call(&app, Method::GET, &format!("/v1/users/{uid}"), Some(&admin), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let path = app.config.database_path();
    let stop = app.stop().await;
    let conn = rusqlite::Connection::open(path).unwrap();
    let hits: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE target = ?1 OR details LIKE '%kim@example.com%'",
            [&uid],
            |r| r.get(0),
        )
        .unwrap();
    assert!(hits > 0);
    let email_hits: i64 =
        conn.query_row("SELECT count(*) FROM audit_log WHERE details LIKE '%kim@%'", [], |r| r.get(0)).unwrap();
    assert_eq!(email_hits, 0, "the audit trail holds no email");
    drop(stop);
}

#[tokio::test]
async fn signing_keys_rotate_with_the_next_key_published_first() {
    let app = open_app().await;
    let s = signup(&app, "lee@example.com").await;
    let jwks = |app: &TestApp| {
        let c = app.client.clone();
        let u = app.url("/.well-known/jwks.json");
        async move {
            let r = c.get(u).send().await.unwrap();
            assert!(r.headers()["cache-control"].to_str().unwrap().contains("max-age=300"));
            let v: Value = r.json().await.unwrap();
            v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    let before = jwks(&app).await;
    assert_eq!(before.len(), 1);
    assert!(!serde_json::to_string(&before).unwrap().contains("\"d\""));
    let (kid, _) = {
        let st = app.state.clone();
        let now = app.clock.now();
        app.state
            .db
            .write(move |tx| {
                gatehouse::domain::keys::rotate(
                    tx,
                    &st.auth.sealing,
                    &st.auditor,
                    &st.auth.settings.keys,
                    gatehouse::domain::audit::Actor::Operator,
                    now,
                )
            })
            .await
            .unwrap()
    };
    gatehouse::startup::housekeeping_round(&app.state).await;
    let published = jwks(&app).await;
    assert!(published.contains(&kid) && published.len() == 2, "the next key is published before it signs");
    let (_, l) = login(&app, "lee@example.com", PW).await;
    assert_ne!(header_kid(&at(&l)), kid, "…and does not sign yet");
    // After the publication window it signs; tokens of the old key still verify.
    app.clock.advance(time::Duration::seconds(601));
    gatehouse::startup::housekeeping_round(&app.state).await;
    let (_, l2) = login(&app, "lee@example.com", PW).await;
    assert_eq!(header_kid(&at(&l2)), kid);
    let (_, r) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_eq!(me_status(&app, &at(&r)).await, StatusCode::OK);
    // Once the old key's tokens have all expired, it leaves the JWKS.
    app.clock.advance(time::Duration::minutes(17));
    gatehouse::startup::housekeeping_round(&app.state).await;
    gatehouse::startup::housekeeping_round(&app.state).await;
    assert_eq!(jwks(&app).await, vec![kid]);
    app.stop().await;
}

fn header_kid(token: &str) -> String {
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn no_password_token_or_seed_is_stored_in_clear() {
    let app = open_app().await;
    let s = signup(&app, "mia@example.com").await;
    let expires = expires_in(time::Duration::days(1));
    let (_, t) =
        call(&app, Method::POST, "/v1/me/tokens", Some(&at(&s)), Some(json!({"name": "ci", "expires_at": expires})))
            .await;
    let (_, e) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&at(&s)), None).await;
    let secrets = [
        PW.to_string(),
        t["token"].as_str().unwrap().to_string(),
        s["refresh_token"].as_str().unwrap().to_string(),
        e["secret"].as_str().unwrap().to_string(),
    ];
    let dir = app.stop().await;
    for file in crate::helpers::files_below(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret in clear",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn required_mfa_confines_sessions_until_a_second_factor() {
    let app = spawn_app_with(|c| {
        c.auth.signup = SignupMode::Open;
        c.auth.require_mfa = true;
        c.auth.rate_limit.burst = 1000;
    })
    .await;
    let s = signup(&app, "nina@example.com").await;
    let t = at(&s);
    assert_eq!(me_status(&app, &t).await, StatusCode::OK, "reading the profile is allowed");
    let (st, b) = call(&app, Method::PATCH, "/v1/me", Some(&t), Some(json!({"name": "N"}))).await;
    assert_problem(st, &b, StatusCode::FORBIDDEN);
    assert!(b["detail"].as_str().unwrap().contains("second factor"), "{b}");
    let (st, _) = call(&app, Method::GET, "/v1/me/sessions", Some(&t), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, e) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&t), None).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    let seed = base32_decode(e["secret"].as_str().unwrap());
    let code =
        gatehouse::crypto::totp::code_at(&seed, gatehouse::crypto::totp::step_of(app.clock.now().unix_timestamp()));
    let (st, _) = call(&app, Method::POST, "/v1/auth/mfa/totp/verify", Some(&t), Some(json!({"code": code}))).await;
    assert_eq!(st, StatusCode::OK);
    // The token in hand still says "password only"; its refreshed successor says "otp".
    let (st, _) = call(&app, Method::PATCH, "/v1/me", Some(&t), Some(json!({"name": "N"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, r) =
        call(&app, Method::POST, "/v1/auth/refresh", None, Some(json!({"refresh_token": s["refresh_token"]}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&app, Method::PATCH, "/v1/me", Some(&at(&r)), Some(json!({"name": "N"}))).await;
    assert_eq!(st, StatusCode::OK);
    // Anonymous sessions are not local accounts: unaffected.
    let (_, a) = call(&app, Method::POST, "/v1/auth/anonymous", None, Some(json!({}))).await;
    let (st, _) = call(&app, Method::PATCH, "/v1/me", Some(&at(&a)), Some(json!({"name": "A"}))).await;
    assert_eq!(st, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn sessions_end_one_by_one_or_all_at_once() {
    let app = open_app().await;
    let a = signup(&app, "olga@example.com").await;
    let (_, b) = login(&app, "olga@example.com", PW).await;
    let (_, c) = login(&app, "olga@example.com", PW).await;
    let other = signup(&app, "pete@example.com").await;
    // Another user's session is invisible: 404, not 403.
    let (st, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/me/sessions/{}", other["session_id"].as_str().unwrap()),
        Some(&at(&a)),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(me_status(&app, &at(&other)).await, StatusCode::OK);
    // End b from a.
    let (st, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/me/sessions/{}", b["session_id"].as_str().unwrap()),
        Some(&at(&a)),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&b)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &at(&c)).await, StatusCode::OK);
    let (_, list) = call(&app, Method::GET, "/v1/me/sessions", Some(&at(&a)), None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // Log out everywhere from c: a and c end, the other user does not.
    let (st, _) = call(&app, Method::POST, "/v1/auth/logout-all", Some(&at(&c)), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&a)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &at(&c)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &at(&other)).await, StatusCode::OK);
    let acts = audit_actions(&app).await;
    for action in ["session.revoked", "session.logout_all"] {
        assert!(acts.iter().any(|x| x == action), "{action}: {acts:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn other_signature_algorithms_and_rehash_on_login() {
    for alg in ["EdDSA", "RS256"] {
        let app = spawn_app_with(|c| {
            c.auth.signup = SignupMode::Open;
            c.auth.jwt_algorithm = alg.into();
            c.auth.rate_limit.burst = 1000;
        })
        .await;
        let s = signup(&app, "quinn@example.com").await;
        let h: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(at(&s).split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(h["alg"], alg);
        assert_eq!(me_status(&app, &at(&s)).await, StatusCode::OK);
        let jwks: Value = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(jwks["keys"][0]["alg"], alg);
        assert!(jwks["keys"][0].get("d").is_none(), "no private part published");
        let dir = app.stop().await;
        drop(dir);
    }

    // A hash made with other argon2 parameters is upgraded at the next successful login.
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.auth.signup = SignupMode::Open;
    config.auth.password.memory_kib = 8 * 1024;
    config.auth.password.iterations = 1;
    let app = crate::helpers::spawn_app_in(dir, config.clone()).await;
    let s = signup(&app, "rose@example.com").await;
    let uid = s["user_id"].as_str().unwrap().to_string();
    let hash_of = |app: &TestApp, uid: String| {
        let db = app.state.db.clone();
        async move { db.read(move |tx| tx.user_by_id(&uid)).await.unwrap().unwrap().password_hash.unwrap() }
    };
    let before = hash_of(&app, uid.clone()).await;
    assert!(before.contains("m=8192,t=1,p=1"), "{before}");
    let dir = app.stop().await;
    config.auth.password.memory_kib = 19 * 1024;
    config.auth.password.iterations = 2;
    let app = crate::helpers::spawn_app_in(dir, config).await;
    assert_eq!(login(&app, "rose@example.com", PW).await.0, StatusCode::OK);
    let after = hash_of(&app, uid).await;
    assert!(after.contains("m=19456,t=2,p=1"), "{after}");
    assert_eq!(login(&app, "rose@example.com", PW).await.0, StatusCode::OK, "the new hash verifies");
    app.stop().await;
}

#[tokio::test]
async fn signing_keys_rotate_on_their_own_schedule() {
    let app = spawn_app_with(|c| {
        c.auth.signing_key_rotation_days = 2;
        c.auth.session_max_lifetime_seconds = 10 * 86_400;
        c.auth.refresh_token_ttl_seconds = 10 * 86_400;
    })
    .await;
    let kids = |app: &TestApp| {
        let keys = app.state.auth.keys.jwks();
        keys.iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let first = kids(&app);
    assert_eq!(first.len(), 1);
    // Just before the publication window (2 days minus 2 × 300 s): nothing new.
    app.clock.advance(time::Duration::days(2) - time::Duration::seconds(700));
    gatehouse::startup::housekeeping_round(&app.state).await;
    assert_eq!(kids(&app), first);
    // Inside it: the next key is published but the first still signs.
    app.clock.advance(time::Duration::seconds(200));
    gatehouse::startup::housekeeping_round(&app.state).await;
    let both = kids(&app);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(app.state.auth.keys.signer().unwrap().kid, first[0]);
    // At the rotation time the new key signs; the old one stays until its tokens expired.
    app.clock.advance(time::Duration::seconds(600));
    gatehouse::startup::housekeeping_round(&app.state).await;
    let next = both.iter().find(|k| **k != first[0]).unwrap().clone();
    assert_eq!(app.state.auth.keys.signer().unwrap().kid, next);
    assert_eq!(kids(&app).len(), 2);
    app.clock.advance(time::Duration::minutes(17));
    gatehouse::startup::housekeeping_round(&app.state).await;
    assert_eq!(kids(&app), vec![next]);
    let acts = audit_actions(&app).await;
    for a in ["key.signing.created", "key.signing.retired", "key.signing.removed"] {
        assert!(acts.iter().any(|x| x == a), "{a}: {acts:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn guessing_codes_or_the_current_password_feeds_the_lock() {
    let app = open_app().await;
    let s = signup(&app, "sam@example.com").await;
    let (_, e) = call(&app, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&at(&s)), None).await;
    let seed = base32_decode(e["secret"].as_str().unwrap());
    let code =
        gatehouse::crypto::totp::code_at(&seed, gatehouse::crypto::totp::step_of(app.clock.now().unix_timestamp()));
    let (st, _) =
        call(&app, Method::POST, "/v1/auth/mfa/totp/verify", Some(&at(&s)), Some(json!({"code": code}))).await;
    assert_eq!(st, StatusCode::OK);
    // Wrong codes after a right password count as failures; a right password does not reset them.
    for _ in 0..3 {
        let (st, ch) = login(&app, "sam@example.com", PW).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{ch}");
        let (st, _) = call(
            &app,
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"challenge": ch["challenge"], "totp": "000000"})),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, _) = login(&app, "sam@example.com", PW).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "the account backs off");

    // A wrong current password counts too.
    let t = signup(&app, "tess@example.com").await;
    for _ in 0..3 {
        let body = json!({"current_password": "not my password", "new_password": "another long passphrase"});
        let (st, _) = call(&app, Method::POST, "/v1/me/password", Some(&at(&t)), Some(body)).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
    let body = json!({"current_password": PW, "new_password": "another long passphrase"});
    let (st, _) = call(&app, Method::POST, "/v1/me/password", Some(&at(&t)), Some(body)).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_users_tokens_stay_dead_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.auth.signup = SignupMode::Open;
    let app = crate::helpers::spawn_app_in(dir, config.clone()).await;
    let admin = admin_token(&app).await;
    let s = signup(&app, "uma@example.com").await;
    let (st, _) =
        call(&app, Method::DELETE, &format!("/v1/users/{}", s["user_id"].as_str().unwrap()), Some(&admin), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &at(&s)).await, StatusCode::UNAUTHORIZED);
    let dir = app.stop().await;
    // Same clock instant after the restart: the token has not expired, the tombstone refuses it.
    let app = crate::helpers::spawn_app_in(dir, config).await;
    assert_eq!(me_status(&app, &at(&s)).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn sessions_record_when_they_were_last_used() {
    let app = open_app().await;
    let s = signup(&app, "vera@example.com").await;
    let listed = |app: &TestApp, t: String| {
        let c = app.client.clone();
        let u = app.url("/v1/me/sessions");
        async move {
            let v: Value = c.get(u).bearer_auth(t).send().await.unwrap().json().await.unwrap();
            v[0]["last_seen_at"].as_str().unwrap().to_string()
        }
    };
    let before = listed(&app, at(&s)).await;
    app.clock.advance(time::Duration::minutes(5));
    assert_eq!(me_status(&app, &at(&s)).await, StatusCode::OK);
    gatehouse::startup::housekeeping_round(&app.state).await;
    let after = listed(&app, at(&s)).await;
    assert_ne!(before, after, "a request moves last_seen_at once the batch is written");
    assert!(after.starts_with("2026-11-29T12:05"), "{after}");
    app.stop().await;
}
