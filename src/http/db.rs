//! The data endpoints: `/db/execute`, `/db/query`, `/db/request`, `/db/backup`, `/db/load`, `/boot`.
//!
//! Each handler parses, prepares the request as the receiving node must (pragma check and,
//! for anything that enters the log, rewriting of non-deterministic SQL), and hands it to
//! [`Cluster`](crate::cluster::Cluster), which serves it locally or on the leader.

use std::io::Write;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::error::{self, api_error, ApiError};
use super::json::{self, Envelope, Json, RenderOpts};
use super::params::{BackupFormat, QueryParams};
use super::{body, require_method, Call, HttpState};
use crate::cluster::{ClusterError, Forwarding, Served};
use crate::command::Outcome as StmtOutcome;
use crate::command::{Request, Statement};
use crate::db::rewrite::{Analysis, RewriteOpts};
use crate::store::{ReadLevel, ReadOpts, Reply, Store, StoreError};

const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// Serializes as the client asked (`pretty` or compact).
pub fn render(j: &Json, p: &QueryParams) -> String {
    j.render(p.pretty)
}

fn render_opts(p: &QueryParams, exec_rows_null: bool) -> RenderOpts {
    RenderOpts {
        associative: p.associative,
        blob_array: p.blob_array,
        timings: p.timings,
        exec_rows_null,
        qualify_columns: p.qualify_columns,
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
    let level = p.level;
    ReadOpts {
        level,
        freshness: p.freshness.filter(|d| !d.is_zero()),
        freshness_strict: p.freshness_strict,
        linearizable_timeout: p.linearizable_timeout,
        min_index: p.min_index,
        catch_up_timeout: p.timeout.filter(|d| !d.is_zero()),
    }
}

/// How a call may reach the leader: forwarded (unless `redirect`) with the caller's
/// credentials, which the leader checks again.
pub fn forwarding(call: &Call) -> Forwarding {
    let p = &call.params;
    Forwarding {
        forward: !p.redirect,
        timeout: p.timeout.filter(|d| !d.is_zero()),
        creds: call.creds.clone(),
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

/// `redirect` on a non-leader: 301 to the same path and raw query on the leader's API.
pub fn redirect(
    call: &Call,
    e: &ClusterError,
    content_type: Option<&'static str>,
) -> Option<ApiError> {
    match e {
        ClusterError::Store(StoreError::NotLeader { leader: Some(l) }) if call.params.redirect => {
            let query = call
                .raw_query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            Some(ApiError::Redirect {
                location: format!("{}{}{}", l.api_url(), call.path, query),
                content_type,
            })
        }
        _ => None,
    }
}

/// Marks a response served by the leader with its Raft address, as rqlite does.
pub fn served_by(mut r: Response, forwarded_to: Option<String>) -> Response {
    if let Some(v) = forwarded_to.and_then(|a| HeaderValue::from_str(&a).ok()) {
        r.headers_mut().insert(super::X_RQLITE_SERVED_BY, v);
    }
    r
}

/// How a data request's result reaches the client.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    Execute,
    Query,
    Request,
}

/// The JSON reply to a data request, or the status an error maps to.
pub(super) fn data_reply(
    call: &Call,
    started: Instant,
    outcome: Result<Served<Reply>, ClusterError>,
    shape: Shape,
) -> Result<Response, ApiError> {
    let p = &call.params;
    let time = p.timings.then(|| started.elapsed().as_secs_f64());
    let Served {
        value: o,
        forwarded_to,
    } = outcome.map_err(|e| refused(call, e))?;
    let opts = match shape {
        // rqlite ignores `associative` on /db/execute, even for RETURNING results.
        Shape::Execute => RenderOpts {
            associative: false,
            qualify_columns: false,
            ..render_opts(p, false)
        },
        Shape::Query => render_opts(p, false),
        Shape::Request => render_opts(p, p.associative),
    };
    let results = o
        .results
        .iter()
        .map(|r| match shape {
            Shape::Query => json::query_result_json(r, &opts),
            _ => json::result_json(r, &opts),
        })
        .collect();
    let j = Envelope {
        results,
        time,
        raft_index: o.raft_index.filter(|_| p.raft_index),
        ..Default::default()
    }
    .into_json();
    Ok(served_by(error::json(render(&j, p)), forwarded_to))
}

/// The error reply to a data request: a redirect to the leader, or the status the error
/// maps to.
pub(super) fn refused(call: &Call, e: ClusterError) -> ApiError {
    redirect(call, &e, Some(error::JSON)).unwrap_or_else(|| api_error(e))
}

/// `stmts` as a request ready for the cluster: checked, and rewritten if it `enters_log`
/// (counting the statements rewritten, `sql-processor` in `/debug/vars`). `None` when there
/// are no statements, which rqlite answers with no results.
pub(super) fn prepare(
    st: &HttpState,
    call: &Call,
    stmts: Vec<Statement>,
    enters_log: bool,
) -> Result<Option<Request>, ApiError> {
    if stmts.is_empty() {
        return Ok(None);
    }
    let p = &call.params;
    let mut req = request_of(stmts, p);
    let rewritten = Store::prepare(&mut req, &rewrite_opts(p), enters_log)
        .map_err(|e| refused(call, e.into()))?;
    st.metrics.sql.rewritten_stmts.add(rewritten);
    Ok(Some(req))
}

/// rqlite's answer to a data request without statements.
pub(super) fn no_results(p: &QueryParams) -> Response {
    error::json(render(&Envelope::default().into_json(), p))
}

/// A body that cannot become statements: 413 for too many, else 400 with rqlite's message.
fn body_error(e: body::BodyError) -> ApiError {
    match e {
        body::BodyError::TooManyStatements(_) => ApiError::Oversized(e.to_string()),
        e => ApiError::BadRequest(e.to_string()),
    }
}

/// Reads and parses the statements of a data request.
pub(super) async fn statements(
    st: &HttpState,
    call: &mut Call,
    allow_plain_text: bool,
) -> Result<Vec<Statement>, ApiError> {
    let bytes = call.body_bytes(st.max_body).await?;
    let ct = call.content_type().map(str::to_string);
    body::parse_statements(&bytes, ct.as_deref(), allow_plain_text, st.max_statements)
        .map_err(body_error)
}

/// `POST /db/execute`.
pub async fn execute(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], true)?;
    let started = Instant::now();
    if call.params.queue {
        return enqueue(st, call).await;
    }
    let stmts = statements(st, &mut call, true).await?;
    st.metrics.http.execute_stmts_rx.add(stmts.len() as u64);
    let Some(req) = prepare(st, &call, stmts, true)? else {
        return Ok(no_results(&call.params));
    };
    let outcome = st.cluster.execute(req, &forwarding(&call)).await;
    data_reply(&call, started, outcome, Shape::Execute)
}

/// `POST /db/execute?queue`: validated and rewritten, then handed to the write queue.
async fn enqueue(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    let p = call.params.clone();
    if !p.noleader && st.store.leader().is_none() {
        return Err(ApiError::LeaderNotFound);
    }
    let bytes = call.body_bytes(st.max_body).await?;
    let ct = call.content_type().map(str::to_string);
    // An empty array is a flush marker (useful with `wait`); anything else must parse.
    let stmts = match body::parse_statements(&bytes, ct.as_deref(), true, st.max_statements) {
        Ok(s) => s,
        Err(_) if is_empty_array(&bytes) => Vec::new(),
        Err(e) => return Err(body_error(e)),
    };
    // No statements at all is the flush marker: it is queued too.
    let statements = match prepare(st, &call, stmts, true)? {
        Some(req) => req.statements,
        None => Vec::new(),
    };
    let ticket = st
        .queue
        .submit(statements)
        .await
        .map_err(ApiError::Unavailable)?;
    st.metrics.http.queued_executions.inc();
    let seq = ticket.sequence_number;
    let mut results = Vec::new();
    if p.wait {
        st.metrics.http.queued_executions_wait.inc();
        let timeout = p.timeout.unwrap_or(Duration::from_secs(30));
        match tokio::time::timeout(timeout, ticket.done).await {
            // rqlite answers a queued write with no results; failed statements are shown.
            Ok(Ok(Ok(r))) if r.iter().any(|r| matches!(r.outcome, StmtOutcome::Error(_))) => {
                let opts = render_opts(&p, false);
                results = r.iter().map(|r| json::result_json(r, &opts)).collect();
            }
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return Err(api_error(e)),
            Ok(Err(_)) => return Err(ApiError::Unavailable("write queue stopped".into())),
            Err(_) => {
                st.metrics.http.queued_executions_wait_timeout.inc();
                return Err(ApiError::QueueWaitTimeout);
            }
        }
    }
    let env = Envelope {
        results,
        sequence_number: Some(seq as i64),
        ..Default::default()
    };
    Ok(error::json(render(&env.into_json(), &p)))
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
    st.metrics.http.query_stmts_rx.add(stmts.len() as u64);
    let opts = read_opts(&call.params);
    // Only strong reads enter the log, so only they are rewritten.
    let Some(req) = prepare(st, &call, stmts, opts.level == ReadLevel::Strong)? else {
        return Ok(no_results(&call.params));
    };
    let outcome = st.cluster.query(req, &opts, &forwarding(&call)).await;
    data_reply(&call, started, outcome, Shape::Query)
}

/// `POST /db/request`: reads and writes in one request.
pub async fn request(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], true)?;
    let started = Instant::now();
    let stmts = statements(st, &mut call, false).await?;
    st.metrics.http.request_stmts_rx.add(stmts.len() as u64);
    let Some(req) = prepare(st, &call, stmts, true)? else {
        return Ok(no_results(&call.params));
    };
    let opts = read_opts(&call.params);
    let outcome = st.cluster.request(req, &opts, &forwarding(&call)).await;
    data_reply(&call, started, outcome, Shape::Request)
}

/// `GET /db/sql?q=` or `POST /db/sql` (rqlite 9.4): how each statement would be rewritten
/// before entering the log (`RANDOM()`, `RANDOMBLOB(N)`, `'now'`), without running it:
/// `{"results":[{"original":..,"rewritten":..}]}`, or `"error"` for a statement SQLite cannot
/// parse. Served by the receiving node; nothing is forwarded.
pub async fn sql(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET, Method::POST], true)?;
    let started = Instant::now();
    let stmts = if call.method == Method::GET {
        match &call.params.q {
            Some(q) => vec![Statement::new(q.clone())],
            None => return Err(ApiError::BadRequest("query not specified".into())),
        }
    } else {
        statements(st, &mut call, false).await?
    };
    let p = &call.params;
    let opts = RewriteOpts {
        parse: true,
        ..rewrite_opts(p)
    };
    let results = tokio::task::spawn_blocking(move || {
        stmts
            .iter()
            .map(|s| {
                let mut f = vec![("original".to_string(), Json::Str(s.sql.clone()))];
                f.push(match crate::db::rewrite::analyze(&s.sql, &opts) {
                    Analysis::Rewritten(r) => ("rewritten".to_string(), Json::Str(r)),
                    Analysis::SyntaxError(e) => ("error".to_string(), Json::Str(e)),
                });
                Json::Obj(f)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let j = Envelope {
        results,
        time: p.timings.then(|| started.elapsed().as_secs_f64()),
        ..Default::default()
    }
    .into_json();
    Ok(error::json(render(&j, p)))
}

/// A cluster error where only a status code fits (no JSON body to carry it).
fn status_only(call: &Call, e: ClusterError, content_type_301: Option<&'static str>) -> ApiError {
    if let Some(r) = redirect(call, &e, content_type_301) {
        return r;
    }
    api_error(e)
}

/// `GET /db/backup`: a binary SQLite copy (default) or a SQL dump, optionally gzipped.
pub async fn backup(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    let p = &call.params;
    let sql = p.backup_format() == BackupFormat::Sql;
    let served = st
        .cluster
        .backup(
            sql,
            p.vacuum,
            p.tables.clone(),
            p.noleader,
            &forwarding(&call),
        )
        .await
        .map_err(|e| status_only(&call, e, Some("application/octet-stream")))?;
    let data = if p.compress {
        gzip(&served.value).map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        served.value
    };
    let ct = if sql {
        "application/sql"
    } else {
        "application/octet-stream"
    };
    Ok(served_by(
        error::with_body(StatusCode::OK, ct, data),
        served.forwarded_to,
    ))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// `POST /db/load`: a SQLite file replaces the database; anything else is run as a SQL dump.
pub async fn load(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let started = Instant::now();
    // A database file may be larger than memory should hold: it goes to disk first.
    let upload = st
        .store
        .upload_file()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let len = call.body_to_file(&upload.0).await?;
    let rt = forwarding(&call);
    let head = read_head(&upload.0).await?;
    let outcome = if head.starts_with(SQLITE_HEADER) {
        st.cluster.load_file(&upload.0, &rt).await
    } else {
        if len > st.max_body as u64 {
            return Err(ApiError::TooLarge);
        }
        let bytes = tokio::fs::read(&upload.0)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", upload.0.display())))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.trim().is_empty() {
            Ok(Served {
                value: Reply::default(),
                forwarded_to: None,
            })
        } else {
            // A dump is data: it is applied as written, not rewritten.
            let req = Request {
                statements: vec![Statement::new(text)],
                transaction: false,
                db_timeout_ms: 0,
            };
            st.cluster.execute(req, &rt).await
        }
    };
    if let Err(e) = &outcome {
        if let Some(r) = redirect(&call, e, None) {
            return Err(r);
        }
    }
    let mut r = data_reply(&call, started, outcome, Shape::Execute)?;
    // rqlite labels `/db/load` replies as text even though they are JSON.
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(error::TEXT));
    Ok(r)
}

/// The first bytes of a file (enough to recognise a SQLite header).
async fn read_head(path: &std::path::Path) -> Result<Vec<u8>, ApiError> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(16);
    tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
        .take(16)
        .read_to_end(&mut head)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    Ok(head)
}

/// `POST /boot`: install a SQLite file into a single-node cluster.
pub async fn boot(st: &HttpState, mut call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let upload = st
        .store
        .upload_file()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    call.body_to_file(&upload.0).await?;
    if !read_head(&upload.0).await?.starts_with(SQLITE_HEADER) {
        return Err(ApiError::Unavailable(
            "invalid SQLite database: missing SQLite header".into(),
        ));
    }
    match st.store.boot_file(&upload.0).await {
        Ok(()) => Ok(error::empty(StatusCode::OK, None)),
        Err(StoreError::InvalidImage(m)) => Err(ApiError::Unavailable(format!(
            "invalid SQLite database: {m}"
        ))),
        Err(StoreError::NotLeader { .. }) => Err(ApiError::Unavailable("not leader".into())),
        Err(e) => Err(status_only(&call, e.into(), None)),
    }
}
