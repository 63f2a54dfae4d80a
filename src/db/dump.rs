//! The SQL text dump (`/db/backup?fmt=sql`, the shell's `.dump`).
//!
//! Owns: rqlite's dump format: `PRAGMA foreign_keys=OFF;`, `BEGIN TRANSACTION;`, each table
//! (by name) with its CREATE text verbatim and one `INSERT INTO "t" VALUES(...);` per row,
//! then the indexes, triggers and views, then `COMMIT;`. With `tables`, only those tables are
//! written, with their own indexes and triggers and the views that read nothing else, so the
//! dump loads into an empty database (rqlite 8 and 10 also write every other table's indexes
//! and triggers, which then fail to load).
//! Values are printed by SQLite's own `quote()`, so reals, text and blobs come out exactly
//! as the sqlite3 shell writes them (`1.0`, `1.0e-07`, `'it''s'`, `X'DEADBEEF'`).
//! Does not: choose the connection; it is given one and reads inside one transaction.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::exec::message;
use super::values::go_string;
use super::DbError;

/// Dumps the database seen by `conn`. With `tables` (non-empty), only those tables and what
/// belongs to them are written.
pub(crate) fn dump(conn: &Connection, tables: Option<&[String]>) -> Result<String, DbError> {
    // One read transaction: every part of the dump sees the same database.
    conn.execute_batch("BEGIN").map_err(err)?;
    let result = dump_in_transaction(conn, tables);
    let _ = conn.execute_batch("COMMIT");
    result
}

fn err(e: rusqlite::Error) -> DbError {
    DbError::Sqlite(message(&e))
}

fn dump_in_transaction(conn: &Connection, tables: Option<&[String]>) -> Result<String, DbError> {
    let mut out = String::from("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n");
    let mut sql = String::from(
        r#"SELECT "name", "sql" FROM "sqlite_master" WHERE "sql" NOT NULL AND "type" == 'table'"#,
    );
    if let Some(names) = tables.filter(|t| !t.is_empty()) {
        let list: Vec<String> = names.iter().map(|n| sql_string(n)).collect();
        sql.push_str(&format!(r#" AND "name" IN ({})"#, list.join(", ")));
    }
    // rqlite orders tables by name. sqlite_sequence goes last (as in the sqlite3 shell):
    // it only exists once an AUTOINCREMENT table has been created on replay.
    sql.push_str(r#" ORDER BY "name" == 'sqlite_sequence', "name""#);

    for (name, create) in text_rows(conn, &sql)? {
        let create = match name.as_str() {
            "sqlite_sequence" => r#"DELETE FROM "sqlite_sequence""#.to_string(),
            "sqlite_stat1" => r#"ANALYZE "sqlite_master""#.to_string(),
            n if n.starts_with("sqlite_") => continue,
            _ => create,
        };
        out.push_str(&create);
        out.push_str(";\n");
        dump_rows(conn, &name, &mut out)?;
    }

    let others = r#"SELECT "name", "sql", "type", "tbl_name" FROM "sqlite_master" WHERE "sql" NOT NULL AND "type" IN ('index', 'trigger', 'view')"#;
    let wanted = tables.filter(|t| !t.is_empty());
    let mut stmt = conn.prepare(others).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let name = text(row.get_ref(0).map_err(err)?);
        let create = text(row.get_ref(1).map_err(err)?);
        let kind = text(row.get_ref(2).map_err(err)?);
        let table = text(row.get_ref(3).map_err(err)?);
        if let Some(names) = wanted {
            let keep = match kind.as_str() {
                "view" => view_reads_only(conn, &name, names),
                _ => names.iter().any(|n| n == &table),
            };
            if !keep {
                continue;
            }
        }
        out.push_str(&create);
        out.push_str(";\n");
    }
    out.push_str("COMMIT;\n");
    Ok(out)
}

/// Whether the view `name` reads only tables among `tables` (asked of SQLite: the tables its
/// query reads while it is prepared, views expanded).
fn view_reads_only(conn: &Connection, name: &str, tables: &[String]) -> bool {
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    use std::sync::{Arc, Mutex};
    let read: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = read.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if let AuthAction::Read { table_name, .. } = ctx.action {
            if let Ok(mut v) = r.lock() {
                v.push(table_name.to_string());
            }
        }
        Authorization::Allow
    }));
    let prepared = conn
        .prepare(&format!("SELECT * FROM {}", quote_ident(name)))
        .is_ok();
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    let read = read.lock().map(|v| v.clone()).unwrap_or_default();
    // Views are reported along with the tables they expand to; only tables count.
    let is_view = |t: &str| {
        conn.query_row(
            r#"SELECT 1 FROM "sqlite_master" WHERE "type" = 'view' AND "name" = ?1"#,
            [t],
            |_| Ok(()),
        )
        .is_ok()
    };
    prepared
        && read
            .iter()
            .all(|t| t.starts_with("sqlite_") || tables.iter().any(|n| n == t) || is_view(t))
}

/// One `INSERT INTO "t" VALUES(...);` line per row, each value written by `quote()`.
fn dump_rows(conn: &Connection, table: &str, out: &mut String) -> Result<(), DbError> {
    let ident = quote_ident(table);
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info({ident})"))
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut cols = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            cols.push(text(row.get_ref(1).map_err(err)?));
        }
        cols
    };
    if columns.is_empty() {
        return Ok(());
    }
    // One result column per table column (not one long `||` chain, which would hit
    // SQLite's expression depth limit on wide tables).
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("quote({})", quote_ident(c)))
        .collect();
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {ident}", select.join(", ")))
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        out.push_str("INSERT INTO ");
        out.push_str(&ident);
        out.push_str(" VALUES(");
        for i in 0..columns.len() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&text(row.get_ref(i).map_err(err)?));
        }
        out.push_str(");\n");
    }
    Ok(())
}

/// Rows of two text columns.
fn text_rows(conn: &Connection, sql: &str) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        out.push((
            text(row.get_ref(0).map_err(err)?),
            text(row.get_ref(1).map_err(err)?),
        ));
    }
    Ok(out)
}

fn text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => go_string(t),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => String::new(),
    }
}

/// `"name"` with embedded double quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded single quotes doubled.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
