//! "Local, else the leader": where a request is served.
//!
//! Owns: the routing rule every data and admin operation follows: try it here; if this node
//! is not the leader and forwarding is allowed, send it to the leader this node knows of, and
//! follow the leader once more if leadership just moved on (the request was refused there,
//! not applied). The answer says where it was computed (`X-RQLITE-SERVED-BY`).
//! Does not: send anything itself (the caller's `forward` does) or pick status codes.

use std::future::Future;

use super::ClusterError;
use crate::raft::NodeInfo;
use crate::store::StoreError;

/// A result and where it was computed.
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    /// The leader's Raft address when the request was forwarded (`X-RQLITE-SERVED-BY`).
    pub forwarded_to: Option<String>,
}

impl<T> Served<T> {
    pub(crate) fn local(value: T) -> Self {
        Self {
            value,
            forwarded_to: None,
        }
    }
}

/// What a node that was forwarded a request answered.
#[derive(Debug, Clone)]
pub enum Hop<T> {
    Done(T),
    /// It is not the leader either, and names who is.
    NotLeader(NodeInfo),
}

/// Serves a request here (`local`, the answer this node gave) or on the leader (`forward`).
/// `me` is this node's id; with `allowed` false (`redirect`), "not leader" is returned for
/// the caller to answer 301. The caller runs the local attempt first and passes its answer,
/// not its future: this future then never holds both, and it is moved with every request.
pub async fn route<T, F, Fut>(
    me: &str,
    allowed: bool,
    local: Result<T, StoreError>,
    mut forward: F,
) -> Result<Served<T>, ClusterError>
where
    F: FnMut(NodeInfo) -> Fut,
    Fut: Future<Output = Result<Hop<T>, ClusterError>>,
{
    let leader = match local {
        Ok(v) => return Ok(Served::local(v)),
        Err(StoreError::NotLeader {
            leader: Some(leader),
        }) if allowed && leader.id != me => leader,
        Err(e) => return Err(e.into()),
    };
    let mut leader = leader;
    for hop in 0..2 {
        // Boxed: the internode call's state would otherwise sit in every local request's
        // future, which is moved a few times per request.
        match Box::pin(forward(leader.clone())).await? {
            Hop::Done(value) => {
                return Ok(Served {
                    value,
                    forwarded_to: Some(leader.raft_addr),
                })
            }
            Hop::NotLeader(next) if hop == 0 && next.id != leader.id && next.id != me => {
                leader = next;
            }
            Hop::NotLeader(_) => break,
        }
    }
    Err(StoreError::NotLeader { leader: None }.into())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            raft_addr: format!("{id}:4002"),
            api_addr: format!("{id}:4001"),
            api_https: false,
        }
    }

    fn not_leader(l: Option<&str>) -> StoreError {
        StoreError::NotLeader {
            leader: l.map(node),
        }
    }

    /// Runs `route` with a local answer and a script of forwarded answers; returns the
    /// outcome and the nodes asked.
    fn run(
        local: Result<u32, StoreError>,
        allowed: bool,
        hops: Vec<Result<Hop<u32>, ClusterError>>,
    ) -> (Result<Served<u32>, ClusterError>, Vec<String>) {
        let asked = RefCell::new(Vec::new());
        let hops = RefCell::new(hops.into_iter());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = rt.block_on(route("me", allowed, local, |n| {
            asked.borrow_mut().push(n.id.clone());
            let next = hops.borrow_mut().next().expect("an answer scripted");
            async move { next }
        }));
        (r, asked.into_inner())
    }

    #[test]
    fn served_here_when_this_node_can() {
        let (r, asked) = run(Ok(7), true, vec![]);
        let s = r.expect("served");
        assert_eq!((s.value, s.forwarded_to), (7, None));
        assert!(asked.is_empty());
    }

    #[test]
    fn forwarded_to_the_named_leader() {
        let (r, asked) = run(Err(not_leader(Some("l"))), true, vec![Ok(Hop::Done(9))]);
        let s = r.expect("served");
        assert_eq!((s.value, s.forwarded_to.as_deref()), (9, Some("l:4002")));
        assert_eq!(asked, ["l"]);
    }

    #[test]
    fn follows_a_leader_that_just_moved_on_once() {
        let (r, asked) = run(
            Err(not_leader(Some("old"))),
            true,
            vec![Ok(Hop::NotLeader(node("new"))), Ok(Hop::Done(3))],
        );
        assert_eq!(r.expect("served").forwarded_to.as_deref(), Some("new:4002"));
        assert_eq!(asked, ["old", "new"]);
        // Not twice: a third node means no settled leader.
        let (r, asked) = run(
            Err(not_leader(Some("a"))),
            true,
            vec![Ok(Hop::NotLeader(node("b"))), Ok(Hop::NotLeader(node("c")))],
        );
        assert!(matches!(
            r,
            Err(ClusterError::Store(StoreError::NotLeader { leader: None }))
        ));
        assert_eq!(asked, ["a", "b"]);
    }

    #[test]
    fn no_forwarding_when_not_allowed_or_no_leader_or_itself() {
        for (local, allowed) in [
            (not_leader(Some("l")), false),
            (not_leader(None), true),
            (not_leader(Some("me")), true),
            (StoreError::StaleRead, true),
        ] {
            let want = format!("{local:?}");
            let (r, asked) = run(Err(local), allowed, vec![]);
            assert!(asked.is_empty(), "{want}");
            assert_eq!(format!("{:?}", r.err()), format!("Some(Store({want}))"));
        }
    }

    #[test]
    fn a_forwarding_failure_is_the_answer() {
        let (r, _) = run(
            Err(not_leader(Some("l"))),
            true,
            vec![Err(ClusterError::OutcomeUnknown {
                addr: "l".into(),
                msg: "timeout".into(),
            })],
        );
        assert!(matches!(r, Err(ClusterError::OutcomeUnknown { .. })));
    }
}
