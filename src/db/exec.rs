//! Running one request's statements on one SQLite connection.
//!
//! Owns: parameter binding with go-sqlite3's rules (positional by index, surplus ignored,
//! named by `:k`/`@k`/`$k`), the tail loop over a multi-statement string, execute-shaped
//! versus query-shaped results, the per-statement `db_timeout`, and the request-level
//! `transaction` (BEGIN, stop and ROLLBACK at the first error, else COMMIT).
//! Does not: pick the connection; `db.rs` does (read-write, or read-only for reads).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Batch, CachedStatement, Connection, StatementStatus};

use super::conn::SqlConn;
use super::values;
use crate::command::{Outcome, Param, Request, Rows, Statement, StmtResult, STEPS_PER_MS};

/// Which endpoint's semantics apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `/db/execute`: execute-shaped unless `force_query`.
    Execute,
    /// `/db/query`: query-shaped; anything that is not read-only is refused.
    Query,
    /// `/db/request`: query-shaped when read-only or `force_query`, else execute-shaped.
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Exec,
    Query,
}

pub(crate) const NOT_READ_ONLY: &str = "attempt to change database via query operation";

/// SQLite's own verdict, plus EXPLAIN (which never changes anything).
pub(crate) fn is_read(stmt: &rusqlite::Statement<'_>) -> bool {
    stmt.readonly() || stmt.is_explain() > 0
}

/// What bounds a request while it runs.
#[derive(Debug, Clone)]
pub(crate) enum Limit {
    /// A request applied from the log, on every node: counted in SQLite VM steps, which are
    /// the same on every node for the same statements on the same database. `max_steps`
    /// bounds the whole request (0 = unlimited); `db_timeout_ms` is turned into steps per
    /// statement ([`STEPS_PER_MS`]).
    Steps { max_steps: u64 },
    /// A read on this node only: the clock (`db_timeout`, else `default` per statement) and
    /// the caller going away (`cancel`).
    Clock {
        default: Option<Duration>,
        cancel: Arc<AtomicBool>,
    },
    /// A read tried on the caller's thread ([`super::reads`]): stopped after `max_steps` VM
    /// steps for the whole request, its result then thrown away and the read run again
    /// under [`Limit::Clock`] on a reader thread.
    Trial { max_steps: u64 },
}

/// Why a statement was stopped.
const TRIP_NONE: u8 = 0;
const TRIP_TIMEOUT: u8 = 1;
const TRIP_BUDGET: u8 = 2;
const TRIP_CANCELLED: u8 = 3;

/// The progress handler's state for one request (shared with the handler closure).
struct Meter {
    /// Steps taken by the whole request, and by the current statement.
    request_steps: AtomicU64,
    statement_steps: AtomicU64,
    request_limit: u64,
    /// Per-statement step limit (0 = none).
    statement_limit: AtomicU64,
    /// Per-statement deadline, as nanoseconds after `base` (0 = none).
    deadline_ns: AtomicU64,
    base: Instant,
    cancel: Option<Arc<AtomicBool>>,
    tripped: AtomicU8,
    /// Set while the node runs its own queries on the connection (change capture naming
    /// columns): their steps are not the request's, and whether they run at all differs from
    /// node to node, so they must not count toward a budget every node applies alike.
    paused: AtomicBool,
}

impl Meter {
    /// VM instructions between two calls of the progress handler: often enough for
    /// millisecond limits, rarely enough to cost nothing measurable.
    const EVERY: u64 = 1000;

    fn tick(&self) -> bool {
        if self.paused.load(Ordering::Relaxed) {
            return false;
        }
        let req = self.request_steps.fetch_add(Self::EVERY, Ordering::Relaxed) + Self::EVERY;
        let stmt = self
            .statement_steps
            .fetch_add(Self::EVERY, Ordering::Relaxed)
            + Self::EVERY;
        let trip = if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            TRIP_CANCELLED
        } else if self.request_limit > 0 && req > self.request_limit {
            TRIP_BUDGET
        } else if matches!(self.statement_limit.load(Ordering::Relaxed), l if l > 0 && stmt > l) {
            TRIP_TIMEOUT
        } else {
            let d = self.deadline_ns.load(Ordering::Relaxed);
            if d > 0 && self.base.elapsed().as_nanos() as u64 >= d {
                TRIP_TIMEOUT
            } else {
                TRIP_NONE
            }
        };
        if trip != TRIP_NONE {
            self.tripped.store(trip, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Resets the per-statement counters before a statement starts.
    fn start_statement(&self, limit: &Limit, db_timeout_ms: u64) {
        self.statement_steps.store(0, Ordering::Relaxed);
        self.tripped.store(TRIP_NONE, Ordering::Relaxed);
        match limit {
            Limit::Steps { .. } => self.statement_limit.store(
                db_timeout_ms.saturating_mul(STEPS_PER_MS),
                Ordering::Relaxed,
            ),
            // Far below any timeout: a trial over budget is run again under the clock.
            Limit::Trial { .. } => {}
            Limit::Clock { default, .. } => {
                let timeout = match db_timeout_ms {
                    0 => *default,
                    ms => Some(Duration::from_millis(ms)),
                };
                // A limit too large to represent is no limit.
                let ns = timeout
                    .map(|t| (self.base.elapsed() + t).as_nanos())
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0);
                self.deadline_ns.store(ns, Ordering::Relaxed);
            }
        }
    }

    fn tripped(&self) -> u8 {
        self.tripped.load(Ordering::Relaxed)
    }
}

/// Installs the request's progress handler; removes it when dropped.
struct Metered<'c> {
    conn: &'c Connection,
    meter: Arc<Meter>,
}

impl<'c> Metered<'c> {
    fn install(conn: &'c Connection, limit: &Limit) -> Self {
        let (request_limit, cancel) = match limit {
            Limit::Steps { max_steps } | Limit::Trial { max_steps } => (*max_steps, None),
            Limit::Clock { cancel, .. } => (0, Some(cancel.clone())),
        };
        let meter = Arc::new(Meter {
            request_steps: AtomicU64::new(0),
            statement_steps: AtomicU64::new(0),
            request_limit,
            statement_limit: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            base: Instant::now(),
            cancel,
            tripped: AtomicU8::new(TRIP_NONE),
            paused: AtomicBool::new(false),
        });
        let m = meter.clone();
        conn.progress_handler(Meter::EVERY as i32, Some(move || m.tick()));
        Self { conn, meter }
    }
}

impl Drop for Metered<'_> {
    fn drop(&mut self) {
        self.conn.progress_handler(0, None::<fn() -> bool>);
    }
}

/// Runs every statement of `req` on `conn`, within `limit`.
/// With `use_tx`, they run inside BEGIN/COMMIT and the first error stops the request and
/// rolls it back; the results then end with the failing statement.
pub(crate) fn run_request(
    conn: &SqlConn,
    req: &Request,
    mode: Mode,
    use_tx: bool,
    limit: &Limit,
) -> Vec<StmtResult> {
    if !use_tx && matches!(limit, Limit::Steps { .. }) && plain_writes(req) {
        if let Some(mut results) = run_grouped(conn, &[(req, limit.clone())], mode) {
            if let Some(results) = results.pop() {
                return results;
            }
        }
    }
    run_each(conn, req, mode, use_tx, limit)
}

/// True for a request of two or more statements that are each one [`plain_write`].
pub(crate) fn plain_writes(req: &Request) -> bool {
    req.statements.len() >= 2 && req.statements.iter().all(plain_write)
}

/// True for a statement string that is one plain row write (its first word INSERT, REPLACE,
/// UPDATE or DELETE): no transaction control, pragma, schema change or second statement in
/// the same string, whose meaning could differ inside a transaction.
pub(crate) fn plain_write(stmt: &Statement) -> bool {
    let sql = stmt.sql.as_str();
    let mut tokens = super::lexer::Tokens::new(sql);
    let first = tokens.next().is_some_and(|t| {
        ["INSERT", "REPLACE", "UPDATE", "DELETE"]
            .iter()
            .any(|w| t.is_word(sql, w))
    });
    if !first {
        return false;
    }
    // Most texts have neither a semicolon nor the counters' name anywhere: no need to look
    // at the rest token by token.
    let bytes = sql.as_bytes();
    if !bytes.contains(&b';') && !bytes.windows(7).any(|w| w.eq_ignore_ascii_case(b"changes")) {
        return true;
    }
    let mut ended = false;
    for t in tokens {
        // Trailing semicolons only: one statement per string.
        if t.is_punct(b';') {
            ended = true;
        } else if ended {
            return false;
        }
        // A second run (see `run_grouped`) restores last_insert_rowid() but cannot restore
        // these counters.
        // Also quoted: SQLite calls `"changes"()` the same function.
        let text = t.text(sql);
        let name = match t.kind {
            super::lexer::Kind::Word => text,
            super::lexer::Kind::QuotedIdent => {
                text.get(1..text.len().saturating_sub(1)).unwrap_or("")
            }
            _ => "",
        };
        if name.eq_ignore_ascii_case("changes") || name.eq_ignore_ascii_case("total_changes") {
            return false;
        }
    }
    true
}

/// Applies requests of plain row writes (see [`plain_write`]; the statements of one
/// request, or the requests of one log entry's batch, each with its own limit) in one
/// SQLite transaction instead of one per statement: each statement's own commit (WAL frames,
/// shared-memory locks, a read transaction) was most of the writer's work for a
/// 100-statement request (issue 12). The outcome is the same as statement by statement: a
/// statement that succeeds inside a transaction does what it does in autocommit, and only
/// what succeeded is kept that way. When a request does not (a statement failed, which also
/// covers one that ended the whole transaction: `ON CONFLICT ROLLBACK`, `RAISE(ROLLBACK)`,
/// an interrupt by the step budget, an I/O error; `OR FAIL`, whose rows written before the
/// failure change capture would miss; or a deferred foreign key left unresolved, which in
/// autocommit fails its statement), everything since `BEGIN` is rolled back, the requests
/// before it are applied again together (they succeed again: same database, same
/// statements), that request is applied statement by statement ([`run_each`]), and the rest
/// go on together. A failed commit applies its requests one by one. So each request runs at
/// most twice, and the path depends only on the requests and the database: every node takes
/// the same one. A trigger reading `changes()` in a request that runs twice sees the first
/// run's counts (SQLite cannot restore them). `None`: nothing was run (an open transaction,
/// or extensions loaded, whose functions may change settings).
pub(crate) fn run_grouped(
    conn: &SqlConn,
    units: &[(&Request, Limit)],
    mode: Mode,
) -> Option<Vec<Vec<StmtResult>>> {
    if !conn.conn.is_autocommit() || conn.extensions {
        return None;
    }
    let one_by_one = |range: std::ops::Range<usize>, all: &mut Vec<Vec<StmtResult>>| {
        for (req, limit) in &units[range] {
            all.push(run_each(conn, req, mode, false, limit));
        }
    };
    let mut all = Vec::with_capacity(units.len());
    // The next try covers `start..end`; `failed` is a request known not to succeed together.
    let (mut start, mut end, mut failed) = (0, units.len(), None);
    while start < units.len() {
        if failed == Some(start) {
            one_by_one(start..start + 1, &mut all);
            (start, end, failed) = (start + 1, units.len(), None);
            continue;
        }
        match attempt(conn, &units[start..end], mode) {
            Ok(results) => {
                all.extend(results);
                (start, end) = (end, units.len());
            }
            // The requests before the one that failed go together again, then it alone.
            Err(Some(i)) => (end, failed) = (start + i, Some(start + i)),
            Err(None) => {
                one_by_one(start..end, &mut all);
                (start, end) = (end, units.len());
            }
        }
    }
    Some(all)
}

/// One try of [`run_grouped`]: every request in one transaction, committed if every
/// statement succeeded. Otherwise nothing is kept (row id, change capture and node-failure
/// report restored) and the error names the request that failed, or none if the commit did.
fn attempt(
    conn: &SqlConn,
    units: &[(&Request, Limit)],
    mode: Mode,
) -> Result<Vec<Vec<StmtResult>>, Option<usize>> {
    let db = &conn.conn;
    // A rollback keeps the row ids the statements set; what runs next must start from this.
    let rowid = db.last_insert_rowid();
    let captured = conn.capture.as_ref().map(|c| c.committed_mark());
    if db.execute_batch("BEGIN").is_err() {
        return Err(None);
    }
    let give_up = |failed: Option<usize>| {
        if !db.is_autocommit() {
            let _ = db.execute_batch("ROLLBACK");
        }
        // SAFETY: the handle is valid for the life of `db` and used on this thread only.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(db.handle(), rowid) };
        // What runs next reports a failure of this node again if there is one (a statement
        // journal spilled to a full temporary directory is this try's alone).
        conn.guard().take_node_failure();
        Err(failed)
    };
    let mut all = Vec::with_capacity(units.len());
    for (i, (req, limit)) in units.iter().enumerate() {
        let metered = Metered::install(db, limit);
        let mut results = Vec::with_capacity(req.statements.len());
        for stmt in &req.statements {
            metered.meter.start_statement(limit, req.db_timeout_ms);
            let r = run_statement(conn, stmt, mode, &metered.meter, limit);
            if matches!(r.outcome, Outcome::Error(_))
                || db.is_autocommit()
                || deferred_fk_violations(db)
            {
                drop(metered);
                return give_up(Some(i));
            }
            results.push(r);
        }
        all.push(results);
    }
    if db.execute_batch("COMMIT").is_err() {
        // The commit hook ran before the commit failed: what it took as committed is not.
        if let (Some(c), Some(mark)) = (&conn.capture, captured) {
            c.forget_committed_since(mark);
        }
        return give_up(None);
    }
    Ok(all)
}

/// True while the open transaction has unresolved deferred foreign key violations.
fn deferred_fk_violations(db: &Connection) -> bool {
    let (mut cur, mut high) = (0, 0);
    // SAFETY: the handle is valid for the life of `db`, used on this thread only; the call
    // writes two ints.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            db.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut cur,
            &mut high,
            0,
        )
    };
    // Unknown counts as violated: the statement-by-statement run decides.
    rc != rusqlite::ffi::SQLITE_OK || cur > 0
}

/// [`run_request`] one statement at a time, each in its own transaction unless `use_tx`.
pub(crate) fn run_each(
    conn: &SqlConn,
    req: &Request,
    mode: Mode,
    use_tx: bool,
    limit: &Limit,
) -> Vec<StmtResult> {
    let metered = Metered::install(&conn.conn, limit);
    let db = &conn.conn;
    let mut results = Vec::with_capacity(req.statements.len());
    if use_tx {
        let start = Instant::now();
        if let Err(e) = db.execute_batch("BEGIN") {
            results.push(StmtResult {
                outcome: Outcome::Error(message(&e)),
                time: secs(start),
            });
            return results;
        }
    }
    for stmt in &req.statements {
        metered.meter.start_statement(limit, req.db_timeout_ms);
        let r = run_statement(conn, stmt, mode, &metered.meter, limit);
        let failed = matches!(r.outcome, Outcome::Error(_));
        results.push(r);
        if failed && use_tx {
            // SQLite may already have rolled back (e.g. after an interrupt).
            if !db.is_autocommit() {
                let _ = db.execute_batch("ROLLBACK");
            }
            return results;
        }
        // A cancelled read stops here: nobody is waiting for the rest.
        if metered.meter.tripped() == TRIP_CANCELLED {
            return results;
        }
    }
    // A statement of the request may itself have ended the transaction (a dump's COMMIT).
    if use_tx && !db.is_autocommit() {
        let start = Instant::now();
        if let Err(e) = db.execute_batch("COMMIT") {
            // Deferred constraints fail here. Everything was undone, and the extra result
            // says why, since no single statement failed.
            let _ = db.execute_batch("ROLLBACK");
            results.push(StmtResult {
                outcome: Outcome::Error(message(&e)),
                time: secs(start),
            });
        }
    }
    results
}

/// Runs `stmts` one after the other inside a transaction the caller opened, each with its
/// own mode, within `limit` for all of them; `keep_going` sees each result in turn. Stops when
/// it answers false, or when a statement ended the caller's transaction (SQLite's
/// `ON CONFLICT ROLLBACK`), so nothing after it runs outside the transaction.
pub(crate) fn run_statements<'s>(
    conn: &SqlConn,
    stmts: impl IntoIterator<Item = (&'s Statement, Mode)>,
    limit: &Limit,
    mut keep_going: impl FnMut(StmtResult) -> bool,
) {
    let metered = Metered::install(&conn.conn, limit);
    for (stmt, mode) in stmts {
        metered.meter.start_statement(limit, 0);
        let r = run_statement(conn, stmt, mode, &metered.meter, limit);
        if !keep_going(r) || conn.conn.is_autocommit() {
            return;
        }
    }
}

/// Runs one statement string (possibly several SQL statements; the outcome is the last
/// one's, or the first error).
fn run_statement(
    conn: &SqlConn,
    stmt: &Statement,
    mode: Mode,
    meter: &Meter,
    limit: &Limit,
) -> StmtResult {
    let start = Instant::now();
    let outcome = match run_tail_loop(conn, stmt, mode, meter) {
        Ok(outcome) => outcome,
        Err(Failure { message, shape }) => {
            // Right after the failing call, SQLite still holds its code: a failure of this
            // node (a full disk, an I/O error), not of the statement, must not become the
            // entry's outcome, which every other node computes without it.
            // SAFETY: the handle is valid for the life of `conn`, used on this thread only,
            // and sqlite3_errcode only reads the connection's last error code.
            let code = unsafe { rusqlite::ffi::sqlite3_errcode(conn.conn.handle()) };
            if matches!(
                code,
                rusqlite::ffi::SQLITE_IOERR
                    | rusqlite::ffi::SQLITE_FULL
                    | rusqlite::ffi::SQLITE_NOMEM
                    | rusqlite::ffi::SQLITE_CANTOPEN
                    | rusqlite::ffi::SQLITE_CORRUPT
            ) {
                conn.guard().node_failure(&message);
            }
            Outcome::Error(match (meter.tripped(), shape) {
                (TRIP_TIMEOUT, Shape::Query) => "query timeout".to_string(),
                (TRIP_TIMEOUT, Shape::Exec) => "execute timeout".to_string(),
                (TRIP_BUDGET, _) => match limit {
                    Limit::Steps { max_steps } => format!(
                    "request exceeded its budget of {max_steps} SQLite VM steps (-db-max-steps)"
                ),
                    Limit::Clock { .. } | Limit::Trial { .. } => message,
                },
                (TRIP_CANCELLED, _) => "query cancelled: the client went away".to_string(),
                _ => conn
                    .guard()
                    .refused()
                    .map(str::to_string)
                    .unwrap_or(message),
            })
        }
    };
    StmtResult {
        outcome,
        time: secs(start),
    }
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

struct Failure {
    message: String,
    shape: Shape,
}

/// The arguments of one statement, in go-sqlite3's order: positional, then named.
struct Args<'a> {
    list: Vec<(Option<&'a str>, &'a Param)>,
}

impl<'a> Args<'a> {
    fn new(stmt: &'a Statement) -> Result<Self, String> {
        let mut list: Vec<(Option<&str>, &Param)> =
            stmt.positional.iter().map(|p| (None, p)).collect();
        for (name, p) in &stmt.named {
            // database/sql rejects names that do not start with a letter; an empty name
            // is an ordinal argument there.
            match name.chars().next() {
                None => list.push((None, p)),
                Some(c) if c.is_alphabetic() => list.push((Some(name.as_str()), p)),
                Some(_) => {
                    return Err(format!(
                        "name {} does not begin with a letter",
                        go_quote(name)
                    ))
                }
            }
        }
        // Positional first, named after, as they reach the driver.
        list.sort_by_key(|(n, _)| n.is_some());
        Ok(Self { list })
    }
}

fn run_tail_loop(
    sql: &SqlConn,
    stmt: &Statement,
    mode: Mode,
    meter: &Meter,
) -> Result<Outcome, Failure> {
    let shape = match mode {
        Mode::Query => Shape::Query,
        _ if stmt.force_query => Shape::Query,
        Mode::Execute => Shape::Exec,
        Mode::Request => Shape::Query,
    };
    let args = Args::new(stmt).map_err(|message| Failure { message, shape })?;
    let mut run = StringRun {
        sql,
        args,
        consumed: 0,
        shape,
        mode,
        meter,
    };
    // `/db/request` without `force_query`: the string's first statement decides the shape.
    let reshape = mode == Mode::Request && !stmt.force_query;
    if sql.cache_statements {
        if let Some(mut s) = cached_prepare(sql, stmt, meter) {
            return run.statement(&mut s, reshape);
        }
    }
    let mut batch = Batch::new(&sql.conn, &stmt.sql);
    let mut last = None;
    loop {
        let mut s = match prepare(sql, meter, || batch.next()) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                return Err(Failure {
                    message: message(&e),
                    shape: run.shape,
                })
            }
        };
        last = Some(run.statement(&mut s, reshape && last.is_none())?);
    }
    Ok(last.unwrap_or(match run.shape {
        // Nothing but whitespace or comments: go-sqlite3 reports a zero result.
        Shape::Exec => Outcome::Exec {
            last_insert_id: 0,
            rows_affected: 0,
        },
        Shape::Query => Outcome::Rows(Rows::default()),
    }))
}

/// One statement string as it runs, prepared statement by prepared statement: the
/// arguments it shares out, and the answer's shape so far.
struct StringRun<'a> {
    sql: &'a SqlConn,
    args: Args<'a>,
    /// Arguments bound by the statements run so far.
    consumed: usize,
    shape: Shape,
    mode: Mode,
    meter: &'a Meter,
}

/// The statement from the writer's cache of prepared statements, for a [`plain_write`]
/// (prepared on a miss); `None` for any other statement, which empties the cache first
/// ([`SqlConn::unsettle_statements`]), or when preparing fails (the caller prepares it
/// again its own way, for the error). Preparing each statement was a large part of the
/// writer's work per row (issue 12). A cached statement runs exactly as a freshly prepared
/// one: its VM-step count starts again from zero, because SQLite places the progress
/// handler's calls, and so the step budget's checks, by that count.
fn cached_prepare<'c>(
    sql: &'c SqlConn,
    stmt: &Statement,
    meter: &Meter,
) -> Option<CachedStatement<'c>> {
    // The cache trims Unicode white space from the text; SQLite would refuse some of it.
    let trimmed = stmt.sql.trim();
    let ascii = stmt.sql.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.len() != ascii.len() || !plain_write(stmt) {
        sql.unsettle_statements();
        return None;
    }
    let s = prepare(sql, meter, || sql.conn.prepare_cached(trimmed)).ok()?;
    s.reset_status(StatementStatus::VmStep);
    Some(s)
}

/// Prepares a client's statement: the authorizer knows it is preparing, and the step budget
/// does not count. Preparing runs VM steps only to read the schema, which a node does when
/// its schema was reset (after a restore, or a rolled-back schema change) and another node
/// that has it loaded does not: counting them would let the same entry stop at different
/// points on different nodes.
fn prepare<T>(sql: &SqlConn, meter: &Meter, f: impl FnOnce() -> T) -> T {
    sql.guard().preparing(true);
    meter.paused.store(true, Ordering::Relaxed);
    let r = f();
    meter.paused.store(false, Ordering::Relaxed);
    sql.guard().preparing(false);
    r
}

impl StringRun<'_> {
    /// Binds, runs and reports one prepared statement of the string (`reshape`: it is the
    /// string's first, and may decide the shape).
    fn statement(
        &mut self,
        s: &mut rusqlite::Statement<'_>,
        reshape: bool,
    ) -> Result<Outcome, Failure> {
        let (sql, conn, meter) = (self.sql, &self.sql.conn, self.meter);
        let read = is_read(s);
        if reshape && !read {
            // Like rqlite, the first statement of the string decides the shape.
            self.shape = Shape::Exec;
        }
        let shape = self.shape;
        let fail = |message: String| Failure { message, shape };
        if self.mode == Mode::Query && !read {
            return Err(fail(NOT_READ_ONLY.to_string()));
        }
        self.consumed = bind(s, &self.args, self.consumed, shape).map_err(fail)?;
        // Prepared just now: the authorizer saw whether it is a savepoint operation.
        let savepoint = sql.guard().take_savepoint();
        let mark = sql
            .capture
            .as_ref()
            .map(|c| (c.mark(), conn.total_changes()));
        let r = match shape {
            Shape::Exec => exec(conn, s),
            Shape::Query => query(s),
        };
        if let (Some(c), Some((mark, before))) = (&sql.capture, mark) {
            // SQLite adds a failed statement's rows to the total only when it kept them
            // (`OR FAIL` keeps the rows written before the failure; ABORT undoes them all).
            let undone = r.is_err() && conn.total_changes() == before;
            meter.paused.store(true, Ordering::Relaxed);
            c.statement_done(conn, mark, undone, savepoint);
            meter.paused.store(false, Ordering::Relaxed);
        }
        r.map_err(fail)
    }
}

/// Binds this statement's share of the arguments; returns how many are now consumed.
fn bind(
    s: &mut rusqlite::Statement<'_>,
    args: &Args<'_>,
    consumed: usize,
    shape: Shape,
) -> Result<usize, String> {
    let wanted = s.parameter_count();
    let total = args.list.len();
    let available = total.saturating_sub(consumed);
    if available < wanted {
        // go-sqlite3's exec and query paths word the count differently.
        let got = if shape == Shape::Exec {
            total
        } else {
            available
        };
        return Err(format!(
            "not enough args to execute query: want {wanted} got {got}"
        ));
    }
    for (i, (name, p)) in args.list[consumed..consumed + wanted].iter().enumerate() {
        if name.is_none() {
            s.raw_bind_parameter(i + 1, to_sql(p))
                .map_err(|e| message(&e))?;
        }
    }
    // Named arguments bind wherever their name appears, in any statement of the string.
    for (name, p) in &args.list {
        let Some(name) = name else { continue };
        for prefix in [':', '@', '$'] {
            if let Ok(Some(idx)) = s.parameter_index(&format!("{prefix}{name}")) {
                s.raw_bind_parameter(idx, to_sql(p))
                    .map_err(|e| message(&e))?;
            }
        }
    }
    Ok(consumed + wanted)
}

fn to_sql(p: &Param) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match p {
        Param::Null => ValueRef::Null,
        Param::Int(i) => ValueRef::Integer(*i),
        Param::Real(f) => ValueRef::Real(*f),
        Param::Bool(b) => ValueRef::Integer(i64::from(*b)),
        Param::Text(t) => ValueRef::Text(t.as_bytes()),
        Param::Blob(b) => ValueRef::Blob(b),
    })
}

/// Steps the statement to completion and reports the connection's counters, which carry
/// over from earlier statements when this one changes nothing (rqlite does the same).
fn exec(conn: &Connection, s: &mut rusqlite::Statement<'_>) -> Result<Outcome, String> {
    let mut rows = s.raw_query();
    while rows.next().map_err(|e| message(&e))?.is_some() {}
    Ok(Outcome::Exec {
        last_insert_id: conn.last_insert_rowid(),
        rows_affected: i64::try_from(conn.changes()).unwrap_or(i64::MAX),
    })
}

fn query(s: &mut rusqlite::Statement<'_>) -> Result<Outcome, String> {
    // The columns are read once the statement has been stepped: if the schema changed since
    // it was prepared (a connection that had not seen an ALTER TABLE yet), SQLite prepares
    // it again in its first step, and only then are the names and types current.
    let mut values = Vec::new();
    let mut meta: Option<Columns> = None;
    {
        let mut rows = s.raw_query();
        while let Some(row) = rows.next().map_err(|e| message(&e))? {
            let m = match meta.take() {
                Some(m) => m,
                None => Columns::of(row.as_ref())?,
            };
            let mut out = Vec::with_capacity(m.decls.len());
            for (i, decl) in m.decls.iter().enumerate() {
                out.push(values::convert(
                    row.get_ref(i).map_err(|e| message(&e))?,
                    decl,
                )?);
            }
            values.push(out);
            meta = Some(m);
        }
    }
    let Columns {
        names,
        decls,
        tables,
    } = match meta {
        Some(m) => m,
        None => Columns::of(s)?,
    };
    let mut types = decls;
    values::backfill_types(&mut types, values.first());
    Ok(Outcome::Rows(Rows {
        columns: names,
        types,
        values,
        tables,
    }))
}

/// A result's columns: names, lower-cased declared types, source tables.
struct Columns {
    names: Vec<String>,
    decls: Vec<String>,
    tables: Vec<String>,
}

impl Columns {
    fn of(s: &rusqlite::Statement<'_>) -> Result<Self, String> {
        let n = s.column_count();
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            names.push(s.column_name(i).map_err(|e| message(&e))?.to_string());
        }
        let decls = s
            .columns()
            .iter()
            .map(|c| c.decl_type().unwrap_or("").to_lowercase())
            .collect();
        let tables = s
            .columns_with_metadata()
            .iter()
            .map(|c| c.table_name().unwrap_or("").to_string())
            .collect();
        Ok(Self {
            names,
            decls,
            tables,
        })
    }
}

/// SQLite's own message, without rusqlite's decorations.
pub(crate) fn message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// Go's `%q` for the names in database/sql's error (ASCII-printable kept, rest escaped).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
