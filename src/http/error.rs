//! Responses and the one place that picks HTTP status codes.
//!
//! SQL errors are reported per statement inside a 200 JSON body, as rqlite does; everything
//! else is a status code with a plain-text body (rqlite's top-level `error` in a 200, for
//! `disallowed pragma` and `stale read`, becomes a 400 and a 503 here).

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use crate::cluster::ClusterError;
use crate::store::StoreError;

pub const JSON: &str = "application/json; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// An error answered by status code (the JSON-in-200 cases never become an `ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// 400 with an empty body (rqlite's `/remove` does this).
    #[error("bad request")]
    BadRequestEmpty,
    #[error("method not allowed")]
    MethodNotAllowed { json: bool },
    #[error("not found")]
    NotFound,
    #[error("request body too large")]
    TooLarge,
    /// Too large to handle: more statements than a request may carry, a body a leader refused.
    #[error("{0}")]
    Oversized(String),
    #[error("queue wait timeout")]
    QueueWaitTimeout,
    #[error("leader not found")]
    LeaderNotFound,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A forwarded request got no answer: it may or may not have been applied.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A read with `min_index` timed out before this node applied that index: nothing was
    /// read, and the read may be sent again.
    #[error("{0}")]
    NotCaughtUp(String),
    #[error("unauthorized")]
    Unauthorized,
    /// 404 with a reason (an unknown or expired transaction).
    #[error("{0}")]
    Gone(String),
    /// 410: what was asked for existed once and is no longer kept (CDC events).
    #[error("{0}")]
    Expired(String),
    /// 409: an interactive transaction conflicted or was aborted; nothing of it was applied.
    #[error("{0}")]
    Conflict(String),
    /// `redirect` on a non-leader: 301 to the same path and query on the leader.
    #[error("moved")]
    Redirect {
        location: String,
        content_type: Option<&'static str>,
    },
}

impl ApiError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            ApiError::BadRequest(m) => plain(StatusCode::BAD_REQUEST, &m),
            ApiError::BadRequestEmpty => empty(StatusCode::BAD_REQUEST, None),
            ApiError::MethodNotAllowed { json } => {
                empty(StatusCode::METHOD_NOT_ALLOWED, json.then_some(JSON))
            }
            ApiError::NotFound => empty(StatusCode::NOT_FOUND, None),
            ApiError::TooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            ApiError::Oversized(m) => plain(StatusCode::PAYLOAD_TOO_LARGE, &m),
            ApiError::QueueWaitTimeout => plain(StatusCode::REQUEST_TIMEOUT, "queue wait timeout"),
            ApiError::LeaderNotFound => plain(StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
            ApiError::Unavailable(m) => plain(StatusCode::SERVICE_UNAVAILABLE, &m),
            ApiError::Internal(m) => plain(StatusCode::INTERNAL_SERVER_ERROR, &m),
            ApiError::OutcomeUnknown(m) | ApiError::NotCaughtUp(m) => {
                plain(StatusCode::GATEWAY_TIMEOUT, &m)
            }
            ApiError::Unauthorized => empty(StatusCode::UNAUTHORIZED, None),
            ApiError::Gone(m) => plain(StatusCode::NOT_FOUND, &m),
            ApiError::Conflict(m) => plain(StatusCode::CONFLICT, &m),
            ApiError::Expired(m) => plain(StatusCode::GONE, &m),
            ApiError::Redirect {
                location,
                content_type,
            } => {
                let mut r = empty(StatusCode::MOVED_PERMANENTLY, content_type);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
        }
    }
}

/// The one table from a store or cluster error to what the client sees. Every failure is a
/// status code with a plain-text reason, the same whichever node the client asked (the
/// serving node's error travels back unchanged); the only errors inside a 200 are rqlite's
/// per-statement SQL errors. 503: nothing happened, try again (here later, or elsewhere);
/// 504: the request waited its whole time: a write was sent and its outcome is unknown, or
/// a read's node did not apply its `min_index` in time (nothing was read; safe to retry).
pub fn api_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::Store(e) => match e {
            StoreError::DisallowedPragma => ApiError::BadRequest(e.to_string()),
            StoreError::InvalidImage(m) => {
                ApiError::BadRequest(format!("invalid SQLite database: {m}"))
            }
            // A node that cannot confirm it leads knows of no leader (forwarding, when it
            // was possible, already happened).
            StoreError::NotLeader { .. } => ApiError::LeaderNotFound,
            StoreError::StaleRead
            | StoreError::Timeout(_)
            | StoreError::NotSingleNode
            | StoreError::Closed
            | StoreError::Raft(_) => ApiError::Unavailable(e.to_string()),
            StoreError::OutcomeUnknown(m) => ApiError::OutcomeUnknown(m),
            StoreError::NotCaughtUp { .. } => ApiError::NotCaughtUp(e.to_string()),
            // A transfer that cannot succeed as asked: rqlite's 500, and no retry invited.
            StoreError::Sqlite(_) | StoreError::Io(_) | StoreError::StepDown(_) => {
                ApiError::Internal(e.to_string())
            }
            StoreError::TxNotFound(m) => ApiError::Gone(m),
            // Both mean: nothing of the transaction was applied; run it again from the start.
            StoreError::TxConflict(m) | StoreError::TxAborted(m) => ApiError::Conflict(m),
            StoreError::TxTooLarge(m) => ApiError::Oversized(m),
        },
        // Nothing was applied: the client may retry.
        e @ ClusterError::LeaderUnreachable { .. } => ApiError::Unavailable(e.to_string()),
        // The write may or may not have been applied: never retried for the client.
        e @ ClusterError::OutcomeUnknown { .. } => ApiError::OutcomeUnknown(e.to_string()),
        ClusterError::Unauthorized(_) => ApiError::Unauthorized,
        e @ ClusterError::Refused { status: 413, .. } => ApiError::Oversized(e.to_string()),
        e @ ClusterError::Refused { .. } => ApiError::Unavailable(e.to_string()),
    }
}

/// A plain-text error body as Go's `http.Error` writes it.
pub fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A response with no body and, optionally, a content type.
pub fn empty(status: StatusCode, content_type: Option<&'static str>) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// A 200 (or other) response with a body of the given content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A 200 JSON response.
pub fn json(body: String) -> Response<Body> {
    with_body(StatusCode::OK, JSON, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeInfo;

    fn status(e: ClusterError) -> (u16, String) {
        let r = api_error(e).into_response();
        let status = r.status().as_u16();
        (status, format!("{status}"))
    }

    /// Every error the store and the cluster produce, and the status it gets.
    #[test]
    fn every_error_has_its_status_code() {
        let leader = NodeInfo {
            id: "2".into(),
            raft_addr: "h:2".into(),
            api_addr: "h:1".into(),
            api_https: false,
        };
        let s = |e: StoreError| ClusterError::Store(e);
        let table: Vec<(ClusterError, u16)> = vec![
            (s(StoreError::DisallowedPragma), 400),
            (s(StoreError::InvalidImage("bad".into())), 400),
            (s(StoreError::NotLeader { leader: None }), 503),
            (
                s(StoreError::NotLeader {
                    leader: Some(leader),
                }),
                503,
            ),
            (s(StoreError::StaleRead), 503),
            (s(StoreError::Timeout("read".into())), 503),
            (s(StoreError::NotSingleNode), 503),
            (s(StoreError::Closed), 503),
            (s(StoreError::Raft("x".into())), 503),
            (s(StoreError::OutcomeUnknown("x".into())), 504),
            (
                s(StoreError::NotCaughtUp {
                    min_index: 9,
                    applied: 3,
                }),
                504,
            ),
            (s(StoreError::Sqlite("x".into())), 500),
            (s(StoreError::Io("x".into())), 500),
            (s(StoreError::StepDown("x".into())), 500),
            (s(StoreError::TxNotFound("x".into())), 404),
            (s(StoreError::TxConflict("x".into())), 409),
            (s(StoreError::TxAborted("x".into())), 409),
            (s(StoreError::TxTooLarge("x".into())), 413),
            (
                ClusterError::LeaderUnreachable {
                    addr: "a".into(),
                    msg: "m".into(),
                },
                503,
            ),
            (
                ClusterError::OutcomeUnknown {
                    addr: "a".into(),
                    msg: "m".into(),
                },
                504,
            ),
            (ClusterError::Unauthorized("u".into()), 401),
            (
                ClusterError::Refused {
                    addr: "a".into(),
                    status: 413,
                    msg: "m".into(),
                },
                413,
            ),
            (
                ClusterError::Refused {
                    addr: "a".into(),
                    status: 400,
                    msg: "m".into(),
                },
                503,
            ),
        ];
        for (e, want) in table {
            let what = format!("{e:?}");
            assert_eq!(status(e).0, want, "{what}");
        }
    }

    /// The error survives the internode hop exactly.
    #[test]
    fn errors_cross_the_wire_unchanged() {
        let e = ClusterError::Store(StoreError::OutcomeUnknown("x".into()));
        let bytes = crate::raft::transport::encode(&e).unwrap_or_default();
        let back: ClusterError =
            crate::raft::transport::decode(&bytes).unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(back, e);
    }
}
