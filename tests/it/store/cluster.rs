//! Store clusters: formation with one leader, a leader's write applied on every store, the
//! not-leader error a follower gives (naming the leader), a removed store left out of
//! replication, and a new store brought up to date from a snapshot once the log it would
//! need was compacted away.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;

use sqlraft::command::{Outcome, Value};
use sqlraft::store::StoreError;

use super::harness::{StoreCluster, TestStore};
use crate::harness::{wait_for, wait_until, CLUSTER_WAIT};

/// The (id, Raft address, voter) of every member in `store`'s configuration, sorted by id.
fn members(store: &TestStore) -> Vec<(String, String, bool)> {
    store
        .store
        .members()
        .into_iter()
        .map(|(n, voter)| (n.id, n.raft_addr, voter))
        .collect()
}

/// The same list for the given stores as voters.
fn voters(stores: &[&TestStore]) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = stores
        .iter()
        .map(|s| (s.info.id.clone(), s.info.raft_addr.clone(), true))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_bootstrapped_together_elect_exactly_one_leader() {
    // Steps: three stores bootstrap with the same three voters and elect through pre-votes.
    // They agree on one leader, exactly one store leads, all are in the same term, and every
    // store's configuration lists the same three voters.
    let c = StoreCluster::start(3).await;
    let l = c.wait_for_leader().await;
    let leaders: Vec<usize> = (0..3).filter(|&i| c.stores[i].store.is_leader()).collect();
    assert_eq!(leaders, vec![l]);
    let terms: BTreeSet<u64> = c
        .stores
        .iter()
        .map(|s| s.store.raft().metrics().borrow_watched().current_term)
        .collect();
    assert_eq!(terms.len(), 1, "one cluster has one term: {terms:?}");
    let all: Vec<&TestStore> = c.stores.iter().collect();
    for s in &c.stores {
        assert_eq!(members(s), voters(&all), "store {}", s.info.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_leader_is_applied_on_every_store() {
    // Steps: the leader executes a CREATE and two INSERTs as one request; the reply carries
    // each statement's outcome and the log index; every store applies that entry and then
    // holds exactly the two rows.
    let c = StoreCluster::start(3).await;
    let l = c.wait_for_leader().await;
    let reply = c.stores[l]
        .execute(&[
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t VALUES(1, 'one')",
            "INSERT INTO t VALUES(2, 'two')",
        ])
        .await
        .expect("a write on the leader");
    let outcomes: Vec<&Outcome> = reply.results.iter().map(|r| &r.outcome).collect();
    assert_eq!(
        outcomes[1..],
        [
            &Outcome::Exec {
                last_insert_id: 1,
                rows_affected: 1
            },
            &Outcome::Exec {
                last_insert_id: 2,
                rows_affected: 1
            }
        ],
        "{reply:?}"
    );
    let index = reply.raft_index.expect("a write goes through the log");
    let want = vec![
        vec![Value::Int(1), Value::Text("one".into())],
        vec![Value::Int(2), Value::Text("two".into())],
    ];
    for s in &c.stores {
        s.wait_applied(index).await;
        assert_eq!(
            s.rows("SELECT id, v FROM t ORDER BY id").await,
            want,
            "store {}",
            s.info.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_store_refuses_a_write_naming_the_leader() {
    // Steps: a write on a follower fails with NotLeader carrying the leader's id and Raft
    // address (retried only while the follower does not know the leader yet: any other answer
    // fails the test); nothing was applied on any store.
    let c = StoreCluster::start(3).await;
    let l = c.wait_for_leader().await;
    let f = c.others(l)[0];
    let named = wait_for(CLUSTER_WAIT, "the follower to name the leader", || async {
        match c.stores[f].execute(&["CREATE TABLE t (v)"]).await {
            Err(StoreError::NotLeader { leader: Some(n) }) => Some(n),
            Err(StoreError::NotLeader { leader: None }) => None,
            other => panic!("a follower store answered a write with {other:?}"),
        }
    })
    .await;
    assert_eq!(named, c.stores[l].info);
    for s in &c.stores {
        let tables = s
            .rows("SELECT name FROM sqlite_master WHERE name = 't'")
            .await;
        assert!(tables.is_empty(), "store {}: {tables:?}", s.info.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_store_stops_receiving_entries() {
    // Steps: 3 stores and a table on all of them; the leader removes one follower; the two
    // that remain list only each other. Ten writes follow: the remaining follower applies
    // them all, the removed store none (its log ends before the first of them).
    let c = StoreCluster::start(3).await;
    let l = c.wait_for_leader().await;
    let (kept, gone) = (c.others(l)[0], c.others(l)[1]);
    let (leader, kept, gone) = (&c.stores[l], &c.stores[kept], &c.stores[gone]);
    let r = leader
        .execute(&["CREATE TABLE t (v)"])
        .await
        .expect("create");
    for s in &c.stores {
        s.wait_applied(r.raft_index.unwrap_or(0)).await;
    }

    leader
        .store
        .remove_node(&gone.info.id)
        .await
        .expect("remove a follower");
    let remaining = voters(&[leader, kept]);
    for s in [leader, kept] {
        wait_until(CLUSTER_WAIT, "two voters to remain", || {
            let ok = members(s) == remaining;
            async move { ok }
        })
        .await;
    }

    let mut indexes = Vec::new();
    for v in 0..10 {
        let sql = format!("INSERT INTO t VALUES({v})");
        let r = leader.execute(&[&sql]).await.expect("write after removal");
        indexes.push(r.raft_index.unwrap_or(0));
    }
    kept.wait_applied(indexes[9]).await;
    assert_eq!(
        kept.rows("SELECT COUNT(*) FROM t").await,
        vec![vec![Value::Int(10)]]
    );
    let gone_last = gone
        .store
        .raft()
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0);
    assert!(
        gone_last < indexes[0],
        "the removed store has entry {gone_last}, the first write after its removal is {}",
        indexes[0]
    );
    assert_eq!(
        gone.rows("SELECT COUNT(*) FROM t").await,
        vec![vec![Value::Int(0)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_catches_up_from_a_snapshot_after_log_compaction() {
    // Steps: 3 stores; 60 single-row writes on the leader; the leader snapshots and compacts
    // its whole log (no trailing entries), so the entries that made the rows are gone. A 4th,
    // empty store is added by the leader (as a join does): only the snapshot can bring it up
    // to date. It ends with every row, its Raft state shows the installed snapshot, and its
    // own log holds fewer entries than the snapshot covers.
    let c = StoreCluster::start(3).await;
    let l = c.wait_for_leader().await;
    let leader = &c.stores[l];
    leader
        .execute(&["CREATE TABLE t (id INTEGER PRIMARY KEY)"])
        .await
        .expect("create");
    let mut last = 0;
    for i in 0..60 {
        let sql = format!("INSERT INTO t VALUES({i})");
        last = leader
            .execute(&[&sql])
            .await
            .expect("write")
            .raft_index
            .unwrap_or(0);
    }
    leader.store.snapshot(Some(0)).await.expect("snapshot");
    let snap = leader
        .store
        .raft()
        .metrics()
        .borrow_watched()
        .snapshot
        .map(|s| s.index)
        .unwrap_or(0);
    assert!(
        snap >= last,
        "the snapshot covers every write: {snap} < {last}"
    );
    wait_until(CLUSTER_WAIT, "the leader to compact its log", || {
        let purged = leader
            .store
            .raft()
            .metrics()
            .borrow_watched()
            .purged
            .map(|p| p.index);
        async move { purged >= Some(snap) }
    })
    .await;

    let new = TestStore::open("4").await;
    leader
        .store
        .add_member(new.info.clone(), true)
        .await
        .expect("add the new store");
    new.wait_applied(last).await;
    let want: Vec<Vec<Value>> = (0..60).map(|i| vec![Value::Int(i)]).collect();
    assert_eq!(new.rows("SELECT id FROM t ORDER BY id").await, want);
    let installed = new
        .store
        .raft()
        .metrics()
        .borrow_watched()
        .snapshot
        .map(|s| s.index);
    assert!(
        installed >= Some(snap),
        "the new store installed the leader's snapshot: {installed:?} < {snap}"
    );
    assert!(
        (new.store.log_len() as u64) < snap,
        "the new store's log holds {} entries; the snapshot covers {snap}",
        new.store.log_len()
    );
    let all: Vec<&TestStore> = c.stores.iter().chain([&new]).collect();
    assert_eq!(members(leader), voters(&all));
}
