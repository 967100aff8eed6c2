//! The only place that touches rusqlite. One writer connection (one writer at a time, writes in
//! `BEGIN IMMEDIATE` transactions) and a small pool of read-only connections; every statement
//! runs on the blocking pool inside the caller's tracing span. Driver errors become [`DbError`]
//! here; policy is decided elsewhere.

mod alerts;
mod audit;
mod credentials;
mod meta;
pub mod migrate;
mod sessions;
mod sso;
mod users;
mod vault;
mod workspaces;

pub use alerts::{AlertFilter, AlertRow};
pub use audit::{ActorFilter, AuditFilter, AuditHead, AuditRow, CheckpointRow, PurgeCandidate};
pub use credentials::{PatAuthRow, PatRow, SigningKeyRow};
pub use sessions::{ChallengeRow, RefreshRow, SessionRow};
pub use sso::{IdentityRow, LoginRow, ProviderRow};
pub use users::{UserPatch, UserRow};
pub use vault::{SecretRow, SecretVersionRow, VaultKeyRow};
pub use workspaces::{ApiKeyPatch, ApiKeyRow, MemberRow, RoleRow, WorkspaceRow};

use crate::metrics::Metrics;
use crate::telemetry::spawn_blocking_in_span;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("database {path} was written by a newer Gatehouse (schema {found}, this binary knows {supported}); run the newer binary or restore a backup")]
    TooNew { path: String, found: i64, supported: i64 },
    #[error(
        "cannot open database {path}: {detail}; check the path, its permissions and that it is a Gatehouse database"
    )]
    Open { path: String, detail: String },
    #[error("unique constraint violated")]
    Unique,
    #[error("database busy")]
    Busy,
    #[error("database error: {0}")]
    Sqlite(String),
    #[error("database worker failed")]
    Worker,
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => DbError::Unique,
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => DbError::Busy,
            _ => DbError::Sqlite(e.to_string()),
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub read_connections: usize,
}

/// A transaction: writable when it came from [`Db::write`], a read snapshot from [`Db::read`].
/// [`Db`] begins, commits and rolls it back; code holding a `Tx` only runs statements.
#[derive(Debug)]
pub struct Tx<'c> {
    conn: &'c Connection,
}

impl Tx<'_> {
    fn conn(&self) -> &Connection {
        self.conn
    }

    /// Whether the transaction is still open (a failed statement can make SQLite end it).
    pub fn is_open(&self) -> bool {
        !self.conn.is_autocommit()
    }
}

/// A queued write: runs inside the batch's transaction (in a savepoint of its own) and answers
/// what to do once the batch commits or fails.
/// Given the error instead of a transaction when none could be opened.
type Job = Box<dyn FnOnce(Result<&Tx<'_>, DbError>) -> JobDone + Send>;

/// A job's outcome: whether its changes stay, and how to hand the result back once the batch's
/// fate is known (`None` = committed).
struct JobDone {
    keep: bool,
    deliver: Box<dyn FnOnce(Option<DbError>) + Send>,
}

/// Writes waiting for the writer, and whether a drainer is running.
#[derive(Default)]
struct WriteQueue {
    jobs: std::collections::VecDeque<(Job, tracing::Span)>,
    draining: bool,
}

/// Most writes one transaction (one fsync) carries.
const MAX_BATCH: usize = 256;

/// Field order matters: the read-only connections close first, so that the writer closes last,
/// checkpoints the WAL into the database file and removes it.
struct Inner {
    path: String,
    readers: Mutex<Vec<Connection>>,
    read_gate: Semaphore,
    writer: Mutex<Connection>,
    queue: Mutex<WriteQueue>,
    metrics: Option<Arc<Metrics>>,
    caches: Caches,
}

/// Read-through caches of the rows every authenticated request reads (a user, a personal access
/// token), emptied after every committed write, whatever it touched: simple, and a reader never
/// keeps a row a write has changed. A reader stores what it read only if no write committed
/// since it started (the generation is unchanged).
#[derive(Default)]
struct Caches {
    generation: std::sync::atomic::AtomicU64,
    users: std::sync::RwLock<std::collections::HashMap<String, UserRow>>,
    pats: std::sync::RwLock<std::collections::HashMap<[u8; 32], PatAuthRow>>,
}

/// Entries kept per cache before it is emptied.
const CACHE_CAP: usize = 10_000;

impl Caches {
    fn invalidate(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut m) = self.users.write() {
            m.clear();
        }
        if let Ok(mut m) = self.pats.write() {
            m.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn cache_put<K: std::hash::Hash + Eq, V>(
    map: &std::sync::RwLock<std::collections::HashMap<K, V>>,
    caches: &Caches,
    seen: u64,
    key: K,
    value: V,
) {
    if let Ok(mut m) = map.write() {
        if caches.generation() != seen {
            return;
        }
        if m.len() >= CACHE_CAP {
            m.clear();
        }
        m.insert(key, value);
    }
}

/// The database handle (cheap to clone).
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.inner.path).finish()
    }
}

fn configure(conn: &Connection, busy: Duration) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted rows (a destroyed secret, a deleted workspace's data key) are overwritten with
    // zeros in the file, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

fn open_error(path: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Open { path: path.to_string(), detail: e.to_string() }
}

/// Create an empty file readable by the owner only: SQLite gives the -wal and -shm files the
/// same mode as the database.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map(|_| ())
}

/// Open the writer connection: create the file if needed, WAL mode, settings.
fn open_writer(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let shown = path.display().to_string();
    if !path.exists() {
        create_private(path).map_err(|e| open_error(&shown, e))?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(&shown, e))?;
    configure(&conn, busy).map_err(|e| open_error(&shown, e))?;
    // Reading the schema proves the file is a database before anything is written.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(|e| open_error(&shown, e))?;
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| open_error(&shown, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(&shown, format!("journal_mode is {mode}, WAL required")));
    }
    Ok(conn)
}

fn open_reader(path: &Path, busy: Duration) -> Result<Connection, DbError> {
    let shown = path.display().to_string();
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(&shown, e))?;
    configure(&conn, busy).map_err(|e| open_error(&shown, e))?;
    Ok(conn)
}

/// Open a database file for reading without creating or changing any file. A cleanly closed
/// database (no `-wal` file) is opened `immutable`, which takes no lock and creates no `-shm`;
/// one with a WAL (a server running, or a crash) is opened read-only so that the WAL is read.
fn open_untouched(path: &Path) -> Result<Connection, DbError> {
    let shown = path.display().to_string();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if Path::new(&wal).exists() {
        return Connection::open_with_flags(path, flags).map_err(|e| open_error(&shown, e));
    }
    let text = path.to_str().ok_or_else(|| open_error(&shown, "the path is not valid UTF-8"))?;
    let encoded: String = text
        .bytes()
        .map(|b| match b {
            b'%' | b'?' | b'#' | 0x80..=0xff => format!("%{b:02X}"),
            _ => char::from(b).to_string(),
        })
        .collect();
    Connection::open_with_flags(format!("file:{encoded}?immutable=1"), flags).map_err(|e| open_error(&shown, e))
}

/// Check a database file without changing it: it must open, pass `PRAGMA integrity_check`
/// and not be newer than this binary. Returns its schema version.
pub fn inspect(path: &Path) -> Result<i64, DbError> {
    let shown = path.display().to_string();
    let conn = open_untouched(path)?;
    let result: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| open_error(&shown, e))?;
    if result != "ok" {
        let first = result.lines().next().unwrap_or_default();
        return Err(open_error(&shown, format!("integrity check failed: {first}")));
    }
    migrate::check_not_newer(&conn, &shown)
}

impl Db {
    /// Open (creating if needed) and migrate the database. Refuses a database newer than the binary
    /// before writing anything.
    pub fn open(opts: &DbOptions, metrics: Option<Arc<Metrics>>) -> Result<Self, DbError> {
        let shown = opts.path.display().to_string();
        if opts.path.exists() {
            inspect(&opts.path)?;
        }
        let mut writer = open_writer(&opts.path, opts.busy_timeout)?;
        let applied = migrate::run(&mut writer, &shown)?;
        for name in applied {
            tracing::info!(migration = %name, "applied database migration");
        }
        let n = opts.read_connections.max(1);
        let mut readers = Vec::with_capacity(n);
        for _ in 0..n {
            readers.push(open_reader(&opts.path, opts.busy_timeout)?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: shown,
                writer: Mutex::new(writer),
                queue: Mutex::new(WriteQueue::default()),
                readers: Mutex::new(readers),
                read_gate: Semaphore::new(n),
                metrics,
                caches: Caches::default(),
            }),
        })
    }

    fn observe(&self, op: &'static str, started: Instant) {
        if let Some(m) = &self.inner.metrics {
            m.observe_db(op, started.elapsed());
        }
    }

    /// Run `f` in a write transaction (`BEGIN IMMEDIATE`) on the blocking pool; its changes are
    /// committed when it returns `Ok`, rolled back otherwise. One writer at a time.
    ///
    /// Group commit: writes that arrive while another batch is being written wait in a queue and
    /// then go together in one transaction (one fsync), each in a savepoint of its own, so that
    /// one that fails rolls back alone. A result is handed back only after its batch committed;
    /// if the commit fails, every write of the batch fails.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        type Answer<T, E> = std::thread::Result<Result<T, E>>;
        let (send, recv) = tokio::sync::oneshot::channel::<Answer<T, E>>();
        let job: Job = Box::new(move |tx| {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    return JobDone {
                        keep: false,
                        deliver: Box::new(move |_| {
                            let _ = send.send(Ok(Err(E::from(e))));
                        }),
                    }
                }
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx))) {
                Ok(Ok(value)) => JobDone {
                    keep: true,
                    deliver: Box::new(move |failed| {
                        let _ = send.send(Ok(match failed {
                            None => Ok(value),
                            Some(e) => Err(E::from(e)),
                        }));
                    }),
                },
                Ok(Err(e)) => JobDone {
                    keep: false,
                    deliver: Box::new(move |_| {
                        let _ = send.send(Ok(Err(e)));
                    }),
                },
                Err(panic) => JobDone {
                    keep: false,
                    deliver: Box::new(move |_| {
                        let _ = send.send(Err(panic));
                    }),
                },
            }
        });
        let started = Instant::now();
        let lead = {
            let mut q = self.inner.queue.lock().map_err(|_| DbError::Worker)?;
            q.jobs.push_back((job, tracing::Span::current()));
            !std::mem::replace(&mut q.draining, true)
        };
        if lead {
            let weak = Arc::downgrade(&self.inner);
            tokio::task::spawn_blocking(move || drain(weak));
        }
        let out = match recv.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(E::from(DbError::Worker)),
        };
        self.observe("write", started);
        out
    }

    /// A user by id, from the cache when no write happened since it was read.
    pub async fn user_cached(&self, id: &str) -> Result<Option<UserRow>, DbError> {
        if let Some(u) = self.inner.caches.users.read().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(Some(u));
        }
        let seen = self.inner.caches.generation();
        let key = id.to_string();
        let row = self.read(move |tx| tx.user_by_id(&key)).await?;
        if let Some(u) = &row {
            cache_put(&self.inner.caches.users, &self.inner.caches, seen, id.to_string(), u.clone());
        }
        Ok(row)
    }

    /// A view of a user by id (from the cache when current), without copying the whole row.
    pub async fn user_cached_map<R>(&self, id: &str, f: impl FnOnce(&UserRow) -> R) -> Result<Option<R>, DbError> {
        if let Ok(m) = self.inner.caches.users.read() {
            if let Some(u) = m.get(id) {
                return Ok(Some(f(u)));
            }
        }
        Ok(self.user_cached(id).await?.as_ref().map(f))
    }

    /// A personal access token by hash, from the cache when no write happened since it was read.
    pub async fn pat_cached(&self, hash: [u8; 32]) -> Result<Option<PatAuthRow>, DbError> {
        if let Some(p) = self.inner.caches.pats.read().ok().and_then(|m| m.get(&hash).cloned()) {
            return Ok(Some(p));
        }
        let seen = self.inner.caches.generation();
        let row = self.read(move |tx| tx.pat_by_hash(&hash)).await?;
        if let Some(p) = &row {
            cache_put(&self.inner.caches.pats, &self.inner.caches, seen, hash, p.clone());
        }
        Ok(row)
    }

    /// Run `f` in a read-only snapshot on the blocking pool.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let _permit = self.inner.read_gate.acquire().await.map_err(|_| DbError::Worker)?;
        let inner = self.inner.clone();
        let started = Instant::now();
        let out = spawn_blocking_in_span(move || {
            let conn = {
                let mut pool = inner.readers.lock().map_err(|_| DbError::Worker)?;
                pool.pop().ok_or(DbError::Worker)?
            };
            let result = (|| {
                conn.execute_batch("BEGIN DEFERRED").map_err(DbError::from)?;
                let result = f(&Tx { conn: &conn });
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                result
            })();
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| E::from(DbError::Worker))
        .and_then(|r| r);
        self.observe("read", started);
        out
    }

    /// Whether the database accepts a write transaction right now (for `/readyz`).
    /// It writes (and commits) one small row, so a read-only file or a full disk shows here.
    pub async fn check_writable(&self, now_ms: i64) -> Result<(), DbError> {
        self.write(move |tx| tx.meta_set("ready_probe_ms", &now_ms.to_string())).await
    }

    /// Copy the live database to `dest` with SQLite's online backup API: consistent while the
    /// server keeps writing. `dest` must not exist.
    pub async fn backup_to(&self, dest: PathBuf) -> Result<(), DbError> {
        let inner = self.inner.clone();
        spawn_blocking_in_span(move || {
            let conn = inner.writer.lock().map_err(|_| DbError::Worker)?;
            backup_connection(&conn, &dest)
        })
        .await
        .map_err(|_| DbError::Worker)?
    }

    /// Fold the WAL back into the database file and truncate it (after a secret is destroyed,
    /// so that no old copy of its pages stays in the WAL). Best effort while readers are busy.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        let inner = self.inner.clone();
        spawn_blocking_in_span(move || {
            // Holding the writer keeps batched writes out meanwhile.
            let conn = inner.writer.lock().map_err(|_| DbError::Worker)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(DbError::from)
        })
        .await
        .map_err(|_| DbError::Worker)?
    }

    /// A number that changes after every committed write: a value read when it had one value is
    /// current for as long as it keeps it (the domain's own caches use it).
    pub fn generation(&self) -> u64 {
        self.inner.caches.generation()
    }

    pub fn path(&self) -> &str {
        &self.inner.path
    }
}

/// A result to hand back, once the batch's fate is known.
type Delivery = (Box<dyn FnOnce(Option<DbError>) + Send>, Option<DbError>);

/// Run queued writes until the queue is empty, one batch per transaction. The drainer holds the
/// database only while it writes: results are handed back after it let go, so that the caller
/// dropping the last handle closes the database there and then (the WAL is folded back).
fn drain(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let batch: Vec<(Job, tracing::Span)> = {
            let Ok(mut q) = inner.queue.lock() else { return };
            if q.jobs.is_empty() {
                q.draining = false;
                return;
            }
            let n = q.jobs.len().min(MAX_BATCH);
            q.jobs.drain(..n).collect()
        };
        let deliveries = match inner.writer.lock() {
            Ok(conn) => run_batch(&inner, &conn, batch),
            // A poisoned writer: dropping the jobs answers each with a worker error.
            Err(_) => Vec::new(),
        };
        let last = match inner.queue.lock() {
            Ok(mut q) if q.jobs.is_empty() => {
                q.draining = false;
                true
            }
            Ok(_) => false,
            Err(_) => true,
        };
        drop(inner);
        for (deliver, failed) in deliveries {
            deliver(failed);
        }
        if last {
            return;
        }
    }
}

/// One transaction for `batch`: each job in a savepoint; commit. Returns the results to hand back.
fn run_batch(inner: &Inner, conn: &Connection, batch: Vec<(Job, tracing::Span)>) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    let mut done: Vec<JobDone> = Vec::new();
    let mut open = false;
    for (job, span) in batch {
        let _entered = span.enter();
        if !open {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                out.push((job(Err(DbError::from(e))).deliver, None));
                continue;
            }
            open = true;
        }
        if let Err(e) = run_cached(conn, "SAVEPOINT gatehouse_write") {
            out.push((job(Err(DbError::from(e))).deliver, None));
            continue;
        }
        let outcome = job(Ok(&Tx { conn }));
        if conn.is_autocommit() {
            // The statement's error made SQLite roll the whole transaction back: every earlier
            // job of the batch lost its changes too.
            let lost = DbError::Sqlite("the transaction was rolled back by an error in a write batched with it".into());
            fail_all(conn, std::mem::take(&mut done), &lost, &mut out);
            out.push((outcome.deliver, Some(lost)));
            open = false;
            continue;
        }
        let undo = if outcome.keep {
            run_cached(conn, "RELEASE gatehouse_write")
        } else {
            conn.execute_batch("ROLLBACK TO gatehouse_write; RELEASE gatehouse_write")
        };
        if let Err(e) = undo {
            let e = DbError::from(e);
            fail_all(conn, std::mem::take(&mut done), &e, &mut out);
            out.push((outcome.deliver, Some(e)));
            open = false;
            continue;
        }
        done.push(outcome);
    }
    if open {
        let committed = conn.execute_batch("COMMIT").map_err(DbError::from);
        inner.caches.invalidate();
        match committed {
            Ok(()) => out.extend(done.into_iter().map(|d| (d.deliver, None))),
            Err(e) => fail_all(conn, done, &e, &mut out),
        }
    }
    out
}

/// Run a statement without parsing it again each time (savepoints, once per write).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Roll back the open transaction (if SQLite has not already) and fail every job in it.
fn fail_all(conn: &Connection, done: Vec<JobDone>, e: &DbError, out: &mut Vec<Delivery>) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out.extend(done.into_iter().map(|d| (d.deliver, Some(e.clone()))));
}

/// Back up an open connection into a new file.
fn backup_connection(conn: &Connection, dest: &Path) -> Result<(), DbError> {
    if dest.exists() {
        return Err(DbError::Sqlite(format!("{} already exists; choose a new file name", dest.display())));
    }
    create_private(dest).map_err(|e| open_error(&dest.display().to_string(), e))?;
    let result = copy_into(conn, dest);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn copy_into(conn: &Connection, dest: &Path) -> Result<(), DbError> {
    let mut out = Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(conn, &mut out)?;
        backup.run_to_completion(i32::MAX, Duration::from_millis(5), None)?;
    }
    out.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// Back up a database file that no server has open (the `backup` command when offline).
/// Online backup through a separate connection is consistent too: SQLite restarts the copy
/// when another connection writes during it.
pub fn backup_file(src: &Path, dest: &Path) -> Result<(), DbError> {
    let shown = src.display().to_string();
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| open_error(&shown, e))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    backup_connection(&conn, dest)
}

/// Replace the database at `dest` with the checked copy at `src` (the server must be stopped).
/// The copy is written to a private temporary file beside `dest`, synced, and renamed over it,
/// so a damaged `dest` (the reason to restore) is never opened, and a failure leaves it as it was.
pub fn restore_file(src: &Path, dest: &Path) -> Result<(), DbError> {
    let shown = dest.display().to_string();
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".restore-tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    create_private(&tmp).map_err(|e| open_error(&shown, e))?;
    let result = (|| {
        copy_into(&open_untouched(src)?, &tmp)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| open_error(&shown, e))?;
        for suffix in ["-wal", "-shm"] {
            let mut stale = dest.as_os_str().to_owned();
            stale.push(suffix);
            match std::fs::remove_file(PathBuf::from(stale)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(open_error(&shown, e)),
            }
        }
        std::fs::rename(&tmp, dest).map_err(|e| open_error(&shown, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Read one `meta` value from a database file without changing it (checks before `restore`).
pub fn read_meta(path: &Path, key: &str) -> Result<Option<String>, DbError> {
    use rusqlite::OptionalExtension;
    let conn = open_untouched(path)?;
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts =
            DbOptions { path: dir.path().join("t.db"), busy_timeout: Duration::from_secs(5), read_connections: 2 };
        let db = Db::open(&opts, None).expect("open");
        (dir, db)
    }

    /// Many concurrent writes, some failing: the failing ones change nothing, the others all
    /// commit, whatever batch they shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batched_writes_commit_or_roll_back_alone() {
        let (_dir, db) = open_temp();
        let mut tasks = Vec::new();
        for i in 0..400 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |tx| {
                    tx.meta_set(&format!("k{i}"), "v")?;
                    if i % 3 == 0 {
                        return Err(DbError::Sqlite("refused".into()));
                    }
                    Ok::<_, DbError>(i)
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.expect("task");
            assert_eq!(r.is_ok(), i % 3 != 0, "{i}: {r:?}");
        }
        let kept = db
            .read(|tx| {
                let mut n = 0;
                for i in 0..400 {
                    if tx.meta_get(&format!("k{i}"))?.is_some() {
                        assert!(i % 3 != 0, "k{i} was written by a failed write");
                        n += 1;
                    }
                }
                Ok::<_, DbError>(n)
            })
            .await
            .expect("read");
        assert_eq!(kept, 400 - 134);
    }

    /// A write that panics rolls back alone and the panic reaches its caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_changes_nothing() {
        let (_dir, db) = open_temp();
        let db2 = db.clone();
        let panicked = tokio::spawn(async move {
            db2.write(|tx| {
                tx.meta_set("boom", "v")?;
                if tx.meta_get("boom")?.is_some() {
                    panic!("write failed");
                }
                Ok::<_, DbError>(())
            })
            .await
        })
        .await;
        assert!(panicked.is_err());
        db.write(|tx| tx.meta_set("after", "v")).await.expect("the writer still works");
        let boom = db.read(|tx| tx.meta_get("boom")).await.expect("read");
        assert_eq!(boom, None);
    }
}
