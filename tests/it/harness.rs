//! Test harness: real nodes on 127.0.0.1 port 0 in temp dirs, an HTTP client, polling waits.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlraft::config::Config;
use sqlraft::node::Node;
use tokio::net::TcpListener;

/// Polls `f` until it returns true or `within` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// An HTTP client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, Duration::from_secs(60))
    }

    /// A client whose requests give up after `timeout` (for nodes that may die mid-request).
    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .expect("client");
        Self {
            base: base.into(),
            http,
        }
    }

    /// A client using a prepared reqwest client (e.g. one that trusts a test CA).
    pub fn from_reqwest(base: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.into(),
            http,
        }
    }

    /// Sends a request; `target` is the path plus query, sent as given.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.try_send(method, target, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"))
    }

    /// Like [`Client::send`], but a transport failure (refused, reset, timed out) is an `Err`
    /// instead of a panic: for nodes that are stopped or killed during a test.
    pub async fn try_send(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, target));
        if let Some(ct) = content_type {
            rb = rb.header("Content-Type", ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map_err(|e| e.to_string())?.to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn try_get(&self, target: &str) -> Result<Resp, String> {
        self.try_send("GET", target, None, None).await
    }

    pub async fn try_post_json(&self, target: &str, body: &str) -> Result<Resp, String> {
        self.try_send(
            "POST",
            target,
            Some("application/json"),
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn get(&self, target: &str) -> Resp {
        self.send("GET", target, None, None).await
    }

    pub async fn post_json(&self, target: &str, body: &str) -> Resp {
        self.send(
            "POST",
            target,
            Some("application/json"),
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    /// Waits until `path` (`/nodes`, `/nodes?nonvoters`) lists `n` members.
    pub async fn wait_members(&self, path: &str, n: usize, what: &str) {
        let c = self.clone();
        wait_until(CLUSTER_WAIT, what, || {
            let c = c.clone();
            async move {
                c.get(path)
                    .await
                    .json()
                    .as_object()
                    .is_some_and(|o| o.len() == n)
            }
        })
        .await;
    }

    /// Runs statements through `/db/execute` and asserts no statement failed.
    pub async fn execute_ok(&self, body: &str) -> serde_json::Value {
        let r = self.post_json("/db/execute", body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert!(j.get("error").is_none(), "{j}");
        for res in j["results"].as_array().expect("results") {
            assert!(res.get("error").is_none(), "{j}");
        }
        j
    }

    /// `GET /db/query` at `level`; returns the values of the first result.
    pub async fn query_values(&self, sql: &str, level: &str) -> serde_json::Value {
        let q = url_encode(sql);
        let r = self.get(&format!("/db/query?level={level}&q={q}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert!(j["results"][0].get("error").is_none(), "{j}");
        j["results"][0]["values"].clone()
    }
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The harness's client for a node started with `cfg`: plain HTTP, or HTTPS when the node
/// serves it (accepting the node's certificate unchecked, and presenting the node's own
/// certificate when the node requires client certificates; tests of TLS itself build strict
/// clients).
pub fn node_client(cfg: &Config, addr: SocketAddr) -> Client {
    let (Some(cert), Some(key)) = (&cfg.tls.http_cert, &cfg.tls.http_key) else {
        return Client::new(format!("http://{addr}"));
    };
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(true);
    if cfg.tls.http_verify_client {
        let mut pem = std::fs::read(key).expect("read key");
        pem.extend(std::fs::read(cert).expect("read cert"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    Client::from_reqwest(format!("https://{addr}"), b.build().expect("client"))
}

/// A node running in this test process.
pub struct TestNode {
    pub node: Option<Node>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: Client,
}

/// Settings tests start from: loopback, port 0, fast Raft timers.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_dir(dir);
    c.node_id = Some("1".into());
    c.raft.election_timeout = Duration::from_millis(300);
    c.raft.heartbeat_timeout = Duration::from_millis(300);
    c
}

impl TestNode {
    /// Starts a node in a fresh temp dir and waits until it leads its own cluster.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut n = Self::start_in(&dir, tweak).await;
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node on an existing data dir (a restart).
    pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = test_config(dir);
        tweak(&mut cfg);
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let cfg_used = cfg.clone();
        let node = Node::start_with(cfg, http, raft).await.expect("node start");
        let client = node_client(&cfg_used, node.http_addr());
        let n = Self {
            node: Some(node),
            dir: dir.to_path_buf(),
            _tmp: None,
            client,
        };
        n.wait_ready().await;
        n
    }

    pub async fn wait_ready(&self) {
        let c = self.client.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = match c.try_get("/readyz").await {
                Ok(r) if r.status == 200 => return,
                Ok(r) => format!("{} {}", r.status, r.text()),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "node not ready after 20s; last /readyz: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the node but keeps its data dir (returned for a restart).
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
        (self.dir.clone(), self._tmp.take())
    }
}

/// A `sqlraftd` child process (for crash tests: `kill -9` needs a real process).
pub struct Proc {
    pub child: Child,
    pub client: Client,
    /// The bound HTTP and Raft addresses, from the startup line.
    pub http_addr: String,
    pub raft_addr: String,
}

impl Proc {
    /// Starts the binary as node "1" on port 0 and reads the bound addresses from its startup
    /// line.
    pub fn spawn(dir: &Path, extra: &[&str]) -> Self {
        Self::try_spawn_node(dir, "1", "127.0.0.1:0", "127.0.0.1:0", extra)
            .unwrap_or_else(|e| panic!("sqlraftd: {e}"))
    }

    /// Starts the binary as node `id` on the given addresses (port 0 for any). Returns an
    /// error if it exits before printing its startup line (e.g. the port is taken). Blocks
    /// until the line is printed, which for a `-join` node is after it joined.
    ///
    /// Set `SQLRAFT_IT_STDERR=1` to see the nodes' logs.
    pub fn try_spawn_node(
        dir: &Path,
        id: &str,
        http_addr: &str,
        raft_addr: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let bin = env!("CARGO_BIN_EXE_sqlraftd");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-node-id",
            id,
            "-http-addr",
            http_addr,
            "-raft-addr",
            raft_addr,
        ])
        .args([
            "-raft-election-timeout",
            "300ms",
            "-raft-heartbeat-timeout",
            "300ms",
        ])
        .args(extra)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("SQLRAFT_IT_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn sqlraftd");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        if !matches!(read, Ok(n) if n > 0) {
            let _ = child.kill();
            let status = child.wait();
            return Err(format!("node {id} exited before starting: {status:?}"));
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("startup line {line:?}: {e}"));
        let http_addr = v["http_addr"].as_str().expect("http_addr").to_string();
        let raft_addr = v["raft_addr"].as_str().expect("raft_addr").to_string();
        let client = Client::new(format!("http://{http_addr}"));
        Ok(Self {
            child,
            client,
            http_addr,
            raft_addr,
        })
    }

    pub async fn wait_ready(&self) {
        let c = self.client.clone();
        wait_until(Duration::from_secs(30), "sqlraftd to be ready", || {
            let c = c.clone();
            async move { matches!(c.try_get("/readyz").await, Ok(r) if r.status == 200) }
        })
        .await;
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long cluster helpers wait for a leader, a join, a catch-up.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(20);

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
        let restarts = self.members.iter_mut().map(|m| async move {
            let http = rebind(m.http_addr).await;
            let raft = rebind(m.raft_addr).await;
            let node = Node::start_with(m.cfg.clone(), http, raft)
                .await
                .unwrap_or_else(|e| panic!("restart node {}: {e}", m.id));
            m.node = Some(node);
        });
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
        let http = rebind(m.http_addr).await;
        let raft = rebind(m.raft_addr).await;
        let node = Node::start_with(m.cfg.clone(), http, raft)
            .await
            .unwrap_or_else(|e| panic!("restart node {}: {e}", m.id));
        m.node = Some(node);
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
                let seen = match self.client(i).try_get(&target).await {
                    Ok(r) => r.json()["results"][0]["values"].clone(),
                    Err(e) => serde_json::Value::String(e),
                };
                if seen == *expected {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} still sees {seen} instead of {expected} for {sql}",
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

fn new_member_config(i: usize) -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = cluster_config(tmp.path(), &(i + 1).to_string());
    (tmp, cfg)
}

/// `SQLRAFT_IT_LOG=<filter>` prints the in-process nodes' logs (all nodes share one output).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SQLRAFT_IT_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
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

/// One `sqlraftd` process of a [`ProcCluster`].
pub struct ProcMember {
    pub id: String,
    pub proc: Option<Proc>,
    pub client: Client,
    pub http_addr: String,
    pub raft_addr: String,
    args: Vec<String>,
    tmp: tempfile::TempDir,
}

/// A cluster of real `sqlraftd` processes, for SIGKILL. Node 1 bootstraps; the others
/// `-join` node 1's Raft address. Processes are killed when the cluster is dropped.
pub struct ProcCluster {
    pub members: Vec<ProcMember>,
}

impl ProcCluster {
    /// Starts `n` processes; `extra` flags are given to every node.
    pub async fn start(n: usize, extra: &[&str]) -> Self {
        let mut c = Self {
            members: Vec::new(),
        };
        for i in 0..n {
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            if let Some(first) = c.members.first() {
                args.extend(
                    [
                        "-join",
                        &first.raft_addr,
                        "-join-interval",
                        "200ms",
                        "-join-attempts",
                        "100",
                    ]
                    .map(String::from),
                );
            }
            let tmp = tempfile::tempdir().expect("tempdir");
            let id = (i + 1).to_string();
            let p = spawn_blocking_proc(tmp.path(), &id, "127.0.0.1:0", "127.0.0.1:0", &args)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            p.wait_ready().await;
            c.members.push(ProcMember {
                id,
                client: Client::with_timeout(p.client.base.clone(), Duration::from_secs(10)),
                http_addr: p.http_addr.clone(),
                raft_addr: p.raft_addr.clone(),
                proc: Some(p),
                args,
                tmp,
            });
        }
        c.wait_for_leader().await;
        c
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.members[i].client
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].proc.is_some())
            .collect()
    }

    /// The index of the node every running process names as leader in `/status`.
    pub async fn wait_for_leader(&self) -> usize {
        let live = self.live();
        wait_for(CLUSTER_WAIT, "processes to agree on a leader", || async {
            let mut ids = Vec::new();
            for &i in &live {
                let r = self
                    .client(i)
                    .try_get("/status?key=store.leader")
                    .await
                    .ok()?;
                (r.status == 200).then_some(())?;
                ids.push(r.json()["node_id"].as_str()?.to_string());
            }
            let first = ids.first()?.clone();
            if first.is_empty() || ids.iter().any(|id| *id != first) {
                return None;
            }
            let l = self.members.iter().position(|m| m.id == first)?;
            live.contains(&l).then_some(l)
        })
        .await
    }

    /// SIGKILL node `i`; its data dir and ports are kept for [`ProcCluster::restart`].
    pub fn kill9(&mut self, i: usize) {
        if let Some(p) = self.members[i].proc.take() {
            p.kill9();
        }
    }

    /// Starts node `i` again with the same data dir, ports and flags; waits until it is
    /// ready.
    pub async fn restart(&mut self, i: usize) {
        let m = &self.members[i];
        assert!(m.proc.is_none(), "node {} is running", m.id);
        let deadline = Instant::now() + Duration::from_secs(10);
        let p = loop {
            let r =
                spawn_blocking_proc(m.tmp.path(), &m.id, &m.http_addr, &m.raft_addr, &m.args).await;
            match r {
                Ok(p) => break p,
                // The old sockets may still be closing.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        };
        p.wait_ready().await;
        self.members[i].proc = Some(p);
    }
}

impl ProcCluster {
    /// SIGKILLs every node, starts them all again (same dirs, ports and flags) and waits for
    /// a leader.
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
        for i in 0..self.members.len() {
            let m = &self.members[i];
            let deadline = Instant::now() + Duration::from_secs(10);
            let p = loop {
                match spawn_blocking_proc(m.tmp.path(), &m.id, &m.http_addr, &m.raft_addr, &m.args)
                    .await
                {
                    Ok(p) => break p,
                    // The old sockets may still be closing.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("restart: {e}"),
                }
            };
            self.members[i].proc = Some(p);
        }
        for i in 0..self.members.len() {
            if let Some(p) = &self.members[i].proc {
                p.wait_ready().await;
            }
        }
        self.wait_for_leader().await;
    }
}

/// [`Proc::try_spawn_node`] off the async worker threads (it blocks until the startup line).
async fn spawn_blocking_proc(
    dir: &Path,
    id: &str,
    http: &str,
    raft: &str,
    args: &[String],
) -> Result<Proc, String> {
    let (dir, id, http, raft, args) = (
        dir.to_path_buf(),
        id.to_string(),
        http.to_string(),
        raft.to_string(),
        args.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::try_spawn_node(&dir, &id, &http, &raft, &extra)
    })
    .await
    .expect("spawn task")
}
