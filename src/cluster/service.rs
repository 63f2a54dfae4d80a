//! The internode service on the Raft listener: openraft's RPCs, snapshots received in chunks,
//! and the cluster service (metadata, join, notify, remove, forwarded requests).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest};
use openraft::vote::RaftLeaderId;
use tokio::io::AsyncWriteExt;

use super::bootstrap::Bootstrapper;
use super::proto::Credentials;
use super::proto::{ClusterRequest, ClusterResponse, NodeMeta, PATH_CLUSTER};
use super::{Cluster, ClusterError, Forwarding};
use crate::auth::{AuthStore, Perm};
use crate::metrics::{ClusterCounters, Counter};
use crate::raft::network::{
    Isolation, SnapshotChunk, SnapshotReply, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE,
};
use crate::raft::transport::{decode, encode};
use crate::raft::{NodeId, Raft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use crate::store::Store;

/// What the internode handlers share.
pub struct ServiceState {
    pub cluster: Arc<Cluster>,
    pub isolation: Isolation,
    pub bootstrap: Arc<Bootstrapper>,
    /// This node's `-auth` users: forwarded requests, joins, notifies and removes are
    /// re-checked here with the same permission the HTTP endpoint needs.
    pub auth: Option<Arc<AuthStore>>,
    /// Change data capture, whose records a peer may ask for.
    pub cdc: Option<Arc<crate::cdc::Cdc>>,
}

impl ServiceState {
    fn store(&self) -> &Arc<Store> {
        self.cluster.store()
    }
}

/// Bytes an internode request may carry beyond the largest client request it may relay
/// (a forwarded request, or a log entry holding one): framing, and the other entries of an
/// AppendEntries batch (which the log store caps at
/// [`REPLICATION_BATCH_BYTES`](crate::raft::log_store::REPLICATION_BATCH_BYTES)). A snapshot
/// chunk is at most [`MAX_SNAPSHOT_CHUNK`](crate::raft::network::MAX_SNAPSHOT_CHUNK), within it.
const INTERNODE_HEADROOM: usize = 64 << 20;

/// The internode routes. `max_client_body` is the API's body limit (`-http-max-body`): a log
/// entry or a forwarded request is at most that large, so a peer's request may be that large
/// plus headroom. (axum's default of 2 MiB once made every snapshot or entry over 2 MiB fail
/// with 413 forever.)
pub fn router(state: Arc<ServiceState>, max_client_body: usize) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_CLUSTER, post(cluster))
        // This node's snapshot transfer in progress, across the requests carrying its chunks.
        .layer(Extension(Arc::new(Inbox::default())))
        .layer(axum::extract::DefaultBodyLimit::max(
            max_client_body.saturating_add(INTERNODE_HEADROOM),
        ))
        .with_state(state)
}

fn reply<T: serde::Serialize>(v: &T) -> Response {
    match encode(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Why a peer's request is not handled.
enum Refused {
    /// This node is isolated (tests' partitions): it answers no peer, as if cut off.
    Isolated,
    /// The body is not the request the route takes.
    Malformed(String),
    /// A snapshot that no leader could send with the vote it came with.
    Inconsistent(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Isolated => {
                (StatusCode::SERVICE_UNAVAILABLE, "node is isolated").into_response()
            }
            Refused::Malformed(e) => (StatusCode::BAD_REQUEST, e).into_response(),
            Refused::Inconsistent(e) => (StatusCode::CONFLICT, e).into_response(),
        }
    }
}

/// The request a peer sent, unless this node is isolated or the body is not one.
fn accept<T: serde::de::DeserializeOwned>(st: &ServiceState, body: &[u8]) -> Result<T, Refused> {
    if st.isolation.is_isolated() {
        return Err(Refused::Isolated);
    }
    decode(body).map_err(Refused::Malformed)
}

async fn append(State(st): State<Arc<ServiceState>>, body: Bytes) -> Result<Response, Refused> {
    let req: AppendEntriesRequest<TypeConfig> = accept(&st, &body)?;
    // openraft saves a commit index only up to the entries this node holds; a follower that
    // is catching up (or receiving a snapshot) knows the leader's from here, so that
    // `freshness_strict` sees how far behind it is.
    let leader_commit = req.leader_commit.map(|l| l.index);
    let resp = st.store().raft().append_entries(req).await;
    if resp.as_ref().is_ok_and(|r| r.is_success()) {
        if let Some(c) = leader_commit {
            st.store().commit_clock().learned(c);
        }
        st.store().leader_contact().record();
    }
    Ok(reply(&resp))
}

async fn vote(State(st): State<Arc<ServiceState>>, body: Bytes) -> Result<Response, Refused> {
    let req: VoteRequest<TypeConfig> = accept(&st, &body)?;
    Ok(reply(&st.store().raft().vote(req).await))
}

/// The snapshot transfer this node is receiving. One at a time: the state machine receives
/// into one file, and the last chunk installs whatever it holds.
#[derive(Default)]
struct Inbox(tokio::sync::Mutex<Option<Receiving>>);

struct Receiving {
    transfer: u64,
    vote: Vote,
    meta: SnapshotMeta,
    /// Bytes written so far: where the next chunk must start.
    next: u64,
    file: SnapshotData,
    /// When the last chunk arrived: an abandoned transfer gives way to any new one.
    last: Instant,
}

/// One chunk of a snapshot ([`SnapshotChunk`]).
async fn snapshot(
    State(st): State<Arc<ServiceState>>,
    Extension(inbox): Extension<Arc<Inbox>>,
    body: Bytes,
) -> Result<Response, Refused> {
    let chunk: SnapshotChunk = accept(&st, &body)?;
    // The chunk is decoded: do not hold it twice while it is written.
    drop(body);
    possible(st.store().node_id(), &chunk).map_err(Refused::Inconsistent)?;
    Ok(reply(&receive(&st, &inbox, chunk).await))
}

/// Refuses, at every chunk, a snapshot no leader could send with this vote. Openraft's
/// `install_full_snapshot` trusts its input (later 0.10 releases panic on one that ends beyond
/// the leadership of its vote); a corrupt or forged request must not get that far. A leader's vote is also committed
/// and names another node (one naming this node would make it leader), and its snapshot holds
/// the membership entry it carries.
fn possible(me: NodeId, c: &SnapshotChunk) -> Result<(), String> {
    let vote = &c.vote;
    if !vote.is_committed() || vote.leader_id().node_id == me {
        return Err(format!(
            "snapshot sent with vote {vote}, not another node's leadership"
        ));
    }
    let last = c.meta.last_log_id.as_ref();
    if let Some(l) = last.filter(|l| *l.committed_leader_id() > vote.leader_id().to_committed()) {
        return Err(format!(
            "snapshot up to {l} cannot come from the leader of vote {vote}"
        ));
    }
    if let Some(m) = c
        .meta
        .last_membership
        .log_id()
        .as_ref()
        .filter(|m| last.is_none_or(|l| *m > l || m.index > l.index))
    {
        return Err(format!(
            "snapshot up to {last:?} holds a membership from beyond it, at {m}"
        ));
    }
    Ok(())
}

/// The other snapshots openraft's `install_full_snapshot` must not see: one past this node's
/// committed log id that is not also at a greater index (it contradicts committed entries, and
/// installing it would truncate the log after the committed index).
/// `None` if `meta` is not one.
async fn contradicts_committed(raft: &Raft, meta: &SnapshotMeta) -> Option<String> {
    let last = meta.last_log_id?;
    let committed = raft
        .with_raft_state(|s| s.committed().copied())
        .await
        .ok()??;
    (last > committed && last.index <= committed.index).then(|| {
        format!("snapshot up to {last} contradicts this node's committed log (up to {committed})")
    })
}

/// Writes a chunk into the transfer it continues (or starts), and installs the snapshot after
/// the last one.
async fn receive(st: &ServiceState, inbox: &Inbox, c: SnapshotChunk) -> SnapshotReply {
    let store = st.store();
    let raft = store.raft();
    // A leader this node knows to be deposed learns it now, not after sending everything
    // (openraft would refuse the snapshot at the end).
    let current = raft.metrics().borrow_watched().vote;
    if current > c.vote {
        return SnapshotReply::Done(SnapshotResponse::new(current));
    }
    let mut slot = inbox.0.lock().await;
    if c.offset == 0 {
        // A transfer the sender gave up on (no chunk within its per-chunk timeout) gives way.
        let idle = raft.config().install_snapshot_timeout();
        if let Some(r) = slot.as_ref() {
            if r.transfer != c.transfer && r.vote > c.vote && r.last.elapsed() < idle {
                return SnapshotReply::Failed(format!(
                    "receiving a snapshot from a newer leader (vote {})",
                    r.vote
                ));
            }
        }
        *slot = None;
        // No use receiving what openraft must not be given.
        if let Some(why) = contradicts_committed(raft, &c.meta).await {
            return SnapshotReply::Failed(why);
        }
        let file = match raft.begin_receiving_snapshot().await {
            Ok(f) => f,
            Err(e) => return SnapshotReply::Failed(format!("cannot receive a snapshot: {e}")),
        };
        *slot = Some(Receiving {
            transfer: c.transfer,
            vote: c.vote,
            meta: c.meta.clone(),
            next: 0,
            file,
            last: Instant::now(),
        });
    }
    let mut r = match slot.take() {
        Some(r) if r.transfer == c.transfer => r,
        other => {
            // Another transfer's, if any, stays.
            *slot = other;
            return SnapshotReply::Restart(format!(
                "no snapshot transfer {:016x} in progress here (this node restarted, or another transfer replaced it)",
                c.transfer
            ));
        }
    };
    // Anything else ends the transfer (`r` is dropped): the sender starts over.
    if r.next != c.offset || r.vote != c.vote || r.meta != c.meta {
        return SnapshotReply::Restart(format!(
            "snapshot chunk at offset {} does not continue transfer {:016x} (at offset {})",
            c.offset, c.transfer, r.next
        ));
    }
    // Flushed: a write error (a full disk) is this chunk's, not a later one's.
    let written = async {
        r.file.write_all(&c.data).await?;
        r.file.flush().await
    };
    if let Err(e) = written.await {
        return SnapshotReply::Failed(format!("cannot write the snapshot: {e}"));
    }
    r.next += c.data.len() as u64;
    r.last = Instant::now();
    store.leader_contact().record();
    if !c.done {
        *slot = Some(r);
        return SnapshotReply::Received;
    }
    // The lock stays held while Raft installs: no other transfer starts meanwhile.
    install(raft, r).await
}

/// Hands a received snapshot to Raft.
async fn install(raft: &Raft, r: Receiving) -> SnapshotReply {
    // Checked again, with the committed log id as it is now: it may have grown during the
    // transfer. It only grows, so only a snapshot forged to end among entries committed
    // between here and Raft's own check could still fail that; no leader sends one.
    if let Some(why) = contradicts_committed(raft, &r.meta).await {
        return SnapshotReply::Failed(why);
    }
    let snapshot = Snapshot {
        meta: r.meta,
        snapshot: r.file,
    };
    match raft.install_full_snapshot(r.vote, snapshot).await {
        Ok(resp) => SnapshotReply::Done(resp),
        Err(fatal) => SnapshotReply::Failed(format!("Raft stopped: {fatal}")),
    }
}

async fn cluster(State(st): State<Arc<ServiceState>>, body: Bytes) -> Result<Response, Refused> {
    let req: ClusterRequest = accept(&st, &body)?;
    let resp = handle(&st, req).await.unwrap_or_else(ClusterResponse::Err);
    Ok(reply(&resp))
}

/// The credentials a request carries and the permissions (all of them) it needs; `None` for
/// the node-to-node messages that are not checked (metadata, pre-votes, elections, removal
/// notices: node TLS protects those, as it does Raft's RPCs).
fn needs(req: &ClusterRequest) -> Option<(Option<&Credentials>, &'static [Perm])> {
    use ClusterRequest as R;
    match req {
        R::Meta | R::Elect | R::Removed | R::PreVote { .. } | R::CdcRecords { .. } => None,
        R::Join {
            voter: true, creds, ..
        }
        | R::Notify { creds, .. } => Some((creds.as_ref(), &[Perm::Join])),
        // A non-voter may join with either permission (see `allowed`).
        R::Join {
            voter: false,
            creds,
            ..
        } => Some((creds.as_ref(), &[Perm::JoinReadOnly])),
        R::Remove { creds, .. } => Some((creds.as_ref(), &[Perm::Remove])),
        R::Execute { creds, .. } | R::ExecuteEach { creds, .. } | R::Tx { creds, .. } => {
            Some((creds.as_ref(), &[Perm::Execute]))
        }
        R::Query { creds, .. } | R::ReadIndex { creds } => Some((creds.as_ref(), &[Perm::Query])),
        R::Request { creds, .. } => Some((creds.as_ref(), &[Perm::Execute, Perm::Query])),
        R::Backup { creds, .. } => Some((creds.as_ref(), &[Perm::Backup])),
        R::Load { creds, .. } => Some((creds.as_ref(), &[Perm::Load])),
        R::Stepdown { creds, .. } => Some((creds.as_ref(), &[Perm::LeaderOps])),
    }
}

/// Does this node's auth file allow `req`? Always, when auth is off.
fn allowed(auth: Option<&AuthStore>, req: &ClusterRequest) -> bool {
    let (Some(auth), Some((creds, perms))) = (auth, needs(req)) else {
        return true;
    };
    if auth.check_all(creds, perms) {
        return true;
    }
    // `join` covers joining as a non-voter too.
    matches!(req, ClusterRequest::Join { voter: false, .. }) && auth.check(creds, Perm::Join)
}

/// The count of requests of `req`'s type (rqlite's `cluster` map), for those it counts.
fn counter_of<'a>(c: &'a ClusterCounters, req: &ClusterRequest) -> Option<&'a Counter> {
    use ClusterRequest as R;
    Some(match req {
        R::Meta => &c.get_node_api_req,
        R::Join { .. } => &c.join_req,
        R::Notify { .. } => &c.notify_req,
        R::Remove { .. } => &c.remove_node_req,
        R::Execute { .. } | R::ExecuteEach { .. } => &c.execute_req,
        R::Query { .. } => &c.query_req,
        R::Request { .. } | R::Tx { .. } => &c.request_req,
        R::Backup { .. } => &c.backup_req,
        R::Load { .. } => &c.load_req,
        R::Stepdown { .. } => &c.stepdown_req,
        R::PreVote { .. } | R::Removed | R::Elect | R::ReadIndex { .. } | R::CdcRecords { .. } => {
            return None
        }
    })
}

/// Forwarded requests are served here, never forwarded again (no forwarding loops).
async fn handle(st: &ServiceState, req: ClusterRequest) -> Result<ClusterResponse, ClusterError> {
    let c = &st.store().metrics().cluster;
    if let Some(counter) = counter_of(c, &req) {
        counter.inc();
    }
    if !allowed(st.auth.as_deref(), &req) {
        c.auth_fail.inc();
        return Err(ClusterError::Unauthorized("unauthorized".into()));
    }
    let store = st.store();
    let here = Forwarding {
        forward: false,
        timeout: None,
        creds: None,
    };
    match req {
        ClusterRequest::Meta => {
            let m = store.raft().metrics().borrow_watched().clone();
            c.get_node_api_resp.inc();
            Ok(ClusterResponse::Meta(NodeMeta {
                node: store.me().clone(),
                api_url: store.me().api_url(),
                commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                version: crate::VERSION.to_string(),
            }))
        }
        ClusterRequest::Join {
            node,
            voter,
            creds: _,
        } => {
            store.add_member(node, voter).await?;
            Ok(ClusterResponse::Ok)
        }
        ClusterRequest::Notify { node, creds: _ } => {
            st.bootstrap.notified(node).await;
            Ok(ClusterResponse::Ok)
        }
        ClusterRequest::Remove { id, creds: _ } => {
            st.cluster.remove_and_notify(&id).await?;
            Ok(ClusterResponse::Ok)
        }
        ClusterRequest::PreVote { last_log } => {
            Ok(ClusterResponse::Granted(store.would_vote(last_log).await))
        }
        ClusterRequest::Removed => {
            store.removed().await;
            Ok(ClusterResponse::Ok)
        }
        ClusterRequest::Execute { req, creds: _ } => {
            Ok(ClusterResponse::Reply(store.execute(req).await?))
        }
        ClusterRequest::ExecuteEach { reqs, creds: _ } => {
            Ok(ClusterResponse::Replies(store.execute_each(reqs).await?))
        }
        ClusterRequest::Query {
            req,
            opts,
            creds: _,
        } => Ok(ClusterResponse::Reply(store.query(req, &opts).await?)),
        ClusterRequest::Request {
            req,
            opts,
            creds: _,
        } => Ok(ClusterResponse::Reply(store.request(req, &opts).await?)),
        ClusterRequest::CdcRecords { from, to } => {
            let Some(cdc) = &st.cdc else {
                return Ok(ClusterResponse::CdcRecords(None));
            };
            let applied = store.applied().lock().last_applied.map_or(0, |l| l.index);
            let held = cdc
                .held(from, to, applied)
                .await
                .map_err(|e| ClusterError::Store(crate::store::StoreError::Io(e)))?;
            Ok(ClusterResponse::CdcRecords(held.map(|(rs, through)| {
                let rs = rs
                    .into_iter()
                    .map(|r| {
                        (
                            r.index,
                            r.ts_ms,
                            r.events,
                            serde_bytes::ByteBuf::from(r.json),
                        )
                    })
                    .collect();
                (rs, through)
            })))
        }
        ClusterRequest::ReadIndex { creds: _ } => Ok(ClusterResponse::Index(
            store
                .read_index(crate::store::DEFAULT_LINEARIZABLE_TIMEOUT)
                .await?,
        )),
        ClusterRequest::Backup {
            sql,
            vacuum,
            tables,
            creds: _,
        } => {
            store.ensure_leader().await?;
            Ok(ClusterResponse::Bytes(
                store.backup(sql, vacuum, tables).await?,
            ))
        }
        ClusterRequest::Load {
            image,
            dump,
            creds: _,
        } => {
            store.ensure_leader().await?;
            match (image, dump) {
                (Some(img), _) => Ok(ClusterResponse::Reply(store.load(img).await?)),
                (None, Some(sql)) => {
                    let req = crate::command::Request {
                        statements: vec![crate::command::Statement::new(sql)],
                        transaction: false,
                        db_timeout_ms: 0,
                    };
                    Ok(ClusterResponse::Reply(store.execute(req).await?))
                }
                (None, None) => Ok(ClusterResponse::Reply(crate::store::Reply::default())),
            }
        }
        ClusterRequest::Tx { call, creds: _ } => Ok(ClusterResponse::Tx(store.tx(call).await?)),
        ClusterRequest::Stepdown { id, creds: _ } => {
            st.cluster.stepdown(id, &here).await?;
            Ok(ClusterResponse::Ok)
        }
        ClusterRequest::Elect => {
            // A node that cannot apply entries would answer no write as leader.
            if let Some(problem) = store.disk_too_full() {
                return Err(crate::store::StoreError::Raft(format!(
                    "this node cannot lead: {problem}"
                ))
                .into());
            }
            store.metrics().store.elections.inc();
            store.campaign().await?;
            Ok(ClusterResponse::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Membership, StoredMembership};

    fn chunk(vote: Vote, last: Option<(u64, u64, u64)>, membership_at: u64) -> SnapshotChunk {
        let log_id =
            |(term, node, index)| openraft::testing::log_id::<TypeConfig>(term, node, index);
        let nodes = std::collections::BTreeMap::from([(1, crate::raft::NodeInfo::default())]);
        let membership = Membership::new(vec![[1].into()], nodes).unwrap();
        SnapshotChunk {
            vote,
            meta: SnapshotMeta {
                last_log_id: last.map(log_id),
                last_membership: StoredMembership::new(
                    Some(log_id((1, 1, membership_at))),
                    membership,
                ),
                snapshot_id: String::new(),
            },
            transfer: 1,
            offset: 0,
            data: Vec::new(),
            done: false,
        }
    }

    #[test]
    fn only_snapshots_a_leader_could_send_are_possible() {
        let me = 3;
        let ok = |c: &SnapshotChunk| possible(me, c).is_ok();
        // A leader (term 5, node 2) sends what it or an earlier leader wrote.
        assert!(ok(&chunk(Vote::new_committed(5, 2), Some((5, 2, 40)), 10)));
        assert!(ok(&chunk(Vote::new_committed(5, 2), Some((4, 1, 40)), 40)));
        // Log ids beyond the vote's leadership: no leader sends these.
        assert!(!ok(&chunk(Vote::new_committed(5, 2), Some((6, 1, 40)), 10)));
        assert!(!ok(&chunk(Vote::new_committed(5, 2), Some((5, 4, 40)), 10)));
        // No leader's vote: a candidate's, or this node's own.
        assert!(!ok(&chunk(Vote::new(5, 2), Some((5, 2, 40)), 10)));
        assert!(!ok(&chunk(
            Vote::new_committed(5, me),
            Some((5, 1, 40)),
            10
        )));
        // A membership from beyond the snapshot.
        assert!(!ok(&chunk(Vote::new_committed(5, 2), Some((5, 2, 40)), 41)));
    }
}
