//! The etcd leader key against a real etcd (Debian's binary, one member on loopback ports the
//! OS picks). Each test starts its own etcd and uses its own key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlraft_discovery::etcd::{Etcd, EtcdConfig};
use sqlraft_discovery::testing::{self, EtcdServer};
use sqlraft_discovery::{DiscoveryError, LeaderKey, LeaderRecord};

fn record(id: &str) -> LeaderRecord {
    LeaderRecord {
        id: id.into(),
        api_addr: format!("http://{id}.local:4001"),
        addr: format!("{id}.local:4002"),
    }
}

fn config(server: &EtcdServer) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![server.client_url.clone()],
        ..Default::default()
    }
}

fn client(server: &EtcdServer, key: &str) -> Etcd {
    Etcd::connect(config(server), key).unwrap()
}

/// A raw etcd client, to look under the hood.
async fn raw(server: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([server.client_url.as_str()], None)
        .await
        .unwrap()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_race_has_exactly_one_winner() {
    // Eight "nodes", each with its own client, create the same absent key at once; exactly one
    // wins, and the key holds the winner's record.
    let etcd = testing::Etcd::start();
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let c = client(&etcd, "create-race");
        racers.spawn(async move { (i, c.create(&record(&format!("n{i}"))).await) });
    }
    let mut winners = Vec::new();
    while let Some(r) = racers.join_next().await {
        let (i, won) = r.unwrap();
        if won.unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let got = client(&etcd, "create-race").get().await.unwrap().unwrap();
    assert_eq!(got.record, record(&format!("n{}", winners[0])));
}

#[tokio::test]
async fn get_of_missing_key_is_none_and_create_then_get_round_trips() {
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "missing");
    assert_eq!(c.get().await.unwrap(), None);
    assert!(c.create(&record("a")).await.unwrap());
    assert!(
        !c.create(&record("b")).await.unwrap(),
        "a second create must lose"
    );
    let got = c.get().await.unwrap().unwrap();
    assert_eq!(got.record, record("a"));
    assert!(got.version > 0);
    // The status shows what was seen.
    let s = c.status();
    assert_eq!(
        (s.mode.as_str(), s.target.as_str()),
        ("etcd-kv", "/missing/leader")
    );
    assert_eq!(s.last_addresses, vec!["a.local:4002"]);
    assert!(s.last_contact.is_some() && s.last_error.is_none());
}

#[tokio::test]
async fn key_and_value_are_rqlites() {
    // rqlite reads `/<disco-key>/leader` holding {"id","api_addr","addr"}.
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "rqlite-compat");
    c.set(&record("n1")).await.unwrap();
    let resp = raw(&etcd)
        .await
        .get("/rqlite-compat/leader", None)
        .await
        .unwrap();
    let kv = &resp.kvs()[0];
    let v: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": "n1", "api_addr": "http://n1.local:4001", "addr": "n1.local:4002"})
    );
    assert_eq!(
        c.get().await.unwrap().unwrap().version,
        kv.mod_revision() as u64
    );
}

#[tokio::test]
async fn replace_with_a_stale_version_fails() {
    // Read v1; someone else writes (v2); replacing v1 fails and changes nothing; replacing v2
    // succeeds.
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "stale");
    assert!(c.create(&record("old")).await.unwrap());
    let v1 = c.get().await.unwrap().unwrap().version;
    c.set(&record("other")).await.unwrap();
    let v2 = c.get().await.unwrap().unwrap().version;
    assert!(v2 > v1);
    assert!(!c.replace(v1, &record("late")).await.unwrap());
    assert_eq!(c.get().await.unwrap().unwrap().record, record("other"));
    assert!(c.replace(v2, &record("new")).await.unwrap());
    let now = c.get().await.unwrap().unwrap();
    assert_eq!(now.record, record("new"));
    assert!(now.version > v2);
    // A version no revision can have never matches.
    assert!(!c.replace(u64::MAX, &record("x")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_of_one_stale_record_have_one_winner() {
    let etcd = testing::Etcd::start();
    client(&etcd, "takeover")
        .set(&record("dead"))
        .await
        .unwrap();
    let seen = client(&etcd, "takeover")
        .get()
        .await
        .unwrap()
        .unwrap()
        .version;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = client(&etcd, "takeover");
        racers.spawn(async move { c.replace(seen, &record(&format!("n{i}"))).await.unwrap() });
    }
    let mut wins = 0;
    while let Some(r) = racers.join_next().await {
        wins += usize::from(r.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn set_overwrites_unconditionally() {
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "set");
    c.set(&record("first")).await.unwrap(); // creates a missing key
    c.set(&record("second")).await.unwrap();
    assert_eq!(c.get().await.unwrap().unwrap().record, record("second"));
    assert!(!c.create(&record("third")).await.unwrap());
}

#[tokio::test]
async fn delete_removes_the_key_so_create_wins_again() {
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "delete");
    assert!(!c.delete().await.unwrap());
    c.set(&record("a")).await.unwrap();
    assert!(c.delete().await.unwrap());
    assert_eq!(c.get().await.unwrap(), None);
    assert!(c.create(&record("b")).await.unwrap());
}

#[tokio::test]
async fn corrupt_value_is_a_protocol_error() {
    let etcd = testing::Etcd::start();
    let c = client(&etcd, "corrupt");
    raw(&etcd)
        .await
        .put("/corrupt/leader", "not json", None)
        .await
        .unwrap();
    let e = c.get().await.unwrap_err();
    assert!(
        matches!(
            e,
            DiscoveryError::Protocol {
                mode: "etcd-kv",
                ..
            }
        ),
        "{e}"
    );
    assert!(c.status().last_error.is_some());
    // The leader's report still overwrites it.
    c.set(&record("a")).await.unwrap();
    assert_eq!(c.get().await.unwrap().unwrap().record, record("a"));
}

#[tokio::test]
async fn backend_down_is_unavailable_within_the_bound() {
    // Nobody listens: every call fails as Unavailable, within its bound.
    let cfg = EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{}", closed_port())],
        ..Default::default()
    };
    let bound = Duration::from_millis(1500);
    let c = Etcd::connect(cfg, "down").unwrap().with_timeout(bound);
    let started = Instant::now();
    let e = c.get().await.unwrap_err();
    assert!(
        matches!(
            e,
            DiscoveryError::Unavailable {
                mode: "etcd-kv",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        c.create(&record("a")).await,
        Err(DiscoveryError::Unavailable { .. })
    ));
    assert!(matches!(
        c.set(&record("a")).await,
        Err(DiscoveryError::Unavailable { .. })
    ));
    assert!(
        started.elapsed() < 3 * bound + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(c.status().last_error.is_some());

    // A connected client whose etcd dies also fails within the bound.
    let mut etcd = testing::Etcd::start();
    let c = client(&etcd, "dies").with_timeout(bound);
    assert!(c.create(&record("a")).await.unwrap());
    etcd.kill();
    let started = Instant::now();
    let e = c.get().await.unwrap_err();
    assert!(matches!(e, DiscoveryError::Unavailable { .. }), "{e}");
    assert!(
        started.elapsed() < bound + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn credentials_for_an_etcd_without_auth_are_not_an_error() {
    // As with Go's clientv3 (rqlite): etcd answers "authentication is not enabled", and the
    // client carries on without credentials.
    let etcd = testing::Etcd::start();
    let cfg = EtcdConfig {
        username: "root".into(),
        password: "pw".into(),
        ..config(&etcd)
    };
    let c = Etcd::connect(cfg, "no-auth").unwrap();
    assert!(c.create(&record("a")).await.unwrap());
    assert_eq!(c.get().await.unwrap().unwrap().record, record("a"));
}

#[tokio::test]
async fn username_and_password_authenticate() {
    // Turn on etcd auth with a root user, then use the key with and without credentials.
    let etcd = testing::Etcd::start();
    let mut admin = raw(&etcd).await;
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let good = EtcdConfig {
        username: "root".into(),
        password: "s3cret".into(),
        ..config(&etcd)
    };
    let c = Etcd::connect(good, "auth").unwrap();
    assert!(c.create(&record("a")).await.unwrap());
    assert_eq!(c.get().await.unwrap().unwrap().record, record("a"));

    let bad = EtcdConfig {
        username: "root".into(),
        password: "wrong".into(),
        ..config(&etcd)
    };
    let e = Etcd::connect(bad, "auth").unwrap().get().await.unwrap_err();
    assert!(matches!(e, DiscoveryError::Unavailable { .. }), "{e}");
    let e = client(&etcd, "auth").get().await.unwrap_err();
    assert!(matches!(e, DiscoveryError::Unavailable { .. }), "{e}");
}

#[test]
fn etcd_fixture_is_killed_on_drop() {
    let etcd = testing::Etcd::start();
    let pid = etcd.pid();
    let port = etcd
        .client_url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    drop(etcd);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} still running"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_concurrent_callers() {
    let etcd = testing::Etcd::start();
    let c = Arc::new(client(&etcd, "shared"));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let c = c.clone();
        calls.spawn(async move { c.set(&record(&format!("n{i}"))).await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(c.get().await.unwrap().is_some());
}
