//! `POST /reap` (rqlite 10): deletes snapshots older than the current one and checkpoints
//! the database's WAL, answering how many of each. Local to the node asked; never forwarded.

use axum::http::Method;
use axum::response::Response;

use super::error::{self, ApiError};
use super::{require_method, Call, HttpState};

pub async fn reap(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let r = st
        .store
        .reap()
        .await
        .map_err(|e| error::api_error(e.into()))?;
    // rqlite writes this map with Go's JSON encoder: compact, keys sorted, newline-ended.
    Ok(error::json(format!(
        "{{\"snapshots_reaped\":{},\"wals_checkpointed\":{}}}\n",
        r.snapshots_reaped, r.wals_checkpointed
    )))
}
