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

/// A small pool of threads for CPU-heavy work (password hashing) that runs at a lower
/// scheduling priority (nice 10) than the request workers: a login flood then uses the CPU the
/// requests leave idle instead of taking it from them. Callers bound what they submit (the
/// hashing semaphore); a job runs inside the caller's span and its panic is re-raised as an
/// error.
pub struct LowPriorityPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for LowPriorityPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LowPriorityPool")
    }
}

impl LowPriorityPool {
    /// Start `threads` worker threads named `name`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(name.to_string()).spawn(move || {
                // Linux: the nice value is per thread; lowering it needs no privilege.
                // SAFETY: two system calls that take integers and touch no memory of ours.
                #[allow(unsafe_code)]
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 10);
                }
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self { jobs: std::sync::Mutex::new(tx) })
    }

    /// Run `f` on the pool inside the current span.
    pub async fn run<F, R>(&self, f: F) -> Result<R, String>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let span = tracing::Span::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _entered = span.enter();
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out);
        });
        self.jobs.lock().map_err(|_| "pool poisoned".to_string())?.send(job).map_err(|_| "pool stopped".to_string())?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("a pool job panicked".into()),
            Err(_) => Err("a pool job was dropped".into()),
        }
    }
}
