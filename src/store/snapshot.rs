//! Snapshot files: the Raft snapshot metadata plus a serialized SQLite image.
//!
//! One current snapshot lives in `<dir>/current.snap`. It is written to a temporary file,
//! fsynced, renamed into place and the directory fsynced, so a crash leaves either the old or
//! the new snapshot, never a torn one.
//!
//! Layout: magic `SQLRSNP1`, u64 LE metadata length, bincode metadata, then the database image.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::raft::SnapshotMeta;

const MAGIC: &[u8; 8] = b"SQLRSNP1";
const FILE: &str = "current.snap";

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably replaces the current snapshot.
    pub fn save(&self, meta: &SnapshotMeta, image: &[u8]) -> std::io::Result<()> {
        let meta_bytes = bincode::serialize(meta).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&(meta_bytes.len() as u64).to_le_bytes())?;
            f.write_all(&meta_bytes)?;
            f.write_all(image)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(FILE))?;
        File::open(&self.dir)?.sync_all()
    }

    /// The current snapshot's metadata and image, if there is one.
    pub fn load(&self) -> std::io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let path = self.dir.join(FILE);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let bad = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {what}", path.display()),
            )
        };
        if buf.len() < 16 || &buf[..8] != MAGIC {
            return Err(bad("not a sqlraft snapshot"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&buf[8..16]);
        let meta_len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| bad("bad length"))?;
        let meta_end = 16usize
            .checked_add(meta_len)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| bad("truncated"))?;
        let meta: SnapshotMeta =
            bincode::deserialize(&buf[16..meta_end]).map_err(|_| bad("bad metadata"))?;
        let image = buf.split_off(meta_end);
        Ok(Some((meta, image)))
    }

    /// Size in bytes of the snapshot directory's files.
    pub fn disk_size(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        assert!(s.load().unwrap().is_none());
        let meta = SnapshotMeta {
            snapshot_id: "x".into(),
            ..Default::default()
        };
        s.save(&meta, b"image bytes").unwrap();
        let (m, img) = s.load().unwrap().unwrap();
        assert_eq!(m.snapshot_id, "x");
        assert_eq!(img, b"image bytes");
    }
}
