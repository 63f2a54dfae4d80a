//! Reads served by any node, as fresh as the client needs: `min_index` (read-your-writes with
//! the `raft_index` a write answered) and `linearizable` reads on followers and non-voters
//! (a ReadIndex from the leader, then a local read: nothing is served by the leader). A node
//! that cannot catch up answers a status code, never stale data: 503 when it is cut off from
//! the leader, 504 when `min_index` was not applied within `timeout`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{query, served_by, url_encode, values, wait_until, Client, TestCluster};

/// Writes `v` into row 1 through `c`, asking for the entry's index; returns it.
async fn write_indexed(c: &Client, v: i64) -> u64 {
    let r = c
        .post_json(
            "/db/execute?raft_index",
            &format!(r#"[["INSERT OR REPLACE INTO t(id, v) VALUES(1, ?)", {v}]]"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["raft_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no raft_index: {}", r.text()))
}

async fn cluster_with_table(n: usize) -> TestCluster {
    let c = TestCluster::start(n).await;
    let l = c.leader().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"]"#)
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM t", &json!([[0]]))
        .await;
    c
}

const READ: &str = "SELECT v FROM t WHERE id = 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_min_index_on_another_node_always_sees_the_write() {
    // Steps: 3 nodes. 60 times: write v=i through node i%3 with `raft_index`, then at once
    // read on the next node with `min_index` set to that index, at level none, weak and
    // auto in turn (and through /db/request): the read sees v=i, and it was served by the
    // node asked (no X-Rqlite-Served-By), leader or follower.
    let c = cluster_with_table(3).await;
    let levels = ["none", "weak", "auto"];
    for i in 0..60_i64 {
        let writer = i as usize % 3;
        let reader = (writer + 1) % 3;
        let index = write_indexed(c.client(writer), i).await;
        let level = levels[i as usize % levels.len()];
        let r = query(
            c.client(reader),
            &format!("level={level}&min_index={index}"),
            READ,
        )
        .await;
        assert_eq!(
            values(&r),
            json!([[i]]),
            "round {i}, node {reader}, {level}"
        );
        assert_eq!(served_by(&r), None, "round {i}: served by the node asked");
        let r = c
            .client(reader)
            .post_json(
                &format!("/db/request?level={level}&min_index={index}"),
                &format!(r#"["{READ}"]"#),
            )
            .await;
        assert_eq!(values(&r), json!([[i]]), "request, round {i}, {level}");
        assert_eq!(served_by(&r), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_a_write_made_through_another_node() {
    // Steps: 3 nodes and a non-voter. 60 times: write v=i through one node (leader or
    // follower), then at once read at level=linearizable on a different node that is not
    // the leader (voting follower or non-voter), by /db/query and read-only /db/request:
    // the read sees v=i and was served by the node asked, not forwarded. With `redirect`,
    // a follower still answers 301 to the leader; `strong` is still forwarded.
    let mut c = cluster_with_table(3).await;
    let nv = c.add_node(|cfg| cfg.raft.non_voter = true).await;
    c.wait_all_see("SELECT COUNT(*) FROM t", &json!([[0]]))
        .await;
    let l = c.leader().await;
    let voters: Vec<usize> = (0..3).collect();
    let mut readers: Vec<usize> = voters.iter().copied().filter(|&i| i != l).collect();
    readers.push(nv);
    for i in 0..60_i64 {
        let writer = voters[i as usize % 3];
        let reader = readers[i as usize % readers.len()];
        let reader = if reader == writer {
            readers[(i as usize + 1) % readers.len()]
        } else {
            reader
        };
        write_indexed(c.client(writer), i).await;
        let r = query(c.client(reader), "level=linearizable", READ).await;
        assert_eq!(values(&r), json!([[i]]), "round {i}, node {reader}");
        assert_eq!(served_by(&r), None, "round {i}: served by node {reader}");
        let r = c
            .client(reader)
            .post_json("/db/request?level=linearizable", &format!(r#"["{READ}"]"#))
            .await;
        assert_eq!(
            values(&r),
            json!([[i]]),
            "request, round {i}, node {reader}"
        );
        assert_eq!(served_by(&r), None);
    }
    let f = readers[0];
    let leader_api = c.members[l].api_url();
    let target = format!(
        "/db/query?level=linearizable&redirect&q={}",
        url_encode(READ)
    );
    let r = c.client(f).get(&target).await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{leader_api}{target}")));
    let r = query(c.client(f), "level=strong", READ).await;
    assert_eq!(values(&r), json!([[59]]));
    assert_eq!(served_by(&r), Some(c.members[l].raft_adv()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_answers_503_rather_than_stale_data() {
    // Steps: 3 nodes, v=1 everywhere. A follower is cut off; v=2 is written through the
    // leader (index N). On the follower, level=none&min_index=N and level=linearizable
    // answer 503, well within their timeouts, never v=1. A min_index it has applied is
    // still served at level=none. Reconnected, it serves v=2 at both.
    let c = cluster_with_table(3).await;
    let l = c.leader().await;
    let f = c.followers().await[0];
    let before = write_indexed(c.client(l), 1).await;
    c.wait_all_see(READ, &json!([[1]])).await;
    c.set_isolated(f, true);
    let index = write_indexed(c.client(l), 2).await;
    let fc = c.client(f).clone();
    for params in [
        format!("level=none&min_index={index}&timeout=10s"),
        format!("level=weak&min_index={index}&timeout=10s"),
        "level=linearizable&linearizable_timeout=10s".to_string(),
    ] {
        let started = Instant::now();
        let r = query(&fc, &params, READ).await;
        assert_eq!(r.status, 503, "{params}: {}", r.text());
        assert_eq!(r.text(), "leader not found\n", "{params}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{params}: took {:?}",
            started.elapsed()
        );
    }
    let r = query(&fc, &format!("level=none&min_index={before}"), READ).await;
    assert_eq!(values(&r), json!([[1]]), "an index it has applied");

    c.set_isolated(f, false);
    for params in [
        format!("level=none&min_index={index}"),
        "level=linearizable".to_string(),
    ] {
        wait_until(Duration::from_secs(20), "the follower to catch up", || {
            let (fc, params) = (fc.clone(), params.clone());
            async move {
                let r = query(&fc, &params, READ).await;
                assert!(
                    r.status != 200 || values(&r) == json!([[2]]),
                    "{params}: stale: {}",
                    r.text()
                );
                r.status == 200
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_index_the_cluster_has_not_reached_times_out_with_504() {
    // Steps: 3 nodes. min_index far beyond the log, with timeout=500ms, on the leader and a
    // follower, at none, weak and linearizable: 504 naming the indexes, after about the
    // timeout (not at once, not much later). Without `timeout` the default (5s) applies.
    let c = cluster_with_table(3).await;
    let (l, f) = c.leader_and_follower().await;
    for node in [l, f] {
        for level in ["none", "weak", "linearizable"] {
            let params = format!("level={level}&min_index=1000000000&timeout=500ms");
            let started = Instant::now();
            let r = query(c.client(node), &params, READ).await;
            let took = started.elapsed();
            assert_eq!(r.status, 504, "node {node}, {level}: {}", r.text());
            assert!(
                r.text().starts_with("not caught up: applied index ")
                    && r.text().contains("min_index 1000000000"),
                "{}",
                r.text()
            );
            assert!(
                took >= Duration::from_millis(450) && took < Duration::from_secs(4),
                "node {node}, {level}: {took:?}"
            );
        }
    }
    let started = Instant::now();
    let r = query(c.client(f), "min_index=1000000000", READ).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(4900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_index_that_is_not_an_index_is_refused_with_400() {
    // Steps: min_index that is not a non-negative integer: 400 with a plain-text reason, on
    // /db/query and /db/request; min_index=0 is always satisfied.
    let c = cluster_with_table(3).await;
    let f = c.followers().await[0];
    for bad in ["abc", "-1", "1.5", "", "1e3"] {
        let r = query(c.client(f), &format!("min_index={bad}"), READ).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "min_index is not a valid integer\n"),
            "{bad:?}"
        );
        let r = c
            .client(f)
            .post_json(&format!("/db/request?min_index={bad}"), r#"["SELECT 1"]"#)
            .await;
        assert_eq!(r.status, 400, "{bad:?}");
    }
    let r = query(c.client(f), "level=none&min_index=0", "SELECT 1").await;
    assert_eq!(values(&r), json!([[1]]));
}
