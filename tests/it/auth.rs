//! `-auth`: Basic auth and per-endpoint permissions, on one node, through followers (the
//! leader re-checks forwarded credentials), and for joins (`-join-as`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlraft::config::Config;
use sqlraft::node::{Node, NodeError};
use tokio::net::TcpListener;

use crate::harness::{
    assert_cors_allows_credentials, bind_pair, cluster_config, test_config, wait_until, Client,
    Resp, TestCluster, CLUSTER_WAIT,
};

/// Writes an `-auth` file into `dir`.
fn write_auth(dir: &Path, json: &str) -> PathBuf {
    let p = dir.join("auth.json");
    std::fs::write(&p, json).expect("write auth file");
    p
}

/// Sends a request with optional Basic credentials and JSON body.
async fn send(
    base: &str,
    method: &str,
    target: &str,
    user: Option<(&str, &str)>,
    body: Option<&str>,
) -> Resp {
    Client::new(base)
        .send_as(method, target, user, &[], body)
        .await
}

/// A GET as `user` (Basic credentials; `None`: anonymous).
async fn get(base: &str, target: &str, user: Option<(&str, &str)>) -> Resp {
    send(base, "GET", target, user, None).await
}

/// A POST of a JSON body as `user`.
async fn post(base: &str, target: &str, user: Option<(&str, &str)>, body: &str) -> Resp {
    send(base, "POST", target, user, Some(body)).await
}

fn assert_unauthorized(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert!(r.body.is_empty(), "{what}: body {:?}", r.text());
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Basic realm=\"rqlite\""),
        "{what}"
    );
}

/// A single node with `auth` set, waiting for readiness as `ready_as` (the harness's own
/// wait is anonymous, which these files may refuse).
async fn start_node(
    auth: PathBuf,
    ready_as: Option<(&str, &str)>,
    tweak: impl FnOnce(&mut Config),
) -> (Node, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(tmp.path());
    cfg.auth = Some(auth);
    tweak(&mut cfg);
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = Node::start_with(cfg, http, raft).await.expect("node start");
    let base = format!("http://{}", node.http_addr());
    let b = base.clone();
    wait_until(Duration::from_secs(20), "node to be ready", || {
        let b = b.clone();
        async move { get(&b, "/readyz", ready_as).await.status == 200 }
    })
    .await;
    (node, base, tmp)
}

/// (permission, method, path and query, body, expected status on success)
type Endpoint = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<u16>,
);

/// Permissions that guard HTTP endpoints, and one request per endpoint that needs each.
/// The expected status on success is `Some(code)`, or `None` where any answer but 401 will do
/// (the request itself is refused for its content, after the permission check).
fn endpoints() -> Vec<Endpoint> {
    vec![
        (
            "execute",
            "POST",
            "/db/execute",
            Some(r#"["CREATE TABLE IF NOT EXISTS t (v)"]"#),
            Some(200),
        ),
        ("query", "GET", "/db/query?q=SELECT%201", None, Some(200)),
        (
            "query",
            "POST",
            "/db/query",
            Some(r#"["SELECT 1"]"#),
            Some(200),
        ),
        ("query", "GET", "/db/sql?q=SELECT%201", None, Some(200)),
        (
            "query",
            "POST",
            "/db/sql",
            Some(r#"["SELECT RANDOM()"]"#),
            Some(200),
        ),
        ("backup", "GET", "/db/backup", None, Some(200)),
        (
            "load",
            "POST",
            "/db/load",
            Some("CREATE TABLE IF NOT EXISTS l (v);"),
            Some(200),
        ),
        ("load", "POST", "/boot", Some("not a sqlite file"), None),
        ("status", "GET", "/status", None, Some(200)),
        ("status", "GET", "/nodes", None, Some(200)),
        ("status", "GET", "/debug/vars", None, Some(200)),
        ("status", "GET", "/metrics", None, Some(200)),
        ("ready", "GET", "/readyz", None, Some(200)),
        ("leader-ops", "GET", "/leader", None, Some(200)),
        (
            "remove",
            "DELETE",
            "/remove",
            Some(r#"{"id":"no-such-node"}"#),
            None,
        ),
        ("snapshot", "POST", "/snapshot", None, Some(200)),
        ("snapshot", "POST", "/reap", None, Some(200)),
        ("ui", "GET", "/console/", None, Some(200)),
    ]
}

const ALL_HTTP_PERMS: [&str; 9] = [
    "execute",
    "query",
    "backup",
    "load",
    "status",
    "ready",
    "leader-ops",
    "remove",
    "snapshot",
];

/// One user per permission (`u-<perm>`, password `pw-<perm>`), plus `root` (all), `both`
/// (execute and query), a bcrypt user and the `*` user with `extra_star` perms.
fn auth_file_json(bcrypt_hash: &str, extra_star: &str) -> String {
    let mut users: Vec<String> = ALL_HTTP_PERMS
        .iter()
        .chain(["join", "join-read-only", "ui"].iter())
        .map(|p| format!(r#"{{"username":"u-{p}","password":"pw-{p}","perms":["{p}"]}}"#))
        .collect();
    users.push(r#"{"username":"root","password":"rootpw","perms":["all"]}"#.into());
    users.push(r#"{"username":"both","password":"bothpw","perms":["execute","query"]}"#.into());
    users.push(format!(
        r#"{{"username":"hashed","password":"{bcrypt_hash}","perms":["query","status"]}}"#
    ));
    users.push(format!(r#"{{"username":"*","perms":[{extra_star}]}}"#));
    format!("[{}]", users.join(",\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_its_permission() {
    // Steps: one node, `*` has nothing. For each endpoint: the user with exactly its
    // permission and `root` (all) get through; anonymous, every other single-permission
    // user and a wrong password get 401 with an empty body and the Basic challenge.
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("bcrypt-secret", 4).expect("hash");
    let auth = write_auth(dir.path(), &auth_file_json(&hash, ""));
    let (node, base, _tmp) = start_node(auth, Some(("root", "rootpw")), |_| {}).await;

    for (perm, method, path, body, ok) in endpoints() {
        let what = format!("{method} {path} as u-{perm}");
        let pw = format!("pw-{perm}");
        let user = format!("u-{perm}");
        let r = send(&base, method, path, Some((&user, &pw)), body).await;
        match ok {
            Some(code) => assert_eq!(r.status, code, "{what}: {}", r.text()),
            None => assert_ne!(r.status, 401, "{what}"),
        }
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Basic realm=\"rqlite\""),
            "{what}"
        );
        let r = send(&base, method, path, Some(("root", "rootpw")), body).await;
        assert_ne!(r.status, 401, "{method} {path} as root");

        assert_unauthorized(
            &send(&base, method, path, None, body).await,
            &format!("{method} {path} anonymous"),
        );
        assert_unauthorized(
            &send(&base, method, path, Some((&user, "wrong")), body).await,
            &format!("{method} {path} wrong password"),
        );
        for other in ALL_HTTP_PERMS
            .iter()
            .chain(["join", "join-read-only", "ui"].iter())
        {
            if *other == perm {
                continue;
            }
            let (u, p) = (format!("u-{other}"), format!("pw-{other}"));
            assert_unauthorized(
                &send(&base, method, path, Some((&u, &p)), body).await,
                &format!("{method} {path} as {u}"),
            );
        }
    }

    // The unified endpoint needs execute AND query.
    let req = Some(r#"["SELECT 1"]"#);
    for (u, p) in [("u-execute", "pw-execute"), ("u-query", "pw-query")] {
        assert_unauthorized(
            &send(&base, "POST", "/db/request", Some((u, p)), req).await,
            &format!("/db/request as {u}"),
        );
    }
    let r = send(&base, "POST", "/db/request", Some(("both", "bothpw")), req).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A malformed Authorization header counts as no credentials; unknown users are refused.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/status"))
        .header("Authorization", "Basic %%%not-base64")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert_unauthorized(
        &get(&base, "/status", Some(("nobody", "x"))).await,
        "unknown user",
    );

    // Every refusal above was counted, in both of the node's metrics surfaces.
    let m = send(
        &base,
        "GET",
        "/metrics",
        Some(("u-status", "pw-status")),
        None,
    )
    .await;
    let refused = m
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("sqlraft_auth_failures_total{listener=\"api\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no API auth failures in:\n{}", m.text()));
    assert!(refused > 100, "{refused}");
    let vars = send(
        &base,
        "GET",
        "/debug/vars?key=http",
        Some(("root", "rootpw")),
        None,
    )
    .await;
    let http = &vars.json()["http"];
    assert!(http["auth_fail"].as_u64().unwrap() >= refused, "{http}");
    assert!(http["auth_ok"].as_u64().unwrap() > 0, "{http}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_and_plaintext_passwords_both_work() {
    // Steps: a user whose file password is a bcrypt hash (cost 4) is let in with the
    // password, twice (the second from the verification cache), refused with a wrong one;
    // a plaintext user likewise.
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("bcrypt-secret", 4).expect("hash");
    assert!(hash.starts_with("$2b$"));
    let auth = write_auth(dir.path(), &auth_file_json(&hash, "\"ready\""));
    let (node, base, _tmp) = start_node(auth, None, |_| {}).await;
    // The hashed user twice: the second time from the verification cache.
    let right = [
        ("hashed", "bcrypt-secret"),
        ("hashed", "bcrypt-secret"),
        ("u-status", "pw-status"),
    ];
    for user in right {
        let r = get(&base, "/status", Some(user)).await;
        assert_eq!(r.status, 200, "{user:?}: {}", r.text());
    }
    for user in [("hashed", "bcrypt-secreT"), ("u-status", "pw-statuS")] {
        let r = get(&base, "/status", Some(user)).await;
        assert_unauthorized(&r, &format!("{user:?}: wrong password"));
    }
    // The hashed user has no execute permission.
    let create = r#"["CREATE TABLE x (v)"]"#;
    let r = post(&base, "/db/execute", Some(right[0]), create).await;
    assert_unauthorized(&r, "bcrypt user without execute");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_user_grants_permissions_to_anonymous_requests() {
    // Steps: `*` has status and ready: anonymous /status and /readyz pass, anonymous queries
    // do not; CORS headers name the allowed origin and Authorization.
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = write_auth(dir.path(), &auth_file_json("x", "\"status\", \"ready\""));
    let (node, base, _tmp) = start_node(auth, None, |c| {
        c.http.allow_origin = Some("https://example.com".into());
    })
    .await;
    let r = get(&base, "/status", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://example.com")
    );
    assert_cors_allows_credentials(&r);
    assert_eq!(get(&base, "/readyz", None).await.status, 200);
    // Anyone with a wrong password still gets what `*` has.
    assert_eq!(
        get(&base, "/nodes", Some(("u-query", "nope"))).await.status,
        200
    );
    let r = get(&base, "/db/query?q=SELECT%201", None).await;
    assert_unauthorized(&r, "anonymous query");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://example.com")
    );
    // OPTIONS (CORS preflight) is answered without credentials.
    assert_eq!(
        send(&base, "OPTIONS", "/db/query", None, None).await.status,
        200
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_auth_files_stop_the_node_at_start() {
    // Steps: a missing file, an unknown permission, and a -join-as user not in the file each
    // fail Node::start with a message naming the problem.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write_auth(
        dir.path(),
        r#"[{"username":"a","password":"p","perms":["exec"]}]"#,
    );
    let missing = dir.path().join("missing.json");
    let good_dir = tempfile::tempdir().expect("tempdir");
    let good = write_auth(good_dir.path(), &auth_file_json("x", ""));
    for (auth, join_as, expect) in [
        (missing, None, "cannot read auth file"),
        (bad, None, "unknown permission \"exec\""),
        (good, Some("ghost"), "-join-as user \"ghost\""),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = test_config(tmp.path());
        cfg.auth = Some(auth);
        cfg.cluster.join_as = join_as.map(str::to_string);
        let (http, raft) = bind_pair().await;
        let err = Node::start_with(cfg, http, raft)
            .await
            .err()
            .expect("start must fail");
        assert!(matches!(err, NodeError::Config(_)), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }
}

/// The cluster tests' auth file: `*` may check readiness and status; `node` may join.
fn cluster_auth(dir: &Path, all_for_sneaky: bool) -> PathBuf {
    let sneaky = if all_for_sneaky {
        r#"["all"]"#
    } else {
        r#"["query"]"#
    };
    write_auth(
        dir,
        &format!(
            r#"[{{"username":"*","perms":["ready","status"]}},
               {{"username":"node","password":"nodepw","perms":["join","join-read-only"]}},
               {{"username":"writer","password":"wpw","perms":["execute","query"]}},
               {{"username":"sneaky","password":"spw","perms":{sneaky}}},
               {{"username":"boss","password":"bpw","perms":["all"]}}]"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_auth_joins_with_join_as_and_forwards_credentials() {
    // Steps: three nodes with the same auth file join with -join-as node; a write and a
    // strong read through a follower are forwarded with the caller's credentials; a user
    // without the permission is refused on the follower; leader operations pass through.
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = cluster_auth(dir.path(), false);
    let c = TestCluster::start_with(3, |_, cfg| {
        cfg.auth = Some(auth.clone());
        cfg.cluster.join_as = Some("node".into());
    })
    .await;
    let leader = c.leader().await;
    let f = c.followers().await[0];
    let fbase = c.members[f].api_url();
    let r = post(
        &fbase,
        "/db/execute",
        Some(("writer", "wpw")),
        r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES(1)"]"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-rqlite-served-by").as_deref(),
        Some(c.members[leader].raft_adv().as_str())
    );
    let r = get(
        &fbase,
        "/db/query?level=strong&q=SELECT%20v%20FROM%20t",
        Some(("writer", "wpw")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["values"], serde_json::json!([[1]]));
    assert_unauthorized(
        &post(
            &fbase,
            "/db/execute",
            Some(("sneaky", "spw")),
            r#"["INSERT INTO t VALUES(2)"]"#,
        )
        .await,
        "sneaky on follower",
    );
    assert_unauthorized(
        &get(&fbase, "/db/backup", Some(("writer", "wpw"))).await,
        "backup without permission",
    );
    let r = get(&fbase, "/db/backup?fmt=sql", Some(("boss", "bpw"))).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("INSERT INTO"), "{}", r.text());
    let nodes = get(&fbase, "/nodes", None).await;
    assert_eq!(nodes.status, 200);
    assert_eq!(nodes.json().as_object().map(|o| o.len()), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_rechecks_forwarded_credentials() {
    // Steps: the leader's file gives `sneaky` query only; a read-only (non-voter) node, which
    // can never lead, has a file that gives it all. Every forwarded operation by `sneaky`
    // through that node passes its own check, is forwarded, and the leader answers 401
    // (except the strong read: query is granted there too); `writer` passes both; the data
    // shows only writer's row.
    let dir_leader = tempfile::tempdir().expect("tempdir");
    let dir_follower = tempfile::tempdir().expect("tempdir");
    let strict = cluster_auth(dir_leader.path(), false);
    let lax = cluster_auth(dir_follower.path(), true);
    let c = TestCluster::start_with(2, |i, cfg| {
        cfg.cluster.join_as = Some("node".into());
        if i == 0 {
            cfg.auth = Some(strict.clone());
        } else {
            cfg.auth = Some(lax.clone());
            cfg.raft.non_voter = true;
        }
    })
    .await;
    assert_eq!(c.leader().await, 0);
    let base1 = c.members[1].api_url();
    let r = post(
        &base1,
        "/db/execute",
        Some(("writer", "wpw")),
        r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES('writer')"]"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sneaky = Some(("sneaky", "spw"));
    let insert = Some(r#"["INSERT INTO t VALUES('sneaky')"]"#);
    for (method, path, body) in [
        ("POST", "/db/execute", insert),
        ("POST", "/db/request", insert),
        ("GET", "/db/backup", None),
        ("POST", "/db/load", Some("INSERT INTO t VALUES('sneaky');")),
        ("DELETE", "/remove", Some(r#"{"id":"1"}"#)),
        ("POST", "/leader", None),
    ] {
        let r = send(&base1, method, path, sneaky, body).await;
        assert_unauthorized(
            &r,
            &format!("sneaky {method} {path} forwarded to the leader"),
        );
    }
    // Local operations follow the follower's own file.
    assert_eq!(get(&base1, "/db/backup?noleader", sneaky).await.status, 200);
    let r = get(
        &base1,
        "/db/query?level=strong&q=SELECT%20count(*)%20FROM%20t",
        sneaky,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-rqlite-served-by").as_deref(),
        Some(c.members[0].raft_adv().as_str())
    );
    let base0 = c.members[0].api_url();
    let r = get(
        &base0,
        "/db/query?level=strong&q=SELECT%20v%20FROM%20t",
        Some(("writer", "wpw")),
    )
    .await;
    assert_eq!(
        r.json()["results"][0]["values"],
        serde_json::json!([["writer"]])
    );
}

/// Starts node 2 to join `leader_raft` with `tweak`; returns why it could not start.
async fn try_join(
    leader_raft: &str,
    tweak: impl FnOnce(&mut Config),
) -> Result<(Node, tempfile::TempDir), String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = cluster_config(tmp.path(), "2");
    cfg.cluster.join = vec![leader_raft.to_string()];
    cfg.cluster.join_attempts = 2;
    cfg.cluster.join_interval = Duration::from_millis(50);
    tweak(&mut cfg);
    let (http, raft) = bind_pair().await;
    let node = Node::start_with(cfg, http, raft)
        .await
        .map_err(|e| e.to_string())?;
    // The node serves while it joins; whether it joined is its formation's outcome.
    let formed = tokio::time::timeout(CLUSTER_WAIT, node.formed())
        .await
        .expect("join attempt to finish");
    match formed {
        Ok(()) => Ok((node, tmp)),
        Err(e) => {
            node.shutdown().await;
            Err(e)
        }
    }
}

/// Joins as [`try_join`] does, and expects the leader to refuse the credentials.
async fn assert_join_refused(leader_raft: &str, tweak: impl FnOnce(&mut Config), what: &str) {
    match try_join(leader_raft, tweak).await {
        Ok(_) => panic!("{what}: joined"),
        Err(e) => assert!(e.contains("unauthorized"), "{what}: {e}"),
    }
}

/// A joiner's settings: its own -auth `file` and -join-as `user`.
fn joining_as(file: &Path, user: &str) -> impl FnOnce(&mut Config) {
    let (file, user) = (file.to_path_buf(), user.to_string());
    move |cfg| {
        cfg.auth = Some(file);
        cfg.cluster.join_as = Some(user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_without_the_join_permission_is_refused() {
    // Steps: a one-node cluster with auth. A node with no credentials, one whose -join-as
    // user has the wrong password in its own file, and one whose user may only join as a
    // read-only node but asks to vote are all refused; the leader's membership is unchanged.
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = cluster_auth(dir.path(), false);
    let c = TestCluster::start_with(1, |_, cfg| cfg.auth = Some(auth.clone())).await;
    let leader_raft = c.members[0].raft_adv();

    assert_join_refused(&leader_raft, |_| {}, "no credentials").await;

    let wrong_dir = tempfile::tempdir().expect("tempdir");
    let wrong = write_auth(
        wrong_dir.path(),
        r#"[{"username":"node","password":"not-nodepw","perms":["join"]},
            {"username":"ro","password":"ropw","perms":["join-read-only"]}]"#,
    );
    let joins_as_node = joining_as(&wrong, "node");
    assert_join_refused(&leader_raft, joins_as_node, "a wrong password").await;

    // `ro` exists with this password on the leader only if its file says so: add it there
    // via a user that only has join-read-only, and ask to join as a voter.
    let ro_dir = tempfile::tempdir().expect("tempdir");
    let ro_file = write_auth(
        ro_dir.path(),
        r#"[{"username":"readonly","password":"ro","perms":["join-read-only"]}]"#,
    );
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let leader_auth = write_auth(
        leader_dir.path(),
        r#"[{"username":"*","perms":["ready","status"]},
            {"username":"readonly","password":"ro","perms":["join-read-only"]}]"#,
    );
    let c2 = TestCluster::start_with(1, |_, cfg| cfg.auth = Some(leader_auth.clone())).await;
    let leader2 = c2.members[0].raft_adv();
    let as_voter = joining_as(&ro_file, "readonly");
    assert_join_refused(&leader2, as_voter, "a voter with join-read-only").await;
    // The same user may join as a non-voter.
    let readonly = joining_as(&ro_file, "readonly");
    let (n, _tmp) = try_join(&leader2, |cfg| {
        readonly(cfg);
        cfg.raft.non_voter = true;
    })
    .await
    .expect("non-voter join with join-read-only");
    n.shutdown().await;

    assert_eq!(c.node(0).store().members().len(), 1);
}
