//! TLS on the API and between nodes, certificate reload, and slow-client limits. Every
//! certificate is generated at run time (rcgen) for 127.0.0.1 and localhost.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sqlraft::config::Config;
use sqlraft::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{cluster_config, wait_for, wait_until, Client, TestCluster, TestNode};

/// A test certificate authority, with a temporary directory that holds its certificate
/// (`ca.crt`), the certificates it issues, and whatever else a test writes there.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM), the bundle that verifies what it issued.
    pub(crate) cert: PathBuf,
}

/// PEM files of one issued certificate and its key.
pub(crate) struct Issued {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(p, key).expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("ca.crt");
        std::fs::write(&cert, issuer.pem()).expect("write CA");
        Self { issuer, dir, cert }
    }

    /// The directory of this CA's files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a certificate for 127.0.0.1 and localhost (server and client use) and returns
    /// its PEM and its key's PEM.
    fn issue_pem(&self, cn: &str) -> (String, String) {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Issues a certificate into `<name>.crt` and `<name>.key` in [`Ca::dir`].
    pub(crate) fn issue(&self, name: &str) -> Issued {
        let (cert, key) = self.issue_pem(name);
        let out = Issued {
            cert: self.dir().join(format!("{name}.crt")),
            key: self.dir().join(format!("{name}.key")),
        };
        std::fs::write(&out.cert, cert).expect("write cert");
        std::fs::write(&out.key, key).expect("write key");
        out
    }

    /// Certificates for `n` nodes, `node1` to `node<n>`.
    pub(crate) fn issue_nodes(&self, n: usize) -> Vec<Issued> {
        (1..=n).map(|i| self.issue(&format!("node{i}"))).collect()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A strict rustls client config: trusts only `ca`, presents `identity` if given.
fn client_tls(ca: &Ca, identity: Option<&Issued>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("add CA to roots");
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    match identity {
        Some(id) => {
            let chain = CertificateDer::pem_file_iter(&id.cert)
                .expect("cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert");
            let key = PrivateKeyDer::from_pem_file(&id.key).expect("key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => b.with_no_client_auth(),
    }
}

/// An HTTPS client of `addr` that trusts only `ca`.
fn https_client(addr: std::net::SocketAddr, ca: &Ca, identity: Option<&Issued>) -> Client {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(ca, identity))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    Client::from_reqwest(format!("https://{addr}"), http)
}

/// The leaf certificate the server at `addr` presents in a handshake.
async fn served_cert(addr: std::net::SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca, None)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().expect("peer certificates")[0].clone()
}

pub(crate) fn https_config(cfg: &mut Config, id: &Issued) {
    cfg.tls.http_cert = Some(id.cert.clone());
    cfg.tls.http_key = Some(id.key.clone());
}

/// A node serving HTTPS with a certificate `ca` issued, that certificate, and the API address.
async fn https_node(ca: &Ca) -> (TestNode, Issued, SocketAddr) {
    let server = ca.issue("node");
    let n = TestNode::start_with(|cfg| https_config(cfg, &server)).await;
    let addr = n.node.as_ref().expect("node").http_addr();
    (n, server, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_clients_that_trust_the_ca_and_answers_plain_http_cleanly() {
    let ca = Ca::new("test CA");
    let (_node, _, addr) = https_node(&ca).await;
    let c = https_client(addr, &ca, None);

    c.execute_ok(
        r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t(v) VALUES('x')"]"#,
    )
    .await;
    assert_eq!(
        c.query_values("SELECT v FROM t", "weak").await,
        serde_json::json!([["x"]])
    );
    // The node advertises an https API address.
    let r = c.get("/nodes").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"api_addr\":\"https://"), "{}", r.text());

    // Plain HTTP to the HTTPS port: a clean 400, not a hang or a crash.
    let plain = Client::with_timeout(format!("http://{addr}"), Duration::from_secs(5));
    let r = plain.try_get("/status").await.expect("an answer");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("HTTP request to an HTTPS server"),
        "{}",
        r.text()
    );
    // Garbage that is not even HTTP.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"\x00\x01\x02garbage\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .expect("closed promptly");

    // A client that does not trust the CA is refused.
    let other = Ca::new("other CA");
    let stranger = https_client(addr, &other, None);
    assert!(stranger.try_get("/status").await.is_err());

    // The node still serves.
    assert_eq!(c.get("/status").await.status, 200);
    assert_eq!(
        c.query_values("SELECT COUNT(*) FROM t", "weak").await,
        serde_json::json!([[1]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_client_requires_a_certificate_from_the_ca() {
    let ca = Ca::new("test CA");
    let server = ca.issue("node");
    let client_id = ca.issue("client");
    let other = Ca::new("other CA");
    let foreign_id = other.issue("foreign");
    let n = TestNode::start_with(|cfg| {
        https_config(cfg, &server);
        cfg.tls.http_ca_cert = Some(ca.cert.clone());
        cfg.tls.http_verify_client = true;
    })
    .await;
    let addr = n.node.as_ref().expect("node").http_addr();

    let anonymous = https_client(addr, &ca, None);
    let e = anonymous
        .try_get("/status")
        .await
        .expect_err("no client certificate must be refused");
    assert!(!e.is_empty());
    let foreign = https_client(addr, &ca, Some(&foreign_id));
    assert!(foreign.try_get("/status").await.is_err());

    let good = https_client(addr, &ca, Some(&client_id));
    assert_eq!(good.get("/status").await.status, 200);
    good.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)"]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_client_without_a_ca_is_a_startup_error() {
    let ca = Ca::new("test CA");
    let server = ca.issue("node");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = crate::harness::test_config(dir.path());
    https_config(&mut cfg, &server);
    cfg.tls.http_verify_client = true;
    let e = start_err(cfg).await;
    assert!(e.contains("-http-ca-cert"), "{e}");

    // A key that does not belong to the certificate: the error names the files.
    let other = ca.issue("other");
    let mut cfg = crate::harness::test_config(dir.path());
    cfg.tls.http_cert = Some(server.cert.clone());
    cfg.tls.http_key = Some(other.key.clone());
    let e = start_err(cfg).await;
    assert!(e.contains("other.key") && e.contains("node.crt"), "{e}");

    // A missing file.
    let mut cfg = crate::harness::test_config(dir.path());
    cfg.tls.node_cert = Some(ca.dir().join("missing.crt"));
    cfg.tls.node_key = Some(server.key.clone());
    let e = start_err(cfg).await;
    assert!(e.contains("missing.crt"), "{e}");
}

/// Starts a node that must fail to start, or to become part of a cluster (a node serves its
/// API while it joins); returns the error.
async fn start_err(cfg: Config) -> String {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    match Node::start_with(cfg, http, raft).await {
        Ok(n) => {
            let formed = tokio::time::timeout(Duration::from_secs(30), n.formed())
                .await
                .expect("formation to end");
            n.shutdown().await;
            match formed {
                Err(e) => e,
                Ok(()) => panic!("the node started and joined"),
            }
        }
        Err(e) => e.to_string(),
    }
}

/// Node-to-node TLS settings with mutual verification.
fn node_tls(cfg: &mut Config, id: &Issued, ca: &Path) {
    cfg.tls.node_cert = Some(id.cert.clone());
    cfg.tls.node_key = Some(id.key.clone());
    cfg.tls.node_ca_cert = Some(ca.to_path_buf());
    cfg.tls.node_verify_client = true;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_tls_cluster_forms_forwards_and_fails_over() {
    let ca = Ca::new("cluster CA");
    let ids = ca.issue_nodes(3);
    let mut c = TestCluster::start_with(3, |i, cfg| {
        node_tls(cfg, &ids[i], &ca.cert);
        // The other nodes' certificates are checked for this name, not their address.
        if i == 2 {
            cfg.tls.node_verify_server_name = Some("localhost".into());
        }
    })
    .await;
    let (l, f) = c.leader_and_follower().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]"#)
        .await;
    // A follower's write is forwarded to the leader over TLS.
    let r = c
        .client(f)
        .post_json("/db/execute", r#"[["INSERT INTO t(v) VALUES(?)", "fwd"]]"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("X-Rqlite-Served-By").as_deref(),
        Some(c.members[l].raft_adv().as_str())
    );
    // Reads through the log from a follower, forwarded too.
    assert_eq!(
        c.client(f).query_values("SELECT v FROM t", "strong").await,
        serde_json::json!([["fwd"]])
    );

    // The leader dies: the others elect a new one over TLS and keep accepting writes.
    c.kill(l).await;
    let live = c.live();
    let nl = c.wait_for_leader_among(&live).await;
    assert_ne!(nl, l);
    c.client(nl)
        .execute_ok(r#"[["INSERT INTO t(v) VALUES(?)", "after"]]"#)
        .await;
    let other = live.iter().copied().find(|&i| i != nl).expect("a follower");
    wait_until(Duration::from_secs(10), "the write to replicate", || {
        let cl = c.client(other).clone();
        async move {
            cl.query_values("SELECT COUNT(*) FROM t", "none").await == serde_json::json!([[2]])
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let ca = Ca::new("cluster CA");
    let ids = ca.issue_nodes(2);
    let c = TestCluster::start_with(2, |i, cfg| node_tls(cfg, &ids[i], &ca.cert)).await;
    let l = c.leader().await;

    // A node with `id`, trusting `trusted`, tries to join; the error it fails with.
    let join = |id: &Issued, trusted: &Path, node_id: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = cluster_config(dir.path(), node_id);
        node_tls(&mut cfg, id, trusted);
        cfg.cluster.join = vec![c.members[l].raft_adv()];
        cfg.cluster.join_attempts = 3;
        cfg.cluster.join_interval = Duration::from_millis(100);
        async move {
            let e = start_err(cfg).await;
            // The data directory outlives the node.
            drop(dir);
            e
        }
    };
    let rogue_ca = Ca::new("rogue CA");
    let rogue_id = rogue_ca.issue("rogue");
    let e = join(&rogue_id, &rogue_ca.cert, "9").await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // It trusts the cluster's CA but presents its own certificate: the cluster refuses it
    // (-node-verify-client).
    let e = join(&rogue_id, &ca.cert, "10").await;
    assert!(e.contains("failed to join"), "{e}");

    // The cluster is unchanged and still serves.
    let r = c.client(l).get("/nodes?nonvoters").await;
    assert_eq!(r.status, 200);
    let nodes = r.json();
    assert_eq!(nodes.as_object().map(|o| o.len()), Some(2), "{nodes}");
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)"]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_bytes_is_cut_off_by_the_read_timeout() {
    let n = TestNode::start_with(|cfg| cfg.http.read_timeout = Duration::from_secs(1)).await;
    let addr = n.node.as_ref().expect("node").http_addr();

    // Headers one byte at a time, forever.
    let headers = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        for b in b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        }
        started.elapsed()
    });
    // A body one byte at a time.
    let body = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .expect("write");
        let mut got = Vec::new();
        loop {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&got).into_owned(),
        )
    });

    // Meanwhile, as long as the tricklers are connected, others are served.
    let mut served = 0;
    while !headers.is_finished() || !body.is_finished() {
        let t = Instant::now();
        assert_eq!(n.client.get("/status").await.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1));
        served += 1;
    }
    assert!(served > 0);

    let took = headers.await.expect("headers task");
    assert!(
        took < Duration::from_secs(5),
        "headers trickler lasted {took:?}"
    );
    let (took, answer) = body.await.expect("body task");
    assert!(
        took < Duration::from_secs(5),
        "body trickler lasted {took:?}"
    );
    assert!(
        answer.is_empty() || answer.contains("read timeout"),
        "{answer}"
    );
    assert_eq!(n.client.get("/status").await.status, 200);

    // A connection that never sends anything is closed too.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle connection closed");
    assert!(matches!(r, Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_are_served_without_a_restart() {
    let ca = Ca::new("test CA");
    let (_node, server, addr) = https_node(&ca).await;
    let first = CertificateDer::from_pem_file(&server.cert).expect("cert");
    assert_eq!(served_cert(addr, &ca).await, first);

    // Replace both files (write aside, then rename over, as a certificate manager would).
    let (cert, key) = ca.issue_pem("node-renewed");
    let tmp_cert = ca.dir().join("new.crt");
    let tmp_key = ca.dir().join("new.key");
    std::fs::write(&tmp_cert, &cert).expect("write");
    std::fs::write(&tmp_key, &key).expect("write");
    std::fs::rename(&tmp_key, &server.key).expect("rename");
    std::fs::rename(&tmp_cert, &server.cert).expect("rename");
    let renewed = CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert");
    assert_ne!(renewed, first);

    wait_for(Duration::from_secs(10), "the renewed certificate", || {
        let ca = &ca;
        let renewed = renewed.clone();
        async move { (served_cert(addr, ca).await == renewed).then_some(()) }
    })
    .await;
    let c = https_client(addr, &ca, None);
    assert_eq!(c.get("/status").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let n = TestNode::start_with(|cfg| {
        cfg.http.max_connections = 1;
        cfg.http.read_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = n.node.as_ref().expect("node").http_addr();
    // The harness client's pooled connection holds the only slot until the server closes it
    // as idle.
    let fresh = || Client::with_timeout(format!("http://{addr}"), Duration::from_millis(700));
    wait_until(
        Duration::from_secs(10),
        "the idle connection to close",
        || {
            let c = fresh();
            async move { c.try_get("/status").await.is_ok() }
        },
    )
    .await;

    // A keep-alive connection takes the slot (once the probe's connection is closed)...
    let mut held = TcpStream::connect(addr).await.expect("connect");
    held.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let k = held.read(&mut buf).await.expect("read");
    assert!(buf[..k].starts_with(b"HTTP/1.1 200"));
    // ...so another client waits.
    assert!(fresh().try_get("/status").await.is_err());
    // Once it is gone, the next one is served.
    drop(held);
    wait_until(Duration::from_secs(5), "a free slot", || {
        let c = fresh();
        async move { c.try_get("/status").await.is_ok() }
    })
    .await;
}

/// Issue 9, input 5: over HTTPS with HTTP/2 (curl's default), a POST refused with 401 (no
/// credentials, or a user without `execute`) reaches the client as a 401, on the leader and
/// through a follower, never as a reset stream (curl's "error 92" before the fix).
#[tokio::test(flavor = "multi_thread")]
async fn refused_posts_over_http2_get_their_401() {
    let ca = Ca::new("api CA");
    let ids = ca.issue_nodes(2);
    let auth = ca.dir().join("auth.json");
    std::fs::write(
        &auth,
        r#"[{"username":"*","perms":["ready","status"]},
            {"username":"node","password":"npw","perms":["all"]},
            {"username":"reader","password":"rpw","perms":["query"]}]"#,
    )
    .expect("auth file");
    let c = TestCluster::start_with(2, |i, cfg| {
        https_config(cfg, &ids[i]);
        cfg.auth = Some(auth.clone());
        cfg.cluster.join_as = Some("node".into());
    })
    .await;
    let body = ca.dir().join("body.json");
    std::fs::write(&body, format!("[\"{}\"]", "x".repeat(256 * 1024))).expect("body");
    let (l, f) = c.leader_and_follower().await;
    for node in [l, f] {
        let url = c.members[node].api_url().replace("http://", "https://") + "/db/execute";
        for creds in [None, Some("reader:rpw")] {
            for _ in 0..5 {
                let mut cmd = std::process::Command::new("curl");
                cmd.args(["-s", "--http2", "--cacert"])
                    .arg(&ca.cert)
                    .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
                    .args(["-XPOST", "-H", "Content-Type: application/json"])
                    .arg("--data-binary")
                    .arg(format!("@{}", body.display()))
                    .arg(&url);
                if let Some(u) = creds {
                    cmd.args(["-u", u]);
                }
                let out = cmd
                    .output()
                    .expect("curl must be installed (.ci/run installs it)");
                let got = String::from_utf8_lossy(&out.stdout).to_string();
                assert_eq!(got, "401 2", "{url} creds {creds:?}: curl {:?}", out.status);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_common_name_admits_only_that_name_on_the_api_and_between_nodes() {
    // Steps: the API with -http-verify-common-name: a client certificate from the CA with the
    // required name gets in, one with another name is refused. A 2-node cluster with
    // -node-verify-common-name forms with certificates carrying the name; a node whose
    // certificate comes from the same CA under another name cannot join. Each flag without
    // its -*-verify-client refuses to start.
    let ca = Ca::new("test CA");
    // The harness's own client presents the server's certificate: it carries the name too.
    let app = ca.issue("app");
    let intruder = ca.issue("intruder");
    let n = TestNode::start_with(|cfg| {
        https_config(cfg, &app);
        cfg.tls.http_ca_cert = Some(ca.cert.clone());
        cfg.tls.http_verify_client = true;
        cfg.tls.http_verify_common_name = Some("app".into());
    })
    .await;
    let addr = n.node.as_ref().expect("node").http_addr();
    assert_eq!(
        https_client(addr, &ca, Some(&app))
            .get("/status")
            .await
            .status,
        200
    );
    assert!(https_client(addr, &ca, Some(&intruder))
        .try_get("/status")
        .await
        .is_err());

    let member = ca.issue("cluster-member");
    let c = TestCluster::start_with(2, |_, cfg| {
        node_tls(cfg, &member, &ca.cert);
        cfg.tls.node_verify_common_name = Some("cluster-member".into());
    })
    .await;
    let l = c.leader().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = cluster_config(dir.path(), "9");
    node_tls(&mut cfg, &intruder, &ca.cert);
    cfg.tls.node_verify_common_name = Some("cluster-member".into());
    cfg.cluster.join = vec![c.members[l].raft_adv()];
    cfg.cluster.join_attempts = 3;
    cfg.cluster.join_interval = Duration::from_millis(100);
    let e = start_err(cfg).await;
    assert!(e.contains("failed to join"), "{e}");
    let r = c.client(l).get("/nodes?nonvoters").await;
    assert_eq!(r.json().as_object().map(|o| o.len()), Some(2));

    for (flag, tweak) in [
        (
            "-http-verify-common-name requires -http-verify-client",
            (|cfg: &mut Config| cfg.tls.http_verify_common_name = Some("x".into()))
                as fn(&mut Config),
        ),
        (
            "-node-verify-common-name requires -node-verify-client",
            |cfg: &mut Config| cfg.tls.node_verify_common_name = Some("x".into()),
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = crate::harness::test_config(dir.path());
        tweak(&mut cfg);
        let e = cfg.validate().expect_err(flag).to_string();
        assert!(e.contains(flag.split(' ').next().unwrap_or(flag)), "{e}");
        assert!(e.contains("requires -"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_with_the_wrong_common_name_is_refused_with_one_log_line() {
    // Steps: the real sqlraftd with node TLS, -node-verify-client and
    // -node-verify-common-name; a TLS client with a certificate from the same CA but another
    // name connects to its internode port: the handshake fails, and the node's log has
    // exactly one line about it, naming the certificate's name and the required one.
    let ca = Ca::new("test CA");
    let node = ca.issue("member");
    let rogue = ca.issue("rogue");
    let data = tempfile::tempdir().expect("tempdir");
    let log_path = ca.dir().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = crate::harness::node_command("1", "127.0.0.1:0", "127.0.0.1:0")
        .args(["-node-cert", node.cert.to_str().expect("utf-8")])
        .args(["-node-key", node.key.to_str().expect("utf-8")])
        .args(["-node-ca-cert", ca.cert.to_str().expect("utf-8")])
        .args(["-node-verify-client", "-node-verify-common-name", "member"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn sqlraftd");
    let v = crate::harness::startup_line(&mut child).expect("startup line");
    let raft: std::net::SocketAddr = v["raft_addr"]
        .as_str()
        .expect("raft_addr")
        .parse()
        .expect("address");

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&ca, Some(&rogue))));
    let tcp = TcpStream::connect(raft).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    // TLS 1.3: the client finishes its side first; the refusal arrives as an alert on read.
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "the rogue certificate was accepted");
    let lines = wait_for(Duration::from_secs(10), "the refusal in the log", || {
        let p = log_path.clone();
        async move {
            let text = std::fs::read_to_string(&p).ok()?;
            let hits: Vec<String> = text
                .lines()
                .filter(|l| l.contains("rogue"))
                .map(str::to_string)
                .collect();
            (!hits.is_empty()).then_some(hits)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("\"rogue\"")
            && lines[0].contains("-node-verify-common-name requires \"member\""),
        "{}",
        lines[0]
    );
}
