//! The composition root: builds a node from a validated [`Config`] in order and shuts it down
//! in reverse.
//!
//! Owns: the listeners, the cancellation token and the set of background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthStore;
use crate::cluster::bootstrap::Bootstrapper;
use crate::cluster::discover::Disco;
use crate::cluster::formation::{self, Formation, Situation};
use crate::cluster::service::{self, ServiceState};
use crate::cluster::{Cluster, ClusterError, Forwarding};
use crate::config::{is_unspecified, split_host_port, Config};
use crate::http::queue::WriteQueue;
use crate::http::scrape::NodeSampler;
use crate::http::{self, HttpState};
use crate::metrics::exposition::Sampler;
use crate::metrics::Metrics;
use crate::raft::network::{Isolation, Network};
use crate::raft::transport::Transport;
use crate::raft::NodeInfo;
use crate::store::{Store, StoreConfig, StoreError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Join(String),
}

/// A running node.
pub struct Node {
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    isolation: Isolation,
    shutdown_stepdown: bool,
    cluster_remove_shutdown: bool,
    http_addr: SocketAddr,
    raft_addr: SocketAddr,
    me: NodeInfo,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Whether this node is part of a cluster yet (see [`Node::formed`]).
    formation: watch::Receiver<Formation>,
}

async fn bind(addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The address others reach a listener at: the advertised one if set, else the configured
/// host with the port actually bound (so port 0 works).
fn advertised(
    configured: &str,
    adv: &Option<String>,
    bound: SocketAddr,
    flag: &str,
) -> Result<String, NodeError> {
    if let Some(a) = adv {
        return Ok(a.to_string());
    }
    let host = split_host_port(configured).map(|(h, _)| h).unwrap_or("");
    if is_unspecified(host) {
        return Err(NodeError::Config(format!(
            "-{flag} {configured} is not an address other nodes and clients can reach: set -{flag}-adv-addr"
        )));
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("{host}:{}", bound.port()))
}

/// How a listener serves: both share the connection and read limits (`-http-max-connections`,
/// `-http-read-timeout`).
fn serve_options(
    name: &'static str,
    tls: Option<Arc<rustls::ServerConfig>>,
    counters: Arc<crate::metrics::ListenerCounters>,
    http: &crate::config::Http,
    body_deadline: bool,
) -> crate::serve::ServeOptions {
    crate::serve::ServeOptions {
        name,
        tls,
        max_connections: http.max_connections,
        read_timeout: http.read_timeout,
        body_deadline,
        counters,
    }
}

/// `-auth` (the users and permissions, read once at start) and `-join-as` (the credentials
/// this node presents for itself, from the same file).
fn load_auth(
    cfg: &Config,
) -> Result<(Option<Arc<AuthStore>>, Option<crate::auth::Credentials>), NodeError> {
    let Some(path) = &cfg.auth else {
        if cfg.cluster.join_as.is_some() {
            return Err(NodeError::Config(
                "-join-as needs -auth: the user's password is read from the auth file".into(),
            ));
        }
        return Ok((None, None));
    };
    let auth = AuthStore::load(path).map_err(|e| NodeError::Config(e.to_string()))?;
    let node_creds = match &cfg.cluster.join_as {
        None => None,
        Some(user) => Some(auth.creds_for(user).ok_or_else(|| {
            NodeError::Config(format!(
                "-join-as user {user:?} is not in the auth file {}",
                path.display()
            ))
        })?),
    };
    Ok((Some(Arc::new(auth)), node_creds))
}

impl Node {
    /// Binds the configured addresses and starts the node.
    pub async fn start(cfg: Config) -> Result<Self, NodeError> {
        let http = bind(&cfg.http.addr).await?;
        let raft = bind(&cfg.raft.addr).await?;
        Self::start_with(cfg, http, raft).await
    }

    /// Starts the node on listeners that are already bound.
    pub async fn start_with(
        cfg: Config,
        http_listener: TcpListener,
        raft_listener: TcpListener,
    ) -> Result<Self, NodeError> {
        let io = |e: std::io::Error| NodeError::Config(e.to_string());
        let http_addr = http_listener.local_addr().map_err(io)?;
        let raft_addr = raft_listener.local_addr().map_err(io)?;
        let api_adv = advertised(&cfg.http.addr, &cfg.http.adv_addr, http_addr, "http-addr")?;
        let raft_adv = advertised(&cfg.raft.addr, &cfg.raft.adv_addr, raft_addr, "raft-addr")?;
        let tls_err = |e: crate::tls::TlsError| NodeError::Config(e.to_string());
        let api_tls = crate::tls::api_server_config(&cfg.tls).map_err(tls_err)?;
        let node_tls = crate::tls::node_server_config(&cfg.tls).map_err(tls_err)?;
        let node_client_tls = crate::tls::node_client_config(&cfg.tls).map_err(tls_err)?;
        let me = NodeInfo {
            id: cfg.node_id.clone().unwrap_or_else(|| raft_adv.clone()),
            raft_addr: raft_adv,
            api_addr: api_adv,
            api_https: api_tls.is_some(),
        };
        let transport = Transport::new(cfg.cluster.connect_timeout, node_client_tls)
            .map_err(NodeError::Config)?;
        let isolation = Isolation::default();
        // One set of counters for this node; each component counts into its part.
        let metrics = Arc::new(Metrics::default());
        let network = Network::new(transport.clone(), isolation.clone())
            .counting_into(metrics.clone())
            .replication_timeout(cfg.raft.election_timeout);
        // The operator's SQLite extensions, gathered where every connection loads them from.
        let extensions =
            crate::db::extensions::stage(&cfg.db.extensions_path, &cfg.data_dir.join("extensions"))
                .map_err(|e| NodeError::Config(e.to_string()))?;
        if !extensions.is_empty() {
            tracing::info!(
                extensions = %crate::db::extensions::names(&extensions).join(", "),
                "SQLite extensions loaded on every connection"
            );
        }
        let store_cfg = StoreConfig {
            data_dir: cfg.data_dir.clone(),
            me: me.clone(),
            fk: cfg.db.fk,
            on_disk: cfg.db.on_disk,
            election_timeout: cfg.raft.election_timeout,
            heartbeat_timeout: cfg.raft.heartbeat_timeout,
            apply_timeout: cfg.raft.apply_timeout,
            snapshot_threshold: cfg.raft.snap,
            snapshot_interval: cfg.raft.snap_int,
            trailing_logs: cfg.raft.trailing_logs(),
            remove_shutdown: cfg.raft.remove_shutdown,
            db_max_steps: cfg.db.max_steps,
            db_timeout: Some(cfg.db.timeout).filter(|d| !d.is_zero()),
            db_max_ro_conns: cfg.db.max_ro_conns,
            leader_lease_timeout: cfg.raft.leader_lease_timeout,
            // rqlite's 0 turns its WAL-size snapshots off; here nothing else would checkpoint
            // the WAL, so 0 keeps the default bound instead of letting it grow forever.
            wal_checkpoint_bytes: match cfg.raft.snap_wal_size {
                0 => crate::db::engine::WAL_CHECKPOINT_BYTES,
                n => n,
            },
            extensions,
            tx_idle_timeout: cfg.db.tx_idle_timeout,
        };
        let (auth, node_creds) = load_auth(&cfg)?;
        let allow_origin = match cfg.http.allow_origin.as_deref().map(HeaderValue::from_str) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Err(NodeError::Config(
                    "-http-allow-origin is not a valid header value".into(),
                ))
            }
        };
        // -cdc-config: the queue opens, and the endpoint's TLS files are read, before anything
        // is applied, so a bad setting stops the start.
        let mut cdc_sink = None;
        let cdc = match cfg.cdc.clone() {
            None => None,
            Some(c) => {
                cdc_sink = Some(
                    crate::cdc::deliver::Sink::build(&c)
                        .map_err(|e| NodeError::Config(format!("-cdc-config: {e}")))?,
                );
                tracing::info!(
                    endpoint = ?c.endpoint,
                    table_filter = c.table_filter.as_ref().map_or("(all tables)", |r| r.as_str()),
                    row_ids_only = c.row_ids_only,
                    max_batch_size = c.max_batch_size,
                    retain_max_age = ?c.retain.max_age,
                    "change data capture on: every voter captures, the leader sends"
                );
                Some(
                    crate::cdc::Cdc::open(&cfg.data_dir, c, me.id.clone(), metrics.clone())
                        .map_err(|e| NodeError::Config(format!("-cdc-config: {e}")))?,
                )
            }
        };
        let changes = cdc.as_ref().map(|c| {
            let sink: Arc<dyn crate::store::ChangeSink> = c.clone();
            (c.rules(), sink)
        });
        let store = Store::open(store_cfg, network, metrics.clone(), changes).await?;
        let cluster = Arc::new(Cluster::new(store.clone(), transport).with_node_creds(node_creds));
        let bootstrap = Arc::new(Bootstrapper::new(
            cluster.clone(),
            cfg.cluster.bootstrap_expect,
        ));

        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        // Peers must be able to reach this node before it joins or bootstraps.
        let internode = service::router(
            Arc::new(ServiceState {
                cluster: cluster.clone(),
                isolation: isolation.clone(),
                bootstrap: bootstrap.clone(),
                auth: auth.clone(),
                cdc: cdc.clone(),
            }),
            cfg.http.max_body,
        );
        // No deadline on bodies: snapshot transfers may legitimately take long.
        let counters = metrics.internode.clone();
        let opts = serve_options("internode", node_tls, counters, &cfg.http, false);
        let serving = crate::serve::serve(raft_listener, internode, opts, cancel.child_token());
        tasks.push(tokio::spawn(serving));

        let disco = match Disco::build(cfg.discovery.as_ref(), &cfg.disco_key, raft_addr.port()) {
            Ok(d) => d,
            Err(e) => return Err(abandon_start(&cancel, tasks, &store, e).await),
        };
        let disco_for_formation = disco.clone();
        // Decide now: a node that must not start (a lone leader asked to join another
        // cluster) stops here, before serving anything.
        let has_state = store.is_initialized().await;
        let members = store.members();
        let situation = Situation {
            has_state,
            lone_member: has_state && members.len() == 1 && members[0].0.id == me.id,
            join: !cfg.cluster.join.is_empty(),
            bootstrap_expect: cfg.cluster.bootstrap_expect,
            disco: cfg.discovery.as_ref().map(|d| d.mode),
            voter: !cfg.raft.non_voter,
        };
        let plan = match formation::plan(&situation) {
            Ok(p) => p,
            Err(e) => return Err(abandon_start(&cancel, tasks, &store, e).await),
        };

        // -auto-restore: only a node that starts with no state restores; the backup is read
        // and checked now, so a bad file stops the start instead of surfacing later.
        match (&cfg.auto_restore, has_state) {
            (Some(r), false) => match crate::auto::prepare_restore(&store, r).await {
                Ok(Some(pending)) => tasks.push(tokio::spawn(crate::auto::run_restore(
                    store.clone(),
                    pending,
                    cancel.child_token(),
                ))),
                Ok(None) => {}
                Err(e) => return Err(abandon_start(&cancel, tasks, &store, e).await),
            },
            (Some(_), true) => {
                store.metrics().auto.restores_skipped.inc();
                tracing::info!("auto-restore: this node already has data; not restoring");
            }
            (None, _) => {}
        }
        if let (Some(c), Some(sink)) = (&cdc, cdc_sink) {
            tasks.push(tokio::spawn(crate::cdc::deliver::run(
                c.clone(),
                cluster.clone(),
                sink,
                cancel.child_token(),
            )));
        }
        if let Some(b) = &cfg.auto_backup {
            tasks.push(tokio::spawn(crate::auto::run_backups(
                store.clone(),
                b.clone(),
                cancel.child_token(),
            )));
        }
        tasks.push(tokio::spawn(
            store.clone().run_snapshot_loop(cancel.child_token()),
        ));
        tasks.push(tokio::spawn(
            store.clone().run_lease_loop(cancel.child_token()),
        ));
        tasks.push(tokio::spawn(crate::cluster::prevote::run(
            cluster.clone(),
            cancel.child_token(),
        )));
        tasks.push(tokio::spawn(crate::cluster::announce::run(
            cluster.clone(),
            cancel.child_token(),
        )));
        tasks.push(tokio::spawn(crate::cluster::full_disk::run(
            cluster.clone(),
            cancel.child_token(),
        )));
        if !(cfg.raft.reap_node_timeout.is_zero() && cfg.raft.reap_read_only_node_timeout.is_zero())
        {
            tasks.push(tokio::spawn(crate::cluster::reap::run(
                cluster.clone(),
                cfg.raft.reap_node_timeout,
                cfg.raft.reap_read_only_node_timeout,
                cancel.child_token(),
            )));
        }
        if cfg.raft.remove_shutdown {
            tasks.push(tokio::spawn(
                store.clone().run_remove_watch(cancel.child_token()),
            ));
        }
        let (queue, queue_task) = WriteQueue::start(
            cluster.clone(),
            cfg.queue.clone(),
            metrics.queue.clone(),
            cancel.child_token(),
        );
        tasks.push(queue_task);
        let sampler: Arc<dyn Sampler> = Arc::new(NodeSampler {
            store: store.clone(),
            queue: queue.depth(),
        });
        let registry =
            crate::metrics::exposition::registry(metrics.clone(), Box::new(sampler.clone()));
        let state = Arc::new(HttpState {
            store: store.clone(),
            cluster: cluster.clone(),
            queue,
            max_body: cfg.http.max_body,
            max_statements: cfg.http.max_statements,
            started: SystemTime::now(),
            bind_addr: http_addr.to_string(),
            metrics: metrics.clone(),
            registry,
            sampler,
            disco: disco.clone(),
            auth,
            allow_origin,
            cdc,
            reap_node_timeout: cfg.raft.reap_node_timeout,
            reap_read_only_node_timeout: cfg.raft.reap_read_only_node_timeout,
        });
        let counters = metrics.api.clone();
        let opts = serve_options("HTTP", api_tls, counters, &cfg.http, true);
        let serving = crate::serve::serve(
            http_listener,
            http::router(state),
            opts,
            cancel.child_token(),
        );
        tasks.push(tokio::spawn(serving));
        // The API serves from here on, while the node joins or waits for its peers: `/status`
        // and `/readyz` tell an operator what it is waiting for.
        let (formation_tx, formation) = watch::channel(Formation::Forming);
        let parts = formation::Parts {
            cluster: cluster.clone(),
            bootstrap: bootstrap.clone(),
            disco: disco_for_formation,
            flags: cfg.cluster.clone(),
            me: me.clone(),
            voter: !cfg.raft.non_voter,
        };
        let stop = cancel.child_token();
        tasks.push(tokio::spawn(async move {
            // Joining and waiting for -bootstrap-expect peers can take minutes: a shutdown
            // (SIGTERM while forming) drops them rather than waiting.
            let spawned = tokio::select! {
                spawned = formation::run(plan, parts, formation_tx, stop.clone()) => spawned,
                _ = stop.cancelled() => return,
            };
            for t in spawned {
                let _ = t.await;
            }
        }));
        Ok(Self {
            store,
            cluster,
            isolation,
            shutdown_stepdown: cfg.raft.shutdown_stepdown,
            cluster_remove_shutdown: cfg.raft.cluster_remove_shutdown,
            http_addr,
            raft_addr,
            me,
            cancel,
            tasks,
            formation,
        })
    }

    /// Waits until this node is part of a cluster, or gave up trying (join attempts used up,
    /// bootstrap timeout): then the reason.
    pub async fn formed(&self) -> Result<(), String> {
        let mut rx = self.formation.clone();
        let state = rx
            .wait_for(|f| *f != Formation::Forming)
            .await
            .map(|f| f.clone())
            .unwrap_or(Formation::Failed("the node is shutting down".into()));
        match state {
            Formation::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Cuts this node off from its peers (both directions) or reconnects it: a network
    /// partition for tests and drills.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolation.set(isolated);
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    pub fn info(&self) -> &NodeInfo {
        &self.me
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stops serving, lets in-flight work finish, then stops Raft. A leader first hands
    /// leadership over (`-raft-shutdown-stepdown`); a node may instead ask to be removed
    /// (`-raft-cluster-remove-shutdown`).
    pub async fn shutdown(self) {
        // A stopping node never campaigns: it would only take leadership back from the node
        // it handed it to, and then leave.
        self.store.never_campaign();
        if self.cluster_remove_shutdown {
            let route = Forwarding {
                forward: true,
                timeout: Some(std::time::Duration::from_secs(5)),
                creds: self.cluster.node_creds().cloned(),
            };
            // Retried: right after start, or during an election, no leader may be known yet.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match self.cluster.remove(self.me.id.clone(), &route).await {
                    Ok(_) => break,
                    Err(e @ (ClusterError::Unauthorized(_) | ClusterError::Refused { .. })) => {
                        tracing::warn!(error = %e, "could not remove this node from the cluster");
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(error = %e, "could not remove this node from the cluster");
                        break;
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        } else if self.shutdown_stepdown && self.store.is_leader() && self.store.members().len() > 1
        {
            // A transfer already in progress (`POST /leader`, a full disk) ends first.
            // (A transfer takes at most about ten election timeouts.)
            let within = self.store.config().election_timeout * 12;
            if let Err(e) = self.cluster.step_down(within).await {
                tracing::warn!(error = %e, "leadership transfer at shutdown failed");
            }
        }
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.shutdown().await;
    }
}

/// Undoes a start that cannot go on: stops what was started, in reverse, and says why.
async fn abandon_start(
    cancel: &CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: &Store,
    why: String,
) -> NodeError {
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    store.shutdown().await;
    NodeError::Config(why)
}
