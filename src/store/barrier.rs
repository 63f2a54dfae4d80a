//! `strong` reads: log barriers shared by the reads waiting for them.
//!
//! Owns: putting one empty entry (`Command::Noop`) through the log for every read that
//! arrived before it was proposed, and handing each of those reads the barrier's index.
//! Does not: wait for the apply or run the read (`requests.rs` does both).
//!
//! A read takes a ticket when it arrives; a barrier proposed after that covers it: once the
//! barrier is committed by this node as leader and applied here, everything committed
//! before the read arrived is applied, which is all a strong read promises. Each read used
//! to propose a barrier of its own: one log command, one response and two timers per read,
//! on every node (issue 12). One barrier at a time is in flight; whichever waiting read
//! holds the turn proposes it, so a read whose client went away hands the turn on.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::StoreError;

/// A barrier's outcome: the last ticket it covers, and its log index (or why it failed).
type Round = (u64, Result<u64, StoreError>);

pub(super) struct StrongBarrier {
    tickets: AtomicU64,
    /// Held by the read proposing the barrier in flight.
    turn: tokio::sync::Mutex<()>,
    done: tokio::sync::watch::Sender<Round>,
}

impl Default for StrongBarrier {
    fn default() -> Self {
        Self {
            tickets: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            done: tokio::sync::watch::Sender::new((0, Ok(0))),
        }
    }
}

impl StrongBarrier {
    /// The index of a barrier proposed after this call, once `propose` (run by whichever
    /// waiting read holds the turn) has committed and applied it.
    pub(super) async fn pass<F, Fut>(&self, propose: F) -> Result<u64, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<u64, StoreError>>,
    {
        let mut done = self.done.subscribe();
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if let Some(r) = covered(&done, ticket) {
                return r;
            }
            tokio::select! {
                // The mutex queues waiting reads in order; one woken by a barrier that does
                // not cover it queues again, and the next barrier covers it.
                _turn = self.turn.lock() => {
                    // A barrier may have covered this read while it waited for the turn.
                    if let Some(r) = covered(&done, ticket) {
                        return r;
                    }
                    // Every ticket taken so far was taken before this barrier is proposed.
                    let last = self.tickets.load(Ordering::SeqCst);
                    let r = propose().await;
                    let _previous = self.done.send_replace((last, r.clone()));
                    return r;
                }
                changed = done.changed() => if changed.is_err() {
                    return Err(StoreError::Closed);
                },
            }
        }
    }
}

fn covered(
    done: &tokio::sync::watch::Receiver<Round>,
    ticket: u64,
) -> Option<Result<u64, StoreError>> {
    let round = done.borrow();
    (round.0 >= ticket).then(|| round.1.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_barriers_proposed_after_they_arrived() {
        let barrier = Arc::new(StrongBarrier::default());
        let arrived = Arc::new(AtomicU64::new(0));
        // For each barrier (its index - 1): how many reads had arrived when it was proposed.
        let proposed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let propose = {
            let (arrived, proposed) = (arrived.clone(), proposed.clone());
            move || {
                let (arrived, proposed) = (arrived.clone(), proposed.clone());
                async move {
                    let index = {
                        let mut p = proposed.lock().expect("lock");
                        p.push(arrived.load(Ordering::SeqCst));
                        p.len() as u64
                    };
                    // Committing takes a while; reads keep arriving meanwhile.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(index)
                }
            }
        };
        let reads: Vec<_> = (0..50)
            .map(|i| {
                let (b, p, arrived) = (barrier.clone(), propose.clone(), arrived.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i % 7 * 10)).await;
                    let me = arrived.fetch_add(1, Ordering::SeqCst) + 1;
                    (me, b.pass(p).await)
                })
            })
            .collect();
        for r in reads {
            let (me, index) = r.await.expect("read");
            let index = index.expect("barrier");
            let seen = proposed.lock().expect("lock")[index as usize - 1];
            assert!(
                seen >= me,
                "read {me} was given a barrier proposed after {seen} reads"
            );
        }
        // Far fewer barriers than reads: they were shared.
        let n = proposed.lock().expect("lock").len();
        assert!((1..=20).contains(&n), "{n} barriers for 50 reads");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_goes_away_hands_the_turn_on_and_errors_reach_every_read() {
        let barrier = Arc::new(StrongBarrier::default());
        // The first read's barrier never commits, and its client goes away.
        let stuck = {
            let b = barrier.clone();
            tokio::spawn(async move {
                b.pass(|| async {
                    std::future::pending::<()>().await;
                    Ok(1)
                })
                .await
            })
        };
        while barrier.turn.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let waiting = {
            let b = barrier.clone();
            tokio::spawn(async move {
                b.pass(|| async { Err(StoreError::NotLeader { leader: None }) })
                    .await
            })
        };
        stuck.abort();
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the turn was handed on")
            .expect("read");
        assert_eq!(r, Err(StoreError::NotLeader { leader: None }));
    }
}
