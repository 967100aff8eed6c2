//! Reading the audit log back: validated filters, cursors bound to the query that gave them,
//! records and checkpoints as the API shows them, and the NDJSON export stream.

use super::integrity::Anchor;
use crate::crypto::checkpoint;
use crate::db::{ActorFilter, AuditFilter, AuditRow, CheckpointRow, Db};
use crate::error::AppError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The query parameters as received (`since`, `until`, `actor`, `action`, `target`, `outcome`,
/// `ip`, `workspace`, `limit`, `cursor`).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub since: Option<String>,
    pub until: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<String>,
    pub ip: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub filter: AuditFilter,
    pub limit: i64,
    /// Records below this sequence number (from the cursor).
    pub before: Option<i64>,
    fingerprint: String,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn bad(msg: impl Into<String>) -> AppError {
    AppError::Invalid(msg.into())
}

fn time_ms(field: &str, v: &str) -> Result<i64, AppError> {
    let t = OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|_| bad(format!("{field}: not an RFC 3339 time (for example 2026-01-31T12:00:00Z)")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad(format!("{field}: out of range")))
}

fn text(field: &str, v: &str, max: usize) -> Result<String, AppError> {
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(bad(format!("{field}: 1 to {max} printable characters")));
    }
    Ok(v.to_string())
}

/// Validate `p`. `workspace` is the workspace the query is confined to (its id), if any.
pub fn parse(p: &Params, workspace: Option<String>) -> Result<Query, AppError> {
    let since_ms = p.since.as_deref().map(|v| time_ms("since", v)).transpose()?;
    let until_ms = p.until.as_deref().map(|v| time_ms("until", v)).transpose()?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if s >= u {
            return Err(bad("until: must be later than since"));
        }
    }
    let actor = match p.actor.as_deref() {
        None => None,
        Some(t @ ("system" | "operator" | "anonymous")) => Some(ActorFilter::Type(t.to_string())),
        Some(v) => Some(ActorFilter::Id(text("actor", v, 128)?)),
    };
    let action_prefix = match p.action.as_deref() {
        None => None,
        Some(v) => {
            let ok = (1..=64).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                && !v.starts_with('.')
                && !v.contains("..");
            if !ok {
                return Err(bad("action: an event name or its beginning, such as auth. or auth.login.failed"));
            }
            Some(v.to_string())
        }
    };
    let target = p.target.as_deref().map(|v| text("target", v, 256)).transpose()?;
    let outcome = match p.outcome.as_deref() {
        None => None,
        Some(v @ ("success" | "failure" | "denied")) => Some(v.to_string()),
        Some(_) => return Err(bad("outcome: one of success, failure, denied")),
    };
    let client_ip = match p.ip.as_deref() {
        None => None,
        Some(v) => Some(v.parse::<std::net::IpAddr>().map_err(|_| bad("ip: an IPv4 or IPv6 address"))?.to_string()),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit: between 1 and {MAX_LIMIT}")));
    }
    let filter = AuditFilter {
        since_ms,
        until_ms,
        min_seq: None,
        max_seq: None,
        actor,
        action_prefix,
        target,
        outcome,
        client_ip,
        workspace_id: workspace,
    };
    let fingerprint = hex::encode(&checkpoint::sha256(&[format!("{filter:?}").as_bytes()])[..8]);
    let before = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let (seq, fp) = c.split_once('.').ok_or_else(|| bad("cursor: not one this server gave"))?;
            let seq: i64 = seq.parse().map_err(|_| bad("cursor: not one this server gave"))?;
            if fp != fingerprint {
                return Err(bad("cursor: it belongs to another query; repeat the filters it came with"));
            }
            Some(seq)
        }
    };
    Ok(Query { filter, limit, before, fingerprint })
}

/// Turn the time bounds into the sequence range they cover.
fn with_seq_bounds(tx: &crate::db::Tx<'_>, f: &AuditFilter) -> Result<Option<AuditFilter>, AppError> {
    let mut f = f.clone();
    if let Some(s) = f.since_ms {
        match tx.audit_seq_from(s)? {
            Some(seq) => f.min_seq = Some(seq),
            None => return Ok(None),
        }
    }
    if let Some(u) = f.until_ms {
        match tx.audit_seq_before(u)? {
            Some(seq) => f.max_seq = Some(seq),
            None => return Ok(None),
        }
    }
    Ok(Some(f))
}

/// One page, newest first, and the cursor of the next.
pub async fn search(db: &Db, q: &Query) -> Result<(Vec<AuditRow>, Option<String>), AppError> {
    let q = q.clone();
    db.read(move |tx| {
        let Some(filter) = with_seq_bounds(tx, &q.filter)? else { return Ok((Vec::new(), None)) };
        let mut rows = tx.audit_query(&filter, q.before, q.limit + 1)?;
        let next = if rows.len() as i64 > q.limit {
            rows.truncate(q.limit as usize);
            rows.last().map(|r| format!("{}.{}", r.seq, q.fingerprint))
        } else {
            None
        };
        Ok((rows, next))
    })
    .await
}

/// A record as the API, the export, syslog and the security log show it: the columns, the time
/// in RFC 3339, the details as JSON and the chain hash in hex; absent values left out.
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    pub seq: i64,
    pub time: String,
    pub actor_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub details: serde_json::Value,
    pub hash: String,
}

/// RFC 3339 with milliseconds, UTC (`2026-11-29T12:00:00.000Z`), as RFC 5424 wants it too.
pub fn format_ms(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".into())
}

impl From<AuditRow> for RecordView {
    fn from(r: AuditRow) -> Self {
        Self {
            seq: r.seq,
            time: format_ms(r.ts_ms),
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            target: r.target,
            workspace_id: r.workspace_id,
            outcome: r.outcome,
            client_ip: r.client_ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::String(r.details)),
            hash: hex::encode(r.hash),
        }
    }
}

/// Records per read while exporting: the memory an export holds at once.
const EXPORT_PAGE: i64 = 1000;

/// The records matching `filter`, oldest first, as NDJSON chunks, up to the newest record at
/// the time of the call; read a page at a time so that memory stays flat however many match.
pub fn export(db: Db, filter: AuditFilter) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    enum State {
        Start,
        Reading { filter: Box<AuditFilter>, after: i64 },
        Done,
    }
    futures_util::stream::unfold(State::Start, move |state| {
        let db = db.clone();
        let filter = filter.clone();
        async move {
            let (f, after) = match state {
                State::Done => return None,
                State::Start => {
                    let bounded = db
                        .read(move |tx| -> Result<_, AppError> {
                            let Some(mut f) = with_seq_bounds(tx, &filter)? else { return Ok(None) };
                            let head = tx.audit_head()?.map_or(0, |h| h.seq);
                            f.max_seq = Some(f.max_seq.map_or(head, |m| m.min(head)));
                            Ok(Some(f))
                        })
                        .await;
                    match bounded {
                        Ok(Some(f)) => (Box::new(f), 0),
                        Ok(None) => return None,
                        Err(e) => return Some((Err(std::io::Error::other(e.to_string())), State::Done)),
                    }
                }
                State::Reading { filter, after } => (filter, after),
            };
            let page_filter = f.clone();
            let rows = db.read(move |tx| tx.audit_query_forward(&page_filter, after, EXPORT_PAGE)).await;
            match rows {
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), State::Done)),
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows.last().map_or(after, |r| r.seq);
                    let mut out = Vec::with_capacity(rows.len() * 400);
                    for r in rows {
                        if serde_json::to_writer(&mut out, &RecordView::from(r)).is_ok() {
                            out.push(b'\n');
                        }
                    }
                    Some((Ok(out), State::Reading { filter: f, after: last }))
                }
            }
        }
    })
}

/// Read an exported checkpoint (`audit verify --anchor`).
pub fn parse_anchor(text: &str) -> Result<Anchor, String> {
    #[derive(Deserialize)]
    struct Exported {
        id: i64,
        signature: String,
    }
    let e: Exported = serde_json::from_str(text)
        .map_err(|e| format!("not an exported checkpoint (JSON with id and signature): {e}"))?;
    let signature = B64.decode(e.signature.as_bytes()).map_err(|_| "signature: not base64".to_string())?;
    Ok(Anchor { id: e.id, signature })
}

/// Checkpoints newest first below `before`, and the cursor of the next page.
pub async fn checkpoints(
    db: &Db,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<CheckpointRow>, Option<String>), AppError> {
    db.read(move |tx| {
        let mut rows = tx.checkpoints_desc(before.unwrap_or(i64::MAX), limit + 1)?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|c| c.id.to_string())
        } else {
            None
        };
        Ok((rows, next))
    })
    .await
}
