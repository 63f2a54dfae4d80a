//! Change data capture: every committed row change, in commit order, to a webhook, once.
//!
//! Map: [`config`] reads `-cdc-config`; row changes are captured by SQLite's hooks on the
//! writer (`db::capture`) and handed over per log entry by the state machine through
//! [`store::ChangeSink`](crate::store::ChangeSink), which [`Cdc`] implements: its writer
//! thread encodes them ([`envelope`]) and appends them to the durable per-node [`queue`];
//! [`deliver`] runs on every node and sends only while it leads, recording its progress
//! through the Raft log so that a new leader resumes exactly where the old one stopped; the
//! HTTP layer serves `GET /cdc` from the queue ([`Cdc::read`]). Why it is built this way, and
//! what exactly is guaranteed, is `docs/design/cdc.md`.

pub mod config;
pub mod deliver;
pub mod envelope;
pub mod queue;

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use crate::db::capture::{CaptureRules, RowChange};
use crate::metrics::Metrics;
use config::CdcConfig;
use queue::{Queue, QueueState, Record};

/// Entries waiting between the database thread and the queue's writer at most; past it new
/// changes are dropped (and counted), so applying entries never waits for the disk.
const HANDOFF: usize = 16 * 1024;

enum Job {
    Changes {
        index: u64,
        ts_ms: u64,
        changes: Vec<RowChange>,
    },
    Flush(oneshot::Sender<()>),
    Prune(u64),
    Skip(u64),
    Fill(Vec<Record>, u64, u64, oneshot::Sender<()>),
}

/// What `/status` shows about delivery.
#[derive(Debug, Clone, Default)]
pub struct DeliveryStatus {
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    pub last_sent_at: Option<SystemTime>,
    /// The range being sent now, if any.
    pub sending: Option<(u64, u64)>,
}

/// One node's change data capture.
pub struct Cdc {
    node_id: String,
    queue: Arc<Queue>,
    jobs: SyncSender<Job>,
    /// The queue as last written (every append, prune and skip publishes it).
    state: watch::Receiver<QueueState>,
    shared: Arc<Shared>,
}

/// What the queue's writer thread shares with the rest (it must not hold the [`Cdc`]: the
/// thread ends, and closes the queue's file, when the last `Cdc` is dropped).
pub struct Shared {
    cfg: CdcConfig,
    metrics: Arc<Metrics>,
    delivery: Mutex<DeliveryStatus>,
    /// When a drop was last logged (one line per 10 s, not one per event).
    dropped_logged: Mutex<Option<Instant>>,
}

impl std::ops::Deref for Cdc {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Cdc {
    /// Opens `<data_dir>/cdc.redb` and starts the queue's writer thread.
    pub fn open(
        data_dir: &Path,
        cfg: CdcConfig,
        node_id: String,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let path = data_dir.join("cdc.redb");
        // A node restarted in the same process: the old writer thread closes the file as
        // soon as it sees its last sender go.
        let started = Instant::now();
        let queue = loop {
            match Queue::open(&path) {
                Ok(q) => break Arc::new(q),
                Err(e)
                    if e.contains("already open")
                        && started.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e),
            }
        };
        let initial = queue.state()?;
        let (state_tx, state) = watch::channel(initial);
        let (jobs, rx) = std::sync::mpsc::sync_channel(HANDOFF);
        let shared = Arc::new(Shared {
            cfg,
            metrics,
            delivery: Mutex::default(),
            dropped_logged: Mutex::default(),
        });
        shared.publish(&initial);
        let (s, q) = (shared.clone(), queue.clone());
        std::thread::Builder::new()
            .name("cdc-queue".into())
            .spawn(move || s.run_writer(&q, rx, state_tx))
            .map_err(|e| format!("cannot start the CDC queue's thread: {e}"))?;
        Ok(Arc::new(Self {
            node_id,
            queue,
            jobs,
            state,
            shared,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// What the writer connection's hooks capture.
    pub fn rules(&self) -> CaptureRules {
        CaptureRules {
            table_filter: self.cfg.table_filter.clone(),
            row_ids_only: self.cfg.row_ids_only,
        }
    }

    /// The queue as last written.
    pub fn queue_state(&self) -> QueueState {
        *self.state.borrow()
    }

    /// Waits until the queue changes (a new record, a prune).
    pub fn watch(&self) -> watch::Receiver<QueueState> {
        self.state.clone()
    }

    /// Records with index `from` or later (`GET /cdc`, the sender).
    pub async fn read(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, String> {
        let q = self.queue.clone();
        tokio::task::spawn_blocking(move || q.read(from, max, max_bytes))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The records of `from..=to` if this node holds all of them (a peer filling its gap
    /// asks), and the index they cover up to (`to`, unless 64 MiB cut them short); `None` if
    /// it does not hold them. `applied` is this node's applied index, read before the call:
    /// everything captured up to it is made durable first.
    pub async fn held(
        &self,
        from: u64,
        to: u64,
        applied: u64,
    ) -> Result<Option<(Vec<Record>, u64)>, String> {
        use crate::store::ChangeSink;
        self.flush().await;
        if from > to || !self.queue_state().holds(from, to, applied) {
            return Ok(None);
        }
        let (mut out, mut next, mut bytes) = (Vec::new(), from, 0usize);
        loop {
            let chunk: Vec<Record> = self
                .read(next, 1000, 8 << 20)
                .await?
                .into_iter()
                .take_while(|r| r.index <= to)
                .collect();
            let Some(last) = chunk.last().map(|r| r.index) else {
                return Ok(Some((out, to)));
            };
            bytes += chunk.iter().map(|r| r.json.len()).sum::<usize>();
            out.extend(chunk);
            if last >= to {
                return Ok(Some((out, to)));
            }
            next = last + 1;
            if bytes > 64 << 20 {
                return Ok(Some((out, last)));
            }
        }
    }

    /// Puts the records of `from..=through` a peer held into this node's gap, which closes
    /// up to `through` (see [`Queue::fill`]).
    pub async fn fill(&self, records: Vec<Record>, from: u64, through: u64) {
        let (tx, rx) = oneshot::channel();
        let jobs = self.jobs.clone();
        let sent = tokio::task::spawn_blocking(move || {
            jobs.send(Job::Fill(records, from, through, tx)).is_ok()
        })
        .await
        .unwrap_or(false);
        if sent {
            let _ = rx.await;
        }
    }

    /// Asks the writer to delete what is delivered up to `delivered` and not retained.
    pub fn prune(&self, delivered: u64) {
        let _ = self.jobs.try_send(Job::Prune(delivered));
    }
}

impl Shared {
    pub fn config(&self) -> &CdcConfig {
        &self.cfg
    }

    pub fn delivery_status(&self) -> DeliveryStatus {
        self.delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_delivery(&self, f: impl FnOnce(&mut DeliveryStatus)) {
        f(&mut self.delivery.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn publish(&self, s: &QueueState) {
        let c = &self.metrics.cdc;
        c.queue_entries.set(s.records);
        c.queue_bytes.set(s.bytes);
        c.enqueued_index.set(s.enqueued);
    }

    fn dropped(&self, events: usize, why: &str) {
        self.metrics.cdc.events_dropped.add(events as u64);
        let mut last = self
            .dropped_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::error!(
                events,
                dropped_total = self.metrics.cdc.events_dropped.get(),
                "CDC: row changes dropped: {why}; they will not be delivered"
            );
        }
    }

    /// The queue's writer: appends what the database thread hands over, a batch per fsync.
    fn run_writer(&self, queue: &Queue, rx: Receiver<Job>, state: watch::Sender<QueueState>) {
        let mut current = *state.borrow();
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < 4096 {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let flushes = self.write_batch(queue, jobs, current);
            if let Ok(s) = queue.state() {
                current = s;
                self.publish(&s);
                state.send_replace(s);
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    /// Writes one batch of jobs, `current` being the queue before it; returns the flushes to
    /// answer once the new state is published. Records and skips are written in the order
    /// they came: a skip must see the records of entries applied before the install, and not
    /// the records of entries applied after it (they would hide the gap it opens).
    fn write_batch(
        &self,
        queue: &Queue,
        jobs: Vec<Job>,
        current: QueueState,
    ) -> Vec<oneshot::Sender<()>> {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let mut prune = None;
        let mut fills = Vec::new();
        let mut failed = None;
        let mut written = 0usize;
        let mut append = |records: &mut Vec<Record>, failed: &mut Option<String>| {
            if !records.is_empty() {
                written += records.len();
                if let Err(e) = queue.append(records) {
                    *failed = Some(e);
                }
                records.clear();
            }
        };
        let limit = self
            .cfg
            .queue_max_bytes
            .saturating_add(self.cfg.retain.max_bytes);
        let mut pending_bytes = 0u64;
        for j in jobs {
            match j {
                Job::Changes {
                    index,
                    ts_ms,
                    changes,
                } => {
                    if current.bytes + pending_bytes > limit {
                        self.dropped(
                            changes.len(),
                            &format!(
                                "the queue holds {} bytes, over queue_max_bytes ({}); is the endpoint down?",
                                current.bytes, self.cfg.queue_max_bytes
                            ),
                        );
                        continue;
                    }
                    let json = envelope::payload_item(index, ts_ms, &changes);
                    pending_bytes += json.len() as u64 + 8;
                    records.push(Record {
                        index,
                        ts_ms,
                        events: u32::try_from(changes.len()).unwrap_or(u32::MAX),
                        json,
                    });
                }
                Job::Flush(done) => flushes.push(done),
                Job::Prune(d) => prune = Some(prune.map_or(d, |p: u64| p.max(d))),
                Job::Skip(i) => {
                    append(&mut records, &mut failed);
                    if let Err(e) = queue.skip_to(i) {
                        failed = Some(e);
                    }
                }
                Job::Fill(r, from, through, done) => fills.push((r, from, through, done)),
            }
        }
        append(&mut records, &mut failed);
        for (r, from, through, done) in fills {
            if let Err(e) = queue.fill(&r, from, through) {
                failed = Some(e);
            }
            flushes.push(done);
        }
        if let Some(d) = prune {
            let now = now_ms();
            let r = &self.cfg.retain;
            if let Err(e) = queue.prune(d, now, r.max_age.as_millis() as u64, r.max_bytes) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, entries = written, "CDC queue write failed");
            self.set_delivery(|d| {
                d.last_error = Some(e.clone());
                d.last_error_at = Some(SystemTime::now());
            });
        }
        flushes
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl crate::store::ChangeSink for Cdc {
    fn changes(&self, index: u64, ts_ms: u64, changes: Vec<RowChange>) {
        let n = changes.len();
        self.metrics.cdc.events_captured.add(n as u64);
        match self.jobs.try_send(Job::Changes {
            index,
            ts_ms,
            changes,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped(n, "the queue's writer is behind (its disk is slow)")
            }
            Err(TrySendError::Disconnected(_)) => self.dropped(n, "the queue's writer stopped"),
        }
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel();
        let jobs = self.jobs.clone();
        Box::pin(async move {
            // A full hand-off waits here, off the async runtime's threads.
            let sent = tokio::task::spawn_blocking(move || jobs.send(Job::Flush(tx)).is_ok())
                .await
                .unwrap_or(false);
            if sent {
                let _ = rx.await;
            }
        })
    }

    fn skipped_to(&self, index: u64) -> BoxFuture<'static, ()> {
        let jobs = self.jobs.clone();
        Box::pin(async move {
            // Must not be lost: waits if the hand-off is full (rare, and only at an install),
            // off the async runtime's threads.
            let _ = tokio::task::spawn_blocking(move || jobs.send(Job::Skip(index))).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            cfg: CdcConfig::parse_json(r#"{"endpoint": "http://127.0.0.1:9/hook"}"#).unwrap(),
            metrics: Arc::default(),
            delivery: Mutex::default(),
            dropped_logged: Mutex::default(),
        }
    }

    fn changes(index: u64) -> Job {
        Job::Changes {
            index,
            ts_ms: 1,
            changes: Vec::new(),
        }
    }

    #[test]
    fn a_skip_in_one_batch_with_later_records_keeps_its_gap() {
        // An install of a snapshot through 10 and the first entry applied after it reach
        // the writer together: the records before the install go in, the gap 4..=10 opens,
        // and the record of 11 does not hide it.
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.redb")).unwrap();
        let s = shared();
        let jobs = vec![changes(2), changes(3), Job::Skip(10), changes(11)];
        s.write_batch(&q, jobs, q.state().unwrap());
        let st = q.state().unwrap();
        assert_eq!((st.enqueued, st.gap, st.records), (11, Some((4, 10)), 3));
        let held: Vec<u64> = q
            .read(0, 100, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(held, [2, 3, 11]);
    }
}
