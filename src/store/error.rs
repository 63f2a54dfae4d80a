//! The store layer's error type. It crosses the internode hop unchanged (serde), so a failure
//! gets the same status code whether the client asked the leader or a follower
//! (`http/error.rs` holds the one table that maps it).

use serde::{Deserialize, Serialize};

use crate::raft::NodeInfo;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// SQLite itself failed outside a statement (open, serialize, restore, ...).
    #[error("{0}")]
    Sqlite(String),
    /// A database image (load, boot, snapshot) is not a usable SQLite database.
    #[error("invalid SQLite database: {0}")]
    InvalidImage(String),
    /// The database thread is gone (the node is shutting down).
    #[error("database is closed")]
    Closed,
    /// This node is not the leader; `leader` is who is, when known (never this node).
    #[error("not leader")]
    NotLeader { leader: Option<NodeInfo> },
    /// A statement touches a PRAGMA that would break replication.
    #[error("disallowed pragma")]
    DisallowedPragma,
    /// A `none` read with `freshness` on a node that has not heard from a leader recently enough.
    #[error("stale read")]
    StaleRead,
    /// The request did not complete in time and changed nothing (a read, a barrier, a
    /// membership change that was refused).
    #[error("{0}")]
    Timeout(String),
    /// A read with `min_index` waited its whole timeout and this node had still not applied
    /// that index (lagging, cut off from new entries, or an index the cluster has not
    /// reached). Nothing was read; the read may be retried here or elsewhere.
    #[error("not caught up: applied index {applied} has not reached min_index {min_index} within the timeout")]
    NotCaughtUp { min_index: u64, applied: u64 },
    /// A write was proposed but its fate is not known: it may still be committed later.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// `/boot` on a node that is not the only member of its cluster.
    #[error("not single-node")]
    NotSingleNode,
    /// Raft refused or failed (shutting down, storage failure, ...).
    #[error("raft: {0}")]
    Raft(String),
    /// Local I/O failure (snapshot files, data directory).
    #[error("{0}")]
    Io(String),
    /// No such interactive transaction: never opened, finished, or expired.
    #[error("{0}")]
    TxNotFound(String),
    /// An interactive transaction cannot commit: a concurrent committed write changed an
    /// answer it was given. Nothing of it was applied.
    #[error("{0}")]
    TxConflict(String),
    /// An interactive transaction was dropped because leadership changed since it began.
    #[error("{0}")]
    TxAborted(String),
    /// An interactive transaction grew past its statement limit.
    #[error("{0}")]
    TxTooLarge(String),
    /// A leadership transfer (`POST /leader`) that can never succeed as asked: to the
    /// leader itself, or to no such voter. rqlite answers these 500 with this prefix.
    /// (Added last: the variants before it keep their encoding on the internode wire.)
    #[error("stepdown: {0}")]
    StepDown(String),
}

impl From<crate::db::DbError> for StoreError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            DbError::Sqlite(m) => StoreError::Sqlite(m),
            DbError::InvalidImage(m) => StoreError::InvalidImage(m),
            DbError::Closed => StoreError::Closed,
            DbError::Io(m) => StoreError::Io(m),
            e @ DbError::NodeFailure(_) => StoreError::Io(e.to_string()),
        }
    }
}
