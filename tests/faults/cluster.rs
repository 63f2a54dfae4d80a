//! A cluster of real `sqlraftd` processes, each in its own network namespace (see
//! `net.rs`), listening on fixed ports of its own address (`10.201.X.(11+i):4001` for the
//! API, `:4002` for Raft).
//!
//! What it owns: the processes (started through `ip netns exec`, which execs the binary, so
//! the child's PID is the node's), their data dirs (a temp dir per run, some on tmpfs), their
//! logs, and the signals sent to them. Every process it started is killed by PID when the
//! cluster is dropped, also when a test panics; and each child gets `PR_SET_PDEATHSIG`
//! SIGKILL, so nodes die with the test thread even if the test process itself is killed.
//!
//! What it does not do: decide when to inject a fault (`nemesis.rs`), or judge results.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::net::{self, Net};

pub const HTTP_PORT: u16 = 4001;
pub const RAFT_PORT: u16 = 4002;

/// How long a node may take to print its startup line (a joining node prints it after it
/// joined).
const START_WAIT: Duration = Duration::from_secs(60);

/// One node: its identity, flags and (while running) process.
pub struct NodeProc {
    pub id: String,
    pub ip: String,
    ns: String,
    pub data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    started: Option<mpsc::Receiver<String>>,
    /// Whether it belongs to the cluster (false once removed).
    pub member: bool,
    pub paused: bool,
    /// Whether `data` is a mount point of ours (tmpfs or loop device).
    mounted: bool,
    /// The loop device under `data`, if any.
    loopdev: Option<String>,
    /// The blkio cgroup the process was moved into, if throttled.
    cgroup: Option<PathBuf>,
}

impl NodeProc {
    pub fn base(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }

    pub fn raft_addr(&self) -> String {
        format!("{}:{RAFT_PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet (it
            // is still ours: an exited child stays a zombie until `wait`).
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.started = None;
        self.paused = false;
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.reap();
        if let Some(cg) = self.cgroup.take() {
            let _ = std::fs::remove_dir(cg);
        }
        if self.mounted {
            let _ = net::run("umount", &["-l", &self.data.display().to_string()]);
        }
        if let Some(dev) = self.loopdev.take() {
            let _ = net::run("losetup", &["-d", &dev]);
        }
    }
}

/// A running cluster. Field order is drop order: processes, then the network, then the
/// data dirs.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub net: Net,
    /// A client for control requests (status, readiness, membership), short timeouts.
    pub http: reqwest::Client,
    /// Where node logs go.
    pub log_dir: PathBuf,
    /// Flags every node gets.
    flags: Vec<String>,
    data_root: tempfile::TempDir,
}

/// A reqwest client that never uses a proxy and never follows redirects.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

impl Cluster {
    /// Builds the network and `n` node definitions; starts nothing.
    pub fn new(n: usize, flags: &[&str], log_dir: &Path) -> Cluster {
        let net = Net::new(n);
        let data_root = tempfile::Builder::new()
            .prefix(&net::data_dir_prefix(net.x))
            .tempdir()
            .expect("data dir");
        let mut c = Cluster {
            nodes: Vec::new(),
            net,
            http: http_client(Duration::from_secs(2)),
            log_dir: log_dir.to_path_buf(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            data_root,
        };
        let join = (0..n)
            .map(|i| format!("{}:{RAFT_PORT}", c.net.ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..n {
            let extra = vec![
                "-bootstrap-expect".to_string(),
                n.to_string(),
                "-join".to_string(),
                join.clone(),
            ];
            c.define(i, extra);
        }
        c
    }

    fn define(&mut self, i: usize, extra: Vec<String>) {
        let id = (i + 1).to_string();
        let ip = self.net.ip(i);
        let data = self.data_root.path().join(format!("n{id}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let mut args = vec![
            "-node-id".to_string(),
            id.clone(),
            "-http-addr".to_string(),
            format!("{ip}:{HTTP_PORT}"),
            "-raft-addr".to_string(),
            format!("{ip}:{RAFT_PORT}"),
        ];
        args.extend(self.flags.iter().cloned());
        args.extend(extra);
        self.nodes.push(NodeProc {
            id,
            ip,
            ns: self.net.ns(i).to_string(),
            data: data.clone(),
            log: self.log_dir.join(format!("node{}.log", i + 1)),
            args,
            child: None,
            started: None,
            member: true,
            paused: false,
            mounted: false,
            loopdev: None,
            cgroup: None,
        });
    }

    /// Starts every node at once and waits until each printed its startup line and a leader
    /// is known to all.
    pub async fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_started(i).await;
        }
        self.wait_leader(Duration::from_secs(60)).await;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Indexes of nodes that are members of the cluster.
    pub fn members(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.nodes[i].member).collect()
    }

    /// Indexes of members other than `skip`.
    pub fn members_except(&self, skip: usize) -> Vec<usize> {
        self.members().into_iter().filter(|&i| i != skip).collect()
    }

    /// Indexes of running members.
    pub fn running(&self) -> Vec<usize> {
        self.members()
            .into_iter()
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Spawns node `i` (it must not be running). Must be called from the test's own thread
    /// (not a pool thread that may exit), because the child dies with its parent thread.
    pub fn spawn(&mut self, i: usize) {
        let bin = env!("CARGO_BIN_EXE_sqlraftd");
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is running", node.id);
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let _ = writeln!(log, "==== start: sqlraftd {}", node.args.join(" "));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns, bin])
            .args(&node.args)
            .arg(&node.data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("log fd"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("SQLRAFT_") && k != "SQLRAFT_LOG" {
                cmd.env_remove(k);
            }
        }
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn ip netns exec sqlraftd");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
            }
        });
        node.child = Some(child);
        node.started = Some(rx);
        node.paused = false;
    }

    /// Waits for node `i`'s startup line; panics if it exits first.
    pub async fn wait_started(&mut self, i: usize) {
        if let Err(e) = self.try_wait_started(i).await {
            panic!("{e}");
        }
    }

    /// Waits for node `i`'s startup line; an error if it exits first or prints nothing in
    /// time.
    pub async fn try_wait_started(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let node = &mut self.nodes[i];
            let log = node.log.display().to_string();
            let Some(rx) = node.started.as_ref() else {
                // Started earlier (its line was read then), or never spawned.
                return if node.is_running() {
                    Ok(())
                } else {
                    Err(format!("node {} is not running", i + 1))
                };
            };
            match rx.try_recv() {
                Ok(line) => {
                    node.started = None;
                    let v: Value = serde_json::from_str(&line)
                        .map_err(|e| format!("node {} startup line {line:?}: {e}", i + 1))?;
                    let want = format!("{}:{HTTP_PORT}", node.ip);
                    if v["http_addr"].as_str() != Some(want.as_str()) {
                        return Err(format!("node {} startup line {line}", i + 1));
                    }
                    return Ok(());
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = node.child.as_mut().map(|c| c.wait());
                    node.reap();
                    return Err(format!(
                        "node {} exited before starting ({status:?}); log: {log}",
                        i + 1
                    ));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if let Some(Ok(Some(st))) = node.child.as_mut().map(|c| c.try_wait()) {
                node.reap();
                return Err(format!(
                    "node {} exited before starting ({st}); log: {log}",
                    i + 1
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} printed no startup line within {START_WAIT:?}; log: {log}",
                    i + 1
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns node `i` again with the same flags and data dir and waits for its startup
    /// line. Its ports may still be held by the dead process's sockets for a moment: a start
    /// that exits early is retried for a few seconds.
    pub async fn restart(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.spawn(i);
            match self.try_wait_started(i).await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && e.contains("exited before") => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].reap();
    }

    /// SIGTERM, then waits up to `within` for the process to exit (SIGKILL after that).
    /// Returns how long it took to exit, or `Err(within)` if it had to be killed.
    pub async fn terminate(&mut self, i: usize, within: Duration) -> Result<Duration, Duration> {
        let t = Instant::now();
        let node = &mut self.nodes[i];
        if node.paused {
            node.signal(libc::SIGCONT);
        }
        node.signal(libc::SIGTERM);
        loop {
            let exited = node
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited {
                let e = t.elapsed();
                node.reap();
                return Ok(e);
            }
            if t.elapsed() >= within {
                node.reap();
                return Err(within);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How node `i`'s process ended, if it did (it is reaped then).
    pub fn exit_status(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[i];
        let st = node.child.as_mut()?.try_wait().ok()??;
        node.reap();
        Some(st)
    }

    /// Writes node `i`'s thread backtraces (gdb, if installed) and its kernel-side state to
    /// `node<N>.stacks.txt` beside its log: evidence for a node that stopped answering.
    pub fn dump_stacks(&self, i: usize) -> Option<PathBuf> {
        let pid = self.nodes[i].pid()?;
        let path = self.log_dir.join(format!("node{}.stacks.txt", i + 1));
        let mut text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        text.push('\n');
        text += &net::run(
            "gdb",
            &[
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt",
            ],
        )
        .unwrap_or_else(|e| format!("no backtraces: {e}"));
        std::fs::write(&path, text).ok()?;
        Some(path)
    }

    /// SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Puts node `i`'s data dir on a tmpfs of `size` (e.g. "16m"); before its first start.
    pub fn mount_tmpfs(&mut self, i: usize, size: &str) {
        let d = self.nodes[i].data.display().to_string();
        net::run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &d],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.nodes[i].mounted = true;
    }

    /// Puts node `i`'s data dir on an ext4 filesystem in a loop device (a sparse file of
    /// `mb` MiB beside the data dirs), so that its writes, and only its, can be throttled
    /// (see [`Cluster::throttle_disk`]). Before its first start.
    pub fn mount_loop_disk(&mut self, i: usize, mb: u64) {
        let img = self.data_root.path().join(format!("disk{}.img", i + 1));
        let file = File::create(&img).expect("disk image");
        file.set_len(mb << 20).expect("size disk image");
        let img = img.display().to_string();
        let dev = net::run("losetup", &["-f", "--show", &img])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string();
        self.nodes[i].loopdev = Some(dev.clone());
        net::run("mkfs.ext4", &["-q", "-F", &dev]).unwrap_or_else(|e| panic!("{e}"));
        let d = self.nodes[i].data.display().to_string();
        net::run("mount", &[&dev, &d]).unwrap_or_else(|e| panic!("{e}"));
        self.nodes[i].mounted = true;
    }

    /// Throttles writes of node `i`'s process to its loop disk (write IOPS and bytes per
    /// second) by moving the process into a blkio cgroup of ours; a real slow disk as the
    /// node sees it (its fsyncs wait). Needs [`Cluster::mount_loop_disk`].
    pub fn throttle_disk(&mut self, i: usize, iops: u64, bps: u64) -> Result<(), String> {
        let x = self.net.x;
        let node = &mut self.nodes[i];
        let dev = node.loopdev.clone().ok_or("node has no loop disk")?;
        let pid = node.pid().ok_or("node is not running")?;
        let majmin = net::run("lsblk", &["-dno", "MAJ:MIN", &dev])?
            .trim()
            .to_string();
        let (root, v2) = cgroup::io_root().ok_or(
            "no cgroup with I/O throttling (cgroup v1 blkio, or v2 with io in subtree_control)",
        )?;
        let cg = root.join(format!("{}{}", cgroup::prefix(x), i + 1));
        std::fs::create_dir_all(&cg).map_err(|e| format!("{}: {e}", cg.display()))?;
        let settings: Vec<(&str, String)> = if v2 {
            vec![("io.max", format!("{majmin} wbps={bps} wiops={iops}"))]
        } else {
            vec![
                (
                    "blkio.throttle.write_iops_device",
                    format!("{majmin} {iops}"),
                ),
                ("blkio.throttle.write_bps_device", format!("{majmin} {bps}")),
            ]
        };
        for (file, value) in settings {
            std::fs::write(cg.join(file), &value)
                .map_err(|e| format!("{}/{file} <- {value}: {e}", cg.display()))?;
        }
        std::fs::write(cg.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("move {pid} into {}: {e}", cg.display()))?;
        node.cgroup = Some(cg);
        Ok(())
    }

    /// Moves node `i` back to the root I/O cgroup and removes ours.
    pub fn unthrottle_disk(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(cg) = node.cgroup.take() else { return };
        if let (Some(pid), Some((root, _))) = (node.pid(), cgroup::io_root()) {
            let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
        }
        let _ = std::fs::remove_dir(cg);
    }

    /// Resizes node `i`'s tmpfs (space given back, or taken).
    pub fn resize_tmpfs(&mut self, i: usize, size: &str) {
        let d = self.nodes[i].data.display().to_string();
        net::run("mount", &["-o", &format!("remount,size={size}"), &d])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Free bytes on node `i`'s data dir filesystem.
    pub fn free_bytes(&self, i: usize) -> u64 {
        let p = std::ffi::CString::new(self.nodes[i].data.display().to_string()).expect("path");
        // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(p.as_ptr(), &mut s) != 0 {
                return 0;
            }
            s.f_bavail as u64 * s.f_frsize as u64
        }
    }

    /// Defines and starts one more node that joins the running members; waits for its
    /// startup line (printed once it joined). Returns its index.
    pub async fn add_node(&mut self) -> usize {
        let i = self.net.add_node();
        let join = self
            .running()
            .iter()
            .map(|&j| self.nodes[j].raft_addr())
            .collect::<Vec<_>>()
            .join(",");
        self.define(
            i,
            vec![
                "-join".into(),
                join,
                "-join-interval".into(),
                "500ms".into(),
                "-join-attempts".into(),
                "60".into(),
            ],
        );
        self.spawn(i);
        self.wait_started(i).await;
        i
    }

    /// `GET /status?key=store` of node `i`.
    pub async fn store_status(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/status?key=store", self.nodes[i].base()))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    }

    /// The index of the node that a majority of members name as leader and that says it
    /// leads, among running members.
    pub async fn leader_now(&self) -> Option<usize> {
        let members = self.members();
        let statuses = futures_util::future::join_all(
            members
                .iter()
                .map(|&i| async move { (i, self.store_status(i).await) }),
        )
        .await;
        let view: Vec<(usize, String, String)> = statuses
            .into_iter()
            .filter_map(|(i, s)| {
                let s = s?;
                Some((
                    i,
                    s["raft"]["state"].as_str()?.to_string(),
                    s["leader"]["node_id"].as_str()?.to_string(),
                ))
            })
            .collect();
        leader_of(&view, members.len(), |id| {
            self.nodes.iter().position(|n| n.id == id)
        })
    }

    /// Waits for [`Cluster::leader_now`].
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader_now().await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed by a majority within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running member answers `/readyz` with 200.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for i in self.running() {
            loop {
                let last = match self
                    .http
                    .get(format!("{}/readyz", self.nodes[i].base()))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(format!("node {} not ready after {within:?}: {last}", i + 1));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// `POST /leader` on node `i`: it hands leadership over to another voter.
    pub async fn step_down(&self, i: usize) -> Result<u16, String> {
        admin(self.http.post(format!("{}/leader", self.nodes[i].base()))).await
    }

    /// `DELETE /remove {"id": <node i's id>}` sent to node `via`; returns the HTTP status.
    pub async fn remove(&self, i: usize, via: usize) -> Result<u16, String> {
        let req = self
            .http
            .delete(format!("{}/remove", self.nodes[via].base()))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "id": self.nodes[i].id }).to_string());
        admin(req).await
    }
}

/// Sends an admin request (10 s limit): 200, or the status and body it was refused with.
async fn admin(req: reqwest::RequestBuilder) -> Result<u16, String> {
    let r = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if status == 200 {
        Ok(status)
    } else {
        Err(format!("HTTP {status}: {}", text.trim()))
    }
}

/// Where I/O throttling cgroups live.
pub mod cgroup {
    use std::path::PathBuf;

    /// Our cgroups' name prefix for run X (removed with the rest of X's leftovers).
    pub fn prefix(x: u8) -> String {
        format!("sqf{x}n")
    }

    /// The cgroup root with I/O throttling, and whether it is cgroup v2.
    pub fn io_root() -> Option<(PathBuf, bool)> {
        let v1 = PathBuf::from("/sys/fs/cgroup/blkio");
        if v1.join("blkio.throttle.write_iops_device").exists() {
            return Some((v1, false));
        }
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let ctl = std::fs::read_to_string(v2.join("cgroup.subtree_control")).ok()?;
        ctl.split_whitespace()
            .any(|c| c == "io")
            .then_some((v2, true))
    }
}

/// The leader of one observation: `view` holds (node index, raft state, leader id it names)
/// for the nodes that answered. A node leads if it says so and a majority of the
/// `members` name it.
pub fn leader_of(
    view: &[(usize, String, String)],
    members: usize,
    index_of: impl Fn(&str) -> Option<usize>,
) -> Option<usize> {
    let majority = members / 2 + 1;
    view.iter()
        .filter(|(_, state, _)| state == "Leader")
        .map(|(i, _, _)| *i)
        .find(|&l| {
            let named = view
                .iter()
                .filter(|(_, _, id)| !id.is_empty() && index_of(id) == Some(l))
                .count();
            named >= majority
        })
}
