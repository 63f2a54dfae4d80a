//! Commands too large for one log entry travel as parts.
//!
//! Owns: splitting a large command (a database image, a request with big values) into
//! [`Part`] entries of at most [`PART_BYTES`] on the leader, and assembling them, in order, in
//! a file on every node as they are applied; the command is applied when its last part is.
//! Does not: propose anything (the store does) or decide what a command means.
//!
//! Why: openraft gives every AppendEntries a heartbeat interval to complete, so one entry
//! of tens of MB could never be replicated, and held whole in memory several times over.
//! Parts keep every entry and every AppendEntries small and the memory bounded, whatever the
//! size of the command.
//!
//! The rules every node applies identically: part 0 starts an assembly (dropping any other);
//! a part that does not continue the current assembly is ignored; an entry of a later term
//! drops an unfinished assembly (a new leader never continues an old one's); `PartAbort`
//! drops it. A snapshot is never taken while an assembly is pending (it would not contain
//! it), so a node restored from a snapshot replays every part of any later command.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::command::{Command, Part, PartKind};

/// The most bytes one part carries.
pub const PART_BYTES: usize = 1 << 20;

/// A finished assembly, ready to apply.
pub enum Assembled {
    /// A SQLite file to restore, at this path (deleted by [`Assembly::done`]).
    Image(PathBuf),
    Command(Command),
}

struct Pending {
    id: u64,
    term: u64,
    next_seq: u32,
    kind: PartKind,
    path: PathBuf,
    file: File,
}

/// The assembly of this node's state machine (used on the database thread).
pub struct Assembly {
    dir: PathBuf,
    pending: Option<Pending>,
    /// Shared with the snapshot builder: true while an assembly is unfinished.
    busy: Arc<AtomicBool>,
}

impl Assembly {
    /// Starts with no assembly; files left by an earlier run are deleted (the log is replayed
    /// from the last snapshot, which was taken with no assembly pending).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let named = |what: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{what} {}: {e}", dir.display()))
        };
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| named("cannot clear", e))?;
        }
        fs::create_dir_all(dir).map_err(|e| named("cannot create", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            pending: None,
            busy: Arc::default(),
        })
    }

    /// True while an assembly is unfinished (readable from any thread).
    pub fn busy(&self) -> Arc<AtomicBool> {
        self.busy.clone()
    }

    fn drop_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            drop(p.file);
            let _ = fs::remove_file(&p.path);
        }
        self.busy.store(false, Ordering::Release);
    }

    /// Called for every applied entry before it is applied: a new term ends an assembly that
    /// the old leader did not finish.
    pub fn observe_term(&mut self, term: u64) {
        if self.pending.as_ref().is_some_and(|p| p.term != term) {
            tracing::info!("dropping an unfinished large command: leadership changed");
            self.drop_pending();
        }
    }

    /// `PartAbort`: the proposer gave up.
    pub fn abort(&mut self, id: u64) {
        if self.pending.as_ref().is_some_and(|p| p.id == id) {
            self.drop_pending();
        }
    }

    /// Adds a part; returns the whole command once its last part arrived. A part out of
    /// sequence is ignored (an error says so).
    pub fn add(&mut self, part: Part, term: u64) -> Result<Option<Assembled>, String> {
        if part.seq == 0 {
            self.drop_pending();
            let path = self.dir.join(format!("{:016x}.part", part.id));
            let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.pending = Some(Pending {
                id: part.id,
                term,
                next_seq: 0,
                kind: part.kind,
                path,
                file,
            });
            self.busy.store(true, Ordering::Release);
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.id == part.id) else {
            return Err("part of a large command that is no longer being assembled".into());
        };
        if p.next_seq != part.seq {
            return Err(format!(
                "part {} of a large command arrived out of order (expected {})",
                part.seq, p.next_seq
            ));
        }
        let written = p.file.write_all(&part.bytes);
        if let Err(e) = written {
            let msg = format!("{}: {e}", p.path.display());
            self.drop_pending();
            return Err(msg);
        }
        p.next_seq += 1;
        if !part.last {
            return Ok(None);
        }
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        self.busy.store(false, Ordering::Release);
        let Pending {
            kind, path, file, ..
        } = p;
        drop(file);
        match kind {
            PartKind::Image => Ok(Some(Assembled::Image(path))),
            PartKind::Command => {
                let decoded = (|| -> Result<Command, String> {
                    let mut bytes = Vec::new();
                    File::open(&path)
                        .and_then(|mut f| f.read_to_end(&mut bytes))
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    bincode::deserialize(&bytes).map_err(|e| e.to_string())
                })();
                let _ = fs::remove_file(&path);
                decoded.map(|c| Some(Assembled::Command(c)))
            }
        }
    }

    /// Deletes an assembled image once it was restored.
    pub fn done(path: &Path) {
        let _ = fs::remove_file(path);
    }
}

/// The parts of `cmd`, or `None` if it fits in one entry. A database image is split as raw
/// bytes (restored straight from the assembled file); anything else as its encoding.
pub fn split(cmd: &Command, id: u64) -> Option<Vec<Command>> {
    if let Command::Load(image) = cmd {
        if image.len() <= PART_BYTES {
            return None;
        }
        return Some(parts_of(image, id, PartKind::Image));
    }
    let size = bincode::serialized_size(cmd).ok()?;
    if size <= PART_BYTES as u64 {
        return None;
    }
    let bytes = bincode::serialize(cmd).ok()?;
    Some(parts_of(&bytes, id, PartKind::Command))
}

/// `bytes` cut into parts of [`PART_BYTES`].
pub fn parts_of(bytes: &[u8], id: u64, kind: PartKind) -> Vec<Command> {
    let n = bytes.len().div_ceil(PART_BYTES).max(1);
    bytes
        .chunks(PART_BYTES)
        .enumerate()
        .map(|(i, chunk)| {
            Command::Part(Part {
                id,
                seq: i as u32,
                last: i + 1 == n,
                kind,
                bytes: chunk.to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Request, Statement};

    fn assemble(a: &mut Assembly, parts: Vec<Command>, term: u64) -> Option<Assembled> {
        let mut out = None;
        for p in parts {
            if let Command::Part(p) = p {
                out = a.add(p, term).expect("in order");
            }
        }
        out
    }

    #[test]
    fn a_large_command_survives_the_round_trip_and_small_ones_are_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Assembly::new(&dir.path().join("parts")).unwrap();
        let big = Command::Execute(Request {
            statements: vec![Statement::new("x".repeat(3 * PART_BYTES))],
            ..Request::default()
        });
        let parts = split(&big, 7).expect("split");
        assert_eq!(parts.len(), 4);
        match assemble(&mut a, parts, 1) {
            Some(Assembled::Command(c)) => assert_eq!(c, big),
            _ => panic!("not assembled"),
        }
        assert!(!a.busy().load(Ordering::Acquire));
        assert!(split(&Command::Noop, 1).is_none());
        let image = vec![3u8; PART_BYTES + 5];
        match assemble(&mut a, split(&Command::Load(image.clone()), 8).unwrap(), 1) {
            Some(Assembled::Image(p)) => assert_eq!(fs::read(&p).unwrap(), image),
            _ => panic!("not assembled"),
        }
    }

    #[test]
    fn a_new_term_or_an_abort_drops_an_unfinished_assembly() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Assembly::new(&dir.path().join("parts")).unwrap();
        let mut parts = parts_of(&vec![1u8; 3 * PART_BYTES], 9, PartKind::Image);
        let last = parts.pop();
        assert!(assemble(&mut a, parts, 1).is_none());
        assert!(a.busy().load(Ordering::Acquire));
        a.observe_term(2);
        assert!(!a.busy().load(Ordering::Acquire));
        if let Some(Command::Part(p)) = last {
            assert!(a.add(p, 2).is_err());
        }
        let parts = parts_of(&vec![1u8; 2 * PART_BYTES], 10, PartKind::Image);
        if let Some(Command::Part(p)) = parts.into_iter().next() {
            assert!(a.add(p, 2).unwrap().is_none());
        }
        a.abort(10);
        assert!(!a.busy().load(Ordering::Acquire));
    }
}
