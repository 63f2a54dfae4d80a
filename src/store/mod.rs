//! The store: SQLite behind Raft.
//!
//! Owns: the SQLite database (one thread owns the connections), the Raft state machine that
//! applies log entries to it, snapshots, and the rewriting/classification of SQL.
//! Does not: speak HTTP, or know about other nodes' addresses.

pub mod classify;
pub mod db;
pub mod dump;
pub mod error;
pub mod rewrite;

pub use error::StoreError;
