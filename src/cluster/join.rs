//! Joining an existing cluster (`-join host:port,...`): ask any member; a follower answers
//! with the leader, which is followed (a bounded number of hops).

use std::time::Duration;

use super::proto::{ClusterRequest, ClusterResponse};
use super::{Cluster, ClusterError};
use crate::raft::NodeInfo;
use crate::store::StoreError;

/// What one join attempt at one address came to.
pub enum JoinOutcome {
    Joined,
    /// Try elsewhere or later; the reason is logged.
    Failed(String),
}

/// Tries to join through `addr`, following "not leader" answers to the leader.
pub async fn join_once(cluster: &Cluster, addr: &str, me: &NodeInfo, voter: bool) -> JoinOutcome {
    let req = ClusterRequest::Join {
        node: me.clone(),
        voter,
        creds: cluster.node_creds().cloned(),
    };
    let mut addr = addr.to_string();
    for _hop in 0..5 {
        // A join may wait for the new node to catch up (snapshot transfer): allow time.
        match cluster
            .call(&addr, &req, Duration::from_secs(150), false)
            .await
        {
            Ok(ClusterResponse::Ok) => return JoinOutcome::Joined,
            Ok(ClusterResponse::Err(ClusterError::Store(StoreError::NotLeader {
                leader: Some(l),
            }))) if l.raft_addr != addr => {
                addr = l.raft_addr;
            }
            Ok(ClusterResponse::Err(ClusterError::Store(StoreError::NotLeader { .. }))) => {
                return JoinOutcome::Failed(format!("{addr}: no leader yet"));
            }
            Ok(ClusterResponse::Err(ClusterError::Unauthorized(_))) => {
                return JoinOutcome::Failed(format!(
                    "{addr}: join refused: unauthorized (check -join-as and the -auth files)"
                ));
            }
            Ok(other) => return JoinOutcome::Failed(format!("{addr}: {other:?}")),
            Err(ClusterError::LeaderUnreachable { addr, msg }) => {
                return JoinOutcome::Failed(format!("{addr} unreachable: {msg}"))
            }
            Err(e) => return JoinOutcome::Failed(format!("{addr}: {e}")),
        }
    }
    JoinOutcome::Failed(format!("{addr}: too many redirects"))
}

/// `-join` without `-bootstrap-expect`: up to `attempts` rounds over `targets`, `interval`
/// apart.
pub async fn join(
    cluster: &Cluster,
    targets: &[String],
    me: &NodeInfo,
    voter: bool,
    attempts: u32,
    interval: Duration,
) -> Result<(), String> {
    let mut last = String::from("no join targets");
    for attempt in 1..=attempts.max(1) {
        for t in targets.iter().filter(|t| **t != me.raft_addr) {
            match join_once(cluster, t, me, voter).await {
                JoinOutcome::Joined => {
                    tracing::info!(target = %t, "joined cluster");
                    return Ok(());
                }
                JoinOutcome::Failed(why) => {
                    tracing::warn!(attempt, target = %t, reason = %why, next_try_in = ?interval, "join failed");
                    last = why;
                }
            }
        }
        if attempt < attempts {
            tokio::time::sleep(interval).await;
        }
    }
    Err(format!(
        "failed to join cluster after {attempts} attempts: {last}"
    ))
}
