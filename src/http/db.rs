//! The data endpoints: `/db/execute`, `/db/query`, `/db/request`, `/db/backup`, `/db/load`, `/boot`.

use std::io::Write;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::error::{self, classify_store_error, ApiError, StoreErrorReply};
use super::json::{self, Json, RenderOpts};
use super::params::{Level, QueryParams};
use super::{body, require_method, Call, HttpState};
use crate::command::{Request, Statement, StmtResult};
use crate::store::rewrite::RewriteOpts;
use crate::store::{ReadLevel, ReadOpts, StoreError};

const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// The top-level response object, keys in rqlite's order, zero values omitted.
pub fn envelope(
    results: Vec<Json>,
    error: Option<String>,
    time: Option<f64>,
    sequence_number: Option<u64>,
    raft_index: Option<u64>,
) -> Json {
    let mut o = vec![("results".to_string(), Json::Arr(results))];
    if let Some(e) = error.filter(|e| !e.is_empty()) {
        o.push(("error".into(), Json::Str(e)));
    }
    if let Some(t) = time.filter(|t| *t != 0.0) {
        o.push(("time".into(), Json::Float(t)));
    }
    if let Some(n) = sequence_number.filter(|n| *n != 0) {
        o.push(("sequence_number".into(), Json::Int(n as i64)));
    }
    if let Some(i) = raft_index.filter(|i| *i != 0) {
        o.push(("raft_index".into(), Json::Int(i as i64)));
    }
    Json::Obj(o)
}

/// Serializes as the client asked (`pretty` or compact).
pub fn render(j: &Json, p: &QueryParams) -> String {
    if p.pretty {
        j.to_pretty()
    } else {
        j.to_compact()
    }
}

fn render_opts(p: &QueryParams, exec_rows_null: bool) -> RenderOpts {
    RenderOpts {
        associative: p.associative,
        blob_array: p.blob_array,
        timings: p.timings,
        exec_rows_null,
    }
}

fn rewrite_opts(p: &QueryParams) -> RewriteOpts {
    RewriteOpts {
        random: !p.norwrandom,
        time: !p.norwtime,
        parse: !p.noparse,
    }
}

fn read_opts(p: &QueryParams) -> ReadOpts {
    let level = match p.level {
        Level::None => ReadLevel::None,
        Level::Weak => ReadLevel::Weak,
        Level::Linearizable => ReadLevel::Linearizable,
        Level::Strong => ReadLevel::Strong,
        Level::Auto => ReadLevel::Auto,
    };
    ReadOpts {
        level,
        freshness: p.freshness.filter(|d| !d.is_zero()),
        freshness_strict: p.freshness_strict,
        linearizable_timeout: p.linearizable_timeout,
    }
}

fn request_of(statements: Vec<Statement>, p: &QueryParams) -> Request {
    Request {
        statements,
        transaction: p.transaction,
        db_timeout_ms: p
            .db_timeout
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis().max(1) as u64)
            .unwrap_or(0),
    }
}

/// The JSON reply to a data request, or the status a store error maps to.
fn data_reply(
    p: &QueryParams,
    started: Instant,
    outcome: Result<crate::store::Outcome, StoreError>,
    exec_rows_null: bool,
) -> Result<Response, ApiError> {
    let time = p.timings.then(|| started.elapsed().as_secs_f64());
    let j = match outcome {
        Ok(o) => {
            let opts = render_opts(p, exec_rows_null);
            let results = o
                .results
                .iter()
                .map(|r| json::result_json(r, &opts))
                .collect();
            envelope(
                results,
                None,
                time,
                None,
                o.raft_index.filter(|_| p.raft_index),
            )
        }
        Err(e) => match classify_store_error(e) {
            StoreErrorReply::InBody(msg) => envelope(Vec::new(), Some(msg), time, None, None),
            StoreErrorReply::Status(api) => return Err(api),
        },
    };
    Ok(error::json(render(&j, p)))
}

/// Reads and parses the statements of a data request.
async fn statements(
    st: &HttpState,
    call: &mut Call,
    allow_plain_text: bool,
) -> Result<Vec<Statement>, ApiError> {
    let bytes = call.body_bytes(st.max_body).await?;
    let ct = call.content_type().map(str::to_string);
    body::parse_statements(&bytes, ct.as_deref(), allow_plain_text)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `POST /db/execute`.
pub async fn execute(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], true)?;
    let started = Instant::now();
    if call.params.queue {
        return enqueue(st, call).await;
    }
    let stmts = statements(st, &mut call, true).await?;
    let p = &call.params;
    st.counters.executions.add(1);
    let outcome = st
        .store
        .execute(request_of(stmts, p), &rewrite_opts(p))
        .await;
    // rqlite ignores `associative` on /db/execute, even for RETURNING results.
    let p = QueryParams {
        associative: false,
        ..p.clone()
    };
    data_reply(&p, started, outcome, false)
}

/// `POST /db/execute?queue`: validated, then handed to the write queue.
async fn enqueue(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    let p = call.params.clone();
    if !p.noleader && st.store.leader().is_none() {
        return Err(ApiError::LeaderNotFound);
    }
    let bytes = call.body_bytes(st.max_body).await?;
    let ct = call.content_type().map(str::to_string);
    // An empty array is a flush marker (useful with `wait`); anything else must parse.
    let mut stmts = match body::parse_statements(&bytes, ct.as_deref(), true) {
        Ok(s) => s,
        Err(_) if is_empty_array(&bytes) => Vec::new(),
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
    };
    let rw = rewrite_opts(&p);
    for s in &mut stmts {
        crate::store::rewrite::rewrite(s, &rw);
    }
    let ticket = st
        .queue
        .submit(stmts)
        .await
        .map_err(ApiError::Unavailable)?;
    let seq = ticket.sequence_number;
    let mut err = None;
    if p.wait {
        let timeout = p.timeout.unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(timeout, ticket.done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(msg))) => err = Some(msg),
            Ok(Err(_)) => return Err(ApiError::Unavailable("write queue stopped".into())),
            Err(_) => return Err(ApiError::QueueWaitTimeout),
        }
    }
    let j = envelope(Vec::new(), err, None, Some(seq), None);
    Ok(error::json(render(&j, &p)))
}

fn is_empty_array(bytes: &[u8]) -> bool {
    matches!(serde_json::from_slice::<serde_json::Value>(bytes), Ok(serde_json::Value::Array(a)) if a.is_empty())
}

/// `GET /db/query?q=` or `POST /db/query`.
pub async fn query(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET, Method::POST], true)?;
    let started = Instant::now();
    let stmts = if call.method == Method::GET {
        match &call.params.q {
            Some(q) => vec![Statement::new(q.clone())],
            // rqlite answers a GET without `q` with no results.
            None => Vec::new(),
        }
    } else {
        statements(st, &mut call, true).await?
    };
    let p = &call.params;
    if stmts.is_empty() {
        return Ok(error::json(render(
            &envelope(Vec::new(), None, None, None, None),
            p,
        )));
    }
    st.counters.queries.add(1);
    let outcome = st
        .store
        .query(request_of(stmts, p), &read_opts(p), &rewrite_opts(p))
        .await;
    data_reply(p, started, outcome, false)
}

/// `POST /db/request`: reads and writes in one request.
pub async fn request(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let started = Instant::now();
    let stmts = statements(st, &mut call, false).await?;
    let p = &call.params;
    st.counters.requests.add(1);
    let outcome = st
        .store
        .request(request_of(stmts, p), &read_opts(p), &rewrite_opts(p))
        .await;
    data_reply(p, started, outcome, p.associative)
}

/// `GET /db/backup`: a binary SQLite copy (default) or a SQL dump, optionally gzipped.
pub async fn backup(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    let p = &call.params;
    if !p.noleader {
        if let Err(e) = st.store.ensure_leader() {
            return Err(store_status(e));
        }
    }
    let sql = p.fmt.as_deref() == Some("sql");
    st.counters.backups.add(1);
    let data = st
        .store
        .backup(sql, p.vacuum, p.tables.clone())
        .await
        .map_err(store_status)?;
    let data = if p.compress {
        gzip(&data).map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        data
    };
    let ct = if sql {
        "application/sql"
    } else {
        "application/octet-stream"
    };
    Ok(error::with_body(StatusCode::OK, ct, data))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// A store error where only a status code fits (no JSON body to carry it).
fn store_status(e: StoreError) -> ApiError {
    match classify_store_error(e) {
        StoreErrorReply::Status(a) => a,
        StoreErrorReply::InBody(m) => ApiError::Unavailable(m),
    }
}

/// `POST /db/load`: a SQLite file replaces the database; anything else is run as a SQL dump.
pub async fn load(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let started = Instant::now();
    let bytes = call.body_bytes(st.max_body).await?;
    let p = &call.params;
    st.counters.loads.add(1);
    let outcome = if bytes.starts_with(SQLITE_HEADER) {
        st.store.load(bytes.to_vec()).await
    } else {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.trim().is_empty() {
            Ok(crate::store::Outcome::default())
        } else {
            let req = Request {
                statements: vec![Statement::new(text)],
                transaction: false,
                db_timeout_ms: 0,
            };
            // A dump is data, not a statement to rewrite: RANDOM() in it is a literal's job.
            let rw = RewriteOpts {
                random: false,
                time: false,
                parse: false,
            };
            st.store.execute(req, &rw).await
        }
    };
    let mut r = data_reply(p, started, outcome, false)?;
    // rqlite labels `/db/load` replies as text even though they are JSON.
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(error::TEXT),
    );
    Ok(r)
}

/// `POST /boot`: install a SQLite file into a single-node cluster.
pub async fn boot(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let bytes = call.body_bytes(st.max_body).await?;
    if !bytes.starts_with(SQLITE_HEADER) {
        return Err(ApiError::Unavailable(
            "invalid SQLite database: missing SQLite header".into(),
        ));
    }
    match st.store.boot(bytes.to_vec()).await {
        Ok(()) => Ok(error::empty(StatusCode::OK, None)),
        Err(StoreError::InvalidImage(m)) => Err(ApiError::Unavailable(format!(
            "invalid SQLite database: {m}"
        ))),
        Err(StoreError::NotLeader { .. }) => Err(ApiError::Unavailable("not leader".into())),
        Err(e) => Err(store_status(e)),
    }
}

/// Builds the per-statement JSON for results computed elsewhere (forwarding, tests).
pub fn results_json(results: &[StmtResult], p: &QueryParams, exec_rows_null: bool) -> Vec<Json> {
    let opts = render_opts(p, exec_rows_null);
    results
        .iter()
        .map(|r| json::result_json(r, &opts))
        .collect()
}
