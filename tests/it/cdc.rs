//! Change data capture (`-cdc-config`) with a real webhook receiver on loopback: exact events
//! for every kind of write, in index order; filters; `GET /cdc`; a SIGKILLed leader, a whole
//! cluster restart and log compaction under a slow webhook (every change once, in order); a
//! webhook down for 30 s (writes never wait, everything arrives afterwards).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{
    insert, node_command, rebind, url_encode, wait_until, Client, ProcCluster, TestCluster,
    WriteLog, CLUSTER_WAIT,
};

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    key: String,
    body: Value,
}

#[derive(Default)]
struct Behaviour {
    posts: Mutex<Vec<Post>>,
    /// Each answer waits this long (a slow webhook).
    delay_ms: AtomicU64,
    /// Answer 503 instead of taking the batch.
    failing: AtomicBool,
}

/// A webhook receiver: an HTTP server on loopback that records what it is sent.
struct Receiver {
    addr: SocketAddr,
    b: Arc<Behaviour>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut r = Receiver {
            addr,
            b: Arc::default(),
            stop: None,
            task: None,
        };
        r.serve(l);
        r
    }

    fn serve(&mut self, l: TcpListener) {
        let b = self.b.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let b = b.clone();
                async move {
                    let delay = b.delay_ms.load(Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if b.failing.load(Ordering::Relaxed) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    b.posts.lock().unwrap().push(Post { key, body });
                    axum::http::StatusCode::OK
                }
            },
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// Stops listening (connections refused) until [`Receiver::up`].
    async fn down(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    async fn up(&mut self) {
        let l = rebind(self.addr).await;
        self.serve(l);
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.b.posts.lock().unwrap().clone()
    }

    /// The payload items as a consumer that honours the idempotency key sees them: a key
    /// seen before is skipped (after checking it carried the same events). Asserts that no
    /// index arrives under two keys and that indexes only grow.
    fn items(&self) -> Vec<Value> {
        let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
        let mut out: Vec<Value> = Vec::new();
        for p in self.posts() {
            assert!(!p.key.is_empty(), "a POST without an idempotency key");
            let payload = strip_times(&p.body["payload"]);
            if let Some(earlier) = by_key.get(&p.key) {
                assert_eq!(
                    earlier, &payload,
                    "key {} sent with other events (now by node {}; the earlier copy is left)",
                    p.key, p.body["node_id"]
                );
                continue;
            }
            let items = p.body["payload"].as_array().expect("payload").clone();
            assert!(
                !items.is_empty(),
                "an empty batch, key {}, from node {}",
                p.key,
                p.body["node_id"]
            );
            let (first, last) = (
                items[0]["index"].as_u64(),
                items.last().unwrap()["index"].as_u64(),
            );
            assert_eq!(
                p.key,
                format!("{}-{}", first.unwrap(), last.unwrap()),
                "the key names the range"
            );
            by_key.insert(p.key.clone(), payload);
            out.extend(items);
        }
        let idx: Vec<u64> = out.iter().map(|i| i["index"].as_u64().unwrap()).collect();
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "indexes out of order or repeated under another key: {idx:?}"
        );
        out
    }

    /// Every event, in order, with its entry's index.
    fn events(&self) -> Vec<(u64, Value)> {
        self.items()
            .iter()
            .flat_map(|i| {
                let index = i["index"].as_u64().unwrap();
                i["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |e| (index, e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A payload without its commit times (each node stamps its own apply).
fn strip_times(payload: &Value) -> Value {
    let mut p = payload.clone();
    if let Some(items) = p.as_array_mut() {
        for i in items {
            if let Some(o) = i.as_object_mut() {
                o.remove("commit_timestamp");
            }
        }
    }
    p
}

fn cdc_json(endpoint: &str, extra: Value) -> String {
    let mut v = json!({
        "endpoint": endpoint,
        "max_batch_delay": "20ms",
        "high_watermark_interval": "200ms",
        "transmit_min_backoff": "100ms",
        "transmit_timeout": "2s",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

fn with_cdc(json: &str) -> impl Fn(usize, &mut sqlraft::config::Config) + '_ {
    move |_, c| c.cdc = Some(sqlraft::cdc::config::CdcConfig::parse_json(json).unwrap())
}

async fn wait_events(r: &Receiver, n: usize, what: &str) -> Vec<(u64, Value)> {
    wait_until(CLUSTER_WAIT, what, || {
        let got = r.events().len();
        async move { got >= n }
    })
    .await;
    r.events()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_gives_exactly_its_events_in_index_order() {
    // Steps: a 3-node cluster sends to a receiver. Inserts, an update, a delete, a
    // transaction, a transaction that fails (no events), RETURNING through /db/request, a
    // write through a follower, an interactive transaction: the receiver gets exactly these
    // row changes, each tagged with the raft_index the write was answered with, in order.
    let r = Receiver::start().await;
    let cfg = cdc_json(&r.url(), json!({"service_id": "svc-1"}));
    let c = TestCluster::start_with(3, with_cdc(&cfg)).await;
    let (l, f) = c.leader_and_follower().await;
    let lc = c.client(l);
    let idx = |j: &Value| {
        j["results"][0]["raft_index"]
            .as_u64()
            .or(j["raft_index"].as_u64())
    };
    lc.execute_ok(
        r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)"]"#,
    )
    .await;
    // Each of these is a `transaction` request (the follower's and /db/request's below are not).
    let w = |body: &'static str| async move {
        let r = lc
            .post_json("/db/execute?transaction&raft_index", body)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let i1 = w(r#"[["INSERT INTO foo VALUES (1, 'fiona', 1.5, x'0102')"]]"#).await;
    let i2 = w(r#"[["UPDATE foo SET name = 'fi' WHERE id = 1"]]"#).await;
    let i3 = w(r#"["INSERT INTO foo(id, name) VALUES (2, 'b')", "INSERT INTO foo(id, name) VALUES (3, 'c')"]"#).await;
    let i4 = w(r#"["DELETE FROM foo WHERE id = 2"]"#).await;
    // A transaction whose second statement fails: nothing of it is committed.
    let failed = lc
        .post_json(
            "/db/execute?transaction&raft_index",
            r#"["INSERT INTO foo(id) VALUES (10)", "INSERT INTO foo(id) VALUES (1)"]"#,
        )
        .await;
    assert!(failed.text().contains("UNIQUE"), "{}", failed.text());
    let i5 = lc
        .post_json(
            "/db/request?raft_index",
            r#"["INSERT INTO foo(id, name) VALUES (4, 'd') RETURNING id"]"#,
        )
        .await
        .json();
    let i6 = c
        .client(f)
        .post_json(
            "/db/execute?raft_index",
            r#"["UPDATE foo SET score = 2 WHERE id >= 3"]"#,
        )
        .await
        .json();
    let tx = lc.post_json("/db/tx", "").await.json();
    let id = tx["id"].as_str().unwrap().to_string();
    lc.post_json(
        &format!("/db/tx/{id}/execute"),
        r#"["INSERT INTO foo(id) VALUES (5)"]"#,
    )
    .await;
    let commit = lc.post_json(&format!("/db/tx/{id}/commit"), "").await;
    assert_eq!(commit.status, 200, "{}", commit.text());
    let i7 = commit.json();

    let ev = wait_events(&r, 9, "the events of every write").await;
    let got: Vec<Value> = ev.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        got,
        vec![
            json!({"op": "INSERT", "table": "foo", "new_row_id": 1,
                   "after": {"id": 1, "name": "fiona", "score": 1.5, "data": "AQI="}}),
            json!({"op": "UPDATE", "table": "foo", "new_row_id": 1, "old_row_id": 1,
                   "before": {"id": 1, "name": "fiona", "score": 1.5, "data": "AQI="},
                   "after": {"id": 1, "name": "fi", "score": 1.5, "data": "AQI="}}),
            json!({"op": "INSERT", "table": "foo", "new_row_id": 2,
                   "after": {"id": 2, "name": "b", "score": null, "data": null}}),
            json!({"op": "INSERT", "table": "foo", "new_row_id": 3,
                   "after": {"id": 3, "name": "c", "score": null, "data": null}}),
            json!({"op": "DELETE", "table": "foo", "old_row_id": 2,
                   "before": {"id": 2, "name": "b", "score": null, "data": null}}),
            json!({"op": "INSERT", "table": "foo", "new_row_id": 4,
                   "after": {"id": 4, "name": "d", "score": null, "data": null}}),
            json!({"op": "UPDATE", "table": "foo", "new_row_id": 3, "old_row_id": 3,
                   "before": {"id": 3, "name": "c", "score": null, "data": null},
                   "after": {"id": 3, "name": "c", "score": 2, "data": null}}),
            json!({"op": "UPDATE", "table": "foo", "new_row_id": 4, "old_row_id": 4,
                   "before": {"id": 4, "name": "d", "score": null, "data": null},
                   "after": {"id": 4, "name": "d", "score": 2, "data": null}}),
            json!({"op": "INSERT", "table": "foo", "new_row_id": 5,
                   "after": {"id": 5, "name": null, "score": null, "data": null}}),
        ],
        "{ev:#?}"
    );
    let indexes: Vec<u64> = ev.iter().map(|(i, _)| *i).collect();
    let want = [&i1, &i2, &i3, &i3, &i4, &i5, &i6, &i6, &i7].map(|j| idx(j).unwrap_or(0));
    assert_eq!(indexes, want, "each event carries its write's raft_index");
    let p = &r.posts()[0].body;
    assert_eq!(p["service_id"], "svc-1");
    assert!(p["node_id"].is_string());
    assert!(p["payload"][0]["commit_timestamp"].as_u64().unwrap() > 1_600_000_000_000);

    // /status shows where delivery stands.
    wait_until(
        CLUSTER_WAIT,
        "the high-water mark to reach the last event",
        || {
            let lc = lc.clone();
            let last = *indexes.last().unwrap();
            async move {
                let s = lc.get("/status?key=cdc").await.json();
                s["delivered"].as_u64().is_some_and(|d| d >= last)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_row_ids_only_and_get_cdc_from_an_index() {
    // Steps: 3 nodes, row_ids_only and a table filter, events retained for an hour: only
    // `keep*` tables, ids without images; GET /cdc?from= on the first node (a follower or the
    // leader) replays what was delivered, from any index, in pages; bad parameters are 400s.
    let r = Receiver::start().await;
    let cfg = cdc_json(
        &r.url(),
        json!({"row_ids_only": true, "table_filter": "^keep", "retain": {"max_age": "1h"}}),
    );
    let c = TestCluster::start_with(3, with_cdc(&cfg)).await;
    let n = c.client(0);
    n.execute_ok(r#"["CREATE TABLE keep1 (id INTEGER PRIMARY KEY, v)", "CREATE TABLE other (v)"]"#)
        .await;
    n.execute_ok(r#"["INSERT INTO keep1 VALUES (7, 'x')", "INSERT INTO other VALUES (1)"]"#)
        .await;
    n.execute_ok(r#"["UPDATE keep1 SET v = 'y'", "DELETE FROM other"]"#)
        .await;
    n.execute_ok(r#"["DELETE FROM keep1"]"#).await;
    let ev = wait_events(&r, 3, "the keep1 events").await;
    let got: Vec<Value> = ev.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        got,
        vec![
            json!({"op": "INSERT", "table": "keep1", "new_row_id": 7}),
            json!({"op": "UPDATE", "table": "keep1", "new_row_id": 7, "old_row_id": 7}),
            json!({"op": "DELETE", "table": "keep1", "old_row_id": 7}),
        ]
    );
    let first = ev[0].0;
    // This node may still be applying what the leader already sent.
    let j = crate::harness::wait_for(CLUSTER_WAIT, "this node's queue to hold them", || {
        let n = n.clone();
        async move {
            let r = n.get("/cdc?from=1").await;
            let j = r.json();
            (r.status == 200 && j["payload"].as_array().is_some_and(|p| p.len() == 3)).then_some(j)
        }
    })
    .await;
    assert_eq!(j["next"].as_u64(), Some(ev[2].0 + 1));
    let page = n
        .get(&format!("/cdc?from={}&limit=1", first + 1))
        .await
        .json();
    assert_eq!(
        page["payload"][0]["index"].as_u64(),
        Some(ev[1].0),
        "{page}"
    );
    // Long poll: nothing newer, so it waits for the next write.
    let next = j["next"].as_u64().unwrap();
    let nc = n.clone();
    let poll = tokio::spawn(async move { nc.get(&format!("/cdc?from={next}&timeout=10s")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.execute_ok(r#"["INSERT INTO keep1 VALUES (8, 'z')"]"#)
        .await;
    let polled = poll.await.unwrap().json();
    assert_eq!(
        polled["payload"][0]["events"][0]["new_row_id"], 8,
        "{polled}"
    );
    for bad in ["/cdc?from=x", "/cdc?limit=0", "/cdc?limit=-1"] {
        assert_eq!(n.get(bad).await.status, 400, "{bad}");
    }
    assert_eq!(n.post_json("/cdc", "").await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_cdc_answers_404_and_a_bad_config_stops_the_start() {
    let c = TestCluster::start(1).await;
    let r = c.client(0).get("/cdc").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("-cdc-config"), "{}", r.text());
    for (cfg, key) in [
        (
            r#"{"endpoint": "stdout", "max_batch_sz": 5}"#,
            "max_batch_sz",
        ),
        (
            r#"{"endpoint": "stdout", "table_filter": "(["}"#,
            "table_filter",
        ),
        (
            r#"{"endpoint": "https://h", "tls": {"ca_cert_file": "/nonexistent/ca.pem"}}"#,
            "ca.pem",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = node_command("1", "127.0.0.1:0", "127.0.0.1:0")
            .args(["-cdc-config", cfg])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cfg} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{cfg}: {err}");
    }
}

/// `n` writers ([`insert`]) through every node until stopped.
fn start_writers(
    clients: &[Client],
    n: i64,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<WriteLog>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| tokio::spawn(insert(w, clients.to_vec(), log.clone(), stop.clone())))
        .collect()
}

/// The ids of the rows the receiver was told were inserted (each once, checked).
fn inserted_ids(r: &Receiver) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for (index, e) in r.events() {
        if e["table"] == "t" && e["op"] == "INSERT" {
            let id = e["after"]["id"].as_i64().unwrap();
            assert!(ids.insert(id), "row {id} delivered twice (entry {index})");
        }
    }
    ids
}

async fn rows(c: &Client) -> BTreeSet<i64> {
    let q = url_encode("SELECT id FROM t");
    let j = c.get(&format!("/db/query?level=strong&q={q}")).await.json();
    j["results"][0]["values"]
        .as_array()
        .map(|v| v.iter().map(|r| r[0].as_i64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_cluster_restart_and_compaction_deliver_each_change_once_in_order() {
    // Steps: 3 sqlraftd processes taking a snapshot (and compacting the log) every 50
    // entries, a webhook that answers slowly (30 ms), 6 writers through all nodes. The
    // leader is SIGKILLed mid-stream and restarted; later the whole cluster is SIGKILLed
    // and restarted; writes go on after each. Then: the receiver, honouring the idempotency
    // key, has every row the cluster holds exactly once, in index order, and nothing else.
    let mut r = Receiver::start().await;
    r.b.delay_ms.store(30, Ordering::Relaxed);
    let cfg = cdc_json(&r.url(), json!({}));
    let flags = [
        "-cdc-config",
        &cfg,
        "-raft-snap",
        "50",
        "-raft-snap-int",
        "200ms",
    ];
    let mut pc = ProcCluster::start(3, &flags).await;
    let l = pc.wait_for_leader().await;
    pc.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER)"]"#)
        .await;
    let clients: Vec<Client> = (0..3)
        .map(|i| Client::with_timeout(pc.client(i).base.clone(), Duration::from_secs(5)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<WriteLog>> = Arc::default();
    let more = |n: usize| {
        let log = log.clone();
        let target = log.lock().unwrap().acked.len() + n;
        async move {
            wait_until(CLUSTER_WAIT, "writes to be acknowledged", || {
                let now = log.lock().unwrap().acked.len();
                async move { now >= target }
            })
            .await
        }
    };
    let writers = start_writers(&clients, 6, &stop, &log);
    more(300).await;
    wait_until(CLUSTER_WAIT, "some events delivered", || {
        let n = r.posts().len();
        async move { n > 3 }
    })
    .await;
    pc.kill9(l);
    more(200).await;
    pc.restart(l).await;
    more(200).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    pc.restart_all().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&clients, 6, &stop, &log);
    more(200).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let l = pc.wait_for_leader().await;
    let present = rows(pc.client(l)).await;
    let acked = log.lock().unwrap().acked.clone();
    assert!(
        acked.is_subset(&present),
        "an acknowledged write is missing"
    );
    wait_until(
        Duration::from_secs(60),
        "every row's event to arrive",
        || {
            let got = inserted_ids(&r).len();
            let want = present.len();
            async move { got >= want }
        },
    )
    .await;
    let delivered = inserted_ids(&r);
    assert_eq!(
        delivered, present,
        "the receiver has exactly the rows the cluster holds"
    );
    let keys: BTreeSet<String> = r.posts().iter().map(|p| p.key.clone()).collect();
    println!(
        "{} rows, {} POSTs, {} distinct keys (re-sent ranges: {})",
        present.len(),
        r.posts().len(),
        keys.len(),
        r.posts().len() - keys.len()
    );
    r.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_down_for_30s_gets_everything_in_order_and_writes_never_wait() {
    // Steps: 3 nodes; a writer inserts continuously. The webhook is stopped for 30 s
    // (connections refused), then started again on the same port. Writes go on at the same
    // pace meanwhile (compared, and printed); afterwards every row's event arrives, once,
    // in order.
    let mut r = Receiver::start().await;
    let cfg = cdc_json(&r.url(), json!({"transmit_min_backoff": "500ms"}));
    let c = TestCluster::start_with(3, with_cdc(&cfg)).await;
    let l = c.wait_for_leader().await;
    let lc = c.client(l).clone();
    lc.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER)"]"#)
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let lat: Arc<Mutex<Vec<(bool, Duration)>>> = Arc::default();
    let down = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, acked, lat, down, lc) = (
            stop.clone(),
            acked.clone(),
            lat.clone(),
            down.clone(),
            lc.clone(),
        );
        tokio::spawn(async move {
            for id in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let t = Instant::now();
                let body = format!(r#"[["INSERT INTO t(id, w) VALUES(?, 0)", {id}]]"#);
                let r = lc.post_json("/db/execute", &body).await;
                assert_eq!(r.status, 200, "{}", r.text());
                lat.lock()
                    .unwrap()
                    .push((down.load(Ordering::Relaxed), t.elapsed()));
                acked.lock().unwrap().insert(id);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    r.down().await;
    down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    down.store(false, Ordering::Relaxed);
    let status = lc.get("/status?key=cdc").await.json();
    assert!(
        status["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "/status names the failure: {status}"
    );
    assert!(status["queue_entries"].as_u64().unwrap() > 0, "{status}");
    r.up().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    wait_until(
        Duration::from_secs(60),
        "everything written to arrive",
        || {
            let got = inserted_ids(&r).len();
            let want = acked.len();
            async move { got >= want }
        },
    )
    .await;
    assert_eq!(inserted_ids(&r), acked);
    let lat = lat.lock().unwrap().clone();
    let stats = |during: bool| {
        let mut v: Vec<Duration> = lat
            .iter()
            .filter(|(d, _)| *d == during)
            .map(|(_, t)| *t)
            .collect();
        v.sort();
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        (v.len(), p(0.5), p(0.99))
    };
    let (n_up, p50_up, p99_up) = stats(false);
    let (n_down, p50_down, p99_down) = stats(true);
    println!(
        "writes with the webhook up: {n_up} (p50 {p50_up:?}, p99 {p99_up:?}); \
         during the 30 s outage: {n_down} ({:.0}/s, p50 {p50_down:?}, p99 {p99_down:?})",
        n_down as f64 / 30.0
    );
    // Never blocked: the outage's writes are as fast as the others (a generous bound:
    // this measures blocking, not speed).
    assert!(n_down > 100, "only {n_down} writes in 30 s");
    assert!(
        p50_down < p50_up * 5 + Duration::from_millis(20),
        "writes slowed down while the webhook was down: {p50_down:?} vs {p50_up:?}"
    );
    r.down().await;
}

/// 3 nodes with `cfg` snapshotting every 50 entries; a follower is stopped while rows `0..rows`
/// are written to `t(id, w)` through the leader. Returns the cluster, the leader, the follower.
async fn with_a_stopped_follower(cfg: &str, rows: i64) -> (TestCluster, usize, usize) {
    let mut c = TestCluster::start_with(3, |i, conf| {
        with_cdc(cfg)(i, conf);
        conf.raft.snap = 50;
        conf.raft.snap_int = Duration::from_millis(200);
    })
    .await;
    let (l, f) = c.leader_and_follower().await;
    let lc = c.client(l).clone();
    lc.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER)"]"#)
        .await;
    c.stop(f).await;
    let behind = c.last_log_index(l).await;
    for id in 0..rows {
        lc.execute_ok(&format!(r#"[["INSERT INTO t(id, w) VALUES(?, 0)", {id}]]"#))
            .await;
    }
    // The follower can then catch up only by a snapshot.
    c.wait_log_compacted_past(l, behind).await;
    (c, l, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_installed_a_snapshot_fills_its_queue_from_a_peer_before_it_sends() {
    // Steps: 3 nodes snapshotting every 50 entries; the webhook is down, so nothing is
    // delivered. A follower is stopped, 300 rows are written (the log is compacted past it),
    // and it restarts: it catches up by installing a snapshot, so its queue lacks those
    // entries' events, and it fetches them from a peer. Leadership is handed to it and the
    // webhook comes back: every row arrives, once, in order.
    let mut r = Receiver::start().await;
    r.down().await;
    let cfg = cdc_json(&r.url(), json!({}));
    let (mut c, l, f) = with_a_stopped_follower(&cfg, 300).await;
    let lc = c.client(l).clone();
    c.restart(f).await;
    let fc = c.client(f).clone();
    wait_until(
        CLUSTER_WAIT,
        "the follower to install a snapshot and fill its queue",
        || {
            let fc = fc.clone();
            async move {
                let raft = fc.get("/status?key=store.raft").await.json();
                let cdc = fc.get("/status?key=cdc").await.json();
                raft["last_snapshot_index"].as_u64().unwrap_or(0) > 0
                    && cdc["missing"].is_null()
                    && cdc["enqueued_index"].as_u64().unwrap_or(0) > 250
            }
        },
    )
    .await;
    let body = format!(r#"{{"id":"{}"}}"#, c.members[f].id);
    let resp = lc.post_json("/leader", &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    wait_until(CLUSTER_WAIT, "the filled node to lead", || {
        let agreed = c.agreed_leader(&[0, 1, 2]);
        async move { agreed == Some(f) }
    })
    .await;
    r.up().await;
    let want: BTreeSet<i64> = (0..300).collect();
    wait_until(
        Duration::from_secs(60),
        "every row's event from the new leader",
        || {
            let got = inserted_ids(&r).len();
            async move { got >= 300 }
        },
    )
    .await;
    assert_eq!(inserted_ids(&r), want);
    let node = r.posts().last().unwrap().body["node_id"].clone();
    assert_eq!(
        node,
        json!(c.members[f].id),
        "sent by the node that filled its gap"
    );
    r.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cdc_on_a_follower_that_installed_a_snapshot_has_no_holes() {
    // Steps: 3 nodes snapshotting every 50 entries, events retained for an hour, the webhook
    // up (so the events are delivered). A follower is stopped while 200 rows are written and
    // restarts by installing a snapshot: it fetches the retained records it never applied,
    // and GET /cdc on it returns every row's event, as the leader's does.
    let r = Receiver::start().await;
    let cfg = cdc_json(&r.url(), json!({"retain": {"max_age": "1h"}}));
    let (mut c, l, f) = with_a_stopped_follower(&cfg, 200).await;
    let lc = c.client(l).clone();
    wait_events(&r, 200, "the rows' events delivered").await;
    c.restart(f).await;
    let fc = c.client(f).clone();
    let ids = |j: &Value| -> BTreeSet<i64> {
        j["payload"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["events"].as_array().unwrap().clone())
            .filter(|e| e["table"] == "t")
            .map(|e| e["new_row_id"].as_i64().unwrap())
            .collect()
    };
    let want: BTreeSet<i64> = (0..200).collect();
    wait_until(CLUSTER_WAIT, "the follower to serve every event", || {
        let fc = fc.clone();
        let want = want.clone();
        async move {
            let r = fc.get("/cdc?from=1&limit=10000").await;
            r.status == 200 && ids(&r.json()) == want
        }
    })
    .await;
    let raft = fc.get("/status?key=store.raft").await.json();
    assert!(
        raft["last_snapshot_index"].as_u64().unwrap_or(0) > 0,
        "{raft}"
    );
    assert_eq!(ids(&lc.get("/cdc?from=1&limit=10000").await.json()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_and_a_full_queue_drops_counts_and_never_blocks() {
    // Steps: one node. The webhook answers 503 for a while: the batch is retried (with the
    // same key) and arrives once it answers 200; /status names the failure meanwhile. Then,
    // with the webhook down and a queue bound of 2 KB, writes go on: the events past the bound
    // are dropped, counted in /debug/vars and /metrics, and every write is answered 200.
    let r = Receiver::start().await;
    r.b.failing.store(true, Ordering::Relaxed);
    let cfg = cdc_json(&r.url(), json!({"queue_max_bytes": 2048}));
    let c = TestCluster::start_with(1, with_cdc(&cfg)).await;
    let n = c.client(0).clone();
    n.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER)"]"#)
        .await;
    n.execute_ok(r#"["INSERT INTO t VALUES (1, 0)"]"#).await;
    wait_until(CLUSTER_WAIT, "/status to report the 503", || {
        let n = n.clone();
        async move {
            let s = n.get("/status?key=cdc").await.json();
            s["last_error"].as_str().is_some_and(|e| e.contains("503"))
        }
    })
    .await;
    assert!(r.posts().is_empty());
    r.b.failing.store(false, Ordering::Relaxed);
    let ev = wait_events(&r, 1, "the retried batch").await;
    assert_eq!(ev[0].1["new_row_id"], 1);
    let metrics = n.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sqlraft_cdc_send_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    r.b.failing.store(true, Ordering::Relaxed);
    for id in 2..60 {
        let w = n
            .post_json(
                "/db/execute",
                &format!(r#"[["INSERT INTO t VALUES (?, 0)", {id}]]"#),
            )
            .await;
        assert_eq!(w.status, 200, "{}", w.text());
    }
    wait_until(CLUSTER_WAIT, "dropped events to be counted", || {
        let n = n.clone();
        async move {
            let v = n.get("/debug/vars?key=cdc").await.json();
            let db = n.get("/debug/vars?key=db").await.json();
            v["cdc"]["events_dropped"].as_u64().unwrap_or(0) > 0
                && db["db"]["dropped_cdc_events"] == v["cdc"]["events_dropped"]
        }
    })
    .await;
    let s = n.get("/status?key=cdc").await.json();
    assert!(s["events_dropped"].as_u64().unwrap() > 0, "{s}");
}

/// An HTTPS webhook on loopback with `server`'s certificate, recording into `b`; with
/// `clients`, it accepts only clients with a certificate from that CA.
async fn https_receiver(
    server: &crate::tls::Issued,
    clients: Option<&crate::tls::Ca>,
    b: Arc<Behaviour>,
) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&ca.cert).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
    };
    let cfg = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let b = b.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                b.posts.lock().unwrap().push(Post { key, body });
                axum::http::StatusCode::OK
            }
        },
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_verified_against_tls_ca_cert_file() {
    // Steps: an HTTPS receiver with a certificate from a test CA. A node trusting that CA
    // (`tls.ca_cert_file`) delivers; a node trusting another CA never does, retries, and
    // /status says why (the certificate), while its writes are answered.
    let ca = crate::tls::Ca::new("webhook CA");
    let server = ca.issue("webhook");
    let b: Arc<Behaviour> = Arc::default();
    let addr = https_receiver(&server, None, b.clone()).await;
    let url = format!("https://127.0.0.1:{}/hook", addr.port());
    let ca_path = ca.cert.to_string_lossy().to_string();
    let good = cdc_json(&url, json!({"tls": {"ca_cert_file": ca_path}}));
    let c = TestCluster::start_with(1, with_cdc(&good)).await;
    c.client(0)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)"]"#)
        .await;
    wait_until(CLUSTER_WAIT, "the event over HTTPS", || {
        let n = b.posts.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;
    assert_eq!(
        b.posts.lock().unwrap()[0].body["payload"][0]["events"][0]["new_row_id"],
        1
    );

    let other = crate::tls::Ca::new("another CA");
    let other_path = other.cert.to_string_lossy().to_string();
    let bad = cdc_json(&url, json!({"tls": {"ca_cert_file": other_path}}));
    refused_by_the_webhook(&b, &bad, "a certificate failure", |e| {
        e.to_lowercase().contains("certificate")
    })
    .await;
}

/// A node with CDC config `cfg` writes a row; its /status names a failure `is_failure`
/// accepts, and nothing more reaches the receiver behind `b`.
async fn refused_by_the_webhook(
    b: &Behaviour,
    cfg: &str,
    what: &str,
    is_failure: impl Fn(&str) -> bool,
) {
    let before = b.posts.lock().unwrap().len();
    let c = TestCluster::start_with(1, with_cdc(cfg)).await;
    let n = c.client(0).clone();
    n.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (2)"]"#)
        .await;
    let is_failure = &is_failure;
    wait_until(CLUSTER_WAIT, &format!("/status to report {what}"), || {
        let n = n.clone();
        async move {
            let s = n.get("/status?key=cdc").await.json();
            s["last_error"].as_str().is_some_and(is_failure)
        }
    })
    .await;
    assert_eq!(b.posts.lock().unwrap().len(), before, "nothing got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_that_demands_a_client_certificate_gets_the_configured_one() {
    // Steps: an HTTPS receiver that accepts only clients with a certificate from its CA. A node
    // with `tls.cert_file`/`key_file` from that CA delivers; one without is refused, and
    // /status says so.
    let ca = crate::tls::Ca::new("webhook CA");
    let server = ca.issue("webhook");
    let client = ca.issue("sqlraft-cdc");
    let b: Arc<Behaviour> = Arc::default();
    let addr = https_receiver(&server, Some(&ca), b.clone()).await;
    let url = format!("https://127.0.0.1:{}/hook", addr.port());
    let path = |p: &std::path::Path| p.to_string_lossy().to_string();
    let with_cert = cdc_json(
        &url,
        json!({"tls": {"ca_cert_file": path(&ca.cert), "cert_file": path(&client.cert),
                       "key_file": path(&client.key), "server_name": "localhost"}}),
    );
    let c = TestCluster::start_with(1, with_cdc(&with_cert)).await;
    c.client(0)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)"]"#)
        .await;
    wait_until(CLUSTER_WAIT, "the event over mutual TLS", || {
        let n = b.posts.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;

    let without = cdc_json(&url, json!({"tls": {"ca_cert_file": path(&ca.cert)}}));
    refused_by_the_webhook(&b, &without, "the refused connection", |e| !e.is_empty()).await;
}
