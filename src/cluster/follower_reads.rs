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
//! Concurrent reads share calls ([`crate::shared_call::SharedCall`]): a call sent after a read arrived
//! covers it (the leader's round starts later still), so one call serves every read that
//! arrived before it was sent, and a follower under load sends one call at a time.

use std::time::Instant;

use super::proto::ClusterRequest;
use super::{Cluster, ClusterError, Forwarding};
use crate::metrics::Op;
use crate::store::{ReadLevel, ReadOpts, StoreError, DEFAULT_LINEARIZABLE_TIMEOUT};

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
        let shared = self.shared_read_index.call(call);
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
