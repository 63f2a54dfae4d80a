//! A linearizability checker for one register (read / write / compare-and-set), written from
//! the definition: Wing & Gong's search over linearization orders, with Lowe's memoization
//! (a cache of (set of linearized operations, register value) already explored), in the
//! linked-list form that Knossos and Porcupine use.
//!
//! What it owns: the sequential model of a register and the search. What it does not do: talk
//! to nodes, or split a history by key (one call checks one key; keys are independent
//! registers, so checking them one at a time is exact).
//!
//! Operations whose outcome is unknown (a client timeout, a 504) have no completion time:
//! they may take effect at any point after their invocation, or never. Reads with an unknown
//! outcome carry no information and are left out by the caller.

use std::collections::HashSet;

/// The value of a register: `None` when the row does not exist.
pub type Value = Option<i64>;

/// What a client asked for and, when known, what it got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A read that returned `seen`.
    Read { seen: Value },
    /// A write of `value` (acknowledged, or of unknown outcome).
    Write { value: i64 },
    /// `UPDATE ... SET v = to WHERE v = from`: `ok` is whether a row changed, `None` if the
    /// outcome is unknown.
    Cas {
        from: i64,
        to: i64,
        ok: Option<bool>,
    },
}

/// One operation of a history: invoked at `call`, completed at `ret` (`None`: unknown
/// outcome, may take effect at any time after `call`, or never). Times are any monotonic
/// unit (the suite uses nanoseconds since the run started).
#[derive(Clone, Debug)]
pub struct Entry {
    pub op: RegOp,
    pub call: u64,
    pub ret: Option<u64>,
    /// The caller's id for the operation, quoted in reports.
    pub id: u64,
}

/// Why a history was rejected.
#[derive(Debug, Clone)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `stuck` is the operation whose completion could not be
    /// matched at the deepest point the search reached; `prefix` is the longest sequence of
    /// operations (ids) it managed to linearize, and `value` the register's value after it.
    NotLinearizable {
        stuck: Entry,
        prefix: Vec<u64>,
        value: Value,
    },
    /// The search exceeded its step budget: no verdict.
    Unknown {
        steps: u64,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// The sequential specification: the register's value after `op` runs on `state`, or `None`
/// if `op` cannot take effect (with its recorded result) in that state. An operation of
/// unknown outcome that could not take effect here is the same as one that never ran, which
/// the search covers by not linearizing it at all.
fn step(state: Value, op: &RegOp) -> Option<Value> {
    match *op {
        RegOp::Read { seen } => (state == seen).then_some(state),
        RegOp::Write { value } => Some(Some(value)),
        RegOp::Cas { from, to, ok } => {
            let matches = state == Some(from);
            match ok {
                Some(true) | None => matches.then_some(Some(to)),
                Some(false) => (!matches).then_some(state),
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Node {
    op: usize,
    is_call: bool,
    /// The matching return node of a call.
    partner: usize,
    /// Whether this is the return of an operation of unknown outcome.
    open: bool,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// A set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one register's history, starting from `init`, giving up after `budget` search
/// steps.
pub fn check(history: &[Entry], init: Value, budget: u64) -> Verdict {
    // Reads of unknown outcome say nothing.
    let ops: Vec<&Entry> = history
        .iter()
        .filter(|e| !(e.ret.is_none() && matches!(e.op, RegOp::Read { .. })))
        .collect();
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events in time order; at equal times calls come first (the operations then overlap,
    // the more permissive reading). Unknown outcomes return after everything.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in ops.iter().enumerate() {
        events.push((e.call, 0, i));
        events.push((e.ret.unwrap_or(u64::MAX), 1, i));
    }
    events.sort();
    // Node 0 is the list head; event k is node k + 1.
    let mut nodes = vec![Node {
        op: NIL,
        is_call: false,
        partner: NIL,
        open: false,
        prev: NIL,
        next: if events.is_empty() { NIL } else { 1 },
    }];
    let mut ret_node = vec![NIL; n];
    for (k, &(_, kind, i)) in events.iter().enumerate() {
        let id = k + 1;
        nodes.push(Node {
            op: i,
            is_call: kind == 0,
            partner: NIL,
            open: kind == 1 && ops[i].ret.is_none(),
            prev: id - 1,
            next: if k + 1 < events.len() { id + 1 } else { NIL },
        });
        if kind == 1 {
            ret_node[i] = id;
        }
    }
    for id in 1..nodes.len() {
        if nodes[id].is_call {
            nodes[id].partner = ret_node[nodes[id].op];
        }
    }

    fn unlink(nodes: &mut [Node], x: usize) {
        let (p, nx) = (nodes[x].prev, nodes[x].next);
        nodes[p].next = nx;
        if nx != NIL {
            nodes[nx].prev = p;
        }
    }
    fn relink(nodes: &mut [Node], x: usize) {
        let (p, nx) = (nodes[x].prev, nodes[x].next);
        nodes[p].next = x;
        if nx != NIL {
            nodes[nx].prev = x;
        }
    }
    let lift = |nodes: &mut [Node], call: usize| {
        unlink(nodes, call);
        let r = nodes[call].partner;
        unlink(nodes, r);
    };
    let unlift = |nodes: &mut [Node], call: usize| {
        let r = nodes[call].partner;
        relink(nodes, r);
        relink(nodes, call);
    };

    let mut state = init;
    let mut linearized = Bits::new(n);
    let mut cache: HashSet<(Bits, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut deepest: (usize, Vec<u64>, Value, usize) = (0, Vec::new(), init, NIL);
    let mut steps: u64 = 0;
    let mut entry = nodes[0].next;
    loop {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps };
        }
        if entry == NIL {
            // Everything was linearized.
            return Verdict::Linearizable;
        }
        let node = nodes[entry];
        if node.is_call {
            if let Some(next) = step(state, &ops[node.op].op) {
                let mut lin = linearized.clone();
                lin.set(node.op);
                if cache.insert((lin.clone(), next)) {
                    stack.push((entry, state));
                    state = next;
                    linearized = lin;
                    lift(&mut nodes, entry);
                    entry = nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            if node.open {
                // Every operation with a known outcome returned earlier and was
                // linearized; those of unknown outcome left may never have happened.
                return Verdict::Linearizable;
            }
            if deepest.3 == NIL || stack.len() > deepest.0 {
                deepest = (
                    stack.len(),
                    stack.iter().map(|&(c, _)| ops[nodes[c].op].id).collect(),
                    state,
                    node.op,
                );
            }
            let Some((call, prev_state)) = stack.pop() else {
                let stuck = ops[deepest.3].clone();
                return Verdict::NotLinearizable {
                    stuck,
                    prefix: deepest.1,
                    value: deepest.2,
                };
            };
            state = prev_state;
            linearized.clear(nodes[call].op);
            unlift(&mut nodes, call);
            entry = nodes[call].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 10_000_000;

    fn e(id: u64, op: RegOp, call: u64, ret: Option<u64>) -> Entry {
        Entry { op, call, ret, id }
    }
    fn w(id: u64, v: i64, call: u64, ret: u64) -> Entry {
        e(id, RegOp::Write { value: v }, call, Some(ret))
    }
    fn r(id: u64, v: i64, call: u64, ret: u64) -> Entry {
        e(id, RegOp::Read { seen: Some(v) }, call, Some(ret))
    }
    fn lin(h: &[Entry]) -> bool {
        check(h, Some(0), BUDGET).is_linearizable()
    }

    #[test]
    fn sequential_reads_see_the_latest_write() {
        assert!(lin(&[
            w(1, 1, 0, 1),
            r(2, 1, 2, 3),
            w(3, 2, 4, 5),
            r(4, 2, 6, 7)
        ]));
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_rejected() {
        // The write of 1 completed at t=1; a read that starts at t=2 still sees 0.
        let v = check(&[w(1, 1, 0, 1), r(2, 0, 2, 3)], Some(0), BUDGET);
        match v {
            Verdict::NotLinearizable { stuck, .. } => assert_eq!(stuck.id, 2),
            other => panic!("stale read accepted: {other:?}"),
        }
    }

    #[test]
    fn stale_read_from_an_old_leader_is_rejected() {
        // 1 and then 2 are written; a later read returns 1 (what an isolated old leader would
        // still serve).
        assert!(!lin(&[
            w(1, 1, 0, 1),
            w(2, 2, 2, 3),
            r(3, 2, 4, 5),
            r(4, 1, 6, 7)
        ]));
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        // Write 5 was acknowledged, but every later read still sees the initial value.
        assert!(!lin(&[w(1, 5, 0, 10), r(2, 0, 20, 21), r(3, 0, 22, 23)]));
        // The same with a compare-and-set that reported success.
        let cas = e(
            1,
            RegOp::Cas {
                from: 0,
                to: 5,
                ok: Some(true),
            },
            0,
            Some(10),
        );
        assert!(!lin(&[cas, r(2, 0, 20, 21)]));
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        assert!(!lin(&[w(1, 1, 0, 10), r(2, 7, 2, 3)]));
    }

    #[test]
    fn read_cannot_see_a_write_invoked_after_it_returned() {
        assert!(!lin(&[r(1, 2, 0, 1), w(2, 2, 2, 3)]));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_any_order() {
        // The write spans both reads: one read sees the old value, one the new, in an order
        // their intervals allow.
        assert!(lin(&[w(1, 1, 0, 10), r(2, 0, 1, 4), r(3, 1, 2, 3)]));
        // Two overlapping writes; reads afterwards agree on the one that went last.
        assert!(lin(&[
            w(1, 1, 0, 5),
            w(2, 2, 1, 6),
            r(3, 1, 7, 8),
            r(4, 1, 9, 10)
        ]));
        // ...but they cannot flip back and forth.
        assert!(!lin(&[
            w(1, 1, 0, 5),
            w(2, 2, 1, 6),
            r(3, 1, 7, 8),
            r(4, 2, 9, 10),
            r(5, 1, 11, 12)
        ]));
    }

    #[test]
    fn failed_compare_and_set_is_a_read_of_another_value() {
        let cas = |id, from, to, ok, c, r| {
            e(
                id,
                RegOp::Cas {
                    from,
                    to,
                    ok: Some(ok),
                },
                c,
                Some(r),
            )
        };
        assert!(lin(&[cas(1, 0, 3, true, 0, 1), cas(2, 0, 4, false, 2, 3)]));
        // A CAS that reported failure while the register held its expected value.
        assert!(!lin(&[cas(1, 0, 3, false, 0, 1)]));
        // Two CAS from the same value cannot both succeed one after the other.
        assert!(!lin(&[cas(1, 0, 3, true, 0, 1), cas(2, 0, 4, true, 2, 3)]));
    }

    #[test]
    fn operation_of_unknown_outcome_may_apply_late_or_never() {
        let info = e(1, RegOp::Write { value: 1 }, 0, None);
        // Never observed.
        assert!(lin(&[info.clone(), r(2, 0, 5, 6)]));
        // Observed much later than its invocation.
        assert!(lin(&[info.clone(), r(2, 0, 5, 6), r(3, 1, 100, 101)]));
        // But once observed it cannot be undone.
        assert!(!lin(&[info.clone(), r(2, 1, 5, 6), r(3, 0, 7, 8)]));
        // And it cannot take effect before it was invoked.
        let late = e(1, RegOp::Write { value: 1 }, 50, None);
        assert!(!lin(&[late, r(2, 1, 5, 6)]));
        // An unknown CAS takes effect only where its expectation holds.
        let cas = e(
            1,
            RegOp::Cas {
                from: 9,
                to: 1,
                ok: None,
            },
            0,
            None,
        );
        assert!(!lin(&[cas, r(2, 1, 5, 6)]));
    }

    #[test]
    fn unknown_outcome_reads_are_ignored() {
        let rd = e(2, RegOp::Read { seen: Some(42) }, 0, None);
        assert!(lin(&[rd, w(1, 1, 0, 1), r(3, 1, 2, 3)]));
    }

    #[test]
    fn missing_row_is_a_value_too() {
        let none = e(2, RegOp::Read { seen: None }, 2, Some(3));
        assert!(check(std::slice::from_ref(&none), None, BUDGET).is_linearizable());
        assert!(!check(&[w(1, 1, 0, 1), none], None, BUDGET).is_linearizable());
    }

    /// A tiny deterministic generator (xorshift), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A history of `clients` concurrent clients against a real (atomic) register: each
    /// operation takes effect at a random instant inside its interval, so the history is
    /// linearizable by construction. `info_pct` percent of the operations have an unknown
    /// outcome (writes and CAS among them take effect or not at random).
    fn generated(seed: u64, clients: usize, per_client: usize, info_pct: u64) -> Vec<Entry> {
        let mut rng = Rng(seed);
        // (effect time, client, op index) for each op; build intervals around effect times.
        struct Pending {
            call: u64,
            effect: u64,
            ret: u64,
            kind: u64,
            value: i64,
            from: i64,
            info: bool,
            id: u64,
        }
        let mut pend = Vec::new();
        let mut id = 0;
        for c in 0..clients {
            let mut t = rng.below(20);
            for _ in 0..per_client {
                let call = t;
                let effect = call + 1 + rng.below(30);
                let ret = effect + 1 + rng.below(30);
                id += 1;
                pend.push(Pending {
                    call,
                    effect,
                    ret,
                    kind: rng.below(3),
                    value: (c as i64 + 1) * 1000 + id as i64,
                    from: 0,
                    info: rng.below(100) < info_pct,
                    id,
                });
                t = ret + 1 + rng.below(5);
            }
        }
        // Apply in effect order to the real register. Unknown-outcome ops apply half the
        // time.
        pend.sort_by_key(|p| (p.effect, p.id));
        let mut reg: Value = Some(0);
        let mut out = Vec::new();
        for p in &mut pend {
            let ret = if p.info { None } else { Some(p.ret) };
            match p.kind {
                0 => {
                    if !p.info {
                        out.push(e(p.id, RegOp::Read { seen: reg }, p.call, ret));
                    }
                }
                1 => {
                    let applies = !p.info || rng.below(2) == 0;
                    if applies {
                        reg = Some(p.value);
                    }
                    out.push(e(p.id, RegOp::Write { value: p.value }, p.call, ret));
                }
                _ => {
                    // Expect the current value half the time, a stale one otherwise.
                    p.from = if rng.below(2) == 0 {
                        reg.unwrap_or(0)
                    } else {
                        -1
                    };
                    let matches = reg == Some(p.from);
                    let applies = matches && (!p.info || rng.below(2) == 0);
                    if applies {
                        reg = Some(p.value);
                    }
                    let ok = if p.info { None } else { Some(matches) };
                    out.push(e(
                        p.id,
                        RegOp::Cas {
                            from: p.from,
                            to: p.value,
                            ok,
                        },
                        p.call,
                        ret,
                    ));
                }
            }
        }
        out.sort_by_key(|x| x.call);
        out
    }

    #[test]
    fn generated_linearizable_histories_are_accepted() {
        for seed in 1..=200u64 {
            let h = generated(seed * 7919, 5, 40, 10);
            let v = check(&h, Some(0), BUDGET);
            assert!(v.is_linearizable(), "seed {seed}: {v:?}");
        }
    }

    #[test]
    fn generated_histories_with_a_planted_stale_read_are_rejected() {
        let mut rejected = 0;
        for seed in 1..=200u64 {
            let mut h = generated(seed * 104_729, 5, 40, 10);
            // Find a completed read that follows (in real time) two completed writes of
            // distinct values, and make it return the older one: a stale read.
            let writes: Vec<(u64, u64, i64)> = h
                .iter()
                .filter_map(|x| match (&x.op, x.ret) {
                    (RegOp::Write { value }, Some(r)) => Some((x.call, r, *value)),
                    _ => None,
                })
                .collect();
            let target = h.iter().position(|x| {
                matches!(x.op, RegOp::Read { .. })
                    && x.ret.is_some()
                    && writes
                        .iter()
                        .any(|a| writes.iter().any(|b| a.1 < b.0 && b.1 < x.call))
            });
            let Some(t) = target else { continue };
            let call = h[t].call;
            // The newest-finishing pair a < b both before the read: read returns a's value.
            let (a, _) = writes
                .iter()
                .flat_map(|a| writes.iter().map(move |b| (a, b)))
                .filter(|(a, b)| a.1 < b.0 && b.1 < call)
                .max_by_key(|(a, _)| a.1)
                .expect("pair");
            // Only plant it if no other write could have re-established a's value (values
            // are unique, so none can) and no write overlaps the window after b: the read
            // must then see b's value or a later one, never a's.
            h[t].op = RegOp::Read { seen: Some(a.2) };
            assert!(
                !check(&h, Some(0), BUDGET).is_linearizable(),
                "seed {seed}: planted stale read of {} accepted",
                a.2
            );
            rejected += 1;
        }
        assert!(
            rejected > 100,
            "too few histories had a place for a stale read"
        );
    }

    #[test]
    fn generated_histories_with_a_planted_lost_write_are_rejected() {
        let mut rejected = 0;
        for seed in 1..=200u64 {
            let mut h = generated(seed * 15_485_863, 3, 40, 0);
            // Plant an acknowledged write of a fresh value that completes just before some
            // read starts, with no write or CAS overlapping [the planted write, the read]:
            // that read must see it, and sees an older value instead.
            let free = |x: &Entry| {
                let (call, ret) = (x.call, x.ret.expect("completed"));
                call > 10
                    && !h.iter().any(|y| {
                        !matches!(y.op, RegOp::Read { .. })
                            && y.call <= ret
                            && y.ret.is_none_or(|r| r >= call - 2)
                    })
            };
            let Some(call) = h
                .iter()
                .filter(|x| matches!(x.op, RegOp::Read { .. }) && x.ret.is_some())
                .find(|x| free(x))
                .map(|x| x.call)
            else {
                continue;
            };
            h.push(e(
                999_999,
                RegOp::Write { value: -77 },
                call - 2,
                Some(call - 1),
            ));
            assert!(
                !check(&h, Some(0), BUDGET).is_linearizable(),
                "seed {seed}: lost write accepted"
            );
            rejected += 1;
        }
        assert!(
            rejected > 20,
            "too few histories had a place for a lost write ({rejected})"
        );
    }

    #[test]
    fn checker_is_fast_on_a_long_concurrent_history() {
        let h = generated(42, 6, 300, 10);
        let t = std::time::Instant::now();
        assert!(check(&h, Some(0), BUDGET).is_linearizable());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
    }
}
