//! TLS policy (1.2 and 1.3 only, ECDHE AEAD suites only) checked with a real OpenSSL client,
//! and certificate reload on SIGHUP without dropping connections.

use crate::helpers::{gatehouse, serve_cmd, ServeProcess};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Try a handshake with `openssl s_client` and extra flags; true when it completes.
fn handshake(addr: &str, flags: &[&str]) -> bool {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (tests/run.sh installs it)");
    let _ = child.stdin.take().unwrap().write_all(b"Q\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("Cipher is ") && !text.contains("Cipher is (NONE)")
}

#[test]
fn only_modern_protocols_and_suites_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(serve_cmd(&dir.path().join("data"), &[]));
    let addr = server.base.trim_start_matches("https://").to_string();
    assert!(handshake(&addr, &["-tls1_3"]), "TLS 1.3");
    assert!(handshake(&addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]), "TLS 1.2 ECDHE AEAD");
    assert!(handshake(&addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]), "TLS 1.2 ChaCha20");
    assert!(!handshake(&addr, &["-tls1_1"]), "TLS 1.1 refused");
    assert!(!handshake(&addr, &["-tls1"]), "TLS 1.0 refused");
    assert!(!handshake(&addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]), "CBC suite refused");
    assert!(!handshake(&addr, &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]), "static RSA key exchange refused");
    server.terminate();
}

fn write_pair(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.join(format!("{name}.cert.pem")), generated.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key.pem")), generated.signing_key.serialize_pem()).unwrap();
    generated.cert.der().to_vec()
}

fn install(dir: &std::path::Path, name: &str) {
    std::fs::copy(dir.join(format!("{name}.cert.pem")), dir.join("cert.pem")).unwrap();
    std::fs::copy(dir.join(format!("{name}.key.pem")), dir.join("key.pem")).unwrap();
}

async fn peer_cert(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let info = res.extensions().get::<reqwest::tls::TlsInfo>().expect("tls info");
    info.peer_certificate().unwrap().to_vec()
}

fn tls_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let der_a = write_pair(&tls, "a");
    let der_b = write_pair(&tls, "b");
    install(&tls, "a");
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            tls.join("cert.pem").display(),
            tls.join("key.pem").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServeProcess::start(serve_cmd(&data, &["--config", cfg.to_str().unwrap()]));
    let url = server.url("/healthz");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kept = tls_client();
    assert_eq!(rt.block_on(peer_cert(&kept, &url)), der_a);

    install(&tls, "b");
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rt.block_on(peer_cert(&tls_client(), &url)), der_b, "new connections get the new certificate");
    assert_eq!(rt.block_on(peer_cert(&kept, &url)), der_a, "the open connection was kept");

    // A broken pair is refused and audited; the server keeps serving the last good one.
    std::fs::write(tls.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n").unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rt.block_on(peer_cert(&tls_client(), &url)), der_b);
    let (status, _, _) = server.terminate();
    assert!(status.success());

    let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
    let mut stmt = conn.prepare("SELECT action FROM audit_log ORDER BY seq").unwrap();
    let actions: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert!(actions.contains(&"tls.certificate.reloaded".to_string()), "{actions:?}");
    assert!(actions.contains(&"config.rejected".to_string()), "{actions:?}");
    let (code, _, _) = crate::helpers::run(gatehouse(&["audit", "verify", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(code, 0);
}
