//! A serializability checker written from Adya's definition: build the direct serialization
//! graph (DSG) of the committed transactions from their reads and writes of versioned keys,
//! and check it is acyclic. Each key's versions are numbered 0 (the initial state), 1, 2...
//! in install order; every write installs a version, every read names the version it saw.
//!
//! Edges, for committed Ti != Tj: ww (Ti installed the version of a key just before Tj's),
//! wr (Tj read the version Ti installed), rw (Ti read a version and Tj installed the next
//! one). Two transactions installing the same version is a lost update; reading a version no
//! committed transaction installed is an aborted (or intermediate) read.

use std::collections::{BTreeMap, HashMap};

/// One committed transaction: (key, version) pairs it read and installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    pub name: String,
    pub reads: Vec<(i64, i64)>,
    pub writes: Vec<(i64, i64)>,
}

/// `Ok` when the committed history is serializable; otherwise what is wrong.
pub fn check(committed: &[TxRecord]) -> Result<(), String> {
    // Writer of each version; None stands for the initial state (version 0).
    let mut writer: HashMap<(i64, i64), usize> = HashMap::new();
    let mut versions: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (i, t) in committed.iter().enumerate() {
        for &(k, v) in &t.writes {
            if let Some(j) = writer.insert((k, v), i) {
                return Err(format!(
                    "lost update: {} and {} both installed version {v} of key {k}",
                    committed[j].name, t.name
                ));
            }
            versions.entry(k).or_default().push(v);
        }
    }
    for vs in versions.values_mut() {
        vs.sort_unstable();
    }
    let next_after = |k: i64, v: i64| -> Option<i64> {
        versions
            .get(&k)
            .and_then(|vs| vs.iter().copied().find(|&w| w > v))
    };
    let prev_before = |k: i64, v: i64| -> Option<i64> {
        versions
            .get(&k)
            .and_then(|vs| vs.iter().copied().rev().find(|&w| w < v))
    };
    let mut edges: Vec<Vec<(usize, &'static str)>> = vec![Vec::new(); committed.len()];
    let mut add = |from: usize, to: usize, kind: &'static str| {
        if from != to {
            edges[from].push((to, kind));
        }
    };
    for (i, t) in committed.iter().enumerate() {
        for &(k, v) in &t.reads {
            match writer.get(&(k, v)) {
                Some(&w) => add(w, i, "wr"),
                None if v == 0 => {}
                None => {
                    return Err(format!(
                        "{} read version {v} of key {k}, which no committed transaction installed",
                        t.name
                    ))
                }
            }
            if let Some(n) = next_after(k, v) {
                add(i, writer[&(k, n)], "rw");
            }
        }
        for &(k, v) in &t.writes {
            if let Some(p) = prev_before(k, v) {
                add(writer[&(k, p)], i, "ww");
            }
        }
    }
    match find_cycle(&edges) {
        None => Ok(()),
        Some(cycle) => Err(format!(
            "not serializable: cycle {}",
            cycle
                .iter()
                .map(|(i, kind)| format!("{} -{kind}->", committed[*i].name))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// A cycle of the graph as (node, kind of its outgoing edge), if there is one.
fn find_cycle(edges: &[Vec<(usize, &'static str)>]) -> Option<Vec<(usize, &'static str)>> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; edges.len()];
    let mut path: Vec<(usize, &'static str)> = Vec::new();
    fn visit(
        n: usize,
        edges: &[Vec<(usize, &'static str)>],
        state: &mut [u8],
        path: &mut Vec<(usize, &'static str)>,
    ) -> Option<Vec<(usize, &'static str)>> {
        state[n] = 1;
        for &(m, kind) in &edges[n] {
            path.push((n, kind));
            if state[m] == 1 {
                let start = path.iter().position(|(p, _)| *p == m).unwrap_or(0);
                return Some(path[start..].to_vec());
            }
            if state[m] == 0 {
                if let Some(c) = visit(m, edges, state, path) {
                    return Some(c);
                }
            }
            path.pop();
        }
        state[n] = 2;
        None
    }
    (0..edges.len()).find_map(|n| {
        if state[n] == 0 {
            visit(n, edges, &mut state, &mut path)
        } else {
            None
        }
    })
}

fn tx(name: &str, reads: &[(i64, i64)], writes: &[(i64, i64)]) -> TxRecord {
    TxRecord {
        name: name.into(),
        reads: reads.to_vec(),
        writes: writes.to_vec(),
    }
}

#[test]
fn checker_accepts_a_serial_history() {
    // T1 moves x and y from version 0 to 1; T2 reads both at 1 and installs 2.
    let h = [
        tx("T1", &[(1, 0), (2, 0)], &[(1, 1), (2, 1)]),
        tx("T2", &[(1, 1), (2, 1)], &[(1, 2), (2, 2)]),
        tx("T3", &[(1, 2)], &[]),
    ];
    assert_eq!(check(&h), Ok(()));
}

#[test]
fn checker_finds_planted_write_skew() {
    // Both read x0 and y0; T1 writes x, T2 writes y: rw edges both ways.
    let h = [
        tx("T1", &[(1, 0), (2, 0)], &[(1, 1)]),
        tx("T2", &[(1, 0), (2, 0)], &[(2, 1)]),
    ];
    let e = check(&h).expect_err("write skew");
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn checker_finds_planted_lost_update() {
    // Both read x0 and install x1.
    let h = [
        tx("T1", &[(1, 0)], &[(1, 1)]),
        tx("T2", &[(1, 0)], &[(1, 1)]),
    ];
    let e = check(&h).expect_err("lost update");
    assert!(e.contains("lost update"), "{e}");
}

#[test]
fn checker_finds_a_read_skew_cycle_and_an_aborted_read() {
    // T2 reads x after T1 (x1) but y before T1 (y0): T1 -wr-> T2 -rw-> T1.
    let h = [
        tx("T1", &[(1, 0), (2, 0)], &[(1, 1), (2, 1)]),
        tx("T2", &[(1, 1), (2, 0)], &[]),
    ];
    assert!(check(&h).expect_err("read skew").contains("cycle"));
    let h = [tx("T1", &[(1, 5)], &[])];
    assert!(check(&h)
        .expect_err("aborted read")
        .contains("no committed"));
}
