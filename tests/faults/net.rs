//! The test network: one Linux network namespace per node, all joined by a bridge, and real
//! partitions made of iptables DROP rules inside the node namespaces.
//!
//! Layout for a run that claimed number X (1..=254):
//!
//! ```text
//!   root namespace                 sqfXhub namespace            sqfXn<i> namespaces
//!   sqfXh 10.201.X.1/24  <-veth->  up0 ─┐
//!                                       br0 ── v<i> <-veth->    eth0 10.201.X.(11+i)/24
//! ```
//!
//! The bridge lives in its own namespace so that nothing in the root namespace changes
//! except one veth (`sqfXh`) carrying the test's own /24: the root namespace's firewall and
//! bridge-netfilter settings never see node-to-node traffic. The test process reaches every
//! node through `sqfXh`; partitions only cut node-to-node traffic, never the test's.
//!
//! Claiming X: an exclusive `flock` on `/run/sqlraft-faults/X.lock`, held for the life of
//! the [`Net`]. A run that crashed left the lock free (the kernel drops it with the process),
//! so whoever claims X next first removes whatever carries the `sqfX` prefix (namespaces,
//! the root veth, tmpfs mounts under the run's data dirs). Concurrent runs never share an X,
//! and an X whose /24 is already used by any other interface on the host is skipped.
//!
//! What it does not do: start nodes (see `cluster.rs`), or touch any interface, namespace,
//! rule or mount that it did not create under its own prefix.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// The first two octets of every address the suite uses.
pub const NET_PREFIX: &str = "10.201";
const LOCK_DIR: &str = "/run/sqlraft-faults";

/// Checks that the suite can run here, with a message saying what is missing.
pub fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mut missing = Vec::new();
    if euid != 0 {
        missing.push(format!(
            "root privileges (running as uid {euid}; network namespaces, iptables and tmpfs \
             mounts need root)"
        ));
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
        ("mount", "mount"),
        ("umount", "mount"),
    ] {
        let found = Command::new(tool)
            .arg(if tool.starts_with("iptables") {
                "--version"
            } else {
                "-V"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            missing.push(format!("`{tool}` (Debian package {pkg})"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the fault suite cannot run: missing {}",
            missing.join(", ")
        ))
    }
}

/// Runs a command, returning its stdout or an error with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    run_input(cmd, args, None)
}

/// Runs a command with `input` on its stdin.
pub fn run_input(cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("{cmd}: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(cmd: &str, args: &[&str]) {
    if let Err(e) = run(cmd, args) {
        panic!("network setup: {e}");
    }
}

/// The private network of one run.
pub struct Net {
    pub x: u8,
    /// Node namespaces, by node index.
    namespaces: Vec<String>,
    _lock: File,
}

impl Net {
    /// Claims a free X and builds the hub, the bridge and `n` node namespaces.
    pub fn new(n: usize) -> Net {
        if let Err(e) = preflight() {
            panic!("{e}");
        }
        std::fs::create_dir_all(LOCK_DIR).expect("create /run/sqlraft-faults");
        sweep_leftovers();
        let used = host_subnets();
        let start = fastrand::u8(1..=254);
        let mut claimed = None;
        for k in 0..254u16 {
            let x = ((start as u16 - 1 + k) % 254 + 1) as u8;
            if used.contains(&x) && !leftover_owns_subnet(x) {
                continue;
            }
            if let Some(lock) = try_lock(x) {
                claimed = Some((x, lock));
                break;
            }
        }
        let (x, lock) = claimed.expect("no free 10.201.X.0/24 for the test network");
        cleanup_prefix(x);
        let mut net = Net {
            x,
            namespaces: Vec::new(),
            _lock: lock,
        };
        let hub = net.hub();
        let host = net.host_if();
        must("ip", &["netns", "add", &hub]);
        must("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        must(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "up0", "netns", &hub,
            ],
        );
        must(
            "ip",
            &["-n", &hub, "link", "set", "up0", "master", "br0", "up"],
        );
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.host_ip()),
                "dev",
                &host,
            ],
        );
        must("ip", &["link", "set", &host, "up"]);
        for _ in 0..n {
            net.add_node();
        }
        net
    }

    fn prefix(&self) -> String {
        format!("sqf{}", self.x)
    }

    fn hub(&self) -> String {
        format!("{}hub", self.prefix())
    }

    fn host_if(&self) -> String {
        format!("{}h", self.prefix())
    }

    /// The test process's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("{NET_PREFIX}.{}.1", self.x)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{NET_PREFIX}.{}.{}", self.x, 11 + i)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    /// Adds one more node namespace on the bridge; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.namespaces.len();
        assert!(i < 200, "too many nodes");
        let ns = format!("{}n{i}", self.prefix());
        let hub = self.hub();
        let v = format!("v{i}");
        must("ip", &["netns", "add", &ns]);
        must(
            "ip",
            &[
                "-n", &hub, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        must(
            "ip",
            &["-n", &hub, "link", "set", &v, "master", "br0", "up"],
        );
        must(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                "eth0",
            ],
        );
        must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns);
        i
    }

    /// Makes exactly the node pairs for which `connected(a, b)` is false unable to reach each
    /// other (both directions, DROP on both ends); everything else, including the test
    /// process, stays reachable. Replaces any earlier partition.
    pub fn partition(&self, connected: impl Fn(usize, usize) -> bool) {
        for a in 0..self.len() {
            let mut rules = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            for b in 0..self.len() {
                if a != b && !(connected(a, b) && connected(b, a)) {
                    let ip = self.ip(b);
                    rules.push_str(&format!("-A INPUT -s {ip} -j DROP\n"));
                    rules.push_str(&format!("-A OUTPUT -d {ip} -j DROP\n"));
                }
            }
            rules.push_str("COMMIT\n");
            if let Err(e) = run_input(
                "ip",
                &["netns", "exec", self.ns(a), "iptables-restore"],
                Some(&rules),
            ) {
                panic!("partition: {e}");
            }
        }
    }

    /// Removes every partition rule.
    pub fn heal(&self) {
        self.partition(|_, _| true);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        cleanup_prefix(self.x);
    }
}

/// Removes the leftovers of crashed runs: every X that has namespaces or a root veth of ours
/// but whose lock no live run holds.
fn sweep_leftovers() {
    let mut xs: Vec<u8> = Vec::new();
    let names = run("ip", &["netns", "list"]).unwrap_or_default()
        + &run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for word in names.split(|c: char| c.is_whitespace() || c == ':' || c == '@') {
        let Some(rest) = word.strip_prefix("sqf") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        let ours = tail == "h" || tail == "hub" || tail.starts_with('n');
        if let (true, Ok(x)) = (ours, digits.parse::<u8>()) {
            if !xs.contains(&x) {
                xs.push(x);
            }
        }
    }
    for x in xs {
        if let Some(lock) = try_lock(x) {
            cleanup_prefix(x);
            drop(lock);
        }
    }
}

/// Third octets of 10.201.X.0/24 networks that interfaces on the host already use.
fn host_subnets() -> Vec<u8> {
    let out = run("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix(&format!("{NET_PREFIX}.")))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// Whether the only user of 10.201.X.0/24 on the host is a leftover of our own (`sqfXh`).
fn leftover_owns_subnet(x: u8) -> bool {
    let out = run("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
    let needle = format!(" {NET_PREFIX}.{x}.");
    out.lines()
        .filter(|l| l.contains(&needle))
        .all(|l| l.split_whitespace().nth(1) == Some(&format!("sqf{x}h")))
}

/// An exclusive, non-blocking lock on X, or `None` if another live run holds it.
fn try_lock(x: u8) -> Option<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{LOCK_DIR}/{x}.lock"))
        .ok()?;
    // SAFETY: flock on an fd we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

/// The prefix of data directories of runs that claimed X (tmpfs mounts live under them).
pub fn data_dir_prefix(x: u8) -> String {
    format!("sqlraft-faults-{x}-")
}

/// Removes everything named with X's prefix: the root veth, the namespaces, and tmpfs mounts
/// under that X's data dirs. Only called while holding X's lock.
fn cleanup_prefix(x: u8) {
    let prefix = format!("sqf{x}");
    // The root-side veth first: deleting a namespace destroys its veths asynchronously.
    let _ = run("ip", &["link", "del", &format!("{prefix}h")]);
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let ours = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest == "hub" || rest.starts_with('n'));
            if ours {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    let tmp = std::env::temp_dir();
    let dir_prefix = tmp.join(data_dir_prefix(x)).display().to_string();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for target in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if target.starts_with(&dir_prefix) {
                let _ = run("umount", &["-l", target]);
            }
        }
    }
    // Loop devices backed by files under those data dirs.
    if let Ok(list) = run("losetup", &["-l", "-n", "-O", "NAME,BACK-FILE"]) {
        for line in list.lines() {
            let mut w = line.split_whitespace();
            if let (Some(dev), Some(file)) = (w.next(), w.next()) {
                if file.starts_with(&dir_prefix) {
                    let _ = run("losetup", &["-d", dev]);
                }
            }
        }
    }
    // I/O throttling cgroups.
    if let Some((root, _)) = crate::cluster::cgroup::io_root() {
        let ours = crate::cluster::cgroup::prefix(x);
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name
                    .strip_prefix(&ours)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
                {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}
