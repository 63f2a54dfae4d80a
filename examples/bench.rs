//! Load generator: drives a sqlraft (or rqlite) node over HTTP and prints ops/s, p50, p99.
//!
//! ```text
//! cargo run --release --example bench -- --url http://127.0.0.1:4001 --mode insert --concurrency 16 --seconds 10
//! ```
//! Modes: `insert` (one row per request), `batch` (`--batch` rows per request as one multi-row
//! INSERT), `select` (point reads by primary key at `--level`), `queued` (`insert` with `?queue`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Opts {
    url: String,
    mode: String,
    concurrency: usize,
    seconds: u64,
    batch: usize,
    level: String,
    rows: u64,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        url: "http://127.0.0.1:4001".into(),
        mode: "insert".into(),
        concurrency: 16,
        seconds: 10,
        batch: 100,
        level: "weak".into(),
        rows: 10_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.url = val()?,
            "--mode" => o.mode = val()?,
            "--concurrency" | "-c" => o.concurrency = val()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("{e}"))?,
            "--batch" => o.batch = val()?.parse().map_err(|e| format!("{e}"))?,
            "--level" => o.level = val()?,
            "--rows" => o.rows = val()?.parse().map_err(|e| format!("{e}"))?,
            "--help" | "-h" => return Err("usage: bench [--url U] [--mode insert|batch|select|queued] [-c N] [--seconds S] [--batch N] [--level L] [--rows N]".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
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
        return Err(format!("{status}: {text}"));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency * 2)
        .build()
        .expect("client");
    let exec = format!("{}/db/execute", o.url);
    // Fresh table for each run.
    if let Err(e) = post(
        &client,
        &exec,
        r#"["DROP TABLE IF EXISTS bench", "CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)"]"#
            .into(),
    )
    .await
    {
        eprintln!("setup failed: {e}");
        std::process::exit(1);
    }
    if o.mode == "select" {
        // Preload rows in batches for point reads.
        let mut id = 0;
        while id < o.rows {
            let vals: Vec<String> = (id..(id + 500).min(o.rows))
                .map(|i| format!("({i}, 'value {i}')"))
                .collect();
            id += 500;
            if let Err(e) = post(
                &client,
                &exec,
                format!(r#"["INSERT INTO bench(id, v) VALUES {}"]"#, vals.join(",")),
            )
            .await
            {
                eprintln!("preload failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1_000_000));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (client, o, stop, next_id, errors) = (
            client.clone(),
            o.clone(),
            stop.clone(),
            next_id.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let res = match o.mode.as_str() {
                    "insert" | "queued" => {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let path = if o.mode == "queued" {
                            "/db/execute?queue"
                        } else {
                            "/db/execute"
                        };
                        post(
                            &client,
                            &format!("{}{path}", o.url),
                            format!(
                                r#"[["INSERT INTO bench(id, v) VALUES(?, ?)", {id}, "value {id}"]]"#
                            ),
                        )
                        .await
                    }
                    "batch" => {
                        let first = next_id.fetch_add(o.batch as u64, Ordering::Relaxed);
                        let vals: Vec<String> = (first..first + o.batch as u64)
                            .map(|i| format!("({i}, 'value {i}')"))
                            .collect();
                        post(
                            &client,
                            &format!("{}/db/execute", o.url),
                            format!(r#"["INSERT INTO bench(id, v) VALUES {}"]"#, vals.join(",")),
                        )
                        .await
                    }
                    _ => {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let id = rng % o.rows.max(1);
                        let url = format!(
                            "{}/db/query?level={}&q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D{id}",
                            o.url, o.level
                        );
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                r.text().await.map(|_| ()).map_err(|e| e.to_string())
                            }
                            Ok(r) => Err(r.status().to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                match res {
                    Ok(()) => lat.push(t.elapsed()),
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
    let rows_per_op = if o.mode == "batch" {
        o.batch as f64
    } else {
        1.0
    };
    println!(
        "mode={} c={} level={} ops={} ops/s={:.0} rows/s={:.0} p50={:.2}ms p99={:.2}ms errors={}",
        o.mode,
        o.concurrency,
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
}
