//! The Raft network client: openraft's RPCs sent over the internode transport.
//!
//! A peer that cannot be reached, did not answer in time, refused the request, or whose Raft
//! has stopped is reported as `Unreachable` (openraft backs off); an answer that cannot be
//! decoded as `NetworkError` (openraft retries at once).
//!
//! Snapshots travel as a run of [`SnapshotChunk`] requests read from the snapshot's file one
//! chunk at a time, so that a snapshot is never whole in memory on either side.

use std::future::Future;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    ErrorSource, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::transport::{Transport, TransportError};
use super::{
    NodeId, NodeInfo, Snapshot, SnapshotData, SnapshotMeta, StorageError, TypeConfig, Vote,
};
use crate::metrics::Metrics;

pub const PATH_APPEND: &str = "/v1/raft/append";
pub const PATH_VOTE: &str = "/v1/raft/vote";
pub const PATH_SNAPSHOT: &str = "/v1/raft/snapshot";

/// The snapshot chunk size when openraft names none.
const DEFAULT_SNAPSHOT_CHUNK: usize = 4 << 20;
/// Bounds of the chunk size: at least a few requests' worth of overhead, at most well within
/// the internode body limit (the API's body limit plus 64 MiB, see `cluster::service`).
const MIN_SNAPSHOT_CHUNK: usize = 64 << 10;
pub const MAX_SNAPSHOT_CHUNK: usize = 32 << 20;

/// Pause before retrying a peer that was unreachable: openraft 0.9's fixed 500 ms, kept
/// (0.10's default is 200 ms).
const BACKOFF: Duration = Duration::from_millis(500);

/// One piece of a snapshot on its way to a follower ([`PATH_SNAPSHOT`]). A transfer is a run
/// of these from offset 0, sent one after the other; the follower installs the snapshot when
/// the last one (`done`) is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sending leader's vote: the follower installs the snapshot with it.
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// Random, one per transfer: tells a new transfer from the rest of an abandoned one.
    pub transfer: u64,
    /// Where `data` starts in the snapshot's file.
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The last chunk: the follower installs the snapshot and answers with its vote.
    pub done: bool,
}

/// A follower's answer to a [`SnapshotChunk`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SnapshotReply {
    /// Written; send the next chunk.
    Received,
    /// The follower's vote: after the last chunk, once Raft took the snapshot; before it, when
    /// the follower knows a newer leader (the sender is deposed, the rest is not wanted).
    Done(SnapshotResponse<TypeConfig>),
    /// The follower has no transfer this chunk continues (it restarted, or another transfer
    /// replaced this one): start over.
    Restart(String),
    /// The follower could not take the snapshot (its disk, its Raft stopped, or the snapshot
    /// contradicts its committed log).
    Failed(String),
}

/// Cuts this node off from its peers, both ways (the internode service checks it too).
/// Used by tests to simulate a network partition without root privileges.
#[derive(Debug, Clone, Default)]
pub struct Isolation(Arc<AtomicBool>);

impl Isolation {
    pub fn set(&self, isolated: bool) {
        self.0.store(isolated, Ordering::SeqCst);
    }
    pub fn is_isolated(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Builds one client per peer; all share the node's pooled transport.
#[derive(Clone)]
pub struct Network {
    transport: Transport,
    isolation: Isolation,
    metrics: Arc<Metrics>,
    replication_timeout: Duration,
}

impl Network {
    pub fn new(transport: Transport, isolation: Isolation) -> Self {
        Self {
            transport,
            isolation,
            metrics: Arc::default(),
            replication_timeout: Duration::ZERO,
        }
    }

    /// The least time a follower that answered within the last such span gets to answer an
    /// AppendEntries (openraft gives the heartbeat interval): the election timeout. A late
    /// answer is still an answer, and openraft treats a timed-out one as an unreachable peer
    /// and waits [`BACKOFF`] before sending again, so a follower whose `fdatasync` outlasted
    /// a heartbeat interval stalled every write. A peer that went silent gets openraft's
    /// limit again: openraft closes a replication stream (on a step-down, a removal) by
    /// waiting, in its core loop, for the stream's call in flight, and a call to a peer that
    /// drops packets would hold it for the whole limit (`docs/design/cluster.md`).
    /// openraft's own heartbeat and ReadIndex rounds keep their shorter limit.
    pub fn replication_timeout(mut self, at_least: Duration) -> Self {
        self.replication_timeout = at_least;
        self
    }

    /// Counts into the node's `metrics` (AppendEntries calls that got no answer) instead of
    /// counters of its own.
    pub fn counting_into(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// A client for one peer.
pub struct PeerClient {
    target: NodeInfo,
    transport: Transport,
    isolation: Isolation,
    metrics: Arc<Metrics>,
    replication_timeout: Duration,
    /// When this peer last answered an AppendEntries (at first, when the client was made:
    /// a new stream's first call gets the longer limit too).
    answered: Instant,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient {
            target: node.clone(),
            transport: self.transport.clone(),
            isolation: self.isolation.clone(),
            metrics: self.metrics.clone(),
            replication_timeout: self.replication_timeout,
            answered: Instant::now(),
        }
    }
}

impl PeerClient {
    /// POSTs `req` to the peer's `path` and decodes its answer.
    async fn call<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        if self.isolation.is_isolated() {
            return Err(RPCError::Unreachable(Unreachable::from_string(
                "node is isolated",
            )));
        }
        self.transport
            .call(&self.target.raft_addr, path, req, timeout)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. }
                | TransportError::Timeout { .. }
                | TransportError::Interrupted { .. }
                | TransportError::Refused { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Protocol { .. } => RPCError::Network(NetworkError::new(&e)),
            })
    }

    /// A Raft RPC: the peer answers with what its Raft returned. An error there means its Raft
    /// stopped: unreachable, back off. Limits start from openraft's `hard_ttl`, as with 0.9:
    /// `soft_ttl` would cut them by a quarter.
    async fn rpc<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<TypeConfig>> = self.call(path, req, timeout).await?;
        answer.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Sends `snapshot` chunk by chunk; see [`RaftNetworkV2::full_snapshot`].
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot {
            meta,
            snapshot: mut file,
        } = snapshot;
        let chunk_size = option
            .snapshot_chunk_size()
            .unwrap_or(DEFAULT_SNAPSHOT_CHUNK)
            .clamp(MIN_SNAPSHOT_CHUNK, MAX_SNAPSHOT_CHUNK);
        // Each chunk gets openraft's `install_snapshot_timeout`, as each chunk did in 0.9; the
        // whole transfer has no limit while chunks keep arriving (openraft sets none either).
        let timeout = option.hard_ttl();
        let transfer = fastrand::u64(..);
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(|e| read_error(&meta, &e))?;
        let mut offset = 0u64;
        loop {
            let data = read_chunk(&mut file, chunk_size)
                .await
                .map_err(|e| read_error(&meta, &e))?;
            let len = data.len() as u64;
            // A short read is the end of the file (an empty last chunk if the size is a
            // multiple of the chunk size).
            let done = data.len() < chunk_size;
            let chunk = SnapshotChunk {
                vote,
                meta: meta.clone(),
                transfer,
                offset,
                data,
                done,
            };
            let reply: SnapshotReply = self.call(PATH_SNAPSHOT, &chunk, timeout).await?;
            drop(chunk);
            match reply {
                SnapshotReply::Received if !done => offset += len,
                SnapshotReply::Received => {
                    return Err(network_error(
                        "the follower did not install the snapshot after its last chunk",
                    ))
                }
                SnapshotReply::Done(resp) if done || resp.vote > vote => return Ok(resp),
                // Openraft would take an early answer with no newer vote for an installed
                // snapshot.
                SnapshotReply::Done(resp) => {
                    return Err(network_error(format!(
                        "the follower ended the snapshot transfer early with vote {}",
                        resp.vote
                    )))
                }
                // Backed off like an unreachable peer: openraft retries a network error at once.
                SnapshotReply::Restart(why) | SnapshotReply::Failed(why) => {
                    return Err(StreamingError::Unreachable(Unreachable::from_string(
                        format!("{}: {why}", self.target),
                    )))
                }
            }
        }
    }
}

fn network_error(msg: impl std::fmt::Display) -> StreamingError<TypeConfig> {
    StreamingError::Network(NetworkError::from_string(msg))
}

fn read_error(meta: &SnapshotMeta, e: &std::io::Error) -> StreamingError<TypeConfig> {
    StreamingError::StorageError(StorageError::read_snapshot(
        Some(meta.signature()),
        ErrorSource::from_error(e),
    ))
}

/// The next `size` bytes of `file`, fewer only at its end. One buffer of `size`: this bounds
/// what a transfer holds in memory.
async fn read_chunk(file: &mut SnapshotData, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    file.take(size as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = if self.answered.elapsed() < self.replication_timeout {
            option.hard_ttl().max(self.replication_timeout)
        } else {
            option.hard_ttl()
        };
        let r = self.rpc(PATH_APPEND, &rpc, timeout).await;
        if r.is_ok() {
            self.answered = Instant::now();
        }
        // The leader's heartbeats and replication: a peer that did not answer.
        if matches!(r, Err(RPCError::Unreachable(_) | RPCError::Network(_))) {
            self.metrics.store.failed_heartbeats.inc();
        }
        r
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(PATH_VOTE, &rpc, option.hard_ttl()).await
    }

    /// Streams the snapshot's file in chunks of openraft's `snapshot_max_chunk_size`, one
    /// request each; stops as soon as `cancel` resolves.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, &option) => sent,
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_read_in_whole_chunks_then_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let bytes: Vec<u8> = (0..10u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut f = tokio::fs::File::open(&path).await.unwrap();
        assert_eq!(read_chunk(&mut f, 4).await.unwrap(), bytes[..4]);
        assert_eq!(read_chunk(&mut f, 4).await.unwrap(), bytes[4..8]);
        assert_eq!(read_chunk(&mut f, 4).await.unwrap(), bytes[8..]);
        // At the end: the empty last chunk of a file whose size is a multiple of the chunk.
        assert!(read_chunk(&mut f, 4).await.unwrap().is_empty());
    }
}
