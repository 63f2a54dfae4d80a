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
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::proto::{ClusterRequest, Credentials};
use super::{call_peer, Answer, ClusterError, Hop};
use crate::command::Request;
use crate::raft::transport::Transport;
use crate::store::parts::PART_BYTES;
use crate::store::{Reply, Store};

/// Calls on their way to the leader at once for one key (leader, credentials, timeout).
const IN_FLIGHT: usize = 2;
/// Most requests, and most bytes (SQL and parameters, counted generously), in one call of
/// two or more: well inside one log entry (a command over `PART_BYTES` travels as parts,
/// one entry after another). A request larger than that goes alone, as it did before.
const MAX_REQUESTS: usize = 256;
const MAX_BYTES: usize = PART_BYTES / 4;

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
    queued: Instant,
    answer: oneshot::Sender<Answered>,
}

#[derive(Default)]
struct State {
    queue: Vec<Pending>,
    /// Calls in flight per key.
    in_flight: Vec<(Key, usize)>,
}

impl State {
    fn in_flight(&mut self, key: &Key) -> &mut usize {
        let i = match self.in_flight.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.in_flight.push((key.clone(), 0));
                self.in_flight.len() - 1
            }
        };
        &mut self.in_flight[i].1
    }

    fn has_room(&self, key: &Key) -> bool {
        self.in_flight
            .iter()
            .find(|(k, _)| k == key)
            .is_none_or(|(_, n)| *n < IN_FLIGHT)
    }

    /// The oldest request whose key has a call to spare, with the requests queued after it
    /// that share its key, within the limits; counted in flight. Requests whose client went
    /// away are dropped unsent; those queued longer than their timeout are answered so.
    fn take(&mut self) -> Option<(Key, Vec<Pending>)> {
        let now = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .filter(|p| !p.answer.is_closed())
            .partition(|p| now.duration_since(p.queued) >= p.key.timeout);
        self.queue = waiting;
        for p in expired {
            let msg = format!("not sent within the timeout ({:?})", p.key.timeout);
            let addr = p.key.addr.clone();
            let _ = p
                .answer
                .send(Err(ClusterError::LeaderUnreachable { addr, msg }));
        }
        let key = self
            .queue
            .iter()
            .find(|p| self.has_room(&p.key))?
            .key
            .clone();
        let (mut batch, mut rest, mut bytes) = (Vec::new(), Vec::new(), 0);
        for p in std::mem::take(&mut self.queue) {
            let size = approx_size(&p.req);
            // The first request always goes; a large one goes alone.
            let fits = batch.is_empty()
                || (bytes <= MAX_BYTES && batch.len() < MAX_REQUESTS && bytes + size <= MAX_BYTES);
            if p.key == key && fits {
                bytes += size;
                batch.push(p);
            } else {
                rest.push(p);
            }
        }
        self.queue = rest;
        *self.in_flight(&key) += 1;
        Some((key, batch))
    }
}

#[derive(Clone)]
pub(super) struct ForwardBatches {
    state: Arc<Mutex<State>>,
    transport: Transport,
    store: Arc<Store>,
}

/// A call in flight: counted down, and the queue looked at again, however the call ends.
struct Flight {
    batches: ForwardBatches,
    key: Key,
}

impl Drop for Flight {
    fn drop(&mut self) {
        {
            let mut st = self.batches.lock();
            let n = st.in_flight(&self.key);
            *n = n.saturating_sub(1);
            // Keys come and go (a client's own `timeout`): keep only those in flight.
            st.in_flight.retain(|(_, n)| *n > 0);
        }
        self.batches.kick();
    }
}

impl ForwardBatches {
    pub(super) fn new(transport: Transport, store: Arc<Store>) -> Self {
        Self {
            state: Arc::default(),
            transport,
            store,
        }
    }

    /// Sends `req` to the leader at `addr`, with the requests forwarded at the same time.
    /// `timeout` covers the wait in the queue and the call.
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
        self.lock().queue.push(Pending {
            key,
            req,
            queued: Instant::now(),
            answer: tx,
        });
        self.kick();
        rx.await.unwrap_or(Err(lost))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a call for every key that has requests waiting and a call to spare.
    fn kick(&self) {
        // Never outside the runtime (a call ending while it shuts down): what is queued is
        // then dropped, and its clients told the outcome is unknown.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        loop {
            let Some((key, batch)) = self.lock().take() else {
                return;
            };
            let flight = Flight {
                batches: self.clone(),
                key,
            };
            runtime.spawn(async move {
                flight.batches.send(batch).await;
                drop(flight);
            });
        }
    }

    async fn send(&self, batch: Vec<Pending>) {
        let Some(first) = batch.first() else {
            return;
        };
        let mut key = first.key.clone();
        // The oldest request's client has waited longest: what is left of its timeout.
        key.timeout = key.timeout.saturating_sub(first.queued.elapsed());
        let (mut reqs, answers): (Vec<Request>, Vec<_>) =
            batch.into_iter().map(|p| (p.req, p.answer)).unzip();
        let n = reqs.len();
        let creds = key.creds.clone();
        let req = match reqs.pop() {
            // Alone: the same call as before batching.
            Some(req) if n == 1 => ClusterRequest::Execute { req, creds },
            last => {
                reqs.extend(last);
                ClusterRequest::ExecuteEach { reqs, creds }
            }
        };
        let resp = call_peer(
            &self.transport,
            &self.store,
            &key.addr,
            &req,
            key.timeout,
            false,
        )
        .await;
        let each = |a: Answered| std::iter::repeat_n(a, n).collect::<Vec<_>>();
        let answered = match resp {
            Ok(resp) if n == 1 => vec![Reply::take_or_hop(resp)],
            Ok(resp) => match <Vec<Reply>>::take_or_hop(resp) {
                Ok(Hop::Done(replies)) if replies.len() == n => {
                    replies.into_iter().map(|r| Ok(Hop::Done(r))).collect()
                }
                // The leader may have applied them: their outcome is unknown.
                Ok(Hop::Done(_)) => each(Err(ClusterError::OutcomeUnknown {
                    addr: key.addr.clone(),
                    msg: "the leader answered a forwarded batch with the wrong number of replies"
                        .into(),
                })),
                Ok(Hop::NotLeader(next)) => each(Ok(Hop::NotLeader(next))),
                Err(e) => each(Err(e)),
            },
            Err(e) => each(Err(e)),
        };
        for (answer, a) in answers.into_iter().zip(answered) {
            let _ = answer.send(a);
        }
    }
}

/// About how many bytes `req` takes on the wire, generously: its SQL and parameters, and
/// room for bincode's framing of the request, each statement and each parameter.
fn approx_size(req: &Request) -> usize {
    64 + req
        .statements
        .iter()
        .map(|s| s.payload_bytes() + 32 + 16 * s.params())
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Statement;

    fn key(addr: &str) -> Key {
        Key {
            addr: addr.into(),
            creds: None,
            timeout: Duration::from_secs(30),
        }
    }

    fn pending(key: Key, sql_len: usize) -> (Pending, oneshot::Receiver<Answered>) {
        let (answer, rx) = oneshot::channel();
        let req = Request {
            statements: vec![Statement::new("x".repeat(sql_len))],
            ..Request::default()
        };
        let queued = Instant::now();
        (
            Pending {
                key,
                req,
                queued,
                answer,
            },
            rx,
        )
    }

    #[test]
    fn batches_keep_to_one_key_its_calls_in_flight_and_one_entry() {
        let mut st = State::default();
        let mut waiting = Vec::new();
        for (k, len) in [("a", 10), ("b", 10), ("a", 10), ("a", MAX_BYTES), ("a", 10)] {
            let (p, rx) = pending(key(k), len);
            st.queue.push(p);
            waiting.push(rx);
        }
        // The oldest request's key, and the small requests of that key after it; the large
        // one would pass the limit and waits for a call of its own.
        let (k, batch) = st.take().expect("a batch");
        assert_eq!(k.addr, "a");
        assert_eq!(batch.len(), 3);
        let (k, batch) = st.take().expect("a batch");
        assert_eq!((k.addr.as_str(), batch.len()), ("b", 1));
        // "a" has one call in flight: one more may go, alone because it is large.
        let (k, batch) = st.take().expect("a batch");
        assert_eq!((k.addr.as_str(), batch.len()), ("a", 1));
        assert!(st.take().is_none(), "nothing left");
        // Two calls in flight for "a": a new request waits until one ends.
        let (p, _rx) = pending(key("a"), 10);
        st.queue.push(p);
        assert!(st.take().is_none(), "a has no call to spare");
        *st.in_flight(&key("a")) -= 1;
        assert_eq!(st.take().map(|(_, b)| b.len()), Some(1));
    }

    #[test]
    fn requests_whose_client_left_are_not_sent_and_late_ones_are_answered() {
        let mut st = State::default();
        let (gone, rx) = pending(key("a"), 10);
        drop(rx);
        st.queue.push(gone);
        let mut late_key = key("a");
        late_key.timeout = Duration::ZERO;
        let (late, mut late_rx) = pending(late_key, 10);
        st.queue.push(late);
        assert!(st.take().is_none());
        assert!(st.queue.is_empty());
        assert!(matches!(
            late_rx.try_recv(),
            Ok(Err(ClusterError::LeaderUnreachable { .. }))
        ));
    }
}
