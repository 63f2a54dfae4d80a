//! Capturing row changes on the writer connection.
//!
//! SQLite's pre-update hook records every row an INSERT, UPDATE or DELETE touches (before and
//! after images); the commit hook keeps what a transaction changed, the rollback hook drops
//! it, and the statement runner ([`Capture::statement_done`]) drops what a failed statement
//! changed (SQLite undoes it without a rollback hook) and names the columns while the schema
//! is the one the statement saw. The state machine takes what a log entry committed
//! ([`Capture::take`]) and tags it with the entry's index.
//!
//! Only the `main` database's own tables: not `temp`, not `sqlite_*` (SQLite's bookkeeping
//! such as `sqlite_sequence`), and only tables `table_filter` matches (each table left out is
//! logged once, so that a filter matching nothing shows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::ffi::{c_char, c_int, c_void, CStr};

use rusqlite::hooks::TransactionOperation;
use rusqlite::{ffi, Connection};

use crate::command::Value;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }
}

/// One changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub op: Op,
    pub table: String,
    /// The row's rowid before (UPDATE, DELETE) and after (INSERT, UPDATE) the change.
    pub old_row_id: Option<i64>,
    pub new_row_id: Option<i64>,
    /// Column values before and after (`None` with `row_ids_only`, or where the op has none).
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// Column names, resolved when the statement that made the change finished; `None`
    /// until then, or when they could not be matched to the values (the event then carries
    /// an error instead of images).
    pub columns: Option<Arc<[String]>>,
}

/// Settings of the capture (from `-cdc-config`).
#[derive(Debug, Clone, Default)]
pub struct CaptureRules {
    pub table_filter: Option<regex::Regex>,
    pub row_ids_only: bool,
}

/// The changes of the writer connection, shared by its hooks and the code that runs
/// statements. Used from the writer's thread only; the lock is never contended.
#[derive(Debug, Default)]
pub struct Capture {
    rules: CaptureRules,
    buf: Mutex<Buf>,
}

#[derive(Debug, Default)]
struct Buf {
    /// Changes of the open transaction.
    pending: Vec<RowChange>,
    /// Changes of transactions committed since the last [`Capture::take`].
    committed: Vec<RowChange>,
    /// Some change in either list has no column names yet.
    unnamed: bool,
    /// Column names per table, valid for `schema_version`.
    names: HashMap<String, Arc<[String]>>,
    schema_version: Option<i64>,
    /// Open savepoints, innermost last, each with where its changes begin in `pending`.
    savepoints: Vec<(String, usize)>,
    /// Tables whose changes `table_filter` left out (each logged once).
    filtered_out: std::collections::HashSet<String>,
}

impl Capture {
    pub fn new(rules: CaptureRules) -> Arc<Self> {
        Arc::new(Self {
            rules,
            buf: Mutex::default(),
        })
    }

    fn buf(&self) -> MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hooks this capture onto `conn` (the writer; again whenever it is reopened).
    pub fn install(self: &Arc<Self>, conn: &Connection) {
        let ctx = Arc::into_raw(self.clone()) as *mut c_void;
        // SAFETY: the handle is valid for the life of `conn`; `ctx` is a counted reference
        // that the callback only borrows, kept alive until the hook is replaced (the one a
        // closed connection held is leaked: a few bytes per reopened writer).
        let old = unsafe { ffi::sqlite3_preupdate_hook(conn.handle(), Some(preupdate), ctx) };
        if !old.is_null() {
            // SAFETY: a previous install put this pointer there with Arc::into_raw.
            unsafe { drop(Arc::from_raw(old as *const Capture)) };
        }
        let c = self.clone();
        conn.commit_hook(Some(move || {
            let mut b = c.buf();
            let mut p = std::mem::take(&mut b.pending);
            b.committed.append(&mut p);
            b.savepoints.clear();
            false // never veto the commit
        }));
        let c = self.clone();
        conn.rollback_hook(Some(move || {
            let mut b = c.buf();
            b.pending.clear();
            b.savepoints.clear();
        }));
    }

    /// One row about to change (see [`preupdate`]).
    ///
    /// # Safety
    /// Called only from SQLite's pre-update callback, with its arguments.
    unsafe fn record(
        &self,
        db: *mut ffi::sqlite3,
        op: c_int,
        schema: *const c_char,
        table: *const c_char,
        key1: i64,
        key2: i64,
    ) {
        if schema.is_null() || table.is_null() {
            return;
        }
        // SAFETY: SQLite passes NUL-terminated names valid for the callback.
        let (schema, table) = unsafe { (CStr::from_ptr(schema), CStr::from_ptr(table)) };
        let table = table.to_string_lossy();
        if schema.to_bytes() != b"main" || table.starts_with("sqlite_") {
            return;
        }
        if let Some(re) = &self.rules.table_filter {
            if !re.is_match(&table) {
                // Said once per table, so that a filter that matches nothing is visible.
                let mut b = self.buf();
                if !b.filtered_out.contains(table.as_ref()) {
                    b.filtered_out.insert(table.to_string());
                    tracing::info!(
                        table = %table,
                        table_filter = re.as_str(),
                        "CDC: changes to this table are not captured (table_filter does not match it)"
                    );
                }
                return;
            }
        }
        let images = !self.rules.row_ids_only;
        // SAFETY: inside the pre-update callback, these read the row being changed.
        let read = |new: bool| -> Vec<Value> {
            let n = unsafe { ffi::sqlite3_preupdate_count(db) };
            (0..n)
                .map(|i| {
                    let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
                    let rc = unsafe {
                        if new {
                            ffi::sqlite3_preupdate_new(db, i, &mut v)
                        } else {
                            ffi::sqlite3_preupdate_old(db, i, &mut v)
                        }
                    };
                    if rc == ffi::SQLITE_OK {
                        unsafe { value_of(v) }
                    } else {
                        Value::Null
                    }
                })
                .collect()
        };
        let (op, old_row_id, new_row_id, before, after) = match op {
            ffi::SQLITE_INSERT => (
                Op::Insert,
                None,
                Some(key2),
                None,
                images.then(|| read(true)),
            ),
            ffi::SQLITE_DELETE => (
                Op::Delete,
                Some(key1),
                None,
                images.then(|| read(false)),
                None,
            ),
            ffi::SQLITE_UPDATE => (
                Op::Update,
                Some(key1),
                Some(key2),
                images.then(|| read(false)),
                images.then(|| read(true)),
            ),
            _ => return,
        };
        let mut b = self.buf();
        b.unnamed |= images;
        b.pending.push(RowChange {
            op,
            table: table.into_owned(),
            old_row_id,
            new_row_id,
            before,
            after,
            columns: None,
        });
    }

    /// Where the changes of the statement about to run begin.
    pub fn mark(&self) -> usize {
        self.buf().pending.len()
    }

    /// A statement finished: the changes of one that failed and was undone (`failed`) are
    /// dropped, a `ROLLBACK TO` drops what was changed since its savepoint, and the columns
    /// of what the statement changed are named from the schema as it is now. `savepoint`: the savepoint
    /// operation the statement is (from the authorizer, when it was prepared).
    pub fn statement_done(
        &self,
        conn: &Connection,
        mark: usize,
        failed: bool,
        savepoint: Option<(TransactionOperation, String)>,
    ) {
        let tables: Vec<String> = {
            let mut b = self.buf();
            if failed && b.pending.len() > mark {
                b.pending.truncate(mark);
            }
            if let (false, Some((op, name))) = (failed, savepoint) {
                let at = b
                    .savepoints
                    .iter()
                    .rposition(|(n, _)| n.eq_ignore_ascii_case(&name));
                match (op, at) {
                    (TransactionOperation::Begin, _) => b.savepoints.push((name, mark)),
                    (TransactionOperation::Release, Some(i)) => b.savepoints.truncate(i),
                    (TransactionOperation::Rollback, Some(i)) => {
                        let since = b.savepoints[i].1;
                        b.pending.truncate(since);
                        b.savepoints.truncate(i + 1);
                    }
                    _ => {}
                }
            }
            if !b.unnamed {
                return;
            }
            let b = &mut *b;
            let mut t: Vec<String> = unnamed(&mut b.pending)
                .iter()
                .chain(unnamed(&mut b.committed).iter())
                .map(|c| c.table.clone())
                .collect();
            t.sort();
            t.dedup();
            t
        };
        // Queried without the lock held. Run once per statement that changed rows: kept
        // prepared (this statement never counts toward a request's step budget: `exec`).
        let version: Option<i64> = conn
            .prepare_cached("PRAGMA main.schema_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .ok();
        let mut b = self.buf();
        if version.is_none() || b.schema_version != version {
            b.names.clear();
            b.schema_version = version;
        }
        for t in tables {
            if let std::collections::hash_map::Entry::Vacant(v) = b.names.entry(t) {
                let cols = column_names(conn, v.key());
                v.insert(cols);
            }
        }
        let Buf {
            pending,
            committed,
            names,
            ..
        } = &mut *b;
        for c in unnamed(pending)
            .iter_mut()
            .chain(unnamed(committed).iter_mut())
        {
            let n = c.before.as_ref().or(c.after.as_ref()).map_or(0, Vec::len);
            c.columns = Some(
                names
                    .get(&c.table)
                    .filter(|cols| cols.len() == n)
                    .cloned()
                    // Names that do not fit: an empty list marks the mismatch.
                    .unwrap_or_else(|| Arc::from(Vec::new())),
            );
        }
        b.unnamed = false;
    }

    /// How many committed changes are held: a point [`Capture::forget_committed_since`]
    /// can go back to.
    pub fn committed_mark(&self) -> usize {
        self.buf().committed.len()
    }

    /// Drops the changes taken as committed after `mark` (their commit failed after the
    /// commit hook ran).
    pub fn forget_committed_since(&self, mark: usize) {
        self.buf().committed.truncate(mark);
    }

    /// The changes committed since the last call (those of one log entry), in order.
    pub fn take(&self) -> Vec<RowChange> {
        let mut b = self.buf();
        // A transaction never spans entries (a request's open one is rolled back).
        b.pending.clear();
        b.savepoints.clear();
        std::mem::take(&mut b.committed)
    }
}

/// The changes not yet named: the tail after the last named one (every statement names its
/// own changes when it ends, so only the last statement's are unnamed; walking just those
/// keeps a request of many statements linear).
fn unnamed(changes: &mut [RowChange]) -> &mut [RowChange] {
    let start = changes
        .iter()
        .rposition(|c| c.columns.is_some())
        .map_or(0, |i| i + 1);
    &mut changes[start..]
}

/// The table's columns as the pre-update hook numbers them (hidden and generated columns
/// included, in table order). A VIRTUAL generated column is named `""`: it is computed when
/// read, never stored, so the hook sees only NULL for it, and the events leave it out.
fn column_names(conn: &Connection, table: &str) -> Arc<[String]> {
    let names = conn
        .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1, 'main')")
        .and_then(|mut s| {
            s.query_map([table], |r| {
                let hidden: i64 = r.get(1)?;
                Ok(if hidden == 2 {
                    String::new()
                } else {
                    r.get(0)?
                })
            })?
            .collect::<Result<Vec<String>, _>>()
        })
        .unwrap_or_default();
    Arc::from(names)
}

/// SQLite's pre-update callback: hands the row to the [`Capture`] installed with it.
unsafe extern "C" fn preupdate(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    schema: *const c_char,
    table: *const c_char,
    key1: i64,
    key2: i64,
) {
    // SAFETY: `ctx` is the Arc<Capture> pointer `install` registered, alive while it is
    // registered; the arguments are SQLite's, valid for this call.
    let cap = unsafe { &*(ctx as *const Capture) };
    // A panic must not unwind into SQLite's C frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        cap.record(db, op, schema, table, key1, key2)
    }));
}

/// A protected `sqlite3_value` as the value it holds.
///
/// # Safety
/// `v` is null or a value SQLite handed out that is still valid.
unsafe fn value_of(v: *mut ffi::sqlite3_value) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    // SAFETY: `v` is valid (caller); text and blob pointers are read before the length, as
    // SQLite's documentation asks, and copied at once.
    unsafe {
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Value::Int(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                if p.is_null() {
                    Value::Text(String::new())
                } else {
                    let bytes = std::slice::from_raw_parts(p, n);
                    Value::Text(String::from_utf8_lossy(bytes).into_owned())
                }
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(v) as *const u8;
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                if p.is_null() || n == 0 {
                    Value::Blob(Vec::new())
                } else {
                    Value::Blob(std::slice::from_raw_parts(p, n).to_vec())
                }
            }
            _ => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(rules: CaptureRules) -> (Connection, Arc<Capture>) {
        let c = Connection::open_in_memory().unwrap();
        let cap = Capture::new(rules);
        cap.install(&c);
        (c, cap)
    }

    fn run(c: &Connection, cap: &Capture, sql: &str) -> bool {
        let mark = cap.mark();
        let ok = c.execute_batch(sql).is_ok();
        cap.statement_done(c, mark, !ok, None);
        ok
    }

    #[test]
    fn committed_changes_are_kept_with_images_and_names() {
        let (c, cap) = conn(CaptureRules::default());
        run(
            &c,
            &cap,
            "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, b BLOB)",
        );
        run(&c, &cap, "INSERT INTO foo VALUES (1, 'a', x'01')");
        run(&c, &cap, "UPDATE foo SET name = 'b' WHERE id = 1");
        run(&c, &cap, "DELETE FROM foo");
        let got = cap.take();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].op, Op::Insert);
        assert_eq!(got[0].new_row_id, Some(1));
        assert_eq!(
            got[0].after,
            Some(vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::Blob(vec![1])
            ])
        );
        assert_eq!(&*got[0].columns.clone().unwrap(), ["id", "name", "b"]);
        assert_eq!(got[1].op, Op::Update);
        assert_eq!(got[1].before.as_ref().unwrap()[1], Value::Text("a".into()));
        assert_eq!(got[1].after.as_ref().unwrap()[1], Value::Text("b".into()));
        assert_eq!(got[2].op, Op::Delete);
        assert_eq!(got[2].old_row_id, Some(1));
        assert!(cap.take().is_empty());
    }

    #[test]
    fn rolled_back_and_failed_changes_are_dropped() {
        let (c, cap) = conn(CaptureRules::default());
        run(
            &c,
            &cap,
            "CREATE TABLE foo (id INTEGER PRIMARY KEY, v INTEGER UNIQUE)",
        );
        run(&c, &cap, "BEGIN; INSERT INTO foo VALUES (1, 1); ROLLBACK");
        assert!(cap.take().is_empty());
        // The second row fails: the statement's first row is undone too.
        run(&c, &cap, "INSERT INTO foo VALUES (5, 5)");
        assert!(!run(&c, &cap, "INSERT INTO foo VALUES (6, 6), (7, 5)"));
        let got = cap.take();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].new_row_id, Some(5));
        // Inside an explicit transaction, a failed statement's rows go, the others stay.
        run(&c, &cap, "BEGIN");
        run(&c, &cap, "INSERT INTO foo VALUES (8, 8)");
        assert!(!run(&c, &cap, "INSERT INTO foo VALUES (9, 9), (10, 8)"));
        run(&c, &cap, "COMMIT");
        let got = cap.take();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].new_row_id, Some(8));
    }

    #[test]
    fn filter_row_ids_only_and_internal_tables() {
        let rules = CaptureRules {
            table_filter: Some(regex::Regex::new("^keep").unwrap()),
            row_ids_only: true,
        };
        let (c, cap) = conn(rules);
        run(
            &c,
            &cap,
            "CREATE TABLE keep1 (id INTEGER PRIMARY KEY AUTOINCREMENT, v); CREATE TABLE drop1 (v)",
        );
        run(
            &c,
            &cap,
            "INSERT INTO keep1 (v) VALUES (1); INSERT INTO drop1 VALUES (1)",
        );
        run(
            &c,
            &cap,
            "CREATE TEMP TABLE keep2 (v); INSERT INTO keep2 VALUES (1)",
        );
        let got = cap.take();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].table, "keep1");
        assert_eq!(got[0].after, None);
    }
}
