//! No query of death: a runaway read or write, or SQL that names files, costs its sender an
//! error and nothing else. Through the real binary on a 3-node cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{url_encode, Client, Proc, ProcCluster};

const FOREVER_READ: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT COUNT(*) FROM c";
const FOREVER_WRITE: &str = "INSERT INTO t(v) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c)";

/// Asserts that `c` serves a read and (if `write`) a write, each within a second.
async fn served_within_a_second(c: &Client, write: bool, n: i64) {
    let started = Instant::now();
    assert_eq!(c.query_values("SELECT 1", "weak").await, json!([[1]]));
    if write {
        c.execute_ok(&format!(r#"["INSERT INTO t(v) VALUES({n})"]"#))
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

/// Sends `sql` at `level` to `c` in the background; returns the answer when it comes.
fn runaway_read(c: &Client, level: &str, sql: &str) -> tokio::task::JoinHandle<(u16, String)> {
    let c = Client::with_timeout(c.base.clone(), Duration::from_secs(30));
    let target = format!("/db/query?level={level}&q={}", url_encode(sql));
    tokio::spawn(async move {
        let r = c.get(&target).await;
        (r.status, r.text())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_sql_costs_its_sender_an_error_and_nothing_else() {
    // Steps: 3 nodes with -db-timeout 2s and a small -db-max-steps. A read that never ends at
    // weak (on the leader) and at strong (through a follower), and a write that never ends:
    // each answers its error, while other clients' reads (and, beside the runaway reads,
    // writes) are served within a second. ATTACH and VACUUM INTO are refused. Then every
    // node is killed and restarted: they come back with the same data and take writes.
    let mut c = ProcCluster::start(3, &["-db-timeout", "2s", "-db-max-steps", "20000000"]).await;
    let l = c.wait_for_leader().await;
    let f = (0..3).find(|&i| i != l).expect("a follower");
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v)"]"#)
        .await;

    let weak = runaway_read(c.client(l), "weak", FOREVER_READ);
    let strong = runaway_read(c.client(f), "strong", FOREVER_READ);
    // Other clients are served the whole time the runaway reads run (about 2 s).
    let mut n = 0;
    while !weak.is_finished() || !strong.is_finished() {
        served_within_a_second(c.client(l), true, n).await;
        served_within_a_second(c.client(f), true, 1000 + n).await;
        n += 1;
    }
    assert!(n >= 5, "the runaway reads ended too soon ({n} rounds)");
    for (what, h) in [("weak", weak), ("strong", strong)] {
        let (status, body) = h.await.expect("task");
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            json!({"results": [{"error": "query timeout"}]}),
            "{what}"
        );
    }

    // A write that never ends stops at its budget, with the same error on every node.
    let started = Instant::now();
    let r = c
        .client(f)
        .post_json(
            "/db/execute",
            &serde_json::to_string(&[FOREVER_WRITE]).expect("json"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("-db-max-steps")),
        "{}",
        r.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    served_within_a_second(c.client(l), true, 5000).await;

    // SQL cannot reach the host's files.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("other.db");
    let attach = format!("ATTACH DATABASE '{}' AS e", target.display());
    let r = c
        .client(l)
        .get(&format!("/db/query?q={}", url_encode(&attach)))
        .await;
    assert!(r.text().contains("ATTACH is not allowed"), "{}", r.text());
    for sql in [attach, format!("VACUUM INTO '{}'", target.display())] {
        let r = c
            .client(l)
            .post_json(
                "/db/execute",
                &serde_json::to_string(&[&sql]).expect("json"),
            )
            .await;
        assert!(r.text().contains("is not allowed"), "{sql}: {}", r.text());
    }
    assert!(!target.exists());

    // Every node comes back from a crash of them all, with the same rows, and takes writes.
    let rows = c
        .client(l)
        .query_values("SELECT id, v FROM t ORDER BY id", "strong")
        .await;
    let before = rows.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(before as i64, 2 * n + 1, "{rows}");
    c.restart_all().await;
    let l = c.wait_for_leader().await;
    c.client(l)
        .execute_ok(r#"["INSERT INTO t(v) VALUES('after')"]"#)
        .await;
    let want = c
        .client(l)
        .query_values("SELECT id, v FROM t ORDER BY id", "strong")
        .await;
    assert_eq!(want.as_array().map(Vec::len), Some(before + 1), "{want}");
    for i in 0..3 {
        let cl = c.client(i).clone();
        let want = want.clone();
        crate::harness::wait_until(Duration::from_secs(20), "every node to converge", || {
            let (cl, want) = (cl.clone(), want.clone());
            async move {
                cl.query_values("SELECT id, v FROM t ORDER BY id", "none")
                    .await
                    == want
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_read() {
    // Steps: one read connection only and a long default time limit; a client sends a read
    // that never ends and gives up after 300 ms; the next client's read is served at once
    // (it would wait a minute if the first statement were still running).
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = Proc::spawn(tmp.path(), &["-db-max-ro-conns", "1", "-db-timeout", "60s"]);
    p.wait_ready().await;
    let impatient = Client::with_timeout(p.client.base.clone(), Duration::from_millis(300));
    let gone = impatient
        .try_get(&format!("/db/query?q={}", url_encode(FOREVER_READ)))
        .await;
    assert!(gone.is_err(), "{gone:?}");
    let started = Instant::now();
    assert_eq!(
        p.client.query_values("SELECT 1", "weak").await,
        json!([[1]])
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
