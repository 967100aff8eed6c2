//! Integrity beyond the chain. A **checkpoint** signs (Ed25519, key sealed in the vault) the chain
//! head, the base the retained chain starts from, a digest of the stubs retention left, and the
//! previous checkpoint's signature. **Retention** deletes old records by category and keeps, for
//! each, a stub (sequence number and hash) so that the next record still verifies; a purge moves
//! the base past a fully purged prefix and ends with a checkpoint. **Verification** checks the
//! checkpoints, the stubs against the latest one, every record's keyed hash and position, every
//! checkpointed head, and that the log still reaches the latest checkpoint (no truncated tail).

use super::{catalogue, record, Actor, Auditor, Event, GENESIS};
use crate::crypto::checkpoint::{self, Digest256};
use crate::db::{CheckpointRow, Db, Tx};
use crate::domain::unix_ms;
use crate::domain::vault::{Vault, CHECKPOINT_KEY_ID};
use crate::error::AppError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Records,
    Interval,
    Purge,
    Shutdown,
    Manual,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Records => "records",
            Reason::Interval => "interval",
            Reason::Purge => "purge",
            Reason::Shutdown => "shutdown",
            Reason::Manual => "manual",
        }
    }
}

/// The exact bytes a checkpoint's signature covers: every column but the signature, as JSON
/// with hashes in hex, keys in this order.
#[derive(Serialize)]
struct Statement<'a> {
    v: u8,
    id: i64,
    ts_ms: i64,
    seq: i64,
    head_hash: String,
    base_seq: i64,
    base_hash: String,
    purged_count: i64,
    purged_digest: String,
    prev: String,
    reason: &'a str,
    key_id: &'a str,
}

/// The signed statement of `c`.
pub fn statement(c: &CheckpointRow) -> Result<Vec<u8>, AppError> {
    serde_json::to_vec(&Statement {
        v: 1,
        id: c.id,
        ts_ms: c.ts_ms,
        seq: c.seq,
        head_hash: hex::encode(&c.head_hash),
        base_seq: c.base_seq,
        base_hash: hex::encode(&c.base_hash),
        purged_count: c.purged_count,
        purged_digest: hex::encode(&c.purged_digest),
        prev: hex::encode(&c.prev),
        reason: &c.reason,
        key_id: &c.key_id,
    })
    .map_err(AppError::internal)
}

/// The chain's newest link: the newest record, or the newest stub when retention removed the
/// tail; `(0, GENESIS)` for an empty log. Also the newest record's time (0 without one): a new
/// record is never older.
pub(super) fn chain_head(tx: &Tx<'_>) -> Result<(i64, Vec<u8>, i64), AppError> {
    let live = tx.audit_head()?;
    let stub = tx.audit_last_stub()?;
    let newest_ms = live.as_ref().map_or(0, |h| h.ts_ms);
    let (seq, hash) = match (live, stub) {
        (Some(h), Some(s)) if s > h.seq => (s, tx.audit_stub(s)?.unwrap_or_default()),
        (Some(h), _) => (h.seq, h.hash),
        (None, Some(s)) => (s, tx.audit_stub(s)?.unwrap_or_default()),
        (None, None) => (0, GENESIS.to_vec()),
    };
    Ok((seq, hash, newest_ms))
}

/// The number and digest of the stubs above `base`: SHA-256 over each `seq (8 bytes, big
/// endian) || hash`, in order.
fn stub_digest(tx: &Tx<'_>, base: i64) -> Result<(i64, [u8; 32]), AppError> {
    let mut d = Digest256::default();
    let mut n = 0;
    let mut after = base;
    loop {
        let page = tx.audit_stubs_page(after, 5000)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (seq, hash) in &page {
            d.update(&seq.to_be_bytes());
            d.update(hash);
            n += 1;
        }
    }
    Ok((n, d.finish()))
}

/// Write a checkpoint of the current head. `base` is the retained chain's new base after a
/// purge; otherwise the previous checkpoint's is carried.
fn write_checkpoint(
    tx: &Tx<'_>,
    vault: &Vault,
    now_ms: i64,
    reason: Reason,
    base: Option<(i64, Vec<u8>)>,
) -> Result<CheckpointRow, AppError> {
    let key = vault.checkpoint_key(tx, now_ms, true)?.ok_or_else(|| AppError::internal("no checkpoint key"))?;
    let last = tx.checkpoint_last()?;
    let (base_seq, base_hash) = match (base, &last) {
        (Some(b), _) => b,
        (None, Some(c)) => (c.base_seq, c.base_hash.clone()),
        (None, None) => (0, GENESIS.to_vec()),
    };
    let (purged_count, purged_digest) = stub_digest(tx, base_seq)?;
    let (seq, head_hash, _) = chain_head(tx)?;
    let mut row = CheckpointRow {
        id: last.as_ref().map_or(1, |c| c.id + 1),
        ts_ms: now_ms.max(last.as_ref().map_or(0, |c| c.ts_ms)),
        seq,
        head_hash,
        base_seq,
        base_hash,
        purged_count,
        purged_digest: purged_digest.to_vec(),
        prev: last.as_ref().map_or([0u8; 32], |c| checkpoint::sha256(&[&c.signature])).to_vec(),
        reason: reason.as_str().to_string(),
        key_id: CHECKPOINT_KEY_ID.to_string(),
        signature: Vec::new(),
    };
    row.signature = key.sign(&statement(&row)?);
    tx.checkpoint_insert(&row)?;
    Ok(row)
}

/// Write a checkpoint when `every_records` records were added since the last one, or when
/// `interval_s` passed and at least one was. The first checkpoint is written as soon as the
/// log holds a record.
pub async fn checkpoint_if_due(
    db: &Db,
    vault: &Arc<Vault>,
    now: OffsetDateTime,
    every_records: u64,
    interval_s: u64,
) -> Result<Option<CheckpointRow>, AppError> {
    let vault = vault.clone();
    let now_ms = unix_ms(now);
    let every = i64::try_from(every_records).unwrap_or(i64::MAX);
    let interval_ms = i64::try_from(interval_s).unwrap_or(i64::MAX / 1000) * 1000;
    db.write(move |tx| {
        let (head, _, _) = chain_head(tx)?;
        let reason = match tx.checkpoint_last()? {
            None if head > 0 => Some(Reason::Records),
            None => None,
            Some(c) if head - c.seq >= every => Some(Reason::Records),
            Some(c) if head > c.seq && now_ms - c.ts_ms >= interval_ms => Some(Reason::Interval),
            Some(_) => None,
        };
        match reason {
            Some(r) => Ok(Some(write_checkpoint(tx, &vault, now_ms, r, None)?)),
            None => Ok(None),
        }
    })
    .await
}

/// Write a checkpoint now if any record was added since the last one (shutdown, operator).
pub async fn checkpoint_now(
    db: &Db,
    vault: &Arc<Vault>,
    now: OffsetDateTime,
    reason: Reason,
) -> Result<Option<CheckpointRow>, AppError> {
    let vault = vault.clone();
    let now_ms = unix_ms(now);
    db.write(move |tx| {
        let (head, _, _) = chain_head(tx)?;
        let last = tx.checkpoint_last()?;
        if head == 0 || last.is_some_and(|c| c.seq == head) {
            return Ok(None);
        }
        Ok(Some(write_checkpoint(tx, &vault, now_ms, reason, None)?))
    })
    .await
}

/// Days kept per category (`audit.retention_days`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub default_days: Option<u32>,
    pub by_category: BTreeMap<String, u32>,
}

impl Retention {
    pub fn from_config(days: &BTreeMap<String, u32>) -> Self {
        let mut by_category = days.clone();
        let default_days = by_category.remove("default");
        Self { default_days, by_category }
    }

    fn days_for(&self, action: &str) -> Option<u32> {
        self.by_category.get(catalogue::category(action)).copied().or(self.default_days)
    }

    /// The shortest retention: records newer than this are never candidates.
    fn shortest(&self) -> Option<u32> {
        self.by_category.values().copied().chain(self.default_days).min()
    }
}

/// What one purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub removed: i64,
    pub base_seq: i64,
}

/// Records deleted per transaction.
const PURGE_BATCH: usize = 10_000;
/// Candidates looked at per transaction (records kept by a longer retention are skipped).
const PURGE_SCAN: i64 = 50_000;

/// Delete the records past their category's retention, a batch per transaction, each batch
/// recorded (`audit.purged`) and closed by a checkpoint that moves the base past a fully
/// purged prefix. At most `max_batches` batches per call.
pub async fn purge(
    db: &Db,
    auditor: &Auditor,
    vault: &Arc<Vault>,
    retention: &Retention,
    now: OffsetDateTime,
    max_batches: usize,
) -> Result<PurgeReport, AppError> {
    let Some(shortest) = retention.shortest() else { return Ok(PurgeReport::default()) };
    let now_ms = unix_ms(now);
    let newest_cutoff = now_ms - i64::from(shortest) * 86_400_000;
    let mut report = PurgeReport::default();
    let mut after = 0i64;
    for _ in 0..max_batches {
        let (auditor, vault, retention) = (auditor.clone(), vault.clone(), retention.clone());
        let step = db
            .write(move |tx| -> Result<Option<(i64, i64, i64)>, AppError> {
                let mut doomed: Vec<(i64, Vec<u8>)> = Vec::new();
                let mut by_category: BTreeMap<String, i64> = BTreeMap::new();
                let mut scanned_to = after;
                let mut scanned = 0;
                while doomed.len() < PURGE_BATCH && scanned < PURGE_SCAN {
                    let page = tx.audit_purge_candidates(scanned_to, newest_cutoff, 1000)?;
                    let Some(last) = page.last() else { break };
                    scanned_to = last.seq;
                    scanned += page.len() as i64;
                    for c in page {
                        let expired = retention
                            .days_for(&c.action)
                            .is_some_and(|days| c.ts_ms < now_ms - i64::from(days) * 86_400_000);
                        if expired && doomed.len() < PURGE_BATCH {
                            *by_category.entry(catalogue::category(&c.action).to_string()).or_default() += 1;
                            doomed.push((c.seq, c.hash));
                        } else if expired {
                            scanned_to = c.seq - 1;
                            break;
                        }
                    }
                }
                if doomed.is_empty() {
                    return Ok(None);
                }
                tx.audit_purge(&doomed)?;
                // The base moves past the prefix that is now stubs only. The purge's own record,
                // appended below after the last link (a stub when the tail went), comes after it.
                let last = tx.checkpoint_last()?;
                let (old_base, old_hash) = last.map_or((0, GENESIS.to_vec()), |c| (c.base_seq, c.base_hash));
                let (head, _, _) = chain_head(tx)?;
                let new_base = match tx.audit_first_seq()? {
                    Some(first) => first - 1,
                    None => head,
                };
                let base = if new_base > old_base {
                    match tx.audit_stub(new_base)? {
                        Some(hash) => (new_base, hash),
                        None => (old_base, old_hash),
                    }
                } else {
                    (old_base, old_hash)
                };
                let removed = doomed.len() as i64;
                let event = Event::new("audit.purged", Actor::System).details(serde_json::json!({
                    "removed": removed,
                    "by_category": by_category,
                    "first_seq": doomed.first().map(|d| d.0),
                    "last_seq": doomed.last().map(|d| d.0),
                    "base_seq": base.0,
                }));
                record(tx, &auditor, now, &event)?;
                tx.audit_stubs_drop_through(base.0)?;
                let base_seq = base.0;
                write_checkpoint(tx, &vault, now_ms, Reason::Purge, Some(base))?;
                Ok(Some((removed, base_seq, scanned_to)))
            })
            .await?;
        match step {
            Some((removed, base_seq, scanned_to)) => {
                report.removed += removed;
                report.base_seq = base_seq;
                after = scanned_to;
            }
            None => break,
        }
    }
    Ok(report)
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Records whose hash and position were checked.
    pub records: i64,
    /// Stubs of purged records walked over.
    pub purged: i64,
    /// Signed checkpoints checked.
    pub checkpoints: i64,
    /// The newest sequence number reached.
    pub head_seq: i64,
    /// Where the chain starts (after the records retention removed from its beginning).
    pub base_seq: i64,
    /// The newest checkpoint's id and sequence number.
    pub last_checkpoint: Option<(i64, i64)>,
    /// The first sequence number that does not verify.
    pub first_broken: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

impl Verification {
    fn broken(mut self, seq: i64, reason: String) -> Self {
        self.first_broken = Some(seq);
        self.reason = Some(reason);
        self
    }
}

/// A checkpoint held elsewhere (exported earlier): the log must still contain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub id: i64,
    pub signature: Vec<u8>,
}

/// Verify the whole log in one read snapshot. `anchors` are checkpoints exported earlier.
pub async fn verify(
    db: &Db,
    auditor: &Auditor,
    vault: &Arc<Vault>,
    anchors: Vec<Anchor>,
) -> Result<Verification, AppError> {
    let key = auditor.key().clone();
    let vault = vault.clone();
    db.read(move |tx| {
        let mut v = Verification::default();
        // 1. The checkpoints: signed by our key, each chained to the one before.
        let public = vault.checkpoint_key(tx, 0, false)?.map(|k| k.public_key());
        let mut marks: BTreeMap<i64, (i64, Vec<u8>)> = BTreeMap::new();
        let mut last: Option<CheckpointRow> = None;
        let mut after = 0;
        loop {
            let page = tx.checkpoints_page(after, 500)?;
            let Some(tail) = page.last() else { break };
            after = tail.id;
            for c in page {
                let Some(public) = public else {
                    return Ok(v.broken(c.seq, format!("checkpoint {} exists but the checkpoint key does not", c.id)));
                };
                let expected_id = last.as_ref().map_or(1, |l| l.id + 1);
                let expected_prev = last.as_ref().map_or([0u8; 32], |l| checkpoint::sha256(&[&l.signature]));
                if c.id != expected_id || c.prev != expected_prev {
                    return Ok(v.broken(
                        c.seq,
                        format!("checkpoint {expected_id} is missing or was replaced (found {} next)", c.id),
                    ));
                }
                if !checkpoint::verify(&public, &statement(&c)?, &c.signature) {
                    return Ok(v.broken(c.seq, format!("checkpoint {} does not match its signature", c.id)));
                }
                if let Some(l) = &last {
                    if c.seq < l.seq || c.base_seq < l.base_seq {
                        return Ok(v.broken(c.seq, format!("checkpoint {} goes backwards", c.id)));
                    }
                }
                marks.insert(c.seq, (c.id, c.head_hash.clone()));
                v.checkpoints += 1;
                last = Some(c);
            }
        }
        for a in &anchors {
            let held = tx.checkpoints_page(a.id - 1, 1)?.into_iter().next().filter(|c| c.id == a.id);
            match held {
                Some(c) if c.signature == a.signature => {}
                _ => {
                    return Ok(v.broken(
                        0,
                        format!("the anchored checkpoint {} is not in the log: the log was rolled back or replaced", a.id),
                    ))
                }
            }
        }
        // 2. The stubs retention left must be exactly those the latest checkpoint signed.
        let (base_seq, base_hash) = last.as_ref().map_or((0, GENESIS.to_vec()), |c| (c.base_seq, c.base_hash.clone()));
        v.base_seq = base_seq;
        v.last_checkpoint = last.as_ref().map(|c| (c.id, c.seq));
        let (stubs, digest) = stub_digest(tx, base_seq)?;
        let (signed_count, signed_digest) = last
            .as_ref()
            .map_or((0, stub_digest_empty()), |c| (c.purged_count, c.purged_digest.clone()));
        if stubs != signed_count || digest.to_vec() != signed_digest {
            let first = tx.audit_stubs_page(base_seq, 1)?.first().map_or(base_seq + 1, |s| s.0);
            return Ok(v.broken(
                first,
                format!(
                    "the purged-record stubs ({stubs}) are not those the latest checkpoint signed ({signed_count}): \
                     a record was deleted outside retention"
                ),
            ));
        }
        // 3. Walk records and stubs in order from the base.
        let mut prev = base_hash;
        let mut expected = base_seq + 1;
        let mut live_after = base_seq;
        let mut stub_after = base_seq;
        let mut live = tx.audit_page(live_after, 1000)?.into_iter().peekable();
        let mut stubs_it = tx.audit_stubs_page(stub_after, 1000)?.into_iter().peekable();
        loop {
            if live.peek().is_none() {
                live = tx.audit_page(live_after, 1000)?.into_iter().peekable();
            }
            if stubs_it.peek().is_none() {
                stubs_it = tx.audit_stubs_page(stub_after, 1000)?.into_iter().peekable();
            }
            let next_live = live.peek().map(|r| r.seq);
            let next_stub = stubs_it.peek().map(|s| s.0);
            let seq = match (next_live, next_stub) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    return Ok(v.broken(a, format!("record {a} is both present and purged")));
                }
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
            };
            if seq != expected {
                return Ok(v.broken(expected, format!("record {expected} is missing (next present is {seq})")));
            }
            if next_live == Some(seq) {
                let Some(row) = live.next() else { break };
                if !key.verify(&prev, &super::canonical(&row)?, &row.hash)? {
                    return Ok(v.broken(seq, format!("record {seq} does not match its hash")));
                }
                live_after = seq;
                prev = row.hash;
                v.records += 1;
            } else {
                let Some((_, hash)) = stubs_it.next() else { break };
                stub_after = seq;
                prev = hash;
                v.purged += 1;
            }
            if let Some((id, hash)) = marks.get(&seq) {
                if *hash != prev {
                    return Ok(v.broken(seq, format!("record {seq} is not the one checkpoint {id} signed")));
                }
            }
            v.head_seq = seq;
            expected += 1;
        }
        // 4. The log must reach the latest checkpoint: a cut tail shows here.
        if let Some(c) = &last {
            if c.seq > v.head_seq {
                let end = v.head_seq;
                return Ok(v.broken(
                    end + 1,
                    format!(
                        "the log ends at record {end} but checkpoint {} signed it up to record {}: records were removed from the end",
                        c.id, c.seq
                    ),
                ));
            }
        }
        Ok(v)
    })
    .await
}

fn stub_digest_empty() -> Vec<u8> {
    Digest256::default().finish().to_vec()
}
