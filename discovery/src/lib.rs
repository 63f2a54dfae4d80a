//! Peer discovery for sqlraft: how nodes that were started with one shared setting find each
//! other.
//!
//! Owns: talking to the discovery source (a static list, DNS A/AAAA or SRV records, an etcd or
//! Consul key) and reporting what it found. Does not: join, bootstrap or talk Raft; the root
//! crate does that with what is found here (this crate depends on nothing of it).
//!
//! Two kinds of backend:
//! - *lookup* backends ([`Lookup`]: static list, `dns`, `dns-srv`) return candidate Raft
//!   addresses; the nodes then form a cluster with `-bootstrap-expect` (notify protocol).
//! - *key* backends ([`LeaderKey`]: `etcd-kv`, `consul-kv`) hold one leader record; nodes race
//!   to create it, the winner bootstraps, the others join the address it names.

use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[cfg(feature = "consul")]
pub mod consul;
#[cfg(any(test, feature = "test-support"))]
pub mod consul_standin;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod record;
pub mod static_list;

/// Real DNS and etcd servers on 127.0.0.1 for tests (dev use only).
#[cfg(feature = "test-support")]
pub mod testing;

pub use static_list::StaticList;

/// A node found by discovery: the Raft address other members reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    /// `host:port` of the peer's Raft (internode) listener.
    pub raft_addr: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft_addr)
    }
}

/// What a key backend stores under the leader key (rqlite's JSON value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub id: String,
    /// The leader's API URL, e.g. `http://host:4001`.
    pub api_addr: String,
    /// The leader's Raft address, `host:port`.
    pub addr: String,
}

/// A leader record as read, with the backend's version of it (etcd mod revision, Consul
/// `ModifyIndex`), for compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub record: LeaderRecord,
    pub version: u64,
}

/// Why a discovery call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// The backend could not be reached, timed out, or answered with an error.
    #[error("{mode}: {msg}")]
    Unavailable { mode: &'static str, msg: String },
    /// The configuration of the backend is invalid.
    #[error("invalid discovery config: {0}")]
    Config(String),
    /// The backend answered something that is not what we expect (e.g. a corrupt record).
    #[error("{mode}: unexpected answer: {msg}")]
    Protocol { mode: &'static str, msg: String },
}

/// A source of candidate peers.
///
/// # Invariants
/// - `lookup` returns each address at most once, in a stable (sorted) order, and never fails
///   merely because nothing was found: an empty answer means "nobody found yet".
/// - It does not filter out the caller's own address; the caller knows who it is.
/// - It is cheap enough to call every second and bounded in time (each backend has a
///   timeout); a failure is an error, not a hang.
#[allow(async_fn_in_trait)]
pub trait Lookup: Send + Sync {
    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError>;
    /// What the last call saw, for `/status`.
    fn status(&self) -> DiscoStatus;
}

/// A shared leader key with compare-and-set.
///
/// # Invariants
/// - `create` succeeds for exactly one caller while the key is absent (create-only CAS);
///   everyone else gets `Ok(false)`.
/// - `replace` succeeds only if the key still has `version` (CAS), so two nodes that both
///   saw a stale record cannot both take it over.
/// - `set` overwrites unconditionally (the current leader reporting itself).
/// - Every call is bounded in time.
#[allow(async_fn_in_trait)]
pub trait LeaderKey: Send + Sync {
    async fn get(&self) -> Result<Option<Versioned>, DiscoveryError>;
    async fn create(&self, record: &LeaderRecord) -> Result<bool, DiscoveryError>;
    async fn replace(&self, version: u64, record: &LeaderRecord) -> Result<bool, DiscoveryError>;
    async fn set(&self, record: &LeaderRecord) -> Result<(), DiscoveryError>;
    fn status(&self) -> DiscoStatus;
}

/// A diagnostic snapshot shown under `disco` in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiscoStatus {
    pub mode: String,
    /// What is looked up (DNS name, key, address list).
    pub target: String,
    pub last_contact: Option<SystemTime>,
    pub last_addresses: Vec<String>,
    pub last_error: Option<String>,
}

/// Shared bookkeeping for [`DiscoStatus`]; every backend embeds one.
#[derive(Debug, Default)]
pub struct StatusCell(Mutex<DiscoStatus>);

impl StatusCell {
    pub fn new(mode: &str, target: impl Into<String>) -> Self {
        Self(Mutex::new(DiscoStatus {
            mode: mode.to_string(),
            target: target.into(),
            ..Default::default()
        }))
    }

    /// Records the outcome of a call.
    pub fn record<T>(&self, result: &Result<T, DiscoveryError>, addresses: Option<Vec<String>>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                s.last_contact = Some(SystemTime::now());
                s.last_error = None;
                if let Some(a) = addresses {
                    s.last_addresses = a;
                }
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }

    pub fn get(&self) -> DiscoStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Sorts and deduplicates peers (the [`Lookup`] invariant).
pub fn normalize(mut peers: Vec<Peer>) -> Vec<Peer> {
    peers.sort();
    peers.dedup();
    peers
}
