//! Who is in the cluster: bootstrap, joins, removals.
//!
//! Owns: forming a new cluster, adding a node (learner first, promoted once caught up,
//! replacing an old entry with the same id or address), removing one, and noticing this
//! node's own removal.
//! Does not: find peers (discovery) or decide whether to form or join (`cluster::bootstrap`).

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::raft::{node_id_of, NodeId, NodeInfo};

impl Store {
    /// Makes this node part of a new cluster of exactly `members` (just itself for a lone
    /// node; the `-bootstrap-expect` outcome otherwise: every node that reaches the same set
    /// calls this with identical input, which Raft tolerates). Returns false if this node
    /// already had state.
    pub async fn bootstrap(&self, members: Vec<NodeInfo>) -> Result<bool, StoreError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, NodeInfo> = members
            .into_iter()
            .map(|n| (node_id_of(&n.id), n))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// [`Store::bootstrap`] with this node as the only voter.
    pub async fn bootstrap_alone(&self) -> Result<bool, StoreError> {
        self.bootstrap(vec![self.me.clone()]).await
    }

    /// All members (voters and learners) with whether each votes, sorted by id.
    pub fn members(&self) -> Vec<(NodeInfo, bool)> {
        let m = self.raft.server_metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let mut out: Vec<(NodeInfo, bool)> = membership
            .nodes()
            .map(|(nid, n)| (n.clone(), membership.voter_ids().any(|v| v == *nid)))
            .collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// How many voters the current configuration has (counted in place: it runs on every
    /// request, through `lease_valid`).
    pub fn voter_count(&self) -> usize {
        let m = self.raft.server_metrics();
        let m = m.borrow_watched();
        let n = m.membership_config.membership().voter_ids().count();
        n
    }

    /// Whether this node is a voter in the current configuration.
    pub fn is_voter(&self) -> bool {
        let m = self.raft.server_metrics();
        let m = m.borrow_watched();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        voter
    }

    /// This node learned it was removed from the cluster (from the configuration, or told
    /// by the leader). With `-raft-remove-shutdown`, Raft stops here so a removed node cannot
    /// disrupt the cluster by campaigning on its own.
    pub async fn removed(&self) {
        if !self.cfg.remove_shutdown {
            tracing::info!("this node was removed from the cluster");
            return;
        }
        tracing::warn!("this node was removed from the cluster: stopping Raft");
        self.stop_raft().await;
    }

    /// Watches the configuration for this node's removal (see [`Store::removed`]).
    pub async fn run_remove_watch(self: Arc<Self>, stop: CancellationToken) {
        let mut metrics = self.raft.server_metrics();
        let mut was_member = false;
        loop {
            let member = metrics
                .borrow_watched()
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            if member {
                was_member = true;
            } else if was_member {
                self.removed().await;
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Removes a member by its rqlite id; unknown ids are not an error (as in rqlite).
    pub async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        self.ensure_leader().await?;
        let Some((node, voter)) = self.members().into_iter().find(|(n, _)| n.id == id) else {
            return Ok(());
        };
        let nid = node_id_of(&node.id);
        // With `retain = false`, removing a voter drops the node too; a learner is removed
        // as a node.
        let change = if voter {
            openraft::ChangeMembers::RemoveVoters([nid].into())
        } else {
            openraft::ChangeMembers::RemoveNodes([nid].into())
        };
        self.change_membership(change).await
    }

    /// The voter among `candidates` whose replicated log is longest (leader only).
    pub fn most_caught_up(&self, candidates: &[NodeInfo]) -> Option<NodeInfo> {
        let m = self.raft.metrics().borrow_watched().clone();
        let repl = m.replication.unwrap_or_default();
        candidates
            .iter()
            .max_by_key(|n| {
                repl.get(&node_id_of(&n.id))
                    .copied()
                    .flatten()
                    .map(|l| l.index)
                    .unwrap_or(0)
            })
            .cloned()
    }

    /// Changes the membership; another change in progress (several nodes joining at once) is
    /// waited out rather than reported.
    pub(super) async fn change_membership(
        &self,
        change: openraft::ChangeMembers<NodeId, NodeInfo>,
    ) -> Result<(), StoreError> {
        use openraft::error::ChangeMembershipError;
        let deadline = Instant::now() + self.cfg.apply_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.raft.change_membership(change.clone(), false))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(self.not_leader())
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(0..30))).await;
                }
                Ok(Err(e)) => return Err(StoreError::Raft(e.to_string())),
                Err(_) => {
                    return Err(StoreError::OutcomeUnknown(
                        "membership change: no outcome within the apply timeout".into(),
                    ))
                }
            }
        }
    }

    /// Adds a node (leader only), as rqlite's join does: an identical rejoin is a no-op; a
    /// node that reuses an id with a new address, or an address with a new id, replaces the
    /// old entry. The node is added as a learner, brought up to date (by snapshot if the log
    /// was compacted), then promoted if it is to vote.
    pub async fn add_member(&self, node: NodeInfo, voter: bool) -> Result<(), StoreError> {
        self.ensure_leader().await?;
        let nid = node_id_of(&node.id);
        let members = self.members();
        let same = members
            .iter()
            .find(|(n, _)| n.id == node.id && n.raft_addr == node.raft_addr);
        let c = &self.metrics.store;
        if let Some((old, _)) = same.filter(|(old, _)| *old != node) {
            // The same member at a new API address (a restart with other flags, or the
            // addresses left blank by a peers.json recovery): only its metadata changes.
            tracing::info!(node = %node, old_api = %old.api_url(), new_api = %node.api_url(), "member's API address changed");
            self.change_membership(openraft::ChangeMembers::SetNodes(
                [(nid, node.clone())].into(),
            ))
            .await?;
        }
        // rqlite's num_ignored_joins: a rejoin that changes nothing at all.
        let unchanged = same.is_some_and(|(old, _)| *old == node);
        match same {
            Some((_, true)) => {
                if unchanged {
                    c.ignored_joins.inc();
                }
                return Ok(());
            }
            Some((_, false)) if !voter => {
                if unchanged {
                    c.ignored_joins.inc();
                }
                return Ok(());
            }
            _ => {}
        }
        for (old, old_voter) in &members {
            let conflict = (old.id == node.id) != (old.raft_addr == node.raft_addr);
            if conflict {
                tracing::info!(old = %old, new = %node, voter = old_voter, "replacing a member that changed its address or id");
                self.remove_node(&old.id).await?;
                c.removed_before_joins.inc();
            }
        }
        if same.is_none() {
            let added = tokio::time::timeout(
                Duration::from_secs(120),
                self.raft.add_learner(nid, node.clone(), true),
            )
            .await;
            match added {
                Ok(Ok(_)) => {}
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(self.not_leader())
                }
                Ok(Err(e)) => return Err(StoreError::Raft(e.to_string())),
                Err(_) => {
                    return Err(StoreError::Timeout(
                        "join: new node did not catch up in time".into(),
                    ))
                }
            }
        }
        if voter {
            self.change_membership(openraft::ChangeMembers::AddVoterIds([nid].into()))
                .await?;
        }
        c.joins.inc();
        tracing::info!(node = %node, voter, "node joined");
        Ok(())
    }
}
