//! The transaction rule: every request is applied as a unit of its own, and whatever
//! transaction its statements leave open is rolled back when its log entry is applied, on
//! every node, so no request can leave the database inside a transaction, lock reads, or
//! make another client's acknowledged write disappear.

use proptest::prelude::*;
use serde_json::json;

use crate::harness::{url_encode, wait_until, Client, TestCluster, TestNode, CLUSTER_WAIT};

const LEFT_OPEN: &str = sqlraft::db::engine::LEFT_OPEN;

/// Issue 9, input 1, as a user sends it.
const FAILING_DUMP: &str = "PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE bar (id integer not null primary key, name text);
INSERT INTO \"bar\" VALUES(1,'a');
INSERT INTO \"bar\" VALUES(1,'b');
COMMIT;
";

async fn load_text(c: &Client, sql: &str) -> crate::harness::Resp {
    c.load_sql("/db/load", sql).await
}

/// Every read level answers on `c`, none of them `database is locked`.
async fn reads_answer_at_every_level(c: &Client, leader: bool) {
    let levels: &[&str] = if leader {
        &["none", "weak", "linearizable", "strong"]
    } else {
        &["none"]
    };
    for level in levels {
        let r = c
            .get(&format!(
                "/db/query?level={level}&q={}",
                url_encode("SELECT count(*) FROM sqlite_master")
            ))
            .await;
        assert_eq!(r.status, 200, "{level}: {}", r.text());
        assert!(!r.text().contains("locked"), "{level}: {}", r.text());
        assert!(
            r.json()["results"][0].get("error").is_none(),
            "{level}: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sql_load_is_rolled_back_whole_on_every_node() {
    // Steps: a 3-node cluster; the failing dump is loaded through a follower; it answers the
    // UNIQUE error and the rollback; on every node the table does not exist, reads at every
    // level answer, a SQL backup works, BEGIN/COMMIT works; after a restart of every node
    // the same holds.
    let mut c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let r = load_text(c.client(f), FAILING_DUMP).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"results": [{"error": "UNIQUE constraint failed: bar.id"}, {"error": LEFT_OPEN}]})
    );
    for round in 0..2 {
        for i in c.live() {
            let cl = c.client(i).clone();
            wait_until(CLUSTER_WAIT, "the load to be applied everywhere", || {
                let cl = cl.clone();
                async move {
                    let r = cl
                        .get("/db/query?level=none&q=SELECT%20*%20FROM%20bar")
                        .await;
                    r.json()["results"][0]["error"] == "no such table: bar"
                }
            })
            .await;
            reads_answer_at_every_level(&cl, i == c.leader().await).await;
            let dump = cl.get("/db/backup?fmt=sql&noleader").await;
            assert_eq!(dump.status, 200, "{}", dump.text());
            assert!(!dump.text().contains("bar"), "{}", dump.text());
        }
        let l = c.leader().await;
        c.client(l)
            .execute_ok(r#"["BEGIN TRANSACTION; COMMIT;"]"#)
            .await;
        if round == 0 {
            // The log replays into the same state.
            for i in 0..c.len() {
                c.stop(i).await;
            }
            for i in 0..c.len() {
                c.restart(i).await;
            }
            c.wait_for_leader().await;
        }
    }
    let _ = l;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_never_captures_another_clients_write() {
    // Steps: client A leaves a transaction open (BEGIN, SAVEPOINT, an error inside its own
    // transaction); client B's write right after is acknowledged; client C's ROLLBACK finds
    // no transaction; B's row is on every node, A's are nowhere.
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"]"#)
        .await;
    let opens = [
        r#"["BEGIN", "INSERT INTO t VALUES(1, 'a')"]"#,
        r#"["SAVEPOINT sp", "INSERT INTO t VALUES(1, 'a')"]"#,
        r#"["BEGIN; INSERT INTO t VALUES(1, 'a'); INSERT INTO nosuch VALUES(1); COMMIT;"]"#,
    ];
    for (n, open) in opens.iter().enumerate() {
        let a = c.client(f).post_json("/db/execute", open).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        let results = j["results"].as_array().expect("results");
        assert_eq!(results.last(), Some(&json!({"error": LEFT_OPEN})), "{j}");
        let id = 10 + n;
        c.client(l)
            .execute_ok(&format!(r#"["INSERT INTO t VALUES({id}, 'b')"]"#))
            .await;
        let r = c
            .client(f)
            .post_json("/db/execute", r#"["ROLLBACK"]"#)
            .await;
        assert_eq!(
            r.json()["results"][0]["error"],
            "cannot rollback - no transaction is active"
        );
    }
    // Queued requests are units too: one left open does not swallow the next.
    let q = c
        .client(l)
        .post_json(
            "/db/execute?queue",
            r#"["BEGIN", "INSERT INTO t VALUES(2, 'a')"]"#,
        )
        .await;
    assert_eq!(q.status, 200);
    let q = c
        .client(l)
        .post_json(
            "/db/execute?queue&wait",
            r#"["INSERT INTO t VALUES(20, 'b')"]"#,
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.text());
    assert_eq!(q.json()["results"], json!([]), "{}", q.text());
    c.wait_all_see(
        "SELECT id, who FROM t ORDER BY id",
        &json!([[10, "b"], [11, "b"], [12, "b"], [20, "b"]]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_filtered_dump_loads_into_an_empty_node() {
    // Steps: t1, t2, t3 each with an index, triggers on t1 and t2, views; the dump of t1
    // alone loads into a fresh node with no error, and holds t1's rows.
    let src = TestNode::start().await;
    src.client
        .execute_ok(
            r#"["CREATE TABLE t1 (id INTEGER PRIMARY KEY, v TEXT)", "CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT)",
                "CREATE TABLE t3 (id INTEGER PRIMARY KEY, v TEXT)", "CREATE INDEX i1 ON t1(v)", "CREATE INDEX i2 ON t2(v)",
                "CREATE INDEX i3 ON t3(v)", "CREATE TRIGGER g1 AFTER INSERT ON t1 BEGIN SELECT 1; END",
                "CREATE TRIGGER g2 AFTER INSERT ON t2 BEGIN SELECT 1; END", "CREATE VIEW v1 AS SELECT v FROM t1",
                "CREATE VIEW v2 AS SELECT t2.v FROM t2 JOIN t3 USING (id)",
                "INSERT INTO t1(v) VALUES('one')", "INSERT INTO t2(v) VALUES('two')"]"#,
        )
        .await;
    let dump = src.client.get("/db/backup?fmt=sql&tables=t1").await;
    assert_eq!(dump.status, 200);
    let dst = TestNode::start().await;
    let r = load_text(&dst.client, &dump.text()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["results"][0].get("error").is_none(),
        "{}",
        r.text()
    );
    assert_eq!(
        dst.client.query_values("SELECT v FROM v1", "weak").await,
        json!([["one"]])
    );
    let names = dst
        .client
        .query_values("SELECT name FROM sqlite_master ORDER BY name", "weak")
        .await;
    assert_eq!(names, json!([["g1"], ["i1"], ["t1"], ["v1"]]));
}

/// One statement of a random batch.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("BEGIN".to_string()),
        Just("COMMIT".to_string()),
        Just("ROLLBACK".to_string()),
        Just("SAVEPOINT s".to_string()),
        Just("RELEASE s".to_string()),
        Just("ROLLBACK TO s".to_string()),
        (0..6i64).prop_map(|k| format!("INSERT INTO p(k) VALUES({k})")),
        (0..6i64).prop_map(|k| format!("DELETE FROM p WHERE k = {k}")),
        Just("INSERT INTO nosuch VALUES(1)".to_string()),
        Just("SELECT * FROM p".to_string()),
    ]
}

fn batches() -> impl Strategy<Value = Vec<(Vec<String>, bool)>> {
    proptest::collection::vec(
        (proptest::collection::vec(statement(), 1..6), any::<bool>()),
        1..8,
    )
}

#[test]
fn random_batches_leave_every_node_in_autocommit_with_the_same_rows() {
    // Steps: one 3-node cluster for every case; each case sends random batches (some with
    // `transaction`) through random nodes; after each batch, BEGIN/COMMIT works (the
    // database is in autocommit: it would fail inside a transaction) and every node holds
    // the leader's rows.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = rt.block_on(async {
        let c = TestCluster::start(3).await;
        let l = c.leader().await;
        c.client(l)
            .execute_ok(r#"["CREATE TABLE p (k INTEGER UNIQUE)"]"#)
            .await;
        c
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let result = runner.run(&(batches(), 0..3usize), |(batches, via)| {
        rt.block_on(async {
            for (stmts, tx) in &batches {
                let body = serde_json::to_string(stmts).expect("json");
                let target = if *tx {
                    "/db/execute?transaction"
                } else {
                    "/db/execute"
                };
                let r = c
                    .client(via)
                    .post_json_across_elections(target, &body)
                    .await;
                assert_eq!(r.status, 200, "{body}: {}", r.text());
                let l = c.leader().await;
                c.client(l)
                    .execute_ok(r#"["BEGIN TRANSACTION; COMMIT;"]"#)
                    .await;
                let rows = c
                    .client(l)
                    .query_values("SELECT k FROM p ORDER BY k", "strong")
                    .await;
                c.wait_all_see("SELECT k FROM p ORDER BY k", &rows).await;
            }
            c.client(via).execute_ok(r#"["DELETE FROM p"]"#).await;
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
