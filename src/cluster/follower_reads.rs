//! `linearizable` reads served by followers (and non-voters) from their own SQLite.
//!
//! Owns: the follower's half of ReadIndex (Raft thesis §6.4): ask the leader for its read
//! index (it confirms its leadership with a quorum in a round that starts after the request
//! arrived, and answers its commit index at that point), wait until this node has applied
//! that index, then read locally. No data crosses to the leader; only an index comes back.
//! Does not: confirm leadership (`store::read_index` does, on the leader) or run the read
//! (`store`); `strong` reads and `redirect` still go to the leader (see [`Cluster::query`]).
//!
//! Why it is safe: every entry up to the read index was committed before the read arrived
//! or is newer, and an index applied here holds the same entries as the leader's log (Log
//! Matching), so the local read reflects every write acknowledged before the read began.
//!
//! Concurrent reads share calls ([`SharedReadIndex`]): a call sent after a read arrived
//! covers it (the leader's round starts later still), so one call serves every read that
//! arrived before it was sent, and a follower under load sends one call at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::proto::ClusterRequest;
use super::{Cluster, ClusterError, Forwarding};
use crate::metrics::Op;
use crate::store::{ReadLevel, ReadOpts, StoreError, DEFAULT_LINEARIZABLE_TIMEOUT};

/// Follower ReadIndex calls shared by concurrent reads. A read takes a ticket; whoever holds
/// `sending` sends one call, first noting the newest ticket taken (all those reads arrived
/// before the call was sent), and publishes the answer for them.
#[derive(Default)]
pub(super) struct SharedReadIndex {
    tickets: AtomicU64,
    sending: tokio::sync::Mutex<()>,
    /// The newest ticket the last call covers, and its answer.
    last: std::sync::Mutex<(u64, Option<Result<u64, ClusterError>>)>,
}

impl SharedReadIndex {
    /// The answer of a call that covers `ticket`, if one has completed.
    fn covered(&self, ticket: u64) -> Option<Result<u64, ClusterError>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &last.1 {
            Some(answer) if last.0 >= ticket => Some(answer.clone()),
            _ => None,
        }
    }

    /// Runs `call` for this read or reuses the answer of a call sent after it arrived.
    async fn read_index<F, Fut>(&self, call: F) -> Result<u64, ClusterError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<u64, ClusterError>>,
    {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        // Waiters queue in order; most find their answer when their turn comes.
        let _sending = self.sending.lock().await;
        if let Some(answer) = self.covered(ticket) {
            return answer;
        }
        let covers = self.tickets.load(Ordering::SeqCst);
        let answer = call().await;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (covers, Some(answer.clone()));
        answer
    }
}

impl Cluster {
    /// Whether a read at `opts` is served here after a ReadIndex from the leader instead of
    /// being forwarded: `linearizable` on a node that is not the leader, when the client
    /// allows forwarding (with `redirect` it asked for a 301 to the leader). A leader, even
    /// one whose lease lapsed, takes the store's own path (it confirms its leadership itself).
    pub(super) fn reads_after_read_index(&self, opts: &ReadOpts, route: &Forwarding) -> bool {
        opts.level == ReadLevel::Linearizable && route.forward && !self.store.raft_is_leader()
    }

    /// Obtains the leader's read index (from this node, if it turns out to lead) and waits
    /// until this node has applied it, within `linearizable_timeout`. Returns the options of
    /// the local read that follows: `none`, keeping the client's `min_index`.
    pub(super) async fn await_read_index(
        &self,
        opts: &ReadOpts,
        route: &Forwarding,
    ) -> Result<ReadOpts, ClusterError> {
        let timeout = opts
            .linearizable_timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_LINEARIZABLE_TIMEOUT);
        let started = Instant::now();
        let ask = Forwarding {
            timeout: Some(timeout),
            ..route.clone()
        };
        let call = || async {
            self.local_or_leader::<u64, _, _>(
                Op::ReadIndex,
                &ask,
                true,
                || self.store.read_index(timeout),
                |creds| ClusterRequest::ReadIndex { creds },
            )
            .await
            .map(|served| served.value)
        };
        let shared = self.shared_read_index.read_index(call);
        let index = match tokio::time::timeout(timeout, shared).await {
            Ok(index) => index?,
            Err(_) => return Err(StoreError::Timeout("linearizable read timeout".into()).into()),
        };
        let left = timeout.saturating_sub(started.elapsed());
        self.store
            .wait_applied(index, left, |_| {
                StoreError::Timeout("linearizable read timeout".into())
            })
            .await?;
        Ok(ReadOpts {
            level: ReadLevel::None,
            freshness: None,
            freshness_strict: false,
            ..opts.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Reads that arrive while a call is in flight are not answered by it (it was sent
    /// before they arrived); they share the next call, one call for all of them.
    #[test]
    fn concurrent_reads_share_one_call_sent_after_they_arrived() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let shared = Arc::new(SharedReadIndex::default());
            let calls = Arc::new(AtomicU64::new(0));
            let (release, released) = tokio::sync::watch::channel(false);
            let read = |answer: u64| {
                let (shared, calls, mut released) =
                    (shared.clone(), calls.clone(), released.clone());
                tokio::spawn(async move {
                    shared
                        .read_index(|| async move {
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
