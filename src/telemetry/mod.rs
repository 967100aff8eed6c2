//! Tracing set-up (pretty or JSON lines) and `spawn_blocking_in_span`, which runs blocking work
//! on tokio's blocking pool inside the caller's span and re-raises its panics.
//!
//! What reaches a log: request id, method, route template, status, latency, principal, and the
//! messages written by Gatehouse. Never headers, bodies, query strings or secret values.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

mod line;

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

/// Keeps the background log writer alive; dropping it writes out what is queued.
pub struct LogGuard {
    sink: Arc<Sink>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.sink.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long a line may wait for the lines after it, so that a burst goes out in one write.
const GATHER: Duration = Duration::from_millis(10);
/// Past this many queued bytes the writer goes at once; past `BACKPRESSURE` the caller itself
/// writes (and so waits) rather than letting the queue grow or dropping lines.
const FLUSH_BYTES: usize = 64 * 1024;
const BACKPRESSURE: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    urgent: bool,
    closed: bool,
}

/// Log lines on their way to stderr. Appending a line takes a lock and copies it; the writer
/// thread is woken only when the queue goes from empty to not empty (then it waits `GATHER` for
/// the rest of the burst), for a warning or an error (written at once), and at shutdown. Under
/// load that is one wake-up and one write per `GATHER` instead of one per line.
#[derive(Default)]
struct Sink {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held while queued bytes are written, so that lines reach stderr in the order queued.
    output: Mutex<()>,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8], urgent: bool) {
        let mut q = self.lock();
        let was_empty = q.lines.is_empty();
        q.lines.extend_from_slice(line);
        let full = q.lines.len() >= FLUSH_BYTES;
        let overflowing = q.lines.len() >= BACKPRESSURE;
        if urgent || full {
            q.urgent = true;
        }
        drop(q);
        if overflowing {
            self.write_out();
        } else if was_empty || urgent || full {
            self.wake.notify_one();
        }
    }

    /// Write everything queued so far.
    fn write_out(&self) {
        let _order = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = std::mem::take(&mut self.lock().lines);
        if !lines.is_empty() {
            let mut err = std::io::stderr().lock();
            // Nowhere to report a failed log write; the next line tries again.
            let _ = err.write_all(&lines);
            let _ = err.flush();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let mut q = self.lock();
            while q.lines.is_empty() && !q.closed {
                q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            if !q.urgent && !q.closed {
                q = self.wake.wait_timeout(q, GATHER).unwrap_or_else(PoisonError::into_inner).0;
            }
            q.urgent = false;
            let closed = q.closed;
            drop(q);
            self.write_out();
            if closed {
                return;
            }
        }
    }
}

/// The `MakeWriter` the fmt layer formats each event into; each event arrives as one write. It
/// borrows the sink (no reference count to touch from both workers on every line).
struct SinkWriter<'a> {
    sink: &'a Sink,
    urgent: bool,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.push(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Clone)]
struct MakeSinkWriter(Arc<Sink>);

impl<'a> MakeWriter<'a> for MakeSinkWriter {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter { sink: &self.0, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SinkWriter<'a> {
        SinkWriter { sink: &self.0, urgent: *meta.level() <= Level::WARN }
    }
}

/// Install the global subscriber. `level` is an `EnvFilter` directive (`info`,
/// `gatehouse=debug,info`, …); `RUST_LOG` wins when set. Logs go to stderr through a background
/// writer thread (see `Sink`), so a request never waits on a write to the terminal or the
/// journal; a line waits at most `GATHER` (10 ms), warnings and errors not at all.
pub fn init(format: LogFormat, level: &str) -> Option<LogGuard> {
    let sink = Arc::new(Sink::default());
    let thread = {
        let sink = sink.clone();
        std::thread::Builder::new().name("gatehouse-log".into()).spawn(move || sink.run()).ok()?
    };
    let guard = LogGuard { sink: sink.clone(), thread: Some(thread) };
    let line = line::LineFormat { json: format == LogFormat::Json };
    let writer = MakeSinkWriter(sink);
    // `RUST_LOG` when set, else the configured level. A plain list of `target=level` directives
    // (the usual case) becomes a static `Targets` filter, which costs nothing when a span is
    // entered or left; directives on spans or fields need an `EnvFilter`.
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let directives = from_env.as_deref().unwrap_or(level);
    let installed = match directives.parse::<Targets>() {
        Ok(targets) => tracing_subscriber::registry().with(targets).with(fmt_layer(line, writer)).try_init(),
        Err(_) => {
            let env = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new(level));
            tracing_subscriber::registry().with(env).with(fmt_layer(line, writer)).try_init()
        }
    };
    installed.ok().map(|_| guard)
}

fn fmt_layer<S>(
    line: line::LineFormat,
    writer: MakeSinkWriter,
) -> fmt::Layer<S, line::LineFormat, line::LineFormat, MakeSinkWriter>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer().with_ansi(false).fmt_fields(line).event_format(line).with_writer(writer)
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
