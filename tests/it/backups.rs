//! `-auto-backup` and `-auto-restore` with rqlite's JSON files (`file` storage): the leader
//! writes backups at the interval and skips rounds with nothing new; a fresh node restores
//! one at start.

use std::path::Path;
use std::time::Duration;

use sqlraft::auto::{BackupConfig, RestoreConfig};

use crate::harness::{wait_for, wait_until, Client, TestNode};

/// `/debug/vars` `uploader` counter `key`.
async fn uploader(c: &Client, key: &str) -> u64 {
    c.get("/debug/vars").await.json()["uploader"][key]
        .as_u64()
        .unwrap_or(0)
}

/// The rows of `t` in a SQLite file.
fn rows_in(db: &Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(db).expect("open backup");
    let mut s = c
        .prepare("SELECT id, v FROM t ORDER BY id")
        .expect("the backup holds table t");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_end(&mut out)
        .expect("a gzip file");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_backs_up_changes_and_a_fresh_node_restores_them() {
    // Steps: a node with rqlite's file backup config (gzip by default) gets rows; the backup
    // file appears, gunzips to a SQLite file with those rows, and METADATA.json names it;
    // with no change, rounds are skipped and the file stays as it is; a new row makes a new
    // backup. Then a fresh node with -auto-restore on that file starts with the rows, and
    // its own timestamped, uncompressed backups hold them too.
    let backups = tempfile::tempdir().expect("tempdir");
    let dir = backups.path().display().to_string();
    let cfg = BackupConfig::parse(&format!(
        r#"{{"version": 1, "type": "file", "interval": "200ms",
            "sub": {{"dir": "{dir}", "name": "backup.sqlite.gz"}}}}"#
    ))
    .expect("backup config");
    let a = TestNode::start_with(|c| c.auto_backup = Some(cfg.clone())).await;
    a.client
        .execute_ok(
            r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                "INSERT INTO t VALUES(1, 'one')", "INSERT INTO t VALUES(2, 'two')"]"#,
        )
        .await;
    let file = backups.path().join("backup.sqlite.gz");
    let unpacked = backups.path().join("unpacked.sqlite");
    wait_until(Duration::from_secs(20), "a backup with both rows", || {
        let (file, unpacked) = (file.clone(), unpacked.clone());
        async move {
            if !file.exists() {
                return false;
            }
            std::fs::write(&unpacked, gunzip(&file)).expect("write");
            rows_in(&unpacked).len() == 2
        }
    })
    .await;
    assert_eq!(
        rows_in(&unpacked),
        [(1, "one".to_string()), (2, "two".to_string())]
    );
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backups.path().join("METADATA.json")).expect("METADATA.json"),
    )
    .expect("JSON");
    assert_eq!(meta["name"], file.display().to_string());

    // Nothing changes: rounds are skipped, no new upload. Counted from the first skipped
    // round on: the round that wrote the file counts its upload just after the rename, and
    // a round that began before the rows were applied copies them again after.
    let skipped = uploader(&a.client, "num_uploads_skipped").await;
    wait_until(Duration::from_secs(10), "a skipped round", || {
        let c = a.client.clone();
        async move { uploader(&c, "num_uploads_skipped").await > skipped }
    })
    .await;
    let ok = uploader(&a.client, "num_uploads_ok").await;
    let skipped = uploader(&a.client, "num_uploads_skipped").await;
    let written = std::fs::metadata(&file).expect("file").modified().ok();
    wait_until(Duration::from_secs(10), "two skipped rounds", || {
        let c = a.client.clone();
        async move { uploader(&c, "num_uploads_skipped").await >= skipped + 2 }
    })
    .await;
    assert_eq!(uploader(&a.client, "num_uploads_ok").await, ok);
    assert_eq!(
        std::fs::metadata(&file).expect("file").modified().ok(),
        written
    );

    // A change makes a new backup.
    a.client
        .execute_ok(r#"["INSERT INTO t VALUES(3, 'three')"]"#)
        .await;
    wait_until(
        Duration::from_secs(20),
        "a backup with the third row",
        || {
            let (file, unpacked) = (file.clone(), unpacked.clone());
            async move {
                std::fs::write(&unpacked, gunzip(&file)).expect("write");
                rows_in(&unpacked).len() == 3
            }
        },
    )
    .await;

    // A fresh node restores the backup at start; its own backups are timestamped and plain.
    let restore = RestoreConfig::parse(&format!(
        r#"{{"version": 1, "type": "file", "sub": {{"dir": "{dir}", "name": "backup.sqlite.gz"}}}}"#
    ))
    .expect("restore config");
    let b_backups = tempfile::tempdir().expect("tempdir");
    let b_cfg = BackupConfig::parse(&format!(
        r#"{{"version": 1, "type": "file", "interval": "200ms", "timestamp": true,
            "no_compress": true, "sub": {{"dir": "{}", "name": "b.sqlite"}}}}"#,
        b_backups.path().display()
    ))
    .expect("backup config");
    let b = TestNode::start_with(|c| {
        c.auto_restore = Some(restore.clone());
        c.auto_backup = Some(b_cfg.clone());
    })
    .await;
    wait_until(Duration::from_secs(20), "the restored rows", || {
        let c = b.client.clone();
        async move {
            let r = c
                .get("/db/query?q=SELECT%20COUNT(*)%20FROM%20t")
                .await
                .json();
            r["results"][0]["values"] == serde_json::json!([[3]])
        }
    })
    .await;
    // The rows are readable once the load is applied; the restore counts itself when the
    // load's answer reaches it, a moment later.
    wait_until(Duration::from_secs(20), "the restore counted", || {
        let c = b.client.clone();
        async move { c.get("/debug/vars").await.json()["store"]["num_auto_restores"] == 1 }
    })
    .await;
    let vars = b.client.get("/debug/vars").await.json();
    assert_eq!(vars["store"]["num_auto_restores"], 1, "{}", vars["store"]);
    assert_eq!(vars["downloader"]["num_downloads_ok"], 1);
    let own = wait_for(Duration::from_secs(20), "a timestamped backup", || {
        let d = b_backups.path().to_path_buf();
        async move {
            std::fs::read_dir(&d).ok()?.find_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                // 20260102150405_b.sqlite
                (name.len() == "20260102150405_b.sqlite".len()
                    && name.ends_with("_b.sqlite")
                    && name[..14].bytes().all(|c| c.is_ascii_digit()))
                .then(|| d.join(name))
            })
        }
    })
    .await;
    assert_eq!(rows_in(&own).len(), 3, "an uncompressed SQLite file");

    // A node that already has data does not restore again after a restart.
    let (data, tmp) = b.stop().await;
    let b = TestNode::start_in(&data, |c| c.auto_restore = Some(restore.clone())).await;
    let vars = b.client.get("/debug/vars").await.json();
    assert_eq!(vars["store"]["num_auto_restores_skipped"], 1);
    assert_eq!(
        b.client
            .query_values("SELECT COUNT(*) FROM t", "weak")
            .await,
        serde_json::json!([[3]])
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_storage_and_unreadable_restores_are_refused_at_start() {
    // Steps: the flags as an operator writes them: an S3 backup config is refused by the
    // configuration with a clear message; a restore whose file is missing stops the start,
    // unless continue_on_failure.
    let work = tempfile::tempdir().expect("tempdir");
    let s3 = work.path().join("s3.json");
    std::fs::write(
        &s3,
        r#"{"version": 1, "type": "s3", "interval": "1h",
            "sub": {"access_key_id": "k", "secret_access_key": "s", "bucket": "b", "path": "p"}}"#,
    )
    .expect("write");
    let argv = [
        "sqlraftd",
        "-auto-backup",
        s3.to_str().expect("utf-8"),
        "data",
    ];
    let e = sqlraft::config::Config::load(argv.iter().map(|s| s.to_string()), |p| {
        std::fs::read_to_string(p)
    })
    .expect_err("S3 must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("auto-backup") && msg.contains("\"s3\" is not supported"),
        "{msg}"
    );

    let dir = work.path().display();
    let missing = format!(
        r#"{{"version": 1, "type": "file", "sub": {{"dir": "{dir}", "name": "nope.sqlite"}}}}"#
    );
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = crate::harness::test_config(data.path());
    cfg.auto_restore = Some(RestoreConfig::parse(&missing).expect("config"));
    match sqlraft::node::Node::start(cfg).await {
        Ok(n) => {
            n.shutdown().await;
            panic!("started without its backup");
        }
        Err(e) => assert!(e.to_string().contains("nope.sqlite"), "{e}"),
    }
    let tolerant = missing.replace("\"sub\"", "\"continue_on_failure\": true, \"sub\"");
    let n = TestNode::start_with(|c| {
        c.auto_restore = Some(RestoreConfig::parse(&tolerant).expect("config"));
    })
    .await;
    assert_eq!(n.client.get("/readyz").await.status, 200);
}
