//! Operating a node as rqlite's operators do: it serves its API while it joins, says why it
//! cannot, and refuses what would split a cluster. Through the real binary.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{wait_for, Client, Proc};

/// A `sqlraftd` with its stderr captured; killed when dropped.
struct Logged {
    child: Child,
    client: Client,
}

impl Logged {
    /// Starts the binary with `args` (the data dir last) and reads its startup line.
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sqlraftd");
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
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "sqlraftd did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        "-node-id",
        "1",
        "-http-addr",
        "127.0.0.1:0",
        "-raft-addr",
        "127.0.0.1:0",
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
    let (code, log) = tokio::task::spawn_blocking(move || n.exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_ne!(code, Some(0), "{log}");
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
        .args([
            "-node-id",
            "1",
            "-http-addr",
            "127.0.0.1:0",
            "-raft-addr",
            "127.0.0.1:0",
        ])
        .args(["-join", &o.raft_addr, &d])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_for(Duration::from_secs(20), "the node to exit", || {
        let s = child.try_wait().expect("wait");
        async move { s }
    })
    .await;
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(!status.success(), "{log}");
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
