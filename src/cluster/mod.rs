//! Clustering: the internode service, joining, and forwarding to the leader.
//!
//! Owns: "local, else leader, else redirect" for every operation (`Cluster`), the internode
//! service that answers peers (`service.rs`), the join loop (`join.rs`), keeping this node's
//! API address current in the membership (`announce.rs`), handing leadership away from a
//! full disk (`full_disk.rs`) and the cluster service's messages (`proto.rs`).
//! Does not: pick HTTP status codes (`http/error.rs`) or apply anything (`store`).

pub mod announce;
pub mod bootstrap;
pub mod discover;
mod follower_reads;
pub mod formation;
pub mod forward;
mod forward_batch;
pub mod full_disk;
pub mod join;
pub mod prevote;
pub mod proto;
pub mod reap;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::Request;
use crate::metrics::Op;
use crate::raft::transport::{Transport, TransportError};
use crate::raft::NodeInfo;
use crate::store::{ReadLevel, ReadOpts, Reply, Store, StoreError, TxAnswer, TxCall};
pub use forward::{Hop, Served};
use proto::{ClusterRequest, ClusterResponse, Credentials, NodeMeta, PATH_CLUSTER};

/// Why a cluster operation failed. Serializable: the node that serves a forwarded request
/// sends it back as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The leader is known but could not be reached; nothing was applied.
    #[error("leader {addr} unreachable: {msg}")]
    LeaderUnreachable { addr: String, msg: String },
    /// The leader was sent the request but did not answer: it may or may not have applied it.
    #[error("outcome unknown: leader {addr} did not answer: {msg}")]
    OutcomeUnknown { addr: String, msg: String },
    /// The leader refused the caller's credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The leader refused the request before processing it (e.g. 413, too large): nothing was
    /// applied.
    #[error("leader {addr} refused the request: {msg}")]
    Refused {
        addr: String,
        status: u16,
        msg: String,
    },
}

/// How a request may reach the leader.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Forward transparently when this node is not the leader (false: `redirect`).
    pub forward: bool,
    /// Bound on a forwarded call (rqlite's `timeout`, default 30s).
    pub timeout: Option<Duration>,
    /// The caller's credentials, re-checked by the leader.
    pub creds: Option<Credentials>,
}

const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A value a node's answer carries.
trait Answer: Sized {
    /// The value, or the error the node sent (any other answer is unexpected).
    fn take(resp: ClusterResponse) -> Result<Self, ClusterError>;

    /// [`Answer::take`], or the node's "not me, try that one".
    fn take_or_hop(resp: ClusterResponse) -> Result<Hop<Self>, ClusterError> {
        match resp {
            ClusterResponse::Err(ClusterError::Store(StoreError::NotLeader {
                leader: Some(next),
            })) => Ok(Hop::NotLeader(next)),
            resp => Self::take(resp).map(Hop::Done),
        }
    }
}

/// [`Answer`] for each value and the answer that carries it.
macro_rules! answers {
    ($($value:ty => $carrier:pat => $inner:expr),* $(,)?) => {$(
        impl Answer for $value {
            fn take(resp: ClusterResponse) -> Result<Self, ClusterError> {
                match resp {
                    $carrier => Ok($inner),
                    other => Err(unexpected(other)),
                }
            }
        }
    )*};
}

answers! {
    Reply => ClusterResponse::Reply(r) => r,
    Vec<Reply> => ClusterResponse::Replies(v) => v,
    Vec<u8> => ClusterResponse::Bytes(b) => b,
    NodeMeta => ClusterResponse::Meta(m) => m,
    u64 => ClusterResponse::Index(i) => i,
    () => ClusterResponse::Ok => (),
    TxAnswer => ClusterResponse::Tx(a) => a,
}

/// Every data operation, served locally or by the leader.
pub struct Cluster {
    store: Arc<Store>,
    transport: Transport,
    /// This node's own credentials (the `-join-as` user's, from its `-auth` file): sent with
    /// joins and notifies, and with requests the node makes on its own behalf (queued write
    /// batches, removing itself at shutdown).
    node_creds: Option<Credentials>,
    /// ReadIndex calls to the leader shared by concurrent follower reads.
    shared_read_index: crate::shared_call::SharedCall<u64, ClusterError>,
    /// Writes forwarded to the leader at the same time, sent in one call.
    forward_batches: forward_batch::ForwardBatches,
    /// Held by the leadership transfer in progress: one at a time (`POST /leader`, the
    /// step-down at shutdown and `full_disk.rs` would otherwise undo each other's pause).
    transferring: tokio::sync::Mutex<()>,
}

impl Cluster {
    pub fn new(store: Arc<Store>, transport: Transport) -> Self {
        Self {
            forward_batches: forward_batch::ForwardBatches::new(transport.clone(), store.clone()),
            store,
            transport,
            node_creds: None,
            shared_read_index: Default::default(),
            transferring: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets the credentials this node presents for itself (`-join-as`).
    pub fn with_node_creds(mut self, creds: Option<Credentials>) -> Self {
        self.node_creds = creds;
        self
    }

    /// The credentials this node presents for itself, if any.
    pub fn node_creds(&self) -> Option<&Credentials> {
        self.node_creds.as_ref()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Sends a cluster request to `addr` and turns transport failures into cluster errors.
    /// `idempotent` calls that were sent but not answered are "leader unreachable" rather
    /// than "outcome unknown".
    pub async fn call(
        &self,
        addr: &str,
        req: &ClusterRequest,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<ClusterResponse, ClusterError> {
        call_peer(&self.transport, &self.store, addr, req, timeout, idempotent).await
    }

    /// Runs `local`; if this node is not the leader and forwarding is allowed, sends
    /// `remote` (given the caller's credentials, for the leader to check again) to the leader
    /// instead (see [`forward::route`]).
    async fn local_or_leader<T: Answer, L, Fut>(
        &self,
        op: Op,
        fwd: &Forwarding,
        idempotent: bool,
        local: L,
        remote: impl FnOnce(Option<Credentials>) -> ClusterRequest,
    ) -> Result<Served<T>, ClusterError>
    where
        L: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let timeout = fwd.timeout.unwrap_or(DEFAULT_FORWARD_TIMEOUT);
        let creds = fwd.creds.clone();
        let mut remote = Some(move || remote(creds));
        let mut req = None;
        forward::route(
            &self.store.me().id,
            fwd.forward,
            local().await,
            move |leader: NodeInfo| {
                let r = req
                    .get_or_insert_with(|| remote.take().map(|f| f()))
                    .clone();
                async move {
                    let Some(r) = r else {
                        return Err(StoreError::NotLeader { leader: None }.into());
                    };
                    let hop = self
                        .call(&leader.raft_addr, &r, timeout, idempotent)
                        .await
                        .and_then(T::take_or_hop);
                    // Each hop is counted; one that found the leader moved is not a failure.
                    let ok = hop.is_ok();
                    self.store.metrics().cluster.record_forward(op, ok);
                    hop
                }
            },
        )
        .await
    }

    /// Writes (`/db/execute`). `req` must already be prepared (`Store::prepare`).
    pub async fn execute(
        &self,
        req: Request,
        route: &Forwarding,
    ) -> Result<Served<Reply>, ClusterError> {
        let timeout = route.timeout.unwrap_or(DEFAULT_FORWARD_TIMEOUT);
        let local = self.store.execute(req.clone()).await;
        forward::route(
            &self.store.me().id,
            route.forward,
            local,
            |leader: NodeInfo| {
                // Sent with the writes other clients forward at the same time
                // (`forward_batch.rs`).
                let sent = self.forward_batches.execute(
                    leader.raft_addr,
                    route.creds.clone(),
                    timeout,
                    req.clone(),
                );
                async move {
                    let hop = sent.await;
                    // Each hop is counted; one that found the leader moved is not a failure.
                    let ok = hop.is_ok();
                    self.store.metrics().cluster.record_forward(Op::Execute, ok);
                    hop
                }
            },
        )
        .await
    }

    /// A call on an interactive transaction, served by the leader. Never sent twice: a
    /// commit whose answer was lost has an unknown outcome.
    pub async fn tx(
        &self,
        call: TxCall,
        route: &Forwarding,
    ) -> Result<Served<TxAnswer>, ClusterError> {
        let c = call.clone();
        let remote = |creds| ClusterRequest::Tx { call, creds };
        self.local_or_leader(Op::Request, route, false, || self.store.tx(c), remote)
            .await
    }

    /// Independent writes in one log entry, in order (the write queue's batches).
    pub async fn execute_each(
        &self,
        reqs: Vec<Request>,
        route: &Forwarding,
    ) -> Result<Served<Vec<Reply>>, ClusterError> {
        let r = reqs.clone();
        let remote = |creds| ClusterRequest::ExecuteEach { reqs, creds };
        self.local_or_leader(
            Op::Execute,
            route,
            false,
            || self.store.execute_each(r),
            remote,
        )
        .await
    }

    /// Reads (`/db/query`). `none` is always local, and so is `linearizable` (after a
    /// ReadIndex from the leader, see `follower_reads.rs`) and `weak` with `min_index`; only
    /// `strong` reads enter the log, so only they are not safe to send again.
    pub async fn query(
        &self,
        req: Request,
        opts: &ReadOpts,
        route: &Forwarding,
    ) -> Result<Served<Reply>, ClusterError> {
        if self.reads_after_read_index(opts, route) {
            let local = Box::pin(self.await_read_index(opts, route)).await?;
            return Ok(Served::local(self.store.query(req, &local).await?));
        }
        let idempotent = opts.level != ReadLevel::Strong;
        let r = req.clone();
        let wire = opts.clone();
        let remote = |creds| ClusterRequest::Query {
            req,
            opts: wire,
            creds,
        };
        self.local_or_leader(
            Op::Query,
            route,
            idempotent,
            || self.store.query(r, opts),
            remote,
        )
        .await
    }

    /// The unified endpoint (`/db/request`).
    pub async fn request(
        &self,
        req: Request,
        opts: &ReadOpts,
        route: &Forwarding,
    ) -> Result<Served<Reply>, ClusterError> {
        // A read-only request is a read like `/db/query`'s; one with a write goes to the log.
        if self.reads_after_read_index(opts, route) && self.store.is_read_only(&req).await? {
            let local = Box::pin(self.await_read_index(opts, route)).await?;
            return Ok(Served::local(self.store.request(req, &local).await?));
        }
        let r = req.clone();
        let wire = opts.clone();
        let remote = |creds| ClusterRequest::Request {
            req,
            opts: wire,
            creds,
        };
        self.local_or_leader(
            Op::Request,
            route,
            false,
            || self.store.request(r, opts),
            remote,
        )
        .await
    }

    /// Backups are served by the leader unless `local` (`noleader`).
    pub async fn backup(
        &self,
        sql: bool,
        vacuum: bool,
        tables: Option<Vec<String>>,
        local: bool,
        route: &Forwarding,
    ) -> Result<Served<Vec<u8>>, ClusterError> {
        let t = tables.clone();
        let here = || async move {
            if !local {
                self.store.ensure_leader().await?;
            }
            self.store.backup(sql, vacuum, t).await
        };
        let remote = |creds| ClusterRequest::Backup {
            sql,
            vacuum,
            tables,
            creds,
        };
        self.local_or_leader(Op::Backup, route, true, here, remote)
            .await
    }

    /// Loads the SQLite file at `path` through the log. A follower sends it to the leader
    /// whole (the leader's body limit applies; send larger files to the leader itself).
    pub async fn load_file(
        &self,
        path: &std::path::Path,
        route: &Forwarding,
    ) -> Result<Served<Reply>, ClusterError> {
        let remote = |creds| ClusterRequest::Load {
            // Read only when forwarding, a rare path: a short blocking read. An unreadable
            // upload goes as an empty image, which the leader refuses.
            image: Some(std::fs::read(path).unwrap_or_default()),
            dump: None,
            creds,
        };
        self.local_or_leader(
            Op::Load,
            route,
            false,
            || self.store.load_file(path),
            remote,
        )
        .await
    }

    /// Removes a member.
    pub async fn remove(&self, id: String, route: &Forwarding) -> Result<Served<()>, ClusterError> {
        let i = id.clone();
        let here = || async move { self.remove_and_notify(&i).await };
        let remote = |creds| ClusterRequest::Remove { id, creds };
        self.local_or_leader(Op::Remove, route, true, here, remote)
            .await
    }

    /// Leadership transfer (`POST /leader`).
    pub async fn stepdown(
        &self,
        id: Option<String>,
        route: &Forwarding,
    ) -> Result<Served<()>, ClusterError> {
        let i = id.clone();
        let here = || async move {
            // "Not leader" must stay itself so that the request is forwarded.
            self.transfer_leadership(i).await.map_err(|e| match e {
                ClusterError::Store(e) => e,
                e => StoreError::Raft(e.to_string()),
            })
        };
        let remote = |creds| ClusterRequest::Stepdown { id, creds };
        self.local_or_leader(Op::Stepdown, route, true, here, remote)
            .await
    }

    /// On the leader: asks a voter (the one named, else the most up to date) to start an
    /// election; its log is at least as long as any other's, so it can win. Refused while
    /// another transfer is in progress.
    pub async fn transfer_leadership(&self, id: Option<String>) -> Result<(), ClusterError> {
        self.store.ensure_leader().await?;
        let Ok(one) = self.transferring.try_lock() else {
            return Err(
                StoreError::Raft("a leadership transfer is already in progress".into()).into(),
            );
        };
        self.transfer_holding(id, one).await
    }

    /// The step-down at shutdown: waits up to `within` for a transfer in progress to end,
    /// then hands leadership to the most up-to-date voter if this node still leads.
    pub async fn step_down(&self, within: Duration) -> Result<(), ClusterError> {
        let Ok(one) = tokio::time::timeout(within, self.transferring.lock()).await else {
            return Err(StoreError::Timeout(
                "a leadership transfer in progress did not end in time".into(),
            )
            .into());
        };
        if !self.store.is_leader() {
            return Ok(());
        }
        self.store.ensure_leader().await?;
        self.transfer_holding(None, one).await
    }

    /// Whether a leadership transfer is in progress on this node.
    pub fn transfer_in_progress(&self) -> bool {
        self.transferring.try_lock().is_err()
    }

    async fn transfer_holding(
        &self,
        id: Option<String>,
        _one: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), ClusterError> {
        let me = self.store.me().id.clone();
        let voters: Vec<NodeInfo> = self
            .store
            .members()
            .into_iter()
            .filter(|(n, v)| *v && n.id != me)
            .map(|(n, _)| n)
            .collect();
        let target = match &id {
            Some(id) if *id == me => {
                return Err(
                    StoreError::StepDown("cannot step down to the current Leader".into()).into(),
                );
            }
            Some(id) => voters.into_iter().find(|n| &n.id == id),
            None => self.store.most_caught_up(&voters),
        };
        let Some(target) = target else {
            // A single voter has nobody to hand leadership to; rqlite answers success.
            return match id {
                Some(id) => Err(StoreError::StepDown(format!("no voter with id {id}")).into()),
                None => Ok(()),
            };
        };
        // A hand-over in the style of Raft's TimeoutNow (thesis §3.10): new writes wait (they
        // are then forwarded to the new leader, so clients see a pause, not an error), the
        // target is brought level with this node's log, and only then asked to campaign. With
        // identical logs this node grants its vote at once; in clusters of more than three
        // voters heartbeats also stop, so the other voters' leases run out for theirs.
        let paused = self.store.pause_writes();
        // This node must not campaign meanwhile: it is handing leadership over.
        let _quiet = self.store.hold_campaigns();
        let many = self.store.voter_count() > 3;
        // Back on when this ends, however it ends (a transfer dropped at shutdown too).
        let _heartbeats = many.then(|| HeartbeatsOff::new(self.store.raft().clone()));
        self.hand_over(&target, &paused).await
    }

    async fn hand_over(
        &self,
        target: &NodeInfo,
        paused: &crate::store::WritesPaused<'_>,
    ) -> Result<(), ClusterError> {
        let round = self.store.config().election_timeout;
        // Proposals admitted before the pause must be in the log before the target is
        // levelled with it: one appended after the target's election starts makes this
        // node's log longer, so it refuses its vote and nobody leads (seen in CI).
        // A leader whose disk is too full to apply never sees them settle (they are answered
        // once applied), so it does not wait for them. The loop below levels the target with
        // whatever the log holds; an entry that still lands after the election starts was
        // never acknowledged (nothing is applied here), and at worst this transfer fails and
        // the next round tries again.
        let settle = match self.store.disk_too_full() {
            Some(_) => round / 4,
            None => round * 2,
        };
        if !paused.settled(settle).await {
            tracing::debug!("leadership transfer: proposals still in flight after the pause");
        }
        // A leader elected moments ago refuses votes itself (openraft's vote lease runs for
        // an election timeout from when it took office): wait that out first.
        if let Some(age) = self.store.leading_for() {
            let lease = round + Duration::from_millis(20);
            if age < lease {
                tokio::time::sleep(lease - age).await;
            }
        }
        let raft = self.store.raft();
        let tid = crate::raft::node_id_of(&target.id);
        // Proposals already past the pause still land in the log: the target must hold
        // whatever the log ends with once it stops growing, or this node refuses its vote
        // (its log would be longer).
        let deadline = Instant::now() + round * 2;
        loop {
            let last = self.store.last_log_id().await.map(|l| l.index).unwrap_or(0);
            let left = deadline.saturating_duration_since(Instant::now());
            let caught_up = raft
                .wait(Some(left))
                .metrics(
                    |m| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&tid).copied().flatten())
                            .is_some_and(|l| l.index >= last)
                    },
                    "transfer target to catch up",
                )
                .await;
            if caught_up.is_err() {
                return Err(StoreError::Timeout(format!(
                    "leadership transfer: {target} did not catch up with the log in time"
                ))
                .into());
            }
            if self.store.last_log_id().await.map(|l| l.index).unwrap_or(0) == last {
                break;
            }
        }
        // A refused election (a vote lease still running somewhere) is asked again.
        let deadline = Instant::now() + round * 3;
        loop {
            let elect = self.call(
                &target.raft_addr,
                &ClusterRequest::Elect,
                Duration::from_secs(5),
                true,
            );
            <()>::take(elect.await?)?;
            let moved = raft
                .wait(Some(round))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != self.store.node_id()),
                    "leadership transfer",
                )
                .await;
            if moved.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    StoreError::Timeout("leadership transfer did not complete".into()).into(),
                );
            }
        }
    }

    /// Removes a member (leader only) and tells it so, so that a node running with
    /// `-raft-remove-shutdown` stops Raft even if it never receives the new configuration.
    pub async fn remove_and_notify(&self, id: &str) -> Result<(), StoreError> {
        let node = self
            .store
            .members()
            .into_iter()
            .find(|(n, _)| n.id == id)
            .map(|(n, _)| n);
        self.store.remove_node(id).await?;
        if let Some(n) = node.filter(|n| n.id != self.store.me().id) {
            if let Err(e) = self
                .call(
                    &n.raft_addr,
                    &ClusterRequest::Removed,
                    Duration::from_secs(2),
                    true,
                )
                .await
            {
                tracing::debug!(node = %n, error = %e, "could not tell a removed node");
            }
        }
        Ok(())
    }

    /// Metadata of the node at `addr` (for `/nodes`, `/leader`, redirects).
    pub async fn meta(&self, addr: &str, timeout: Duration) -> Result<NodeMeta, ClusterError> {
        let meta = self
            .call(addr, &ClusterRequest::Meta, timeout, true)
            .await?;
        NodeMeta::take(meta)
    }
}

/// [`Cluster::call`], for callers that hold the transport and the store but not the
/// `Cluster` (a forwarded batch sent by a task of its own).
async fn call_peer(
    transport: &Transport,
    store: &Store,
    addr: &str,
    req: &ClusterRequest,
    timeout: Duration,
    idempotent: bool,
) -> Result<ClusterResponse, ClusterError> {
    match transport
        .call::<_, ClusterResponse>(addr, PATH_CLUSTER, req, timeout)
        .await
    {
        Ok(r) => Ok(r),
        Err(TransportError::Unreachable { addr, msg }) => {
            Err(ClusterError::LeaderUnreachable { addr, msg })
        }
        // Sent, maybe processed, no answer: a write's outcome is unknown; an idempotent
        // call simply failed.
        Err(e @ (TransportError::Timeout { .. } | TransportError::Interrupted { .. })) => {
            let c = &store.metrics().cluster;
            match e {
                TransportError::Timeout { .. } => c.client_timeouts.inc(),
                // The pooled client drops a broken connection; the next call to this
                // peer dials a new one.
                _ => c.client_new_conns.inc(),
            }
            let (addr, msg) = (addr.to_string(), e.to_string());
            if idempotent {
                Err(ClusterError::LeaderUnreachable { addr, msg })
            } else {
                Err(ClusterError::OutcomeUnknown { addr, msg })
            }
        }
        Err(TransportError::Refused { addr, status, msg }) => {
            Err(ClusterError::Refused { addr, status, msg })
        }
        Err(TransportError::Protocol { addr, msg }) => {
            Err(ClusterError::OutcomeUnknown { addr, msg })
        }
    }
}

fn unexpected(r: ClusterResponse) -> ClusterError {
    match r {
        ClusterResponse::Err(e) => e,
        other => ClusterError::Store(StoreError::Raft(format!(
            "unexpected answer from leader: {other:?}"
        ))),
    }
}

/// Openraft's heartbeats, off while this lives (a leadership transfer in a cluster of more
/// than three voters, so that the other voters' leases run out for the target's election).
struct HeartbeatsOff(crate::raft::Raft);

impl HeartbeatsOff {
    fn new(raft: crate::raft::Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        Self(raft)
    }
}

impl Drop for HeartbeatsOff {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}
