//! Writes a follower forwards, sent to the leader in batches.
//!
//! Owns: combining the `/db/execute` requests a follower forwards at the same time into one
//! internode call (`ClusterRequest::ExecuteEach`, one log entry's worth of independent
//! requests, as the write queue sends) and handing each its own answer.
//! Does not: choose the leader or follow a `NotLeader` answer (`forward::route` does, per
//! request).
//!
//! Each forwarded write was its own call: the leader spent as much on the internode request
//! as on a client's HTTP request, and the follower as much again sending it (issue 12). Now
//! a request waits only if two batches are already on their way; the calls are made by
//! tasks of their own, so a client that goes away cannot take other clients' writes with it
//! (theirs would then have an unknown outcome).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::proto::{ClusterRequest, ClusterResponse, Credentials};
use super::{call_peer, Answer, ClusterError, Hop};
use crate::command::Request;
use crate::raft::transport::Transport;
use crate::store::{Reply, Store, StoreError};

/// Batches on their way to the leader at once.
const IN_FLIGHT: usize = 2;
/// Most requests, and most bytes (SQL and parameters) besides the first request's, in one
/// call: far inside the headroom the internode service allows above a client's body.
const MAX_REQUESTS: usize = 256;
const MAX_BYTES: usize = 1 << 20;

type Answered = Result<Hop<Reply>, ClusterError>;

/// Where a request goes and as whom: only requests that agree share a call.
#[derive(Clone, PartialEq)]
struct Key {
    addr: String,
    creds: Option<Credentials>,
    timeout: Duration,
}

struct Pending {
    key: Key,
    req: Request,
    answer: oneshot::Sender<Answered>,
}

#[derive(Clone)]
pub(super) struct ForwardBatches {
    queue: Arc<Mutex<Vec<Pending>>>,
    slots: Arc<Semaphore>,
    transport: Transport,
    store: Arc<Store>,
}

impl ForwardBatches {
    pub(super) fn new(transport: Transport, store: Arc<Store>) -> Self {
        Self {
            queue: Arc::default(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            transport,
            store,
        }
    }

    /// Sends `req` to the leader at `addr`, with the requests forwarded at the same time.
    pub(super) async fn execute(
        &self,
        addr: String,
        creds: Option<Credentials>,
        timeout: Duration,
        req: Request,
    ) -> Answered {
        let (tx, rx) = oneshot::channel();
        let lost = ClusterError::OutcomeUnknown {
            addr: addr.clone(),
            msg: "the forwarded batch ended without an answer".into(),
        };
        let key = Key {
            addr,
            creds,
            timeout,
        };
        self.lock().push(Pending {
            key,
            req,
            answer: tx,
        });
        self.kick();
        rx.await.unwrap_or(Err(lost))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a sender if a slot is free; one that finishes starts the next itself.
    fn kick(&self) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(batch) = me.take() {
                me.send(batch).await;
            }
            drop(permit);
            // A request queued between the last `take` and the release found no free slot.
            if !me.lock().is_empty() {
                me.kick();
            }
        });
    }

    /// The oldest queued request and those queued after it that share its key, within the
    /// limits.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut queue = self.lock();
        if queue.is_empty() {
            return None;
        }
        let key = queue[0].key.clone();
        let (mut batch, mut rest, mut bytes) = (Vec::new(), Vec::new(), 0);
        for p in queue.drain(..) {
            let size = approx_size(&p.req);
            let fits =
                batch.is_empty() || (batch.len() < MAX_REQUESTS && bytes + size <= MAX_BYTES);
            if p.key == key && fits {
                bytes += size;
                batch.push(p);
            } else {
                rest.push(p);
            }
        }
        *queue = rest;
        Some(batch)
    }

    async fn send(&self, mut batch: Vec<Pending>) {
        let Some(key) = batch.first().map(|p| p.key.clone()) else {
            return;
        };
        if batch.len() == 1 {
            // Alone: the same call as before batching.
            let Some(p) = batch.pop() else { return };
            let req = ClusterRequest::Execute {
                req: p.req,
                creds: key.creds,
            };
            let r = call_peer(
                &self.transport,
                &self.store,
                &key.addr,
                &req,
                key.timeout,
                false,
            )
            .await;
            let _ = p.answer.send(r.and_then(Reply::take_or_hop));
            return;
        }
        let (reqs, answers): (Vec<Request>, Vec<_>) =
            batch.into_iter().map(|p| (p.req, p.answer)).unzip();
        let n = reqs.len();
        let req = ClusterRequest::ExecuteEach {
            reqs,
            creds: key.creds,
        };
        let r = call_peer(
            &self.transport,
            &self.store,
            &key.addr,
            &req,
            key.timeout,
            false,
        )
        .await;
        match r.and_then(<Vec<Reply>>::take_or_hop) {
            Ok(Hop::Done(replies)) if replies.len() == n => {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    let _ = answer.send(Ok(Hop::Done(reply)));
                }
            }
            Ok(Hop::Done(_)) => {
                let e = ClusterError::Store(StoreError::Raft(
                    "the leader answered a forwarded batch with the wrong number of replies".into(),
                ));
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
            Ok(Hop::NotLeader(next)) => {
                for answer in answers {
                    let _ = answer.send(Ok(Hop::NotLeader(next.clone())));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// An answer, or the leader's "not me, try that one".
trait TakeOrHop: Answer {
    fn take_or_hop(resp: ClusterResponse) -> Result<Hop<Self>, ClusterError> {
        match resp {
            ClusterResponse::Err(ClusterError::Store(StoreError::NotLeader {
                leader: Some(next),
            })) => Ok(Hop::NotLeader(next)),
            resp => Self::take(resp).map(Hop::Done),
        }
    }
}

impl<T: Answer> TakeOrHop for T {}

/// About how many bytes `req` takes on the wire: its SQL and its parameters.
fn approx_size(req: &Request) -> usize {
    use crate::command::Param;
    let param = |p: &Param| match p {
        Param::Text(t) => t.len() + 8,
        Param::Blob(b) => b.len() + 8,
        _ => 16,
    };
    req.statements
        .iter()
        .map(|s| {
            s.sql.len()
                + 16
                + s.positional.iter().map(param).sum::<usize>()
                + s.named
                    .iter()
                    .map(|(n, p)| n.len() + param(p))
                    .sum::<usize>()
        })
        .sum()
}
