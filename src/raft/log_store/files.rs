//! The log's files: `raft-log` (openraft's author's chunked write-ahead log) in one directory.
//!
//! Owns: opening the files, applying the writer's operations to them so that applying a batch
//! again after a failed flush changes nothing that already holds, flushing (one `writev` and
//! one `fdatasync` for everything queued), and reading back entries no longer in memory.
//! Does not: decide when to flush or retry (the writer thread does) or cache decoded entries
//! (the store does).
//!
//! Every change (entry, truncation, purge, vote, commit index) is a checksummed record
//! appended to the open chunk; a chunk closes at [`CHUNK_BYTES`] and is deleted once every
//! entry it holds is purged and that purge is durable. Opening replays the records and cuts
//! off a record that a crash left incomplete at the end.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{Config, RaftLog};

use super::{Entry, LogId, NodeId, Op};

/// A chunk closes once it holds this much. Entries of the open chunk stay in raft-log's
/// payload cache (it may evict only what closed chunks hold), so this also bounds that memory.
const CHUNK_BYTES: usize = 4 << 20;

/// A log id as raft-log stores it: term, leader node, index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Id(pub(super) LogId);

impl Encode for Id {
    fn encode<W: Write>(&self, mut w: W) -> io::Result<usize> {
        let id = &self.0;
        Ok(id.leader_id.term.encode(&mut w)?
            + id.leader_id.node_id.encode(&mut w)?
            + id.index.encode(&mut w)?)
    }
}

impl Decode for Id {
    fn decode<R: Read>(mut r: R) -> io::Result<Self> {
        let term = u64::decode(&mut r)?;
        let node: NodeId = u64::decode(&mut r)?;
        let index = u64::decode(&mut r)?;
        Ok(Id(LogId::new(
            openraft::CommittedLeaderId::new(term, node),
            index,
        )))
    }
}

/// A vote as raft-log stores it (ordered as openraft orders votes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd)]
pub(super) struct Ballot(pub(super) openraft::Vote<NodeId>);

impl Encode for Ballot {
    fn encode<W: Write>(&self, mut w: W) -> io::Result<usize> {
        let v = &self.0;
        Ok(v.leader_id.term.encode(&mut w)?
            + v.leader_id.node_id.encode(&mut w)?
            + v.committed.encode(&mut w)?)
    }
}

impl Decode for Ballot {
    fn decode<R: Read>(mut r: R) -> io::Result<Self> {
        let term = u64::decode(&mut r)?;
        let node: NodeId = u64::decode(&mut r)?;
        let committed = bool::decode(&mut r)?;
        let mut v = openraft::Vote::new(term, node);
        v.committed = committed;
        Ok(Ballot(v))
    }
}

/// The types raft-log stores: entries as their bincode encoding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Types;

impl raft_log::Types for Types {
    type LogId = Id;
    type LogPayload = Vec<u8>;
    type Vote = Ballot;
    type Callback = SyncSender<io::Result<()>>;
    type UserData = ();

    fn log_index(id: &Id) -> u64 {
        id.0.index
    }

    fn payload_size(payload: &Vec<u8>) -> u64 {
        payload.len() as u64
    }
}

/// What opening found.
pub(super) struct Found {
    pub(super) first: Option<u64>,
    pub(super) last: Option<LogId>,
    pub(super) last_purged: Option<LogId>,
    pub(super) vote: Option<openraft::Vote<NodeId>>,
    pub(super) committed: Option<LogId>,
}

/// The open log.
pub(super) struct Files {
    log: RaftLog<Types>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Files {
    /// Opens (or creates) the log in `dir`.
    pub(super) fn open(dir: &Path) -> io::Result<(Self, Found)> {
        std::fs::create_dir_all(dir)?;
        let mut config = Config::new(dir.to_string_lossy());
        config.wal.chunk_max_size = Some(CHUNK_BYTES);
        // Flush as soon as asked: the writer thread already groups what queued up meanwhile.
        config.wal.flush_batch_wait = Some(std::time::Duration::ZERO);
        // Decoded recent entries are cached by the store; this cache only keeps what the
        // open chunk holds until it closes.
        config.log_cache_max_items = Some(1);
        config.log_cache_capacity = Some(1);
        let log = RaftLog::<Types>::open(Arc::new(config)).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    e.kind(),
                    "it is in use by another process (is another sqlraftd running on this data directory?)",
                )
            } else {
                e
            }
        })?;
        let files = Files { log };
        let found = files.found()?;
        Ok((files, found))
    }

    fn found(&self) -> io::Result<Found> {
        let s = self.log.log_state();
        let last_purged = s.purged().map(|i| i.0);
        let last = s.last().map(|i| i.0).filter(|l| Some(*l) != last_purged);
        let first = match self.log.read(0, u64::MAX).next() {
            Some(r) => Some(r?.0 .0.index),
            None => None,
        };
        Ok(Found {
            first,
            last,
            last_purged,
            vote: s.vote().map(|b| b.0),
            committed: s.committed().map(|i| i.0),
        })
    }

    /// The entry's id at `index`, if the log holds it.
    fn id_at(&self, index: u64) -> io::Result<Option<LogId>> {
        match self.log.read(index, index + 1).next() {
            Some(r) => Ok(Some(r?.0 .0)),
            None => Ok(None),
        }
    }

    fn last(&self) -> Option<LogId> {
        self.log.log_state().last().map(|i| i.0)
    }

    /// Applies one operation (queued until [`Files::flush`]). What already holds is left
    /// alone, so a batch applied again after reopening gives the same log.
    pub(super) fn apply(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::Append(entries, _) => {
                for (id, bytes) in entries {
                    self.append(id, bytes)?;
                }
            }
            Op::Truncate(from) => self.truncate(*from)?,
            Op::Purge(upto) => {
                self.log.purge(Id(*upto))?;
            }
            Op::Vote(vote) => {
                if self.log.log_state().vote().map(|b| b.0) != Some(*vote) {
                    self.log.save_vote(Ballot(*vote))?;
                }
            }
            Op::Committed(Some(c)) => {
                // A hint for restarts: kept only while it names an entry the log holds.
                let s = self.log.log_state();
                if s.committed().map(|i| i.0) < Some(*c) && s.last().map(|i| i.0) >= Some(*c) {
                    self.log.commit(Id(*c))?;
                }
            }
            Op::Committed(None) | Op::Barrier(_) | Op::Close => {}
        }
        Ok(())
    }

    fn append(&mut self, id: &LogId, bytes: &[u8]) -> io::Result<()> {
        if self.log.log_state().purged().map(|i| i.0.index) >= Some(id.index) {
            // Applied again after a purge that covers it.
            return Ok(());
        }
        if let Some(last) = self.last() {
            if id.index <= last.index {
                if self.id_at(id.index)? == Some(*id) {
                    return Ok(());
                }
                self.truncate(id.index)?;
            }
        }
        self.log.append([(Id(*id), bytes.to_vec())])?;
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> io::Result<()> {
        let purged = self.log.log_state().purged().map(|i| i.0.index);
        if self.last().is_some_and(|l| l.index >= from) && Some(from) > purged {
            self.log.truncate(from)?;
        }
        Ok(())
    }

    /// Makes everything applied so far durable (one write and one fsync), and deletes chunks
    /// wholly purged once that purge is.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let (tx, rx) = sync_channel(1);
        self.log.flush(true, Some(tx))?;
        rx.recv()
            .map_err(|_| other("the Raft log's flush thread stopped"))?
    }

    /// Entries `[start, end)` the files hold, at most `max_bytes` of them (but at least one);
    /// returns their size.
    pub(super) fn read(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
        out: &mut Vec<Entry>,
    ) -> io::Result<usize> {
        let mut bytes = 0usize;
        for item in self.log.read(start, end) {
            let (_, payload) = item?;
            if !out.is_empty() && bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            out.push(bincode::deserialize(&payload).map_err(other)?);
        }
        Ok(bytes)
    }

    /// Bytes the log's chunk files hold.
    pub(super) fn disk_bytes(&self) -> u64 {
        self.log.on_disk_size()
    }
}
