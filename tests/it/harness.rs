//! Test harness: real nodes on 127.0.0.1 port 0 in temp dirs, an HTTP client, polling waits.

use std::future::Future;
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
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
        let r = rb.send().await.unwrap_or_else(|e| panic!("{target}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
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
    c.raft_election_timeout = Duration::from_millis(300);
    c.raft_heartbeat_timeout = Duration::from_millis(300);
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
        let node = Node::start_with(cfg, http, raft).await.expect("node start");
        let client = Client::new(format!("http://{}", node.http_addr()));
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
        wait_until(Duration::from_secs(20), "node to have a leader", || {
            let c = c.clone();
            async move { c.get("/readyz").await.status == 200 }
        })
        .await;
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
}

impl Proc {
    /// Starts the binary on port 0 and reads the bound addresses from its startup line.
    pub fn spawn(dir: &Path, extra: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_sqlraftd");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-node-id",
            "1",
            "-http-addr",
            "127.0.0.1:0",
            "-raft-addr",
            "127.0.0.1:0",
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
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn sqlraftd");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("startup line");
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("startup line {line:?}: {e}"));
        let http_addr = v["http_addr"].as_str().expect("http_addr").to_string();
        let client = Client::new(format!("http://{http_addr}"));
        Self { child, client }
    }

    pub async fn wait_ready(&self) {
        let c = self.client.clone();
        wait_until(Duration::from_secs(30), "sqlraftd to be ready", || {
            let c = c.clone();
            async move {
                let r = c.http.get(format!("{}/readyz", c.base)).send().await;
                matches!(r, Ok(r) if r.status() == 200)
            }
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
