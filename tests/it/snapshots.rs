//! Snapshots and log entries of any size reach every node: a lagging follower catches up from
//! a multi-MB snapshot, and a large database loaded into a cluster replicates.

use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_until, TestCluster};

/// Waits until node `i` holds `want` rows in `t`.
async fn wait_rows(c: &TestCluster, i: usize, want: i64, within: Duration) {
    let cl = c.client(i).clone();
    wait_until(
        within,
        &format!("node {} to hold {want} rows", i + 1),
        || {
            let cl = cl.clone();
            async move {
                cl.try_get("/db/query?level=none&q=SELECT%20COUNT(*)%20FROM%20t")
                    .await
                    .ok()
                    .is_some_and(|r| r.json()["results"][0]["values"] == json!([[want]]))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_from_a_multi_megabyte_snapshot() {
    // Steps (issue 13, input 1): 3 nodes snapshotting every 200 entries, checked every
    // second; a follower is stopped; 100 rows of 48 KiB each (a ~5 MB database) are written;
    // enough small writes follow for the log to be compacted past what the follower has; the
    // follower restarts and must converge (by snapshot: the log it needs is gone).
    let mut c = TestCluster::start_with(3, |_, cfg| {
        cfg.raft.snap = 200;
        cfg.raft.snap_int = Duration::from_secs(1);
    })
    .await;
    let l = c.leader().await;
    let f = c.followers().await[0];
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]"#)
        .await;
    c.stop(f).await;
    for i in 0..100 {
        c.client(l)
            .execute_ok(&format!(
                r#"["INSERT INTO t(id, v) VALUES({i}, randomblob(49152))"]"#
            ))
            .await;
    }
    for i in 100..600 {
        c.client(l)
            .execute_ok(&format!(r#"["INSERT INTO t(id, v) VALUES({i}, x'00')"]"#))
            .await;
    }
    let lc = c.client(l).clone();
    wait_until(
        Duration::from_secs(20),
        "the leader to compact its log",
        || {
            let lc = lc.clone();
            async move {
                let raft = lc.get("/status?key=store.raft").await.json();
                raft["last_snapshot_index"].as_u64().unwrap_or(0) > 300
            }
        },
    )
    .await;
    c.restart(f).await;
    wait_rows(&c, f, 600, Duration::from_secs(60)).await;
    let raft = c.client(f).get("/status?key=store.raft").await.json();
    assert!(
        raft["last_snapshot_index"].as_u64().unwrap_or(0) > 0,
        "{raft}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_database_loaded_into_a_cluster_reaches_every_node() {
    // Steps (issue 13, input 1): a 20 MB SQLite file (10,000 rows of 2 KB blobs) is loaded
    // through a follower of a 3-node cluster: 200, and every node holds the rows.
    let c = TestCluster::start(3).await;
    let f = c.followers().await[0];
    let image = {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 10000)
             INSERT INTO t SELECT x, randomblob(2048) FROM c;",
        )
        .expect("fill");
        conn.serialize(rusqlite::MAIN_DB).expect("image").to_vec()
    };
    assert!(image.len() > 20_000_000, "{}", image.len());
    let r = c
        .client(f)
        .send(
            "POST",
            "/db/load",
            Some("application/octet-stream"),
            Some(image),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 0..3 {
        wait_rows(&c, i, 10_000, Duration::from_secs(60)).await;
    }
}
