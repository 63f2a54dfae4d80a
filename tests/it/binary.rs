//! The real `sqlraftd` binary: flags, the startup line, and durability across `kill -9`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{assert_no_acknowledged_write_lost, ids_of, Client, Proc};

/// Writers insert rows concurrently and record which inserts were acknowledged; the node is
/// SIGKILLed mid-run and restarted; every acknowledged row must be there.
async fn acknowledged_writes_survive_kill9(
    extra: &[&str],
    writers: usize,
    per_writer_before_kill: usize,
) {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(tmp.path(), extra);
    p.wait_ready().await;
    p.client
        .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER, v TEXT)"]"#)
        .await;

    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = Client::new(p.client.base.clone());
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = (w as i64) * 1_000_000 + i;
                let body = format!(
                    r#"[["INSERT INTO t(id, w, v) VALUES(?, ?, ?)", {id}, {w}, "row {id}"]]"#
                );
                let sent = reqwest::Client::new()
                    .post(format!("{}/db/execute", c.base))
                    .header("Content-Type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                let Ok(text) = r.text().await else { return };
                if text.contains("\"rows_affected\":1") {
                    acked.lock().unwrap().insert(id);
                }
            }
        }));
    }
    // Kill once enough writes were acknowledged.
    crate::harness::wait_until(
        Duration::from_secs(60),
        "enough acknowledged writes",
        || {
            let n = acked.lock().unwrap().len();
            async move { n >= writers * per_writer_before_kill }
        },
    )
    .await;
    p.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();

    let p = Proc::spawn(tmp.path(), extra);
    p.wait_ready().await;
    let values = p
        .client
        .query_values("SELECT id FROM t ORDER BY id", "strong")
        .await;
    let present = ids_of(&values);
    assert_no_acknowledged_write_lost(&acked, &present, "kill -9 and restart");
    assert!(present.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_write() {
    acknowledged_writes_survive_kill9(&[], 16, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_snapshots_and_compaction_loses_no_acknowledged_write() {
    // Snapshot every 200 entries, checked every 50ms, so several snapshots and log
    // compactions happen while writers run.
    acknowledged_writes_survive_kill9(&["-raft-snap", "200", "-raft-snap-int", "50ms"], 16, 100)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_flag_fails_loudly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sqlraftd"))
        .args(["-no-such-flag", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-flag"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_style_flags_and_config_file_are_accepted() {
    // Steps: a TOML file sets the snapshot threshold; Go-style flags set the rest; the node
    // starts, reports its bound addresses, and /status shows the merged settings.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sqlraft.toml");
    std::fs::write(&cfg, "raft-snap = 777\nfk = true\n").unwrap();
    let data = tmp.path().join("data");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let p = Proc::spawn(&data, &["-config", &cfg_s, "-raft-snap-int=2s"]);
    p.wait_ready().await;
    let st = p.client.get("/status").await.json();
    assert_eq!(st["store"]["snapshot_threshold"], 777);
    assert_eq!(st["store"]["snapshot_interval"], "2s");
    assert_eq!(st["store"]["db_conf"]["fk_constraints"], true);
    let fk = p.client.query_values("PRAGMA foreign_keys", "weak").await;
    assert_eq!(fk, serde_json::json!([[1]]));
}

/// A second node on a data directory in use does not start, says why, and the harness
/// passes on the end of its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Proc::spawn(tmp.path(), &[]);
    first.wait_ready().await;
    let dir = tmp.path().to_path_buf();
    let e = tokio::task::spawn_blocking(move || {
        Proc::try_spawn_node(&dir, "2", "127.0.0.1:0", "127.0.0.1:0", &[])
    })
    .await
    .unwrap()
    .err()
    .expect("a second node on the same data directory");
    assert!(e.contains("another sqlraftd"), "{e}");
}
