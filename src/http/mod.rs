//! The public HTTP API, wire-compatible with rqlite's.
//!
//! Owns: routing (rqlite's prefix matching), parameter and body parsing, response encoding, the
//! write queue, the choice of status codes (`error.rs`, nowhere else), and the web console's
//! embedded page (`console/`).
//! Does not: execute SQL or decide leadership; it asks `store`.

pub mod body;
pub mod cdc;
pub mod console;
pub mod db;
pub mod error;
mod interfaces;
pub mod json;
pub mod members;
pub mod params;
pub mod queue;
pub mod reap;
pub mod scrape;
pub mod status;
pub mod tx;
pub mod vars;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;

use crate::auth::{AuthStore, Credentials, Perm};
use crate::cluster::Cluster;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::Store;
use error::ApiError;
use params::QueryParams;
use queue::WriteQueue;

pub use crate::VERSION;

/// Everything the handlers share.
pub struct HttpState {
    pub store: Arc<Store>,
    pub cluster: Arc<Cluster>,
    pub queue: WriteQueue,
    pub max_body: usize,
    /// Statements one request may carry (`-http-max-statements`).
    pub max_statements: usize,
    pub started: SystemTime,
    /// The address the listener is bound to, for `/status`.
    pub bind_addr: String,
    /// The node's counters (`/debug/vars`) and the registry over them (`/metrics`).
    pub metrics: Arc<Metrics>,
    pub registry: prometheus_client::registry::Registry,
    /// The node's state now (term, indexes, sizes), for `/debug/vars` and `/metrics`.
    pub sampler: Arc<dyn crate::metrics::exposition::Sampler>,
    /// The discovery backend, for `disco` in `/status`.
    pub disco: Option<crate::cluster::discover::Disco>,
    /// `-auth`: when set, every endpoint checks its permission first.
    pub auth: Option<Arc<AuthStore>>,
    /// `-http-allow-origin`: the `Access-Control-Allow-Origin` of every response.
    pub allow_origin: Option<HeaderValue>,
    /// `-cdc-config`: change data capture, for `GET /cdc` and `/status`.
    pub cdc: Option<Arc<crate::cdc::Cdc>>,
    /// `-raft-reap-node-timeout`, for `/status`.
    pub reap_node_timeout: std::time::Duration,
    /// `-raft-reap-read-only-node-timeout`, for `/status`.
    pub reap_read_only_node_timeout: std::time::Duration,
}

/// Builds the router: one dispatcher, because rqlite routes by path prefix.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            common_headers,
        ))
        .with_state(state)
}

const X_RQLITE_VERSION: HeaderName = HeaderName::from_static("x-rqlite-version");
pub(super) const X_RQLITE_SERVED_BY: HeaderName = HeaderName::from_static("x-rqlite-served-by");

/// Headers rqlite puts on every response (CORS, version, and the auth challenge when `-auth`
/// is set).
async fn common_headers(State(st): State<Arc<HttpState>>, mut r: Response) -> Response {
    let h = r.headers_mut();
    // rqlite 8 announces Authorization and credentials whether or not auth is on (golden
    // corrections, item 1); the challenge only when it is.
    // Header names as constants: a string name is parsed, and a mixed-case one copied to
    // the heap, on every response (hyper writes names in lower case either way).
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if st.auth.is_some() {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"rqlite\""),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, GET, POST"),
    );
    if let Some(origin) = &st.allow_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    h.insert(X_RQLITE_VERSION, HeaderValue::from_static(VERSION));
    r
}

/// The endpoints, matched as rqlite matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Root,
    /// `/console`, redirected to `/console/`.
    ConsoleRoot,
    /// `/console/` and the files under it: the web console.
    Console,
    Execute,
    Query,
    Request,
    /// `/db/sql`: how statements would be rewritten.
    Sql,
    Backup,
    Load,
    Boot,
    Status,
    Nodes,
    Readyz,
    Leader,
    Remove,
    Snapshot,
    Reap,
    DebugVars,
    Metrics,
    /// `/db/tx` and `/db/tx/{id}/...`: interactive transactions.
    Tx,
    /// `/cdc`: captured changes from an index on.
    Cdc,
}

impl Endpoint {
    /// The permissions (all of them) an endpoint needs when auth is on (spec section 1.2).
    fn perms(self) -> &'static [Perm] {
        match self {
            // A redirect reveals nothing; the page it leads to asks for `ui`.
            Endpoint::Root | Endpoint::ConsoleRoot => &[],
            Endpoint::Console => &[Perm::Ui],
            Endpoint::Execute | Endpoint::Tx => &[Perm::Execute],
            Endpoint::Query | Endpoint::Sql | Endpoint::Cdc => &[Perm::Query],
            Endpoint::Request => &[Perm::Execute, Perm::Query],
            Endpoint::Backup => &[Perm::Backup],
            Endpoint::Load | Endpoint::Boot => &[Perm::Load],
            Endpoint::Status | Endpoint::Nodes | Endpoint::DebugVars | Endpoint::Metrics => {
                &[Perm::Status]
            }
            Endpoint::Readyz => &[Perm::Ready],
            Endpoint::Leader => &[Perm::LeaderOps],
            Endpoint::Remove => &[Perm::Remove],
            Endpoint::Snapshot | Endpoint::Reap => &[Perm::Snapshot],
        }
    }
}

impl Endpoint {
    /// The `endpoint` label of the request metrics.
    fn label(self) -> &'static str {
        match self {
            Endpoint::Root => "root",
            Endpoint::ConsoleRoot | Endpoint::Console => "console",
            Endpoint::Execute => "execute",
            Endpoint::Query => "query",
            Endpoint::Request => "request",
            Endpoint::Tx => "tx",
            Endpoint::Cdc => "cdc",
            Endpoint::Sql => "sql",
            Endpoint::Backup => "backup",
            Endpoint::Load => "load",
            Endpoint::Boot => "boot",
            Endpoint::Status => "status",
            Endpoint::Nodes => "nodes",
            Endpoint::Readyz => "readyz",
            Endpoint::Leader => "leader",
            Endpoint::Remove => "remove",
            Endpoint::Snapshot => "snapshot",
            Endpoint::Reap => "reap",
            Endpoint::DebugVars => "debug_vars",
            Endpoint::Metrics => "metrics",
        }
    }

    /// Counts a request when it is routed, whatever its outcome (rqlite's `http` map).
    fn count(self, m: &Metrics) {
        let h = &m.http;
        let c = match self {
            Endpoint::Execute => &h.executions,
            Endpoint::Query => &h.queries,
            Endpoint::Request => &h.requests,
            Endpoint::Backup => &h.backups,
            Endpoint::Load => &h.loads,
            Endpoint::Boot => &h.boot,
            Endpoint::Snapshot => &h.user_snapshots,
            Endpoint::Reap => &h.user_reaps,
            Endpoint::Status => &h.num_status,
            Endpoint::Readyz => &h.num_readyz,
            _ => return,
        };
        c.inc();
    }
}

fn endpoint(path: &str) -> Option<Endpoint> {
    const PREFIXES: [(&str, Endpoint); 11] = [
        ("/db/tx", Endpoint::Tx),
        ("/db/execute", Endpoint::Execute),
        ("/db/query", Endpoint::Query),
        ("/db/request", Endpoint::Request),
        ("/db/sql", Endpoint::Sql),
        ("/db/backup", Endpoint::Backup),
        ("/db/load", Endpoint::Load),
        ("/status", Endpoint::Status),
        ("/nodes", Endpoint::Nodes),
        ("/readyz", Endpoint::Readyz),
        ("/remove", Endpoint::Remove),
    ];
    match path {
        "/" => return Some(Endpoint::Root),
        "/console" => return Some(Endpoint::ConsoleRoot),
        p if p.starts_with(console::PATH) => return Some(Endpoint::Console),
        "/boot" => return Some(Endpoint::Boot),
        "/leader" => return Some(Endpoint::Leader),
        "/snapshot" => return Some(Endpoint::Snapshot),
        "/reap" => return Some(Endpoint::Reap),
        "/debug/vars" => return Some(Endpoint::DebugVars),
        "/metrics" => return Some(Endpoint::Metrics),
        "/cdc" => return Some(Endpoint::Cdc),
        _ => {}
    }
    PREFIXES
        .iter()
        .find(|(p, _)| path.starts_with(p))
        .map(|(_, r)| *r)
}

/// What a handler gets: the parsed query, the headers, the method and the raw query string.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub params: QueryParams,
    pub headers: HeaderMap,
    body: BodySlot,
    /// The client's Basic-auth credentials, forwarded with the request to the leader.
    pub creds: Option<Credentials>,
}

impl Call {
    /// Reads the whole body, refusing more than the configured limit (413).
    ///
    /// A body in one frame is returned as it came; a longer one is copied, frame by frame,
    /// into one buffer sized from `Content-Length`. Collecting the frames first (hyper's read
    /// buffers, then a copy) left a large body's memory scattered over many allocator pages
    /// that stayed resident after the request; one large allocation is returned whole.
    pub async fn body_bytes(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        use http_body_util::BodyExt;
        let declared = self
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = self.body.take();
        let mut first: Option<Bytes> = None;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::BadRequest(format!("could not read request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len();
            if len > limit {
                return Err(ApiError::TooLarge);
            }
            if first.is_none() && buf.is_empty() {
                first = Some(data);
                continue;
            }
            if let Some(f) = first.take() {
                // A declared length only sizes the buffer (capped: it may be a lie); the
                // frames decide what is read.
                let want = declared
                    .unwrap_or(0)
                    .min(limit.min(BODY_PRESIZE_MAX))
                    .max(len);
                buf.reserve_exact(want);
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&data);
        }
        Ok(match first {
            Some(f) => f,
            None => Bytes::from(buf),
        })
    }

    /// Streams the whole body into `path` (no size limit: the disk holds it, not memory);
    /// returns its size.
    pub async fn body_to_file(&mut self, path: &std::path::Path) -> Result<u64, ApiError> {
        use http_body_util::BodyExt;
        use tokio::io::AsyncWriteExt;
        let internal =
            |e: std::io::Error| ApiError::Internal(format!("cannot write {}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
        let mut body = self.body.take();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::BadRequest(format!("could not read request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                len += data.len() as u64;
                file.write_all(&data).await.map_err(internal)?;
            }
        }
        file.flush().await.map_err(internal)?;
        Ok(len)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }
}

/// The request body, shared between the handler (which takes it to read it) and the
/// dispatcher (which drains whatever the handler did not read).
#[derive(Clone, Default)]
struct BodySlot(Arc<std::sync::Mutex<Option<Body>>>);

impl BodySlot {
    fn new(body: Body) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    fn take(&self) -> Body {
        self.0
            .lock()
            .ok()
            .and_then(|mut b| b.take())
            .unwrap_or_else(Body::empty)
    }

    /// Reads and drops what is left of the body, up to `limit` bytes. A request refused
    /// before its body was read (401, 405, 400 on parameters) is answered only once the
    /// client has finished sending: an HTTP/2 client still sending would otherwise see the
    /// stream reset and report a framing error instead of the status (curl's error 92).
    async fn drain(&self, limit: usize) {
        use http_body_util::BodyExt;
        let body = self.take();
        let mut body = http_body_util::Limited::new(body, limit);
        while let Some(Ok(_)) = body.frame().await {}
    }
}

/// Most [`Call::body_bytes`] reserves up front from a declared `Content-Length`.
const BODY_PRESIZE_MAX: usize = 64 << 20;

/// Most a refused request's unread body is drained before answering (see [`BodySlot::drain`]).
const DRAIN_LIMIT: usize = 16 << 20;

async fn dispatch(State(st): State<Arc<HttpState>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let endpoint = endpoint(parts.uri.path());
    let slot = BodySlot::new(body);
    let r = respond(&st, parts, slot.clone()).await;
    slot.drain(DRAIN_LIMIT.min(st.max_body)).await;
    let labels = RequestLabels {
        endpoint: endpoint.map(Endpoint::label).unwrap_or("unknown"),
        code: r.status().as_u16(),
    };
    let counts = &st.metrics.http.by_endpoint;
    counts.count.get_or_create(&labels).inc();
    counts
        .seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    r
}

async fn respond(
    st: &Arc<HttpState>,
    parts: axum::http::request::Parts,
    body: BodySlot,
) -> Response {
    if parts.method == Method::OPTIONS {
        return error::empty(StatusCode::OK, None);
    }
    let raw_query = parts.uri.query().map(str::to_string);
    // rqlite validates parameters before routing.
    let params = match params::parse(raw_query.as_deref()) {
        Ok(p) => p,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let path = parts.uri.path().to_string();
    let Some(endpoint) = endpoint(&path) else {
        return ApiError::NotFound.into_response();
    };
    // Malformed credentials (not Basic, bad base64, no colon) count as none.
    let creds = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(Credentials::from_basic_header);
    endpoint.count(&st.metrics);
    if !endpoint.perms().is_empty() {
        let allowed = match &st.auth {
            Some(auth) => auth.allowed(creds.clone(), endpoint.perms()).await,
            None => true,
        };
        // Counted with auth off too, as rqlite does: every permission check passes then.
        if !allowed {
            st.metrics.http.auth_fail.inc();
            return ApiError::Unauthorized.into_response();
        }
        st.metrics.http.auth_ok.inc();
    }
    let call = Call {
        method: parts.method,
        path,
        raw_query,
        params,
        headers: parts.headers,
        body,
        creds,
    };
    // Each endpoint's future is boxed: unboxed, this future was as large as the largest of
    // them (backup, load, status), and moving it on every request copied ~10 KB (15% of a
    // point read's instructions in issue 12's profile).
    let result = match endpoint {
        // rqlite 10: `/` leads to the console (rqlite 7-9 sent it to `/status`).
        Endpoint::Root => Ok(console::redirect(StatusCode::FOUND)),
        Endpoint::ConsoleRoot => Ok(console::redirect(StatusCode::MOVED_PERMANENTLY)),
        Endpoint::Console => console::serve(&call),
        Endpoint::Execute => Box::pin(db::execute(st, call)).await,
        Endpoint::Query => Box::pin(db::query(st, call)).await,
        Endpoint::Request => Box::pin(db::request(st, call)).await,
        Endpoint::Tx => Box::pin(tx::tx(st, call)).await,
        Endpoint::Sql => Box::pin(db::sql(st, call)).await,
        Endpoint::Backup => Box::pin(db::backup(st, call)).await,
        Endpoint::Load => Box::pin(db::load(st, call)).await,
        Endpoint::Boot => Box::pin(db::boot(st, call)).await,
        Endpoint::Status => Box::pin(status::status(st, call)).await,
        Endpoint::Nodes => Box::pin(members::nodes(st, call)).await,
        Endpoint::Readyz => Box::pin(status::readyz(st, call)).await,
        Endpoint::Leader => Box::pin(members::leader(st, call)).await,
        Endpoint::Remove => Box::pin(members::remove(st, call)).await,
        Endpoint::Snapshot => Box::pin(status::snapshot(st, call)).await,
        Endpoint::DebugVars => Box::pin(vars::debug_vars(st, call)).await,
        Endpoint::Metrics => Box::pin(scrape::metrics(st, call)).await,
        Endpoint::Reap => Box::pin(reap::reap(st, call)).await,
        Endpoint::Cdc => Box::pin(cdc::cdc(st, call)).await,
    };
    result.unwrap_or_else(|e| {
        if matches!(e, ApiError::LeaderNotFound) {
            st.metrics.http.leader_not_found.inc();
        }
        e.into_response()
    })
}

/// Fails with 405 unless the method is one of `allowed`.
pub fn require_method(call: &Call, allowed: &[Method], json_405: bool) -> Result<(), ApiError> {
    if allowed.contains(&call.method) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed { json: json_405 })
    }
}
