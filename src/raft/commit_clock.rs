//! When this node learned of each commit index its state machine has not applied yet.
//!
//! `freshness_strict` refuses a read on a follower whose applying lags what it knows is
//! committed by more than `freshness`. rqlite measures that lag as "local apply time minus the
//! leader's append time of the last applied entry", two clocks; here both ends are this node's
//! monotonic clock: when the log store was told of a commit index, and whether the state
//! machine has applied it since.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Commit indexes a lagging node may hold before the newest ones share one slot. A slot that
/// takes a newer index keeps its older time, so a long lag is never under-reported.
const SLOTS: usize = 4096;

/// Commit indexes learned and not yet applied, oldest first, each with when it was learned.
#[derive(Debug, Default)]
pub struct CommitClock(Mutex<Slots>);

#[derive(Debug, Default)]
struct Slots {
    learned: VecDeque<(u64, Instant)>,
    applied: u64,
}

impl CommitClock {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Every critical section leaves the queue valid: a poisoned lock holds usable data.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log store was told that entries up to `index` are committed.
    pub fn learned(&self, index: u64) {
        self.learned_at(index, Instant::now());
    }

    fn learned_at(&self, index: u64, at: Instant) {
        let mut s = self.slots();
        if index <= s.applied {
            return;
        }
        let full = s.learned.len() >= SLOTS;
        match s.learned.back_mut() {
            Some((newest, _)) if index <= *newest => {}
            Some((newest, _)) if full => *newest = index,
            _ => s.learned.push_back((index, at)),
        }
    }

    /// The state machine has applied every entry up to `index`.
    pub fn applied(&self, index: u64) {
        let mut s = self.slots();
        s.applied = s.applied.max(index);
        while s.learned.front().is_some_and(|&(i, _)| i <= index) {
            s.learned.pop_front();
        }
    }

    /// When this node learned of the oldest committed entry it has not applied; `None` when it
    /// has applied every entry it knows to be committed.
    pub fn unapplied_since(&self) -> Option<Instant> {
        self.slots().learned.front().map(|&(_, at)| at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reports_the_oldest_commit_not_yet_applied() {
        let c = CommitClock::default();
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(c.unapplied_since(), None);
        c.learned_at(5, t(0));
        c.learned_at(9, t(10));
        c.learned_at(9, t(20));
        assert_eq!(c.unapplied_since(), Some(t(0)));
        c.applied(4);
        assert_eq!(c.unapplied_since(), Some(t(0)), "5 is not applied yet");
        c.applied(7);
        assert_eq!(c.unapplied_since(), Some(t(10)), "5 is, 9 is not");
        c.applied(9);
        assert_eq!(c.unapplied_since(), None);
        c.learned_at(8, t(30));
        assert_eq!(
            c.unapplied_since(),
            None,
            "an index already passed adds nothing"
        );
    }

    #[test]
    fn a_full_queue_keeps_the_older_time() {
        let c = CommitClock::default();
        let t0 = Instant::now();
        for i in 0..SLOTS as u64 + 10 {
            c.learned_at(i + 1, t0 + Duration::from_millis(i));
        }
        assert_eq!(c.slots().learned.len(), SLOTS);
        c.applied(SLOTS as u64 - 1);
        // The last slot took indexes SLOTS..SLOTS+10 and kept the time of SLOTS.
        assert_eq!(
            c.unapplied_since(),
            Some(t0 + Duration::from_millis(SLOTS as u64 - 1))
        );
        c.applied(SLOTS as u64 + 9);
        assert_eq!(
            c.unapplied_since(),
            Some(t0 + Duration::from_millis(SLOTS as u64 - 1))
        );
        c.applied(SLOTS as u64 + 10);
        assert_eq!(c.unapplied_since(), None);
    }
}
