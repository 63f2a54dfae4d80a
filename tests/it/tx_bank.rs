//! A bank over interactive transactions, with the leader killed mid-run: money is
//! conserved, no committed transfer is lost, every 409 is a real conflict (or a leadership
//! abort) that applied nothing, and the committed history is serializable (`serial::check`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{wait_until, Client, TestCluster};
use crate::serial::{check, TxRecord};

const ACCOUNTS: i64 = 6;
const START: i64 = 100;
const CLIENTS: usize = 8;
/// Transfers each client commits (or leaves with an unknown outcome).
const COMMITS: usize = 4;
/// Committed transfers before the leader is killed.
const KILL_AFTER: usize = 12;

/// How one transfer ended, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Committed,
    /// 409 at commit or earlier; the text says why.
    Refused(String),
    /// The commit was sent and no answer came back (504, a dead node).
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Transfer {
    tag: String,
    reads: Vec<(i64, i64)>,
    writes: Vec<(i64, i64)>,
    outcome: Outcome,
}

/// One statement's answer, or why there is none: `Err(Some(409 text))` or `Err(None)`.
async fn post(c: &Client, path: &str, body: &str) -> Result<Value, Option<String>> {
    match c.try_post_json(path, body).await {
        Ok(r) if r.status == 200 => Ok(r.json()),
        Ok(r) if r.status == 409 => Err(Some(r.text())),
        _ => Err(None),
    }
}

/// `(bal, ver)` of `acct` inside transaction `id`.
async fn read(c: &Client, id: &str, acct: i64) -> Result<(i64, i64), Option<String>> {
    let body = format!(r#"[["SELECT bal, ver FROM acct WHERE id = ?", {acct}]]"#);
    let j = post(c, &format!("/db/tx/{id}/query"), &body).await?;
    let row = &j["results"][0]["values"][0];
    match (row[0].as_i64(), row[1].as_i64()) {
        (Some(b), Some(v)) => Ok((b, v)),
        _ => Err(None),
    }
}

/// One transfer attempt through `c`; `None` when it never reached its commit call.
async fn transfer(c: &Client, tag: &str) -> Option<Transfer> {
    let (a, b) = loop {
        let (a, b) = (fastrand::i64(1..=ACCOUNTS), fastrand::i64(1..=ACCOUNTS));
        if a != b {
            break (a, b);
        }
    };
    let amount = fastrand::i64(1..=10);
    let id = post(c, "/db/tx", "").await.ok()?["id"]
        .as_str()?
        .to_string();
    let refused = |why: Option<String>, reads: Vec<(i64, i64)>| {
        why.map(|w| Transfer {
            tag: tag.to_string(),
            reads,
            writes: Vec::new(),
            outcome: Outcome::Refused(w),
        })
    };
    let (ba, va) = match read(c, &id, a).await {
        Ok(r) => r,
        Err(why) => return refused(why, vec![]),
    };
    let (bb, vb) = match read(c, &id, b).await {
        Ok(r) => r,
        Err(why) => return refused(why, vec![(a, va)]),
    };
    if ba < amount {
        let _ = c.try_post_json(&format!("/db/tx/{id}/rollback"), "").await;
        return None;
    }
    let (na, nb) = (ba - amount, bb + amount);
    let body = format!(
        r#"[["UPDATE acct SET bal = ?, ver = ? WHERE id = ?", {na}, {}, {a}],
            ["UPDATE acct SET bal = ?, ver = ? WHERE id = ?", {nb}, {}, {b}],
            ["INSERT INTO ledger VALUES (?, ?, ?, ?)", "{tag}", {a}, {}, {na}],
            ["INSERT INTO ledger VALUES (?, ?, ?, ?)", "{tag}", {b}, {}, {nb}]]"#,
        va + 1,
        vb + 1,
        va + 1,
        vb + 1
    );
    let reads = vec![(a, va), (b, vb)];
    if let Err(why) = post(c, &format!("/db/tx/{id}/execute"), &body).await {
        return refused(why, reads);
    }
    let outcome = match c.try_post_json(&format!("/db/tx/{id}/commit"), "").await {
        Ok(r) if r.status == 200 => Outcome::Committed,
        Ok(r) if r.status == 409 => Outcome::Refused(r.text()),
        Ok(r) => Outcome::Unknown(format!("{} {}", r.status, r.text())),
        Err(e) => Outcome::Unknown(e),
    };
    Some(Transfer {
        tag: tag.to_string(),
        reads,
        writes: vec![(a, va + 1), (b, vb + 1)],
        outcome,
    })
}

/// One client: transfers until `COMMITS` committed (or ended unknown), moving to the next
/// node whenever the one it uses does not answer.
async fn client(n: usize, nodes: Vec<Client>, committed: Arc<AtomicUsize>) -> Vec<Transfer> {
    let mut out = Vec::new();
    let mut node = n % nodes.len();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seq = 0;
    let mut done = 0;
    while done < COMMITS && Instant::now() < deadline {
        seq += 1;
        let tag = format!("c{n}-{seq}");
        match transfer(&nodes[node], &tag).await {
            Some(t) => {
                if t.outcome == Outcome::Committed {
                    committed.fetch_add(1, Ordering::Relaxed);
                    done += 1;
                }
                if matches!(t.outcome, Outcome::Unknown(_)) {
                    node = (node + 1) % nodes.len();
                    done += 1;
                }
                out.push(t);
            }
            None => {
                // No leader right now, or a dead node: try the next one shortly.
                node = (node + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_over_interactive_transactions_survives_a_leader_kill_serializably() {
    // Steps: 3 nodes, 6 accounts of 100 (balance and version), a ledger table. 8 clients
    // spread over all nodes each commit 4 transfers: read two balances, write both (values
    // computed by the client, version + 1) and two ledger rows tagged with the transfer,
    // commit. Once 12 transfers committed, the leader is killed; more commit after. Then: every committed
    // transfer is in the ledger, no refused one is; every refused commit was a leadership
    // abort or had read a version that a committed transfer replaced; money is conserved;
    // each account holds its newest ledger version; every node holds the same data; and the
    // committed history (ledger = commits, including unknown outcomes that did commit) has
    // an acyclic serialization graph.
    let mut c = TestCluster::start(3).await;
    let l = c.leader().await;
    let mut setup = vec![
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER, ver INTEGER)".to_string(),
        "CREATE TABLE ledger (tag TEXT, acct INTEGER, ver INTEGER, bal INTEGER)".to_string(),
    ];
    for a in 1..=ACCOUNTS {
        setup.push(format!("INSERT INTO acct VALUES ({a}, {START}, 0)"));
    }
    c.client(l).execute_ok(&json!(setup).to_string()).await;
    c.wait_all_see("SELECT count(*) FROM acct", &json!([[ACCOUNTS]]))
        .await;
    let nodes: Vec<Client> = (0..3)
        .map(|i| Client::with_timeout(c.client(i).base.clone(), Duration::from_secs(10)))
        .collect();
    let committed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(n, nodes.clone(), committed.clone())))
        .collect();
    wait_until(Duration::from_secs(60), "transfers committed", || async {
        committed.load(Ordering::Relaxed) >= KILL_AFTER
    })
    .await;
    c.kill(l).await;
    let at_kill = committed.load(Ordering::Relaxed);
    let mut history = Vec::new();
    for w in workers {
        history.extend(w.await.expect("client"));
    }
    let live: Vec<usize> = c.live();
    let leader = c.wait_for_leader_among(&live).await;
    let lc = c.client(leader);
    let ledger = lc
        .query_values("SELECT tag, acct, ver, bal FROM ledger", "strong")
        .await;
    let mut in_ledger: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for row in ledger.as_array().expect("rows") {
        let tag = row[0].as_str().expect("tag").to_string();
        let (a, v, b) = (row[1].as_i64(), row[2].as_i64(), row[3].as_i64());
        in_ledger.entry(tag).or_default().push((
            a.expect("acct"),
            v.expect("ver"),
            b.expect("bal"),
        ));
    }
    let tags: BTreeSet<&String> = in_ledger.keys().collect();
    let mut newest: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for rows in in_ledger.values() {
        for &(a, v, b) in rows {
            let e = newest.entry(a).or_insert((0, START));
            if v > e.0 {
                *e = (v, b);
            }
        }
    }
    let mut records = Vec::new();
    let (mut ok, mut refused, mut unknown) = (0, 0, 0);
    for t in &history {
        let landed = tags.contains(&t.tag);
        match &t.outcome {
            Outcome::Committed => {
                ok += 1;
                assert!(landed, "committed transfer {} lost", t.tag);
            }
            Outcome::Refused(why) => {
                refused += 1;
                assert!(!landed, "refused transfer {} was applied: {why}", t.tag);
                let replaced = t
                    .reads
                    .iter()
                    .any(|&(a, v)| newest.get(&a).is_some_and(|&(nv, _)| nv > v));
                assert!(
                    why.contains("leadership changed") || replaced,
                    "409 for {} without a conflict: {why}",
                    t.tag
                );
            }
            Outcome::Unknown(_) => unknown += 1,
        }
        if landed {
            let rows = &in_ledger[&t.tag];
            let mut written: Vec<(i64, i64)> = rows.iter().map(|&(a, v, _)| (a, v)).collect();
            written.sort_unstable();
            let mut expected = t.writes.clone();
            expected.sort_unstable();
            assert_eq!(written, expected, "ledger rows of {}", t.tag);
            records.push(TxRecord {
                name: t.tag.clone(),
                reads: t.reads.clone(),
                writes: t.writes.clone(),
            });
        }
    }
    assert_eq!(
        records.len(),
        tags.len(),
        "ledger rows of unknown transfers"
    );
    eprintln!("bank: {ok} committed ({at_kill} before the kill), {refused} refused (409), {unknown} unknown outcome");
    assert!(
        ok > at_kill,
        "no transfer committed after the kill ({ok} in all)"
    );
    if let Err(e) = check(&records) {
        panic!("{e}");
    }
    let accounts = lc
        .query_values("SELECT id, bal, ver FROM acct ORDER BY id", "strong")
        .await;
    let mut total = 0;
    for row in accounts.as_array().expect("rows") {
        let (a, b, v) = (row[0].as_i64(), row[1].as_i64(), row[2].as_i64());
        let (a, b, v) = (a.expect("id"), b.expect("bal"), v.expect("ver"));
        total += b;
        let (nv, nb) = newest.get(&a).copied().unwrap_or((0, START));
        assert_eq!((v, b), (nv, nb), "account {a} is not at its newest version");
    }
    assert_eq!(total, ACCOUNTS * START, "money not conserved");
    c.wait_all_see("SELECT id, bal, ver FROM acct ORDER BY id", &accounts)
        .await;
}
