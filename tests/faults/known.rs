//! Storage scenarios that do not fit the generic run (a single writer, big rows, one node's
//! disk): a lagging follower catching up by snapshot, and a follower whose disk fills up.
//! Each returns its problems; the test asserts there are none and the summary gets a row.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client;
use crate::cluster::Cluster;
use crate::history::Outcome;
use crate::report::{self, Row};
use crate::run::execute_until_ok;

/// A random, barely compressible text of `n` bytes.
fn pad(n: usize) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n)
        .map(|_| ALPHA[fastrand::usize(..ALPHA.len())] as char)
        .collect()
}

/// One row of `bytes` into `big` through node `via`, with retries (writes only; rows have
/// unique ids, so a retry after an unknown outcome may leave one extra row at most, which
/// the comparisons below do not care about: they compare nodes with each other).
async fn write_big(
    c: &Cluster,
    via: &[usize],
    id: i64,
    bytes: usize,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let body = json!([[
        "INSERT OR IGNORE INTO big(id, pad) VALUES (?, ?)",
        id,
        pad(bytes)
    ]]);
    loop {
        let i = via[fastrand::usize(..via.len())];
        let r = client::execute(&c.http, &c.nodes[i].base(), "", &body).await;
        if r.outcome == Outcome::Ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "write of row {id} not accepted within {within:?}: {:?} {}",
                r.status,
                r.error.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `SELECT count(*), total(length(pad)) FROM big` on node `i` at `level`.
async fn fingerprint(c: &Cluster, i: usize, level: &str) -> Option<(i64, i64)> {
    let r = client::query(
        &c.http,
        &c.nodes[i].base(),
        level,
        &json!(["SELECT count(*), CAST(total(length(pad)) AS INTEGER) FROM big"]),
    )
    .await;
    let row = client::rows(&r, 0).into_iter().next()?;
    Some((row[0].as_i64()?, row[1].as_i64()?))
}

/// Waits until node `i` (read locally) holds what `want` says; returns how long it took.
async fn wait_fingerprint(
    c: &Cluster,
    i: usize,
    want: (i64, i64),
    within: Duration,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut last = None;
    while t.elapsed() < within {
        last = fingerprint(c, i, "none").await;
        if last == Some(want) {
            return Ok(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "node {} holds (rows, bytes) {last:?}, the leader {want:?}, after {within:?}",
        i + 1
    ))
}

/// The table the storage scenarios write (retried until a leader takes it).
async fn create_big(c: &Cluster) {
    execute_until_ok(
        c,
        &json!(["CREATE TABLE IF NOT EXISTS big (id INTEGER PRIMARY KEY, pad TEXT)"]),
        Duration::from_secs(30),
    )
    .await;
}

/// Moves the leadership to node `i` (`POST /leader` to the current leader, retried).
async fn lead_with(c: &Cluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = c.wait_leader(Duration::from_secs(30)).await;
        if l == i {
            return;
        }
        let _ = c
            .http
            .post(format!("{}/leader", c.nodes[l].base()))
            .header("Content-Type", "application/json")
            .body(json!({ "id": c.nodes[i].id }).to_string())
            .send()
            .await;
        assert!(
            Instant::now() < deadline,
            "node {} never took the leadership",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (30 s) until node `i` holds what the leader holds; returns how long it took.
async fn caught_up(c: &Cluster, i: usize) -> Result<Duration, String> {
    let l = c.wait_leader(Duration::from_secs(30)).await;
    let want = fingerprint(c, l, "strong")
        .await
        .expect("leader fingerprint");
    wait_fingerprint(c, i, want, Duration::from_secs(30)).await
}

/// Gives the `full` nodes' tmpfs its 256 MiB back, then waits for node `i` to hold what the
/// leader holds: a note saying how long that took, or a problem.
async fn space_back(
    c: &mut Cluster,
    full: &[usize],
    i: usize,
    t0: Instant,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let which: Vec<String> = full.iter().map(|n| (n + 1).to_string()).collect();
    event(
        &format!("grow the tmpfs of node(s) {} to 256 MiB", which.join(", ")),
        t0,
    );
    for &n in full {
        c.resize_tmpfs(n, "256m");
    }
    match caught_up(c, i).await {
        Ok(d) => notes.push(format!(
            "node {} caught up {:.2}s after space came back",
            i + 1,
            d.as_secs_f64()
        )),
        Err(e) => problems.push(format!("after space came back: {e}")),
    }
}

async fn status_num(c: &Cluster, i: usize, key: &str) -> i64 {
    let s = c.store_status(i).await.unwrap_or(Value::Null);
    s["raft"][key].as_i64().unwrap_or(0)
}

fn event(what: &str, t0: Instant) {
    println!("[{:>8.3}s] {what}", t0.elapsed().as_secs_f64());
}

fn finish(name: &str, nemesis: &str, dir: &std::path::Path, problems: &[String], notes: &[String]) {
    let ok = problems.is_empty();
    let line = format!(
        "{} {name}: {nemesis}; {}",
        if ok { "PASS" } else { "FAIL" },
        notes.join("; ")
    );
    let details: Vec<String> = problems.iter().map(|p| format!("problem: {p}")).collect();
    report::write_verdict(dir, &line, &details);
    report::append(&Row {
        scenario: name.to_string(),
        nemesis: nemesis.to_string(),
        nodes: 3,
        bank: "-".into(),
        register: "-".into(),
        set: "-".into(),
        converged: if problems.iter().any(|p| p.contains("holds (rows")) {
            "NO".into()
        } else {
            "yes".into()
        },
        leaderless_s: None,
        longest_leaderless_s: None,
        longest_no_write_s: None,
        term_delta: None,
        verdict: if ok { "PASS" } else { "FAIL" }.into(),
    });
    println!("{line}");
    for d in &details {
        println!("  {d}");
    }
    assert!(
        ok,
        "{line}\n{}\nnode logs: {}",
        details.join("\n"),
        dir.display()
    );
}

/// A follower is stopped; the leader takes `rows` rows of `row_bytes` plus enough small
/// writes that its snapshot (taken every 200 entries, checked every second) and log
/// compaction leave the follower's position behind; the follower restarts and must hold the
/// leader's data within `within`.
pub async fn lagging_follower_catches_up(
    name: &str,
    rows: i64,
    row_bytes: usize,
    within: Duration,
) {
    let dir = report::scenario_dir(name);
    let nemesis = format!(
        "follower stopped, {rows} rows x {} KiB written, compaction past it, restart",
        row_bytes / 1024
    );
    println!("== {name} ({nemesis}), results in {}", dir.display());
    let t0 = Instant::now();
    let mut c = Cluster::new(3, &["-raft-snap", "200", "-raft-snap-int", "1s"], &dir);
    c.start_all().await;
    create_big(&c).await;
    let l = c.wait_leader(Duration::from_secs(30)).await;
    let f = (l + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    let f_index = status_num(&c, f, "applied_index").await;
    event(
        &format!("stop follower node {} at index {f_index}", f + 1),
        t0,
    );
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if let Err(d) = c.terminate(f, Duration::from_secs(30)).await {
        problems.push(format!("follower did not exit within {d:?} of SIGTERM"));
    }
    for id in 0..rows {
        if let Err(e) = write_big(&c, &others, id, row_bytes, Duration::from_secs(30)).await {
            problems.push(e);
            break;
        }
    }
    event(&format!("{rows} big rows written"), t0);
    // Small writes until the leader's snapshot is far enough past the follower's position
    // that the entries it needs were compacted away (trailing logs: 1.25 x 200).
    let mut id = rows;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = c.wait_leader(Duration::from_secs(30)).await;
        let snap = status_num(&c, l, "last_snapshot_index").await;
        if snap > f_index + 300 {
            notes.push(format!(
                "leader snapshot at index {snap}, follower stopped at {f_index}"
            ));
            break;
        }
        if Instant::now() >= deadline {
            problems.push(format!(
                "the leader's snapshot did not pass index {} (at {snap})",
                f_index + 300
            ));
            break;
        }
        for _ in 0..50 {
            if let Err(e) = write_big(&c, &others, id, 16, Duration::from_secs(30)).await {
                problems.push(e);
                break;
            }
            id += 1;
        }
    }
    let l = c.wait_leader(Duration::from_secs(30)).await;
    let want = fingerprint(&c, l, "strong")
        .await
        .expect("leader fingerprint");
    let snap_dir_bytes = c
        .store_status(l)
        .await
        .and_then(|s| s["dir_size"].as_i64())
        .unwrap_or(0);
    notes.push(format!(
        "leader holds {} rows, {:.1} MB of row data; leader data dir {:.1} MB",
        want.0,
        want.1 as f64 / 1e6,
        snap_dir_bytes as f64 / 1e6
    ));
    event(&format!("restart follower node {}", f + 1), t0);
    c.restart(f).await;
    match wait_fingerprint(&c, f, want, within).await {
        Ok(d) => notes.push(format!(
            "follower caught up {:.2}s after restart",
            d.as_secs_f64()
        )),
        Err(e) => problems.push(e),
    }
    drop(c);
    finish(name, &nemesis, &dir, &problems, &notes);
}

/// Up to `max` rows of `bytes` through `via`, numbered from `*id`, while `more` holds; how
/// many were written, or the first failure.
async fn write_rows(
    c: &Cluster,
    via: &[usize],
    id: &mut i64,
    bytes: usize,
    max: usize,
    more: impl Fn(&Cluster) -> bool,
) -> Result<usize, String> {
    let mut n = 0;
    while n < max && more(c) {
        write_big(c, via, *id, bytes, Duration::from_secs(10))
            .await
            .map_err(|e| format!("(write {n}) {e}"))?;
        *id += 1;
        n += 1;
    }
    Ok(n)
}

/// A follower's data dir (a 256 MiB tmpfs) shrinks to 16 MiB, too full to apply; the leader
/// is killed (kill -9), three times. The two survivors must elect the healthy one: the full
/// node lets it campaign first (a full node that won would have to hand leadership on, which
/// costs writes another second or more).
pub async fn disk_full_follower_after_a_leader_crash(name: &str) {
    let dir = report::scenario_dir(name);
    let nemesis = "a follower's tmpfs data dir shrinks to 16 MiB; the leader is killed three times";
    println!("== {name} ({nemesis}), results in {}", dir.display());
    let t0 = Instant::now();
    let mut c = Cluster::new(3, &[], &dir);
    let f = 2;
    c.mount_tmpfs(f, "256m");
    c.start_all().await;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    create_big(&c).await;
    event("shrink node 3's tmpfs to 16 MiB", t0);
    c.resize_tmpfs(f, "16m");
    let mut id = 0;
    for round in 0..3 {
        // Node 1 leads before it is killed.
        lead_with(&c, 0).await;
        if let Err(e) = write_rows(&c, &[0, 1], &mut id, 1024, 5, |_| true).await {
            problems.push(format!("round {round}, before the kill: {e}"));
        }
        // Node 2 must hold every entry node 3 holds (node 3's log is on tmpfs, so it may
        // acknowledge first), or node 3 rightly refuses node 2 its vote.
        let level = Instant::now() + Duration::from_secs(10);
        loop {
            let last = |s: Option<Value>| {
                s.and_then(|s| s["raft"]["last_log_index"].as_u64())
                    .unwrap_or(0)
            };
            let (two, three) = (last(c.store_status(1).await), last(c.store_status(f).await));
            if two > 0 && two >= three {
                break;
            }
            if Instant::now() >= level {
                problems.push(format!(
                    "round {round}: node 2's log ({two}) behind node 3's ({three}) after 10s"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        event(&format!("round {round}: kill -9 node 1"), t0);
        c.kill9(0);
        let killed = Instant::now();
        // Until node 2 leads: node 3 must never say it leads meanwhile.
        let deadline = killed + Duration::from_secs(20);
        loop {
            let st = c.store_status(f).await;
            if st.as_ref().and_then(|s| s["raft"]["state"].as_str()) == Some("Leader") {
                problems.push(format!(
                    "round {round}: node 3, whose disk is full, became leader {:.2}s after the kill",
                    killed.elapsed().as_secs_f64()
                ));
                break;
            }
            let st = c.store_status(1).await;
            if st.as_ref().and_then(|s| s["raft"]["state"].as_str()) == Some("Leader") {
                notes.push(format!(
                    "round {round}: node 2 led {:.2}s after the kill",
                    killed.elapsed().as_secs_f64()
                ));
                break;
            }
            if Instant::now() >= deadline {
                problems.push(format!("round {round}: no leader 20s after the kill"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = write_big(&c, &[1], id, 1024, Duration::from_secs(20)).await {
            problems.push(format!("round {round}, after the kill: {e}"));
        }
        id += 1;
        c.restart(0).await;
    }
    space_back(&mut c, &[f], f, t0, &mut notes, &mut problems).await;
    drop(c);
    finish(name, nemesis, &dir, &problems, &notes);
}

/// The leader's data dir (a 256 MiB tmpfs) shrinks to 16 MiB, below the 64 MiB a node needs
/// free to apply entries. The other two voters still commit every write, but a leader that
/// cannot apply answers none of them: it must hand leadership over, so that writes through the
/// healthy nodes are accepted again within seconds; the full node must say it is not ready,
/// and catch up once its disk grows back. With `follower_too`, a follower's disk shrinks as
/// well (and is the one the leader would pick first when both are level): leadership must go
/// to the one healthy node.
pub async fn disk_full_leader(name: &str, follower_too: bool) {
    let dir = report::scenario_dir(name);
    let nemesis = match follower_too {
        false => "the leader's tmpfs data dir shrinks to 16 MiB, then grows to 256 MiB",
        true => {
            "the leader's and a follower's tmpfs data dirs shrink to 16 MiB, then grow to 256 MiB"
        }
    };
    println!("== {name} ({nemesis}), results in {}", dir.display());
    let t0 = Instant::now();
    let mut c = Cluster::new(3, &[], &dir);
    let f = 2;
    let full: &[usize] = if follower_too { &[1, f] } else { &[f] };
    for &i in full {
        c.mount_tmpfs(i, "256m");
    }
    c.start_all().await;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    create_big(&c).await;
    // Node 3 must lead before its disk shrinks.
    lead_with(&c, f).await;
    let healthy = [0usize, 1];
    let mut id = 0;
    if let Err(e) = write_rows(&c, &healthy, &mut id, 1024, 10, |_| true).await {
        problems.push(format!("before the leader's disk shrank: {e}"));
    }
    event("shrink the full nodes' tmpfs to 16 MiB", t0);
    for &i in full {
        c.resize_tmpfs(i, "16m");
    }
    let shrunk = Instant::now();
    // The first write finds the leader unable to apply; writes are accepted again once the
    // leadership has moved.
    match write_big(&c, &healthy, id, 1024, Duration::from_secs(30)).await {
        Ok(()) => notes.push(format!(
            "first write after the shrink accepted {:.2}s after it",
            shrunk.elapsed().as_secs_f64()
        )),
        Err(e) => problems.push(format!(
            "no write accepted within 30s of the leader's disk filling: {e}"
        )),
    }
    id += 1;
    if let Err(e) = write_rows(&c, &healthy, &mut id, 1024, 20, |_| true).await {
        problems.push(format!("writes after the hand-over: {e}"));
    }
    event(&format!("{id} rows written"), t0);
    let l = c.wait_leader(Duration::from_secs(30)).await;
    if full.contains(&l) {
        problems.push(format!("node {}, whose disk is full, leads", l + 1));
    } else {
        notes.push(format!("node {} leads", l + 1));
    }
    match c
        .http
        .get(format!("{}/readyz", c.nodes[f].base()))
        .send()
        .await
    {
        Ok(r) if !r.status().is_success() => {
            notes.push(format!("full node's /readyz: HTTP {}", r.status()))
        }
        Ok(r) => problems.push(format!(
            "the node with a full disk reports ready (HTTP {})",
            r.status()
        )),
        Err(e) => problems.push(format!("the node with a full disk did not answer: {e}")),
    }
    space_back(&mut c, full, f, t0, &mut notes, &mut problems).await;
    drop(c);
    finish(name, nemesis, &dir, &problems, &notes);
}

/// A follower's data dir is a 16 MiB tmpfs; writes of 48 KiB rows fill it. The majority
/// must keep taking writes, the full node must say it is not ready, and once space is given
/// back (and, if needed, after a restart) it must catch up. With `stop_while_full`, the full
/// node is asked to stop (SIGTERM) before space comes back: it must exit within 10 s (its
/// Raft log is waiting for space), then start again once the disk grows and catch up.
pub async fn disk_full_follower(name: &str, stop_while_full: bool) {
    let dir = report::scenario_dir(name);
    let nemesis = match stop_while_full {
        false => "a follower's 16 MiB tmpfs data dir fills up, then grows to 256 MiB",
        true => "a follower's 16 MiB tmpfs data dir fills up, it is stopped, the disk grows to 256 MiB, it starts again",
    };
    println!("== {name} ({nemesis}), results in {}", dir.display());
    let t0 = Instant::now();
    let mut c = Cluster::new(3, &[], &dir);
    let f = 2;
    c.mount_tmpfs(f, "16m");
    c.start_all().await;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // The full node must be a follower: hand leadership away from it if it leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.wait_leader(Duration::from_secs(30)).await == f {
        let _ = c
            .http
            .post(format!("{}/leader", c.nodes[f].base()))
            .header("Content-Type", "application/json")
            .body(r#"{"id":"1"}"#)
            .send()
            .await;
        assert!(Instant::now() < deadline, "node 3 keeps the leadership");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create_big(&c).await;
    let healthy = [0usize, 1];
    let row = 48 * 1024;
    let mut id = 0;
    // Fill the follower's disk (bounded: 16 MiB takes ~340 rows; stop at 800).
    if let Err(e) = write_rows(&c, &healthy, &mut id, row, 800, |c| {
        c.free_bytes(f) > 1 << 20
    })
    .await
    {
        problems.push(format!("while filling the follower's disk: {e}"));
    }
    event(
        &format!(
            "{id} rows written; follower's disk has {} KiB free",
            c.free_bytes(f) / 1024
        ),
        t0,
    );
    notes.push(format!("{id} rows of 48 KiB filled the follower's disk"));
    // The majority keeps taking writes.
    if let Err(e) = write_rows(&c, &healthy, &mut id, row, 20, |_| true).await {
        problems.push(format!(
            "majority stopped taking writes with one follower's disk full (after full): {e}"
        ));
    }
    event("20 more writes done", t0);
    // Until not even one more entry fits, so that the follower's Raft log fails to write
    // (applying stopped long before, at 64 MiB free), and then some.
    let more = match write_rows(&c, &healthy, &mut id, row, 100, |c| {
        c.free_bytes(f) >= row as u64
    })
    .await
    {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!(
                "majority stopped taking writes with one follower's disk full: {e}"
            ));
            0
        }
    };
    if let Err(e) = write_rows(&c, &healthy, &mut id, row, 5, |_| true).await {
        problems.push(format!(
            "majority stopped taking writes once the follower's log was full: {e}"
        ));
    }
    event(
        &format!(
            "{more} + 5 more writes; follower's disk has {} KiB free",
            c.free_bytes(f) / 1024
        ),
        t0,
    );
    // The full node says it is not ready.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last;
    let unhealthy = loop {
        if let Some(st) = c.exit_status(f) {
            last = format!("the process exited ({st}) instead of reporting unhealthy");
            break false;
        }
        match c
            .http
            .get(format!("{}/readyz", c.nodes[f].base()))
            .send()
            .await
        {
            Ok(r) if !r.status().is_success() => {
                last = format!("HTTP {}", r.status());
                break true;
            }
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = format!("no answer: {e}"),
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if unhealthy {
        notes.push(format!("full node's /readyz: {last}"));
    } else {
        problems.push(format!(
            "the node with a full disk still reports ready after 15s (last /readyz: {last})"
        ));
    }
    // Give the space back (stopping the node first, with `stop_while_full`); it must catch
    // up (after a restart, if it needs one).
    if stop_while_full {
        event("SIGTERM the full follower", t0);
        match c.terminate(f, Duration::from_secs(10)).await {
            Ok(d) => notes.push(format!(
                "the full node exited {:.2}s after SIGTERM",
                d.as_secs_f64()
            )),
            Err(d) => problems.push(format!(
                "the full node did not exit within {}s of SIGTERM",
                d.as_secs()
            )),
        }
    }
    event("grow the follower's tmpfs to 256 MiB", t0);
    c.resize_tmpfs(f, "256m");
    if stop_while_full {
        c.restart(f).await;
    }
    let l = c.wait_leader(Duration::from_secs(30)).await;
    let want = fingerprint(&c, l, "strong")
        .await
        .expect("leader fingerprint");
    let within = Duration::from_secs(if stop_while_full { 30 } else { 20 });
    match wait_fingerprint(&c, f, want, within).await {
        Ok(d) if stop_while_full => notes.push(format!(
            "caught up {:.2}s after it started again",
            d.as_secs_f64()
        )),
        Ok(d) => notes.push(format!(
            "caught up {:.2}s after space came back, without a restart",
            d.as_secs_f64()
        )),
        Err(e) if stop_while_full => {
            problems.push(format!("after it started again with space: {e}"))
        }
        Err(e) => {
            notes.push(format!("not caught up without a restart ({e})"));
            event("restart the follower", t0);
            let _ = c.terminate(f, Duration::from_secs(10)).await;
            c.restart(f).await;
            match wait_fingerprint(&c, f, want, Duration::from_secs(30)).await {
                Ok(d) => notes.push(format!("caught up {:.2}s after a restart", d.as_secs_f64())),
                Err(e) => problems.push(format!("after space came back and a restart: {e}")),
            }
        }
    }
    drop(c);
    finish(name, nemesis, &dir, &problems, &notes);
}
