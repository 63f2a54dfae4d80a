//! The workloads (bank, register, set): their tables, their client loops, and their
//! checkers. Clients send each operation to a random member node (any node accepts any
//! request; followers forward), record it in the shared history, and stop at the run's
//! deadline, after their operation budget, or when told to.
//!
//! Checkers are pure functions of the history and the final, converged table contents, so
//! they are unit-tested below with planted anomalies.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{self, rows, rows_affected, Reply};
use crate::history::{History, Op, Outcome};
use crate::linear::{self, RegOp};

/// What every client shares: the history, the nodes to talk to, when to stop.
pub struct Shared {
    pub history: History,
    /// (node index, base URL) of the member nodes clients may use.
    pub targets: RwLock<Vec<(usize, String)>>,
    pub stop: AtomicBool,
    pub http: reqwest::Client,
    pub deadline: RwLock<Instant>,
    pub max_ops: usize,
    next_value: AtomicI64,
}

impl Shared {
    pub fn new(targets: Vec<(usize, String)>, op_timeout: Duration, max_ops: usize) -> Self {
        Self {
            history: History::new(),
            targets: RwLock::new(targets),
            stop: AtomicBool::new(false),
            http: crate::cluster::http_client(op_timeout),
            deadline: RwLock::new(Instant::now() + Duration::from_secs(3600)),
            max_ops,
            next_value: AtomicI64::new(1),
        }
    }

    fn pick(&self) -> (usize, String) {
        let t = self.targets.read().unwrap_or_else(|e| e.into_inner());
        t[fastrand::usize(..t.len())].clone()
    }

    fn running(&self, done: usize) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && done < self.max_ops
            && Instant::now() < *self.deadline.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A value never used before in this run.
    fn fresh(&self) -> i64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    pub fn set_targets(&self, t: Vec<(usize, String)>) {
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        client: usize,
        workload: &'static str,
        f: &'static str,
        args: Value,
        node: usize,
        start: u64,
        reply: &Reply,
        result: Value,
    ) {
        self.history.record(Op {
            id: self.history.next_id(),
            client,
            workload,
            f,
            args,
            node,
            start,
            end: self.history.now(),
            outcome: reply.outcome,
            status: reply.status,
            result,
            error: reply.error.clone(),
        });
    }
}

/// Think time between a client's operations.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(2..20))).await;
}

/// A checker's verdict on one workload.
#[derive(Debug, Clone)]
pub struct Check {
    pub workload: &'static str,
    /// `Some(true)` valid, `Some(false)` invalid, `None` unknown (checker gave up).
    pub valid: Option<bool>,
    pub summary: String,
    pub problems: Vec<String>,
}

impl Check {
    fn new(workload: &'static str, problems: Vec<String>, summary: String) -> Self {
        Check {
            workload,
            valid: Some(problems.is_empty()),
            summary,
            problems,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.valid {
            Some(true) => "valid",
            Some(false) => "INVALID",
            None => "unknown",
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(i64::MIN)
}

// ---------------------------------------------------------------------------------------
// bank

pub const ACCOUNTS: i64 = 5;
pub const INITIAL: i64 = 100;

pub fn bank_setup() -> Value {
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {INITIAL})")).collect();
    json!([
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS transfers (id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL)",
        format!("INSERT OR IGNORE INTO accounts(id, balance) VALUES {}", values.join(", ")),
    ])
}

/// The transfer as one transaction: the log row is inserted only if the source has the
/// funds, and both balance updates are guarded by that row (and the debit by the balance),
/// so all three happen or none does.
pub fn transfer_stmts(id: i64, from: i64, to: i64, amount: i64) -> Value {
    json!([
        ["INSERT INTO transfers(id, src, dst, amount) SELECT ?, ?, ?, ? WHERE (SELECT balance FROM accounts WHERE id = ?) >= ?",
         id, from, to, amount, from, amount],
        ["UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ? AND EXISTS (SELECT 1 FROM transfers WHERE id = ?)",
         amount, from, amount, id],
        ["UPDATE accounts SET balance = balance + ? WHERE id = ? AND EXISTS (SELECT 1 FROM transfers WHERE id = ?)",
         amount, to, id],
    ])
}

pub async fn bank_client(s: &Shared, client: usize) {
    let mut done = 0;
    while s.running(done) {
        done += 1;
        let (node, base) = s.pick();
        let start = s.history.now();
        if fastrand::u8(..4) > 0 {
            let id = s.fresh();
            let from = fastrand::i64(0..ACCOUNTS);
            let to = (from + fastrand::i64(1..ACCOUNTS)) % ACCOUNTS;
            let amount = fastrand::i64(1..=30);
            let r = client::execute(
                &s.http,
                &base,
                "?transaction",
                &transfer_stmts(id, from, to, amount),
            )
            .await;
            let result = if r.outcome == Outcome::Ok {
                let ra = rows_affected(&r);
                match ra.as_slice() {
                    [1, 1, 1] => json!({"applied": true}),
                    [0, 0, 0] => json!({"applied": false}),
                    _ => json!({"applied": null, "rows_affected": ra}),
                }
            } else {
                Value::Null
            };
            let args = json!({"id": id, "from": from, "to": to, "amount": amount});
            s.record(client, "bank", "transfer", args, node, start, &r, result);
        } else {
            let level = ["none", "linearizable", "strong"][fastrand::usize(..3)];
            let r = client::query(
                &s.http,
                &base,
                level,
                &json!(["SELECT id, balance FROM accounts ORDER BY id"]),
            )
            .await;
            let result = if r.outcome == Outcome::Ok {
                json!({"balances": rows(&r, 0)})
            } else {
                Value::Null
            };
            s.record(
                client,
                "bank",
                "read",
                json!({"level": level}),
                node,
                start,
                &r,
                result,
            );
        }
        pause().await;
    }
}

/// The tables' contents at the end, as read from the converged cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct BankFinal {
    /// (id, balance)
    pub accounts: Vec<(i64, i64)>,
    /// (id, src, dst, amount)
    pub transfers: Vec<(i64, i64, i64, i64)>,
}

pub fn check_bank(ops: &[Op], fin: &BankFinal) -> Check {
    let total = ACCOUNTS * INITIAL;
    let mut problems = Vec::new();
    // Balances at the end.
    let sum: i64 = fin.accounts.iter().map(|a| a.1).sum();
    if sum != total {
        problems.push(format!(
            "final total is {sum}, not {total}: {:?}",
            fin.accounts
        ));
    }
    if fin.accounts.len() as i64 != ACCOUNTS {
        problems.push(format!(
            "{} accounts at the end, not {ACCOUNTS}",
            fin.accounts.len()
        ));
    }
    for (id, b) in &fin.accounts {
        if *b < 0 {
            problems.push(format!("account {id} ends negative: {b}"));
        }
    }
    // Balances agree with the transfer log.
    let mut expect: BTreeMap<i64, i64> = (0..ACCOUNTS).map(|i| (i, INITIAL)).collect();
    for (_, src, dst, amount) in &fin.transfers {
        *expect.entry(*src).or_default() -= amount;
        *expect.entry(*dst).or_default() += amount;
    }
    let have: BTreeMap<i64, i64> = fin.accounts.iter().copied().collect();
    if have != expect {
        problems.push(format!(
            "balances {have:?} disagree with the transfer log, which implies {expect:?}"
        ));
    }
    // Acknowledged transfers against the log.
    let logged: HashMap<i64, (i64, i64, i64)> = fin
        .transfers
        .iter()
        .map(|&(id, s, d, a)| (id, (s, d, a)))
        .collect();
    let transfers: Vec<&Op> = ops.iter().filter(|o| o.f == "transfer").collect();
    let by_id: HashMap<i64, &Op> = transfers.iter().map(|o| (int(&o.args["id"]), *o)).collect();
    let (mut applied, mut refused, mut failed, mut info, mut info_applied) = (0, 0, 0, 0, 0);
    for o in &transfers {
        let id = int(&o.args["id"]);
        let in_log = logged.get(&id);
        if let Some(&(s, d, a)) = in_log {
            let want = (
                int(&o.args["from"]),
                int(&o.args["to"]),
                int(&o.args["amount"]),
            );
            if (s, d, a) != want {
                problems.push(format!(
                    "transfer {id} logged as {:?}, requested {want:?}",
                    (s, d, a)
                ));
            }
        }
        match (o.outcome, o.result["applied"].as_bool()) {
            (Outcome::Ok, Some(true)) => {
                applied += 1;
                if in_log.is_none() {
                    problems.push(format!(
                        "lost transfer: {id} was acknowledged as applied but is not in the log ({})",
                        o.to_json()
                    ));
                }
            }
            (Outcome::Ok, Some(false)) => {
                refused += 1;
                if in_log.is_some() {
                    problems.push(format!(
                        "phantom transfer: {id} was acknowledged as not applied (no funds) but is in the log ({})",
                        o.to_json()
                    ));
                }
            }
            (Outcome::Ok, None) => problems.push(format!(
                "transfer {id} applied partially (rows_affected {})",
                o.result["rows_affected"]
            )),
            (Outcome::Fail, _) => {
                failed += 1;
                if in_log.is_some() {
                    problems.push(format!(
                        "phantom transfer: {id} failed definitely but is in the log ({})",
                        o.to_json()
                    ));
                }
            }
            (Outcome::Info, _) => {
                info += 1;
                if in_log.is_some() {
                    info_applied += 1;
                }
            }
        }
    }
    for id in logged.keys() {
        if !by_id.contains_key(id) {
            problems.push(format!(
                "phantom transfer: {id} is in the log but was never requested"
            ));
        }
    }
    // Every read saw a conserved total and no negative balance.
    let (mut reads, mut bad_reads) = (0, 0);
    for o in ops
        .iter()
        .filter(|o| o.f == "read" && o.outcome == Outcome::Ok)
    {
        reads += 1;
        let rows = o.result["balances"].as_array().cloned().unwrap_or_default();
        let bal: Vec<i64> = rows.iter().map(|r| int(&r[1])).collect();
        let s: i64 = bal.iter().sum();
        if s != total || bal.iter().any(|b| *b < 0) || bal.len() as i64 != ACCOUNTS {
            bad_reads += 1;
            if bad_reads <= 5 {
                problems.push(format!(
                    "read at level={} on node {} saw total {s} / balances {bal:?} ({})",
                    o.args["level"],
                    o.node + 1,
                    o.to_json()
                ));
            }
        }
    }
    if bad_reads > 5 {
        problems.push(format!("... {bad_reads} bad reads in all"));
    }
    let summary = format!(
        "{} transfers: {applied} applied, {refused} refused (funds), {failed} failed, {info} unknown ({info_applied} of them applied); {reads} reads, {bad_reads} bad; final total {sum}",
        transfers.len()
    );
    Check::new("bank", problems, summary)
}

// ---------------------------------------------------------------------------------------
// register

pub fn register_setup(keys: usize) -> Value {
    let values: Vec<String> = (0..keys).map(|k| format!("({k}, 0)")).collect();
    json!([
        "CREATE TABLE IF NOT EXISTS registers (k INTEGER PRIMARY KEY, v INTEGER)",
        format!(
            "INSERT OR IGNORE INTO registers(k, v) VALUES {}",
            values.join(", ")
        ),
    ])
}

pub async fn register_client(s: &Shared, client: usize, keys: usize) {
    let mut done = 0;
    let mut last_seen: HashMap<i64, i64> = HashMap::new();
    while s.running(done) {
        done += 1;
        let (node, base) = s.pick();
        let k = fastrand::usize(..keys) as i64;
        let start = s.history.now();
        match fastrand::u8(..4) {
            0 | 1 => {
                let level = if fastrand::bool() {
                    "linearizable"
                } else {
                    "strong"
                };
                let r = client::query(
                    &s.http,
                    &base,
                    level,
                    &json!([["SELECT v FROM registers WHERE k = ?", k]]),
                )
                .await;
                let result = if r.outcome == Outcome::Ok {
                    let v = rows(&r, 0).first().map(|row| row[0].clone());
                    if let Some(v) = v.as_ref().and_then(Value::as_i64) {
                        last_seen.insert(k, v);
                    }
                    json!({"v": v})
                } else {
                    Value::Null
                };
                let args = json!({"k": k, "level": level});
                s.record(client, "register", "read", args, node, start, &r, result);
            }
            2 => {
                let v = s.fresh();
                let r = client::execute(
                    &s.http,
                    &base,
                    "",
                    &json!([["UPDATE registers SET v = ? WHERE k = ?", v, k]]),
                )
                .await;
                let result = if r.outcome == Outcome::Ok {
                    json!({"rows_affected": rows_affected(&r).first().copied().unwrap_or(0)})
                } else {
                    Value::Null
                };
                let args = json!({"k": k, "v": v});
                s.record(client, "register", "write", args, node, start, &r, result);
            }
            _ => {
                let from = last_seen.get(&k).copied().unwrap_or(0);
                let to = s.fresh();
                let r = client::execute(
                    &s.http,
                    &base,
                    "",
                    &json!([[
                        "UPDATE registers SET v = ? WHERE k = ? AND v = ?",
                        to,
                        k,
                        from
                    ]]),
                )
                .await;
                let result = if r.outcome == Outcome::Ok {
                    let n = rows_affected(&r).first().copied().unwrap_or(0);
                    if n == 1 {
                        last_seen.insert(k, to);
                    }
                    json!({"ok": n == 1})
                } else {
                    Value::Null
                };
                let args = json!({"k": k, "from": from, "to": to});
                s.record(client, "register", "cas", args, node, start, &r, result);
            }
        }
        pause().await;
    }
}

/// The register history of each key, as checker entries.
pub fn register_entries(ops: &[Op]) -> BTreeMap<i64, Vec<linear::Entry>> {
    let mut by_key: BTreeMap<i64, Vec<linear::Entry>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.workload == "register") {
        if o.outcome == Outcome::Fail {
            continue;
        }
        let known = o.outcome == Outcome::Ok;
        let op = match o.f {
            "read" if known => RegOp::Read {
                seen: o.result["v"].as_i64(),
            },
            "read" => continue,
            "write" => RegOp::Write {
                value: int(&o.args["v"]),
            },
            _ => RegOp::Cas {
                from: int(&o.args["from"]),
                to: int(&o.args["to"]),
                ok: if known {
                    o.result["ok"].as_bool()
                } else {
                    None
                },
            },
        };
        by_key
            .entry(int(&o.args["k"]))
            .or_default()
            .push(linear::Entry {
                op,
                call: o.start,
                ret: known.then_some(o.end),
                id: o.id,
            });
    }
    by_key
}

/// Checks each key's history for linearizability; `final_values` (read after everything,
/// from the converged cluster) is appended as one last read per key.
pub fn check_register(ops: &[Op], final_values: &BTreeMap<i64, Option<i64>>, budget: u64) -> Check {
    let mut by_key = register_entries(ops);
    let end = ops.iter().map(|o| o.end).max().unwrap_or(0) + 1;
    for (k, v) in final_values {
        by_key.entry(*k).or_default().push(linear::Entry {
            op: RegOp::Read { seen: *v },
            call: end,
            ret: Some(end + 1),
            id: 0,
        });
    }
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let mut anomalies = 0;
    for o in ops
        .iter()
        .filter(|o| o.workload == "register" && o.f == "write" && o.outcome == Outcome::Ok)
    {
        if o.result["rows_affected"].as_i64() != Some(1) {
            anomalies += 1;
            problems.push(format!("write matched no row: {}", o.to_json()));
        }
    }
    let mut counted = 0;
    for (k, entries) in &by_key {
        counted += entries.len();
        match linear::check(entries, Some(0), budget) {
            linear::Verdict::Linearizable => {}
            linear::Verdict::NotLinearizable {
                stuck,
                prefix,
                value,
            } => {
                let op = ops.iter().find(|o| o.id == stuck.id);
                let shown = op.map_or_else(
                    || format!("the final read (id 0) of {:?}", stuck.op),
                    |o| o.to_json().to_string(),
                );
                let tail: Vec<u64> = prefix.iter().rev().take(8).rev().copied().collect();
                problems.push(format!(
                    "key {k}: not linearizable: no order explains {shown}; the longest linearizable prefix has {} ops (last ids {tail:?}) leaving the register at {value:?}",
                    prefix.len()
                ));
            }
            linear::Verdict::Unknown { steps } => unknown.push(format!("key {k} ({steps} steps)")),
        }
    }
    let ok = ops
        .iter()
        .filter(|o| o.workload == "register" && o.outcome == Outcome::Ok)
        .count();
    let info = ops
        .iter()
        .filter(|o| o.workload == "register" && o.outcome == Outcome::Info)
        .count();
    let summary = format!(
        "{} keys, {counted} ops checked ({ok} ok, {info} unknown outcome){}{}",
        by_key.len(),
        if anomalies > 0 {
            ", write anomalies"
        } else {
            ""
        },
        if unknown.is_empty() {
            String::new()
        } else {
            format!("; checker gave up on {}", unknown.join(", "))
        }
    );
    let mut c = Check::new("register", problems, summary);
    if c.valid == Some(true) && !unknown.is_empty() {
        c.valid = None;
    }
    c
}

// ---------------------------------------------------------------------------------------
// set

pub fn set_setup() -> Value {
    json!(["CREATE TABLE IF NOT EXISTS set_items (v INTEGER PRIMARY KEY)"])
}

pub async fn set_client(s: &Shared, client: usize) {
    let mut done = 0;
    while s.running(done) {
        done += 1;
        let (node, base) = s.pick();
        set_add(s, &s.http, node, &base, client).await;
        pause().await;
    }
}

/// One set add through node `node` (at `base`) by client `client` (a set client, or a probe),
/// recorded in the history; returns whether it succeeded.
pub async fn set_add(
    s: &Shared,
    http: &reqwest::Client,
    node: usize,
    base: &str,
    client: usize,
) -> bool {
    let v = s.fresh();
    let start = s.history.now();
    let r = client::execute(
        http,
        base,
        "",
        &json!([["INSERT INTO set_items(v) VALUES (?)", v]]),
    )
    .await;
    s.record(
        client,
        "set",
        "add",
        json!({"v": v}),
        node,
        start,
        &r,
        Value::Null,
    );
    r.outcome == Outcome::Ok
}

/// The availability prober: every 100 ms, one set add to the next member in turn (1 s
/// timeout, each in its own task so a hung node does not delay the next probe). Its writes
/// are checked like any other set add, and they make "the longest time without a
/// successful write" measure the cluster rather than clients stuck on an unreachable node.
/// Returns when the run stops, after every probe has completed.
pub async fn prober(s: std::sync::Arc<Shared>) {
    let http = crate::cluster::http_client(Duration::from_secs(1));
    let mut inflight = tokio::task::JoinSet::new();
    let mut k = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while s.running(0) {
        tick.tick().await;
        let target = {
            let t = s.targets.read().unwrap_or_else(|e| e.into_inner());
            t[k % t.len()].clone()
        };
        k += 1;
        let (s, http) = (s.clone(), http.clone());
        inflight.spawn(async move {
            set_add(&s, &http, target.0, &target.1, 1001).await;
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

pub fn check_set(ops: &[Op], present: &[i64]) -> Check {
    let present: std::collections::HashSet<i64> = present.iter().copied().collect();
    let adds: HashMap<i64, &Op> = ops
        .iter()
        .filter(|o| o.f == "add")
        .map(|o| (int(&o.args["v"]), o))
        .collect();
    let mut problems = Vec::new();
    let (mut ok, mut lost, mut info, mut info_present, mut failed) = (0, 0, 0, 0, 0);
    for (v, o) in &adds {
        match o.outcome {
            Outcome::Ok => {
                ok += 1;
                if !present.contains(v) {
                    lost += 1;
                    if lost <= 5 {
                        problems.push(format!(
                            "lost: {v} was acknowledged but is missing ({})",
                            o.to_json()
                        ));
                    }
                }
            }
            Outcome::Fail => {
                failed += 1;
                if present.contains(v) {
                    problems.push(format!(
                        "phantom: {v} failed definitely but is present ({})",
                        o.to_json()
                    ));
                }
            }
            Outcome::Info => {
                info += 1;
                if present.contains(v) {
                    info_present += 1;
                }
            }
        }
    }
    if lost > 5 {
        problems.push(format!("... {lost} lost in all"));
    }
    for v in &present {
        if !adds.contains_key(v) {
            problems.push(format!("phantom: {v} is present but was never added"));
        }
    }
    let summary = format!(
        "{} adds: {ok} ok ({lost} lost), {failed} failed, {info} unknown ({info_present} present); {} present at the end",
        adds.len(),
        present.len()
    );
    Check::new("set", problems, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, f: &'static str, args: Value, outcome: Outcome, result: Value) -> Op {
        Op {
            id,
            client: 0,
            workload: if f == "add" { "set" } else { "bank" },
            f,
            args,
            node: 0,
            start: id * 10,
            end: id * 10 + 5,
            outcome,
            status: Some(200),
            result,
            error: None,
        }
    }

    fn transfer(id: i64, from: i64, to: i64, amount: i64, outcome: Outcome, applied: Value) -> Op {
        op(
            id as u64,
            "transfer",
            json!({"id": id, "from": from, "to": to, "amount": amount}),
            outcome,
            json!({ "applied": applied }),
        )
    }

    fn accounts(b: [i64; 5]) -> Vec<(i64, i64)> {
        b.iter().enumerate().map(|(i, &b)| (i as i64, b)).collect()
    }

    #[test]
    fn bank_accepts_a_consistent_run() {
        let ops = vec![
            transfer(1, 0, 1, 10, Outcome::Ok, json!(true)),
            transfer(2, 1, 2, 500, Outcome::Ok, json!(false)),
            transfer(3, 2, 3, 5, Outcome::Info, Value::Null),
            transfer(4, 3, 4, 7, Outcome::Fail, Value::Null),
            transfer(5, 4, 0, 1, Outcome::Info, Value::Null),
        ];
        let fin = BankFinal {
            accounts: accounts([90, 110, 95, 105, 100]),
            transfers: vec![(1, 0, 1, 10), (3, 2, 3, 5)],
        };
        let c = check_bank(&ops, &fin);
        assert_eq!(c.valid, Some(true), "{c:?}");
    }

    #[test]
    fn bank_rejects_a_lost_transfer() {
        let ops = vec![transfer(1, 0, 1, 10, Outcome::Ok, json!(true))];
        let fin = BankFinal {
            accounts: accounts([100; 5]),
            transfers: vec![],
        };
        let c = check_bank(&ops, &fin);
        assert!(
            c.problems.iter().any(|p| p.contains("lost transfer")),
            "{c:?}"
        );
    }

    #[test]
    fn bank_rejects_a_phantom_transfer() {
        let ops = vec![transfer(1, 0, 1, 10, Outcome::Fail, Value::Null)];
        let fin = BankFinal {
            accounts: accounts([90, 110, 100, 100, 100]),
            transfers: vec![(1, 0, 1, 10)],
        };
        let c = check_bank(&ops, &fin);
        assert!(c.problems.iter().any(|p| p.contains("phantom")), "{c:?}");
        let never = BankFinal {
            accounts: accounts([90, 110, 100, 100, 100]),
            transfers: vec![(9, 0, 1, 10)],
        };
        assert!(check_bank(&[], &never)
            .problems
            .iter()
            .any(|p| p.contains("never requested")));
    }

    #[test]
    fn bank_rejects_money_created_or_negative_balances() {
        let fin = BankFinal {
            accounts: accounts([100, 100, 100, 100, 120]),
            transfers: vec![],
        };
        let c = check_bank(&[], &fin);
        assert_eq!(c.valid, Some(false));
        let neg = BankFinal {
            accounts: accounts([-10, 110, 100, 100, 100]),
            transfers: vec![(1, 0, 1, 10)],
        };
        let ops = vec![transfer(1, 0, 1, 10, Outcome::Info, Value::Null)];
        let c = check_bank(&ops, &neg);
        assert!(c.problems.iter().any(|p| p.contains("negative")), "{c:?}");
        // A read that saw a half-applied transfer.
        let read = op(
            2,
            "read",
            json!({"level": "none"}),
            Outcome::Ok,
            json!({"balances": [[0, 90], [1, 100], [2, 100], [3, 100], [4, 100]]}),
        );
        let fin = BankFinal {
            accounts: accounts([100; 5]),
            transfers: vec![],
        };
        assert!(check_bank(&[read], &fin)
            .problems
            .iter()
            .any(|p| p.contains("saw total 490")));
    }

    #[test]
    fn set_accepts_unknown_outcomes_either_way() {
        let ops = vec![
            op(1, "add", json!({"v": 1}), Outcome::Ok, Value::Null),
            op(2, "add", json!({"v": 2}), Outcome::Info, Value::Null),
            op(3, "add", json!({"v": 3}), Outcome::Info, Value::Null),
            op(4, "add", json!({"v": 4}), Outcome::Fail, Value::Null),
        ];
        let c = check_set(&ops, &[1, 3]);
        assert_eq!(c.valid, Some(true), "{c:?}");
    }

    #[test]
    fn set_rejects_lost_and_phantom_elements() {
        let ops = vec![
            op(1, "add", json!({"v": 1}), Outcome::Ok, Value::Null),
            op(2, "add", json!({"v": 2}), Outcome::Fail, Value::Null),
        ];
        let c = check_set(&ops, &[2, 7]);
        assert!(c.problems.iter().any(|p| p.starts_with("lost: 1")), "{c:?}");
        assert!(
            c.problems.iter().any(|p| p.starts_with("phantom: 2")),
            "{c:?}"
        );
        assert!(
            c.problems.iter().any(|p| p.starts_with("phantom: 7")),
            "{c:?}"
        );
    }

    #[test]
    fn register_check_uses_the_final_state() {
        let w = Op {
            id: 1,
            client: 0,
            workload: "register",
            f: "write",
            args: json!({"k": 0, "v": 5}),
            node: 0,
            start: 0,
            end: 10,
            outcome: Outcome::Ok,
            status: Some(200),
            result: json!({"rows_affected": 1}),
            error: None,
        };
        let fin_ok: BTreeMap<i64, Option<i64>> = [(0, Some(5))].into();
        assert_eq!(
            check_register(std::slice::from_ref(&w), &fin_ok, 1_000_000).valid,
            Some(true)
        );
        // The acknowledged write is gone from the converged state: a lost write.
        let fin_lost: BTreeMap<i64, Option<i64>> = [(0, Some(0))].into();
        assert_eq!(
            check_register(&[w], &fin_lost, 1_000_000).valid,
            Some(false)
        );
    }
}
