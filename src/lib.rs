//! sqlraft: a fault-tolerant, distributed SQLite, wire-compatible with rqlite's HTTP API.
//!
//! # Map
//!
//! A request travels down this list and its answer back up it. Each module's own doc says
//! what it owns and what it does not; `docs/design/` has one note per layer saying why.
//!
//! - [`http`]: the public API. `mod.rs` the router, `db.rs` the data endpoints (with
//!   `/db/sql`), `status.rs` `/status` (host interfaces from `interfaces.rs`), `/readyz` and
//!   `/snapshot`, `members.rs` `/nodes`,
//!   `/leader` and `/remove`, `reap.rs` `/reap`, `vars.rs` and `scrape.rs` `/debug/vars` and
//!   `/metrics`, `params.rs` and `body.rs` parse, `json.rs` writes Go-identical JSON,
//!   `queue.rs` batches `?queue` writes, `error.rs` is the one place that picks status codes,
//!   `console/` the web console.
//! - [`cluster`]: where a request is served and how a node becomes a member. `forward.rs`
//!   routes (local, else the leader, else a redirect); `mod.rs` names the operations;
//!   `formation.rs` decides form-or-join as a pure function, carried out by `join.rs`,
//!   `bootstrap.rs` (`-bootstrap-expect`) and `discover.rs` (`-disco-mode`); `service.rs` and
//!   `proto.rs` are the internode service; `prevote.rs`, `reap.rs` and `announce.rs` are
//!   background duties.
//! - [`store`]: SQLite behind Raft. `requests.rs` (writes through the log, reads at their
//!   level), `proposals.rs` (group commit), `read_index.rs` (linearizable reads),
//!   `leadership.rs` (leader lease and the pre-vote grant rule), `membership.rs`,
//!   `images.rs` (load, boot, backup), `state_machine.rs` and `snapshot.rs`, `recovery.rs`
//!   (`peers.json`), `error.rs` (the error vocabulary every layer above maps).
//! - [`raft`]: openraft's type configuration, the durable log (`log_store/`), when each
//!   commit index was learned (`commit_clock.rs`, for `freshness_strict`), the network client
//!   (`network.rs`) and the internode wire (`transport.rs`).
//! - [`db`]: SQLite with rqlite's semantics, knowing nothing of Raft. `engine.rs` (the one
//!   writer thread), `reads.rs` (the reader pool), `exec.rs`, `values.rs`, `datetime.rs`,
//!   `rewrite.rs`, `classify.rs`, `lexer.rs`, `dump.rs`, `conn.rs`, `stats.rs`, `image.rs`
//!   (checking uploaded databases), `extensions.rs` (`-extensions-path`).
//! - [`command`]: the versioned Raft log payload.
//! - Around them: [`node`] (the composition root: builds everything from a validated
//!   [`config::Config`] and shuts it down in reverse), [`config`] (flags, environment and file;
//!   read only by the binaries), [`metrics`] (each node's counters, in one
//!   [`metrics::Metrics`] handed to every component; `/metrics` and `/debug/vars` render it),
//!   [`allocator`] (mimalloc, as the binaries install it), [`auth`], [`tls`], [`serve`],
//!   [`health`], [`duration`], [`shared_call`] (one call for every caller waiting: strong
//!   reads' log barrier, followers' ReadIndex), [`auto`] (automatic backups and
//!   the restore at first start, run by `node`), [`cdc`] (change data capture: the queue and
//!   the leader's delivery; the hooks are `db/capture.rs`), and [`shell`] (the `sqlraft` shell, a
//!   client of the public API only).
//!
//! Dependency direction: `http -> cluster -> store -> {raft, db}`; `node` wires; nothing
//! below `http` depends on it; every layer may count into [`metrics`], which depends on
//! nothing here.

pub mod allocator;
pub mod auth;
pub mod auto;
pub mod cdc;
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
pub mod shared_call;
pub mod shell;
pub mod store;
pub mod tls;

/// The version reported everywhere (`X-RQLITE-VERSION`, `/status`, `/nodes`, the internode
/// metadata): the rqlite API version this server is wire-compatible with, and sqlraft's own version as build metadata
/// (clients that check for an rqlite 8 server, or compare versions, see `8.43.3`).
pub const VERSION: &str = concat!("v8.43.3+sqlraft.", env!("CARGO_PKG_VERSION"));
