//! One SQLite connection as sqlraft opens it: the pragmas the store relies on, and the
//! authorizer that keeps SQL away from the host's files.
//!
//! Owns: opening the writer and the readers on the database file (WAL mode, never fsynced:
//! the Raft log is the durable copy), the pragmas rqlite reports, loading the operator's
//! SQLite extensions (`-extensions-path`) into each of them through the C API, and the
//! refusal of `ATTACH`, `DETACH`, `VACUUM INTO`, `load_extension()` and the file-naming
//! pragmas on every connection that runs clients' SQL.
//! Does not: run statements (`exec.rs`) or decide which connection serves what (`engine.rs`,
//! `reads.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};

use super::DbError;

/// How long a connection waits for a lock another one holds. In WAL mode readers never
/// block the writer nor the writer the readers; this only covers WAL recovery and
/// checkpoints. rqlite uses the same value.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// A connection that runs clients' SQL.
pub struct SqlConn {
    pub(crate) conn: Connection,
    guard: Arc<AuthGuard>,
    /// Change capture (the writer, with `-cdc-config`): told where each statement's changes
    /// begin and whether it failed.
    pub(crate) capture: Option<Arc<super::capture::Capture>>,
    /// Extensions are loaded: a function of one may run any SQL, pragmas included.
    pub(crate) extensions: bool,
    /// Keeps clients' plain row writes prepared between runs (the writer without
    /// extensions; see `exec::cached_prepare`).
    pub(crate) cache_statements: bool,
    /// A statement that may have changed the schema, a setting or the planner's statistics
    /// ran since the statement cache was last emptied (see [`SqlConn::settle_statements`]).
    statements_unsettled: AtomicBool,
}

/// What the authorizer shares with the code that runs statements: whether a statement is
/// being prepared (clients' own `ATTACH` is refused then; `VACUUM` attaches its temporary
/// database while it runs), and why the last refusal happened, so the statement's error can
/// say what was refused instead of SQLite's bare "not authorized".
#[derive(Debug, Default)]
pub(crate) struct AuthGuard {
    preparing: AtomicBool,
    refused: Mutex<Option<&'static str>>,
    /// A statement changed a connection-level setting (a pragma such as `foreign_keys=ON`,
    /// `recursive_triggers=1`, `case_sensitive_like=1`): the connection must not carry it
    /// into the next request.
    changed_settings: AtomicBool,
    /// A statement failed because of this node (disk full, I/O error), not because of what it
    /// says.
    node_failure: Mutex<Option<String>>,
    /// Clients' statements are running inside an interactive transaction's wrapper: their
    /// own transaction control would commit or end it outside the log, so it is refused.
    in_client_tx: AtomicBool,
    /// The savepoint operation of the statement just prepared (change capture must undo
    /// what a `ROLLBACK TO` undoes).
    savepoint: Mutex<Option<(rusqlite::hooks::TransactionOperation, String)>>,
}

impl AuthGuard {
    fn refuse(&self, why: &'static str) -> Authorization {
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(why);
        }
        Authorization::Deny
    }

    fn check(&self, ctx: AuthContext<'_>) -> Authorization {
        let preparing = self.preparing.load(Ordering::Relaxed);
        match ctx.action {
            // VACUUM attaches a temporary database (an empty file name) while it runs; a
            // client's ATTACH, and VACUUM INTO's attachment of its output file, name files.
            AuthAction::Attach { filename } if !preparing && filename.is_empty() => {
                Authorization::Allow
            }
            AuthAction::Attach { .. } if preparing => self.refuse(REFUSED_ATTACH),
            AuthAction::Attach { .. } => self.refuse(REFUSED_VACUUM_INTO),
            AuthAction::Detach { .. } if preparing => self.refuse(REFUSED_DETACH),
            AuthAction::Transaction { .. } | AuthAction::Savepoint { .. }
                if preparing && self.in_client_tx.load(Ordering::Relaxed) =>
            {
                self.refuse(REFUSED_TX_CONTROL)
            }
            AuthAction::Savepoint {
                operation,
                savepoint_name,
            } if preparing => {
                if let Ok(mut s) = self.savepoint.lock() {
                    *s = Some((operation, savepoint_name.to_string()));
                }
                Authorization::Allow
            }
            AuthAction::Pragma {
                pragma_name,
                pragma_value,
            } if REFUSED_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name))
                && (pragma_value.is_some() || pragma_name.ends_with("directory")) =>
            {
                self.refuse(REFUSED_PRAGMA)
            }
            AuthAction::Pragma {
                pragma_name,
                pragma_value: Some(_),
            } if !keeps_settings(pragma_name) => {
                self.changed_settings.store(true, Ordering::Relaxed);
                Authorization::Allow
            }
            _ => Authorization::Allow,
        }
    }

    /// Marks the span in which a client's statement is prepared.
    pub(crate) fn preparing(&self, on: bool) {
        self.preparing.store(on, Ordering::Relaxed);
        if on {
            if let Ok(mut r) = self.refused.lock() {
                *r = None;
            }
            if let Ok(mut s) = self.savepoint.lock() {
                *s = None;
            }
        }
    }

    /// The savepoint operation of the statement just prepared, if it is one.
    pub(crate) fn take_savepoint(&self) -> Option<(rusqlite::hooks::TransactionOperation, String)> {
        self.savepoint.lock().ok().and_then(|mut s| s.take())
    }

    /// Marks the span in which an interactive transaction's statements run.
    pub(crate) fn client_tx(&self, on: bool) {
        self.in_client_tx.store(on, Ordering::Relaxed);
    }

    /// Records that a statement failed because of this node.
    pub(crate) fn node_failure(&self, message: &str) {
        if let Ok(mut f) = self.node_failure.lock() {
            f.get_or_insert_with(|| message.to_string());
        }
    }

    /// The node failure recorded since the last call, if any.
    pub(crate) fn take_node_failure(&self) -> Option<String> {
        self.node_failure.lock().ok().and_then(|mut f| f.take())
    }

    /// Whether a statement changed a connection-level setting since the last call.
    pub(crate) fn take_changed_settings(&self) -> bool {
        self.changed_settings.swap(false, Ordering::Relaxed)
    }

    /// Why the authorizer refused something since the last statement began, if it did.
    pub(crate) fn refused(&self) -> Option<&'static str> {
        self.refused.lock().ok().and_then(|r| *r)
    }
}

/// Pragmas that take an argument yet leave the connection's settings as they were: they
/// inspect something, or change the database itself (which snapshots carry).
fn keeps_settings(name: &str) -> bool {
    const KEEP: [&str; 17] = [
        // The engine's own checkpoints used to mark the writer changed, and every write after
        // the first checkpoint then paid for a full reset (22% of a write's instructions).
        "wal_checkpoint",
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "user_version",
        "application_id",
        "optimize",
        "incremental_vacuum",
        "shrink_memory",
        "page_count",
    ];
    KEEP.iter().any(|k| k.eq_ignore_ascii_case(name))
}

pub(crate) const REFUSED_ATTACH: &str =
    "ATTACH is not allowed: SQL may not open other database files";
pub(crate) const REFUSED_DETACH: &str = "DETACH is not allowed";
pub(crate) const REFUSED_TX_CONTROL: &str =
    "BEGIN, COMMIT, ROLLBACK and SAVEPOINT are not allowed inside an interactive transaction (use /db/tx/{id}/commit or /rollback)";
pub(crate) const REFUSED_VACUUM_INTO: &str =
    "VACUUM INTO is not allowed: SQL may not write files (use /db/backup)";
pub(crate) const REFUSED_PRAGMA: &str =
    "this PRAGMA is not allowed: it names files, or changes settings the node relies on";

/// Pragmas clients may not set: they name directories, act on the whole process (heap
/// limits), or would break the node (`locking_mode=EXCLUSIVE` shuts out every reader,
/// `writable_schema` lets SQL corrupt the schema).
const REFUSED_PRAGMAS: [&str; 6] = [
    "temp_store_directory",
    "data_store_directory",
    "hard_heap_limit",
    "soft_heap_limit",
    "locking_mode",
    "writable_schema",
];

/// Puts back every connection-level setting a client may change with a pragma (counters
/// such as `last_insert_rowid()` are kept: rqlite reports them across requests).
pub(crate) fn reset_settings(conn: &Connection, fk: bool) -> Result<(), DbError> {
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = {}; PRAGMA recursive_triggers = 0; \
         PRAGMA reverse_unordered_selects = 0; PRAGMA case_sensitive_like = 0; \
         PRAGMA defer_foreign_keys = 0; PRAGMA ignore_check_constraints = 0; \
         PRAGMA legacy_alter_table = 0; PRAGMA query_only = 0; PRAGMA read_uncommitted = 0; \
         PRAGMA automatic_index = 1; PRAGMA cache_size = -2000; PRAGMA cache_spill = 1; \
         PRAGMA cell_size_check = 0; PRAGMA trusted_schema = 1; PRAGMA temp_store = 0; \
         PRAGMA secure_delete = 0; PRAGMA analysis_limit = 0; PRAGMA threads = 0; \
         PRAGMA journal_size_limit = 67108864; PRAGMA mmap_size = 0; PRAGMA busy_timeout = {}",
        i32::from(fk),
        BUSY_TIMEOUT.as_millis()
    ))?;
    Ok(())
}

/// Loads each extension into `conn`. Loading is switched on for the C API alone and off
/// again at once, so SQL's `load_extension()` stays refused (SQLite's default) on every
/// connection: an extension is chosen by the operator at start, never by a client.
pub(crate) fn load_extensions(conn: &Connection, paths: &[PathBuf]) -> Result<(), DbError> {
    if paths.is_empty() {
        return Ok(());
    }
    let set = |on: i32| -> Result<(), DbError> {
        // SAFETY: the handle is valid for the life of `conn`; this op takes an int and an
        // optional int pointer for the previous setting (null: not wanted).
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_config(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
                on,
                std::ptr::null_mut::<std::ffi::c_int>(),
            )
        };
        if rc == rusqlite::ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(DbError::Sqlite(format!(
                "cannot switch extension loading (SQLite error {rc})"
            )))
        }
    };
    set(1)?;
    let loaded = paths.iter().try_for_each(|p| {
        // SAFETY: the files were chosen by the operator (-extensions-path) to run inside
        // this process; SQLite calls the extension's entry point on this connection.
        unsafe { conn.load_extension(p, None::<&str>) }.map_err(|e| {
            DbError::Sqlite(format!("cannot load SQLite extension {}: {e}", p.display()))
        })
    });
    set(0)?;
    loaded
}

impl SqlConn {
    fn new(conn: Connection, fk: bool, extensions: &[PathBuf]) -> Result<Self, DbError> {
        load_extensions(&conn, extensions)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The bundled SQLite defaults foreign keys to ON; rqlite's default is OFF.
        conn.pragma_update(None, "foreign_keys", fk)?;
        let guard = Arc::new(AuthGuard::default());
        let g = guard.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| g.check(ctx)));
        Ok(Self {
            conn,
            guard,
            capture: None,
            extensions: !extensions.is_empty(),
            cache_statements: false,
            statements_unsettled: AtomicBool::new(false),
        })
    }

    /// Empties the statement cache before a statement that may change what a cached one
    /// would do (its schema, a setting, the planner's statistics), and marks the cache to be
    /// emptied again once the request ends ([`SqlConn::settle_statements`]): statements
    /// cached after it in the same request may be undone by a rollback.
    pub(crate) fn unsettle_statements(&self) {
        self.conn.flush_prepared_statement_cache();
        self.statements_unsettled.store(true, Ordering::Relaxed);
    }

    /// Ends a request on the writer: empties the statement cache if the request ran a
    /// statement that may have changed the schema, a setting or the statistics. A cached
    /// statement whose schema changed under it would be prepared again inside its run,
    /// after a few VM steps that a freshly prepared one does not count, and the step budget
    /// must trip at the same point on every node.
    pub(crate) fn settle_statements(&self) {
        if self.statements_unsettled.swap(false, Ordering::Relaxed) {
            self.conn.flush_prepared_statement_cache();
        }
    }

    /// Empties the statement cache (the database was replaced or rolled back by the node).
    pub(crate) fn forget_statements(&self) {
        self.statements_unsettled.store(false, Ordering::Relaxed);
        self.conn.flush_prepared_statement_cache();
    }

    /// A placeholder connection to nothing (while the database file is being replaced).
    pub(crate) fn in_memory() -> Result<Self, DbError> {
        Self::new(Connection::open_in_memory()?, false, &[])
    }

    pub(crate) fn guard(&self) -> &AuthGuard {
        &self.guard
    }
}

/// Deletes a database file and its journals (missing files are fine).
pub(crate) fn remove_db_files(path: &Path) -> Result<(), DbError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DbError::Io(format!(
                    "cannot delete {}: {e}",
                    Path::new(&p).display()
                )))
            }
        }
    }
    Ok(())
}

/// Creates a new, empty database at `path` (replacing any old one) and opens the writer on
/// it: WAL mode, never synced, no automatic checkpoints (the engine checkpoints itself).
pub(crate) fn open_writer(path: &Path, fk: bool, ext: &[PathBuf]) -> Result<SqlConn, DbError> {
    remove_db_files(path)?;
    let c = open_writer_on(path, fk, ext)?;
    // Writing page 1 now means even an empty database has a valid image (a copy, below,
    // keeps its own header: the user_version a client set in it).
    c.conn.execute_batch("PRAGMA user_version = 0")?;
    Ok(c)
}

/// Makes `path` a copy of the database file `from` (replacing any old one) and opens the
/// writer on it, as [`open_writer`] does. Copying the file is much faster than copying its
/// pages through SQLite; nothing may have the old database open.
pub(crate) fn open_writer_copy(
    path: &Path,
    from: &Path,
    fk: bool,
    ext: &[PathBuf],
) -> Result<SqlConn, DbError> {
    remove_db_files(path)?;
    std::fs::copy(from, path).map_err(|e| {
        DbError::Io(format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            path.display()
        ))
    })?;
    open_writer_on(path, fk, ext)
}

fn open_writer_on(path: &Path, fk: bool, ext: &[PathBuf]) -> Result<SqlConn, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| DbError::Io(format!("cannot create {}: {e}", path.display())))?;
    // Durability comes from the Raft log; this file is rebuilt from snapshot + log at start.
    // The schema is read now, before any request's step budget counts: reading it takes VM
    // steps that a node which has long had it loaded would not spend.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864; \
         SELECT count(*) FROM sqlite_schema",
    )?;
    let mut c = SqlConn::new(conn, fk, ext)?;
    c.cache_statements = ext.is_empty();
    Ok(c)
}

/// The settings of the writer, as `open_writer_on` and `reset_settings` give it between
/// requests (reported in `/status` without asking the writer's thread).
pub(crate) fn writer_pragmas(fk: bool) -> super::stats::Pragmas {
    super::stats::Pragmas {
        busy_timeout: BUSY_TIMEOUT.as_millis().to_string(),
        foreign_keys: i32::from(fk).to_string(),
        journal_mode: "wal".into(),
        synchronous: "0".into(),
        wal_autocheckpoint: "0".into(),
    }
}

/// Opens a read-only connection on the database the writer created.
pub(crate) fn open_reader(path: &Path, fk: bool, ext: &[PathBuf]) -> Result<SqlConn, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| DbError::Io(format!("cannot open {}: {e}", path.display())))?;
    conn.execute_batch("PRAGMA synchronous = OFF")?;
    SqlConn::new(conn, fk, ext)
}

/// A read-only connection for the node's own work (snapshots, backups, dumps), without the
/// authorizer: it never runs clients' SQL.
pub(crate) fn open_internal_reader(path: &Path) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| DbError::Io(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}
