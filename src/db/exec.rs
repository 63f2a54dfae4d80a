//! Running one request's statements on one SQLite connection.
//!
//! Owns: parameter binding with go-sqlite3's rules (positional by index, surplus ignored,
//! named by `:k`/`@k`/`$k`), the tail loop over a multi-statement string, execute-shaped
//! versus query-shaped results, the per-statement `db_timeout`, and the request-level
//! `transaction` (BEGIN, stop and ROLLBACK at the first error, else COMMIT).
//! Does not: pick the connection; `db.rs` does (read-write, or read-only for reads).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Batch, Connection};

use super::values;
use crate::command::{Outcome, Param, Request, Rows, Statement, StmtResult};

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

/// Runs every statement of `req` on `conn`.
/// With `use_tx`, they run inside BEGIN/COMMIT and the first error stops the request and
/// rolls it back; the results then end with the failing statement.
pub(crate) fn run_request(
    conn: &Connection,
    req: &Request,
    mode: Mode,
    use_tx: bool,
) -> Vec<StmtResult> {
    let mut results = Vec::with_capacity(req.statements.len());
    if use_tx {
        let start = Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN") {
            results.push(StmtResult {
                outcome: Outcome::Error(message(&e)),
                time: secs(start),
            });
            return results;
        }
    }
    for stmt in &req.statements {
        let r = run_statement(conn, stmt, mode, req.db_timeout_ms);
        let failed = matches!(r.outcome, Outcome::Error(_));
        results.push(r);
        if failed && use_tx {
            // SQLite may already have rolled back (e.g. after an interrupt).
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return results;
        }
    }
    // A statement of the request may itself have ended the transaction (a dump's COMMIT).
    if use_tx && !conn.is_autocommit() {
        let start = Instant::now();
        if let Err(e) = conn.execute_batch("COMMIT") {
            // Deferred constraints fail here. Everything was undone, and the extra result
            // says why, since no single statement failed.
            let _ = conn.execute_batch("ROLLBACK");
            results.push(StmtResult {
                outcome: Outcome::Error(message(&e)),
                time: secs(start),
            });
        }
    }
    results
}

/// Runs one statement string (possibly several SQL statements; the outcome is the last
/// one's, or the first error).
pub(crate) fn run_statement(
    conn: &Connection,
    stmt: &Statement,
    mode: Mode,
    timeout_ms: u64,
) -> StmtResult {
    let start = Instant::now();
    // A limit too large to represent is no limit.
    let deadline = (timeout_ms > 0)
        .then(|| start.checked_add(Duration::from_millis(timeout_ms)))
        .flatten();
    let guard = deadline.map(|d| TimeoutGuard::install(conn, d));
    let outcome = match run_tail_loop(conn, stmt, mode) {
        Ok(outcome) => outcome,
        Err(Failure { message, shape }) => {
            let timed_out = guard.as_ref().is_some_and(TimeoutGuard::fired);
            Outcome::Error(match (timed_out, shape) {
                (true, Shape::Query) => "query timeout".to_string(),
                (true, Shape::Exec) => "execute timeout".to_string(),
                (false, _) => message,
            })
        }
    };
    drop(guard);
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

fn run_tail_loop(conn: &Connection, stmt: &Statement, mode: Mode) -> Result<Outcome, Failure> {
    let mut shape = match mode {
        Mode::Query => Shape::Query,
        _ if stmt.force_query => Shape::Query,
        Mode::Execute => Shape::Exec,
        Mode::Request => Shape::Query,
    };
    let fail = |message: String, shape: Shape| Failure { message, shape };
    let args = Args::new(stmt).map_err(|m| fail(m, shape))?;
    let mut batch = Batch::new(conn, &stmt.sql);
    let mut consumed = 0usize;
    let mut last = None;
    let mut first = true;
    loop {
        let mut s = match batch.next() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => return Err(fail(message(&e), shape)),
        };
        let read = is_read(&s);
        if first && mode == Mode::Request && !stmt.force_query && !read {
            // Like rqlite, the first statement of the string decides the shape.
            shape = Shape::Exec;
        }
        first = false;
        if mode == Mode::Query && !read {
            return Err(fail(NOT_READ_ONLY.to_string(), shape));
        }
        consumed = bind(&mut s, &args, consumed, shape).map_err(|m| fail(m, shape))?;
        last = Some(
            match shape {
                Shape::Exec => exec(conn, &mut s),
                Shape::Query => query(&mut s),
            }
            .map_err(|m| fail(m, shape))?,
        );
    }
    Ok(last.unwrap_or(match shape {
        // Nothing but whitespace or comments: go-sqlite3 reports a zero result.
        Shape::Exec => Outcome::Exec {
            last_insert_id: 0,
            rows_affected: 0,
        },
        Shape::Query => Outcome::Rows(Rows::default()),
    }))
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
    let n = s.column_count();
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        columns.push(s.column_name(i).map_err(|e| message(&e))?.to_string());
    }
    let decls: Vec<String> = s
        .columns()
        .iter()
        .map(|c| c.decl_type().unwrap_or("").to_lowercase())
        .collect();
    let mut values = Vec::new();
    let mut rows = s.raw_query();
    while let Some(row) = rows.next().map_err(|e| message(&e))? {
        let mut out = Vec::with_capacity(n);
        for (i, decl) in decls.iter().enumerate() {
            out.push(values::convert(
                row.get_ref(i).map_err(|e| message(&e))?,
                decl,
            )?);
        }
        values.push(out);
    }
    let mut types = decls;
    values::backfill_types(&mut types, values.first());
    Ok(Outcome::Rows(Rows {
        columns,
        types,
        values,
    }))
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

/// A progress handler that interrupts the running statement once the deadline passes.
/// SQLite then fails the statement with SQLITE_INTERRUPT (rolling it back), and the
/// connection stays usable.
struct TimeoutGuard<'c> {
    conn: &'c Connection,
    fired: Arc<AtomicBool>,
}

impl<'c> TimeoutGuard<'c> {
    /// How many VM instructions run between deadline checks: frequent enough for
    /// millisecond limits, rare enough to cost nothing measurable.
    const CHECK_EVERY: i32 = 1000;

    fn install(conn: &'c Connection, deadline: Instant) -> Self {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        conn.progress_handler(
            Self::CHECK_EVERY,
            Some(move || {
                let over = Instant::now() >= deadline;
                if over {
                    flag.store(true, Ordering::Relaxed);
                }
                over
            }),
        );
        Self { conn, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for TimeoutGuard<'_> {
    fn drop(&mut self) {
        self.conn.progress_handler(0, None::<fn() -> bool>);
    }
}
