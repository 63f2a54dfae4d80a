//! Changing who is in the cluster: removing a node (through a follower, on shutdown), a
//! non-voter that receives writes but is listed only with `nonvoters`, a node that comes back
//! with a new address replacing its old entry, and the leader reaping members it cannot
//! reach. Golden section 11 (C264-C272).

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    assert_nodes_lists_voters, query, served_by, values, wait_members, wait_until, TestCluster,
    CLUSTER_WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_removed_via_a_follower_leaves_the_cluster() {
    // Steps: 3 nodes. DELETE /remove of one follower, sent to the other follower: 200, empty
    // body, forwarded (C270); /nodes then lists 2 voters (C272) and the cluster keeps
    // accepting writes. Removing it again or an unknown id is 200 (C268, C271); a bad body
    // is 400 with an empty body (C265-C267); GET is 405 (C269); `redirect` on a follower is a
    // 301 to the leader (C264).
    let c = TestCluster::start(3).await;
    let l = c.leader().await;
    let followers = c.followers().await;
    let (gone, via) = (followers[1], followers[0]);
    let leader_raft = c.members[l].raft_adv();
    let remove = |id: &str| format!(r#"{{"id":"{id}"}}"#).into_bytes();
    let del = |i: usize, target: &'static str, body: Vec<u8>| {
        let cl = c.client(i).clone();
        async move {
            cl.send("DELETE", target, Some("application/json"), Some(body))
                .await
        }
    };

    let r = del(via, "/remove?redirect", remove(&c.members[gone].id)).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/remove?redirect", c.members[l].api_url()))
    );
    assert!(r.body.is_empty());
    for bad in [&b"nope"[..], br#"{"id":"3","x":1}"#, br#"{"id":3}"#, b""] {
        let r = del(via, "/remove", bad.to_vec()).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.body.is_empty(), "{}", r.text());
    }
    assert_eq!(c.client(via).get("/remove").await.status, 405);
    let r = del(via, "/remove", remove("99")).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{}", r.text());
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()), "C268");
    // Nothing happened yet.
    wait_members(&c, l, &[("1", true), ("2", true), ("3", true)]).await;

    let r = del(via, "/remove", remove(&c.members[gone].id)).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{}", r.text());
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));
    let mut remaining: Vec<(&str, bool)> = [l, via]
        .iter()
        .map(|&i| (c.members[i].id.as_str(), true))
        .collect();
    remaining.sort();
    let ids: Vec<&str> = remaining.iter().map(|(id, _)| *id).collect();
    for i in [l, via] {
        wait_members(&c, i, &remaining).await;
        assert_nodes_lists_voters(&c, i, &ids, l).await;
    }
    let r = del(l, "/remove", remove(&c.members[gone].id)).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "removing twice (C271)");

    // Two voters still make a quorum.
    c.client(via)
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES('still a cluster')"]"#)
        .await;
    let r = query(c.client(via), "level=strong", "SELECT v FROM t").await;
    assert_eq!(values(&r), json!([["still a cluster"]]));
    assert_eq!(c.wait_for_leader_among(&[l, via]).await, l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_voter_receives_writes_and_is_listed_only_with_nonvoters() {
    // Steps: a 4th node joins with raft_non_voter; /nodes omits it, /nodes?nonvoters lists it
    // with voter=false; writes reach it (level=none and auto are local on a non-voter),
    // level=weak on it is forwarded; it can write through the leader too.
    let mut c = TestCluster::start(3).await;
    let l = c.leader().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    let nv = c.add_node(|cfg| cfg.raft.non_voter = true).await;
    let nv_id = c.members[nv].id.clone();
    assert_eq!(nv_id, "4");
    let want = [("1", true), ("2", true), ("3", true), ("4", false)];
    for i in 0..4 {
        wait_members(&c, i, &want).await;
    }
    for i in 0..4 {
        assert_nodes_lists_voters(&c, i, &["1", "2", "3"], l).await;
        let j = c.client(i).get("/nodes?nonvoters").await.json();
        assert_eq!(j.as_object().unwrap().len(), 4, "{j}");
        assert_eq!(j["4"]["voter"], false, "{j}");
        assert_eq!(j["4"]["reachable"], true, "{j}");
        assert_eq!(j["4"]["leader"], false, "{j}");
        assert_eq!(j["4"]["addr"], c.members[nv].raft_adv(), "{j}");
    }
    let st = c.client(nv).get("/status?key=store.raft").await.json();
    assert_eq!(st["voter"], false, "{st}");
    assert_ne!(st["state"], "Leader", "{st}");

    c.client(l)
        .execute_ok(r#"["INSERT INTO t VALUES(2)"]"#)
        .await;
    c.wait_all_see("SELECT v FROM t ORDER BY v", &json!([[1], [2]]))
        .await;
    let r = query(c.client(nv), "level=auto", "SELECT COUNT(*) FROM t").await;
    assert_eq!(values(&r), json!([[2]]));
    assert_eq!(served_by(&r), None, "auto is none on a non-voter");
    let r = query(c.client(nv), "level=weak", "SELECT COUNT(*) FROM t").await;
    assert_eq!(values(&r), json!([[2]]));
    assert_eq!(served_by(&r), Some(c.members[l].raft_adv()));
    c.client(nv)
        .execute_ok(r#"["INSERT INTO t VALUES(3)"]"#)
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM t", &json!([[3]]))
        .await;
    assert!(!c.node(nv).store().is_voter());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_can_leave_on_shutdown_and_a_removed_node_stops_raft() {
    // Steps: node 3 runs with -raft-cluster-remove-shutdown: stopping it removes it from the
    // configuration. Node 2 runs with -raft-remove-shutdown: after DELETE /remove it stops
    // Raft instead of campaigning on its own.
    let mut c = TestCluster::start_with(3, |i, cfg| {
        cfg.raft.cluster_remove_shutdown = i == 2;
        cfg.raft.remove_shutdown = i == 1;
    })
    .await;
    let leader = c.leader().await;
    assert_eq!(leader, 0, "node 1 bootstrapped and leads");
    c.stop(2).await;
    c.client(0)
        .wait_members("/nodes", 2, "node 3 to be removed")
        .await;

    let r = c
        .client(0)
        .send(
            "DELETE",
            "/remove",
            Some("application/json"),
            Some(br#"{"id":"2"}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let removed = c.node(1).store().clone();
    wait_until(CLUSTER_WAIT, "the removed node to stop Raft", || {
        let state = removed.state_name();
        async move { state == "Shutdown" }
    })
    .await;
    // The remaining single voter still serves writes.
    c.client(0)
        .execute_ok(r#"["CREATE TABLE alone (v)"]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_back_with_a_new_address_replaces_its_old_entry() {
    // Steps: node 3 dies and loses its disk; it comes back with the same id but a new Raft
    // address and joins again. The leader removes the old entry (same id, other address) and
    // adds the new one: still three members, node 3 at its new address, data replicated. An
    // identical rejoin afterwards changes nothing.
    let mut c = TestCluster::start(3).await;
    c.client(0)
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    c.kill(2).await;
    let old_addr = c.members[2].raft_adv();
    let back = c
        .add_node(|cfg| {
            cfg.node_id = Some("3".into());
        })
        .await;
    let new_addr = c.members[back].raft_adv();
    assert_ne!(old_addr, new_addr);
    let lc = c.client(0).clone();
    let want = new_addr.clone();
    wait_until(CLUSTER_WAIT, "node 3 listed at its new address", || {
        let (lc, want) = (lc.clone(), want.clone());
        async move {
            let nodes = lc.get("/nodes").await.json();
            nodes.as_object().is_some_and(|o| o.len() == 3) && nodes["3"]["addr"] == want.as_str()
        }
    })
    .await;
    assert_eq!(
        c.client(back).query_values("SELECT v FROM t", "none").await,
        serde_json::json!([[1]])
    );
    // Rejoining with the same id and address is a no-op.
    let me = c.node(back).info().clone();
    let leader = c.leader().await;
    c.node(leader)
        .store()
        .add_member(me, true)
        .await
        .expect("idempotent rejoin");
    assert_eq!(
        c.client(0)
            .get("/nodes")
            .await
            .json()
            .as_object()
            .map(|o| o.len()),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reaps_a_member_it_cannot_reach() {
    // Steps: three voters and one non-voter with reaping on (voters after 1s, non-voters after
    // 1s); a follower and the non-voter die; within a bounded time the leader removes both,
    // and the remaining two voters still accept writes.
    let mut c = TestCluster::start_with(3, |_, cfg| {
        cfg.raft.reap_node_timeout = Duration::from_secs(1);
        cfg.raft.reap_read_only_node_timeout = Duration::from_secs(1);
    })
    .await;
    let replica = c
        .add_node(|cfg| {
            cfg.raft.non_voter = true;
            cfg.raft.reap_node_timeout = Duration::from_secs(1);
            cfg.raft.reap_read_only_node_timeout = Duration::from_secs(1);
        })
        .await;
    let leader = c.leader().await;
    let follower = c
        .followers()
        .await
        .into_iter()
        .find(|f| *f != replica)
        .unwrap();
    c.kill(follower).await;
    c.kill(replica).await;
    c.client(leader)
        .wait_members("/nodes?nonvoters", 2, "the dead members to be reaped")
        .await;
    c.client(leader)
        .execute_ok(r#"["CREATE TABLE after_reap (v)"]"#)
        .await;
}
