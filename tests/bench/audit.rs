//! Audit benchmark (issue 6), one process, loopback only. Prints one JSON object:
//!
//! - `appends_per_s`: audit records appended per second with the chain, by 64 concurrent writers
//!   (group commit); `sequential_appends_per_s`: the same appends one at a time, each its own
//!   transaction (the baseline measured in this run); `group_commit_ratio` = the two divided.
//!   The background indexer (audit_index, `audit.index_interval_ms`) runs in this process all
//!   along: `index_lag_max_records` is the most records it was behind during the 64-writer
//!   phase (sampled every 50 ms), `index_lag_end_records` how far behind it was when the phase
//!   ended, `index_catch_up_ms` how long filing them then took, and `appends_indexed_per_s`
//!   the appends divided by the phase plus that catch-up (appends with their indexing done).
//!   After the fill, the whole log is filed (`fill_index_seconds`: the fill and that) before
//!   anything is measured. `BENCH_AUDIT_SECONDS` (default 5) sets the phase's length,
//!   `BENCH_AUDIT_INDEX_INTERVAL_MS` the indexer's interval (default: the configuration's).
//! - After filling the log to `BENCH_AUDIT_RECORDS` (default 1,000,000) records spread over 30
//!   days, 1000 actors: `query_p99_ms` of `GET /v1/audit?actor=…&since=…&until=…` (a random actor
//!   and day) over HTTPS, and `newest_p99_ms`, the same for the unfiltered newest page (baseline).
//! - `export_records`, `export_seconds` and `export_rss_growth_mb`: `GET /v1/audit/export` of the
//!   whole log, read to the end, with the peak growth of this process's resident memory (server
//!   and client both live here) over its value before the export.
//!
//! Run by tests/bench/run.sh; alone: `cargo run --release --example bench-audit`.

use gatehouse::clock::SystemClock;
use gatehouse::config::Config;
use gatehouse::domain::audit::{self, Actor, Event, Origin, Outcome};
use gatehouse::startup::{Application, BuildOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64) * 0.99) as usize - 1]
}

fn event(i: u64) -> Event {
    let actions = ["auth.login.succeeded", "auth.login.failed", "secret.revealed", "member.updated", "api.read"];
    Event::new(actions[(i % 5) as usize], Actor::User(format!("user-{:04}", i % 1000)))
        .target(format!("target-{}", i % 5000))
        .outcome(if i % 5 == 1 { Outcome::Failure } else { Outcome::Success })
        .origin(&Origin {
            client_ip: Some(format!("10.0.{}.{}", (i / 256) % 256, i % 256)),
            user_agent: Some("bench/1.0".into()),
            request_id: Some(format!("req-{i}")),
        })
        .details(serde_json::json!({"n": i, "route": "/v1/bench"}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG=gatehouse=debug shows the indexer's batches on stderr.
    let _log = std::env::var_os("RUST_LOG")
        .and_then(|_| gatehouse::telemetry::init(gatehouse::telemetry::LogFormat::Pretty, "warn"));
    let total: u64 = std::env::var("BENCH_AUDIT_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    config.server.listen = "127.0.0.1:0".parse()?;
    config.log.level = "warn".into();
    if let Some(ms) = std::env::var("BENCH_AUDIT_INDEX_INTERVAL_MS").ok().and_then(|v| v.parse().ok()) {
        config.audit.index_interval_ms = ms;
    }
    let opts =
        BuildOptions { clock: Arc::new(SystemClock), credentials_dir: None, bootstrap_admin: true, exclusive: true };
    let mut app = Application::build(config, opts).await?;
    let base = app.base_url();
    let state = app.state().clone();
    let password = app.take_bootstrap_password().map(|p| p.expose().to_string()).ok_or("no admin")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async move {
                let _ = stop_rx.await;
            })
            .await;
    });

    // (1) Fill to `total` records spread over the next 30 days (record times never go backwards:
    // the records of start-up are older), 10,000 per transaction.
    let now = || time::OffsetDateTime::now_utc();
    let have = state.db.read(|tx| tx.audit_head()).await?.map_or(0, |h| h.seq) as u64;
    let span_ms: i64 = 30 * 86_400_000;
    let t0 = now() + time::Duration::minutes(1);
    let fill_started = Instant::now();
    let mut i = have;
    while i < total {
        let (from, to) = (i, (i + 10_000).min(total));
        let auditor = state.auditor.clone();
        state
            .db
            .write(move |tx| {
                for k in from..to {
                    let at = t0 + time::Duration::milliseconds(span_ms * k as i64 / total as i64);
                    audit::record(tx, &auditor, at, &event(k))?;
                }
                Ok::<_, gatehouse::error::AppError>(())
            })
            .await?;
        i = to;
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let lag = |db: gatehouse::db::Db| async move { audit::indexer::lag(&db).await.map(|(head, w)| head - w) };
    // The indexing not done yet, done now rather than at the indexer's next round.
    let file_the_rest = |db: gatehouse::db::Db| async move {
        let started = Instant::now();
        audit::indexer::catch_up(&db).await?;
        Ok::<_, gatehouse::error::AppError>(started.elapsed().as_secs_f64())
    };
    let fill_index_seconds = fill_seconds + file_the_rest(state.db.clone()).await?;

    // (2) Appends: one at a time (baseline), then 64 writers at once (group commit).
    let started = Instant::now();
    let mut sequential = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        audit::record_alone(&state.db, &state.auditor, now(), event(sequential)).await?;
        sequential += 1;
    }
    let sequential_rate = sequential as f64 / started.elapsed().as_secs_f64();
    file_the_rest(state.db.clone()).await?;
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let phase =
        Duration::from_secs(std::env::var("BENCH_AUDIT_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5));
    let sampler = {
        let db = state.db.clone();
        tokio::spawn(async move {
            let mut most = 0i64;
            while started.elapsed() < phase {
                most = most.max(lag(db.clone()).await.unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        })
    };
    let mut writers = Vec::new();
    let writers_n: u64 = std::env::var("BENCH_AUDIT_WRITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    for w in 0..writers_n {
        let (state, count) = (state.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while started.elapsed() < phase {
                if audit::record_alone(&state.db, &state.auditor, now(), event(i)).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += writers_n;
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let phase_seconds = started.elapsed().as_secs_f64();
    let group_rate = count.load(Ordering::Relaxed) as f64 / phase_seconds;
    let lag_end = lag(state.db.clone()).await?;
    let catch_up_seconds = file_the_rest(state.db.clone()).await?;
    let lag_max = sampler.await?.max(lag_end);
    let indexed_rate = count.load(Ordering::Relaxed) as f64 / (phase_seconds + catch_up_seconds);

    // (3) Queries over HTTPS.
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let login: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().ok_or("login failed")?.to_string();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut filtered = Vec::new();
    let mut newest = Vec::new();
    let mut returned = 0usize;
    for q in 0..1000u64 {
        let day = (q * 7919) % 29;
        let since = t0 + time::Duration::days(day as i64);
        let until = since + time::Duration::days(1);
        let url =
            format!("{base}/v1/audit?actor=user-{:04}&since={}&until={}", (q * 31) % 1000, fmt(since), fmt(until));
        let s = Instant::now();
        let b: serde_json::Value = client.get(&url).bearer_auth(&token).send().await?.json().await?;
        filtered.push(s.elapsed().as_secs_f64() * 1000.0);
        returned += b["items"].as_array().map_or(0, Vec::len);
        let s = Instant::now();
        let r = client.get(format!("{base}/v1/audit")).bearer_auth(&token).send().await?;
        let _ = r.bytes().await?;
        newest.push(s.elapsed().as_secs_f64() * 1000.0);
    }

    // (4) Export the whole log, watching resident memory.
    use futures_util::StreamExt;
    let before = rss_kb();
    let mut peak = before;
    let s = Instant::now();
    let resp = client.get(format!("{base}/v1/audit/export")).bearer_auth(&token).send().await?;
    let mut stream = resp.bytes_stream();
    let mut lines = 0u64;
    let mut chunks = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        chunks += 1;
        if chunks.is_multiple_of(64) {
            peak = peak.max(rss_kb());
        }
    }
    let export_seconds = s.elapsed().as_secs_f64();
    peak = peak.max(rss_kb());

    println!(
        "{}",
        serde_json::json!({
            "appends_per_s": group_rate.round(),
            "sequential_appends_per_s": sequential_rate.round(),
            "group_commit_ratio": (group_rate / sequential_rate * 100.0).round() / 100.0,
            "appends_indexed_per_s": indexed_rate.round(),
            "index_lag_max_records": lag_max,
            "index_lag_end_records": lag_end,
            "index_catch_up_ms": (catch_up_seconds * 1000.0).round(),
            "records": total,
            "fill_seconds": (fill_seconds * 10.0).round() / 10.0,
            "fill_index_seconds": (fill_index_seconds * 10.0).round() / 10.0,
            "query_p99_ms": (p99(filtered) * 100.0).round() / 100.0,
            "newest_p99_ms": (p99(newest) * 100.0).round() / 100.0,
            "query_avg_items": returned / 1000,
            "export_records": lines,
            "export_seconds": (export_seconds * 10.0).round() / 10.0,
            "export_rss_growth_mb": ((peak.saturating_sub(before)) as f64 / 1024.0 * 10.0).round() / 10.0,
        })
    );
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
