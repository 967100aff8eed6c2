//! The audit log's query index (`audit_index`), kept a short time behind the chain head by a
//! background task. Appending a record writes only the chain; the indexer then files a batch of
//! records at a time, sorted by key, and moves its watermark in the same transaction. Queries
//! read the index up to the watermark and scan the records above it (`db::audit`), so a record
//! is found by every filter from the moment it is appended. The indexer decides nothing about
//! what is recorded or kept; a purge removes the entries of the records it deletes.

use crate::db::Db;
use crate::error::AppError;
use std::time::Duration;

/// Records indexed per write transaction: enough that a batch dirties each index page once for
/// many records, few enough that the writers queued behind it wait tens of milliseconds.
const BATCH: i64 = 5_000;

/// Index every record appended so far, a batch per transaction. Returns the watermark (the last
/// sequence number indexed).
pub async fn catch_up(db: &Db) -> Result<i64, AppError> {
    loop {
        let started = std::time::Instant::now();
        let ((watermark, indexed), filing) = db
            .write(|tx| {
                let started = std::time::Instant::now();
                tx.audit_index_pending(BATCH).map(|done| (done, started.elapsed()))
            })
            .await?;
        if indexed > 0 {
            tracing::debug!(
                records = indexed,
                watermark,
                filing_ms = filing.as_millis() as u64,
                with_commit_ms = started.elapsed().as_millis() as u64,
                "filed audit records in the query index"
            );
        }
        if indexed < BATCH {
            return Ok(watermark);
        }
    }
}

/// How far the index is behind the chain: (newest sequence number, watermark).
pub async fn lag(db: &Db) -> Result<(i64, i64), AppError> {
    Ok(db
        .read(|tx| Ok::<_, crate::db::DbError>((tx.audit_head()?.map_or(0, |h| h.seq), tx.audit_indexed_through()?)))
        .await?)
}

/// The background indexer: every `interval`, index what was appended since; when `stop` turns
/// true, catch up with the last records (the server's closing ones) and return. A failure is
/// logged and retried at the next round; queries stay correct meanwhile (they scan the tail).
pub async fn run(db: Db, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            changed = stop.changed() => changed.is_err() || *stop.borrow(),
        };
        if let Err(e) = catch_up(&db).await {
            tracing::error!(error = %e, "indexing the audit log failed");
        }
        if stopping {
            return;
        }
    }
}
