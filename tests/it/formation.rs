//! Forming a cluster and bringing it back: node 1 bootstraps and the others `-join` it;
//! `-bootstrap-expect` nodes that start together form exactly one cluster; a whole cluster
//! stopped and started again on its data dirs elects a leader and keeps every row.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;

use serde_json::json;

use crate::harness::{assert_nodes_lists_voters, query, values, wait_members, TestCluster};

/// Every node's Raft configuration and `/nodes` show the same three voters and the same
/// leader, which is returned.
async fn every_node_lists_the_three_voters(c: &TestCluster) -> usize {
    let l = c.leader().await;
    for i in 0..3 {
        wait_members(c, i, &[("1", true), ("2", true), ("3", true)]).await;
        assert_nodes_lists_voters(c, i, &["1", "2", "3"], l).await;
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_formed_by_join_list_three_reachable_voters_and_one_leader() {
    // Steps: node 1 bootstraps, nodes 2 and 3 -join node 1's Raft address; every node's Raft
    // configuration and /nodes then show the same three voters and the same single leader.
    let c = TestCluster::start(3).await;
    let l = every_node_lists_the_three_voters(&c).await;
    for i in 0..3 {
        let st = c.client(i).get("/status?key=store.leader").await.json();
        assert_eq!(
            st,
            json!({"addr": c.members[l].raft_adv(), "node_id": c.members[l].id})
        );
    }
    let leaders: Vec<usize> = (0..3).filter(|&i| c.node(i).store().is_leader()).collect();
    assert_eq!(leaders, vec![l]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_forms_exactly_one_cluster() {
    // Steps: three nodes start at the same time, each with -join listing all three Raft
    // addresses and -bootstrap-expect 3; they must form one cluster (one leader every node
    // agrees on, the same three voters everywhere), and a write reaches every node.
    let c = TestCluster::start_bootstrap_expect(3).await;
    let l = every_node_lists_the_three_voters(&c).await;
    let terms: BTreeSet<u64> = (0..3)
        .map(|i| {
            c.node(i)
                .store()
                .raft()
                .metrics()
                .borrow_watched()
                .current_term
        })
        .collect();
    assert_eq!(terms.len(), 1, "one cluster has one term: {terms:?}");
    let f = (l + 1) % 3;
    c.client(f)
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES('one cluster')"]"#)
        .await;
    c.wait_all_see("SELECT v FROM t", &json!([["one cluster"]]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_with_its_data() {
    // Steps: 3 nodes, writes through every node; all three stop; all three start again on
    // the same data dirs and ports. They elect a leader among themselves, every node has
    // every row, and the cluster takes writes again.
    let mut c = TestCluster::start(3).await;
    let l = c.leader().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, node INTEGER)"]"#)
        .await;
    for i in 0..30_usize {
        c.client(i % 3)
            .execute_ok(&format!(
                r#"[["INSERT INTO t(id, node) VALUES(?, ?)", {i}, {}]]"#,
                i % 3
            ))
            .await;
    }
    let expected = values(&query(c.client(l), "level=strong", "SELECT * FROM t ORDER BY id").await);
    assert_eq!(expected.as_array().unwrap().len(), 30);
    for i in 0..3 {
        c.stop(i).await;
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    let l2 = c.wait_for_leader().await;
    for i in 0..3 {
        c.wait_ready(i).await;
        wait_members(&c, i, &[("1", true), ("2", true), ("3", true)]).await;
        let r = query(c.client(i), "level=strong", "SELECT * FROM t ORDER BY id").await;
        assert_eq!(values(&r), expected, "node {}", i + 1);
    }
    c.wait_all_see("SELECT * FROM t ORDER BY id", &expected)
        .await;
    c.client(l2)
        .execute_ok(r#"["INSERT INTO t(id, node) VALUES(100, -1)"]"#)
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM t", &json!([[31]]))
        .await;
}
