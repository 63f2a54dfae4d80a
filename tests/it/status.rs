//! `/status` field by field, with the names rqlite's tools read. Through the real binary.

use std::process::Command;

use serde_json::Value;

use crate::harness::{Client, Proc};

async fn status(c: &Client) -> Value {
    let r = c.get("/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn int(v: &Value, path: &str) -> i64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer: {cur}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_carries_rqlites_fields_with_true_values() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::spawn(dir.path(), &["-raft-reap-node-timeout", "90s"]);
    node.wait_ready().await;
    let c = &node.client;
    let r = c
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')"]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        status(c).await["store"]["strong_read_term"],
        0,
        "no strong read yet"
    );
    assert_eq!(
        c.get("/db/query?level=strong&q=SELECT%201").await.status,
        200
    );
    assert_eq!(c.post_json("/snapshot", "").await.status, 200);
    let st = status(c).await;
    let store = &st["store"];
    assert_eq!(store["strong_read_term"], store["raft"]["term"]);
    assert_eq!(store["reap_timeout"], "1m30s");
    assert_eq!(store["reap_read_only_timeout"], "0s");
    let lo = &st["network"]["interfaces"]["lo"];
    assert!(
        lo["addresses"]
            .as_array()
            .is_some_and(|a| a.contains(&serde_json::json!({"address": "127.0.0.1/8"}))),
        "{lo}"
    );
    assert!(lo["flags"].as_str().unwrap().contains("loopback"), "{lo}");

    // store.sqlite3: the database file and the settings each connection really runs with.
    let sq = &store["sqlite3"];
    let path = sq["path"].as_str().expect("sqlite3.path");
    assert!(std::path::Path::new(path).is_file(), "{path}");
    assert!(path.starts_with(dir.path().to_str().unwrap()), "{path}");
    let pragmas = |autocheckpoint: &str| {
        serde_json::json!({"busy_timeout": "5000", "foreign_keys": "0", "journal_mode": "wal",
            "synchronous": "0", "wal_autocheckpoint": autocheckpoint})
    };
    assert_eq!(sq["pragmas"]["ro"], pragmas("1000"));
    assert_eq!(sq["pragmas"]["rw"], pragmas("0"));
    assert!(sq["version"].as_str().unwrap().starts_with("3."), "{sq}");
    assert!(int(sq, "db_size") >= 2 * 4096, "{sq}");
    assert_eq!(
        int(sq, "db_size"),
        int(sq, "mem_stats.page_count") * int(sq, "mem_stats.page_size")
    );
    assert!(
        sq["db_size_friendly"].as_str().unwrap().ends_with("kB"),
        "{sq}"
    );
    assert!(sq["compile_options"].as_array().unwrap().len() > 5, "{sq}");
    assert!(int(sq, "conn_pool_stats.ro.max_open_connections") >= 1);

    // store.raft: a single-node leader that has applied everything it logged.
    let raft = &store["raft"];
    assert_eq!(raft["state"], "Leader");
    assert_eq!(int(raft, "num_peers"), 0);
    assert!(int(raft, "term") >= 1);
    let applied = int(raft, "applied_index");
    assert!(
        applied >= 2,
        "the bootstrap, a leader's first entry, the request: {raft}"
    );
    assert_eq!(int(raft, "commit_index"), applied);
    assert_eq!(int(raft, "last_log_index"), applied);
    assert_eq!(int(store, "db_applied_index"), applied);
    assert_eq!(int(store, "fsm_index"), applied);
    assert_eq!(int(raft, "last_snapshot_index"), applied, "{raft}");
    assert!(int(raft, "log_size") > 0, "{raft}");
    assert_eq!(raft["last_contact"], 0);
    assert_eq!(int(raft, "fsm_pending"), 0);
    assert!(int(raft, "protocol_version") >= 1);
    assert_eq!(sq["transaction"]["rw"], false);
    assert_eq!(sq["rw_dsn"], format!("file:{path}"));
    assert_eq!(store["observer"]["observed"], 1, "one leader seen: itself");
    assert_eq!(st["mux"]["addr"], node.raft_addr);
    assert_eq!(st["mux"]["tls"], "disabled");
    assert_eq!(st["http"]["cluster"]["local_node_addr"], node.raft_addr);
    // rqlite's cluster client timeout: -cluster-connect-timeout (C151: "30s").
    assert_eq!(st["http"]["cluster"]["timeout"], "30s");
    assert!(int(&st, "runtime.GOMAXPROCS") >= 1);
    assert!(int(&st, "runtime.num_goroutine") >= 1);
    assert_eq!(
        raft["latest_configuration"],
        format!("[{{Suffrage:Voter ID:1 Address:{}}}]", node.raft_addr)
    );

    // The rest of store: membership, leader, snapshots on disk.
    assert_eq!(
        store["nodes"],
        serde_json::json!([{"id": "1", "addr": node.raft_addr, "suffrage": "Voter"}])
    );
    assert_eq!(
        store["leader"],
        serde_json::json!({"addr": node.raft_addr, "node_id": "1"})
    );
    assert_eq!(store["ready"], true);
    let snaps = store["snapshot_store"]["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{}", store["snapshot_store"]);
    assert!(int(store, "dir_size") > 0);
    assert!(store["dir_size_friendly"].is_string());

    // Node, build, OS: one version string everywhere.
    let version = st["build"]["version"].as_str().unwrap().to_string();
    assert_eq!(
        c.get("/status").await.header("x-rqlite-version"),
        Some(version.clone())
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sqlraftd {version}")
    );
    assert_eq!(int(&st, "os.pid"), node.child.id() as i64);
    assert!(int(&st, "os.page_size") >= 4096);
    assert_eq!(st["cluster"]["api_addr"], node.http_addr);
    assert!(st["node"]["uptime"].is_string());

    // ?key= picks one sub-object, by a dotted path.
    let r = c.get("/status?key=store.sqlite3.pragmas").await;
    assert_eq!(r.json()["rw"], pragmas("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reports_time_since_the_leader_was_heard() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let n1 = Proc::spawn(d1.path(), &[]);
    n1.wait_ready().await;
    let n2 = Proc::try_spawn_node(
        d2.path(),
        "2",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["-join", &n1.raft_addr],
    )
    .expect("node 2");
    n2.wait_ready().await;
    let st = status(&n2.client).await;
    let raft = &st["store"]["raft"];
    assert_eq!(raft["state"], "Follower");
    assert_eq!(int(raft, "num_peers"), 1);
    let contact = raft["last_contact"]
        .as_str()
        .expect("a duration on a follower");
    assert!(contact.ends_with('s'), "{contact}");
    assert!(raft["latest_configuration"]
        .as_str()
        .unwrap()
        .contains(&format!("ID:2 Address:{}", n2.raft_addr)));
}
