//! Security monitoring: threshold rules over the audit stream that raise alerts.
//!
//! A background task ([`run_monitor`]) tails `audit_log` from a durable cursor (meta
//! `monitor.cursor`; a first start begins at the current head, not the whole history) and feeds
//! each record to the [`Engine`], which counts per (rule, key) in a sliding window of
//! `monitoring.window_seconds` of audit time. Reaching a rule's threshold raises one alert, and
//! the same (rule, key) stays quiet for a window: a flood gives one alert, not thousands.
//! Raising is one write transaction: the `security_alerts` row, the `alert.raised` audit record
//! and the cursor. A second task ([`run_delivery`]) POSTs undelivered alerts to the configured
//! webhook, signed with HMAC-SHA256, retried with exponential back-off; the state is in the
//! table, so it survives restarts. Neither task runs on the request path: a slow or unreachable
//! webhook slows nothing but the delivery task.
//!
//! Alert keys and details are identifiers (account ids, addresses, credential ids), never
//! secrets; the webhook key is never logged, shown or sent.

use super::audit::{self, Actor, Event, Origin};
use super::auth::Principal;
use super::unix_ms;
use crate::config::MonitoringConfig;
use crate::crypto::{webhook, SecretString};
use crate::db::{AlertFilter, AlertRow, AuditRow};
use crate::error::AppError;
use crate::outbound::HttpClient;
use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The `meta` key of the last audit sequence number the monitor has processed.
pub const CURSOR_KEY: &str = "monitor.cursor";
/// How often the monitor looks for new audit records.
const POLL: Duration = Duration::from_millis(300);
/// Audit records read per round.
const PAGE: i64 = 500;
/// The cursor is written at least this often while records flow (and with every alert).
const CURSOR_SAVE: Duration = Duration::from_secs(2);
/// (rule, key) pairs counted at once before the stale ones are dropped.
const KEY_CAP: usize = 100_000;
/// Webhook attempts before giving up on an alert.
pub const MAX_ATTEMPTS: i64 = 10;
/// The first retry waits this long; each next one twice as long.
pub const RETRY_BASE_MS: i64 = 10_000;
/// Webhook connection and whole-call time limits.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The header naming the alert a webhook call is about.
pub const ALERT_ID_HEADER: &str = "X-Gatehouse-Alert-Id";

/// The rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `auth.login.failed` per target account.
    FailedLoginsAccount,
    /// `auth.login.failed` per client address.
    FailedLoginsIp,
    /// `auth.account.locked`.
    AccountLocked,
    /// `auth.refresh.reused`, per user.
    RefreshTokenReused,
    /// `auth.rate_limited` and `auth.login.throttled` per client address.
    RateLimitedIp,
    /// `api_key.used_from_new_ip` and `token.used_from_new_ip` (not the very first use).
    CredentialNewIp,
    /// `user.admin.granted`; `user.admin.created` and `user.admin.password_reset` by anyone
    /// but Gatehouse itself (the first start's `admin@localhost`).
    AdminGranted,
    /// `secret.revealed` per actor.
    SecretRevealsActor,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::FailedLoginsAccount,
        Rule::FailedLoginsIp,
        Rule::AccountLocked,
        Rule::RefreshTokenReused,
        Rule::RateLimitedIp,
        Rule::CredentialNewIp,
        Rule::AdminGranted,
        Rule::SecretRevealsActor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::FailedLoginsAccount => "failed_logins_account",
            Rule::FailedLoginsIp => "failed_logins_ip",
            Rule::AccountLocked => "account_locked",
            Rule::RefreshTokenReused => "refresh_token_reused",
            Rule::RateLimitedIp => "rate_limited_ip",
            Rule::CredentialNewIp => "credential_new_ip",
            Rule::AdminGranted => "admin_granted",
            Rule::SecretRevealsActor => "secret_reveals_actor",
        }
    }

    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn severity(self) -> &'static str {
        match self {
            Rule::RateLimitedIp => "low",
            Rule::FailedLoginsAccount | Rule::FailedLoginsIp | Rule::AccountLocked | Rule::CredentialNewIp => "medium",
            Rule::RefreshTokenReused | Rule::AdminGranted | Rule::SecretRevealsActor => "high",
        }
    }
}

/// Thresholds and window, from `[monitoring]`.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub window_ms: i64,
    pub failed_logins_per_account: usize,
    pub failed_logins_per_ip: usize,
    pub rate_limited_per_ip: usize,
    pub secret_reveals_per_actor: usize,
}

impl Thresholds {
    pub fn from_config(c: &MonitoringConfig) -> Self {
        let n = |v: u32| usize::try_from(v.max(1)).unwrap_or(usize::MAX);
        Self {
            window_ms: i64::try_from(c.window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
            failed_logins_per_account: n(c.failed_logins_per_account),
            failed_logins_per_ip: n(c.failed_logins_per_ip),
            rate_limited_per_ip: n(c.rate_limited_per_ip),
            secret_reveals_per_actor: n(c.secret_reveals_per_actor),
        }
    }

    fn of(&self, rule: Rule) -> usize {
        match rule {
            Rule::FailedLoginsAccount => self.failed_logins_per_account,
            Rule::FailedLoginsIp => self.failed_logins_per_ip,
            Rule::RateLimitedIp => self.rate_limited_per_ip,
            Rule::SecretRevealsActor => self.secret_reveals_per_actor,
            Rule::AccountLocked | Rule::RefreshTokenReused | Rule::CredentialNewIp | Rule::AdminGranted => 1,
        }
    }
}

/// An alert the engine decided to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub rule: Rule,
    pub key: String,
    pub count: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Context from the record that reached the threshold.
    pub details: Value,
}

/// What one audit record counts for: (rule, key).
fn hits_of(row: &AuditRow) -> Vec<(Rule, String)> {
    let details = || serde_json::from_str::<Value>(&row.details).unwrap_or(Value::Null);
    let ip = row.client_ip.clone();
    let target = row.target.clone();
    let mut out = Vec::new();
    match row.action.as_str() {
        "auth.login.failed" => {
            // Failures for an email with no account have no target; the per-address rule sees them.
            if let Some(t) = target {
                out.push((Rule::FailedLoginsAccount, t));
            }
            if let Some(ip) = ip {
                out.push((Rule::FailedLoginsIp, ip));
            }
        }
        "auth.account.locked" => out.extend(target.map(|t| (Rule::AccountLocked, t))),
        "auth.refresh.reused" => {
            // Per user (the actor); the target is the session, which the reuse has revoked.
            out.extend(row.actor_id.clone().or(target).map(|u| (Rule::RefreshTokenReused, u)));
        }
        "auth.rate_limited" | "auth.login.throttled" => out.extend(ip.map(|ip| (Rule::RateLimitedIp, ip))),
        "api_key.used_from_new_ip" | "token.used_from_new_ip" => {
            // A credential's very first address is no news; a second one is.
            let first = details().get("first_address").and_then(Value::as_bool).unwrap_or(false);
            let kind = if row.action.starts_with("api_key") { "api_key" } else { "token" };
            if !first {
                out.extend(target.map(|t| (Rule::CredentialNewIp, format!("{kind}:{t}"))));
            }
        }
        "user.admin.granted" => out.extend(target.map(|t| (Rule::AdminGranted, t))),
        "user.admin.created" | "user.admin.password_reset" if row.actor_type != "system" => {
            out.extend(target.map(|t| (Rule::AdminGranted, t)));
        }
        "secret.revealed" => {
            let actor = match &row.actor_id {
                Some(id) => format!("{}:{id}", row.actor_type),
                None => row.actor_type.clone(),
            };
            out.push((Rule::SecretRevealsActor, actor));
        }
        _ => {}
    }
    out
}

/// The context an alert keeps of the record that raised it: identifiers only.
fn context(row: &AuditRow) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("action".into(), json!(row.action));
    let actor = match &row.actor_id {
        Some(id) => format!("{}:{id}", row.actor_type),
        None => row.actor_type.clone(),
    };
    m.insert("actor".into(), json!(actor));
    for (name, value) in [("target", &row.target), ("workspace_id", &row.workspace_id), ("client_ip", &row.client_ip)] {
        if let Some(v) = value {
            m.insert(name.into(), json!(v));
        }
    }
    if row.action.ends_with("used_from_new_ip") {
        if let Some(ip) = serde_json::from_str::<Value>(&row.details).ok().and_then(|d| d.get("ip").cloned()) {
            m.insert("ip".into(), ip);
        }
    }
    Value::Object(m)
}

/// The in-memory counters: per (rule, key), the last `threshold` hits (audit time, seq) and
/// the audit time until which the pair stays quiet after an alert.
#[derive(Debug)]
pub struct Engine {
    limits: Thresholds,
    hits: HashMap<(Rule, String), VecDeque<(i64, i64)>>,
    quiet_until: HashMap<(Rule, String), i64>,
}

impl Engine {
    pub fn new(limits: Thresholds) -> Self {
        Self { limits, hits: HashMap::new(), quiet_until: HashMap::new() }
    }

    /// Count `row`; the alerts it raises.
    pub fn observe(&mut self, row: &AuditRow) -> Vec<Raised> {
        let mut raised = Vec::new();
        let window = self.limits.window_ms;
        for (rule, key) in hits_of(row) {
            let threshold = self.limits.of(rule);
            let pair = (rule, key);
            let hits = self.hits.entry(pair.clone()).or_default();
            // A record seen again (after a failed write rewound the cursor) counts once.
            if hits.back().is_some_and(|(_, seq)| *seq >= row.seq) {
                continue;
            }
            hits.push_back((row.ts_ms, row.seq));
            while hits.len() > threshold || hits.front().is_some_and(|(t, _)| *t <= row.ts_ms - window) {
                hits.pop_front();
            }
            let quiet = self.quiet_until.get(&pair).is_some_and(|until| *until > row.ts_ms);
            if hits.len() >= threshold && !quiet {
                let first_seq = hits.front().map_or(row.seq, |(_, s)| *s);
                let count = i64::try_from(hits.len()).unwrap_or(i64::MAX);
                self.quiet_until.insert(pair.clone(), row.ts_ms + window);
                raised.push(Raised { rule, key: pair.1, count, first_seq, last_seq: row.seq, details: context(row) });
            }
        }
        if self.hits.len() > KEY_CAP || self.quiet_until.len() > KEY_CAP {
            self.prune(row.ts_ms);
        }
        raised
    }

    /// Forget that `r` was raised (its write failed): the record will be seen again.
    pub fn unraise(&mut self, r: &Raised) {
        self.quiet_until.remove(&(r.rule, r.key.clone()));
        if let Some(hits) = self.hits.get_mut(&(r.rule, r.key.clone())) {
            hits.retain(|(_, seq)| *seq < r.last_seq);
        }
    }

    /// Drop what the window has left behind; if that is not enough, start afresh.
    fn prune(&mut self, now_ms: i64) {
        let horizon = now_ms - self.limits.window_ms;
        self.hits.retain(|_, h| h.back().is_some_and(|(t, _)| *t > horizon));
        self.quiet_until.retain(|_, until| *until > now_ms);
        if self.hits.len() > KEY_CAP {
            self.hits.clear();
        }
        if self.quiet_until.len() > KEY_CAP {
            self.quiet_until.clear();
        }
    }
}

/// Where alerts are POSTed.
pub struct Webhook {
    url: String,
    key: SecretString,
    client: HttpClient,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a token of the receiver's; the key is ours.
        f.write_str("Webhook(_)")
    }
}

/// The monitor's settings and the wake-up of the delivery task. In the application state.
#[derive(Debug)]
pub struct MonitorService {
    pub enabled: bool,
    pub thresholds: Thresholds,
    webhook: Option<Webhook>,
    wake: tokio::sync::Notify,
}

impl MonitorService {
    /// From `[monitoring]` and the webhook key read at start-up. The error is one line for
    /// the operator.
    pub fn new(c: &MonitoringConfig, key: Option<SecretString>) -> Result<Self, String> {
        let webhook = match (&c.webhook_url, key) {
            (None, _) => None,
            (Some(_), None) => {
                return Err("monitoring.webhook_url is set but there is no webhook key: set \
                            monitoring.webhook_secret_file (or the `webhook_secret` credential)"
                    .into())
            }
            (Some(url), Some(key)) => {
                let client = HttpClient::new(c.webhook_ca_file.as_deref(), CONNECT_TIMEOUT, CALL_TIMEOUT)
                    .map_err(|e| format!("monitoring.webhook_ca_file: {e}"))?;
                Some(Webhook { url: url.clone(), key, client })
            }
        };
        Ok(Self { enabled: c.enabled, thresholds: Thresholds::from_config(c), webhook, wake: Default::default() })
    }

    pub fn webhook_configured(&self) -> bool {
        self.webhook.is_some()
    }
}

/// Write the alert, its `alert.raised` record and the cursor in one transaction.
async fn raise(state: &AppState, r: &Raised, cursor: i64) -> Result<AlertRow, AppError> {
    let now = state.clock.now();
    let now_ms = unix_ms(now);
    let pending = state.monitoring.webhook_configured();
    let row = AlertRow {
        id: uuid::Uuid::now_v7().to_string(),
        rule: r.rule.as_str().into(),
        severity: r.rule.severity().into(),
        key: r.key.clone(),
        count: r.count,
        window_seconds: state.monitoring.thresholds.window_ms / 1000,
        first_seq: r.first_seq,
        last_seq: r.last_seq,
        details: r.details.to_string(),
        created_at_ms: now_ms,
        status: "open".into(),
        acknowledged_by: None,
        acknowledged_at_ms: None,
        acknowledged_note: None,
        delivery_status: if pending { "pending" } else { "none" }.into(),
        delivery_attempts: 0,
        delivery_next_at_ms: pending.then_some(now_ms),
        delivered_at_ms: None,
        delivery_last_error: None,
    };
    let event = Event::new("alert.raised", Actor::System).target(row.id.clone()).details(json!({
        "alert_id": row.id,
        "rule": row.rule,
        "severity": row.severity,
        "key": row.key,
        "count": row.count,
        "window_seconds": row.window_seconds,
    }));
    let key = state.auditor.clone();
    let stored = row.clone();
    state
        .db
        .write(move |tx| {
            tx.alert_insert(&stored)?;
            audit::record(tx, &key, now, &event)?;
            tx.meta_set(CURSOR_KEY, &cursor.to_string())?;
            Ok::<_, AppError>(())
        })
        .await?;
    state.metrics.alert_raised(r.rule.as_str());
    tracing::warn!(
        target: "gatehouse::security",
        alert_id = %row.id, rule = row.rule, key = %row.key, count = row.count,
        "security alert raised"
    );
    if pending {
        state.monitoring.wake.notify_one();
    }
    Ok(row)
}

/// The cursor to start from: the stored one, or (first start) the current head, stored.
pub async fn start_cursor(state: &AppState) -> Result<i64, AppError> {
    state
        .db
        .write(|tx| {
            if let Some(v) = tx.meta_get(CURSOR_KEY)? {
                return v.parse::<i64>().map_err(|_| AppError::internal("meta monitor.cursor is not a number"));
            }
            let head = tx.audit_head()?.map_or(0, |h| h.seq);
            tx.meta_set(CURSOR_KEY, &head.to_string())?;
            Ok(head)
        })
        .await
}

async fn save_cursor(state: &AppState, cursor: i64) -> Result<(), AppError> {
    state.db.write(move |tx| tx.meta_set(CURSOR_KEY, &cursor.to_string()).map_err(AppError::from)).await
}

/// One round: read what is new after `cursor`, count it, raise what crosses a threshold.
/// Returns the new cursor and whether a full page was read (more may be waiting).
async fn monitor_round(state: &AppState, engine: &mut Engine, cursor: i64) -> (i64, bool) {
    let page = match state.db.read(move |tx| tx.audit_page(cursor, PAGE).map_err(AppError::from)).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "the monitor could not read the audit log");
            return (cursor, false);
        }
    };
    let full = page.len() as i64 == PAGE;
    let mut done = cursor;
    for row in &page {
        let raised = if row.action.starts_with("alert.") { Vec::new() } else { engine.observe(row) };
        for (i, r) in raised.iter().enumerate() {
            if let Err(e) = raise(state, r, row.seq).await {
                tracing::error!(error = %e, rule = r.rule.as_str(), "could not record a security alert; will retry");
                // This record is read again next round: its unwritten alerts must fire again
                // then, and the ones written already must not.
                for later in &raised[i..] {
                    engine.unraise(later);
                }
                return (done, false);
            }
        }
        done = row.seq;
    }
    (done, full)
}

/// The monitor task: tails the audit log until `stop` changes.
pub async fn run_monitor(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !state.monitoring.enabled {
        return;
    }
    let mut cursor = loop {
        match start_cursor(&state).await {
            Ok(c) => break c,
            Err(e) => tracing::error!(error = %e, "the monitor could not read its cursor; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    };
    let mut engine = Engine::new(state.monitoring.thresholds.clone());
    let mut saved = (cursor, Instant::now());
    let mut seen_generation = None;
    loop {
        let generation = state.db.generation();
        let more = if seen_generation == Some(generation) {
            false
        } else {
            seen_generation = Some(generation);
            let (next, more) = monitor_round(&state, &mut engine, cursor).await;
            if next != cursor {
                cursor = next;
                // A raised alert stored the cursor; otherwise store it now and then.
                if saved.0 != cursor && saved.1.elapsed() >= CURSOR_SAVE {
                    match save_cursor(&state, cursor).await {
                        Ok(()) => saved = (cursor, Instant::now()),
                        Err(e) => tracing::error!(error = %e, "the monitor could not store its cursor"),
                    }
                }
            }
            if more {
                seen_generation = None;
            }
            more
        };
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => break,
        }
    }
    if saved.0 != cursor {
        if let Err(e) = save_cursor(&state, cursor).await {
            tracing::error!(error = %e, "the monitor could not store its cursor");
        }
    }
}

/// What a webhook receives: the alert, without its acknowledgement note or delivery state.
pub fn payload(a: &AlertRow) -> Value {
    let details: Value = serde_json::from_str(&a.details).unwrap_or_else(|_| json!({}));
    json!({
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "key": a.key,
        "count": a.count,
        "window_seconds": a.window_seconds,
        "first_seq": a.first_seq,
        "last_seq": a.last_seq,
        "details": details,
        "created_at": rfc3339(a.created_at_ms),
        "status": a.status,
    })
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// When the next attempt is due after `attempts` failed ones (`None`: give up).
pub fn next_attempt(now_ms: i64, attempts: i64) -> Option<i64> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let shift = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(0);
    Some(now_ms + RETRY_BASE_MS * (1i64 << shift))
}

/// POST one alert and record the outcome.
async fn deliver_one(state: &AppState, hook: &Webhook, a: &AlertRow) -> Result<(), AppError> {
    let body = payload(a).to_string().into_bytes();
    let now = state.clock.now();
    let signature = webhook::sign(&hook.key, now.unix_timestamp(), &body);
    let headers = [(webhook::SIGNATURE_HEADER, signature), (ALERT_ID_HEADER, a.id.clone())];
    let outcome = hook.client.post_json(&hook.url, body, &headers).await;
    let attempts = a.delivery_attempts + 1;
    let done_ms = unix_ms(state.clock.now());
    let (status, next, delivered, error) = match outcome {
        Ok(code) if (200..300).contains(&code) => ("delivered", None, Some(done_ms), None),
        other => {
            let reason = match other {
                Ok(code) => format!("HTTP {code}"),
                Err(e) => e,
            };
            match next_attempt(done_ms, attempts) {
                Some(at) => ("pending", Some(at), None, Some(reason)),
                None => ("failed", None, None, Some(reason)),
            }
        }
    };
    let metric = match status {
        "delivered" => "delivered",
        "pending" => "failed",
        _ => "gave_up",
    };
    state.metrics.alert_delivery(metric);
    if let Some(reason) = &error {
        tracing::warn!(alert_id = %a.id, attempts, reason = %reason, gave_up = status == "failed", "alert webhook delivery failed");
    }
    let id = a.id.clone();
    state
        .db
        .write(move |tx| {
            tx.alert_delivery(&id, status, attempts, next, delivered, error.as_deref()).map_err(AppError::from)
        })
        .await
}

/// The delivery task: sends due alerts to the webhook until `stop` changes.
pub async fn run_delivery(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(hook) = state.monitoring.webhook.as_ref() else { return };
    loop {
        tokio::select! {
            _ = state.monitoring.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
        let now_ms = unix_ms(state.clock.now());
        let due = match state.db.read(move |tx| tx.alerts_due(now_ms, 20).map_err(AppError::from)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "could not read the alerts to deliver");
                continue;
            }
        };
        for a in &due {
            tokio::select! {
                r = deliver_one(&state, hook, a) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, alert_id = %a.id, "could not record an alert delivery");
                    }
                }
                _ = stop.changed() => return,
            }
        }
        if due.len() == 20 {
            state.monitoring.wake.notify_one();
        }
    }
}

/// Filters of `GET /v1/security/alerts`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<String>,
    pub rule: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// One page of alerts, newest first, and the cursor of the next.
pub async fn list(state: &AppState, q: ListQuery) -> Result<(Vec<AlertRow>, Option<String>), AppError> {
    if let Some(s) = &q.status {
        if s != "open" && s != "acknowledged" {
            return Err(AppError::Invalid("status: must be open or acknowledged".into()));
        }
    }
    if let Some(r) = &q.rule {
        if Rule::parse(r).is_none() {
            let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
            return Err(AppError::Invalid(format!("rule: unknown rule; one of {}", names.join(", "))));
        }
    }
    if let (Some(s), Some(u)) = (q.since_ms, q.until_ms) {
        if u <= s {
            return Err(AppError::Invalid("until: must be later than since".into()));
        }
    }
    let limit = match q.limit {
        None => 50,
        Some(n @ 1..=200) => i64::from(n),
        Some(_) => return Err(AppError::Invalid("limit: must be between 1 and 200".into())),
    };
    let before = super::parse_cursor(q.cursor.as_deref())?;
    let filter = AlertFilter { status: q.status, rule: q.rule, since_ms: q.since_ms, until_ms: q.until_ms, before };
    let mut rows = state.db.read(move |tx| tx.alerts_page(&filter, limit + 1).map_err(AppError::from)).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows.last().map(|a| format!("{}_{}", a.created_at_ms, a.id))
    } else {
        None
    };
    Ok((rows, next))
}

pub async fn get(state: &AppState, id: &str) -> Result<AlertRow, AppError> {
    let id = id.to_string();
    state.db.read(move |tx| tx.alert(&id).map_err(AppError::from)).await?.ok_or(AppError::NotFound)
}

/// Acknowledge an open alert with a note (1 to 1000 characters); audited as
/// `alert.acknowledged`. An alert acknowledged already is a conflict.
pub async fn acknowledge(
    state: &AppState,
    who: &Principal,
    id: &str,
    note: &str,
    origin: &Origin,
) -> Result<AlertRow, AppError> {
    let note = note.trim().to_string();
    let chars = note.chars().count();
    if chars == 0 || chars > 1000 {
        return Err(AppError::Invalid("note: must have 1 to 1000 characters".into()));
    }
    if note.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::Invalid("note: must not contain control characters".into()));
    }
    let now = state.clock.now();
    let key = state.auditor.clone();
    let actor = who.actor();
    let by = who.user_id.clone();
    let (id, o) = (id.to_string(), origin.clone());
    state
        .db
        .write(move |tx| {
            let alert = tx.alert(&id)?.ok_or(AppError::NotFound)?;
            if !tx.alert_acknowledge(&id, &by, unix_ms(now), &note)? {
                return Err(AppError::Conflict("The alert is already acknowledged.".into()));
            }
            audit::record(
                tx,
                &key,
                now,
                &Event::new("alert.acknowledged", actor)
                    .target(id.clone())
                    .origin(&o)
                    .details(json!({ "rule": alert.rule, "key": alert.key })),
            )?;
            tx.alert(&id)?.ok_or(AppError::NotFound)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Thresholds {
        Thresholds {
            window_ms: 60_000,
            failed_logins_per_account: 3,
            failed_logins_per_ip: 5,
            rate_limited_per_ip: 2,
            secret_reveals_per_actor: 2,
        }
    }

    fn row(seq: i64, ts_ms: i64, action: &str, target: Option<&str>, ip: Option<&str>) -> AuditRow {
        AuditRow {
            seq,
            ts_ms,
            actor_type: "anonymous".into(),
            actor_id: None,
            action: action.into(),
            target: target.map(Into::into),
            workspace_id: None,
            outcome: "failure".into(),
            client_ip: ip.map(Into::into),
            user_agent: None,
            request_id: None,
            details: "{}".into(),
            hash: Vec::new(),
        }
    }

    #[test]
    fn a_threshold_raises_once_per_window_and_again_after_it() {
        let mut e = Engine::new(limits());
        let fail = |seq, ts| row(seq, ts, "auth.login.failed", Some("u1"), Some("192.0.2.1"));
        assert!(e.observe(&fail(1, 0)).is_empty());
        assert!(e.observe(&fail(2, 1000)).is_empty());
        let r = e.observe(&fail(3, 2000));
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].rule, r[0].key.as_str(), r[0].count, r[0].first_seq, r[0].last_seq),
            (Rule::FailedLoginsAccount, "u1", 3, 1, 3)
        );
        // A flood inside the window: nothing more for the account (the address reaches its own).
        let more: Vec<Raised> = (4..100).flat_map(|s| e.observe(&fail(s, 3000 + s))).collect();
        assert_eq!(more.iter().filter(|r| r.rule == Rule::FailedLoginsAccount).count(), 0);
        assert_eq!(more.iter().filter(|r| r.rule == Rule::FailedLoginsIp).count(), 1);
        // After the window, a new burst raises again.
        assert!(e.observe(&fail(200, 70_000)).len() <= 1);
        let again: Vec<Raised> = (201..203).flat_map(|s| e.observe(&fail(s, 70_000 + s))).collect();
        assert!(again.iter().any(|r| r.rule == Rule::FailedLoginsAccount), "{again:?}");
    }

    #[test]
    fn old_hits_leave_the_window() {
        let mut e = Engine::new(limits());
        let fail = |seq, ts| row(seq, ts, "auth.login.failed", Some("u1"), None);
        assert!(e.observe(&fail(1, 0)).is_empty());
        assert!(e.observe(&fail(2, 30_000)).is_empty());
        assert!(e.observe(&fail(3, 61_000)).is_empty(), "the first one is out of the window");
        assert_eq!(e.observe(&fail(4, 62_000)).len(), 1);
    }

    #[test]
    fn a_record_seen_twice_counts_once_and_unraise_lets_it_fire_again() {
        let mut e = Engine::new(limits());
        let rl = |seq| row(seq, 0, "auth.rate_limited", None, Some("192.0.2.9"));
        assert!(e.observe(&rl(1)).is_empty());
        assert!(e.observe(&rl(1)).is_empty(), "the same record again");
        let r = e.observe(&rl(2));
        assert_eq!(r.len(), 1);
        e.unraise(&r[0]);
        assert_eq!(e.observe(&rl(2)), r, "after a failed write the record raises again");
    }

    #[test]
    fn first_addresses_and_the_bootstrap_admin_are_no_news() {
        let mut e = Engine::new(limits());
        let mut first = row(1, 0, "api_key.used_from_new_ip", Some("k1"), Some("192.0.2.1"));
        first.details = r#"{"ip":"192.0.2.1","first_address":true}"#.into();
        assert!(e.observe(&first).is_empty());
        let mut second = row(2, 0, "api_key.used_from_new_ip", Some("k1"), Some("192.0.2.2"));
        second.details = r#"{"ip":"192.0.2.2","first_address":false}"#.into();
        let r = e.observe(&second);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].key, "api_key:k1");
        assert_eq!(r[0].details["ip"], "192.0.2.2");
        let mut boot = row(3, 0, "user.admin.created", Some("u9"), None);
        boot.actor_type = "system".into();
        assert!(e.observe(&boot).is_empty());
        boot.seq = 4;
        boot.actor_type = "operator".into();
        assert_eq!(e.observe(&boot)[0].rule, Rule::AdminGranted);
    }

    #[test]
    fn back_off_doubles_then_gives_up() {
        assert_eq!(next_attempt(0, 1), Some(10_000));
        assert_eq!(next_attempt(0, 2), Some(20_000));
        assert_eq!(next_attempt(0, 9), Some(2_560_000));
        assert_eq!(next_attempt(0, MAX_ATTEMPTS), None);
    }

    #[test]
    fn rule_names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
        }
        assert_eq!(Rule::parse("nope"), None);
    }
}
