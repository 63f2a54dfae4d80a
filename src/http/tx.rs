//! The interactive-transaction endpoints: `POST /db/tx` opens one; `/db/tx/{id}/query`,
//! `/execute`, `/request` run statements in it; `/db/tx/{id}/commit` and `/rollback` end it.
//!
//! Statements are parsed and prepared as for `/db/request` (they enter the log at commit, so
//! non-deterministic SQL is rewritten now: the client's answer and the commit-time re-run
//! must see the same SQL). Every call is served by the leader (`Cluster::tx`).

use std::time::Instant;

use axum::http::Method;
use axum::response::Response;

use super::db::{self, Shape};
use super::error::{self, ApiError};
use super::{require_method, Call, HttpState};
use crate::cluster::Served;
use crate::command::{Statement, TxMode};
use crate::store::{Reply, TxAnswer, TxCall};

/// `/db/tx...`: which call, from the path.
pub async fn tx(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    let path = call.path.trim_end_matches('/').to_string();
    let rest = path.strip_prefix("/db/tx").unwrap_or_default();
    let (id, op) = match rest.trim_start_matches('/').split_once('/') {
        _ if rest.is_empty() => (String::new(), "open"),
        Some((id, op)) if !id.is_empty() && !rest.starts_with("//") => (id.to_string(), op),
        _ => return Err(ApiError::NotFound),
    };
    let mode = match op {
        "open" => None,
        "query" => Some(TxMode::Query),
        "execute" => Some(TxMode::Execute),
        "request" => Some(TxMode::Request),
        "commit" | "rollback" => None,
        other => {
            return Err(ApiError::Gone(format!(
                "no transaction call {other:?}: use /db/tx/{{id}}/query, /execute, /request, /commit or /rollback"
            )))
        }
    };
    if mode == Some(TxMode::Query) {
        require_method(&call, &[Method::GET, Method::POST], true)?;
    } else {
        require_method(&call, &[Method::POST], true)?;
    }
    let started = Instant::now();
    let fwd = db::forwarding(&call);
    let tx_call = match (op, mode) {
        ("open", _) => TxCall::Open,
        ("commit", _) => TxCall::Commit { id },
        ("rollback", _) => TxCall::Rollback { id },
        (_, Some(mode)) => {
            let stmts = match (&call.method, &call.params.q) {
                (&Method::GET, Some(q)) => vec![Statement::new(q.clone())],
                (&Method::GET, None) => Vec::new(),
                _ => db::statements(st, &mut call, mode != TxMode::Request).await?,
            };
            let Some(req) = db::prepare(st, &call, stmts, true)? else {
                return Ok(db::no_results(&call.params));
            };
            TxCall::Run { id, req, mode }
        }
        _ => return Err(ApiError::NotFound),
    };
    let served = st
        .cluster
        .tx(tx_call, &fwd)
        .await
        .map_err(|e| db::refused(&call, e))?;
    let Served {
        value,
        forwarded_to,
    } = served;
    let body = match value {
        TxAnswer::Ran(reply) => {
            let shape = match mode {
                Some(TxMode::Query) => Shape::Query,
                Some(TxMode::Execute) => Shape::Execute,
                _ => Shape::Request,
            };
            let outcome = Ok(Served {
                value: reply,
                forwarded_to,
            });
            return db::data_reply(&call, started, outcome, shape);
        }
        TxAnswer::Opened { id, index } => serde_json::json!({ "id": id, "index": index }),
        TxAnswer::Committed(Reply { raft_index, .. }) => {
            serde_json::json!({ "results": [], "raft_index": raft_index })
        }
        TxAnswer::RolledBack => serde_json::json!({ "results": [] }),
    };
    Ok(db::served_by(error::json(body.to_string()), forwarded_to))
}
