//! Watches leadership during a run: every ~50 ms it asks each member node for
//! `/status?key=store` (in parallel, 300 ms timeout) and records whether a leader existed
//! (a node that says it leads, named by a majority of members; see `cluster::leader_of`)
//! and the highest Raft term any node reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{http_client, leader_of};
use crate::workload::Shared;

#[derive(Clone, Debug)]
pub struct Sample {
    /// Nanoseconds since the run started (when the poll round began).
    pub t: u64,
    pub leader: Option<usize>,
    pub max_term: i64,
}

pub struct Monitor {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts polling the nodes `shared.targets` lists (ids are `index + 1`).
    pub fn start(shared: Arc<Shared>) -> Monitor {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let http = http_client(Duration::from_millis(300));
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = shared.history.now();
                let targets = shared
                    .targets
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let polls = targets.iter().map(|(i, base)| {
                    let http = http.clone();
                    async move {
                        let r = http
                            .get(format!("{base}/status?key=store"))
                            .send()
                            .await
                            .ok()?;
                        let v: serde_json::Value =
                            serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
                        Some((
                            *i,
                            v["raft"]["state"].as_str()?.to_string(),
                            v["leader"]["node_id"].as_str()?.to_string(),
                            v["raft"]["term"].as_i64()?,
                        ))
                    }
                });
                let answers: Vec<_> = futures_util::future::join_all(polls)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                let view: Vec<(usize, String, String)> = answers
                    .iter()
                    .map(|(i, s, l, _)| (*i, s.clone(), l.clone()))
                    .collect();
                let leader = leader_of(&view, targets.len(), |id| {
                    id.parse::<usize>().ok().map(|n| n - 1)
                });
                let max_term = answers.iter().map(|a| a.3).max().unwrap_or(0);
                s2.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                    t,
                    leader,
                    max_term,
                });
            }
        });
        Monitor {
            samples,
            stop,
            task,
        }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.clone()
    }
}

/// Leadership over `[from, to]` (ns): total time without a leader and the longest such
/// stretch.
#[derive(Clone, Debug, Default)]
pub struct Leaderless {
    pub total: Duration,
    pub longest: Duration,
}

pub fn leaderless(samples: &[Sample], from: u64, to: u64) -> Leaderless {
    let mut out = Leaderless::default();
    let mut run = 0u64;
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (s, e) = (a.t.max(from), b.t.min(to));
        if e <= s {
            continue;
        }
        if a.leader.is_none() {
            run += e - s;
            out.total += Duration::from_nanos(e - s);
            out.longest = out.longest.max(Duration::from_nanos(run));
        } else {
            run = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderless_time_adds_up_stretches() {
        let s = |t, l: Option<usize>| Sample {
            t,
            leader: l,
            max_term: 1,
        };
        let samples = vec![
            s(0, Some(0)),
            s(10, None),
            s(20, None),
            s(30, Some(1)),
            s(40, None),
            s(45, Some(1)),
            s(50, Some(1)),
        ];
        let l = leaderless(&samples, 0, 50);
        assert_eq!(l.total, Duration::from_nanos(25));
        assert_eq!(l.longest, Duration::from_nanos(20));
    }
}
