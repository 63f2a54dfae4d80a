//! A leader whose disk is full hands leadership to another voter.
//!
//! A leader that cannot apply entries (its data directory has less free space than applying
//! needs: `Store::disk_too_full`) still gets entries committed by the other voters, but answers none
//! of them: every write then times out, so one node's disk stops the whole cluster. Handing
//! leadership over (the transfer of `POST /leader`) lets a healthy majority carry on, as it
//! does when any one node fails; the full node catches up once space returns. A voter whose
//! own disk is full refuses to campaign for it (`ClusterRequest::Elect`), so leadership goes
//! to a healthy voter or stays where it is.
//!
//! A Raft log that cannot be written (`health::RAFT_LOG`) is not a trigger: applying stops at
//! 64 MiB free, well before the log fills, and a leader whose log writer waits for space
//! cannot persist the vote a transfer needs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How often the leader looks at its disk's health.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The pause after a round of attempts before the next.
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
        let Some(problem) = store.disk_too_full() else {
            continue;
        };
        // Someone else's transfer (`POST /leader`) may move leadership anyway: look again
        // once it has ended.
        if cluster.transfer_in_progress() {
            continue;
        }
        let me = store.me().id.clone();
        let mut voters: Vec<_> = store
            .members()
            .into_iter()
            .filter(|(n, voter)| *voter && n.id != me)
            .map(|(n, _)| n)
            .collect();
        if voters.is_empty() {
            continue;
        }
        tracing::warn!(%problem, "this leader's disk is full: handing leadership to another voter");
        // The most caught-up voter first; one whose disk is full too refuses.
        let mut interrupted = false;
        while let Some(target) = store.most_caught_up(&voters) {
            voters.retain(|n| n.id != target.id);
            tokio::select! {
                _ = stop.cancelled() => return,
                moved = cluster.transfer_leadership(Some(target.id.clone())) => match moved {
                    Ok(()) => {
                        tracing::warn!(to = %target.id, "leadership handed over: this node's disk is full");
                        break;
                    }
                    // Another transfer started meanwhile: look again once it has ended.
                    Err(_) if cluster.transfer_in_progress() => {
                        interrupted = true;
                        break;
                    }
                    Err(e) => tracing::error!(to = %target.id, error = %e, "could not hand leadership over"),
                },
            }
            if !store.is_leader() {
                break;
            }
        }
        if interrupted {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PAUSE_AFTER) => {}
        }
    }
}
