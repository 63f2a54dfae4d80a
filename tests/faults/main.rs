//! Jepsen-style fault suite: real `sqlraftd` processes, each in its own network namespace,
//! under partitions, crashes, pauses, restarts, membership changes and a full disk, while
//! bank, register and set clients run; then every fault is healed and the histories are
//! checked (conservation, no lost or phantom writes, linearizability, identical replicas).
//!
//! Needs root, `ip` and `iptables`. Talks to the nodes only over HTTP; it does not link the
//! `sqlraft` library. See docs/design/faults.md for the design and how to read the results;
//! `SQLRAFT_FAULTS_PROFILE=long` (scripts/faults.sh) runs longer, harder runs.
//!
//! Four tests encode the faults of issue 13 (a lagging follower and a 5 MB snapshot, a full
//! disk, a paused leader, a terminated leader), which the server once got wrong.

mod client;
mod cluster;
mod history;
mod known;
mod linear;
mod monitor;
mod nemesis;
mod net;
mod report;
mod run;
mod workload;

use std::time::Duration;

use history::Outcome;
use nemesis::Nemesis;
use run::{run, scenario, RunData, RunSpec};

fn spec(name: &'static str, nodes: usize, nemesis: Nemesis) -> RunSpec {
    RunSpec {
        name,
        nodes,
        flags: Vec::new(),
        nemesis,
        min_cycles: 1,
    }
}

fn no_expectations(_: &RunData) -> Vec<String> {
    Vec::new()
}

fn nemesis_test(name: &'static str, nodes: usize, n: Nemesis) {
    scenario(|| run(spec(name, nodes, n), no_expectations));
}

#[test]
fn network_setup_preflight_says_what_is_missing() {
    // On a machine that has what the suite needs this passes trivially; elsewhere the
    // message names the missing piece (every scenario fails with the same message).
    if let Err(e) = net::preflight() {
        assert!(e.contains("missing"), "{e}");
        panic!("{e}");
    }
}

#[test]
fn no_fault_baseline_is_valid() {
    nemesis_test("baseline", 3, Nemesis::None);
}

#[test]
fn isolated_leader_loses_no_acknowledged_write() {
    nemesis_test("partition-leader", 3, Nemesis::PartitionLeader);
}

#[test]
fn isolated_follower_loses_no_acknowledged_write() {
    nemesis_test("partition-follower", 3, Nemesis::PartitionFollower);
}

#[test]
fn partition_into_halves_keeps_the_majority_consistent() {
    nemesis_test("partition-halves", 5, Nemesis::PartitionHalves);
}

#[test]
fn ring_partition_with_overlapping_majorities_stays_linearizable() {
    nemesis_test("partition-ring", 5, Nemesis::PartitionRing);
}

#[test]
fn bridge_partition_stays_linearizable() {
    nemesis_test("partition-bridge", 5, Nemesis::PartitionBridge);
}

#[test]
fn flapping_partitions_stay_linearizable() {
    nemesis_test("partition-flapping", 3, Nemesis::PartitionFlapping);
}

#[test]
fn killed_follower_rejoins_without_losing_writes() {
    nemesis_test("kill-follower", 3, Nemesis::KillFollower);
}

#[test]
fn killed_leader_is_replaced_without_losing_writes() {
    nemesis_test("kill-leader", 3, Nemesis::KillLeader);
}

#[test]
fn whole_cluster_killed_and_restarted_keeps_every_acknowledged_write() {
    nemesis_test("kill-all", 3, Nemesis::KillAll);
}

#[test]
fn rolling_graceful_restarts_lose_no_write() {
    nemesis_test("rolling-restart", 3, Nemesis::RollingRestart);
}

#[test]
fn membership_changes_under_load_lose_no_write() {
    nemesis_test("membership", 3, Nemesis::Membership);
}

#[test]
fn slow_leader_disk_loses_no_write() {
    nemesis_test("slow-disk-leader", 3, Nemesis::SlowDiskLeader);
}

/// A leader that restarted in its old term once reused log indexes its followers held other
/// entries at, and the replicas diverged (CI, kill-all). Its slow disk makes the gap certain.
#[test]
fn whole_cluster_killed_while_the_leaders_log_lags_keeps_every_acknowledged_write() {
    nemesis_test(
        "slow-disk-leader-kill-all",
        3,
        Nemesis::SlowDiskLeaderKillAll,
    );
}

/// The same, with only the leader killed and restarted before anyone else campaigns.
#[test]
fn leader_killed_while_its_log_lags_and_restarted_at_once_keeps_every_acknowledged_write() {
    nemesis_test(
        "slow-disk-leader-kill-leader",
        3,
        Nemesis::SlowDiskLeaderKillLeader,
    );
}

/// Both followers' disks slow (every commit waits for a slow follower `fdatasync`): the
/// leader keeps acknowledging writes throughout, instead of losing its lease to answers
/// that come later than a heartbeat interval.
#[test]
fn slow_follower_disks_slow_writes_down_but_never_stop_them() {
    scenario(|| {
        run(
            spec("slow-disk-followers", 3, Nemesis::SlowDiskFollowers),
            |d| {
                let mut p = Vec::new();
                for (k, (t, next)) in cycles(d).into_iter().enumerate() {
                    let healed = d.mark_in("healed", t, next).unwrap_or(next);
                    let writes = |outcome| {
                        d.ops
                            .iter()
                            .filter(|o| o.is_write() && o.outcome == outcome)
                            .filter(|o| o.end >= t && o.end < healed)
                            .count()
                    };
                    let ok = writes(Outcome::Ok);
                    // Refused, or no answer within the client's timeout.
                    let lost = writes(Outcome::Fail) + writes(Outcome::Info);
                    println!(
                        "slow follower disks (cycle {}): {ok} writes acknowledged, {lost} refused or unanswered in {:.1}s",
                        k + 1,
                        secs(healed - t)
                    );
                    // Before the fix, more writes went unanswered than were acknowledged
                    // (1.2-2.4x); after it, at most a fifth as many (the long profile's worst).
                    if ok == 0 || lost * 2 > ok {
                        p.push(format!(
                            "slow follower disks (cycle {}): {ok} writes acknowledged but {lost} refused or unanswered while the disks were slow",
                            k + 1
                        ));
                    }
                }
                p
            },
        )
    });
}

#[test]
fn lagging_follower_catches_up_by_a_small_snapshot() {
    scenario(|| {
        known::lagging_follower_catches_up(
            "snapshot-catchup-small",
            100,
            1024,
            Duration::from_secs(30),
        )
    });
}

/// Issue 13, input 1 (a regression test since fixed): a follower that needs a ~5 MB snapshot must converge.
#[test]
fn lagging_follower_catches_up_by_a_5mb_snapshot() {
    scenario(|| {
        known::lagging_follower_catches_up(
            "issue13-snapshot-catchup-5mb",
            100,
            48 * 1024,
            Duration::from_secs(30),
        )
    });
}

/// Issue 13, input 2 (a regression test since fixed): disk full on a follower.
#[test]
fn full_disk_follower_reports_unready_and_recovers() {
    scenario(|| known::disk_full_follower("issue13-disk-full-follower", false));
}

/// A node whose Raft log waits for space still stops when asked (it used to wait forever).
#[test]
fn full_disk_follower_stops_when_asked_and_catches_up_after() {
    scenario(|| known::disk_full_follower("disk-full-follower-stopped", true));
}

/// A leader whose disk fills hands leadership over, so the healthy majority takes writes.
#[test]
fn full_disk_leader_hands_over_and_catches_up() {
    scenario(|| known::disk_full_leader("disk-full-leader", false));
}

/// ... to a voter whose disk is not full too, even when that one is not the most caught up.
#[test]
fn full_disk_leader_and_follower_hand_over_to_the_healthy_node() {
    scenario(|| known::disk_full_leader("disk-full-leader-and-follower", true));
}

/// A follower too full to apply lets the healthy survivor win the election after a leader
/// crash.
#[test]
fn full_disk_follower_lets_the_healthy_survivor_lead_after_a_leader_crash() {
    scenario(|| known::disk_full_follower_after_a_leader_crash("disk-full-follower-leader-crash"));
}

/// For each fault cycle: its start, and where the next one starts (or the end of the run).
fn cycles(d: &RunData) -> Vec<(u64, u64)> {
    let faults = d.marks("fault");
    (0..faults.len())
        .map(|k| (faults[k], faults.get(k + 1).copied().unwrap_or(u64::MAX)))
        .collect()
}

/// What is wrong, if anything, with the first successful write of cycle `k` of scenario
/// `label` after `from` (and before `next`): later than `within_s` seconds after `after`, or
/// none at all (`missing`). The nemesis marks it `first_write_after_fault`.
fn first_write_problem(
    d: &RunData,
    (label, k): (&str, usize),
    (from, next): (u64, u64),
    within_s: u64,
    after: &str,
    missing: &str,
) -> Option<String> {
    match d.mark_in("first_write_after_fault", from, next) {
        Some(w) if w - from <= within_s * 1_000_000_000 => None,
        Some(w) => Some(format!(
            "{label} (cycle {}): first successful write {:.2}s after {after} (want <= {within_s}s)",
            k + 1,
            secs(w - from)
        )),
        None => Some(format!("{label} (cycle {}): {missing}", k + 1)),
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Issue 13, input 3 (a regression test since fixed): SIGSTOP of the leader for 8 s under write load, election timeout 1 s: a
/// write succeeds through another node within 4 s, and the term moves by 1 or 2 at most
/// (until the next cycle, or the end of the run). Three cycles, because the extra elections
/// do not happen every time.
#[test]
fn paused_leader_is_replaced_within_4s_with_at_most_2_term_bumps() {
    scenario(|| {
        let mut s = spec("issue13-sigstop-leader", 3, Nemesis::PauseLeader);
        s.flags = vec!["-raft-election-timeout", "1s"];
        s.min_cycles = 3;
        run(s, |d| {
            let mut p = Vec::new();
            for (k, (t, next)) in cycles(d).into_iter().enumerate() {
                p.extend(first_write_problem(
                    d,
                    ("paused leader", k),
                    (t, next),
                    4,
                    "SIGSTOP of the leader",
                    "no write succeeded during the 8s the leader was stopped",
                ));
                let before = d.term_before(t);
                let after = if next == u64::MAX {
                    d.last_term()
                } else {
                    d.term_before(next)
                };
                if after - before > 2 {
                    p.push(format!(
                        "paused leader (cycle {}): term went from {before} to {after} (+{}), want +1 or +2",
                        k + 1,
                        after - before
                    ));
                }
            }
            p
        })
    });
}

/// A leader hands over while a follower is stopped (SIGSTOP): one election, and writes go on
/// within 2 s. With an election timeout for every AppendEntries (f509ca7), closing the
/// stream to the stopped follower held the old leader's Raft core that long: its vote
/// reached the candidate too late, and a second election followed (term +2 in 2 of 2 runs;
/// `cluster.md`, "Internode wire").
#[test]
fn step_down_with_a_stopped_follower_takes_one_election() {
    scenario(|| {
        let mut s = spec(
            "pause-follower-step-down",
            3,
            Nemesis::PauseFollowerStepDown,
        );
        s.flags = vec!["-raft-election-timeout", "1s"];
        run(s, |d| {
            let mut p = Vec::new();
            for (k, (t, next)) in cycles(d).into_iter().enumerate() {
                p.extend(first_write_problem(
                    d,
                    ("step-down", k),
                    (t, next),
                    2,
                    "POST /leader",
                    "no write succeeded after POST /leader",
                ));
                let healed = d.mark_in("healed", t, next).unwrap_or(next);
                let (before, after) = (d.term_before(t), d.term_before(healed));
                if after - before != 1 {
                    p.push(format!(
                        "step-down (cycle {}): term went from {before} to {after}, want one election",
                        k + 1
                    ));
                }
            }
            p
        })
    });
}

/// Issue 13, input 4 (a regression test since fixed): SIGTERM of the leader: it exits within 2 s, and writes through the other
/// nodes succeed within 1 s of its exit.
#[test]
fn terminated_leader_exits_within_2s_and_writes_resume_within_1s() {
    scenario(|| {
        run(
            spec("issue13-sigterm-leader", 3, Nemesis::TerminateLeader),
            |d| {
                let mut p = Vec::new();
                for (k, (t, next)) in cycles(d).into_iter().enumerate() {
                    let exited = d.mark_in("exited", t, next).expect("exit mark");
                    if exited - t > 2_000_000_000 {
                        p.push(format!(
                            "terminated leader (cycle {}): the leader took {:.2}s to exit after SIGTERM (want <= 2s)",
                            k + 1,
                            secs(exited - t)
                        ));
                    }
                    p.extend(first_write_problem(
                        d,
                        ("terminated leader", k),
                        (exited, next),
                        1,
                        "the old leader exited",
                        "no write succeeded after the leader exited",
                    ));
                }
                p
            },
        )
    });
}
