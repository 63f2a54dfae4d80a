//! Every failure reaches the client as a status code, in bounded time: 503 when nothing
//! happened, 504 when a write's outcome is unknown, never a 200 carrying an error.

use std::time::{Duration, Instant};

use crate::harness::{url_encode, TestCluster, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_quorum_answers_503_within_an_election_timeout() {
    // Steps: a 2-node cluster; the follower is killed; right after, linearizable and strong
    // reads on the leader answer 503 (not a 200 with an error) within about an election
    // timeout, and a write answers 503 or 504, never a 200.
    let mut c = TestCluster::start(2).await;
    let (l, f) = c.leader_and_follower().await;
    c.client(l).execute_ok(r#"["CREATE TABLE t (v)"]"#).await;
    c.kill(f).await;
    let q = url_encode("SELECT count(*) FROM t");
    for level in ["linearizable", "strong"] {
        let started = Instant::now();
        let r = c
            .client(l)
            .get(&format!("/db/query?level={level}&q={q}"))
            .await;
        assert_eq!(r.status, 503, "{level}: {}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{level} took {:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let r = c
        .client(l)
        .post_json("/db/execute", r#"["INSERT INTO t VALUES(1)"]"#)
        .await;
    assert!(matches!(r.status, 503 | 504), "{} {}", r.status, r.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_millions_of_statements_is_refused_at_once() {
    // Steps: 16 million statements in one body (64 MiB, under the body limit): 413 naming
    // the limit, quickly; the node keeps serving; a request at the limit still works.
    let n = TestNode::start().await;
    let mut body = String::with_capacity(64 << 20);
    body.push('[');
    for i in 0..16_000_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str("\"x\"");
    }
    body.push(']');
    let started = Instant::now();
    let r = n.client.post_json("/db/execute", &body).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("-http-max-statements"), "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(body);
    assert_eq!(
        n.client.query_values("SELECT 1", "weak").await,
        serde_json::json!([[1]])
    );
}
