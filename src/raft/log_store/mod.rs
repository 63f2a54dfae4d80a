//! The durable Raft log: raft-log's append-only chunk files, the newest entries in memory, and
//! group commit.
//!
//! Every mutation goes to one writer thread. The thread drains whatever has queued up while the
//! previous batch was being fsynced and makes it all durable with one write and one
//! `fdatasync` ([`files`]), so concurrent proposals share one fsync. openraft is told an
//! append is durable (the `LogFlushed` callback) only after that returns.
//!
//! Memory holds the newest entries (those not yet durable always; durable ones up to
//! [`CACHE_BYTES`]), so replication to followers that keep up never touches the disk; older
//! entries are read back from the files. Entries appended but not yet flushed are readable
//! (openraft may replicate them before they are durable locally; it never counts them as
//! durable before the callback). The memory a log costs is therefore bounded, however large
//! its entries.

// openraft's trait signatures fix the error type; boxing it would only add conversions.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use tokio::sync::oneshot;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::health::Health;
use files::Files;
use writer::Writer;

#[cfg(test)]
mod conformance;
mod files;
mod legacy;
mod writer;

/// Durable entries kept in memory beyond those not yet flushed, in encoded bytes (held
/// decoded, so somewhat more). Followers that keep up are a batch or two behind at most; one
/// that lags more reads from disk. (32 MiB before issue 12, then 8 MiB: resident on every
/// node; 4 MiB measured the same speed with 7-17 MiB less RSS per node, `docs/BENCHMARKS.md`.)
pub const CACHE_BYTES: usize = 4 << 20;

/// Most bytes of entries openraft gets in one read for replication (at least one entry):
/// bounds the size of one AppendEntries request, whatever the size of the entries.
pub const REPLICATION_BATCH_BYTES: usize = 2 << 20;

/// An entry held in memory, its encoded size, and whether it is durable yet.
struct Cached {
    entry: Entry,
    bytes: usize,
    durable: bool,
}

/// What the in-memory side knows; the writer thread makes it durable.
#[derive(Default)]
struct Cache {
    /// A suffix of the log: every entry from some index to `last`.
    recent: BTreeMap<u64, Cached>,
    recent_bytes: usize,
    /// The last entry of the log (flushed or not), if the log holds any.
    last: Option<LogId>,
    /// The first index the log holds (older ones were purged).
    first: Option<u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

impl Cache {
    /// Drops the oldest durable entries while over the memory budget.
    fn evict(&mut self) {
        while self.recent_bytes > CACHE_BYTES {
            let Some(mut oldest) = self.recent.first_entry() else {
                return;
            };
            if !oldest.get_mut().durable {
                return;
            }
            self.recent_bytes -= oldest.get().bytes;
            oldest.remove();
        }
    }
}

enum Op {
    /// Entries, and openraft's callback (none for entries written before Raft starts).
    Append(Vec<(LogId, Vec<u8>)>, Option<LogFlushed<TypeConfig>>),
    /// Delete entries with index >= the given one.
    Truncate(u64),
    /// Delete entries with index <= the given log id's, and remember it.
    Purge(LogId),
    Vote(Vote<NodeId>),
    /// The commit index openraft saved: written with the next batch that has other work, never
    /// in a write (and an fsync) of its own.
    Committed(Option<LogId>),
    /// Reply once everything queued before it is durable.
    Barrier(oneshot::Sender<Result<(), String>>),
    /// Make what is queued durable, then close the files (releasing the directory's lock).
    Close,
}

/// The files, shared by the writer thread and readers of entries no longer in memory; `None`
/// once closed, and while the writer reopens them after a full disk.
type Shared = Arc<Mutex<Option<Files>>>;

/// The log store handed to openraft. Cheap to clone: all clones share one log.
#[derive(Clone)]
pub struct LogStore {
    cache: Arc<Mutex<Cache>>,
    files: Shared,
    ops: mpsc::Sender<Op>,
    writer: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn read_err(e: &dyn std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Read, e)
}

impl LogStore {
    /// Opens (or creates) the log in the directory `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, Arc::default())
    }

    /// [`LogStore::open`], reporting a full disk to `health` (the writer then retries every
    /// second instead of failing, so the node carries on once space is freed).
    pub fn open_with(path: &Path, health: Arc<Health>) -> Result<Self, StorageError> {
        let fail = |e: &dyn std::fmt::Display| {
            read_err(&format!("cannot open the Raft log {}: {e}", path.display()))
        };
        legacy::migrate(path).map_err(|e| fail(&e))?;
        let (files, found) = Files::open(path).map_err(|e| fail(&e))?;
        let cache = Cache {
            first: found.first,
            last: found.last,
            last_purged: found.last_purged,
            vote: found.vote,
            committed: found.committed,
            ..Cache::default()
        };
        let files: Shared = Arc::new(Mutex::new(Some(files)));
        let (tx, rx) = mpsc::channel();
        let cache = Arc::new(Mutex::new(cache));
        let writer = {
            let w = Writer {
                files: files.clone(),
                path: path.to_path_buf(),
                cache: cache.clone(),
                health,
            };
            thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || w.run(rx))
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?
        };
        Ok(Self {
            cache,
            files,
            ops: tx,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    fn send(&self, op: Op, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.ops
            .send(op)
            .map_err(|_| io_err(subject, ErrorVerb::Write, "log writer stopped"))
    }

    /// Waits until every mutation queued so far is durable.
    async fn barrier(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Barrier(tx), subject.clone())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, ErrorVerb::Write, e)),
            Err(_) => Err(io_err(subject, ErrorVerb::Write, "log writer stopped")),
        }
    }

    /// Entries `[start, end)` (clamped to what the log holds), at most `max_bytes` of them
    /// (but at least one): memory first, the files for older ones.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        let (from_disk, cached) = {
            let c = self.cache();
            let Some(last) = c.last else {
                return Ok(Vec::new());
            };
            let first = c
                .first
                .unwrap_or(0)
                .max(c.last_purged.map(|l| l.index + 1).unwrap_or(0));
            let start = start.max(first);
            let end = end.min(last.index + 1);
            if start >= end {
                return Ok(Vec::new());
            }
            let cache_from = c
                .recent
                .keys()
                .next()
                .copied()
                .unwrap_or(end)
                .clamp(start, end);
            let cached: Vec<(Entry, usize)> = c
                .recent
                .range(cache_from..end)
                .map(|(_, e)| (e.entry.clone(), e.bytes))
                .collect();
            (start..cache_from, cached)
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if !from_disk.is_empty() {
            let guard = lock(&self.files);
            let files = guard
                .as_ref()
                .ok_or_else(|| read_err(&"the Raft log is closed or being reopened"))?;
            bytes = files
                .read(from_disk.start, from_disk.end, max_bytes, &mut out)
                .map_err(|e| read_err(&e))?;
            if out.len() < (from_disk.end - from_disk.start) as usize {
                return Ok(out);
            }
        }
        for (entry, size) in cached {
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(entry);
        }
        Ok(out)
    }

    /// The log id of the entry at `index`, wherever it is held.
    fn log_id_at(&self, index: u64) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read(index, index + 1, usize::MAX)?
            .first()
            .map(|e| e.log_id))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data is still consistent: the
    // cache's critical sections are a few map and field operations, and the files' state
    // advances only after a flush succeeded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read(start, end, REPLICATION_BATCH_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let c = self.cache();
        Ok(LogState {
            last_purged_log_id: c.last_purged,
            last_log_id: c.last.or(c.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.cache().vote = Some(*vote);
        self.send(Op::Vote(*vote), ErrorSubject::Vote)?;
        // A vote must be durable before it is acted upon.
        self.barrier(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.cache().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not written on its own: it rides with the next batch that has other work (it cost a
        // second fsync per write: issue 12). Losing it only means re-learning the commit index
        // from the leader (or re-electing) after a crash.
        self.cache().committed = committed;
        self.send(Op::Committed(committed), ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.cache().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.queue_append(entries, Some(callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let before = match log_id.index.checked_sub(1) {
            Some(i) => self.log_id_at(i)?,
            None => None,
        };
        {
            let mut c = self.cache();
            let dropped = c.recent.split_off(&log_id.index);
            c.recent_bytes -= dropped.values().map(|e| e.bytes).sum::<usize>();
            c.last = before
                .or(c.last_purged)
                .filter(|l| Some(l.index) >= c.first);
            if c.last.is_none() {
                c.first = None;
            }
        }
        self.send(Op::Truncate(log_id.index), ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut c = self.cache();
            let keep = c.recent.split_off(&(log_id.index + 1));
            let dropped = std::mem::replace(&mut c.recent, keep);
            c.recent_bytes -= dropped.values().map(|e| e.bytes).sum::<usize>();
            c.last_purged = Some(log_id);
            c.first = Some(log_id.index + 1);
            if c.last.is_some_and(|l| l.index <= log_id.index) {
                c.last = None;
            }
        }
        self.send(Op::Purge(log_id), ErrorSubject::Logs)
    }
}

impl LogStore {
    /// Caches entries and queues them for the writer, which calls `callback` once they are
    /// durable.
    fn queue_append<I>(
        &self,
        entries: I,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut encoded = Vec::new();
        {
            let mut c = self.cache();
            for entry in entries {
                let bytes = bincode::serialize(&entry)
                    .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
                let id = entry.log_id;
                let cached = Cached {
                    entry,
                    bytes: bytes.len(),
                    durable: false,
                };
                c.recent_bytes += cached.bytes;
                if let Some(old) = c.recent.insert(id.index, cached) {
                    c.recent_bytes -= old.bytes;
                }
                c.first.get_or_insert(id.index);
                c.last = Some(id);
                encoded.push((id, bytes));
            }
        }
        self.send(Op::Append(encoded, callback), ErrorSubject::Logs)
    }

    /// Appends entries and returns once they are durable: for the node's own use before
    /// Raft starts (cluster recovery), never while openraft owns the log.
    pub async fn append_now(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.queue_append(entries, None)?;
        self.barrier(ErrorSubject::Logs).await
    }

    /// Flushes what is queued and closes the files; later writes fail.
    pub fn close(&self) {
        let _ = self.ops.send(Op::Close);
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// The id of the last entry appended (flushed or not), or of the last purged one.
    pub fn last_log_id(&self) -> Option<LogId> {
        let c = self.cache();
        c.last.or(c.last_purged)
    }

    /// The newest committed log id openraft saved (for `/metrics`).
    pub fn committed(&self) -> Option<LogId> {
        self.cache().committed
    }

    /// Number of entries currently held (for `/status`).
    pub fn len(&self) -> usize {
        let c = self.cache();
        match (c.first, c.last) {
            (Some(f), Some(l)) if l.index >= f => (l.index - f + 1) as usize,
            _ => 0,
        }
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the log's chunk files hold.
    pub fn disk_bytes(&self) -> u64 {
        lock(&self.files).as_ref().map_or(0, |f| f.disk_bytes())
    }

    /// Bytes of entries held in memory.
    pub fn cached_bytes(&self) -> usize {
        self.cache().recent_bytes
    }
}
