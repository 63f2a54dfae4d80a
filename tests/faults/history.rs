//! The history of a run: every client operation with its invocation and completion times and
//! its outcome, plus the nemesis's events, written as JSON lines.
//!
//! Outcomes follow what the client can know:
//! - `ok`: the server said it happened (HTTP 200, no error);
//! - `fail`: it certainly did not happen (HTTP 503, a SQL error that rolled the request
//!   back, a refused connection: nothing was sent);
//! - `info`: unknown (HTTP 504 or other 5xx, a client timeout, a connection reset after the
//!   request was sent, an `error` such as a timeout in a 200 body). Checkers treat these as
//!   "may have happened", never as success or failure.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// One completed client operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub client: usize,
    pub workload: &'static str,
    /// What was asked: `transfer`, `read`, `write`, `cas`, `add`.
    pub f: &'static str,
    pub args: Value,
    /// The node index the request was sent to.
    pub node: usize,
    /// Nanoseconds since the run started.
    pub start: u64,
    pub end: u64,
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// What came back (e.g. rows read, whether a CAS matched).
    pub result: Value,
    pub error: Option<String>,
}

impl Op {
    pub fn is_write(&self) -> bool {
        !matches!(self.f, "read")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "type": "op", "id": self.id, "client": self.client, "workload": self.workload,
            "f": self.f, "args": self.args, "node": self.node + 1,
            "start_ms": self.start as f64 / 1e6, "end_ms": self.end as f64 / 1e6,
            "outcome": self.outcome.as_str(), "status": self.status,
            "result": self.result, "error": self.error,
        })
    }
}

/// A nemesis event (a fault injected or healed), or a note from the run.
#[derive(Clone, Debug)]
pub struct Event {
    pub t: u64,
    pub what: String,
}

/// The shared, append-only history of one run.
pub struct History {
    pub t0: Instant,
    ops: Mutex<Vec<Op>>,
    events: Mutex<Vec<Event>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl History {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Records a nemesis event (also printed, so a failing test's output shows the timeline).
    pub fn event(&self, what: impl Into<String>) {
        let e = Event {
            t: self.now(),
            what: what.into(),
        };
        println!("[{:>8.3}s] {}", e.t as f64 / 1e9, e.what);
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    pub fn ops(&self) -> Vec<Op> {
        let mut v = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|o| (o.start, o.id));
        v
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes every operation and event as one JSON object per line, in time order.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut lines: Vec<(u64, Value)> =
            self.ops().iter().map(|o| (o.start, o.to_json())).collect();
        for e in self.events() {
            lines.push((
                e.t,
                json!({"type": "nemesis", "t_ms": e.t as f64 / 1e6, "event": e.what}),
            ));
        }
        lines.sort_by_key(|(t, _)| *t);
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (_, v) in lines {
            writeln!(f, "{v}")?;
        }
        f.flush()
    }
}

/// The longest stretch in `[from, to]` (ns) with no successful write completing, and where
/// it ends; writes of every workload count.
pub fn longest_without_write(ops: &[Op], from: u64, to: u64) -> (Duration, u64) {
    let mut done: Vec<u64> = ops
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok)
        .map(|o| o.end)
        .filter(|&t| t >= from && t <= to)
        .collect();
    done.sort_unstable();
    let mut prev = from;
    let mut best = (0u64, from);
    for t in done.into_iter().chain(std::iter::once(to)) {
        if t - prev > best.0 {
            best = (t - prev, t);
        }
        prev = t;
    }
    (Duration::from_nanos(best.0), best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &'static str, end: u64, outcome: Outcome) -> Op {
        Op {
            id: 0,
            client: 0,
            workload: "t",
            f,
            args: Value::Null,
            node: 0,
            start: end.saturating_sub(1),
            end,
            outcome,
            status: None,
            result: Value::Null,
            error: None,
        }
    }

    #[test]
    fn longest_gap_counts_only_successful_writes() {
        let ops = vec![
            op("write", 10, Outcome::Ok),
            op("read", 50, Outcome::Ok),
            op("write", 60, Outcome::Info),
            op("add", 80, Outcome::Ok),
            op("transfer", 90, Outcome::Ok),
        ];
        let (d, end) = longest_without_write(&ops, 0, 100);
        assert_eq!(d, Duration::from_nanos(70));
        assert_eq!(end, 80);
    }
}
