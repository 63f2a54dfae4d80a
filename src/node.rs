//! The composition root: builds a node from a validated [`Config`] in order and shuts it down
//! in reverse.
//!
//! Owns: the listeners, the cancellation token and the set of background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{is_unspecified, split_host_port, Config};
use crate::http::queue::{QueueConfig, WriteQueue};
use crate::http::{self, HttpState};
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
}

/// A running node.
pub struct Node {
    store: Arc<Store>,
    http_addr: SocketAddr,
    raft_addr: SocketAddr,
    me: NodeInfo,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
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
    adv: Option<&str>,
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

impl Node {
    /// Binds the configured addresses and starts the node.
    pub async fn start(cfg: Config) -> Result<Self, NodeError> {
        let http = bind(&cfg.http_addr).await?;
        let raft = bind(&cfg.raft_addr).await?;
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
        let api_adv = advertised(
            &cfg.http_addr,
            cfg.http_adv_addr.as_deref(),
            http_addr,
            "http-addr",
        )?;
        let raft_adv = advertised(
            &cfg.raft_addr,
            cfg.raft_adv_addr.as_deref(),
            raft_addr,
            "raft-addr",
        )?;
        let me = NodeInfo {
            id: cfg.node_id.clone().unwrap_or_else(|| raft_adv.clone()),
            raft_addr: raft_adv,
            api_addr: api_adv,
            api_https: false,
        };
        let store = Store::open(StoreConfig {
            data_dir: cfg.data_dir.clone(),
            me: me.clone(),
            fk: cfg.fk,
            on_disk: cfg.on_disk,
            election_timeout: cfg.raft_election_timeout,
            heartbeat_timeout: cfg.raft_heartbeat_timeout,
            apply_timeout: cfg.raft_apply_timeout,
            snapshot_threshold: cfg.raft_snap,
            snapshot_interval: cfg.raft_snap_int,
            trailing_logs: cfg.trailing_logs(),
        })
        .await?;
        if store.bootstrap_if_new().await? {
            tracing::info!(node_id = %me.id, "bootstrapped a new single-voter cluster");
        }

        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            store.clone().run_snapshot_loop(cancel.child_token()),
        ));
        let (queue, queue_task) = WriteQueue::start(
            store.clone(),
            QueueConfig {
                capacity: cfg.write_queue_capacity,
                batch_size: cfg.write_queue_batch_size,
                timeout: cfg.write_queue_timeout,
                transaction: cfg.write_queue_tx,
            },
            cancel.child_token(),
        );
        tasks.push(queue_task);
        let state = Arc::new(HttpState {
            store: store.clone(),
            queue,
            max_body: cfg.http_max_body,
            started: SystemTime::now(),
            bind_addr: http_addr.to_string(),
            counters: Default::default(),
        });
        let app = http::router(state);
        let stop = cancel.child_token();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(http_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
        // The internode listener is bound now so its address is fixed and reported; it answers
        // nothing until clustering arrives.
        let stop = cancel.child_token();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    conn = raft_listener.accept() => drop(conn),
                }
            }
        }));
        Ok(Self {
            store,
            http_addr,
            raft_addr,
            me,
            cancel,
            tasks,
        })
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

    /// Stops serving, lets in-flight work finish, then stops Raft.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.shutdown().await;
    }
}
