//! Tracing set-up (pretty or JSON lines) and `spawn_blocking_in_span`, which runs blocking work
//! on tokio's blocking pool inside the caller's span and re-raises its panics.
//!
//! What reaches a log: request id, method, route template, status, latency, principal, and the
//! messages written by Gatehouse. Never headers, bodies, query strings or secret values.

use std::io::IsTerminal;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line (for journald, Loki, a SIEM).
    Json,
}

/// Keeps the background log writer alive; dropping it flushes what is queued.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Install the global subscriber. `level` is an `EnvFilter` directive (`info`,
/// `gatehouse=debug,info`, …); `RUST_LOG` wins when set. Logs go to stderr through a background
/// writer thread, so a request never waits on a write to the terminal or the journal; when its
/// queue is full the writer applies back-pressure rather than dropping lines. The thread writes
/// the lines queued during a burst in one system call.
pub fn init(format: LogFormat, level: &str) -> Option<LogGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // The writer thread flushes whenever its queue runs empty, so buffering only batches the
    // lines of a burst into one write; no line waits for a later one.
    let sink = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(sink);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(writer))
            .try_init(),
        LogFormat::Pretty => {
            registry.with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(writer)).try_init()
        }
    };
    installed.ok().map(|_| guard)
}

/// Run blocking work (SQLite, argon2, XML signatures) on the blocking pool, in the current
/// span. A panic inside is re-raised in the caller rather than turned into an error.
pub async fn spawn_blocking_in_span<F, R>(f: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        other => other,
    }
}
