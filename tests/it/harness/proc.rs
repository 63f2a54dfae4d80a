//! The real binary: one `sqlraftd` child process ([`Proc`]) and clusters of them
//! ([`ProcCluster`]), for what needs a real process (SIGKILL, flags, the startup line). Every
//! process is started here and killed by its own handle, never by name.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{wait_for, wait_until, Client, CLUSTER_WAIT};

/// A `sqlraftd` child process (for crash tests: `kill -9` needs a real process).
pub struct Proc {
    pub child: Child,
    pub client: Client,
    /// The bound HTTP and Raft addresses, from the startup line.
    pub http_addr: String,
    pub raft_addr: String,
}

/// `sqlraftd` as node `id` on the given addresses (port 0 for any), with the tests' fast
/// election timing; the caller adds flags, the data directory and where output goes.
pub fn node_command(id: &str, http_addr: &str, raft_addr: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqlraftd"));
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
    ]);
    cmd
}

/// Reads the startup line (the JSON object `sqlraftd` prints first on stdout) of a child
/// started with a piped stdout; an error if the process ends without one.
pub fn startup_line(child: &mut Child) -> Result<serde_json::Value, String> {
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
    if !matches!(read, Ok(n) if n > 0) {
        return Err("exited before printing its startup line".into());
    }
    serde_json::from_str(line.trim()).map_err(|e| format!("startup line {line:?}: {e}"))
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
    /// Set `SQLRAFT_IT_STDERR=1` to see the nodes' logs; otherwise the end of a node's log
    /// is part of the error when it does not start.
    pub fn try_spawn_node(
        dir: &Path,
        id: &str,
        http_addr: &str,
        raft_addr: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut cmd = node_command(id, http_addr, raft_addr);
        let inherit = std::env::var_os("SQLRAFT_IT_STDERR").is_some();
        cmd.args(extra)
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(if inherit {
                Stdio::inherit()
            } else {
                Stdio::piped()
            });
        let mut child = cmd.spawn().expect("spawn sqlraftd");
        // Drained from the start and for the node's life, so that its log never fills the
        // pipe and blocks it (before its startup line too); the end is kept for errors.
        let log_end = child
            .stderr
            .take()
            .map(|err| std::thread::spawn(move || keep_end(err)));
        let v = match startup_line(&mut child) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let end = log_end.and_then(|t| t.join().ok()).unwrap_or_default();
                let end = String::from_utf8_lossy(&end);
                return Err(format!("node {id}: {e}: {status:?}; its log ends: {end}"));
            }
        };
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

impl ProcMember {
    /// Starts the stopped process again with the same data dir, ports and flags, retrying
    /// for a while: the old sockets may still be closing.
    async fn respawn(&self) -> Proc {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = spawn_blocking_proc(
                self.tmp.path(),
                &self.id,
                &self.http_addr,
                &self.raft_addr,
                &self.args,
            )
            .await;
            match r {
                Ok(p) => return p,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }
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
        let p = m.respawn().await;
        p.wait_ready().await;
        self.members[i].proc = Some(p);
    }

    /// SIGKILLs every node, starts them all again (same dirs, ports and flags) and waits for
    /// a leader.
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
        for i in 0..self.members.len() {
            let p = self.members[i].respawn().await;
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

/// Reads `r` to its end, keeping the last 2,000 bytes or so.
fn keep_end(mut r: impl std::io::Read) -> Vec<u8> {
    const KEEP: usize = 2000;
    let (mut end, mut buf) = (Vec::new(), [0u8; 8192]);
    loop {
        match r.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => break,
            Ok(n) => {
                end.extend_from_slice(&buf[..n]);
                if end.len() > 2 * KEEP {
                    end.drain(..end.len() - KEEP);
                }
            }
        }
    }
    end
}
