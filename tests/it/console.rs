//! The web console: how every node serves it (`/` and `/console` lead to it, the `ui`
//! permission guards it), and the page itself driven end to end in headless Chromium against
//! a real 3-node cluster.
//!
//! The browser tests need Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Screenshots go to `$CARGO_TARGET_TMPDIR/console/`; the tests print the path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{Client, Resp, TestCluster, TestNode};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the page may take to show what a step waits for.
const PAGE_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Served by the node

/// A request with optional Basic credentials, following no redirect.
async fn send(base: &str, method: &str, target: &str, user: Option<(&str, &str)>) -> Resp {
    send_with(base, method, target, user, &[]).await
}

async fn send_with(
    base: &str,
    method: &str,
    target: &str,
    user: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Resp {
    Client::new(base)
        .send_as(method, target, user, headers, None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_by_the_node_with_rqlite_10s_redirects() {
    // Steps: one node. `/` is a 302 and `/console` a 301 to `/console/`, with Go's redirect
    // bodies; the page and each of its files come with their content type, a CSP and an ETag
    // that answers 304; HEAD has no body; other methods get 405, unknown files 404.
    let node = TestNode::start().await;
    let base = node.client.base.clone();

    let r = send(&base, "GET", "/", None).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location").as_deref(), Some("/console/"));
    assert_eq!(r.text(), "<a href=\"/console/\">Found</a>.\n\n");
    let r = send(&base, "GET", "/console", None).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("/console/"));
    assert_eq!(r.text(), "<a href=\"/console/\">Moved Permanently</a>.\n\n");

    let page = send(&base, "GET", "/console/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("<title>sqlraft console</title>"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let etag = page.header("etag").expect("etag");
    let again = send_with(&base, "GET", "/console/", None, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let mut total = page.body.len();
    for (file, ct) in [
        ("console.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = send(&base, "GET", &format!("/console/{file}"), None).await;
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-type").as_deref(), Some(ct), "{file}");
        assert!(page.text().contains(file), "index.html loads {file}");
        total += r.body.len();
    }
    // The whole console stays small (docs/design/console.md states the size).
    assert!(total < 64 * 1024, "console assets are {total} bytes");

    let head = send(&base, "HEAD", "/console/", None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(send(&base, "POST", "/console/", None).await.status, 405);
    assert_eq!(
        send(&base, "GET", "/console/nope.js", None).await.status,
        404
    );
    assert_eq!(send(&base, "GET", "/consolex", None).await.status, 404);
}

/// An `-auth` file: `admin` may do anything, `viewer` may only open the console, `reader`
/// may only query, and anonymous requests may ask `/readyz` (the harness waits on it).
const AUTH_USERS: &str = r#"[
  {"username": "admin", "password": "secret", "perms": ["all"]},
  {"username": "viewer", "password": "v", "perms": ["ui"]},
  {"username": "reader", "password": "r", "perms": ["query"]},
  {"username": "*", "perms": ["ready"]}
]"#;

async fn node_with_auth(dir: &Path) -> TestNode {
    let auth = dir.join("auth.json");
    std::fs::write(&auth, AUTH_USERS).expect("auth file");
    TestNode::start_with(|cfg| cfg.auth = Some(auth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_needs_the_ui_permission_when_auth_is_on() {
    // Steps: a node with -auth. Anonymous: the redirects answer, the page is a 401 with the
    // Basic challenge (the browser's login prompt). `viewer` (ui) and `admin` (all) get the
    // page; `reader` (query only) does not.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with_auth(dir.path()).await;
    let base = node.client.base.clone();
    assert_eq!(send(&base, "GET", "/", None).await.status, 302);
    assert_eq!(send(&base, "GET", "/console", None).await.status, 301);
    for file in ["/console/", "/console/console.js"] {
        let anon = send(&base, "GET", file, None).await;
        assert_eq!(anon.status, 401, "{file}");
        assert_eq!(
            anon.header("www-authenticate").as_deref(),
            Some("Basic realm=\"rqlite\"")
        );
        for (user, pass, want) in [
            ("viewer", "v", 200),
            ("admin", "secret", 200),
            ("reader", "r", 401),
            ("viewer", "wrong", 401),
        ] {
            let r = send(&base, "GET", file, Some((user, pass))).await;
            assert_eq!(r.status, want, "{user} {file}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// In a browser

/// The chromedriver this test started. Dropping it (at the end, or while a panic unwinds)
/// kills that process, by its handle, and nothing else.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it answers. chromedriver
    /// cannot bind port 0 itself, so a port is picked by binding it first; if another process
    /// takes it in between, chromedriver exits and another port is tried.
    async fn start(log: &Path) -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the console's browser tests need {CHROMIUM} and {CHROMEDRIVER}: \
             apt-get install chromium chromium-driver (.ci/run does)"
        );
        let mut last = String::new();
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let log_file = std::fs::File::create(log).expect("driver log");
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("{CHROMEDRIVER}: {e}"));
            let mut d = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            let http = reqwest::Client::new();
            loop {
                if let Ok(Some(status)) = d.child.try_wait() {
                    last = format!("chromedriver exited ({status}) on port {port}");
                    break;
                }
                if let Ok(r) = http.get(format!("{}/status", d.url)).send().await {
                    let body = r.bytes().await.unwrap_or_default();
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if v["value"]["ready"] == json!(true) {
                        return d;
                    }
                }
                if Instant::now() > deadline {
                    last = format!("chromedriver not ready on port {port} after 15s");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            drop(d);
        }
        panic!("{last}; see {}", log.display());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's screenshots and logs go.
fn output_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("console")
        .join(test);
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

/// Runs `steps` against a fresh headless Chromium, then ends the browser session and
/// chromedriver whether the steps passed or panicked (the panic is raised again after).
async fn with_browser<F, Fut>(test: &str, steps: F)
where
    F: FnOnce(Browser, PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // One browser at a time: two Chromiums at once on a two-core machine slow every other
    // test in the binary down.
    static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_BROWSER.lock().await;
    let out = output_dir(test);
    println!(
        "console test output (screenshots, chromedriver log): {}",
        out.display()
    );
    let driver = Driver::start(&out.join("chromedriver.log")).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1360,860",
        "--hide-scrollbars",
        &format!("--user-data-dir={}", profile.path().display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}"));
    let started = Instant::now();
    let outcome = tokio::spawn(steps(browser.clone(), out.clone())).await;
    println!("browser time: {:?}", started.elapsed());
    let _ = browser.close().await;
    drop(driver);
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("browser steps: {e}");
    }
}

/// Evaluates a JavaScript expression in the page.
async fn js(b: &Browser, expr: &str) -> Value {
    b.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// The text of the first element `selector` finds ("" when there is none).
async fn text_of(b: &Browser, selector: &str) -> String {
    let sel = Value::from(selector);
    let v = js(b, &format!("document.querySelector({sel})?.textContent")).await;
    v.as_str().unwrap_or_default().to_string()
}

/// The text of one of the node facts the page lists (`Node`, `HTTPS`, `Auth`, ...).
async fn fact(b: &Browser, name: &str) -> String {
    text_of(b, &format!("[data-fact={}]", Value::from(name))).await
}

/// Clicks the element `what` names.
async fn click(b: &Browser, what: Locator<'_>) {
    let el = b
        .find(what)
        .await
        .unwrap_or_else(|e| panic!("{what:?}: {e}"));
    el.click().await.unwrap_or_else(|e| panic!("{what:?}: {e}"));
}

/// Runs started on the page so far (the results panel counts them).
const RUNS: &str = "Number(document.getElementById('results').dataset.run || 0)";

/// Waits until run `before + 1` has ended; returns its state (`done`, `error`).
async fn wait_next_run(b: &Browser, before: &Value, what: &str) -> Value {
    let next = before.as_u64().unwrap_or(0) + 1;
    wait_js(
        b,
        &format!(
            "(r => r.dataset.run === '{next}' && r.dataset.state !== 'running' && r.dataset.state)\
             (document.getElementById('results'))"
        ),
        &format!("run {next}: {what}"),
    )
    .await
}

/// Polls a JavaScript expression until it is truthy (or panics with what the page shows).
async fn wait_js(b: &Browser, expr: &str, what: &str) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let v = js(b, expr).await;
        let truthy =
            !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
        if truthy {
            return v;
        }
        if Instant::now() > deadline {
            let page = js(b, "document.querySelector('main').innerText").await;
            panic!("timed out waiting for {what} ({expr}); the page shows:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn screenshot(b: &Browser, out: &Path, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    let path = out.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

/// Types `sql` into the editor (replacing what is there) and runs it with Ctrl+Enter; returns
/// once the page shows the outcome of that run.
async fn run_sql(b: &Browser, sql: &str) -> Value {
    let before = js(b, RUNS).await;
    let editor = b.find(Locator::Id("sql")).await.expect("editor");
    editor.clear().await.expect("clear");
    editor.send_keys(sql).await.expect("type");
    editor
        .send_keys(&(Key::Control + &Key::Enter))
        .await
        .expect("Ctrl+Enter");
    wait_next_run(b, &before, sql).await
}

/// The cells of the first result table, as the page shows them.
const RESULT_CELLS: &str = "[...document.querySelectorAll('#results table.rows tbody tr')]\
    .map(tr => [...tr.cells].map(td => td.textContent))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_runs_sql_and_shows_the_cluster() {
    // Steps: a 3-node cluster with a few tables. A browser opens a follower's `/` and lands on
    // the console; it shows three nodes with the leader marked; runs a query with Ctrl+Enter
    // and shows its rows (NULL marked, long values whole on hover); shows an error in place;
    // writes through the page (and every node has the row); lists tables and views with row
    // counts; a click on a table shows its first 100 rows; restores a SQL dump from a file;
    // screenshots along the way.
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let leader_id = cluster.members[leader].id.clone();
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let long_bio = format!("{} the end", "A very long biography. ".repeat(12));
    cluster
        .client(leader)
        .execute_ok(
            &json!([
                "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, bio TEXT)",
                ["INSERT INTO people(name, email, bio) VALUES(?, ?, ?)", "fiona", "fiona@example.com", "likes <b>bold</b> & \"quotes\""],
                ["INSERT INTO people(name, email, bio) VALUES(?, ?, ?)", "declan", null, long_bio],
                ["INSERT INTO people(name, email, bio) VALUES(?, ?, ?)", "emily", "emily@example.com", ""],
                "CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, at TEXT)",
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150) \
                 INSERT INTO events(kind, at) SELECT 'tick', datetime(1700000000 + i * 60, 'unixepoch') FROM n",
                "CREATE VIEW named AS SELECT id, name FROM people WHERE email IS NOT NULL",
            ])
            .to_string(),
        )
        .await;
    cluster
        .wait_all_see("SELECT COUNT(*) FROM events", &json!([[150]]))
        .await;
    let base = cluster.members[follower].api_url();
    let dump = tempfile::tempdir().expect("tempdir");
    let dump_file = dump.path().join("restore.sql");
    std::fs::write(
        &dump_file,
        "CREATE TABLE restored (v TEXT);\nINSERT INTO restored VALUES('from a file');\n",
    )
    .expect("dump file");
    let long = long_bio.clone();

    with_browser("cluster", move |b, out| async move {
        b.goto(&format!("{base}/")).await.expect("open /");
        let here = b.current_url().await.expect("url");
        assert_eq!(
            here.as_str(),
            format!("{base}/console/"),
            "/ leads to the console"
        );

        // The cluster, refreshed by the page itself: three nodes, one leader, all reachable.
        wait_js(
            &b,
            "document.querySelectorAll('#nodes tbody tr').length === 3 && \
             document.querySelectorAll('#nodes tbody tr.leader').length === 1 && \
             document.querySelectorAll('#nodes .reach-yes').length === 3",
            "three reachable nodes, one leader",
        )
        .await;
        let marked = js(&b, "document.querySelector('#nodes tr.leader').dataset.id").await;
        assert_eq!(marked, json!(leader_id), "the leader is marked");
        let badge = text_of(&b, "#nodes tr.leader .badge.leader").await;
        assert_eq!(badge, "leader");
        let state = fact(&b, "Node").await;
        assert!(state.contains("Follower"), "{state}");
        let https = fact(&b, "HTTPS").await;
        assert_eq!(https, "off");
        let applied = fact(&b, "Applied index").await;
        assert!(applied.parse::<u64>().unwrap_or(0) > 0, "{applied}");

        // The editor's text is cut into statements where SQLite would cut it.
        let split = b
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 import('./console.js').then(m => done(arguments[0].map(m.splitSql)));",
                vec![json!([
                    "SELECT 1; SELECT 2",
                    "SELECT 'a;b', \"c;d\", [e;f], `g;h`; SELECT 2;",
                    "-- first;\nSELECT 1; /* ; */ SELECT 2; -- the end;",
                    "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES(1); \
                     UPDATE b SET v = CASE WHEN 1 THEN 2 END; END; SELECT 3",
                    "  ;; -- nothing\n",
                ])],
            )
            .await
            .expect("splitSql");
        assert_eq!(
            split,
            json!([
                ["SELECT 1", "SELECT 2"],
                ["SELECT 'a;b', \"c;d\", [e;f], `g;h`", "SELECT 2"],
                ["-- first;\nSELECT 1", "/* ; */ SELECT 2"],
                [
                    "CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES(1); \
                     UPDATE b SET v = CASE WHEN 1 THEN 2 END; END",
                    "SELECT 3"
                ],
                [],
            ])
        );

        // A query, run with Ctrl+Enter: rows as a table, NULL marked, markup shown as text.
        let state = run_sql(&b, "SELECT id, name, email, bio FROM people ORDER BY id").await;
        assert_eq!(state, json!("done"));
        let cells = js(&b, RESULT_CELLS).await;
        assert_eq!(
            cells,
            json!([
                [
                    "1",
                    "fiona",
                    "fiona@example.com",
                    "likes <b>bold</b> & \"quotes\""
                ],
                ["2", "declan", "NULL", long],
                ["3", "emily", "emily@example.com", ""],
            ])
        );
        let null = js(&b, "document.querySelectorAll('#results td .null').length").await;
        assert_eq!(null, json!(1), "NULL is marked, the empty string is not");
        let injected = js(&b, "document.querySelectorAll('#results td b').length").await;
        assert_eq!(injected, json!(0), "values are text, never markup");
        let hover = js(
            &b,
            "document.querySelector('#results tbody tr:nth-child(2) td:nth-child(4)').title",
        )
        .await;
        assert_eq!(hover, json!(long), "a long value is whole on hover");
        let headers = js(
            &b,
            "[...document.querySelectorAll('#results th')].map(th => th.firstChild.textContent)",
        )
        .await;
        assert_eq!(headers, json!(["id", "name", "email", "bio"]));
        screenshot(&b, &out, "query.png").await;

        // An error, in place and in red.
        assert_eq!(run_sql(&b, "SELECT * FROM nosuch").await, json!("error"));
        let err = text_of(&b, "#results .error").await;
        assert_eq!(err, "no such table: nosuch");
        let color = js(
            &b,
            "getComputedStyle(document.querySelector('#results .error')).color",
        )
        .await;
        assert!(
            color
                .as_str()
                .unwrap_or_default()
                .starts_with("rgb(198, 40, 40"),
            "{color}"
        );

        // Several statements: a write and a read, each with its own result.
        run_sql(
            &b,
            "INSERT INTO people(name) VALUES('zoe');\nSELECT COUNT(*) AS n FROM people;",
        )
        .await;
        let texts = js(
            &b,
            "[...document.querySelectorAll('#results .result-body')].map(e => e.innerText.trim())",
        )
        .await;
        assert_eq!(
            texts[0],
            json!("1 row affected · last insert id 4"),
            "{texts}"
        );
        assert_eq!(js(&b, RESULT_CELLS).await, json!([["4"]]));

        // Tables and views, with row counts (refreshed after the write).
        wait_js(
            &b,
            "[...document.querySelectorAll('#tables li')].map(li => li.dataset.name + ':' + \
             li.querySelector('.count, .kind').textContent).join(',') === \
             'events:150 rows,named:view,people:4 rows'",
            "the table list with counts",
        )
        .await;
        let schema = text_of(&b, r#"#tables li[data-name="events"] pre"#).await;
        assert!(schema.starts_with("CREATE TABLE events"), "{schema}");

        // A click on a table: its first 100 rows.
        let before = js(&b, RUNS).await;
        click(
            &b,
            Locator::Css("#tables li[data-name='events'] button.table-name"),
        )
        .await;
        let state = wait_next_run(&b, &before, "the first rows of events").await;
        assert_eq!(state, json!("done"));
        let rows = js(
            &b,
            "document.querySelectorAll('#results table.rows tbody tr').length",
        )
        .await;
        assert_eq!(rows, json!(100));
        let first = js(
            &b,
            "document.querySelector('#results tbody tr').cells[1].textContent",
        )
        .await;
        assert_eq!(first, json!("tick"));
        let summary = text_of(&b, "#results .summary").await;
        assert_eq!(summary, "100 rows · the first 100 of 150");
        let editor = js(&b, "document.getElementById('sql').value").await;
        assert_eq!(editor, json!("SELECT * FROM \"events\" LIMIT 100;"));
        screenshot(&b, &out, "table.png").await;

        // Backup: the page's link downloads a SQLite file from the node.
        let magic = b
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 fetch(document.getElementById('backup-binary').href)\
                   .then(r => r.arrayBuffer())\
                   .then(b => done(new TextDecoder().decode(new Uint8Array(b).slice(0, 15))))\
                   .catch(e => done('failed: ' + e));",
                vec![],
            )
            .await
            .expect("backup fetch");
        assert_eq!(magic, json!("SQLite format 3"));

        // Restore from a file: choose it, confirm, and the new table is listed.
        b.find(Locator::Id("restore-file"))
            .await
            .expect("file input")
            .send_keys(&dump_file.to_string_lossy())
            .await
            .expect("choose file");
        click(&b, Locator::Id("restore")).await;
        let question = wait_js(
            &b,
            "!document.getElementById('restore-confirm').hidden && \
                                    document.getElementById('restore-confirm').innerText",
            "the confirmation",
        )
        .await;
        assert!(
            question
                .as_str()
                .unwrap_or_default()
                .contains("restore.sql"),
            "{question}"
        );
        click(&b, Locator::Id("restore-yes")).await;
        wait_js(
            &b,
            "document.getElementById('restore-status').dataset.state === 'done'",
            "the restore",
        )
        .await;
        wait_js(
            &b,
            "!!document.querySelector('#tables li[data-name=\"restored\"]')",
            "the restored table",
        )
        .await;
        screenshot(&b, &out, "restored.png").await;
    })
    .await;

    // What the page wrote and loaded reached every node.
    cluster
        .wait_all_see(
            "SELECT COUNT(*) FROM people WHERE name = 'zoe'",
            &json!([[1]]),
        )
        .await;
    cluster
        .wait_all_see("SELECT COUNT(*) FROM restored", &json!([[1]]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_works_behind_basic_auth() {
    // Steps: a node with -auth. The browser logs in as admin (credentials in the address, as
    // after the login prompt); the page's own requests carry them: the cluster shows, and a
    // query runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with_auth(dir.path()).await;
    let addr = node.node.as_ref().expect("running").http_addr();
    with_browser("auth", move |b, out| async move {
        b.goto(&format!("http://admin:secret@{addr}/console/"))
            .await
            .expect("open the console");
        wait_js(
            &b,
            "document.querySelectorAll('#nodes tbody tr.leader').length === 1",
            "the cluster, read with the page's credentials",
        )
        .await;
        assert_eq!(
            run_sql(&b, "SELECT 'signed in' AS who").await,
            json!("done")
        );
        assert_eq!(js(&b, RESULT_CELLS).await, json!([["signed in"]]));
        let auth = fact(&b, "Auth").await;
        assert_eq!(auth, "enabled");
        screenshot(&b, &out, "auth.png").await;
    })
    .await;
}
