#!/usr/bin/env bash
# Benchmarks on loopback: a 3-node sqlraft cluster and, as a reference, a 3-member etcd cluster
# driven by the same load generator (examples/bench.rs). Prints one line per scenario.
#   scripts/bench.sh [seconds-per-scenario] [reads]
# With `reads`, only the read-scaling comparison runs: linearizable point reads through the
# leader alone, then through all three nodes (followers serve them after a ReadIndex).
# Ports: BASE_PORT (default 24000) .. BASE_PORT+99 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
only=${2:-all}
base=${BASE_PORT:-24000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin sqlraftd --example bench --example sqlite_baseline
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm), $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

# sqlraft: node 1 bootstraps, 2 and 3 join.
for i in 1 2 3; do
  http=$((base + i * 10 + 1)); raft=$((base + i * 10 + 2))
  join=(); [ "$i" -gt 1 ] && join=(-join "127.0.0.1:$((base + 12))")
  "$bin/sqlraftd" -node-id "$i" -http-addr "127.0.0.1:$http" -raft-addr "127.0.0.1:$raft" "${join[@]}" \
    "$work/sqlraft$i" >"$work/sqlraft$i.out" 2>"$work/sqlraft$i.err" &
  pids+=($!); sqlpid[$i]=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.1; done
done
leader="http://127.0.0.1:$((base + 11))"
follower="http://127.0.0.1:$((base + 21))"

# etcd reference cluster.
if [ "$only" != reads ] && command -v etcd >/dev/null; then
  cluster=""
  for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:$((base + 60 + i)),"; done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$((base + 50 + i))" --advertise-client-urls "http://127.0.0.1:$((base + 50 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 60 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 60 + i))" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!); etcdpid[$i]=$!
  done
  etcd="http://127.0.0.1:$((base + 51))"
  for _ in $(seq 100); do curl -sf "$etcd/health" | grep -q true && break; sleep 0.1; done
fi

run() { "$bin/examples/bench" --seconds "$secs" "$@"; }
all_nodes="$leader,$follower,http://127.0.0.1:$((base + 31))"
reads() {
  for c in 16 64; do
    run --url "$leader" --mode select --level linearizable -c "$c" | sed 's/^/leader-only /'
    run --url "$all_nodes" --mode select --level linearizable -c "$c" | sed 's/^/all-nodes /'
  done
}
if [ "$only" = reads ]; then reads; exit 0; fi
for c in 1 16 64; do run --url "$leader" --mode insert -c "$c"; done
for c in 1 16 64; do run --url "$follower" --mode insert -c "$c" | sed 's/^/via-follower /'; done
run --url "$leader" --mode batch --batch 100 -c 16
run --url "$leader" --mode queued -c 64
for level in none weak linearizable strong; do run --url "$leader" --mode select --level "$level" -c 64; done
reads
if [ -n "${etcd:-}" ]; then
  for c in 1 16 64; do run --url "$etcd" --mode etcd-put -c "$c"; done
  run --url "$etcd" --mode etcd-range -c 64
  run --url "$etcd" --mode etcd-range-linearizable -c 64
fi
"$bin/examples/sqlite_baseline" 1000000
for i in 1 2 3; do echo "rss sqlraft node $i: $(ps -o rss= -p "${sqlpid[$i]}") KiB"; done
[ -n "${etcd:-}" ] && for i in 1 2 3; do echo "rss etcd member $i: $(ps -o rss= -p "${etcdpid[$i]}") KiB"; done
exit 0
