//! One call that serves every caller who arrived before it started.
//!
//! Owns: the ticket-and-turn pattern behind `strong` reads' shared log barrier
//! (`store/requests.rs`) and followers' shared ReadIndex calls
//! (`cluster/follower_reads.rs`): a caller takes a ticket; whichever waiting caller holds the
//! turn makes the call, first noting the newest ticket taken (every one of those callers
//! arrived before the call was made), and publishes the answer to them. A caller that goes
//! away gives up its place in the queue for the turn, or the turn itself, and the next one
//! makes the call: no caller waits on a call nobody is making.
//! Does not: time out (callers bound their wait) or retry.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// The newest call's answer and the last ticket it covers (none before the first call).
type Answer<T, E> = (u64, Option<Result<T, E>>);

pub struct SharedCall<T, E> {
    tickets: AtomicU64,
    /// Held by the caller making the call in flight; the mutex queues the others in order.
    turn: tokio::sync::Mutex<()>,
    done: tokio::sync::watch::Sender<Answer<T, E>>,
}

impl<T, E> Default for SharedCall<T, E> {
    fn default() -> Self {
        Self {
            tickets: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            done: tokio::sync::watch::Sender::new((0, None)),
        }
    }
}

impl<T: Clone, E: Clone> SharedCall<T, E> {
    /// The answer of a call made after this one arrived: `call`'s, if this caller gets the
    /// turn before such a call has answered, else that call's.
    pub async fn call<F, Fut>(&self, call: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut done = self.done.subscribe();
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = loop {
            if let Some(answer) = covered(&done, ticket) {
                return answer;
            }
            tokio::select! {
                turn = self.turn.lock() => break turn,
                // Never an error: `self` holds the sender.
                _ = done.changed() => {}
            }
        };
        // A call may have covered this caller while it waited for the turn.
        if let Some(answer) = covered(&done, ticket) {
            return answer;
        }
        // Every ticket taken so far was taken before this call is made.
        let last = self.tickets.load(Ordering::SeqCst);
        let answer = call().await;
        let _previous = self.done.send_replace((last, Some(answer.clone())));
        answer
    }
}

fn covered<T: Clone, E: Clone>(
    done: &tokio::sync::watch::Receiver<Answer<T, E>>,
    ticket: u64,
) -> Option<Result<T, E>> {
    match &*done.borrow() {
        (last, Some(answer)) if *last >= ticket => Some(answer.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_barriers_proposed_after_they_arrived() {
        let barrier = Arc::new(SharedCall::<u64, StoreError>::default());
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
                    (me, b.call(p).await)
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
        let barrier = Arc::new(SharedCall::<u64, StoreError>::default());
        // The first read's barrier never commits, and its client goes away.
        let stuck = {
            let b = barrier.clone();
            tokio::spawn(async move {
                b.call(|| async {
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
                b.call(|| async { Err(StoreError::NotLeader { leader: None }) })
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

    /// Reads that arrive while a call is in flight are not answered by it (it was sent
    /// before they arrived); they share the next call, one call for all of them.
    #[test]
    fn concurrent_reads_share_one_call_sent_after_they_arrived() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let shared = Arc::new(SharedCall::<u64, crate::cluster::ClusterError>::default());
            let calls = Arc::new(AtomicU64::new(0));
            let (release, released) = tokio::sync::watch::channel(false);
            let read = |answer: u64| {
                let (shared, calls, mut released) =
                    (shared.clone(), calls.clone(), released.clone());
                tokio::spawn(async move {
                    shared
                        .call(|| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|r| *r).await;
                            Ok(answer)
                        })
                        .await
                })
            };
            let first = read(1);
            while calls.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let later: Vec<_> = (0..10).map(|_| read(2)).collect();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "the later reads wait");
            let _ = release.send(true);
            assert_eq!(first.await.ok(), Some(Ok(1)));
            for r in later {
                assert_eq!(r.await.ok(), Some(Ok(2)));
            }
            assert_eq!(calls.load(Ordering::SeqCst), 2, "one call for the ten");
        });
    }
}
