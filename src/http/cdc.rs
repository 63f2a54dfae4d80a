//! `GET /cdc?from=INDEX`: the captured changes this node holds, from a log index on, for a
//! consumer that (re)starts from where it stopped.
//!
//! Parameters: `from` (the first index wanted; default 1), `limit` (payload items at most;
//! default 100, at most 10,000), `timeout` (long poll: wait up to this long, at most 60 s,
//! for at least one item; default: answer at once). The answer is the webhook's envelope plus
//! `"next"` (the `from` of the next call) and `"delivered"` (the cluster's delivered mark).
//! Served by any node from its own queue: every voter captures the same events.
//! 410 when `from` is at or below what this node has deleted (delivered and past `retain`);
//! 503 while this node lacks some of them (after a snapshot install, until a peer filled
//! them in); 404 when CDC is not configured.

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;

use super::error::{self, ApiError};
use super::{require_method, Call, HttpState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Bytes of payload one answer carries at most (past its first item).
const MAX_BYTES: usize = 16 << 20;

pub async fn cdc(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    let Some(cdc) = &st.cdc else {
        return Err(ApiError::Gone(
            "change data capture is not configured on this node (-cdc-config)".into(),
        ));
    };
    let int = |k: &str| -> Result<Option<u64>, ApiError> {
        call.params
            .get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("{k} must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let from = int("from")?.unwrap_or(1).max(1);
    let limit = match int("limit")? {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(ApiError::BadRequest("limit must be at least 1".into())),
        Some(n) => (n as usize).min(MAX_LIMIT),
    };
    let wait = call.params.timeout.unwrap_or_default().min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut watch = cdc.watch();
    let records = loop {
        let state = *watch.borrow_and_update();
        if from <= state.pruned {
            return Err(ApiError::Expired(format!(
                "events up to index {} are no longer held on this node (delivered, and past \"retain\" in -cdc-config); ask from {}",
                state.pruned,
                state.pruned + 1
            )));
        }
        if let Some((a, b)) = state.gap.filter(|(_, b)| *b >= from) {
            return Err(ApiError::Unavailable(format!(
                "this node lacks the events of entries {a} to {b} (it installed a snapshot instead of applying them) and is fetching them from a peer: retry, or ask another node"
            )));
        }
        let records = cdc
            .read(from, limit, MAX_BYTES)
            .await
            .map_err(ApiError::Internal)?;
        if !records.is_empty() || tokio::time::Instant::now() >= deadline {
            break records;
        }
        if tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_err()
        {
            continue;
        }
    };
    let next = records.last().map_or(from, |r| r.index + 1);
    let mut body = crate::cdc::envelope::envelope(
        &cdc.config().service_id,
        cdc.node_id(),
        records.iter().map(|r| r.json.as_slice()),
    );
    // The envelope ends with '}': the two extra fields go before it.
    body.pop();
    let delivered = st.store.cdc_progress().delivered;
    body.extend_from_slice(format!(",\"next\":{next},\"delivered\":{delivered}}}").as_bytes());
    Ok(error::json(String::from_utf8_lossy(&body).into_owned()))
}
