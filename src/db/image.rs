//! Checking SQLite images and files that clients upload (`/db/load`, `/boot`, auto-restore)
//! before they enter the log: the header, SQLite opening it, `PRAGMA quick_check` and a
//! readable UTF-8 schema.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, MAIN_DB};

use super::conn;
use super::exec;
use super::DbError;

/// What every SQLite database file starts with.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Marks an image as a rollback-journal database (header bytes 18 and 19): a WAL-mode file
/// cannot be opened read-only without its shared memory; as a standalone image it is
/// otherwise identical.
pub(super) fn to_rollback_header(image: &mut [u8]) {
    if image.len() >= 20 {
        for b in &mut image[18..20] {
            if *b == 2 {
                *b = 1;
            }
        }
    }
}

/// [`validate_image`] for a database file (an upload of this node's own, which it may
/// change): a WAL-mode header is turned into the rollback form first, as for images.
pub fn validate_file(path: &Path) -> Result<(), DbError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let io = |e: std::io::Error| DbError::Io(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut header = [0u8; 100];
    let n = f.read(&mut header).map_err(io)?;
    if n < 16 || &header[..16] != SQLITE_HEADER {
        return Err(invalid("not a SQLite database (bad header)"));
    }
    if n < 100 {
        return Err(invalid("truncated database header"));
    }
    if header[18] == 2 || header[19] == 2 {
        f.seek(SeekFrom::Start(18)).map_err(io)?;
        f.write_all(&[1, 1]).map_err(io)?;
    }
    drop(f);
    let conn = conn::open_internal_reader(path).map_err(|e| invalid(e.to_string()))?;
    let problems = quick_check(&conn).map_err(|e| invalid(exec::message(&e)))?;
    if problems != ["ok"] {
        let mut reason = problems.join("; ");
        reason.truncate(500);
        return Err(invalid(format!("quick_check: {reason}")));
    }
    check_schema(&conn)
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
pub(super) fn open_image(image: &[u8]) -> Result<Connection, DbError> {
    if !image.starts_with(SQLITE_HEADER) {
        return Err(invalid("not a SQLite database (bad header)"));
    }
    if image.len() < 100 {
        return Err(invalid("truncated database header"));
    }
    if i32::try_from(image.len()).is_err() {
        return Err(invalid("image larger than 2 GiB"));
    }
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
