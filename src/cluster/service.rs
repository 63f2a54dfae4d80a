//! The internode service on the Raft listener: openraft's RPCs and the cluster service
//! (metadata, join, notify, remove, forwarded requests).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::bootstrap::Bootstrapper;
use super::proto::Credentials;
use super::proto::{ClusterRequest, ClusterResponse, NodeMeta, PATH_CLUSTER};
use super::{Cluster, ClusterError, Forwarding};
use crate::auth::{AuthStore, Perm};
use crate::metrics::{ClusterCounters, Counter};
use crate::raft::network::{Isolation, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft::transport::{decode, encode};
use crate::raft::{NodeId, TypeConfig};
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
/// [`REPLICATION_BATCH_BYTES`](crate::raft::log_store::REPLICATION_BATCH_BYTES)).
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
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Isolated => {
                (StatusCode::SERVICE_UNAVAILABLE, "node is isolated").into_response()
            }
            Refused::Malformed(e) => (StatusCode::BAD_REQUEST, e).into_response(),
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
    let resp = st.store().raft().append_entries(req).await;
    if resp.as_ref().is_ok_and(|r| r.is_success()) {
        st.store().leader_contact().record();
    }
    Ok(reply(&resp))
}

async fn vote(State(st): State<Arc<ServiceState>>, body: Bytes) -> Result<Response, Refused> {
    let req: VoteRequest<NodeId> = accept(&st, &body)?;
    Ok(reply(&st.store().raft().vote(req).await))
}

async fn snapshot(State(st): State<Arc<ServiceState>>, body: Bytes) -> Result<Response, Refused> {
    let req: InstallSnapshotRequest<TypeConfig> = accept(&st, &body)?;
    let resp = st.store().raft().install_snapshot(req).await;
    if resp.is_ok() {
        st.store().leader_contact().record();
    }
    Ok(reply(&resp))
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
            let m = store.raft().metrics().borrow().clone();
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
            store.metrics().store.elections.inc();
            store
                .raft()
                .trigger()
                .elect()
                .await
                .map_err(|e| crate::store::StoreError::Raft(e.to_string()))?;
            Ok(ClusterResponse::Ok)
        }
    }
}
