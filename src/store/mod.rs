//! The store: SQLite behind Raft.
//!
//! Owns: the SQLite database (one thread owns the connections), the Raft state machine that
//! applies log entries to it, snapshots, the rewriting/classification of SQL, and the read
//! consistency levels.
//! Does not: speak HTTP, or reach other nodes (a follower's caller forwards; see `cluster`).

pub mod error;
pub mod parts;
pub mod snapshot;
pub mod state_machine;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

pub use error::StoreError;

use crate::command::{Budget, Command, Request, StmtResult};
use crate::db::rewrite::{self, RewriteOpts};
use crate::db::{classify, Db, DbConfig, Engine, ReadKind, ReadPool};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::{node_id_of, LogId, NodeId, NodeInfo, Raft};
use snapshot::SnapshotStore;
use state_machine::{AppliedState, StateMachine};

/// How fresh a read must be (rqlite's `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// Local read, no leader check; `freshness` may bound staleness on followers.
    None,
    /// Local read if this node believes it is the leader.
    #[default]
    Weak,
    /// Leader confirms leadership with a quorum after the read arrives, then reads locally.
    Linearizable,
    /// The read goes through the Raft log.
    Strong,
    /// `weak` on voters, `none` on non-voters.
    Auto,
}

/// Options of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadOpts {
    pub level: ReadLevel,
    /// Bound on staleness for `none` reads on a follower.
    pub freshness: Option<Duration>,
    pub freshness_strict: bool,
    pub linearizable_timeout: Option<Duration>,
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
}

/// The outcome of a request that went through the log or the database.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
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
    /// While leadership is being handed over, proposals wait (see [`Store::pause_writes`]).
    writes_paused: tokio::sync::watch::Sender<bool>,
    /// Hand-overs in progress, and a shutdown: this node must not start elections.
    campaigns_held: Arc<std::sync::atomic::AtomicUsize>,
    /// Commands on their way into the log (see [`run_batcher`]).
    proposals: mpsc::Sender<Proposal>,
    /// Shared leadership confirmations for `linearizable` reads.
    read_index: ReadIndex,
    /// Read-only connections: every local read runs here, never on the writer's thread.
    reads: Arc<ReadPool>,
    /// What is wrong with this node (a full disk, a failed apply).
    health: Arc<crate::health::Health>,
}

/// When this node last heard from a leader (for `freshness`). The internode service records
/// every append-entries it accepts.
#[derive(Debug, Default)]
pub struct LeaderContact {
    /// Milliseconds since `epoch` of the last contact, plus one (0 = never).
    last: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl LeaderContact {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    pub fn record(&self) {
        self.record_at(Instant::now());
    }

    /// Records a moment in the past (never moves backwards).
    pub fn record_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch()).as_millis() as u64 + 1;
        self.last
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago a leader was last heard from, if ever.
    pub fn since_leader_contact(&self) -> Option<Duration> {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        (last != 0).then(|| {
            self.epoch()
                .elapsed()
                .saturating_sub(Duration::from_millis(last - 1))
        })
    }
}

impl Store {
    /// Opens the log, restores the newest snapshot and starts Raft. Does not bootstrap.
    pub async fn open(cfg: StoreConfig, network: Network) -> Result<Arc<Self>, StoreError> {
        let io = |e: std::io::Error| StoreError::Io(e.to_string());
        std::fs::create_dir_all(&cfg.data_dir).map_err(io)?;
        let health = Arc::new(crate::health::Health::default());
        let log = LogStore::open_with(&cfg.data_dir.join("raft-log.redb"), health.clone())
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let snapshots = SnapshotStore::open(&cfg.data_dir.join("snapshots")).map_err(io)?;
        let engine = Engine::open(&DbConfig {
            fk: cfg.fk,
            path: Some(cfg.data_dir.join("db.sqlite")),
            read_conns: cfg.db_max_ro_conns,
            read_timeout: cfg.db_timeout,
        })?;
        let reads = engine.reads();
        let db = Db::spawn(engine);
        let sm = StateMachine::open(
            db.clone(),
            snapshots,
            &cfg.data_dir.join("parts"),
            health.clone(),
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
            writes_paused: tokio::sync::watch::Sender::new(false),
            campaigns_held: Arc::default(),
            proposals,
            read_index,
            reads,
            health,
        }))
    }

    /// Makes this node the only voter of a new cluster, unless it already has Raft state.
    /// Returns whether it bootstrapped.
    pub async fn bootstrap_if_new(&self) -> Result<bool, StoreError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.id, self.me.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// Periodically snapshots once enough entries have accumulated; returns when `stop` fires.
    pub async fn run_snapshot_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick =
            tokio::time::interval(self.cfg.snapshot_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut loads_seen = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let m = self.raft.metrics().borrow().clone();
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            let snap = m.snapshot.map(|l| l.index).unwrap_or(0);
            // After a load the log holds the whole database: a snapshot lets it go (rqlite
            // snapshots after a load too).
            let loads = self.sm.applied().lock().loads;
            let wanted = loads != loads_seen;
            loads_seen = loads;
            if wanted {
                // Trailing entries would be the image again, in parts: none are kept.
                if let Err(e) = self.snapshot(Some(0)).await {
                    tracing::warn!(error = %e, "snapshot after a load failed");
                }
            } else if applied.saturating_sub(snap) >= self.cfg.snapshot_threshold {
                if let Err(e) = self.raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "could not trigger snapshot");
                }
            }
        }
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

    pub fn applied(&self) -> &AppliedState {
        self.sm.applied()
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.sm.snapshots().dir().to_path_buf()
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Records that a leader was heard from (called by the internode service).
    pub fn leader_contact(&self) -> &LeaderContact {
        &self.contact
    }

    /// Holds new proposals until the returned guard is dropped (a leadership hand-over); they
    /// then find whether this node still leads, and are forwarded if not.
    pub fn pause_writes(&self) -> WritesPaused<'_> {
        self.writes_paused.send_replace(true);
        WritesPaused(&self.writes_paused)
    }

    /// Keeps this node from starting elections until the guard is dropped (a hand-over, or
    /// for good at shutdown: [`Store::never_campaign`]).
    pub fn hold_campaigns(&self) -> CampaignsHeld {
        self.campaigns_held
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CampaignsHeld(self.campaigns_held.clone())
    }

    /// This node is stopping: it never starts an election again.
    pub fn never_campaign(&self) {
        self.campaigns_held
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this node may start an election now.
    pub fn may_campaign(&self) -> bool {
        self.campaigns_held
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
    }

    /// When this node last granted a pre-vote (`cluster::prevote`).
    pub fn prevote_granted(&self) -> &LeaderContact {
        &self.prevote_granted
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// True if openraft has this node as leader of the current term (it may have lost its
    /// quorum without knowing yet).
    fn raft_is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Whether a quorum confirmed this node's leadership within the last election timeout
    /// (always true for a single voter: it is its own quorum).
    fn lease_valid(&self) -> bool {
        // On every request: count voters in place rather than building the member list.
        let single = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
            <= 1;
        single
            || self
                .lease
                .since_leader_contact()
                .is_some_and(|age| age < self.cfg.election_timeout)
    }

    /// True if this node leads and its lease is valid. A leader cut off from the majority
    /// stops being one here once a new leader could have been elected elsewhere: it then
    /// refuses writes and `weak` reads and reports no leader, without starting an election
    /// that would disrupt the majority when it comes back (openraft 0.9 has no step-down or
    /// PreVote of its own).
    pub fn is_leader(&self) -> bool {
        self.raft_is_leader() && self.lease_valid()
    }

    /// The current leader's metadata, if one is known: not this node if its lease lapsed, and
    /// not a leader this follower has not heard from within an election timeout.
    pub fn leader(&self) -> Option<NodeInfo> {
        // Never hold the metrics borrow while borrowing again (`lease_valid`): a second read
        // of tokio's watch lock waits behind openraft's queued write, which waits for the
        // first read: a deadlock that froze a node for good.
        let (leader, state, node) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let leader = m.current_leader?;
            let node = m.membership_config.membership().get_node(&leader).cloned();
            (leader, m.state, node)
        };
        if leader == self.id && !(state == ServerState::Leader && self.lease_valid()) {
            return None;
        }
        // A follower that has not heard from its leader for an election timeout no longer
        // knows who leads (elections only start after a successful pre-vote, so openraft
        // itself may keep naming a leader that is gone).
        let silent = self
            .contact
            .since_leader_contact()
            .is_none_or(|age| age >= self.cfg.election_timeout);
        if leader != self.id && silent {
            return None;
        }
        node
    }

    /// The state `/status` reports: a leader whose lease lapsed is no longer acting as one.
    pub fn state_name(&self) -> &'static str {
        let m = self.raft.metrics().borrow().clone();
        match m.state {
            ServerState::Leader if self.lease_valid() => "Leader",
            ServerState::Leader | ServerState::Follower | ServerState::Learner => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Shutdown => "Shutdown",
        }
    }

    /// All members (voters and learners) with whether each votes, sorted by id.
    pub fn members(&self) -> Vec<(NodeInfo, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let mut out: Vec<(NodeInfo, bool)> = membership
            .nodes()
            .map(|(nid, n)| (n.clone(), membership.voter_ids().any(|v| v == *nid)))
            .collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// Whether this node is a voter in the current configuration.
    pub fn is_voter(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        voter
    }

    /// "Not leader", naming the leader when one is known. Never names this node: a leader
    /// that cannot confirm its leadership knows of no leader.
    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader().filter(|l| l.id != self.me.id),
        }
    }

    /// Fails unless this node is the leader *and* a quorum confirmed that within the last
    /// election timeout (a leader lease, CheckQuorum-style). A stale lease is renewed on the
    /// spot with one heartbeat round, so a freshly elected leader does not refuse work.
    pub async fn ensure_leader(&self) -> Result<(), StoreError> {
        if !self.raft_is_leader() {
            return Err(self.not_leader());
        }
        if self.lease_valid() {
            return Ok(());
        }
        self.confirm_leadership(self.cfg.election_timeout).await
    }

    /// Confirms leadership with a quorum (a heartbeat round) and renews the lease.
    async fn confirm_leadership(&self, timeout: Duration) -> Result<(), StoreError> {
        // The lease counts from before the heartbeats were sent: followers reset their election
        // timers no earlier than that, so no new leader can exist within the lease.
        let sent = Instant::now();
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Ok(Ok(_)) => {
                self.lease.record_at(sent);
                Ok(())
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                _,
            )))) => Err(self.not_leader()),
            // No quorum (or no answer in time): this node cannot prove it still leads.
            Ok(Err(_)) | Err(_) => Err(StoreError::NotLeader { leader: None }),
        }
    }

    /// This node learned it was removed from the cluster (from the configuration, or told
    /// by the leader). With `-raft-remove-shutdown`, Raft stops here so a removed node cannot
    /// disrupt the cluster by campaigning on its own.
    pub async fn removed(&self) {
        if !self.cfg.remove_shutdown {
            tracing::info!("this node was removed from the cluster");
            return;
        }
        tracing::warn!("this node was removed from the cluster: stopping Raft");
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Watches the configuration for this node's removal (see [`Store::removed`]).
    pub async fn run_remove_watch(self: Arc<Self>, stop: CancellationToken) {
        let mut metrics = self.raft.metrics();
        let mut was_member = false;
        loop {
            let member = metrics
                .borrow()
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            if member {
                was_member = true;
            } else if was_member {
                self.removed().await;
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Keeps the leader lease warm so requests rarely wait for a heartbeat round; renews it
    /// at once when this node becomes leader.
    pub async fn run_lease_loop(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.cfg.election_timeout / 5)
            .clamp(Duration::from_millis(10), Duration::from_millis(200));
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            // Metrics change on every apply: only a change of leadership triggers a renewal.
            let ticked = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => true,
                changed = metrics.changed() => if changed.is_err() { return } else { false },
            };
            let leader = self.raft_is_leader();
            if leader && (ticked || !was_leader) {
                let _ = self.confirm_leadership(self.cfg.election_timeout).await;
            }
            was_leader = leader;
        }
    }

    /// What the node that receives a request does before it may enter the log: refuse
    /// disallowed pragmas, and rewrite non-deterministic SQL (`rewrite`: writes and strong
    /// reads; other reads run locally and need no rewriting).
    pub fn prepare(req: &mut Request, rw: &RewriteOpts, rewrite: bool) -> Result<(), StoreError> {
        Self::check_pragmas(req)?;
        if rewrite {
            for s in &mut req.statements {
                rewrite::rewrite(s, rw);
            }
        }
        Ok(())
    }

    fn check_pragmas(req: &Request) -> Result<(), StoreError> {
        if req
            .statements
            .iter()
            .any(|s| classify::is_disallowed_pragma(&s.sql))
        {
            return Err(StoreError::DisallowedPragma);
        }
        Ok(())
    }

    /// Proposes a command and waits until it is committed and applied, or until its outcome
    /// cannot be known in time: the apply timeout passes, or this node stops being a leader
    /// that a quorum confirms (its lease lapses; a leader cut off from the majority finds out
    /// within an election timeout instead of waiting out the apply timeout). Either way the
    /// entry may still be committed later, so a write's outcome is then unknown.
    async fn propose(&self, cmd: Command) -> Result<(crate::raft::Response, u64), StoreError> {
        let id = fastrand::u64(..);
        let Some(parts) = parts::split(&cmd, id) else {
            return self.propose_one(cmd).await;
        };
        drop(cmd);
        self.propose_parts(id, parts.into_iter()).await
    }

    /// Proposes the parts of one large command in order, each once the one before it is
    /// committed; the last one's response is the command's. Until the last part is committed
    /// nothing was applied, so a failure before it means the command was not applied (and
    /// the parts already in the log are dropped).
    async fn propose_parts(
        &self,
        id: u64,
        parts: impl ExactSizeIterator<Item = Command>,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        let n = parts.len();
        let mut last = None;
        for (i, part) in parts.enumerate() {
            let timeout = match i + 1 == n {
                true => self.large_apply_timeout(n * parts::PART_BYTES),
                false => self.cfg.apply_timeout,
            };
            match self.propose_within(part, timeout).await {
                Ok(r) => last = Some(r),
                Err(e) => {
                    if i > 0 {
                        // Best effort: a new term drops the parts anyway.
                        let _ = self.propose_one(Command::PartAbort { id }).await;
                    }
                    return Err(match e {
                        StoreError::OutcomeUnknown(_) if i + 1 < n => StoreError::Timeout(format!(
                            "large request not applied: part {} of {n} was not committed in time",
                            i + 1
                        )),
                        e => e,
                    });
                }
            }
        }
        last.ok_or_else(|| StoreError::Raft("a large command with no parts".into()))
    }

    /// Proposes one log entry.
    async fn propose_one(&self, cmd: Command) -> Result<(crate::raft::Response, u64), StoreError> {
        self.propose_within(cmd, self.cfg.apply_timeout).await
    }

    /// [`Store::propose_one`], waiting up to `apply_timeout` for the entry to be applied (a
    /// large command's last part applies it all, which takes longer).
    async fn propose_within(
        &self,
        cmd: Command,
        apply_timeout: Duration,
    ) -> Result<(crate::raft::Response, u64), StoreError> {
        // During a hand-over, wait for it to end (bounded: it gives up within a few election
        // timeouts).
        let mut paused = self.writes_paused.subscribe();
        let _ = tokio::time::timeout(self.cfg.apply_timeout, paused.wait_for(|p| !*p)).await;
        // A leader without a quorum refuses at once instead of waiting out the apply timeout.
        self.ensure_leader().await?;
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Proposal { cmd, tx })
            .await
            .map_err(|_| StoreError::Closed)?;
        let deposed = async {
            let every = (self.cfg.election_timeout / 10).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                if !self.is_leader() {
                    return;
                }
            }
        };
        tokio::select! {
            r = rx => match r {
                Ok(r) => r,
                Err(_) => Err(StoreError::Closed),
            },
            _ = tokio::time::sleep(apply_timeout) => Err(StoreError::OutcomeUnknown(
                "outcome unknown: not committed within the apply timeout (-raft-apply-timeout)".into(),
            )),
            _ = deposed => Err(StoreError::OutcomeUnknown(
                "outcome unknown: this node lost its leadership (or its quorum) before the write was committed".into(),
            )),
        }
    }

    /// A write command with this node's execution budget attached (see [`Budget`]).
    fn bounded(&self, cmd: Command) -> Command {
        match self.cfg.db_max_steps {
            0 => cmd,
            max_steps => Command::Bounded {
                budget: Budget { max_steps },
                cmd: Box::new(cmd),
            },
        }
    }

    /// Runs writes through the log (`/db/execute`).
    pub async fn execute(&self, req: Request) -> Result<Outcome, StoreError> {
        Self::check_pragmas(&req)?;
        let (resp, index) = self.propose(self.bounded(Command::Execute(req))).await?;
        Ok(Outcome {
            results: resp.results,
            raft_index: Some(index),
        })
    }

    /// Independent write requests in one log entry, applied in order, each on its own (a
    /// transaction one of them leaves open cannot capture the next): the write queue's batches.
    pub async fn execute_each(&self, reqs: Vec<Request>) -> Result<Vec<Outcome>, StoreError> {
        for req in &reqs {
            Self::check_pragmas(req)?;
        }
        let n = reqs.len();
        let cmds = reqs
            .into_iter()
            .map(|r| self.bounded(Command::Execute(r)))
            .collect();
        let (resp, index) = self.propose(Command::Batch(cmds)).await?;
        if resp.parts.len() != n {
            return Err(StoreError::Raft(
                "batch response has the wrong length".into(),
            ));
        }
        Ok(resp
            .parts
            .into_iter()
            .map(|p| Outcome {
                results: p.results,
                raft_index: Some(index),
            })
            .collect())
    }

    /// Reads (`/db/query`) at the requested consistency level.
    pub async fn query(&self, req: Request, opts: &ReadOpts) -> Result<Outcome, StoreError> {
        Self::check_pragmas(&req)?;
        self.read(req, opts, ReadKind::Query).await
    }

    /// A read at `level`: the level's check, then the read on a pooled connection. A strong
    /// read first puts a barrier through the log (an empty entry) and reads once it is
    /// applied here: the log orders it, but it never runs inside the apply loop, so a slow
    /// read cannot hold up the cluster's writes or be replayed at every restart.
    async fn read(
        &self,
        req: Request,
        opts: &ReadOpts,
        kind: ReadKind,
    ) -> Result<Outcome, StoreError> {
        let raft_index = if self.resolve_level(opts.level) == ReadLevel::Strong {
            // A barrier that did not commit only means the read did not happen.
            let (_, index) = self.propose(Command::Noop).await.map_err(|e| match e {
                StoreError::OutcomeUnknown(_) => match self.leader() {
                    Some(_) => StoreError::Timeout(
                        "strong read: the leader could not commit its log barrier in time".into(),
                    ),
                    None => StoreError::NotLeader { leader: None },
                },
                e => e,
            })?;
            Some(index)
        } else {
            // rqlite does not translate `auto` on /db/request: a local read, no leader check.
            if !(kind == ReadKind::Request && opts.level == ReadLevel::Auto) {
                self.check_read(opts.level, opts).await?;
            }
            None
        };
        let results = self.reads.read(req, kind).await?;
        Ok(Outcome {
            results,
            raft_index,
        })
    }

    /// The unified endpoint (`/db/request`): a read-only request is served like a query; a
    /// request with any write goes through the log.
    pub async fn request(&self, req: Request, opts: &ReadOpts) -> Result<Outcome, StoreError> {
        Self::check_pragmas(&req)?;
        if self.reads.is_read_only(req.clone()).await? {
            return self.read(req, opts, ReadKind::Request).await;
        }
        let (resp, index) = self
            .propose(self.bounded(Command::ExecuteQuery(req)))
            .await?;
        Ok(Outcome {
            results: resp.results,
            raft_index: Some(index),
        })
    }

    fn resolve_level(&self, level: ReadLevel) -> ReadLevel {
        match level {
            ReadLevel::Auto if self.is_voter() => ReadLevel::Weak,
            ReadLevel::Auto => ReadLevel::None,
            l => l,
        }
    }

    /// The checks a local read at `level` needs before it may touch the database.
    async fn check_read(&self, level: ReadLevel, opts: &ReadOpts) -> Result<(), StoreError> {
        match self.resolve_level(level) {
            ReadLevel::None | ReadLevel::Auto => {
                if let Some(fresh) = opts.freshness {
                    self.check_freshness(fresh, opts.freshness_strict)?;
                }
                Ok(())
            }
            ReadLevel::Weak => self.ensure_leader().await,
            ReadLevel::Linearizable => self.ensure_linearizable(opts.linearizable_timeout).await,
            ReadLevel::Strong => Ok(()),
        }
    }

    /// `none` reads with `freshness`: a follower that has not heard from a leader within
    /// `fresh` refuses. The leader ignores freshness.
    ///
    /// With `strict`, a follower that still has log entries it has not applied is stale too
    /// (rqlite compares timestamps from two clocks for this; comparing log positions on one
    /// node cannot be fooled by clock skew).
    fn check_freshness(&self, fresh: Duration, strict: bool) -> Result<(), StoreError> {
        if self.is_leader() {
            return Ok(());
        }
        if strict {
            let m = self.raft.metrics().borrow().clone();
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            if applied < m.last_log_index.unwrap_or(0) {
                return Err(StoreError::StaleRead);
            }
        }
        match self.contact.since_leader_contact() {
            Some(age) if age <= fresh => Ok(()),
            // Never heard from a leader, or not recently enough.
            _ => Err(StoreError::StaleRead),
        }
    }

    /// ReadIndex: confirm leadership with a quorum *after* the read arrived, then wait until
    /// the state machine has applied everything committed at that point. Concurrent reads
    /// share confirmation rounds (see [`run_read_index`]).
    async fn ensure_linearizable(&self, timeout: Option<Duration>) -> Result<(), StoreError> {
        let timeout = timeout.unwrap_or(Duration::from_secs(10));
        if !self.raft_is_leader() {
            return Err(self.not_leader());
        }
        let confirmed = async {
            let read_index = self.read_index.confirm().await.map_err(|e| match e {
                StoreError::NotLeader { .. } => self.not_leader(),
                e => e,
            })?;
            if read_index > 0 {
                let waited = self
                    .raft
                    .wait(None)
                    .metrics(
                        |m| m.last_applied.map(|l| l.index).unwrap_or(0) >= read_index,
                        "read index",
                    )
                    .await;
                waited.map_err(|_| StoreError::Closed)?;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, confirmed).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout("linearizable read timeout".into())),
        }
    }

    /// Replaces the whole database with a SQLite file image, through the log.
    pub async fn load(&self, image: Vec<u8>) -> Result<Outcome, StoreError> {
        let probe = image.clone();
        tokio::task::spawn_blocking(move || Engine::validate_image(&probe))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        let (resp, index) = self.propose(Command::Load(image)).await?;
        if let Some(e) = resp.error {
            return Err(StoreError::InvalidImage(e));
        }
        Ok(Outcome {
            results: Vec::new(),
            raft_index: Some(index),
        })
    }

    /// A new file for an upload (a database sent to `/db/load` or `/boot`), deleted when the
    /// returned guard is dropped.
    pub fn upload_file(&self) -> Result<Upload, StoreError> {
        let dir = self.cfg.data_dir.join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Upload(dir.join(format!("{:016x}", fastrand::u64(..)))))
    }

    /// Replaces the whole database with the SQLite file at `path`, through the log, in parts:
    /// neither the file nor any log entry is ever whole in memory.
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Outcome, StoreError> {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || crate::db::validate_file(&p))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        self.ensure_leader().await?;
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
        let len = tokio::fs::metadata(path).await.map_err(io)?.len() as usize;
        let n = len.div_ceil(parts::PART_BYTES).max(1);
        let id = fastrand::u64(..);
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut last = None;
        for seq in 0..n {
            use tokio::io::AsyncReadExt;
            let mut bytes = vec![0u8; parts::PART_BYTES.min(len - seq * parts::PART_BYTES)];
            file.read_exact(&mut bytes).await.map_err(io)?;
            let part = Command::Part(crate::command::Part {
                id,
                seq: seq as u32,
                last: seq + 1 == n,
                kind: crate::command::PartKind::Image,
                bytes,
            });
            let timeout = match seq + 1 == n {
                true => self.large_apply_timeout(len),
                false => self.cfg.apply_timeout,
            };
            match self.propose_within(part, timeout).await {
                Ok(r) => last = Some(r),
                Err(e) => {
                    if seq > 0 {
                        // Best effort: a new term drops the parts anyway.
                        let _ = self.propose_one(Command::PartAbort { id }).await;
                    }
                    return Err(match e {
                        StoreError::OutcomeUnknown(_) if seq + 1 < n => {
                            StoreError::Timeout(format!(
                                "load not applied: part {} of {n} was not committed in time",
                                seq + 1
                            ))
                        }
                        e => e,
                    });
                }
            }
        }
        let (resp, index) = last.ok_or_else(|| StoreError::Raft("empty load".into()))?;
        if let Some(e) = resp.error {
            return Err(StoreError::InvalidImage(e));
        }
        Ok(Outcome {
            results: Vec::new(),
            raft_index: Some(index),
        })
    }

    /// How long the entry that applies a large command (`bytes` big) may take: the apply
    /// timeout, plus a second per 10 MiB for copying it into the database.
    fn large_apply_timeout(&self, bytes: usize) -> Duration {
        self.cfg.apply_timeout + Duration::from_secs((bytes >> 20) as u64 / 10)
    }

    /// `/boot` from a file: load into a single-node cluster and snapshot at once.
    pub async fn boot_file(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().nodes().count() > 1 {
            return Err(StoreError::NotSingleNode);
        }
        self.load_file(path).await?;
        self.snapshot(None).await
    }

    /// A consistent copy of the database: a SQLite image, or a SQL dump.
    pub async fn backup(
        &self,
        sql: bool,
        vacuum: bool,
        tables: Option<Vec<String>>,
    ) -> Result<Vec<u8>, StoreError> {
        if sql {
            let dump = self
                .blocking(move |p| crate::db::engine::dump_at(p, tables.as_deref()))
                .await?;
            Ok(dump.into_bytes())
        } else {
            self.blocking(move |p| crate::db::engine::backup_at(p, vacuum))
                .await
        }
    }

    /// Runs `f` on the database file from a blocking thread (copies and dumps, which read on
    /// connections of their own while writes go on).
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&std::path::Path) -> Result<R, crate::db::DbError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let path = self.reads.path().to_path_buf();
        Ok(tokio::task::spawn_blocking(move || f(&path))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??)
    }

    /// Takes a snapshot now and compacts the log behind it, keeping `trailing` entries
    /// (default: the configured trailing logs).
    pub async fn snapshot(&self, trailing: Option<u64>) -> Result<(), StoreError> {
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        let fatal = |e: openraft::error::Fatal<NodeId>| StoreError::Raft(e.to_string());
        let reached = |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            m.snapshot.map(|s| s.index).unwrap_or(0) >= applied
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // openraft ignores a trigger while a snapshot is being built; that build may stop short
        // of `applied`, so trigger again until a snapshot covers it.
        loop {
            self.raft.trigger().snapshot().await.map_err(fatal)?;
            let waited = self
                .raft
                .wait(Some(Duration::from_secs(2)))
                .metrics(reached, "snapshot")
                .await;
            match waited {
                Ok(_) => break,
                Err(openraft::metrics::WaitError::ShuttingDown) => return Err(StoreError::Closed),
                Err(e) if Instant::now() >= deadline => {
                    return Err(StoreError::Timeout(format!("snapshot: {e}")))
                }
                Err(_) => {}
            }
        }
        if let Some(t) = trailing {
            let snap = self
                .raft
                .metrics()
                .borrow()
                .snapshot
                .map(|s| s.index)
                .unwrap_or(0);
            if snap > t {
                self.raft
                    .trigger()
                    .purge_log(snap - t)
                    .await
                    .map_err(fatal)?;
            }
        }
        Ok(())
    }

    /// Waits until this node has applied every entry it has in its log (`/readyz?sync`).
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), StoreError> {
        let target = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.last_applied.map(|l| l.index).unwrap_or(0) >= target,
                "sync",
            )
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Timeout(e.to_string()))
    }

    /// Removes a member by its rqlite id; unknown ids are not an error (as in rqlite).
    pub async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        self.ensure_leader().await?;
        let Some((node, voter)) = self.members().into_iter().find(|(n, _)| n.id == id) else {
            return Ok(());
        };
        let nid = node_id_of(&node.id);
        // With `retain = false`, removing a voter drops the node too; a learner is removed
        // as a node.
        let change = if voter {
            openraft::ChangeMembers::RemoveVoters([nid].into())
        } else {
            openraft::ChangeMembers::RemoveNodes([nid].into())
        };
        self.change_membership(change).await
    }

    /// Makes this node part of a new cluster of exactly `members` (the `-bootstrap-expect`
    /// outcome). Every node that reaches the same set calls this with identical input, which
    /// Raft tolerates. Returns false if this node already had state.
    pub async fn bootstrap_with(&self, members: Vec<NodeInfo>) -> Result<bool, StoreError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, NodeInfo> = members
            .into_iter()
            .map(|n| (node_id_of(&n.id), n))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StoreError::Raft(e.to_string())),
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

    /// The voter among `candidates` whose replicated log is longest (leader only).
    pub fn most_caught_up(&self, candidates: &[NodeInfo]) -> Option<NodeInfo> {
        let m = self.raft.metrics().borrow().clone();
        let repl = m.replication.unwrap_or_default();
        candidates
            .iter()
            .max_by_key(|n| {
                repl.get(&node_id_of(&n.id))
                    .copied()
                    .flatten()
                    .map(|l| l.index)
                    .unwrap_or(0)
            })
            .cloned()
    }

    /// Changes the membership; another change in progress (several nodes joining at once) is
    /// waited out rather than reported.
    async fn change_membership(
        &self,
        change: openraft::ChangeMembers<NodeId, NodeInfo>,
    ) -> Result<(), StoreError> {
        use openraft::error::ChangeMembershipError;
        let deadline = Instant::now() + self.cfg.apply_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.raft.change_membership(change.clone(), false))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(self.not_leader())
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(0..30))).await;
                }
                Ok(Err(e)) => return Err(StoreError::Raft(e.to_string())),
                Err(_) => {
                    return Err(StoreError::OutcomeUnknown(
                        "membership change: no outcome within the apply timeout".into(),
                    ))
                }
            }
        }
    }

    /// Adds a node (leader only), as rqlite's join does: an identical rejoin is a no-op; a
    /// node that reuses an id with a new address, or an address with a new id, replaces the
    /// old entry. The node is added as a learner, brought up to date (by snapshot if the log
    /// was compacted), then promoted if it is to vote.
    pub async fn add_member(&self, node: NodeInfo, voter: bool) -> Result<(), StoreError> {
        self.ensure_leader().await?;
        let nid = node_id_of(&node.id);
        let members = self.members();
        let same = members
            .iter()
            .find(|(n, _)| n.id == node.id && n.raft_addr == node.raft_addr);
        match same {
            Some((_, true)) => return Ok(()),
            Some((_, false)) if !voter => return Ok(()),
            _ => {}
        }
        for (old, old_voter) in &members {
            let conflict = (old.id == node.id) != (old.raft_addr == node.raft_addr);
            if conflict {
                tracing::info!(old = %old, new = %node, voter = old_voter, "replacing a member that changed its address or id");
                self.remove_node(&old.id).await?;
            }
        }
        if same.is_none() {
            let added = tokio::time::timeout(
                Duration::from_secs(120),
                self.raft.add_learner(nid, node.clone(), true),
            )
            .await;
            match added {
                Ok(Ok(_)) => {}
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(self.not_leader())
                }
                Ok(Err(e)) => return Err(StoreError::Raft(e.to_string())),
                Err(_) => {
                    return Err(StoreError::Timeout(
                        "join: new node did not catch up in time".into(),
                    ))
                }
            }
        }
        if voter {
            self.change_membership(openraft::ChangeMembers::AddVoterIds([nid].into()))
                .await?;
        }
        tracing::info!(node = %node, voter, "node joined");
        Ok(())
    }

    /// Stops Raft and the database thread.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}

/// Elections are held back while this lives (see [`Store::hold_campaigns`]).
pub struct CampaignsHeld(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CampaignsHeld {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Proposals wait while this lives (see [`Store::pause_writes`]).
pub struct WritesPaused<'a>(&'a tokio::sync::watch::Sender<bool>);

impl Drop for WritesPaused<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// An uploaded file, deleted when dropped.
#[derive(Debug)]
pub struct Upload(pub PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A command waiting to be proposed, and where its outcome goes.
struct Proposal {
    cmd: Command,
    tx: oneshot::Sender<Result<(crate::raft::Response, u64), StoreError>>,
}

/// Most commands combined into one log entry.
const MAX_BATCH: usize = 1024;
/// Log entries in flight at once: one being made durable while the next one fills up.
const MAX_IN_FLIGHT: usize = 2;

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f.leader_node,
        },
        e => StoreError::Raft(e.to_string()),
    }
}

/// Group commit above Raft. openraft 0.9 makes each proposal durable before it takes the next
/// one, so commands that arrive while an entry is being fsynced are combined into one
/// `Command::Batch` entry: one append, one fsync, one replication round and one apply for all
/// of them. With no concurrency every command still goes alone, with no added delay.
async fn run_batcher(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch grow.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && !matches!(batch[0].cmd, Command::Load(_)) {
            match rx.try_recv() {
                // A database image goes alone: it replaces everything.
                Ok(p) if matches!(p.cmd, Command::Load(_)) => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let r = raft
                            .client_write(p.cmd)
                            .await
                            .map(|r| (r.data, r.log_id.index));
                        let _ = p.tx.send(r.map_err(write_error));
                    });
                }
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if batch.len() == 1 {
                let Some(p) = batch.pop() else { return };
                let r = raft
                    .client_write(p.cmd)
                    .await
                    .map(|r| (r.data, r.log_id.index));
                let _ = p.tx.send(r.map_err(write_error));
                return;
            }
            let (cmds, txs): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            match raft.client_write(Command::Batch(cmds)).await {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    let mut parts = resp.data.parts.into_iter();
                    for tx in txs {
                        let part = parts
                            .next()
                            .ok_or_else(|| StoreError::Raft("batch response too short".into()));
                        let _ = tx.send(part.map(|p| (p, index)));
                    }
                }
                Err(e) => {
                    let e = write_error(e);
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// What one confirmation round concluded: the epoch it covers and the read index (or why
/// leadership could not be confirmed).
type Round = (u64, Result<u64, StoreError>);

/// ReadIndex with shared rounds. A read takes a ticket (epoch); a round that *starts* after
/// the ticket was taken covers it, so one quorum heartbeat round confirms every read that
/// arrived before it started — never one that arrived later.
#[derive(Clone)]
struct ReadIndex {
    requested: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    done: tokio::sync::watch::Receiver<Round>,
}

impl ReadIndex {
    fn start(raft: Raft, me: NodeInfo, round_timeout: Duration) -> Self {
        let requested = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (tx, done) = tokio::sync::watch::channel((0, Ok(0)));
        tokio::spawn(run_read_index(
            raft,
            me,
            round_timeout,
            requested.clone(),
            wake.clone(),
            tx,
        ));
        Self {
            requested,
            wake,
            done,
        }
    }

    /// Returns the commit index to wait for, once a round that started after this call
    /// confirmed leadership.
    async fn confirm(&self) -> Result<u64, StoreError> {
        let mut done = self.done.clone();
        let ticket = self
            .requested
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.wake.notify_one();
        let round = done
            .wait_for(|(epoch, _)| *epoch >= ticket)
            .await
            .map_err(|_| StoreError::Closed)?;
        round.1.clone()
    }
}

async fn run_read_index(
    raft: Raft,
    me: NodeInfo,
    round_timeout: Duration,
    requested: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    done: tokio::sync::watch::Sender<Round>,
) {
    use openraft::error::CheckIsLeaderError;
    let mut covered = 0;
    loop {
        if requested.load(std::sync::atomic::Ordering::SeqCst) <= covered {
            tokio::select! {
                _ = wake.notified() => {}
                _ = done.closed() => return,
            }
            continue;
        }
        // Everything requested so far arrived before this round starts.
        let epoch = requested.load(std::sync::atomic::Ordering::SeqCst);
        let result = match tokio::time::timeout(round_timeout, raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index).unwrap_or(0)),
            // Named by openraft; the caller re-checks what it knows of the leader.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(StoreError::NotLeader {
                    leader: f.leader_node.filter(|l| l.id != me.id),
                })
            }
            // Cut off from the majority (or no answer): this node cannot prove it still leads.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Err(StoreError::NotLeader { leader: None })
            }
            Ok(Err(e)) => Err(StoreError::Raft(e.to_string())),
        };
        covered = epoch;
        if done.send((epoch, result)).is_err() {
            return;
        }
    }
}
