//! Keeping this node's API address current in the membership.
//!
//! Owns: noticing that the configuration lists this node (same id, same Raft address) with
//! another API address than the one it serves on, and asking the leader to update it. That
//! happens after a restart with a new `-http-addr`/`-http-adv-addr`, and after a peers.json
//! recovery (the file names Raft addresses only). Without it, redirects and `/nodes` would
//! point clients at an address nothing serves.
//! Does not: change Raft addresses or ids (that is a join, with `-join`, as in rqlite).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use super::join::{join_once, JoinOutcome};
use super::Cluster;
use crate::raft::NodeInfo;

/// Runs until `stop`; cheap while nothing differs (it wakes on configuration changes).
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let store = cluster.store().clone();
    let me = store.me().clone();
    let mut metrics = store.raft().server_metrics();
    let mut retry = Duration::from_millis(200);
    loop {
        if let Some(voter) = outdated(&store.members(), &me) {
            let outcome = match store.leader() {
                None => None,
                Some(l) if l.id == me.id => Some(
                    store
                        .add_member(me.clone(), voter)
                        .await
                        .map_err(|e| e.to_string()),
                ),
                Some(l) => Some(match join_once(&cluster, &l.raft_addr, &me, voter).await {
                    JoinOutcome::Joined => Ok(()),
                    JoinOutcome::Failed(why) => Err(why),
                }),
            };
            match outcome {
                Some(Ok(())) => retry = Duration::from_millis(200),
                Some(Err(why)) => {
                    tracing::debug!(error = %why, "could not update this node's API address yet");
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
                None => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Whether the configuration lists `me` with an outdated API address; then whether it votes.
fn outdated(members: &[(NodeInfo, bool)], me: &NodeInfo) -> Option<bool> {
    members
        .iter()
        .find(|(n, _)| n.id == me.id && n.raft_addr == me.raft_addr && n != me)
        .map(|(_, voter)| *voter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, raft: &str, api: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            raft_addr: raft.into(),
            api_addr: api.into(),
            api_https: false,
        }
    }

    #[test]
    fn only_a_changed_api_address_of_this_node_is_outdated() {
        let me = node("1", "h:4002", "h:4001");
        let others = (node("2", "h:5002", "h:5001"), true);
        assert_eq!(outdated(&[(me.clone(), true), others.clone()], &me), None);
        assert_eq!(
            outdated(std::slice::from_ref(&others), &me),
            None,
            "not a member"
        );
        let blank = node("1", "h:4002", "");
        assert_eq!(
            outdated(&[(blank, false), others.clone()], &me),
            Some(false)
        );
        let moved = node("1", "h:9999", "h:1");
        assert_eq!(
            outdated(&[(moved, true), others], &me),
            None,
            "a new Raft address is a join"
        );
        let mut https = me.clone();
        https.api_https = true;
        assert_eq!(outdated(&[(me.clone(), true)], &https), Some(true));
    }
}
