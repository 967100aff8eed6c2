//! Real peers against the real server: a headless Chromium drives the playground at `/docs`
//! with every non-loopback request blocked, and schemathesis fuzzes every operation of
//! `/openapi.json`. Both peers are installed by `tests/run.sh`; a missing peer fails the test
//! (it is never skipped silently).

use crate::helpers::{peers_dir, repo_root, spawn_app};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tokio::process::Command;

const INSTALL_HINT: &str = "run tests/run.sh to install the test peers";
const CHROMIUM: &str = "/usr/bin/chromium";

fn require_peer(path: &Path, what: &str) {
    assert!(path.exists(), "{what} not found at {}: {INSTALL_HINT}", path.display());
}

/// Run `cmd` to completion within `limit`, killing it if it overruns.
async fn run_peer(mut cmd: Command, limit: Duration, what: &str) -> Output {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let child = cmd.output();
    match tokio::time::timeout(limit, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{what} could not be started ({e}): {INSTALL_HINT}"),
        Err(_) => panic!("{what} did not finish within {} s", limit.as_secs()),
    }
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playground_works_air_gapped() {
    let script = repo_root().join("tests").join("browser").join("docs.mjs");
    require_peer(&peers_dir().join("node_modules").join("playwright-core").join("package.json"), "playwright-core");
    require_peer(Path::new(CHROMIUM), "chromium");
    let app = spawn_app().await;

    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(&app.base).current_dir(repo_root()).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let out = run_peer(cmd, Duration::from_secs(90), "node tests/browser/docs.mjs").await;

    app.stop().await;
    assert!(out.status.success(), "{}", report("the headless playground test", &out));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors() {
    let schemathesis: PathBuf = peers_dir().join("venv").join("bin").join("schemathesis");
    require_peer(&schemathesis, "schemathesis");
    let app = spawn_app().await;
    // Run outside the repository so that no report or example database lands in the tree.
    let scratch = tempfile::tempdir().unwrap();
    // Sign in as the admin and fuzz with that session (the auto sign-up of schemathesis 4.32
    // crashes on this spec's optional login fields).
    let write_config = |token: &str| {
        let toml = format!("[auth]\nauto-signup = false\n\n[auth.openapi.sessionToken]\nbearer = \"{token}\"\n");
        std::fs::write(scratch.path().join("schemathesis.toml"), toml).unwrap();
    };
    let login: serde_json::Value = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": app.bootstrap_password.clone().unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    write_config(login["access_token"].as_str().unwrap());

    let mut cmd = Command::new(&schemathesis);
    cmd.arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--url", &app.base])
        .args(["--checks", "all"])
        // Schema-valid but refused by rules JSON Schema cannot state (a common password, an
        // address that is not an email, the password equal to the email): a 400 is right.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--tls-verify", "false"])
        .args(["--max-examples", "100"])
        // Ending the fuzzing session (logout, logout-all, or deleting it by the id that
        // GET /v1/me/sessions lists) would leave every later operation answering 401; those three
        // are left to the integration tests.
        .args(["--exclude-operation-id", "logout", "--exclude-operation-id", "logoutAll"])
        .args(["--exclude-operation-id", "revokeMySession"])
        // An identity provider made with a random issuer would send later login starts to a
        // random host (tests reach loopback only); provider input is covered by tests/api/sso.rs.
        .args(["--exclude-operation-id", "createSsoProvider", "--exclude-operation-id", "updateSsoProvider"])
        // One worker: hypothesis describing filtered strategies from two threads at once trips a
        // CPython 3.11 parser bug ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .current_dir(scratch.path())
        .env("NO_COLOR", "1");
    // About 170 s on a loaded 2-core machine; the limit leaves room for a slower one.
    let out = run_peer(cmd, Duration::from_secs(480), "schemathesis").await;

    app.stop().await;
    assert!(out.status.success(), "{}", report("schemathesis", &out));
}
