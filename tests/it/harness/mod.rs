//! The test harness: what every kind of test shares. Polling waits with deadlines
//! ([`wait_until`], [`wait_for`]), the HTTP [`Client`] and the [`Resp`] it returns, query
//! helpers and shared constants. The nodes themselves live beside it: [`node`] (one in-process
//! node), [`cluster`] (in-process clusters), [`proc`] (the real `sqlraftd` binary).
//!
//! Everything is re-exported here, so tests `use crate::harness::{...}`.

mod cluster;
mod node;
mod proc;
mod writers;

pub use cluster::*;
pub use node::*;
pub use proc::*;
pub use writers::*;

use std::future::Future;
use std::time::{Duration, Instant};

/// A loopback port free now, for a process that must be told its port before it binds (a
/// peers.json, a shared -join list). Chosen below the kernel's ephemeral range, so no
/// `bind(0)` or outgoing connection of a concurrent test takes it before the process does.
pub fn unused_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(10_001);
    for _ in 0..1000 {
        let port = fastrand::u16(10_000..low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 10000..{low}");
}

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

/// The content types a node answers with: JSON results, plain-text errors.
pub const JSON_CT: &str = "application/json; charset=utf-8";
pub const TEXT_CT: &str = "text/plain; charset=utf-8";

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

/// Sends `rb` and reads the whole response.
async fn response(rb: reqwest::RequestBuilder) -> Result<Resp, String> {
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
        let mut rb = self.request(method, target);
        if let Some(ct) = content_type {
            rb = rb.header("Content-Type", ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        response(rb).await
    }

    /// Sends a request as `user` (Basic credentials; `None`: anonymous), with extra
    /// `headers` and an optional JSON body.
    pub async fn send_as(
        &self,
        method: &str,
        target: &str,
        user: Option<(&str, &str)>,
        headers: &[(&str, &str)],
        json: Option<&str>,
    ) -> Resp {
        let mut rb = self.request(method, target);
        if let Some((u, p)) = user {
            rb = rb.basic_auth(u, Some(p));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = json {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        response(rb)
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"))
    }

    fn request(&self, method: &str, target: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http
            .request(method, format!("{}{}", self.base, target))
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
        self.send_json("POST", target, body).await
    }

    /// [`Client::post_json`], sent again while the node answers 503 `leader not found` (for
    /// up to 10 s): an election under way, so nothing was submitted, and rqlite's clients
    /// retry it too. Test clusters elect with a 300 ms timeout on two shared cores, so an
    /// election can fall in the middle of any test.
    pub async fn post_json_across_elections(&self, target: &str, body: &str) -> Resp {
        let what = format!("a node with a leader to take POST {target}");
        wait_for(Duration::from_secs(10), &what, || async move {
            let r = self.post_json(target, body).await;
            (r.status != 503 || !r.text().contains("leader not found")).then_some(r)
        })
        .await
    }

    /// A JSON body with any method (`DELETE /remove`).
    pub async fn send_json(&self, method: &str, target: &str, body: &str) -> Resp {
        let body = Some(body.as_bytes().to_vec());
        self.send(method, target, Some("application/json"), body)
            .await
    }

    /// `POST` of a SQL text (`/db/load` with a dump).
    pub async fn load_sql(&self, target: &str, sql: &str) -> Resp {
        let body = Some(sql.as_bytes().to_vec());
        self.send("POST", target, Some("text/plain"), body).await
    }

    /// `POST /db/load` of a SQLite file image.
    pub async fn load_image(&self, image: Vec<u8>) -> Resp {
        let ct = Some("application/octet-stream");
        self.send("POST", "/db/load", ct, Some(image)).await
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
        let r = self.post_json_across_elections("/db/execute", body).await;
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

/// `SQLRAFT_IT_LOG=<filter>` prints the in-process nodes' logs (all nodes share one output).
pub fn init_logging() {
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

/// `GET /db/query` with `params` (may be empty) and `sql`.
pub async fn query(c: &Client, params: &str, sql: &str) -> Resp {
    let sep = if params.is_empty() { "" } else { "&" };
    c.get(&format!("/db/query?{params}{sep}q={}", url_encode(sql)))
        .await
}

/// The `X-Rqlite-Served-By` header: the leader's Raft address on a forwarded request.
pub fn served_by(r: &Resp) -> Option<String> {
    r.header("x-rqlite-served-by")
}

/// The values of the first result of a successful query response.
pub fn values(r: &Resp) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert!(j.get("error").is_none(), "{j}");
    assert!(j["results"][0].get("error").is_none(), "{j}");
    j["results"][0]["values"].clone()
}

/// Asserts a plain-text 503 `leader not found` (sqlraft's answer where rqlite says 500).
pub fn assert_leader_not_found(r: &Resp, what: &str) {
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "leader not found\n"),
        "{what}"
    );
    assert_eq!(r.header("content-type").as_deref(), Some(TEXT_CT), "{what}");
}

/// The CORS headers a node sends with or without -auth, as rqlite 8 does (golden corrections,
/// item 1): browsers may send credentials and an Authorization header.
pub fn assert_cors_allows_credentials(r: &Resp) {
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("Content-Type, Authorization")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
}

/// The ids in the first column of query values.
pub fn ids_of(v: &serde_json::Value) -> std::collections::BTreeSet<i64> {
    let rows = v.as_array().expect("rows");
    rows.iter()
        .map(|r| r[0].as_i64().expect("an integer id"))
        .collect()
}

/// Every acknowledged id is `present`; otherwise says how many are not, and names a few.
pub fn assert_no_acknowledged_write_lost(
    acked: &std::collections::BTreeSet<i64>,
    present: &std::collections::BTreeSet<i64>,
    context: &str,
) {
    let missing: Vec<_> = acked.difference(present).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost ({context}), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
