//! Interactive transactions, held by the leader until they commit, roll back, expire, or
//! leadership moves.
//!
//! Owns: the table of open transactions (id, start index, term, statements so far with the
//! digests of their answers, last activity), their idle expiry, and turning a commit into
//! one `Command::TxCommit` log entry. Does not: run SQL (`db::txn`) or decide a commit's
//! verdict (the state machine does, on every node). See `docs/design/transactions.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Reply, Store, StoreError};
use crate::command::{Command, Request, TxCommit, TxMode, TxStatement};
use crate::db::txn::TxStep;

/// Statements one transaction may hold: every call replays them all on the leader.
pub const MAX_TX_STATEMENTS: usize = 1000;

/// A call on an interactive transaction, as the HTTP layer and forwarding carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TxCall {
    Open,
    Run {
        id: String,
        req: Request,
        mode: TxMode,
    },
    Commit {
        id: String,
    },
    Rollback {
        id: String,
    },
}

/// What a [`TxCall`] answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxAnswer {
    /// The new transaction and the applied index it starts from.
    Opened {
        id: String,
        index: u64,
    },
    /// The statements' results (not in the log yet).
    Ran(Reply),
    /// Committed by the log entry at `raft_index`.
    Committed(Reply),
    RolledBack,
}

struct Tx {
    start: u64,
    term: u64,
    statements: Vec<TxStatement>,
    last: Instant,
}

/// The leader's open transactions. Calls on one transaction are serialized by its lock.
#[derive(Default)]
pub struct TxTable {
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Tx>>>>,
}

impl TxTable {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Tx>>>> {
        // Only inserts and removals happen under it: a poisoned map is still whole.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The term a transaction id was issued in (ids are `<term>.<random>`).
fn term_of(id: &str) -> Option<u64> {
    id.split_once('.').and_then(|(t, _)| t.parse().ok())
}

impl Store {
    /// Serves one transaction call on the leader ([`StoreError::NotLeader`] elsewhere, so
    /// the caller forwards it).
    pub async fn tx(&self, call: TxCall) -> Result<TxAnswer, StoreError> {
        if !self.raft_is_leader() {
            return Err(StoreError::NotLeader {
                leader: self.leader(),
            });
        }
        let term = self.current_term();
        match call {
            TxCall::Open => self.tx_open(term).await,
            TxCall::Run { id, req, mode } => self.tx_run(term, &id, req, mode).await,
            TxCall::Commit { id } => self.tx_commit(term, &id).await,
            TxCall::Rollback { id } => {
                self.tx_take(term, &id).await?;
                Ok(TxAnswer::RolledBack)
            }
        }
    }

    async fn tx_open(&self, term: u64) -> Result<TxAnswer, StoreError> {
        // Only a leader a quorum confirms hands out transactions.
        self.ensure_leader().await?;
        self.tx_sweep(term);
        let index = self.applied().lock().last_applied.map_or(0, |l| l.index);
        let id = format!("{term}.{:016x}", fastrand::u64(..));
        let tx = Tx {
            start: index,
            term,
            statements: Vec::new(),
            last: Instant::now(),
        };
        self.txs
            .map()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(tx)));
        Ok(TxAnswer::Opened { id, index })
    }

    /// Drops transactions that expired or belong to an earlier term.
    fn tx_sweep(&self, term: u64) {
        let idle = self.cfg.tx_idle_timeout;
        self.txs.map().retain(|_, tx| match tx.try_lock() {
            Ok(t) => t.term == term && t.last.elapsed() <= idle,
            // In use right now: not idle.
            Err(_) => true,
        });
    }

    /// The open transaction `id`, or why there is none.
    fn tx_get(&self, term: u64, id: &str) -> Result<Arc<tokio::sync::Mutex<Tx>>, StoreError> {
        if let Some(tx) = self.txs.map().get(id) {
            return Ok(tx.clone());
        }
        match term_of(id) {
            Some(t) if t < term => Err(aborted(t, term)),
            _ => Err(StoreError::TxNotFound(format!(
                "transaction {id} not found: it expired (-tx-idle-timeout), already committed or rolled back, or never existed"
            ))),
        }
    }

    /// Checks `tx` is still usable; removes it from the table when it is not.
    fn tx_check(&self, term: u64, id: &str, tx: &mut Tx) -> Result<(), StoreError> {
        let r = if tx.term != term {
            Err(aborted(tx.term, term))
        } else if tx.last.elapsed() > self.cfg.tx_idle_timeout {
            Err(StoreError::TxNotFound(format!(
                "transaction {id} expired: idle for longer than -tx-idle-timeout ({:?})",
                self.cfg.tx_idle_timeout
            )))
        } else {
            tx.last = Instant::now();
            Ok(())
        };
        if r.is_err() {
            self.txs.map().remove(id);
        }
        r
    }

    /// Removes the transaction (rollback, commit); returns it.
    async fn tx_take(&self, term: u64, id: &str) -> Result<Tx, StoreError> {
        let tx = self.tx_get(term, id)?;
        let mut t = tx.lock().await;
        self.tx_check(term, id, &mut t)?;
        self.txs.map().remove(id);
        Ok(Tx {
            start: t.start,
            term: t.term,
            statements: std::mem::take(&mut t.statements),
            last: t.last,
        })
    }

    async fn tx_run(
        &self,
        term: u64,
        id: &str,
        req: Request,
        mode: TxMode,
    ) -> Result<TxAnswer, StoreError> {
        Self::check_pragmas(&req)?;
        let tx = self.tx_get(term, id)?;
        let mut t = tx.lock().await;
        self.tx_check(term, id, &mut t)?;
        if t.statements.len() + req.statements.len() > MAX_TX_STATEMENTS {
            return Err(StoreError::TxTooLarge(format!(
                "a transaction may hold at most {MAX_TX_STATEMENTS} statements"
            )));
        }
        let history = t.statements.clone();
        let max_steps = self.cfg.db_max_steps;
        let step = self
            .sm
            .db()
            .call(move |e| e.tx_step(&history, &req.statements, mode, max_steps))
            .await??;
        let end = |why: String| {
            self.txs.map().remove(id);
            Err(StoreError::TxConflict(format!(
                "transaction {id} cannot commit: {why}"
            )))
        };
        match step {
            TxStep::Ran(results, recorded) => {
                t.statements.extend(recorded);
                t.last = Instant::now();
                Ok(TxAnswer::Ran(Reply {
                    results,
                    raft_index: None,
                }))
            }
            TxStep::Conflict(c) => end(c.to_string()),
            TxStep::Ended(why) => end(why),
        }
    }

    async fn tx_commit(&self, term: u64, id: &str) -> Result<TxAnswer, StoreError> {
        let t = self.tx_take(term, id).await?;
        let cmd = Command::TxCommit(TxCommit {
            id: id.to_string(),
            start: t.start,
            statements: t.statements,
        });
        let (resp, index) = self.propose(self.bounded(cmd)).await?;
        match resp.error {
            Some(why) => Err(StoreError::TxConflict(format!(
                "transaction {id} not committed (log entry {index}): {why}"
            ))),
            None => Ok(TxAnswer::Committed(Reply {
                results: Vec::new(),
                raft_index: Some(index),
            })),
        }
    }
}

fn aborted(began: u64, now: u64) -> StoreError {
    StoreError::TxAborted(format!(
        "transaction aborted: leadership changed (or the leader restarted) since it began in term {began}; the term is now {now}"
    ))
}
