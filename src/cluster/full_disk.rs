//! A leader whose disk is full hands leadership to another voter.
//!
//! A leader that cannot apply entries (its data directory is nearly full: `health::DISK`) or
//! cannot write its Raft log (`health::RAFT_LOG`) still gets entries committed by the other
//! voters, but answers none of them: every write then times out, so one node's disk stops
//! the whole cluster. Handing leadership over (the same transfer as `POST /leader`) lets the
//! healthy majority carry on, as a majority does when any one node fails; the full node
//! catches up once space returns.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::health::{DISK, RAFT_LOG};

/// How often the leader looks at its disk's health.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The pause after a hand-over (or a failed one) before the next: if every voter's disk is
/// full, leadership moves at this pace instead of back and forth at once.
const PAUSE_AFTER: Duration = Duration::from_secs(10);

/// Runs until `stop` fires.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let store = cluster.store().clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if !store.is_leader() {
            continue;
        }
        let Some(problem) = store.health().problem_of(&[RAFT_LOG, DISK]) else {
            continue;
        };
        if store.members().iter().filter(|(_, voter)| *voter).count() < 2 {
            continue;
        }
        tracing::warn!(%problem, "this leader's disk is full: handing leadership to another voter");
        tokio::select! {
            _ = stop.cancelled() => return,
            moved = cluster.transfer_leadership(None) => match moved {
                Ok(()) => tracing::warn!("leadership handed over: this node's disk is full"),
                Err(e) => tracing::error!(error = %e, "could not hand leadership over"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PAUSE_AFTER) => {}
        }
    }
}
