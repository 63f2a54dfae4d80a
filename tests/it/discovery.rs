//! Clusters that form themselves through discovery: DNS A records, DNS SRV records, an etcd
//! key and a Consul key (the Consul server is the in-repo stand-in of its KV API; DNS and etcd
//! are real servers on loopback).
//!
//! For each mode: three nodes started at the same time form exactly one cluster; a fourth
//! started later with the same settings joins it; writes sent to any node are readable
//! (`strong`) from every other; all nodes stopped and restarted come back as the same cluster
//! with their data. For the key modes, a key left over from a wiped cluster is taken over.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::json;
use sqlraft::config::DiscoMode;
use sqlraft_discovery::testing::{DnsServer, TestRecord};
use tokio::net::TcpListener;

use crate::harness::{bind_pair, bind_pairs, rebind, TestCluster};

/// The checks every mode shares, on a running 3-node cluster.
async fn exactly_one_cluster_that_grows_serves_and_restarts(
    mut c: TestCluster,
    fourth: (TcpListener, TcpListener),
    tweak4: impl FnOnce(&mut sqlraft::config::Config),
) {
    // One cluster: every node sees the same leader and three voters.
    let leader = c.leader().await;
    let disco = c.client(leader).get("/status?key=disco").await;
    if disco.status == 200 {
        assert!(disco.json()["mode"].is_string(), "{}", disco.text());
    }
    // (A joiner is ready as soon as it hears from the leader, a moment before it is promoted
    // from learner to voter.)
    for i in 0..3 {
        c.client(i).wait_members("/nodes", 3, "three voters").await;
    }
    // Writes through any node are readable strongly from every other.
    c.client((leader + 1) % 3)
        .execute_ok(r#"["CREATE TABLE d (v)", "INSERT INTO d VALUES('via follower')"]"#)
        .await;
    c.client(leader)
        .execute_ok(r#"["INSERT INTO d VALUES('via leader')"]"#)
        .await;
    both_rows_read_strongly_on(&c, 0..3).await;
    // A fourth node with the same settings joins.
    let four = c.add_on(fourth, tweak4).await;
    c.client(leader)
        .wait_members("/nodes", 4, "the fourth node to be a member")
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM d", &json!([[2]]))
        .await;
    both_rows_read_strongly_on(&c, four..four + 1).await;
    // All of them stopped and restarted: the same cluster, with its data.
    c.restart_all().await;
    both_rows_read_strongly_on(&c, 0..4).await;
}

async fn both_rows_read_strongly_on(c: &TestCluster, nodes: std::ops::Range<usize>) {
    for i in nodes {
        let n = c.client(i).query_values("SELECT COUNT(*) FROM d", "strong");
        assert_eq!(n.await, json!([[2]]), "node {i}");
    }
}

/// The addresses of a node that starts later, released until then: a bound but idle listener
/// would accept connections and leave every call to it hanging, which a real absent node
/// does not do.
fn later(listeners: (TcpListener, TcpListener)) -> (std::net::SocketAddr, std::net::SocketAddr) {
    (
        listeners.0.local_addr().expect("addr"),
        listeners.1.local_addr().expect("addr"),
    )
}

fn discovery(cfg: &mut sqlraft::config::Config, mode: DiscoMode, config: serde_json::Value) {
    cfg.discovery = Some(sqlraft::config::Discovery {
        mode,
        config,
        dns_hosts: None,
    });
    cfg.cluster.join_interval = Duration::from_millis(200);
}

/// Listeners for node `i` of a `dns` cluster: every node on its own loopback address and the
/// same Raft port, as DNS A records give addresses but no ports.
async fn dns_listeners(i: u8, raft_port: u16) -> (TcpListener, TcpListener) {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i + 1));
    let http = TcpListener::bind((ip, 0)).await.expect("bind http");
    let raft = TcpListener::bind((ip, raft_port)).await.expect("bind raft");
    (http, raft)
}

/// A Raft port free on 127.0.0.1-127.0.0.4.
async fn common_free_port() -> u16 {
    for _ in 0..50 {
        let port = crate::harness::unused_port();
        let mut ok = true;
        for i in 1..=4u8 {
            if std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, i), port)).is_err() {
                ok = false;
            }
        }
        if ok {
            return port;
        }
    }
    panic!("no common free port on 127.0.0.1-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_list_forms_one_cluster() {
    // The same -join list of four addresses and -bootstrap-expect 3 on every node.
    let mut listeners = bind_pairs(4).await;
    let list: Vec<String> = listeners
        .iter()
        .map(|(_, r)| r.local_addr().unwrap().to_string())
        .collect();
    let fourth = later(listeners.pop().expect("4 listeners"));
    let set = |_: usize, cfg: &mut sqlraft::config::Config| {
        cfg.cluster.join = list.clone();
        cfg.cluster.bootstrap_expect = 3;
    };
    let c = TestCluster::start_concurrently(listeners, set).await;
    let fourth = (rebind(fourth.0).await, rebind(fourth.1).await);
    exactly_one_cluster_that_grows_serves_and_restarts(c, fourth, |cfg| set(3, cfg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_a_records_form_one_cluster() {
    let port = common_free_port().await;
    let records = (1..=4u8)
        .map(|i| TestRecord::addr("sqlraft.test.", IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))));
    let dns = DnsServer::start(records).await.expect("dns server");
    let conf = json!({"name": "sqlraft.test", "port": port, "nameserver": dns.addr().to_string()});
    let mut listeners = Vec::new();
    for i in 0..3u8 {
        listeners.push(dns_listeners(i, port).await);
    }
    let set = |i: usize, cfg: &mut sqlraft::config::Config| {
        discovery(cfg, DiscoMode::Dns, conf.clone());
        cfg.cluster.bootstrap_expect = 3;
        cfg.raft.addr = format!("127.0.0.{}:{port}", i + 1);
        cfg.http.addr = format!("127.0.0.{}:0", i + 1);
    };
    let c = TestCluster::start_concurrently(listeners, set).await;
    let fourth = dns_listeners(3, port).await;
    exactly_one_cluster_that_grows_serves_and_restarts(c, fourth, |cfg| set(3, cfg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_srv_records_form_one_cluster() {
    let mut listeners = bind_pairs(4).await;
    let mut records = Vec::new();
    for (i, (_, raft)) in listeners.iter().enumerate() {
        let host = format!("n{i}.sqlraft.test.");
        records.push(TestRecord::srv(
            "_raft._tcp.sqlraft.test.",
            host.clone(),
            raft.local_addr().unwrap().port(),
        ));
        records.push(TestRecord::addr(host, IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    let dns = DnsServer::start(records).await.expect("dns server");
    let conf =
        json!({"name": "sqlraft.test", "service": "raft", "nameserver": dns.addr().to_string()});
    let fourth = later(listeners.pop().expect("4 listeners"));
    let set = |_: usize, cfg: &mut sqlraft::config::Config| {
        discovery(cfg, DiscoMode::DnsSrv, conf.clone());
        cfg.cluster.bootstrap_expect = 3;
    };
    let c = TestCluster::start_concurrently(listeners, set).await;
    let fourth = (rebind(fourth.0).await, rebind(fourth.1).await);
    exactly_one_cluster_that_grows_serves_and_restarts(c, fourth, |cfg| set(3, cfg)).await;
}

/// Three nodes started at once with a key mode, its settings and `key`: they form one
/// cluster and pass the shared checks.
async fn key_forms_one_cluster(mode: DiscoMode, conf: serde_json::Value, key: &str) {
    let set = |_: usize, cfg: &mut sqlraft::config::Config| {
        discovery(cfg, mode, conf.clone());
        cfg.disco_key = key.into();
    };
    let c = TestCluster::start_concurrently(bind_pairs(3).await, set).await;
    exactly_one_cluster_that_grows_serves_and_restarts(c, bind_pair().await, |cfg| set(3, cfg))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_key_forms_one_cluster() {
    let etcd = sqlraft_discovery::testing::Etcd::start();
    let conf = json!({"endpoints": [etcd.client_url()]});
    key_forms_one_cluster(DiscoMode::EtcdKv, conf, "etcd-one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_key_forms_one_cluster() {
    let consul = sqlraft_discovery::consul_standin::ConsulStandin::start();
    let conf = json!({"address": consul.address()});
    key_forms_one_cluster(DiscoMode::ConsulKv, conf, "consul-one").await;
}

/// An address where nothing answers: a leader of a cluster that was wiped.
async fn dead_addr() -> String {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    dead.local_addr().expect("addr").to_string()
}

/// Three nodes started at once with a key mode, its settings, and the key `stale`; returns
/// the cluster and its leader.
async fn start_on_stale_key(mode: DiscoMode, conf: serde_json::Value) -> (TestCluster, usize) {
    let c = TestCluster::start_concurrently(bind_pairs(3).await, |_, cfg| {
        discovery(cfg, mode, conf.clone());
        cfg.disco_key = "stale".into();
    })
    .await;
    let leader = c.leader().await;
    (c, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_key_left_by_a_wiped_cluster_is_taken_over() {
    // As below, with Consul: the stale record is written straight into the stand-in.
    let consul = sqlraft_discovery::consul_standin::ConsulStandin::start();
    let old = json!({"id": "gone", "api_addr": "http://127.0.0.1:1", "addr": dead_addr().await});
    consul.put("stale/leader", old.to_string().as_bytes());
    let conf = json!({"address": consul.address()});
    let (c, leader) = start_on_stale_key(DiscoMode::ConsulKv, conf).await;
    let entry = consul.get("stale/leader").expect("a record");
    let now: serde_json::Value = serde_json::from_slice(&entry.value).expect("json");
    assert_eq!(
        now["id"], c.members[leader].id,
        "the key names the new leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_by_a_wiped_cluster_is_taken_over() {
    // Steps: the etcd key names a leader at an address where nothing answers (the cluster was
    // wiped); three new nodes must not retry it forever: within a bounded time one of them
    // takes the key over with compare-and-set and the others join it.
    let etcd = sqlraft_discovery::testing::Etcd::start();
    let keeper = sqlraft_discovery::etcd::Etcd::connect(
        serde_json::from_value(json!({"endpoints": [etcd.client_url()]})).expect("config"),
        "stale",
    )
    .expect("etcd client");
    use sqlraft_discovery::LeaderKey;
    let old = sqlraft_discovery::LeaderRecord {
        id: "gone".into(),
        api_addr: "http://127.0.0.1:1".into(),
        addr: dead_addr().await,
    };
    assert!(keeper.create(&old).await.expect("create"));
    let conf = json!({"endpoints": [etcd.client_url()]});
    let started = std::time::Instant::now();
    let (c, leader) = start_on_stale_key(DiscoMode::EtcdKv, conf).await;
    let now = keeper.get().await.expect("get").expect("a record");
    assert_eq!(
        now.record.id, c.members[leader].id,
        "the key names the new leader"
    );
    c.client(leader)
        .wait_members("/nodes", 3, "three voters")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A `sqlraftd` started with an extra environment; killed when dropped.
struct EnvProc {
    child: std::process::Child,
    client: crate::harness::Client,
}

impl Drop for EnvProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` and `env`; reads the HTTP address from its startup line.
fn spawn_with_env(args: &[String], env: (&str, &str)) -> EnvProc {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
        .args(args)
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sqlraftd");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("startup line");
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let http = v["http_addr"].as_str().expect("http_addr").to_string();
    EnvProc {
        child,
        client: crate::harness::Client::with_timeout(
            format!("http://{http}"),
            Duration::from_secs(5),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqlite_disco_dns_hosts_stands_in_for_the_dns_answer() {
    // Steps: three real processes with -disco-mode dns, no -disco-config (rqlite's default
    // name) and RQLITE_DISCO_DNS_HOSTS listing their Raft addresses, as rqlite's own tests
    // run it; they form one cluster of three voters that takes a write.
    let ports: Vec<u16> = (0..3).map(|_| crate::harness::unused_port()).collect();
    let hosts = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let nodes: Vec<EnvProc> = (0..3)
        .map(|i| {
            let args: Vec<String> = [
                "-node-id",
                &(i + 1).to_string(),
                "-http-addr",
                "127.0.0.1:0",
                "-raft-addr",
                &format!("127.0.0.1:{}", ports[i]),
                "-raft-election-timeout",
                "300ms",
                "-raft-heartbeat-timeout",
                "300ms",
                "-disco-mode",
                "dns",
                "-bootstrap-expect",
                "3",
                &dirs[i].path().to_string_lossy(),
            ]
            .map(String::from)
            .to_vec();
            spawn_with_env(&args, ("RQLITE_DISCO_DNS_HOSTS", &hosts))
        })
        .collect();
    for n in &nodes {
        n.client.wait_members("/nodes", 3, "three voters").await;
    }
    // What discovery saw is the list, not a DNS answer.
    let st = nodes[0].client.get("/status?key=disco").await.json();
    let mut want: Vec<String> = hosts.split(',').map(String::from).collect();
    want.sort();
    assert_eq!(st["last_addresses"], json!(want), "{st}");
    crate::harness::wait_until(CLUSTER_WAIT_DISCO, "a write through node 1", || async {
        matches!(
            nodes[0]
                .client
                .try_post_json("/db/execute", r#"["CREATE TABLE IF NOT EXISTS t (v)"]"#)
                .await,
            Ok(r) if r.status == 200
        )
    })
    .await;
}

const CLUSTER_WAIT_DISCO: Duration = Duration::from_secs(30);
