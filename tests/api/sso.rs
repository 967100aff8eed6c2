//! Single sign-on against a real OpenID provider: npm `oidc-provider` (OpenID certified),
//! started by each test on loopback over real TLS (`tests/peers/oidc/idp.mjs`, installed by
//! tests/run.sh), with an RS256 and an ES256 client. The tests log in without a browser by
//! submitting the provider's own login form. Forged ID tokens (signed by the tests through the
//! peer's `/__test/sign`) reach Gatehouse through the real code exchange
//! (`/__test/override-next-id-token`).

use crate::helpers::{gatehouse, peers_dir, repo_root, run, spawn_app_at, test_config, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const SECRET_RS: &str = "rs-client-secret-0123456789";
const SECRET_ES: &str = "es-client-secret-0123456789";

/// The test OpenID provider.
struct Idp {
    child: Child,
    issuer: String,
    users: PathBuf,
    ca_pem: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alice() -> Value {
    json!({"sub": "u-alice", "email": "alice@corp.example", "email_verified": true, "name": "Alice Liddell",
           "groups": ["engineering", "staff"], "password": "alice-password",
           "nested": {"realm_access": {"roles": ["dev"]}}})
}

fn bob() -> Value {
    json!({"sub": "u-bob", "email": "bob@corp.example", "email_verified": false, "name": "Bob",
           "groups": ["staff"], "password": "bob-password"})
}

impl Idp {
    /// Start the provider with clients `rs` (RS256, client_secret_basic) and `es` (ES256,
    /// client_secret_post) whose redirect URIs point at `app`.
    fn start(app: &TestApp, id_token_claims: bool) -> Idp {
        let script = repo_root().join("tests/peers/oidc/idp.mjs");
        let peer = peers_dir().join("node_modules/oidc-provider/package.json");
        assert!(peer.exists(), "npm oidc-provider is missing in tests/peers: run tests/run.sh");
        let dir = tempfile::tempdir().unwrap();
        // A CA of the test's own signs the provider's certificate; Gatehouse trusts it by `ca_pem`.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "idp test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let users = dir.path().join("users.json");
        std::fs::write(&users, json!([alice(), bob()]).to_string()).unwrap();
        let config = json!({
            "host": "127.0.0.1", "port": 0,
            "tls": {"cert": dir.path().join("cert.pem"), "key": dir.path().join("key.pem")},
            "clients": [
                {"client_id": "rs", "client_secret": SECRET_RS,
                 "redirect_uris": [app.url("/v1/sso/oidc/corp/callback"), app.url("/v1/sso/oidc/corp-off/callback")],
                 "id_token_signed_response_alg": "RS256", "token_endpoint_auth_method": "client_secret_basic"},
                {"client_id": "es", "client_secret": SECRET_ES,
                 "redirect_uris": [app.url("/v1/sso/oidc/corp-es/callback")],
                 "id_token_signed_response_alg": "ES256", "token_endpoint_auth_method": "client_secret_post"}
            ],
            "users_file": users,
            "id_token_claims": id_token_claims,
        });
        let conf = dir.path().join("config.json");
        std::fs::write(&conf, config.to_string()).unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(&script).arg(&conf).current_dir(repo_root());
        let (child, ready) = crate::helpers::spawn_peer(cmd, "the test IdP");
        // The app runs on real time (`start_app`), but its clock stood still since it started; a
        // slow provider start (up to two 90 s attempts) must not leave it behind the provider,
        // which signs with the real clock ("issued in the future").
        let behind = time::OffsetDateTime::now_utc() - gatehouse::clock::Clock::now(&*app.clock);
        if behind.is_positive() {
            app.clock.advance(behind);
        }
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Idp { child, issuer: ready["issuer"].as_str().unwrap().to_string(), users, ca_pem: ca.pem(), http, _dir: dir }
    }

    fn set_users(&self, users: Value) {
        std::fs::write(&self.users, users.to_string()).unwrap();
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.issuer)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn last_auth_request(&self) -> Value {
        self.http.get(format!("{}/__test/last-auth-request", self.issuer)).send().await.unwrap().json().await.unwrap()
    }
}

/// A browser without a browser: one cookie jar per host and port, redirects followed by hand.
pub(crate) struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

impl Browser {
    pub(crate) fn new() -> Browser {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { http, jar: HashMap::new() }
    }

    fn host(url: &str) -> String {
        url.split('/').nth(2).unwrap_or_default().to_string()
    }

    pub(crate) fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&Self::host(url)).and_then(|c| c.get(name)).cloned()
    }

    fn keep(&mut self, url: &str, resp: &reqwest::Response) {
        let jar = self.jar.entry(Self::host(url)).or_default();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if v.to_ascii_lowercase().contains("max-age=0") || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    pub(crate) async fn send(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> reqwest::Response {
        let mut req = self.http.request(method, url);
        if let Some(cookies) = self.jar.get(&Self::host(url)) {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !header.is_empty() {
                req = req.header("cookie", header.join("; "));
            }
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req.send().await.unwrap();
        self.keep(url, &resp);
        resp
    }

    pub(crate) async fn get(&mut self, url: &str) -> reqwest::Response {
        self.send(Method::GET, url, None).await
    }
}

pub(crate) fn location(resp: &reqwest::Response, base: &str) -> String {
    let loc = resp.headers().get("location").unwrap_or_else(|| panic!("no Location ({})", resp.status()));
    let loc = loc.to_str().unwrap();
    if loc.starts_with("http") {
        loc.to_string()
    } else {
        format!("{}{loc}", base.trim_end_matches('/'))
    }
}

/// The URL the provider sends the browser back to after a login with `login`/`password`
/// (Gatehouse's callback with `code` and `state`), starting at Gatehouse's login URL.
async fn through_idp(b: &mut Browser, app: &TestApp, idp: &Idp, start: &str, login: &str, password: &str) -> String {
    let r = b.get(&app.url(start)).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login start: {}", r.text().await.unwrap());
    let mut url = location(&r, &app.base);
    assert!(url.starts_with(&idp.issuer), "{url}");
    // Follow the provider's redirects to its form, post it, follow on to the callback.
    for _ in 0..10 {
        if url.starts_with(&app.base) {
            return url;
        }
        let r = b.get(&url).await;
        if r.status().is_redirection() {
            url = location(&r, &idp.issuer);
            continue;
        }
        let html = r.text().await.unwrap();
        let action = html.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a login form");
        let post = format!("{}{action}", idp.issuer);
        let r = b.send(Method::POST, &post, Some(&[("login", login), ("password", password)])).await;
        assert!(r.status().is_redirection(), "the IdP refused the login of {login}: {}", r.status());
        url = location(&r, &idp.issuer);
    }
    panic!("no way back to Gatehouse");
}

/// Log in through the IdP and call the callback: the callback's answer.
async fn login(b: &mut Browser, app: &TestApp, idp: &Idp, provider: &str, who: &str, pw: &str) -> reqwest::Response {
    let back = through_idp(b, app, idp, &format!("/v1/sso/{provider}/login?return_to=/login"), who, pw).await;
    b.get(&back).await
}

pub(crate) async fn start_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.sso.return_to_origins = vec!["https://app.example.com".into()];
    // Many logins from one address in a few seconds.
    config.auth.rate_limit.per_minute = 6000;
    config.auth.rate_limit.burst = 1000;
    // Real time: the provider signs with its clock.
    spawn_app_at(dir, config, time::OffsetDateTime::now_utc()).await
}

pub(crate) async fn admin(app: &TestApp) -> String {
    let pw = app.bootstrap_password.clone().unwrap();
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn provider_body(id: &str, idp: &Idp, client: &str, extra: Value) -> Value {
    let mut b = json!({
        "id": id, "display_name": format!("Corp ({id})"), "issuer": idp.issuer,
        "client_id": client, "client_secret": if client == "rs" { SECRET_RS } else { SECRET_ES },
        "token_auth": if client == "rs" { "client_secret_basic" } else { "client_secret_post" },
        "algorithms": [if client == "rs" { "RS256" } else { "ES256" }],
        "scopes": ["openid", "email", "profile", "groups"],
        "ca_pem": idp.ca_pem,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

pub(crate) async fn workspace(app: &TestApp, token: &str, slug: &str) -> String {
    let (st, b) = call(app, Method::POST, "/v1/workspaces", token, Some(json!({"slug": slug, "name": slug}))).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_string()
}

pub(crate) async fn member_roles(app: &TestApp, token: &str, ws: &str, email: &str) -> Option<Vec<String>> {
    let (st, b) = call(app, Method::GET, &format!("/v1/workspaces/{ws}/members"), token, None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b.as_array().unwrap().iter().find(|m| m["email"] == email || m["user_id"] == email).map(|m| {
        let mut r: Vec<String> =
            m["roles"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        r.sort();
        r
    })
}

pub(crate) async fn audit_actions(app: &TestApp, token: &str, prefix: &str) -> Vec<Value> {
    let (st, b) = call(app, Method::GET, &format!("/v1/audit?action={prefix}&limit=200"), token, None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

/// Signed in by cookie: `/v1/me` with the session cookie the callback set.
pub(crate) async fn me_with_cookie(app: &TestApp, b: &Browser) -> Value {
    let c = b.cookie(&app.base, "__Host-gatehouse_session").expect("a session cookie");
    let r = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", format!("__Host-gatehouse_session={c}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_provisions_maps_and_follows_group_changes() {
    let app = start_app().await;
    let idp = Idp::start(&app, true);
    let token = admin(&app).await;
    let eng = workspace(&app, &token, "eng").await;
    workspace(&app, &token, "staff-ws").await;
    let mapping = json!({"mapping": [
        {"claim": "groups", "value": "engineering", "workspace": "eng", "roles": ["editor"]},
        {"claim": "groups", "value": "staff", "workspace": "staff-ws", "roles": ["viewer"]},
        {"claim": "groups", "value": "engineering", "workspace": "staff-ws", "roles": ["editor"]},
        {"claim": "realm_access.roles", "value": "admin", "platform_role": "admin"},
    ]});
    for (id, client) in [("corp", "rs"), ("corp-es", "es")] {
        let (st, b) = call(
            &app,
            Method::POST,
            "/v1/sso-providers",
            &token,
            Some(provider_body(id, &idp, client, mapping.clone())),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        assert_eq!(b["redirect_uri"], app.url(&format!("/v1/sso/oidc/{id}/callback")));
        assert_eq!(b["has_client_secret"], true);
        assert!(b.get("client_secret").is_none());
    }
    // The login page lists both.
    let r: Value = app.client.get(app.url("/v1/sso/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["items"].as_array().unwrap().len(), 2);

    // First login (RS256): the account is created and mapped.
    let mut browser = Browser::new();
    let r = login(&mut browser, &app, &idp, "corp", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    assert_eq!(location(&r, &app.base), app.url("/login"));
    let params = idp.last_auth_request().await;
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["nonce"].as_str().unwrap().len() >= 16);
    let me = me_with_cookie(&app, &browser).await;
    assert_eq!(me["email"], "alice@corp.example");
    assert_eq!(me["name"], "Alice Liddell");
    let alice_id = me["id"].as_str().unwrap().to_string();
    assert!(browser.cookie(&app.base, "__Host-gatehouse_csrf").is_some());
    assert_eq!(member_roles(&app, &token, "eng", "alice@corp.example").await, Some(vec!["editor".into()]));
    assert_eq!(
        member_roles(&app, &token, "staff-ws", "alice@corp.example").await,
        Some(vec!["editor".into(), "viewer".into()])
    );
    assert_eq!(me["is_admin"], false);

    // Roles given by hand stay through every later login (the provider is not authoritative):
    // a viewer role added, and the mapping's editor role taken away then given back by hand.
    for roles in [json!(["viewer"]), json!(["editor", "viewer"])] {
        let path = format!("/v1/workspaces/{eng}/members/alice@corp.example");
        let (st, b) = call(&app, Method::PUT, &path, &token, Some(json!({ "roles": roles }))).await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }

    // Second login through the ES256 client of the same issuer: a different provider, so a
    // different identity; it does not link by email (never), and the email is taken: refused.
    let mut other = Browser::new();
    let r = login(&mut other, &app, &idp, "corp-es", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("cannot be linked"), "{page}");
    assert!(page.contains("request-id"), "{page}");

    // The ES256 client: Bob's email is not verified, so no account is made for him...
    let mut bobs = Browser::new();
    let r = login(&mut bobs, &app, &idp, "corp-es", "bob@corp.example", "bob-password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("did not verify the email"));
    // ...until the provider verifies it: then JIT makes his account, mapped by his groups.
    let mut b2 = bob();
    b2["email_verified"] = json!(true);
    idp.set_users(json!([alice(), b2]));
    let mut bobs = Browser::new();
    let r = login(&mut bobs, &app, &idp, "corp-es", "bob@corp.example", "bob-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    assert_eq!(idp.last_auth_request().await["client_id"], "es");
    assert_eq!(me_with_cookie(&app, &bobs).await["email"], "bob@corp.example");
    assert_eq!(member_roles(&app, &token, "staff-ws", "bob@corp.example").await, Some(vec!["viewer".into()]));
    assert_eq!(member_roles(&app, &token, "eng", "bob@corp.example").await, None);

    // The groups change at the IdP: engineering goes, the admin realm role arrives.
    let mut a = alice();
    a["groups"] = json!(["staff"]);
    a["nested"] = json!({"realm_access": {"roles": ["dev", "admin"]}});
    idp.set_users(json!([a, bob()]));
    let mut again = Browser::new();
    let r = login(&mut again, &app, &idp, "corp", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    let me = me_with_cookie(&app, &again).await;
    assert_eq!(me["id"], alice_id.as_str(), "the second login is the same user");
    assert_eq!(me["is_admin"], true);
    // The mapping's editor role in staff-ws went; in eng the roles given by hand stayed (the
    // editor role there is hand-given since it was taken away and given back).
    assert_eq!(
        member_roles(&app, &token, "eng", "alice@corp.example").await,
        Some(vec!["editor".into(), "viewer".into()])
    );
    assert_eq!(member_roles(&app, &token, "staff-ws", "alice@corp.example").await, Some(vec!["viewer".into()]));

    // The IdP rotates its keys mid-run: the next login needs no restart.
    let kids = idp.control("/__test/rotate-keys", json!({})).await;
    assert_eq!(kids["kids"].as_array().unwrap().len(), 2);
    idp.set_users(json!([alice(), bob()]));
    let mut after = Browser::new();
    let r = login(&mut after, &app, &idp, "corp", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "after a key rotation: {}", r.text().await.unwrap());
    // The admin role the mapping gave goes with the realm role.
    assert_eq!(me_with_cookie(&app, &after).await["is_admin"], false);
    assert_eq!(
        member_roles(&app, &token, "eng", "alice@corp.example").await,
        Some(vec!["editor".into(), "viewer".into()])
    );

    // A disabled user is refused.
    let (st, b) =
        call(&app, Method::PATCH, &format!("/v1/users/{alice_id}"), &token, Some(json!({"disabled": true}))).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let mut disabled = Browser::new();
    let r = login(&mut disabled, &app, &idp, "corp", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("disabled"));
    assert!(disabled.cookie(&app.base, "__Host-gatehouse_session").is_none());

    let audit = audit_actions(&app, &token, "sso.").await;
    let actions: Vec<&str> = audit.iter().map(|r| r["action"].as_str().unwrap()).collect();
    for a in [
        "sso.provider.created",
        "sso.user.provisioned",
        "sso.login.succeeded",
        "sso.membership.changed",
        "sso.admin.granted",
        "sso.admin.revoked",
        "sso.login.failed",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let failed: Vec<&Value> = audit.iter().filter(|r| r["action"] == "sso.login.failed").collect();
    assert!(failed.iter().any(|r| r["details"]["reason"] == "the account is disabled"), "{failed:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused() {
    let app = start_app().await;
    let idp = Idp::start(&app, true);
    let token = admin(&app).await;
    let (st, b) =
        call(&app, Method::POST, "/v1/sso-providers", &token, Some(provider_body("corp", &idp, "rs", json!({})))).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Each case: (alg, key, claim changes, the reason Gatehouse must give).
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("RS256", "foreign", json!({}), "ID token: bad signature"),
        ("RS256", "current", json!({"aud": "someone-else"}), "ID token: wrong audience"),
        ("RS256", "current", json!({"aud": ["rs", "someone-else"], "azp": "rs"}), "ID token: wrong audience"),
        ("RS256", "current", json!({"iss": "https://evil.example"}), "ID token: wrong issuer"),
        ("RS256", "current", json!({"exp": now - 3600, "iat": now - 4000}), "ID token: expired"),
        ("RS256", "current", json!({"iat": now + 3600, "exp": now + 7200}), "ID token: issued in the future"),
        ("RS256", "current", json!({"nonce": "not-the-nonce"}), "ID token: nonce mismatch"),
        ("none", "current", json!({}), "ID token: not signed"),
        ("ES256", "current", json!({}), "ID token: algorithm not accepted"),
        ("RS256", "current", json!({"azp": "another-client"}), "ID token: azp is another client"),
        ("RS256", "unknown-kid", json!({}), "ID token: signed by a key the provider does not publish"),
    ];
    for (alg, key, changes, reason) in cases {
        let mut b = Browser::new();
        let back = through_idp(&mut b, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
        let auth = idp.last_auth_request().await;
        let mut claims = json!({"iss": idp.issuer, "sub": "u-bob", "aud": "rs", "iat": now, "exp": now + 300,
                                "nonce": auth["nonce"], "email": "bob@corp.example", "email_verified": true});
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let req = if key == "unknown-kid" {
            json!({"alg": alg, "key": "foreign", "claims": claims, "header": {"kid": "a-kid-nobody-published"}})
        } else {
            json!({"alg": alg, "key": key, "claims": claims})
        };
        let jwt = idp.control("/__test/sign", req).await;
        idp.control("/__test/override-next-id-token", json!({"jwt": jwt["jwt"]})).await;
        let r = b.get(&back).await;
        let status = r.status();
        let page = r.text().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{alg}/{key}/{changes}: {page}");
        assert!(page.contains(reason), "{alg}/{key}/{changes}: wanted {reason:?} in {page}");
        assert!(b.cookie(&app.base, "__Host-gatehouse_session").is_none());
    }
    // A token the test signs with the right key and claims goes through: the checks above are
    // not refusing everything.
    let mut b = Browser::new();
    let back = through_idp(&mut b, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    let auth = idp.last_auth_request().await;
    let claims = json!({"iss": idp.issuer, "sub": "u-bob", "aud": "rs", "iat": now, "exp": now + 300,
                        "nonce": auth["nonce"], "email": "bob@corp.example", "email_verified": true});
    let jwt = idp.control("/__test/sign", json!({"alg": "RS256", "key": "current", "claims": claims})).await;
    idp.control("/__test/override-next-id-token", json!({"jwt": jwt["jwt"]})).await;
    let r = b.get(&back).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    // No user came out of the refused ones.
    let (_, users) = call(&app, Method::GET, "/v1/users", &token, None).await;
    assert_eq!(users["items"].as_array().unwrap().iter().filter(|u| u["email"] == "bob@corp.example").count(), 1);
    let failed = audit_actions(&app, &token, "sso.login.failed").await;
    assert_eq!(failed.len(), 11, "every refusal is audited");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_code_and_return_to_attacks_fail() {
    let app = start_app().await;
    let idp = Idp::start(&app, true);
    let mut verified_bob = bob();
    verified_bob["email_verified"] = json!(true);
    idp.set_users(json!([alice(), verified_bob]));
    let token = admin(&app).await;
    for id in ["corp", "corp-off"] {
        let body = provider_body(id, &idp, "rs", json!({}));
        let (st, b) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }

    // State from another browser: the attacker holds a binding cookie of its own (it started a
    // login too) but not the victim's. The victim's login is not burnt by the attempt.
    let mut victim = Browser::new();
    let back = through_idp(&mut victim, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    let mut attacker = Browser::new();
    assert_eq!(attacker.get(&app.url("/v1/sso/corp/login")).await.status(), StatusCode::FOUND);
    assert!(attacker.cookie(&app.base, "__Host-gatehouse_sso").is_some());
    let r = attacker.get(&back).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("another browser"));
    assert!(attacker.cookie(&app.base, "__Host-gatehouse_session").is_none());
    // At another provider's callback, the same state is refused too (and not burnt).
    let other = back.replace("/v1/sso/oidc/corp/callback", "/v1/sso/oidc/corp-off/callback");
    let r = victim.get(&other).await;
    let (status, page) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{other}: {page}");
    assert!(page.contains("another provider"), "{page}");
    let r = victim.get(&back).await;
    assert_eq!(r.status(), StatusCode::FOUND, "the victim's own login still works");

    // A login left ten minutes is expired, then forgotten by housekeeping.
    let mut late = Browser::new();
    let stale = through_idp(&mut late, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    app.clock.advance(time::Duration::minutes(11));
    let r = late.get(&stale).await;
    assert!(r.text().await.unwrap().contains("the login expired"));
    let stale = through_idp(&mut late, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    app.clock.advance(time::Duration::minutes(11));
    gatehouse::startup::housekeeping_round(&app.state).await;
    let r = late.get(&stale).await;
    assert!(r.text().await.unwrap().contains("unknown or already used"), "purged by housekeeping");
    app.clock.advance(time::Duration::minutes(-22));

    // A good login, then the same callback URL replayed.
    let mut b = Browser::new();
    let back = through_idp(&mut b, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    assert_eq!(b.get(&back).await.status(), StatusCode::FOUND);
    let r = b.get(&back).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("unknown or already used"));

    // The code replayed under a fresh state of the same browser: the provider refuses it.
    let used_code = back.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let fresh = through_idp(&mut b, &app, &idp, "/v1/sso/corp/login", "bob@corp.example", "bob-password").await;
    let fresh_state = fresh.split("state=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let replay = app.url(&format!("/v1/sso/oidc/corp/callback?code={used_code}&state={fresh_state}"));
    let r = b.get(&replay).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("refused the authorization code"));

    // The provider's error is reported by its code only.
    let mut e = Browser::new();
    let r = e.get(&app.url("/v1/sso/corp/login")).await;
    let to_idp = location(&r, &app.base);
    let st = to_idp.split("state=").nth(1).unwrap().split('&').next().unwrap();
    let r = e.get(&app.url(&format!("/v1/sso/oidc/corp/callback?state={st}&error=access_denied&error_description=%3Cscript%3Ealert(1)%3C/script%3E"))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("the provider refused the login (access_denied)"), "{page}");
    assert!(!page.contains("<script>"), "{page}");

    // return_to: foreign origins and tricks are refused before anything starts; an allowed
    // origin is accepted.
    for bad in [
        "https://evil.example/x",
        "//evil.example/x",
        "https://app.example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let r = app.client.get(app.url("/v1/sso/corp/login")).query(&[("return_to", bad)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().starts_with("return_to"), "{body}");
    }
    // Code mode needs a PKCE challenge.
    let r = app.client.get(app.url("/v1/sso/corp/login?mode=code")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Code mode to an allow-listed origin, then the exchange: once, and only with the verifier.
    let verifier = "a-pkce-verifier-of-the-api-client-0123456789-abcdefghij";
    let challenge = gatehouse::crypto::token::pkce_s256(verifier);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut c = Browser::new();
        let start = format!(
            "/v1/sso/corp/login?mode=code&code_challenge={challenge}&return_to=https%3A%2F%2Fapp.example.com%2Fdone%3Fx%3D1"
        );
        let back = through_idp(&mut c, &app, &idp, &start, "bob@corp.example", "bob-password").await;
        let r = c.get(&back).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        let dest = location(&r, &app.base);
        assert!(dest.starts_with("https://app.example.com/done?x=1&code=gthc_"), "{dest}");
        assert!(c.cookie(&app.base, "__Host-gatehouse_session").is_none(), "code mode sets no session cookie");
        codes.push(dest.split("code=").nth(1).unwrap().to_string());
    }
    let exchange = |code: &str, verifier: &str| {
        app.client.post(app.url("/v1/sso/exchange")).json(&json!({"code": code, "code_verifier": verifier})).send()
    };
    // A code carried to a client that does not hold the verifier signs no one in, and is gone.
    let wrong = "another-clients-verifier-0123456789-abcdefghijklmnopq";
    assert_eq!(exchange(&codes[0], wrong).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(exchange(&codes[0], verifier).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = app.client.post(app.url("/v1/sso/exchange")).json(&json!({"code": codes[1]})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the verifier is required");
    let r = exchange(&codes[2], verifier).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    let (st, me) = call(&app, Method::GET, "/v1/me", tokens["access_token"].as_str().unwrap(), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["name"], "Bob");
    assert_eq!(exchange(&codes[2], verifier).await.unwrap().status(), StatusCode::UNAUTHORIZED, "a code works once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_linking_authoritative_mapping_and_preview() {
    let app = start_app().await;
    // This provider puts only `sub` in the ID token: the rest comes from userinfo.
    let idp = Idp::start(&app, false);
    let token = admin(&app).await;
    let ops = workspace(&app, &token, "ops").await;
    // Bob has an account already; the provider links verified emails only, and Bob's is not.
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/users",
        &token,
        Some(json!({"email": "bob@corp.example", "password": "a long password for bob 42"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let body = provider_body(
        "corp",
        &idp,
        "rs",
        json!({
            "userinfo": true, "link_by_email": "verified_only", "authoritative": true,
            "allowed_email_domains": ["corp.example"],
            "claims": {"groups": "realm_access.roles"},
            "mapping": [{"claim": "realm_access.roles", "value": "dev", "workspace": "ops", "roles": ["viewer"]}],
        }),
    );
    let (st, b) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");

    // Alice: created from the userinfo claims; the authoritative mapping sets her ops roles.
    let mut br = Browser::new();
    let r = login(&mut br, &app, &idp, "corp", "alice@corp.example", "alice-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    let me = me_with_cookie(&app, &br).await;
    assert_eq!(me["email"], "alice@corp.example", "the email came from userinfo");
    assert_eq!(member_roles(&app, &token, &ops, "alice@corp.example").await, Some(vec!["viewer".into()]));
    // A role given by hand in a workspace the authoritative mapping names goes at next login.
    call(
        &app,
        Method::PUT,
        &format!("/v1/workspaces/{ops}/members/alice@corp.example"),
        &token,
        Some(json!({"roles": ["viewer", "editor"]})),
    )
    .await;
    let mut br2 = Browser::new();
    assert_eq!(
        login(&mut br2, &app, &idp, "corp", "alice@corp.example", "alice-password").await.status(),
        StatusCode::FOUND
    );
    assert_eq!(member_roles(&app, &token, &ops, "alice@corp.example").await, Some(vec!["viewer".into()]));

    // Bob's email is not verified: no link, and no second account with his email.
    let mut bb = Browser::new();
    let r = login(&mut bb, &app, &idp, "corp", "bob@corp.example", "bob-password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Verified now: linked to the existing account.
    let mut b2 = bob();
    b2["email_verified"] = json!(true);
    idp.set_users(json!([alice(), b2]));
    let mut bb = Browser::new();
    let r = login(&mut bb, &app, &idp, "corp", "bob@corp.example", "bob-password").await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    let actions: Vec<String> = audit_actions(&app, &token, "sso.identity.linked")
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap().into())
        .collect();
    assert_eq!(actions, vec!["sso.identity.linked"]);

    // A domain not allowed is refused.
    let mut eve = bob();
    eve["sub"] = json!("u-eve");
    eve["email"] = json!("eve@elsewhere.example");
    eve["password"] = json!("eve-password");
    idp.set_users(json!([alice(), eve]));
    let mut be = Browser::new();
    let r = login(&mut be, &app, &idp, "corp", "eve@elsewhere.example", "eve-password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("domain is not allowed"));

    // The preview: pasted claims, and an ID token decoded without trust. Nothing changes.
    let before = audit_actions(&app, &token, "sso.membership").await.len();
    let (st, p) = call(
        &app,
        Method::POST,
        "/v1/sso-providers/corp/preview",
        &token,
        Some(json!({"claims": {
        "sub": "u-alice", "email": "alice@corp.example", "email_verified": true, "realm_access": {"roles": []}}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["user"]["action"], "linked");
    assert_eq!(p["memberships"][0]["remove"], json!(["viewer"]));
    assert_eq!(p["memberships"][0]["after"], json!([]));
    assert_eq!(member_roles(&app, &token, &ops, "alice@corp.example").await, Some(vec!["viewer".into()]), "unchanged");
    let jwt = idp
        .control(
            "/__test/sign",
            json!({"alg": "RS256", "key": "foreign", "claims": {
        "sub": "u-new", "email": "new@corp.example", "email_verified": true, "realm_access": {"roles": ["dev"]}}}),
        )
        .await;
    let (st, p) =
        call(&app, Method::POST, "/v1/sso-providers/corp/preview", &token, Some(json!({"id_token": jwt["jwt"]}))).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["user"]["action"], "create");
    assert_eq!(p["memberships"][0]["add"], json!(["viewer"]));
    assert_eq!(audit_actions(&app, &token, "sso.membership").await.len(), before);
    let (_, users) = call(&app, Method::GET, "/v1/users", &token, None).await;
    assert!(!users["items"].as_array().unwrap().iter().any(|u| u["email"] == "new@corp.example"));
    for bad in [
        json!({}),
        json!({"claims": {"email": "x@corp.example"}}),
        json!({"id_token": "garbage"}),
        json!({"claims": [1]}),
    ] {
        let (st, p) = call(&app, Method::POST, "/v1/sso-providers/corp/preview", &token, Some(bad.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {p}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_admin_api_is_checked_and_audited() {
    let app = start_app().await;
    let token = admin(&app).await;
    let base = json!({"id": "okta", "display_name": "Okta", "issuer": "https://corp.okta.example",
                      "client_id": "gatehouse", "client_secret": "s3cret-value-never-shown"});
    // Bad input: each a 400 naming the field, nothing stored.
    let bad = [
        (json!({"id": "Bad Id"}), "id"),
        (json!({"issuer": "http://idp.example"}), "issuer"),
        (json!({"scopes": ["email"]}), "scopes"),
        (json!({"algorithms": ["HS256"]}), "algorithms"),
        (json!({"algorithms": ["none"]}), "algorithms"),
        (json!({"mapping": [{"claim": "groups", "value": "x", "roles": ["editor"]}]}), "mapping[0].workspace"),
        (json!({"mapping": [{"claim": "groups", "value": "x", "platform_role": "root"}]}), "mapping[0].platform_role"),
        (json!({"mapping": [{"claim": "", "value": "x", "platform_role": "admin"}]}), "mapping[0].claim"),
        (json!({"allowed_email_domains": ["*.corp"]}), "allowed_email_domains"),
        (json!({"ca_pem": "not a certificate"}), "ca_pem"),
        (json!({"client_secret": null}), "client_secret"),
    ];
    for (change, field) in bad {
        let mut b = base.clone();
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (st, body) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(b)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{change}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(field), "{change}: {body}");
    }
    let (_, list) = call(&app, Method::GET, "/v1/sso-providers", &token, None).await;
    assert_eq!(list["items"], json!([]));

    let (st, created) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(base.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let (st, _) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(base.clone())).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Replace without a secret keeps the stored one.
    let mut upd = base.clone();
    upd.as_object_mut().unwrap().remove("client_secret");
    upd["enabled"] = json!(false);
    let (st, got) = call(&app, Method::PUT, "/v1/sso-providers/okta", &token, Some(upd)).await;
    assert_eq!(st, StatusCode::OK, "{got}");
    assert_eq!(got["has_client_secret"], true);
    assert_eq!(got["enabled"], false);
    // A disabled provider is not on the login page and cannot start a login.
    let r: Value = app.client.get(app.url("/v1/sso/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["items"], json!([]));
    let r = app.client.get(app.url("/v1/sso/okta/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Not an admin: 403 on every admin operation.
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/users",
        &token,
        Some(json!({"email": "user@example.com", "password": "a long password for user 42"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "user@example.com", "password": "a long password for user 42"}))
        .send()
        .await
        .unwrap();
    let user: Value = r.json().await.unwrap();
    let ut = user["access_token"].as_str().unwrap();
    for (m, p) in [
        (Method::GET, "/v1/sso-providers"),
        (Method::GET, "/v1/sso-providers/okta"),
        (Method::DELETE, "/v1/sso-providers/okta"),
    ] {
        let (st, _) = call(&app, m, p, ut, None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{p}");
    }
    let (st, _) =
        call(&app, Method::POST, "/v1/sso-providers/okta/preview", ut, Some(json!({"claims": {"sub": "x"}}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // The secret never appears in answers or in the audit log.
    let (_, all) = call(&app, Method::GET, "/v1/audit?limit=200", &token, None).await;
    assert!(!all.to_string().contains("s3cret-value-never-shown"));
    assert!(!got.to_string().contains("s3cret-value-never-shown"));
    let (st, _) = call(&app, Method::DELETE, "/v1/sso-providers/okta", &token, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&app, Method::GET, "/v1/sso-providers/okta", &token, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let actions: Vec<String> = audit_actions(&app, &token, "sso.provider")
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap().into())
        .collect();
    assert_eq!(actions, vec!["sso.provider.deleted", "sso.provider.updated", "sso.provider.created"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_providers_are_loaded_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("okta-secret");
    std::fs::write(&secret, "from-a-file-secret\n").unwrap();
    let mut config = test_config(dir.path());
    config.sso.oidc = vec![toml::from_str(&format!(
        r#"id = "okta"
           display_name = "Okta"
           issuer = "https://127.0.0.1:1"
           client_id = "gatehouse"
           client_secret_file = "{}"
           [[mapping]]
           claim = "groups"
           value = "admins"
           platform_role = "admin""#,
        secret.display()
    ))
    .unwrap()];
    let app = spawn_app_at(dir, config, time::OffsetDateTime::now_utc()).await;
    let token = admin(&app).await;
    let (st, p) = call(&app, Method::GET, "/v1/sso-providers/okta", &token, None).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["source"], "config");
    assert_eq!(p["has_client_secret"], true);
    assert_eq!(p["mapping"][0]["platform_role"], "admin");
    let (st, _) = call(&app, Method::DELETE, "/v1/sso-providers/okta", &token, None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let mut body = json!({"display_name": "x", "issuer": "https://127.0.0.1:1", "client_id": "c"});
    body["client_secret"] = json!("y");
    let (st, _) = call(&app, Method::PUT, "/v1/sso-providers/okta", &token, Some(body)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // An unreachable provider makes a clean 503 at login start, never a 5xx page or a hang.
    let r = app.client.get(app.url("/v1/sso/okta/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Login starts are rate limited per address (each stores a login for ten minutes).
    let mut limited = None;
    for _ in 0..40 {
        let r = app.client.get(app.url("/v1/sso/okta/login")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let limited = limited.expect("the sign-in rate limit stops a flood of login starts");
    assert!(limited.headers().get("retry-after").is_some());
    let dir = app.stop().await;

    // The sealed client secret is one of the values `vault verify` opens; a changed byte is named.
    let err = tampered_provider_secret_fails_vault_verify(&dir.path().join("data"), "okta", "from-a-file-secret");
    assert!(err.contains("client secret of identity provider okta"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_through_the_provider() {
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "chromium is missing: run tests/run.sh");
    let app = start_app().await;
    let idp = Idp::start(&app, true);
    let token = admin(&app).await;
    let (st, b) =
        call(&app, Method::POST, "/v1/sso-providers", &token, Some(provider_body("corp", &idp, "rs", json!({})))).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/sso.mjs"))
        .args([app.base.as_str(), "corp", "alice@corp.example", "alice-password"])
        .current_dir(repo_root())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("the browser test ends").unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("back in Gatehouse: Signed in as alice@corp.example"), "{report}");
    let events = audit_actions(&app, &token, "sso.login.succeeded").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["details"]["mode"], "cookie");
    app.stop().await;
}

/// `vault verify` on `data` passes, the provider's sealed value does not show `plaintext`, and
/// once one byte of it is changed `vault verify` fails: its stderr.
pub(crate) fn tampered_provider_secret_fails_vault_verify(
    data: &std::path::Path,
    provider: &str,
    plaintext: &str,
) -> String {
    let (code, out, err) = run(gatehouse(&["vault", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let db = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
    let sealed: String =
        db.query_row("SELECT secret_sealed FROM sso_providers WHERE id = ?1", [provider], |r| r.get(0)).unwrap();
    assert!(!sealed.contains(plaintext));
    let mut bytes = sealed.into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    db.execute(
        "UPDATE sso_providers SET secret_sealed = ?1 WHERE id = ?2",
        rusqlite::params![String::from_utf8(bytes).unwrap(), provider],
    )
    .unwrap();
    drop(db);
    let (code, _, err) = run(gatehouse(&["vault", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    err
}
