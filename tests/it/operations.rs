//! Operating a node as rqlite's operators do: it serves its API while it joins, says why it
//! cannot, and refuses what would split a cluster. Through the real binary.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{node_command, startup_line, wait_for, wait_until, Client, Proc};

/// A `sqlraftd` with its stderr captured; killed when dropped.
struct Logged {
    child: Child,
    client: Client,
}

impl Logged {
    /// Starts node 1 with `args` (the data dir last).
    fn spawn(args: &[&str]) -> Child {
        node_command("1", "127.0.0.1:0", "127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sqlraftd")
    }

    /// Starts node 1 with `args` (the data dir last) and reads its startup line.
    fn start(args: &[&str]) -> Self {
        Self::attach(Self::spawn(args))
    }

    /// Reads the startup line of a node started with piped stdout and stderr.
    fn attach(mut child: Child) -> Self {
        let v = startup_line(&mut child).unwrap_or_else(|e| panic!("sqlraftd: {e}"));
        let http = v["http_addr"].as_str().expect("http_addr").to_string();
        Self {
            child,
            client: Client::with_timeout(format!("http://{http}"), Duration::from_secs(5)),
        }
    }

    /// Up and answering `/status`, `/nodes` and `/debug/vars`, but not ready (503).
    async fn assert_serving_but_not_ready(&self) {
        for path in ["/status", "/nodes", "/debug/vars"] {
            let r = self.client.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        let r = self.client.get("/readyz").await;
        assert_eq!(r.status, 503, "{}", r.text());
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
    n.assert_serving_but_not_ready().await;
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

/// A `sqlraftd` whose log (stderr) goes to a file, as under a service manager; killed when
/// dropped.
struct LoggedToFile {
    child: Child,
    client: Client,
    http_addr: String,
    raft_addr: String,
    log: std::path::PathBuf,
}

impl LoggedToFile {
    /// Starts node `id` on port 0 with `extra` flags, its log in `<log_dir>/<id>.log`; reads
    /// the startup line.
    fn start(data: &std::path::Path, log_dir: &std::path::Path, id: &str, extra: &[&str]) -> Self {
        let log = log_dir.join(format!("{id}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut child = node_command(id, "127.0.0.1:0", "127.0.0.1:0")
            .args(extra)
            .arg(data)
            // The default filter must do its job without help from the environment.
            .env_remove("SQLRAFT_LOG")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn sqlraftd");
        let v = startup_line(&mut child).unwrap_or_else(|e| panic!("sqlraftd: {e}"));
        let http_addr = v["http_addr"].as_str().expect("http_addr").to_string();
        let raft_addr = v["raft_addr"].as_str().expect("raft_addr").to_string();
        Self {
            child,
            client: Client::with_timeout(format!("http://{http_addr}"), Duration::from_secs(5)),
            http_addr,
            raft_addr,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        wait_until(Duration::from_secs(20), "the node to be ready", || async {
            matches!(self.client.try_get("/readyz").await, Ok(r) if r.status == 200)
        })
        .await;
    }

    /// Waits until the log holds `text`; returns the whole log.
    async fn wait_log(&self, text: &str) -> String {
        wait_for(Duration::from_secs(20), text, || async {
            let log = self.log();
            log.contains(text).then_some(log)
        })
        .await
    }
}

impl Drop for LoggedToFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Numeric ids openraft gives nodes (`N12638134423997487868`): meaningless to an operator.
fn has_raw_node_id(log: &str) -> Option<&str> {
    log.lines().find(|l| {
        l.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
            w.len() > 8 && w.starts_with('N') && w[1..].chars().all(|c| c.is_ascii_digit())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_to_a_file_is_plain_says_where_to_connect_and_keeps_to_what_matters() {
    // Steps: node 1 starts with its log in a file, node 2 joins it, both take a write. Each
    // log starts with the API URL and the shell command to connect; neither holds an escape
    // code, an openraft WARN/INFO line or a raw numeric node id.
    let tmp = tempfile::tempdir().expect("tempdir");
    let n1 = LoggedToFile::start(&tmp.path().join("d1"), tmp.path(), "1", &[]);
    n1.wait_ready().await;
    let port1 = n1.http_addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    let log1 = n1
        .wait_log(&format!("connect with: sqlraft -H 127.0.0.1 -p {port1}"))
        .await;
    assert!(
        log1.contains(&format!("HTTP API http://{}", n1.http_addr)),
        "{log1}"
    );
    let n2 = LoggedToFile::start(
        &tmp.path().join("d2"),
        tmp.path(),
        "2",
        &["-join", &n1.raft_addr, "-join-interval", "200ms"],
    );
    n1.client.wait_members("/nodes", 2, "node 2 to join").await;
    n1.client
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    wait_until(
        Duration::from_secs(20),
        "node 2 to apply the write",
        || async {
            matches!(n2.client.try_get("/db/query?level=none&q=SELECT%20v%20FROM%20t").await,
                 Ok(r) if r.text().contains("[[1]]"))
        },
    )
    .await;
    n2.wait_log("connect with: sqlraft -H 127.0.0.1").await;
    for n in [&n1, &n2] {
        let log = n.log();
        assert!(!log.contains('\x1b'), "escape codes in the log:\n{log}");
        let chatter = log
            .lines()
            .find(|l| l.contains("openraft") && (l.contains("WARN") || l.contains("INFO")));
        assert!(chatter.is_none(), "openraft chatter: {chatter:?}\n{log}");
        assert_eq!(has_raw_node_id(&log), None, "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_per_line() {
    // Steps: a node with -log-format json and its log in a file; every line of the log is a
    // JSON object with a level and a message, and the banner is one of them.
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = LoggedToFile::start(
        &tmp.path().join("d"),
        tmp.path(),
        "1",
        &["-log-format", "json"],
    );
    n.wait_ready().await;
    n.client.execute_ok(r#"["CREATE TABLE t (v)"]"#).await;
    let log = n.wait_log("connect with: sqlraft").await;
    let mut banner = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        let msg = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {line}"));
        banner |= msg.contains(&format!("HTTP API http://{}", n.http_addr));
    }
    assert!(banner, "{log}");
}

/// Runs node 1 on `data`, which it must refuse: its stderr.
fn refused_start(data: &std::path::Path) -> String {
    let out = node_command("1", "127.0.0.1:0", "127.0.0.1:0")
        .arg(data)
        .output()
        .expect("run sqlraftd");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_errors_name_the_path_and_the_action() {
    // Steps: a data directory under a regular file (cannot be created, even as root); the
    // node exits non-zero with the action, the path and the OS's reason.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").expect("write");
    let data = file.join("sub");
    let err = refused_start(&data);
    assert!(
        err.contains(&format!(
            "cannot create data directory {}: ",
            data.display()
        )),
        "{err}"
    );
    assert!(err.contains("os error"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rqlite_data_directory_is_refused_with_what_to_do() {
    // Steps: a directory holding rqlite's raft.db (and nothing of sqlraft's); the node
    // refuses it, says what it is and how to move the data, and writes nothing there.
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("rqlite-data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("raft.db"), b"bolt").expect("write");
    let err = refused_start(&data);
    assert!(
        err.contains(&format!("{} is an rqlite data directory", data.display())),
        "{err}"
    );
    assert!(
        err.contains("/db/backup") && err.contains("/db/load"),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(&data)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("raft.db")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_bootstrap_expect_exits_promptly() {
    // Steps: a node told to form a 3-node cluster with two peers that never come; while it
    // waits (serving /status), SIGTERM; it exits 0 within a few seconds.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (dead_addr(), dead_addr(), dead_addr());
    let join = format!("{a},{b},{c}");
    let d = tmp.path().to_string_lossy().to_string();
    let n = Logged::start(&[
        "-bootstrap-expect",
        "3",
        "-join",
        &join,
        "-join-interval",
        "200ms",
        &d,
    ]);
    let r = n.client.get("/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = libc::pid_t::try_from(n.child.id()).expect("pid");
    // SAFETY: signals our own child, by its id.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, log) = tokio::task::spawn_blocking(move || n.exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_leader_fails_its_server_name_check_serves_status_meanwhile() {
    // Steps: a TLS node leads; a second node joins it with -node-verify-server-name set to a
    // name the leader's certificate does not carry. While its joins fail, it serves /status,
    // /nodes and /debug/vars and /readyz says not ready; after its attempts it exits
    // non-zero, and its log names the certificate problem.
    let ca = crate::tls::Ca::new("server name CA");
    let certs = ca.issue_nodes(2);
    let flags = |i: usize| {
        vec![
            "-node-cert".to_string(),
            certs[i].cert.display().to_string(),
            "-node-key".to_string(),
            certs[i].key.display().to_string(),
            "-node-ca-cert".to_string(),
            ca.cert.display().to_string(),
        ]
    };
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let f0 = flags(0);
    let leader = Proc::spawn(
        leader_dir.path(),
        &f0.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    leader.wait_ready().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let child = node_command("2", "127.0.0.1:0", "127.0.0.1:0")
        .args(flags(1))
        .args(["-node-verify-server-name", "not-the-leader.example"])
        .args(["-join", &leader.raft_addr])
        .args(["-join-attempts", "4", "-join-interval", "500ms"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sqlraftd");
    let n = Logged::attach(child);
    n.assert_serving_but_not_ready().await;
    let log = failed_exit(move || n.exit(Duration::from_secs(30))).await;
    assert!(log.contains("failed to join cluster"), "{log}");
    assert!(log.contains("not-the-leader.example"), "{log}");
}
