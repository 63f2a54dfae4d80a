//! Recovery after permanent quorum loss: `<data>/raft/peers.json`, as rqlite documents it.
//!
//! Owns: reading the file (`[{"id", "address", "non_voter"}]`), checking it, and making its
//! membership this node's before Raft starts; then the file is deleted.
//! Does not: start Raft or elect anyone (the survivors elect a leader as usual, and each
//! tells the leader its API address afterwards: see `cluster::announce`).
//!
//! How: the membership is appended to the local log as a new configuration entry, so it
//! becomes the effective configuration at start (Raft uses the latest configuration in its
//! log, committed or not), and the data is untouched. The entry's log id is computed from the
//! node's log and vote alone, so survivors with the same log write the very same entry at the
//! same index, and survivors with different logs write entries whose ids differ (Raft's log
//! matching then reconciles them from whichever survivor is elected):
//! - its term is one above every term this node has seen (its vote's, its last entry's);
//! - its leader id's node part is the leader id of the node's last entry, packed: its term in
//!   the high 32 bits, its node id folded to 32 bits in the low ones (not a node: a vote for
//!   it is never a leader). Two different logs whose last entries share an index and whose
//!   highest seen terms are equal have last entries of different leaders (Raft's log
//!   matching; openraft's leader ids let two leaders share a term, hence the node too), so
//!   their recovery entries differ, and they order as Raft orders the logs' last entries
//!   (by term first): the more up-to-date log wins the election. With the smallest voter id
//!   there, as before, such logs wrote the same id and the entries before it were never
//!   compared again. (Two leaders whose node ids fold to the same 32 bits would still
//!   collide: about one chance in four billion per pair.)
//!
//! Entries that were logged but never committed stay in the log and are committed by the new
//! leader, as hashicorp's `RecoverCluster` does for rqlite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::vote::RaftLeaderId;
use serde::Deserialize;

use super::StoreError;
use crate::raft::log_store::LogStore;
use crate::raft::{
    node_id_of, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, NodeId, NodeInfo, Vote,
};

/// One member as `peers.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: String,
    pub address: String,
    #[serde(default)]
    pub non_voter: bool,
}

/// Where the recovery file is looked for.
pub fn peers_file(data_dir: &Path) -> PathBuf {
    data_dir.join("raft").join("peers.json")
}

/// Reads and checks `peers.json`; `None` when there is no file.
pub fn read_peers(file: &Path, me: &str) -> Result<Option<Vec<Peer>>, StoreError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io(format!(
                "cannot read {}: {e}",
                file.display()
            )))
        }
    };
    let bad = |why: String| StoreError::Io(format!("{}: {why}", file.display()));
    let peers: Vec<Peer> = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not a list of {{\"id\", \"address\", \"non_voter\"}}: {e}"
        ))
    })?;
    let mut ids = BTreeSet::new();
    for p in &peers {
        if p.id.is_empty() || p.address.is_empty() {
            return Err(bad("every entry needs an \"id\" and an \"address\"".into()));
        }
        if !ids.insert(p.id.as_str()) {
            return Err(bad(format!("id {:?} is listed twice", p.id)));
        }
    }
    if !peers.iter().any(|p| !p.non_voter) {
        return Err(bad("lists no voter".into()));
    }
    if !peers.iter().any(|p| p.id == me) {
        return Err(bad(format!(
            "does not list this node (id {me:?}); write the file on every surviving node, listing each of them"
        )));
    }
    Ok(Some(peers))
}

/// The recovery entry's leader-id node part: `leader`'s term (at most `u32::MAX`) in the high
/// 32 bits, its node id folded to 32 bits in the low ones (see the module doc).
fn author_of(leader: &CommittedLeaderId) -> NodeId {
    let term = leader.term.min(u64::from(u32::MAX));
    let node = leader.node_id;
    (term << 32) | ((node ^ (node >> 32)) & 0xffff_ffff)
}

/// The configuration entry and vote that make `peers` this node's membership, given the
/// node's last log id and vote. Pure, so survivors with the same log and vote compute the
/// same (see the module doc for survivors whose logs differ). Fails when the
/// peers make no valid membership (no voter), which [`read_peers`] rules out.
pub fn recovery_entry(
    peers: &[Peer],
    last_log: Option<LogId>,
    vote: Option<Vote>,
) -> Result<(Entry, Vote), StoreError> {
    let voters: BTreeSet<NodeId> = peers
        .iter()
        .filter(|p| !p.non_voter)
        .map(|p| node_id_of(&p.id))
        .collect();
    let nodes: BTreeMap<NodeId, NodeInfo> = peers
        .iter()
        .map(|p| {
            let info = NodeInfo {
                id: p.id.clone(),
                raft_addr: p.address.clone(),
                // Learned from each node once a leader is elected (`cluster::announce`).
                api_addr: String::new(),
                api_https: false,
            };
            (node_id_of(&p.id), info)
        })
        .collect();
    let seen = last_log
        .map(|l| l.leader_id.term)
        .unwrap_or(0)
        .max(vote.map(|v| v.leader_id().term).unwrap_or(0));
    let term = seen + 1;
    let author = last_log.map_or(0, |l| author_of(&l.leader_id));
    let membership = Membership::new(vec![voters], nodes)
        .map_err(|e| StoreError::Io(format!("peers.json: not a valid membership: {e}")))?;
    let entry = Entry {
        log_id: LogId::new(
            CommittedLeaderId::new(term, author),
            last_log.map(|l| l.index + 1).unwrap_or(0),
        ),
        payload: EntryPayload::Membership(membership),
    };
    Ok((entry, Vote::new(term, author)))
}

/// Applies `<data>/raft/peers.json` if there is one (before Raft starts), then deletes it.
/// Creates `<data>/raft/` so operators find where the file goes. Returns whether a file was
/// applied.
pub async fn recover(data_dir: &Path, me: &NodeInfo, log: &LogStore) -> Result<bool, StoreError> {
    let dir = data_dir.join("raft");
    std::fs::create_dir_all(&dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let file = peers_file(data_dir);
    let Some(peers) = read_peers(&file, &me.id)? else {
        return Ok(false);
    };
    fn storage(e: impl std::fmt::Display) -> StoreError {
        StoreError::Raft(e.to_string())
    }
    // Through openraft's storage traits, as Raft itself reads and writes the log.
    let mut log = log.clone();
    let state = log.get_log_state().await.map_err(storage)?;
    let vote = log
        .get_log_reader()
        .await
        .read_vote()
        .await
        .map_err(storage)?;
    let (entry, new_vote) = recovery_entry(&peers, state.last_log_id, vote)?;
    tracing::warn!(
        file = %file.display(),
        members = ?peers.iter().map(|p| format!("{}@{}{}", p.id, p.address, if p.non_voter { " (non-voter)" } else { "" })).collect::<Vec<_>>(),
        index = entry.log_id.index,
        "recovering the cluster: the membership is replaced by peers.json"
    );
    log.save_vote(&new_vote).await.map_err(storage)?;
    // Returns once the entry is durable.
    log.blocking_append([entry]).await.map_err(storage)?;
    std::fs::remove_file(&file)
        .map_err(|e| StoreError::Io(format!("cannot delete {}: {e}", file.display())))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, voter: bool) -> Peer {
        Peer {
            id: id.into(),
            address: format!("10.0.0.{id}:4002"),
            non_voter: !voter,
        }
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("peers.json");
        std::fs::write(&f, text).unwrap();
        (d, f)
    }

    #[test]
    fn the_file_is_checked_and_every_mistake_named() {
        let cases = [
            ("not json", "not a list"),
            (r#"[{"id":"1"}]"#, "not a list"),
            (r#"[{"id":"1","address":"a:1","voter":true}]"#, "not a list"),
            (r#"[{"id":"","address":"a:1"}]"#, "needs an \"id\""),
            (
                r#"[{"id":"1","address":"a:1"},{"id":"1","address":"b:1"}]"#,
                "listed twice",
            ),
            (
                r#"[{"id":"1","address":"a:1","non_voter":true}]"#,
                "no voter",
            ),
            (r#"[{"id":"2","address":"a:1"}]"#, "does not list this node"),
        ];
        for (text, want) in cases {
            let (_d, f) = write(text);
            let err = read_peers(&f, "1").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("peers.json"), "{text}: {err}");
        }
        let (_d, f) =
            write(r#"[{"id":"1","address":"a:1"},{"id":"2","address":"b:1","non_voter":true}]"#);
        let peers = read_peers(&f, "1").unwrap().unwrap();
        assert_eq!(peers.len(), 2);
        assert!(peers[1].non_voter);
        assert_eq!(read_peers(&f.with_extension("none"), "1").unwrap(), None);
    }

    #[test]
    fn survivors_with_the_same_log_write_the_same_entry() {
        let peers = [peer("1", true), peer("2", true), peer("3", false)];
        let last = Some(LogId::new(CommittedLeaderId::new(4, 77), 120));
        let vote = Some(Vote::new(5, 77));
        let (a, va) = recovery_entry(&peers, last, vote).unwrap();
        let (b, vb) = recovery_entry(&peers, last, vote).unwrap();
        assert_eq!(a.log_id, b.log_id);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(va, vb);
        // Above every term seen, right after the last entry.
        assert_eq!(a.log_id.leader_id.term, 6);
        assert_eq!(a.log_id.index, 121);
        assert_eq!(va.leader_id().term, 6);
        let EntryPayload::Membership(m) = &a.payload else {
            panic!("{a:?}")
        };
        let voters: Vec<_> = m.voter_ids().collect();
        assert_eq!(voters.len(), 2);
        assert!(
            m.get_node(&node_id_of("3")).is_some(),
            "the non-voter stays a node"
        );
        assert!(!voters.contains(&node_id_of("3")));
    }

    #[test]
    fn survivors_with_different_logs_write_entries_raft_can_tell_apart() {
        let peers = [peer("1", true), peer("2", true)];
        let short = Some(LogId::new(CommittedLeaderId::new(4, 77), 100));
        let long = Some(LogId::new(CommittedLeaderId::new(4, 77), 120));
        let (a, _) = recovery_entry(&peers, short, Some(Vote::new(4, 77))).unwrap();
        let (b, _) = recovery_entry(&peers, long, Some(Vote::new(4, 77))).unwrap();
        // Comparable (the same leader id) so elections can order them; the longer log wins.
        assert!(b.log_id > a.log_id);
        let (c, _) = recovery_entry(&peers, short, Some(Vote::new(9, 1))).unwrap();
        assert!(c.log_id > b.log_id, "a higher term orders first");
    }

    #[test]
    fn logs_whose_last_entries_have_two_leaders_of_one_term_write_different_entries() {
        // openraft's leader ids allow two leaders in one term (two candidates at once):
        // each survivor ends with its own term-5 leader's entry at 120.
        let peers = [peer("1", true), peer("2", true)];
        let a_last = Some(LogId::new(CommittedLeaderId::new(5, node_id_of("1")), 120));
        let b_last = Some(LogId::new(CommittedLeaderId::new(5, node_id_of("2")), 120));
        let vote = Some(Vote::new(5, node_id_of("2")));
        let (a, _) = recovery_entry(&peers, a_last, vote).unwrap();
        let (b, _) = recovery_entry(&peers, b_last, vote).unwrap();
        assert_ne!(a.log_id, b.log_id);
        // A recovery entry that is itself the last entry (a second recovery before any
        // election) is told apart the same way.
        let (c, _) = recovery_entry(&peers, Some(a.log_id), vote).unwrap();
        let (d, _) = recovery_entry(&peers, Some(b.log_id), vote).unwrap();
        assert_ne!(c.log_id, d.log_id);
    }

    #[test]
    fn logs_of_one_length_and_one_highest_term_write_different_entries() {
        // Node a ends with an entry of term 4 and took term 5's leader's vote without its
        // entry at 120; node b has that entry. Both have seen term 5 at most.
        let peers = [peer("1", true), peer("2", true)];
        let a_last = Some(LogId::new(CommittedLeaderId::new(4, 77), 120));
        let b_last = Some(LogId::new(CommittedLeaderId::new(5, 88), 120));
        let vote = Vote::new_committed(5, 88);
        let (a, va) = recovery_entry(&peers, a_last, Some(vote)).unwrap();
        let (b, vb) = recovery_entry(&peers, b_last, Some(vote)).unwrap();
        assert_eq!((a.log_id.index, b.log_id.index), (121, 121));
        assert_ne!(a.log_id, b.log_id, "Raft must compare the logs before them");
        // b's log is the more up to date (its last entry has the newer term): it still is.
        assert!(b.log_id > a.log_id);
        // Each vote is at least what the node held, and names no leader.
        for v in [va, vb] {
            assert!(v > vote && !v.committed, "{v:?}");
        }
    }
}
