//! The cluster service's messages (internode, private to sqlraft; see `raft::transport` for
//! the framing and version).

use serde::{Deserialize, Serialize};

use crate::command::Request;
use crate::raft::NodeInfo;
use crate::store::ReadOpts;

pub const PATH_CLUSTER: &str = "/v1/cluster";

/// Basic-auth credentials of the original client (or of a joining node's `-join-as` user),
/// re-checked by the receiver.
pub use crate::auth::Credentials;

/// A request to the cluster service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// The receiver's metadata (API URL, commit index, version).
    Meta,
    /// Add (or re-add) a node; sent to any member, followed to the leader.
    Join {
        node: NodeInfo,
        voter: bool,
        creds: Option<Credentials>,
    },
    /// `-bootstrap-expect`: "I exist and want to form a cluster".
    Notify {
        node: NodeInfo,
        creds: Option<Credentials>,
    },
    /// Remove a member by id.
    Remove {
        id: String,
        creds: Option<Credentials>,
    },
    /// A write, already rewritten by the node that received it.
    Execute {
        req: Request,
        creds: Option<Credentials>,
    },
    Query {
        req: Request,
        opts: ReadOpts,
        creds: Option<Credentials>,
    },
    Request {
        req: Request,
        opts: ReadOpts,
        creds: Option<Credentials>,
    },
    Backup {
        sql: bool,
        vacuum: bool,
        tables: Option<Vec<String>>,
        creds: Option<Credentials>,
    },
    /// A SQLite image (`image`) or a SQL dump (`dump`) to load.
    Load {
        #[serde(with = "serde_bytes")]
        image: Option<Vec<u8>>,
        dump: Option<String>,
        creds: Option<Credentials>,
    },
    /// Hand leadership over (to `id` if given).
    Stepdown {
        id: Option<String>,
        creds: Option<Credentials>,
    },
    /// Independent writes applied in order in one log entry (a queued batch).
    ExecuteEach {
        reqs: Vec<Request>,
        creds: Option<Credentials>,
    },
    /// Ask the receiver to start an election now (leadership transfer target).
    Elect,
    /// The receiver has been removed from the cluster.
    Removed,
    /// ReadIndex for a follower's `linearizable` read: the leader confirms its leadership with
    /// a quorum after this arrived and answers its commit index ([`ClusterResponse::Index`]).
    ReadIndex { creds: Option<Credentials> },
    /// Would the receiver vote for a candidate whose log ends at `last_log`? (No state changes.)
    PreVote {
        last_log: Option<crate::raft::LogId>,
    },
    /// A call on an interactive transaction (`/db/tx`), served by the leader.
    Tx {
        call: crate::store::TxCall,
        creds: Option<Credentials>,
    },
    /// The CDC records of `from..=to` (a node filling the gap a snapshot install left in
    /// its queue): answered with [`ClusterResponse::CdcRecords`], `None` if the receiver
    /// does not hold them all.
    CdcRecords { from: u64, to: u64 },
}

/// Metadata a node reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMeta {
    pub node: NodeInfo,
    pub api_url: String,
    pub commit_index: u64,
    pub version: String,
}

/// A response from the cluster service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterResponse {
    Meta(NodeMeta),
    Reply(crate::store::Reply),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Replies(Vec<crate::store::Reply>),
    Ok,
    Granted(bool),
    /// A log index (the answer to [`ClusterRequest::ReadIndex`]).
    Index(u64),
    /// The error exactly as the serving node produced it.
    Err(super::ClusterError),
    Tx(crate::store::TxAnswer),
    /// `(index, commit time in ms, payload item JSON)` of each record, and the index they
    /// cover up to.
    CdcRecords(Option<(Vec<CdcRecord>, u64)>),
}

/// One CDC record on the wire: index, commit time (ms), event count, payload item JSON.
pub type CdcRecord = (u64, u64, u32, serde_bytes::ByteBuf);
