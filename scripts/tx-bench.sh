#!/usr/bin/env bash
# Interactive transactions on loopback: a 3-node sqlraft cluster driven by examples/bench.rs in
# its `tx` (2 reads + 2 writes over /db/tx, random rows) and `tx-hot` (every transaction on row
# 0) modes, through the leader and through a follower. Prints one line per scenario.
#   scripts/tx-bench.sh [seconds-per-scenario]
# Ports: BASE_PORT (default 25000) .. BASE_PORT+40 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
base=${BASE_PORT:-25000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin sqlraftd --example bench
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm), $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
for i in 1 2 3; do
  http=$((base + i * 10 + 1)); raft=$((base + i * 10 + 2))
  join=(); [ "$i" -gt 1 ] && join=(-join "127.0.0.1:$((base + 12))")
  "$bin/sqlraftd" -node-id "$i" -http-addr "127.0.0.1:$http" -raft-addr "127.0.0.1:$raft" "${join[@]}" \
    "$work/sqlraft$i" >"$work/sqlraft$i.out" 2>"$work/sqlraft$i.err" &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.1; done
done
leader="http://127.0.0.1:$((base + 11))"
follower="http://127.0.0.1:$((base + 21))"
run() { "$bin/examples/bench" --seconds "$secs" "$@"; }
run --url "$leader" --mode insert -c 16
run --url "$leader" --mode tx -c 16 --rows 10000
run --url "$follower" --mode tx -c 16 --rows 10000 | sed 's/^/via-follower /'
run --url "$leader" --mode tx-hot -c 16 --rows 10000
run --url "$leader" --mode tx-hot -c 1 --rows 10000
exit 0
