//! Single sign-on against a real SAML 2.0 identity provider: PyPI `pysaml2` with Debian
//! `xmlsec1` (`tests/peers/saml/idp.py`, installed by tests/run.sh), started by each test on
//! loopback. The tests log in without a browser by submitting the IdP's own login form and
//! posting its auto-submit form to Gatehouse's ACS, with the IdP signing the Response, only the
//! Assertion, both, and encrypting the Assertion. The attacks are responses the tests build and
//! sign themselves (`saml_forge`, real XML-DSig by `xmlsec1`).

use crate::helpers::{peers_dir, repo_root, TestApp};
use crate::sso::{admin, call, location, me_with_cookie, member_roles, start_app, workspace, Browser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test SAML IdP.
pub(crate) struct SamlIdp {
    child: Child,
    pub base: String,
    pub metadata: String,
    users: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn alice() -> Value {
    json!({"username": "alice", "password": "alice-password", "name_id": "alice@corp.example",
           "name_id_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
           "attributes": {"email": ["alice@corp.example"], "displayName": ["Alice Liddell"],
                          "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ["engineering", "staff"]}})
}

fn bob() -> Value {
    json!({"username": "bob", "password": "bob-password", "name_id": "u-bob-7731",
           "name_id_format": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
           "attributes": {"email": ["bob@corp.example"], "displayName": ["Bob"],
                          "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ["staff"]}})
}

fn openssl_key(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}-cert.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (tests/run.sh installs it)");
    assert!(ok.success());
    (key, cert)
}

impl SamlIdp {
    pub(crate) fn start() -> SamlIdp {
        let python = peers_dir().join("venv/bin/python");
        assert!(python.exists(), "tests/peers/venv is missing: run tests/run.sh");
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = openssl_key(dir.path(), "idp");
        let users = dir.path().join("users.json");
        std::fs::write(&users, json!([alice(), bob()]).to_string()).unwrap();
        let conf = dir.path().join("config.json");
        std::fs::write(
            &conf,
            json!({"host": "127.0.0.1", "port": 0, "key": key, "cert": cert, "users_file": users}).to_string(),
        )
        .unwrap();
        let mut child = Command::new(&python)
            .arg(repo_root().join("tests/peers/saml/idp.py"))
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the venv's python runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(90)).expect("the test SAML IdP starts within 90 s");
        let ready: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("IdP said {line:?}"));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = ready["base"].as_str().unwrap().to_string();
        let metadata = std::process::Command::new("curl")
            .args(["-s", ready["metadata_url"].as_str().unwrap()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(metadata.contains("EntityDescriptor"), "IdP metadata: {metadata}");
        SamlIdp { child, base, metadata, users, http, _dir: dir }
    }

    pub(crate) fn set_users(&self, users: Value) {
        std::fs::write(&self.users, users.to_string()).unwrap();
    }

    pub(crate) async fn configure(&self, config: Value) {
        let r = self.http.post(format!("{}/__test/config", self.base)).json(&config).send().await.unwrap();
        assert!(r.status().is_success(), "config: {}", r.text().await.unwrap());
    }

    /// Give the IdP the SP metadata Gatehouse serves for `provider`.
    pub(crate) async fn trust_sp(&self, app: &TestApp, provider: &str) {
        let r = app.client.get(app.url(&format!("/v1/sso/saml/{provider}/metadata"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/samlmetadata+xml"));
        let xml = r.text().await.unwrap();
        let r = self.http.post(format!("{}/__test/sp-metadata", self.base)).body(xml).send().await.unwrap();
        assert!(r.status().is_success(), "sp-metadata: {}", r.text().await.unwrap());
    }

    pub(crate) async fn last_request(&self) -> Value {
        self.http.get(format!("{}/__test/last-request", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

/// The value of a hidden form input in the IdP's auto-submit page.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let rest = html.split(&marker).nth(1)?;
    let v = rest.split('"').next()?;
    Some(
        v.replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// From Gatehouse's login start through the IdP's form: the ACS URL and the form the browser
/// would post there.
pub(crate) async fn through_saml_idp(
    b: &mut Browser,
    app: &TestApp,
    idp: &SamlIdp,
    start: &str,
    user: &str,
    password: &str,
) -> (String, String, String) {
    let r = b.get(&app.url(start)).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login start");
    let binding = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(
        binding.iter().any(|c| c.starts_with("__Host-gatehouse_sso=") && c.contains("SameSite=None")),
        "the binding cookie must come with the IdP's cross-site POST: {binding:?}"
    );
    let url = location(&r, &app.base);
    assert!(url.starts_with(&idp.base), "{url}");
    let r = b.get(&url).await;
    assert_eq!(r.status(), StatusCode::OK, "the IdP took the AuthnRequest");
    let html = r.text().await.unwrap();
    let key = hidden(&html, "key").expect("the IdP's login form");
    let r = b
        .send(
            Method::POST,
            &format!("{}/sso/login", idp.base),
            Some(&[("key", key.as_str()), ("username", user), ("password", password)]),
        )
        .await;
    let html = r.text().await.unwrap();
    let action = html.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("the auto-submit form");
    let response = hidden(&html, "SAMLResponse").expect("a SAMLResponse");
    let relay = hidden(&html, "RelayState").expect("the RelayState");
    (action.to_string(), response, relay)
}

/// Log in through the IdP and post its response to the ACS: the ACS's answer.
pub(crate) async fn saml_login(
    b: &mut Browser,
    app: &TestApp,
    idp: &SamlIdp,
    provider: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let (acs, response, relay) =
        through_saml_idp(b, app, idp, &format!("/v1/sso/{provider}/login?return_to=/login"), user, password).await;
    assert_eq!(acs, app.url(&format!("/v1/sso/saml/{provider}/acs")));
    b.send(Method::POST, &acs, Some(&[("SAMLResponse", response.as_str()), ("RelayState", relay.as_str())])).await
}

pub(crate) fn saml_provider_body(id: &str, metadata: &str, extra: Value) -> Value {
    let mut b = json!({
        "id": id, "kind": "saml", "display_name": format!("Corp SAML ({id})"),
        "trust_email": true,
        "saml": {
            "idp_metadata": metadata,
            "attributes": {"groups": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"}
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_login_with_pysaml2_provisions_maps_and_follows_groups() {
    let app = start_app().await;
    let idp = SamlIdp::start();
    let token = admin(&app).await;
    workspace(&app, &token, "saml-eng").await;
    let body = saml_provider_body(
        "corp-saml",
        &idp.metadata,
        json!({"mapping": [
            {"claim": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", "value": "engineering",
             "workspace": "saml-eng", "roles": ["editor"]}
        ]}),
    );
    let (st, p) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(p["kind"], "saml");
    assert_eq!(p["saml"]["acs_url"], app.url("/v1/sso/saml/corp-saml/acs"));
    assert_eq!(p["saml"]["sp_entity_id"], app.url("/v1/sso/saml/corp-saml/metadata"));
    assert_eq!(p["issuer"], format!("{}/metadata", idp.base));
    assert!(p["saml"]["sp_signing_certificate"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert!(!p.to_string().contains("PRIVATE KEY"), "no private key in the answer");
    assert_eq!(p["saml"]["idp_certificate_sha256"].as_array().unwrap().len(), 1);
    idp.trust_sp(&app, "corp-saml").await;

    // 1. Only the assertion signed (the IdP's default): JIT creation and the group mapping.
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(location(&r, &app.base), app.url("/login"));
    let me = me_with_cookie(&app, &b).await;
    assert_eq!(me["email"], "alice@corp.example");
    assert_eq!(me["name"], "Alice Liddell");
    let alice_id = me["id"].as_str().unwrap().to_string();
    assert_eq!(member_roles(&app, &token, "saml-eng", "alice@corp.example").await, Some(vec!["editor".to_string()]));
    // The AuthnRequest was signed, and the IdP verified it with the SP metadata's certificate.
    let req = idp.last_request().await;
    assert_eq!(req["signed"], true);
    assert_eq!(req["signature_valid"], true, "{req}");

    // 2. The Response signed, not the assertion: the second login matches the same account.
    idp.configure(json!({"sign_response": true, "sign_assertion": false})).await;
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(me_with_cookie(&app, &b).await["id"], alice_id.as_str());

    // 3. Both signed, and the assertion encrypted to the SP (AES-256-GCM), then an encrypted
    //    assertion with only its own signature inside (AES-128-CBC), as ADFS sends them.
    idp.configure(json!({"sign_response": true, "sign_assertion": true, "encrypt_assertion": true,
                         "encryption_alg": "http://www.w3.org/2009/xmlenc11#aes256-gcm"}))
        .await;
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(me_with_cookie(&app, &b).await["id"], alice_id.as_str());
    idp.configure(json!({"sign_response": false, "sign_assertion": true, "encrypt_assertion": true,
                         "encryption_alg": "http://www.w3.org/2001/04/xmlenc#aes128-cbc"}))
        .await;
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    assert_eq!(me_with_cookie(&app, &b).await["id"], alice_id.as_str());

    // 4. Alice leaves engineering at the IdP: the mapped role goes at her next login.
    let mut a = alice();
    a["attributes"]["http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"] = json!(["staff"]);
    idp.set_users(json!([a, bob()]));
    idp.configure(json!({"sign_response": false, "sign_assertion": true, "encrypt_assertion": false})).await;
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(member_roles(&app, &token, "saml-eng", "alice@corp.example").await, None, "no mapped role left");

    // 5. A persistent NameID with the email in an attribute: Bob is created too, and the
    //    identity is keyed by the NameID (not the email).
    let mut b = Browser::new();
    let r = saml_login(&mut b, &app, &idp, "corp-saml", "bob", "bob-password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let me = me_with_cookie(&app, &b).await;
    assert_eq!(me["email"], "bob@corp.example");

    // 6. The same response posted twice: the login (RelayState) works once.
    let mut b = Browser::new();
    let (acs, response, relay) =
        through_saml_idp(&mut b, &app, &idp, "/v1/sso/corp-saml/login", "alice", "alice-password").await;
    let form = [("SAMLResponse", response.as_str()), ("RelayState", relay.as_str())];
    let r = b.send(Method::POST, &acs, Some(&form)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b.send(Method::POST, &acs, Some(&form)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("unknown or already used"));

    // Audit: the logins, the creation and the mapping are recorded.
    let (st, log) = call(&app, Method::GET, "/v1/audit?action=sso.login.succeeded&limit=50", &token, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(log["items"].as_array().unwrap().len() >= 6, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_through_the_saml_idp() {
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "chromium is missing: run tests/run.sh");
    let app = start_app().await;
    let idp = SamlIdp::start();
    let token = admin(&app).await;
    let body = saml_provider_body("corp-saml", &idp.metadata, json!({}));
    let (st, p) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    idp.trust_sp(&app, "corp-saml").await;
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/sso.mjs"))
        .args([app.base.as_str(), "corp-saml", "alice", "alice-password", "saml"])
        .current_dir(repo_root())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("the browser test ends").unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("back in Gatehouse: Signed in as alice@corp.example"), "{report}");
    let events = crate::sso::audit_actions(&app, &token, "sso.login.succeeded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    app.stop().await;
}
