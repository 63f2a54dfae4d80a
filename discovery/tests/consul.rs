//! The Consul leader key against the Consul stand-in (Consul's KV HTTP API on a loopback port
//! the OS picks), and the stand-in's own conformance to that API. Each test uses its own key.

use std::time::{Duration, Instant};

use base64::Engine as _;
use sqlraft_discovery::consul::{BasicAuth, Consul, ConsulConfig};
use sqlraft_discovery::consul_standin::ConsulStandin;
use sqlraft_discovery::{DiscoveryError, LeaderKey, LeaderRecord};

fn record(id: &str) -> LeaderRecord {
    LeaderRecord {
        id: id.into(),
        api_addr: format!("http://{id}.local:4001"),
        addr: format!("{id}.local:4002"),
    }
}

fn config(standin: &ConsulStandin) -> ConsulConfig {
    ConsulConfig {
        address: standin.address(),
        ..Default::default()
    }
}

fn client(standin: &ConsulStandin, key: &str) -> Consul {
    Consul::new(config(standin), key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_race_has_exactly_one_winner() {
    // Eight "nodes", each with its own client, create the same absent key at once.
    let consul = ConsulStandin::start();
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let c = client(&consul, "create-race");
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
    let got = client(&consul, "create-race").get().await.unwrap().unwrap();
    assert_eq!(got.record, record(&format!("n{}", winners[0])));
}

#[tokio::test]
async fn get_of_missing_key_is_none_and_create_then_get_round_trips() {
    let consul = ConsulStandin::start();
    let c = client(&consul, "missing");
    assert_eq!(c.get().await.unwrap(), None);
    assert!(c.create(&record("a")).await.unwrap());
    assert!(
        !c.create(&record("b")).await.unwrap(),
        "a second create must lose"
    );
    let got = c.get().await.unwrap().unwrap();
    assert_eq!(got.record, record("a"));
    // The version is Consul's ModifyIndex.
    assert_eq!(
        got.version,
        consul.get("missing/leader").unwrap().modify_index
    );
    let s = c.status();
    assert_eq!(
        (s.mode.as_str(), s.target.as_str()),
        ("consul-kv", "missing/leader")
    );
    assert_eq!(s.last_addresses, vec!["a.local:4002"]);
    assert!(s.last_contact.is_some() && s.last_error.is_none());
}

#[tokio::test]
async fn key_and_value_are_rqlites() {
    // rqlite reads `<disco-key>/leader` holding {"id","api_addr","addr"}, created with cas=0.
    let consul = ConsulStandin::start();
    let c = client(&consul, "rqlite");
    assert!(c.create(&record("n1")).await.unwrap());
    let stored = consul.get("rqlite/leader").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": "n1", "api_addr": "http://n1.local:4001", "addr": "n1.local:4002"})
    );
    let seen = consul.requests();
    let put = seen.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(
        (put.key.as_str(), put.query.as_str()),
        ("rqlite/leader", "cas=0")
    );
}

#[tokio::test]
async fn replace_with_a_stale_version_fails() {
    let consul = ConsulStandin::start();
    let c = client(&consul, "stale");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_of_one_stale_record_have_one_winner() {
    let consul = ConsulStandin::start();
    client(&consul, "takeover")
        .set(&record("dead"))
        .await
        .unwrap();
    let seen = client(&consul, "takeover")
        .get()
        .await
        .unwrap()
        .unwrap()
        .version;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = client(&consul, "takeover");
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
    let consul = ConsulStandin::start();
    let c = client(&consul, "set");
    c.set(&record("first")).await.unwrap();
    c.set(&record("second")).await.unwrap();
    assert_eq!(c.get().await.unwrap().unwrap().record, record("second"));
    assert!(!c.create(&record("third")).await.unwrap());
    assert!(c.delete().await.unwrap());
    assert_eq!(c.get().await.unwrap(), None);
    assert_eq!(consul.get("set/leader"), None);
}

#[tokio::test]
async fn corrupt_value_is_a_protocol_error() {
    let consul = ConsulStandin::start();
    let c = client(&consul, "corrupt");
    consul.put("corrupt/leader", b"not json");
    let e = c.get().await.unwrap_err();
    assert!(
        matches!(
            e,
            DiscoveryError::Protocol {
                mode: "consul-kv",
                ..
            }
        ),
        "{e}"
    );
    // An empty value (Consul's "Value": null) is corrupt too.
    consul.put("corrupt/leader", b"");
    assert!(matches!(
        c.get().await,
        Err(DiscoveryError::Protocol { .. })
    ));
    c.set(&record("a")).await.unwrap();
    assert_eq!(c.get().await.unwrap().unwrap().record, record("a"));
}

#[tokio::test]
async fn backend_down_is_unavailable_within_the_bound() {
    let bound = Duration::from_millis(1500);
    let mut consul = ConsulStandin::start();
    let c = client(&consul, "down").with_timeout(bound);
    assert!(c.create(&record("a")).await.unwrap());
    consul.stop();
    let started = Instant::now();
    for r in [
        c.get().await.map(|_| ()),
        c.create(&record("b")).await.map(|_| ()),
        c.set(&record("b")).await,
    ] {
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                DiscoveryError::Unavailable {
                    mode: "consul-kv",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert!(
        started.elapsed() < 3 * bound,
        "took {:?}",
        started.elapsed()
    );
    assert!(c.status().last_error.is_some());
}

#[tokio::test]
async fn unanswered_request_times_out_as_unavailable() {
    // A listener that accepts and never answers: the call still ends within its bound.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let bound = Duration::from_millis(500);
    let c = Consul::new(
        ConsulConfig {
            address: addr.to_string(),
            ..Default::default()
        },
        "silent",
    )
    .unwrap()
    .with_timeout(bound);
    let started = Instant::now();
    let e = c.get().await.unwrap_err();
    assert!(
        matches!(&e, DiscoveryError::Unavailable { msg, .. } if msg.contains("within")),
        "{e}"
    );
    assert!(
        started.elapsed() < bound + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    hold.abort();
}

#[tokio::test]
async fn acl_token_is_sent_and_a_refusal_is_unavailable() {
    let consul = ConsulStandin::start_with_token("s3cret");
    let e = client(&consul, "acl").get().await.unwrap_err();
    assert!(
        matches!(&e, DiscoveryError::Unavailable { msg, .. } if msg.contains("403")),
        "{e}"
    );

    let c = Consul::new(
        ConsulConfig {
            token: "s3cret".into(),
            ..config(&consul)
        },
        "acl",
    )
    .unwrap();
    assert!(c.create(&record("a")).await.unwrap());

    // token_file is read once, when the client is made.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let cfg = ConsulConfig {
        token_file: file.display().to_string(),
        ..config(&consul)
    };
    let c = Consul::new(cfg, "acl").unwrap();
    assert_eq!(c.get().await.unwrap().unwrap().record, record("a"));
    assert!(consul
        .requests()
        .iter()
        .skip(1)
        .all(|r| r.token.as_deref() == Some("s3cret")));
}

#[tokio::test]
async fn datacenter_namespace_partition_and_basic_auth_are_sent() {
    let consul = ConsulStandin::start();
    let cfg = ConsulConfig {
        datacenter: "dc1".into(),
        namespace: "team".into(),
        partition: "part".into(),
        basic_auth: Some(BasicAuth {
            username: "me".into(),
            password: "pw".into(),
        }),
        ..config(&consul)
    };
    let c = Consul::new(cfg, "params").unwrap();
    assert!(c.create(&record("a")).await.unwrap());
    let put = consul.requests().pop().unwrap();
    assert_eq!(put.query, "dc=dc1&ns=team&partition=part&cas=0");
    let basic = base64::engine::general_purpose::STANDARD.encode("me:pw");
    assert_eq!(put.authorization, Some(format!("Basic {basic}")));

    // A datacenter Consul has no path to is an error answer, not "no key".
    let c = Consul::new(
        ConsulConfig {
            datacenter: "elsewhere".into(),
            ..config(&consul)
        },
        "params",
    )
    .unwrap();
    let e = c.get().await.unwrap_err();
    assert!(
        matches!(&e, DiscoveryError::Unavailable { msg, .. } if msg.contains("No path to datacenter")),
        "{e}"
    );
}

/// The stand-in follows Consul's documented KV API (checked over plain HTTP).
mod standin {
    use super::*;

    async fn http(
        method: reqwest::Method,
        url: String,
        body: &'static [u8],
    ) -> (u16, Option<u64>, Vec<u8>) {
        let resp = reqwest::Client::new()
            .request(method, url)
            .body(body)
            .send()
            .await
            .unwrap();
        let index = resp
            .headers()
            .get("x-consul-index")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        (
            resp.status().as_u16(),
            index,
            resp.bytes().await.unwrap().to_vec(),
        )
    }

    #[tokio::test]
    async fn kv_api_matches_consuls_documentation() {
        use reqwest::Method;
        let consul = ConsulStandin::start();
        let kv = |rest: &str| format!("http://{}/v1/kv/{rest}", consul.addr);

        // Missing key: 404, with the store's index.
        let (status, index, _) = http(Method::GET, kv("app/x"), b"").await;
        assert_eq!((status, index), (404, Some(1)));

        // PUT answers true and raises the index; GET shows base64 and both indices.
        let (status, _, body) = http(Method::PUT, kv("app/x"), b"hello").await;
        assert_eq!((status, body.as_slice()), (200, &b"true"[..]));
        let (status, index, body) = http(Method::GET, kv("app/x"), b"").await;
        assert_eq!((status, index), (200, Some(2)));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"LockIndex": 0, "Key": "app/x", "Flags": 0, "Value": "aGVsbG8=",
                                "CreateIndex": 2, "ModifyIndex": 2}])
        );

        // cas=0 only creates; cas=<ModifyIndex> only if unchanged; a failed CAS writes nothing.
        assert_eq!(
            http(Method::PUT, kv("app/x?cas=0"), b"no").await.2,
            b"false"
        );
        assert_eq!(
            http(Method::PUT, kv("app/x?cas=1"), b"no").await.2,
            b"false"
        );
        assert_eq!(consul.index(), 2);
        assert_eq!(
            http(Method::PUT, kv("app/x?cas=2&flags=7"), b"v3").await.2,
            b"true"
        );
        let e = consul.get("app/x").unwrap();
        assert_eq!(
            (e.value.as_slice(), e.flags, e.create_index, e.modify_index),
            (&b"v3"[..], 7, 2, 3)
        );
        assert_eq!(http(Method::PUT, kv("app/y?cas=0"), b"y").await.2, b"true");

        // ?raw, ?keys, ?recurse.
        assert_eq!(http(Method::GET, kv("app/x?raw"), b"").await.2, b"v3");
        let keys: Vec<String> =
            serde_json::from_slice(&http(Method::GET, kv("app/?keys"), b"").await.2).unwrap();
        assert_eq!(keys, vec!["app/x", "app/y"]);
        let keys: Vec<String> =
            serde_json::from_slice(&http(Method::GET, kv("?keys&separator=/"), b"").await.2)
                .unwrap();
        assert_eq!(keys, vec!["app/"]);
        let all: Vec<serde_json::Value> =
            serde_json::from_slice(&http(Method::GET, kv("app?recurse"), b"").await.2).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(http(Method::GET, kv("nothing?recurse"), b"").await.0, 404);

        // DELETE with cas: 0 never deletes, a stale index does not either.
        assert_eq!(
            http(Method::DELETE, kv("app/x?cas=0"), b"").await.2,
            b"false"
        );
        assert_eq!(
            http(Method::DELETE, kv("app/x?cas=2"), b"").await.2,
            b"false"
        );
        assert_eq!(
            http(Method::DELETE, kv("app/x?cas=3"), b"").await.2,
            b"true"
        );
        assert_eq!(http(Method::GET, kv("app/x"), b"").await.0, 404);
        assert_eq!(
            http(Method::DELETE, kv("app?recurse"), b"").await.2,
            b"true"
        );
        assert!(consul.get("app/y").is_none());
        // Deleting a missing key is still true.
        assert_eq!(http(Method::DELETE, kv("app/none"), b"").await.2, b"true");

        // Errors: bad cas, sessions, another datacenter.
        assert_eq!(http(Method::PUT, kv("k?cas=x"), b"").await.0, 400);
        assert_eq!(http(Method::PUT, kv("k?acquire=abc"), b"").await.0, 400);
        assert_eq!(http(Method::GET, kv("k?dc=dc9"), b"").await.0, 500);
        assert_eq!(http(Method::GET, kv("k?dc=dc1"), b"").await.0, 404);
    }

    #[test]
    fn stop_closes_the_port_and_direct_access_works() {
        let mut consul = ConsulStandin::start();
        let i = consul.put("a/b", b"v");
        assert_eq!(consul.get("a/b").map(|e| e.modify_index), Some(i));
        assert!(consul.delete("a/b"));
        assert!(!consul.delete("a/b"));
        assert!(std::net::TcpStream::connect(consul.addr).is_ok());
        consul.stop();
        consul.stop();
        assert!(std::net::TcpStream::connect(consul.addr).is_err());
    }
}
