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
    pub(crate) async fn start() -> SamlIdp {
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
        let mut cmd = Command::new(&python);
        cmd.arg(repo_root().join("tests/peers/saml/idp.py")).arg(&conf);
        let (child, ready) = crate::helpers::spawn_peer(cmd, "the test SAML IdP");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = ready["base"].as_str().unwrap().to_string();
        let metadata_url = ready["metadata_url"].as_str().unwrap();
        let metadata = http.get(metadata_url).send().await.unwrap().text().await.unwrap();
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
    let idp = SamlIdp::start().await;
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
    let idp = SamlIdp::start().await;
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

/// IdP metadata as an IdP publishes it: entity id, HTTP-Redirect sign-on URL and the signing
/// certificates (base64 DER), several during a rollover.
pub(crate) fn idp_metadata(entity_id: &str, sso_url: &str, certs_b64: &[String]) -> String {
    let keys: String = certs_b64
        .iter()
        .map(|c| {
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

fn pem_to_b64(path: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(path).unwrap();
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_provider_admin_api_preview_and_config_file() {
    let keys = tempfile::tempdir().unwrap();
    let (_, cert) = openssl_key(keys.path(), "idp-a");
    let cert = pem_to_b64(&cert);
    let metadata =
        idp_metadata("https://idp.corp.example/saml", "https://idp.corp.example/sso", std::slice::from_ref(&cert));
    let app = start_app().await;
    let token = admin(&app).await;
    workspace(&app, &token, "saml-ws").await;

    // Validation: each mistake is a 400 naming the field, and nothing is stored.
    let groups = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups";
    let cases = [
        (json!({"id": "x", "kind": "saml", "display_name": "X"}), "saml"),
        (saml_provider_body("x", "<not-metadata/>", json!({})), "idp_metadata"),
        (
            saml_provider_body(
                "x",
                &format!(
                    "<!DOCTYPE md [<!ENTITY a \"b\">]>{}",
                    metadata.replace(r#"<?xml version="1.0" encoding="UTF-8"?>"#, "")
                ),
                json!({}),
            ),
            "DTD",
        ),
        (
            saml_provider_body("x", &idp_metadata("https://idp", "https://idp/sso", &[]), json!({})),
            "signing certificate",
        ),
        (
            saml_provider_body(
                "x",
                &idp_metadata("https://idp", "http://idp.corp.example/sso", std::slice::from_ref(&cert)),
                json!({}),
            ),
            "https",
        ),
        (saml_provider_body("x", &metadata, json!({"client_secret": "s"})), "client_secret"),
        (saml_provider_body("x", &metadata, json!({"issuer": "https://idp"})), "issuer"),
        (saml_provider_body("x", &metadata, json!({"kind": "ldap"})), "kind"),
    ];
    for (body, field) in cases {
        let (st, b) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(b["detail"].as_str().unwrap().contains(field), "{field}: {b}");
    }
    let (_, list) = call(&app, Method::GET, "/v1/sso-providers", &token, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    let body = saml_provider_body(
        "corp-saml",
        &metadata,
        json!({"mapping": [{"claim": groups, "value": "engineering", "workspace": "saml-ws", "roles": ["editor"]}]}),
    );
    let (st, p) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let sp_cert = p["saml"]["sp_signing_certificate"].as_str().unwrap().to_string();
    assert_ne!(sp_cert, p["saml"]["sp_encryption_certificate"].as_str().unwrap(), "two key pairs");
    assert_eq!(p["saml"]["idp_sso_url"], "https://idp.corp.example/sso");
    // Replacing keeps the SP keys; a provider cannot change its kind.
    let mut changed = body.clone();
    changed["display_name"] = json!("Renamed");
    let (st, p2) = call(&app, Method::PUT, "/v1/sso-providers/corp-saml", &token, Some(changed)).await;
    assert_eq!(st, StatusCode::OK, "{p2}");
    assert_eq!(p2["saml"]["sp_signing_certificate"], sp_cert.as_str());
    let oidc = json!({"display_name": "x", "issuer": "https://127.0.0.1:1", "client_id": "c", "client_secret": "s"});
    let (st, b) = call(&app, Method::PUT, "/v1/sso-providers/corp-saml", &token, Some(oidc)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");

    // The SP metadata: entity id, ACS, both certificates, signed requests; never a private key.
    let r = app.client.get(app.url("/v1/sso/saml/corp-saml/metadata")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let xml = r.text().await.unwrap();
    assert!(xml.contains(&format!(r#"entityID="{}""#, app.url("/v1/sso/saml/corp-saml/metadata"))), "{xml}");
    assert!(xml.contains(&app.url("/v1/sso/saml/corp-saml/acs")));
    assert!(xml.contains(r#"use="encryption""#) && xml.contains(r#"use="signing""#));
    assert!(xml.contains(r#"AuthnRequestsSigned="true""#));
    assert!(!xml.contains("PRIVATE"));
    let r = app.client.get(app.url("/v1/sso/saml/nobody/metadata")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The login start sends a signed AuthnRequest by redirect, to the metadata's SSO URL.
    let r = app.client.get(app.url("/v1/sso/corp-saml/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("https://idp.corp.example/sso?SAMLRequest="), "{to}");
    assert!(to.contains("&RelayState=gthl_") && to.contains("&SigAlg=") && to.contains("&Signature="), "{to}");

    // The dry run reads a SAML assertion's NameID and attributes; it changes nothing.
    let preview = json!({"saml": {"name_id": "carol@corp.example",
        "name_id_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        "attributes": {"displayName": "Carol", groups: ["engineering", "staff"]}}});
    let (st, b) = call(&app, Method::POST, "/v1/sso-providers/corp-saml/preview", &token, Some(preview)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user"]["action"], "create");
    assert_eq!(b["user"]["email"], "carol@corp.example");
    assert_eq!(b["user"]["name"], "Carol");
    assert_eq!(b["groups"], json!(["engineering", "staff"]));
    assert_eq!(b["memberships"][0]["add"], json!(["editor"]));
    let (st, _) =
        call(&app, Method::POST, "/v1/sso-providers/corp-saml/preview", &token, Some(json!({"claims": {"sub": "x"}})))
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, users) = call(&app, Method::GET, "/v1/users?q=carol", &token, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!users.to_string().contains("carol@corp.example"), "the preview created no one");
    app.stop().await;

    // From the configuration file: read-only here, and its SP keys survive a restart.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("idp.xml");
    std::fs::write(&file, &metadata).unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.sso.saml = vec![toml::from_str(&format!(
        r#"id = "adfs"
           display_name = "ADFS"
           idp_metadata_file = "{}"
           trust_email = true
           attributes = {{ groups = "{groups}" }}
           [[mapping]]
           claim = "{groups}"
           value = "admins"
           platform_role = "admin""#,
        file.display()
    ))
    .unwrap()];
    let app = crate::helpers::spawn_app_at(dir, config.clone(), time::OffsetDateTime::now_utc()).await;
    let token = admin(&app).await;
    let (st, p) = call(&app, Method::GET, "/v1/sso-providers/adfs", &token, None).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["source"], "config");
    assert_eq!(p["kind"], "saml");
    assert_eq!(p["saml"]["attributes"]["groups"], groups);
    let cert_before = p["saml"]["sp_signing_certificate"].clone();
    let (st, _) = call(&app, Method::DELETE, "/v1/sso-providers/adfs", &token, None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let password = app.bootstrap_password.clone();
    let dir = app.stop().await;
    let mut app = crate::helpers::spawn_app_at(dir, config, time::OffsetDateTime::now_utc()).await;
    app.bootstrap_password = password;
    let token = admin(&app).await;
    let (_, p) = call(&app, Method::GET, "/v1/sso-providers/adfs", &token, None).await;
    assert_eq!(p["saml"]["sp_signing_certificate"], cert_before, "the SP keys are kept across restarts");
    let dir = app.stop().await;
    // The sealed SP keys are among the values `vault verify` opens; a changed byte is named.
    let err = crate::sso::tampered_provider_secret_fails_vault_verify(&dir.path().join("data"), "adfs", "PRIVATE");
    assert!(err.contains("SAML SP keys of identity provider adfs"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Attacks: responses the test builds and signs itself.

const FORGED_ISSUER: &str = "https://idp.corp.example/saml";

/// A login start for `provider` in `b`: the RelayState and the AuthnRequest's ID (inflated from
/// the redirect, as the IdP would read it).
async fn start_login(b: &mut Browser, app: &TestApp, provider: &str) -> (String, String) {
    use std::io::Read;
    let r = b.get(&app.url(&format!("/v1/sso/{provider}/login"))).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    let deflated = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &q["SAMLRequest"]).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..]).read_to_string(&mut xml).unwrap();
    let id = xml.split(" ID=\"").nth(1).and_then(|s| s.split('"').next()).expect("the request's ID").to_string();
    assert!(id.len() >= 32, "an unguessable request id: {id}");
    (q["RelayState"].clone(), id)
}

async fn post_acs(
    b: &mut Browser,
    app: &TestApp,
    provider: &str,
    relay: Option<&str>,
    xml: &str,
) -> (StatusCode, String) {
    let response = saml_forge_b64(xml);
    let mut form = vec![("SAMLResponse", response.as_str())];
    if let Some(r) = relay {
        form.push(("RelayState", r));
    }
    let r = b.send(Method::POST, &app.url(&format!("/v1/sso/saml/{provider}/acs")), Some(&form)).await;
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// xmlsec's own reports of a refused signature reach the log, in its format and at debug, never
/// stderr as plain text (xmlsec's default), where they would bypass the level, break a JSON log
/// and carry the document's values unescaped.
#[test]
fn xmlsec_reports_go_to_the_log_not_to_stderr() {
    use crate::saml_forge::{self as forge, Forge, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (idp, attacker) = (SigningKey::rsa("idp"), SigningKey::rsa("attacker"));
    let metadata = dir.path().join("idp.xml");
    std::fs::write(&metadata, idp_metadata(FORGED_ISSUER, "https://idp.corp.example/sso", &[idp.cert_base64_der()]))
        .unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    let toml = format!(
        "[[sso.saml]]\nid = \"corp\"\ndisplay_name = \"Corp\"\nidp_metadata_file = \"{}\"\nallow_unsolicited = true\n",
        metadata.display()
    );
    std::fs::write(&cfg, toml).unwrap();
    let mut cmd = crate::helpers::gatehouse(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    cmd.env("GATEHOUSE_LOG__LEVEL", "info,gatehouse::sso::xmlsec=debug");
    let server = crate::helpers::ServeProcess::start(cmd);
    let (acs, sp) = (server.url("/v1/sso/saml/corp/acs"), server.url("/v1/sso/saml/corp/metadata"));
    // Signed by a key the IdP's metadata does not hold: xmlsec checks it and refuses it.
    let xml = forge::signed_assertion(&Forge::new(FORGED_ISSUER, &sp, &acs, None, "mallory@corp.example"), &attacker);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let form = [("SAMLResponse", saml_forge_b64(&xml))];
        let r = crate::helpers::client().post(&acs).form(&form).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    assert!(status.is_client_error(), "{status} {body}");
    let (exit, _, err) = server.terminate();
    assert!(exit.success());
    let mut reports = 0;
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("a line outside the JSON log: {line}"));
        if v["target"] == "gatehouse::sso::xmlsec" {
            assert_eq!(v["level"], "DEBUG", "{line}");
            assert!(v["fields"]["func"].as_str().is_some_and(|f| f.starts_with("xmlSec")), "{line}");
            reports += 1;
        }
    }
    assert!(reports > 0, "xmlsec's reports of the refused signature are in the log:\n{err}");
    assert!(!err.contains("func=xmlSec"), "xmlsec wrote to stderr itself:\n{err}");
}

fn saml_forge_b64(xml: &str) -> String {
    crate::saml_forge::b64(xml)
}

fn vm_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_saml_responses_are_refused() {
    use crate::saml_forge::{self as forge, Alg, Forge, SigningKey};
    let app = start_app().await;
    let token = admin(&app).await;
    let idp = SigningKey::rsa("idp");
    let idp_next = SigningKey::rsa("idp-next");
    let idp_ec = SigningKey::ec("idp-ec");
    let attacker = SigningKey::rsa("attacker");
    // Two RSA certificates (a rollover in progress) and an EC one.
    let metadata = idp_metadata(
        FORGED_ISSUER,
        "https://idp.corp.example/sso",
        &[idp.cert_base64_der(), idp_next.cert_base64_der(), idp_ec.cert_base64_der()],
    );
    let (st, p) =
        call(&app, Method::POST, "/v1/sso-providers", &token, Some(saml_provider_body("forged", &metadata, json!({}))))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let sp_enc_cert = p["saml"]["sp_encryption_certificate"].as_str().unwrap().to_string();
    let sp = app.url("/v1/sso/saml/forged/metadata");
    let acs = app.url("/v1/sso/saml/forged/acs");
    let forge_for = |request_id: &str, who: &str| Forge::new(FORGED_ISSUER, &sp, &acs, Some(request_id), who);
    let evil_of = |f: &Forge| {
        let mut e = f.clone();
        e.assertion_id = forge::random_id();
        e.name_id = "admin@corp.example".into();
        e
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Each attack gets a login of its own, so only the attack decides.
    type Build<'a> = Box<dyn Fn(&Forge) -> String + 'a>;
    let attacks: Vec<(&str, Build, &str)> = vec![
        ("unsigned", Box::new(forge::unsigned), "not signed"),
        ("signed by another key", Box::new(|f| forge::signed_assertion(f, &attacker)), "signature is not valid"),
        (
            "another key, its certificate in KeyInfo",
            Box::new(|f| {
                let x = forge::assertion_xml(f);
                let x = forge::sign(&x, &f.assertion_id, Alg::RsaSha256, &attacker, Some(&attacker));
                forge::response_xml(f, &x)
            }),
            "signature is not valid",
        ),
        (
            "another key, the IdP's certificate in KeyInfo",
            Box::new(|f| {
                let x = forge::assertion_xml(f);
                let x = forge::sign(&x, &f.assertion_id, Alg::RsaSha256, &attacker, Some(&idp));
                forge::response_xml(f, &x)
            }),
            "signature is not valid",
        ),
        (
            "signed assertion moved into Extensions, an unsigned one read",
            Box::new(|f| forge::wrap_assertion_in_extensions(f, &idp, &evil_of(f))),
            "directly in the Response",
        ),
        (
            "signed assertion moved into a ds:Object",
            Box::new(|f| forge::wrap_assertion_in_signature_object(f, &idp, &evil_of(f))),
            "directly in the Response",
        ),
        ("a second assertion", Box::new(|f| forge::two_assertions(f, &idp, &evil_of(f))), "exactly one assertion"),
        (
            "the Response's signature covers another element",
            Box::new(|f| forge::response_signature_over_other_element(f, &idp, &evil_of(f))),
            "",
        ),
        ("duplicate IDs", Box::new(|f| forge::duplicate_ids(f, &idp, &evil_of(f))), ""),
        ("a comment in the NameID", Box::new(|f| forge::comment_in_name_id(f, &idp)), "comments"),
        (
            "expired",
            Box::new(|f| {
                let mut f = f.clone();
                f.issue_instant = now - 30;
                f.not_before = now - 400;
                f.not_on_or_after = now - 100;
                forge::signed_assertion(&f, &idp)
            }),
            "expired",
        ),
        ("issued long ago", Box::new(|f| forge::signed_assertion(&f.clone().at(now - 3600), &idp)), "too long ago"),
        (
            "not yet valid",
            Box::new(|f| {
                let mut f = f.clone();
                f.not_before = now + 600;
                f.not_on_or_after = now + 900;
                forge::signed_assertion(&f, &idp)
            }),
            "not valid yet",
        ),
        (
            "wrong audience",
            Box::new(|f| {
                let mut f = f.clone();
                f.audience = Some("https://other-sp.example/metadata".into());
                forge::signed_assertion(&f, &idp)
            }),
            "Audience",
        ),
        (
            "no audience",
            Box::new(|f| {
                let mut f = f.clone();
                f.audience = None;
                forge::signed_assertion(&f, &idp)
            }),
            "Audience",
        ),
        (
            "wrong recipient",
            Box::new(|f| {
                let mut f = f.clone();
                f.recipient = "https://other-sp.example/acs".into();
                forge::signed_assertion(&f, &idp)
            }),
            "Recipient",
        ),
        (
            "wrong destination, assertion signed",
            Box::new(|f| {
                let mut f = f.clone();
                f.destination = Some("https://other-sp.example/acs".into());
                forge::signed_assertion(&f, &idp)
            }),
            "Destination",
        ),
        (
            "wrong destination, response signed",
            Box::new(|f| {
                let mut f = f.clone();
                f.destination = Some("https://other-sp.example/acs".into());
                forge::signed_response(&f, &idp)
            }),
            "Destination",
        ),
        (
            "wrong issuer",
            Box::new(|f| {
                let mut f = f.clone();
                f.issuer = "https://evil.example/saml".into();
                forge::signed_assertion(&f, &idp)
            }),
            "Issuer",
        ),
        (
            "unknown InResponseTo",
            Box::new(|f| {
                let mut f = f.clone();
                f.in_response_to = Some(forge::random_id());
                forge::signed_assertion(&f, &idp)
            }),
            "InResponseTo",
        ),
        (
            "SHA-1 signature",
            Box::new(|f| {
                let x = forge::sign(&forge::assertion_xml(f), &f.assertion_id, Alg::RsaSha1, &idp, Some(&idp));
                forge::response_xml(f, &x)
            }),
            "not allowed",
        ),
        (
            "an error status",
            Box::new(|f| {
                let mut f = f.clone();
                f.status = "urn:oasis:names:tc:SAML:2.0:status:Requester".into();
                forge::signed_assertion(&f, &idp)
            }),
            "error status",
        ),
        ("a DTD with entity expansion", Box::new(forge::with_doctype_bomb), "DTD"),
        ("an external entity", Box::new(|f| forge::with_external_entity(f, "/etc/passwd")), "DTD"),
    ];
    // Where two XML parsers could read one message differently (found by review: each of these
    // signed in as anyone before the scan refused them).
    let parser_tricks: Vec<(&str, Build, &str)> = vec![
        (
            "the genuine signed Response hidden in an attribute value, an unsigned encrypted assertion read",
            Box::new(|f| {
                let mut own = f.clone();
                own.name_id = "attacker@corp.example".into();
                let genuine = forge::signed_response(&own, &idp);
                let code = "<samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>";
                let at = genuine.find(code).expect("the forge's StatusCode");
                let rest = &genuine[at + code.len()..];
                let evil = forge::encrypted_unsigned_element(&evil_of(f), &sp_enc_cert);
                format!(
                    "{}<samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\" xmlns:q='</samlp:Status>{rest}'/></samlp:Status>{evil}</samlp:Response>",
                    &genuine[..at]
                )
            }),
            "markup",
        ),
        (
            "a UTF-7 declaration",
            Box::new(|f| format!("<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}", forge::signed_assertion(f, &idp))),
            "UTF-8",
        ),
        (
            "a NUL byte",
            Box::new(|f| forge::signed_assertion(f, &idp).replacen("</samlp:Response>", "\u{0}</samlp:Response>", 1)),
            "characters XML does not allow",
        ),
        (
            "an entity reference in a namespace name",
            Box::new(|f| {
                forge::signed_assertion(f, &idp).replacen(
                    "urn:oasis:names:tc:SAML:2.0:assertion\"",
                    "urn:oasis:names:tc:SAML:2.0:&#97;ssertion\"",
                    1,
                )
            }),
            "markup",
        ),
        (
            "a signed Response around an encrypted assertion that is not signed itself",
            Box::new(|f| {
                let evil = forge::encrypted_unsigned_element(&evil_of(f), &sp_enc_cert);
                let xml = forge::response_xml(f, &evil);
                forge::sign(&xml, &f.response_id, Alg::RsaSha256, &idp, Some(&idp))
            }),
            "its own signature",
        ),
        (
            "six hundred transforms (CPU and memory before the signature check)",
            Box::new(|f| {
                let signed = forge::signed_assertion(f, &idp);
                let close = signed.find("</ds:Transforms>").expect("the forge writes ds:Transforms");
                let t = "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>";
                format!("{}{}{}", &signed[..close], t.repeat(600), &signed[close..])
            }),
            "chain of transforms",
        ),
        (
            "1500 values of one attribute (samael's reduction is quadratic in siblings)",
            Box::new(|f| {
                let mut f = f.clone();
                f.attributes = vec![("groups".into(), (0..1500).map(|i| format!("g{i}")).collect())];
                forge::signed_assertion(&f, &idp)
            }),
            "too many children",
        ),
    ];
    let mut b = Browser::new();
    let mut failures = 0;
    for (name, build, reason) in attacks.iter().chain(parser_tricks.iter()) {
        let (relay, id) = start_login(&mut b, &app, "forged").await;
        let xml = build(&forge_for(&id, "victim@corp.example"));
        let (st, page) = post_acs(&mut b, &app, "forged", Some(&relay), &xml).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name}: {page}");
        assert!(page.contains(reason), "{name}: expected {reason:?} in {page}");
        assert!(b.cookie(&app.base, "__Host-gatehouse_session").is_none(), "{name} signed someone in");
        failures += 1;
    }

    // The controls: the same machinery accepts what is right, so the refusals above are the
    // attacks' doing. Signed by each trusted key (rollover, EC), the response signed, both, and
    // an assertion encrypted to the SP.
    let controls: Vec<(&str, Build)> = vec![
        ("assertion signed", Box::new(|f| forge::signed_assertion(f, &idp))),
        ("signed with the next certificate", Box::new(|f| forge::signed_assertion(f, &idp_next))),
        ("signed with the EC key", Box::new(|f| forge::signed_assertion(f, &idp_ec))),
        ("response signed", Box::new(|f| forge::signed_response(f, &idp))),
        ("both signed", Box::new(|f| forge::signed_both(f, &idp))),
        ("encrypted, assertion signed", Box::new(|f| forge::encrypted_assertion(f, &idp, &sp_enc_cert, false))),
        ("encrypted, response signed", Box::new(|f| forge::encrypted_assertion(f, &idp, &sp_enc_cert, true))),
    ];
    let mut replayable = None;
    for (name, build) in &controls {
        let mut b = Browser::new();
        let (relay, id) = start_login(&mut b, &app, "forged").await;
        let f = forge_for(&id, "victim@corp.example");
        let (st, page) = post_acs(&mut b, &app, "forged", Some(&relay), &build(&f)).await;
        assert_eq!(st, StatusCode::SEE_OTHER, "{name}: {page}");
        assert!(b.cookie(&app.base, "__Host-gatehouse_session").is_some(), "{name}");
        replayable.get_or_insert(f);
    }

    // Replay: the same assertion (same ID) answering a new request, signed again, fails.
    let (relay, id) = start_login(&mut b, &app, "forged").await;
    let mut again = replayable.unwrap();
    again.in_response_to = Some(id);
    let (st, page) = post_acs(&mut b, &app, "forged", Some(&relay), &forge::signed_assertion(&again, &idp)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(page.contains("already used"), "{page}");
    failures += 1;

    // A response no login here asked for (no RelayState): unsolicited responses are off.
    let (_, id) = start_login(&mut b, &app, "forged").await;
    let (st, page) =
        post_acs(&mut b, &app, "forged", None, &forge::signed_assertion(&forge_for(&id, "victim@corp.example"), &idp))
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(page.contains("RelayState missing"), "{page}");
    failures += 1;

    // A login started in the victim's browser, finished from another one.
    let (relay, id) = start_login(&mut b, &app, "forged").await;
    let mut other = Browser::new();
    let xml = forge::signed_assertion(&forge_for(&id, "victim@corp.example"), &idp);
    let (st, page) = post_acs(&mut other, &app, "forged", Some(&relay), &xml).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(page.contains("another browser"), "{page}");
    failures += 1;

    // An API client's login (mode=code): the ACS ends with a one-time code on return_to, which
    // only the holder of the PKCE verifier can exchange.
    let verifier = "a-pkce-verifier-of-the-saml-api-client-0123456789-abcdef";
    let challenge = gatehouse::crypto::token::pkce_s256(verifier);
    let mut api = Browser::new();
    let r = api
        .get(&app.url(&format!(
            "/v1/sso/forged/login?mode=code&code_challenge={challenge}&return_to=https%3A%2F%2Fapp.example.com%2Fdone"
        )))
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    let deflated = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &q["SAMLRequest"]).unwrap();
    let mut request = String::new();
    std::io::Read::read_to_string(&mut flate2::read::DeflateDecoder::new(&deflated[..]), &mut request).unwrap();
    let id = request.split(" ID=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let xml = forge::signed_assertion(&forge_for(&id, "victim@corp.example"), &idp);
    let r = api
        .send(
            Method::POST,
            &acs,
            Some(&[("SAMLResponse", forge::b64(&xml).as_str()), ("RelayState", q["RelayState"].as_str())]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with("https://app.example.com/done?code=gthc_"), "{back}");
    let code = back.split("code=").nth(1).unwrap().to_string();
    let r = app
        .client
        .post(app.url("/v1/sso/exchange"))
        .json(&json!({"code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["access_token"].as_str().is_some());

    // A provider that allows unsolicited responses takes one that answers no request, and still
    // refuses a solicited one carried away from the login that sent its request.
    let open = saml_provider_body(
        "forged-open",
        &metadata,
        json!({"saml": {"idp_metadata": metadata, "allow_unsolicited": true}}),
    );
    let (st, p) = call(&app, Method::POST, "/v1/sso-providers", &token, Some(open)).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let open_sp = app.url("/v1/sso/saml/forged-open/metadata");
    let open_acs = app.url("/v1/sso/saml/forged-open/acs");
    let mut idp_initiated = Forge::new(FORGED_ISSUER, &open_sp, &open_acs, None, "walk-in@corp.example");
    let mut b2 = Browser::new();
    let (st, page) = post_acs(&mut b2, &app, "forged-open", None, &forge::signed_assertion(&idp_initiated, &idp)).await;
    assert_eq!(st, StatusCode::SEE_OTHER, "{page}");
    idp_initiated.assertion_id = forge::random_id();
    idp_initiated.in_response_to = Some(forge::random_id());
    let (st, page) = post_acs(&mut b2, &app, "forged-open", None, &forge::signed_assertion(&idp_initiated, &idp)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(page.contains("only by the login that sent it"), "{page}");
    failures += 1;

    // A body over the ACS cap is refused before it is read.
    let big = "A".repeat(600 * 1024);
    let r = app.client.post(&acs).form(&[("SAMLResponse", big.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Entity expansion: refused before any parser expands anything; memory stays flat.
    let before = vm_rss_kb();
    for _ in 0..20 {
        let (relay, id) = start_login(&mut b, &app, "forged").await;
        let (st, _) = post_acs(
            &mut b,
            &app,
            "forged",
            Some(&relay),
            &forge::with_doctype_bomb(&forge_for(&id, "x@corp.example")),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        failures += 1;
    }
    let grown = vm_rss_kb().saturating_sub(before);
    assert!(grown < 64 * 1024, "20 entity bombs grew the process by {grown} kB");

    // No attack signed anyone in as anyone: the attacker's name never became an account, and
    // every refusal is audited with its reason, never the message.
    let (_, users) = call(&app, Method::GET, "/v1/users?q=admin%40corp.example", &token, None).await;
    assert!(!users.to_string().contains("admin@corp.example"), "{users}");
    let events = crate::sso::audit_actions(&app, &token, "sso.login.failed").await;
    assert!(events.len() >= failures, "{} audited, {failures} refused", events.len());
    let audited = serde_json::to_string(&events).unwrap();
    assert!(!audited.contains("SAMLResponse") && !audited.contains("<saml"), "no message in the audit log");
}

#[test]
fn check_config_names_a_bad_saml_metadata_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let metadata = dir.path().join("idp.xml");
    let cfg = dir.path().join("gatehouse.toml");
    let toml = format!(
        "[[sso.saml]]\nid = \"adfs\"\ndisplay_name = \"ADFS\"\nidp_metadata_file = \"{}\"\n",
        metadata.display()
    );
    std::fs::write(&cfg, toml).unwrap();
    let check = || {
        crate::helpers::run(crate::helpers::gatehouse(&[
            "check-config",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]))
    };
    // Metadata without a signing certificate: refused, naming the provider, the file and why.
    std::fs::write(&metadata, idp_metadata("https://idp.corp.example/saml", "https://idp.corp.example/sso", &[]))
        .unwrap();
    let (code, _, err) = check();
    assert_ne!(code, 0);
    assert!(err.contains("sso.saml 'adfs'") && err.contains("idp.xml") && err.contains("signing certificate"), "{err}");
    // With one, the configuration is accepted.
    let keys = tempfile::tempdir().unwrap();
    let (_, cert) = openssl_key(keys.path(), "idp-c");
    std::fs::write(
        &metadata,
        idp_metadata("https://idp.corp.example/saml", "https://idp.corp.example/sso", &[pem_to_b64(&cert)]),
    )
    .unwrap();
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
}
