//! `/metrics`: the Prometheus registry over a node's [`Metrics`], in the Prometheus text
//! format (version 0.0.4) written by `prometheus-client`.
//!
//! Counters and histograms are registered once; the node's state (term, indexes, sizes on
//! disk, queue depth) is read from its source of truth on every scrape through a [`Sampler`],
//! never copied into a gauge that could go stale. Every name starts `sqlraft_`; counters end
//! `_total`, durations `_seconds`, sizes `_bytes` (the list, with units, is in
//! `docs/design/metrics.md`).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{ListenerCounters, Metrics};

/// The node's state at the moment of a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub is_leader: bool,
    pub voters: u64,
    /// Entries held in the Raft log, and the log file's size.
    pub log_entries: u64,
    pub log_bytes: u64,
    /// The SQLite database's files (the database and its write-ahead log).
    pub db_bytes: u64,
    /// The current snapshot's database file.
    pub snapshot_bytes: u64,
    /// Requests waiting in the `?queue` batcher.
    pub queue_depth: u64,
}

/// Reads a node's state from its source of truth (the store's Raft metrics, its files, the
/// queue's channel), once per scrape.
pub trait Sampler: Send + Sync + std::fmt::Debug + 'static {
    fn sample(&self) -> Sample;
}

impl<T: Sampler + ?Sized> Sampler for Arc<T> {
    fn sample(&self) -> Sample {
        self.as_ref().sample()
    }
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Builds the registry of one node.
pub fn registry(m: Arc<Metrics>, sampler: Box<dyn Sampler>) -> Registry {
    let mut r = Registry::with_prefix("sqlraft");
    r.register(
        "http_requests",
        "HTTP API requests, by endpoint and status code",
        m.http.by_endpoint.count.clone(),
    );
    r.register_with_unit(
        "http_request_duration",
        "Time to answer an HTTP API request, by endpoint and status code",
        Unit::Seconds,
        m.http.by_endpoint.seconds.clone(),
    );
    r.register(
        "forwarded_requests",
        "Operations this node sent to the leader, by operation",
        m.cluster.forwarded.clone(),
    );
    r.register(
        "forwarded_request_failures",
        "Operations sent to the leader that failed, by operation",
        m.cluster.forward_failures.clone(),
    );
    r.register_with_unit(
        "snapshot_duration",
        "Time to build a snapshot",
        Unit::Seconds,
        m.store.snapshot_seconds.clone(),
    );
    r.register(
        "write_queue_batch_size",
        "Requests per batch of the ?queue write queue",
        m.queue.batch_size.clone(),
    );
    r.register_collector(Box::new(Scraped { m, sampler }));
    r
}

/// Encodes `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Plain counters of [`Metrics`] and the sampled state, encoded on each scrape.
#[derive(Debug)]
struct Scraped {
    m: Arc<Metrics>,
    sampler: Box<dyn Sampler>,
}

/// Values of one metric by one label (`listener`, `kind`, ...).
type ByLabel<'a, V> = (&'static str, Vec<(&'a str, V)>);

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    (label, values): ByLabel<'_, u64>,
) -> std::fmt::Result {
    let mut me = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstCounter::new(v).encode(me.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> std::fmt::Result {
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    (label, values): ByLabel<'_, i64>,
) -> std::fmt::Result {
    let mut me = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        let labels = [(label, l)];
        ConstGauge::new(v).encode(me.encode_family(&labels)?)?;
    }
    Ok(())
}

fn by<'a, V>(
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, V)>,
) -> ByLabel<'a, V> {
    (label, values.into_iter().collect())
}

impl Collector for Scraped {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.m;
        let s = self.sampler.sample();
        let e = &mut enc;
        let listeners: [(&str, &ListenerCounters); 2] =
            [("api", &*m.api), ("internode", &*m.internode)];

        // The API and internode listeners.
        gauges(
            e,
            "open_connections",
            "Connections open now, by listener",
            by("listener", listeners.map(|(n, l)| (n, l.open.get()))),
        )?;
        counters(
            e,
            "connections_accepted",
            "Connections accepted, by listener",
            by("listener", listeners.map(|(n, l)| (n, l.accepted.get()))),
        )?;
        counters(
            e,
            "tls_handshake_failures",
            "TLS handshakes that failed (or plain HTTP sent to a TLS port), by listener",
            by(
                "listener",
                listeners.map(|(n, l)| (n, l.tls_handshake_failures.get())),
            ),
        )?;
        counters(
            e,
            "auth_failures",
            "Requests refused by -auth (bad or missing credentials, or no permission), by listener",
            by(
                "listener",
                [
                    ("api", m.http.auth_fail.get()),
                    ("internode", m.cluster.auth_fail.get()),
                ],
            ),
        )?;

        // Raft: state read now, events counted as they happen.
        let raft_gauges: [(&str, &str, u64); 7] = [
            ("raft_term", "Current Raft term", s.term),
            (
                "raft_commit_index",
                "Index of the newest log entry known to be committed",
                s.commit_index,
            ),
            (
                "raft_applied_index",
                "Index of the newest log entry applied to the database",
                s.applied_index,
            ),
            (
                "raft_last_log_index",
                "Index of the newest entry in this node's log",
                s.last_log_index,
            ),
            (
                "raft_snapshot_index",
                "Index of the newest entry the current snapshot covers",
                s.snapshot_index,
            ),
            (
                "raft_is_leader",
                "1 if this node is the leader (with a valid lease), else 0",
                u64::from(s.is_leader),
            ),
            ("raft_voters", "Voting members of the cluster", s.voters),
        ];
        for (name, help, v) in raft_gauges {
            gauge(e, name, help, None, v)?;
        }
        gauge(
            e,
            "raft_log_entries",
            "Entries held in the Raft log (not yet compacted into a snapshot)",
            None,
            s.log_entries,
        )?;
        gauge(
            e,
            "raft_log_size",
            "Size of the Raft log file on disk",
            Some(&Unit::Bytes),
            s.log_bytes,
        )?;
        counter(
            e,
            "raft_leader_changes",
            "Times the leader this node knows of changed",
            m.store.leader_changes.get(),
        )?;
        counter(
            e,
            "raft_failed_heartbeats",
            "AppendEntries calls (heartbeats, replication) sent as leader that a peer did not answer",
            m.store.failed_heartbeats.get(),
        )?;
        counter(
            e,
            "raft_elections",
            "Elections this node started (times it became a candidate)",
            m.store.elections.get(),
        )?;

        // Snapshots.
        counter(
            e,
            "snapshots",
            "Snapshots built by this node",
            m.store.snapshots.get(),
        )?;
        counter(
            e,
            "snapshot_failures",
            "Snapshot builds that failed",
            m.store.snapshots_failed.get(),
        )?;
        counter(
            e,
            "snapshot_restores",
            "Snapshots installed into the database (sent by the leader, or at start)",
            m.store.restores.get(),
        )?;
        counter(
            e,
            "user_snapshots",
            "Snapshots requested with POST /snapshot that completed",
            m.store.user_snapshots.get(),
        )?;
        gauge(
            e,
            "snapshot_size",
            "Size of the current snapshot's database file",
            Some(&Unit::Bytes),
            s.snapshot_bytes,
        )?;

        // The database.
        gauge(
            e,
            "db_size",
            "Size of the SQLite database files on disk",
            Some(&Unit::Bytes),
            s.db_bytes,
        )?;
        counters(
            e,
            "db_statements",
            "SQL statements run: writes applied from the log, reads served here, by kind",
            by(
                "kind",
                [
                    ("execute", m.db.executions.get()),
                    ("query", m.db.queries.get()),
                    ("request", m.db.requests.get()),
                ],
            ),
        )?;
        counter(
            e,
            "db_checkpoints",
            "WAL checkpoints run into the SQLite database file",
            m.db.checkpoints.get(),
        )?;
        counter(
            e,
            "db_checkpoint_failures",
            "WAL checkpoints that failed",
            m.db.checkpoint_errors.get(),
        )?;
        counters(
            e,
            "db_statement_errors",
            "SQL statements that failed, by kind",
            by(
                "kind",
                [
                    ("execute", m.db.execution_errors.get()),
                    ("query", m.db.query_errors.get()),
                ],
            ),
        )?;

        // The ?queue write queue.
        let q = &m.queue;
        gauge(
            e,
            "write_queue_depth",
            "Requests waiting in the ?queue write queue",
            None,
            s.queue_depth,
        )?;
        let queue_counters: [(&str, &str, u64); 5] = [
            (
                "write_queue_requests",
                "Requests accepted into the ?queue write queue",
                q.requests.get(),
            ),
            (
                "write_queue_statements",
                "Statements accepted into the ?queue write queue",
                q.statements_rx.get(),
            ),
            (
                "write_queue_batches",
                "Batches the write queue sent to the log",
                q.batches.get(),
            ),
            (
                "write_queue_failed_batches",
                "Write-queue batches that failed",
                q.failed_batches.get(),
            ),
            (
                "write_queue_failed_statements",
                "Queued statements that failed",
                q.failed_statements.get(),
            ),
        ];
        for (name, help, v) in queue_counters {
            counter(e, name, help, v)?;
        }

        // The cluster service and the internode client.
        let c = &m.cluster;
        counters(
            e,
            "cluster_requests",
            "Requests other nodes sent to this node's cluster service, by type",
            by(
                "type",
                [
                    ("join", c.join_req.get()),
                    ("notify", c.notify_req.get()),
                    ("remove", c.remove_node_req.get()),
                    ("node_meta", c.get_node_api_req.get()),
                    ("execute", c.execute_req.get()),
                    ("query", c.query_req.get()),
                    ("request", c.request_req.get()),
                    ("backup", c.backup_req.get()),
                    ("load", c.load_req.get()),
                    ("stepdown", c.stepdown_req.get()),
                ],
            ),
        )?;
        counter(
            e,
            "internode_timeouts",
            "Internode calls that got no answer within their deadline",
            c.client_timeouts.get(),
        )?;
        counter(
            e,
            "internode_broken_connections",
            "Cluster calls whose connection broke before an answer (a new one is dialled)",
            c.client_new_conns.get(),
        )?;

        // The process.
        let mem = super::process::memory();
        gauge(
            e,
            "process_resident_memory",
            "Resident memory of the process (VmRSS)",
            Some(&Unit::Bytes),
            mem.rss,
        )?;
        let sql = super::process::sqlite_memory();
        gauge(
            e,
            "sqlite_memory",
            "Memory SQLite holds for all of the node's connections (page caches, schemas, statements)",
            Some(&Unit::Bytes),
            sql.used,
        )?;
        gauge(
            e,
            "sqlite_page_cache",
            "Of that, the connections' page caches: database pages held in memory",
            Some(&Unit::Bytes),
            sql.page_cache,
        )?;

        // Change data capture (zero without -cdc-config).
        let c = &m.cdc;
        for (name, help, v) in [
            (
                "cdc_events_captured",
                "Row changes captured from applied log entries",
                c.events_captured.get(),
            ),
            (
                "cdc_events_dropped",
                "Row changes dropped because the CDC queue was full (never delivered)",
                c.events_dropped.get(),
            ),
            (
                "cdc_events_sent",
                "Row changes in requests the CDC endpoint acknowledged",
                c.events_sent.get(),
            ),
            (
                "cdc_batches_sent",
                "Requests the CDC endpoint acknowledged",
                c.batches_sent.get(),
            ),
            (
                "cdc_send_failures",
                "CDC requests that failed (connection, timeout, non-2xx answer)",
                c.send_failures.get(),
            ),
            (
                "cdc_batches_dropped",
                "CDC batches given up after transmit_max_retries",
                c.batches_dropped.get(),
            ),
        ] {
            counter(e, name, help, v)?;
        }
        gauge(
            e,
            "cdc_queue_entries",
            "Log entries with row changes held in the CDC queue",
            None,
            c.queue_entries.get(),
        )?;
        gauge(
            e,
            "cdc_queue",
            "Size of the CDC queue's records",
            Some(&Unit::Bytes),
            c.queue_bytes.get(),
        )?;
        gauge(
            e,
            "cdc_enqueued_index",
            "Highest log index whose row changes are queued",
            None,
            c.enqueued_index.get(),
        )?;
        gauge(
            e,
            "cdc_high_watermark",
            "Highest log index whose row changes the endpoint acknowledged (replicated)",
            None,
            c.high_watermark.get(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Sample);

    impl Sampler for Fixed {
        fn sample(&self) -> Sample {
            self.0.clone()
        }
    }

    #[test]
    fn sampled_state_and_counts_are_encoded_with_prometheus_names() {
        let m = Arc::new(Metrics::default());
        m.store.snapshots.add(3);
        m.api.tls_handshake_failures.inc();
        let r = registry(
            m,
            Box::new(Fixed(Sample {
                term: 7,
                is_leader: true,
                db_bytes: 4096,
                ..Sample::default()
            })),
        );
        let out = encode(&r).expect("encode");
        for line in [
            "# TYPE sqlraft_raft_term gauge",
            "sqlraft_raft_term 7",
            "sqlraft_raft_is_leader 1",
            "sqlraft_db_size_bytes 4096",
            "# TYPE sqlraft_snapshots_total counter",
            "sqlraft_snapshots_total 3",
            "sqlraft_tls_handshake_failures_total{listener=\"api\"} 1",
            "sqlraft_tls_handshake_failures_total{listener=\"internode\"} 0",
            "# TYPE sqlraft_snapshot_duration_seconds histogram",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line:?} missing from:\n{out}"
            );
        }
    }
}
