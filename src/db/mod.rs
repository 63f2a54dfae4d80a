//! SQLite with rqlite's semantics, knowing nothing of Raft.
//!
//! Owns: the database and its connections ([`engine`]: one thread owns the read-write
//! connection; requests carry a oneshot reply; [`reads`]: a pool of read-only connections;
//! `conn`: how each is opened, and the authorizer that keeps SQL away from the host's
//! files), statement execution (`exec`, with the deterministic step budget of writes and
//! the time limit of reads), value and type
//! conversion ([`values`], [`datetime`] for Go's time formats), the SQL dump ([`dump`]), the
//! rewriting of non-deterministic SQL before it enters the log ([`rewrite`], on a small
//! tokenizer, [`lexer`]), the pragma check ([`classify`]; read-only is SQLite's own
//! verdict, never a string prefix), what `/status` shows of SQLite ([`stats`]) and the
//! operator's SQLite extensions ([`extensions`]: gathered at start, loaded into every
//! connection by `conn`).
//! Does not: know about Raft, other nodes or HTTP. The store (`crate::store`) decides when
//! something runs; this module decides what running it means.

pub mod capture;
pub mod classify;
mod conn;
pub mod datetime;
pub mod dump;
pub mod engine;
mod exec;
pub mod extensions;
mod image;
mod lexer;
pub mod reads;
pub mod rewrite;
pub mod stats;
pub mod txn;
mod values;

pub use engine::{Db, DbConfig, Engine, PinnedRead};
pub(crate) use exec::{plain_write, Mode};
pub use image::{validate_file, validate_image, SQLITE_HEADER};
pub use reads::{ReadKind, ReadPool};

/// Why the database could not do what was asked (statement errors are results, not this).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    /// SQLite itself failed outside a statement (open, serialize, restore, ...).
    #[error("{0}")]
    Sqlite(String),
    /// A database image (load, boot, snapshot) is not a usable SQLite database.
    #[error("invalid SQLite database: {0}")]
    InvalidImage(String),
    /// The database thread is gone (the node is shutting down).
    #[error("database is closed")]
    Closed,
    /// Local I/O failure (database files, snapshot files).
    #[error("{0}")]
    Io(String),
    /// A write failed because of this node (a full disk, an I/O error), not because of what
    /// it says: its outcome is not the entry's, and the database may hold part of it.
    #[error("this node could not apply a write: {0}")]
    NodeFailure(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e.to_string())
    }
}
