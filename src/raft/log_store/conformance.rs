//! openraft's storage conformance suite and this log's own durability tests.

use std::time::Duration;

use openraft::storage::RaftLogStorageExt;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use super::*;
use crate::db::{Db, DbConfig, Engine};
use crate::raft::{EntryPayload, Membership, NodeId, NodeInfo, StoredMembership};
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
            Arc::default(),
        )
        .await?;
        Ok((td, log, sm))
    }
}

/// openraft's storage conformance suite, against the real log store and state machine.
#[tokio::test(flavor = "multi_thread")]
async fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder).await
}

/// The log id of `index` in `term`, proposed by `node`.
fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

/// A blank entry of `term` at `index`.
fn at(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

/// A blank entry of term 1 at `index`.
fn blank(index: u64) -> Entry {
    at(1, index)
}

/// What was appended and flushed is there after reopening; truncation and purge persist.
#[tokio::test]
async fn log_survives_reopen() {
    let (_td, path, mut s) = fresh();
    // Returns only once the flush callback fired, i.e. the entries are durable.
    s.blocking_append((1..=10).map(blank)).await.unwrap();
    s.truncate_after(Some(log_id(1, 1, 8))).await.unwrap();
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

/// A leader's own committed vote comes back after a restart as a vote only, so the node
/// leads again only after an election in a newer term; the file keeps the committed vote
/// until a newer one replaces it.
#[tokio::test]
async fn a_committed_vote_reopens_as_a_vote_only() {
    let (_td, path, mut s) = fresh();
    s.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    assert_eq!(
        s.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 1))
    );
    let mut s = reopen(s, &path);
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    s.close();
    let db = redb::Database::open(&path).unwrap();
    let r = db.begin_read().unwrap();
    let stored = r.open_table(META).unwrap().get(KEY_VOTE).unwrap().unwrap();
    let stored: Vote = bincode::deserialize(stored.value()).unwrap();
    assert_eq!(stored, Vote::new_committed(3, 1));
}

/// An entry of term 1 at `index` carrying 1 MiB (every byte `index as u8`).
fn mib_entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(crate::command::Command::Load(vec![index as u8; 1 << 20])),
    }
}

/// While the writer waits for space, redb refuses reads (or is being reopened): a read of
/// entries only on disk waits instead of failing (openraft would stop Raft), and returns them
/// once the database is back. Once the writer no longer waits, a failing read fails.
#[tokio::test]
async fn a_disk_read_waits_while_the_writer_waits_for_space() {
    let (_td, _, mut s) = fresh();
    s.blocking_append((1..=8).map(mib_entry)).await.unwrap();
    // Entry 1 has left memory (more than CACHE_BYTES came after it).
    // What the writer does on a full disk: says it waits, and has no database while it
    // reopens it.
    s.space_wait.store(true, Ordering::SeqCst);
    let db = s.db.write().unwrap().take().unwrap();
    let mut reader = s.clone();
    let mut read = std::pin::pin!(reader.limited_get_log_entries(1, 2));
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut read).await;
    assert!(
        waited.is_err(),
        "the read returned instead of waiting: {waited:?}"
    );
    *s.db.write().unwrap() = Some(db);
    s.space_wait.store(false, Ordering::SeqCst);
    let got = read.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log_id, log_id(1, 1, 1));
    // No wait announced: the error comes back (after one retry).
    let db = s.db.write().unwrap().take().unwrap();
    let err = s.limited_get_log_entries(1, 2).await.unwrap_err();
    assert!(err.to_string().contains("reopened"), "{err}");
    *s.db.write().unwrap() = Some(db);
    s.close();
}

/// More than the memory budget of large entries: the oldest leave memory once durable
/// and are read back from disk; a replication read is capped in bytes.
#[tokio::test]
async fn large_entries_leave_memory_and_are_read_from_disk() {
    let (_td, _, mut s) = fresh();
    s.blocking_append((1..=48).map(mib_entry)).await.unwrap();
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
            EntryPayload::Normal(crate::command::Command::Load(b)) => {
                assert_eq!(b[0], (i + 1) as u8)
            }
            _ => panic!("payload"),
        }
    }
    let some = s.limited_get_log_entries(1, 49).await.unwrap();
    assert!(!some.is_empty() && some.len() <= 2, "{}", some.len());
    assert_eq!(s.len(), 48);
    s.truncate_after(Some(log_id(1, 1, 9))).await.unwrap();
    assert_eq!(s.last_log_id(), Some(log_id(1, 1, 9)));
    s.close();
}

/// The commit index is written with the next batch (or at close), never on its own, and
/// survives truncations (it is kept in the log table, past every entry).
#[tokio::test]
async fn the_commit_index_rides_with_the_next_batch_and_is_kept_at_close() {
    let (_td, path, mut s) = fresh();
    s.blocking_append((1..=3).map(blank)).await.unwrap();
    s.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
    s.blocking_append((4..=7).map(blank)).await.unwrap();
    s.save_committed(Some(log_id(1, 1, 5))).await.unwrap();
    s.truncate_after(Some(log_id(1, 1, 5))).await.unwrap();
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
/// A new, empty log in a temporary directory (kept alive by the returned `TempDir`).
fn fresh() -> (TempDir, std::path::PathBuf, LogStore) {
    let td = TempDir::new().unwrap();
    let path = td.path().join("log.redb");
    let s = LogStore::open(&path).unwrap();
    (td, path, s)
}

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
    let (_td, path, mut s) = fresh();
    s.blocking_append((1..=12).map(|i| at(1, i))).await.unwrap();
    s.truncate_after(Some(log_id(1, 1, 3))).await.unwrap();
    s.blocking_append((4..=5).map(|i| at(2, i))).await.unwrap();
    let mut s = reopen(s, &path);
    let want: Vec<(u64, u64)> = (1..=3).map(|i| (1, i)).chain([(2, 4), (2, 5)]).collect();
    assert_eq!(ids(&mut s).await, want);
    s.truncate_after(Some(log_id(2, 1, 4))).await.unwrap();
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
    let (_td, path, mut s) = fresh();
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
    let (_td, path, s) = fresh();
    let e = LogStore::open(&path).err().expect("second open");
    assert!(e.to_string().contains("another sqlraftd"), "{e}");
    s.close();
    LogStore::open(&path).unwrap().close();
}

/// Entries are readable, and counted in the log state, as soon as `append` returns, while
/// their flush is still pending: openraft 0.10 replicates them from the log reader before
/// they are durable. The callback fires only once they are.
#[tokio::test]
// The stalling guard is held across awaits on purpose (the writer is another thread).
#[allow(clippy::await_holding_lock)]
async fn appended_entries_are_readable_before_they_are_flushed() {
    let (_td, _, mut s) = fresh();
    s.blocking_append((1..=3).map(blank)).await.unwrap();
    let mut reader = s.get_log_reader().await;
    // The writer commits with the database read-locked: holding it for writing stalls the
    // flush, as a slow disk would.
    let db = s.db.clone();
    let stall = db.write().unwrap();
    let (tx, flushed) = TypeConfig::oneshot();
    tokio::pin!(flushed);
    s.append((4..=6).map(blank), IOFlushed::signal(tx))
        .await
        .unwrap();
    let got: Vec<u64> = reader
        .try_get_log_entries(1..=6)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(got, (1..=6).collect::<Vec<_>>());
    let some = reader.limited_get_log_entries(4, 7).await.unwrap();
    assert_eq!(some.first().map(|e| e.log_id.index), Some(4));
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id(1, 1, 6)));
    let early = tokio::time::timeout(Duration::from_millis(50), flushed.as_mut()).await;
    assert!(early.is_err(), "flushed while the write was stalled");
    drop(stall);
    assert!(flushed.await.unwrap().is_ok());
    s.close();
}

/// `truncate_after` keeps the given entry and removes the later ones (all for `None`); past
/// the end it removes nothing.
#[tokio::test]
async fn truncate_after_keeps_the_given_entry() {
    let (_td, path, mut s) = fresh();
    s.blocking_append((1..=6).map(blank)).await.unwrap();
    s.truncate_after(Some(log_id(1, 1, 9))).await.unwrap();
    assert_eq!(s.last_log_id(), Some(log_id(1, 1, 6)));
    s.truncate_after(Some(log_id(1, 1, 4))).await.unwrap();
    assert_eq!(s.last_log_id(), Some(log_id(1, 1, 4)));
    let mut s = reopen(s, &path);
    assert_eq!(
        ids(&mut s).await,
        (1..=4).map(|i| (1, i)).collect::<Vec<_>>()
    );
    s.truncate_after(None).await.unwrap();
    let mut s = reopen(s, &path);
    assert!(ids(&mut s).await.is_empty());
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
    s.close();
}

/// Bytes written by openraft 0.9.25 (bincode 1, as this store writes them; produced by a
/// program built against 0.9.25) for log id (term 3, node 7, index 42), a committed vote of
/// term 5 by node 9, entries and a membership.
mod openraft_0_9 {
    pub const LOG_ID: &str = "030000000000000007000000000000002a00000000000000";
    pub const SOME_LOG_ID: &str = "01030000000000000007000000000000002a00000000000000";
    pub const VOTE: &str = "0500000000000000090000000000000001";
    pub const BLANK: &str = "030000000000000007000000000000002a0000000000000000000000";
    /// Configs `[{7}]`, nodes 7 (`n1`, `a:1`, `b:2`, https) and 8 (default).
    const MEMBERSHIP: &str = "0100000000000000010000000000000007000000000000000200000000000000\
        070000000000000002000000000000006e310300000000000000613a31030000\
        0000000000623a32010800000000000000000000000000000000000000000000\
        00000000000000000000";

    pub fn membership_entry() -> String {
        format!("{LOG_ID}02000000{MEMBERSHIP}")
    }

    pub fn stored_membership() -> String {
        format!("{SOME_LOG_ID}{MEMBERSHIP}")
    }

    pub fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}

fn golden_membership() -> Membership {
    let nodes = [
        (
            7,
            NodeInfo {
                id: "n1".into(),
                raft_addr: "a:1".into(),
                api_addr: "b:2".into(),
                api_https: true,
            },
        ),
        (8, NodeInfo::default()),
    ];
    Membership::new(
        vec![[7].into()],
        nodes.into_iter().collect::<BTreeMap<_, _>>(),
    )
    .unwrap()
}

/// The serde shapes this log stores are those of openraft 0.9: its bytes decode to the same
/// values and re-encode to the same bytes.
#[test]
fn openraft_0_9_encodings_are_unchanged() {
    use openraft_0_9::*;
    fn same<T>(hex: &str, want: T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
    {
        let got: T = bincode::deserialize(&bytes(hex)).unwrap();
        assert_eq!(got, want);
        assert_eq!(bincode::serialize(&want).unwrap(), bytes(hex));
    }
    let id = log_id(3, 7, 42);
    same(LOG_ID, id);
    same(SOME_LOG_ID, Some(id));
    same(VOTE, Vote::new_committed(5, 9));
    same(
        BLANK,
        Entry {
            log_id: id,
            payload: EntryPayload::Blank,
        },
    );
    same(
        &membership_entry(),
        Entry {
            log_id: id,
            payload: EntryPayload::Membership(golden_membership()),
        },
    );
    same(
        &stored_membership(),
        StoredMembership::new(Some(id), golden_membership()),
    );
}

/// A log whose records were written by openraft 0.9 opens, with its vote, purge point,
/// commit index and entries.
#[tokio::test]
async fn logs_written_by_openraft_0_9_load() {
    use openraft_0_9::*;
    /// The golden bytes with the index 42 of their (first) log id changed.
    fn reindexed(hex: &str, index: u8) -> Vec<u8> {
        bytes(&hex.replacen("2a00000000000000", &format!("{index:02x}00000000000000"), 1))
    }
    let td = TempDir::new().unwrap();
    let path = td.path().join("log.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut logs = w.open_table(LOGS).unwrap();
            logs.insert(43, reindexed(BLANK, 43).as_slice()).unwrap();
            logs.insert(44, reindexed(&membership_entry(), 44).as_slice())
                .unwrap();
            logs.insert(COMMITTED, reindexed(SOME_LOG_ID, 43).as_slice())
                .unwrap();
            let mut meta = w.open_table(META).unwrap();
            meta.insert(KEY_VOTE, bytes(VOTE).as_slice()).unwrap();
            meta.insert(KEY_PURGED, bytes(LOG_ID).as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let mut s = LogStore::open(&path).unwrap();
    // Stored committed; read back as a vote only (`without_leadership`).
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(5, 9)));
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(3, 7, 43)));
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(3, 7, 42)));
    assert_eq!(st.last_log_id, Some(log_id(3, 7, 44)));
    let got = s.try_get_log_entries(..).await.unwrap();
    let want = vec![
        Entry {
            log_id: log_id(3, 7, 43),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(3, 7, 44),
            payload: EntryPayload::Membership(golden_membership()),
        },
    ];
    assert_eq!(got, want);
    s.close();
}
