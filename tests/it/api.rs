//! The HTTP API on one node: behaviour the transcripts do not pin down, bad input, restarts.

use serde_json::json;

use crate::harness::{assert_cors_allows_credentials, url_encode, Client, TestNode};

/// Column `v` of table `t`, in order, read at `level`.
async fn column_v(c: &Client, level: &str) -> serde_json::Value {
    c.query_values("SELECT v FROM t ORDER BY v", level).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data() {
    // Steps: write, stop, start on the same dir, read everything back.
    let n = TestNode::start().await;
    n.client.execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t(v) VALUES('a')", "INSERT INTO t(v) VALUES('b')"]"#).await;
    let n = n.restart(|_| {}).await;
    assert_eq!(
        n.client
            .query_values("SELECT v FROM t ORDER BY id", "strong")
            .await,
        json!([["a"], ["b"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_snapshot_then_replays_log() {
    // Steps: write, snapshot (log compacted), write more, restart: both parts are there.
    let n = TestNode::start().await;
    n.client
        .execute_ok(r#"["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    let r = n
        .client
        .send("POST", "/snapshot?trailing_logs=0", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let st = n.client.get("/status").await.json();
    assert!(
        st["store"]["raft"]["last_snapshot_index"].as_u64().unwrap() > 0,
        "{st}"
    );
    n.client.execute_ok(r#"["INSERT INTO t VALUES(2)"]"#).await;
    let n = n.restart(|_| {}).await;
    assert_eq!(column_v(&n.client, "strong").await, json!([[1], [2]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterministic_sql_is_rewritten_before_the_log() {
    // Steps: store RANDOM() and datetime('now'); restart (the log is replayed into a fresh
    // database); the values must be identical, so the log held literals, not the functions.
    let n = TestNode::start().await;
    n.client.execute_ok(r#"["CREATE TABLE t (r INTEGER, b BLOB, d TEXT)", "INSERT INTO t VALUES(random(), randomblob(8), datetime('now'))"]"#).await;
    let before = n
        .client
        .query_values("SELECT r, hex(b), d FROM t", "strong")
        .await;
    let n = n.restart(|_| {}).await;
    let after = n
        .client
        .query_values("SELECT r, hex(b), d FROM t", "strong")
        .await;
    assert_eq!(before, after);
    assert_eq!(after[0][1].as_str().unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_with_413_and_node_keeps_serving() {
    let n = TestNode::start_with(|c| c.http.max_body = 1024).await;
    let big = format!(r#"["INSERT INTO t VALUES('{}')"]"#, "x".repeat(4096));
    let r = n.client.post_json("/db/execute", &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    n.client.execute_ok(r#"["CREATE TABLE t (v)"]"#).await;
}

/// Sends `body` in 1,000-byte pieces, chunked or with a Content-Length, on a raw
/// connection; returns the answer's status line.
async fn post_in_pieces(addr: std::net::SocketAddr, body: &[u8], chunked: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    for piece in body.chunks(1000) {
        let sent = if chunked {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(piece);
            c.extend_from_slice(b"\r\n");
            tcp.write_all(&c).await
        } else {
            tcp.write_all(piece).await
        };
        if sent.is_err() {
            break; // refused early: the answer is already there
        }
        let _ = tcp.flush().await;
    }
    if chunked {
        let _ = tcp.write_all(b"0\r\n\r\n").await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_many_pieces_arrives_whole_and_its_limit_holds() {
    // Issue 12: a body longer than one read is gathered into one buffer sized from its
    // Content-Length; chunked bodies have none. Both arrive whole, and both are refused
    // once over the limit.
    let n = TestNode::start_with(|c| c.http.max_body = 64 << 10).await;
    let addr = n.node.as_ref().expect("node").http_addr();
    n.client.execute_ok(r#"["CREATE TABLE t (v)"]"#).await;
    let stmts = |k: usize| {
        let list: Vec<String> = (0..k)
            .map(|i| format!(r#""INSERT INTO t VALUES('{i:0>40}')""#))
            .collect();
        format!("[{}]", list.join(",")).into_bytes()
    };
    let fits = stmts(800); // about 46 KB
    let over = stmts(1500); // about 86 KB
    for chunked in [false, true] {
        let line = post_in_pieces(addr, &fits, chunked).await;
        assert!(line.contains(" 200 "), "chunked {chunked}: {line}");
        let line = post_in_pieces(addr, &over, chunked).await;
        assert!(line.contains(" 413 "), "chunked {chunked}: {line}");
    }
    assert_eq!(
        n.client
            .query_values("SELECT COUNT(*), COUNT(DISTINCT v) FROM t", "strong")
            .await,
        json!([[1600, 800]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_database_file_is_refused_and_old_data_kept() {
    // rqlite accepts this and loses its database; we answer 400 and keep serving.
    let n = TestNode::start().await;
    n.client
        .execute_ok(r#"["CREATE TABLE keep (v)", "INSERT INTO keep VALUES('still here')"]"#)
        .await;
    let mut junk = b"SQLite format 3\0".to_vec();
    junk.extend(std::iter::repeat_n(0xAB, 8192));
    let r = n.client.load_image(junk).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid SQLite database"), "{}", r.text());
    assert_eq!(
        n.client.query_values("SELECT v FROM keep", "weak").await,
        json!([["still here"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_load_round_trips() {
    // Steps: fill, binary backup, change, load the backup: the old content is back.
    let n = TestNode::start().await;
    n.client
        .execute_ok(
            r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)", "INSERT INTO t VALUES(2)"]"#,
        )
        .await;
    let backup = n.client.get("/db/backup").await;
    assert_eq!(backup.status, 200);
    n.client
        .execute_ok(r#"["DELETE FROM t", "CREATE TABLE other (x)"]"#)
        .await;
    let r = n.client.load_image(backup.body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(column_v(&n.client, "strong").await, json!([[1], [2]]));
    let tables = n
        .client
        .query_values("SELECT name FROM sqlite_master WHERE type='table'", "weak")
        .await;
    assert_eq!(tables, json!([["t"]]));
    // And a SQL dump loads into an empty node.
    let dump = n.client.get("/db/backup?fmt=sql").await.text();
    let m = TestNode::start().await;
    let r = m.client.load_sql("/db/load", &dump).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(column_v(&m.client, "weak").await, json!([[1], [2]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_applied_and_wait_reports_failures() {
    let n = TestNode::start().await;
    n.client.execute_ok(r#"["CREATE TABLE q (v)"]"#).await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        let r = n
            .client
            .post_json(
                "/db/execute?queue",
                &format!(r#"["INSERT INTO q VALUES({i})"]"#),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        seqs.push(r.json()["sequence_number"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // A flush marker with wait: everything queued before it is applied when it returns.
    let r = n.client.post_json("/db/execute?queue&wait", "[]").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        n.client
            .query_values("SELECT COUNT(*) FROM q", "weak")
            .await,
        json!([[20]])
    );
    // A failing statement is reported to a waiting client (rqlite drops it silently).
    let r = n
        .client
        .post_json(
            "/db/execute?queue&wait",
            r#"["INSERT INTO nosuch VALUES(1)"]"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["results"][0]["error"], "no such table: nosuch", "{j}");
    assert!(j.get("error").is_none(), "{j}");
    assert!(j["sequence_number"].as_u64().unwrap() > seqs[19]);
    let st = n.client.get("/status?key=http.queue._default").await.json();
    assert_eq!(st["failed_statements"], 1, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_never_breaks_the_node() {
    let n = TestNode::start().await;
    let bodies: &[&[u8]] = &[
        b"",
        b"[",
        b"{}",
        b"null",
        b"[[[[]]]]",
        b"[1,2,3]",
        b"\xff\xfe\x00",
        b"[\"\\ud800\"]",
        b"[[\"SELECT ?\", {\"a\": [1, {\"b\": 2}]}]]",
        b"[[\"SELECT ?\", 1e999]]",
        b"[\"SELECT 1\"] trailing",
    ];
    // Each path's answer to every body: the JSON endpoints refuse what does not parse (400)
    // and run what does (a lone surrogate decodes to U+FFFD, as in Go; nothing after the
    // closing bracket is read); /db/load runs any non-SQLite body as SQL; /boot refuses
    // anything that is not a SQLite file (503, as rqlite); /remove takes DELETE only; /leader
    // reads an optional JSON object; /snapshot ignores its body.
    let json_ok = |b: &[u8]| b == b"[\"\\ud800\"]" || b == b"[\"SELECT 1\"] trailing";
    let expected = |path: &str, b: &[u8]| -> u16 {
        match path {
            "/db/load" | "/snapshot" => 200,
            "/boot" => 503,
            "/remove" => 405,
            "/leader" if b.is_empty() || b == b"{}" => 200,
            "/leader" => 400,
            _ if json_ok(b) => 200,
            _ => 400,
        }
    };
    for path in [
        "/db/execute",
        "/db/query",
        "/db/request",
        "/db/load",
        "/boot",
        "/remove",
        "/leader",
        "/snapshot",
    ] {
        for b in bodies {
            let r = n
                .client
                .send("POST", path, Some("application/json"), Some(b.to_vec()))
                .await;
            assert_eq!(
                r.status,
                expected(path, b),
                "{path} {:?}: {}",
                String::from_utf8_lossy(b),
                r.text()
            );
        }
    }
    for q in [
        "timeout=-1s",
        "timeout=1y",
        "level=%ff",
        "q=%",
        "freshness=1s&freshness_strict",
        "retries=1.5",
        "q=SELECT%201&db_timeout=1ns",
    ] {
        let r = n.client.get(&format!("/db/query?{q}")).await;
        assert!(
            r.status == 200 || r.status == 400,
            "{q} -> {} {}",
            r.status,
            r.text()
        );
    }
    n.client
        .execute_ok(r#"["CREATE TABLE still_ok (v)"]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_level_sees_the_latest_write_on_a_single_node() {
    let n = TestNode::start().await;
    n.client
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(42)"]"#)
        .await;
    for level in ["none", "weak", "linearizable", "strong", "auto", "bogus"] {
        assert_eq!(
            n.client.query_values("SELECT v FROM t", level).await,
            json!([[42]]),
            "{level}"
        );
    }
    let r = n
        .client
        .get(&format!(
            "/db/query?level=strong&raft_index&q={}",
            url_encode("SELECT v FROM t")
        ))
        .await;
    assert!(r.json()["raft_index"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_nodes_and_leader_describe_the_node() {
    let n = TestNode::start().await;
    let st = n.client.get("/status").await.json();
    assert_eq!(st["store"]["leader"]["node_id"], "1");
    assert_eq!(st["store"]["raft"]["state"], "Leader");
    assert_eq!(st["store"]["ready"], true);
    let addr = n.node.as_ref().unwrap().info().api_addr.clone();
    let nodes = n.client.get("/nodes").await.json();
    assert_eq!(nodes["1"]["api_addr"], format!("http://{addr}"));
    assert_eq!(nodes["1"]["leader"], true);
    assert_eq!(nodes["1"]["reachable"], true);
    let v2 = n.client.get("/nodes?ver=2").await.json();
    assert_eq!(v2["nodes"][0]["id"], "1");
    let l = n.client.get("/leader").await.json();
    assert_eq!(l["id"], "1");
    let vars = n.client.get("/debug/vars?key=http").await;
    assert_eq!(vars.status, 200);
    assert!(vars.json()["http"]["executions"].is_number());
    let store = n.client.get("/status?key=store.leader").await.json();
    assert_eq!(
        store,
        json!({"addr": n.node.as_ref().unwrap().info().raft_addr, "node_id": "1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_headers_on_every_response() {
    let n = TestNode::start().await;
    for (m, p) in [
        ("GET", "/nope"),
        ("GET", "/db/execute"),
        ("OPTIONS", "/db/query"),
        ("GET", "/readyz"),
        ("GET", "/db/query?timeout=x"),
    ] {
        let r = n.client.send(m, p, None, None).await;
        assert_eq!(
            r.header("x-rqlite-version").as_deref(),
            Some(sqlraft::http::VERSION),
            "{m} {p}"
        );
        assert_eq!(
            r.header("access-control-allow-methods").as_deref(),
            Some("OPTIONS, GET, POST")
        );
        assert_cors_allows_credentials(&r);
        assert_eq!(r.header("www-authenticate"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_database_is_rebuilt_from_the_log_at_restart() {
    // Steps: -on-disk keeps SQLite in <data>/db.sqlite; restart rebuilds it from the log.
    let n = TestNode::start_with(|c| c.db.on_disk = true).await;
    n.client
        .execute_ok(r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES('on disk')"]"#)
        .await;
    assert!(n.dir.join("db.sqlite").exists());
    let n = n.restart(|c| c.db.on_disk = true).await;
    assert_eq!(
        n.client.query_values("SELECT v FROM t", "strong").await,
        json!([["on disk"]])
    );
    let backup = n.client.get("/db/backup").await;
    assert!(backup.body.starts_with(b"SQLite format 3\0"));
}
