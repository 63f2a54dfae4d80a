//! Recovery after permanent quorum loss with `<data>/raft/peers.json`, as rqlite documents
//! it. Through the real binary.

use std::path::Path;
use std::time::Duration;

use crate::harness::{unused_port, wait_for, Proc, CLUSTER_WAIT};

fn start(dir: &Path, id: &str, raft_addr: &str, join: Option<&str>) -> Proc {
    let mut extra = vec!["-join-interval", "200ms", "-join-attempts", "100"];
    if let Some(j) = join {
        extra.extend(["-join", j]);
    }
    Proc::try_spawn_node(dir, id, "127.0.0.1:0", raft_addr, &extra)
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

/// Three nodes with a table of 100 rows, SIGKILLed once every node has every row; their
/// data dirs.
async fn three_killed_with_data() -> Vec<tempfile::TempDir> {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = start(dirs[0].path(), "1", "127.0.0.1:0", None);
    n1.wait_ready().await;
    let join = n1.raft_addr.clone();
    let mut nodes = vec![n1];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let n = start(d.path(), &(i + 1).to_string(), "127.0.0.1:0", Some(&join));
        n.wait_ready().await;
        nodes.push(n);
    }
    let c = &nodes[0].client;
    c.execute_ok(r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, v TEXT)"]"#)
        .await;
    let rows: Vec<String> = (0..100)
        .map(|i| format!(r#"["INSERT INTO foo(v) VALUES(?)", "row {i}"]"#))
        .collect();
    c.execute_ok(&format!("[{}]", rows.join(","))).await;
    for n in &nodes {
        wait_count(n, 100).await;
    }
    for n in nodes {
        n.kill9();
    }
    dirs
}

async fn wait_count(n: &Proc, want: i64) {
    let c = n.client.clone();
    wait_for(CLUSTER_WAIT, "the rows on a node", || {
        let c = c.clone();
        async move {
            let r = c
                .try_get("/db/query?level=none&q=SELECT%20COUNT(*)%20FROM%20foo")
                .await
                .ok()?;
            (r.json()["results"][0]["values"][0][0].as_i64() == Some(want)).then_some(())
        }
    })
    .await
}

fn write_peers(dir: &Path, peers: &[(&str, &str)]) {
    let list: Vec<serde_json::Value> = peers
        .iter()
        .map(|(id, addr)| serde_json::json!({"id": id, "address": addr, "non_voter": false}))
        .collect();
    let file = dir.join("raft").join("peers.json");
    assert!(
        file.parent().unwrap().is_dir(),
        "every node keeps a raft/ directory for the file"
    );
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
}

/// `/nodes` of `n`, as (id, api_addr, voter), once it lists `want` nodes that all answer
/// and all have an API address.
async fn nodes_of(n: &Proc, want: usize) -> Vec<(String, String, bool)> {
    let c = n.client.clone();
    wait_for(CLUSTER_WAIT, "/nodes to list every node reachable", || {
        let c = c.clone();
        async move {
            let j = c.try_get("/nodes?nonvoters").await.ok()?.json();
            let o = j.as_object()?;
            let mut out = Vec::new();
            for (id, v) in o {
                (v["reachable"] == true).then_some(())?;
                let api = v["api_addr"].as_str()?.trim_start_matches("http://");
                (!api.is_empty()).then_some(())?;
                out.push((id.clone(), api.to_string(), v["voter"] == true));
            }
            (out.len() == want).then_some(out)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_survivor_recovers_alone_with_its_data_and_takes_writes() {
    // Steps: 3 nodes, 100 rows; all stop, two are destroyed for good. The survivor alone
    // cannot elect itself; with raft/peers.json naming only itself (at a new Raft address)
    // it restarts as a one-node cluster, with every row, and takes writes.
    let dirs = three_killed_with_data().await;
    let mut dirs = dirs.into_iter();
    let survivor = dirs.next().unwrap();
    drop(dirs);

    let raft = format!("127.0.0.1:{}", unused_port());
    write_peers(survivor.path(), &[("1", &raft)]);
    let n1 = start(survivor.path(), "1", &raft, None);
    n1.wait_ready().await;
    wait_count(&n1, 100).await;
    n1.client
        .execute_ok(r#"["INSERT INTO foo(v) VALUES('after recovery')"]"#)
        .await;
    wait_count(&n1, 101).await;
    assert!(
        !survivor.path().join("raft/peers.json").exists(),
        "the file is consumed"
    );
    let vars = n1.client.get("/debug/vars?key=store").await.json();
    assert_eq!(vars["store"]["num_recoveries"], 1, "{}", vars["store"]);
    let st = n1.client.get("/status").await.json();
    assert_eq!(
        st["store"]["raft"]["num_peers"], 0,
        "{}",
        st["store"]["raft"]
    );
    assert_eq!(
        nodes_of(&n1, 1).await,
        vec![("1".to_string(), n1.http_addr.clone(), true)],
        "the membership names the node at its new addresses"
    );

    // A second restart, without the file, is an ordinary restart of a one-node cluster.
    let addr = n1.raft_addr.clone();
    n1.kill9();
    let n1 = start(survivor.path(), "1", &addr, None);
    n1.wait_ready().await;
    wait_count(&n1, 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_moved_to_new_addresses_recovers_with_peers_json() {
    // Steps (rqlite's TestClusterRecovery): 3 nodes stop; each gets a peers.json listing all
    // three at new Raft addresses and restarts there. They elect a leader with their data,
    // and /nodes shows every node at its new API address.
    let dirs = three_killed_with_data().await;
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", unused_port()))
        .collect();
    let peers: Vec<(&str, &str)> = ["1", "2", "3"]
        .into_iter()
        .zip(addrs.iter().map(String::as_str))
        .collect();
    for d in &dirs {
        write_peers(d.path(), &peers);
    }
    let nodes: Vec<Proc> = (0..3)
        .map(|i| start(dirs[i].path(), peers[i].0, &addrs[i], None))
        .collect();
    for n in &nodes {
        n.wait_ready().await;
        wait_count(n, 100).await;
    }
    let leader = wait_for(
        Duration::from_secs(20),
        "a leader among the moved nodes",
        || async {
            for n in &nodes {
                let j = n
                    .client
                    .try_get("/status?key=store.raft")
                    .await
                    .ok()?
                    .json();
                if j["state"] == "Leader" {
                    return Some(n.client.clone());
                }
            }
            None
        },
    )
    .await;
    leader
        .execute_ok(r#"["INSERT INTO foo(v) VALUES('after the move')"]"#)
        .await;
    for n in &nodes {
        wait_count(n, 101).await;
    }
    let mut want: Vec<_> = (0..3)
        .map(|i| (peers[i].0.to_string(), nodes[i].http_addr.clone(), true))
        .collect();
    want.sort();
    let mut got = nodes_of(&nodes[0], 3).await;
    got.sort();
    assert_eq!(got, want);
}
