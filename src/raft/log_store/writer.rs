//! The writer thread: every mutation of the log, committed in batches (one durable redb
//! transaction, one fsync, per batch); a write refused for lack of space is retried until
//! space returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};

use super::{lock, open_db, Cache, Op, Shared, COMMITTED, KEY_PURGED, LOGS, META};
use crate::health::Health;

/// The writer thread's side.
pub(super) struct Writer {
    pub(super) db: Shared,
    pub(super) path: std::path::PathBuf,
    pub(super) cache: Arc<Mutex<Cache>>,
    pub(super) health: Arc<Health>,
    /// See [`super::LogStore::stop_waiting_for_space`].
    pub(super) stopping: Arc<AtomicBool>,
    /// Set while a batch waits for space (see [`super::LogStore::read_through_full_disk`]).
    pub(super) space_wait: Arc<AtomicBool>,
}

/// True for the errors that end when space is freed: ENOSPC, EDQUOT.
fn out_of_space(msg: &str) -> bool {
    msg.contains("os error 28") || msg.contains("os error 122")
}

/// True for the failures a batch waits out: no space, or no database after a reopen failed
/// (it is tried again after the next wait).
fn waits_for_space(msg: &str) -> bool {
    out_of_space(msg) || msg.contains("could not be reopened")
}

impl Writer {
    /// Commits queued operations in batches: one durable transaction (one fsync) per batch.
    pub(super) fn run(self, rx: mpsc::Receiver<Op>) {
        let mut closing = false;
        // The newest commit index not yet written (see `Op::Committed`).
        let mut committed: Option<Op> = None;
        while !closing {
            let Ok(first) = rx.recv() else { break };
            let mut batch = vec![first];
            while let Ok(op) = rx.try_recv() {
                batch.push(op);
            }
            if batch.iter().all(|op| matches!(op, Op::Committed(_))) {
                committed = batch.pop();
                continue;
            }
            if let Some(op) = committed.take() {
                batch.insert(0, op);
            }
            closing = batch.iter().any(|op| matches!(op, Op::Close));
            let result = self.commit(&batch);
            if result.is_ok() {
                // What was just made durable may leave memory once it is over budget.
                let mut c = lock(&self.cache);
                for op in &batch {
                    if let Op::Append(entries, _) = op {
                        for (id, _) in entries {
                            if let Some(e) = c.recent.get_mut(&id.index) {
                                if e.entry.log_id == *id {
                                    e.durable = true;
                                }
                            }
                        }
                    }
                }
                c.evict();
            }
            for op in batch {
                match op {
                    Op::Append(_, cb) => {
                        cb.io_completed(result.clone().map_err(std::io::Error::other))
                    }
                    Op::Barrier(tx) => {
                        let _ = tx.send(result.clone());
                    }
                    Op::Truncate(_)
                    | Op::Purge(..)
                    | Op::Meta(..)
                    | Op::Committed(_)
                    | Op::Close => {}
                }
            }
        }
        // The channel closed without `Close`: keep the last commit index anyway.
        if let (false, Some(op)) = (closing, committed.take()) {
            let _ = self.commit(&[op]);
        }
        // Close the database (releasing its file lock).
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether the node is stopping (see [`super::LogStore::stop_waiting_for_space`]).
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Commits one batch. A full disk is not an error: the node waits (reporting it) and
    /// retries every second, with the database reopened (redb refuses to continue after an
    /// I/O error otherwise), so it carries on by itself once space is freed; once the node
    /// is stopping the batch fails instead (nothing of it is acknowledged). Any other
    /// failure is returned, and openraft stops.
    fn commit(&self, batch: &[Op]) -> Result<(), String> {
        loop {
            let result = {
                let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
                match guard.as_ref() {
                    Some(db) => commit_batch(db, batch),
                    None => Err("the Raft log could not be reopened".to_string()),
                }
            };
            let waiting = matches!(&result, Err(e) if waits_for_space(e)) && !self.stopping();
            self.space_wait.store(waiting, Ordering::SeqCst);
            match result {
                Ok(()) => {
                    self.health.clear(crate::health::RAFT_LOG);
                    return Ok(());
                }
                Err(e) if waits_for_space(&e) => {
                    if self.stopping() {
                        let e = format!("{e}; not retried: the node is stopping");
                        tracing::error!(path = %self.path.display(), error = %e, "raft log write failed");
                        return Err(e);
                    }
                    self.health.set(
                        crate::health::RAFT_LOG,
                        format!(
                            "cannot write the Raft log {}: {e}; retrying every second until space is freed",
                            self.path.display()
                        ),
                    );
                    // A second, in steps, so that a stop is seen at once.
                    for _ in 0..10 {
                        if self.stopping() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
                    guard.take();
                    *guard = open_db(&self.path).ok();
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "raft log write failed");
                    return Err(e);
                }
            }
        }
    }
}

fn commit_batch(db: &Database, batch: &[Op]) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut w = db.begin_write().map_err(|e| s(&e))?;
    w.set_durability(Durability::Immediate);
    {
        let mut logs = w.open_table(LOGS).map_err(|e| s(&e))?;
        // Opened only when written: most batches are entries and the commit index alone.
        let mut meta = None;
        for op in batch {
            match op {
                Op::Append(entries, _) => {
                    for (id, bytes) in entries {
                        logs.insert(id.index, bytes.as_slice()).map_err(|e| s(&e))?;
                    }
                }
                Op::Truncate(from) => {
                    logs.retain_in(*from..COMMITTED, |_, _| false)
                        .map_err(|e| s(&e))?;
                }
                Op::Purge(upto, encoded) => {
                    logs.retain_in(..=upto.index, |_, _| false)
                        .map_err(|e| s(&e))?;
                    meta_table(&w, &mut meta)?
                        .insert(KEY_PURGED, encoded.as_slice())
                        .map_err(|e| s(&e))?;
                }
                Op::Meta(key, value) => {
                    meta_table(&w, &mut meta)?
                        .insert(*key, value.as_slice())
                        .map_err(|e| s(&e))?;
                }
                Op::Committed(value) => {
                    logs.insert(COMMITTED, value.as_slice())
                        .map_err(|e| s(&e))?;
                }
                Op::Barrier(_) | Op::Close => {}
            }
        }
    }
    w.commit().map_err(|e| s(&e))
}

/// The meta table, opened on first use in this transaction.
fn meta_table<'w, 't>(
    w: &'w WriteTransaction,
    meta: &'t mut Option<redb::Table<'w, &'static str, &'static [u8]>>,
) -> Result<&'t mut redb::Table<'w, &'static str, &'static [u8]>, String> {
    let table = match meta.take() {
        Some(table) => table,
        None => w.open_table(META).map_err(|e| e.to_string())?,
    };
    Ok(meta.insert(table))
}
