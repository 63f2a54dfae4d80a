//! What the database reports about itself in `/status` (`store.sqlite3`, rqlite's names).
//!
//! Owns: reading SQLite's own view (version, compile options, page counts, the pragmas a
//! read-only connection really runs with) and the file sizes. The writer's pragmas are the
//! ones `conn` sets at open and puts back after every request, so they are reported from the
//! same table rather than by asking the writer's thread, which may be busy with a long write.
//! Does not: change anything (one short-lived read-only connection per call).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::conn;
use super::reads::ReadPool;
use super::DbError;

/// One connection's settings, as SQLite reports them (strings, as in rqlite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pragmas {
    pub busy_timeout: String,
    pub foreign_keys: String,
    pub journal_mode: String,
    pub synchronous: String,
    pub wal_autocheckpoint: String,
}

/// The database as `/status` shows it.
#[derive(Debug, Clone)]
pub struct DbStats {
    pub path: PathBuf,
    pub version: &'static str,
    pub compile_options: Vec<String>,
    /// Bytes of the database file on disk.
    pub size: u64,
    /// Bytes of the write-ahead log on disk (checkpointed into `size` every few MiB).
    pub wal_size: u64,
    /// Bytes the database holds (`page_count * page_size`, including committed WAL pages).
    pub db_size: u64,
    pub page_count: u64,
    pub page_size: u64,
    pub freelist_count: u64,
    pub max_page_count: u64,
    pub cache_size: i64,
    pub last_modified: Option<SystemTime>,
    pub ro: Pragmas,
    pub rw: Pragmas,
    pub ro_conns_open: usize,
    pub ro_conns_in_use: usize,
    pub ro_conns_max: usize,
}

/// Reads the statistics of the database the pool reads from. Blocking: call it off the
/// async runtime.
pub fn read(pool: &ReadPool, fk: bool) -> Result<DbStats, DbError> {
    let path = pool.path().to_path_buf();
    let reader = conn::open_reader(&path, fk, pool.extensions())?;
    let c = &reader.conn;
    let int = |pragma: &str| -> Result<i64, DbError> {
        Ok(c.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))?)
    };
    let page_count = int("page_count")?.max(0) as u64;
    let page_size = int("page_size")?.max(0) as u64;
    let freelist_count = int("freelist_count")?.max(0) as u64;
    let max_page_count = int("max_page_count")?.max(0) as u64;
    let cache_size = int("cache_size")?;
    let compile_options = {
        let mut stmt = c.prepare("PRAGMA compile_options")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let ro = pragmas_of(c)?;
    let (open, in_use) = pool.usage();
    Ok(DbStats {
        size: file_len(&path),
        wal_size: file_len(&with_suffix(&path, "-wal")),
        last_modified: std::fs::metadata(&path).and_then(|m| m.modified()).ok(),
        path,
        version: rusqlite::version(),
        compile_options,
        db_size: page_count * page_size,
        page_count,
        page_size,
        freelist_count,
        max_page_count,
        cache_size,
        ro,
        rw: conn::writer_pragmas(fk),
        ro_conns_open: open,
        ro_conns_in_use: in_use,
        ro_conns_max: pool.max_conns(),
    })
}

fn pragmas_of(c: &rusqlite::Connection) -> Result<Pragmas, DbError> {
    let get = |p: &str| -> Result<String, DbError> {
        Ok(c.query_row(&format!("PRAGMA {p}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s,
            other => format!("{other:?}"),
        })?)
    };
    Ok(Pragmas {
        busy_timeout: get("busy_timeout")?,
        foreign_keys: get("foreign_keys")?,
        journal_mode: get("journal_mode")?,
        synchronous: get("synchronous")?,
        wal_autocheckpoint: get("wal_autocheckpoint")?,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A file's size, 0 if it cannot be read (absent, or being replaced).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The database file plus its WAL, as they stand on disk.
pub fn on_disk_bytes(path: &Path) -> u64 {
    file_len(path) + file_len(&with_suffix(path, "-wal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{DbConfig, Engine};

    #[test]
    fn reports_the_pragmas_each_connection_runs_with() {
        let mut e = Engine::open(&DbConfig::default()).unwrap();
        let stmt = |sql: &str| crate::command::Statement {
            sql: sql.into(),
            ..Default::default()
        };
        e.execute(&crate::command::Request {
            statements: vec![stmt("CREATE TABLE t (x)"), stmt("INSERT INTO t VALUES (1)")],
            ..Default::default()
        });
        let s = read(&e.reads(), false).unwrap();
        let want = |autocheckpoint: &str| Pragmas {
            busy_timeout: "5000".into(),
            foreign_keys: "0".into(),
            journal_mode: "wal".into(),
            synchronous: "0".into(),
            wal_autocheckpoint: autocheckpoint.into(),
        };
        assert_eq!(s.ro, want("1000"));
        assert_eq!(s.rw, want("0"));
        assert_eq!(s.page_size, 4096);
        assert!(s.page_count >= 2, "{s:?}");
        assert_eq!(s.db_size, s.page_count * s.page_size);
        assert!(s.wal_size > 0, "the insert is in the WAL: {s:?}");
        assert!(s.version.starts_with("3."));
        assert!(s
            .compile_options
            .iter()
            .any(|o| o.starts_with("THREADSAFE")));
        assert_eq!(read(&e.reads(), true).unwrap().rw.foreign_keys, "1");
    }

    #[test]
    fn the_writer_table_is_what_a_writer_runs_with() {
        let dir = tempfile::tempdir().unwrap();
        for fk in [false, true] {
            let w = conn::open_writer(&dir.path().join("db.sqlite"), fk, &[]).unwrap();
            assert_eq!(pragmas_of(&w.conn).unwrap(), conn::writer_pragmas(fk));
            conn::reset_settings(&w.conn, fk).unwrap();
            assert_eq!(pragmas_of(&w.conn).unwrap(), conn::writer_pragmas(fk));
        }
    }
}
