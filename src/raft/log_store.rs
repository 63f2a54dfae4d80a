//! The durable Raft log: redb on disk, an in-memory index in front, and group commit.
//!
//! Every mutation goes to one writer thread. The thread drains whatever has queued up while the
//! previous transaction was being fsynced and commits it all in one durable redb transaction, so
//! concurrent proposals share one fsync. openraft is told an append is durable (the `LogFlushed`
//! callback) only after that commit returns.
//!
//! Reads are served from the in-memory copy, which holds every entry not yet purged. Entries
//! appended but not yet flushed are readable (openraft may replicate them before they are
//! durable locally; it never counts them as durable before the callback).

// openraft's trait signatures fix the error type; boxing it would only add conversions.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// What the in-memory side knows; the writer thread makes it durable.
#[derive(Default)]
struct Cache {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

enum Op {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    /// Delete entries with index >= the given one.
    Truncate(u64),
    /// Delete entries with index <= the given log id's, and remember it.
    Purge(LogId, Vec<u8>),
    Meta(&'static str, Vec<u8>),
    /// Reply once everything queued before it is durable.
    Barrier(oneshot::Sender<Result<(), String>>),
    /// Commit what is queued, then close the database (releasing its file lock).
    Close,
}

/// The log store handed to openraft. Cheap to clone: all clones share one log.
#[derive(Clone)]
pub struct LogStore {
    cache: Arc<Mutex<Cache>>,
    ops: mpsc::Sender<Op>,
    writer: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(v).map_err(|e| e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let read_err = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Store, ErrorVerb::Read, e);
        let db = Database::create(path).map_err(|e| read_err(&e))?;
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
                cache.vote = Some(bincode::deserialize(&v).map_err(decode_err)?);
            }
            if let Some(v) = get(KEY_COMMITTED)? {
                cache.committed = bincode::deserialize(&v).map_err(decode_err)?;
            }
            if let Some(v) = get(KEY_PURGED)? {
                cache.last_purged = Some(bincode::deserialize(&v).map_err(decode_err)?);
            }
            let logs = r.open_table(LOGS).map_err(|e| read_err(&e))?;
            for item in logs.iter().map_err(|e| read_err(&e))? {
                let (k, v) = item.map_err(|e| read_err(&e))?;
                let entry: Entry = bincode::deserialize(v.value()).map_err(decode_err)?;
                cache.entries.insert(k.value(), entry);
            }
        }
        let (tx, rx) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(db, rx))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(Self {
            cache: Arc::new(Mutex::new(cache)),
            ops: tx,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned lock means a panic while holding it; the data is still consistent
        // because every critical section is a single map operation.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
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
}

/// Commits queued operations in batches: one durable transaction (one fsync) per batch.
fn writer_loop(db: Database, rx: mpsc::Receiver<Op>) {
    let mut closing = false;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        while let Ok(op) = rx.try_recv() {
            batch.push(op);
        }
        closing = batch.iter().any(|op| matches!(op, Op::Close));
        let t0 = std::time::Instant::now();
        let result = commit_batch(&db, &batch);
        if std::env::var("SQLRAFT_DEBUG_LOG").is_ok() {
            let n: usize = batch
                .iter()
                .map(|o| if let Op::Append(e, _) = o { e.len() } else { 0 })
                .sum();
            eprintln!(
                "logbatch ops={} entries={} commit={:?}",
                batch.len(),
                n,
                t0.elapsed()
            );
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        for op in batch {
            match op {
                Op::Append(_, cb) => {
                    cb.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                Op::Barrier(tx) => {
                    let _ = tx.send(result.clone());
                }
                Op::Truncate(_) | Op::Purge(..) | Op::Meta(..) | Op::Close => {}
            }
        }
    }
}

fn commit_batch(db: &Database, batch: &[Op]) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut w = db.begin_write().map_err(|e| s(&e))?;
    w.set_durability(Durability::Immediate);
    {
        let mut logs = w.open_table(LOGS).map_err(|e| s(&e))?;
        let mut meta = w.open_table(META).map_err(|e| s(&e))?;
        for op in batch {
            match op {
                Op::Append(entries, _) => {
                    for (idx, bytes) in entries {
                        logs.insert(*idx, bytes.as_slice()).map_err(|e| s(&e))?;
                    }
                }
                Op::Truncate(from) => {
                    logs.retain_in(*from.., |_, _| false).map_err(|e| s(&e))?;
                }
                Op::Purge(upto, encoded) => {
                    logs.retain_in(..=upto.index, |_, _| false)
                        .map_err(|e| s(&e))?;
                    meta.insert(KEY_PURGED, encoded.as_slice())
                        .map_err(|e| s(&e))?;
                }
                Op::Meta(key, value) => {
                    meta.insert(*key, value.as_slice()).map_err(|e| s(&e))?;
                }
                Op::Barrier(_) | Op::Close => {}
            }
        }
    }
    w.commit().map_err(|e| s(&e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .cache()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let c = self.cache();
        let last = c
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(c.last_purged);
        Ok(LogState {
            last_purged_log_id: c.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.cache().vote = Some(*vote);
        self.send(Op::Meta(KEY_VOTE, bytes), ErrorSubject::Vote)?;
        // A vote must be durable before it is acted upon.
        self.barrier(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.cache().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced on its own: it rides with the next batch. Losing it only means
        // re-learning the commit index from the leader (or re-electing) after a crash.
        let bytes =
            encode(&committed).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.cache().committed = committed;
        self.send(Op::Meta(KEY_COMMITTED, bytes), ErrorSubject::Store)
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
        let mut encoded = Vec::new();
        {
            let mut c = self.cache();
            for entry in entries {
                let bytes = encode(&entry)
                    .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
                encoded.push((entry.log_id.index, bytes));
                c.entries.insert(entry.log_id.index, entry);
            }
        }
        self.send(Op::Append(encoded, callback), ErrorSubject::Logs)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _ = self.cache().entries.split_off(&log_id.index);
        self.send(Op::Truncate(log_id.index), ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes =
            encode(&log_id).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        {
            let mut c = self.cache();
            let keep = c.entries.split_off(&(log_id.index + 1));
            c.entries = keep;
            c.last_purged = Some(log_id);
        }
        self.send(Op::Purge(log_id, bytes), ErrorSubject::Logs)
    }
}

impl LogStore {
    /// Flushes what is queued and closes the database; later writes fail.
    pub fn close(&self) {
        let _ = self.ops.send(Op::Close);
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// The id of the last entry appended (flushed or not), or of the last purged one.
    pub fn last_log_id(&self) -> Option<LogId> {
        let c = self.cache();
        c.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(c.last_purged)
    }

    /// Number of entries currently held (for `/status`).
    pub fn len(&self) -> usize {
        self.cache().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.cache().entries.is_empty()
    }
}

#[cfg(test)]
mod conformance {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::db::{Db, DbConfig, Engine};
    use crate::store::snapshot::SnapshotStore;
    use crate::store::state_machine::StateMachine;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let td = TempDir::new().expect("temp dir");
            let log = LogStore::open(&td.path().join("raft-log.redb"))?;
            let engine = Engine::open(&DbConfig::default()).expect("engine");
            let snapshots = SnapshotStore::open(&td.path().join("snapshots")).expect("snapshots");
            let sm = StateMachine::open(Db::spawn(engine), snapshots).await?;
            Ok((td, log, sm))
        }
    }

    /// openraft's storage conformance suite, against the real log store and state machine.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(Builder)
    }

    /// What was appended and flushed is there after reopening; truncation and purge persist.
    #[tokio::test]
    async fn log_survives_reopen() {
        use openraft::testing::log_id;
        let td = TempDir::new().unwrap();
        let path = td.path().join("log.redb");
        let entry = |i: u64| Entry {
            log_id: log_id(1, 1, i),
            payload: openraft::EntryPayload::Blank,
        };
        {
            let mut s = LogStore::open(&path).unwrap();
            // Returns only once the flush callback fired, i.e. the entries are durable.
            s.blocking_append((1..=10).map(entry)).await.unwrap();
            s.truncate(log_id(1, 1, 9)).await.unwrap();
            s.purge(log_id(1, 1, 3)).await.unwrap();
            s.save_vote(&Vote::new(2, 7)).await.unwrap();
            s.close();
        }
        let mut s = LogStore::open(&path).unwrap();
        let got: Vec<u64> = s
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, vec![4, 5, 6, 7, 8]);
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 7)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(st.last_log_id, Some(log_id(1, 1, 8)));
    }
}
