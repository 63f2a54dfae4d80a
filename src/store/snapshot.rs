//! Snapshot files: the Raft snapshot metadata and a SQLite database file, never held whole
//! in memory.
//!
//! Each snapshot is a directory `<dir>/<snapshot id>/` holding `meta.bin` (bincode
//! [`SnapshotMeta`]) and `db.sqlite` (a rollback-journal SQLite file). It is built in a
//! `tmp-*` directory, its files and the directory fsynced, then renamed into place and the
//! parent fsynced, so a crash leaves either the old or the new snapshot, never a torn one.
//! The current snapshot is the complete one with the highest log index; older ones are
//! deleted once a newer one is in place. A commit never deletes the newest: openraft builds a
//! snapshot in a task of its own while its state machine may install a newer one from the
//! leader, and the log behind that newer one may already be purged. Followers receive a snapshot in chunks into an
//! `incoming-*` file, which is then moved into a snapshot directory the same way.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::Metrics;
use crate::raft::SnapshotMeta;

const META: &str = "meta.bin";
const DB: &str = "db.sqlite";
/// The single-file format of earlier versions: magic, u64 LE metadata length, metadata, image.
const LEGACY_FILE: &str = "current.snap";
const LEGACY_MAGIC: &[u8; 8] = b"SQLRSNP1";

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// The node's counters (this store counts into `snapshot`).
    metrics: Arc<Metrics>,
    /// Held by a commit from its rename to its clean-up: one commit's clean-up never sees
    /// another's directory before that one has its file open.
    commits: Arc<Mutex<()>>,
}

/// The current snapshot: its metadata and the database file.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: SnapshotMeta,
    pub db: PathBuf,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, "cannot sync", e))
}

impl SnapshotStore {
    /// [`SnapshotStore::open_with`] counting into counters of its own.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Self::open_with(dir, Arc::default())
    }

    /// Opens the store, converting a snapshot left in the earlier single-file format and
    /// removing unfinished builds and transfers.
    pub fn open_with(dir: &Path, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        fs::create_dir_all(dir).map_err(|e| io(dir, "cannot create", e))?;
        let s = Self {
            dir: dir.to_path_buf(),
            metrics,
            commits: Arc::default(),
        };
        for entry in fs::read_dir(dir).map_err(|e| io(dir, "cannot read", e))? {
            let entry = entry.map_err(|e| io(dir, "cannot read", e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("tmp-") || name.starts_with("incoming-") {
                let p = entry.path();
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
        if let Err(e) = s.convert_legacy() {
            s.metrics.snapshot.upgrade_fail.inc();
            return Err(e);
        }
        Ok(s)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fresh(&self, prefix: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// A new directory to build a snapshot in; [`SnapshotStore::commit`] puts it in place.
    pub fn build_dir(&self) -> std::io::Result<PathBuf> {
        let d = self.fresh("tmp");
        fs::create_dir_all(&d).map_err(|e| io(&d, "cannot create", e))?;
        Ok(d)
    }

    /// Where a snapshot sent by the leader is received.
    pub fn incoming_file(&self) -> PathBuf {
        self.fresh("incoming")
    }

    /// The database file of a snapshot being built in `build`.
    pub fn db_in(build: &Path) -> PathBuf {
        build.join(DB)
    }

    /// Writes `meta` into `build` (whose `db.sqlite` must be complete and synced), moves the
    /// directory into place, and deletes the snapshots older than it. Returns it, with its
    /// database file open (a later commit may delete it if it is not the newest).
    pub fn commit(&self, build: &Path, meta: &SnapshotMeta) -> std::io::Result<(Stored, File)> {
        let started = Instant::now();
        let c = &self.metrics.snapshot;
        match self.commit_inner(build, meta) {
            Ok((stored, file)) => {
                c.persists.inc();
                c.latest_persist_duration.set_millis(started.elapsed());
                c.latest_persist_size
                    .set(file.metadata().map(|m| m.len()).unwrap_or(0));
                Ok((stored, file))
            }
            Err(e) => {
                c.persists_failed.inc();
                Err(e)
            }
        }
    }

    fn commit_inner(&self, build: &Path, meta: &SnapshotMeta) -> std::io::Result<(Stored, File)> {
        let bytes = bincode::serialize(meta).map_err(std::io::Error::other)?;
        let meta_path = build.join(META);
        {
            let mut f = File::create(&meta_path).map_err(|e| io(&meta_path, "cannot create", e))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| io(&meta_path, "cannot write", e))?;
        }
        sync_dir(build)?;
        let name: String = meta
            .snapshot_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let _one = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        let mut dest = self.dir.join(format!("snap-{name}"));
        // The same id again (built twice in one millisecond): a name of its own, never a
        // delete before the rename (a crash between the two would leave neither).
        if dest.exists() {
            dest = self.fresh(&format!("snap-{name}"));
        }
        fs::rename(build, &dest).map_err(|e| io(&dest, "cannot move into place", e))?;
        sync_dir(&self.dir)?;
        let stored = Stored {
            meta: meta.clone(),
            db: dest.join(DB),
        };
        let file = File::open(&stored.db).map_err(|e| io(&stored.db, "cannot open", e))?;
        if let Err(e) = self.delete_older(Some(&dest)) {
            tracing::warn!(error = %e, "cannot delete an old snapshot");
        }
        Ok((stored, file))
    }

    /// Moves a received database file into a new snapshot directory with `meta`.
    pub fn commit_received(&self, file: &Path, meta: &SnapshotMeta) -> std::io::Result<Stored> {
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(file, "cannot sync", e))?;
        let build = self.build_dir()?;
        let db = Self::db_in(&build);
        fs::rename(file, &db).map_err(|e| io(&db, "cannot move", e))?;
        Ok(self.commit(&build, meta)?.0)
    }

    /// Deletes every complete snapshot but the current one (normally none is left: an old
    /// one stays only when deleting it after a commit failed). Returns how many went.
    pub fn reap(&self) -> std::io::Result<usize> {
        let _one = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        self.delete_older(None)
    }

    /// Deletes every snapshot but the newest and `keep` (normally the newest too: a build
    /// that finished after a newer snapshot was installed stays until the next commit or
    /// reap). Tries them all; returns how many went, or the first error. The caller holds
    /// `commits`.
    fn delete_older(&self, keep: Option<&Path>) -> std::io::Result<usize> {
        let mut all = self.list()?;
        all.pop();
        let (mut deleted, mut first_error) = (0, None);
        for old in &all {
            let Some(dir) = old.db.parent().filter(|d| Some(*d) != keep) else {
                continue;
            };
            match self.delete(dir) {
                Ok(()) => {
                    deleted += 1;
                    self.metrics.snapshot.reaped.inc();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.metrics.snapshot.reaped_failed.inc();
                    first_error.get_or_insert(io(dir, "cannot delete", e));
                }
            }
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        first_error.map_or(Ok(deleted), Err)
    }

    /// Deletes a snapshot directory: renamed out of the `snap-` names first, so a crash
    /// halfway through never leaves a snapshot without its database file (what is left is
    /// removed at the next open).
    fn delete(&self, dir: &Path) -> std::io::Result<()> {
        let doomed = self.fresh("tmp");
        fs::rename(dir, &doomed)?;
        fs::remove_dir_all(&doomed)
    }

    /// The current snapshot, if there is one.
    pub fn current(&self) -> std::io::Result<Option<Stored>> {
        Ok(self.list()?.pop())
    }

    /// The current snapshot with its database file open: no commit or reap deletes it
    /// between the two (openraft sends it to a follower while new ones are built).
    pub fn current_open(&self) -> std::io::Result<Option<(Stored, File)>> {
        let _one = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stored) = self.current()? else {
            return Ok(None);
        };
        let file = File::open(&stored.db).map_err(|e| io(&stored.db, "cannot open", e))?;
        Ok(Some((stored, file)))
    }

    /// Every complete snapshot on disk, oldest first (one, except for a moment after a new
    /// one is committed and before the old one is removed).
    pub fn list(&self) -> std::io::Result<Vec<Stored>> {
        let mut all = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(&self.dir, "cannot read", e))? {
            let entry = entry.map_err(|e| io(&self.dir, "cannot read", e))?;
            if !entry.file_name().to_string_lossy().starts_with("snap-") {
                continue;
            }
            let dir = entry.path();
            let meta_path = dir.join(META);
            let bytes = match fs::read(&meta_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&meta_path, "cannot read", e)),
            };
            let meta: SnapshotMeta = bincode::deserialize(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: bad snapshot metadata: {e}", meta_path.display()),
                )
            })?;
            all.push(Stored {
                meta,
                db: dir.join(DB),
            });
        }
        // Two with the same index hold the same state; the order between them is fixed only
        // so that every call picks the same one.
        all.sort_by(|a, b| {
            let key = |s: &Stored| s.meta.last_log_id.map(|l| l.index);
            key(a)
                .cmp(&key(b))
                .then_with(|| a.meta.snapshot_id.cmp(&b.meta.snapshot_id))
        });
        Ok(all)
    }

    /// Turns a `current.snap` of the earlier format into a snapshot directory.
    fn convert_legacy(&self) -> std::io::Result<()> {
        let path = self.dir.join(LEGACY_FILE);
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path, "cannot read", e)),
        };
        let bad = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {what}", path.display()),
            )
        };
        if buf.len() < 16 || &buf[..8] != LEGACY_MAGIC {
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
        let build = self.build_dir()?;
        let db = Self::db_in(&build);
        let mut image = buf[meta_end..].to_vec();
        // A standalone file in rollback-journal form (the image may carry WAL header bytes).
        if image.len() >= 20 {
            for b in &mut image[18..20] {
                if *b == 2 {
                    *b = 1;
                }
            }
        }
        {
            let mut f = File::create(&db).map_err(|e| io(&db, "cannot create", e))?;
            f.write_all(&image)
                .and_then(|()| f.sync_all())
                .map_err(|e| io(&db, "cannot write", e))?;
        }
        self.commit(&build, &meta)?;
        fs::remove_file(&path).map_err(|e| io(&path, "cannot delete", e))?;
        sync_dir(&self.dir)?;
        self.metrics.snapshot.upgrade_ok.inc();
        Ok(())
    }

    /// Size in bytes of the snapshot directory's files.
    pub fn disk_size(&self) -> u64 {
        tree_size(&self.dir)
    }
}

/// Size in bytes of the files under `p` (links not followed; unreadable entries count 0).
pub fn tree_size(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            snapshot_id: id.into(),
            last_log_id: Some(openraft::testing::log_id::<crate::raft::TypeConfig>(
                1, 1, index,
            )),
            ..Default::default()
        }
    }

    /// `meta.bin` keeps openraft 0.9's layout: its log id, its membership and its id, in
    /// that order (the parts' own bytes are checked against 0.9's in the log store's tests).
    #[test]
    fn meta_files_keep_openraft_0_9s_layout() {
        let mut m = meta("1-7-1700000000000-cdc-5", 7);
        let nodes = std::collections::BTreeMap::from([(1, crate::raft::NodeInfo::default())]);
        let membership = crate::raft::Membership::new(vec![[1].into()], nodes).unwrap();
        m.last_membership = crate::raft::StoredMembership::new(m.last_log_id, membership);
        let mut want = bincode::serialize(&m.last_log_id).unwrap();
        want.extend(bincode::serialize(&m.last_membership).unwrap());
        want.extend(bincode::serialize(&m.snapshot_id).unwrap());
        assert_eq!(bincode::serialize(&m).unwrap(), want);
        assert_eq!(bincode::deserialize::<SnapshotMeta>(&want).unwrap(), m);
    }

    #[test]
    fn the_newest_committed_snapshot_is_current_and_older_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        let counted = s.metrics.clone();
        assert!(s.current().unwrap().is_none());
        for (id, index) in [("1-5", 5), ("1-9", 9)] {
            let b = s.build_dir().unwrap();
            fs::write(SnapshotStore::db_in(&b), format!("image {id}")).unwrap();
            s.commit(&b, &meta(id, index)).unwrap();
        }
        // An unfinished build is ignored, and removed at the next open.
        let b = s.build_dir().unwrap();
        fs::write(SnapshotStore::db_in(&b), "partial").unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        let cur = s.current().unwrap().unwrap();
        assert_eq!(cur.meta.snapshot_id, "1-9");
        assert_eq!(fs::read(&cur.db).unwrap(), b"image 1-9");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["snap-1-9".to_string()]);
        // Counted by the first store: two written, the older one deleted.
        assert_eq!(counted.snapshot.persists.get(), 2);
        assert_eq!(counted.snapshot.reaped.get(), 1);
        assert_eq!(
            counted.snapshot.latest_persist_size.get(),
            "image 1-9".len() as u64
        );
    }

    #[test]
    fn a_build_that_ends_after_a_newer_install_never_deletes_it() {
        // openraft builds in a task of its own while the state machine installs a newer
        // snapshot from the leader (and the log behind that one is purged): the late build
        // must not leave the older snapshot as the only one.
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        let commit = |id: &str, index: u64| {
            let b = s.build_dir().unwrap();
            fs::write(SnapshotStore::db_in(&b), format!("image {id}")).unwrap();
            s.commit(&b, &meta(id, index)).unwrap()
        };
        let ids = || -> Vec<String> {
            let all = s.list().unwrap();
            all.into_iter().map(|x| x.meta.snapshot_id).collect()
        };
        commit("2-349", 349);
        let (late, mut file) = commit("2-238", 238);
        let mut read = String::new();
        std::io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!(read, "image 2-238", "the late build's own file, open");
        assert_eq!(late.meta.snapshot_id, "2-238");
        assert_eq!(s.current().unwrap().unwrap().meta.snapshot_id, "2-349");
        // The next newer snapshot, or a reap, removes both older ones.
        commit("2-400", 400);
        assert_eq!(ids(), ["2-400"]);
        commit("2-390", 390);
        assert_eq!(s.reap().unwrap(), 1);
        assert_eq!(ids(), ["2-400"]);
    }

    #[test]
    fn the_same_id_committed_again_never_leaves_a_torn_snapshot() {
        // Built twice in one millisecond: the second goes in under a name of its own (a
        // delete before the rename could leave neither after a crash); one stays current,
        // whole, and reopening keeps it.
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        for _ in 0..2 {
            let b = s.build_dir().unwrap();
            fs::write(SnapshotStore::db_in(&b), "image 3-7").unwrap();
            s.commit(&b, &meta("3-7", 7)).unwrap();
        }
        let s = SnapshotStore::open(dir.path()).unwrap();
        let (cur, mut file) = s.current_open().unwrap().unwrap();
        assert_eq!(cur.meta.snapshot_id, "3-7");
        let mut read = String::new();
        std::io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!(read, "image 3-7");
        assert!(s.list().unwrap().len() <= 2);
    }

    #[test]
    fn a_snapshot_of_the_earlier_format_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta("2-7-1", 7);
        let mb = bincode::serialize(&m).unwrap();
        let mut file = LEGACY_MAGIC.to_vec();
        file.extend((mb.len() as u64).to_le_bytes());
        file.extend(&mb);
        file.extend(b"the image");
        fs::write(dir.path().join(LEGACY_FILE), file).unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        assert_eq!(s.metrics.snapshot.upgrade_ok.get(), 1);
        let cur = s.current().unwrap().unwrap();
        assert_eq!(cur.meta.snapshot_id, "2-7-1");
        assert_eq!(fs::read(&cur.db).unwrap(), b"the image");
        assert!(!dir.path().join(LEGACY_FILE).exists());
    }
}
