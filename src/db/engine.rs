//! The SQLite database: one engine, owned by one thread.
//!
//! Owns: the in-memory database (SQLite's `memdb` VFS under a process-unique shared name)
//! with a read-write connection for writes and a read-only connection for reads; the
//! `/db/execute`, `/db/query` and `/db/request` semantics on top of them; file images
//! (serialize, validate, restore, backup) and the SQL dump (`dump.rs`); and [`Db`], the
//! handle through which async code sends jobs to the thread that owns the engine.
//! Does not: rewrite SQL (`rewrite.rs`), reject pragmas (`classify.rs`) or know about Raft.
//!
//! The read-only connection is what makes `/db/query` unable to write, whatever the SQL
//! says; classification is SQLite's `sqlite3_stmt_readonly`, never a string prefix.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Batch, Connection, OpenFlags, MAIN_DB};

use super::exec::{self, Mode};
use super::DbError;
use crate::command::{Request, StmtResult};

/// Settings of the database itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbConfig {
    /// Enforce foreign keys (rqlite's `-fk`; off by default, as in rqlite).
    pub fk: bool,
    /// Keep the database in this file instead of memory (`-on-disk`). The file is a cache
    /// of the Raft state: it is deleted and rebuilt (snapshot + log) at every start.
    pub path: Option<PathBuf>,
}

/// The database and its two connections. Used from one thread only (see [`Db`]).
pub struct Engine {
    rw: Connection,
    ro: Connection,
    config: DbConfig,
}

/// What every SQLite database file starts with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// memdb caps a database at 1 GiB by default; an in-memory store should be limited by the
/// machine, not by a constant it never chose.
const MEMDB_SIZE_LIMIT: i64 = i64::MAX;

impl Engine {
    /// Opens a new, empty database.
    pub fn open(config: &DbConfig) -> Result<Engine, DbError> {
        let (rw, ro) = open_pair(config)?;
        // Write page 1 now, so that even an empty database serializes to a valid image
        // (a memdb that was never written has no bytes at all).
        rw.execute_batch("PRAGMA user_version = 0")?;
        Ok(Engine {
            rw,
            ro,
            config: config.clone(),
        })
    }

    /// `/db/execute`: every statement execute-shaped (unless `force_query`), on the
    /// read-write connection.
    pub fn execute(&mut self, req: &Request) -> Vec<StmtResult> {
        exec::run_request(&self.rw, req, Mode::Execute, req.transaction)
    }

    /// `/db/query`: every statement query-shaped, on the read-only connection; anything
    /// that is not read-only fails with `attempt to change database via query operation`.
    /// `transaction` means nothing for reads and is ignored.
    pub fn query(&mut self, req: &Request) -> Vec<StmtResult> {
        let results = exec::run_request(&self.ro, req, Mode::Query, false);
        self.end_read_transaction();
        results
    }

    /// `/db/request`: read-only statements (and `force_query` ones) query-shaped, the rest
    /// execute-shaped. A request with any write runs entirely on the read-write connection
    /// so its reads see its own writes.
    pub fn request(&mut self, req: &Request) -> Vec<StmtResult> {
        if self.is_read_only(req) {
            let results = exec::run_request(&self.ro, req, Mode::Request, req.transaction);
            self.end_read_transaction();
            results
        } else {
            exec::run_request(&self.rw, req, Mode::Request, req.transaction)
        }
    }

    /// True when every statement (every part of a multi-statement string too) is
    /// read-only by SQLite's own verdict (EXPLAIN counts as a read).
    ///
    /// A statement that fails to prepare counts as a write: the local schema may lag the
    /// leader's (a table created a moment ago), so only the write path can answer it
    /// correctly, and a failing statement applied through the log changes nothing.
    pub fn is_read_only(&mut self, req: &Request) -> bool {
        let ok = req.statements.iter().all(|stmt| {
            let mut batch = Batch::new(&self.ro, &stmt.sql);
            loop {
                match batch.next() {
                    Ok(Some(s)) if exec::is_read(&s) => continue,
                    Ok(None) => return true,
                    Ok(Some(_)) | Err(_) => return false,
                }
            }
        });
        self.end_read_transaction();
        ok
    }

    /// The database as a SQLite file image.
    pub fn serialize(&mut self) -> Result<Vec<u8>, DbError> {
        Ok(self.rw.serialize(MAIN_DB)?.to_vec())
    }

    /// Replaces the whole database with `image`, after validating it. Both connections are
    /// replaced by a fresh pair on a new memdb, so connection state (pragmas set by
    /// clients, open transactions) is reset to the configuration.
    pub fn restore(&mut self, image: &[u8]) -> Result<(), DbError> {
        let src = open_image(image)?;
        if self.config.path.is_some() {
            // The file must be closed before it can be replaced by an empty one.
            self.rw = Connection::open_in_memory()?;
            self.ro = Connection::open_in_memory()?;
        }
        // The new database must still be empty here: SQLite only adopts the image's page
        // size when copying into a database that has no pages yet.
        let (mut rw, ro) = open_pair(&self.config)?;
        {
            let backup = Backup::new(&src, &mut rw)?;
            match backup.step(-1)? {
                StepResult::Done => {}
                other => {
                    return Err(DbError::Sqlite(format!(
                        "restore did not complete: {other:?}"
                    )))
                }
            }
        }
        self.rw = rw;
        self.ro = ro;
        Ok(())
    }

    /// Same as the free function [`validate_image`], for callers holding only the type.
    pub fn validate_image(image: &[u8]) -> Result<(), DbError> {
        validate_image(image)
    }

    /// A SQL text dump in the format of rqlite's `/db/backup?fmt=sql`.
    pub fn dump(&mut self, tables: Option<&[String]>) -> Result<String, DbError> {
        let result = super::dump::dump(&self.ro, tables);
        self.end_read_transaction();
        result
    }

    /// A consistent binary copy of the database; with `vacuum`, a compacted one.
    pub fn backup_image(&mut self, vacuum: bool) -> Result<Vec<u8>, DbError> {
        if !vacuum {
            return self.serialize();
        }
        // VACUUM INTO another memdb, kept alive by `holder` until it is serialized.
        let uri = unique_memdb_uri("vacuum");
        let holder = Connection::open_with_flags(&uri, rw_flags())?;
        raise_size_limit(&holder)?;
        self.rw.execute("VACUUM INTO ?1", [&uri])?;
        Ok(holder.serialize(MAIN_DB)?.to_vec())
    }

    /// Brings the connections back to a known state after a job panicked part-way: an
    /// open transaction is rolled back.
    fn recover(&mut self) {
        for conn in [&self.rw, &self.ro] {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }

    /// A read left open on the read-only connection (a client's `BEGIN`, an error half-way)
    /// would pin an old snapshot of the database forever.
    fn end_read_transaction(&mut self) {
        if !self.ro.is_autocommit() {
            let _ = self.ro.execute_batch("ROLLBACK");
        }
    }
}

/// Checks that `image` is a usable SQLite database: the header, SQLite opening it,
/// `PRAGMA quick_check` answering `ok`, and a readable schema.
pub fn validate_image(image: &[u8]) -> Result<(), DbError> {
    open_image(image).map(|_| ())
}

fn invalid(reason: impl Into<String>) -> DbError {
    DbError::InvalidImage(reason.into())
}

/// Opens a private in-memory copy of `image` after checking it (see [`validate_image`]).
fn open_image(image: &[u8]) -> Result<Connection, DbError> {
    if !image.starts_with(SQLITE_HEADER) {
        return Err(invalid("not a SQLite database (bad header)"));
    }
    if image.len() < 100 {
        return Err(invalid("truncated database header"));
    }
    if i32::try_from(image.len()).is_err() {
        return Err(invalid("image larger than 2 GiB"));
    }
    // A WAL-mode file (header bytes 18 and 19 = 2) cannot be opened without its shared
    // memory; as a standalone image it is equivalent to the rollback-journal form.
    let versions: [u8; 2] = [image[18], image[19]].map(|v| if v == 2 { 1 } else { v });
    let reader = std::io::Read::chain(
        std::io::Read::chain(&image[..18], &versions[..]),
        &image[20..],
    );
    let mut conn = Connection::open_in_memory()?;
    conn.deserialize_read_exact(MAIN_DB, reader, image.len(), false)
        .map_err(|e| invalid(exec::message(&e)))?;
    let problems = quick_check(&conn).map_err(|e| invalid(exec::message(&e)))?;
    if problems != ["ok"] {
        let mut reason = problems.join("; ");
        reason.truncate(500);
        return Err(invalid(format!("quick_check: {reason}")));
    }
    check_schema(&conn)?;
    Ok(conn)
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(match row.get_ref(0)? {
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            other => format!("{other:?}"),
        });
    }
    Ok(out)
}

/// The schema must be readable, and valid UTF-8: names and declared types reach clients
/// as column names and types.
fn check_schema(conn: &Connection) -> Result<(), DbError> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master")
        .map_err(|e| invalid(exec::message(&e)))?;
    let mut rows = stmt.query([]).map_err(|e| invalid(exec::message(&e)))?;
    while let Some(row) = rows.next().map_err(|e| invalid(exec::message(&e)))? {
        for i in 0..4 {
            if let Ok(ValueRef::Text(t) | ValueRef::Blob(t)) = row.get_ref(i) {
                if std::str::from_utf8(t).is_err() {
                    return Err(invalid("schema is not valid UTF-8"));
                }
            }
        }
    }
    Ok(())
}

fn rw_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// A memdb name no other database in this process uses. Names starting with `/` are
/// shared by every connection of the process that opens them.
fn unique_memdb_uri(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("file:/sqlraft-{kind}-{}-{n}?vfs=memdb", std::process::id())
}

/// Deletes a database file and its journals (missing files are fine).
fn remove_db_files(path: &Path) -> Result<(), DbError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DbError::Io(format!("{}: {e}", Path::new(&p).display()))),
        }
    }
    Ok(())
}

/// A read-write and a read-only connection to the same new, empty database: a memdb, or
/// (`-on-disk`) a freshly created file.
fn open_pair(config: &DbConfig) -> Result<(Connection, Connection), DbError> {
    let ro_flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let (rw, ro) = match &config.path {
        Some(path) => {
            remove_db_files(path)?;
            let rw = Connection::open_with_flags(path, rw_flags())?;
            // Durability comes from the Raft log; the file is rebuilt at start.
            rw.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA user_version = 0",
            )?;
            let ro = Connection::open_with_flags(path, ro_flags)?;
            (rw, ro)
        }
        None => {
            let uri = unique_memdb_uri("db");
            let rw = Connection::open_with_flags(&uri, rw_flags())?;
            raise_size_limit(&rw)?;
            let ro = Connection::open_with_flags(&uri, ro_flags)?;
            (rw, ro)
        }
    };
    for conn in [&rw, &ro] {
        // One thread uses both connections: waiting for a lock could never succeed.
        conn.busy_timeout(Duration::ZERO)?;
        // The bundled SQLite defaults foreign keys to ON; rqlite's default is OFF.
        conn.pragma_update(None, "foreign_keys", config.fk)?;
    }
    Ok((rw, ro))
}

fn raise_size_limit(conn: &Connection) -> Result<(), DbError> {
    let mut limit = MEMDB_SIZE_LIMIT;
    // SAFETY: the handle is valid for the life of `conn`; the schema name is a
    // NUL-terminated literal; SQLITE_FCNTL_SIZE_LIMIT takes a pointer to an sqlite3_int64,
    // which `limit` is, and SQLite does not keep the pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_SIZE_LIMIT,
            (&mut limit as *mut i64).cast(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(DbError::Sqlite(format!(
            "cannot raise memdb size limit (code {rc})"
        )));
    }
    Ok(())
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
        self.jobs
            .send(wrap(f, tx))
            .map_err(|_| DbError::Closed)?;
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
        self.jobs
            .send(wrap(f, tx))
            .map_err(|_| DbError::Closed)?;
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
