//! A real etcd for tests: Debian's `etcd` binary as a single-member cluster.
//!
//! Owns: one etcd process per [`EtcdServer`], its data directory (a temp dir) and its two
//! loopback ports (client and peer), chosen by the OS. Killed by PID, and its directory
//! removed, on drop. Does not: TLS, authentication or multi-member clusters.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to report healthy (a loaded 2-core machine runs tests in parallel).
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

/// How often to look for two free ports again when etcd lost a race for one.
const PORT_ATTEMPTS: usize = 5;

/// Starts etcd servers; see [`Etcd::start`].
#[derive(Debug)]
pub struct Etcd;

/// A running single-member etcd on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdServer {
    /// `http://127.0.0.1:<port>`, an etcd client endpoint.
    pub client_url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    ///
    /// # Panics
    /// When it cannot (no `etcd` binary, or it does not become healthy within 30 s), with
    /// the reason and the end of etcd's log: a test cannot go on without its etcd.
    pub fn start() -> EtcdServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Etcd::start`], returning the reason instead of panicking.
    pub fn try_start() -> Result<EtcdServer, String> {
        let bin = binary()?;
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match start_once(&bin)? {
                Started::Up(s) => return Ok(s),
                // Another process took a port between our probe and etcd's bind: new ports.
                Started::PortTaken(log) => last = log,
            }
        }
        Err(format!("etcd could not bind free loopback ports in {PORT_ATTEMPTS} attempts; last log:\n{last}"))
    }
}

impl EtcdServer {
    /// The client endpoint, `http://127.0.0.1:<port>`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills etcd now (SIGKILL to its PID) and reaps it: its ports refuse connections from
    /// here on. Idempotent; drop does the same.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The end of etcd's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("etcd.log"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Started {
    Up(EtcdServer),
    PortTaken(String),
}

fn binary() -> Result<PathBuf, String> {
    let candidates = [
        PathBuf::from("/usr/bin/etcd"),
        PathBuf::from("/usr/local/bin/etcd"),
    ];
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "etcd binary not found (looked for /usr/bin/etcd and etcd on PATH): `.ci/run` installs \
         Debian's `etcd-server` package (apt-get install etcd-server)"
                .to_string()
        })
}

/// Two distinct ports that were free a moment ago (both listeners held at once so the OS
/// cannot hand out the same port twice).
fn two_free_ports() -> Result<(u16, u16), String> {
    let bind = || TcpListener::bind("127.0.0.1:0").and_then(|l| Ok((l.local_addr()?.port(), l)));
    let (a, _la) = bind().map_err(|e| format!("no free loopback port: {e}"))?;
    let (b, _lb) = bind().map_err(|e| format!("no free loopback port: {e}"))?;
    Ok((a, b))
}

fn start_once(bin: &Path) -> Result<Started, String> {
    let dir = tempfile::Builder::new()
        .prefix("sqlraft-etcd-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let (client_port, peer_port) = two_free_ports()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log_path = dir.path().join("etcd.log");
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;

    let mut cmd = Command::new(bin);
    // A clean environment: stray ETCD_* variables would override the flags.
    cmd.env_clear();
    if std::env::consts::ARCH == "aarch64" {
        // etcd 3.4 refuses to run on arm64 unless told this.
        cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
    }
    let name = "sqlraft-test";
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("{name}={peer_url}"),
            "--initial-cluster-state",
            "new",
        ])
        .args([
            "--initial-cluster-token",
            &format!("sqlraft-test-{client_port}"),
        ])
        // A lone member elects itself after one election timeout: keep that short.
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let child = cmd
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", bin.display()))?;
    let mut server = EtcdServer {
        client_url,
        child,
        dir,
    };

    let client_addr = SocketAddr::from(([127, 0, 0, 1], client_port));
    let deadline = Instant::now() + HEALTH_DEADLINE;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let tail = server.log_tail();
            if tail.contains("address already in use") {
                return Ok(Started::PortTaken(tail));
            }
            return Err(format!(
                "etcd exited ({status}) before becoming healthy; its log ends:\n{tail}"
            ));
        }
        if healthy(client_addr) {
            return Ok(Started::Up(server));
        }
        if Instant::now() >= deadline {
            let tail = server.log_tail();
            server.kill();
            return Err(format!(
                "etcd at {} not healthy within {HEALTH_DEADLINE:?}; its log ends:\n{tail}",
                server.client_url
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /health` answers `{"health":"true",...}` once the member has a leader.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains("\"health\":\"true\"")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
