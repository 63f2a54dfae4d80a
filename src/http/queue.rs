//! Queued writes (`/db/execute?queue`): many requests batched into one log entry.
//!
//! A request is answered as soon as it is queued, with a node-local sequence number; `wait`
//! makes it wait for its batch. The queue lives in memory: statements queued but not yet
//! committed are lost if the node crashes (`kill -9`), exactly as with rqlite. Unlike rqlite,
//! failed statements are not dropped silently: they are logged, counted in `/status`, and a
//! waiting client gets its statements' results (a failed batch: the status code saying why).
//! Each queued request is its own unit in the batch's log entry (unless `-write-queue-tx`),
//! so one request's open transaction cannot capture the next one's statements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, Forwarding};
use crate::command::{Outcome, Request, Statement, StmtResult};
use crate::config::Queue;
pub use crate::metrics::QueueStats;
use crate::store::StoreError;

/// What a queued request came to: its statements' results once its batch was applied, or
/// why the batch was not.
pub type Done = Result<Vec<StmtResult>, ClusterError>;

struct Item {
    statements: Vec<Statement>,
    done: oneshot::Sender<Done>,
}

/// What the submitter gets back.
pub struct Ticket {
    pub sequence_number: u64,
    /// Resolves when the batch holding this request was applied (or failed).
    pub done: oneshot::Receiver<Done>,
}

/// The handle the HTTP layer submits to.
pub struct WriteQueue {
    tx: mpsc::Sender<Item>,
    next_seq: AtomicU64,
    pub stats: Arc<QueueStats>,
    pub config: Queue,
}

impl WriteQueue {
    /// Starts the batching task; it stops (failing whatever is still queued) when `stop` fires.
    /// `stats` are the node's queue counters.
    pub fn start(
        cluster: Arc<Cluster>,
        config: Queue,
        stats: Arc<QueueStats>,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        // Sequence numbers start at the wall clock in nanoseconds, as rqlite's do.
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let task = tokio::spawn(run(cluster, config.clone(), rx, stats.clone(), stop));
        (
            Self {
                tx,
                next_seq: AtomicU64::new(start),
                stats,
                config,
            },
            task,
        )
    }

    /// How many requests wait in the queue now (read at each `/metrics` scrape).
    pub fn depth(&self) -> QueueDepth {
        QueueDepth(self.tx.clone())
    }

    /// Queues statements (already rewritten); waits for room when the queue is full.
    pub async fn submit(&self, statements: Vec<Statement>) -> Result<Ticket, String> {
        let (done, rx) = oneshot::channel();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.sequence_number.store(seq, Ordering::Relaxed);
        self.stats.requests.inc();
        self.stats.statements_rx.add(statements.len() as u64);
        self.tx
            .send(Item { statements, done })
            .await
            .map_err(|_| "write queue stopped".to_string())?;
        Ok(Ticket {
            sequence_number: seq,
            done: rx,
        })
    }
}

/// The queue's channel, for its depth: room taken is requests waiting.
#[derive(Debug, Clone)]
pub struct QueueDepth(mpsc::Sender<Item>);

impl QueueDepth {
    pub fn get(&self) -> usize {
        self.0.max_capacity() - self.0.capacity()
    }
}

async fn run(
    cluster: Arc<Cluster>,
    cfg: Queue,
    mut rx: mpsc::Receiver<Item>,
    stats: Arc<QueueStats>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            item = rx.recv() => match item { Some(i) => i, None => break },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(cfg.timeout);
        tokio::pin!(deadline);
        while batch.len() < cfg.batch_size {
            tokio::select! {
                _ = &mut deadline => {
                    stats.timeouts.inc();
                    break;
                }
                item = rx.recv() => match item { Some(i) => batch.push(i), None => break },
            }
        }
        flush(&cluster, &cfg, batch, &stats, &stop).await;
    }
    // Bounded shutdown: whatever is still queued is reported, not retried.
    rx.close();
    let mut lost = 0;
    while let Ok(item) = rx.try_recv() {
        lost += item.statements.len();
        let _ = item.done.send(Err(ClusterError::Store(StoreError::Closed)));
    }
    if lost > 0 {
        tracing::warn!(statements = lost, "queued writes not applied at shutdown");
    }
}

async fn flush(
    cluster: &Cluster,
    cfg: &Queue,
    batch: Vec<Item>,
    stats: &QueueStats,
    stop: &CancellationToken,
) {
    stats.batches.inc();
    stats.batch_size.observe(batch.len() as f64);
    if batch.iter().all(|i| i.statements.is_empty()) {
        for item in batch {
            let _ = item.done.send(Ok(Vec::new()));
        }
        return;
    }
    // Statements were rewritten when they were queued; a follower forwards the batch.
    let route = Forwarding {
        forward: true,
        timeout: None,
        // Each client was checked when it queued; the batch travels as this node.
        creds: cluster.node_creds().cloned(),
    };
    // With -write-queue-tx the whole batch is one transaction (one failure undoes it all, as
    // in rqlite); otherwise each queued request is its own unit inside one log entry.
    let units: Vec<Request> = if cfg.tx {
        vec![Request {
            statements: batch
                .iter()
                .flat_map(|i| i.statements.iter().cloned())
                .collect(),
            transaction: true,
            db_timeout_ms: 0,
        }]
    } else {
        batch
            .iter()
            .filter(|i| !i.statements.is_empty())
            .map(|i| Request {
                statements: i.statements.clone(),
                transaction: false,
                db_timeout_ms: 0,
            })
            .collect()
    };
    let outcome = loop {
        match cluster.execute_each(units.clone(), &route).await {
            // Nothing was proposed: safe to try again once a leader exists or is reachable.
            Err(
                ClusterError::Store(StoreError::NotLeader { leader: None })
                | ClusterError::LeaderUnreachable { .. },
            ) if !stop.is_cancelled() => {
                stats.no_leader.inc();
                tracing::warn!("write queue: no leader, retrying in 1s");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            other => break other,
        }
    };
    let statements: u64 = batch.iter().map(|i| i.statements.len() as u64).sum();
    match outcome {
        Ok(out) => {
            stats.ok_batches.inc();
            stats.statements_tx.add(statements);
            let mut units = out.value.into_iter();
            // With -write-queue-tx: one result list for the whole batch, in statement order;
            // statements after a failure were rolled back with it and have no result.
            let mut shared = if cfg.tx {
                units.next().map(|o| o.results).unwrap_or_default()
            } else {
                Vec::new()
            }
            .into_iter();
            for item in batch {
                let results: Vec<StmtResult> = if cfg.tx {
                    (0..item.statements.len())
                        .map(|_| {
                            shared.next().unwrap_or(StmtResult {
                                outcome: Outcome::Error(
                                    "not applied: batch transaction rolled back".into(),
                                ),
                                time: 0.0,
                            })
                        })
                        .collect()
                } else if item.statements.is_empty() {
                    Vec::new()
                } else {
                    // Its own unit, including the rollback of a transaction it left open.
                    units.next().map(|o| o.results).unwrap_or_default()
                };
                let failed = results
                    .iter()
                    .filter(|r| matches!(r.outcome, Outcome::Error(_)))
                    .count();
                if failed > 0 {
                    stats.failed_statements.add(failed as u64);
                    tracing::warn!(failed, "queued statements failed");
                }
                let _ = item.done.send(Ok(results));
            }
        }
        Err(e) => {
            stats.failed_batches.inc();
            match &e {
                ClusterError::Store(StoreError::NotLeader { .. }) => stats.not_leader.inc(),
                ClusterError::Store(StoreError::OutcomeUnknown(_))
                | ClusterError::OutcomeUnknown { .. } => stats.leadership_lost.inc(),
                _ => stats.unknown_error.inc(),
            }
            stats.failed_statements.add(statements);
            tracing::warn!(error = %e, statements, "queued batch failed");
            for item in batch {
                let _ = item.done.send(Err(e.clone()));
            }
        }
    }
}
