#!/usr/bin/env bash
# Two sqlraftd builds side by side in one run: a 3-node cluster of each on free loopback
# ports, alternating, two rounds; 1-row INSERT and point reads (weak, none) at c=64, 100
# statements per request at c=16, RSS after. Each point's line ends with each node's CPU
# time per request (user + system, from /proc/PID/stat; leader/node 2/node 3) and context
# switches per request (all its threads, from /proc/PID/task/*/status): steadier than ops/s
# on a shared machine. ROUNDS sets the rounds; POINTS, bench's arguments for each point
# separated by ';', replaces the default points (FOLLOWER in a point stands for node 2's
# URL, as in '--mode insert -c 64 --url FOLLOWER'); BENCH names a bench binary to use
# instead of building one.
#   scripts/ab.sh OLD_SQLRAFTD NEW_SQLRAFTD [seconds]
#   ROUNDS=3 POINTS='--mode insert -c 64;--mode select --level strong -c 64' scripts/ab.sh OLD NEW 5
# (build the old one from a worktree: git worktree add /tmp/old <commit>; cargo build --release)
set -uo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; secs=${3:-6}
rounds=${ROUNDS:-2}
default='--mode insert -c 1;--mode insert -c 64;--mode select --level weak -c 64;--mode select --level none -c 64;--mode stmts --batch 100 -c 16'
IFS=';' read -r -a points <<< "${POINTS:-$default}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
bench=${BENCH:-}   # a load generator built before (skips the build)
if [ -z "$bench" ]; then
  cargo build --release --quiet --example bench
  bench="$CARGO_TARGET_DIR/release/examples/bench"
fi
. scripts/common.sh
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm)"
echo "date: $(date -u +%FT%TZ)"
cluster() { # bin -> sets pids, url
  local bin=$1; work=$(mktemp -d); pids=(); urls=()
  local r1; for i in 1 2 3; do
    h=$(port); r=$(port); [ $i = 1 ] && { r1=$r; url=http://127.0.0.1:$h; }
    urls+=("http://127.0.0.1:$h")
    j=(); [ $i -gt 1 ] && j=(-join 127.0.0.1:$r1)
    $bin -node-id $i -http-addr 127.0.0.1:$h -raft-addr 127.0.0.1:$r "${j[@]}" $work/n$i >$work/o$i 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do curl -sf 127.0.0.1:$h/readyz >/dev/null && break; sleep 0.1; done
  done
}
stop() { kill "${pids[@]}"; wait 2>/dev/null; rm -rf "$work"; }
# Per node: CPU ticks (user + system) and context switches (every thread's, voluntary and not).
counters() {
  for p in "${pids[@]}"; do
    awk '{printf "%d ", $14 + $15}' "/proc/$p/stat"
    cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {printf "%d ", s}'
  done
}
for round in $(seq "$rounds"); do
  for v in old new; do
    bin=${!v}; cluster $bin
    echo "== round $round $v"
    for p in "${points[@]}"; do
      before=$(counters)
      # shellcheck disable=SC2086 # each point is a list of arguments
      line=$($bench --url $url ${p//FOLLOWER/${urls[1]}} --seconds $secs)
      after=$(counters)
      awk -v l="$line" -v a="$before" -v b="$after" -v t="$(getconf CLK_TCK)" 'BEGIN {
        n = l; sub(/.* ops=/, "", n); sub(/ .*/, "", n); if (n <= 0) n = 1
        split(a, x, " "); split(b, y, " ")
        printf "%s cpu_us/op=", l
        for (i = 1; i <= 5; i += 2) printf "%s%.0f", (i > 1 ? "/" : ""), (y[i] - x[i]) / t * 1e6 / n
        printf " switches/op="
        for (i = 2; i <= 6; i += 2) printf "%s%.1f", (i > 2 ? "/" : ""), (y[i] - x[i]) / n
        printf "\n" }'
    done
    echo "rss: $(for p in "${pids[@]}"; do echo -n "$(( $(ps -o rss= -p $p) / 1024 ))MiB "; done)"
    stop
  done
done
