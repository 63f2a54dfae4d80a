//! The node's counters: one set, read by `/metrics` (Prometheus) and `/debug/vars` (rqlite's
//! expvar maps).
//!
//! Owns: every count and histogram a node keeps, grouped by the component that increments it
//! ([`HttpCounters`], [`StoreCounters`], [`ClusterCounters`], [`QueueStats`],
//! [`SnapshotCounters`], [`DbCounters`], [`ProtoCounters`], [`SqlCounters`],
//! [`ListenerCounters`]), the Prometheus registry built
//! over them ([`exposition`]), and the process's memory figures ([`process`]).
//! Does not: hold state that has a source of truth elsewhere (term, indexes, file sizes,
//! queue depth): those are read at scrape time through a [`exposition::Sampler`]. No process
//! globals: each [`Node`](crate::node::Node) makes one [`Metrics`] and hands each component
//! its part, so tests of several in-process nodes see each node's own numbers.
//!
//! A count is incremented once, where its event happens; both endpoints render the same
//! atomics. Counters are monotonic for the life of the process (a restart starts from zero,
//! as Prometheus expects).

pub mod exposition;
pub mod process;

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The value, with the atomic's own API (`/status` reads queue counters this way).
    pub fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
}

/// A value that is replaced, not added to: the duration or size of the latest event.
#[derive(Debug, Default)]
pub struct Latest(AtomicU64);

impl Latest {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn set_millis(&self, d: Duration) {
        self.set(d.as_millis().try_into().unwrap_or(u64::MAX));
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections).
#[derive(Debug, Default)]
pub struct UpDown(AtomicI64);

impl UpDown {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more until the guard is dropped.
    pub fn hold(&self) -> Held<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self)
    }
}

/// One unit of an [`UpDown`], given back when dropped (also on panic or cancellation).
pub struct Held<'a>(&'a UpDown);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Labels of an HTTP request: the endpoint it was routed to and the status code answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

/// An operation forwarded to the leader.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Op {
    Execute,
    Query,
    Request,
    Backup,
    Load,
    Remove,
    Stepdown,
    /// A follower's `linearizable` read asking the leader for its read index.
    ReadIndex,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::Execute,
        Op::Query,
        Op::Request,
        Op::Backup,
        Op::Load,
        Op::Remove,
        Op::Stepdown,
        Op::ReadIndex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Execute => "execute",
            Op::Query => "query",
            Op::Request => "request",
            Op::Backup => "backup",
            Op::Load => "load",
            Op::Remove => "remove",
            Op::Stepdown => "stepdown",
            Op::ReadIndex => "read_index",
        }
    }
}

impl EncodeLabelValue for Op {
    fn encode(&self, e: &mut LabelValueEncoder) -> std::fmt::Result {
        e.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub operation: Op,
}

/// Requests answered with a latency histogram; request counts are the histogram's `_count`
/// and a counter family beside it.
#[derive(Debug)]
pub struct HttpRequests {
    pub count: Family<RequestLabels, prometheus_client::metrics::counter::Counter>,
    pub seconds: Family<RequestLabels, Histogram>,
}

impl Default for HttpRequests {
    fn default() -> Self {
        Self {
            count: Family::default(),
            // 0.5 ms to ~16 s: a local read to a large load.
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        }
    }
}

/// The public API's counts (rqlite's `http` map). Endpoint counts are taken when the request
/// is routed, as rqlite does, whatever its outcome.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub by_endpoint: HttpRequests,
    pub executions: Counter,
    pub queries: Counter,
    /// `/db/request` requests.
    pub requests: Counter,
    pub backups: Counter,
    pub loads: Counter,
    pub boot: Counter,
    pub user_snapshots: Counter,
    /// `/reap` requests (rqlite 10's endpoint; a sqlraft extra in the `http` map).
    pub user_reaps: Counter,
    pub num_status: Counter,
    pub num_readyz: Counter,
    pub execute_stmts_rx: Counter,
    pub query_stmts_rx: Counter,
    pub request_stmts_rx: Counter,
    /// `/db/execute?queue` requests accepted into the queue.
    pub queued_executions: Counter,
    /// ... of which waited for their batch (`wait`), and of those, timed out.
    pub queued_executions_wait: Counter,
    pub queued_executions_wait_timeout: Counter,
    /// Requests answered 503 because no leader was known.
    pub leader_not_found: Counter,
    pub auth_ok: Counter,
    pub auth_fail: Counter,
}

/// The `?queue` batcher's counts (rqlite's `queue` map and the `queued_executions_*` keys of
/// its `http` map).
#[derive(Debug)]
pub struct QueueStats {
    /// Batches sent to the log, and those that failed.
    pub batches: Counter,
    pub failed_batches: Counter,
    /// Requests queued (each a client's `/db/execute?queue` call).
    pub requests: Counter,
    /// Statements queued, and statements sent to the log in batches.
    pub statements_rx: Counter,
    pub statements_tx: Counter,
    /// Statements that failed (in a failed batch, or with an error of their own).
    pub failed_statements: Counter,
    /// Batches sent when the batch timeout fired (rather than when full).
    pub timeouts: Counter,
    /// Batches applied.
    pub ok_batches: Counter,
    /// Attempts at a batch refused for want of a leader (it is retried); batches that failed
    /// because the leader moved, because the leader did not say whether it applied them, or
    /// for another reason.
    pub no_leader: Counter,
    pub not_leader: Counter,
    pub leadership_lost: Counter,
    pub unknown_error: Counter,
    /// Requests per batch.
    pub batch_size: Histogram,
    /// The last sequence number handed out (`/status`).
    pub sequence_number: AtomicU64,
}

impl Default for QueueStats {
    fn default() -> Self {
        Self {
            batches: Counter::default(),
            failed_batches: Counter::default(),
            requests: Counter::default(),
            statements_rx: Counter::default(),
            statements_tx: Counter::default(),
            failed_statements: Counter::default(),
            timeouts: Counter::default(),
            ok_batches: Counter::default(),
            no_leader: Counter::default(),
            not_leader: Counter::default(),
            leadership_lost: Counter::default(),
            unknown_error: Counter::default(),
            // 1, 2, 4 ... 4096 requests.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            sequence_number: AtomicU64::new(0),
        }
    }
}

/// The store's counts (rqlite's `store` map).
#[derive(Debug)]
pub struct StoreCounters {
    /// Snapshots built by this node's state machine, and builds that failed.
    pub snapshots: Counter,
    pub snapshots_failed: Counter,
    /// How long building each snapshot took.
    pub snapshot_seconds: Histogram,
    pub snapshot_create_duration: Latest,
    /// `POST /snapshot` requests that completed, and that failed.
    pub user_snapshots: Counter,
    pub user_snapshots_failed: Counter,
    /// Snapshots installed into the database (from the leader, or at start), and failures.
    pub restores: Counter,
    pub restores_failed: Counter,
    pub boots: Counter,
    pub backups: Counter,
    pub loads: Counter,
    /// Commands this node proposed to the log (never compressed).
    pub commands: Counter,
    pub joins: Counter,
    /// Joins of a node already a member with the same id and address: nothing to do.
    pub ignored_joins: Counter,
    /// Members removed because a joining node reused their id or address.
    pub removed_before_joins: Counter,
    /// Leadership confirmed with a quorum (a heartbeat round), failures, latest duration.
    pub verify_leader: Counter,
    pub verify_leader_failed: Counter,
    pub verify_leader_duration: Latest,
    /// The leader this node knows of changed (to another node, or from none to one).
    pub leader_changes: Counter,
    /// Elections this node started (it became a candidate).
    pub elections: Counter,
    pub nodes_reaped_ok: Counter,
    pub nodes_reaped_failed: Counter,
    /// Starts that applied a `peers.json` (recovery after quorum loss).
    pub recoveries: Counter,
    /// AppendEntries calls (heartbeats and replication) this node sent as leader that a
    /// peer did not answer.
    pub failed_heartbeats: Counter,
    /// `/status` requests whose SQLite figures could not be read.
    pub db_stats_errors: Counter,
}

impl Default for StoreCounters {
    fn default() -> Self {
        Self {
            snapshots: Counter::default(),
            snapshots_failed: Counter::default(),
            // 1 ms to ~65 s.
            snapshot_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            snapshot_create_duration: Latest::default(),
            user_snapshots: Counter::default(),
            user_snapshots_failed: Counter::default(),
            restores: Counter::default(),
            restores_failed: Counter::default(),
            boots: Counter::default(),
            backups: Counter::default(),
            loads: Counter::default(),
            commands: Counter::default(),
            joins: Counter::default(),
            ignored_joins: Counter::default(),
            removed_before_joins: Counter::default(),
            verify_leader: Counter::default(),
            verify_leader_failed: Counter::default(),
            verify_leader_duration: Latest::default(),
            leader_changes: Counter::default(),
            elections: Counter::default(),
            nodes_reaped_ok: Counter::default(),
            nodes_reaped_failed: Counter::default(),
            recoveries: Counter::default(),
            failed_heartbeats: Counter::default(),
            db_stats_errors: Counter::default(),
        }
    }
}

/// The snapshot files' counts (rqlite's `snapshot` map).
#[derive(Debug, Default)]
pub struct SnapshotCounters {
    /// Snapshots written into place (built here or received from the leader), failures.
    pub persists: Counter,
    pub persists_failed: Counter,
    /// Size and duration of the latest one written.
    pub latest_persist_size: Latest,
    pub latest_persist_duration: Latest,
    /// Snapshots of the earlier single-file format converted, and conversions that failed.
    pub upgrade_ok: Counter,
    pub upgrade_fail: Counter,
    /// Older snapshots deleted once a newer one was in place, and deletions that failed.
    pub reaped: Counter,
    pub reaped_failed: Counter,
}

/// SQL run against the database (rqlite's `db` map): statements applied from the log and
/// reads served here.
#[derive(Debug, Default)]
pub struct DbCounters {
    /// Write statements applied, those that failed, requests applied as transactions.
    pub executions: Counter,
    pub execution_errors: Counter,
    pub execute_transactions: Counter,
    /// Read statements served, those that failed, read requests run as transactions.
    pub queries: Counter,
    pub query_errors: Counter,
    pub query_transactions: Counter,
    /// `/db/request` statements applied through the log, and those requests as transactions.
    pub requests: Counter,
    pub request_transactions: Counter,
    /// Write statements applied as queries (`RETURNING`).
    pub executions_force_queries: Counter,
    /// How long opening the database took at start.
    pub open_duration: Latest,
    /// WAL checkpoints run, failed, the latest's duration; WAL frames seen and moved into
    /// the database by them.
    pub checkpoints: Counter,
    pub checkpoint_errors: Counter,
    pub checkpoint_duration: Latest,
    pub checkpointed_pages: Counter,
    pub checkpointed_moves: Counter,
}

/// The cluster service's counts (rqlite's `cluster` map): requests other nodes sent here,
/// and this node's internode client.
#[derive(Debug)]
pub struct ClusterCounters {
    pub get_node_api_req: Counter,
    pub get_node_api_resp: Counter,
    pub execute_req: Counter,
    pub query_req: Counter,
    pub request_req: Counter,
    pub backup_req: Counter,
    pub load_req: Counter,
    pub remove_node_req: Counter,
    pub notify_req: Counter,
    pub join_req: Counter,
    pub stepdown_req: Counter,
    /// Internode calls that got no answer within their deadline.
    pub client_timeouts: Counter,
    /// Cluster calls whose connection broke before an answer: the pooled client drops that
    /// connection and dials a new one for the next call (rqlite's forced new connections).
    pub client_new_conns: Counter,
    /// Internode requests refused by this node's `-auth` file.
    pub auth_fail: Counter,
    /// Operations sent to the leader, and those of them that failed.
    pub forwarded: Family<OpLabels, prometheus_client::metrics::counter::Counter>,
    pub forward_failures: Family<OpLabels, prometheus_client::metrics::counter::Counter>,
}

impl Default for ClusterCounters {
    fn default() -> Self {
        let c = Self {
            get_node_api_req: Counter::default(),
            get_node_api_resp: Counter::default(),
            execute_req: Counter::default(),
            query_req: Counter::default(),
            request_req: Counter::default(),
            backup_req: Counter::default(),
            load_req: Counter::default(),
            remove_node_req: Counter::default(),
            notify_req: Counter::default(),
            join_req: Counter::default(),
            stepdown_req: Counter::default(),
            client_timeouts: Counter::default(),
            client_new_conns: Counter::default(),
            auth_fail: Counter::default(),
            forwarded: Family::default(),
            forward_failures: Family::default(),
        };
        // Every operation is exposed from the start, at 0, so `rate()` sees the first one.
        for op in Op::ALL {
            let l = OpLabels { operation: op };
            drop(c.forwarded.get_or_create(&l));
            drop(c.forward_failures.get_or_create(&l));
        }
        c
    }
}

impl ClusterCounters {
    pub fn forwarded(&self, op: Op) -> u64 {
        self.forwarded
            .get_or_create(&OpLabels { operation: op })
            .get()
    }

    pub fn forward_failures(&self, op: Op) -> u64 {
        self.forward_failures
            .get_or_create(&OpLabels { operation: op })
            .get()
    }

    /// Records one operation sent to the leader and whether it failed there.
    pub fn record_forward(&self, op: Op, ok: bool) {
        let l = OpLabels { operation: op };
        self.forwarded.get_or_create(&l).inc();
        if !ok {
            self.forward_failures.get_or_create(&l).inc();
        }
    }
}

/// Commands encoded for the Raft log (rqlite's `proto` map). Commands are never compressed.
#[derive(Debug, Default)]
pub struct ProtoCounters {
    /// Commands proposed by this node, and their encoded size.
    pub requests: Counter,
    pub bytes: Counter,
}

/// The SQL rewriter's counts (rqlite's `sql-processor` map).
#[derive(Debug, Default)]
pub struct SqlCounters {
    /// Statements whose `RANDOM()` or time functions were replaced by values before they
    /// entered the log.
    pub rewritten_stmts: Counter,
}

/// One listener's connections.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub open: UpDown,
    pub accepted: Counter,
    /// TLS handshakes begun (the certificate was presented), and those that failed.
    pub tls_handshakes: Counter,
    pub tls_handshake_failures: Counter,
}

/// Everything one node counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub http: HttpCounters,
    /// Shared with the write queue, which `/status` reads directly.
    pub queue: Arc<QueueStats>,
    pub store: StoreCounters,
    pub snapshot: SnapshotCounters,
    pub db: DbCounters,
    pub cluster: ClusterCounters,
    pub proto: ProtoCounters,
    pub sql: SqlCounters,
    /// The public API's listener and the internode one.
    pub api: Arc<ListenerCounters>,
    pub internode: Arc<ListenerCounters>,
    /// Automatic backups and the restore at start (`-auto-backup`, `-auto-restore`).
    pub auto: AutoCounters,
    /// Change data capture (`-cdc-config`).
    pub cdc: CdcCounters,
}

/// Change data capture: what was captured, queued, sent and dropped, and where the queue
/// stands (the gauges are set by the queue's writer, which owns that state).
#[derive(Debug, Default)]
pub struct CdcCounters {
    /// Row changes captured from applied entries.
    pub events_captured: Counter,
    /// Row changes dropped because the queue was full (rqlite's `dropped_cdc_events`).
    pub events_dropped: Counter,
    /// Requests the endpoint acknowledged, and the row changes they carried.
    pub batches_sent: Counter,
    pub events_sent: Counter,
    /// Attempts that failed (connection, timeout, non-2xx answer).
    pub send_failures: Counter,
    /// Batches given up after `transmit_max_retries`.
    pub batches_dropped: Counter,
    /// Log entries with events held in the queue, and their bytes.
    pub queue_entries: Latest,
    pub queue_bytes: Latest,
    /// Highest index queued, and the replicated delivered mark.
    pub enqueued_index: Latest,
    pub high_watermark: Latest,
}

/// rqlite's `uploader` and `downloader` maps, and the auto-restore counts of its `store` map.
#[derive(Debug, Default)]
pub struct AutoCounters {
    pub uploads_ok: Counter,
    pub uploads_fail: Counter,
    /// Nothing changed since the last backup.
    pub uploads_skipped: Counter,
    /// The newest backup already holds this log index (first backup after a start).
    pub uploads_skipped_id: Counter,
    pub upload_bytes: Counter,
    pub last_upload_bytes: Latest,
    pub downloads_ok: Counter,
    pub downloads_fail: Counter,
    pub download_bytes: Counter,
    pub restores: Counter,
    pub restores_failed: Counter,
    /// Another node became leader and restores instead.
    pub restores_skipped: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_count_is_given_back_when_dropped() {
        let u = UpDown::default();
        let a = u.hold();
        let b = u.hold();
        assert_eq!(u.get(), 2);
        drop(a);
        assert_eq!(u.get(), 1);
        drop(b);
        assert_eq!(u.get(), 0);
    }

    #[test]
    fn forwarded_operations_and_failures_are_counted_apart() {
        let h = ClusterCounters::default();
        h.record_forward(Op::Execute, true);
        h.record_forward(Op::Execute, false);
        h.record_forward(Op::Query, true);
        assert_eq!(h.forwarded(Op::Execute), 2);
        assert_eq!(h.forward_failures(Op::Execute), 1);
        assert_eq!(h.forwarded(Op::Query), 1);
        assert_eq!(h.forwarded(Op::Load), 0);
    }
}
