//! Whole-database operations: loads, boots, backups and snapshots.
//!
//! Owns: loading a SQLite file through the log (in parts), `/boot`, consistent backups and
//! dumps, and when snapshots are taken (threshold, on request, after a load) and the log
//! compacted behind them.
//! Does not: build or install snapshots (`state_machine.rs`, `snapshot.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::command::Command;
use crate::db::Engine;
use crate::raft::{LogId, TypeConfig};

/// An uploaded file, deleted when dropped.
#[derive(Debug)]
pub struct Upload(pub PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a `/reap` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub snapshots_reaped: usize,
    pub wals_checkpointed: usize,
}

impl Store {
    /// Periodically snapshots once enough entries have accumulated; returns when `stop` fires.
    pub async fn run_snapshot_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick =
            tokio::time::interval(self.cfg.snapshot_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut loads_seen = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (applied, snap) = applied_and_snapshot(&self.raft.metrics().borrow_watched());
            // After a load the log holds the whole database: a snapshot lets it go (rqlite
            // snapshots after a load too).
            let loads = self.sm.applied().lock().loads;
            let wanted = loads != loads_seen;
            loads_seen = loads;
            if wanted {
                // Trailing entries would be the image again, in parts: none are kept.
                if let Err(e) = self.take_snapshot(Some(0)).await {
                    tracing::warn!(error = %e, "snapshot after a load failed");
                }
            } else if applied.saturating_sub(snap) >= self.cfg.snapshot_threshold {
                if let Err(e) = self.raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "could not trigger snapshot");
                }
            }
        }
    }

    /// Replaces the whole database with a SQLite file image, through the log.
    pub async fn load(&self, image: Vec<u8>) -> Result<Reply, StoreError> {
        let probe = image.clone();
        tokio::task::spawn_blocking(move || Engine::validate_image(&probe))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        let r = loaded(self.propose(Command::Load(image)).await?)?;
        self.metrics.store.loads.inc();
        Ok(r)
    }

    /// A new file for an upload (a database sent to `/db/load` or `/boot`), deleted when the
    /// returned guard is dropped.
    pub fn upload_file(&self) -> Result<Upload, StoreError> {
        let dir = self.cfg.data_dir.join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Upload(dir.join(format!("{:016x}", fastrand::u64(..)))))
    }

    /// Replaces the whole database with the SQLite file at `path`, through the log, in parts:
    /// neither the file nor any log entry is ever whole in memory.
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Reply, StoreError> {
        let r = self.load_parts(path).await?;
        self.metrics.store.loads.inc();
        Ok(r)
    }

    /// [`Store::load_file`], uncounted (a `/boot` counts as a boot, not a load).
    async fn load_parts(&self, path: &std::path::Path) -> Result<Reply, StoreError> {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || crate::db::validate_file(&p))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        self.ensure_leader().await?;
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
        let len = tokio::fs::metadata(path).await.map_err(io)?.len() as usize;
        let n = len.div_ceil(parts::PART_BYTES).max(1);
        let id = fastrand::u64(..);
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        // Each part is read when it is due; a read error ends the parts.
        let parts = futures_util::stream::unfold(Some((file, 0)), |state| async move {
            use tokio::io::AsyncReadExt;
            let (mut file, seq) = state?;
            let mut bytes = vec![0u8; parts::PART_BYTES.min(len - seq * parts::PART_BYTES)];
            if let Err(e) = file.read_exact(&mut bytes).await {
                return Some((Err(io(e)), None));
            }
            let part = Command::Part(crate::command::Part {
                id,
                seq: seq as u32,
                last: seq + 1 == n,
                kind: crate::command::PartKind::Image,
                bytes,
            });
            Some((Ok(part), Some((file, seq + 1))))
        });
        loaded(self.propose_parts(id, n, len, "load", parts).await?)
    }

    /// `/boot` from a file: load into a single-node cluster and snapshot at once. A follower
    /// answers "not leader" first, as rqlite's does (golden C232); a leader of several nodes,
    /// "not single-node".
    pub async fn boot_file(&self, path: &std::path::Path) -> Result<(), StoreError> {
        self.ensure_leader().await?;
        let m = self.raft.metrics().borrow_watched().clone();
        if m.membership_config.membership().nodes().count() > 1 {
            return Err(StoreError::NotSingleNode);
        }
        self.load_parts(path).await?;
        self.take_snapshot(None).await?;
        self.metrics.store.boots.inc();
        Ok(())
    }

    /// A consistent copy of the database: a SQLite image, or a SQL dump.
    pub async fn backup(
        &self,
        sql: bool,
        vacuum: bool,
        tables: Option<Vec<String>>,
    ) -> Result<Vec<u8>, StoreError> {
        let copy = if sql {
            let dump = self
                .blocking(move |p| crate::db::engine::dump_at(p, tables.as_deref()))
                .await?;
            dump.into_bytes()
        } else {
            self.blocking(move |p| crate::db::engine::backup_at(p, vacuum))
                .await?
        };
        self.metrics.store.backups.inc();
        Ok(copy)
    }

    /// Runs `f` on the database file from a blocking thread (copies and dumps, which read on
    /// connections of their own while writes go on).
    pub(super) async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&std::path::Path) -> Result<R, crate::db::DbError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let path = self.reads.path().to_path_buf();
        Ok(tokio::task::spawn_blocking(move || f(&path))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??)
    }

    /// A snapshot a client asked for (`POST /snapshot`): [`Store::take_snapshot`], counted.
    pub async fn snapshot(&self, trailing: Option<u64>) -> Result<(), StoreError> {
        let r = self.take_snapshot(trailing).await;
        let c = &self.metrics.store;
        match &r {
            Ok(()) => c.user_snapshots.inc(),
            Err(_) => c.user_snapshots_failed.inc(),
        }
        r
    }

    /// `/reap`: deletes snapshots older than the current one and checkpoints the
    /// database's WAL into its file. rqlite's snapshots are a full copy plus WAL increments
    /// that a reap folds together; sqlraft's are whole database files, so the WAL counted
    /// here is the live database's (0 or 1).
    pub async fn reap(&self) -> Result<Reaped, StoreError> {
        let snapshots = self.sm.snapshots().clone();
        let snapshots_reaped = tokio::task::spawn_blocking(move || snapshots.reap())
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let checkpointed = self
            .sm
            .db()
            .call(|engine| engine.checkpoint_all())
            .await??;
        Ok(Reaped {
            snapshots_reaped,
            wals_checkpointed: usize::from(checkpointed),
        })
    }

    /// Takes a snapshot now and compacts the log behind it, keeping `trailing` entries
    /// (default: the configured trailing logs).
    pub(super) async fn take_snapshot(&self, trailing: Option<u64>) -> Result<(), StoreError> {
        let (applied, _) = applied_and_snapshot(&self.raft.metrics().borrow_watched());
        let fatal = |e: openraft::error::Fatal<TypeConfig>| StoreError::Raft(e.to_string());
        let reached = |m: &openraft::RaftMetrics<TypeConfig>| applied_and_snapshot(m).1 >= applied;
        let deadline = Instant::now() + Duration::from_secs(60);
        // openraft ignores a trigger while a snapshot is being built; that build may stop short
        // of `applied`, so trigger again until a snapshot covers it.
        loop {
            self.raft.trigger().snapshot().await.map_err(fatal)?;
            let waited = self
                .raft
                .wait(Some(Duration::from_secs(2)))
                .metrics(reached, "snapshot")
                .await;
            match waited {
                Ok(_) => break,
                Err(openraft::metrics::WaitError::ShuttingDown) => return Err(StoreError::Closed),
                Err(e) if Instant::now() >= deadline => {
                    return Err(StoreError::Timeout(format!("snapshot: {e}")))
                }
                Err(_) => {}
            }
        }
        if let Some(t) = trailing {
            let (_, snap) = applied_and_snapshot(&self.raft.metrics().borrow_watched());
            if snap > t {
                self.raft
                    .trigger()
                    .purge_log(snap - t)
                    .await
                    .map_err(fatal)?;
            }
        }
        Ok(())
    }

    /// Waits until this node has applied every entry it has in its log (`/readyz?sync`).
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), StoreError> {
        let target = self
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0);
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.last_applied.map(|l| l.index).unwrap_or(0) >= target,
                "sync",
            )
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Timeout(e.to_string()))
    }
}

/// The reply to a load, from the response of the entry that applied it.
fn loaded((resp, index): (crate::raft::Response, u64)) -> Result<Reply, StoreError> {
    if let Some(e) = resp.error {
        return Err(StoreError::InvalidImage(e));
    }
    Ok(Reply {
        results: Vec::new(),
        raft_index: Some(index),
    })
}

/// The last applied index and the last snapshot's index (0 for none).
fn applied_and_snapshot(m: &openraft::RaftMetrics<TypeConfig>) -> (u64, u64) {
    let index = |l: Option<LogId>| l.map(|l| l.index).unwrap_or(0);
    (index(m.last_applied), index(m.snapshot))
}
