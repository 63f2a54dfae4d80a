//! Operating a node as rqlite's operators do: it serves its API while it joins, says why it
//! cannot, and refuses what would split a cluster. Through the real binary.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Client, Proc};

/// A `sqlraftd` with its stderr captured; killed when dropped.
struct Logged {
    child: Child,
    client: Client,
}

/// Node 1 on loopback, ports chosen by the system.
const NODE_1: [&str; 6] = [
    "-node-id",
    "1",
    "-http-addr",
    "127.0.0.1:0",
    "-raft-addr",
    "127.0.0.1:0",
];

impl Logged {
    /// Starts node 1 with `args` (the data dir last).
    fn spawn(args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
            .args(NODE_1)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sqlraftd")
    }

    /// Starts node 1 with `args` (the data dir last) and reads its startup line.
    fn start(args: &[&str]) -> Self {
        let mut child = Self::spawn(args);
        let mut out = child.stdout.take().expect("stdout");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let v: serde_json::Value = serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("startup line {:?}: {e}", String::from_utf8_lossy(&line)));
        let http = v["http_addr"].as_str().expect("http_addr").to_string();
        Self {
            child,
            client: Client::with_timeout(format!("http://{http}"), Duration::from_secs(5)),
        }
    }

    /// Waits for the process to exit; returns its exit code and everything it logged.
    fn exit(mut self, within: Duration) -> (Option<i32>, String) {
        exit_of(&mut self.child, within)
    }
}

/// Waits for `child` to exit; its exit code and everything it logged.
fn exit_of(child: &mut Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sqlraftd did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `exit` (a blocking wait for a process to end) off the runtime; the process must have
/// failed. Returns what it logged.
async fn failed_exit(exit: impl FnOnce() -> (Option<i32>, String) + Send + 'static) -> String {
    let (code, log) = tokio::task::spawn_blocking(exit).await.expect("join");
    assert_ne!(code, Some(0), "{log}");
    log
}

/// A loopback address nothing listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    drop(l);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_join_target_is_dead_serves_status_meanwhile_then_exits_nonzero() {
    // Steps: a node told to -join an address nothing listens on, 4 attempts 500 ms apart.
    // While it tries, /status and /nodes answer 200 and /readyz 503; then it exits non-zero
    // saying it could not join.
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dead_addr();
    let d = dir.path().to_string_lossy().to_string();
    let n = Logged::start(&[
        "-join",
        &dead,
        "-join-attempts",
        "4",
        "-join-interval",
        "500ms",
        &d,
    ]);
    for path in ["/status", "/nodes", "/debug/vars"] {
        let r = n.client.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = n.client.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let log = failed_exit(move || n.exit(Duration::from_secs(20))).await;
    assert!(
        log.contains("failed to join cluster after 4 attempts"),
        "{log}"
    );
    assert!(log.contains(&dead), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_leader_restarted_with_join_refuses_to_start() {
    // Steps: a node bootstraps its own single-node cluster and takes a write; restarted
    // with -join to another cluster's node, it exits non-zero saying why (joining would
    // split its data from its cluster); restarted without -join, it still has its data.
    let other = tempfile::tempdir().expect("tempdir");
    let o = Proc::spawn(other.path(), &[]);
    o.wait_ready().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Proc::spawn(dir.path(), &[]);
    p.wait_ready().await;
    p.client
        .execute_ok(r#"["CREATE TABLE t (x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    p.kill9();
    let d = dir.path().to_string_lossy().to_string();
    let mut child = Logged::spawn(&["-join", &o.raft_addr, &d]);
    let log = failed_exit(move || exit_of(&mut child, Duration::from_secs(20))).await;
    assert!(
        log.contains("only member of its own single-node cluster"),
        "{log}"
    );
    let p = Proc::spawn(dir.path(), &[]);
    p.wait_ready().await;
    assert_eq!(
        p.client.query_values("SELECT x FROM t", "strong").await,
        serde_json::json!([[1]])
    );
}
