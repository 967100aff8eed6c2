//! SIEM forwarding against a real rsyslog (Debian `rsyslogd`, started by each test as a
//! foreground process with its own configuration, work folder and loopback port): every audit
//! record arrives as RFC 5424 with its fields in structured data, over TCP, UDP and TLS; a wrong
//! CA delivers nothing and keeps the cursor; a collector outage, and a Gatehouse crash during it,
//! lose no record. tests/run.sh installs rsyslog and rsyslog-gnutls; without them these tests fail.

use crate::helpers::{client, serve_cmd, spawn_app_in, spawn_app_with, test_config, ServeProcess, TestApp};
use gatehouse::config::{Config, SyslogTarget, SyslogTransport};
use gatehouse::db::DbError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// rsyslog's GnuTLS network stream driver (package rsyslog-gnutls), in the multiarch folder.
fn gtls_module() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib").ok()?.flatten().map(|e| e.path().join("rsyslog/lmnsd_gtls.so")).find(|p| p.exists())
}

/// TLS material for the collector: its CA and a server certificate for `localhost`/127.0.0.1.
struct Pki {
    ca_pem: PathBuf,
    cert_pem: PathBuf,
    key_pem: PathBuf,
}

fn make_ca(dir: &Path, name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, ca.pem()).unwrap();
    (ca, path)
}

fn make_pki(dir: &Path) -> Pki {
    let (ca, ca_pem) = make_ca(dir, "collector");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_pem, key_pem) = (dir.join("collector.pem"), dir.join("collector.key"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    Pki { ca_pem, cert_pem, key_pem }
}

/// A free loopback port (TCP or UDP).
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

/// One rsyslogd listening on 127.0.0.1:`port`, writing every message it receives, unchanged
/// (`%rawmsg%`), as one line of `out`.
struct Rsyslog {
    dir: tempfile::TempDir,
    conf: PathBuf,
    out: PathBuf,
    port: u16,
    transport: SyslogTransport,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(transport: SyslogTransport, pki: Option<&Pki>) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is missing: install the Debian packages rsyslog and rsyslog-gnutls (tests/run.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let out = dir.path().join("received.log");
        let port = free_port(transport == SyslogTransport::Udp);
        let input = match transport {
            SyslogTransport::Udp => {
                format!("module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")\n")
            }
            SyslogTransport::Tcp => {
                format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n")
            }
            SyslogTransport::Tls => {
                assert!(gtls_module().is_some(), "rsyslog's lmnsd_gtls.so is missing: install rsyslog-gnutls");
                format!(
                    "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
                )
            }
        };
        let tls_globals = match pki {
            Some(p) => format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                p.ca_pem.display(),
                p.cert_pem.display(),
                p.key_pem.display()
            ),
            None => String::new(),
        };
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\" maxMessageSize=\"64k\"{tls_globals})\n{input}\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
                work.display(),
                out.display()
            ),
        )
        .unwrap();
        let mut r = Rsyslog { dir, conf, out, port, transport, child: None };
        r.run();
        r
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start rsyslogd (again, on the same port) and wait until it listens.
    fn run(&mut self) {
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = match self.transport {
                // Taken by rsyslogd once it listens.
                SyslogTransport::Udp => std::net::UdpSocket::bind(("127.0.0.1", self.port)).is_err(),
                _ => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if listening {
                // imudp binds before its worker reads; give it a moment.
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited at start with {status}; config:\n{}",
                    std::fs::read_to_string(&self.conf).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {} in 20 s", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop rsyslogd with SIGTERM (it writes out what it has received) and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every message from Gatehouse received so far.
    fn messages(&self) -> Vec<Syslog> {
        let text = std::fs::read(&self.out).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains(" gatehouse "))
            .map(|l| parse(l).unwrap_or_else(|| panic!("not an RFC 5424 message from Gatehouse: {l:?}")))
            .collect()
    }

    /// Wait until every sequence number in `1..=head` has arrived; returns the messages.
    fn wait_for(&self, head: i64, limit: Duration) -> Vec<Syslog> {
        let deadline = Instant::now() + limit;
        loop {
            let msgs = self.messages();
            let seqs: BTreeSet<i64> = msgs.iter().map(|m| m.seq()).collect();
            if (1..=head).all(|s| seqs.contains(&s)) {
                return msgs;
            }
            if Instant::now() > deadline {
                let missing: Vec<i64> = (1..=head).filter(|s| !seqs.contains(s)).collect();
                panic!("records {missing:?} never reached the collector (received {seqs:?})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One received RFC 5424 message, split into its parts.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    sd_id: String,
    params: BTreeMap<String, String>,
    json: serde_json::Value,
}

impl Syslog {
    fn seq(&self) -> i64 {
        self.params["seq"].parse().unwrap()
    }
}

/// Parse `<PRI>1 TS HOST APP PROCID MSGID [SD-ID k="v"...] BOM JSON`, undoing the escapes.
fn parse(line: &str) -> Option<Syslog> {
    let rest = line.strip_prefix('<')?;
    let (pri, rest) = rest.split_once(">1 ")?;
    let mut head = rest.splitn(6, ' ');
    let (timestamp, hostname, app_name, procid, msgid, rest) =
        (head.next()?, head.next()?, head.next()?, head.next()?, head.next()?, head.next()?);
    assert_eq!(procid, "-");
    let rest = rest.strip_prefix('[')?;
    let (sd_id, mut rest) = rest.split_once(' ')?;
    let mut params = BTreeMap::new();
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, next) = chars.next()?;
                    assert!(matches!(next, '"' | '\\' | ']'), "only \", \\ and ] are escaped: {line}");
                    value.push(next);
                }
                '"' => break i,
                ']' => panic!("an unescaped ] inside a PARAM-VALUE: {line}"),
                c => value.push(c),
            }
        };
        params.insert(name.to_string(), value);
        let after = &after[end + 1..];
        if let Some(r) = after.strip_prefix(' ') {
            rest = r;
        } else {
            rest = after.strip_prefix(']')?;
            break;
        }
    }
    let json = rest.strip_prefix(" \u{feff}")?;
    Some(Syslog {
        pri: pri.parse().ok()?,
        timestamp: timestamp.into(),
        hostname: hostname.into(),
        app_name: app_name.into(),
        msgid: msgid.into(),
        sd_id: sd_id.into(),
        params,
        json: serde_json::from_str(json).ok()?,
    })
}

fn target(name: &str, transport: SyslogTransport, address: String) -> SyslogTarget {
    SyslogTarget {
        name: name.into(),
        transport,
        address,
        ca_file: None,
        server_name: None,
        app_name: "gatehouse".into(),
        hostname: Some("gh-test".into()),
        facility: "authpriv".into(),
        sd_id: "gatehouse@32473".into(),
    }
}

/// Sign-in endpoints are rate limited; the tests make many anonymous sessions.
fn roomy(c: &mut Config) {
    c.auth.rate_limit.burst = 10_000;
    c.auth.rate_limit.per_minute = 10_000;
}

/// `n` audit records through the API (an anonymous sign-in each).
async fn make_events(client: &reqwest::Client, base: &str, n: usize) {
    for _ in 0..n {
        let res = client.post(format!("{base}/v1/auth/anonymous")).json(&serde_json::json!({})).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
}

async fn head(app: &TestApp) -> i64 {
    app.state.db.read(|tx| tx.audit_head()).await.unwrap().map(|h| h.seq).unwrap()
}

async fn cursor(app: &TestApp, name: &str) -> Option<String> {
    let key = format!("siem.cursor.{name}");
    app.state.db.read(move |tx| -> Result<_, DbError> { tx.meta_get(&key) }).await.unwrap()
}

/// The records as the database has them, by sequence number.
async fn rows(app: &TestApp) -> BTreeMap<i64, gatehouse::db::AuditRow> {
    let rows = app.state.db.read(|tx| tx.audit_page(0, 10_000)).await.unwrap();
    rows.into_iter().map(|r| (r.seq, r)).collect()
}

/// Wait (on the blocking pool, the collector is polled with sleeps) for `1..=head`.
async fn delivered(collector: &Rsyslog, head: i64) -> Vec<Syslog> {
    tokio::task::block_in_place(|| collector.wait_for(head, Duration::from_secs(60)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_delivers_every_record_with_its_fields_in_structured_data() {
    let collector = Rsyslog::start(SyslogTransport::Tcp, None);
    let address = collector.address();
    let app = spawn_app_with(|c| {
        roomy(c);
        c.audit.syslog = vec![target("central", SyslogTransport::Tcp, address)];
    })
    .await;
    make_events(&app.client, &app.base, 5).await;
    // A failed login carries an origin and details with characters to escape.
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("user-agent", "probe \"quoted\" [x] back\\slash")
        .json(&serde_json::json!({"email": "nobody@example.com", "password": "wrong password here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let head = head(&app).await;
    let msgs = delivered(&collector, head).await;
    let db = rows(&app).await;
    for m in &msgs {
        let row = &db[&m.seq()];
        assert_eq!(m.app_name, "gatehouse");
        assert_eq!(m.hostname, "gh-test");
        assert_eq!(m.sd_id, "gatehouse@32473");
        assert_eq!(m.msgid, row.action.chars().take(32).collect::<String>());
        let severity = if row.outcome == "success" { 6 } else { 4 };
        assert_eq!(m.pri, 10 * 8 + severity, "{m:?}");
        let ts = time::OffsetDateTime::parse(&m.timestamp, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(gatehouse::domain::unix_ms(ts), row.ts_ms);
        assert!(m.timestamp.ends_with('Z') && m.timestamp.len() == 24, "{}", m.timestamp);
        let expect: [(&str, Option<&str>); 10] = [
            ("action", Some(&row.action)),
            ("actor_type", Some(&row.actor_type)),
            ("actor_id", row.actor_id.as_deref()),
            ("target", row.target.as_deref()),
            ("workspace_id", row.workspace_id.as_deref()),
            ("outcome", Some(&row.outcome)),
            ("client_ip", row.client_ip.as_deref()),
            ("user_agent", row.user_agent.as_deref()),
            ("request_id", row.request_id.as_deref()),
            ("details", Some(&row.details)),
        ];
        for (name, value) in expect {
            assert_eq!(m.params.get(name).map(String::as_str), value, "{name} of record {}", row.seq);
        }
        assert_eq!(m.params["hash"], hex::encode(&row.hash));
        assert_eq!(m.json["seq"], row.seq);
        assert_eq!(m.json["action"], row.action.as_str());
        assert_eq!(m.json["hash"], hex::encode(&row.hash).as_str());
        assert_eq!(m.json["details"], serde_json::from_str::<serde_json::Value>(&row.details).unwrap());
    }
    let failed = msgs.iter().find(|m| m.msgid == "auth.login.failed").expect("the failed login arrived");
    assert_eq!(failed.params["user_agent"], "probe \"quoted\" [x] back\\slash");
    assert_eq!(failed.params["client_ip"], "127.0.0.1");
    // The cursor follows (a record is confirmed once the connection stayed open after it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cursor(&app, "central").await != Some(head.to_string()) {
        assert!(Instant::now() < deadline, "the cursor did not reach {head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gatehouse_siem_forwarded_records_total{target=\"central\"}"), "{metrics}");
    assert!(metrics.contains("gatehouse_siem_backlog_records{target=\"central\"} 0"), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_delivers_one_datagram_per_record() {
    let collector = Rsyslog::start(SyslogTransport::Udp, None);
    let address = collector.address();
    let app = spawn_app_with(|c| {
        roomy(c);
        c.audit.syslog = vec![target("udp", SyslogTransport::Udp, address)];
    })
    .await;
    make_events(&app.client, &app.base, 10).await;
    let head = head(&app).await;
    let msgs = delivered(&collector, head).await;
    let db = rows(&app).await;
    for m in &msgs {
        assert_eq!(m.params["action"], db[&m.seq()].action);
        assert_eq!(m.params["hash"], hex::encode(&db[&m.seq()].hash));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_delivers_with_the_configured_ca_and_nothing_with_a_wrong_one() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let (_, wrong_ca) = make_ca(certs.path(), "other");
    let collector = Rsyslog::start(SyslogTransport::Tls, Some(&pki));
    let address = collector.address();

    // A CA that did not sign the collector's certificate: nothing is sent, the cursor stays.
    let mut wrong = target("wrong", SyslogTransport::Tls, address.clone());
    wrong.ca_file = Some(wrong_ca);
    wrong.server_name = Some("localhost".into());
    let app = spawn_app_with(|c| c.audit.syslog = vec![wrong]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(collector.messages().is_empty(), "nothing may reach a collector the CA does not vouch for");
    assert_eq!(cursor(&app, "wrong").await, None);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_siem_send_errors_total{target=\"wrong\"} "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(errors.parse::<u64>().unwrap() >= 1, "{metrics}");
    let backlog = format!("gatehouse_siem_backlog_records{{target=\"wrong\"}} {}", head(&app).await);
    assert!(metrics.contains(&backlog), "{backlog} in {metrics}");
    app.stop().await;

    // The right CA, the name checked against the certificate.
    let mut right = target("right", SyslogTransport::Tls, address);
    right.ca_file = Some(pki.ca_pem.clone());
    right.server_name = Some("localhost".into());
    let app = spawn_app_with(|c| {
        roomy(c);
        c.audit.syslog = vec![right];
    })
    .await;
    make_events(&app.client, &app.base, 5).await;
    let head = head(&app).await;
    let msgs = delivered(&collector, head).await;
    assert!(msgs.iter().any(|m| m.msgid == "user.anonymous.created"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_and_a_restart_lose_nothing() {
    let mut collector = Rsyslog::start(SyslogTransport::Tcp, None);
    let address = collector.address();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    roomy(&mut config);
    config.audit.syslog = vec![target("central", SyslogTransport::Tcp, address)];
    let app = spawn_app_in(dir, config.clone()).await;
    make_events(&app.client, &app.base, 3).await;
    delivered(&collector, head(&app).await).await;

    // The collector goes away; requests go on, unhindered.
    collector.stop();
    let started = Instant::now();
    make_events(&app.client, &app.base, 20).await;
    assert!(started.elapsed() < Duration::from_secs(20), "requests waited on the collector");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = head(&app).await;
    let stored: i64 = cursor(&app, "central").await.map(|c| c.parse().unwrap()).unwrap_or(0);
    assert!(stored < during, "the cursor ({stored}) must not pass what the collector has not taken ({during})");

    // Gatehouse restarts while the collector is still away, and more happens.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, config).await;
    make_events(&app.client, &app.base, 5).await;

    // The collector returns on the same port: the backlog drains, nothing is missing.
    collector.run();
    let head = head(&app).await;
    let msgs = delivered(&collector, head).await;
    let seqs: BTreeSet<i64> = msgs.iter().map(Syslog::seq).collect();
    assert_eq!(seqs, (1..=head).collect::<BTreeSet<_>>());
    app.stop().await;
}

#[test]
fn a_crash_during_an_outage_resumes_from_the_durable_cursor() {
    let mut collector = Rsyslog::start(SyslogTransport::Tcp, None);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let targets = format!("[{{name=\"central\",transport=\"tcp\",address=\"{}\"}}]", collector.address());
    let serve = || {
        let mut cmd = serve_cmd(&data, &["--log-format", "json"]);
        cmd.env("GATEHOUSE_AUDIT__SYSLOG", &targets)
            .env("GATEHOUSE_AUTH__RATE_LIMIT__BURST", "10000")
            .env("GATEHOUSE_AUTH__RATE_LIMIT__PER_MINUTE", "10000");
        ServeProcess::start(cmd)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client();
    let db_head = || {
        let conn = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
        conn.query_row("SELECT max(seq) FROM audit_log", [], |r| r.get::<_, i64>(0)).unwrap()
    };

    let server = serve();
    rt.block_on(make_events(&c, &server.base, 3));
    collector.wait_for(db_head(), Duration::from_secs(60));
    collector.stop();
    rt.block_on(make_events(&c, &server.base, 10));
    // Long enough for the security log to write the last record, not for a graceful stop.
    std::thread::sleep(Duration::from_secs(1));
    // Killed: no graceful stop, no last cursor write.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let security_log = server.stderr.lock().unwrap().clone();
    let before_crash = db_head();

    let server = serve();
    rt.block_on(make_events(&c, &server.base, 2));
    collector.run();
    let head = db_head();
    assert!(head > before_crash);
    let msgs = collector.wait_for(head, Duration::from_secs(60));
    let seqs: BTreeSet<i64> = msgs.iter().map(Syslog::seq).collect();
    assert_eq!(seqs, (1..=head).collect::<BTreeSet<_>>(), "every record arrives, none missing");

    // The security log target carried each record of the first run as JSON.
    let logged: BTreeSet<i64> = security_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "gatehouse::security" && v["fields"]["message"] == "audit record")
        .map(|v| {
            let record: serde_json::Value = serde_json::from_str(v["fields"]["record"].as_str().unwrap()).unwrap();
            assert_eq!(record["seq"], v["fields"]["seq"]);
            record["seq"].as_i64().unwrap()
        })
        .collect();
    assert!(logged.contains(&1), "the security log starts with the records of this start: {logged:?}");
    assert!(logged.contains(&before_crash), "and follows new ones: {logged:?} (head {before_crash})");
    let (status, _, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_stops_the_start_before_any_admin_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut config = test_config(dir.path());
    let mut t = target("bad", SyslogTransport::Tls, "127.0.0.1:6514".into());
    t.ca_file = Some(ca);
    config.audit.syslog = vec![t];
    let opts = gatehouse::startup::BuildOptions {
        clock: std::sync::Arc::new(gatehouse::clock::ManualClock::new(crate::helpers::test_time())),
        credentials_dir: None,
        bootstrap_admin: true,
        exclusive: true,
    };
    let err = gatehouse::startup::Application::build(config.clone(), opts).await.unwrap_err().to_string();
    assert!(err.contains("audit.syslog 'bad'") && err.contains("holds no certificate"), "{err}");
    let conn = rusqlite::Connection::open(config.data_dir.join("gatehouse.db")).unwrap();
    let admins: i64 =
        conn.query_row("SELECT count(*) FROM audit_log WHERE action = 'user.admin.created'", [], |r| r.get(0)).unwrap();
    assert_eq!(admins, 0, "no admin whose one-time password nobody saw");
}
