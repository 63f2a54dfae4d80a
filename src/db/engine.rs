//! The SQLite database: one writer, owned by one thread, and a pool of readers.
//!
//! Owns: the database file (WAL mode, rebuilt from snapshot + log at every start, never
//! fsynced: the Raft log is the durable copy), the read-write connection that applies every
//! write in log order, checkpoints, file images (validate, restore, consistent copies) and
//! the SQL dump; and [`Db`], the handle through which async code sends jobs to the thread that
//! owns the writer. Reads run on [`ReadPool`] connections, so a slow read never holds up a
//! write or another read (WAL: readers see the last commit and never block the writer).
//! Does not: rewrite SQL (`rewrite.rs`), reject pragmas (`classify.rs`) or know about Raft.
//!
//! The read-only connections are what make `/db/query` unable to write, whatever the SQL
//! says; classification is SQLite's `sqlite3_stmt_readonly`, never a string prefix.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, MAIN_DB};

use super::conn::{self, SqlConn};
use super::exec::{self, Limit, Mode};
use super::image::{open_image, to_rollback_header, validate_image};
use super::reads::ReadPool;
use super::DbError;
use crate::command::{Outcome, Request, StmtResult};
use crate::metrics::Metrics;

/// Settings of the database itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// Enforce foreign keys (rqlite's `-fk`; off by default, as in rqlite).
    pub fk: bool,
    /// The database file. `None`: a private file in a new temporary directory, removed with
    /// the engine (tests and tools).
    pub path: Option<PathBuf>,
    /// Read-only connections open at most (`-db-max-ro-conns`).
    pub read_conns: usize,
    /// Time limit of a read statement when the request sets no `db_timeout` (`-db-timeout`).
    pub read_timeout: Option<Duration>,
    /// SQLite extensions loaded into every connection (`-extensions-path`, staged files).
    pub extensions: Vec<PathBuf>,
    /// WAL size past which it is checkpointed into the database file (`-raft-snap-wal-size`).
    pub wal_checkpoint_bytes: u64,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            fk: false,
            path: None,
            read_conns: 8,
            read_timeout: None,
            extensions: Vec::new(),
            wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
        }
    }
}

/// The database's writer. Used from one thread only (see [`Db`]).
pub struct Engine {
    pub(super) rw: SqlConn,
    path: PathBuf,
    reads: Arc<ReadPool>,
    pub(super) config: DbConfig,
    _temp: Option<TempDir>,
    /// Counts checkpoints into `db` (counters of its own unless [`Engine::count_into`]).
    metrics: Arc<Metrics>,
    /// Row changes captured for CDC (see [`Engine::capture_changes`]).
    capture: Option<Arc<super::capture::Capture>>,
}

/// The WAL is checkpointed into the database file once it grows past this (rqlite's
/// `-raft-snap-wal-size` default), so it never grows without bound.
pub const WAL_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The message of the result added when a request left a transaction open.
pub const LEFT_OPEN: &str =
    "transaction left open at the end of the request: rolled back (a request must COMMIT or ROLLBACK what it BEGINs)";

impl Engine {
    /// Creates a new, empty database (replacing whatever file was at the path).
    pub fn open(config: &DbConfig) -> Result<Engine, DbError> {
        let (path, temp) = match &config.path {
            Some(p) => (p.clone(), None),
            None => {
                let t = TempDir::new()?;
                (t.0.join("db.sqlite"), Some(t))
            }
        };
        let rw = conn::open_writer(&path, config.fk, &config.extensions)?;
        let reads = Arc::new(
            ReadPool::new(
                path.clone(),
                config.fk,
                config.read_conns,
                config.read_timeout,
            )
            .with_extensions(config.extensions.clone()),
        );
        Ok(Engine {
            rw,
            path,
            reads,
            config: config.clone(),
            _temp: temp,
            metrics: Arc::default(),
            capture: None,
        })
    }

    /// Captures the row changes of every write from here on (`-cdc-config`); the state
    /// machine collects them per log entry with [`Engine::take_changes`].
    pub fn capture_changes(&mut self, capture: Arc<super::capture::Capture>) {
        capture.install(&self.rw.conn);
        self.rw.capture = Some(capture.clone());
        self.capture = Some(capture);
    }

    /// The row changes committed since the last call (none without capture).
    pub fn take_changes(&mut self) -> Vec<super::capture::RowChange> {
        self.capture.as_ref().map(|c| c.take()).unwrap_or_default()
    }

    /// Makes `rw` the writer, with the capture hooked onto it.
    fn set_writer(&mut self, rw: SqlConn) {
        self.rw = rw;
        if let Some(c) = &self.capture {
            c.install(&self.rw.conn);
            self.rw.capture = Some(c.clone());
        }
    }

    /// Counts into the node's `metrics` from here on.
    pub fn count_into(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// The pool that serves reads; usable from any thread.
    pub fn reads(&self) -> Arc<ReadPool> {
        self.reads.clone()
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/db/execute` on the writer, without a budget; a node failure becomes an error result.
    pub fn execute(&mut self, req: &Request) -> Vec<StmtResult> {
        self.write(req, Mode::Execute, 0)
            .unwrap_or_else(|e| vec![error_result(e)])
    }

    /// `/db/request` on the writer, without a budget; a node failure becomes an error result.
    pub fn request(&mut self, req: &Request) -> Vec<StmtResult> {
        self.write(req, Mode::Request, 0)
            .unwrap_or_else(|e| vec![error_result(e)])
    }

    /// The requests of one log entry's batch, each `/db/execute` of plain row writes with
    /// its own budget, applied as [`Engine::write`] would apply them one after the other,
    /// but sharing SQLite transactions ([`exec::run_grouped`]). `Ok(None)`: nothing was run;
    /// apply them one by one.
    pub(crate) fn write_grouped(
        &mut self,
        units: &[(&Request, u64)],
    ) -> Result<Option<Vec<Vec<StmtResult>>>, DbError> {
        let units: Vec<(&Request, Limit)> = units
            .iter()
            .map(|&(req, max_steps)| (req, Limit::Steps { max_steps }))
            .collect();
        let r = exec::run_grouped(&self.rw, &units, Mode::Execute);
        self.rw.settle_statements();
        if let Some(failure) = self.rw.guard().take_node_failure() {
            return Err(DbError::NodeFailure(failure));
        }
        self.maybe_checkpoint();
        Ok(r)
    }

    /// Runs a request on the writer, as applied from the log, within `max_steps` VM steps
    /// (0 = unlimited): [`Mode::Execute`] for `/db/execute` (every statement execute-shaped
    /// unless `force_query`), [`Mode::Request`] for `/db/request` (read-only and `force_query`
    /// statements query-shaped, the rest execute-shaped, all on the writer so that reads see
    /// the request's own writes). It enforces the rule that makes every log entry
    /// self-contained: a request cannot leave a transaction open for the next one. Whatever
    /// is still open when its statements end (a `BEGIN` without `COMMIT`, a `SAVEPOINT`
    /// without `RELEASE`, an error inside the client's own transaction) is rolled back, as
    /// SQLite does when a connection closes, and one more result says so. Every node applies
    /// the same entry and reaches the same verdict.
    ///
    /// A statement that failed because of this node (disk full, I/O error) fails the whole
    /// apply instead ([`DbError::NodeFailure`]): the other nodes apply the entry without that
    /// failure, so it must not become this node's outcome.
    pub(crate) fn write(
        &mut self,
        req: &Request,
        mode: Mode,
        max_steps: u64,
    ) -> Result<Vec<StmtResult>, DbError> {
        let mut results = exec::run_request(
            &self.rw,
            req,
            mode,
            req.transaction,
            &Limit::Steps { max_steps },
        );
        if !self.rw.conn.is_autocommit() {
            let start = Instant::now();
            let _ = self.rw.conn.execute_batch("ROLLBACK");
            results.push(StmtResult {
                outcome: Outcome::Error(LEFT_OPEN.to_string()),
                time: start.elapsed().as_secs_f64(),
            });
        }
        // Settings a request changed (a pragma) end with it, as its transaction does: they
        // are not in snapshots, so a node restored from one would otherwise apply the next
        // entries differently from the others.
        if self.rw.guard().take_changed_settings() {
            if let Err(e) = conn::reset_settings(&self.rw.conn, self.config.fk) {
                tracing::error!(error = %e, "cannot reset the writer's settings");
            }
            // The reset's own pragmas pass the authorizer too; they must not mark the writer
            // changed again, or every later request pays for another reset.
            self.rw.guard().take_changed_settings();
        }
        self.rw.settle_statements();
        if let Some(failure) = self.rw.guard().take_node_failure() {
            return Err(DbError::NodeFailure(failure));
        }
        self.maybe_checkpoint();
        Ok(results)
    }

    /// `/db/query` on a reader (blocking; async callers use [`ReadPool::query`]).
    pub fn query(&self, req: &Request) -> Vec<StmtResult> {
        self.reads
            .run_blocking(|c, limit| exec::run_request(c, req, Mode::Query, false, limit))
            .unwrap_or_else(|e| vec![error_result(e)])
    }

    /// True when every statement is read-only by SQLite's own verdict (see
    /// [`ReadPool::is_read_only`]).
    pub fn is_read_only(&self, req: &Request) -> bool {
        self.reads
            .run_blocking(|c, _| super::reads::read_only(c, req))
            .unwrap_or(false)
    }

    /// The database as a SQLite file image in rollback-journal form (opens anywhere without
    /// `-wal`/`-shm` files).
    pub fn serialize(&mut self) -> Result<Vec<u8>, DbError> {
        let mut image = self.rw.conn.serialize(MAIN_DB)?.to_vec();
        to_rollback_header(&mut image);
        Ok(image)
    }

    /// Replaces the whole database with `image`, after validating it. The copy goes through
    /// SQLite's backup API into the live database, so readers keep working and see either
    /// the old or the new database, never a mix.
    pub fn restore(&mut self, image: &[u8]) -> Result<(), DbError> {
        let mut src = open_image(image)?;
        self.restore_from(&mut src)
    }

    /// [`Engine::restore`] from a database file (a snapshot). When no read is running (at
    /// start, for one), the file is copied in place of the database; otherwise its pages are
    /// copied into the live database, as for an image.
    pub fn restore_file(&mut self, file: &Path) -> Result<(), DbError> {
        let reads = self.reads.clone();
        if let Some(_quiet) = reads.quiesce() {
            // Close the writer (the last connection: SQLite removes its WAL) before the file
            // it has open is replaced.
            self.rw = SqlConn::in_memory()?;
            let (fk, ext) = (self.config.fk, &self.config.extensions);
            return match conn::open_writer_copy(&self.path, file, fk, ext) {
                Ok(rw) => {
                    self.set_writer(rw);
                    Ok(())
                }
                Err(e) => {
                    // Never leave the engine without its database: an empty one, as at
                    // start (the caller fails the install, and the node stops).
                    let rw = conn::open_writer(&self.path, fk, ext)?;
                    self.set_writer(rw);
                    Err(e)
                }
            };
        }
        let mut src = conn::open_internal_reader(file)?;
        self.restore_from(&mut src)
    }

    fn restore_from(&mut self, src: &mut Connection) -> Result<(), DbError> {
        if !self.rw.conn.is_autocommit() {
            let _ = self.rw.conn.execute_batch("ROLLBACK");
        }
        self.rw.forget_statements();
        // A WAL database can only take pages of its own size: an image with another page
        // size is rewritten first (in memory), the same way on every node.
        let want: i64 = self
            .rw
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        let have: i64 = src.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let scratch;
        let mut converted;
        let src: &Connection = if have != want {
            scratch = TempDir::new()?;
            converted = Connection::open(scratch.0.join("convert.sqlite"))?;
            converted.pragma_update(None, "page_size", want)?;
            {
                // Copying into an empty database would adopt the source's page size; a
                // dump-free way to change it is to copy, then VACUUM with the new size.
                let b = Backup::new(src, &mut converted)?;
                finish(b.step(-1)?)?;
            }
            converted.execute_batch(&format!("PRAGMA page_size = {want}; VACUUM;"))?;
            &converted
        } else {
            src
        };
        {
            let b = Backup::new(src, &mut self.rw.conn)?;
            finish(b.step(-1)?)?;
        }
        // The copy went through the WAL: move it into the database file and shrink the WAL
        // now (waiting briefly for readers), not one passive checkpoint at a time.
        if let Err(e) = self.checkpoint_mode("TRUNCATE") {
            tracing::warn!(error = %e, "WAL checkpoint after a restore failed");
        }
        Ok(())
    }

    /// Same as the free function [`validate_image`], for callers holding only the type.
    pub fn validate_image(image: &[u8]) -> Result<(), DbError> {
        validate_image(image)
    }

    /// A SQL text dump in the format of rqlite's `/db/backup?fmt=sql`.
    pub fn dump(&mut self, tables: Option<&[String]>) -> Result<String, DbError> {
        dump_at(&self.path, tables)
    }

    /// A consistent binary copy of the database; with `vacuum`, a compacted one.
    pub fn backup_image(&mut self, vacuum: bool) -> Result<Vec<u8>, DbError> {
        backup_at(&self.path, vacuum)
    }

    /// Starts a read that sees the database exactly as it is now, for a snapshot that must
    /// match the applied log position; copying it ([`PinnedRead::copy_to`]) can then happen
    /// on another thread while writes go on.
    pub fn pin(&self) -> Result<PinnedRead, DbError> {
        let c = conn::open_internal_reader(&self.path)?;
        c.execute_batch("BEGIN")?;
        // A deferred transaction takes its snapshot at the first read.
        c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(PinnedRead { conn: c })
    }

    /// Checkpoints the WAL into the database file once it has grown past a few MiB.
    pub(super) fn maybe_checkpoint(&mut self) {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > self.config.wal_checkpoint_bytes) {
            self.checkpoint();
        }
    }

    /// A passive checkpoint: never waits for readers; frames they still use stay in the WAL.
    fn checkpoint(&mut self) {
        if let Err(e) = self.checkpoint_mode("PASSIVE") {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }

    /// Runs `PRAGMA wal_checkpoint(<mode>)`, counted as rqlite counts its checkpoints: the
    /// WAL's frames (`checkpointed_pages`) and those moved into the database
    /// (`checkpointed_moves`).
    fn checkpoint_mode(&mut self, mode: &str) -> Result<(), rusqlite::Error> {
        let started = Instant::now();
        let c = &self.metrics.db;
        let r = self
            .rw
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            });
        match r {
            Ok((log, moved)) => {
                c.checkpoints.inc();
                c.checkpoint_duration.set_millis(started.elapsed());
                c.checkpointed_pages.add(u64::try_from(log).unwrap_or(0));
                c.checkpointed_moves.add(u64::try_from(moved).unwrap_or(0));
                Ok(())
            }
            Err(e) => {
                c.checkpoint_errors.inc();
                Err(e)
            }
        }
    }

    /// Moves the whole WAL into the database file and empties it (`/reap`), waiting for
    /// readers up to the busy timeout. Returns whether the WAL held frames and all of them
    /// moved.
    pub fn checkpoint_all(&mut self) -> Result<bool, DbError> {
        // TRUNCATE reports the WAL as empty once it succeeds; a passive pass first tells
        // how many frames there were.
        let frames = |mode: &str| {
            self.rw
                .conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
        };
        let (_, before) = frames("PASSIVE")?;
        if before <= 0 {
            return Ok(false);
        }
        let (busy, _) = frames("TRUNCATE")?;
        Ok(busy == 0)
    }

    /// Brings the writer back to a known state after a job panicked part-way: an open
    /// transaction is rolled back.
    fn recover(&mut self) {
        if !self.rw.conn.is_autocommit() {
            let _ = self.rw.conn.execute_batch("ROLLBACK");
        }
        self.rw.forget_statements();
    }
}

/// A SQL text dump of the database at `path`, read in one transaction on a connection of its
/// own (any thread; writes go on meanwhile).
pub fn dump_at(path: &Path, tables: Option<&[String]>) -> Result<String, DbError> {
    let c = conn::open_internal_reader(path)?;
    super::dump::dump(&c, tables)
}

/// A consistent binary copy of the database at `path` (rollback-journal form); with
/// `vacuum`, a compacted one. Any thread; writes go on meanwhile.
pub fn backup_at(path: &Path, vacuum: bool) -> Result<Vec<u8>, DbError> {
    let c = conn::open_internal_reader(path)?;
    let mut image = if vacuum {
        let dir = TempDir::new()?;
        let out = dir.0.join("vacuum.sqlite");
        c.execute("VACUUM INTO ?1", [out.to_string_lossy()])?;
        std::fs::read(&out).map_err(|e| DbError::Io(format!("{}: {e}", out.display())))?
    } else {
        c.serialize(MAIN_DB)?.to_vec()
    };
    to_rollback_header(&mut image);
    Ok(image)
}

/// A read transaction holding one consistent view of the database.
pub struct PinnedRead {
    conn: Connection,
}

impl PinnedRead {
    /// Writes the pinned view to a new database file at `dest`, page by page, and syncs it.
    pub fn copy_to(self, dest: &Path) -> Result<(), DbError> {
        let io = |e: std::io::Error| DbError::Io(format!("{}: {e}", dest.display()));
        {
            let mut out = Connection::open(dest)
                .map_err(|e| DbError::Io(format!("cannot create {}: {e}", dest.display())))?;
            {
                let b = Backup::new(&self.conn, &mut out)?;
                finish(b.step(-1)?)?;
            }
            // A standalone file: no WAL, so it opens read-only without -wal/-shm files.
            out.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        }
        let _ = self.conn.execute_batch("COMMIT");
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(io)
    }
}

fn finish(step: StepResult) -> Result<(), DbError> {
    match step {
        StepResult::Done => Ok(()),
        other => Err(DbError::Sqlite(format!("copy did not complete: {other:?}"))),
    }
}

fn error_result(e: DbError) -> StmtResult {
    StmtResult {
        outcome: Outcome::Error(e.to_string()),
        time: 0.0,
    }
}

/// A directory of this process's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, DbError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sqlraft-db-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| DbError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A job for the database thread.
type Job = Box<dyn FnOnce(&mut Engine) + Send + 'static>;

/// A cloneable handle to the thread that owns the [`Engine`]. Jobs run one at a time, in
/// the order they were sent; the thread ends when the last handle is dropped.
///
/// # Invariants
/// - A job that panics is reported to its caller as an error (`database job panicked: ...`);
///   the thread rolls back any open transaction and keeps serving.
/// - A job whose caller stopped waiting still runs to completion (its result is dropped),
///   so a write that was sent is never half-applied because a client went away.
#[derive(Clone, Debug)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Starts the database thread. Should the OS refuse a thread, the error is logged and
    /// every call answers [`DbError::Closed`].
    pub fn spawn(engine: Engine) -> Db {
        let (jobs, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("sqlraft-db".to_string())
            .spawn(move || serve(engine, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the database thread");
        }
        Db { jobs }
    }

    /// Runs `f` on the database thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Engine) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(wrap(f, tx)).map_err(|_| DbError::Closed)?;
        rx.await.map_err(|_| DbError::Closed)?
    }

    /// [`Db::call`] for synchronous callers. Must not be called from inside an async
    /// runtime's worker thread (it blocks).
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Engine) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(wrap(f, tx)).map_err(|_| DbError::Closed)?;
        rx.blocking_recv().map_err(|_| DbError::Closed)?
    }
}

fn wrap<R, F>(f: F, reply: tokio::sync::oneshot::Sender<Result<R, DbError>>) -> Job
where
    R: Send + 'static,
    F: FnOnce(&mut Engine) -> R + Send + 'static,
{
    Box::new(move |engine: &mut Engine| {
        let result = catch_unwind(AssertUnwindSafe(|| f(engine))).map_err(|payload| {
            engine.recover();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(panic = %msg, "database job panicked");
            DbError::Sqlite(format!("database job panicked: {msg}"))
        });
        // The caller may have gone away; the job has run regardless.
        let _ = reply.send(result);
    })
}

fn serve(mut engine: Engine, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        job(&mut engine);
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
