//! One in-process node ([`TestNode`]) on 127.0.0.1 port 0 in a temp dir, the settings tests
//! start from ([`test_config`]) and the client that fits a node's config ([`node_client`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlraft::config::Config;
use sqlraft::node::Node;
use tokio::net::TcpListener;

use super::Client;

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
