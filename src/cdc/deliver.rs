//! Sending queued events: only the leader sends, one batch at a time, in index order.
//!
//! Before a batch is sent its index range is recorded through the Raft log
//! (`CdcProgress { delivered, sending: Some((first, last)) }`); the request carries the range
//! as its idempotency key. Once the endpoint acknowledges it, the next record moves
//! `delivered` past it. A new leader reads the replicated progress after a barrier (every
//! earlier entry applied) and, if a range was being sent, sends exactly that range again with
//! the same key before anything newer. So a range is never sent under two keys, and an event
//! is sent again only when the endpoint may already have it (it acknowledged, but the answer
//! or the next record was lost), always under the same key.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::config::{CdcConfig, Endpoint, RetryPolicy};
use super::queue::Record;
use super::Cdc;
use crate::cluster::proto::{ClusterRequest, ClusterResponse};
use crate::cluster::Cluster;
use crate::store::{CdcProgress, Store};

/// The idempotency key's header (the IETF HTTPAPI draft's name, used by Stripe and others).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Where batches go.
pub enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Stdout,
}

impl Sink {
    /// The endpoint's client, built once at start: a certificate file that cannot be read
    /// stops the node there, naming the setting.
    pub fn build(cfg: &CdcConfig) -> Result<Self, String> {
        match &cfg.endpoint {
            Endpoint::Stdout => Ok(Sink::Stdout),
            Endpoint::Http(url) => {
                let mut builder = reqwest::Client::builder();
                // Plain http:// needs no TLS setup (and no system CA certificates).
                if url.starts_with("https://") {
                    let tls =
                        crate::tls::webhook_client_config(&cfg.tls).map_err(|e| e.to_string())?;
                    builder = builder.use_preconfigured_tls((*tls).clone());
                }
                let client = builder
                    .timeout(cfg.transmit_timeout)
                    .connect_timeout(cfg.transmit_timeout)
                    .build()
                    .map_err(|e| format!("CDC endpoint client: {e}"))?;
                Ok(Sink::Http {
                    client,
                    url: url.clone(),
                })
            }
        }
    }

    async fn send(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        match self {
            Sink::Stdout => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&body)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("stdout: {e}"))
            }
            Sink::Http { client, url } => {
                let r = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(IDEMPOTENCY_KEY, key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {}", describe(&e)))?;
                let status = r.status();
                if status.is_success() {
                    return Ok(());
                }
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(format!("POST {url}: {status} {}", text.trim()))
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The idempotency key of a range.
pub fn key(first: u64, last: u64) -> String {
    format!("{first}-{last}")
}

/// Runs for the life of the node: sends while it leads, and prunes what the cluster has
/// delivered.
pub async fn run(cdc: Arc<Cdc>, cluster: Arc<Cluster>, sink: Sink, stop: CancellationToken) {
    let store = cluster.store().clone();
    let pruning = tokio::spawn(run_pruning(cdc.clone(), cluster.clone(), stop.clone()));
    while !stop.is_cancelled() {
        if !store.is_leader() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        // Every entry committed before this leadership is applied here: the replicated
        // progress is the cluster's.
        if store.cdc_barrier(Duration::from_secs(5)).await.is_err() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            () = lead(&cdc, &store, &sink, &stop) => {}
        }
    }
    cdc.set_delivery(|d| d.sending = None);
    let _ = pruning.await;
}

/// Sends until this node stops leading.
async fn lead(cdc: &Cdc, store: &Store, sink: &Sink, stop: &CancellationToken) {
    // A snapshot this node installed as a follower may have opened a gap the queue's writer
    // has not written yet: the gap check below must see it. A leader installs none.
    crate::store::ChangeSink::flush(cdc).await;
    let cfg = cdc.config();
    let p = store.cdc_progress();
    let mut delivered = p.delivered;
    let mut resend = p.sending.filter(|(a, _)| *a > delivered);
    // What the log says now: a record is needed when delivery moved past it.
    let mut recorded = p;
    let mut watch = cdc.watch();
    loop {
        if !store.is_leader() || stop.is_cancelled() {
            return;
        }
        // Never past records this node lacks: the pruning loop fetches them from a peer.
        if let Some((a, b)) = cdc.queue_state().gap.filter(|(_, b)| *b > delivered) {
            cdc.set_delivery(|d| {
                d.last_error = Some(format!(
                    "waiting for the records of entries {a}..={b} from a peer (this node installed a snapshot instead of applying them)"
                ));
                d.last_error_at = Some(SystemTime::now());
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let range = match resend.take() {
            Some(r) => {
                // Recorded by an earlier leader: this node has applied it (the barrier), and
                // its records must be durable before they are read, or the range would go
                // out under the same key with fewer events.
                crate::store::ChangeSink::flush(cdc).await;
                r
            }
            None => {
                let Some(r) = next_batch(cdc, delivered, &mut watch).await else {
                    // Nothing to send: make sure the log knows how far delivery got.
                    let now = CdcProgress {
                        delivered,
                        sending: None,
                    };
                    if now != recorded {
                        match store.record_cdc_progress(now).await {
                            Ok(_) => recorded = now,
                            Err(_) => return,
                        }
                    }
                    continue;
                };
                let p = CdcProgress {
                    delivered,
                    sending: Some(r),
                };
                if store.record_cdc_progress(p).await.is_err() {
                    // Not recorded: not sent. A new leader (or this one, again) decides.
                    return;
                }
                recorded = p;
                r
            }
        };
        let records = match cdc
            .read(range.0, (range.1 - range.0 + 1) as usize, usize::MAX)
            .await
        {
            Ok(r) => r
                .into_iter()
                .take_while(|r| r.index <= range.1)
                .collect::<Vec<Record>>(),
            Err(e) => {
                note_error(cdc, e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                resend = Some(range);
                continue;
            }
        };
        cdc.set_delivery(|d| d.sending = Some(range));
        match send_with_retries(cdc, store, sink, range, &records, stop).await {
            Sent::Acknowledged => {
                let events: u64 = records.iter().map(|r| u64::from(r.events)).sum();
                cdc.metrics.cdc.batches_sent.inc();
                cdc.metrics.cdc.events_sent.add(events);
                cdc.set_delivery(|d| {
                    d.last_sent_at = Some(SystemTime::now());
                    d.sending = None;
                });
            }
            Sent::GaveUp => {
                cdc.metrics.cdc.batches_dropped.inc();
                tracing::error!(
                    first = range.0,
                    last = range.1,
                    retries = ?cfg.transmit_max_retries,
                    "CDC: batch given up after transmit_max_retries; its events are not delivered"
                );
                cdc.set_delivery(|d| d.sending = None);
            }
            Sent::NotLeader => {
                cdc.set_delivery(|d| d.sending = None);
                return;
            }
        }
        // Not pruned here: until the next record replicates it, a new leader (or this node
        // after a restart) may have to send this range again, from its queue. Every node
        // prunes by the replicated mark (`run_pruning`).
        delivered = range.1;
    }
}

/// The next range to send after `delivered`: waits for a first record (up to the high-water
/// mark interval: `None` then), then up to `max_batch_delay` for a full batch.
async fn next_batch(
    cdc: &Cdc,
    delivered: u64,
    watch: &mut tokio::sync::watch::Receiver<super::queue::QueueState>,
) -> Option<(u64, u64)> {
    let cfg = cdc.config();
    let first_deadline = tokio::time::Instant::now() + cfg.high_watermark_interval;
    let mut batch_deadline: Option<tokio::time::Instant> = None;
    loop {
        watch.borrow_and_update();
        let records = cdc
            .read(delivered + 1, cfg.max_batch_size, usize::MAX)
            .await
            .ok()?;
        if records.len() >= cfg.max_batch_size {
            return Some((records[0].index, records[records.len() - 1].index));
        }
        let now = tokio::time::Instant::now();
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            let deadline = *batch_deadline.get_or_insert(now + cfg.max_batch_delay);
            if now >= deadline {
                return Some((first.index, last.index));
            }
            let _ = tokio::time::timeout_at(deadline, watch.changed()).await;
        } else {
            if now >= first_deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(first_deadline, watch.changed()).await;
        }
    }
}

enum Sent {
    Acknowledged,
    GaveUp,
    NotLeader,
}

async fn send_with_retries(
    cdc: &Cdc,
    store: &Store,
    sink: &Sink,
    range: (u64, u64),
    records: &[Record],
    stop: &CancellationToken,
) -> Sent {
    let cfg = cdc.config();
    let key = key(range.0, range.1);
    let mut backoff = cfg.transmit_min_backoff;
    let mut attempt: u64 = 0;
    loop {
        let body = super::envelope::envelope(
            &cfg.service_id,
            cdc.node_id(),
            records.iter().map(|r| r.json.as_slice()),
        );
        match sink.send(&key, body).await {
            Ok(()) => return Sent::Acknowledged,
            Err(e) => {
                cdc.metrics.cdc.send_failures.inc();
                if attempt == 0 || attempt % 10 == 0 {
                    tracing::warn!(error = %e, key = %key, attempt, "CDC: sending failed; retrying");
                }
                note_error(cdc, e);
            }
        }
        if cfg.transmit_max_retries.is_some_and(|max| attempt >= max) {
            return Sent::GaveUp;
        }
        attempt += 1;
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if !store.is_leader() {
                return Sent::NotLeader;
            }
            tokio::select! {
                _ = stop.cancelled() => return Sent::NotLeader,
                _ = tokio::time::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))) => {}
            }
        }
        if !store.is_leader() {
            return Sent::NotLeader;
        }
        if cfg.transmit_retry_policy == RetryPolicy::Exponential {
            backoff = (backoff * 2).min(cfg.transmit_max_backoff);
        }
    }
}

fn note_error(cdc: &Cdc, e: String) {
    cdc.set_delivery(|d| {
        d.last_error = Some(e);
        d.last_error_at = Some(SystemTime::now());
    });
}

/// Fills the gap `(from, to)` from a peer. Records above `delivered` are needed for
/// delivery; those below only for `GET /cdc` readers while `retain` keeps them: they are asked
/// for first, and given up (410 for readers) if no peer still holds them.
async fn fill_gap(cdc: &Cdc, cluster: &Cluster, (from, to): (u64, u64), delivered: u64) {
    let r = &cdc.config().retain;
    let needed = from.max(delivered + 1);
    let mut starts = Vec::new();
    if (!r.max_age.is_zero() || r.max_bytes > 0) && from < needed {
        starts.push(from);
    }
    starts.push(needed);
    for start in starts {
        if start > to {
            cdc.fill(Vec::new(), start, to).await;
            return;
        }
        if ask_peers(cdc, cluster, start, to).await {
            return;
        }
    }
}

/// Asks each peer for the records of `from..=to` until one holds them all; fills them in.
async fn ask_peers(cdc: &Cdc, cluster: &Cluster, from: u64, to: u64) -> bool {
    let me = cluster.store().me().id.clone();
    for (peer, _) in cluster.store().members() {
        if peer.id == me {
            continue;
        }
        let req = ClusterRequest::CdcRecords { from, to };
        match cluster
            .call(&peer.raft_addr, &req, Duration::from_secs(30), true)
            .await
        {
            Ok(ClusterResponse::CdcRecords(Some((records, through)))) => {
                let records: Vec<Record> = records
                    .into_iter()
                    .map(|(index, ts_ms, events, json)| Record {
                        index,
                        ts_ms,
                        events,
                        json: json.into_vec(),
                    })
                    .collect();
                // A peer's answer may stop short of `to` (its size bound): the rest next round.
                tracing::info!(
                    from,
                    through,
                    records = records.len(),
                    peer = %peer.id,
                    "CDC: filled the queue's gap from a peer"
                );
                cdc.fill(records, from, through).await;
                return true;
            }
            Ok(_) | Err(_) => continue,
        }
    }
    false
}

/// Every node deletes what the cluster has delivered (and `retain` lets go), as the
/// replicated progress moves, and fills a gap in its queue from a peer.
async fn run_pruning(cdc: Arc<Cdc>, cluster: Arc<Cluster>, stop: CancellationToken) {
    let store = cluster.store().clone();
    let every = cdc.config().high_watermark_interval;
    let mut last = None;
    loop {
        let d = store.cdc_progress().delivered;
        if let Some(gap) = cdc.queue_state().gap {
            fill_gap(&cdc, &cluster, gap, d).await;
        }
        cdc.metrics.cdc.high_watermark.set(d);
        // With retention, age moves on even when delivery does not.
        if last != Some(d) || !cdc.config().retain.max_age.is_zero() {
            cdc.prune(d);
            last = Some(d);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
