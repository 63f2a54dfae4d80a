//! The durable per-node event queue, independent of the Raft log.
//!
//! One redb file (`<data>/cdc.redb`): each log entry that changed captured rows is one record,
//! keyed by its index, holding its commit time and its payload item already encoded as JSON
//! (so sending and `GET /cdc` only concatenate). Records are appended in index order by one
//! thread (the [`super::Cdc`] writer), each batch in one fsynced transaction, and an index at
//! or below the newest one kept is ignored: a restarted node re-applies the log after its
//! snapshot and produces the same records again. They are deleted once delivered and past
//! `retain`; the Raft log can be compacted whenever it likes.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Highest index ever appended.
const ENQUEUED: &str = "enqueued";
/// Highest index deleted (every record at or below it is gone).
const PRUNED: &str = "pruned";
/// Bytes of the records kept.
const BYTES: &str = "bytes";
/// Entries this node never applied (a snapshot from the leader replaced them): their
/// records are missing here until fetched from a peer ([`Queue::fill`]). 0..0: none.
const GAP_FROM: &str = "gap_from";
const GAP_TO: &str = "gap_to";

/// One log entry's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    /// Milliseconds since the epoch when this node applied the entry.
    pub ts_ms: u64,
    /// How many row changes the item holds (for the counters).
    pub events: u32,
    /// The payload item, `{"index":..,"commit_timestamp":..,"events":[..]}`.
    pub json: Vec<u8>,
}

/// A stored record: its commit time (8 bytes, little-endian), its event count (4 bytes),
/// then its JSON.
const HEADER: usize = 12;

fn encode(r: &Record) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + r.json.len());
    v.extend_from_slice(&r.ts_ms.to_le_bytes());
    v.extend_from_slice(&r.events.to_le_bytes());
    v.extend_from_slice(&r.json);
    v
}

/// The commit time and event count of a stored record.
fn header(index: u64, v: &[u8]) -> Result<(u64, u32), String> {
    match (v.get(..8), v.get(8..HEADER)) {
        (Some(ts), Some(n)) => {
            let (mut t, mut c) = ([0u8; 8], [0u8; 4]);
            t.copy_from_slice(ts);
            c.copy_from_slice(n);
            Ok((u64::from_le_bytes(t), u32::from_le_bytes(c)))
        }
        _ => Err(e("read", format!("record {index} is damaged"))),
    }
}

fn decode(index: u64, v: &[u8]) -> Result<Record, String> {
    let (ts_ms, events) = header(index, v)?;
    Ok(Record {
        index,
        ts_ms,
        events,
        json: v[HEADER..].to_vec(),
    })
}

/// A counter of the `meta` table (0 when never set).
fn meta<T: ReadableTable<&'static str, u64>>(t: &T, key: &str) -> Result<u64, String> {
    Ok(t.get(key)
        .map_err(|err| e("read", err))?
        .map_or(0, |v| v.value()))
}

/// Where the queue stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueState {
    pub enqueued: u64,
    pub pruned: u64,
    pub bytes: u64,
    pub records: u64,
    /// Indexes (inclusive) whose records this node does not hold.
    pub gap: Option<(u64, u64)>,
}

impl QueueState {
    /// Whether every record in `from..=to` that exists is held here, given that every
    /// entry up to `durable` has had its records made durable (entries without captured
    /// changes have none, so `enqueued` alone cannot tell).
    pub fn holds(&self, from: u64, to: u64, durable: u64) -> bool {
        from > self.pruned
            && to <= durable.max(self.enqueued)
            && self.gap.is_none_or(|(a, b)| to < a || from > b)
    }
}

pub struct Queue {
    db: Database,
}

fn e(what: &str, err: impl std::fmt::Display) -> String {
    format!("CDC queue: {what}: {err}")
}

impl Queue {
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Database::builder()
            .set_cache_size(2 << 20)
            .create(path)
            .map_err(|err| e(&format!("cannot open {}", path.display()), err))?;
        let q = Self { db };
        let w = q.db.begin_write().map_err(|err| e("write", err))?;
        {
            w.open_table(EVENTS).map_err(|err| e("open", err))?;
            w.open_table(META).map_err(|err| e("open", err))?;
        }
        w.commit().map_err(|err| e("commit", err))?;
        Ok(q)
    }

    pub fn state(&self) -> Result<QueueState, String> {
        let r = self.db.begin_read().map_err(|err| e("read", err))?;
        let m = r.open_table(META).map_err(|err| e("read", err))?;
        let get = |k: &str| meta(&m, k);
        let events = r.open_table(EVENTS).map_err(|err| e("read", err))?;
        let (gap_from, gap_to) = (get(GAP_FROM)?, get(GAP_TO)?);
        Ok(QueueState {
            enqueued: get(ENQUEUED)?,
            pruned: get(PRUNED)?,
            bytes: get(BYTES)?,
            records: events.len().map_err(|err| e("read", err))?,
            gap: (gap_to > 0 && gap_from <= gap_to).then_some((gap_from, gap_to)),
        })
    }

    /// Appends records in index order, skipping any at or below the newest kept; fsynced
    /// before it returns. Returns how many were new.
    pub fn append(&self, records: &[Record]) -> Result<usize, String> {
        let mut w = self.db.begin_write().map_err(|err| e("write", err))?;
        w.set_durability(Durability::Immediate);
        let mut added = 0;
        {
            let mut m = w.open_table(META).map_err(|err| e("write", err))?;
            let mut events = w.open_table(EVENTS).map_err(|err| e("write", err))?;
            let mut enqueued = meta(&m, ENQUEUED)?;
            let mut bytes = meta(&m, BYTES)?;
            for r in records {
                if r.index <= enqueued {
                    continue;
                }
                let v = encode(r);
                events
                    .insert(r.index, v.as_slice())
                    .map_err(|err| e("write", err))?;
                enqueued = r.index;
                bytes += v.len() as u64;
                added += 1;
            }
            m.insert(ENQUEUED, enqueued)
                .map_err(|err| e("write", err))?;
            m.insert(BYTES, bytes).map_err(|err| e("write", err))?;
        }
        w.commit().map_err(|err| e("commit", err))?;
        Ok(added)
    }

    /// Records with index `from` or later, at most `max` of them and (past the first) at most
    /// `max_bytes` of JSON.
    pub fn read(&self, from: u64, max: usize, max_bytes: usize) -> Result<Vec<Record>, String> {
        let r = self.db.begin_read().map_err(|err| e("read", err))?;
        let events = r.open_table(EVENTS).map_err(|err| e("read", err))?;
        let mut out: Vec<Record> = Vec::new();
        let mut size = 0;
        for item in events.range(from..).map_err(|err| e("read", err))? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(|err| e("read", err))?;
            let v = v.value();
            size += v.len().saturating_sub(HEADER);
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(decode(k.value(), v)?);
        }
        Ok(out)
    }

    /// Deletes records at or below `delivered` that `retain` no longer asks to keep: older
    /// than `max_age_ms` (relative to `now_ms`), or beyond `max_bytes` of delivered records
    /// kept (oldest first). Returns how many went.
    pub fn prune(
        &self,
        delivered: u64,
        now_ms: u64,
        max_age_ms: u64,
        max_bytes: u64,
    ) -> Result<usize, String> {
        // Delivered bytes kept, to know how many of the oldest must go.
        let mut kept: u64 = 0;
        let mut sizes: Vec<(u64, u64, u64)> = Vec::new();
        {
            let r = self.db.begin_read().map_err(|err| e("read", err))?;
            let events = r.open_table(EVENTS).map_err(|err| e("read", err))?;
            for item in events.range(..=delivered).map_err(|err| e("read", err))? {
                let (k, v) = item.map_err(|err| e("read", err))?;
                let v = v.value();
                let (ts, _) = header(k.value(), v)?;
                let len = v.len() as u64;
                kept += len;
                sizes.push((k.value(), ts, len));
            }
        }
        if sizes.is_empty() {
            return Ok(0);
        }
        let mut drop_through = None;
        for (index, ts, len) in &sizes {
            let old = now_ms.saturating_sub(*ts) >= max_age_ms;
            if old || kept > max_bytes {
                drop_through = Some(*index);
                kept -= len;
            } else {
                break;
            }
        }
        let Some(through) = drop_through else {
            return Ok(0);
        };
        let mut w = self.db.begin_write().map_err(|err| e("write", err))?;
        w.set_durability(Durability::Immediate);
        let mut n = 0;
        {
            let mut events = w.open_table(EVENTS).map_err(|err| e("write", err))?;
            let mut m = w.open_table(META).map_err(|err| e("write", err))?;
            let mut freed = 0;
            for (index, _, len) in sizes.iter().take_while(|(i, _, _)| *i <= through) {
                events.remove(index).map_err(|err| e("write", err))?;
                freed += len;
                n += 1;
            }
            let (bytes, pruned) = (meta(&m, BYTES)?, meta(&m, PRUNED)?);
            m.insert(BYTES, bytes.saturating_sub(freed))
                .map_err(|err| e("write", err))?;
            m.insert(PRUNED, pruned.max(through))
                .map_err(|err| e("write", err))?;
        }
        w.commit().map_err(|err| e("commit", err))?;
        Ok(n)
    }

    /// Marks everything at or below `through` as not held here (a snapshot from the leader
    /// replaced this node's database: the entries it covers were never applied here).
    pub fn skip_to(&self, through: u64) -> Result<(), String> {
        let mut w = self.db.begin_write().map_err(|err| e("write", err))?;
        w.set_durability(Durability::Immediate);
        {
            let mut m = w.open_table(META).map_err(|err| e("write", err))?;
            let enqueued = meta(&m, ENQUEUED)?;
            if through > enqueued {
                m.insert(ENQUEUED, through).map_err(|err| e("write", err))?;
                // An earlier gap not yet filled: one range covering both.
                let from = match meta(&m, GAP_TO)? {
                    0 => enqueued + 1,
                    _ => meta(&m, GAP_FROM)?,
                };
                m.insert(GAP_FROM, from).map_err(|err| e("write", err))?;
                m.insert(GAP_TO, through).map_err(|err| e("write", err))?;
            }
        }
        w.commit().map_err(|err| e("commit", err))
    }

    /// Puts records fetched from a peer into the gap and closes it up to `through` (the
    /// peer held every record of `from..=through` there is). Records of the gap below `from`
    /// were not asked for (already delivered and no longer held by the peers): they count as
    /// deleted here, so `GET /cdc` answers 410 for them rather than skipping them.
    pub fn fill(&self, records: &[Record], from: u64, through: u64) -> Result<(), String> {
        let mut w = self.db.begin_write().map_err(|err| e("write", err))?;
        w.set_durability(Durability::Immediate);
        {
            let mut m = w.open_table(META).map_err(|err| e("write", err))?;
            let mut events = w.open_table(EVENTS).map_err(|err| e("write", err))?;
            let (gap_from, to) = (meta(&m, GAP_FROM)?, meta(&m, GAP_TO)?);
            if to == 0 {
                return Ok(());
            }
            if from > gap_from {
                let pruned = meta(&m, PRUNED)?;
                m.insert(PRUNED, pruned.max(from - 1))
                    .map_err(|err| e("write", err))?;
            }
            let from = from.max(gap_from);
            let mut bytes = meta(&m, BYTES)?;
            for r in records.iter().filter(|r| r.index >= from && r.index <= to) {
                let v = encode(r);
                if events
                    .insert(r.index, v.as_slice())
                    .map_err(|err| e("write", err))?
                    .is_none()
                {
                    bytes += v.len() as u64;
                }
            }
            m.insert(BYTES, bytes).map_err(|err| e("write", err))?;
            if through >= to {
                m.insert(GAP_FROM, 0).map_err(|err| e("write", err))?;
                m.insert(GAP_TO, 0).map_err(|err| e("write", err))?;
            } else if through >= from {
                m.insert(GAP_FROM, through + 1)
                    .map_err(|err| e("write", err))?;
            }
        }
        w.commit().map_err(|err| e("commit", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, ts_ms: u64) -> Record {
        Record {
            index,
            ts_ms,
            events: 1,
            json: format!("{{\"index\":{index}}}").into_bytes(),
        }
    }

    #[test]
    fn appends_in_order_ignores_repeats_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdc.redb");
        {
            let q = Queue::open(&path).unwrap();
            assert_eq!(q.append(&[rec(3, 1), rec(5, 1)]).unwrap(), 2);
            // A restarted node re-applies entries it already queued.
            assert_eq!(q.append(&[rec(5, 2), rec(7, 2)]).unwrap(), 1);
        }
        let q = Queue::open(&path).unwrap();
        let got = q.read(4, 10, 1 << 20).unwrap();
        assert_eq!(got.iter().map(|r| r.index).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(got[0].ts_ms, 1);
        assert_eq!(got[1].json, b"{\"index\":7}");
        assert_eq!(q.state().unwrap().enqueued, 7);
        assert_eq!(q.read(0, 1, 1 << 20).unwrap().len(), 1);
    }

    #[test]
    fn a_skipped_range_is_a_gap_until_filled_from_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q")).unwrap();
        q.append(&[rec(3, 1)]).unwrap();
        q.skip_to(10).unwrap();
        let s = q.state().unwrap();
        assert_eq!((s.enqueued, s.gap), (10, Some((4, 10))));
        assert!(s.holds(1, 3, 0) && !s.holds(4, 4, 10) && !s.holds(9, 12, 12));
        assert!(!s.holds(11, 12, 0) && s.holds(11, 12, 12));
        q.append(&[rec(12, 1)]).unwrap();
        q.fill(&[rec(5, 1), rec(9, 1), rec(12, 9)], 4, 10).unwrap();
        let s = q.state().unwrap();
        assert_eq!((s.gap, s.pruned), (None, 0));
        let got: Vec<u64> = q
            .read(0, 10, 1 << 20)
            .unwrap()
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(got, [3, 5, 9, 12]);
        assert_eq!(
            q.read(12, 1, 1 << 20).unwrap()[0].ts_ms,
            1,
            "a fill never replaces"
        );
        // Filled from above its start (the rest was delivered and let go): the rest is
        // deleted as far as readers are concerned.
        q.skip_to(20).unwrap();
        q.fill(&[rec(18, 1)], 16, 20).unwrap();
        let s = q.state().unwrap();
        assert_eq!((s.gap, s.pruned), (None, 15));
    }

    #[test]
    fn prunes_only_what_is_delivered_and_not_retained() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q")).unwrap();
        q.append(&[rec(1, 1000), rec(2, 2000), rec(3, 3000), rec(4, 4000)])
            .unwrap();
        // Kept for an hour: nothing delivered is old enough.
        assert_eq!(q.prune(3, 5000, 3_600_000, u64::MAX).unwrap(), 0);
        // Older than 2.5 s at t=5 s: 1 and 2 go; 4 is not delivered.
        assert_eq!(q.prune(3, 5000, 2500, u64::MAX).unwrap(), 2);
        let s = q.state().unwrap();
        assert_eq!((s.pruned, s.records), (2, 2));
        // No retention: everything delivered goes.
        assert_eq!(q.prune(4, 5000, 0, 0).unwrap(), 2);
        let s = q.state().unwrap();
        assert_eq!((s.pruned, s.records, s.bytes), (4, 0, 0));
    }
}
