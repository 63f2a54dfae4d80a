//! The automatic backup loop: at every interval the leader writes a copy of the database to
//! the configured directory, unless nothing changed since the last one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::{read_metadata, BackupConfig, Metadata, METADATA};
use crate::store::Store;

/// Runs until `stop`. Only the leader writes backups, so a cluster writes one copy per
/// interval whichever node leads; every node runs the loop and takes over when it leads.
pub async fn run_backups(store: Arc<Store>, cfg: BackupConfig, stop: CancellationToken) {
    tracing::info!(
        dir = %cfg.dir.display(),
        name = %cfg.name,
        interval = %crate::duration::format(cfg.interval),
        "automatic backups enabled (taken by the leader)"
    );
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The log index the last backup this node wrote holds (0: none yet).
    let mut last = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !store.is_leader() {
            continue;
        }
        if let Err(e) = backup_once(&store, &cfg, &mut last).await {
            store.metrics().auto.uploads_fail.inc();
            tracing::warn!(dir = %cfg.dir.display(), error = %e, "automatic backup failed");
        }
    }
}

/// One round: skip if the database has not changed since `last`, else copy and write it.
async fn backup_once(store: &Store, cfg: &BackupConfig, last: &mut u64) -> Result<(), String> {
    let c = &store.metrics().auto;
    // Taken before the copy: a write that lands during the copy makes the next round copy
    // again, never skip a change.
    let index = store.data_index();
    if index <= *last {
        c.uploads_skipped.inc();
        return Ok(());
    }
    if *last == 0 {
        // After a restart or a change of leader, the newest backup may already hold this.
        let dir = cfg.dir.clone();
        let newest = tokio::task::spawn_blocking(move || read_metadata(&dir))
            .await
            .ok()
            .flatten();
        if newest.is_some_and(|m| m.id == index.to_string()) {
            c.uploads_skipped_id.inc();
            *last = index;
            return Ok(());
        }
    }
    let started = std::time::Instant::now();
    let image = store
        .backup(false, cfg.vacuum, None)
        .await
        .map_err(|e| e.to_string())?;
    let cfg2 = cfg.clone();
    let (path, bytes) = tokio::task::spawn_blocking(move || write_backup(&cfg2, &image, index))
        .await
        .map_err(|e| e.to_string())??;
    *last = index;
    c.uploads_ok.inc();
    c.upload_bytes.add(bytes);
    c.last_upload_bytes.set(bytes);
    tracing::info!(
        file = %path.display(),
        bytes,
        index,
        took_ms = started.elapsed().as_millis() as u64,
        "automatic backup written"
    );
    Ok(())
}

/// Writes the copy (gzipped unless `no_compress`) under its final name and points
/// `METADATA.json` at it, each through a temporary file and a rename, so a crash leaves the
/// previous backup whole. Returns the file and its size.
fn write_backup(cfg: &BackupConfig, image: &[u8], index: u64) -> Result<(PathBuf, u64), String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(&cfg.dir).map_err(|e| io(&cfg.dir, e))?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let name = if cfg.timestamp {
        format!(
            "{}_{}",
            crate::db::datetime::utc_compact(now.as_secs() as i64),
            cfg.name
        )
    } else {
        cfg.name.clone()
    };
    let path = cfg.dir.join(name);
    let tmp = cfg.dir.join(format!(".upload-{:016x}", fastrand::u64(..)));
    let written = (|| -> Result<u64, String> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        if cfg.compress {
            let mut gz = flate2::write::GzEncoder::new(&mut f, flate2::Compression::default());
            gz.write_all(image).map_err(|e| io(&tmp, e))?;
            gz.finish().map_err(|e| io(&tmp, e))?;
        } else {
            f.write_all(image).map_err(|e| io(&tmp, e))?;
        }
        f.sync_all().map_err(|e| io(&tmp, e))?;
        Ok(f.metadata().map_err(|e| io(&tmp, e))?.len())
    })();
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let meta = Metadata {
        id: index.to_string(),
        timestamp: now.as_millis() as i64,
        name: path.to_string_lossy().into_owned(),
    };
    let meta_tmp = cfg.dir.join(format!("{METADATA}.tmp"));
    let meta_text = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    std::fs::write(&meta_tmp, meta_text).map_err(|e| io(&meta_tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    std::fs::rename(&meta_tmp, cfg.dir.join(METADATA)).map_err(|e| io(&meta_tmp, e))?;
    // The renames are durable once the directory is.
    if let Ok(d) = std::fs::File::open(&cfg.dir) {
        let _ = d.sync_all();
    }
    Ok((path, bytes))
}
