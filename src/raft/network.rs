//! The Raft network client: openraft's RPCs sent over the internode transport.
//!
//! A peer that cannot be reached is reported as `Unreachable` (openraft backs off); a call that
//! timed out as `Timeout`; an error the peer's Raft returned as `RemoteError`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::transport::{Transport, TransportError};
use super::{NodeId, NodeInfo, TypeConfig};
use crate::metrics::Metrics;

pub const PATH_APPEND: &str = "/v1/raft/append";
pub const PATH_VOTE: &str = "/v1/raft/vote";
pub const PATH_SNAPSHOT: &str = "/v1/raft/snapshot";

/// Cuts this node off from its peers, both ways (the internode service checks it too).
/// Used by tests to simulate a network partition without root privileges.
#[derive(Debug, Clone, Default)]
pub struct Isolation(Arc<AtomicBool>);

impl Isolation {
    pub fn set(&self, isolated: bool) {
        self.0.store(isolated, Ordering::SeqCst);
    }
    pub fn is_isolated(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Builds one client per peer; all share the node's pooled transport.
#[derive(Clone)]
pub struct Network {
    transport: Transport,
    isolation: Isolation,
    metrics: Arc<Metrics>,
}

impl Network {
    pub fn new(transport: Transport, isolation: Isolation) -> Self {
        Self {
            transport,
            isolation,
            metrics: Arc::default(),
        }
    }

    /// Counts into the node's `metrics` (AppendEntries calls that got no answer) instead of
    /// counters of its own.
    pub fn counting_into(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// A client for one peer.
pub struct PeerClient {
    id: NodeId,
    target: NodeInfo,
    transport: Transport,
    isolation: Isolation,
    metrics: Arc<Metrics>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient {
            id: target,
            target: node.clone(),
            transport: self.transport.clone(),
            isolation: self.isolation.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        opt: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        if self.isolation.is_isolated() {
            let e = std::io::Error::other("node is isolated");
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let ttl = opt.hard_ttl();
        let answer: Result<Result<Resp, RaftError<NodeId, E>>, TransportError> = self
            .transport
            .call(&self.target.raft_addr, path, req, ttl)
            .await;
        match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.id,
                self.target.clone(),
                e,
            ))),
            Err(
                e @ (TransportError::Unreachable { .. }
                | TransportError::Timeout { .. }
                | TransportError::Interrupted { .. }
                | TransportError::Refused { .. }),
            ) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ TransportError::Protocol { .. }) => {
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let r = self.rpc(PATH_APPEND, &rpc, &option).await;
        // The leader's heartbeats and replication: a peer that did not answer.
        if matches!(r, Err(RPCError::Unreachable(_) | RPCError::Network(_))) {
            self.metrics.store.failed_heartbeats.inc();
        }
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(PATH_VOTE, &rpc, &option).await
    }
}
