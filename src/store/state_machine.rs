//! The Raft state machine: applies committed log entries to SQLite, builds and installs
//! snapshots.
//!
//! The applied log id and membership are updated on the database thread in the same job that
//! changes the database, so a snapshot (also taken on that thread) always pairs an image with
//! exactly the log position it reflects.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError,
};

use super::snapshot::SnapshotStore;
use crate::command::Command;
use crate::db::{Db, Engine};
use crate::raft::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The state machine's position in the log.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Wall-clock time of the last applied entry (`fsm_update_time` in `/status`).
    pub updated_at: Option<SystemTime>,
    /// Metadata of the newest snapshot taken or installed.
    pub snapshot: Option<SnapshotMeta>,
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
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(meta: Option<&SnapshotMeta>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    let subject = ErrorSubject::Snapshot(meta.map(|m| m.signature()));
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Runs one command against the database. `max_steps` is the budget the receiving node put
/// on it (0 = none, for entries written before budgets existed).
fn apply_command(engine: &mut Engine, cmd: Command, max_steps: u64) -> Response {
    let results = |results| Response {
        results,
        ..Response::default()
    };
    match cmd {
        Command::Execute(req) => results(engine.execute_with(&req, max_steps)),
        // Strong reads are served by the leader once this entry is applied (older versions
        // logged the read itself; replaying it would only cost time).
        Command::Query(_) | Command::Noop => Response::default(),
        Command::ExecuteQuery(req) => results(engine.request_with(&req, max_steps)),
        Command::Load(image) => match engine.restore(&image) {
            Ok(()) => Response::default(),
            Err(e) => Response {
                error: Some(e.to_string()),
                ..Response::default()
            },
        },
        Command::Batch(cmds) => Response {
            parts: cmds
                .into_iter()
                .map(|c| apply_command(engine, c, max_steps))
                .collect(),
            ..Response::default()
        },
        Command::Bounded { budget, cmd } => apply_command(engine, *cmd, budget.max_steps),
    }
}

impl StateMachine {
    /// Builds the state machine, restoring the newest snapshot into the database if there is one.
    pub async fn open(db: Db, snapshots: SnapshotStore) -> Result<Self, StorageError> {
        let applied = AppliedState::default();
        let sm = Self {
            db,
            applied,
            snapshots,
        };
        let loaded = {
            let s = sm.snapshots.clone();
            tokio::task::spawn_blocking(move || s.load())
                .await
                .map_err(|e| snap_err(None, ErrorVerb::Read, e))?
                .map_err(|e| snap_err(None, ErrorVerb::Read, e))?
        };
        if let Some((meta, image)) = loaded {
            sm.install(meta, image).await?;
        }
        Ok(sm)
    }

    pub fn applied(&self) -> &AppliedState {
        &self.applied
    }

    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Replaces the database with `image` and moves the applied position to `meta`'s.
    async fn install(&self, meta: SnapshotMeta, image: Vec<u8>) -> Result<(), StorageError> {
        let applied = self.applied.clone();
        let m = meta.clone();
        self.db
            .call(move |engine| -> Result<(), String> {
                engine.restore(&image).map_err(|e| e.to_string())?;
                let mut a = applied.lock();
                a.last_applied = m.last_log_id;
                a.membership = m.last_membership.clone();
                a.updated_at = Some(SystemTime::now());
                a.snapshot = Some(m);
                Ok(())
            })
            .await
            .map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))?
            .map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied.lock();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let applied = self.applied.clone();
        // One trip to the database thread for the whole batch.
        self.db
            .call(move |engine| {
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    let log_id = entry.log_id;
                    let resp = match entry.payload {
                        EntryPayload::Blank => Response::default(),
                        EntryPayload::Normal(cmd) => apply_command(engine, cmd, 0),
                        EntryPayload::Membership(m) => {
                            applied.lock().membership = StoredMembership::new(Some(log_id), m);
                            Response::default()
                        }
                    };
                    let mut a = applied.lock();
                    a.last_applied = Some(log_id);
                    a.updated_at = Some(SystemTime::now());
                    out.push(resp);
                }
                out
            })
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let image = snapshot.into_inner();
        let store = self.snapshots.clone();
        let (m, img) = (meta.clone(), image.clone());
        tokio::task::spawn_blocking(move || store.save(&m, &img))
            .await
            .map_err(|e| snap_err(Some(meta), ErrorVerb::Write, e))?
            .map_err(|e| snap_err(Some(meta), ErrorVerb::Write, e))?;
        self.install(meta.clone(), image).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let store = self.snapshots.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| snap_err(None, ErrorVerb::Read, e))?
            .map_err(|e| snap_err(None, ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, image)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(image)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self.applied.clone();
        // Image and position are read in one database-thread job: they match exactly.
        let (image, a) = self
            .db
            .call(move |engine| engine.serialize().map(|img| (img, applied.lock().clone())))
            .await
            .map_err(|e| snap_err(None, ErrorVerb::Read, e))?
            .map_err(|e| snap_err(None, ErrorVerb::Read, e))?;
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match a.last_applied {
            Some(l) => format!("{}-{}-{millis}", l.leader_id.term, l.index),
            None => format!("0-0-{millis}"),
        };
        let meta = SnapshotMeta {
            last_log_id: a.last_applied,
            last_membership: a.membership,
            snapshot_id,
        };
        let store = self.snapshots.clone();
        let (m, img) = (meta.clone(), image);
        let img = tokio::task::spawn_blocking(move || store.save(&m, &img).map(|()| img))
            .await
            .map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))?
            .map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))?;
        self.applied.lock().snapshot = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(img)),
        })
    }
}
