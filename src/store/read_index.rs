//! `linearizable` reads: ReadIndex with shared confirmation rounds.
//!
//! Owns: confirming with a quorum, after a read arrived, that this node still leads, and
//! waiting until everything committed at that point is applied (Raft thesis §6.4); one
//! heartbeat round serves every read that arrived before it started.
//! Does not: run the read (the read pool does).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;

use super::*;
use crate::raft::{NodeInfo, Raft};

/// What one confirmation round concluded: the epoch it covers and the read index (or why
/// leadership could not be confirmed).
pub(super) type Round = (u64, Result<u64, StoreError>);

/// ReadIndex with shared rounds. A read takes a ticket (epoch); a round that *starts* after
/// the ticket was taken covers it, so one quorum heartbeat round confirms every read that
/// arrived before it started — never one that arrived later.
#[derive(Clone)]
pub(super) struct ReadIndex {
    requested: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    done: tokio::sync::watch::Receiver<Round>,
}

impl ReadIndex {
    pub(super) fn start(raft: Raft, me: NodeInfo, round_timeout: Duration) -> Self {
        let requested = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (tx, done) = tokio::sync::watch::channel((0, Ok(0)));
        tokio::spawn(run_read_index(
            raft,
            me,
            round_timeout,
            requested.clone(),
            wake.clone(),
            tx,
        ));
        Self {
            requested,
            wake,
            done,
        }
    }

    /// Returns the commit index to wait for, once a round that started after this call
    /// confirmed leadership.
    pub(super) async fn confirm(&self) -> Result<u64, StoreError> {
        let mut done = self.done.clone();
        let ticket = self
            .requested
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.wake.notify_one();
        let round = done
            .wait_for(|(epoch, _)| *epoch >= ticket)
            .await
            .map_err(|_| StoreError::Closed)?;
        round.1.clone()
    }
}

pub(super) async fn run_read_index(
    raft: Raft,
    me: NodeInfo,
    round_timeout: Duration,
    requested: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    done: tokio::sync::watch::Sender<Round>,
) {
    let mut covered = 0;
    loop {
        if requested.load(std::sync::atomic::Ordering::SeqCst) <= covered {
            tokio::select! {
                _ = wake.notified() => {}
                _ = done.closed() => return,
            }
            continue;
        }
        // Everything requested so far arrived before this round starts.
        let epoch = requested.load(std::sync::atomic::Ordering::SeqCst);
        let result = read_index_round(&raft, &me, round_timeout).await;
        covered = epoch;
        if done.send((epoch, result)).is_err() {
            return;
        }
    }
}

/// One ReadIndex round (openraft's: a heartbeat round to a quorum), within `timeout`: the
/// index a read may be served at once applied here, or why this node cannot prove it leads.
pub(super) async fn read_index_round(
    raft: &Raft,
    me: &NodeInfo,
    timeout: Duration,
) -> Result<u64, StoreError> {
    use openraft::error::LinearizableReadError;
    let round = raft.get_read_log_id(openraft::ReadPolicy::ReadIndex);
    match tokio::time::timeout(timeout, round).await {
        Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
        // Named by openraft; the caller re-checks what it knows of the leader.
        Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
            Err(StoreError::NotLeader {
                leader: f.leader_node.filter(|l| l.id != me.id),
            })
        }
        // Cut off from the majority (or no answer): this node cannot prove it still leads.
        Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)))) | Err(_) => {
            Err(StoreError::NotLeader { leader: None })
        }
        Ok(Err(e)) => Err(StoreError::Raft(e.to_string())),
    }
}

/// How long a `linearizable` read may take when the request names no
/// `linearizable_timeout` (rqlite's HTTP default).
pub const DEFAULT_LINEARIZABLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// The leader's half of ReadIndex, for a read here or on a follower (which asks over the
    /// internode service): confirms leadership with a quorum in a round that started after
    /// this call, and returns the commit index at that point. Whoever waits until it has
    /// applied that index may then read locally (Raft thesis §6.4).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, StoreError> {
        if !self.raft_is_leader() {
            return Err(self.not_leader());
        }
        let confirmed = self.read_index.confirm();
        match tokio::time::timeout(timeout, confirmed).await {
            Ok(Err(StoreError::NotLeader { .. })) => Err(self.not_leader()),
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout("linearizable read timeout".into())),
        }
    }

    /// ReadIndex: confirm leadership with a quorum *after* the read arrived, then wait until
    /// the state machine has applied everything committed at that point. Concurrent reads
    /// share confirmation rounds (see [`run_read_index`]).
    pub(super) async fn ensure_linearizable(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(), StoreError> {
        let timeout = timeout.unwrap_or(DEFAULT_LINEARIZABLE_TIMEOUT);
        let started = std::time::Instant::now();
        let read_index = self.read_index(timeout).await?;
        let left = timeout.saturating_sub(started.elapsed());
        self.wait_applied(read_index, left, |_| {
            StoreError::Timeout("linearizable read timeout".into())
        })
        .await
    }
}
