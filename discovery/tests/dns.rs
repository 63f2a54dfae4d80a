//! `dns` and `dns-srv` discovery against a real DNS server on 127.0.0.1 (hickory-server,
//! started per test on an OS-assigned port by `testing::DnsServer`).

use std::time::{Duration, Instant};

use sqlraft_discovery::dns::{Dns, DnsConfig, DnsSrv, DnsSrvConfig};
use sqlraft_discovery::testing::{DnsServer, TestRecord};
use sqlraft_discovery::{DiscoveryError, Lookup, Peer};
use tokio::net::UdpSocket;

const SRV_NAME: &str = "_rqlite-raft._tcp.rqlite.local";

fn dns(server: &str, name: &str, port: Option<u16>) -> Dns {
    let cfg = DnsConfig {
        name: name.into(),
        port,
        nameserver: Some(server.into()),
    };
    Dns::new(cfg, 4002).unwrap()
}

fn dns_srv(server: &str, name: &str) -> DnsSrv {
    let cfg = DnsSrvConfig {
        name: name.into(),
        service: "rqlite-raft".into(),
        nameserver: Some(server.into()),
    };
    DnsSrv::new(cfg).unwrap()
}

fn addrs(peers: Vec<Peer>) -> Vec<String> {
    peers.into_iter().map(|p| p.raft_addr).collect()
}

#[tokio::test]
async fn dns_finds_every_address_of_a_name_with_the_configured_port() {
    // Steps: serve three A records for rqlite.cluster (out of order); look it up with port 4012.
    let server = DnsServer::start([
        TestRecord::addr("rqlite.cluster", [127, 0, 0, 3]),
        TestRecord::addr("rqlite.cluster", [127, 0, 0, 1]),
        TestRecord::addr("rqlite.cluster", [127, 0, 0, 2]),
        TestRecord::addr("other.cluster", [127, 0, 0, 9]),
    ])
    .await
    .unwrap();
    let lookup = dns(&server.addr().to_string(), "rqlite.cluster", Some(4012));

    let got = addrs(lookup.lookup().await.unwrap());

    assert_eq!(got, ["127.0.0.1:4012", "127.0.0.2:4012", "127.0.0.3:4012"]);
    let status = lookup.status();
    assert_eq!(
        (status.mode.as_str(), status.target.as_str()),
        ("dns", "rqlite.cluster")
    );
    assert_eq!(status.last_addresses, got);
    assert!(status.last_contact.is_some() && status.last_error.is_none());
}

#[tokio::test]
async fn dns_without_a_port_uses_the_nodes_raft_port_and_brackets_ipv6() {
    let server = DnsServer::start([
        TestRecord::addr("rqlite.cluster", [127, 0, 0, 1]),
        TestRecord::addr("rqlite.cluster", std::net::Ipv6Addr::LOCALHOST),
    ])
    .await
    .unwrap();

    let got = addrs(
        dns(&server.addr().to_string(), "rqlite.cluster.", None)
            .lookup()
            .await
            .unwrap(),
    );

    assert_eq!(got, ["127.0.0.1:4002", "[::1]:4002"]);
}

#[tokio::test]
async fn dns_srv_resolves_each_target_and_uses_its_port() {
    // Steps: three SRV records with different targets and ports, each target with its own A
    // record; the lookup gives ip:port per record.
    let server = DnsServer::start([
        TestRecord::srv(SRV_NAME, "node1.rqlite.local", 4002),
        TestRecord::srv(SRV_NAME, "node2.rqlite.local", 4012),
        TestRecord::srv(SRV_NAME, "node3.rqlite.local", 4022),
        TestRecord::addr("node1.rqlite.local", [127, 0, 0, 1]),
        TestRecord::addr("node2.rqlite.local", [127, 0, 0, 2]),
        TestRecord::addr("node3.rqlite.local", [127, 0, 0, 3]),
    ])
    .await
    .unwrap();
    let lookup = dns_srv(&server.addr().to_string(), "rqlite.local");

    let got = addrs(lookup.lookup().await.unwrap());

    assert_eq!(got, ["127.0.0.1:4002", "127.0.0.2:4012", "127.0.0.3:4022"]);
    let status = lookup.status();
    assert_eq!(
        (status.mode.as_str(), status.target.as_str()),
        ("dns-srv", SRV_NAME)
    );
    assert_eq!(status.last_addresses, got);
}

#[tokio::test]
async fn dns_srv_keeps_a_target_without_address_records_by_name() {
    let server = DnsServer::start([
        TestRecord::srv(SRV_NAME, "node1.rqlite.local", 4002),
        TestRecord::srv(SRV_NAME, "node2.rqlite.local", 4002),
        TestRecord::addr("node1.rqlite.local", [127, 0, 0, 1]),
    ])
    .await
    .unwrap();

    let got = addrs(
        dns_srv(&server.addr().to_string(), "rqlite.local")
            .lookup()
            .await
            .unwrap(),
    );

    assert_eq!(got, ["127.0.0.1:4002", "node2.rqlite.local:4002"]);
}

#[tokio::test]
async fn names_without_such_records_are_empty_answers_not_errors() {
    // NXDOMAIN (no such name) and NODATA (the name exists, with other record types only).
    let server = DnsServer::start([
        TestRecord::addr("_rqlite-raft._tcp.nodata.local", [127, 0, 0, 1]),
        TestRecord::srv("srv-only.cluster", "node1.rqlite.local", 4002),
    ])
    .await
    .unwrap();
    let ns = server.addr().to_string();

    assert_eq!(
        dns(&ns, "missing.cluster", None).lookup().await.unwrap(),
        vec![]
    );
    assert_eq!(
        dns(&ns, "srv-only.cluster", None).lookup().await.unwrap(),
        vec![]
    );
    assert_eq!(
        dns_srv(&ns, "missing.local").lookup().await.unwrap(),
        vec![]
    );
    assert_eq!(dns_srv(&ns, "nodata.local").lookup().await.unwrap(), vec![]);
}

#[tokio::test]
async fn records_added_while_running_are_seen_by_a_later_lookup() {
    // Steps: three nodes registered; look up; register a fourth; poll until it shows up (the
    // resolver caches answers for at most a second).
    let server =
        DnsServer::start((1..=3).map(|i| TestRecord::addr("rqlite.cluster", [127, 0, 0, i])))
            .await
            .unwrap();
    let lookup = dns(&server.addr().to_string(), "rqlite.cluster", None);
    assert_eq!(lookup.lookup().await.unwrap().len(), 3);

    server
        .add_record(TestRecord::addr("rqlite.cluster", [127, 0, 0, 4]))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = addrs(lookup.lookup().await.unwrap());
        if got.len() == 4 {
            assert_eq!(
                got,
                [
                    "127.0.0.1:4002",
                    "127.0.0.2:4002",
                    "127.0.0.3:4002",
                    "127.0.0.4:4002"
                ]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fourth node not seen within 10s; last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_unavailable_within_the_bound() {
    // Steps: a UDP socket that reads nothing stands for a dead DNS server; both modes must give
    // up within their bound with a message naming the name and the server.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ns = silent.local_addr().unwrap().to_string();
    let bound = Duration::from_secs(1);

    for (mode, lookup) in [
        (
            "dns",
            Box::new(dns(&ns, "rqlite.cluster", None).with_timeout(bound)) as Box<dyn DynLookup>,
        ),
        (
            "dns-srv",
            Box::new(dns_srv(&ns, "rqlite.local").with_timeout(bound)),
        ),
    ] {
        let start = Instant::now();
        let result = lookup.run().await;
        let took = start.elapsed();

        assert!(
            took < bound + Duration::from_secs(2),
            "{mode}: took {took:?}"
        );
        match result {
            Err(DiscoveryError::Unavailable { mode: m, msg }) => {
                assert_eq!(m, mode);
                assert!(msg.contains(&ns), "{mode}: server missing from {msg:?}");
                assert!(msg.contains("rqlite."), "{mode}: name missing from {msg:?}");
            }
            other => panic!("{mode}: expected Unavailable, got {other:?}"),
        }
        assert!(lookup.last_error().is_some(), "{mode}: status has no error");
    }
}

/// Both backends behind one object-safe face, for the table above.
trait DynLookup {
    fn run(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Peer>, DiscoveryError>> + '_>>;
    fn last_error(&self) -> Option<String>;
}

impl<T: Lookup> DynLookup for T {
    fn run(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Peer>, DiscoveryError>> + '_>>
    {
        Box::pin(self.lookup())
    }

    fn last_error(&self) -> Option<String> {
        self.status().last_error
    }
}
