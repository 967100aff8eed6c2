//! SIEM forwarding: every audit record, as RFC 5424 syslog, to the `[[audit.syslog]]` collectors
//! (UDP, RFC 5426; TCP with octet-counting framing, RFC 6587; TLS, RFC 5425), and each new record
//! as one JSON line on the `gatehouse::security` log target (journald).
//!
//! One [`Forwarder`] per collector reads the committed records after its durable cursor (meta key
//! `siem.cursor.<name>`) and moves the cursor only once a batch was written and the connection was
//! still open [`CONFIRM_AFTER`] later (plain syslog has no acknowledgement; a collector that goes
//! away closes the connection, or for UDP on a reachable host answers "port unreachable"): so
//! at-least-once, duplicates possible, no loss while the collector is away. It runs beside the request path, never in it: it only reads records and
//! writes its cursor, and a collector that is slow or gone costs a request nothing.
//!
//! Must not: change an audit record, make a request wait, carry a secret (records hold none).

use crate::config::{SyslogTarget, SyslogTransport};
use crate::db::{AuditRow, Db, DbError};
use crate::metrics::Metrics;
use futures_util::FutureExt;
use rustls::pki_types::ServerName;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::Instrument;

/// How often a forwarder and the security log look for new records.
const POLL: Duration = Duration::from_millis(250);
/// Records read and sent in one go.
const BATCH: i64 = 500;
/// A written record counts as delivered once the connection is still open this long after.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(200);
/// The cursor is written to the database at most this often.
const STORE_EVERY: Duration = Duration::from_secs(1);
/// Connecting (and the TLS handshake) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing one batch may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failure the next attempt waits this long, doubling up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest datagram: rsyslog's default `maxMessageSize`; the JSON copy in MSG is cut first.
pub const UDP_MAX_BYTES: usize = 8 * 1024;
/// Largest value of a structured data parameter other than `details`.
const VALUE_MAX_BYTES: usize = 1024;
/// Largest message over TCP or TLS.
pub const STREAM_MAX_BYTES: usize = 64 * 1024;
/// The byte-order mark RFC 5424 puts before a UTF-8 MSG.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The numeric syslog facility for a configured name.
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error("audit.syslog '{target}': {detail}")]
    Setup { target: String, detail: String },
    #[error("cannot resolve {address}: {detail}")]
    Resolve { address: String, detail: String },
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("TLS handshake with {address} failed: {source}")]
    Handshake { address: String, source: std::io::Error },
    #[error("sending to {address} failed: {source}")]
    Send { address: String, source: std::io::Error },
    #[error("{what} {address} timed out")]
    Timeout { what: &'static str, address: String },
    #[error("the collector at {address} closed the connection")]
    Closed { address: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The record as one line of JSON.
pub fn record_json(row: &AuditRow) -> String {
    // Serializing strings and a JSON value cannot fail.
    serde_json::to_string(&crate::domain::audit::query::RecordView::from(row.clone())).unwrap_or_default()
}

/// RFC 5424 severity: `alert.*` actions are alerts (1), failures and denials warnings (4), the
/// rest informational (6).
pub fn severity(row: &AuditRow) -> u8 {
    if row.action.starts_with("alert.") {
        1
    } else if row.outcome == "success" {
        6
    } else {
        4
    }
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 section 6.3.3).
pub fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Printable US-ASCII without spaces, at most `max` characters; `-` (NILVALUE) when empty.
fn header_field(value: &str, max: usize) -> String {
    let s: String = value.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The longest prefix of `s` that fits in `max` bytes without cutting a character.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The machine's host name (Linux), or NILVALUE.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| header_field(h.trim(), 255))
        .unwrap_or_else(|_| "-".into())
}

/// How one collector wants its messages.
#[derive(Debug, Clone)]
pub struct Format {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub sd_id: String,
}

impl Format {
    pub fn for_target(t: &SyslogTarget) -> Self {
        Self {
            // Validated at start; `authpriv` if it somehow is not.
            facility: facility_code(&t.facility).unwrap_or(10),
            hostname: t.hostname.as_deref().map(|h| header_field(h, 255)).unwrap_or_else(host_name),
            app_name: header_field(&t.app_name, 48),
            sd_id: t.sd_id.clone(),
        }
    }

    /// The structured data element; `details_max` caps the details parameter and
    /// [`VALUE_MAX_BYTES`] every other one (in bytes, before escaping). Cut values are named in a
    /// `truncated` parameter.
    fn structured_data(&self, row: &AuditRow, details_max: usize) -> String {
        let seq = row.seq.to_string();
        let hash = hex::encode(&row.hash);
        let params: [(&str, Option<&str>); 12] = [
            ("seq", Some(&seq)),
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
            ("hash", Some(&hash)),
        ];
        let mut sd = format!("[{}", self.sd_id);
        let mut cut_names: Vec<&str> = Vec::new();
        for (name, value) in params {
            let Some(v) = value else { continue };
            let kept = cut(v, if name == "details" { details_max } else { VALUE_MAX_BYTES });
            if kept.len() < v.len() {
                cut_names.push(name);
            }
            if name == "hash" && !cut_names.is_empty() {
                sd.push_str(&format!(" truncated=\"{}\"", cut_names.join(",")));
            }
            sd.push_str(&format!(" {name}=\"{}\"", escape_param(kept)));
        }
        sd.push(']');
        sd
    }

    /// One RFC 5424 message of at most `max` bytes (at least 1 KiB): header, structured data,
    /// then BOM and the record as JSON. When too long, the JSON is cut first, then the details
    /// parameter (marked `truncated="details"`).
    pub fn message(&self, row: &AuditRow, max: usize) -> Vec<u8> {
        let max = max.max(1024);
        let pri = u16::from(self.facility) * 8 + u16::from(severity(row));
        let header = format!(
            "<{pri}>1 {} {} {} - {} ",
            crate::domain::audit::query::format_ms(row.ts_ms),
            self.hostname,
            self.app_name,
            header_field(&row.action, 32)
        );
        let mut sd = self.structured_data(row, usize::MAX);
        if header.len() + sd.len() > max {
            // Escaping can at most double the details; leave room for the other parameters
            // and the `truncated` one.
            let rest = sd.len() - escape_param(&row.details).len() + 64;
            let room = max.saturating_sub(header.len() + rest) / 2;
            sd = self.structured_data(row, room);
        }
        let mut out = Vec::with_capacity(max.min(header.len() + sd.len() + 512));
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(sd.as_bytes());
        let json = record_json(row);
        let room = max.saturating_sub(out.len() + 1 + BOM.len());
        if room > 0 {
            out.push(b' ');
            out.extend_from_slice(BOM);
            out.extend_from_slice(cut(&json, room).as_bytes());
        }
        out
    }
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn frame(msg: &[u8], into: &mut Vec<u8>) {
    into.extend_from_slice(msg.len().to_string().as_bytes());
    into.push(b' ');
    into.extend_from_slice(msg);
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

fn tls_config(t: &SyslogTarget) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), SiemError> {
    let setup = |detail: String| SiemError::Setup { target: t.name.clone(), detail };
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| setup(format!("cannot read ca_file {}: {e}", path.display())))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| setup(format!("ca_file {} is not PEM: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| setup(format!("ca_file {} holds an unusable certificate: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(setup(format!("ca_file {} holds no certificate", path.display())));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(setup("no system CA certificates found; set ca_file".into()));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = t.server_name.clone().unwrap_or_else(|| host_of(&t.address).to_string());
    let name = ServerName::try_from(name).map_err(|e| setup(format!("server_name: {e}")))?;
    Ok((Arc::new(config), name))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open connection to a collector.
enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>),
}

impl Conn {
    /// Whether the collector is still there: a stream not closed by the peer (a syslog
    /// collector never sends), a datagram socket with no "port unreachable" pending.
    fn alive(&mut self) -> bool {
        let mut buf = [0u8; 512];
        match self {
            Conn::Udp(s) => match s.try_recv(&mut buf) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            },
            Conn::Stream(s) => loop {
                match s.read(&mut buf).now_or_never() {
                    None => return true,
                    Some(Ok(0)) | Some(Err(_)) => return false,
                    // Whatever a collector says (TLS session tickets are taken inside) is ignored.
                    Some(Ok(_)) => continue,
                }
            },
        }
    }
}

/// Records written but not yet confirmed: (last seq, count, when written).
struct Pending {
    batches: VecDeque<(i64, u64, Instant)>,
}

/// Forwards the audit log to one collector.
pub struct Forwarder {
    name: String,
    address: String,
    transport: SyslogTransport,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    format: Format,
    db: Db,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("name", &self.name).field("address", &self.address).finish()
    }
}

/// The meta key of a collector's cursor: the last sequence number it has.
pub fn cursor_key(name: &str) -> String {
    format!("siem.cursor.{name}")
}

/// Where a forwarder stands.
struct State {
    /// Delivered: the last seq the collector has.
    confirmed: i64,
    /// What the meta table holds (it lags `confirmed` by at most [`STORE_EVERY`]).
    stored: i64,
    stored_at: Instant,
    /// Written on the current connection.
    sent: i64,
    pending: Pending,
    conn: Option<Conn>,
    loaded: bool,
}

/// What a round did.
enum Round {
    /// Nothing more to send now.
    Idle,
    /// A full batch went out; more may be waiting.
    More,
}

impl Forwarder {
    /// Check the target (TLS roots, server name) now, so that a bad one stops the start.
    pub fn new(target: &SyslogTarget, db: Db, metrics: Arc<Metrics>) -> Result<Self, SiemError> {
        let tls = match target.transport {
            SyslogTransport::Tls => Some(tls_config(target)?),
            _ => None,
        };
        Ok(Self {
            name: target.name.clone(),
            address: target.address.clone(),
            transport: target.transport,
            tls,
            format: Format::for_target(target),
            db,
            metrics,
        })
    }

    /// Forward until `stop` turns true. Failures are logged and counted, then retried from the
    /// cursor after a back-off.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let span = tracing::info_span!("siem", target = %self.name);
        async move {
            let mut st = State {
                confirmed: 0,
                stored: 0,
                stored_at: Instant::now(),
                sent: 0,
                pending: Pending { batches: VecDeque::new() },
                conn: None,
                loaded: false,
            };
            let mut backoff = BACKOFF_MIN;
            let mut failing = false;
            loop {
                if *stop.borrow() {
                    break;
                }
                let outcome = tokio::select! {
                    r = self.round(&mut st) => r,
                    _ = stop.changed() => break,
                };
                let wait = match outcome {
                    Ok(round) => {
                        if failing && st.conn.is_some() {
                            tracing::info!(address = %self.address, "syslog collector reachable again");
                            failing = false;
                        }
                        backoff = BACKOFF_MIN;
                        match round {
                            Round::Idle => POLL,
                            Round::More => Duration::ZERO,
                        }
                    }
                    Err(e) => {
                        self.metrics.siem_error(&self.name);
                        if failing {
                            tracing::debug!(error = %e, retry_in_ms = backoff.as_millis() as u64, "syslog forwarding still failing");
                        } else {
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "syslog forwarding failed; will retry from the cursor");
                        }
                        failing = true;
                        st.conn = None;
                        st.sent = st.confirmed;
                        st.pending.batches.clear();
                        let wait = backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        wait
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                }
            }
            self.close(&mut st).await;
        }
        .instrument(span)
        .await
    }

    /// At shutdown: what the open connection took counts as delivered; close it and store the
    /// cursor.
    async fn close(&self, st: &mut State) {
        if let Some(mut conn) = st.conn.take() {
            if conn.alive() {
                self.confirm(st, true);
            }
            if let Conn::Stream(s) = &mut conn {
                let _ = tokio::time::timeout(Duration::from_secs(1), s.shutdown()).await;
            }
        }
        if st.loaded {
            self.store(st, true).await;
        }
    }

    /// Count the batches written at least [`CONFIRM_AFTER`] ago (all of them with `all`) as
    /// delivered.
    fn confirm(&self, st: &mut State, all: bool) {
        let mut count = 0;
        while let Some(&(seq, n, at)) = st.pending.batches.front() {
            if !all && at.elapsed() < CONFIRM_AFTER {
                break;
            }
            st.confirmed = seq;
            count += n;
            st.pending.batches.pop_front();
        }
        if count > 0 {
            self.metrics.siem_forwarded(&self.name, count);
        }
    }

    /// Write the confirmed position to the meta table, at most every [`STORE_EVERY`] unless
    /// `now` (each write empties the database's read caches). A crash loses at most that much
    /// of the cursor's progress: those records are sent again.
    async fn store(&self, st: &mut State, now: bool) {
        if st.stored == st.confirmed || (!now && st.stored_at.elapsed() < STORE_EVERY) {
            return;
        }
        let key = cursor_key(&self.name);
        let (seq, value) = (st.confirmed, st.confirmed.to_string());
        match self.db.write(move |tx| tx.meta_set(&key, &value)).await {
            Ok(()) => {
                st.stored = seq;
                st.stored_at = Instant::now();
            }
            // Tried again at the next round.
            Err(e) => tracing::error!(error = %e, "could not store the syslog cursor"),
        }
    }

    async fn round(&self, st: &mut State) -> Result<Round, SiemError> {
        if !st.loaded {
            let key = cursor_key(&self.name);
            let stored = self.db.read(move |tx| tx.meta_get(&key)).await?;
            st.confirmed = stored.and_then(|v| v.parse().ok()).unwrap_or(0);
            st.stored = st.confirmed;
            st.sent = st.confirmed;
            st.loaded = true;
        }
        if let Some(conn) = &mut st.conn {
            if !conn.alive() {
                return Err(SiemError::Closed { address: self.address.clone() });
            }
            self.confirm(st, false);
        }
        self.store(st, false).await;
        let after = st.sent;
        let (rows, head) = self
            .db
            .read(move |tx| -> Result<_, DbError> {
                Ok((tx.audit_page(after, BATCH)?, tx.audit_head()?.map(|h| h.seq).unwrap_or(0)))
            })
            .await?;
        self.metrics.siem_backlog(&self.name, (head - st.confirmed).max(0));
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(Round::Idle);
        };
        if st.conn.is_none() {
            st.conn = Some(self.connect().await?);
        }
        let conn = st.conn.as_mut().ok_or(SiemError::Closed { address: self.address.clone() })?;
        let send = async {
            match conn {
                Conn::Udp(s) => {
                    for row in &rows {
                        s.send(&self.format.message(row, UDP_MAX_BYTES)).await?;
                    }
                }
                Conn::Stream(s) => {
                    let mut buf = Vec::new();
                    for row in &rows {
                        frame(&self.format.message(row, STREAM_MAX_BYTES), &mut buf);
                    }
                    s.write_all(&buf).await?;
                    s.flush().await?;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(SiemError::Send { address: self.address.clone(), source }),
            Err(_) => return Err(SiemError::Timeout { what: "sending to", address: self.address.clone() }),
        }
        st.sent = last;
        st.pending.batches.push_back((last, rows.len() as u64, Instant::now()));
        Ok(if rows.len() as i64 == BATCH { Round::More } else { Round::Idle })
    }

    async fn connect(&self) -> Result<Conn, SiemError> {
        let address = self.address.clone();
        let connect = async {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&address)
                .await
                .map_err(|e| SiemError::Resolve { address: address.clone(), detail: e.to_string() })?
                .collect();
            let first = *addrs
                .first()
                .ok_or_else(|| SiemError::Resolve { address: address.clone(), detail: "no address".into() })?;
            let conn_err = |source| SiemError::Connect { address: address.clone(), source };
            match self.transport {
                SyslogTransport::Udp => {
                    let local = if first.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let sock = UdpSocket::bind(local).await.map_err(conn_err)?;
                    sock.connect(first).await.map_err(conn_err)?;
                    Ok(Conn::Udp(sock))
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => {
                    let tcp = TcpStream::connect(&addrs[..]).await.map_err(conn_err)?;
                    let _ = tcp.set_nodelay(true);
                    match &self.tls {
                        None => Ok(Conn::Stream(Box::new(tcp))),
                        Some((config, name)) => {
                            let tls = tokio_rustls::TlsConnector::from(config.clone())
                                .connect(name.clone(), tcp)
                                .await
                                .map_err(|source| SiemError::Handshake { address: address.clone(), source })?;
                            Ok(Conn::Stream(Box::new(tls)))
                        }
                    }
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| SiemError::Timeout { what: "connecting to", address: self.address.clone() })?
    }
}

/// One forwarder per configured collector; a target that cannot be set up (unreadable CA) stops
/// the start.
pub fn forwarders(targets: &[SyslogTarget], db: &Db, metrics: &Arc<Metrics>) -> Result<Vec<Forwarder>, SiemError> {
    targets.iter().map(|t| Forwarder::new(t, db.clone(), metrics.clone())).collect()
}

/// Write every record after `after` to the `gatehouse::security` log target as one JSON object
/// (journald keeps it), until `stop` turns true; then once more, so that the last records before
/// a shutdown are there too. Only this process's memory holds the position.
pub async fn log_security_events(db: Db, mut after: i64, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        let from = after;
        match db.read(move |tx| tx.audit_page(from, BATCH)).await {
            Ok(rows) => {
                for row in &rows {
                    tracing::info!(
                        target: "gatehouse::security",
                        seq = row.seq,
                        action = %row.action,
                        outcome = %row.outcome,
                        record = %record_json(row),
                        "audit record"
                    );
                    after = row.seq;
                }
                if rows.len() as i64 == BATCH {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "reading audit records for the security log failed"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            r = stop.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            seq: 42,
            ts_ms: 1_796_040_000_123,
            actor_type: "user".into(),
            actor_id: Some("u-1".into()),
            action: "auth.login.failed".into(),
            target: Some("a\"b\\c]d".into()),
            workspace_id: None,
            outcome: "failure".into(),
            client_ip: Some("127.0.0.1".into()),
            user_agent: None,
            request_id: Some("req-1".into()),
            details: r#"{"reason":"bad \"pw\"]"}"#.into(),
            hash: vec![0xab, 0xcd],
        }
    }

    fn format() -> Format {
        Format { facility: 10, hostname: "gh1".into(), app_name: "gatehouse".into(), sd_id: "gatehouse@32473".into() }
    }

    #[test]
    fn escapes_param_values() {
        assert_eq!(escape_param(r#"a"b\c]d[e"#), r#"a\"b\\c\]d[e"#);
        assert_eq!(escape_param("plain é"), "plain é");
    }

    #[test]
    fn formats_an_rfc5424_message() {
        let msg = format().message(&row(), STREAM_MAX_BYTES);
        let text = String::from_utf8(msg).unwrap();
        // authpriv (10) * 8 + warning (4) = 84.
        let expected_head = "<84>1 2026-11-30T12:00:00.123Z gh1 gatehouse - auth.login.failed [gatehouse@32473 seq=\"42\" action=\"auth.login.failed\" actor_type=\"user\" actor_id=\"u-1\" target=\"a\\\"b\\\\c\\]d\" outcome=\"failure\" client_ip=\"127.0.0.1\" request_id=\"req-1\" details=\"{\\\"reason\\\":\\\"bad \\\\\\\"pw\\\\\\\"\\]\\\"}\" hash=\"abcd\"] \u{feff}";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(!text.contains("workspace_id="), "absent values are left out");
        let json: serde_json::Value = serde_json::from_str(&text[expected_head.len()..]).unwrap();
        assert_eq!(json["seq"], 42);
        assert_eq!(json["details"]["reason"], "bad \"pw\"]");
        assert_eq!(json["time"], "2026-11-30T12:00:00.123Z");
        assert!(json.get("workspace_id").is_none());
    }

    #[test]
    fn severity_follows_outcome_and_alerts() {
        let mut r = row();
        assert_eq!(severity(&r), 4);
        r.outcome = "success".into();
        assert_eq!(severity(&r), 6);
        r.outcome = "denied".into();
        assert_eq!(severity(&r), 4);
        r.action = "alert.raised".into();
        assert_eq!(severity(&r), 1);
    }

    #[test]
    fn long_records_are_cut_to_fit_keeping_the_structured_data() {
        let mut r = row();
        r.details = serde_json::json!({ "note": "x".repeat(3000) }).to_string();
        let msg = format().message(&r, UDP_MAX_BYTES);
        assert!(msg.len() <= UDP_MAX_BYTES);
        let text = String::from_utf8(msg).unwrap();
        assert!(text.contains(" hash=\"abcd\"]"), "the structured data is whole: {text}");
        assert!(!text.contains("truncated="));

        r.details = serde_json::json!({ "note": "\"]".repeat(9000) }).to_string();
        let msg = format().message(&r, UDP_MAX_BYTES);
        assert!(msg.len() <= UDP_MAX_BYTES, "{}", msg.len());
        let text = String::from_utf8(msg).unwrap();
        assert!(text.contains(" truncated=\"details\" hash=\"abcd\"]"), "{text}");
    }

    #[test]
    fn long_action_is_cut_in_msgid() {
        let mut r = row();
        r.action = "a".repeat(40);
        let text = String::from_utf8(format().message(&r, STREAM_MAX_BYTES)).unwrap();
        assert!(text.contains(&format!(" - {} [", "a".repeat(32))), "{text}");
    }

    #[test]
    fn frames_by_octet_count() {
        let mut buf = Vec::new();
        frame(b"<14>1 x", &mut buf);
        frame("é".as_bytes(), &mut buf);
        assert_eq!(buf, b"7 <14>1 x2 \xC3\xA9");
    }

    #[test]
    fn host_of_address() {
        assert_eq!(host_of("logs.example.com:6514"), "logs.example.com");
        assert_eq!(host_of("[::1]:514"), "::1");
    }
}
