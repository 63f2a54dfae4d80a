//! The durable Raft log: redb on disk, the newest entries in memory, and group commit.
//!
//! Every mutation goes to one writer thread. The thread drains whatever has queued up while the
//! previous transaction was being fsynced and commits it all in one durable redb transaction, so
//! concurrent proposals share one fsync. openraft is told an append is durable (the `IOFlushed`
//! callback) only after that commit returns.
//!
//! Memory holds the newest entries (those not yet durable always; durable ones up to
//! [`CACHE_BYTES`]), so replication to followers that keep up never touches the disk; older
//! entries are read back from redb. Entries appended but not yet flushed are readable as soon as
//! `append` returns: openraft 0.10 replicates (and applies, once a quorum has them) entries it
//! has only submitted, before they are durable locally; it never counts them as durable before
//! the callback. The memory a log costs is therefore bounded, however large its entries.
//!
//! On-disk format: bincode (1.x, default options) of openraft's serde types. `LogId`, `Vote`,
//! `Entry`, `EntryPayload`, `Membership` and `StoredMembership` have the same fields, order and
//! variants in openraft 0.9.25 and 0.10.0-alpha.17 (with the default advanced leader id, whose
//! committed form is `{term, node_id}` as 0.9's), so logs written by 0.9 load unchanged (test
//! `logs_written_by_openraft_0_9_load`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread;

use openraft::alias::ErrorSourceOf;
use openraft::error::ErrorSource;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use redb::{Database, Durability, TableDefinition};
use tokio::sync::oneshot;

use super::commit_clock::CommitClock;
use super::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::health::Health;
use writer::Writer;

#[cfg(test)]
mod conformance;
mod writer;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
/// Where the commit index was kept before issue 12's fifth session (read at open, never
/// written now).
const KEY_COMMITTED: &str = "committed";
/// The commit index's key in the log table: past every entry, so it sits in the leaf the
/// newest entries are appended to, which every batch rewrites anyway. In the meta table it
/// added that table's pages to every commit (fix 15, `docs/design/performance.md`).
const COMMITTED: u64 = u64::MAX;
const KEY_PURGED: &str = "last_purged";

/// redb's own page cache (its default is 1 GiB, which a large load fills: every node then
/// held a GiB it never needed again). Recent entries are cached above it, decoded, so redb is
/// read only for a follower that fell behind; 4 MiB holds its B-tree's upper levels (at
/// 16 MiB it was full after a 3-second benchmark and stayed so: issue 12).
const REDB_CACHE_BYTES: usize = 4 << 20;

/// Durable entries kept in memory beyond those not yet flushed, in encoded bytes (held
/// decoded, so somewhat more). Followers that keep up are a batch or two behind at most; one
/// that lags more reads from redb. (32 MiB before issue 12, then 8 MiB: resident on every
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
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Counts truncations, so that a read can tell one happened while it read redb.
    truncations: u64,
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
    /// Entries, and openraft's callback.
    Append(Vec<(LogId, Vec<u8>)>, IOFlushed<TypeConfig>),
    /// Delete entries with index >= the given one.
    Truncate(u64),
    /// Delete entries with index <= the given log id's, and remember it.
    Purge(LogId, Vec<u8>),
    Meta(&'static str, Vec<u8>),
    /// The commit index openraft saved: written with the next batch that has other work, never
    /// in a transaction (and an fsync) of its own; kept under [`COMMITTED`] in the log table.
    Committed(Vec<u8>),
    /// Reply once everything queued before it is durable.
    Barrier(oneshot::Sender<Result<(), String>>),
    /// Commit what is queued, then close the database (releasing its file lock).
    Close,
}

/// The redb database, which the writer reopens after a failed write (redb refuses every
/// operation after an I/O error until it is reopened); `None` only while it does.
type Shared = Arc<RwLock<Option<Database>>>;

/// The log store handed to openraft. Cheap to clone: all clones share one log.
#[derive(Clone)]
pub struct LogStore {
    cache: Arc<Mutex<Cache>>,
    db: Shared,
    ops: mpsc::Sender<Op>,
    writer: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
    /// Set once the node stops: a batch refused for lack of space is then failed instead of
    /// retried, so that shutting down never waits for space.
    stopping: Arc<AtomicBool>,
    /// Set while the writer waits for space (redb then refuses reads too, or is being
    /// reopened): openraft's reads wait instead of failing (see
    /// [`LogStore::read_through_full_disk`]).
    space_wait: Arc<AtomicBool>,
    /// When each commit index was learned, until the state machine applies it.
    commit_clock: Arc<CommitClock>,
}

/// An error of the API sqlraft calls itself ([`LogStore::open`]).
fn sto_err(subject: ErrorSubject<TypeConfig>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::new(subject, verb, ErrorSourceOf::<TypeConfig>::from_string(e))
}

/// An error of openraft's storage traits, which take `io::Error` (openraft adds the subject).
fn io_err(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(v).map_err(|e| e.to_string())
}

/// The vote as openraft is to see it after a restart: the same term and candidate, but never
/// an established leader. openraft 0.10 (alpha.17) resumes leadership at once, in the old
/// term, when it finds its own committed vote; but a leader replicates entries before its own
/// copy is durable, so after a kill -9 it may lack entries its followers hold, and it would
/// give the same (term, index) to new entries. A follower that already holds an entry with
/// that id keeps it (Raft matches logs by id), and the replicas diverge, acknowledged writes
/// included. Without the committed flag the node restarts as a follower and leads again only
/// through an election, in a new term (standard Raft; upstream later made this the
/// `enable_leader_restore = false` option). The stored vote keeps its flag: writing the
/// weaker vote would move the durable vote backwards, and the next saved vote replaces it.
fn without_leadership(mut vote: Vote) -> Vote {
    vote.committed = false;
    vote
}

fn read_err(e: &dyn std::fmt::Display) -> StorageError {
    sto_err(ErrorSubject::Store, ErrorVerb::Read, e)
}

impl LogStore {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, Arc::default())
    }

    /// [`LogStore::open`], reporting a full disk to `health` (the writer then retries every
    /// second instead of failing, so the node carries on once space is freed).
    pub fn open_with(path: &Path, health: Arc<Health>) -> Result<Self, StorageError> {
        let db = open_db(path).map_err(|e| {
            let why = match e {
                // redb's lock on the file: the usual cause is a second node on the same
                // directory, which would otherwise read as a cryptic lock error.
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "it is in use by another process (is another sqlraftd running on this data directory?)".to_string()
                }
                e => e.to_string(),
            };
            read_err(&format!("cannot open the Raft log {}: {why}", path.display()))
        })?;
        let mut cache = Cache::default();
        {
            // Create the tables so that later read transactions find them.
            let mut w = db.begin_write().map_err(|e| read_err(&e))?;
            w.set_durability(Durability::Immediate);
            w.open_table(LOGS).map_err(|e| read_err(&e))?;
            w.open_table(META).map_err(|e| read_err(&e))?;
            w.commit().map_err(|e| read_err(&e))?;

            let r = db.begin_read().map_err(|e| read_err(&e))?;
            let meta = r.open_table(META).map_err(|e| read_err(&e))?;
            let get = |k: &str| -> Result<Option<Vec<u8>>, StorageError> {
                Ok(meta
                    .get(k)
                    .map_err(|e| read_err(&e))?
                    .map(|v| v.value().to_vec()))
            };
            let decode_err = |e: bincode::Error| read_err(&e);
            if let Some(v) = get(KEY_VOTE)? {
                let vote: Vote = bincode::deserialize(&v).map_err(decode_err)?;
                cache.vote = Some(without_leadership(vote));
            }
            if let Some(v) = get(KEY_PURGED)? {
                cache.last_purged = Some(bincode::deserialize(&v).map_err(decode_err)?);
            }
            let logs = r.open_table(LOGS).map_err(|e| read_err(&e))?;
            let committed = match logs.get(COMMITTED).map_err(|e| read_err(&e))? {
                Some(v) => Some(v.value().to_vec()),
                None => get(KEY_COMMITTED)?,
            };
            if let Some(v) = committed {
                cache.committed = bincode::deserialize(&v).map_err(decode_err)?;
            }
            let entries = || logs.range(..COMMITTED).map_err(|e| read_err(&e));
            cache.first = entries()?
                .next()
                .transpose()
                .map_err(|e| read_err(&e))?
                .map(|(k, _)| k.value());
            let last = entries()?
                .next_back()
                .transpose()
                .map_err(|e| read_err(&e))?;
            if let Some((_, v)) = last {
                let entry: Entry = bincode::deserialize(v.value()).map_err(decode_err)?;
                cache.last = Some(entry.log_id);
            }
        }
        let commit_clock = Arc::new(CommitClock::default());
        if let Some(c) = cache.committed {
            // Applied again from the last snapshot, from now.
            commit_clock.learned(c.index);
        }
        let db: Shared = Arc::new(RwLock::new(Some(db)));
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let space_wait = Arc::new(AtomicBool::new(false));
        let cache = Arc::new(Mutex::new(cache));
        let writer = {
            let w = Writer {
                db: db.clone(),
                path: path.to_path_buf(),
                cache: cache.clone(),
                health,
                stopping: stopping.clone(),
                space_wait: space_wait.clone(),
            };
            thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || w.run(rx))
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?
        };
        Ok(Self {
            cache,
            db,
            ops: tx,
            writer: Arc::new(Mutex::new(Some(writer))),
            stopping,
            space_wait,
            commit_clock,
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    fn send(&self, op: Op) -> io::Result<()> {
        self.ops.send(op).map_err(|_| io_err("log writer stopped"))
    }

    /// Waits until every mutation queued so far is durable.
    async fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Barrier(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(e)),
            Err(_) => Err(io_err("log writer stopped")),
        }
    }

    /// Entries `[start, end)` (clamped to what the log holds), at most `max_bytes` of them
    /// (but at least one): memory first, redb for older ones.
    ///
    /// Sees every entry appended, flushed or not: the entries, `last` and the memory/disk split
    /// are taken under one lock, and entries leave memory only once durable (see
    /// [`Cache::evict`]), so every entry up to `last` is either in the copy taken here or
    /// already in redb. A truncation while redb is read could mix old and new entries: the
    /// read is then done again.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
        loop {
            let (truncations, from_disk, cached) = {
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
                (c.truncations, start..cache_from, cached)
            };
            let mut out = Vec::new();
            let mut bytes = 0usize;
            if !from_disk.is_empty() {
                let full = self.read_disk(from_disk, max_bytes, &mut out, &mut bytes)?;
                if self.cache().truncations != truncations {
                    continue;
                }
                if full {
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
            return Ok(out);
        }
    }

    /// Appends the entries of `range` held in redb to `out` while within `max_bytes` (counted
    /// in `bytes`); true if it stopped for the limit.
    fn read_disk(
        &self,
        range: std::ops::Range<u64>,
        max_bytes: usize,
        out: &mut Vec<Entry>,
        bytes: &mut usize,
    ) -> io::Result<bool> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard
            .as_ref()
            .ok_or_else(|| io_err("the Raft log is being reopened"))?;
        let r = db.begin_read().map_err(io_err)?;
        let logs = r.open_table(LOGS).map_err(io_err)?;
        for item in logs.range(range).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            if !out.is_empty() && *bytes + v.value().len() > max_bytes {
                return Ok(true);
            }
            *bytes += v.value().len();
            out.push(bincode::deserialize(v.value()).map_err(io_err)?);
        }
        Ok(false)
    }

    /// The log id of the entry at `index`, wherever it is held.
    fn log_id_at(&self, index: u64) -> io::Result<Option<LogId>> {
        Ok(self
            .read(index, index + 1, usize::MAX)?
            .first()
            .map(|e| e.log_id))
    }

    /// [`LogStore::read`] for openraft, which stops Raft for good on a read error. After a
    /// write refused for lack of space, redb refuses reads too until the writer reopens it
    /// (and has no database while it does), so entries no longer in memory (a follower
    /// catching up, an apply) could not be read. Such a read waits while the writer waits
    /// for space, checking every 100 ms; a read error just before the writer says so is
    /// tried again once, 100 ms later. Any other error, or one once the node stops, is
    /// returned.
    async fn read_through_full_disk(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<Entry>> {
        // One more try for an error the writer has not announced (yet).
        let mut retry_unannounced = true;
        loop {
            let err = match self.read(start, end, max_bytes) {
                Ok(entries) => return Ok(entries),
                Err(e) => e,
            };
            let waiting = self.space_wait.load(Ordering::SeqCst);
            if self.stopping.load(Ordering::SeqCst) || !(waiting || retry_unannounced) {
                return Err(err);
            }
            retry_unannounced = waiting;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
}

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    // A poisoned lock means a panic while holding it; the data is still consistent because
    // every critical section is a few map and field operations.
    cache.lock().unwrap_or_else(|p| p.into_inner())
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
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.read_through_full_disk(start, end, usize::MAX).await
    }

    /// The vote as last saved, durable or about to be: openraft 0.10's readers check it
    /// around reads to detect a leader change, for which the newest vote is the safe answer.
    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.cache().vote)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_through_full_disk(start, end, REPLICATION_BATCH_BYTES)
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    /// `last_log_id` is the last entry appended, flushed or not (what readers return), else
    /// the last purged one: openraft 0.10's "last present entry".
    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let c = self.cache();
        Ok(LogState {
            last_purged_log_id: c.last_purged,
            last_log_id: c.last.or(c.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = encode(vote).map_err(io_err)?;
        self.cache().vote = Some(*vote);
        self.send(Op::Meta(KEY_VOTE, bytes))?;
        // A vote must be durable before it is acted upon.
        self.barrier().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not written on its own: it rides with the next batch that has other work (it cost a
        // second fsync per write: issue 12). Losing it only means re-learning the commit index
        // from the leader (or re-electing) after a crash.
        let bytes = encode(&committed).map_err(io_err)?;
        self.cache().committed = committed;
        if let Some(c) = committed {
            self.commit_clock.learned(c.index);
        }
        self.send(Op::Committed(bytes))
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.cache().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.queue_append(entries, callback)
    }

    /// Removes the entries after `last_log_id` (all of them for `None`); `last_log_id` itself
    /// is kept.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        // The first index removed.
        let from = last_log_id.map_or(0, |l| l.index.saturating_add(1));
        let kept = match last_log_id {
            Some(l) => self.log_id_at(l.index)?,
            None => None,
        };
        {
            let mut c = self.cache();
            // Past the end (openraft may ask): nothing to remove, and `last` stays.
            if c.last.is_some_and(|l| l.index >= from) {
                c.truncations += 1;
                let dropped = c.recent.split_off(&from);
                c.recent_bytes -= dropped.values().map(|e| e.bytes).sum::<usize>();
                c.last = kept.or(c.last_purged).filter(|l| Some(l.index) >= c.first);
                if c.last.is_none() {
                    c.first = None;
                }
            }
        }
        self.send(Op::Truncate(from))
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let bytes = encode(&log_id).map_err(io_err)?;
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
        self.send(Op::Purge(log_id, bytes))
    }
}

impl LogStore {
    /// Caches entries and queues them for the writer, which calls `callback` once they are
    /// durable. The entries are readable when this returns: they are in the cache, and `last`
    /// covers them, before the lock is released.
    fn queue_append<I>(&self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut encoded = Vec::new();
        {
            let mut c = self.cache();
            for entry in entries {
                let bytes = encode(&entry).map_err(io_err)?;
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
        self.send(Op::Append(encoded, callback))
    }

    /// From now on a batch refused for lack of space fails instead of waiting for space
    /// (its entries are not acknowledged). Called before Raft is stopped for good
    /// (`Store::stop_raft`): a Raft that waits on such a batch could not stop otherwise.
    pub fn stop_waiting_for_space(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Flushes what is queued and closes the database; later writes fail. Does not wait for
    /// space on a full disk ([`LogStore::stop_waiting_for_space`]).
    pub fn close(&self) {
        self.stop_waiting_for_space();
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

    /// When each commit index was learned; the state machine marks what it applies.
    pub fn commit_clock(&self) -> &Arc<CommitClock> {
        &self.commit_clock
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

    /// Bytes of entries held in memory.
    pub fn cached_bytes(&self) -> usize {
        self.cache().recent_bytes
    }
}
