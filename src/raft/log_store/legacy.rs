//! Logs written by sqlraft before issue 12 moved the log into raft-log's files: one redb
//! file, `<dir>.redb`, moved into `<dir>` once, on the first start after an upgrade.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::files::Files;
use super::{Entry, LogId, Op};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Moves `<dir>.redb`, if there is one, into raft-log's files at `dir`. A crash part-way
/// leaves the redb file as it was, and the next start moves it again.
pub(super) fn migrate(dir: &Path) -> Result<(), String> {
    let legacy = dir.with_extension("redb");
    if !legacy.exists() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        let staging = dir.with_extension("migrating");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| e.to_string())?;
        }
        copy(&legacy, &staging)?;
        std::fs::rename(&staging, dir).map_err(|e| e.to_string())?;
        sync(parent)?;
    }
    std::fs::remove_file(&legacy).map_err(|e| e.to_string())?;
    sync(parent)?;
    tracing::info!(from = %legacy.display(), to = %dir.display(), "raft log moved into raft-log's files");
    Ok(())
}

fn sync(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())
}

fn copy(legacy: &Path, to: &Path) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| format!("{}: {e}", legacy.display());
    let db = Database::open(legacy).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => s(
            &"it is in use by another process (is another sqlraftd running on this data directory?)",
        ),
        e => s(&e),
    })?;
    let r = db.begin_read().map_err(|e| s(&e))?;
    let (mut files, _) = Files::open(to).map_err(|e| s(&e))?;
    let mut ops = Vec::new();
    let mut purged: Option<LogId> = None;
    let mut committed: Option<LogId> = None;
    if let Ok(meta) = r.open_table(META) {
        let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta.get(k).map_err(|e| s(&e))?.map(|v| v.value().to_vec()))
        };
        let bad = |k: &str, e: bincode::Error| s(&format!("its {k}: {e}"));
        if let Some(v) = get("vote")? {
            ops.push(Op::Vote(
                bincode::deserialize(&v).map_err(|e| bad("vote", e))?,
            ));
        }
        if let Some(v) = get("last_purged")? {
            let p: LogId = bincode::deserialize(&v).map_err(|e| bad("last purged id", e))?;
            purged = Some(p);
            ops.push(Op::Purge(p));
        }
        if let Some(v) = get("committed")? {
            committed = bincode::deserialize(&v).map_err(|e| bad("commit index", e))?;
        }
    }
    if let Ok(logs) = r.open_table(LOGS) {
        let mut entries = Vec::new();
        for item in logs.iter().map_err(|e| s(&e))? {
            let (_, v) = item.map_err(|e| s(&e))?;
            let entry: Entry =
                bincode::deserialize(v.value()).map_err(|e| s(&format!("an entry: {e}")))?;
            if Some(entry.log_id.index) > purged.map(|p| p.index) {
                entries.push((entry.log_id, v.value().to_vec()));
            }
        }
        ops.push(Op::Append(entries, None));
    }
    ops.push(Op::Committed(committed));
    for op in &ops {
        files.apply(op).map_err(|e| s(&e))?;
    }
    files.flush().map_err(|e| s(&e))
}
