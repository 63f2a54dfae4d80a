//! `-bootstrap-expect N`: nodes that know each other's addresses (a static `-join` list, or
//! later DNS) form exactly one cluster.
//!
//! Every round, a node first tries to join any target (an existing cluster always wins, so
//! nodes started later with the same flags just join), and if that fails, notifies every
//! target (itself included). A node that has been notified by N distinct nodes, has no state
//! and knows no leader bootstraps with exactly those N voters. With N equal to the real
//! cluster size, every node that reaches N saw the same N nodes, so all bootstrap identically
//! and Raft elects one leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::join::{join_once, JoinOutcome};
use super::proto::{ClusterRequest, ClusterResponse};
use super::Cluster;
use crate::raft::NodeInfo;

/// The receiving side of notifies.
pub struct Bootstrapper {
    cluster: Arc<Cluster>,
    expect: usize,
    seen: Mutex<BTreeMap<String, NodeInfo>>,
}

impl Bootstrapper {
    pub fn new(cluster: Arc<Cluster>, expect: usize) -> Self {
        Self {
            cluster,
            expect,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records a notifier; bootstraps once `expect` distinct nodes have notified.
    pub async fn notified(&self, node: NodeInfo) {
        if self.expect == 0 {
            return;
        }
        let store = self.cluster.store();
        if store.leader().is_some() || store.is_initialized().await {
            return;
        }
        let mut seen = self.seen.lock().await;
        // A node that changed address replaces its older entry.
        seen.insert(node.id.clone(), node);
        if seen.len() < self.expect {
            return;
        }
        let me = &store.me().id;
        if !seen.contains_key(me) {
            // Only a node among the N may bootstrap with them; it has not notified itself yet.
            return;
        }
        let members: Vec<NodeInfo> = seen.values().cloned().collect();
        match store.bootstrap(members.clone()).await {
            Ok(true) => {
                tracing::info!(members = ?members.iter().map(|m| &m.id).collect::<Vec<_>>(), "bootstrapped cluster")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "bootstrap failed"),
        }
    }

    /// The sending side: until a leader is known, try to join, else notify every target.
    /// `targets` is asked anew every round (a static list, or a DNS lookup).
    pub async fn run<F, Fut>(
        &self,
        targets: F,
        voter: bool,
        timeout: Duration,
    ) -> Result<(), String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Vec<String>>,
    {
        let deadline = Instant::now() + timeout;
        let me = self.cluster.store().me().clone();
        loop {
            let store = self.cluster.store();
            // Done once this node is a member as it asked to be (a joiner added as a learner
            // but not yet promoted keeps trying).
            if store.is_initialized().await && (!voter || store.is_voter()) {
                return Ok(());
            }
            let targets = targets().await;
            for t in targets.iter().filter(|t| **t != me.raft_addr) {
                if let JoinOutcome::Joined = join_once(&self.cluster, t, &me, voter).await {
                    return Ok(());
                }
            }
            if voter {
                let notify = ClusterRequest::Notify {
                    node: me.clone(),
                    creds: self.cluster.node_creds().cloned(),
                };
                if targets.contains(&me.raft_addr) {
                    self.notified(me.clone()).await;
                }
                // In parallel: one slow or silent target must not hold up the others.
                let others = targets.iter().filter(|t| **t != me.raft_addr);
                let calls = others.map(|t| {
                    let notify = &notify;
                    async move {
                        (
                            t,
                            self.cluster
                                .call(t, notify, Duration::from_secs(5), true)
                                .await,
                        )
                    }
                });
                for (t, answer) in futures_util::future::join_all(calls).await {
                    match answer {
                        Ok(ClusterResponse::Ok) => {}
                        Ok(other) => {
                            tracing::debug!(target = %t, answer = ?other, "notify refused")
                        }
                        Err(e) => tracing::debug!(target = %t, error = %e, "notify failed"),
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "boot timeout: no cluster formed within {timeout:?} (targets {targets:?})"
                ));
            }
            // Jitter so that nodes started together do not move in lockstep.
            let pause = Duration::from_millis(500 + fastrand::u64(0..500));
            tokio::time::sleep(pause).await;
        }
    }
}
