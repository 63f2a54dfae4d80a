//! The store: SQLite behind Raft.
//!
//! Owns: the [`Store`] facade the layers above call, and opening it in order (a pending
//! `peers.json` recovery, the Raft log, the newest snapshot, then Raft); one file per job
//! beside it (requests and read levels, proposals and group commit, ReadIndex, leadership and
//! the lease, membership, whole-database images, the state machine and snapshots).
//! Does not: execute SQL (`crate::db`), speak HTTP, or reach other nodes (a follower's
//! caller forwards; see `crate::cluster`).

mod catch_up;
pub mod changes;
pub mod error;
mod images;
mod leadership;
mod membership;
pub mod parts;
mod proposals;
mod read_index;
pub mod recovery;
mod requests;
pub mod snapshot;
pub mod state_machine;
pub mod tx;

pub use catch_up::DEFAULT_CATCH_UP_TIMEOUT;
pub use images::{Reaped, Upload};
pub use leadership::{CampaignsHeld, LeaderContact};
pub use proposals::WritesPaused;
use proposals::{run_batcher, Proposal, MAX_BATCH};
use read_index::ReadIndex;
pub use read_index::DEFAULT_LINEARIZABLE_TIMEOUT;
pub use requests::{ReadLevel, ReadOpts};
pub use tx::{TxAnswer, TxCall};

use openraft::async_runtime::WatchReceiver;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::SnapshotPolicy;
use tokio::sync::mpsc;

pub use error::StoreError;

use crate::command::StmtResult;
use crate::db::capture::{Capture, CaptureRules};
use crate::db::{Db, DbConfig, Engine, ReadPool};
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::{node_id_of, LogId, NodeId, NodeInfo, Raft};
pub use changes::{CdcProgress, ChangeSink};
use snapshot::SnapshotStore;
use state_machine::{AppliedState, StateMachine};

/// The Raft log's file, in the data directory.
const LOG_FILE: &str = "raft-log.redb";

/// rqlite's Raft log and stable store (BoltDB), in its data directory.
const RQLITE_LOG_FILE: &str = "raft.db";

/// Refuses a data directory rqlite wrote (its `raft.db`, none of sqlraft's state): sqlraft
/// cannot read rqlite's files, and starting there would look like an empty node that lost
/// the operator's data.
fn refuse_rqlite_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    if dir.join(RQLITE_LOG_FILE).exists() && !dir.join(LOG_FILE).exists() {
        return Err(StoreError::Io(format!(
            "{} is an rqlite data directory (it holds rqlite's Raft log {RQLITE_LOG_FILE}), \
             which sqlraft cannot read. Start sqlraftd with a new, empty data directory, then \
             move the data over: take a backup from rqlite (curl -o backup.sqlite \
             http://RQLITE:4001/db/backup, or .backup in its shell) and load it into sqlraft \
             (curl -XPOST http://SQLRAFT:4001/db/load --data-binary @backup.sqlite, or \
             .restore in the sqlraft shell)",
            dir.display()
        )));
    }
    Ok(())
}

/// Everything the store needs to start, already validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub me: NodeInfo,
    pub fk: bool,
    /// Keep SQLite in `<data_dir>/db.sqlite` instead of memory.
    pub on_disk: bool,
    pub election_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub apply_timeout: Duration,
    /// Snapshot once this many entries have been applied since the last one.
    pub snapshot_threshold: u64,
    /// How often the threshold is checked.
    pub snapshot_interval: Duration,
    /// Entries kept in the log behind a snapshot.
    pub trailing_logs: u64,
    /// Stop Raft once this node learns it was removed (`-raft-remove-shutdown`).
    pub remove_shutdown: bool,
    /// SQLite VM steps one write request may take when applied (`-db-max-steps`; 0 =
    /// unlimited). Carried in each log entry, so every node applies the same budget.
    pub db_max_steps: u64,
    /// Time limit of a read statement without its own `db_timeout` (`-db-timeout`).
    pub db_timeout: Option<Duration>,
    /// Read-only connections at most (`-db-max-ro-conns`).
    pub db_max_ro_conns: usize,
    /// How long a leader keeps acting as one without a quorum's confirmation
    /// (`-raft-leader-lease-timeout`; zero: the election timeout, which also caps it).
    pub leader_lease_timeout: Duration,
    /// WAL size past which SQLite's WAL is checkpointed (`-raft-snap-wal-size`).
    pub wal_checkpoint_bytes: u64,
    /// SQLite extension files loaded into every connection (`-extensions-path`, staged).
    pub extensions: Vec<PathBuf>,
    /// How long an interactive transaction may stay idle (`-tx-idle-timeout`).
    pub tx_idle_timeout: Duration,
}

impl StoreConfig {
    /// The leader lease: `-raft-leader-lease-timeout`, never longer than the election
    /// timeout (after which followers may elect another leader).
    pub fn lease(&self) -> Duration {
        match self.leader_lease_timeout {
            d if d.is_zero() => self.election_timeout,
            d => d.min(self.election_timeout),
        }
    }
}

/// What the store answers a data request with: each statement's result, and the index of
/// the log entry that carried it (when it went through the log).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    pub results: Vec<StmtResult>,
    /// Index of the log entry that carried it, when it went through the log.
    pub raft_index: Option<u64>,
}

/// The store facade: every HTTP-level operation is one call here.
pub struct Store {
    raft: Raft,
    sm: StateMachine,
    log: LogStore,
    me: NodeInfo,
    id: NodeId,
    cfg: StoreConfig,
    started: Instant,
    contact: LeaderContact,
    /// When a quorum last confirmed this node's leadership.
    lease: LeaderContact,
    /// When this node last granted a pre-vote (it then waits before campaigning itself).
    prevote_granted: LeaderContact,
    /// When this node last became leader.
    leader_since: LeaderContact,
    /// Proposals admitted into the log, and whether new ones wait (a hand-over; see
    /// [`Store::pause_writes`]).
    write_gate: tokio::sync::watch::Sender<proposals::WriteGate>,
    /// Hand-overs in progress, and a shutdown: this node must not start elections.
    campaigns_held: Arc<std::sync::atomic::AtomicUsize>,
    /// One election at a time (see [`Store::campaign`]).
    campaigning: Arc<tokio::sync::Mutex<()>>,
    /// Commands on their way into the log (see [`run_batcher`]).
    proposals: mpsc::Sender<Proposal>,
    /// Shared leadership confirmations for `linearizable` reads.
    read_index: ReadIndex,
    /// Shared log barriers for `strong` reads.
    strong: crate::shared_call::SharedCall<u64, StoreError>,
    /// The term in which the newest `strong` read's barrier was proposed (`/status`).
    strong_read_term: std::sync::atomic::AtomicU64,
    /// Read-only connections: every local read runs here, never on the writer's thread.
    reads: Arc<ReadPool>,
    /// What is wrong with this node (a full disk, a failed apply).
    health: Arc<crate::health::Health>,
    /// The node's counters (the store counts into `store`, `snapshot` and `db`).
    metrics: Arc<Metrics>,
    /// Open interactive transactions (on the leader).
    txs: tx::TxTable,
}

impl Store {
    /// Opens the log, restores the newest snapshot and starts Raft. Does not bootstrap.
    pub async fn open(
        cfg: StoreConfig,
        network: Network,
        metrics: Arc<Metrics>,
        changes: Option<(CaptureRules, Arc<dyn ChangeSink>)>,
    ) -> Result<Arc<Self>, StoreError> {
        let io = |e: std::io::Error| StoreError::Io(e.to_string());
        refuse_rqlite_dir(&cfg.data_dir)?;
        if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
            return Err(StoreError::Io(format!(
                "cannot use {} as the data directory: it is a file, not a directory",
                cfg.data_dir.display()
            )));
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            StoreError::Io(format!(
                "cannot create data directory {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
        let health = Arc::new(crate::health::Health::default());
        let log_file = cfg.data_dir.join(LOG_FILE);
        let log = LogStore::open_with(&log_file, health.clone()).map_err(|e| {
            // The innermost cause already names the file; openraft's wrappers add only
            // "when Read Store".
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            StoreError::Io(cause.to_string())
        })?;
        if recovery::recover(&cfg.data_dir, &cfg.me, &log).await? {
            metrics.store.recoveries.inc();
        }
        let snapshots = SnapshotStore::open_with(&cfg.data_dir.join("snapshots"), metrics.clone())
            .map_err(io)?;
        let opening = Instant::now();
        let mut engine = Engine::open(&DbConfig {
            fk: cfg.fk,
            path: Some(cfg.data_dir.join("db.sqlite")),
            read_conns: cfg.db_max_ro_conns,
            read_timeout: cfg.db_timeout,
            extensions: cfg.extensions.clone(),
            wal_checkpoint_bytes: cfg.wal_checkpoint_bytes,
        })?;
        metrics.db.open_duration.set_millis(opening.elapsed());
        engine.count_into(metrics.clone());
        let changes = changes.map(|(rules, sink)| {
            engine.capture_changes(Capture::new(rules));
            sink
        });
        let reads = engine.reads();
        let db = Db::spawn(engine);
        let sm = StateMachine::open(
            db.clone(),
            snapshots,
            &cfg.data_dir.join("parts"),
            health.clone(),
            metrics.clone(),
            changes,
            log.commit_clock().clone(),
        )
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;

        let election_ms = cfg.election_timeout.as_millis().max(10) as u64;
        let heartbeat_ms = (cfg.heartbeat_timeout.as_millis() as u64 / 5).clamp(5, election_ms / 3);
        let raft_cfg = openraft::Config {
            cluster_name: "sqlraft".into(),
            // openraft's own timer is off (pre-vote elections, `cluster::prevote`); what is
            // left of these is its leader lease: a voter refuses to vote for
            // `election_timeout_max` after it last heard from the leader. It must match the
            // pre-vote's "silent for an election timeout", or elections a pre-vote allowed
            // are refused and only bump terms (seven elections for one failover, before).
            election_timeout_min: election_ms,
            election_timeout_max: election_ms + 1,
            heartbeat_interval: heartbeat_ms,
            // Snapshots are ours to trigger (threshold checked every `snapshot_interval`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: cfg.trailing_logs,
            // Elections are started by `cluster::prevote` after a successful pre-vote.
            enable_elect: false,
            // Snapshots travel in chunks of a few MiB (never whole in memory); the last
            // chunk's answer waits for the follower to install the database, which for a
            // large one takes seconds, not openraft's default 200 ms.
            snapshot_max_chunk_size: 4 << 20,
            install_snapshot_timeout: 60_000,
            ..Default::default()
        };
        let raft_cfg = Arc::new(
            raft_cfg
                .validate()
                .map_err(|e| StoreError::Raft(e.to_string()))?,
        );
        let id = node_id_of(&cfg.me.id);
        let raft = Raft::new(id, raft_cfg, network, log.clone(), sm.clone())
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let (proposals, queued) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run_batcher(raft.clone(), queued));
        let read_index = ReadIndex::start(
            raft.clone(),
            cfg.me.clone(),
            cfg.election_timeout.max(Duration::from_secs(1)),
        );
        Ok(Arc::new(Self {
            raft,
            sm,
            log,
            me: cfg.me.clone(),
            id,
            cfg,
            started: Instant::now(),
            contact: LeaderContact::default(),
            lease: LeaderContact::default(),
            prevote_granted: LeaderContact::default(),
            leader_since: LeaderContact::default(),
            write_gate: tokio::sync::watch::Sender::new(Default::default()),
            campaigns_held: Arc::default(),
            campaigning: Default::default(),
            proposals,
            read_index,
            strong: Default::default(),
            strong_read_term: Default::default(),
            reads,
            health,
            metrics,
            txs: tx::TxTable::default(),
        }))
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The node's current problems.
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Index of the newest applied entry that may have changed the database (see
    /// [`state_machine::Applied::data_index`]).
    pub fn data_index(&self) -> u64 {
        self.sm.applied().lock().data_index
    }

    pub fn applied(&self) -> &AppliedState {
        self.sm.applied()
    }

    /// Why this node cannot apply entries for lack of disk space now (as a leader it would
    /// then answer no write). Read from the disk each time: the health flag its apply sets
    /// stays until the next apply, after space may have come back.
    pub fn disk_too_full(&self) -> Option<String> {
        state_machine::too_full(self.sm.snapshots().dir()).map(|m| format!("disk: {m}"))
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.sm.snapshots().dir().to_path_buf()
    }

    /// The ids of the snapshots on disk, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        match self.sm.snapshots().list() {
            Ok(all) => all.into_iter().map(|s| s.meta.snapshot_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots");
                Vec::new()
            }
        }
    }

    /// What SQLite reports about the database (`/status` `store.sqlite3`).
    pub async fn db_stats(&self) -> Result<crate::db::stats::DbStats, StoreError> {
        let reads = self.reads.clone();
        let fk = self.cfg.fk;
        tokio::task::spawn_blocking(move || crate::db::stats::read(&reads, fk))
            .await
            .map_err(|e| StoreError::Sqlite(e.to_string()))?
            .map_err(StoreError::from)
    }

    /// Bytes of the Raft log's file on disk.
    pub fn log_disk_size(&self) -> u64 {
        crate::db::stats::file_len(&self.cfg.data_dir.join(LOG_FILE))
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The current Raft term as this node knows it.
    pub(crate) fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The term in which the newest `strong` read's barrier was proposed (0: none yet).
    pub fn strong_read_term(&self) -> u64 {
        self.strong_read_term
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When this node learned of each commit index it has not applied (`freshness_strict`).
    pub fn commit_clock(&self) -> &Arc<crate::raft::commit_clock::CommitClock> {
        self.log.commit_clock()
    }

    /// The newest index this node knows to be committed (as openraft last saved it).
    pub fn commit_index(&self) -> u64 {
        self.log.committed().map(|l| l.index).unwrap_or(0)
    }

    /// Size of the SQLite database: the file and its write-ahead log.
    pub fn db_file_bytes(&self) -> u64 {
        crate::db::stats::on_disk_bytes(self.reads.path())
    }

    /// Size of the current snapshot's database file (0 without one).
    pub fn snapshot_file_bytes(&self) -> u64 {
        match self.sm.snapshots().current() {
            Ok(Some(s)) => crate::db::stats::file_len(&s.db),
            _ => 0,
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops Raft for good. Raft waits for the log write in progress, which on a full disk
    /// would wait for space forever: the log is told to stop waiting first.
    pub(super) async fn stop_raft(&self) {
        self.log.stop_waiting_for_space();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// The id of the last entry in this node's log.
    pub async fn last_log_id(&self) -> Option<LogId> {
        self.log.last_log_id()
    }

    /// Whether this node has Raft state (was bootstrapped, joined, or restarted with data).
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Stops Raft and the database thread.
    pub async fn shutdown(&self) {
        self.stop_raft().await;
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}
