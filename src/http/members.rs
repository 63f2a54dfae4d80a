//! The membership endpoints: `/nodes` (who is in the cluster, probed), `/leader` (who leads,
//! and leadership transfer), `/remove`.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::db::render;
use super::error::{self, ApiError};
use super::json::Json;
use super::status::s;
use super::{require_method, Call, HttpState, VERSION};
use crate::cluster::ClusterError;
use crate::duration;
use crate::raft::NodeInfo;

/// One node as `/nodes` and `/leader` describe it.
fn node_json(n: &NodeInfo, voter: bool, leader: bool, probe: Probe) -> Json {
    let reachable = probe.error.is_none();
    let mut f: Vec<(String, Json)> = vec![("id".into(), s(&n.id))];
    if reachable {
        f.push(("api_addr".into(), s(n.api_url())));
    }
    f.push(("addr".into(), s(&n.raft_addr)));
    f.push(("version".into(), s(if reachable { VERSION } else { "" })));
    f.push(("voter".into(), Json::Bool(voter)));
    f.push(("reachable".into(), Json::Bool(reachable)));
    f.push(("leader".into(), Json::Bool(leader)));
    f.push(("time".into(), Json::Float(probe.took.as_secs_f64())));
    f.push(("time_s".into(), s(duration::format(probe.took))));
    if let Some(e) = probe.error {
        f.push(("error".into(), s(e)));
    }
    Json::Obj(f)
}

/// How a member answered its metadata call: how long the call took, answered or not (as
/// rqlite reports it), and why it failed.
struct Probe {
    took: Duration,
    error: Option<String>,
}

/// Asks a member for its metadata; this node always answers.
async fn probe(st: &HttpState, n: &NodeInfo, timeout: Duration) -> Probe {
    let t = Instant::now();
    let error = if n.id == st.store.me().id {
        None
    } else {
        match st.cluster.meta(&n.raft_addr, timeout).await {
            Ok(_) => None,
            // The peer's own failure, not "leader ... unreachable": any member is probed.
            Err(ClusterError::LeaderUnreachable { msg, .. }) => Some(msg),
            Err(e) => Some(e.to_string()),
        }
    };
    Probe {
        took: t.elapsed(),
        error,
    }
}

/// `GET /nodes`: the legacy object keyed by id, or `{"nodes":[...]}` with `ver=2`. Members
/// are probed in parallel.
pub async fn nodes(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], true)?;
    let leader = st.store.leader().map(|l| l.id);
    let timeout = call.params.timeout.unwrap_or(Duration::from_secs(30));
    let members: Vec<(NodeInfo, bool)> = st
        .store
        .members()
        .into_iter()
        .filter(|(_, voter)| *voter || call.params.nonvoters)
        .collect();
    let probes =
        futures_util::future::join_all(members.iter().map(|(n, _)| probe(st, n, timeout))).await;
    let entries: Vec<(String, Json)> = members
        .iter()
        .zip(probes)
        .map(|((n, voter), reach)| {
            let is_leader = leader.as_deref() == Some(n.id.as_str());
            (n.id.clone(), node_json(n, *voter, is_leader, reach))
        })
        .collect();
    let j = if call.params.ver.as_deref() == Some("2") {
        Json::Obj(vec![(
            "nodes".into(),
            Json::Arr(entries.into_iter().map(|(_, v)| v).collect()),
        )])
    } else {
        Json::Obj(entries)
    };
    Ok(error::json(render(&j, &call.params)))
}

/// `GET /leader` (the leader's node object) and `POST /leader` (leadership transfer, to
/// `{"id": ...}` if a body names one).
pub async fn leader(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET, Method::POST], false)?;
    if call.method == Method::POST {
        let bytes = call.body_bytes(st.max_body).await?;
        let id = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(m)) => {
                    m.get("id").and_then(|v| v.as_str()).map(str::to_string)
                }
                Ok(_) => {
                    return Err(ApiError::BadRequest(
                        "invalid JSON: expected an object".into(),
                    ))
                }
                Err(e) => return Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
            }
        };
        // Read before the hand-over: it usually completes before `stepdown` returns.
        let old = st.store.leader().map(|l| l.id);
        let served = st
            .cluster
            .stepdown(id, &super::db::forwarding(&call))
            .await
            .map_err(super::error::api_error)?;
        if call.params.wait {
            let deadline = Instant::now() + call.params.timeout.unwrap_or(Duration::from_secs(10));
            while Instant::now() < deadline && st.store.leader().map(|l| l.id) == old {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        return Ok(super::db::served_by(
            error::empty(StatusCode::OK, Some(error::JSON)),
            served.forwarded_to,
        ));
    }
    let Some(l) = st.store.leader() else {
        return Err(ApiError::LeaderNotFound);
    };
    let voter = st.store.members().iter().any(|(n, v)| n.id == l.id && *v);
    let timeout = call.params.timeout.unwrap_or(Duration::from_secs(30));
    let j = node_json(&l, voter, true, probe(st, &l, timeout).await);
    Ok(error::json(render(&j, &call.params)))
}

/// `DELETE /remove` with body `{"id":"<node id>"}`.
pub async fn remove(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::DELETE], false)?;
    let bytes = call.body_bytes(st.max_body).await?;
    let id = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => match m.get("id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            _ => return Err(ApiError::BadRequestEmpty),
        },
        _ => return Err(ApiError::BadRequestEmpty),
    };
    let rt = super::db::forwarding(&call);
    match st.cluster.remove(id, &rt).await {
        Ok(served) => Ok(super::db::served_by(
            error::empty(StatusCode::OK, None),
            served.forwarded_to,
        )),
        Err(e) => {
            Err(super::db::redirect(&call, &e, None).unwrap_or_else(|| super::error::api_error(e)))
        }
    }
}
