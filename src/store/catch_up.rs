//! Read-your-writes: waiting until this node has applied a given log index.
//!
//! Owns: `min_index` (a read is answered only once this node has applied the index a write
//! answered with, `raft_index`, on whichever node it was made) and the wait a follower's
//! `linearizable` read does for the leader's read index.
//! Does not: ask the leader for anything (`crate::cluster::follower_reads` does) or run the
//! read.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use super::*;

/// How long a read waits for `min_index` when the request names no `timeout`: a node that is
/// still connected catches up within a few heartbeats; past a few seconds it is lagging
/// (or the index is bogus) and the client is better told so.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a waiting read re-checks that a leader is still known (leader contact is a
/// clock, not an event).
const LEADER_CHECK_EVERY: Duration = Duration::from_millis(50);

impl Store {
    /// The index of the newest entry this node has applied.
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Waits until this node has applied `index`, for at most `timeout`; then `on_timeout`
    /// (given the index applied by then) says what failed. A node that has not applied
    /// `index` and knows of no leader (cut off from the cluster, or a leader whose lease ran
    /// out) cannot catch up: it answers "not leader" (no leader known) at once rather than
    /// wait out the timeout.
    pub async fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
        on_timeout: impl FnOnce(u64) -> StoreError,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        loop {
            // The borrow ends here: `leader()` reads the metrics again (see its note).
            let applied = metrics
                .borrow_watched()
                .last_applied
                .map(|l| l.index)
                .unwrap_or(0);
            if applied >= index {
                return Ok(());
            }
            if self.leader().is_none() {
                return Err(StoreError::NotLeader { leader: None });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(on_timeout(applied));
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() {
                    return Err(StoreError::Closed);
                },
                _ = tokio::time::sleep(left.min(LEADER_CHECK_EVERY)) => {}
            }
        }
    }

    /// `min_index`: waits (bounded by the request's `timeout`) until this node has applied
    /// `index`; answers [`StoreError::NotCaughtUp`] if it did not in time.
    pub(super) async fn catch_up(
        &self,
        index: u64,
        timeout: Option<Duration>,
    ) -> Result<(), StoreError> {
        let timeout = timeout.unwrap_or(DEFAULT_CATCH_UP_TIMEOUT);
        self.wait_applied(index, timeout, |applied| StoreError::NotCaughtUp {
            min_index: index,
            applied,
        })
        .await
    }
}
