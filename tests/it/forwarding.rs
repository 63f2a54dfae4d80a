//! Follower to leader: writes, mixed requests, backups and loads on a follower are forwarded
//! to the leader (`X-Rqlite-Served-By` names it) or, with `redirect`, answered 301 to the
//! leader's API; and when the leader is gone, what needs one answers 503 `leader not found`
//! (sqlraft's answer where rqlite says 500: `rqlite-compat.md`) while local reads still work.
//! Golden sections 8 and 9 (C197-C252).

use serde_json::json;

use crate::harness::{
    assert_leader_not_found, query, served_by, values, wait_until, TestCluster, CLUSTER_WAIT,
    JSON_CT, TEXT_CT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_write_is_forwarded_to_the_leader() {
    // Steps: DDL on the leader (served locally: no X-Rqlite-Served-By, C197); writes, a mixed
    // /db/request and a queued write on a follower are forwarded (C198, C199, C216, C219):
    // same results as on the leader, X-Rqlite-Served-By = the leader's Raft address. The
    // data is then readable at level=strong from every node and at level=none everywhere.
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let leader_raft = c.members[l].raft_adv();
    let follower = c.client(f);

    let r = c
        .client(l)
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)"]"#,
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"results":[{}]}"#));
    assert_eq!(served_by(&r), None);

    let r = follower
        .post_json(
            "/db/execute",
            r#"[["INSERT INTO foo(name) VALUES(?)", "fiona"]]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
    );
    assert_eq!(r.header("content-type").as_deref(), Some(JSON_CT));
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));

    let r = follower
        .post_json(
            "/db/execute?timings&raft_index",
            r#"[["INSERT INTO foo(name) VALUES(?)", "declan"]]"#,
        )
        .await;
    let j = r.json();
    assert_eq!(j["results"][0]["last_insert_id"], 2, "{j}");
    assert_eq!(j["results"][0]["rows_affected"], 1, "{j}");
    assert!(j["results"][0]["time"].is_number(), "{j}");
    assert!(j["time"].is_number(), "{j}");
    assert!(j["raft_index"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));

    let r = follower
        .post_json(
            "/db/request",
            r#"[["INSERT INTO foo(name) VALUES(?)", "req"], "SELECT COUNT(*) FROM foo"]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"columns":["COUNT(*)"],"types":["integer"],"values":[[3]]}]}"#
    );
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));

    let r = follower
        .post_json(
            "/db/execute?queue&wait",
            r#"["INSERT INTO foo(name) VALUES('queued')"]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["results"], json!([]), "{j}");
    assert!(j["sequence_number"].as_u64().unwrap() > 0, "{j}");
    assert!(j.get("error").is_none(), "{j}");

    // The invariant: the leader holds exactly what the follower's clients were told.
    let expected = json!([[1, "fiona"], [2, "declan"], [3, "req"], [4, "queued"]]);
    for i in c.live() {
        let r = query(c.client(i), "level=strong", "SELECT * FROM foo ORDER BY id").await;
        assert_eq!(values(&r), expected, "node {}", i + 1);
        let want = (i != l).then(|| leader_raft.clone());
        assert_eq!(served_by(&r), want, "node {}", i + 1);
    }
    c.wait_all_see("SELECT * FROM foo ORDER BY id", &expected)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_on_a_follower_answers_301_to_the_leader() {
    // Steps: with `redirect`, a follower answers 301 to the same path and raw query on the
    // leader's API, with an empty body, and applies nothing (C200-C202); on the leader
    // `redirect` has no effect; `level=none&redirect` on a follower is served locally (C203);
    // GET /db/request is a 405 (C204).
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let leader_api = c.members[l].api_url();
    c.client(l)
        .execute_ok(r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')"]"#)
        .await;

    for target in [
        "/db/execute?redirect",
        "/db/execute?redirect&pretty&timeout=5s",
    ] {
        let r = c
            .client(f)
            .post_json(target, r#"[["INSERT INTO foo(name) VALUES(?)", "x"]]"#)
            .await;
        assert_eq!(r.status, 301, "{target}: {}", r.text());
        assert_eq!(r.header("location"), Some(format!("{leader_api}{target}")));
        assert!(r.body.is_empty(), "{target}: {}", r.text());
        assert_eq!(r.header("content-type").as_deref(), Some(JSON_CT));
        assert_eq!(served_by(&r), None);
    }
    let target = "/db/query?redirect&q=SELECT%20*%20FROM%20foo";
    let r = c.client(f).get(target).await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{leader_api}{target}")));
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type").as_deref(), Some(JSON_CT));

    // Nothing the follower redirected was applied.
    assert_eq!(
        values(&query(c.client(l), "level=strong", "SELECT COUNT(*) FROM foo").await),
        json!([[1]])
    );

    // On the leader `redirect` changes nothing.
    let r = c
        .client(l)
        .post_json(
            "/db/execute?redirect",
            r#"[["INSERT INTO foo(name) VALUES(?)", "on leader"]]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#
    );
    let r = c.client(l).get(target).await;
    assert_eq!(values(&r), json!([[1, "fiona"], [2, "on leader"]]));

    // level=none is local, so a follower serves it even with `redirect`.
    c.wait_all_see("SELECT COUNT(*) FROM foo", &json!([[2]]))
        .await;
    let r = query(
        c.client(f),
        "redirect&level=none",
        "SELECT * FROM foo ORDER BY id",
    )
    .await;
    assert_eq!(
        r.text(),
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"],[2,"on leader"]]}]}"#
    );
    assert_eq!(served_by(&r), None);

    // A wrong method is refused on the follower itself: 405, empty, labelled JSON (C204).
    let r = c.client(f).get("/db/request?redirect&q=SELECT%201").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some(JSON_CT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_load_on_a_follower_are_forwarded_or_redirected() {
    // Steps: on a follower, /db/backup and /db/load are forwarded (C226, C229) and `redirect`
    // answers 301 with an empty body (C227, C230); `noleader` backs up locally (C228).
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let leader_raft = c.members[l].raft_adv();
    let leader_api = c.members[l].api_url();
    let follower = c.client(f);
    c.client(l)
        .execute_ok(r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')"]"#)
        .await;

    let r = follower.get("/db/backup").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(b"SQLite format 3\0"));
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));

    let r = follower
        .load_sql("/db/load", "CREATE TABLE fl (x); INSERT INTO fl VALUES(1);")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
    );
    assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()));
    assert_eq!(r.header("content-type").as_deref(), Some(TEXT_CT));

    let r = follower
        .load_sql("/db/load?redirect", "CREATE TABLE fl2 (x);")
        .await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{leader_api}/db/load?redirect"))
    );
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);

    c.wait_all_see("SELECT x FROM fl", &json!([[1]])).await;
    let r = follower.get("/db/backup?fmt=sql&noleader").await;
    assert_eq!(r.status, 200);
    assert_eq!(served_by(&r), None);
    assert!(
        r.text().contains("INSERT INTO \"fl\" VALUES(1);"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("fl2"), "{}", r.text());

    let r = follower.get("/db/backup?redirect").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{leader_api}/db/backup?redirect"))
    );
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_redirect_on_a_follower_is_labelled_octet_stream() {
    // Steps: GET /db/backup?redirect on a follower: 301, empty body, and the Content-Type
    // rqlite gives backups (golden C227, corrections item 5).
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let r = c.client(f).get("/db/backup?redirect").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{}/db/backup?redirect", c.members[l].api_url()))
    );
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_on_a_follower_answers_not_leader_and_on_the_leader_not_single_node() {
    // Steps: POST /boot with a real SQLite file to a follower of a 3-node cluster: 503 "not
    // leader", as rqlite's follower answers (golden C232); to the leader: 503 "not
    // single-node" (/boot is for single-node clusters); the data is untouched on both.
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    c.client(l)
        .execute_ok(r#"["CREATE TABLE kept (x)", "INSERT INTO kept VALUES(1)"]"#)
        .await;
    let image = c.client(l).get("/db/backup").await;
    assert_eq!(image.status, 200, "{}", image.text());
    for (node, want) in [(f, "not leader\n"), (l, "not single-node\n")] {
        let r = c
            .client(node)
            .send(
                "POST",
                "/boot",
                Some("application/octet-stream"),
                Some(image.body.clone()),
            )
            .await;
        assert_eq!(r.status, 503, "node {node}: {}", r.text());
        assert_eq!(r.text(), want, "node {node}");
    }
    c.wait_all_see("SELECT x FROM kept", &json!([[1]])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_the_survivor_answers_503_leader_not_found() {
    // Steps: 3 nodes, one row; the leader and one follower are cut off at the same moment
    // (so the survivor can win no election) and stopped. Once the survivor has given up on
    // the old leader it answers writes and every leader-bound read with 503 `leader not
    // found` (golden section 9 has 500; rqlite-compat "must do better" item 6), while
    // level=none, /db/request at none/auto and /readyz?noleader still work.
    let mut c = TestCluster::start(3).await;
    let l = c.leader().await;
    let followers = c.followers().await;
    let (s, other) = (followers[0], followers[1]);
    c.client(l)
        .execute_ok(r#"["CREATE TABLE foo (name TEXT)", "INSERT INTO foo VALUES('fiona')"]"#)
        .await;
    c.wait_all_see("SELECT COUNT(*) FROM foo", &json!([[1]]))
        .await;
    c.set_isolated(l, true);
    c.set_isolated(other, true);
    c.kill(l).await;
    c.kill(other).await;

    let sc = c.client(s).clone();
    let write = r#"["INSERT INTO foo VALUES('nl')"]"#;
    wait_until(CLUSTER_WAIT, "the survivor to report no leader", || {
        let sc = sc.clone();
        async move { sc.post_json("/db/execute", write).await.text() == "leader not found\n" }
    })
    .await;
    assert_leader_not_found(&sc.post_json("/db/execute", write).await, "execute (C233)");
    assert_leader_not_found(
        &sc.post_json("/db/execute?redirect", write).await,
        "execute?redirect (C234)",
    );
    assert_leader_not_found(
        &sc.post_json("/db/execute?queue", write).await,
        "execute?queue (C235)",
    );
    let sql = "SELECT COUNT(*) FROM foo";
    for level in ["weak", "linearizable", "strong", "auto"] {
        let r = query(&sc, &format!("level={level}"), sql).await;
        assert_leader_not_found(&r, &format!("query level={level} (C237-C240)"));
    }
    assert_leader_not_found(
        &sc.post_json("/db/request", &format!(r#"["{sql}"]"#)).await,
        "read-only /db/request (C243)",
    );
    assert_leader_not_found(&sc.get("/readyz").await, "readyz (C244)");
    assert_leader_not_found(&sc.get("/leader").await, "leader (C248)");
    assert_leader_not_found(&sc.get("/db/backup").await, "backup (C249)");
    let r = sc.load_sql("/db/load", "CREATE TABLE zz (x);").await;
    assert_leader_not_found(&r, "load (C251)");
    let r = sc.send_json("DELETE", "/remove", r#"{"id":"3"}"#).await;
    assert_leader_not_found(&r, "remove (C252)");

    // What needs no leader still works, and the failed writes left no trace.
    let count = r#"{"results":[{"columns":["COUNT(*)"],"types":["integer"],"values":[[1]]}]}"#;
    assert_eq!(query(&sc, "level=none", sql).await.text(), count, "C236");
    for level in ["none", "auto"] {
        let r = sc
            .post_json(
                &format!("/db/request?level={level}"),
                &format!(r#"["{sql}"]"#),
            )
            .await;
        assert_eq!(r.text(), count, "/db/request?level={level} (C242, C278)");
    }
    let r = sc.get("/readyz?noleader").await;
    assert_eq!((r.status, r.text().as_str()), (200, "[+]node ok"), "C245");
    assert_eq!(sc.get("/db/backup?noleader").await.status, 200, "C250");
    wait_until(
        CLUSTER_WAIT,
        "freshness=1s to report a stale read (C241, as a 503)",
        || {
            let sc = sc.clone();
            async move {
                let r = query(&sc, "level=none&freshness=1s", sql).await;
                r.status == 503 && r.text() == "stale read\n"
            }
        },
    )
    .await;

    let st = sc.get("/status?key=store").await.json();
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(st["leader"], json!({"addr": "", "node_id": ""}), "{st}");
    assert_ne!(st["raft"]["state"], "Leader", "{st}");
    let nodes = sc.get("/nodes?timeout=2s").await.json();
    for i in 0..3 {
        let n = &nodes[c.members[i].id.as_str()];
        assert_eq!(n["reachable"], i == s, "{nodes}");
        assert_eq!(n["leader"], false, "{nodes}");
        assert_eq!(n.get("api_addr").is_some(), i == s, "{nodes}");
        assert_eq!(n.get("error").is_some(), i != s, "{nodes}");
        if i != s {
            // The peer's own failure (it is not called the leader), and the time the probe
            // took, as rqlite reports both (C246).
            let e = n["error"].as_str().unwrap_or_default();
            assert!(!e.is_empty() && !e.contains("leader"), "{nodes}");
            assert!(n["time"].as_f64().unwrap_or(0.0) > 0.0, "{nodes}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_a_follower_each_get_their_own_answer() {
    // Issue 12: a follower sends the writes it forwards at the same time to the leader in one
    // call. Steps: 60 clients write through a follower at once; every third request fails
    // (a missing table), one with a multi-statement body; each client gets the answer to its
    // own request (its row's id, or its own error), and the leader holds exactly the rows
    // that were acknowledged.
    let c = TestCluster::start(3).await;
    let (l, f) = c.leader_and_follower().await;
    let leader_raft = c.members[l].raft_adv();
    c.client(l)
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE w (id INTEGER PRIMARY KEY, who INTEGER UNIQUE)"]"#,
        )
        .await;
    let follower = c.client(f).clone();
    let writes: Vec<_> = (0..60)
        .map(|i| {
            let client = follower.clone();
            tokio::spawn(async move {
                let body = if i % 3 == 2 {
                    format!(r#"["INSERT INTO missing VALUES({i})"]"#)
                } else {
                    format!(r#"[["INSERT INTO w(who) VALUES(?)", {i}], "SELECT 1"]"#)
                };
                (i, client.post_json("/db/execute", &body).await)
            })
        })
        .collect();
    let mut ids = std::collections::HashMap::new();
    for w in writes {
        let (i, r) = w.await.expect("write");
        assert_eq!(r.status, 200, "{i}: {}", r.text());
        assert_eq!(served_by(&r).as_deref(), Some(leader_raft.as_str()), "{i}");
        let j = r.json();
        if i % 3 == 2 {
            assert_eq!(
                j["results"][0]["error"], "no such table: missing",
                "{i}: {j}"
            );
        } else {
            assert_eq!(j["results"][0]["rows_affected"], 1, "{i}: {j}");
            assert_eq!(j["results"].as_array().map(Vec::len), Some(2), "{i}: {j}");
            let id = j["results"][0]["last_insert_id"].as_i64().expect("id");
            ids.insert(id, i);
        }
    }
    assert_eq!(ids.len(), 40, "every acknowledged row has its own id");
    // Each id answered to a client is the row that client wrote.
    let rows = c
        .client(l)
        .query_values("SELECT id, who FROM w ORDER BY id", "strong")
        .await;
    let stored: std::collections::HashMap<i64, i64> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r[0].as_i64().expect("id"), r[1].as_i64().expect("who")))
        .collect();
    assert_eq!(stored.len(), 40);
    for (id, who) in ids {
        assert_eq!(stored.get(&id), Some(&who), "row {id}");
    }
    // Fewer calls reached the leader than writes were forwarded: they shared calls.
    let vars = c.client(l).get("/debug/vars").await.json();
    let calls = vars["cluster"]["num_execute_req"].as_u64().expect("calls");
    assert!((1..60).contains(&calls), "{calls} calls for 60 writes");
}
