//! A stand-in for a Consul agent's KV HTTP API, for tests (Consul cannot be installed here).
//!
//! Owns: an in-memory KV store served on `127.0.0.1:0` from its own thread, following
//! Consul's documented KV endpoints: `GET /v1/kv/<key>` (200 with
//! `[{"LockIndex","Key","Flags","Value":<base64 or null>,"CreateIndex","ModifyIndex"}]`, or
//! 404), with `?recurse`, `?keys` (+ `?separator`) and `?raw`; `PUT /v1/kv/<key>` (raw body;
//! `?cas=`, `?flags=`; answers `true`/`false`); `DELETE /v1/kv/<key>` (`?recurse`, `?cas=`);
//! `?dc=` (another datacenter is "No path to datacenter"); `X-Consul-Index` on reads (the
//! store's index, raised by every write); ACL tokens via `X-Consul-Token`, `?token=` or
//! `Authorization: Bearer` when started with one.
//!
//! Does not: sessions (`?acquire`/`?release` answer 400), blocking queries (`?index=` answers
//! at once, which Consul also may do), namespaces or partitions (accepted, ignored),
//! transactions (`/v1/txn`), or anything outside `/v1/kv`.

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use serde::Serialize;

/// The datacenter the stand-in claims to be.
pub const DATACENTER: &str = "dc1";

/// Consul's default `kv_max_value_size`.
const MAX_VALUE: usize = 512 * 1024;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandinEntry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A request as the stand-in saw it (for asserting on headers and query parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    /// The decoded key.
    pub key: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub token: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Debug)]
struct Store {
    /// Raised by every write; what `X-Consul-Index` reports. Starts at 1 as Consul never
    /// reports index 0.
    index: u64,
    kv: BTreeMap<String, StandinEntry>,
    token: Option<String>,
    seen: Vec<SeenRequest>,
}

type Shared = Arc<Mutex<Store>>;

fn lock(s: &Shared) -> MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running stand-in. Stops (and its port refuses connections) on [`ConsulStandin::stop`]
/// or drop.
#[derive(Debug)]
pub struct ConsulStandin {
    /// Where it listens; its `to_string()` is a `ConsulConfig::address`.
    pub addr: SocketAddr,
    store: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ConsulStandin {
    /// Starts a stand-in without ACLs.
    ///
    /// # Panics
    /// If no loopback port or thread can be had (a broken test machine); see [`Self::try_start`].
    pub fn start() -> ConsulStandin {
        Self::try_start(None).unwrap_or_else(|e| panic!("Consul stand-in could not start: {e}"))
    }

    /// Starts a stand-in that answers 403 unless a request carries `token`.
    pub fn start_with_token(token: &str) -> ConsulStandin {
        Self::try_start(Some(token.to_string()))
            .unwrap_or_else(|e| panic!("Consul stand-in could not start: {e}"))
    }

    pub fn try_start(token: Option<String>) -> std::io::Result<ConsulStandin> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // Its own runtime on its own thread: usable from sync tests and from any runtime
        // flavour, and dropping that runtime closes every connection at once on stop.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store: Shared = Arc::new(Mutex::new(Store {
            index: 1,
            kv: BTreeMap::new(),
            token,
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/kv", any(kv_root))
            .route("/v1/kv/", any(kv_root))
            .route("/v1/kv/{*key}", any(kv_key))
            .with_state(store.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("consul-standin-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("Consul stand-in: {e}"),
                    };
                    tokio::select! {
                        r = axum::serve(listener, app).into_future() => {
                            if let Err(e) = r { eprintln!("Consul stand-in: {e}") }
                        }
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(ConsulStandin {
            addr,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:<port>`, the form `ConsulConfig::address` takes.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving; afterwards connections to [`Self::addr`] are refused. Idempotent.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Reads a key directly (not through HTTP).
    pub fn get(&self, key: &str) -> Option<StandinEntry> {
        lock(&self.store).kv.get(key).cloned()
    }

    /// Writes a key directly, as an unconditional `PUT` would; returns its new `ModifyIndex`.
    pub fn put(&self, key: &str, value: &[u8]) -> u64 {
        let mut s = lock(&self.store);
        s.write(key, value.to_vec(), None)
    }

    /// Deletes a key directly; `true` if it existed.
    pub fn delete(&self, key: &str) -> bool {
        let mut s = lock(&self.store);
        let existed = s.kv.remove(key).is_some();
        if existed {
            s.index += 1;
        }
        existed
    }

    /// The store's index (what `X-Consul-Index` reports).
    pub fn index(&self) -> u64 {
        lock(&self.store).index
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.store).seen.clone()
    }
}

impl Drop for ConsulStandin {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Store {
    fn write(&mut self, key: &str, value: Vec<u8>, flags: Option<u64>) -> u64 {
        self.index += 1;
        let index = self.index;
        let e = self.kv.entry(key.to_string()).or_insert(StandinEntry {
            value: Vec::new(),
            flags: 0,
            create_index: index,
            modify_index: index,
        });
        e.value = value;
        e.flags = flags.unwrap_or(e.flags);
        e.modify_index = index;
        index
    }
}

/// Consul's JSON for one entry, field order as Consul writes it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Wire<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    create_index: u64,
    modify_index: u64,
}

async fn kv_root(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    raw: axum::http::Uri,
    body: Bytes,
) -> Response {
    handle(
        &s,
        method,
        &headers,
        &q,
        raw.query().unwrap_or(""),
        String::new(),
        body,
    )
}

async fn kv_key(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    raw: axum::http::Uri,
    body: Bytes,
) -> Response {
    handle(
        &s,
        method,
        &headers,
        &q,
        raw.query().unwrap_or(""),
        key,
        body,
    )
}

fn text(status: StatusCode, msg: &str) -> Response {
    (status, msg.to_string()).into_response()
}

fn boolean(b: bool) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        if b { "true" } else { "false" },
    )
        .into_response()
}

/// `?name=<u64>`, absent, or the message of a 400 answer.
fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("Invalid {name} value")),
    }
}

fn handle(
    s: &Shared,
    method: Method,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    raw_query: &str,
    key: String,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let token = header("x-consul-token")
        .or_else(|| q.get("token").cloned())
        .or_else(|| {
            authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let mut st = lock(s);
    st.seen.push(SeenRequest {
        method: method.to_string(),
        key: key.clone(),
        query: raw_query.to_string(),
        token: token.clone(),
        authorization,
    });

    if let Some(required) = &st.token {
        match token.as_deref() {
            Some(t) if t == required => {}
            Some(_) => return text(StatusCode::FORBIDDEN, "ACL not found"),
            None => return text(StatusCode::FORBIDDEN, "Permission denied"),
        }
    }
    if q.get("dc")
        .is_some_and(|dc| !dc.is_empty() && dc != DATACENTER)
    {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }

    match method {
        Method::GET => read(&st, q, &key),
        Method::PUT => {
            if key.is_empty() {
                return text(StatusCode::BAD_REQUEST, "Missing key name");
            }
            if q.contains_key("acquire") || q.contains_key("release") {
                return text(
                    StatusCode::BAD_REQUEST,
                    "sessions are not supported by the Consul stand-in",
                );
            }
            if body.len() > MAX_VALUE {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "Request body({} bytes) too large, max size: {MAX_VALUE} bytes",
                        body.len()
                    ),
                );
            }
            let (flags, cas) = match (number(q, "flags"), number(q, "cas")) {
                (Ok(f), Ok(c)) => (f, c),
                (Err(m), _) | (_, Err(m)) => return text(StatusCode::BAD_REQUEST, &m),
            };
            let current = st.kv.get(&key).map(|e| e.modify_index);
            let allowed = match cas {
                None => true,
                // cas=0: only if the key does not exist.
                Some(0) => current.is_none(),
                Some(i) => current == Some(i),
            };
            if allowed {
                st.write(&key, body.to_vec(), flags);
            }
            boolean(allowed)
        }
        Method::DELETE => {
            let cas = match number(q, "cas") {
                Ok(c) => c,
                Err(m) => return text(StatusCode::BAD_REQUEST, &m),
            };
            let before = st.kv.len();
            if q.contains_key("recurse") {
                st.kv.retain(|k, _| !k.starts_with(&key));
            } else {
                match cas {
                    // Unlike PUT, a 0 index never deletes.
                    Some(i) if st.kv.get(&key).map(|e| e.modify_index) != Some(i) || i == 0 => {
                        return boolean(false)
                    }
                    _ => {
                        st.kv.remove(&key);
                    }
                }
            }
            if st.kv.len() != before {
                st.index += 1;
            }
            boolean(true)
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

fn read(st: &Store, q: &HashMap<String, String>, key: &str) -> Response {
    let index = HeaderValue::from(st.index);
    let meta = [
        (header::HeaderName::from_static("x-consul-index"), index),
        (
            header::HeaderName::from_static("x-consul-knownleader"),
            HeaderValue::from_static("true"),
        ),
        (
            header::HeaderName::from_static("x-consul-lastcontact"),
            HeaderValue::from_static("0"),
        ),
    ];
    let prefixed = || {
        st.kv
            .range(key.to_string()..)
            .take_while(|(k, _)| k.starts_with(key))
    };

    if q.contains_key("keys") {
        let sep = q.get("separator").filter(|s| !s.is_empty());
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in prefixed() {
            // With a separator, keys below the next separator fold into their "directory".
            let k = match sep.and_then(|sep| k[key.len()..].find(sep.as_str()).map(|i| (i, sep))) {
                Some((i, sep)) => k[..key.len() + i + sep.len()].to_string(),
                None => k.clone(),
            };
            if keys.last() != Some(&k) {
                keys.push(k);
            }
        }
        if keys.is_empty() {
            return (StatusCode::NOT_FOUND, meta).into_response();
        }
        return (meta, axum::Json(keys)).into_response();
    }

    let entries: Vec<(&String, &StandinEntry)> = if q.contains_key("recurse") {
        prefixed().collect()
    } else {
        st.kv.get_key_value(key).into_iter().collect()
    };
    if entries.is_empty() {
        return (StatusCode::NOT_FOUND, meta).into_response();
    }
    if q.contains_key("raw") && !q.contains_key("recurse") {
        let value = entries
            .first()
            .map(|(_, e)| e.value.clone())
            .unwrap_or_default();
        return (meta, value).into_response();
    }
    let wire: Vec<Wire<'_>> = entries
        .into_iter()
        .map(|(k, e)| Wire {
            lock_index: 0,
            key: k,
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            create_index: e.create_index,
            modify_index: e.modify_index,
        })
        .collect();
    (meta, axum::Json(wire)).into_response()
}
