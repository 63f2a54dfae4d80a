//! Automatic backups (`-auto-backup`) and the restore at first start (`-auto-restore`), read
//! from rqlite's JSON files, for the `file` storage type.
//!
//! Owns: parsing those files (rqlite's keys: `version`, `type`, `interval`, `no_compress`,
//! `timestamp`, `vacuum`, `timeout`, `continue_on_failure`, and `sub` with `dir` and `name`),
//! the backup loop (`backup.rs`: the leader only, at the interval, skipped when nothing
//! changed), and finding, unpacking and checking the file to restore (`restore.rs`).
//! Does not: copy or load databases (the store does), or reach cloud storage: `s3` and `gcs`
//! configurations are refused when the node starts, with a message saying so.

mod backup;
mod restore;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use backup::run_backups;
pub use restore::{prepare_restore, run_restore, PendingRestore};

/// The newest configuration version rqlite (and sqlraft) understands.
const VERSION: i64 = 1;

/// The file that names the newest backup in a backup directory, as rqlite's file storage
/// writes it: `{"id": "<log index>", "timestamp": <unix ms>, "name": "<path>"}`.
const METADATA: &str = "METADATA.json";

/// `-auto-backup`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    pub interval: Duration,
    /// gzip the copy (rqlite's default; `"no_compress": true` turns it off).
    pub compress: bool,
    /// Prefix each file's name with the UTC time (`20260102150405_name`), keeping them all.
    pub timestamp: bool,
    /// Copy with `VACUUM INTO` (a compacted file).
    pub vacuum: bool,
    pub dir: PathBuf,
    pub name: String,
}

/// `-auto-restore`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreConfig {
    pub dir: PathBuf,
    pub name: String,
    /// Start anyway (with an empty database) when the file cannot be read.
    pub continue_on_failure: bool,
}

#[derive(Deserialize)]
struct RawBackup {
    #[serde(default)]
    version: i64,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    no_compress: bool,
    #[serde(default)]
    timestamp: bool,
    #[serde(default)]
    vacuum: bool,
    interval: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawRestore {
    #[serde(default)]
    version: i64,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// rqlite's download timeout; reading a local file needs none, so it is only checked.
    timeout: Option<serde_json::Value>,
    #[serde(default)]
    continue_on_failure: bool,
    sub: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FileSub {
    dir: String,
    name: String,
}

impl BackupConfig {
    /// Parses the file's text (environment variables already expanded).
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawBackup =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        check_version(raw.version)?;
        let (dir, name) = file_storage(raw.kind.as_deref(), raw.sub)?;
        let interval = match raw.interval {
            None => return Err("\"interval\" is required".into()),
            Some(v) => duration(&v).ok_or("invalid interval: a positive Go duration (\"1h\")")?,
        };
        Ok(Self {
            interval,
            compress: !raw.no_compress,
            timestamp: raw.timestamp,
            vacuum: raw.vacuum,
            dir,
            name,
        })
    }
}

impl RestoreConfig {
    /// Parses the file's text (environment variables already expanded).
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawRestore =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        check_version(raw.version)?;
        let (dir, name) = file_storage(raw.kind.as_deref(), raw.sub)?;
        if let Some(v) = &raw.timeout {
            duration(v).ok_or("invalid timeout: a positive Go duration (\"30s\")")?;
        }
        Ok(Self {
            dir,
            name,
            continue_on_failure: raw.continue_on_failure,
        })
    }
}

fn check_version(v: i64) -> Result<(), String> {
    if v > VERSION {
        return Err(format!(
            "invalid version {v}: this node understands version {VERSION}"
        ));
    }
    Ok(())
}

/// The `file` storage's directory and file name; any other storage type is refused.
fn file_storage(
    kind: Option<&str>,
    sub: Option<serde_json::Value>,
) -> Result<(PathBuf, String), String> {
    match kind {
        Some("file") => {}
        Some(t @ ("s3" | "gcs")) => {
            return Err(format!(
                "storage type \"{t}\" is not supported: sqlraft keeps automatic backups in local \
                 files only (\"type\": \"file\" with \"sub\": {{\"dir\": ..., \"name\": ...}})"
            ))
        }
        Some(t) => return Err(format!("unsupported storage type \"{t}\" (use \"file\")")),
        None => return Err("\"type\" is required (\"file\")".into()),
    }
    let sub: FileSub = serde_json::from_value(sub.unwrap_or(serde_json::Value::Null))
        .map_err(|e| format!("\"sub\" must hold \"dir\" and \"name\": {e}"))?;
    let dir = PathBuf::from(&sub.dir);
    if !dir.is_absolute() {
        return Err(format!("sub.dir must be an absolute path: {}", sub.dir));
    }
    let simple = !sub.name.is_empty()
        && !sub.name.contains('/')
        && sub.name != "."
        && sub.name != ".."
        && sub.name != METADATA;
    if !simple {
        return Err(format!(
            "sub.name must be a plain file name without a directory: {:?}",
            sub.name
        ));
    }
    Ok((dir, sub.name))
}

/// A Go duration: a string (`"30s"`) or a number of nanoseconds; it must be positive.
fn duration(v: &serde_json::Value) -> Option<Duration> {
    let d = match v {
        serde_json::Value::String(s) => crate::duration::parse(s)?,
        serde_json::Value::Number(n) => {
            let ns = n.as_f64()?;
            if !ns.is_finite() || ns < 1.0 {
                return None;
            }
            Duration::from_nanos(ns as u64)
        }
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// What `METADATA.json` says about the newest backup in `dir`, if it can be read.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct Metadata {
    id: String,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    name: String,
}

fn read_metadata(dir: &Path) -> Option<Metadata> {
    let text = std::fs::read_to_string(dir.join(METADATA)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rqlites_file_backup_config_is_read() {
        let c = BackupConfig::parse(
            r#"{"version": 1, "type": "file", "interval": "5m", "no_compress": true,
                "timestamp": true, "vacuum": true, "sub": {"dir": "/var/backups", "name": "db.sqlite"}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            BackupConfig {
                interval: Duration::from_secs(300),
                compress: false,
                timestamp: true,
                vacuum: true,
                dir: "/var/backups".into(),
                name: "db.sqlite".into(),
            }
        );
        // Defaults: compressed, one file, no vacuum; a number is nanoseconds, as in Go.
        let c = BackupConfig::parse(
            r#"{"version": 1, "type": "file", "interval": 1e9, "sub": {"dir": "/b", "name": "x.gz"}}"#,
        )
        .unwrap();
        assert!(c.compress && !c.timestamp && !c.vacuum);
        assert_eq!(c.interval, Duration::from_secs(1));
    }

    #[test]
    fn cloud_storage_and_bad_values_are_refused_with_a_reason() {
        let s3 = r#"{"version": 1, "type": "s3", "interval": "1h", "sub": {"bucket": "b"}}"#;
        let e = BackupConfig::parse(s3).unwrap_err();
        assert!(e.contains("\"s3\" is not supported"), "{e}");
        let gcs = r#"{"version": 1, "type": "gcs", "sub": {}}"#;
        assert!(RestoreConfig::parse(gcs)
            .unwrap_err()
            .contains("\"gcs\" is not supported"));
        for (bad, why) in [
            (
                r#"{"version": 2, "type": "file", "interval": "1h", "sub": {"dir": "/b", "name": "x"}}"#,
                "invalid version",
            ),
            (
                r#"{"version": 1, "type": "file", "interval": "0s", "sub": {"dir": "/b", "name": "x"}}"#,
                "invalid interval",
            ),
            (
                r#"{"version": 1, "type": "file", "interval": "1h", "sub": {"dir": "b", "name": "x"}}"#,
                "absolute",
            ),
            (
                r#"{"version": 1, "type": "file", "interval": "1h", "sub": {"dir": "/b", "name": "a/x"}}"#,
                "plain file name",
            ),
            (
                r#"{"version": 1, "type": "ftp", "interval": "1h"}"#,
                "unsupported storage type",
            ),
        ] {
            let e = BackupConfig::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn restore_config_takes_the_same_file_storage() {
        let c = RestoreConfig::parse(
            r#"{"version": 1, "type": "file", "timeout": "60s", "continue_on_failure": true,
                "sub": {"dir": "/b", "name": "db.sqlite.gz"}}"#,
        )
        .unwrap();
        assert_eq!(c.dir, PathBuf::from("/b"));
        assert_eq!(c.name, "db.sqlite.gz");
        assert!(c.continue_on_failure);
    }
}
