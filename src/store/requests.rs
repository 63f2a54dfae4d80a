//! The data operations: writes through the log, reads at their consistency level.
//!
//! Owns: `/db/execute`, `/db/query` and `/db/request` as the store serves them: the pragma
//! check and rewriting a receiving node does, and the read levels (`none` with freshness,
//! `weak`, `linearizable`, `strong` through a log barrier, `auto`) and `min_index`.
//! Does not: execute SQL (`crate::db`) or forward (`crate::cluster`).

use std::time::Duration;

use super::*;
use crate::command::{Command, Request};
use crate::db::rewrite::{self, RewriteOpts};
use crate::db::{classify, ReadKind};

/// How fresh a read must be (rqlite's `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ReadLevel {
    /// Local read, no leader check; `freshness` may bound staleness on followers.
    None,
    /// Local read if this node believes it is the leader (with `min_index`: any node that
    /// hears from a leader, once it has applied that index).
    #[default]
    Weak,
    /// Leader confirms leadership with a quorum after the read arrives; the node asked (the
    /// leader, or a follower that asked it for the read index) reads locally once it has
    /// applied the commit index of that moment.
    Linearizable,
    /// The read goes through the Raft log.
    Strong,
    /// `weak` on voters, `none` on non-voters.
    Auto,
}

/// Options of a read.
/// Travels with a forwarded read as it is.
impl ReadLevel {
    /// rqlite's `level` parameter: case-insensitive; unknown or absent is `weak`.
    pub fn from_param(s: &str) -> ReadLevel {
        match s.to_ascii_lowercase().as_str() {
            "none" => ReadLevel::None,
            "strong" => ReadLevel::Strong,
            "linearizable" => ReadLevel::Linearizable,
            "auto" => ReadLevel::Auto,
            _ => ReadLevel::Weak,
        }
    }
}

/// Options of a read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadOpts {
    pub level: ReadLevel,
    /// Bound on staleness for `none` reads on a follower.
    pub freshness: Option<Duration>,
    pub freshness_strict: bool,
    pub linearizable_timeout: Option<Duration>,
    /// Read-your-writes (`min_index`): the read is answered only once this node has applied
    /// this index (see `catch_up.rs`). With it, `weak` is served by a follower too.
    pub min_index: Option<u64>,
    /// Bound on the wait for `min_index` (the request's `timeout`; default
    /// [`DEFAULT_CATCH_UP_TIMEOUT`](super::DEFAULT_CATCH_UP_TIMEOUT)).
    pub catch_up_timeout: Option<Duration>,
}

impl Store {
    /// What the node that receives a request does before it may enter the log: refuse
    /// disallowed pragmas, and rewrite non-deterministic SQL (`rewrite`: writes and strong
    /// reads; other reads run locally and need no rewriting). Returns how many statements
    /// were rewritten.
    pub fn prepare(req: &mut Request, rw: &RewriteOpts, rewrite: bool) -> Result<u64, StoreError> {
        Self::check_pragmas(req)?;
        let mut rewritten = 0;
        if rewrite {
            for s in &mut req.statements {
                rewritten += u64::from(rewrite::rewrite(s, rw));
            }
        }
        Ok(rewritten)
    }

    pub(super) fn check_pragmas(req: &Request) -> Result<(), StoreError> {
        if req
            .statements
            .iter()
            .any(|s| classify::is_disallowed_pragma(&s.sql))
        {
            return Err(StoreError::DisallowedPragma);
        }
        Ok(())
    }

    /// Runs writes through the log (`/db/execute`).
    pub async fn execute(&self, req: Request) -> Result<Reply, StoreError> {
        Self::check_pragmas(&req)?;
        let (resp, index) = self.propose(self.bounded(Command::Execute(req))).await?;
        Ok(Reply {
            results: resp.results,
            raft_index: Some(index),
        })
    }

    /// Independent write requests in one log entry, applied in order, each on its own (a
    /// transaction one of them leaves open cannot capture the next): the write queue's batches.
    pub async fn execute_each(&self, reqs: Vec<Request>) -> Result<Vec<Reply>, StoreError> {
        for req in &reqs {
            Self::check_pragmas(req)?;
        }
        let n = reqs.len();
        let cmds = reqs
            .into_iter()
            .map(|r| self.bounded(Command::Execute(r)))
            .collect();
        let (resp, index) = self.propose(Command::Batch(cmds)).await?;
        if resp.parts.len() != n {
            return Err(StoreError::Raft(
                "batch response has the wrong length".into(),
            ));
        }
        Ok(resp
            .parts
            .into_iter()
            .map(|p| Reply {
                results: p.results,
                raft_index: Some(index),
            })
            .collect())
    }

    /// Reads (`/db/query`) at the requested consistency level.
    pub async fn query(&self, req: Request, opts: &ReadOpts) -> Result<Reply, StoreError> {
        Self::check_pragmas(&req)?;
        self.read(req, opts, ReadKind::Query).await
    }

    /// A read at `level`: the level's check, then the read on a pooled connection. A strong
    /// read first waits for a barrier through the log (an empty entry proposed after it
    /// arrived, shared by the strong reads waiting then; see `shared_call.rs`) and reads once it
    /// is applied here: the log orders it, but it never runs inside the apply loop, so a
    /// slow read cannot hold up the cluster's writes or be replayed at every restart.
    pub(super) async fn read(
        &self,
        req: Request,
        opts: &ReadOpts,
        kind: ReadKind,
    ) -> Result<Reply, StoreError> {
        let raft_index = if self.resolve_level(opts.level) == ReadLevel::Strong {
            // A barrier that did not commit only means the read did not happen.
            let barrier = || async {
                // The term before proposing, as rqlite records it: a later one could name a
                // term the barrier was not proposed in.
                let term = self.current_term();
                let (_, index) = self.propose(Command::Noop).await.map_err(|e| match e {
                    StoreError::OutcomeUnknown(_) => match self.leader() {
                        Some(_) => StoreError::Timeout(
                            "strong read: the leader could not commit its log barrier in time"
                                .into(),
                        ),
                        None => StoreError::NotLeader { leader: None },
                    },
                    e => e,
                })?;
                self.strong_read_term
                    .fetch_max(term, std::sync::atomic::Ordering::Relaxed);
                Ok(index)
            };
            // Boxed, as the rounds in `check_read`: only strong reads carry a proposal's state.
            Some(Box::pin(self.strong.call(barrier)).await?)
        } else {
            // rqlite does not translate `auto` on /db/request: a local read, no leader check.
            if !(kind == ReadKind::Request && opts.level == ReadLevel::Auto) {
                self.check_read(opts.level, opts).await?;
            }
            None
        };
        if let Some(index) = opts.min_index {
            Box::pin(self.catch_up(index, opts.catch_up_timeout)).await?;
        }
        let transaction = req.transaction;
        let statements = req.statements.len() as u64;
        let results = self.reads.read(req, kind).await?;
        let db = &self.metrics.db;
        db.queries.add(statements);
        db.query_errors.add(
            results
                .iter()
                .filter(|r| matches!(r.outcome, crate::command::Outcome::Error(_)))
                .count() as u64,
        );
        if transaction {
            db.query_transactions.inc();
        }
        Ok(Reply {
            results,
            raft_index,
        })
    }

    /// Whether every statement of `req` only reads (SQLite's own flag, as `/db/request`
    /// decides whether a request enters the log).
    pub async fn is_read_only(&self, req: &Request) -> Result<bool, StoreError> {
        Ok(self.reads.is_read_only(req.clone()).await?)
    }

    /// The unified endpoint (`/db/request`): a read-only request is served like a query; a
    /// request with any write goes through the log.
    pub async fn request(&self, req: Request, opts: &ReadOpts) -> Result<Reply, StoreError> {
        Self::check_pragmas(&req)?;
        if self.reads.is_read_only(req.clone()).await? {
            return self.read(req, opts, ReadKind::Request).await;
        }
        let (resp, index) = self
            .propose(self.bounded(Command::ExecuteQuery(req)))
            .await?;
        Ok(Reply {
            results: resp.results,
            raft_index: Some(index),
        })
    }

    pub(super) fn resolve_level(&self, level: ReadLevel) -> ReadLevel {
        match level {
            ReadLevel::Auto if self.is_voter() => ReadLevel::Weak,
            ReadLevel::Auto => ReadLevel::None,
            l => l,
        }
    }

    /// The checks a local read at `level` needs before it may touch the database.
    pub(super) async fn check_read(
        &self,
        level: ReadLevel,
        opts: &ReadOpts,
    ) -> Result<(), StoreError> {
        match self.resolve_level(level) {
            ReadLevel::None | ReadLevel::Auto => {
                if let Some(fresh) = opts.freshness {
                    self.check_freshness(fresh, opts.freshness_strict)?;
                }
                Ok(())
            }
            // `weak` promises data about as fresh as a leader that may have been deposed a
            // lease ago has. With `min_index` the client names the freshness it needs, so a
            // follower that still hears from a leader (within an election timeout) serves
            // it once caught up; one that knows no leader refuses rather than read stale.
            ReadLevel::Weak if opts.min_index.is_some() && !self.raft_is_leader() => {
                match self.leader() {
                    Some(_) => Ok(()),
                    None => Err(StoreError::NotLeader { leader: None }),
                }
            }
            ReadLevel::Weak => self.ensure_leader().await,
            ReadLevel::Linearizable => {
                Box::pin(self.ensure_linearizable(opts.linearizable_timeout)).await
            }
            ReadLevel::Strong => Ok(()),
        }
    }

    /// `none` reads with `freshness`: a follower that has not heard from a leader within
    /// `fresh` refuses. The leader ignores freshness.
    ///
    /// With `strict`, a follower is stale too when it learned of a committed entry more than
    /// `fresh` ago and has not applied it yet. rqlite measures that lag from the leader's
    /// append time to the local apply time, two clocks; here both ends are this node's.
    /// Entries appended and not yet known to be committed do not count: under a steady write
    /// load a follower nearly always holds some.
    pub(super) fn check_freshness(&self, fresh: Duration, strict: bool) -> Result<(), StoreError> {
        if self.is_leader() {
            return Ok(());
        }
        if strict {
            let lag = self.commit_clock().unapplied_since();
            if lag.is_some_and(|since| since.elapsed() > fresh) {
                return Err(StoreError::StaleRead);
            }
        }
        match self.contact.since_leader_contact() {
            Some(age) if age <= fresh => Ok(()),
            // Never heard from a leader, or not recently enough.
            _ => Err(StoreError::StaleRead),
        }
    }
}
