//! Interactive transactions over HTTP (`/db/tx`): opened and used through any node, own
//! writes visible inside only, one atomic commit, 409 on a real conflict, 404 once gone,
//! aborted by a leader change, the same verdict on a node that caught up by snapshot.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{query, served_by, values, wait_until, Client, Resp, TestCluster, TestNode};

/// Opens a transaction on `c`; returns its id and start index.
pub async fn open(c: &Client) -> (String, u64) {
    let r = c.post_json("/db/tx", "").await;
    assert_eq!(r.status, 200, "open: {}", r.text());
    let j = r.json();
    let id = j["id"].as_str().expect("id").to_string();
    (id, j["index"].as_u64().expect("index"))
}

/// `POST /db/tx/{id}/{op}` with a JSON body.
pub async fn call(c: &Client, id: &str, op: &str, body: &str) -> Resp {
    c.post_json(&format!("/db/tx/{id}/{op}"), body).await
}

/// The values of a 200 answer's first result.
fn first_values(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"][0]["values"].clone()
}

async fn bank(c: &TestCluster) -> usize {
    let l = c.leader().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER)", "INSERT INTO acct VALUES (1, 100), (2, 0), (3, 50)"]"#)
        .await;
    c.wait_all_see("SELECT count(*) FROM acct", &json!([[3]]))
        .await;
    l
}

const BALANCES: &str = "SELECT bal FROM acct ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_transaction_sees_its_own_writes_and_commits_atomically() {
    // Steps: 3 nodes, balances 100/0/50. Through a follower: open, move 30 from 1 to 2, read
    // inside (sees 70/30), read outside on the leader (still 100/0), commit: one log entry,
    // then every node has 70/30. Answers come from the leader (X-Rqlite-Served-By).
    let c = TestCluster::start(3).await;
    let l = bank(&c).await;
    let f = c.followers().await[0];
    let fc = c.client(f);
    let (id, start) = open(fc).await;
    assert!(start > 0);
    let r = call(fc, &id, "execute", r#"["UPDATE acct SET bal = bal - 30 WHERE id = 1", "UPDATE acct SET bal = bal + 30 WHERE id = 2"]"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["rows_affected"], 1);
    assert_eq!(served_by(&r), Some(c.members[l].raft_adv()));
    let inside = call(fc, &id, "query", &format!(r#"["{BALANCES}"]"#)).await;
    assert_eq!(first_values(&inside), json!([[70], [30], [50]]));
    let outside = query(c.client(l), "level=strong", BALANCES).await;
    assert_eq!(values(&outside), json!([[100], [0], [50]]));
    let r = call(fc, &id, "commit", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["raft_index"].as_u64().expect("index") > start);
    c.wait_all_see(BALANCES, &json!([[70], [30], [50]])).await;
    // The transaction is gone once committed.
    let r = call(fc, &id, "query", &format!(r#"["{BALANCES}"]"#)).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_discards_and_unknown_transactions_are_404() {
    // Steps: one node. Open, insert, request (mixed read+write) sees it, rollback: nothing
    // changed outside; the id then answers 404 everywhere; an id never issued is 404 too;
    // transaction control inside is refused as a statement error.
    let n = TestNode::start().await;
    let c = &n.client;
    c.execute_ok(r#"["CREATE TABLE t (x INTEGER)"]"#).await;
    let (id, _) = open(c).await;
    let r = call(
        c,
        &id,
        "request",
        r#"["INSERT INTO t VALUES (1)", "SELECT count(*) FROM t"]"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][1]["values"], json!([[1]]));
    let r = call(c, &id, "execute", r#"["COMMIT"]"#).await;
    assert!(
        r.json()["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("not allowed"),
        "{}",
        r.text()
    );
    let r = call(c, &id, "rollback", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        c.query_values("SELECT count(*) FROM t", "strong").await,
        json!([[0]])
    );
    for op in ["query", "commit", "rollback"] {
        let r = call(c, &id, op, r#"["SELECT 1"]"#).await;
        assert_eq!(r.status, 404, "{op}: {}", r.text());
        assert!(r.text().contains("not found"), "{}", r.text());
    }
    let r = call(c, "1.nosuch", "commit", "").await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_expires_after_tx_idle_timeout() {
    // Steps: one node with -tx-idle-timeout=300ms. A transaction used within the timeout
    // lives on; once idle for longer, every call answers 404 "expired" and its write was
    // never applied.
    let idle = Duration::from_millis(300);
    let n = TestNode::start_with(|cfg| cfg.db.tx_idle_timeout = idle).await;
    let c = &n.client;
    c.execute_ok(r#"["CREATE TABLE t (x INTEGER)"]"#).await;
    let (id, _) = open(c).await;
    let r = call(c, &id, "execute", r#"["INSERT INTO t VALUES (1)"]"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The timeout itself is what is tested: wait until it has passed.
    tokio::time::sleep(idle * 2).await;
    let r = call(c, &id, "commit", "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    assert_eq!(
        c.query_values("SELECT count(*) FROM t", "strong").await,
        json!([[0]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committed_write_makes_commit_409_naming_what_changed() {
    // Steps: 3 nodes. T1 and T2 both read account 1 and write it from what they read (a
    // lost update without validation). T1 commits; T2's commit answers 409 naming the read
    // and applies nothing. T3, on another row of the same table, commits (conflicts are per
    // answer, not per table). T4 read account 1 before T1 committed: its next statement is
    // told 409 at once.
    let c = TestCluster::start(3).await;
    bank(&c).await;
    let (a, b) = (c.client(0), c.client(1));
    let read1 = r#"["SELECT bal FROM acct WHERE id = 1"]"#;
    let (t1, _) = open(a).await;
    let (t2, _) = open(b).await;
    let (t4, _) = open(c.client(2)).await;
    for (cl, t) in [(a, &t1), (b, &t2), (c.client(2), &t4)] {
        assert_eq!(
            first_values(&call(cl, t, "query", read1).await),
            json!([[100]])
        );
    }
    let r = call(
        a,
        &t1,
        "execute",
        r#"["UPDATE acct SET bal = 110 WHERE id = 1"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        b,
        &t2,
        "execute",
        r#"["UPDATE acct SET bal = 120 WHERE id = 1"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let (t3, _) = open(b).await;
    let r = call(
        b,
        &t3,
        "execute",
        r#"["UPDATE acct SET bal = bal + 1 WHERE id = 3"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(call(a, &t1, "commit", "").await.status, 200);
    let r = call(b, &t2, "commit", "").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("SELECT bal FROM acct WHERE id = 1"),
        "{}",
        r.text()
    );
    let r = call(b, &t3, "commit", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(c.client(2), &t4, "query", read1).await;
    assert_eq!(r.status, 409, "{}", r.text());
    c.wait_all_see(BALANCES, &json!([[110], [0], [51]])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_change_aborts_open_transactions_with_409_from_every_node() {
    // Steps: 3 nodes; a transaction opened through a follower writes; leadership is handed
    // over (POST /leader); then its commit answers 409 "leadership changed" through every
    // node, and its write was never applied.
    let c = TestCluster::start(3).await;
    let l = bank(&c).await;
    let f = c.followers().await[0];
    let (id, _) = open(c.client(f)).await;
    let r = call(
        c.client(f),
        &id,
        "execute",
        r#"["UPDATE acct SET bal = 0 WHERE id = 1"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = c.client(l).post_json("/leader", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(crate::harness::CLUSTER_WAIT, "a new leader", || async {
        c.agreed_leader(&[0, 1, 2]).is_some_and(|n| n != l)
    })
    .await;
    for i in 0..3 {
        let r = call(c.client(i), &id, "query", r#"["SELECT 1"]"#).await;
        assert_eq!(r.status, 409, "node {i}: {}", r.text());
        assert!(r.text().contains("leadership changed"), "{}", r.text());
    }
    c.wait_all_see(BALANCES, &json!([[100], [0], [50]])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restored_from_snapshot_reaches_the_leaders_verdicts() {
    // Steps: 3 nodes snapshotting every few entries. A follower is stopped; T2 reads account
    // 1 and writes account 2; writes go on until the leader's log is compacted past the
    // follower; it comes back and catches up by snapshot. Then account 1 changes, T2's
    // commit answers 409, and T3 (read account 1, write account 3) commits. The restored
    // follower applies both commit entries from the log: every node ends with the same data,
    // which only happens if it reached the leader's verdicts (T2 refused, T3 applied).
    let mut c = TestCluster::start_with(3, |_, cfg| {
        cfg.raft.snap = 8;
        cfg.raft.snap_int = Duration::from_millis(200);
    })
    .await;
    let l = bank(&c).await;
    let f = c.followers().await[0];
    c.stop(f).await;
    let behind = c.last_log_index(l).await;
    let lc = c.client(l).clone();
    let read1 = r#"["SELECT bal FROM acct WHERE id = 1"]"#;
    let (t2, _) = open(&lc).await;
    assert_eq!(
        first_values(&call(&lc, &t2, "query", read1).await),
        json!([[100]])
    );
    let r = call(
        &lc,
        &t2,
        "execute",
        r#"["UPDATE acct SET bal = 5 WHERE id = 2"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    for i in 0..40 {
        lc.execute_ok(&format!(r#"["UPDATE acct SET bal = {i} WHERE id = 3"]"#))
            .await;
    }
    // A snapshot now, so the leader's log no longer holds what the follower lacks (the 40
    // updates alone are more than the log keeps).
    let r = lc.post_json("/snapshot", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    c.wait_log_compacted_past(l, behind).await;
    c.restart(f).await;
    c.wait_all_see(BALANCES, &json!([[100], [0], [39]])).await;
    let vars = c.client(f).get("/debug/vars").await.json();
    assert!(
        vars["store"]["num_restores"].as_u64().unwrap_or(0) >= 1,
        "the follower did not restore a snapshot: {}",
        vars["store"]
    );
    lc.execute_ok(r#"["UPDATE acct SET bal = 98 WHERE id = 1"]"#)
        .await;
    let r = call(&lc, &t2, "commit", "").await;
    assert_eq!(r.status, 409, "{}", r.text());
    let (t3, _) = open(&lc).await;
    assert_eq!(
        first_values(&call(&lc, &t3, "query", read1).await),
        json!([[98]])
    );
    let r = call(
        &lc,
        &t3,
        "execute",
        r#"["UPDATE acct SET bal = 7 WHERE id = 3"]"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(call(&lc, &t3, "commit", "").await.status, 200);
    c.wait_all_see(BALANCES, &json!([[98], [0], [7]])).await;
}
