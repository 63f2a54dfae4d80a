//! In-process baselines for the write path, with no network, Raft or JSON in the way:
//! rows/s of an in-memory SQLite inserting into the bench table in one transaction, and in
//! one transaction per row; each without and with a progress handler that counts VM steps
//! every 1000 instructions, as the deterministic write budget (`-db-max-steps`) does. The two
//! variants alternate, three rounds each, so their ratio is the budget's cost on this machine.
//!
//! `cargo run --release --example sqlite_baseline -- [rows]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the budget's handler does per call: add to the request's and the statement's counts
/// and compare with the limit.
fn metered(conn: &rusqlite::Connection) -> Arc<AtomicU64> {
    let steps = Arc::new(AtomicU64::new(0));
    let statement = Arc::new(AtomicU64::new(0));
    let (s, st) = (steps.clone(), statement.clone());
    conn.progress_handler(
        1000,
        Some(move || {
            let n = s.fetch_add(1000, Ordering::Relaxed) + 1000;
            st.fetch_add(1000, Ordering::Relaxed);
            n > 100_000_000_000
        }),
    );
    steps
}

fn run(rows: u64, per_row_tx: bool, budget: bool) -> rusqlite::Result<f64> {
    let mut conn = rusqlite::Connection::open_in_memory()?;
    conn.execute_batch("CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)")?;
    let _steps = budget.then(|| metered(&conn));
    let start = Instant::now();
    if per_row_tx {
        let mut stmt = conn.prepare("INSERT INTO bench(id, v) VALUES(?, ?)")?;
        for i in 0..rows {
            stmt.execute(rusqlite::params![i as i64, format!("value {i}")])?;
        }
    } else {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare("INSERT INTO bench(id, v) VALUES(?, ?)")?;
            for i in 0..rows {
                stmt.execute(rusqlite::params![i as i64, format!("value {i}")])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

fn main() -> rusqlite::Result<()> {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    for (name, per_row) in [("single-transaction", false), ("transaction-per-row", true)] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            without.push(run(rows, per_row, false)?);
            with.push(run(rows, per_row, true)?);
        }
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        println!(
            "sqlite in-memory {name} insert: rows={rows} rows/s={:.0} with-step-budget rows/s={:.0} ({:+.1}%)",
            best(&without),
            best(&with),
            (best(&with) / best(&without) - 1.0) * 100.0
        );
    }
    Ok(())
}
