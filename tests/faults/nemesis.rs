//! The nemeses: what fault to inject, when, and how to heal it. Each one runs while the
//! workloads keep sending requests, records its steps as events in the history, and leaves
//! marks (named instants) that scenario-specific expectations can read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::run::Profile;
use crate::workload::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// No fault: the baseline.
    None,
    /// The leader cannot reach any other node.
    PartitionLeader,
    /// One follower cannot reach any other node.
    PartitionFollower,
    /// Two halves, 2 | 3 nodes (5-node clusters), at random.
    PartitionHalves,
    /// Nodes on a ring each reach only their two neighbours: every node sees a majority,
    /// each a different one (5-node clusters).
    PartitionRing,
    /// Two pairs that cannot reach each other, both reaching a fifth node (5-node clusters).
    PartitionBridge,
    /// A new random partition (or none) about every second.
    PartitionFlapping,
    /// SIGKILL of a follower, restarted after the fault window.
    KillFollower,
    /// SIGKILL of the leader, restarted after the fault window.
    KillLeader,
    /// SIGKILL of every node, then all restarted.
    KillAll,
    /// SIGSTOP of the leader for 8 s, then SIGCONT.
    PauseLeader,
    /// SIGTERM of the leader (graceful shutdown), restarted after the fault window.
    TerminateLeader,
    /// Each node in turn: SIGTERM, wait for it to exit, start it again, wait until ready.
    RollingRestart,
    /// Add a node, remove a follower, add a node, remove the leader.
    Membership,
    /// The leader's disk becomes slow: its process's writes to its own (loop device) disk
    /// are throttled to 20 IOPS and 1 MiB/s by a blkio cgroup.
    SlowDiskLeader,
    /// The leader's disk slowed as in `SlowDiskLeader` until its log lags the followers', then
    /// SIGKILL of every node and all restarted: the old leader comes back without entries the
    /// followers acknowledged.
    SlowDiskLeaderKillAll,
    /// The same slow leader disk, then SIGKILL of the leader alone, restarted at once.
    SlowDiskLeaderKillLeader,
    /// SIGSTOP of a follower, then `POST /leader` on the leader 1.2 s later; SIGCONT at the end
    /// of the fault window.
    PauseFollowerStepDown,
    /// Both followers' disks slowed as in `SlowDiskLeader`: every commit waits for a slow
    /// `fdatasync` on a follower, and so does each follower's answer to the leader.
    SlowDiskFollowers,
}

impl Nemesis {
    pub fn describe(self) -> &'static str {
        match self {
            Nemesis::None => "no fault",
            Nemesis::PartitionLeader => "partition: leader isolated",
            Nemesis::PartitionFollower => "partition: one follower isolated",
            Nemesis::PartitionHalves => "partition: halves 2|3",
            Nemesis::PartitionRing => "partition: ring (each node sees a different majority)",
            Nemesis::PartitionBridge => "partition: bridge (two pairs joined by one node)",
            Nemesis::PartitionFlapping => "partition: flapping, a new one every ~1s",
            Nemesis::KillFollower => "kill -9 of a follower",
            Nemesis::KillLeader => "kill -9 of the leader",
            Nemesis::KillAll => "kill -9 of every node, then restart all",
            Nemesis::PauseLeader => "SIGSTOP of the leader for 8s",
            Nemesis::TerminateLeader => "SIGTERM of the leader",
            Nemesis::RollingRestart => "rolling graceful restarts (SIGTERM, wait, start)",
            Nemesis::Membership => {
                "membership: add a node, remove a follower, add a node, remove the leader"
            }
            Nemesis::SlowDiskLeader => "slow disk on the leader (20 write IOPS, 1 MiB/s)",
            Nemesis::SlowDiskLeaderKillAll => {
                "slow disk on the leader, then kill -9 of every node, then restart all"
            }
            Nemesis::SlowDiskLeaderKillLeader => {
                "slow disk on the leader, then kill -9 of the leader, restarted at once"
            }
            Nemesis::SlowDiskFollowers => "slow disks on both followers (20 write IOPS, 1 MiB/s)",
            Nemesis::PauseFollowerStepDown => {
                "SIGSTOP of a follower, then POST /leader on the leader"
            }
        }
    }
}

/// What a nemesis gets: the cluster, the clients' shared state, the profile, and a place
/// for its marks.
pub struct Ctx<'a> {
    pub cluster: &'a mut Cluster,
    pub shared: &'a Arc<Shared>,
    pub profile: &'a Profile,
    /// Named instants (ns since the run began), one per cycle.
    pub marks: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    /// Problems the nemesis itself ran into (e.g. a node that would not exit).
    pub problems: Vec<String>,
}

impl Ctx<'_> {
    pub fn event(&self, what: impl Into<String>) {
        self.shared.history.event(what);
    }

    pub fn mark(&self, name: &str) -> u64 {
        let t = self.shared.history.now();
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .push(t);
        t
    }

    /// Points the clients (and the monitor) at the current members.
    pub fn retarget(&self) {
        let t = self
            .cluster
            .members()
            .into_iter()
            .map(|i| (i, self.cluster.nodes[i].base()))
            .collect();
        self.shared.set_targets(t);
    }

    /// Points the clients at the current members except `skip`.
    fn retarget_except(&self, skip: usize) {
        let t = self
            .cluster
            .members_except(skip)
            .into_iter()
            .map(|i| (i, self.cluster.nodes[i].base()))
            .collect();
        self.shared.set_targets(t);
    }

    async fn leader(&self) -> usize {
        self.cluster.wait_leader(Duration::from_secs(30)).await
    }

    async fn hold(&self, d: Duration) {
        // The fault's duration: this pause IS the fault.
        tokio::time::sleep(d).await;
    }
}

fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    fastrand::shuffle(&mut v);
    v
}

/// Runs `nemesis` for the profile's number of cycles, healing after each.
pub async fn run(nemesis: Nemesis, ctx: &mut Ctx<'_>) {
    for cycle in 0..ctx.profile.cycles {
        if cycle > 0 {
            ctx.hold(ctx.profile.between).await;
        }
        run_once(nemesis, ctx).await;
    }
}

async fn run_once(nemesis: Nemesis, ctx: &mut Ctx<'_>) {
    let fault = ctx.profile.fault;
    let n = ctx.cluster.len();
    match nemesis {
        Nemesis::None => ctx.hold(fault).await,
        Nemesis::PartitionLeader => {
            let l = ctx.leader().await;
            ctx.mark("fault");
            ctx.event(format!("isolate leader node {}", l + 1));
            ctx.cluster.net.partition(|a, b| a != l && b != l);
            ctx.hold(fault).await;
            heal_net(ctx);
        }
        Nemesis::PartitionFollower => {
            let l = ctx.leader().await;
            let f = (l + 1 + fastrand::usize(..n - 1)) % n;
            ctx.mark("fault");
            ctx.event(format!("isolate follower node {}", f + 1));
            ctx.cluster.net.partition(|a, b| a != f && b != f);
            ctx.hold(fault).await;
            heal_net(ctx);
        }
        Nemesis::PartitionHalves => {
            let order = shuffled(n);
            let small: Vec<usize> = order[..n / 2].to_vec();
            ctx.mark("fault");
            ctx.event(format!(
                "halves: {:?} | {:?}",
                small.iter().map(|i| i + 1).collect::<Vec<_>>(),
                order[n / 2..].iter().map(|i| i + 1).collect::<Vec<_>>()
            ));
            ctx.cluster
                .net
                .partition(|a, b| small.contains(&a) == small.contains(&b));
            ctx.hold(fault).await;
            heal_net(ctx);
        }
        Nemesis::PartitionRing => {
            let order = shuffled(n);
            let pos: Vec<usize> = (0..n)
                .map(|i| order.iter().position(|&x| x == i).expect("in ring"))
                .collect();
            ctx.mark("fault");
            ctx.event(format!(
                "ring {:?}: each node reaches its two neighbours",
                order.iter().map(|i| i + 1).collect::<Vec<_>>()
            ));
            ctx.cluster.net.partition(|a, b| {
                let d = pos[a].abs_diff(pos[b]);
                d <= 1 || d == n - 1
            });
            ctx.hold(fault).await;
            heal_net(ctx);
        }
        Nemesis::PartitionBridge => {
            let order = shuffled(n);
            let bridge = order[n / 2];
            let left: Vec<usize> = order[..n / 2].to_vec();
            ctx.mark("fault");
            ctx.event(format!(
                "bridge: {:?} - node {} - {:?}",
                left.iter().map(|i| i + 1).collect::<Vec<_>>(),
                bridge + 1,
                order[n / 2 + 1..].iter().map(|i| i + 1).collect::<Vec<_>>()
            ));
            ctx.cluster.net.partition(|a, b| {
                a == bridge || b == bridge || left.contains(&a) == left.contains(&b)
            });
            ctx.hold(fault).await;
            heal_net(ctx);
        }
        Nemesis::PartitionFlapping => {
            ctx.mark("fault");
            let end = Instant::now() + fault;
            while Instant::now() < end {
                match fastrand::u8(..3) {
                    0 => {
                        let x = fastrand::usize(..n);
                        ctx.event(format!("flap: isolate node {}", x + 1));
                        ctx.cluster.net.partition(|a, b| a != x && b != x);
                    }
                    1 => {
                        let order = shuffled(n);
                        let small: Vec<usize> = order[..n / 2].to_vec();
                        ctx.event(format!(
                            "flap: halves, minority {:?}",
                            small.iter().map(|i| i + 1).collect::<Vec<_>>()
                        ));
                        ctx.cluster
                            .net
                            .partition(|a, b| small.contains(&a) == small.contains(&b));
                    }
                    _ => {
                        ctx.event("flap: heal");
                        ctx.cluster.net.heal();
                    }
                }
                ctx.hold(Duration::from_millis(fastrand::u64(500..1500)))
                    .await;
            }
            heal_net(ctx);
        }
        Nemesis::KillFollower | Nemesis::KillLeader => {
            let l = ctx.leader().await;
            let v = if nemesis == Nemesis::KillLeader {
                l
            } else {
                (l + 1 + fastrand::usize(..n - 1)) % n
            };
            ctx.mark("fault");
            ctx.event(format!("kill -9 node {}", v + 1));
            ctx.cluster.kill9(v);
            ctx.hold(fault).await;
            ctx.event(format!("restart node {}", v + 1));
            ctx.cluster.restart(v).await;
            ctx.mark("healed");
        }
        Nemesis::KillAll => {
            ctx.mark("fault");
            let all = kill_all(ctx);
            ctx.hold(fault / 4).await;
            start_again(ctx, &all).await;
            ctx.mark("healed");
        }
        Nemesis::SlowDiskLeaderKillAll | Nemesis::SlowDiskLeaderKillLeader => {
            let l = slow_leader_disk(ctx).await;
            // Long enough for the followers to commit entries the leader has not written.
            ctx.hold(fault / 4).await;
            let victims = if nemesis == Nemesis::SlowDiskLeaderKillAll {
                let all = kill_all(ctx);
                ctx.cluster.unthrottle_disk(l);
                ctx.hold(fault / 4).await;
                all
            } else {
                // Back before the followers' election timeout, as a supervisor restarts it.
                ctx.event(format!("kill -9 leader node {}, restart at once", l + 1));
                ctx.cluster.kill9(l);
                ctx.cluster.unthrottle_disk(l);
                vec![l]
            };
            start_again(ctx, &victims).await;
            ctx.mark("healed");
        }
        Nemesis::PauseLeader => {
            let l = ctx.leader().await;
            let pause = Duration::from_secs(8);
            let t = Instant::now();
            ctx.mark("fault");
            ctx.event(format!("SIGSTOP leader node {}", l + 1));
            ctx.cluster.pause(l);
            if probe_write(ctx, l, pause).await {
                ctx.mark("first_write_after_fault");
            }
            ctx.hold(pause.saturating_sub(t.elapsed())).await;
            ctx.event(format!("SIGCONT node {}", l + 1));
            ctx.cluster.resume(l);
            ctx.mark("healed");
        }
        Nemesis::PauseFollowerStepDown => {
            let l = ctx.leader().await;
            let f = ctx.cluster.members_except(l)[0];
            ctx.retarget_except(f);
            let t = Instant::now();
            ctx.event(format!("SIGSTOP follower node {}", f + 1));
            ctx.cluster.pause(f);
            // Just past the first election timeout (1 s) after the follower went silent:
            // with the longer AppendEntries limit for every call, a call to it then held
            // the old leader's Raft core when it stepped down (`cluster.md`).
            ctx.hold(Duration::from_millis(1200)).await;
            ctx.mark("fault");
            match ctx.cluster.step_down(l).await {
                Ok(_) => ctx.event(format!("POST /leader on node {}: 200", l + 1)),
                Err(e) => ctx
                    .problems
                    .push(format!("POST /leader on node {}: {e}", l + 1)),
            }
            if probe_write(ctx, f, fault).await {
                ctx.mark("first_write_after_fault");
            }
            ctx.hold(fault.saturating_sub(t.elapsed())).await;
            ctx.event(format!("SIGCONT node {}", f + 1));
            ctx.cluster.resume(f);
            ctx.retarget();
            ctx.mark("healed");
        }
        Nemesis::TerminateLeader => {
            let l = ctx.leader().await;
            ctx.retarget_except(l);
            ctx.mark("fault");
            ctx.event(format!("SIGTERM leader node {}", l + 1));
            match ctx.cluster.terminate(l, Duration::from_secs(30)).await {
                Ok(d) => ctx.event(format!("node {} exited after {d:?}", l + 1)),
                Err(d) => {
                    ctx.problems
                        .push(format!("leader did not exit within {d:?} of SIGTERM"));
                    ctx.event(format!("node {} still running after {d:?}: SIGKILL", l + 1));
                }
            }
            ctx.mark("exited");
            let t = Instant::now();
            if probe_write(ctx, l, fault).await {
                ctx.mark("first_write_after_fault");
            }
            ctx.hold(fault.saturating_sub(t.elapsed())).await;
            ctx.event(format!("restart node {}", l + 1));
            ctx.cluster.restart(l).await;
            ctx.retarget();
            ctx.mark("healed");
        }
        Nemesis::RollingRestart => {
            ctx.mark("fault");
            for i in ctx.cluster.members() {
                ctx.event(format!("SIGTERM node {}", i + 1));
                match ctx.cluster.terminate(i, Duration::from_secs(30)).await {
                    Ok(d) => ctx.event(format!("node {} exited after {d:?}", i + 1)),
                    Err(d) => ctx.problems.push(format!(
                        "node {} did not exit within {d:?} of SIGTERM (killed)",
                        i + 1
                    )),
                }
                ctx.event(format!("start node {}", i + 1));
                ctx.cluster.restart(i).await;
                if let Err(e) = ready_one(ctx.cluster, i, Duration::from_secs(30)).await {
                    ctx.problems.push(e);
                }
            }
            ctx.mark("healed");
        }
        Nemesis::Membership => membership(ctx).await,
        Nemesis::SlowDiskLeader => {
            let l = slow_leader_disk(ctx).await;
            ctx.hold(fault).await;
            fast_disk(ctx, l);
            ctx.mark("healed");
        }
        Nemesis::SlowDiskFollowers => {
            let l = ctx.leader().await;
            let followers = ctx.cluster.members_except(l);
            ctx.mark("fault");
            for &f in &followers {
                slow_disk(ctx, f, "follower");
            }
            ctx.hold(fault).await;
            for &f in &followers {
                fast_disk(ctx, f);
            }
            ctx.mark("healed");
        }
    }
}

/// Writes (set adds, recorded in the history like any other) through the members other
/// than `skip`, each try with a short timeout, until one succeeds or `within` passes.
/// Returns whether one succeeded; the event log says when.
async fn probe_write(ctx: &Ctx<'_>, skip: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let http = crate::cluster::http_client(Duration::from_millis(500));
    let others = ctx.cluster.members_except(skip);
    while Instant::now() < deadline {
        let i = others[fastrand::usize(..others.len())];
        if crate::workload::set_add(ctx.shared, &http, i, &ctx.cluster.nodes[i].base(), 1000).await
        {
            ctx.event(format!("probe write through node {} succeeded", i + 1));
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.event(format!("no probe write succeeded within {within:?}"));
    false
}

/// Marks the fault and throttles the leader's disk (20 write IOPS, 1 MiB/s); returns the
/// leader.
async fn slow_leader_disk(ctx: &mut Ctx<'_>) -> usize {
    let l = ctx.leader().await;
    ctx.mark("fault");
    slow_disk(ctx, l, "leader");
    l
}

/// Throttles node `i`'s disk to 20 write IOPS and 1 MiB/s; `role` names it in the event log.
fn slow_disk(ctx: &mut Ctx<'_>, i: usize, role: &str) {
    ctx.event(format!("slow disk on {role} node {}", i + 1));
    if let Err(e) = ctx.cluster.throttle_disk(i, 20, 1 << 20) {
        ctx.problems
            .push(format!("could not slow the disk down: {e}"));
    }
}

/// Gives node `i`'s disk its full speed back (undoes [`slow_disk`]).
fn fast_disk(ctx: &mut Ctx<'_>, i: usize) {
    ctx.event(format!("disk of node {} back to full speed", i + 1));
    ctx.cluster.unthrottle_disk(i);
}

/// SIGKILL of every running node; returns the members.
fn kill_all(ctx: &mut Ctx<'_>) -> Vec<usize> {
    ctx.event("kill -9 every node");
    for i in ctx.cluster.running() {
        ctx.cluster.kill9(i);
    }
    ctx.cluster.members()
}

/// Starts `nodes` (all stopped) together, then waits for each one's startup line.
async fn start_again(ctx: &mut Ctx<'_>, nodes: &[usize]) {
    ctx.event(format!(
        "restart node(s) {:?}",
        nodes.iter().map(|i| i + 1).collect::<Vec<_>>()
    ));
    for &i in nodes {
        ctx.cluster.spawn(i);
    }
    for &i in nodes {
        ctx.cluster.wait_started(i).await;
    }
}

fn heal_net(ctx: &Ctx<'_>) {
    ctx.event("heal network");
    ctx.cluster.net.heal();
    ctx.mark("healed");
}

/// Waits until node `i` answers `/readyz` with 200.
async fn ready_one(c: &Cluster, i: usize, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = c
            .http
            .get(format!("{}/readyz", c.nodes[i].base()))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("node {} not ready within {within:?}", i + 1));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DELETE /remove` of node `i` through some other member, retried while it answers 503
/// (no leader at that moment).
async fn remove(ctx: &mut Ctx<'_>, i: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let via = ctx
            .cluster
            .running()
            .into_iter()
            .filter(|&j| j != i)
            .nth(fastrand::usize(..ctx.cluster.running().len() - 1));
        let Some(via) = via else {
            ctx.problems.push("no node to send /remove to".into());
            return false;
        };
        match ctx.cluster.remove(i, via).await {
            Ok(_) => {
                ctx.event(format!("removed node {} (via node {})", i + 1, via + 1));
                return true;
            }
            Err(e) if Instant::now() < deadline => {
                ctx.event(format!(
                    "remove node {} via {}: {e}; retrying",
                    i + 1,
                    via + 1
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                ctx.problems
                    .push(format!("DELETE /remove of node {} failed: {e}", i + 1));
                return false;
            }
        }
    }
}

/// Add a node, remove a follower, add a node, remove the leader: the cluster ends the cycle
/// with as many members as it started with, so cycles can repeat.
async fn membership(ctx: &mut Ctx<'_>) {
    let quarter = ctx.profile.fault / 4;
    ctx.mark("fault");
    for step in 0..2 {
        ctx.event("add a node");
        let added = ctx.cluster.add_node().await;
        ctx.event(format!("node {} joined", added + 1));
        if let Err(e) = ready_one(ctx.cluster, added, Duration::from_secs(30)).await {
            ctx.problems.push(e);
        }
        ctx.retarget();
        ctx.hold(quarter).await;

        let l = ctx.leader().await;
        let victim = if step == 0 {
            let f = ctx
                .cluster
                .running()
                .into_iter()
                .find(|&i| i != l && i != added)
                .expect("a follower");
            ctx.event(format!("remove follower node {}", f + 1));
            f
        } else {
            ctx.event(format!("remove leader node {}", l + 1));
            l
        };
        if remove(ctx, victim).await {
            ctx.cluster.nodes[victim].member = false;
            ctx.retarget();
            if let Err(d) = ctx.cluster.terminate(victim, Duration::from_secs(10)).await {
                ctx.event(format!(
                    "removed node {} did not exit within {d:?} of SIGTERM (killed)",
                    victim + 1
                ));
            }
        }
        ctx.hold(quarter).await;
    }
    ctx.mark("healed");
}
