//! Test harness: start the app in-process or as a process, and a client that trusts it.

#![allow(dead_code)]

use gatehouse::clock::ManualClock;
use gatehouse::config::Config;
use gatehouse::startup::{Application, BuildOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The fixed instant tests run at.
pub fn test_time() -> time::OffsetDateTime {
    time::macros::datetime!(2026-11-29 12:00 UTC)
}

/// A config for tests: loopback port 0, a data folder inside `dir`, cheap logs.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config { data_dir: dir.join("data"), ..Config::default() };
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_seconds = 2;
    c
}

/// A running in-process server.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub config: Config,
    pub state: gatehouse::state::AppState,
    pub bootstrap_password: Option<String>,
    /// The app's clock: stands still at `test_time()` until advanced.
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stop the server and wait for it to finish draining. Returns the temporary folder so the
    /// caller can look at the data folder afterwards.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        self.dir
    }
}

/// A client that accepts the server's self-signed certificate and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start the app with a config adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tweak(&mut config);
    spawn_app_in(dir, config).await
}

/// Start the app on an existing temporary folder (a restart) with `config`.
pub async fn spawn_app_in(dir: TempDir, config: Config) -> TestApp {
    spawn_app_at(dir, config, test_time()).await
}

/// Start the app with its clock at `at` (the real time, for peers that use theirs).
pub async fn spawn_app_at(dir: TempDir, config: Config, at: time::OffsetDateTime) -> TestApp {
    let clock = Arc::new(ManualClock::new(at));
    let opts = BuildOptions { clock: clock.clone(), credentials_dir: None, bootstrap_admin: true, exclusive: true };
    let mut app = Application::build(config.clone(), opts).await.expect("app builds");
    let base = app.base_url();
    let state = app.state().clone();
    let bootstrap_password = app.take_bootstrap_password().map(|p| p.expose().to_string());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async move {
                let _ = rx.await;
            })
            .await;
    });
    TestApp {
        base,
        client: client(),
        dir,
        config,
        state,
        bootstrap_password,
        clock,
        stop: Some(tx),
        handle: Some(handle),
    }
}

/// The `gatehouse` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"))
}

/// A `gatehouse` command with a clean environment (no inherited GATEHOUSE_* variables).
pub fn gatehouse(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") || k == "CREDENTIALS_DIRECTORY" || k == "NOTIFY_SOCKET" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A `gatehouse serve` process with its output captured.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    pub stdout: Arc<std::sync::Mutex<String>>,
    pub stderr: Arc<std::sync::Mutex<String>>,
}

fn pump(reader: impl std::io::Read + Send + 'static, into: Arc<std::sync::Mutex<String>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(reader);
        for line in reader.lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl ServeProcess {
    /// Start `gatehouse serve --listen 127.0.0.1:0` with extra args/env and wait for its URL.
    pub fn start(mut cmd: Command) -> ServeProcess {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("gatehouse starts");
        let stdout = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        pump(child.stdout.take().unwrap(), stdout.clone());
        pump(child.stderr.take().unwrap(), stderr.clone());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = stdout
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(" listening on "))
                .map(|l| l.rsplit(' ').next().unwrap().to_string());
            if let Some(base) = found {
                return ServeProcess { child, base, stdout, stderr };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "gatehouse exited early with {status}\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            assert!(std::time::Instant::now() < deadline, "gatehouse did not start in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        self.signal("TERM");
        let status = self.wait_timeout(Duration::from_secs(20)).expect("exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }

    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `serve` command on a free loopback port with `data` as its data folder.
pub fn serve_cmd(data: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    gatehouse(&args)
}

/// Run a command to completion: (exit code, stdout, stderr).
/// A command that does not finish in 60 s is killed and the test fails.
pub fn run(mut cmd: Command) -> (i32, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("command runs");
    // Drain both pipes while waiting: output larger than a pipe buffer must not block the child.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out_t = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err_t = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command did not finish in 60 s: {cmd:?}\nstdout:\n{}\nstderr:\n{}",
                out_t.join().unwrap(),
                err_t.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), out_t.join().unwrap(), err_t.join().unwrap())
}

/// The repository root (for committed files such as openapi/openapi.json).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder where tests/run.sh installs npm and pip peers.
pub fn peers_dir() -> PathBuf {
    repo_root().join("tests").join("peers")
}

/// Recursively list every file below `dir` (for scanning a data folder).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Spawn a test peer that announces itself with one JSON line on stdout once it listens; the
/// child and that line. A peer that has not announced itself within 90 s is killed and started
/// once more (on two cores shared with the rest of the suite, a start has been seen to stall);
/// a second failure panics with what the peer wrote on stderr.
pub fn spawn_peer(mut cmd: std::process::Command, what: &str) -> (std::process::Child, serde_json::Value) {
    use std::io::{BufRead, BufReader, Read};
    let mut stalled = String::new();
    for attempt in 1..=2 {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start (run tests/run.sh): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The peer's log, kept for a failure report (and read so that it never blocks on it).
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) => {
                let ready = serde_json::from_str(line.trim())
                    .unwrap_or_else(|_| panic!("{what} said {line:?}; its log:\n{}", log.lock().unwrap()));
                return (child, ready);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                stalled = log.lock().unwrap().clone();
                eprintln!("{what} did not start within 90 s (attempt {attempt}); its log:\n{stalled}");
            }
        }
    }
    panic!("{what} starts within 90 s; its log:\n{stalled}")
}
