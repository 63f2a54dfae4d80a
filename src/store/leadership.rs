//! Whether this node leads: openraft's view, checked against a leader lease.
//!
//! Owns: the lease (a quorum confirmed this node's leadership within an election timeout,
//! CheckQuorum-style, so a leader cut off from the majority stops acting as one), when this
//! node last heard from a leader (`freshness`, pre-votes), the pre-vote grant rule that
//! depends on both, and holding back this node's own elections (hand-overs, shutdown).
//! Does not: campaign (`cluster::prevote` does, after a pre-vote) or forward anything.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::raft::NodeInfo;

/// When this node last heard from a leader (for `freshness`). The internode service records
/// every append-entries it accepts.
#[derive(Debug, Default)]
pub struct LeaderContact {
    /// Milliseconds since `epoch` of the last contact, plus one (0 = never).
    last: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl LeaderContact {
    pub(super) fn epoch(&self) -> Instant {
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

/// Elections are held back while this lives (see [`Store::hold_campaigns`]).
pub struct CampaignsHeld(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CampaignsHeld {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store {
    /// Records that a leader was heard from (called by the internode service).
    pub fn leader_contact(&self) -> &LeaderContact {
        &self.contact
    }

    /// When this node last granted a pre-vote (`cluster::prevote`).
    pub fn prevote_granted(&self) -> &LeaderContact {
        &self.prevote_granted
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

    /// True if openraft has this node as leader of the current term (it may have lost its
    /// quorum without knowing yet).
    pub(crate) fn raft_is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        self.leads(m.state, m.current_leader)
    }

    /// openraft's view of leadership, from either of its metrics channels.
    fn leads(&self, state: ServerState, leader: Option<NodeId>) -> bool {
        state == ServerState::Leader && leader == Some(self.id)
    }

    /// Starts an election (after a won pre-vote, or when the leader hands over). Not while
    /// openraft still has this node as leader: openraft 0.10.0-alpha.17 keeps a leader's state
    /// when it campaigns, beside the new term's vote (a debug assertion fails; a release build
    /// keeps replicating with the old term). Such a leader, which lost its lease, sends a
    /// heartbeat round instead: the followers take it back, or one answers with a higher term
    /// and it steps down (and campaigns as a follower next time). One election at a time, each
    /// given an election timeout to end: the check and the election are two messages to
    /// openraft, and a vote arriving between them must not make this node leader first.
    pub async fn campaign(&self) -> Result<(), StoreError> {
        let one = self.campaigning.clone().lock_owned().await;
        let trigger = self.raft.trigger();
        let leading = self
            .raft
            .with_raft_state(|s| s.server_state == ServerState::Leader)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        if leading {
            return trigger
                .heartbeat()
                .await
                .map_err(|e| StoreError::Raft(e.to_string()));
        }
        let term = self.current_term();
        trigger
            .elect()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        // The next campaign waits until this one is won, lost to a higher term, or still
        // undecided after an election timeout; the caller does not.
        let raft = self.raft.clone();
        let timeout = self.cfg.election_timeout;
        tokio::spawn(async move {
            let _one = one;
            let _ = raft
                .wait(Some(timeout))
                .metrics(
                    |m| m.current_term > term && m.state != ServerState::Candidate,
                    "election ended",
                )
                .await;
        });
        Ok(())
    }

    /// Whether a quorum confirmed this node's leadership within the lease (the election
    /// timeout, or a shorter `-raft-leader-lease-timeout`; always true for a single voter: it
    /// is its own quorum).
    pub(super) fn lease_valid(&self) -> bool {
        self.voter_count() <= 1
            || self
                .lease
                .since_leader_contact()
                .is_some_and(|age| age < self.cfg.lease())
    }

    /// True if this node leads and its lease is valid. A leader cut off from the majority
    /// stops being one here once a new leader could have been elected elsewhere: it then
    /// refuses writes and `weak` reads and reports no leader, without starting an election
    /// that would disrupt the majority when it comes back (openraft has no step-down of its
    /// own; sqlraft runs its own PreVote, `cluster::prevote`).
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
            let m = m.borrow_watched();
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
        let state = self.raft.metrics().borrow_watched().state;
        match state {
            ServerState::Leader if self.lease_valid() => "Leader",
            ServerState::Leader | ServerState::Follower | ServerState::Learner => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Shutdown => "Shutdown",
        }
    }

    /// "Not leader", naming the leader when one is known. Never names this node: a leader
    /// that cannot confirm its leadership knows of no leader.
    pub(super) fn not_leader(&self) -> StoreError {
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
        // Boxed: a heartbeat round's state would otherwise make every read's future (moved
        // a few times per request) larger, for the rare read that needs one.
        Box::pin(self.confirm_leadership(self.cfg.election_timeout)).await
    }

    /// Confirms leadership with a quorum (a heartbeat round) and renews the lease.
    pub(super) async fn confirm_leadership(&self, timeout: Duration) -> Result<(), StoreError> {
        // The lease counts from before the heartbeats were sent: followers reset their election
        // timers no earlier than that, so no new leader can exist within the lease.
        let sent = Instant::now();
        let c = &self.metrics.store;
        let confirmed = super::read_index::read_index_round(&self.raft, &self.me, timeout).await;
        c.verify_leader_duration.set_millis(sent.elapsed());
        match confirmed {
            Ok(_) => {
                c.verify_leader.inc();
                self.lease.record_at(sent);
                Ok(())
            }
            Err(e) => {
                c.verify_leader_failed.inc();
                match e {
                    // Openraft knows of another leader: name the one this node knows.
                    StoreError::NotLeader { leader: Some(_) } => Err(self.not_leader()),
                    _ => Err(StoreError::NotLeader { leader: None }),
                }
            }
        }
    }

    /// Keeps the leader lease warm so requests rarely wait for a heartbeat round; renews it
    /// at once when this node becomes leader. Counts the leader changes it sees.
    pub async fn run_lease_loop(self: Arc<Self>, stop: CancellationToken) {
        let every =
            (self.cfg.lease() / 5).clamp(Duration::from_millis(10), Duration::from_millis(200));
        let mut metrics = self.raft.server_metrics();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        let mut known_leader = None;
        loop {
            // Wakes on a change of vote, state, leader or membership, not on every append or
            // apply; only a change of leadership triggers a renewal.
            let ticked = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => true,
                changed = metrics.changed() => if changed.is_err() { return } else { false },
            };
            // Read from what woke the loop: the full metrics are sent just after it.
            let (now_leader, state) = {
                let m = metrics.borrow_watched();
                (m.current_leader, m.state)
            };
            // Every new leader this node learns of (losing sight of one is not a change).
            if now_leader.is_some() && now_leader != known_leader {
                known_leader = now_leader;
                self.metrics.store.leader_changes.inc();
            }
            // (Only the full metrics say `Shutdown`.)
            let leader = self.leads(state, now_leader)
                && self.raft.metrics().borrow_watched().state != ServerState::Shutdown;
            if leader && !was_leader {
                self.leader_since.record();
            }
            if leader && (ticked || !was_leader) {
                let _ = self.confirm_leadership(self.cfg.election_timeout).await;
            }
            was_leader = leader;
        }
    }

    /// How long this node has been leader (as far as the lease loop has seen), if it leads.
    pub fn leading_for(&self) -> Option<Duration> {
        self.raft_is_leader()
            .then(|| self.leader_since.since_leader_contact())
            .flatten()
    }

    /// The pre-vote grant rule (`cluster::prevote` asks it of every voter): would this node
    /// vote for a candidate whose log ends at `last_log`? Only if it does not lead, has not
    /// heard from a leader within an election timeout (openraft's own vote lease is set to
    /// the same time), and the candidate's log is at least as up to date as its own. A node
    /// that says yes holds back its own campaign for an election timeout.
    pub async fn would_vote(&self, last_log: Option<LogId>) -> bool {
        let timeout = self.cfg.election_timeout;
        if self.is_leader() {
            return false;
        }
        if self
            .contact
            .since_leader_contact()
            .is_some_and(|age| age < timeout)
        {
            return false;
        }
        let yes = last_log >= self.last_log_id().await;
        if yes {
            self.prevote_granted.record();
        }
        yes
    }
}
