//! `GET /debug/vars`: the node's counters in rqlite's expvar maps and key names.
//!
//! Owns: the layout (expvar's: `{`, then one top-level key per line, sorted, `}`), `?key=`
//! filtering, and which sqlraft count stands behind each rqlite key. Keys of features sqlraft
//! does not have (auto-vacuum, WAL checkpoints, cloud backups, ...) read 0, the true count;
//! the table of every key and its meaning is `docs/design/metrics.md`.
//! Does not: count anything; every number is read from [`crate::metrics::Metrics`], the same
//! counters `/metrics` exposes, or from the node's state at this moment.

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::error::{self, ApiError};
use super::json::Json;
use super::{require_method, Call, HttpState};
use crate::metrics::exposition::{Sample, Sampler};
use crate::metrics::{process, Metrics, Op};

/// One map: keys and numbers.
type Map = Vec<(&'static str, u64)>;

/// expvar's rendering of a map: `{"a": 1, "b": 2}`, keys sorted.
fn render_map(mut pairs: Map) -> String {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// rqlite's `http` map.
fn http(m: &Metrics) -> Map {
    let h = &m.http;
    let q = &m.queue;
    let c = &m.cluster;
    vec![
        ("auth_fail", h.auth_fail.get()),
        ("auth_ok", h.auth_ok.get()),
        ("backups", h.backups.get()),
        ("boot", h.boot.get()),
        ("execute_stmts_rx", h.execute_stmts_rx.get()),
        ("executions", h.executions.get()),
        ("leader_not_found", h.leader_not_found.get()),
        ("loads", h.loads.get()),
        // Never incremented by rqlite either (the key exists, the event does not).
        ("loads_aborted", 0),
        ("num_readyz", h.num_readyz.get()),
        ("num_status", h.num_status.get()),
        ("queries", h.queries.get()),
        ("query_stmts_rx", h.query_stmts_rx.get()),
        ("queued_executions", h.queued_executions.get()),
        ("queued_executions_failed", q.failed_batches.get()),
        ("queued_executions_leadership_lost", q.leadership_lost.get()),
        ("queued_executions_no_leader", q.no_leader.get()),
        ("queued_executions_not_leader", q.not_leader.get()),
        ("queued_executions_num_stmts_rx", q.statements_rx.get()),
        ("queued_executions_num_stmts_tx", q.statements_tx.get()),
        ("queued_executions_ok", q.ok_batches.get()),
        ("queued_executions_unknown_error", q.unknown_error.get()),
        ("queued_executions_wait", h.queued_executions_wait.get()),
        (
            "queued_executions_wait_timeout",
            h.queued_executions_wait_timeout.get(),
        ),
        ("remote_backups", c.forwarded(Op::Backup)),
        ("remote_executions", c.forwarded(Op::Execute)),
        ("remote_executions_failed", c.forward_failures(Op::Execute)),
        ("remote_loads", c.forwarded(Op::Load)),
        ("remote_queries", c.forwarded(Op::Query)),
        ("remote_queries_failed", c.forward_failures(Op::Query)),
        ("remote_remove_node", c.forwarded(Op::Remove)),
        ("remote_requests", c.forwarded(Op::Request)),
        ("remote_requests_failed", c.forward_failures(Op::Request)),
        ("remote_stepdowns", c.forwarded(Op::Stepdown)),
        ("request_stmts_rx", h.request_stmts_rx.get()),
        ("requests", h.requests.get()),
        ("tls_cert_fetched", m.api.tls_handshakes.get()),
        ("user_reaps", h.user_reaps.get()),
        ("user_snapshots", h.user_snapshots.get()),
    ]
}

/// rqlite's `store` map.
fn store(m: &Metrics) -> Map {
    let s = &m.store;
    let snap = &m.snapshot;
    vec![
        ("auto_optimize_duration", 0),
        ("auto_vacuum_duration", 0),
        ("failed_heartbeat_observed", s.failed_heartbeats.get()),
        ("leader_changes_dropped", 0),
        ("leader_changes_observed", s.leader_changes.get()),
        ("nodes_reaped_failed", s.nodes_reaped_failed.get()),
        ("nodes_reaped_ok", s.nodes_reaped_ok.get()),
        ("num_auto_optimizes", 0),
        ("num_auto_optimizes_failed", 0),
        ("num_auto_restores", m.auto.restores.get()),
        ("num_auto_restores_failed", m.auto.restores_failed.get()),
        ("num_auto_restores_skipped", m.auto.restores_skipped.get()),
        ("num_auto_vacuums", 0),
        ("num_auto_vacuums_failed", 0),
        ("num_backups", s.backups.get()),
        ("num_boots", s.boots.get()),
        ("num_compressed_commands", 0),
        ("num_db_stats_errors", s.db_stats_errors.get()),
        ("num_full_checkpoint_failed", 0),
        ("num_ignored_joins", s.ignored_joins.get()),
        ("num_joins", s.joins.get()),
        ("num_loads", s.loads.get()),
        ("num_provider_checks", 0),
        ("num_provider_provides", 0),
        ("num_provider_provides_fail", 0),
        ("num_recoveries", s.recoveries.get()),
        ("num_removed_before_joins", s.removed_before_joins.get()),
        ("num_restores", s.restores.get()),
        ("num_restores_failed", s.restores_failed.get()),
        ("num_snapshot_persists", snap.persists.get()),
        ("num_snapshot_persists_failed", snap.persists_failed.get()),
        ("num_snapshots", s.snapshots.get()),
        ("num_snapshots_failed", s.snapshots_failed.get()),
        // Every snapshot is a full copy of the database.
        ("num_snapshots_full", s.snapshots.get()),
        ("num_snapshots_incremental", 0),
        ("num_uncompressed_commands", s.commands.get()),
        ("num_user_snapshots", s.user_snapshots.get()),
        ("num_user_snapshots_failed", s.user_snapshots_failed.get()),
        ("num_verify_leader", s.verify_leader.get()),
        ("num_verify_leader_failed", s.verify_leader_failed.get()),
        ("num_wal_checkpoint_truncate_failed", 0),
        ("num_wal_snapshots", 0),
        ("num_wal_snapshots_failed", 0),
        ("snapshot_create_chk_truncate_duration", 0),
        ("snapshot_create_duration", s.snapshot_create_duration.get()),
        ("snapshot_create_wal_compact_duration", 0),
        (
            "snapshot_persist_duration",
            snap.latest_persist_duration.get(),
        ),
        ("snapshot_precompact_wal_size", 0),
        ("snapshot_wal_size", 0),
        ("verify_leader_duration", s.verify_leader_duration.get()),
    ]
}

/// rqlite's `cluster` map (its 8.x keys, and `num_client_force_new_conn` of later versions).
fn cluster(m: &Metrics) -> Map {
    let c = &m.cluster;
    vec![
        ("num_backup_req", c.backup_req.get()),
        // The internode client never retries a call (a write's outcome must not be guessed).
        ("num_client_execute_retries", 0),
        ("num_client_force_new_conn", c.client_new_conns.get()),
        ("num_client_load_retries", 0),
        ("num_client_query_retries", 0),
        ("num_client_read_timeouts", c.client_timeouts.get()),
        ("num_client_request_retries", 0),
        ("num_client_retries", 0),
        ("num_client_write_timeouts", 0),
        ("num_execute_req", c.execute_req.get()),
        ("num_get_node_api_req", c.get_node_api_req.get()),
        ("num_get_node_api_req_local", 0),
        ("num_get_node_api_req_retries", 0),
        ("num_get_node_api_resp", c.get_node_api_resp.get()),
        ("num_join_req", c.join_req.get()),
        ("num_load_req", c.load_req.get()),
        ("num_notify_req", c.notify_req.get()),
        ("num_query_req", c.query_req.get()),
        ("num_remove_node_req", c.remove_node_req.get()),
        ("num_request_req", c.request_req.get()),
        ("num_stepdown_req", c.stepdown_req.get()),
    ]
}

/// rqlite's `db` map.
fn db(m: &Metrics) -> Map {
    let d = &m.db;
    vec![
        ("backup_sleeps", 0),
        ("backup_step_dones", 0),
        ("backup_step_errors", 0),
        ("checkpoint_duration_ms", d.checkpoint_duration.get()),
        ("checkpoint_errors", d.checkpoint_errors.get()),
        ("checkpointed_moves", d.checkpointed_moves.get()),
        ("checkpointed_pages", d.checkpointed_pages.get()),
        ("checkpoints", d.checkpoints.get()),
        ("commit_hooks", 0),
        ("dropped_cdc_events", m.cdc.events_dropped.get()),
        ("execute_transactions", d.execute_transactions.get()),
        ("execution_errors", d.execution_errors.get()),
        ("executions", d.executions.get()),
        ("executions_force_queries", d.executions_force_queries.get()),
        ("open_duration_ms", d.open_duration.get()),
        ("preupdates", 0),
        ("preupdates_callback_errors", 0),
        ("preupdates_errors", 0),
        ("queries", d.queries.get()),
        ("query_errors", d.query_errors.get()),
        ("query_transactions", d.query_transactions.get()),
        ("request_transactions", d.request_transactions.get()),
        ("requests", d.requests.get()),
        ("update_hooks", 0),
        ("update_hooks_callback_errors", 0),
        ("update_hooks_errors", 0),
    ]
}

/// rqlite's `queue` map, and sqlraft's batch counts beside it.
fn queue(m: &Metrics, s: &Sample) -> Map {
    let q = &m.queue;
    vec![
        ("batches", q.batches.get()),
        ("depth", s.queue_depth),
        ("failed_batches", q.failed_batches.get()),
        ("failed_statements", q.failed_statements.get()),
        // There is no explicit flush: a batch leaves when full or when its timeout fires.
        ("num_flush", 0),
        ("num_timeout", q.timeouts.get()),
        ("objects_rx", q.statements_rx.get()),
        ("objects_tx", q.statements_tx.get()),
        ("requests", q.requests.get()),
    ]
}

/// rqlite's `snapshot` map (its snapshot store).
fn snapshot(m: &Metrics) -> Map {
    let s = &m.snapshot;
    vec![
        ("latest_persist_duration", s.latest_persist_duration.get()),
        ("latest_persist_size", s.latest_persist_size.get()),
        ("snapshot_create_mrsw_fail", 0),
        ("snapshot_open_mrsw_fail", 0),
        ("snapshots_reaped", s.reaped.get()),
        ("snapshots_reaped_failed", s.reaped_failed.get()),
        ("upgrade_fail", s.upgrade_fail.get()),
        ("upgrade_ok", s.upgrade_ok.get()),
    ]
}

/// rqlite's `mux` map: its internode listener.
fn mux(m: &Metrics) -> Map {
    vec![
        ("num_connections_handled", m.internode.accepted.get()),
        ("num_tls_cert_fetched", m.internode.tls_handshakes.get()),
        ("num_unregistered_handlers", 0),
    ]
}

/// rqlite's `proto` map: commands encoded for the log. sqlraft never compresses a command,
/// so every request and byte is an uncompressed one.
fn proto(m: &Metrics) -> Map {
    let p = &m.proto;
    vec![
        ("num_compressed_bytes", 0),
        ("num_compressed_requests", 0),
        ("num_compression_misses", 0),
        ("num_precompressed_bytes", p.bytes.get()),
        ("num_requests", p.requests.get()),
        ("num_uncompressed_bytes", p.bytes.get()),
        ("num_uncompressed_requests", p.requests.get()),
    ]
}

/// rqlite's `sql-processor` map. The rewriter is a tokenizer that cannot panic, so there are
/// no parser panics to count.
fn sql_processor(m: &Metrics) -> Map {
    vec![
        ("num_parser_panics", 0),
        ("num_rewritten_stmts", m.sql.rewritten_stmts.get()),
    ]
}

/// rqlite's `uploader` map (`-auto-backup`; sqlraft writes local files only).
/// Change data capture (sqlraft's; zero without `-cdc-config`).
fn cdc(m: &Metrics) -> Map {
    let c = &m.cdc;
    vec![
        ("batches_dropped", c.batches_dropped.get()),
        ("batches_sent", c.batches_sent.get()),
        ("enqueued_index", c.enqueued_index.get()),
        ("events_captured", c.events_captured.get()),
        ("events_dropped", c.events_dropped.get()),
        ("events_sent", c.events_sent.get()),
        ("high_watermark", c.high_watermark.get()),
        ("queue_bytes", c.queue_bytes.get()),
        ("queue_entries", c.queue_entries.get()),
        ("send_failures", c.send_failures.get()),
    ]
}

fn uploader(m: &Metrics) -> Map {
    let a = &m.auto;
    vec![
        ("last_upload_bytes", a.last_upload_bytes.get()),
        ("num_sum_get_fail", 0),
        ("num_uploads_fail", a.uploads_fail.get()),
        ("num_uploads_ok", a.uploads_ok.get()),
        ("num_uploads_skipped", a.uploads_skipped.get()),
        ("num_uploads_skipped_id", a.uploads_skipped_id.get()),
        ("total_upload_bytes", a.upload_bytes.get()),
    ]
}

/// rqlite's `downloader` map (`-auto-restore` reading its file).
fn downloader(m: &Metrics) -> Map {
    let a = &m.auto;
    vec![
        ("download_bytes", a.download_bytes.get()),
        ("num_downloads_fail", a.downloads_fail.get()),
        ("num_downloads_ok", a.downloads_ok.get()),
    ]
}

/// rqlite's `wal` map (compacting SQLite's WAL into incremental snapshots): every sqlraft
/// snapshot is a full copy, so there is no WAL compaction.
fn wal() -> Map {
    vec![
        ("compact_index_duration_ms", 0),
        ("compact_load_duration_ms", 0),
        ("compact_load_page_count", 0),
    ]
}

/// sqlraft's own `raft` map: Raft state now, and the elections and leader changes counted.
fn raft(m: &Metrics, s: &Sample) -> Map {
    vec![
        ("applied_index", s.applied_index),
        ("commit_index", s.commit_index),
        ("elections", m.store.elections.get()),
        ("is_leader", u64::from(s.is_leader)),
        ("last_log_index", s.last_log_index),
        ("leader_changes", m.store.leader_changes.get()),
        ("log_entries", s.log_entries),
        ("log_size_bytes", s.log_bytes),
        ("snapshot_index", s.snapshot_index),
        ("term", s.term),
        ("voters", s.voters),
    ]
}

/// `memstats`: Go's runtime.MemStats field names, filled from what the kernel reports (there
/// is no garbage collector, so its counts are 0 and it is reported off).
fn memstats() -> String {
    let mem = process::memory();
    let n = |v: u64| Json::Int(i64::try_from(v).unwrap_or(i64::MAX));
    Json::Obj(vec![
        ("Alloc".into(), n(mem.rss_anon)),
        ("Sys".into(), n(mem.virtual_size)),
        ("HeapAlloc".into(), n(mem.rss_anon)),
        ("HeapSys".into(), n(mem.data)),
        ("HeapInuse".into(), n(mem.rss_anon)),
        ("StackInuse".into(), n(mem.stack)),
        ("StackSys".into(), n(mem.stack)),
        ("RSS".into(), n(mem.rss)),
        ("MaxRSS".into(), n(mem.peak_rss)),
        ("NumGC".into(), Json::Int(0)),
        ("NumForcedGC".into(), Json::Int(0)),
        ("PauseTotalNs".into(), Json::Int(0)),
        ("GCCPUFraction".into(), Json::Int(0)),
        ("EnableGC".into(), Json::Bool(false)),
    ])
    .to_compact()
}

/// Every top-level key and its rendered value, sorted by key.
pub fn vars(m: &Metrics, sampler: &dyn Sampler) -> Vec<(&'static str, String)> {
    let s = sampler.sample();
    let cmdline = Json::Arr(std::env::args().map(Json::Str).collect()).to_compact();
    let mut out = vec![
        ("cdc", render_map(cdc(m))),
        ("cluster", render_map(cluster(m))),
        ("cmdline", cmdline),
        ("db", render_map(db(m))),
        ("downloader", render_map(downloader(m))),
        ("http", render_map(http(m))),
        ("memstats", memstats()),
        ("mux", render_map(mux(m))),
        ("proto", render_map(proto(m))),
        ("queue", render_map(queue(m, &s))),
        ("raft", render_map(raft(m, &s))),
        ("snapshot", render_map(snapshot(m))),
        ("sql-processor", render_map(sql_processor(m))),
        ("store", render_map(store(m))),
        ("uploader", render_map(uploader(m))),
        ("wal", render_map(wal())),
    ];
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// `GET /debug/vars`: expvar's layout, one top-level key per line; `?key=` keeps one.
pub async fn debug_vars(st: &HttpState, call: Call) -> Result<Response, ApiError> {
    require_method(&call, &[Method::GET], false)?;
    let key = call.params.key.as_deref().filter(|k| !k.is_empty());
    let lines: Vec<String> = vars(&st.metrics, st.sampler.as_ref())
        .into_iter()
        .filter(|(k, _)| key.is_none_or(|want| want == *k))
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    let body = format!("{{\n{}\n}}\n", lines.join(",\n"));
    Ok(error::with_body(StatusCode::OK, error::JSON, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Zero;

    impl Sampler for Zero {
        fn sample(&self) -> Sample {
            Sample::default()
        }
    }

    #[test]
    fn maps_are_sorted_and_expvar_shaped() {
        assert_eq!(render_map(vec![("b", 1), ("a", 2)]), "{\"a\": 2, \"b\": 1}");
        let m = Metrics::default();
        m.http.user_snapshots.inc();
        let all = vars(&m, &Zero);
        let keys: Vec<_> = all.iter().map(|(k, _)| *k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (k, v) in &all {
            serde_json::from_str::<serde_json::Value>(v)
                .unwrap_or_else(|e| panic!("{k}: {e}: {v}"));
        }
        let http = &all.iter().find(|(k, _)| *k == "http").expect("http").1;
        assert!(http.contains("\"user_snapshots\": 1"), "{http}");
        assert!(http.starts_with("{\"auth_fail\": 0, "), "{http}");
    }
}
