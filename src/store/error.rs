//! The store layer's error type.

use crate::raft::NodeInfo;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// This node is not the leader; `leader` is who is, when known.
    #[error("not leader")]
    NotLeader { leader: Option<NodeInfo> },
    /// A statement touches a PRAGMA that would break replication.
    #[error("disallowed pragma")]
    DisallowedPragma,
    /// A `none` read with `freshness` on a node that has not heard from a leader recently enough.
    #[error("stale read")]
    StaleRead,
    /// The request did not finish in time; for a write the outcome is unknown.
    #[error("{0}")]
    Timeout(String),
    /// `/boot` on a node that is not the only member of its cluster.
    #[error("not single-node")]
    NotSingleNode,
    /// Raft refused or failed (shutting down, storage failure, ...).
    #[error("raft: {0}")]
    Raft(String),
    /// Local I/O failure (snapshot files, data directory).
    #[error("{0}")]
    Io(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

impl From<crate::db::DbError> for StoreError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            DbError::Sqlite(m) => StoreError::Sqlite(m),
            DbError::InvalidImage(m) => StoreError::InvalidImage(m),
            DbError::Closed => StoreError::Closed,
            DbError::Io(m) => StoreError::Io(m),
        }
    }
}
