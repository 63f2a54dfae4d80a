//! Operations endpoints: `/status`, `/readyz`, `/snapshot` (the membership endpoints are
//! `members.rs`, `/debug/vars` is `vars.rs`, `/metrics` is `scrape.rs`).

use openraft::async_runtime::WatchReceiver;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::db::render;
use super::error::{self, ApiError};
use super::json::Json;
use super::{require_method, Call, HttpState, VERSION};
use crate::duration;
use crate::raft::transport::WIRE_VERSION;

pub(super) fn s(v: impl Into<String>) -> Json {
    Json::Str(v.into())
}

fn obj(mut fields: Vec<(&str, Json)>) -> Json {
    // rqlite builds these from Go maps: keys come out sorted.
    fields.sort_by(|a, b| a.0.cmp(b.0));
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    let nanos = d.subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn status_json(st: &HttpState) -> Json {
    let store = &st.store;
    let sqlite = match store.db_stats().await {
        Ok(d) => sqlite_json(&d, &store.config().extensions),
        Err(e) => {
            st.metrics.store.db_stats_errors.inc();
            obj(vec![("error", s(e.to_string()))])
        }
    };
    let m = store.raft().metrics().borrow_watched().clone();
    let me = store.me();
    let leader = store.leader();
    let applied = store.applied().lock().clone();
    let cfg = store.config();
    let members = store.members();
    let nodes: Vec<Json> = members
        .iter()
        .map(|(n, voter)| {
            Json::Obj(vec![
                ("id".into(), s(&n.id)),
                ("addr".into(), s(&n.raft_addr)),
                (
                    "suffrage".into(),
                    s(if *voter { "Voter" } else { "Nonvoter" }),
                ),
            ])
        })
        .collect();
    let applied_index = applied.last_applied.map(|l| l.index).unwrap_or(0);
    // The commit index openraft saved; never behind what is applied (the same figure as
    // `sqlraft_raft_commit_index`).
    let commit_index = store
        .commit_index()
        .max(m.last_applied.map(|l| l.index).unwrap_or(0))
        .max(applied_index);
    let snapshot_index = m.snapshot.map(|l| l.index).unwrap_or(0);
    // A walk of the data directory: off the async runtime (a node may hold many files).
    let dir = cfg.data_dir.clone();
    let dir_size = tokio::task::spawn_blocking(move || crate::store::snapshot::tree_size(&dir))
        .await
        .unwrap_or(0);
    let latest_configuration = format!(
        "[{}]",
        members
            .iter()
            .map(|(n, voter)| format!(
                "{{Suffrage:{} ID:{} Address:{}}}",
                if *voter { "Voter" } else { "Nonvoter" },
                n.id,
                n.raft_addr
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // A leader is its own contact (rqlite reports 0); a follower, the time since it last
    // heard from one.
    let last_contact = if store.is_leader() {
        Json::Int(0)
    } else {
        match store.leader_contact().since_leader_contact() {
            Some(d) => s(duration::format(d)),
            None => s("never"),
        }
    };
    let raft = obj(vec![
        ("applied_index", Json::Int(applied_index as i64)),
        ("commit_index", Json::Int(commit_index as i64)),
        (
            "last_log_index",
            Json::Int(m.last_log_index.unwrap_or(0) as i64),
        ),
        ("last_log_term", Json::Int(m.current_term as i64)),
        ("last_snapshot_index", Json::Int(snapshot_index as i64)),
        (
            "last_snapshot_term",
            Json::Int(m.snapshot.map(|l| l.leader_id.term).unwrap_or(0) as i64),
        ),
        ("latest_configuration", s(latest_configuration)),
        (
            "latest_configuration_index",
            Json::Int(m.membership_config.log_id().map(|l| l.index).unwrap_or(0) as i64),
        ),
        ("log_entries", Json::Int(store.log_len() as i64)),
        ("log_size", Json::Int(store.log_disk_size() as i64)),
        (
            "num_peers",
            Json::Int(members.len().saturating_sub(1) as i64),
        ),
        // Committed entries not yet applied to SQLite.
        (
            "fsm_pending",
            Json::Int(commit_index.saturating_sub(applied_index) as i64),
        ),
        // The internode wire's version stands for hashicorp's protocol version.
        ("protocol_version", Json::Int(WIRE_VERSION as i64)),
        ("protocol_version_max", Json::Int(WIRE_VERSION as i64)),
        ("protocol_version_min", Json::Int(WIRE_VERSION as i64)),
        ("state", s(store.state_name())),
        ("term", Json::Int(m.current_term as i64)),
        ("voter", Json::Bool(store.is_voter())),
        ("last_contact", last_contact),
    ]);
    let leader_obj = obj(vec![
        (
            "addr",
            s(leader
                .as_ref()
                .map(|l| l.raft_addr.clone())
                .unwrap_or_default()),
        ),
        (
            "node_id",
            s(leader.as_ref().map(|l| l.id.clone()).unwrap_or_default()),
        ),
    ]);
    let store_obj = obj(vec![
        ("addr", s(&me.raft_addr)),
        ("apply_timeout", s(duration::format(cfg.apply_timeout))),
        ("db_applied_index", Json::Int(applied_index as i64)),
        ("db_conf", obj(vec![("fk_constraints", Json::Bool(cfg.fk))])),
        ("dir", s(cfg.data_dir.display().to_string())),
        ("dir_size", Json::Int(dir_size as i64)),
        ("dir_size_friendly", s(friendly_bytes(dir_size))),
        (
            "election_timeout",
            s(duration::format(cfg.election_timeout)),
        ),
        ("fsm_index", Json::Int(applied_index as i64)),
        (
            "fsm_term",
            Json::Int(applied.last_applied.map(|l| l.leader_id.term).unwrap_or(0) as i64),
        ),
        (
            "fsm_update_time",
            s(applied.updated_at.map(rfc3339).unwrap_or_default()),
        ),
        (
            "heartbeat_timeout",
            s(duration::format(cfg.heartbeat_timeout)),
        ),
        ("leader", leader_obj),
        // BoltDB's option; redb has no free-list sync to skip.
        ("no_freelist_sync", Json::Bool(false)),
        ("node_id", s(&me.id)),
        ("nodes", Json::Arr(nodes)),
        (
            "observer",
            obj(vec![
                ("dropped", Json::Int(0)),
                (
                    "observed",
                    Json::Int(st.metrics.store.leader_changes.get() as i64),
                ),
            ]),
        ),
        ("open", obj(vec![])),
        ("raft", raft),
        (
            "reap_read_only_timeout",
            s(duration::format(st.reap_read_only_node_timeout)),
        ),
        ("reap_timeout", s(duration::format(st.reap_node_timeout))),
        (
            "ready",
            Json::Bool(leader.is_some() && store.health().is_healthy()),
        ),
        (
            "problems",
            Json::Arr(
                store
                    .health()
                    .problems()
                    .into_iter()
                    .map(Json::Str)
                    .collect(),
            ),
        ),
        (
            "snapshot_interval",
            s(duration::format(cfg.snapshot_interval)),
        ),
        (
            "snapshot_threshold",
            Json::Int(cfg.snapshot_threshold as i64),
        ),
        (
            "snapshot_store",
            obj(vec![
                ("dir", s(store.snapshot_dir().display().to_string())),
                (
                    "snapshots",
                    Json::Arr(store.snapshot_ids().into_iter().map(Json::Str).collect()),
                ),
            ]),
        ),
        // Commands are never compressed in the log.
        (
            "request_marshaler",
            obj(vec![
                ("compression_batch", Json::Int(0)),
                ("compression_size", Json::Int(0)),
                ("force_compression", Json::Bool(false)),
            ]),
        ),
        // Snapshots are built in a directory of their own and renamed: no CAS lock to own.
        ("snapshot_cas", obj(vec![("owner", Json::Null)])),
        ("sqlite3", sqlite),
        (
            "strong_read_term",
            Json::Int(store.strong_read_term() as i64),
        ),
        ("trailing_logs", Json::Int(cfg.trailing_logs as i64)),
    ]);
    let https = me.api_https;
    let q = &st.queue;
    let queue = obj(vec![(
        "_default",
        obj(vec![
            ("batch_size", Json::Int(q.config.batch_size as i64)),
            ("max_size", Json::Int(q.config.capacity as i64)),
            (
                "sequence_number",
                Json::Int(q.stats.sequence_number.load(Ordering::Relaxed) as i64),
            ),
            ("timeout", s(duration::format(q.config.timeout))),
            (
                "failed_statements",
                Json::Int(q.stats.failed_statements.load(Ordering::Relaxed) as i64),
            ),
        ]),
    )]);
    let http = obj(vec![
        (
            "auth",
            s(if st.auth.is_some() {
                "enabled"
            } else {
                "disabled"
            }),
        ),
        ("bind_addr", s(&st.bind_addr)),
        (
            "cluster",
            obj(vec![
                ("local_node_addr", s(&me.raft_addr)),
                (
                    "timeout",
                    s(duration::format(st.cluster.transport().connect_timeout())),
                ),
            ]),
        ),
        ("queue", queue),
        ("tls", obj(vec![("enabled", s(https.to_string()))])),
    ]);
    let now = SystemTime::now();
    let node = obj(vec![
        ("current_time", s(rfc3339(now))),
        ("start_time", s(rfc3339(st.started))),
        (
            "uptime",
            s(duration::format(
                now.duration_since(st.started).unwrap_or_default(),
            )),
        ),
    ]);
    let build = obj(vec![
        ("version", s(VERSION)),
        ("compiler", s("rustc")),
        ("compiler_command", s("cargo")),
        ("compiler_toolchain", s("rustc")),
        (
            "build_time",
            s(option_env!("SQLRAFT_BUILD_TIME").unwrap_or("unknown")),
        ),
        ("branch", s("main")),
        (
            "commit",
            s(option_env!("SQLRAFT_COMMIT").unwrap_or("unknown")),
        ),
    ]);
    let cluster = obj(vec![
        ("addr", s(&me.raft_addr)),
        ("api_addr", s(&me.api_addr)),
        ("https", s(https.to_string())),
    ]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    // Tokio's worker threads and live tasks stand for GOMAXPROCS and goroutines.
    let rt = tokio::runtime::Handle::current().metrics();
    let runtime = obj(vec![
        ("GOARCH", s(std::env::consts::ARCH)),
        ("GOMAXPROCS", Json::Int(rt.num_workers() as i64)),
        ("num_goroutine", Json::Int(rt.num_alive_tasks() as i64)),
        ("GOOS", s(std::env::consts::OS)),
        (
            "kubernetes_hint",
            Json::Bool(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()),
        ),
        ("num_cpu", Json::Int(cpus)),
        ("version", s("rust")),
    ]);
    let os = obj(vec![
        ("hostname", s(hostname())),
        // SAFETY: sysconf and getppid only read process-wide values.
        (
            "page_size",
            Json::Int(unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64),
        ),
        ("pid", Json::Int(std::process::id() as i64)),
        ("ppid", Json::Int(unsafe { libc::getppid() } as i64)),
        (
            "executable",
            s(std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
        ),
    ]);
    // rqlite reports the extensions under their own key (`.extensions` in its shell reads
    // `/status?key=extensions`) and again in `store.sqlite3`.
    let ext = &st.store.config().extensions;
    let extensions = obj(vec![
        (
            "dir",
            s(st.store
                .config()
                .data_dir
                .join("extensions")
                .display()
                .to_string()),
        ),
        (
            "names",
            Json::Arr(
                crate::db::extensions::names(ext)
                    .into_iter()
                    .map(Json::Str)
                    .collect(),
            ),
        ),
    ]);
    // rqlite's internode multiplexer; sqlraft's internode listener serves Raft and the
    // cluster service as one HTTP/2 service.
    let mux = obj(vec![
        ("addr", s(&me.raft_addr)),
        ("handlers", s("raft,cluster")),
        ("timeout", s(duration::format(cfg.apply_timeout))),
        (
            "tls",
            s(if st.cluster.transport().scheme() == "https" {
                "enabled"
            } else {
                "disabled"
            }),
        ),
    ]);
    let mut top = vec![
        ("build", build),
        ("cluster", cluster),
        ("extensions", extensions),
        ("http", http),
        ("mux", mux),
        ("network", super::interfaces::network()),
        ("node", node),
        ("os", os),
        ("runtime", runtime),
        ("store", store_obj),
    ];
    if let Some(d) = disco_json(st) {
        top.push(("disco", d));
    }
    if let Some(c) = cdc_json(st) {
        top.push(("cdc", c));
    }
    obj(top)
}

/// Change data capture: the queue, the replicated delivery mark and the last failure.
fn cdc_json(st: &HttpState) -> Option<Json> {
    let cdc = st.cdc.as_ref()?;
    let q = cdc.queue_state();
    let d = cdc.delivery_status();
    let p = st.store.cdc_progress();
    let endpoint = match &cdc.config().endpoint {
        crate::cdc::config::Endpoint::Http(u) => u.clone(),
        crate::cdc::config::Endpoint::Stdout => "stdout".into(),
    };
    let time = |t: Option<std::time::SystemTime>| match t {
        Some(t) => Json::Str(rfc3339(t)),
        None => Json::Null,
    };
    let range = |r: Option<(u64, u64)>| match r {
        Some((a, b)) => Json::Str(crate::cdc::deliver::key(a, b)),
        None => Json::Null,
    };
    Some(obj(vec![
        ("endpoint", s(endpoint)),
        ("service_id", s(cdc.config().service_id.clone())),
        ("delivered", Json::Uint(p.delivered)),
        ("recorded_sending", range(p.sending)),
        ("sending", range(d.sending)),
        ("queue_entries", Json::Uint(q.records)),
        ("queue_bytes", Json::Uint(q.bytes)),
        ("enqueued_index", Json::Uint(q.enqueued)),
        ("pruned_index", Json::Uint(q.pruned)),
        ("missing", range(q.gap)),
        (
            "events_dropped",
            Json::Uint(st.metrics.cdc.events_dropped.get()),
        ),
        ("last_error", d.last_error.map_or(Json::Null, Json::Str)),
        ("last_error_at", time(d.last_error_at)),
        ("last_sent_at", time(d.last_sent_at)),
    ]))
}

/// The discovery backend's last observations (`null` without `-disco-mode`).
fn disco_json(st: &HttpState) -> Option<Json> {
    let ds = st.disco.as_ref()?.status();
    Some(obj(vec![
        ("mode", s(ds.mode)),
        ("target", s(ds.target)),
        (
            "last_contact",
            ds.last_contact.map(|t| s(rfc3339(t))).unwrap_or(Json::Null),
        ),
        (
            "last_addresses",
            Json::Arr(ds.last_addresses.into_iter().map(Json::Str).collect()),
        ),
        (
            "last_error",
            ds.last_error.map(Json::Str).unwrap_or(Json::Null),
        ),
    ]))
}

/// `store.sqlite3`, with rqlite's names.
fn sqlite_json(d: &crate::db::stats::DbStats, extensions: &[std::path::PathBuf]) -> Json {
    let int = |v: u64| Json::Int(i64::try_from(v).unwrap_or(i64::MAX));
    let pragmas = |p: &crate::db::stats::Pragmas| {
        obj(vec![
            ("busy_timeout", s(&p.busy_timeout)),
            ("foreign_keys", s(&p.foreign_keys)),
            ("journal_mode", s(&p.journal_mode)),
            ("synchronous", s(&p.synchronous)),
            ("wal_autocheckpoint", s(&p.wal_autocheckpoint)),
        ])
    };
    let ro_idle = d.ro_conns_open.saturating_sub(d.ro_conns_in_use);
    obj(vec![
        (
            "compile_options",
            Json::Arr(d.compile_options.iter().map(s).collect()),
        ),
        (
            "conn_pool_stats",
            obj(vec![
                (
                    "ro",
                    obj(vec![
                        ("max_open_connections", int(d.ro_conns_max as u64)),
                        ("open_connections", int(d.ro_conns_open as u64)),
                        ("in_use", int(d.ro_conns_in_use as u64)),
                        ("idle", int(ro_idle as u64)),
                    ]),
                ),
                (
                    "rw",
                    obj(vec![
                        ("max_open_connections", int(1)),
                        ("open_connections", int(1)),
                    ]),
                ),
            ]),
        ),
        ("db_size", int(d.db_size)),
        ("db_size_friendly", s(friendly_bytes(d.db_size))),
        (
            "extensions",
            Json::Arr(
                crate::db::extensions::names(extensions)
                    .into_iter()
                    .map(Json::Str)
                    .collect(),
            ),
        ),
        (
            "last_modified",
            d.last_modified.map(|t| s(rfc3339(t))).unwrap_or(Json::Null),
        ),
        (
            "mem_stats",
            obj(vec![
                ("cache_size", Json::Int(d.cache_size)),
                ("freelist_count", int(d.freelist_count)),
                ("max_page_count", int(d.max_page_count)),
                ("page_count", int(d.page_count)),
                ("page_size", int(d.page_size)),
            ]),
        ),
        ("path", s(d.path.display().to_string())),
        // How the connections are opened (SQLite URI form, as rqlite's DSNs).
        ("ro_dsn", s(format!("file:{}?mode=ro", d.path.display()))),
        ("rw_dsn", s(format!("file:{}", d.path.display()))),
        // A write never leaves a transaction open (the transaction rule); a read holds one
        // while it runs.
        (
            "transaction",
            obj(vec![
                ("ro", Json::Bool(d.ro_conns_in_use > 0)),
                ("rw", Json::Bool(false)),
            ]),
        ),
        (
            "pragmas",
            obj(vec![("ro", pragmas(&d.ro)), ("rw", pragmas(&d.rw))]),
        ),
        ("size", int(d.size)),
        ("version", s(d.version)),
        ("wal_size", int(d.wal_size)),
    ])
}

/// Bytes in SI units, as rqlite's `*_friendly` fields show them (`350 kB`).
fn friendly_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if v < 10.0 => format!("{v:.1} {}", UNITS[unit]),
        _ => format!("{v:.0} {}", UNITS[unit]),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Follows a dotted `key=` path into an object.
fn select<'a>(j: &'a Json, key: &str) -> Option<&'a Json> {
    key.split('.').try_fold(j, |cur, part| match cur {
        Json::Obj(fields) => fields.iter().find(|(k, _)| k == part).map(|(_, v)| v),
        _ => None,
    })
}

/// `GET /status`.
pub async fn status(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], true)?;
    let j = status_json(st).await;
    let out = match call.params.key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => select(&j, k).ok_or(ApiError::NotFound)?,
        None => &j,
    };
    Ok(error::json(render(out, &call.params)))
}

/// `GET /readyz`.
pub async fn readyz(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    if call.params.noleader {
        return Ok(error::with_body(StatusCode::OK, error::TEXT, "[+]node ok"));
    }
    if st.store.leader().is_none() {
        return Err(ApiError::LeaderNotFound);
    }
    // A node that cannot write its log or apply entries is not ready, whatever the leader.
    let problems = st.store.health().problems();
    if !problems.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "[+]node ok\n[+]leader ok\n[+]store not ready: {}",
            problems.join("; ")
        )));
    }
    let mut body = String::from("[+]node ok\n[+]leader ok\n[+]store ok");
    if call.params.sync {
        let timeout = call.params.timeout.unwrap_or(Duration::from_secs(5));
        st.store.wait_synced(timeout).await.map_err(|e| {
            ApiError::Unavailable(format!(
                "[+]node ok\n[+]leader ok\n[+]store ok\n[+]sync {e}"
            ))
        })?;
        body.push_str("\n[+]sync ok");
    }
    Ok(error::with_body(StatusCode::OK, error::TEXT, body))
}

/// `POST /snapshot`.
pub async fn snapshot(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::POST], false)?;
    let trailing = call.params.trailing_logs.map(|t| t.max(0) as u64);
    st.store
        .snapshot(trailing)
        .await
        .map_err(|e| error::api_error(e.into()))?;
    Ok(error::empty(StatusCode::OK, None))
}

#[cfg(test)]
mod tests {
    use super::friendly_bytes;

    #[test]
    fn sizes_read_as_rqlite_prints_them() {
        assert_eq!(friendly_bytes(0), "0 B");
        assert_eq!(friendly_bytes(999), "999 B");
        assert_eq!(friendly_bytes(1500), "1.5 kB");
        assert_eq!(friendly_bytes(16384), "16 kB");
        assert_eq!(friendly_bytes(349_632), "350 kB");
        assert_eq!(friendly_bytes(4_100_000_000), "4.1 GB");
    }
}
