//! How a starting node becomes part of a cluster: form one, join one, or carry on with the
//! state it has.
//!
//! Owns: the decision ([`plan`], a pure function of what the node knows at start, as
//! rqlite's `createCluster` makes it), and carrying it out ([`run`]) in the background while
//! the node already serves its API (so `/status` and `/readyz` say what it is waiting for).
//! Does not: talk to peers itself (`join.rs`, `bootstrap.rs`, `discover.rs` do).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bootstrap::Bootstrapper;
use super::discover::{self, Disco, KeyTiming};
use super::{join, Cluster};
use crate::config::{Cluster as ClusterFlags, DiscoMode};
use crate::raft::NodeInfo;

/// What a node knows about itself when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// It has Raft state (it was bootstrapped, joined, or ran before).
    pub has_state: bool,
    /// It is the only member of its own cluster (a single-node cluster).
    pub lone_member: bool,
    /// `-join` addresses were given.
    pub join: bool,
    /// `-bootstrap-expect`.
    pub bootstrap_expect: usize,
    /// `-disco-mode`.
    pub disco: Option<DiscoMode>,
    /// It votes (not `-raft-non-voter`).
    pub voter: bool,
}

/// What the node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A brand-new node with nothing to join bootstraps a single-voter cluster.
    BootstrapAlone,
    /// Join through the `-join` addresses. A restarted member rejoins too: the leader
    /// ignores an identical rejoin and replaces the entry of a node whose address or id
    /// changed.
    Join,
    /// The notify protocol (`-bootstrap-expect` with `-join`, or dns/dns-srv discovery):
    /// done once a leader is known; a node that already has state is done at once.
    Notify { from_discovery: bool },
    /// etcd-kv/consul-kv: the key rendezvous (only a node without state registers).
    Key { register: bool },
    /// Nothing to do: the stored configuration decides.
    Stored,
}

/// The decision, or why the node must not start.
pub fn plan(s: &Situation) -> Result<Plan, String> {
    match s.disco {
        Some(mode) if mode.uses_key() => {
            return Ok(Plan::Key {
                register: !s.has_state,
            })
        }
        Some(_) => {
            return Ok(Plan::Notify {
                from_discovery: true,
            })
        }
        None => {}
    }
    if s.join && s.bootstrap_expect > 0 {
        return Ok(Plan::Notify {
            from_discovery: false,
        });
    }
    if s.join {
        if s.has_state && s.lone_member {
            return Err(
                "this node is the only member of its own single-node cluster: it \
                        cannot join another one (-join). Start it with an empty data \
                        directory to join, or without -join to keep its cluster"
                    .into(),
            );
        }
        return Ok(Plan::Join);
    }
    if s.has_state {
        return Ok(Plan::Stored);
    }
    if !s.voter {
        return Err("a new non-voter must -join an existing cluster".into());
    }
    Ok(Plan::BootstrapAlone)
}

/// Where formation stands, for the node and its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formation {
    /// Joining or waiting for peers.
    Forming,
    /// Part of a cluster (or carrying on with its state).
    Done,
    /// Gave up (join attempts used up, bootstrap timeout): the node should exit.
    Failed(String),
}

/// What carrying out a plan needs.
pub struct Parts {
    pub cluster: Arc<Cluster>,
    pub bootstrap: Arc<Bootstrapper>,
    pub disco: Option<Disco>,
    pub flags: ClusterFlags,
    pub me: NodeInfo,
    pub voter: bool,
}

/// Carries out `plan`, reporting progress on `state`; returns when formation ended (the key
/// rendezvous and discovery reports go on in their own tasks until `stop`).
pub async fn run(
    plan: Plan,
    p: Parts,
    state: watch::Sender<Formation>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let result: Result<(), String> = match plan {
        Plan::Stored => Ok(()),
        Plan::BootstrapAlone => match p.cluster.store().bootstrap_alone().await {
            Ok(true) => {
                tracing::info!(node_id = %p.me.id, "bootstrapped a new single-voter cluster");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(format!("cannot bootstrap: {e}")),
        },
        Plan::Join => {
            join::join(
                &p.cluster,
                &p.flags.join,
                &p.me,
                p.voter,
                p.flags.join_attempts,
                p.flags.join_interval,
            )
            .await
        }
        Plan::Notify { from_discovery } => {
            let timeout = p.flags.bootstrap_expect_timeout;
            if from_discovery {
                match &p.disco {
                    Some(Disco::Finder(f)) => {
                        let f = f.clone();
                        p.bootstrap
                            .run(|| discover::candidates(&f), p.voter, timeout)
                            .await
                            .map_err(|e| format!("cluster formation failed: {e}"))
                    }
                    _ => Err("discovery is not set up".into()),
                }
            } else {
                let targets = p.flags.join.clone();
                p.bootstrap
                    .run(
                        || {
                            let t = targets.clone();
                            async move { t }
                        },
                        p.voter,
                        timeout,
                    )
                    .await
                    .map_err(|e| format!("cluster formation failed: {e}"))
            }
        }
        Plan::Key { register } => {
            let Some(Disco::Key(keeper)) = &p.disco else {
                let _ = state.send(Formation::Failed("discovery is not set up".into()));
                return tasks;
            };
            let timing = KeyTiming {
                interval: p.flags.join_interval,
                stale_after: p.flags.join_interval * 5,
                report_every: Duration::from_secs(10).min(p.flags.join_interval * 4),
            };
            // The leader keeps the key current whether or not this node had state.
            tasks.push(tokio::spawn(discover::key_report(
                p.cluster.clone(),
                keeper.clone(),
                timing.clone(),
                stop.child_token(),
            )));
            if register {
                tasks.push(tokio::spawn(discover::key_rendezvous(
                    p.cluster.clone(),
                    keeper.clone(),
                    p.voter,
                    timing,
                    stop.child_token(),
                )));
            }
            Ok(())
        }
    };
    let _ = state.send(match result {
        Ok(()) => Formation::Done,
        Err(e) => {
            tracing::error!(error = %e, "this node could not become part of a cluster");
            Formation::Failed(e)
        }
    });
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Situation {
        Situation {
            has_state: false,
            lone_member: false,
            join: false,
            bootstrap_expect: 0,
            disco: None,
            voter: true,
        }
    }

    /// One row per branch of rqlite's decision tree.
    #[test]
    fn the_plan_for_every_situation() {
        let rows: Vec<(&str, Situation, Result<Plan, &str>)> = vec![
            ("new, nothing given", s(), Ok(Plan::BootstrapAlone)),
            (
                "new non-voter, nothing given",
                Situation {
                    voter: false,
                    ..s()
                },
                Err("non-voter"),
            ),
            (
                "restart, nothing given",
                Situation {
                    has_state: true,
                    ..s()
                },
                Ok(Plan::Stored),
            ),
            (
                "new, -join",
                Situation { join: true, ..s() },
                Ok(Plan::Join),
            ),
            (
                "restarted member of a larger cluster, -join",
                Situation {
                    has_state: true,
                    join: true,
                    ..s()
                },
                Ok(Plan::Join),
            ),
            (
                "lone leader of its own cluster, -join",
                Situation {
                    has_state: true,
                    lone_member: true,
                    join: true,
                    ..s()
                },
                Err("single-node cluster"),
            ),
            (
                "-join with -bootstrap-expect",
                Situation {
                    join: true,
                    bootstrap_expect: 3,
                    ..s()
                },
                Ok(Plan::Notify {
                    from_discovery: false,
                }),
            ),
            (
                "restart, -join with -bootstrap-expect",
                Situation {
                    has_state: true,
                    join: true,
                    bootstrap_expect: 3,
                    ..s()
                },
                Ok(Plan::Notify {
                    from_discovery: false,
                }),
            ),
            (
                "dns discovery",
                Situation {
                    disco: Some(DiscoMode::Dns),
                    bootstrap_expect: 3,
                    ..s()
                },
                Ok(Plan::Notify {
                    from_discovery: true,
                }),
            ),
            (
                "dns-srv discovery",
                Situation {
                    disco: Some(DiscoMode::DnsSrv),
                    bootstrap_expect: 3,
                    ..s()
                },
                Ok(Plan::Notify {
                    from_discovery: true,
                }),
            ),
            (
                "etcd, new",
                Situation {
                    disco: Some(DiscoMode::EtcdKv),
                    ..s()
                },
                Ok(Plan::Key { register: true }),
            ),
            (
                "consul, restart",
                Situation {
                    disco: Some(DiscoMode::ConsulKv),
                    has_state: true,
                    ..s()
                },
                Ok(Plan::Key { register: false }),
            ),
        ];
        for (what, situation, want) in rows {
            match (plan(&situation), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{what}: {got}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
