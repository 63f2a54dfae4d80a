//! Crashes of real `sqlraftd` processes ([`ProcCluster`], SIGKILL): a killed leader is
//! replaced and no acknowledged write is lost; a forwarded write cut off by the crash is never
//! reported as "not applied" when it was; bank transfers conserve money and strong reads stay
//! linearizable across a leader crash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    assert_no_acknowledged_write_lost, ids_of, insert, query, url_encode, values, wait_until,
    Client, ProcCluster, WriteLog, CLUSTER_WAIT,
};

/// Writers inserting rows `w * 1_000_000 + i` into `t(id, w)` through every node of a
/// process cluster, moving to the next node on any failure, and recording what they were
/// told.
struct Inserters {
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Inserters {
    /// Creates `t` on the leader, then starts `writers` writers (their requests time out
    /// after 5s: nodes die under them).
    async fn start(pc: &ProcCluster, writers: i64) -> Self {
        let l = pc.wait_for_leader().await;
        pc.client(l)
            .execute_ok(r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER)"]"#)
            .await;
        let clients: Vec<Client> = (0..pc.members.len())
            .map(|i| Client::with_timeout(pc.client(i).base.clone(), Duration::from_secs(5)))
            .collect();
        let log: Arc<Mutex<WriteLog>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| tokio::spawn(insert(w, clients.clone(), log.clone(), stop.clone())))
            .collect();
        Inserters { log, stop, tasks }
    }

    /// Waits until `n` more inserts than now were acknowledged.
    async fn wait_more_acked(&self, n: usize, what: &str) {
        let target = self.log.lock().unwrap().acked.len() + n;
        wait_until(CLUSTER_WAIT, what, || {
            let now = self.log.lock().unwrap().acked.len();
            async move { now >= target }
        })
        .await;
    }

    /// Stops the writers; what they were told.
    async fn stop(self) -> WriteLog {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    // Steps: 3 sqlraftd processes. 8 writers insert rows through all nodes (moving on to
    // the next node on any failure) and record which inserts were acknowledged. The leader
    // is SIGKILLed; writes keep being acknowledged through the survivors, which elect a new
    // leader. Every acknowledged row is there at level=strong. The killed node, restarted on
    // its data dir, catches up: it ends up with exactly the leader's rows.
    let mut pc = ProcCluster::start(3, &[]).await;
    let inserters = Inserters::start(&pc, 8).await;
    let old = pc.wait_for_leader().await;
    inserters
        .wait_more_acked(100, "writes before the kill")
        .await;
    pc.kill9(old);
    let killed_at = Instant::now();
    let survivors = "writes acknowledged by the survivors";
    inserters.wait_more_acked(100, survivors).await;
    let failover = killed_at.elapsed();
    let new = pc.wait_for_leader().await;
    assert_ne!(new, old);
    let log = inserters.stop().await;

    let present = ids_of(&values(
        &query(pc.client(new), "level=strong", "SELECT id FROM t").await,
    ));
    let context = format!("failover took {failover:?}");
    assert_no_acknowledged_write_lost(&log.acked, &present, &context);

    pc.restart(old).await;
    let oc = pc.client(old).clone();
    let target = format!("/db/query?level=none&q={}", url_encode("SELECT id FROM t"));
    wait_until(CLUSTER_WAIT, "the restarted node to catch up", || {
        let (oc, target, present) = (oc.clone(), target.clone(), present.clone());
        async move {
            match oc.try_get(&target).await {
                // No `values` yet (no rows, or an error such as a table not yet re-created
                // from the log): not caught up.
                Ok(r) if r.status == 200 => {
                    let values = &r.json()["results"][0]["values"];
                    values.is_array() && ids_of(values) == present
                }
                _ => false,
            }
        }
    })
    .await;
    assert_eq!(pc.wait_for_leader().await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_write_cut_off_by_a_leader_crash_is_not_reported_as_not_applied() {
    // Steps: 3 sqlraftd processes, 32 writers over all nodes; three times: SIGKILL the
    // leader while forwarded writes are in flight, wait for the survivors to take writes,
    // restart it. A 503 "leader ... unreachable" tells the client nothing was applied (it
    // may retry: ARCHITECTURE "a forwarded write whose outcome is unknown is reported as
    // unknown, never blindly retried"), so none of those rows may exist afterwards. Today a
    // request already sent on a connection that then breaks ("stream closed because of a
    // broken pipe", "connection reset") is reported that way, and the new leader commits
    // some of them.
    let mut pc = ProcCluster::start(3, &[]).await;
    let inserters = Inserters::start(&pc, 32).await;
    for _ in 0..3 {
        inserters
            .wait_more_acked(100, "writes before the kill")
            .await;
        let l = pc.wait_for_leader().await;
        pc.kill9(l);
        let survivors = "writes through the survivors";
        inserters.wait_more_acked(50, survivors).await;
        pc.restart(l).await;
    }
    let log = inserters.stop().await;
    let l = pc.wait_for_leader().await;
    let present = ids_of(&values(
        &query(pc.client(l), "level=strong", "SELECT id FROM t").await,
    ));
    assert_no_acknowledged_write_lost(&log.acked, &present, "leader crashes");
    let applied: Vec<&(i64, String)> = log
        .refused
        .iter()
        .filter(|(id, _)| present.contains(id))
        .collect();
    assert!(
        applied.is_empty(),
        "{} of {} writes answered 503 'unreachable' were applied, e.g. {:?}",
        applied.len(),
        log.refused.len(),
        applied.first()
    );
}

/// The atomic transfer: moves `amount` from `from` to `to` only if `from` can afford it;
/// one statement, so it either changes both rows (rows_affected 2) or neither (0).
const TRANSFER: &str =
    "UPDATE accounts SET balance = balance + CASE id WHEN ? THEN -? WHEN ? THEN ? END \
     WHERE id IN (?, ?) AND (SELECT balance FROM accounts WHERE id = ?) >= ?";

/// What one bank client did and saw.
#[derive(Debug, Default)]
struct Teller {
    /// Batches sent (each may or may not have been applied).
    sent: u64,
    /// Batches acknowledged (200, no error): each must be visible to later strong reads.
    acked: u64,
    /// Acknowledged transfers that moved money.
    moved: u64,
    /// Strong reads of this client's op counter that succeeded.
    strong_reads: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_conserve_money_across_a_leader_crash() {
    // Steps: 3 sqlraftd processes; 5 accounts with 100 each, and one op counter per client.
    // 6 clients, spread over all nodes, each loop: one `transaction` batch of [an atomic
    // guarded transfer, increment my op counter], then a level=strong read of my counter.
    // Meanwhile the leader is SIGKILLed and later restarted. Invariants:
    // - money is conserved: the total is 500 and no balance is negative, at the end and on
    //   every node;
    // - each acknowledged batch is atomic: rows_affected is 2 (moved) or 0 (refused);
    // - a client's strong reads of its own counter never go backwards and never miss an
    //   acknowledged batch (acked <= counter <= sent): no acknowledged write is lost and
    //   strong reads are linearizable across the crash.
    // The counter is per client and only that client writes it, so these bounds are exact
    // even though batches whose outcome was unknown (the crash) may or may not have landed.
    let mut pc = ProcCluster::start(3, &[]).await;
    let old = pc.wait_for_leader().await;
    const CLIENTS: i64 = 6;
    let mut setup = vec![
        json!("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)"),
        json!("CREATE TABLE ops (client INTEGER PRIMARY KEY, n INTEGER NOT NULL)"),
    ];
    for id in 1..=5 {
        setup.push(json!(["INSERT INTO accounts VALUES(?, 100)", id]));
    }
    for client in 0..CLIENTS {
        setup.push(json!(["INSERT INTO ops VALUES(?, 0)", client]));
    }
    pc.client(old)
        .execute_ok(&Value::from(setup).to_string())
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let total_acked = Arc::new(AtomicU64::new(0));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<Client> = (0..3)
        .map(|i| Client::with_timeout(pc.client(i).base.clone(), Duration::from_secs(5)))
        .collect();
    let mut tasks = Vec::new();
    for me in 0..CLIENTS {
        let (clients, stop, total_acked, violations) = (
            clients.clone(),
            stop.clone(),
            total_acked.clone(),
            violations.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut t = Teller::default();
            let mut node = me as usize % clients.len();
            let mut last_n = 0_u64;
            let mut rng = fastrand::Rng::with_seed(me as u64);
            let fail = |msg: String| violations.lock().unwrap().push(msg);
            while !stop.load(Ordering::Relaxed) {
                let from = rng.i64(1..=5);
                let to = (from + rng.i64(1..=4) - 1) % 5 + 1;
                let amt = rng.i64(1..=40);
                let body = json!([
                    [TRANSFER, from, amt, to, amt, from, to, from, amt],
                    ["UPDATE ops SET n = n + 1 WHERE client = ?", me]
                ])
                .to_string();
                t.sent += 1;
                let c = &clients[node];
                let ok = match c.try_post_json("/db/execute?transaction", &body).await {
                    Ok(r) if r.status == 200 => {
                        let j = r.json();
                        let clean = j.get("error").is_none()
                            && j["results"].as_array().is_some_and(|rs| {
                                rs.len() == 2 && rs.iter().all(|x| x.get("error").is_none())
                            });
                        if clean {
                            t.acked += 1;
                            total_acked.fetch_add(1, Ordering::Relaxed);
                            match j["results"][0]["rows_affected"].as_i64().unwrap_or(0) {
                                2 => t.moved += 1,
                                0 => {}
                                n => fail(format!("client {me}: transfer touched {n} rows: {j}")),
                            }
                            if j["results"][1]["rows_affected"] != 1 {
                                fail(format!("client {me}: counter not incremented: {j}"));
                            }
                        }
                        clean
                    }
                    _ => false,
                };
                if !ok {
                    node = (node + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let target = format!(
                    "/db/query?level=strong&q={}",
                    url_encode(&format!("SELECT n FROM ops WHERE client = {me}"))
                );
                if let Ok(r) = c.try_get(&target).await {
                    let j = if r.status == 200 {
                        r.json()
                    } else {
                        Value::Null
                    };
                    if let Some(n) = j["results"][0]["values"][0][0].as_u64() {
                        t.strong_reads += 1;
                        if n < last_n {
                            fail(format!(
                                "client {me}: strong read went back from {last_n} to {n}"
                            ));
                        }
                        if n < t.acked || n > t.sent {
                            fail(format!(
                                "client {me}: counter {n} outside [acked {}, sent {}]",
                                t.acked, t.sent
                            ));
                        }
                        last_n = n;
                    }
                }
            }
            t
        }));
    }
    let acked = || total_acked.load(Ordering::Relaxed);
    let more = |n: u64, what: &'static str| {
        let target = acked() + n;
        let total_acked = total_acked.clone();
        async move {
            wait_until(CLUSTER_WAIT, what, || {
                let now = total_acked.load(Ordering::Relaxed);
                async move { now >= target }
            })
            .await
        }
    };
    more(60, "transfers before the crash").await;
    pc.kill9(old);
    more(60, "transfers through the survivors").await;
    let new = pc.wait_for_leader().await;
    assert_ne!(new, old);
    pc.restart(old).await;
    more(60, "transfers after the restart").await;
    stop.store(true, Ordering::Relaxed);
    let mut tellers = Vec::new();
    for t in tasks {
        tellers.push(t.await.unwrap());
    }
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(acked() >= 180);
    assert!(
        tellers.iter().map(|t| t.moved).sum::<u64>() > 0,
        "{tellers:?}"
    );
    assert!(tellers.iter().all(|t| t.strong_reads > 0), "{tellers:?}");

    let l = pc.wait_for_leader().await;
    let r = query(
        pc.client(l),
        "level=strong",
        "SELECT SUM(balance), MIN(balance), COUNT(*) FROM accounts",
    )
    .await;
    let totals = values(&r);
    assert_eq!(totals[0][0], 500, "money is conserved: {totals}");
    assert!(totals[0][1].as_i64().unwrap() >= 0, "{totals}");
    assert_eq!(totals[0][2], 5);
    let counters = values(
        &query(
            pc.client(l),
            "level=strong",
            "SELECT client, n FROM ops ORDER BY client",
        )
        .await,
    );
    for (me, t) in tellers.iter().enumerate() {
        let n = counters[me][1].as_u64().unwrap();
        assert!(
            t.acked <= n && n <= t.sent,
            "client {me}: counter {n}, {t:?}"
        );
    }
    // Every replica, the restarted one included, holds the same books.
    let books = values(
        &query(
            pc.client(l),
            "level=strong",
            "SELECT * FROM accounts ORDER BY id",
        )
        .await,
    );
    for i in pc.live() {
        let c = pc.client(i).clone();
        let books = books.clone();
        wait_until(CLUSTER_WAIT, "every node to hold the same books", || {
            let (c, books) = (c.clone(), books.clone());
            async move {
                let Ok(r) = c
                    .try_get(&format!(
                        "/db/query?level=none&q={}",
                        url_encode("SELECT * FROM accounts ORDER BY id")
                    ))
                    .await
                else {
                    return false;
                };
                r.status == 200 && r.json()["results"][0]["values"] == books
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_single_node_leads_again_in_a_newer_term_with_its_data() {
    // Steps: one sqlraftd process writes a row; SIGKILL; started again on its data dir. It
    // leads again through an election, in a newer term (a leader never resumes its old term
    // after a restart: it could reuse log ids its learners hold), and has the row.
    let mut pc = ProcCluster::start(1, &[]).await;
    let c = pc.client(0).clone();
    c.execute_ok(r#"["CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"]"#)
        .await;
    let term = |c: Client| async move {
        c.get("/status?key=store.raft.term")
            .await
            .json()
            .as_u64()
            .expect("term")
    };
    let before = term(c.clone()).await;
    pc.kill9(0);
    pc.restart(0).await;
    assert_eq!(pc.wait_for_leader().await, 0);
    let c = pc.client(0).clone();
    let after = term(c.clone()).await;
    assert!(
        after > before,
        "term {before} before the restart, {after} after"
    );
    c.execute_ok(r#"["INSERT INTO t VALUES (2)"]"#).await;
    let rows = c.query_values("SELECT x FROM t ORDER BY x", "strong").await;
    assert_eq!(rows, json!([[1], [2]]));
}
