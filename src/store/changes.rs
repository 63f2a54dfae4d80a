//! What the store hands change data capture (`src/cdc`), and the CDC progress it replicates.
//!
//! The state machine gives each applied entry's committed row changes to a [`ChangeSink`]
//! (on the database thread, so it must not block), asks it to make them durable before a
//! snapshot lets the log go, and tells it when a snapshot from the leader replaced entries
//! this node never applied. The delivery progress ([`CdcProgress`]) is part of the replicated
//! state: applied from `Command::CdcProgress` entries, and carried by snapshots in their id
//! (`<term>-<index>-<millis>-cdc-<delivered>[-<from>-<to>]`), since a snapshot is otherwise
//! only the SQLite file.

use futures_util::future::BoxFuture;

use super::StoreError;
pub use crate::command::CdcProgress;
use crate::db::capture::RowChange;

/// Where captured changes go.
pub trait ChangeSink: Send + Sync {
    /// The committed row changes of the entry at `index`, applied at `ts_ms`. Called on the
    /// database thread: must return at once.
    fn changes(&self, index: u64, ts_ms: u64, changes: Vec<RowChange>);
    /// Resolves once everything handed over so far is durable.
    fn flush(&self) -> BoxFuture<'static, ()>;
    /// A snapshot from the leader replaced the database: entries up to `index` were never
    /// applied here, so their changes are not in this node's queue. Resolves once handed
    /// over (not yet durable: see `flush`).
    fn skipped_to(&self, index: u64) -> BoxFuture<'static, ()>;
}

impl super::Store {
    /// The delivery progress as this node has applied it.
    pub fn cdc_progress(&self) -> CdcProgress {
        self.applied().lock().cdc
    }

    /// On the leader: confirms its leadership with a quorum and waits until everything
    /// committed before now is applied here, so [`Store::cdc_progress`] is the cluster's.
    ///
    /// [`Store::cdc_progress`]: super::Store::cdc_progress
    pub async fn cdc_barrier(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.ensure_linearizable(Some(timeout)).await
    }

    /// Records delivery progress through the log; returns its index once applied here.
    pub async fn record_cdc_progress(&self, p: CdcProgress) -> Result<u64, StoreError> {
        let (resp, index) = self
            .propose_one(crate::command::Command::CdcProgress(p))
            .await?;
        match resp.error {
            Some(e) => Err(StoreError::Raft(e)),
            None => Ok(index),
        }
    }
}

/// The suffix a snapshot id carries for `p`.
pub(crate) fn snapshot_suffix(p: &CdcProgress) -> String {
    match p.sending {
        _ if *p == CdcProgress::default() => String::new(),
        Some((a, b)) => format!("-cdc-{}-{a}-{b}", p.delivered),
        None => format!("-cdc-{}", p.delivered),
    }
}

/// The progress a snapshot id carries (none: nothing delivered yet).
pub(crate) fn from_snapshot_id(id: &str) -> CdcProgress {
    let Some((_, rest)) = id.split_once("-cdc-") else {
        return CdcProgress::default();
    };
    let n: Vec<u64> = rest.split('-').filter_map(|s| s.parse().ok()).collect();
    match n.as_slice() {
        [d] => CdcProgress {
            delivered: *d,
            sending: None,
        },
        [d, a, b] => CdcProgress {
            delivered: *d,
            sending: Some((*a, *b)),
        },
        _ => CdcProgress::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_a_snapshot_id() {
        for p in [
            CdcProgress::default(),
            CdcProgress {
                delivered: 42,
                sending: None,
            },
            CdcProgress {
                delivered: 42,
                sending: Some((45, 50)),
            },
        ] {
            let id = format!("3-99-1700000000000{}", snapshot_suffix(&p));
            assert_eq!(from_snapshot_id(&id), p, "{id}");
        }
        assert_eq!(from_snapshot_id("2-7-1"), CdcProgress::default());
    }
}
