//! Discovery-driven cluster formation (`-disco-mode`), on top of the `sqlraft-discovery` crate.
//!
//! - `dns` / `dns-srv` (lookup backends): every round the candidates are looked up anew and
//!   handed to the notify protocol of `-bootstrap-expect` ([`super::bootstrap`]).
//! - `etcd-kv` / `consul-kv` (key backends): nodes race to create the leader key with a
//!   create-only compare-and-set; the winner bootstraps a single-voter cluster and everyone
//!   else joins the address the key names. The leader rewrites the key when it takes over and
//!   every report interval, so late nodes find the current leader. Non-voters never take the
//!   key. Unlike rqlite, a key that names a dead cluster (left over after a full wipe) does not
//!   make new nodes retry forever: once the address it names has not answered for
//!   `stale_after`, a voter takes the key over with compare-and-set on the version it read
//!   (so exactly one node does) and bootstraps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use sqlraft_discovery::{
    DiscoStatus, DiscoveryError, LeaderKey, LeaderRecord, Lookup, Peer, Versioned,
};
use tokio_util::sync::CancellationToken;

use super::join::{join_once, JoinOutcome};
use super::Cluster;
use crate::config::{DiscoMode, Discovery};
use crate::raft::NodeInfo;

/// A lookup backend.
pub enum Finder {
    Dns(sqlraft_discovery::dns::Dns),
    DnsSrv(sqlraft_discovery::dns::DnsSrv),
    /// Mode `dns` with `RQLITE_DISCO_DNS_HOSTS` set: the list stands in for the answer.
    Hosts(sqlraft_discovery::StaticList),
}

impl Finder {
    pub async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        match self {
            Finder::Dns(d) => d.lookup().await,
            Finder::DnsSrv(d) => d.lookup().await,
            Finder::Hosts(d) => d.lookup().await,
        }
    }

    pub fn status(&self) -> DiscoStatus {
        match self {
            Finder::Dns(d) => d.status(),
            Finder::DnsSrv(d) => d.status(),
            Finder::Hosts(d) => d.status(),
        }
    }
}

/// A key backend.
pub enum Keeper {
    // Boxed: both clients are large next to the enum's other uses.
    Etcd(Box<sqlraft_discovery::etcd::Etcd>),
    Consul(Box<sqlraft_discovery::consul::Consul>),
}

impl Keeper {
    async fn get(&self) -> Result<Option<Versioned>, DiscoveryError> {
        match self {
            Keeper::Etcd(k) => k.get().await,
            Keeper::Consul(k) => k.get().await,
        }
    }
    async fn create(&self, r: &LeaderRecord) -> Result<bool, DiscoveryError> {
        match self {
            Keeper::Etcd(k) => k.create(r).await,
            Keeper::Consul(k) => k.create(r).await,
        }
    }
    async fn replace(&self, version: u64, r: &LeaderRecord) -> Result<bool, DiscoveryError> {
        match self {
            Keeper::Etcd(k) => k.replace(version, r).await,
            Keeper::Consul(k) => k.replace(version, r).await,
        }
    }
    async fn set(&self, r: &LeaderRecord) -> Result<(), DiscoveryError> {
        match self {
            Keeper::Etcd(k) => k.set(r).await,
            Keeper::Consul(k) => k.set(r).await,
        }
    }
    pub fn status(&self) -> DiscoStatus {
        match self {
            Keeper::Etcd(k) => k.status(),
            Keeper::Consul(k) => k.status(),
        }
    }
}

/// The configured discovery backend (shared with the tasks that use it and with `/status`).
#[derive(Clone)]
pub enum Disco {
    Finder(Arc<Finder>),
    Key(Arc<Keeper>),
}

impl Disco {
    /// Builds the backend `-disco-mode` names from `-disco-config`; `key` is `-disco-key`.
    pub fn build(
        discovery: Option<&Discovery>,
        key: &str,
        raft_port: u16,
    ) -> Result<Option<Self>, String> {
        let Some(Discovery {
            mode,
            config,
            dns_hosts,
        }) = discovery
        else {
            return Ok(None);
        };
        let mode = *mode;
        let json = config.clone();
        let bad = |e: serde_json::Error| format!("-disco-config for {}: {e}", mode.name());
        let disco = match mode {
            DiscoMode::Dns if dns_hosts.is_some() => {
                let hosts = dns_hosts.clone().unwrap_or_default();
                tracing::info!(
                    hosts = %hosts.join(","),
                    "RQLITE_DISCO_DNS_HOSTS is set: using it instead of DNS lookups"
                );
                Disco::Finder(Arc::new(Finder::Hosts(sqlraft_discovery::StaticList::new(
                    hosts,
                ))))
            }
            DiscoMode::Dns => {
                let c: sqlraft_discovery::dns::DnsConfig =
                    serde_json::from_value(json).map_err(bad)?;
                Disco::Finder(Arc::new(Finder::Dns(
                    sqlraft_discovery::dns::Dns::new(c, raft_port).map_err(|e| e.to_string())?,
                )))
            }
            DiscoMode::DnsSrv => {
                let c: sqlraft_discovery::dns::DnsSrvConfig =
                    serde_json::from_value(json).map_err(bad)?;
                Disco::Finder(Arc::new(Finder::DnsSrv(
                    sqlraft_discovery::dns::DnsSrv::new(c).map_err(|e| e.to_string())?,
                )))
            }
            DiscoMode::EtcdKv => {
                let c: sqlraft_discovery::etcd::EtcdConfig =
                    serde_json::from_value(json).map_err(bad)?;
                let k =
                    sqlraft_discovery::etcd::Etcd::connect(c, key).map_err(|e| e.to_string())?;
                Disco::Key(Arc::new(Keeper::Etcd(Box::new(k))))
            }
            DiscoMode::ConsulKv => {
                let c: sqlraft_discovery::consul::ConsulConfig =
                    serde_json::from_value(json).map_err(bad)?;
                let k =
                    sqlraft_discovery::consul::Consul::new(c, key).map_err(|e| e.to_string())?;
                Disco::Key(Arc::new(Keeper::Consul(Box::new(k))))
            }
        };
        Ok(Some(disco))
    }

    pub fn status(&self) -> DiscoStatus {
        match self {
            Disco::Finder(f) => f.status(),
            Disco::Key(k) => k.status(),
        }
    }
}

fn record_of(me: &NodeInfo) -> LeaderRecord {
    LeaderRecord {
        id: me.id.clone(),
        api_addr: me.api_url(),
        addr: me.raft_addr.clone(),
    }
}

/// Settings of the key rendezvous.
#[derive(Debug, Clone)]
pub struct KeyTiming {
    /// Pause between rounds (rqlite: about 3 s, jittered).
    pub interval: Duration,
    /// How long the address a key names may stay unreachable before the key counts as stale.
    pub stale_after: Duration,
    /// How often the leader rewrites the key even without a leadership change.
    pub report_every: Duration,
}

/// Key backends: join the recorded leader, or win the key and bootstrap. Returns once this
/// node is part of a cluster (or `stop` fires).
pub async fn key_rendezvous(
    cluster: Arc<Cluster>,
    keeper: Arc<Keeper>,
    voter: bool,
    timing: KeyTiming,
    stop: CancellationToken,
) {
    let store = cluster.store().clone();
    let me = store.me().clone();
    let record = record_of(&me);
    let mut unreachable_since: Option<(String, Instant)> = None;
    loop {
        // Done once this node is a member as it asked to be (a joiner that was added as a
        // learner but not yet promoted tries again).
        if store.is_initialized().await && (!voter || store.is_voter()) {
            return;
        }
        match keeper.get().await {
            Ok(Some(v)) if v.record.addr == me.raft_addr => {
                // A key naming this node, which has no state: left over from an earlier life.
                tracing::warn!(key = ?v.record, "discovery key names this node, which has no state: taking it over");
                if voter && take_over(&keeper, &store, &v, &record).await {
                    return;
                }
            }
            Ok(Some(v)) => match join_once(&cluster, &v.record.addr, &me, voter).await {
                JoinOutcome::Joined => {
                    tracing::info!(leader = %v.record.addr, "joined the cluster named by the discovery key");
                    return;
                }
                JoinOutcome::Failed(why) => {
                    let alive = cluster
                        .meta(&v.record.addr, Duration::from_secs(2))
                        .await
                        .is_ok();
                    let since = match &unreachable_since {
                        Some((addr, t)) if *addr == v.record.addr && !alive => Some(*t),
                        _ if alive => None,
                        _ => Some(Instant::now()),
                    };
                    unreachable_since = since.map(|t| (v.record.addr.clone(), t));
                    let stale = since.is_some_and(|t| t.elapsed() >= timing.stale_after);
                    tracing::warn!(leader = %v.record.addr, reason = %why, stale, next_try_in = ?timing.interval,
                        "could not join the cluster named by the discovery key");
                    if stale && voter && take_over(&keeper, &store, &v, &record).await {
                        return;
                    }
                }
            },
            Ok(None) if voter => match keeper.create(&record).await {
                Ok(true) => {
                    tracing::info!("won the discovery key: bootstrapping");
                    if let Err(e) = store.bootstrap_alone().await {
                        tracing::error!(error = %e, "bootstrap after winning the key failed");
                    }
                    return;
                }
                Ok(false) => tracing::info!("another node won the discovery key"),
                Err(e) => tracing::warn!(error = %e, "could not create the discovery key"),
            },
            Ok(None) => {
                tracing::info!(next_try_in = ?timing.interval, "non-voter waiting for a discovery key")
            }
            Err(e) => {
                tracing::warn!(error = %e, next_try_in = ?timing.interval, "discovery key lookup failed")
            }
        }
        let pause = timing.interval
            + Duration::from_millis(fastrand::u64(0..=timing.interval.as_millis() as u64 / 4));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Replaces a stale record with this node's (compare-and-set on the version read) and
/// bootstraps. False if another node took it first.
async fn take_over(
    keeper: &Keeper,
    store: &crate::store::Store,
    stale: &Versioned,
    record: &LeaderRecord,
) -> bool {
    match keeper.replace(stale.version, record).await {
        Ok(true) => {
            tracing::warn!(old = ?stale.record, "took over a stale discovery key: bootstrapping a new cluster");
            if let Err(e) = store.bootstrap_alone().await {
                tracing::error!(error = %e, "bootstrap after taking over the key failed");
            }
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not take over the discovery key");
            false
        }
    }
}

/// Key backends: the leader writes its record whenever it becomes leader and every
/// `report_every`, so that nodes started later find the current leader.
pub async fn key_report(
    cluster: Arc<Cluster>,
    keeper: Arc<Keeper>,
    timing: KeyTiming,
    stop: CancellationToken,
) {
    let store = cluster.store().clone();
    let record = record_of(store.me());
    let mut metrics = store.raft().metrics();
    let mut was_leader = false;
    let mut last_report: Option<Instant> = None;
    loop {
        let leader = store.is_leader();
        let due = last_report.is_none_or(|t| t.elapsed() >= timing.report_every);
        if leader && (!was_leader || due) {
            match keeper.set(&record).await {
                Ok(()) => last_report = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "could not write the discovery key"),
            }
        }
        was_leader = leader;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(timing.report_every.min(Duration::from_secs(1))) => {}
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// Lookup backends: the candidates of one round, as Raft addresses (errors logged, empty).
pub async fn candidates(finder: &Finder) -> Vec<String> {
    match finder.lookup().await {
        Ok(peers) => {
            tracing::debug!(found = ?peers, "discovery lookup");
            peers.into_iter().map(|p| p.raft_addr).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "discovery lookup failed");
            Vec::new()
        }
    }
}
