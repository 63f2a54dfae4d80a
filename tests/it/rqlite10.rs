//! What rqlite 9 and 10 added to the HTTP API: `qualify_columns` on reads (local, forwarded
//! and through the log) and `/db/sql`, which shows how statements would be rewritten.

use crate::harness::{url_encode, TestCluster, TestNode};

const SETUP: &str = r#"[
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE titles (id INTEGER PRIMARY KEY, contact_id INTEGER, title TEXT)",
    "INSERT INTO contacts(id, name) VALUES(1, 'alice')",
    "INSERT INTO titles(id, contact_id, title) VALUES(1, 1, 'engineer')"
]"#;

const JOIN: &str = "SELECT * FROM contacts JOIN titles ON contacts.id = titles.contact_id";

#[tokio::test(flavor = "multi_thread")]
async fn qualify_columns_names_each_column_with_its_table_wherever_the_read_runs() {
    // Steps: a 3-node cluster with two joined tables. The shapes of rqlite's documentation
    // (a join, a single table, explicit columns, an expression keeping its name) on
    // /db/query at every level from a follower (local, forwarded, through the log), on
    // /db/request, and associative; without the flag nothing changes.
    let c = TestCluster::start(3).await;
    let l = c.leader().await;
    c.client(l).execute_ok(SETUP).await;
    let f = c.followers().await[0];
    c.wait_all_see("SELECT COUNT(*) FROM titles", &serde_json::json!([[1]]))
        .await;
    let qualified = serde_json::json!({
        "columns": ["contacts.id", "contacts.name", "titles.id", "titles.contact_id", "titles.title"],
        "types": ["integer", "text", "integer", "integer", "text"],
        "values": [[1, "alice", 1, 1, "engineer"]]
    });
    for level in ["none", "weak", "linearizable", "strong"] {
        let r = c
            .client(f)
            .get(&format!(
                "/db/query?qualify_columns&level={level}&q={}",
                url_encode(JOIN)
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["results"][0], qualified, "level {level}");
    }
    let plain = c
        .client(f)
        .get(&format!("/db/query?q={}", url_encode(JOIN)))
        .await
        .json();
    assert_eq!(
        plain["results"][0]["columns"],
        serde_json::json!(["id", "name", "id", "contact_id", "title"])
    );

    let r = c
        .client(f)
        .post_json(
            "/db/query?qualify_columns",
            r#"["SELECT a.id, t.title FROM contacts AS a JOIN titles t ON a.id = t.contact_id",
                "SELECT COUNT(*) AS n, name FROM contacts", "SELECT * FROM contacts"]"#,
        )
        .await
        .json();
    // An alias is not a table: SQLite names the table itself.
    assert_eq!(
        r["results"][0]["columns"],
        serde_json::json!(["contacts.id", "titles.title"])
    );
    assert_eq!(
        r["results"][1]["columns"],
        serde_json::json!(["n", "contacts.name"])
    );
    assert_eq!(
        r["results"][2]["columns"],
        serde_json::json!(["contacts.id", "contacts.name"])
    );

    // /db/request goes through the log with a write; its read is qualified too.
    let r = c
        .client(f)
        .post_json(
            "/db/request?qualify_columns",
            &serde_json::json!([
                "INSERT INTO contacts(id, name) VALUES(2, 'bob')",
                "SELECT id, name FROM contacts WHERE id = 2"
            ])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["results"][0]["rows_affected"], 1);
    assert_eq!(
        j["results"][1]["columns"],
        serde_json::json!(["contacts.id", "contacts.name"])
    );

    // Associative: the row objects and types are keyed by the qualified names.
    let r = c
        .client(f)
        .get(&format!(
            "/db/query?qualify_columns&associative&q={}",
            url_encode("SELECT id, name FROM contacts WHERE id = 1")
        ))
        .await;
    assert_eq!(
        r.json()["results"][0],
        serde_json::json!({
            "types": {"contacts.id": "integer", "contacts.name": "text"},
            "rows": [{"contacts.id": 1, "contacts.name": "alice"}]
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn db_sql_shows_the_rewrite_without_running_anything() {
    // Steps: POST and GET /db/sql with RANDOM(), RANDOMBLOB(), 'now' and ORDER BY RANDOM();
    // norwrandom/norwtime turn rewrites off; a syntax error is reported per statement with
    // 200; a GET without q is a 400; DELETE a 405; nothing ran (no table was created).
    let n = TestNode::start().await;
    let r = n
        .client
        .post_json(
            "/db/sql",
            r#"["INSERT INTO foo VALUES(RANDOM())", "INSERT INTO foo VALUES(RANDOMBLOB(4))",
                "INSERT INTO foo VALUES(datetime('now'))", "SELECT * FROM foo ORDER BY RANDOM()",
                "CREATE TABLE made (v)", "SLECT * FORM foo"]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    let j = r.json();
    let res = j["results"].as_array().expect("results");
    assert_eq!(res.len(), 6, "{j}");
    assert_eq!(res[0]["original"], "INSERT INTO foo VALUES(RANDOM())");
    let random = res[0]["rewritten"].as_str().expect("rewritten");
    let literal = random
        .strip_prefix("INSERT INTO foo VALUES(")
        .and_then(|s| s.strip_suffix(')'))
        .expect(random);
    assert!(literal.parse::<i64>().is_ok(), "{random}");
    let blob = res[1]["rewritten"].as_str().expect("rewritten");
    let hex = blob
        .strip_prefix("INSERT INTO foo VALUES(x'")
        .and_then(|s| s.strip_suffix("')"))
        .expect(blob);
    assert!(
        hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "{blob}"
    );
    let now = res[2]["rewritten"].as_str().expect("rewritten");
    assert!(
        now.starts_with("INSERT INTO foo VALUES(datetime(24") && !now.contains("now"),
        "{now}"
    );
    assert_eq!(res[3]["rewritten"], "SELECT * FROM foo ORDER BY RANDOM()");
    assert_eq!(res[4]["rewritten"], "CREATE TABLE made (v)");
    assert!(res[5].get("rewritten").is_none(), "{}", res[5]);
    assert!(
        res[5]["error"]
            .as_str()
            .is_some_and(|e| e.contains("syntax error")),
        "{}",
        res[5]
    );
    assert_eq!(res[5]["original"], "SLECT * FORM foo");

    let r = n
        .client
        .post_json(
            "/db/sql?norwrandom&norwtime",
            r#"["INSERT INTO foo VALUES(RANDOM(), datetime('now'))"]"#,
        )
        .await
        .json();
    assert_eq!(
        r["results"][0]["rewritten"],
        "INSERT INTO foo VALUES(RANDOM(), datetime('now'))"
    );
    let r = n
        .client
        .get(&format!(
            "/db/sql?q={}",
            url_encode("INSERT INTO foo VALUES(RANDOM())")
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.json()["results"][0]["rewritten"]
        .as_str()
        .unwrap_or("RANDOM()")
        .contains("RANDOM()"));
    let r = n.client.get("/db/sql").await;
    assert_eq!((r.status, r.text().trim()), (400, "query not specified"));
    let r = n.client.send("DELETE", "/db/sql", None, None).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        n.client
            .query_values("SELECT COUNT(*) FROM sqlite_master", "strong")
            .await,
        serde_json::json!([[0]])
    );
}
