//! Stores without nodes: [`TestStore`] is one [`Store`] in a temp dir with what it needs to
//! reach its peers and nothing more: the internode transport and Raft network, the real
//! internode service on 127.0.0.1 port 0 (Raft's RPCs and pre-votes arrive there), the
//! pre-vote election loop (openraft's own election timer is off), the lease and snapshot
//! loops. Those take a `Cluster` handle, but nothing here forwards, joins or serves HTTP.
//! [`StoreCluster`] is several stores formed by bootstrapping together.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;

use sqlraft::cluster::bootstrap::Bootstrapper;
use sqlraft::cluster::service::{self, ServiceState};
use sqlraft::cluster::Cluster;
use sqlraft::command::{Outcome, Request, Statement, Value};
use sqlraft::raft::network::{Isolation, Network};
use sqlraft::raft::transport::Transport;
use sqlraft::raft::NodeInfo;
use sqlraft::serve::{serve, ServeOptions};
use sqlraft::store::{ReadLevel, ReadOpts, Reply, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::harness::{init_logging, wait_for, wait_until, CLUSTER_WAIT};

/// The settings of a store: fast Raft timers (as the node tests use), snapshots only when
/// a test asks for one.
pub fn store_config(dir: &std::path::Path, me: NodeInfo) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        me,
        fk: false,
        on_disk: false,
        election_timeout: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_millis(300),
        apply_timeout: Duration::from_secs(10),
        snapshot_threshold: 1 << 20,
        snapshot_interval: Duration::from_secs(1),
        trailing_logs: 10_240,
        remove_shutdown: false,
        db_max_steps: 0,
        db_timeout: None,
        db_max_ro_conns: 4,
        leader_lease_timeout: Duration::ZERO,
        wal_checkpoint_bytes: 4 << 20,
        extensions: Vec::new(),
        tx_idle_timeout: std::time::Duration::from_secs(30),
    }
}

/// One running store, reachable by its peers at `info.raft_addr`. Dropping it cuts it off and
/// stops its loops; the test's runtime stops Raft.
pub struct TestStore {
    pub store: Arc<Store>,
    pub info: NodeInfo,
    isolation: Isolation,
    stop: CancellationToken,
    _tmp: tempfile::TempDir,
}

impl TestStore {
    /// Opens store `id` (not bootstrapped) and serves its internode port.
    pub async fn open(id: &str) -> Self {
        init_logging();
        let tmp = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let info = NodeInfo {
            id: id.to_string(),
            raft_addr: listener.local_addr().expect("addr").to_string(),
            // No HTTP API at this level.
            api_addr: String::new(),
            api_https: false,
        };
        let transport = Transport::new(Duration::from_secs(5), None).expect("transport");
        let isolation = Isolation::default();
        let network = Network::new(transport.clone(), isolation.clone());
        let store = Store::open(
            store_config(tmp.path(), info.clone()),
            network,
            Arc::default(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("open store {id}: {e}"));
        let cluster = Arc::new(Cluster::new(store.clone(), transport));
        let state = ServiceState {
            cluster: cluster.clone(),
            isolation: isolation.clone(),
            bootstrap: Arc::new(Bootstrapper::new(cluster.clone(), 0)),
            auth: None,
            cdc: None,
        };
        let stop = CancellationToken::new();
        let opts = ServeOptions {
            name: "internode",
            tls: None,
            max_connections: 1000,
            read_timeout: Duration::from_secs(30),
            body_deadline: false,
            counters: Arc::default(),
        };
        let router = service::router(Arc::new(state), 64 << 20);
        tokio::spawn(serve(listener, router, opts, stop.child_token()));
        tokio::spawn(sqlraft::cluster::prevote::run(cluster, stop.child_token()));
        tokio::spawn(store.clone().run_lease_loop(stop.child_token()));
        tokio::spawn(store.clone().run_snapshot_loop(stop.child_token()));
        Self {
            store,
            info,
            isolation,
            stop,
            _tmp: tmp,
        }
    }

    /// Runs `sql` (one statement per entry of the slice, no parameters) through the log.
    pub async fn execute(&self, sql: &[&str]) -> Result<Reply, sqlraft::store::StoreError> {
        self.store.execute(request(sql)).await
    }

    /// The rows of a local read (`level=none`: whatever this store has applied).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let opts = ReadOpts {
            level: ReadLevel::None,
            ..ReadOpts::default()
        };
        let reply = self
            .store
            .query(request(&[sql]), &opts)
            .await
            .unwrap_or_else(|e| panic!("store {}: {sql}: {e}", self.info.id));
        match &reply.results[0].outcome {
            Outcome::Rows(r) => r.values.clone(),
            other => panic!("store {}: {sql}: {other:?}", self.info.id),
        }
    }

    /// The index of the last entry this store applied.
    pub fn applied_index(&self) -> u64 {
        let m = self.store.raft().metrics().borrow_watched().clone();
        m.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Waits until this store has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64) {
        let what = format!("store {} to apply entry {index}", self.info.id);
        wait_until(CLUSTER_WAIT, &what, || {
            let done = self.applied_index() >= index;
            async move { done }
        })
        .await;
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.isolation.set(true);
        self.stop.cancel();
    }
}

/// A request of plain statements.
pub fn request(sql: &[&str]) -> Request {
    Request {
        statements: sql.iter().map(|s| Statement::new(*s)).collect(),
        transaction: false,
        db_timeout_ms: 0,
    }
}

/// Several stores that form one cluster. Store `i` has id `i + 1`.
pub struct StoreCluster {
    pub stores: Vec<TestStore>,
}

impl StoreCluster {
    /// Opens `n` stores, bootstraps every one of them with all `n` as voters (identical
    /// input, as `-bootstrap-expect` does) and waits until they agree on a leader.
    pub async fn start(n: usize) -> Self {
        let opens = (1..=n).map(|i| async move { TestStore::open(&i.to_string()).await });
        let stores = futures_util::future::join_all(opens).await;
        let members: Vec<NodeInfo> = stores.iter().map(|s| s.info.clone()).collect();
        for s in &stores {
            s.store
                .bootstrap(members.clone())
                .await
                .unwrap_or_else(|e| panic!("bootstrap store {}: {e}", s.info.id));
        }
        let c = Self { stores };
        c.wait_for_leader().await;
        c
    }

    /// The index of the store every store names as leader, and which itself leads.
    pub async fn wait_for_leader(&self) -> usize {
        wait_for(CLUSTER_WAIT, "the stores to agree on a leader", || async {
            let mut ids = self.stores.iter().map(|s| s.store.leader().map(|l| l.id));
            let first = ids.next()??;
            if !ids.all(|id| id.as_deref() == Some(first.as_str())) {
                return None;
            }
            let l = self.stores.iter().position(|s| s.info.id == first)?;
            self.stores[l].store.is_leader().then_some(l)
        })
        .await
    }

    /// Stores other than `leader`.
    pub fn others(&self, leader: usize) -> Vec<usize> {
        (0..self.stores.len()).filter(|&i| i != leader).collect()
    }
}
