//! The lookup logic over a fake network: what each kind of answer becomes.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::resolve::SrvTarget;
use super::*;

/// Answers from tables. A name missing from a table has no records; a name in `hang` never
/// gets an answer.
#[derive(Debug, Default)]
struct Fake {
    ips: HashMap<(String, Family), Result<Vec<IpAddr>, ResolveError>>,
    srv: HashMap<String, Result<Vec<SrvTarget>, ResolveError>>,
    hang: HashSet<String>,
}

impl Fake {
    fn a(mut self, name: &str, ips: &[&str]) -> Self {
        for ip in ips {
            let ip: IpAddr = ip.parse().unwrap();
            let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
            let entry = self
                .ips
                .entry((name.to_string(), family))
                .or_insert(Ok(Vec::new()));
            entry.as_mut().unwrap().push(ip);
        }
        self
    }

    fn fail(mut self, name: &str, family: Family, why: &str) -> Self {
        self.ips.insert(
            (name.to_string(), family),
            Err(ResolveError(why.to_string())),
        );
        self
    }

    fn srv(mut self, name: &str, records: &[(&str, u16)]) -> Self {
        let records = records
            .iter()
            .map(|(t, p)| SrvTarget {
                target: t.to_string(),
                port: *p,
            })
            .collect();
        self.srv.insert(name.to_string(), Ok(records));
        self
    }

    fn hang(mut self, name: &str) -> Self {
        self.hang.insert(name.to_string());
        self
    }
}

impl Resolve for Fake {
    async fn ips(&self, name: &str, family: Family) -> Result<Vec<IpAddr>, ResolveError> {
        if self.hang.contains(name) {
            std::future::pending::<()>().await;
        }
        self.ips
            .get(&(name.to_string(), family))
            .cloned()
            .unwrap_or(Ok(Vec::new()))
    }

    async fn srv(&self, name: &str) -> Result<Vec<SrvTarget>, ResolveError> {
        if self.hang.contains(name) {
            std::future::pending::<()>().await;
        }
        self.srv.get(name).cloned().unwrap_or(Ok(Vec::new()))
    }

    fn server(&self) -> &str {
        "10.9.9.9:53"
    }
}

fn addrs(peers: &[Peer]) -> Vec<&str> {
    peers.iter().map(|p| p.raft_addr.as_str()).collect()
}

fn unavailable_msg(r: Result<Vec<Peer>, DiscoveryError>) -> String {
    match r {
        Err(DiscoveryError::Unavailable { msg, .. }) => msg,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

const NAME: &str = "rqlite.cluster";
const SRV_NAME: &str = "_rqlite-raft._tcp.rqlite.local";

#[tokio::test]
async fn dns_name_without_records_is_an_empty_answer_not_an_error() {
    let hosts = Hosts::new(Fake::default(), NAME.into(), 4002);
    assert_eq!(hosts.lookup().await.unwrap(), vec![]);
    let status = hosts.status.get();
    assert_eq!(
        (status.mode.as_str(), status.target.as_str()),
        ("dns", NAME)
    );
    assert!(status.last_contact.is_some());
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn dns_addresses_are_sorted_and_deduplicated_with_the_port() {
    let fake = Fake::default().a(NAME, &["127.0.0.3", "127.0.0.1", "127.0.0.3", "127.0.0.2"]);
    let got = Hosts::new(fake, NAME.into(), 4002).lookup().await.unwrap();
    assert_eq!(
        addrs(&got),
        ["127.0.0.1:4002", "127.0.0.2:4002", "127.0.0.3:4002"]
    );
}

#[tokio::test]
async fn dns_keeps_the_nodes_own_address_for_the_caller_to_filter() {
    // This node is 10.0.0.1 with Raft port 4002 (the default port handed to the lookup).
    let fake = Fake::default().a(NAME, &["10.0.0.1", "10.0.0.2"]);
    let got = Hosts::new(fake, NAME.into(), 4002).lookup().await.unwrap();
    assert_eq!(addrs(&got), ["10.0.0.1:4002", "10.0.0.2:4002"]);
}

#[tokio::test]
async fn dns_ipv6_addresses_are_bracketed_next_to_ipv4() {
    let fake = Fake::default().a(NAME, &["fd00::2", "10.0.0.1", "::1"]);
    let hosts = Hosts::new(fake, NAME.into(), 4002);
    let got = hosts.lookup().await.unwrap();
    assert_eq!(
        addrs(&got),
        ["10.0.0.1:4002", "[::1]:4002", "[fd00::2]:4002"]
    );
    assert_eq!(hosts.status.get().last_addresses, addrs(&got));
}

#[tokio::test]
async fn dns_an_ip_literal_name_is_its_own_answer() {
    let got = Hosts::new(Fake::default(), "10.1.2.3".into(), 4002)
        .lookup()
        .await
        .unwrap();
    assert_eq!(addrs(&got), ["10.1.2.3:4002"]);
}

#[tokio::test]
async fn dns_server_failure_is_unavailable_naming_name_server_and_cause() {
    let fake = Fake::default()
        .fail(NAME, Family::V4, "the server answered Server Failure")
        .fail(NAME, Family::V6, "the server answered Server Failure");
    let hosts = Hosts::new(fake, NAME.into(), 4002);
    let msg = unavailable_msg(hosts.lookup().await);
    for part in [NAME, "10.9.9.9:53", "Server Failure"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    let status = hosts.status.get();
    assert!(status.last_error.unwrap().contains("Server Failure"));
    assert_eq!(status.last_contact, None);
}

#[tokio::test]
async fn dns_one_failed_family_does_not_hide_the_others_addresses() {
    let fake =
        Fake::default()
            .a(NAME, &["10.0.0.1"])
            .fail(NAME, Family::V6, "no answer (timed out)");
    let got = Hosts::new(fake, NAME.into(), 4002).lookup().await.unwrap();
    assert_eq!(addrs(&got), ["10.0.0.1:4002"]);
}

#[tokio::test]
async fn dns_one_failed_family_and_nothing_from_the_other_is_an_error_not_empty() {
    let fake = Fake::default().fail(NAME, Family::V4, "no answer (timed out)");
    let msg = unavailable_msg(Hosts::new(fake, NAME.into(), 4002).lookup().await);
    assert!(msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn dns_lookup_that_gets_no_answer_fails_within_its_bound() {
    let mut hosts = Hosts::new(Fake::default().hang(NAME), NAME.into(), 4002);
    hosts.timeout = Duration::from_millis(100);
    let start = Instant::now();
    let msg = unavailable_msg(hosts.lookup().await);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    for part in [NAME, "10.9.9.9:53", "within 100ms"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    assert!(hosts.status.get().last_error.is_some());
}

#[tokio::test]
async fn srv_several_targets_and_ports_each_resolved_with_their_port() {
    // node1 serves on two ports, node2 has an IPv4 and an IPv6 address, node3 has no address
    // record (kept by name), "." means "no service" and is skipped.
    let fake = Fake::default()
        .srv(
            SRV_NAME,
            &[
                ("node2.rqlite.local.", 4012),
                ("node1.rqlite.local.", 4002),
                ("node1.rqlite.local.", 4003),
                ("node3.rqlite.local.", 4022),
                (".", 9),
            ],
        )
        .a("node1.rqlite.local.", &["127.0.0.1"])
        .a("node2.rqlite.local.", &["127.0.0.2", "fd00::2"]);
    let srv = Srv::new(fake, SRV_NAME.into());
    let got = srv.lookup().await.unwrap();
    assert_eq!(
        addrs(&got),
        [
            "127.0.0.1:4002",
            "127.0.0.1:4003",
            "127.0.0.2:4012",
            "[fd00::2]:4012",
            "node3.rqlite.local:4022"
        ]
    );
    let status = srv.status.get();
    assert_eq!(
        (status.mode.as_str(), status.target.as_str()),
        ("dns-srv", SRV_NAME)
    );
    assert_eq!(status.last_addresses, addrs(&got));
}

#[tokio::test]
async fn srv_duplicate_records_and_shared_addresses_appear_once() {
    let fake = Fake::default()
        .srv(
            SRV_NAME,
            &[("a.local.", 4002), ("a.local.", 4002), ("b.local.", 4002)],
        )
        .a("a.local.", &["127.0.0.1"])
        .a("b.local.", &["127.0.0.1"]);
    let got = Srv::new(fake, SRV_NAME.into()).lookup().await.unwrap();
    assert_eq!(addrs(&got), ["127.0.0.1:4002"]);
}

#[tokio::test]
async fn srv_name_without_records_is_an_empty_answer() {
    assert_eq!(
        Srv::new(Fake::default(), SRV_NAME.into())
            .lookup()
            .await
            .unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn srv_failed_target_lookup_is_unavailable_naming_the_target() {
    let fake = Fake::default()
        .srv(SRV_NAME, &[("a.local.", 4002), ("b.local.", 4002)])
        .a("a.local.", &["127.0.0.1"])
        .fail("b.local.", Family::V4, "the server answered Refused")
        .fail("b.local.", Family::V6, "the server answered Refused");
    let msg = unavailable_msg(Srv::new(fake, SRV_NAME.into()).lookup().await);
    for part in ["b.local.", SRV_NAME, "Refused", "10.9.9.9:53"] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
}

#[tokio::test]
async fn srv_lookup_with_a_silent_target_fails_within_its_bound() {
    let fake = Fake::default()
        .srv(SRV_NAME, &[("a.local.", 4002)])
        .hang("a.local.");
    let mut srv = Srv::new(fake, SRV_NAME.into());
    srv.timeout = Duration::from_millis(100);
    let start = Instant::now();
    let msg = unavailable_msg(srv.lookup().await);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(msg.contains(SRV_NAME), "{msg}");
}

#[test]
fn configs_parse_rqlites_examples_and_reject_unknown_keys() {
    let dns: DnsConfig = serde_json::from_str(r#"{"name":"rqlite.cluster","port":4002}"#).unwrap();
    assert_eq!(
        dns,
        DnsConfig {
            name: "rqlite.cluster".into(),
            port: Some(4002),
            nameserver: None
        }
    );
    let dns: DnsConfig = serde_json::from_str(r#"{"name":"rqlite.cluster"}"#).unwrap();
    assert_eq!(dns.port, None);
    let srv: DnsSrvConfig =
        serde_json::from_str(r#"{"name":"rqlite.local","service":"rqlite-raft"}"#).unwrap();
    assert_eq!(srv.service, "rqlite-raft");
    assert!(serde_json::from_str::<DnsConfig>(r#"{"name":"x","prot":4002}"#).is_err());
    assert!(
        serde_json::from_str::<DnsSrvConfig>(r#"{"name":"x","service":"s","port":1}"#).is_err()
    );
}

#[test]
fn dns_port_defaults_to_the_nodes_raft_port() {
    let cfg = DnsConfig {
        name: NAME.into(),
        port: None,
        nameserver: Some("127.0.0.1:53".into()),
    };
    assert_eq!(Dns::new(cfg.clone(), 4102).unwrap().inner.port, 4102);
    let cfg = DnsConfig {
        port: Some(4002),
        ..cfg
    };
    assert_eq!(Dns::new(cfg, 4102).unwrap().inner.port, 4002);
}

#[tokio::test]
async fn srv_looks_up_underscore_service_tcp_name() {
    let cfg = DnsSrvConfig {
        name: "rqlite.local".into(),
        service: "rqlite-raft".into(),
        nameserver: Some("127.0.0.1".into()),
    };
    let srv = DnsSrv::new(cfg).unwrap();
    assert_eq!(srv.status().target, SRV_NAME);
    assert_eq!(srv.status().mode, "dns-srv");
}

#[tokio::test]
async fn invalid_configs_are_config_errors_that_say_what_to_write() {
    let dns = |name: &str, port: Option<u16>, ns: Option<&str>| {
        Dns::new(
            DnsConfig {
                name: name.into(),
                port,
                nameserver: ns.map(Into::into),
            },
            0,
        )
        .map(drop)
    };
    let srv = |service: &str| {
        DnsSrv::new(DnsSrvConfig {
            name: "rqlite.local".into(),
            service: service.into(),
            nameserver: None,
        })
        .map(drop)
    };
    let cases = [
        (dns("", Some(4002), None), "not a DNS name"),
        (
            dns("rqlite.cluster:4002", Some(4002), None),
            "not a DNS name",
        ),
        (dns("a..b", Some(4002), None), "not a DNS name"),
        (dns(NAME, None, None), "port"),
        (dns(NAME, Some(0), None), "port"),
        (
            dns(NAME, Some(4002), Some("dns.local:53")),
            "must be an IP address",
        ),
        (
            dns(NAME, Some(4002), Some("127.0.0.1:0")),
            "must be an IP address",
        ),
        (srv("_rqlite-raft"), "no leading underscore"),
        (srv(""), "bare service name"),
    ];
    for (result, expected) in cases {
        match result {
            Err(DiscoveryError::Config(msg)) => {
                assert!(msg.contains(expected), "{msg:?} lacks {expected:?}")
            }
            other => panic!("expected a Config error containing {expected:?}, got {other:?}"),
        }
    }
}

#[test]
fn nameserver_accepts_ip_port_bare_ip_and_bracketed_ipv6() {
    assert_eq!(
        parse_nameserver("10.0.0.2:5353"),
        Some("10.0.0.2:5353".parse().unwrap())
    );
    assert_eq!(
        parse_nameserver("10.0.0.2"),
        Some("10.0.0.2:53".parse().unwrap())
    );
    assert_eq!(
        parse_nameserver("[fd00::2]:53"),
        Some("[fd00::2]:53".parse().unwrap())
    );
    assert_eq!(
        parse_nameserver("fd00::2"),
        Some("[fd00::2]:53".parse().unwrap())
    );
    assert_eq!(parse_nameserver("ns.local"), None);
}

#[tokio::test]
async fn lookup_futures_can_be_spawned() {
    // The caller polls discovery from a spawned task: the futures must be Send.
    fn assert_send<T: Send>(_: &T) {}
    let dns = Dns::new(
        DnsConfig {
            name: NAME.into(),
            port: Some(4002),
            nameserver: Some("127.0.0.1".into()),
        },
        0,
    )
    .unwrap();
    assert_send(&dns.lookup());
    let srv = DnsSrv::new(DnsSrvConfig {
        name: "x.local".into(),
        service: "s".into(),
        nameserver: Some("127.0.0.1".into()),
    })
    .unwrap();
    assert_send(&srv.lookup());
}
