//! sqlraft: a fault-tolerant, distributed SQLite, wire-compatible with rqlite's HTTP API.
//!
//! # Map
//!
//! A client's request reaches [`http`] (routing, parameters, bodies, response encoding, the
//! write queue). The handler calls the [`store::Store`] facade: writes become a
//! [`command::Command`], proposed to Raft ([`raft`]: type config, durable log store, network)
//! and applied by the state machine to SQLite ([`store::db`], one thread owns the
//! connections); reads are served locally after the check their consistency level needs, or
//! through the log at `strong`. [`node`] builds all of this from a validated
//! [`config::Config`] and shuts it down in reverse. Each node's counters live in one
//! [`metrics::Metrics`], handed to every component; `/metrics` and `/debug/vars` render it.
//!
//! Dependency direction: `http -> store -> raft`; `node` wires; `config` is read only at the
//! edge (`main.rs`); every layer may count into [`metrics`], which depends on nothing here.

pub mod auth;
pub mod cluster;
pub mod command;
pub mod config;
pub mod db;
pub mod duration;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod serve;
pub mod shell;
pub mod store;
pub mod tls;

/// The version reported everywhere (`X-RQLITE-VERSION`, `/status`, `/nodes`, the internode
/// metadata): the rqlite API version this server is wire-compatible with, and sqlraft's own version as build metadata
/// (clients that check for an rqlite 8 server, or compare versions, see `8.43.3`).
pub const VERSION: &str = concat!("v8.43.3+sqlraft.", env!("CARGO_PKG_VERSION"));
