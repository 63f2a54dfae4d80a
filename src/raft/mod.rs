//! Raft plumbing: the type configuration, the durable log store and the network client.
//!
//! Owns: how openraft is instantiated for sqlraft (node ids, node metadata, log payload and
//! response types) and where the log lives on disk.
//! Does not: apply entries (the state machine lives in `store`), or serve HTTP.

pub mod commit_clock;
pub mod log_store;
pub mod network;
pub mod transport;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Command, StmtResult};

/// openraft's node id. rqlite ids are strings; we map them with a stable hash (see [`node_id_of`]).
pub type NodeId = u64;

/// What every member knows about every other: its rqlite id and both addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The operator-visible id (`-node-id`).
    pub id: String,
    /// `host:port` of the internode (Raft) listener, as advertised.
    pub raft_addr: String,
    /// `host:port` of the HTTP API, as advertised.
    pub api_addr: String,
    /// Whether the API is served over HTTPS (for building URLs).
    pub api_https: bool,
}

impl NodeInfo {
    /// The API base URL, e.g. `http://localhost:4001`.
    pub fn api_url(&self) -> String {
        let scheme = if self.api_https { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.raft_addr)
    }
}

/// What applying one log entry produced, handed back to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<StmtResult>,
    /// A failure of the whole command (e.g. a load that could not be installed).
    pub error: Option<String>,
    /// For a `Command::Batch`: one response per command, in order.
    pub parts: Vec<Response>,
}

openraft::declare_raft_types!(
    /// sqlraft's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = SnapshotData,
);

/// The state machine's snapshot data: a SQLite database file, sent and received in chunks,
/// never whole in memory.
pub type SnapshotData = tokio::fs::File;

pub type Raft = openraft::Raft<TypeConfig, crate::store::state_machine::StateMachine>;
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
pub type Entry = openraft::alias::DefaultEntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig>;

/// Maps an rqlite string id to openraft's numeric id (FNV-1a, 64 bit).
///
/// Stable across versions and platforms: it is persisted in the log and in snapshots.
pub fn node_id_of(id: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable() {
        // Persisted values: changing the hash would orphan every existing cluster.
        assert_eq!(node_id_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id_of("1"), 0xaf63_ac4c_8601_9afc);
        assert_ne!(node_id_of("1"), node_id_of("2"));
    }
}
