//! openraft's storage conformance suite and this log's own durability tests.

use openraft::storage::RaftLogStorageExt;
use openraft::testing::log_id;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::*;
use crate::db::{Db, DbConfig, Engine};
use crate::store::snapshot::SnapshotStore;
use crate::store::state_machine::StateMachine;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let td = TempDir::new().expect("temp dir");
        let log = LogStore::open(&td.path().join("raft-log.redb"))?;
        let engine = Engine::open(&DbConfig::default()).expect("engine");
        let snapshots = SnapshotStore::open(&td.path().join("snapshots")).expect("snapshots");
        let sm = StateMachine::open(
            Db::spawn(engine),
            snapshots,
            &td.path().join("parts"),
            Arc::default(),
            Arc::default(),
            None,
        )
        .await?;
        Ok((td, log, sm))
    }
}

/// openraft's storage conformance suite, against the real log store and state machine.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

/// A blank entry of `term` at `index`.
fn at(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: openraft::EntryPayload::Blank,
    }
}

/// A blank entry of term 1 at `index`.
fn blank(index: u64) -> Entry {
    at(1, index)
}

/// What was appended and flushed is there after reopening; truncation and purge persist.
#[tokio::test]
async fn log_survives_reopen() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("log.redb");
    let mut s = LogStore::open(&path).unwrap();
    // Returns only once the flush callback fired, i.e. the entries are durable.
    s.blocking_append((1..=10).map(blank)).await.unwrap();
    s.truncate(log_id(1, 1, 9)).await.unwrap();
    s.purge(log_id(1, 1, 3)).await.unwrap();
    s.save_vote(&Vote::new(2, 7)).await.unwrap();
    let mut s = reopen(s, &path);
    assert_eq!(
        ids(&mut s).await,
        (4..=8).map(|i| (1, i)).collect::<Vec<_>>()
    );
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 7)));
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(1, 1, 8)));
}

/// More than the memory budget of large entries: the oldest leave memory once durable
/// and are read back from disk; a replication read is capped in bytes.
#[tokio::test]
async fn large_entries_leave_memory_and_are_read_from_disk() {
    let td = TempDir::new().unwrap();
    let mut s = LogStore::open(&td.path().join("log.redb")).unwrap();
    let entry = |i: u64| Entry {
        log_id: log_id(1, 1, i),
        payload: openraft::EntryPayload::Normal(crate::command::Command::Load(vec![
            i as u8;
            1 << 20
        ])),
    };
    s.blocking_append((1..=48).map(entry)).await.unwrap();
    assert!(
        s.cached_bytes() <= CACHE_BYTES + (2 << 20),
        "{}",
        s.cached_bytes()
    );
    let all = s.try_get_log_entries(1..=48).await.unwrap();
    assert_eq!(all.len(), 48);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.log_id.index, i as u64 + 1);
        match &e.payload {
            openraft::EntryPayload::Normal(crate::command::Command::Load(b)) => {
                assert_eq!(b[0], (i + 1) as u8)
            }
            _ => panic!("payload"),
        }
    }
    let some = s.limited_get_log_entries(1, 49).await.unwrap();
    assert!(!some.is_empty() && some.len() <= 2, "{}", some.len());
    assert_eq!(s.len(), 48);
    s.truncate(log_id(1, 1, 10)).await.unwrap();
    assert_eq!(s.last_log_id(), Some(log_id(1, 1, 9)));
    s.close();
}

/// The commit index is written with the next batch (or at close), never on its own, and
/// survives truncations (it is kept in the log table, past every entry).
#[tokio::test]
async fn the_commit_index_rides_with_the_next_batch_and_is_kept_at_close() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("log.redb");
    let mut s = LogStore::open(&path).unwrap();
    s.blocking_append((1..=3).map(blank)).await.unwrap();
    s.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
    s.blocking_append((4..=7).map(blank)).await.unwrap();
    s.save_committed(Some(log_id(1, 1, 5))).await.unwrap();
    s.truncate(log_id(1, 1, 6)).await.unwrap();
    let mut s = reopen(s, &path);
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 1, 5)));
    assert_eq!(
        ids(&mut s).await,
        (1..=5).map(|i| (1, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 1, 5))
    );
    s.close();
}

/// A log written before the commit index moved to the log table still has it read from the
/// meta table.
#[tokio::test]
async fn a_commit_index_in_the_meta_table_is_still_read() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("log.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut logs = w.open_table(LOGS).unwrap();
            for i in 1..=4 {
                logs.insert(i, bincode::serialize(&blank(i)).unwrap().as_slice())
                    .unwrap();
            }
            let mut meta = w.open_table(META).unwrap();
            let committed = bincode::serialize::<Option<LogId>>(&Some(log_id(1, 1, 3))).unwrap();
            meta.insert(KEY_COMMITTED, committed.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let mut s = LogStore::open(&path).unwrap();
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));
    assert_eq!(
        ids(&mut s).await,
        (1..=4).map(|i| (1, i)).collect::<Vec<_>>()
    );
    // Written from now on in the log table, which wins over the old key.
    s.save_committed(Some(log_id(1, 1, 4))).await.unwrap();
    let mut s = reopen(s, &path);
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 1, 4)));
    s.close();
}

/// Closes the log and opens it again, as a restart does.
fn reopen(s: LogStore, path: &Path) -> LogStore {
    s.close();
    LogStore::open(path).unwrap()
}

async fn ids(s: &mut LogStore) -> Vec<(u64, u64)> {
    s.try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

/// Entries removed by a truncation never come back after a restart, and their replacements
/// (of a newer term) are kept.
#[tokio::test]
async fn truncated_entries_never_come_back() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("raft-log.redb");
    let mut s = LogStore::open(&path).unwrap();
    s.blocking_append((1..=12).map(|i| at(1, i))).await.unwrap();
    s.truncate(log_id(1, 1, 4)).await.unwrap();
    s.blocking_append((4..=5).map(|i| at(2, i))).await.unwrap();
    let mut s = reopen(s, &path);
    let want: Vec<(u64, u64)> = (1..=3).map(|i| (1, i)).chain([(2, 4), (2, 5)]).collect();
    assert_eq!(ids(&mut s).await, want);
    s.truncate(log_id(2, 1, 5)).await.unwrap();
    s.blocking_append([at(3, 5)]).await.unwrap();
    let mut s = reopen(s, &path);
    let want: Vec<(u64, u64)> = (1..=3).map(|i| (1, i)).chain([(2, 4), (3, 5)]).collect();
    assert_eq!(ids(&mut s).await, want);
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id(3, 1, 5)));
    s.close();
}

/// A purge is kept across restarts, and one past the end (a snapshot installed on a
/// follower that lagged) lets the log resume right after it.
#[tokio::test]
async fn purges_persist_and_the_log_resumes_after_one_past_its_end() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("raft-log.redb");
    let mut s = LogStore::open(&path).unwrap();
    s.blocking_append((1..=12).map(blank)).await.unwrap();
    s.purge(log_id(1, 1, 7)).await.unwrap();
    s.blocking_append([blank(13)]).await.unwrap();
    let mut s = reopen(s, &path);
    assert_eq!(
        ids(&mut s).await,
        (8..=13).map(|i| (1, i)).collect::<Vec<_>>()
    );
    s.purge(log_id(1, 1, 50)).await.unwrap();
    s.blocking_append([blank(51), blank(52)]).await.unwrap();
    let mut s = reopen(s, &path);
    assert_eq!(ids(&mut s).await, vec![(1, 51), (1, 52)]);
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 50)));
    assert_eq!(st.last_log_id, Some(log_id(1, 1, 52)));
    s.close();
}

/// A second process (or a second store in this one) on the same log is refused, by name,
/// and the log opens again once the first closes.
#[tokio::test]
async fn a_log_in_use_is_refused() {
    let td = TempDir::new().unwrap();
    let path = td.path().join("raft-log.redb");
    let s = LogStore::open(&path).unwrap();
    let e = LogStore::open(&path).err().expect("second open");
    assert!(e.to_string().contains("another sqlraftd"), "{e}");
    s.close();
    LogStore::open(&path).unwrap().close();
}
