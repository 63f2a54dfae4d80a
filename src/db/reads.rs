//! Reads on a pool of read-only connections.
//!
//! Owns: the read-only connections (opened on demand, at most `-db-max-ro-conns` in use at
//! once), the reader threads that run them (as many, fed by a channel), running a small read
//! on the caller's thread instead when it finishes within a few thousand steps, the time
//! limit of a read statement (`db_timeout`, else `-db-timeout`), and cancelling a read whose
//! caller went away. In WAL mode a reader sees the last committed
//! write and never blocks the writer, so a slow or hostile read costs one connection and
//! one CPU, never the node.
//! Does not: write (the connections are opened read-only), or decide whether a read may be
//! served here (the store's consistency levels do).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::Batch;
use tokio::sync::Semaphore;

use super::conn::{self, SqlConn};
use super::exec::{self, Limit, Mode};
use super::DbError;
use crate::command::{Outcome, Request, Statement, StmtResult};

/// The read-only connections and the limits reads run under.
pub struct ReadPool {
    path: PathBuf,
    fk: bool,
    idle: Mutex<Vec<SqlConn>>,
    permits: Arc<Semaphore>,
    max_conns: usize,
    default_timeout: Option<Duration>,
    /// Loaded into every reader (`-extensions-path`).
    extensions: Vec<PathBuf>,
    /// The reader threads' queue (see [`Readers`]).
    readers: Readers,
}

type Job = Box<dyn FnOnce() + Send>;

/// What `-db-max-ro-conns 0` (no limit) allows.
const NO_LIMIT: usize = 4096;
/// Reader threads at most: past two cores' worth many times over, more threads only add
/// memory; reads beyond them wait in the queue.
const MAX_READER_THREADS: usize = 64;

/// SQLite VM steps a read may take on the caller's thread ([`ReadPool::here`]): a point read
/// takes a few dozen; 10,000 are about a third of a millisecond
/// ([`crate::command::STEPS_PER_MS`]).
const TRIAL_STEPS: u64 = 10_000;
/// Reads larger than this are not tried on the caller's thread: preparing is not counted in
/// steps, and its time grows with the text.
const TRIAL_MAX_STATEMENTS: usize = 16;
const TRIAL_MAX_SQL_BYTES: usize = 16 << 10;

/// A fixed set of threads, one per permitted connection, that run reads. Not tokio's blocking
/// pool: under load it started a thread whenever none was idle at that instant (~50 at c=64),
/// each keeping allocator pages while it lived (issue 12's memory). Started on first use; they
/// end when the pool is dropped.
struct Readers {
    count: usize,
    queue: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Job>>>,
    /// Jobs handed to the threads so far.
    jobs: std::sync::atomic::AtomicU64,
}

impl Readers {
    fn new(count: usize) -> Self {
        Self {
            count,
            queue: std::sync::OnceLock::new(),
            jobs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs `job` on a reader thread. A job waits only for a busy thread: the pool's permits
    /// let at most `count` reads in at once.
    fn run(&self, job: Job) -> Result<(), DbError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.count {
                let rx = rx.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("sqlite-read-{i}"))
                    .spawn(move || loop {
                        // The lock is held only to take the next job.
                        let next = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    });
            }
            Mutex::new(tx)
        });
        self.jobs.fetch_add(1, Ordering::Relaxed);
        queue
            .lock()
            .map_err(|_| DbError::Closed)?
            .send(job)
            .map_err(|_| DbError::Closed)
    }
}

/// Which endpoint's semantics a read has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// `/db/query`: every statement query-shaped; anything that writes is refused.
    Query,
    /// A read-only `/db/request`.
    Request,
}

impl ReadPool {
    pub(crate) fn new(
        path: PathBuf,
        fk: bool,
        max_conns: usize,
        default_timeout: Option<Duration>,
    ) -> Self {
        // 0: no limit, as in rqlite (connections are then bounded by the concurrent reads).
        let max_conns = if max_conns == 0 { NO_LIMIT } else { max_conns };
        Self {
            path,
            fk,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_conns)),
            max_conns,
            default_timeout,
            extensions: Vec::new(),
            readers: Readers::new(max_conns.min(MAX_READER_THREADS)),
        }
    }

    /// Loads these SQLite extensions into every reader it opens.
    pub(crate) fn with_extensions(mut self, extensions: Vec<PathBuf>) -> Self {
        self.extensions = extensions;
        self
    }

    /// The extension files every connection loads.
    pub fn extensions(&self) -> &[PathBuf] {
        &self.extensions
    }

    /// If no read is running, closes the idle connections and keeps new reads waiting until
    /// the returned guard is dropped (the database file is about to be replaced).
    pub(crate) fn quiesce(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = self.permits.try_acquire_many(self.max_conns as u32).ok()?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        Some(permit)
    }

    /// Connections open and connections in use by a read right now.
    pub fn usage(&self) -> (usize, usize) {
        let in_use = self.max_conns - self.permits.available_permits().min(self.max_conns);
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        (idle + in_use, in_use)
    }

    /// Reads (and read-only checks) handed to a reader thread so far.
    pub fn thread_reads(&self) -> u64 {
        self.readers.jobs.load(Ordering::Relaxed)
    }

    /// The most connections reads may hold at once (`-db-max-ro-conns`).
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// The database file the readers open.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs a read request on a pooled connection: a small one first on the calling thread
    /// within [`TRIAL_STEPS`], any other (or one that failed or went over) on a reader
    /// thread. If the returned future is dropped (the client went away), a statement
    /// running on a reader thread is interrupted.
    pub async fn read(
        self: &Arc<Self>,
        req: Request,
        kind: ReadKind,
    ) -> Result<Vec<StmtResult>, DbError> {
        let here = self.here(&req, |c| {
            let limit = Limit::Trial {
                max_steps: TRIAL_STEPS,
            };
            let results = run_read(c, &req, kind, &limit);
            // Over budget (or any other failure): run again, from the start, where the
            // clock and cancelling apply. Reads change nothing, so the answer is the one
            // that run gives, errors included.
            let failed = results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Error(_)));
            (!failed).then_some(results)
        });
        if let Some(results) = here {
            return Ok(results);
        }
        self.run(move |c, limit| run_read(c, &req, kind, limit))
            .await
    }

    /// Runs `f` on the calling thread, with an idle connection, if `req` is [`cheap`], a
    /// connection and a permit are free at once, and no extension is loaded (a function of
    /// one may block); `None` otherwise or when `f` gives up. Handing a point read to a
    /// reader thread and back cost two thread switches that bounded point reads on two
    /// cores (issue 12: `docs/design/performance.md`). The connection's busy timeout is 0
    /// meanwhile: a lock wait would block the async runtime, and the failure makes the read
    /// run again on a reader thread.
    fn here<R>(&self, req: &Request, f: impl FnOnce(&SqlConn) -> Option<R>) -> Option<R> {
        if !self.extensions.is_empty() || !cheap(req) {
            return None;
        }
        let _permit = self.permits.try_acquire().ok()?;
        let c = self.idle.lock().ok()?.pop()?;
        let _ = c.conn.busy_timeout(Duration::ZERO);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&c)));
        let _ = c.conn.busy_timeout(conn::BUSY_TIMEOUT);
        self.put_back(c);
        r.ok().flatten()
    }

    /// True when every statement (every part of a multi-statement string too) is read-only
    /// by SQLite's own verdict (EXPLAIN counts as a read).
    ///
    /// A statement that fails to prepare counts as a write: the local schema may lag the
    /// leader's (a table created a moment ago), so only the write path can answer it
    /// correctly, and a failing statement applied through the log changes nothing.
    pub async fn is_read_only(self: &Arc<Self>, req: Request) -> Result<bool, DbError> {
        // Preparing only: bounded by the text's size, which `here` bounds.
        if let Some(ro) = self.here(&req, |c| Some(read_only(c, &req))) {
            return Ok(ro);
        }
        self.run(move |c, _| read_only(c, &req)).await
    }

    /// Runs `f` with a connection and the limit it must run under, on a blocking thread.
    async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&SqlConn, &Limit) -> R + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Closed)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let on_drop = CancelOnDrop(Some(cancel.clone()));
        let pool = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.readers.run(Box::new(move || {
            let _permit = permit;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.with_conn(cancel, f)
            }));
            let _ = tx.send(r);
        }))?;
        let done = rx.await;
        on_drop.disarm();
        match done {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(DbError::Sqlite("read failed: it panicked".into())),
            Err(_) => Err(DbError::Closed),
        }
    }

    /// [`ReadPool::run`] on the calling thread (tests and tools; it blocks).
    pub(crate) fn run_blocking<R>(
        &self,
        f: impl FnOnce(&SqlConn, &Limit) -> R,
    ) -> Result<R, DbError> {
        self.with_conn(Arc::new(AtomicBool::new(false)), f)
    }

    fn with_conn<R>(
        &self,
        cancel: Arc<AtomicBool>,
        f: impl FnOnce(&SqlConn, &Limit) -> R,
    ) -> Result<R, DbError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let c = match idle {
            Some(c) => c,
            None => conn::open_reader(&self.path, self.fk, &self.extensions)?,
        };
        let limit = Limit::Clock {
            default: self.default_timeout,
            cancel,
        };
        let r = f(&c, &limit);
        self.put_back(c);
        Ok(r)
    }

    /// Returns a connection to the idle set after a read.
    fn put_back(&self, c: SqlConn) {
        // A client's BEGIN (or an error half-way) must not pin an old view of the database.
        if !c.conn.is_autocommit() {
            let _ = c.conn.execute_batch("ROLLBACK");
        }
        // A connection whose settings a client changed (a pragma) is not handed to the next.
        if !c.guard().take_changed_settings() {
            if let Ok(mut v) = self.idle.lock() {
                v.push(c);
            }
        }
    }
}

/// Words that may stand before `(` in a read [`cheap`] lets run on the caller's thread.
const NOT_CALLS: [&str; 12] = [
    "IN", "EXISTS", "AND", "OR", "NOT", "WHERE", "ON", "FROM", "JOIN", "SELECT", "AS", "BY",
];

/// True for a read whose time is bounded by its SQLite VM steps, which [`Limit::Trial`]
/// counts: a few short statements, small parameters, no `db_timeout` of its own (the trial
/// does not apply one), and no function call, `MATCH`, `LIKE`, `GLOB` or `REGEXP`, since one
/// step of those can take as long as its arguments are large (`count(*)` walks a table in
/// one step, `randomblob(1e9)` fills a GB, a virtual table's search runs inside one step).
/// Everything else runs on a reader thread under the clock.
fn cheap(req: &Request) -> bool {
    req.db_timeout_ms == 0
        && req.statements.len() <= TRIAL_MAX_STATEMENTS
        && req
            .statements
            .iter()
            .map(Statement::payload_bytes)
            .sum::<usize>()
            <= TRIAL_MAX_SQL_BYTES
        && req.statements.iter().all(|s| {
            let tokens = super::lexer::tokenize(&s.sql);
            let word = |t: &super::lexer::Token, w: &str| t.is_word(&s.sql, w);
            let call = tokens.windows(2).any(|w| {
                w[1].is_punct(b'(')
                    && matches!(
                        w[0].kind,
                        super::lexer::Kind::Word | super::lexer::Kind::QuotedIdent
                    )
                    && !NOT_CALLS.iter().any(|k| word(&w[0], k))
            });
            let slow_operator = tokens.iter().any(|t| {
                ["MATCH", "LIKE", "GLOB", "REGEXP"]
                    .iter()
                    .any(|k| word(t, k))
            });
            !call && !slow_operator
        })
}

fn run_read(c: &SqlConn, req: &Request, kind: ReadKind, limit: &Limit) -> Vec<StmtResult> {
    match kind {
        ReadKind::Query => exec::run_request(c, req, Mode::Query, false, limit),
        ReadKind::Request => exec::run_request(c, req, Mode::Request, req.transaction, limit),
    }
}

#[cfg(test)]
pub(crate) fn tests_read(c: &SqlConn, req: &Request, limit: &Limit) -> Vec<StmtResult> {
    run_read(c, req, ReadKind::Request, limit)
}

pub(crate) fn read_only(c: &SqlConn, req: &Request) -> bool {
    req.statements.iter().all(|stmt| {
        let mut batch = Batch::new(&c.conn, &stmt.sql);
        loop {
            c.guard().preparing(true);
            let next = batch.next();
            c.guard().preparing(false);
            match next {
                Ok(Some(s)) if exec::is_read(&s) => continue,
                Ok(None) => return true,
                Ok(Some(_)) | Err(_) => return false,
            }
        }
    })
}

/// Interrupts the read (through its progress handler) unless disarmed first.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Value;
    use crate::db::{DbConfig, Engine};

    fn req(sql: &str) -> Request {
        Request {
            statements: vec![Statement::new(sql)],
            ..Request::default()
        }
    }

    /// Once a connection is open, a small read runs on the caller's thread; one over the
    /// trial's budget and one that fails give the answer a reader thread gives.
    #[tokio::test]
    async fn small_reads_run_here_and_the_rest_on_reader_threads() {
        let mut e = Engine::open(&DbConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        e.execute(&req("CREATE TABLE t (x); INSERT INTO t VALUES (7)"));
        let pool = e.reads();
        let one = |r: Result<Vec<StmtResult>, DbError>| match r.map(|mut v| v.remove(0).outcome) {
            Ok(Outcome::Rows(rows)) => rows.values,
            other => panic!("{other:?}"),
        };
        // The first read opens the connection, on a reader thread.
        let first = one(pool.read(req("SELECT x FROM t"), ReadKind::Query).await);
        assert_eq!(first, vec![vec![Value::Int(7)]]);
        assert_eq!(pool.thread_reads(), 1);
        for _ in 0..3 {
            let again = one(pool.read(req("SELECT x FROM t"), ReadKind::Query).await);
            assert_eq!(again, first);
        }
        assert!(pool
            .is_read_only(req("SELECT x FROM t"))
            .await
            .unwrap_or(false));
        assert_eq!(
            pool.thread_reads(),
            1,
            "small reads ran on the caller's thread"
        );

        let count = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) \
                     SELECT count(*) FROM c";
        let big = one(pool.read(req(count), ReadKind::Query).await);
        assert_eq!(big, vec![vec![Value::Int(100_000)]]);
        assert_eq!(
            pool.thread_reads(),
            2,
            "over the trial's budget: run on a thread"
        );

        let failed = pool.read(req("SELECT * FROM nope"), ReadKind::Query).await;
        match failed.map(|mut v| v.remove(0).outcome) {
            Ok(Outcome::Error(m)) => assert_eq!(m, "no such table: nope"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pool.thread_reads(),
            3,
            "a failed trial runs again on a thread"
        );

        // One step of a function call can take any time: never on the caller's thread.
        let calls = one(pool
            .read(req("SELECT count(*) FROM t"), ReadKind::Query)
            .await);
        assert_eq!(calls, vec![vec![Value::Int(1)]]);
        assert_eq!(pool.thread_reads(), 4);
    }

    #[test]
    fn only_reads_bounded_by_their_steps_are_cheap() {
        for sql in [
            "SELECT x FROM t WHERE id = ?",
            "SELECT a, b FROM t WHERE id IN (1, 2) AND (a > 1 OR b < 2)",
            "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
            "SELECT x FROM (SELECT x FROM t) AS s ORDER BY x",
        ] {
            assert!(cheap(&req(sql)), "{sql}");
        }
        for sql in [
            "SELECT count(*) FROM t",
            "SELECT length(hex(randomblob(500000000)))",
            "SELECT * FROM ft WHERE ft MATCH 'a*'",
            "SELECT * FROM t WHERE name LIKE '%x%'",
            "SELECT * FROM json_each('[1,2]')",
            "SELECT \"f\"(x) FROM t",
        ] {
            assert!(!cheap(&req(sql)), "{sql}");
        }
        let mut big = req("SELECT ? = x FROM t");
        big.statements[0].positional = vec![crate::command::Param::Text("x".repeat(20_000))];
        assert!(!cheap(&big));
        let mut timed = req("SELECT x FROM t");
        timed.db_timeout_ms = 5;
        assert!(!cheap(&timed));
    }
}
