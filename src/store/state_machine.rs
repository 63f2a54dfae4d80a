//! The Raft state machine: applies committed log entries to SQLite, builds and installs
//! snapshots.
//!
//! The applied log id and membership are updated on the database thread in the same job that
//! changes the database, so a snapshot (also taken on that thread) always pairs an image with
//! exactly the log position it reflects.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use super::changes::{CdcProgress, ChangeSink};
use super::parts::{Assembled, Assembly};
use super::snapshot::{SnapshotStore, Stored};
use crate::command::Command;
use crate::db::{Db, Engine, Mode};
use crate::health::Health;
use crate::metrics::{Counter, DbCounters, Metrics};
use crate::raft::commit_clock::CommitClock;
use crate::raft::{
    Entry, EntryPayload, LogId, Response, Snapshot, SnapshotData, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// The state machine's position in the log.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Wall-clock time of the last applied entry (`fsm_update_time` in `/status`).
    pub updated_at: Option<SystemTime>,
    /// Database images loaded from the log so far (each calls for a snapshot, so that the
    /// log can let the image's entries go).
    pub loads: u64,
    /// Index of the newest applied entry that may have changed the database (a write, a
    /// load; not a read, a no-op or a membership change); an installed snapshot counts as
    /// one. Automatic backups skip a round when it has not moved.
    pub data_index: u64,
    /// Change data capture's delivery progress (replicated; see `changes.rs`).
    pub cdc: super::changes::CdcProgress,
}

/// Shared view of [`Applied`]; the database thread writes it, everyone may read it.
#[derive(Debug, Clone, Default)]
pub struct AppliedState(Arc<Mutex<Applied>>);

impl AppliedState {
    pub fn lock(&self) -> MutexGuard<'_, Applied> {
        // Every critical section is a few field writes: a poisoned lock still holds valid data.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    db: Db,
    applied: AppliedState,
    snapshots: SnapshotStore,
    /// The file a snapshot from the leader is being received into.
    receiving: Arc<Mutex<Option<PathBuf>>>,
    /// Large commands being assembled from their parts (used on the database thread).
    assembly: Arc<Mutex<Assembly>>,
    /// True while one is unfinished: no snapshot is taken then.
    assembling: Arc<std::sync::atomic::AtomicBool>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Where captured row changes go (`-cdc-config`).
    changes: Option<Arc<dyn ChangeSink>>,
    /// Told what is applied, so a follower can tell how long its applying lags its commits.
    commit_clock: Arc<CommitClock>,
}

/// A failure of the state machine. openraft 0.10 takes `io::Error`s and adds what it was
/// doing, and on which entry or snapshot, when it reports them.
fn sm_err(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// A snapshot failure, naming the snapshot (openraft does not for every operation).
fn snap_err(meta: Option<&SnapshotMeta>, e: impl ToString) -> io::Error {
    match meta.and_then(|m| m.last_log_id) {
        Some(l) => io::Error::other(format!("snapshot at index {}: {}", l.index, e.to_string())),
        None => sm_err(e),
    }
}

/// A snapshot failure as openraft's error, for [`StateMachine::open`].
fn snap_storage_err(meta: Option<&SnapshotMeta>, verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb, e)
}

/// What applying a command works with: the database, the assembly of large commands, the
/// term of the entry being applied, and how many images it loaded.
struct Applier<'a> {
    engine: &'a mut Engine,
    assembly: &'a mut Assembly,
    term: u64,
    loads: u64,
    db: &'a DbCounters,
    /// Delivery progress this entry recorded.
    cdc: Option<CdcProgress>,
}

/// Counts the statements of a request, those that failed, and the request if it was a
/// transaction.
pub(super) fn count_sql(
    [stmts, errors, txs]: [&Counter; 3],
    req: &crate::command::Request,
    results: &[crate::command::StmtResult],
) {
    stmts.add(req.statements.len() as u64);
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, crate::command::Outcome::Error(_)))
        .count();
    errors.add(failed as u64);
    if req.transaction {
        txs.inc();
    }
}

fn failed(e: impl ToString) -> Response {
    Response {
        error: Some(e.to_string()),
        ..Response::default()
    }
}

/// Runs one command against the database. `max_steps` is the budget the receiving node put
/// on it (0 = none, for entries written before budgets existed). `Err` is a failure of this
/// node (disk full, I/O error), which must not become the entry's outcome.
fn apply_command(a: &mut Applier<'_>, cmd: Command, max_steps: u64) -> Result<Response, String> {
    let results = |r: Result<Vec<crate::command::StmtResult>, crate::db::DbError>| {
        r.map(|results| Response {
            results,
            ..Response::default()
        })
        .map_err(|e| e.to_string())
    };
    let db = a.db;
    Ok(match cmd {
        Command::Execute(req) => {
            let r = a.engine.write(&req, Mode::Execute, max_steps);
            if let Ok(out) = &r {
                let c = [
                    &db.executions,
                    &db.execution_errors,
                    &db.execute_transactions,
                ];
                count_sql(c, &req, out);
                let forced = req.statements.iter().filter(|s| s.force_query).count();
                db.executions_force_queries.add(forced as u64);
            }
            results(r)?
        }
        // Strong reads are served by the leader once this entry is applied (older versions
        // logged the read itself; replaying it would only cost time).
        Command::Query(_) | Command::Noop => Response::default(),
        Command::ExecuteQuery(req) => {
            let r = a.engine.write(&req, Mode::Request, max_steps);
            if let Ok(out) = &r {
                let c = [&db.requests, &db.execution_errors, &db.request_transactions];
                count_sql(c, &req, out);
            }
            results(r)?
        }
        Command::Load(image) => match a.engine.restore(&image) {
            Ok(()) => {
                a.loads += 1;
                Response::default()
            }
            Err(e) => failed(e),
        },
        Command::Batch(cmds) => Response {
            parts: match apply_grouped(a, &cmds, max_steps)? {
                Some(parts) => parts,
                None => cmds
                    .into_iter()
                    .map(|c| apply_command(a, c, max_steps))
                    .collect::<Result<_, _>>()?,
            },
            ..Response::default()
        },
        Command::Bounded { budget, cmd } => apply_command(a, *cmd, budget.max_steps)?,
        Command::Part(part) => match a.assembly.add(part, a.term) {
            Ok(None) => Response::default(),
            Ok(Some(Assembled::Image(path))) => {
                let r = match a.engine.restore_file(&path) {
                    Ok(()) => {
                        a.loads += 1;
                        Response::default()
                    }
                    Err(e) => failed(e),
                };
                Assembly::done(&path);
                r
            }
            // A part never holds parts (the proposer splits only whole commands).
            Ok(Some(Assembled::Command(Command::Part(_)))) => failed("nested parts"),
            Ok(Some(Assembled::Command(cmd))) => apply_command(a, cmd, max_steps)?,
            Err(e) => failed(e),
        },
        Command::PartAbort { id } => {
            a.assembly.abort(id);
            Response::default()
        }
        // A conflict is the entry's outcome (the same on every node), reported in `error`.
        Command::TxCommit(c) => match a.engine.tx_commit(&c, max_steps) {
            Ok(Ok(())) => {
                db.executions.add(c.statements.len() as u64);
                Response::default()
            }
            Ok(Err(conflict)) => failed(conflict),
            Err(e) => return Err(e.to_string()),
        },
        Command::CdcProgress(p) => {
            a.cdc = Some(p);
            Response::default()
        }
    })
}

/// A batch of `/db/execute` requests (group commit put many clients' requests in one entry)
/// whose statements are all plain row writes, applied sharing SQLite transactions
/// ([`crate::db::Engine::write_grouped`]) with the outcome of applying them one by one.
/// `None` when the batch is not of that kind or nothing was run (apply it one by one).
fn apply_grouped(
    a: &mut Applier<'_>,
    cmds: &[Command],
    max_steps: u64,
) -> Result<Option<Vec<Response>>, String> {
    let mut units = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let (req, steps) = match cmd {
            Command::Execute(req) => (req, max_steps),
            Command::Bounded { budget, cmd } => match &**cmd {
                Command::Execute(req) => (req, budget.max_steps),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let plain = !req.transaction
            && !req.statements.is_empty()
            && req.statements.iter().all(crate::db::plain_write);
        if !plain {
            return Ok(None);
        }
        units.push((req, steps));
    }
    if units.len() < 2 {
        return Ok(None);
    }
    let Some(all) = a.engine.write_grouped(&units).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let db = a.db;
    Ok(Some(
        units
            .iter()
            .zip(all)
            .map(|((req, _), results)| {
                let c = [
                    &db.executions,
                    &db.execution_errors,
                    &db.execute_transactions,
                ];
                count_sql(c, req, &results);
                let forced = req.statements.iter().filter(|s| s.force_query).count();
                db.executions_force_queries.add(forced as u64);
                Response {
                    results,
                    ..Response::default()
                }
            })
            .collect(),
    ))
}

/// Free space the data directory must have before entries are applied: SQLite must never
/// run out of it in the middle of an entry (see [`apply_command`]).
const MIN_FREE_BYTES: u64 = 64 << 20;

/// Why entries cannot be applied now for lack of space in `dir`, if they cannot.
pub(super) fn too_full(dir: &std::path::Path) -> Option<String> {
    let free = free_bytes(dir)?;
    (free < MIN_FREE_BYTES).then(|| {
        format!(
            "{} has {} MiB free: applying entries waits until at least {} MiB are",
            dir.display(),
            free >> 20,
            MIN_FREE_BYTES >> 20
        )
    })
}

/// Bytes available to this process on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized out
    // parameter, which statvfs fills completely when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl StateMachine {
    /// Builds the state machine, restoring the newest snapshot into the database if there is one.
    pub async fn open(
        db: Db,
        snapshots: SnapshotStore,
        parts_dir: &std::path::Path,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        changes: Option<Arc<dyn ChangeSink>>,
        commit_clock: Arc<CommitClock>,
    ) -> Result<Self, StorageError> {
        let assembly = Assembly::new(parts_dir).map_err(|e| {
            StorageError::from_io_error(ErrorSubject::StateMachine, ErrorVerb::Write, sm_err(e))
        })?;
        let sm = Self {
            db,
            applied: AppliedState::default(),
            snapshots,
            receiving: Arc::default(),
            assembling: assembly.busy(),
            assembly: Arc::new(Mutex::new(assembly)),
            health,
            metrics,
            changes,
            commit_clock,
        };
        let current = {
            let s = sm.snapshots.clone();
            let read = |e| snap_storage_err(None, ErrorVerb::Read, e);
            tokio::task::spawn_blocking(move || s.current())
                .await
                .map_err(|e| read(sm_err(e)))?
                .map_err(read)?
        };
        if let Some(stored) = current {
            let meta = stored.meta.clone();
            sm.install(stored)
                .await
                .map_err(|e| snap_storage_err(Some(&meta), ErrorVerb::Write, e))?;
        }
        Ok(sm)
    }

    pub fn applied(&self) -> &AppliedState {
        &self.applied
    }

    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// The database thread's handle (for maintenance that must run on the writer).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Replaces the database with a snapshot's and moves the applied position to its meta's.
    async fn install(&self, stored: Stored) -> Result<(), io::Error> {
        let r = self.install_inner(stored).await;
        match &r {
            Ok(()) => self.metrics.store.restores.inc(),
            Err(_) => self.metrics.store.restores_failed.inc(),
        }
        self.mark_applied();
        r
    }

    /// Tells the commit clock how far the state machine has applied.
    fn mark_applied(&self) {
        // Read first: the applied state's lock is not held while the clock's is taken.
        let applied = self.applied.lock().last_applied;
        if let Some(l) = applied {
            self.commit_clock.applied(l.index);
        }
    }

    async fn install_inner(&self, stored: Stored) -> Result<(), io::Error> {
        let applied = self.applied.clone();
        let meta = stored.meta.clone();
        let m = meta.clone();
        self.db
            .call(move |engine| -> Result<(), String> {
                engine.restore_file(&stored.db).map_err(|e| e.to_string())?;
                let mut a = applied.lock();
                a.last_applied = m.last_log_id;
                a.data_index = m.last_log_id.map_or(0, |l| l.index);
                a.membership = m.last_membership.clone();
                a.updated_at = Some(SystemTime::now());
                a.cdc = super::changes::from_snapshot_id(&m.snapshot_id);
                // Whatever the replaced database's last writes captured is not this state.
                engine.take_changes();
                Ok(())
            })
            .await
            .map_err(|e| snap_err(Some(&meta), e))?
            .map_err(|e| snap_err(Some(&meta), e))
    }

    /// The path of `file` if it is the one [`RaftStateMachine::begin_receiving_snapshot`] handed
    /// out last (an earlier one was removed when it was replaced); a later call no longer
    /// removes it then.
    async fn take_receiving(&self, file: &tokio::fs::File) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let path = self
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let handed = file.metadata().await.ok()?;
        let found = tokio::fs::metadata(&path).await.ok()?;
        if (found.dev(), found.ino()) != (handed.dev(), handed.ino()) {
            return None;
        }
        // Unless a new transfer replaced (and removed) it meanwhile.
        self.receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_if(|p| *p == path)
    }

    /// Copies a snapshot that was not received through
    /// [`RaftStateMachine::begin_receiving_snapshot`] into a file of its own.
    async fn copy_in(&self, mut from: tokio::fs::File) -> Result<PathBuf, io::Error> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let path = self.snapshots.incoming_file();
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut to = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(at)?;
        from.seek(io::SeekFrom::Start(0)).await?;
        tokio::io::copy(&mut from, &mut to).await.map_err(at)?;
        to.flush().await.map_err(at)?;
        Ok(path)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.applied.lock();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // The whole batch is read first, as openraft 0.9 handed it over: one trip to the
        // database thread. A read error drops the responders read so far (those entries are
        // not applied; their clients see Raft stop).
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
        }
        let (entries, responders): (Vec<Entry>, Vec<_>) = batch.into_iter().unzip();
        // Entries wait (durable in the log) while the disk is nearly full.
        while let Some(problem) = too_full(self.snapshots.dir()) {
            self.health.set(crate::health::DISK, problem);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        self.health.clear(crate::health::DISK);
        let applied = self.applied.clone();
        let assembly = self.assembly.clone();
        let metrics = self.metrics.clone();
        let sink = self.changes.clone();
        // One trip to the database thread for the whole batch. It answers the responses of
        // the entries it applied, in order, and the entry it stopped at, if it did.
        let (responses, failed) = self
            .db
            .call(move |engine| {
                let mut assembly = assembly.lock().unwrap_or_else(|p| p.into_inner());
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    let log_id = entry.log_id;
                    assembly.observe_term(log_id.leader_id.term);
                    let mut a = Applier {
                        engine: &mut *engine,
                        assembly: &mut assembly,
                        term: log_id.leader_id.term,
                        loads: 0,
                        db: &metrics.db,
                        cdc: None,
                    };
                    let changes = matches!(
                        &entry.payload,
                        EntryPayload::Normal(c) if !matches!(c, Command::Query(_) | Command::Noop)
                    );
                    let resp = match entry.payload {
                        EntryPayload::Blank => Response::default(),
                        EntryPayload::Normal(cmd) => match apply_command(&mut a, cmd, 0) {
                            Ok(r) => r,
                            // Stop here: this entry is not applied on this node, which
                            // rebuilds from snapshot and log when it restarts.
                            Err(e) => return (out, Some((log_id, e))),
                        },
                        EntryPayload::Membership(m) => {
                            applied.lock().membership = StoredMembership::new(Some(log_id), m);
                            Response::default()
                        }
                    };
                    let (loads, cdc) = (a.loads, a.cdc);
                    if let Some(sink) = &sink {
                        let changes = engine.take_changes();
                        if !changes.is_empty() {
                            let ms = SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64);
                            sink.changes(log_id.index, ms, changes);
                        }
                    }
                    let mut a = applied.lock();
                    a.loads += loads;
                    if let Some(p) = cdc {
                        a.cdc = p;
                    }
                    a.last_applied = Some(log_id);
                    if changes {
                        a.data_index = log_id.index;
                    }
                    a.updated_at = Some(SystemTime::now());
                    out.push(resp);
                }
                (out, None)
            })
            .await
            .map_err(sm_err)?;
        self.mark_applied();
        // Each applied entry's client gets its response, in log order; the responders of the
        // entry that failed and of those after it are dropped (their clients see Raft stop).
        for (resp, responder) in responses.into_iter().zip(responders) {
            if let Some(responder) = responder {
                responder.send(resp);
            }
        }
        match failed {
            None => Ok(()),
            Some((log_id, e)) => {
                self.health.set(
                    "database",
                    format!("could not apply entry {}: {e}; restart the node once the cause is fixed (it rebuilds its database from snapshot and log)", log_id.index),
                );
                Err(sm_err(e))
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// A fresh file to receive a snapshot from the leader into; the previous one, if any, is
    /// removed. The cluster service writes the snapshot into it and hands it, complete, to
    /// Raft, which passes it to [`RaftStateMachine::install_snapshot`].
    async fn begin_receiving_snapshot(&mut self) -> Result<SnapshotData, io::Error> {
        let path = self.snapshots.incoming_file();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let old = self
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(path);
        if let Some(old) = old {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(file)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        use tokio::io::AsyncWriteExt;
        // Normally the file received from the leader; otherwise (openraft restoring this
        // node's own snapshot, a transfer that a newer one replaced meanwhile) a copy of what
        // was handed over.
        let received = match self.take_receiving(&snapshot).await {
            Some(path) => {
                let mut file = snapshot;
                file.flush().await.map_err(|e| snap_err(Some(meta), e))?;
                drop(file);
                path
            }
            None => self
                .copy_in(snapshot)
                .await
                .map_err(|e| snap_err(Some(meta), e))?,
        };
        // The CDC queue records the entries it will never see as missing, durably, before the
        // snapshot is: a kill -9 between the two must not lose the gap, and a peer asking
        // for records once this node's applied index moved must find it. A gap recorded for
        // an install that then fails is filled from a peer, harmlessly.
        if let Some(sink) = &self.changes {
            sink.skipped_to(meta.last_log_id.map_or(0, |l| l.index))
                .await;
            sink.flush().await;
        }
        // Its id carries the leader's CDC progress (`changes.rs`), which this node takes over.
        let store = self.snapshots.clone();
        let m = meta.clone();
        let stored = tokio::task::spawn_blocking(move || store.commit_received(&received, &m))
            .await
            .map_err(|e| snap_err(Some(meta), e))?
            .map_err(|e| snap_err(Some(meta), e))?;
        self.install(stored).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let store = self.snapshots.clone();
        let current = tokio::task::spawn_blocking(move || store.current_open())
            .await
            .map_err(|e| snap_err(None, e))?
            .map_err(|e| snap_err(None, e))?;
        Ok(current.map(|(stored, file)| Snapshot {
            meta: stored.meta,
            snapshot: tokio::fs::File::from_std(file),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        let built = self.build().await;
        let c = &self.metrics.store;
        match &built {
            Ok(_) => {
                let took = started.elapsed();
                c.snapshots.inc();
                c.snapshot_seconds.observe(took.as_secs_f64());
                c.snapshot_create_duration.set_millis(took);
            }
            Err(_) => c.snapshots_failed.inc(),
        }
        built
    }
}

impl StateMachine {
    /// Builds a snapshot of the database as it is now (see [`RaftSnapshotBuilder`]).
    async fn build(&mut self) -> Result<Snapshot, io::Error> {
        // The read is pinned and the position read in one database-thread job: they match
        // exactly. The copy itself runs on another thread while writes go on. Not while a
        // large command is half assembled: the snapshot would not hold its parts.
        let (pinned, a) = loop {
            let applied = self.applied.clone();
            let assembling = self.assembling.clone();
            let pinned = self
                .db
                .call(move |engine| {
                    if assembling.load(std::sync::atomic::Ordering::Acquire) {
                        return Ok(None);
                    }
                    engine.pin().map(|p| Some((p, applied.lock().clone())))
                })
                .await
                .map_err(|e| snap_err(None, e))?
                .map_err(|e| snap_err(None, e))?;
            match pinned {
                Some(p) => break p,
                None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let cdc = super::changes::snapshot_suffix(&a.cdc);
        let snapshot_id = match a.last_applied {
            Some(l) => format!("{}-{}-{millis}{cdc}", l.leader_id.term, l.index),
            None => format!("0-0-{millis}{cdc}"),
        };
        // The log up to this snapshot may go once it is stored: the changes its entries
        // captured must be durable in the CDC queue first.
        if let Some(sink) = &self.changes {
            sink.flush().await;
        }
        let meta = SnapshotMeta {
            last_log_id: a.last_applied,
            last_membership: a.membership,
            snapshot_id,
        };
        let store = self.snapshots.clone();
        let m = meta.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
            let build = store.build_dir().map_err(|e| e.to_string())?;
            pinned
                .copy_to(&SnapshotStore::db_in(&build))
                .map_err(|e| e.to_string())?;
            Ok(store.commit(&build, &m).map_err(|e| e.to_string())?.1)
        })
        .await
        .map_err(|e| snap_err(Some(&meta), e))?
        .map_err(|e| snap_err(Some(&meta), e))?;
        Ok(Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        })
    }
}
