//! The restore at first start: a node that starts with no state reads the configured backup
//! (gunzipping it if needed) and checks it before serving; once it leads the new cluster it
//! loads the copy through the log, so every member gets it. A node that sees another leader
//! first leaves the restore to that one (rqlite does the same).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{read_metadata, RestoreConfig};
use crate::store::{Store, Upload};

/// A checked copy of the backup, waiting for this node to lead.
pub struct PendingRestore {
    file: Upload,
    source: PathBuf,
}

/// Reads the backup named by `cfg` into a file of the store's and checks it is a usable
/// SQLite database. With `continue_on_failure`, a failure is logged and the node starts
/// empty (`Ok(None)`).
pub async fn prepare_restore(
    store: &Store,
    cfg: &RestoreConfig,
) -> Result<Option<PendingRestore>, String> {
    let c = &store.metrics().auto;
    let upload = store.upload_file().map_err(|e| e.to_string())?;
    let (cfg2, dest) = (cfg.clone(), upload.0.clone());
    let read = tokio::task::spawn_blocking(move || -> Result<(PathBuf, u64), String> {
        let source = locate(&cfg2);
        let bytes = unpack(&source, &dest)?;
        crate::db::validate_file(&dest).map_err(|e| format!("{}: {e}", source.display()))?;
        Ok((source, bytes))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match read {
        Ok((source, bytes)) => {
            c.downloads_ok.inc();
            c.download_bytes.add(bytes);
            tracing::info!(file = %source.display(), bytes, "auto-restore: backup read and checked; it is loaded once this node leads");
            Ok(Some(PendingRestore {
                file: upload,
                source,
            }))
        }
        Err(e) => {
            c.downloads_fail.inc();
            if cfg.continue_on_failure {
                tracing::warn!(error = %e, "auto-restore: cannot read the backup; starting empty (continue_on_failure)");
                Ok(None)
            } else {
                Err(format!("auto-restore: {e}"))
            }
        }
    }
}

/// The file to restore: the newest backup `METADATA.json` names if it is one of this
/// configuration's (timestamped names end with the configured name), else `dir/name`.
fn locate(cfg: &RestoreConfig) -> PathBuf {
    let plain = cfg.dir.join(&cfg.name);
    read_metadata(&cfg.dir)
        .map(|m| PathBuf::from(m.name))
        .filter(|p| {
            p.parent() == Some(cfg.dir.as_path())
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n == cfg.name || n.ends_with(&format!("_{}", cfg.name)))
                && p.is_file()
        })
        .unwrap_or(plain)
}

/// Copies `source` to `dest`, gunzipping it if it is gzipped; returns the bytes read.
fn unpack(source: &Path, dest: &Path) -> Result<u64, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut f = std::fs::File::open(source).map_err(|e| io(source, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| io(source, e))?;
    let len = f.metadata().map_err(|e| io(source, e))?.len();
    let f = std::fs::File::open(source).map_err(|e| io(source, e))?;
    let mut out = std::fs::File::create(dest).map_err(|e| io(dest, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        let mut gz = flate2::read::GzDecoder::new(f);
        std::io::copy(&mut gz, &mut out)
            .map_err(|e| format!("{}: not a valid gzip file: {e}", source.display()))?;
    } else {
        let mut f = f;
        std::io::copy(&mut f, &mut out).map_err(|e| io(dest, e))?;
    }
    Ok(len)
}

/// Waits until a leader is known; if it is this node, loads the backup through the log.
pub async fn run_restore(store: Arc<Store>, pending: PendingRestore, stop: CancellationToken) {
    let c = &store.metrics().auto;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let leader = loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(l) = store.leader() {
            break l;
        }
    };
    if leader.id != store.me().id {
        c.restores_skipped.inc();
        tracing::info!(leader = %leader.id, "auto-restore: another node leads; it restores the backup");
        return;
    }
    match store.load_file(&pending.file.0).await {
        Ok(_) => {
            c.restores.inc();
            tracing::info!(file = %pending.source.display(), "auto-restore: backup loaded");
        }
        Err(e) => {
            c.restores_failed.inc();
            tracing::error!(file = %pending.source.display(), error = %e, "auto-restore: loading the backup failed");
        }
    }
}
