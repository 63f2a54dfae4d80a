//! Responses and the one place that picks HTTP status codes.
//!
//! rqlite reports SQL errors per statement and some store errors as a top-level `error`, both
//! inside a 200 JSON body; everything else is a status code with a plain-text body.

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
    #[error("unauthorized")]
    Unauthorized,
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
            ApiError::QueueWaitTimeout => plain(StatusCode::REQUEST_TIMEOUT, "queue wait timeout"),
            ApiError::LeaderNotFound => plain(StatusCode::SERVICE_UNAVAILABLE, "leader not found"),
            ApiError::Unavailable(m) => plain(StatusCode::SERVICE_UNAVAILABLE, &m),
            ApiError::Internal(m) => plain(StatusCode::INTERNAL_SERVER_ERROR, &m),
            ApiError::OutcomeUnknown(m) => plain(StatusCode::GATEWAY_TIMEOUT, &m),
            ApiError::Unauthorized => empty(StatusCode::UNAUTHORIZED, None),
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

/// How an error reaches the client: a top-level `error` in a 200 body, or a status code.
pub enum ErrorReply {
    InBody(String),
    Status(ApiError),
}

/// The mapping of store and cluster errors to what the client sees.
pub fn classify_cluster_error(e: ClusterError) -> ErrorReply {
    match e {
        ClusterError::Store(e) => match e {
            StoreError::DisallowedPragma | StoreError::StaleRead | StoreError::Timeout(_) => {
                ErrorReply::InBody(e.to_string())
            }
            StoreError::NotLeader { leader: None } => ErrorReply::Status(ApiError::LeaderNotFound),
            // Forwarding was not possible (or not allowed) and no redirect was asked for.
            StoreError::NotLeader { leader: Some(_) } => ErrorReply::InBody("not leader".into()),
            StoreError::InvalidImage(m) => ErrorReply::Status(ApiError::BadRequest(format!(
                "invalid SQLite database: {m}"
            ))),
            StoreError::NotSingleNode => {
                ErrorReply::Status(ApiError::Unavailable("not single-node".into()))
            }
            StoreError::Closed | StoreError::Raft(_) => {
                ErrorReply::Status(ApiError::Unavailable(e.to_string()))
            }
            StoreError::Sqlite(_) | StoreError::Io(_) => {
                ErrorReply::Status(ApiError::Internal(e.to_string()))
            }
        },
        // Nothing was applied: the client may retry.
        e @ ClusterError::LeaderUnreachable { .. } => {
            ErrorReply::Status(ApiError::Unavailable(e.to_string()))
        }
        // The write may or may not have been applied: never retried for the client.
        e @ ClusterError::OutcomeUnknown { .. } => {
            ErrorReply::Status(ApiError::OutcomeUnknown(e.to_string()))
        }
        ClusterError::Unauthorized(_) => ErrorReply::Status(ApiError::Unauthorized),
    }
}

/// A plain-text error body as Go's `http.Error` writes it.
pub fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    h.insert(
        "X-Content-Type-Options",
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
