//! Getting commands into the log: group commit, parts, budgets, bounded waits.
//!
//! Owns: proposing a command and waiting for its outcome (never longer than the apply
//! timeout, or than this node's leadership lasts), the group-commit batcher that combines
//! concurrent proposals into one entry, splitting large commands into parts, attaching the
//! execution budget, and pausing proposals during a hand-over.
//! Does not: decide what a command means (the state machine applies it).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::*;
use crate::command::{Budget, Command};
use crate::raft::{Raft, TypeConfig};

/// Whether new proposals wait, and how many were admitted and are not settled yet. One value
/// behind one lock, so "admit unless paused" and "pause, then wait for none admitted" cannot
/// miss each other: once a hand-over has waited for zero, the log stops growing.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteGate {
    paused: bool,
    admitted: usize,
}

/// Proposals wait while this lives (see [`Store::pause_writes`]).
pub struct WritesPaused<'a>(&'a tokio::sync::watch::Sender<WriteGate>);

impl WritesPaused<'_> {
    /// Waits (at most `limit`) until every proposal admitted before the pause has settled:
    /// appended, committed and applied, or given up on. True if none is left.
    pub async fn settled(&self, limit: Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|g| g.admitted == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for WritesPaused<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|g| g.paused = false);
    }
}

/// One admitted proposal; settles when dropped.
struct Admitted<'a>(&'a tokio::sync::watch::Sender<WriteGate>);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|g| g.admitted -= 1);
    }
}

/// A command waiting to be proposed, and where its outcome goes.
pub(super) struct Proposal {
    cmd: Command,
    tx: oneshot::Sender<Result<(crate::raft::Response, u64), StoreError>>,
}

/// Most commands combined into one log entry.
pub(super) const MAX_BATCH: usize = 1024;

/// Log entries in flight at once: one being made durable while the next one fills up.
pub(super) const MAX_IN_FLIGHT: usize = 2;

pub(super) fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f.leader_node,
        },
        e => StoreError::Raft(e.to_string()),
    }
}

/// Group commit above Raft. Commands that arrive while earlier entries are in flight are
/// combined into one `Command::Batch` entry: one append, one fsync, one replication round and
/// one apply for all of them. With no concurrency every command still goes alone, with no
/// added delay.
pub(super) async fn run_batcher(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch grow.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && !matches!(batch[0].cmd, Command::Load(_)) {
            match rx.try_recv() {
                // A database image goes alone: it replaces everything.
                Ok(p) if matches!(p.cmd, Command::Load(_)) => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let r = raft
                            .client_write(p.cmd)
                            .await
                            .map(|r| (r.data, r.log_id.index));
                        let _ = p.tx.send(r.map_err(write_error));
                    });
                }
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if batch.len() == 1 {
                let Some(p) = batch.pop() else { return };
                let r = raft
                    .client_write(p.cmd)
                    .await
                    .map(|r| (r.data, r.log_id.index));
                let _ = p.tx.send(r.map_err(write_error));
                return;
            }
            let (cmds, txs): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            match raft.client_write(Command::Batch(cmds)).await {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    let mut parts = resp.data.parts.into_iter();
                    for tx in txs {
                        let part = parts
                            .next()
                            .ok_or_else(|| StoreError::Raft("batch response too short".into()));
                        let _ = tx.send(part.map(|p| (p, index)));
                    }
                }
                Err(e) => {
                    let e = write_error(e);
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl Store {
    /// Holds new proposals until the returned guard is dropped (a leadership hand-over); they
    /// then find whether this node still leads, and are forwarded if not.
    pub fn pause_writes(&self) -> WritesPaused<'_> {
        self.write_gate.send_modify(|g| g.paused = true);
        WritesPaused(&self.write_gate)
    }

    /// Admits a proposal: waits while a hand-over pauses writes (bounded: a hand-over gives
    /// up within a few election timeouts; after `limit` the proposal goes ahead and finds
    /// out whether this node still leads).
    async fn admit(&self, limit: Duration) -> Admitted<'_> {
        let admit = |g: &mut WriteGate| {
            let open = !g.paused;
            if open {
                g.admitted += 1;
            }
            open
        };
        if !self.write_gate.send_if_modified(admit) {
            let mut rx = self.write_gate.subscribe();
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                // (The borrow `wait_for` returns holds the gate's lock: drop it at once.)
                let reopened = tokio::time::timeout_at(deadline, rx.wait_for(|g| !g.paused))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if self.write_gate.send_if_modified(admit) {
                    break;
                }
                if !reopened {
                    self.write_gate.send_modify(|g| g.admitted += 1);
                    break;
                }
            }
        }
        Admitted(&self.write_gate)
    }

    /// Proposes a command and waits until it is committed and applied, or until its outcome
    /// cannot be known in time: the apply timeout passes, or this node stops being a leader
    /// that a quorum confirms (its lease lapses; a leader cut off from the majority finds out
    /// within an election timeout instead of waiting out the apply timeout). Either way the
    /// entry may still be committed later, so a write's outcome is then unknown.
    pub(super) async fn propose(
        &self,
        cmd: Command,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        let id = fastrand::u64(..);
        let Some(parts) = parts::split(&cmd, id) else {
            return self.propose_one(cmd).await;
        };
        drop(cmd);
        let n = parts.len();
        let parts = futures_util::stream::iter(parts.into_iter().map(Ok));
        self.propose_parts(id, n, n * parts::PART_BYTES, "large request", parts)
            .await
    }

    /// Proposes the `n` parts of one large command (`bytes` long in all) in order, each once
    /// the one before it is committed; `parts` makes each only when it is due, so a caller
    /// need never hold the whole command. The last part's response is the command's.
    /// Until the last part is committed nothing was applied, so a failure before it (making
    /// or proposing a part) means the command (`what`) was not applied, and the parts already
    /// in the log are dropped.
    pub(super) async fn propose_parts(
        &self,
        id: u64,
        n: usize,
        bytes: usize,
        what: &str,
        parts: impl futures_util::Stream<Item = Result<Command, StoreError>>,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        use futures_util::StreamExt;
        let mut parts = std::pin::pin!(parts);
        let mut last = None;
        for i in 0..n {
            let timeout = match i + 1 == n {
                true => self.large_apply_timeout(bytes),
                false => self.cfg.apply_timeout,
            };
            let proposed = match parts.next().await {
                Some(Ok(p)) => self.propose_within(p, timeout).await,
                Some(Err(e)) => Err(e),
                None => Err(StoreError::Raft(format!("{what} ran out of parts"))),
            };
            match proposed {
                Ok(r) => last = Some(r),
                Err(e) => {
                    if i > 0 {
                        // Best effort: a new term drops the parts anyway.
                        let _ = self.propose_one(Command::PartAbort { id }).await;
                    }
                    return Err(match e {
                        StoreError::OutcomeUnknown(_) if i + 1 < n => StoreError::Timeout(format!(
                            "{what} not applied: part {} of {n} was not committed in time",
                            i + 1
                        )),
                        e => e,
                    });
                }
            }
        }
        last.ok_or_else(|| StoreError::Raft(format!("{what} had no parts")))
    }

    /// Proposes one log entry.
    pub(super) async fn propose_one(
        &self,
        cmd: Command,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        self.propose_within(cmd, self.cfg.apply_timeout).await
    }

    /// [`Store::propose_one`], waiting up to `apply_timeout` for the entry to be applied (a
    /// large command's last part applies it all, which takes longer).
    pub(super) async fn propose_within(
        &self,
        cmd: Command,
        apply_timeout: Duration,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        let _admitted = self.admit(self.cfg.apply_timeout).await;
        // A leader without a quorum refuses at once instead of waiting out the apply timeout.
        self.ensure_leader().await?;
        self.metrics.store.commands.inc();
        self.metrics.proto.requests.inc();
        // The size as the log stores it (bincode); counted without encoding it twice.
        self.metrics
            .proto
            .bytes
            .add(bincode::serialized_size(&cmd).unwrap_or(0));
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Proposal { cmd, tx })
            .await
            .map_err(|_| StoreError::Closed)?;
        let deposed = async {
            let every = (self.cfg.election_timeout / 10).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                if !self.is_leader() {
                    return;
                }
            }
        };
        tokio::select! {
            r = rx => match r {
                Ok(r) => r,
                Err(_) => Err(StoreError::Closed),
            },
            _ = tokio::time::sleep(apply_timeout) => Err(StoreError::OutcomeUnknown(
                "outcome unknown: not applied within the apply timeout (-raft-apply-timeout); it may still be committed and applied".into(),
            )),
            _ = deposed => Err(StoreError::OutcomeUnknown(
                "outcome unknown: this node lost its leadership (or its quorum) before the write was applied; it may still be committed and applied".into(),
            )),
        }
    }

    /// How long the entry that applies a large command (`bytes` big) may take: the apply
    /// timeout, plus a second per 10 MiB for copying it into the database.
    pub(super) fn large_apply_timeout(&self, bytes: usize) -> Duration {
        self.cfg.apply_timeout + Duration::from_secs((bytes >> 20) as u64 / 10)
    }

    /// A write command with this node's execution budget attached (see [`Budget`]).
    pub(super) fn bounded(&self, cmd: Command) -> Command {
        match self.cfg.db_max_steps {
            0 => cmd,
            max_steps => Command::Bounded {
                budget: Budget { max_steps },
                cmd: Box::new(cmd),
            },
        }
    }
}
