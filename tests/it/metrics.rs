//! `/metrics` and `/debug/vars` through the real binary: the Prometheus output checked by
//! `promtool`, a real Prometheus server scraping a cluster whose leader is killed, and rqlite's
//! expvar maps key by key.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/run` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{url_encode, wait_for, Client, Proc, ProcCluster, Resp};

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped). Label values here
/// never hold `,`, `"` or `}`, so a plain split is enough.
fn parse_exposition(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let labels = inner
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.push(Series {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the series `name` whose labels include `labels`; panics if there is none.
fn value(all: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name}{labels:?} among {} series", all.len()))
        .value
}

async fn scrape(c: &Client) -> (String, Vec<Series>) {
    let r = c.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text();
    let series = parse_exposition(&text);
    (text, series)
}

/// Runs `promtool check metrics` on `text`; panics with its findings unless it finds none.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics on {what}: {:?}\n{findings}",
        out.status.code()
    );
}

fn ok(r: &Resp, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_what_clients_did() {
    // Steps: a 3-process cluster; a write and a strong read through a follower (forwarded),
    // a queued write with wait and a snapshot on the leader, an unknown path; each node's
    // /metrics passes `promtool check metrics` with no findings, and its numbers are what
    // the clients did and what the cluster is.
    let c = ProcCluster::start(3, &[]).await;
    let leader = c.wait_for_leader().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let (l, f) = (c.client(leader), c.client(follower));
    let r = f
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]"#,
        )
        .await;
    ok(&r, "forwarded write");
    ok(
        &f.get(&format!(
            "/db/query?level=strong&q={}",
            url_encode("SELECT * FROM t")
        ))
        .await,
        "forwarded strong read",
    );
    ok(
        &l.post_json("/db/execute?queue&wait", r#"["INSERT INTO t VALUES (2)"]"#)
            .await,
        "queued write",
    );
    ok(&l.post_json("/snapshot", "").await, "snapshot");
    assert_eq!(l.get("/no-such-path").await.status, 404);

    let (ltext, lm) = scrape(l).await;
    let (ftext, fm) = scrape(f).await;
    promtool_check(&ltext, "the leader's /metrics");
    promtool_check(&ftext, "a follower's /metrics");

    // Requests by endpoint and status, with their latency.
    let exec = [("endpoint", "execute"), ("code", "200")];
    assert!(value(&fm, "sqlraft_http_requests_total", &exec) >= 1.0);
    assert!(value(&fm, "sqlraft_http_request_duration_seconds_count", &exec) >= 1.0);
    assert!(value(&fm, "sqlraft_http_request_duration_seconds_sum", &exec) > 0.0);
    let nf = [("endpoint", "unknown"), ("code", "404")];
    assert_eq!(value(&lm, "sqlraft_http_requests_total", &nf), 1.0);
    // Forwarded by the follower, served by the leader's cluster service.
    let op = |o| [("operation", o)];
    assert_eq!(
        value(&fm, "sqlraft_forwarded_requests_total", &op("execute")),
        1.0
    );
    assert_eq!(
        value(&fm, "sqlraft_forwarded_requests_total", &op("query")),
        1.0
    );
    assert_eq!(
        value(
            &fm,
            "sqlraft_forwarded_request_failures_total",
            &op("execute")
        ),
        0.0
    );
    assert_eq!(
        value(
            &lm,
            "sqlraft_cluster_requests_total",
            &[("type", "execute")]
        ),
        1.0
    );
    // Raft: one leader, the same term, indexes in order.
    assert_eq!(value(&lm, "sqlraft_raft_is_leader", &[]), 1.0);
    assert_eq!(value(&fm, "sqlraft_raft_is_leader", &[]), 0.0);
    assert_eq!(
        value(&lm, "sqlraft_raft_term", &[]),
        value(&fm, "sqlraft_raft_term", &[])
    );
    for m in [&lm, &fm] {
        assert_eq!(value(m, "sqlraft_raft_voters", &[]), 3.0);
        let commit = value(m, "sqlraft_raft_commit_index", &[]);
        let applied = value(m, "sqlraft_raft_applied_index", &[]);
        assert!(applied >= 4.0 && commit >= applied, "{commit} {applied}");
        assert!(value(m, "sqlraft_raft_last_log_index", &[]) >= commit);
        assert!(value(m, "sqlraft_raft_leader_changes_total", &[]) >= 1.0);
        assert!(value(m, "sqlraft_raft_log_size_bytes", &[]) > 0.0);
        assert!(value(m, "sqlraft_db_size_bytes", &[]) > 0.0);
        // This scrape's own connection is open.
        assert!(value(m, "sqlraft_open_connections", &[("listener", "api")]) >= 1.0);
        assert!(
            value(
                m,
                "sqlraft_connections_accepted_total",
                &[("listener", "internode")]
            ) >= 1.0
        );
        assert_eq!(
            value(
                m,
                "sqlraft_tls_handshake_failures_total",
                &[("listener", "api")]
            ),
            0.0
        );
        assert_eq!(
            value(m, "sqlraft_auth_failures_total", &[("listener", "api")]),
            0.0
        );
        assert!(value(m, "sqlraft_process_resident_memory_bytes", &[]) > 0.0);
    }
    // The leader's snapshot, and the queue's one batch of one request.
    assert_eq!(value(&lm, "sqlraft_user_snapshots_total", &[]), 1.0);
    assert!(value(&lm, "sqlraft_snapshots_total", &[]) >= 1.0);
    assert!(value(&lm, "sqlraft_snapshot_duration_seconds_count", &[]) >= 1.0);
    assert!(value(&lm, "sqlraft_snapshot_size_bytes", &[]) > 0.0);
    assert_eq!(value(&lm, "sqlraft_write_queue_batch_size_count", &[]), 1.0);
    assert_eq!(value(&lm, "sqlraft_write_queue_batch_size_sum", &[]), 1.0);
    assert_eq!(value(&lm, "sqlraft_write_queue_depth", &[]), 0.0);
    assert_eq!(value(&lm, "sqlraft_write_queue_statements_total", &[]), 1.0);
}

/// A Prometheus server of our own on a free loopback port, killed (by its handle) on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    /// The config, the log and the data; kept while Prometheus runs.
    _dir: Option<tempfile::TempDir>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` of sqlraft HTTP APIs) every 200ms,
    /// and waits until it is ready.
    async fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n\
                 scrape_configs:\n  - job_name: sqlraft\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut last = String::new();
        // The free port found by binding port 0 may be taken again before Prometheus binds
        // it: only that is retried, on another port.
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let data = dir.path().join(format!("data-{attempt}"));
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("prometheus (Debian package `prometheus`; .ci/run installs it)");
            let mut p = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
                _dir: None,
            };
            match p.wait_ready().await {
                Ok(()) => {
                    p._dir = Some(dir);
                    return p;
                }
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => panic!("prometheus: {e}"),
            }
        }
        panic!("prometheus could not bind a free port: {last}")
    }

    /// Waits until Prometheus answers `/-/ready`; the reason if it exits first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited {status}: {}", self.log_tail()));
            }
            let ready = http
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(ready, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An instant query: each result series' labels and value.
    async fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={}", self.url, url_encode(q)))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(r) = r else { return Vec::new() };
        let Ok(bytes) = r.bytes().await else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return Vec::new();
        };
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
                        (labels, v.unwrap_or(f64::NAN))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `instance` of every series `q` returns.
    async fn instances(&self, q: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .query(q)
            .await
            .into_iter()
            .filter_map(|(l, _)| l.get("instance").cloned())
            .collect();
        out.sort();
        out
    }

    /// `q`'s value for `instance`, if Prometheus has one.
    async fn value_of(&self, q: &str, instance: &str) -> Option<f64> {
        self.query(q)
            .await
            .into_iter()
            .find(|(l, _)| l.get("instance").map(String::as_str) == Some(instance))
            .map(|(_, v)| v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_leader_change_when_the_leader_is_killed() {
    // Steps: a 3-process cluster scraped by a real Prometheus; Prometheus sees three targets
    // up and exactly one leader; the leader is killed (SIGKILL); Prometheus then sees the
    // killed target down, exactly one leader among the survivors (the one the cluster
    // names), an election started by the new leader, a leader change counted by every
    // survivor, and the new leader's heartbeats to the killed node failing. Every query of
    // the example Grafana dashboard runs on this Prometheus and names real metrics.
    let mut c = ProcCluster::start(3, &[]).await;
    let old = c.wait_for_leader().await;
    let all: Vec<String> = c.members.iter().map(|m| m.http_addr.clone()).collect();
    let addr = |i: usize| all[i].clone();
    let prom = Prometheus::start(&all).await;
    let within = Duration::from_secs(60);

    let want = vec![addr(old)];
    wait_for(
        within,
        "Prometheus to see 3 targets up and one leader",
        || async {
            let up = prom.instances("up == 1").await;
            let leaders = prom.instances("sqlraft_raft_is_leader == 1").await;
            (up.len() == 3 && leaders == want).then_some(())
        },
    )
    .await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut changes_before = BTreeMap::new();
    let mut elections_before = BTreeMap::new();
    for &i in &survivors {
        let a = addr(i);
        let ch = prom.value_of("sqlraft_raft_leader_changes_total", &a).await;
        let el = prom.value_of("sqlraft_raft_elections_total", &a).await;
        changes_before.insert(i, ch.expect("leader changes scraped"));
        elections_before.insert(i, el.expect("elections scraped"));
    }

    c.kill9(old);
    let new = c.wait_for_leader().await;
    assert_ne!(new, old);
    let new_addr = addr(new);
    let want = vec![new_addr.clone()];
    let killed = addr(old);
    wait_for(within, "Prometheus to see the new leader", || async {
        let down = prom.value_of("up", &killed).await == Some(0.0);
        let leaders = prom.instances("sqlraft_raft_is_leader == 1").await;
        (down && leaders == want).then_some(())
    })
    .await;
    wait_for(within, "Prometheus to see the change counted", || async {
        for &i in &survivors {
            let ch = prom
                .value_of("sqlraft_raft_leader_changes_total", &addr(i))
                .await?;
            (ch > changes_before[&i]).then_some(())?;
        }
        let el = prom
            .value_of("sqlraft_raft_elections_total", &new_addr)
            .await?;
        (el > elections_before[&new]).then_some(())?;
        // The new leader's heartbeats to the killed node go unanswered.
        let failed = prom
            .value_of("sqlraft_raft_failed_heartbeats_total", &new_addr)
            .await?;
        (failed > 0.0).then_some(())
    })
    .await;
    dashboard_queries_run_on(&prom).await;
    // The leader's term is the new one everywhere Prometheus looks.
    let terms: BTreeSet<u64> = prom
        .query("sqlraft_raft_term")
        .await
        .into_iter()
        .filter(|(l, _)| l.get("instance") != Some(&killed))
        .map(|(_, v)| v as u64)
        .collect();
    assert_eq!(terms.len(), 1, "{terms:?}");
}

/// Every query of `examples/grafana-dashboard.json` is valid PromQL to a real Prometheus,
/// and every metric it names is one Prometheus scraped from the nodes.
async fn dashboard_queries_run_on(prom: &Prometheus) {
    let dash: Value = serde_json::from_str(include_str!("../../examples/grafana-dashboard.json"))
        .expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut names = BTreeSet::new();
    let mut queries = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr").replace("$job", "sqlraft");
            // `query` asserts that Prometheus accepted it.
            prom.query(&expr).await;
            queries += 1;
            let mut rest = expr.as_str();
            while let Some(i) = rest.find("sqlraft_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(queries >= 30, "{queries} queries");
    for name in names {
        let found = prom.query(&format!("count({name})")).await;
        assert!(
            !found.is_empty(),
            "the dashboard names {name}, which no node exposes"
        );
    }
}

/// rqlite v8.43.3's expvar maps and their keys (from its source: each package's
/// `ResetStats`). `cluster` also carries `num_client_force_new_conn` of later versions.
fn rqlite_maps() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (
            "cluster",
            vec![
                "num_backup_req",
                "num_client_execute_retries",
                "num_client_force_new_conn",
                "num_client_load_retries",
                "num_client_query_retries",
                "num_client_read_timeouts",
                "num_client_request_retries",
                "num_client_retries",
                "num_client_write_timeouts",
                "num_execute_req",
                "num_get_node_api_req",
                "num_get_node_api_req_local",
                "num_get_node_api_req_retries",
                "num_get_node_api_resp",
                "num_join_req",
                "num_load_req",
                "num_notify_req",
                "num_query_req",
                "num_remove_node_req",
                "num_request_req",
                "num_stepdown_req",
            ],
        ),
        (
            "db",
            vec![
                "backup_sleeps",
                "backup_step_dones",
                "backup_step_errors",
                "checkpoint_duration_ms",
                "checkpoint_errors",
                "checkpointed_moves",
                "checkpointed_pages",
                "checkpoints",
                "commit_hooks",
                "dropped_cdc_events",
                "execute_transactions",
                "execution_errors",
                "executions",
                "executions_force_queries",
                "open_duration_ms",
                "preupdates",
                "preupdates_callback_errors",
                "preupdates_errors",
                "queries",
                "query_errors",
                "query_transactions",
                "request_transactions",
                "requests",
                "update_hooks",
                "update_hooks_callback_errors",
                "update_hooks_errors",
            ],
        ),
        (
            "downloader",
            vec!["download_bytes", "num_downloads_fail", "num_downloads_ok"],
        ),
        (
            "http",
            vec![
                "auth_fail",
                "auth_ok",
                "backups",
                "boot",
                "execute_stmts_rx",
                "executions",
                "leader_not_found",
                "loads",
                "loads_aborted",
                "num_readyz",
                "num_status",
                "queries",
                "query_stmts_rx",
                "queued_executions",
                "queued_executions_failed",
                "queued_executions_leadership_lost",
                "queued_executions_no_leader",
                "queued_executions_not_leader",
                "queued_executions_num_stmts_rx",
                "queued_executions_num_stmts_tx",
                "queued_executions_ok",
                "queued_executions_unknown_error",
                "queued_executions_wait",
                "queued_executions_wait_timeout",
                "remote_backups",
                "remote_executions",
                "remote_executions_failed",
                "remote_loads",
                "remote_queries",
                "remote_queries_failed",
                "remote_remove_node",
                "remote_requests",
                "remote_requests_failed",
                "remote_stepdowns",
                "request_stmts_rx",
                "requests",
                "tls_cert_fetched",
                "user_snapshots",
            ],
        ),
        (
            "mux",
            vec![
                "num_connections_handled",
                "num_tls_cert_fetched",
                "num_unregistered_handlers",
            ],
        ),
        (
            "proto",
            vec![
                "num_compressed_bytes",
                "num_compressed_requests",
                "num_compression_misses",
                "num_precompressed_bytes",
                "num_requests",
                "num_uncompressed_bytes",
                "num_uncompressed_requests",
            ],
        ),
        (
            "queue",
            vec!["num_flush", "num_timeout", "objects_rx", "objects_tx"],
        ),
        (
            "snapshot",
            vec![
                "latest_persist_duration",
                "latest_persist_size",
                "snapshot_create_mrsw_fail",
                "snapshot_open_mrsw_fail",
                "snapshots_reaped",
                "snapshots_reaped_failed",
                "upgrade_fail",
                "upgrade_ok",
            ],
        ),
        (
            "sql-processor",
            vec!["num_parser_panics", "num_rewritten_stmts"],
        ),
        (
            "store",
            vec![
                "auto_optimize_duration",
                "auto_vacuum_duration",
                "failed_heartbeat_observed",
                "leader_changes_dropped",
                "leader_changes_observed",
                "nodes_reaped_failed",
                "nodes_reaped_ok",
                "num_auto_optimizes",
                "num_auto_optimizes_failed",
                "num_auto_restores",
                "num_auto_restores_failed",
                "num_auto_restores_skipped",
                "num_auto_vacuums",
                "num_auto_vacuums_failed",
                "num_backups",
                "num_boots",
                "num_compressed_commands",
                "num_db_stats_errors",
                "num_full_checkpoint_failed",
                "num_ignored_joins",
                "num_joins",
                "num_loads",
                "num_provider_checks",
                "num_provider_provides",
                "num_provider_provides_fail",
                "num_recoveries",
                "num_removed_before_joins",
                "num_restores",
                "num_restores_failed",
                "num_snapshot_persists",
                "num_snapshot_persists_failed",
                "num_snapshots",
                "num_snapshots_failed",
                "num_snapshots_full",
                "num_snapshots_incremental",
                "num_uncompressed_commands",
                "num_user_snapshots",
                "num_user_snapshots_failed",
                "num_verify_leader",
                "num_verify_leader_failed",
                "num_wal_checkpoint_truncate_failed",
                "num_wal_snapshots",
                "num_wal_snapshots_failed",
                "snapshot_create_chk_truncate_duration",
                "snapshot_create_duration",
                "snapshot_create_wal_compact_duration",
                "snapshot_persist_duration",
                "snapshot_precompact_wal_size",
                "snapshot_wal_size",
                "verify_leader_duration",
            ],
        ),
        (
            "uploader",
            vec![
                "last_upload_bytes",
                "num_sum_get_fail",
                "num_uploads_fail",
                "num_uploads_ok",
                "num_uploads_skipped",
                "num_uploads_skipped_id",
                "total_upload_bytes",
            ],
        ),
        (
            "wal",
            vec![
                "compact_index_duration_ms",
                "compact_load_duration_ms",
                "compact_load_page_count",
            ],
        ),
    ])
}

/// Keys sqlraft adds to a map of rqlite's (documented in docs/design/metrics.md).
fn sqlraft_extras(map: &str) -> Vec<&'static str> {
    match map {
        "http" => vec!["user_reaps"],
        "queue" => vec![
            "batches",
            "depth",
            "failed_batches",
            "failed_statements",
            "requests",
        ],
        _ => Vec::new(),
    }
}

fn n(v: &Value, map: &str, key: &str) -> u64 {
    v[map][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{map}.{key} is not a count: {}", v[map]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_vars_carries_rqlites_maps_field_by_field() {
    // Steps: one node; a write (one statement with RANDOM(), one with RETURNING), a read, a
    // unified request, a queued write with wait, a backup and a snapshot; /debug/vars has
    // expvar's layout, every map and key of rqlite's (plus sqlraft's `raft` map), and counts
    // exactly what was done.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Proc::spawn(dir.path(), &[]);
    node.wait_ready().await;
    let c = &node.client;
    ok(
        &c.post_json(
            "/db/execute",
            r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES (RANDOM())", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (5) RETURNING v"]"#,
        )
        .await,
        "write",
    );
    ok(
        &c.get(&format!("/db/query?q={}", url_encode("SELECT * FROM t")))
            .await,
        "read",
    );
    ok(
        &c.post_json("/db/request", r#"["SELECT 1", "INSERT INTO t VALUES (2)"]"#)
            .await,
        "request",
    );
    ok(
        &c.post_json("/db/execute?queue&wait", r#"["INSERT INTO t VALUES (3)"]"#)
            .await,
        "queued write",
    );
    ok(&c.get("/db/backup").await, "backup");
    ok(&c.post_json("/snapshot", "").await, "snapshot");
    ok(&c.get("/status").await, "status");

    let r = c.get("/debug/vars").await;
    ok(&r, "/debug/vars");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    // expvar's layout: `{`, one top-level key per line in order, `}`.
    let body = r.text();
    assert!(body.starts_with("{\n\"cdc\": {"), "{body}");
    assert!(body.ends_with("\n}\n"), "{body}");
    let lines: Vec<&str> = body.trim_end().lines().collect();
    let keys: Vec<String> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            let key = l.split('"').nth(1).unwrap_or_else(|| panic!("{l:?}"));
            assert!(l.starts_with(&format!("\"{key}\": ")), "{l:?}");
            key.to_string()
        })
        .collect();
    let mut want: Vec<String> = rqlite_maps().keys().map(|k| k.to_string()).collect();
    want.extend(["cdc", "cmdline", "memstats", "raft"].map(String::from));
    want.sort();
    assert_eq!(keys, want);

    let v = r.json();
    for (map, keys) in rqlite_maps() {
        let got: BTreeSet<&str> = v[map]
            .as_object()
            .unwrap_or_else(|| panic!("{map} is not a map: {}", v[map]))
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: BTreeSet<&str> = keys.into_iter().collect();
        want.extend(sqlraft_extras(map));
        assert_eq!(got, want, "keys of {map}");
        for k in &got {
            n(&v, map, k);
        }
    }

    // What was done, counted where rqlite counts it.
    let http = |k| n(&v, "http", k);
    assert_eq!(http("executions"), 2, "plain and queued: {}", v["http"]);
    assert_eq!(http("execute_stmts_rx"), 4);
    assert_eq!(http("queries"), 1);
    assert_eq!(http("query_stmts_rx"), 1);
    assert_eq!(http("requests"), 1);
    assert_eq!(http("request_stmts_rx"), 2);
    assert_eq!(http("queued_executions"), 1);
    assert_eq!(http("queued_executions_wait"), 1);
    assert_eq!(http("queued_executions_ok"), 1);
    assert_eq!(http("queued_executions_num_stmts_rx"), 1);
    assert_eq!(http("queued_executions_num_stmts_tx"), 1);
    assert_eq!(http("backups"), 1);
    assert_eq!(http("user_snapshots"), 1);
    assert_eq!(http("num_status"), 1);
    assert!(http("num_readyz") >= 1, "the harness's readiness polls");
    assert_eq!(
        http("remote_executions"),
        0,
        "a single node forwards nothing"
    );
    assert_eq!(http("auth_fail"), 0);
    assert!(
        http("auth_ok") >= 8,
        "auth off: every check passes, as in rqlite"
    );

    let store = |k| n(&v, "store", k);
    assert_eq!(store("num_user_snapshots"), 1);
    assert!(store("num_snapshots") >= 1);
    assert_eq!(store("num_snapshots_full"), store("num_snapshots"));
    assert_eq!(store("num_snapshots_incremental"), 0);
    assert!(store("num_snapshot_persists") >= 1);
    assert_eq!(store("num_backups"), 1);
    assert_eq!(store("num_joins"), 0);
    assert_eq!(store("num_loads"), 0);
    assert!(store("leader_changes_observed") >= 1, "it became leader");
    assert!(store("num_uncompressed_commands") >= 3, "three writes");
    assert_eq!(store("num_compressed_commands"), 0);

    assert_eq!(n(&v, "sql-processor", "num_rewritten_stmts"), 1, "RANDOM()");
    assert_eq!(
        n(&v, "proto", "num_requests"),
        store("num_uncompressed_commands")
    );
    assert!(n(&v, "proto", "num_uncompressed_bytes") > 0);
    assert!(n(&v, "snapshot", "latest_persist_size") > 0);
    // Writes applied from the log (the unified request's are `requests`), reads served.
    assert_eq!(n(&v, "db", "executions"), 5, "{}", v["db"]);
    assert_eq!(n(&v, "db", "executions_force_queries"), 1, "RETURNING");
    assert_eq!(n(&v, "db", "requests"), 2, "{}", v["db"]);
    assert_eq!(n(&v, "db", "queries"), 1, "{}", v["db"]);
    assert_eq!(n(&v, "queue", "objects_rx"), 1);
    assert_eq!(n(&v, "queue", "objects_tx"), 1);
    assert_eq!(n(&v, "queue", "batches"), 1);
    for k in ["num_execute_req", "num_join_req", "num_query_req"] {
        assert_eq!(n(&v, "cluster", k), 0, "{k}");
    }

    // sqlraft's own map: the node's Raft state now.
    let raft = |k| n(&v, "raft", k);
    assert_eq!(raft("is_leader"), 1);
    assert_eq!(raft("voters"), 1);
    assert!(raft("term") >= 1);
    assert!(raft("commit_index") >= raft("applied_index"));
    assert!(
        raft("applied_index") >= 4,
        "a blank entry and three writes: {}",
        v["raft"]
    );
    // cmdline: the process's arguments; memstats: Go's names, filled from the kernel's.
    let cmdline = v["cmdline"].as_array().expect("cmdline");
    assert!(cmdline.iter().any(|a| a == "-node-id"), "{cmdline:?}");
    assert!(n(&v, "memstats", "Sys") > 0);
    assert!(n(&v, "memstats", "HeapAlloc") > 0);
    assert_eq!(v["memstats"]["EnableGC"], false);

    // ?key= keeps one top-level key.
    let one = c.get("/debug/vars?key=store").await;
    ok(&one, "?key=store");
    let keys: Vec<String> = one
        .json()
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, vec!["store".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_vars_counts_joins_and_forwarding_on_both_ends() {
    // Steps: a 3-process cluster (two joins); a write through a follower; the leader counted
    // the joins and the forwarded request its cluster service served, the follower the
    // request it forwarded.
    let c = ProcCluster::start(3, &[]).await;
    let leader = c.wait_for_leader().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    ok(
        &c.client(follower)
            .post_json("/db/execute", r#"["CREATE TABLE t (v)"]"#)
            .await,
        "forwarded write",
    );
    let lv = c.client(leader).get("/debug/vars").await.json();
    let fv = c.client(follower).get("/debug/vars").await.json();
    assert_eq!(n(&fv, "http", "remote_executions"), 1, "{}", fv["http"]);
    assert_eq!(n(&fv, "http", "remote_executions_failed"), 0);
    assert_eq!(n(&fv, "http", "executions"), 1);
    assert_eq!(n(&lv, "cluster", "num_execute_req"), 1, "{}", lv["cluster"]);
    assert_eq!(n(&lv, "http", "executions"), 0);
    if leader == 0 {
        // Node 1 bootstrapped and took both joins.
        assert_eq!(n(&lv, "store", "num_joins"), 2, "{}", lv["store"]);
        assert!(n(&lv, "cluster", "num_join_req") >= 2, "{}", lv["cluster"]);
    }
    assert!(n(&lv, "mux", "num_connections_handled") >= 2);
    assert_eq!(n(&lv, "raft", "voters"), 3);
    assert_eq!(n(&fv, "raft", "is_leader"), 0);
}
