//! Load generator: drives a sqlraft (or rqlite) node over HTTP and prints ops/s, p50, p99.
//!
//! ```text
//! cargo run --release --example bench -- --url http://127.0.0.1:4001 --mode insert -c 16 --seconds 10
//! ```
//! Modes: `insert` (one row per request), `batch` (`--batch` rows per request as one multi-row
//! INSERT), `stmts` (`--batch` one-row INSERT statements per request), `select` (point reads by
//! primary key at `--level`), `queued` (`insert` with `?queue`),
//! `tx` (an interactive transaction over `/db/tx`: read two random rows of `--rows`, write
//! both, commit; a 409 counts as a conflict, not an error) and `tx-hot` (the same, every
//! transaction reading and writing row 0: the conflict rate at a hot key).
//! For a reference point the same generator drives etcd's v3 JSON gateway: `etcd-put`,
//! `etcd-range` (serializable) and `etcd-range-linearizable` (`--url` is etcd's client URL).
//! `--mode rss --pids 1,2,3` prints each process's resident set from `/proc` and exits.
//! `--mode cdc-sink --url http://127.0.0.1:PORT` is a CDC webhook: it acknowledges every POST,
//! counts the row changes, and once none came for 3 s (or after `--seconds`) prints how many
//! arrived and at what rate (first to last POST).
//! `--skip-setup` keeps the table or keys an earlier run loaded (read modes); `--setup-only`
//! does only that preload and exits (`scripts/bench.sh` then drives the load with wrk and
//! `scripts/wrk/points.lua`, which sends the same requests).
//!
//! `--url` may list several nodes, comma-separated: the first is set up (preload), and the
//! workers are spread over all of them (worker `w` sends to URL `w % n`), e.g. to compare
//! `select --level linearizable` through every node of a cluster with the leader alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

#[derive(Clone, Debug)]
struct Opts {
    /// The node this worker (or the preload) talks to.
    url: String,
    /// Every node given with `--url`; workers are spread over them.
    urls: Vec<String>,
    mode: String,
    concurrency: usize,
    seconds: u64,
    batch: usize,
    level: String,
    rows: u64,
    skip_setup: bool,
    /// Only the preload, then exit (`scripts/bench.sh` drives the load with wrk).
    setup_only: bool,
    pids: Vec<u32>,
}

/// Every `--mode`. Checked when the options are read: a request of an unknown mode fails
/// without awaiting anything, and the workers would spin on it past `--seconds`.
const MODES: [&str; 12] = [
    "insert",
    "batch",
    "stmts",
    "select",
    "queued",
    "tx",
    "tx-hot",
    "etcd-put",
    "etcd-range",
    "etcd-range-linearizable",
    "rss",
    "cdc-sink",
];

fn usage() -> String {
    format!(
        "usage: bench [--url U[,U...]] [--mode {}] [-c N] [--seconds S] [--batch N] [--level L] \
         [--rows N] [--skip-setup] [--setup-only] [--pids P,P,..]",
        MODES.join("|")
    )
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        url: String::new(),
        urls: vec!["http://127.0.0.1:4001".into()],
        mode: "insert".into(),
        concurrency: 16,
        seconds: 10,
        batch: 100,
        level: "weak".into(),
        rows: 10_000,
        skip_setup: false,
        setup_only: false,
        pids: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--url" => {
                o.urls = val()?
                    .split(',')
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--mode" => o.mode = val()?,
            "--concurrency" | "-c" => o.concurrency = num(val()?)? as usize,
            "--seconds" => o.seconds = num(val()?)?,
            "--batch" => o.batch = num(val()?)? as usize,
            "--level" => o.level = val()?,
            "--rows" => o.rows = num(val()?)?,
            "--skip-setup" => o.skip_setup = true,
            "--setup-only" => o.setup_only = true,
            "--pids" => {
                o.pids = val()?
                    .split(',')
                    .map(|p| p.trim().parse::<u32>().map_err(|e| format!("--pids: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--help" | "-h" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    o.url = o
        .urls
        .first()
        .cloned()
        .ok_or("--url needs at least one URL")?;
    if !MODES.contains(&o.mode.as_str()) {
        return Err(format!("unknown mode {}\n{}", o.mode, usage()));
    }
    Ok(o)
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    post_text(client, url, body).await.map(drop)
}

/// POSTs JSON; the answer's text if it is a success with no statement error, else
/// `Err("<status code> <text>")` (so a 409 reads `Err("409 ...")`).
async fn post_text(client: &reqwest::Client, url: &str, body: String) -> Result<String, String> {
    let r = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() || text.contains("\"error\"") {
        return Err(format!("{} {text}", status.as_u16()));
    }
    Ok(text)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.text().await.map(|_| ()).map_err(|e| e.to_string()),
        Ok(r) => Err(r.status().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A process's resident set in KiB, from `/proc/PID/status` (`VmRSS`).
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("pid {pid}: no VmRSS"))
}

/// Preloads `rows` keys or rows for the read modes.
async fn preload(client: &reqwest::Client, o: &Opts) -> Result<(), String> {
    if o.skip_setup {
        return Ok(());
    }
    if o.mode.starts_with("etcd") {
        if o.mode == "etcd-put" {
            return Ok(());
        }
        for i in 0..o.rows {
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(&format!("bench/{i}")),
                b64(&format!("value {i}"))
            );
            post(client, &format!("{}/v3/kv/put", o.url), body).await?;
        }
        return Ok(());
    }
    let exec = format!("{}/db/execute", o.url);
    post(
        client,
        &exec,
        r#"["DROP TABLE IF EXISTS bench", "CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)"]"#
            .into(),
    )
    .await?;
    if o.mode == "select" || o.mode.starts_with("tx") {
        let mut id = 0;
        while id < o.rows {
            let vals: Vec<String> = (id..(id + 500).min(o.rows))
                .map(|i| format!("({i}, 'value {i}')"))
                .collect();
            id += 500;
            post(
                client,
                &exec,
                format!(r#"["INSERT INTO bench(id, v) VALUES {}"]"#, vals.join(",")),
            )
            .await?;
        }
    }
    Ok(())
}

/// POSTs and returns the JSON answer; a 409 is `Err("409 ...")`.
async fn post_value(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<serde_json::Value, String> {
    let text = post_text(client, url, body).await?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// One interactive transaction: read rows `a` and `b`, write both, commit.
async fn transfer(client: &reqwest::Client, o: &Opts, a: u64, b: u64) -> Result<(), String> {
    let open = post_value(client, &format!("{}/db/tx", o.url), String::new()).await?;
    let id = open["id"].as_str().ok_or("no id")?.to_string();
    let tx = format!("{}/db/tx/{id}", o.url);
    for k in [a, b] {
        let body = format!(r#"[["SELECT v FROM bench WHERE id = ?", {k}]]"#);
        post_value(client, &format!("{tx}/query"), body).await?;
    }
    let body = format!(
        r#"[["UPDATE bench SET v = ? WHERE id = ?", "{id}", {a}], ["UPDATE bench SET v = ? WHERE id = ?", "{id}", {b}]]"#
    );
    post_value(client, &format!("{tx}/execute"), body).await?;
    post_value(client, &format!("{tx}/commit"), String::new())
        .await
        .map(|_| ())
}

/// One request of the chosen mode.
async fn one(
    client: &reqwest::Client,
    o: &Opts,
    next_id: &AtomicU64,
    rng: &mut u64,
) -> Result<(), String> {
    let mut random_row = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng % o.rows.max(1)
    };
    match o.mode.as_str() {
        "insert" | "queued" => {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let path = if o.mode == "queued" {
                "/db/execute?queue"
            } else {
                "/db/execute"
            };
            let body =
                format!(r#"[["INSERT INTO bench(id, v) VALUES(?, ?)", {id}, "value {id}"]]"#);
            post(client, &format!("{}{path}", o.url), body).await
        }
        "stmts" => {
            let first = next_id.fetch_add(o.batch as u64, Ordering::Relaxed);
            let stmts: Vec<String> = (first..first + o.batch as u64)
                .map(|i| format!(r#"["INSERT INTO bench(id, v) VALUES(?, ?)", {i}, "value {i}"]"#))
                .collect();
            let body = format!("[{}]", stmts.join(","));
            post(client, &format!("{}/db/execute", o.url), body).await
        }
        "batch" => {
            let first = next_id.fetch_add(o.batch as u64, Ordering::Relaxed);
            let vals: Vec<String> = (first..first + o.batch as u64)
                .map(|i| format!("({i}, 'value {i}')"))
                .collect();
            let body = format!(r#"["INSERT INTO bench(id, v) VALUES {}"]"#, vals.join(","));
            post(client, &format!("{}/db/execute", o.url), body).await
        }
        "select" => {
            let id = random_row();
            let url = format!(
                "{}/db/query?level={}&q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D{id}",
                o.url, o.level
            );
            get(client, &url).await
        }
        "tx" | "tx-hot" => {
            let a = if o.mode == "tx-hot" { 0 } else { random_row() };
            let mut b = random_row();
            while b == a {
                b = random_row();
            }
            transfer(client, o, a, b).await
        }
        "etcd-put" => {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(&format!("bench/{id}")),
                b64(&format!("value {id}"))
            );
            post(client, &format!("{}/v3/kv/put", o.url), body).await
        }
        "etcd-range" | "etcd-range-linearizable" => {
            let id = random_row();
            let serializable = o.mode == "etcd-range";
            let body = format!(
                r#"{{"key":"{}","serializable":{serializable}}}"#,
                b64(&format!("bench/{id}"))
            );
            post(client, &format!("{}/v3/kv/range", o.url), body).await
        }
        other => Err(format!("unknown mode {other}\n{}", usage())),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `--mode cdc-sink`: see the crate doc.
async fn cdc_sink(o: &Opts) {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Seen {
        posts: u64,
        events: u64,
        first: Option<Instant>,
        last: Option<Instant>,
    }
    let addr = o.urls[0]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cdc-sink: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let s = s.clone();
        async move {
            let n = body.windows(5).filter(|w| w == b"\"op\":").count() as u64;
            let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            g.posts += 1;
            g.events += n;
            g.first.get_or_insert(now);
            g.last = Some(now);
            axum::http::StatusCode::OK
        }
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let g = seen.lock().unwrap_or_else(|p| p.into_inner());
        let idle = g
            .last
            .is_some_and(|l| l.elapsed() >= Duration::from_secs(3));
        if idle || started.elapsed() >= Duration::from_secs(o.seconds) {
            let span = match (g.first, g.last) {
                (Some(a), Some(b)) => (b - a).as_secs_f64(),
                _ => 0.0,
            };
            println!(
                "mode=cdc-sink posts={} events={} first_to_last={span:.2}s events/s={:.0}",
                g.posts,
                g.events,
                g.events as f64 / span.max(1e-9)
            );
            break;
        }
    }
    server.abort();
}

#[tokio::main]
async fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if o.mode == "cdc-sink" {
        cdc_sink(&o).await;
        return;
    }
    if o.mode == "rss" {
        for pid in &o.pids {
            match rss_kib(*pid) {
                Ok(kib) => println!("pid={pid} rss_kib={kib} rss_mib={:.1}", kib as f64 / 1024.0),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        return;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency * 2)
        .build()
        .expect("client");
    if let Err(e) = preload(&client, &o).await {
        eprintln!("setup failed: {e}");
        std::process::exit(1);
    }
    if o.setup_only {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1_000_000));
    let errors = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let mut o = o.clone();
        o.url = o.urls[w % o.urls.len()].clone();
        let (client, o, stop, next_id, errors, conflicts) = (
            client.clone(),
            o,
            stop.clone(),
            next_id.clone(),
            errors.clone(),
            conflicts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match one(&client, &o, &next_id, &mut rng).await {
                    Ok(()) => lat.push(t.elapsed()),
                    // An interactive transaction that lost a conflict: retried as a new one.
                    Err(e) if e.starts_with("409") => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let ops = all.len() as f64 / elapsed;
    let rows_per_op = if o.mode == "batch" || o.mode == "stmts" {
        o.batch as f64
    } else {
        1.0
    };
    println!(
        "mode={} c={} nodes={} level={} ops={} ops/s={:.0} rows/s={:.0} p50={:.2}ms p99={:.2}ms errors={}",
        o.mode,
        o.concurrency,
        o.urls.len(),
        if o.mode == "select" {
            o.level.as_str()
        } else {
            "-"
        },
        all.len(),
        ops,
        ops * rows_per_op,
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        errors.load(Ordering::Relaxed)
    );
    if o.mode.starts_with("tx") {
        let c = conflicts.load(Ordering::Relaxed);
        let tried = c + all.len() as u64;
        println!(
            "committed={} conflicts={c} conflict_rate={:.1}%",
            all.len(),
            100.0 * c as f64 / tried.max(1) as f64
        );
    }
}
