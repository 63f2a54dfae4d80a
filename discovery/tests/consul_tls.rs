//! The Consul client's `"scheme": "https"` settings against a real TLS server.
//!
//! The server is `openssl s_server -www` on a loopback port the OS picks: it completes the
//! handshake, then answers any request with an HTML status page. So a call that gets through
//! TLS fails as `Protocol` (the page is not Consul's JSON), and one stopped by TLS fails as
//! `Unavailable`: which of the two tells whether verification accepted the server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use sqlraft_discovery::consul::{Consul, ConsulConfig, ConsulTls};
use sqlraft_discovery::{DiscoveryError, LeaderKey};

/// A CA, and a leaf it signed for `consul.test` and 127.0.0.1 (server and client use).
struct Cert {
    dir: tempfile::TempDir,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let ext = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:consul.test,IP:127.0.0.1\n\
                   extendedKeyUsage=serverAuth,clientAuth\n";
        std::fs::write(dir.path().join("leaf.ext"), ext).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "key.pem",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=consul.test",
                ],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        ];
        for (i, args) in steps.iter().enumerate() {
            let mut cmd = Command::new("openssl");
            cmd.current_dir(dir.path()).args(args);
            if i == 0 {
                cmd.args(["-subj", "/CN=sqlraft test CA"]);
            }
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("openssl (Debian package `openssl`) is needed: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Cert { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// `openssl s_server`, killed on drop.
struct TlsServer {
    child: Child,
    addr: String,
}

impl TlsServer {
    /// `require_client_cert`: the client must present a certificate signed by `cert`.
    fn start(cert: &Cert, require_client_cert: bool) -> TlsServer {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(cert.cert())
            .arg("-key")
            .arg(cert.key());
        if require_client_cert {
            cmd.args(["-Verify", "1", "-CAfile"]).arg(cert.ca());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // s_server prints "ACCEPT 127.0.0.1:<port>" once it listens.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ACCEPT ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("openssl s_server did not start listening");
        TlsServer { child, addr }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https(server: &TlsServer, tls: ConsulTls) -> ConsulConfig {
    ConsulConfig {
        address: server.addr.clone(),
        scheme: "https".into(),
        tls_config: Some(tls),
        ..Default::default()
    }
}

async fn outcome(cfg: ConsulConfig) -> DiscoveryError {
    let c = Consul::new(cfg, "tls")
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    c.get().await.expect_err("s_server's page is no KV answer")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn ca_file_and_server_name_are_verified() {
    let cert = Cert::new();
    let server = TlsServer::start(&cert, false);

    // The configured CA vouches for 127.0.0.1: through TLS.
    let e = outcome(https(
        &server,
        ConsulTls {
            ca_file: path(&cert.ca()),
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");

    // The system roots do not know the self-signed certificate.
    let e = outcome(https(&server, ConsulTls::default())).await;
    assert!(matches!(e, DiscoveryError::Unavailable { .. }), "{e}");

    // ... unless verification is off.
    let e = outcome(https(
        &server,
        ConsulTls {
            insecure_skip_verify: true,
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");

    // tls_config.address names the server to verify while the connection goes to `address`;
    // ca_pem may be base64 of the PEM, as Go's JSON encodes bytes.
    let pem = std::fs::read(cert.ca()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
    let named = |name: &str| ConsulTls {
        ca_pem: b64.clone(),
        address: name.into(),
        ..Default::default()
    };
    let e = outcome(https(&server, named("consul.test:8501"))).await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");
    let e = outcome(https(&server, named("other.test"))).await;
    assert!(matches!(e, DiscoveryError::Unavailable { .. }), "{e}");

    // ca_path: every file must hold certificates (as Consul's Go client demands); this
    // directory also holds the key.
    let cfg = https(
        &server,
        ConsulTls {
            ca_path: path(cert.dir.path()),
            ..Default::default()
        },
    );
    assert!(matches!(
        Consul::new(cfg, "tls"),
        Err(DiscoveryError::Config(_))
    ));
}

#[tokio::test]
async fn ca_path_reads_every_pem_file() {
    let cert = Cert::new();
    let server = TlsServer::start(&cert, false);
    let cas = tempfile::tempdir().unwrap();
    std::fs::create_dir(cas.path().join("sub")).unwrap();
    std::fs::copy(cert.ca(), cas.path().join("sub").join("ca.pem")).unwrap();
    let e = outcome(https(
        &server,
        ConsulTls {
            ca_path: path(cas.path()),
            ..Default::default()
        },
    ))
    .await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");
}

#[tokio::test]
async fn client_certificate_is_presented() {
    let cert = Cert::new();
    let server = TlsServer::start(&cert, true);
    let ca = path(&cert.ca());

    let e = outcome(https(
        &server,
        ConsulTls {
            ca_file: ca.clone(),
            ..Default::default()
        },
    ))
    .await;
    assert!(
        matches!(e, DiscoveryError::Unavailable { .. }),
        "without a client certificate: {e}"
    );

    let with_files = ConsulTls {
        ca_file: ca.clone(),
        cert_file: path(&cert.cert()),
        key_file: path(&cert.key()),
        ..Default::default()
    };
    let e = outcome(https(&server, with_files)).await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");

    let with_pems = ConsulTls {
        ca_file: ca,
        cert_pem: std::fs::read_to_string(cert.cert()).unwrap(),
        key_pem: std::fs::read_to_string(cert.key()).unwrap(),
        ..Default::default()
    };
    let e = outcome(https(&server, with_pems)).await;
    assert!(matches!(e, DiscoveryError::Protocol { .. }), "{e}");
}
