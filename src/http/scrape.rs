//! `GET /metrics`: the node's metrics in the Prometheus text format.
//!
//! Owns: the handler and [`NodeSampler`], which reads the node's state for each scrape from
//! its source of truth: the store's Raft metrics and log, the files on disk, the write
//! queue's channel.
//! Does not: count or name anything (`crate::metrics`).

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::error::{self, ApiError};
use super::queue::QueueDepth;
use super::{require_method, Call, HttpState};
use crate::metrics::exposition::{self, Sample, Sampler};
use crate::store::Store;

/// Reads a node's state at scrape time.
pub struct NodeSampler {
    pub store: Arc<Store>,
    pub queue: QueueDepth,
}

impl std::fmt::Debug for NodeSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSampler")
            .field("node", &self.store.me().id)
            .finish()
    }
}

impl Sampler for NodeSampler {
    fn sample(&self) -> Sample {
        let store = &self.store;
        // A copy: never hold openraft's metrics lock while asking the store anything else.
        let m = store.raft().metrics().borrow_watched().clone();
        let applied_index = m.last_applied.map(|l| l.index).unwrap_or(0);
        Sample {
            term: m.current_term,
            commit_index: store.commit_index().max(applied_index),
            applied_index,
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            is_leader: store.is_leader(),
            voters: m.membership_config.membership().voter_ids().count() as u64,
            log_entries: store.log_len() as u64,
            log_bytes: store.log_disk_size(),
            db_bytes: store.db_file_bytes(),
            snapshot_bytes: store.snapshot_file_bytes(),
            queue_depth: self.queue.get() as u64,
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    let body = exposition::encode(&st.registry)
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(error::with_body(
        StatusCode::OK,
        exposition::CONTENT_TYPE,
        body,
    ))
}
