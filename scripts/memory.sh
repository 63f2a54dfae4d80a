#!/usr/bin/env bash
# Memory at rest (issue 12): a 3-node cluster, a short write and read load, then each node's
# RSS (and its anonymous part, from /proc/PID/smaps_rollup); then the largest request the
# node accepts (-http-max-statements, 100,000 INSERTs) and a 1,000,000-statement request
# (refused with 413), with the leader's RSS before and after each. Each node's line also gives
# SQLite's page caches (sqlraft_sqlite_page_cache_bytes: the database's own pages in memory)
# and RSS without them, the figure issue 12's memory goal (at most 80 MiB at rest) is about.
#   scripts/memory.sh [SQLRAFTD] [seconds]     (default: the release build; 3 s per load)
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --example bench
bin=${1:-$CARGO_TARGET_DIR/release/sqlraftd}; secs=${2:-3}
bench="$CARGO_TARGET_DIR/release/examples/bench"
. scripts/common.sh
work=$(mktemp -d); pids=(); urls=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for i in 1 2 3; do
  h=$(port); r=$(port); [ $i = 1 ] && { r1=$r; url=http://127.0.0.1:$h; }
  j=(); [ $i -gt 1 ] && j=(-join 127.0.0.1:$r1)
  "$bin" -node-id $i -http-addr 127.0.0.1:$h -raft-addr 127.0.0.1:$r "${j[@]}" "$work/n$i" >"$work/o$i" 2>&1 &
  pids+=($!); urls+=("http://127.0.0.1:$h")
  for _ in $(seq 100); do curl -sf 127.0.0.1:$h/readyz >/dev/null && break; sleep 0.1; done
done
rss() { # pid -> "RSS MiB (anon MiB)"
  awk '/^Rss:/{r=$2} /^Anonymous:/{a=$2} END {printf "%.1f MiB (anon %.1f)", r/1024, a/1024}' "/proc/$1/smaps_rollup"
}
cache() { # url -> page cache bytes
  curl -s "$1/metrics" | awk '/^sqlraft_sqlite_page_cache_bytes /{print $2}'
}
show() {
  echo -n "$1:"
  for i in "${!pids[@]}"; do
    local c; c=$(cache "${urls[$i]}")
    awk -v c="${c:-0}" '/^Rss:/{r=$2} /^Anonymous:/{a=$2} END {
      printf "  %.1f MiB (anon %.1f, page cache %.1f, without it %.1f)", r/1024, a/1024, c/1048576, r/1024 - c/1048576 }' \
      "/proc/${pids[$i]}/smaps_rollup"
  done
  echo
}
show "after start"
$bench --url "$url" --mode insert -c 64 --seconds "$secs"
$bench --url "$url" --mode stmts --batch 100 -c 16 --seconds "$secs"
$bench --url "$url" --mode select --level weak -c 64 --seconds "$secs"
$bench --url "$url" --mode select --level none -c 64 --seconds "$secs" --skip-setup
sleep 2
show "2 s after the load"
sleep 10 # tokio retires idle blocking-pool threads (reads run there) after 10 s
show "at rest (12 s after the load)"
python3 -c '
import json, sys
n = int(sys.argv[1])
json.dump(["INSERT INTO bench(v) VALUES (%d)" % i for i in range(n)], open(sys.argv[2], "w"))
' 100000 "$work/100k.json"
python3 -c '
import json, sys
n = int(sys.argv[1])
json.dump(["INSERT INTO bench(v) VALUES (%d)" % i for i in range(n)], open(sys.argv[2], "w"))
' 1000000 "$work/1m.json"
for f in 100k 1m; do
  before=$(rss "${pids[0]}")
  code=$(curl -s -o "$work/$f.out" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "@$work/$f.json" "$url/db/execute")
  sleep 2
  echo "$f-statement request ($(stat -c %s "$work/$f.json") bytes): HTTP $code; leader RSS before $before, after $(rss "${pids[0]}")"
done
show "at the end"
