//! In-process clusters ([`TestCluster`], its [`Member`]s): every node in its own temp dir on
//! loopback port 0, with [`cluster_config`]; listeners bound in advance ([`bind_pair`]) or again
//! on a known port after a stop ([`rebind`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlraft::config::Config;
use sqlraft::node::Node;
use tokio::net::TcpListener;

use super::node::{node_client, test_config};
use super::{init_logging, url_encode, wait_for, wait_until, Client, CLUSTER_WAIT, JSON_CT};

/// Binds `addr` (a port known from an earlier start), retrying briefly: the old socket may
/// still be closing.
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    wait_for(
        Duration::from_secs(10),
        &format!("{addr} to be free"),
        || async move { TcpListener::bind(addr).await.ok() },
    )
    .await
}

/// One member of a [`TestCluster`]: the running node (None while stopped), its client and
/// the addresses it keeps across restarts.
pub struct Member {
    /// The node id: "1" for index 0, "2" for index 1, ...
    pub id: String,
    pub node: Option<Node>,
    pub client: Client,
    pub http_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    /// The config the node was first started with; restarts reuse it.
    pub cfg: Config,
    _tmp: tempfile::TempDir,
}

impl Member {
    /// The running node (panics if it is stopped).
    pub fn node(&self) -> &Node {
        self.node
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is stopped", self.id))
    }

    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }

    /// The Raft address peers and `X-Rqlite-Served-By` use.
    pub fn raft_adv(&self) -> String {
        self.raft_addr.to_string()
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Starts the stopped node again with its first config, on its data dir and ports.
    async fn start_again(&mut self) {
        let http = rebind(self.http_addr).await;
        let raft = rebind(self.raft_addr).await;
        let node = Node::start_with(self.cfg.clone(), http, raft)
            .await
            .unwrap_or_else(|e| panic!("restart node {}: {e}", self.id));
        self.node = Some(node);
    }
}

/// Settings of cluster node `id`: [`test_config`] plus fast join retries, and no leadership
/// hand-over on shutdown, so that stopping a leader is as abrupt as a crash (see
/// [`TestCluster::kill`]).
pub fn cluster_config(dir: &Path, id: &str) -> Config {
    let mut c = test_config(dir);
    c.node_id = Some(id.to_string());
    c.cluster.join_attempts = 100;
    c.cluster.join_interval = Duration::from_millis(200);
    c.cluster.bootstrap_expect_timeout = Duration::from_secs(30);
    c.raft.shutdown_stepdown = false;
    c
}

/// An in-process cluster on loopback: every node in its own temp dir, with fast Raft timers.
///
/// Node `i` (0-based index) has id `i + 1`. Stopped nodes keep their data dir and ports, so
/// [`TestCluster::restart`] brings back the same member. Dropping the cluster cuts every node
/// off from the others; the test's runtime then stops them.
pub struct TestCluster {
    pub members: Vec<Member>,
}

impl TestCluster {
    /// Node 1 bootstraps; nodes 2..=n `-join` node 1's Raft address.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_, _| {}).await
    }

    /// Like [`TestCluster::start`]; `tweak(index, cfg)` adjusts each node's settings.
    pub async fn start_with(n: usize, tweak: impl Fn(usize, &mut Config)) -> Self {
        let mut c = Self {
            members: Vec::new(),
        };
        for i in 0..n {
            let join = c.members.first().map(|m| vec![m.raft_adv()]);
            let (http, raft) = bind_pair().await;
            let (tmp, mut cfg) = new_member_config(i);
            cfg.cluster.join = join.unwrap_or_default();
            tweak(i, &mut cfg);
            let m = launch(i, tmp, cfg, http, raft).await;
            c.members.push(m);
            c.wait_ready(i).await;
        }
        c.wait_for_leader().await;
        c
    }

    /// All `n` nodes start at once with the same `-join` list (every node's Raft address)
    /// and `bootstrap_expect = n`; they must form exactly one cluster.
    pub async fn start_bootstrap_expect(n: usize) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(bind_pair().await);
        }
        let join: Vec<String> = listeners
            .iter()
            .map(|(_, r)| r.local_addr().expect("addr").to_string())
            .collect();
        let starts = listeners.into_iter().enumerate().map(|(i, (http, raft))| {
            let (tmp, mut cfg) = new_member_config(i);
            cfg.cluster.join = join.clone();
            cfg.cluster.bootstrap_expect = n;
            launch(i, tmp, cfg, http, raft)
        });
        let members = futures_util::future::join_all(starts).await;
        let c = Self { members };
        for i in 0..n {
            c.wait_ready(i).await;
        }
        c.wait_for_leader().await;
        c
    }

    /// All nodes start at once on the given listeners (so discovery can know every address
    /// in advance); `tweak(index, cfg)` sets discovery and addresses. Waits for one leader.
    pub async fn start_concurrently(
        listeners: Vec<(TcpListener, TcpListener)>,
        tweak: impl Fn(usize, &mut Config),
    ) -> Self {
        let n = listeners.len();
        let starts = listeners.into_iter().enumerate().map(|(i, (http, raft))| {
            let (tmp, mut cfg) = new_member_config(i);
            tweak(i, &mut cfg);
            launch(i, tmp, cfg, http, raft)
        });
        let c = Self {
            members: futures_util::future::join_all(starts).await,
        };
        for i in 0..n {
            c.wait_ready(i).await;
        }
        c.wait_for_leader().await;
        c
    }

    /// Starts one more node on the given listeners with `tweak`; waits until it is ready.
    pub async fn add_on(
        &mut self,
        listeners: (TcpListener, TcpListener),
        tweak: impl FnOnce(&mut Config),
    ) -> usize {
        let i = self.len();
        let (tmp, mut cfg) = new_member_config(i);
        tweak(&mut cfg);
        let m = launch(i, tmp, cfg, listeners.0, listeners.1).await;
        self.members.push(m);
        self.wait_ready(i).await;
        i
    }

    /// Stops every node, then starts them all again at once on their data dirs and ports.
    pub async fn restart_all(&mut self) {
        for i in 0..self.len() {
            self.stop(i).await;
        }
        let restarts = self.members.iter_mut().map(Member::start_again);
        futures_util::future::join_all(restarts).await;
        for i in 0..self.len() {
            self.wait_ready(i).await;
        }
        self.wait_for_leader().await;
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn node(&self, i: usize) -> &Node {
        self.members[i].node()
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.members[i].client
    }

    /// Indexes of running nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.members[i].is_running())
            .collect()
    }

    /// Waits until node `i` answers `/readyz` with 200 (it knows a leader).
    pub async fn wait_ready(&self, i: usize) {
        let c = self.client(i).clone();
        wait_until(CLUSTER_WAIT, &format!("node {} to be ready", i + 1), || {
            let c = c.clone();
            async move { matches!(c.try_get("/readyz").await, Ok(r) if r.status == 200) }
        })
        .await;
    }

    /// The index of the node every running node agrees is the leader (and which itself
    /// leads), polled with a deadline.
    pub async fn wait_for_leader(&self) -> usize {
        self.wait_for_leader_among(&self.live()).await
    }

    /// Like [`TestCluster::wait_for_leader`], asking only the nodes in `among` (e.g. the
    /// majority side of a partition).
    pub async fn wait_for_leader_among(&self, among: &[usize]) -> usize {
        wait_for(
            CLUSTER_WAIT,
            &format!("nodes {among:?} to agree on a leader"),
            || async { self.agreed_leader(among) },
        )
        .await
    }

    /// The leader all of `among` name, if they agree and it is one of them and leads.
    pub fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let mut ids = among.iter().map(|&i| {
            self.members[i]
                .node
                .as_ref()?
                .store()
                .leader()
                .map(|l| l.id)
        });
        let first = ids.next()??;
        if !ids.all(|id| id.as_deref() == Some(first.as_str())) {
            return None;
        }
        let l = self.index_of(&first)?;
        (among.contains(&l) && self.node(l).store().is_leader()).then_some(l)
    }

    /// Alias of [`TestCluster::wait_for_leader`].
    pub async fn leader(&self) -> usize {
        self.wait_for_leader().await
    }

    /// Running nodes other than the current leader.
    pub async fn followers(&self) -> Vec<usize> {
        let l = self.wait_for_leader().await;
        self.live().into_iter().filter(|&i| i != l).collect()
    }

    /// The leader, and a running node that follows it.
    pub async fn leader_and_follower(&self) -> (usize, usize) {
        let l = self.wait_for_leader().await;
        let f = self.live().into_iter().find(|&i| i != l);
        (l, f.expect("a running follower"))
    }

    /// Node `i`'s last log index (`/status`).
    pub async fn last_log_index(&self, i: usize) -> u64 {
        let raft = self.client(i).get("/status?key=store.raft").await.json();
        raft["last_log_index"].as_u64().unwrap_or(0)
    }

    /// Waits until node `i`'s log no longer holds the entry after `index`, so a node that
    /// has only up to `index` can catch up from it by a snapshot alone. openraft 0.10 purges a
    /// leader's log after a snapshot only once no replication stream reads that part: for a
    /// stopped follower, at its next failed attempt (within its 500 ms back-off).
    pub async fn wait_log_compacted_past(&self, i: usize, index: u64) {
        wait_until(
            CLUSTER_WAIT,
            &format!("node {}'s log to start after index {}", i + 1, index + 1),
            || async move {
                let raft = self.client(i).get("/status?key=store.raft").await.json();
                let num = |k: &str| raft[k].as_u64().unwrap_or(0);
                // The first index held is last - entries + 1; it must be past index + 1.
                num("last_log_index").saturating_sub(num("log_entries")) > index
            },
        )
        .await;
    }

    /// The index of the member with node id `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// A hard stop, as close to a crash as in-process allows: the node is cut off from its
    /// peers first (nothing more reaches them, not even a leadership hand-over, which
    /// [`cluster_config`] disables), then shut down. Its data dir and ports are kept.
    /// SIGKILL itself is covered by the process-based tests ([`ProcCluster`]).
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.members[i].node.take() {
            node.set_isolated(true);
            node.shutdown().await;
        }
    }

    /// A graceful stop (no leadership hand-over, see [`cluster_config`]).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.members[i].node.take() {
            node.shutdown().await;
        }
    }

    /// Starts a stopped node again on the same data dir and the same ports. Does not wait
    /// for it to be ready (a whole cluster restarting needs the others first).
    pub async fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.node.is_none(), "node {} is running", m.id);
        m.start_again().await;
    }

    /// Cuts node `i` off from its peers, or reconnects it.
    pub fn set_isolated(&self, i: usize, isolated: bool) {
        self.node(i).set_isolated(isolated);
    }

    /// Starts one more node that `-join`s every running member; waits until it is ready and
    /// returns its index.
    pub async fn add_node(&mut self, tweak: impl FnOnce(&mut Config)) -> usize {
        let i = self.len();
        let (http, raft) = bind_pair().await;
        let (tmp, mut cfg) = new_member_config(i);
        cfg.cluster.join = self
            .live()
            .into_iter()
            .map(|j| self.members[j].raft_adv())
            .collect();
        tweak(&mut cfg);
        let m = launch(i, tmp, cfg, http, raft).await;
        self.members.push(m);
        self.wait_ready(i).await;
        i
    }

    /// Waits until every running node returns `expected` for `sql` at `level=none`: all
    /// replicas hold the same data.
    pub async fn wait_all_see(&self, sql: &str, expected: &serde_json::Value) {
        let target = format!("/db/query?level=none&q={}", url_encode(sql));
        for i in self.live() {
            let deadline = Instant::now() + CLUSTER_WAIT;
            loop {
                let (seen, answer) = match self.client(i).try_get(&target).await {
                    Ok(r) => (r.json()["results"][0]["values"].clone(), r.text()),
                    Err(e) => (serde_json::Value::Null, e),
                };
                if seen == *expected {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} still sees {seen} instead of {expected} for {sql}: {answer}",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Nodes cannot be shut down without awaiting: silence them; the runtime stops them.
        for m in &self.members {
            if let Some(n) = &m.node {
                n.set_isolated(true);
            }
        }
    }
}

pub async fn bind_pair() -> (TcpListener, TcpListener) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    (http, raft)
}

/// [`bind_pair`] for each of `n` nodes.
pub async fn bind_pairs(n: usize) -> Vec<(TcpListener, TcpListener)> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push(bind_pair().await);
    }
    pairs
}

fn new_member_config(i: usize) -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = cluster_config(tmp.path(), &(i + 1).to_string());
    (tmp, cfg)
}

async fn launch(
    i: usize,
    tmp: tempfile::TempDir,
    cfg: Config,
    http: TcpListener,
    raft: TcpListener,
) -> Member {
    init_logging();
    let http_addr = http.local_addr().expect("addr");
    let raft_addr = raft.local_addr().expect("addr");
    let node = Node::start_with(cfg.clone(), http, raft)
        .await
        .unwrap_or_else(|e| panic!("start node {}: {e}", i + 1));
    Member {
        id: (i + 1).to_string(),
        node: Some(node),
        client: node_client(&cfg, http_addr),
        http_addr,
        raft_addr,
        cfg,
        _tmp: tmp,
    }
}

/// Waits until node `i` has the membership `want` (id, voter) in its Raft configuration.
pub async fn wait_members(c: &TestCluster, i: usize, want: &[(&str, bool)]) {
    let want: Vec<(String, bool)> = want.iter().map(|(id, v)| (id.to_string(), *v)).collect();
    let store = c.node(i).store().clone();
    wait_until(
        CLUSTER_WAIT,
        &format!("node {} to have members {want:?}", i + 1),
        || {
            let got: Vec<(String, bool)> = store
                .members()
                .into_iter()
                .map(|(n, v)| (n.id, v))
                .collect();
            let ok = got == want;
            async move { ok }
        },
    )
    .await;
}

/// `/nodes` (legacy object form) on node `asked` lists exactly the voters `ids`, all
/// reachable, with `leader` as the only leader; `ver=2` lists the same, sorted by id.
pub async fn assert_nodes_lists_voters(c: &TestCluster, asked: usize, ids: &[&str], leader: usize) {
    let r = c.client(asked).get("/nodes").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some(JSON_CT));
    let j = r.json();
    let keys: Vec<&str> = j
        .as_object()
        .expect("object keyed by id")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ids, "{j}");
    for id in ids {
        let m = &c.members[c.index_of(id).unwrap()];
        let n = &j[*id];
        assert_eq!(n["id"], *id, "{j}");
        assert_eq!(n["api_addr"], m.api_url(), "{j}");
        assert_eq!(n["addr"], m.raft_adv(), "{j}");
        assert_eq!(n["version"], sqlraft::http::VERSION, "{j}");
        assert_eq!(n["voter"], true, "{j}");
        assert_eq!(n["reachable"], true, "{j}");
        assert_eq!(n["leader"], m.id == c.members[leader].id, "{j}");
        assert!(n.get("error").is_none(), "{j}");
    }
    let v2 = c.client(asked).get("/nodes?ver=2").await.json();
    let v2_ids: Vec<&str> = v2["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(v2_ids, ids, "{v2}");
}
