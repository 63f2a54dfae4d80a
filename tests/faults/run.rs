//! One run: start a cluster, create the workloads' tables, run the clients while the
//! nemesis injects and heals faults, heal everything, wait for convergence, check, and write
//! the results.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client;
use crate::cluster::Cluster;
use crate::history::{longest_without_write, Op, Outcome};
use crate::monitor::{self, Monitor, Sample};
use crate::nemesis::{self, Ctx, Nemesis};
use crate::report::{self, Row};
use crate::workload::{self, BankFinal, Check, Shared};

/// How long and how hard runs are. `SQLRAFT_FAULTS_PROFILE=long` selects the long profile
/// (scripts/faults.sh); anything else, the short one `cargo test` runs.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    /// Workload before the first fault.
    pub baseline: Duration,
    /// How long a fault is held.
    pub fault: Duration,
    /// Between two fault cycles.
    pub between: Duration,
    /// Workload after the last heal.
    pub settle: Duration,
    pub cycles: usize,
    pub bank_clients: usize,
    pub register_clients: usize,
    pub set_clients: usize,
    pub keys: usize,
    /// Operations per client at most.
    pub max_ops: usize,
    /// A client gives up on a request after this (outcome unknown).
    pub op_timeout: Duration,
    /// Linearizability search steps per key before the checker gives up.
    pub budget: u64,
}

pub fn profile() -> Profile {
    match std::env::var("SQLRAFT_FAULTS_PROFILE").as_deref() {
        Ok("long") => Profile {
            name: "long",
            baseline: Duration::from_secs(3),
            fault: Duration::from_secs(20),
            between: Duration::from_secs(8),
            settle: Duration::from_secs(8),
            cycles: 3,
            bank_clients: 3,
            register_clients: 5,
            set_clients: 2,
            keys: 24,
            max_ops: 20_000,
            op_timeout: Duration::from_secs(5),
            budget: 50_000_000,
        },
        _ => Profile {
            name: "short",
            baseline: Duration::from_millis(1500),
            fault: Duration::from_secs(5),
            between: Duration::from_secs(2),
            settle: Duration::from_secs(3),
            cycles: 1,
            bank_clients: 2,
            register_clients: 3,
            set_clients: 1,
            keys: 6,
            max_ops: 2_000,
            op_timeout: Duration::from_secs(4),
            budget: 20_000_000,
        },
    }
}

/// Runs `f` as one scenario: scenarios run one at a time (they are heavy, and the machine
/// has 2 cores), each on its own runtime.
pub fn scenario<Fut: Future<Output = ()>>(f: impl FnOnce() -> Fut) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = crate::net::preflight() {
        panic!("{e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(f());
}

/// What a scenario asks for.
pub struct RunSpec {
    pub name: &'static str,
    pub nodes: usize,
    pub flags: Vec<&'static str>,
    pub nemesis: Nemesis,
    /// At least this many fault cycles, whatever the profile says.
    pub min_cycles: usize,
}

/// Everything a scenario's own expectations may look at.
pub struct RunData {
    pub ops: Vec<Op>,
    pub samples: Vec<Sample>,
    pub marks: HashMap<String, Vec<u64>>,
}

impl RunData {
    /// Every instant the nemesis marked `name`, one per cycle, in order.
    pub fn marks(&self, name: &str) -> &[u64] {
        self.marks.get(name).map_or(&[], Vec::as_slice)
    }

    /// The first `name` mark in `[from, to)`.
    pub fn mark_in(&self, name: &str, from: u64, to: u64) -> Option<u64> {
        self.marks(name)
            .iter()
            .copied()
            .find(|&t| t >= from && t < to)
    }

    /// The highest term any node reported in the last sample before `t` (or the first
    /// sample, if none was taken before `t`).
    pub fn term_before(&self, t: u64) -> i64 {
        let answered = || self.samples.iter().filter(|s| s.max_term > 0);
        answered()
            .filter(|s| s.t <= t)
            .map(|s| s.max_term)
            .next_back()
            .or_else(|| answered().map(|s| s.max_term).next())
            .unwrap_or(0)
    }

    /// The highest term reported at all.
    pub fn last_term(&self) -> i64 {
        self.samples.iter().map(|s| s.max_term).max().unwrap_or(0)
    }
}

/// The tables' contents, one `values` array per table, in this order.
pub const TABLES: [&str; 4] = [
    "SELECT id, balance FROM accounts ORDER BY id",
    "SELECT id, src, dst, amount FROM transfers ORDER BY id",
    "SELECT k, v FROM registers ORDER BY k",
    "SELECT v FROM set_items ORDER BY v",
];

async fn read_tables(
    http: &reqwest::Client,
    base: &str,
    level: &str,
) -> Result<Vec<Value>, String> {
    let r = client::query(http, base, level, &json!(TABLES)).await;
    if r.outcome != Outcome::Ok {
        return Err(format!("{:?} {}", r.status, r.error.unwrap_or_default()));
    }
    Ok((0..TABLES.len())
        .map(|i| {
            r.results()
                .get(i)
                .and_then(|x| x.get("values"))
                .cloned()
                .unwrap_or_else(|| json!([]))
        })
        .collect())
}

/// Runs `sql` (a JSON array of statements) until it succeeds; setup statements are
/// idempotent, so a retry after an unknown outcome is safe.
pub async fn execute_until_ok(c: &Cluster, sql: &Value, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let i = c.running()[fastrand::usize(..c.running().len())];
        let r = client::execute(&c.http, &c.nodes[i].base(), "", sql).await;
        if r.outcome == Outcome::Ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "setup {sql} failed: {:?} {:?}",
            r.status,
            r.error
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heals every fault: the network, paused nodes, stopped members.
pub async fn heal_all(c: &mut Cluster) {
    c.net.heal();
    for i in 0..c.len() {
        c.unthrottle_disk(i);
    }
    for i in c.members() {
        if c.nodes[i].paused {
            c.resume(i);
        }
    }
    for i in c.members() {
        if !c.nodes[i].is_running() {
            c.spawn(i);
        }
    }
    for i in c.members() {
        if c.nodes[i].is_running() {
            // Nodes spawned just above: their startup line; others return at once.
            let _ = c.try_wait_started(i).await;
        }
    }
}

/// Replicas that did not converge: why, and the leader's data if a `strong` read got it (the
/// histories are still checked against it, so a lost acknowledged write is named).
pub struct NotConverged {
    pub why: String,
    pub leader: Option<Vec<Value>>,
}

/// Waits until every member is ready and holds exactly the data a `strong` read returns;
/// returns that data.
pub async fn converge(c: &Cluster, within: Duration) -> Result<Vec<Value>, NotConverged> {
    let fail = |why: String, leader: Option<Vec<Value>>| NotConverged { why, leader };
    let deadline = Instant::now() + within;
    c.wait_ready(within).await.map_err(|e| fail(e, None))?;
    let fin = loop {
        let i = c.running()[fastrand::usize(..c.running().len())];
        match read_tables(&c.http, &c.nodes[i].base(), "strong").await {
            Ok(t) => break t,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(fail(
                    format!("no strong read of the final state: {e}"),
                    None,
                ))
            }
        }
    };
    for i in c.running() {
        loop {
            let seen = read_tables(&c.http, &c.nodes[i].base(), "none").await;
            if seen.as_ref() == Ok(&fin) {
                break;
            }
            if Instant::now() >= deadline {
                let what = match seen {
                    Ok(t) => t
                        .iter()
                        .zip(&fin)
                        .zip(TABLES)
                        .filter(|((a, b), _)| a != b)
                        .map(|((a, b), sql)| {
                            format!(
                                "`{sql}`: {} rows vs {} on the leader",
                                a.as_array().map_or(0, Vec::len),
                                b.as_array().map_or(0, Vec::len)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(e) => e,
                };
                return Err(fail(
                    format!("node {} did not converge within {within:?}: {what}", i + 1),
                    Some(fin),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(fin)
}

/// Backtraces of every running member that does not answer `/status` within 2 s.
pub async fn dump_unresponsive(c: &Cluster) {
    for i in c.running() {
        if c.store_status(i).await.is_none() {
            if let Some(p) = c.dump_stacks(i) {
                println!("node {} does not answer: stacks in {}", i + 1, p.display());
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs one nemesis scenario against all three workloads and returns whether it passed
/// (safety, convergence, and the scenario's own `expect`ations, which return problems).
pub async fn run(spec: RunSpec, expect: impl FnOnce(&RunData) -> Vec<String>) {
    let mut p = profile();
    p.cycles = p.cycles.max(spec.min_cycles);
    let dir = report::scenario_dir(spec.name);
    println!(
        "== {} ({}, {} nodes, profile {}), results in {}",
        spec.name,
        spec.nemesis.describe(),
        spec.nodes,
        p.name,
        dir.display()
    );
    let mut cluster = Cluster::new(spec.nodes, &spec.flags, &dir);
    if matches!(
        spec.nemesis,
        Nemesis::SlowDiskLeader
            | Nemesis::SlowDiskLeaderKillAll
            | Nemesis::SlowDiskLeaderKillLeader
            | Nemesis::SlowDiskFollowers
    ) {
        for i in 0..spec.nodes {
            cluster.mount_loop_disk(i, 512);
        }
    }
    cluster.start_all().await;
    for sql in [
        workload::bank_setup(),
        workload::register_setup(p.keys),
        workload::set_setup(),
    ] {
        execute_until_ok(&cluster, &sql, Duration::from_secs(30)).await;
    }

    let targets = cluster
        .members()
        .into_iter()
        .map(|i| (i, cluster.nodes[i].base()))
        .collect();
    let shared = Arc::new(Shared::new(targets, p.op_timeout, p.max_ops));
    let monitor = Monitor::start(shared.clone());
    let mut clients = Vec::new();
    let mut n = 0;
    for _ in 0..p.bank_clients {
        let s = shared.clone();
        clients.push(tokio::spawn(
            async move { workload::bank_client(&s, n).await },
        ));
        n += 1;
    }
    for _ in 0..p.register_clients {
        let (s, keys) = (shared.clone(), p.keys);
        clients.push(tokio::spawn(async move {
            workload::register_client(&s, n, keys).await
        }));
        n += 1;
    }
    for _ in 0..p.set_clients {
        let s = shared.clone();
        clients.push(tokio::spawn(
            async move { workload::set_client(&s, n).await },
        ));
        n += 1;
    }
    clients.push(tokio::spawn(workload::prober(shared.clone())));
    let t_start = shared.history.now();
    shared.history.event("workload started");
    // Workload before the fault: this is the schedule, not a wait for a condition.
    tokio::time::sleep(p.baseline).await;

    let marks = Arc::new(Mutex::new(HashMap::new()));
    let mut ctx = Ctx {
        cluster: &mut cluster,
        shared: &shared,
        profile: &p,
        marks: marks.clone(),
        problems: Vec::new(),
    };
    nemesis::run(spec.nemesis, &mut ctx).await;
    let mut problems = std::mem::take(&mut ctx.problems);
    tokio::time::sleep(p.settle).await;
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let t_end = shared.history.now();
    shared.history.event("workload stopped");

    shared.history.event("heal everything");
    heal_all(&mut cluster).await;
    let converged = converge(&cluster, Duration::from_secs(60)).await;
    if converged.is_err() {
        dump_unresponsive(&cluster).await;
    }
    shared.history.event(match &converged {
        Ok(_) => "converged".to_string(),
        Err(e) => format!("NOT converged: {}", e.why),
    });
    let samples = monitor.stop().await;
    let members = cluster.members().len();
    // Stop the nodes before checking, so the checker has the CPU.
    drop(cluster);

    let ops = shared.history.ops();
    let _ = shared.history.write_jsonl(&dir.join("history.jsonl"));
    let marks = marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let data = RunData {
        ops,
        samples,
        marks,
    };

    let leader_data = match &converged {
        Ok(fin) => Some(fin),
        Err(e) => e.leader.as_ref(),
    };
    let checks: Vec<Check> = match leader_data {
        Some(fin) => {
            let bank = BankFinal {
                accounts: rows_of(&fin[0])
                    .iter()
                    .map(|r| (int(&r[0]), int(&r[1])))
                    .collect(),
                transfers: rows_of(&fin[1])
                    .iter()
                    .map(|r| (int(&r[0]), int(&r[1]), int(&r[2]), int(&r[3])))
                    .collect(),
            };
            let regs: BTreeMap<i64, Option<i64>> = rows_of(&fin[2])
                .iter()
                .map(|r| (int(&r[0]), r[1].as_i64()))
                .collect();
            let set: Vec<i64> = rows_of(&fin[3]).iter().map(|r| int(&r[0])).collect();
            let ops = &data.ops;
            let bank_ops: Vec<Op> = ops
                .iter()
                .filter(|o| o.workload == "bank")
                .cloned()
                .collect();
            let set_ops: Vec<Op> = ops
                .iter()
                .filter(|o| o.workload == "set")
                .cloned()
                .collect();
            vec![
                workload::check_bank(&bank_ops, &bank),
                workload::check_register(ops, &regs, p.budget),
                workload::check_set(&set_ops, &set),
            ]
        }
        None => Vec::new(),
    };
    if let Err(e) = &converged {
        problems.push(e.why.clone());
    }
    for c in &checks {
        if c.valid == Some(false) {
            problems.extend(c.problems.iter().map(|p| format!("{}: {p}", c.workload)));
        }
    }
    let expectations = expect(&data);
    problems.extend(expectations.iter().cloned());

    let from = data.marks("fault").first().copied().unwrap_or(t_start);
    let ll = monitor::leaderless(&data.samples, t_start, t_end);
    let (no_write, no_write_end) = longest_without_write(&data.ops, t_start, t_end);
    let term_delta = data.last_term() - data.term_before(from);
    let ok = problems.is_empty();
    let ops_ok = data.ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    let verdict = format!(
        "{} {}: {}; converged: {}; {} ops ({} ok); leaderless {:.2}s (longest {:.2}s); longest without a successful write {:.2}s (ending at {:.2}s); term +{}",
        if ok { "PASS" } else { "FAIL" },
        spec.name,
        if checks.is_empty() {
            "not checked".to_string()
        } else {
            checks
                .iter()
                .map(|c| format!("{} {}", c.workload, c.verdict()))
                .collect::<Vec<_>>()
                .join(", ")
        },
        if converged.is_ok() {
            format!("yes ({members} members identical)")
        } else {
            "NO".into()
        },
        data.ops.len(),
        ops_ok,
        secs(ll.total),
        secs(ll.longest),
        secs(no_write),
        no_write_end as f64 / 1e9,
        term_delta
    );
    let mut details: Vec<String> = checks
        .iter()
        .map(|c| format!("{}: {} — {}", c.workload, c.verdict(), c.summary))
        .collect();
    details.extend(problems.iter().map(|p| format!("problem: {p}")));
    report::write_verdict(&dir, &verdict, &details);
    let cell = |w: &str| {
        checks
            .iter()
            .find(|c| c.workload == w)
            .map_or("-".to_string(), |c| c.verdict().to_string())
    };
    report::append(&Row {
        scenario: spec.name.to_string(),
        nemesis: spec.nemesis.describe().to_string(),
        nodes: spec.nodes,
        bank: cell("bank"),
        register: cell("register"),
        set: cell("set"),
        converged: if converged.is_ok() { "yes" } else { "NO" }.into(),
        leaderless_s: Some(secs(ll.total)),
        longest_leaderless_s: Some(secs(ll.longest)),
        longest_no_write_s: Some(secs(no_write)),
        term_delta: Some(term_delta),
        verdict: if ok { "PASS" } else { "FAIL" }.into(),
    });
    println!("{verdict}");
    for d in &details {
        println!("  {d}");
    }
    assert!(
        ok,
        "{verdict}\n{}\nhistory and node logs: {}",
        details.join("\n"),
        dir.display()
    );
}

fn rows_of(v: &Value) -> Vec<Vec<Value>> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(i64::MIN)
}
