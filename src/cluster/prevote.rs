//! Elections with a pre-vote (Raft thesis §9.6).
//!
//! openraft's election timer campaigns as soon as it fires, bumping its term even when it
//! cannot win; a node that was cut off comes back with a higher term and forces a healthy
//! leader to step down. So openraft's own timer is off (`enable_elect = false`) and this loop
//! decides: a voter that has not heard from a leader for a randomized election timeout first
//! asks the voters whether they *would* vote for it (without changing any state). Only with a
//! majority of yeses does it start a real election. A voter says yes only if it has not heard
//! from a leader within the election timeout itself, does not lead, and the candidate's log is
//! at least as up to date as its own. A voter that says yes then waits an election timeout
//! before campaigning itself, so that two nodes that lost the same leader at the same moment
//! do not both campaign and split the vote (a SIGSTOPped leader took several elections).
//! A voter whose disk is too full to apply entries waits two election timeouts longer, so
//! that a healthy voter leads if one can (`full_disk.rs`). A sole voter that has heard from no
//! leader campaigns at its first check after starting (a restarted single node is ready in
//! about 0.2 s, not after an election timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::proto::{ClusterRequest, ClusterResponse};
use super::Cluster;

/// The candidate side; returns when `stop` fires.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let store = cluster.store().clone();
    let timeout = store.config().election_timeout;
    let started = Instant::now();
    let mut threshold = randomized(timeout);
    let mut last_attempt: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(timeout / 8) => {}
        }
        if !store.is_voter() || store.is_leader() || !store.may_campaign() {
            continue;
        }
        // Silence since the last leader contact, this node's start, or its last attempt.
        let contact = store.leader_contact().since_leader_contact();
        let since_start = started.elapsed();
        let since_attempt = last_attempt.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        let since_granted = store
            .prevote_granted()
            .since_leader_contact()
            .unwrap_or(Duration::MAX);
        let silence = contact
            .unwrap_or(since_start)
            .min(since_start)
            .min(since_attempt)
            .min(since_granted);
        // A sole voter has no leader to hear from and no one to split a vote with: after a
        // restart (it never resumes leadership in its old term: `log_store`'s
        // `without_leadership`) its first campaign is at once; later ones wait as others do.
        // One that has heard from a leader is not alone (say a data dir restored from a
        // single-node era): it waits, so the leader can correct its log first.
        let at_once = last_attempt.is_none() && contact.is_none() && store.voter_count() == 1;
        if silence < threshold && !at_once {
            continue;
        }
        // A node whose disk is too full to apply would answer no write as leader: it lets
        // the others campaign first, but still campaigns if none has after two more
        // election timeouts (reads need a leader too).
        if silence < threshold + timeout * 2 && store.disk_too_full().is_some() {
            continue;
        }
        last_attempt = Some(Instant::now());
        threshold = randomized(timeout);
        if pre_vote(&cluster).await {
            tracing::info!("pre-vote won: starting an election");
            store.metrics().store.elections.inc();
            if let Err(e) = store.campaign().await {
                tracing::warn!(error = %e, "could not start an election");
            }
        } else {
            tracing::debug!("pre-vote lost: not campaigning");
        }
    }
}

/// A uniformly random duration in [t, 2t).
fn randomized(t: Duration) -> Duration {
    t + Duration::from_micros(fastrand::u64(0..(t.as_micros() as u64).max(1)))
}

/// Asks every other voter; true once a majority (this node included) would vote for it.
async fn pre_vote(cluster: &Cluster) -> bool {
    let store = cluster.store();
    let me = store.me().id.clone();
    let voters: Vec<_> = store
        .members()
        .into_iter()
        .filter(|(_, v)| *v)
        .map(|(n, _)| n)
        .collect();
    if !voters.iter().any(|n| n.id == me) {
        return false;
    }
    let needed = voters.len() / 2 + 1;
    let last_log = store.last_log_id().await;
    let ask = ClusterRequest::PreVote { last_log };
    let timeout = store.config().election_timeout;
    let answers = futures_util::future::join_all(voters.iter().filter(|n| n.id != me).map(|n| {
        let ask = &ask;
        async move {
            matches!(
                cluster.call(&n.raft_addr, ask, timeout, true).await,
                Ok(ClusterResponse::Granted(true))
            )
        }
    }))
    .await;
    1 + answers.into_iter().filter(|yes| *yes).count() >= needed
}
