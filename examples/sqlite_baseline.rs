//! The in-process baseline for batched inserts: rows/s of an in-memory SQLite inserting into
//! the bench table in one transaction, with no network, Raft or JSON in the way.
//!
//! `cargo run --release --example sqlite_baseline -- [rows]`

use std::time::Instant;

fn main() -> rusqlite::Result<()> {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut conn = rusqlite::Connection::open_in_memory()?;
    conn.execute_batch("CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)")?;
    let start = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare("INSERT INTO bench(id, v) VALUES(?, ?)")?;
        for i in 0..rows {
            stmt.execute(rusqlite::params![i as i64, format!("value {i}")])?;
        }
    }
    tx.commit()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sqlite in-memory single-transaction insert: rows={rows} rows/s={:.0}",
        rows as f64 / secs
    );
    Ok(())
}
