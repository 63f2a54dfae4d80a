//! Reaping (`-raft-reap-node-timeout`, `-raft-reap-read-only-node-timeout`): the leader removes
//! a member it has not been able to reach for longer than the timeout, as rqlite does for
//! clusters whose nodes come and go (autoscaling groups, Kubernetes).
//!
//! Only the leader reaps, and its timers start again whenever it becomes leader, so a node is
//! never removed because a *previous* leader lost sight of it. Reachability is the internode
//! metadata call, once per probe interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Runs until `stop` fires. A zero timeout disables reaping of that kind of member.
pub async fn run(
    cluster: Arc<Cluster>,
    voters_after: Duration,
    non_voters_after: Duration,
    stop: CancellationToken,
) {
    let store = cluster.store().clone();
    let shortest = [voters_after, non_voters_after]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min();
    let Some(shortest) = shortest else { return };
    let every = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    // Per member id: when it was last reached (or when this leadership began).
    let mut last_ok: HashMap<String, Instant> = HashMap::new();
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let leader = store.is_leader();
        if !leader {
            was_leader = false;
            continue;
        }
        if !was_leader {
            last_ok.clear();
            was_leader = true;
        }
        let me = store.me().id.clone();
        for (node, voter) in store.members() {
            if node.id == me {
                continue;
            }
            let after = if voter {
                voters_after
            } else {
                non_voters_after
            };
            if after.is_zero() {
                continue;
            }
            let seen = last_ok.entry(node.id.clone()).or_insert_with(Instant::now);
            if cluster
                .meta(&node.raft_addr, every.max(Duration::from_millis(500)))
                .await
                .is_ok()
            {
                *seen = Instant::now();
                continue;
            }
            if seen.elapsed() < after {
                continue;
            }
            tracing::warn!(node = %node, unreachable_for = ?seen.elapsed(), "reaping a member the leader cannot reach");
            let reaped = &store.metrics().store;
            match cluster.remove_and_notify(&node.id).await {
                Ok(()) => {
                    reaped.nodes_reaped_ok.inc();
                    last_ok.remove(&node.id);
                }
                Err(e) => {
                    reaped.nodes_reaped_failed.inc();
                    tracing::warn!(node = %node, error = %e, "could not reap member");
                }
            }
        }
    }
}
