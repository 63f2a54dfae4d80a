//! The writer thread: every mutation of the log, made durable in batches (one write and one
//! fsync per batch); a write refused for lack of space is retried until space returns.

use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{lock, Cache, Files, Op, Shared};
use crate::health::Health;

/// The writer thread's side.
pub(super) struct Writer {
    pub(super) files: Shared,
    pub(super) path: std::path::PathBuf,
    pub(super) cache: Arc<Mutex<Cache>>,
    pub(super) health: Arc<Health>,
}

/// True for the errors that end when space is freed: ENOSPC, EDQUOT (raft-log's flush thread
/// passes on the kind, not the OS error).
fn out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

impl Writer {
    /// Makes queued operations durable in batches: one flush (one fsync) per batch.
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
                    Op::Append(_, Some(cb)) => {
                        cb.log_io_completed(result.clone().map_err(std::io::Error::other))
                    }
                    Op::Append(_, None) => {}
                    Op::Barrier(tx) => {
                        let _ = tx.send(result.clone());
                    }
                    Op::Truncate(_)
                    | Op::Purge(..)
                    | Op::Vote(..)
                    | Op::Committed(_)
                    | Op::Close => {}
                }
            }
        }
        // The channel closed without `Close`: keep the last commit index anyway.
        if let (false, Some(op)) = (closing, committed.take()) {
            let _ = self.commit(&[op]);
        }
        // Close the files (releasing the directory's lock).
        lock(&self.files).take();
    }

    /// Makes one batch durable. A full disk is not an error: the node waits (reporting it)
    /// and retries every second. raft-log stops at its first failed write, so each retry
    /// reopens the files (which drops a record left incomplete) and applies the batch again
    /// (what already holds is left alone), and the node carries on by itself once space is
    /// freed. Any other failure is returned, and openraft stops.
    fn commit(&self, batch: &[Op]) -> Result<(), String> {
        loop {
            let result = {
                let mut guard = lock(&self.files);
                if guard.is_none() {
                    match Files::open(&self.path) {
                        Ok((files, _)) => *guard = Some(files),
                        Err(e) if out_of_space(&e) => {}
                        Err(e) => return Err(self.failed(e)),
                    }
                }
                match guard.as_mut() {
                    Some(files) => batch
                        .iter()
                        .try_for_each(|op| files.apply(op))
                        .and_then(|()| files.flush()),
                    None => Err(io::Error::from(io::ErrorKind::StorageFull)),
                }
            };
            match result {
                Ok(()) => {
                    self.health.clear("raft-log");
                    return Ok(());
                }
                Err(e) if out_of_space(&e) => {
                    self.health.set(
                        "raft-log",
                        format!(
                            "cannot write the Raft log {}: {e}; retrying every second until space is freed",
                            self.path.display()
                        ),
                    );
                    lock(&self.files).take();
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    fn failed(&self, e: io::Error) -> String {
        tracing::error!(path = %self.path.display(), error = %e, "raft log write failed");
        e.to_string()
    }
}
