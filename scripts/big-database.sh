#!/usr/bin/env bash
# A large database end to end (issue 13): build a SQLite file of about SIZE_MB (default 1024) of 2 KiB
# blobs, load it into a 3-node cluster with /db/load, join a 4th node (it catches up by
# snapshot), restart every node, and check that all four hold every row. Prints the time of
# each step and each node's RSS, so memory stays bounded whatever the database size.
#   scripts/big-database.sh [SIZE_MB]
# Needs sqlite3 and curl; uses free loopback ports and a temp dir (WORK to keep it elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-1024}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin sqlraftd
bin="$CARGO_TARGET_DIR/release/sqlraftd"
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; if [ -z "${WORK:-}" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT
. scripts/common.sh
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm)"
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"

rows=$((size_mb * 256)) # one 2 KiB blob per 4 KiB page
t=$(now)
sqlite3 "$work/big.db" "PRAGMA page_size=4096; CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
  WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < $rows)
  INSERT INTO big SELECT x, randomblob(2048) FROM c;"
echo "built $(stat -c %s "$work/big.db") bytes, $rows rows in $(since "$t") s"

declare -A http raft pid
start() { # id [join]
  local i=$1; shift
  "$bin" -node-id "$i" -http-addr "127.0.0.1:${http[$i]}" -raft-addr "127.0.0.1:${raft[$i]}" "$@" \
    "$work/node$i" >>"$work/node$i.log" 2>&1 &
  pid[$i]=$!; pids+=($!)
}
ready() { for _ in $(seq 600); do curl -sf "127.0.0.1:${http[$1]}/readyz" >/dev/null && return; sleep 0.1; done; echo "node $1 not ready" >&2; exit 1; }
count() { curl -sf "127.0.0.1:${http[$1]}/db/query?level=none&q=SELECT+COUNT(*)+FROM+big" | sed 's/.*\[\[\([0-9]*\)\]\].*/\1/'; }
wait_rows() { for _ in $(seq 1800); do [ "$(count "$1" 2>/dev/null)" = "$rows" ] && return; sleep 0.2; done; echo "node $1 never held $rows rows" >&2; exit 1; }
rss() { for i in "$@"; do printf 'node %s %s MiB  ' "$i" $(( $(ps -o rss= -p "${pid[$i]}") / 1024 )); done; echo; }

for i in 1 2 3 4; do http[$i]=$(port); raft[$i]=$(port); done
start 1; ready 1
start 2 -join "127.0.0.1:${raft[1]}"; start 3 -join "127.0.0.1:${raft[1]}"; ready 2; ready 3

t=$(now)
code=$(curl -s -o "$work/load.out" -w '%{http_code}' -XPOST "127.0.0.1:${http[1]}/db/load" \
  -H 'Content-Type: application/octet-stream' -T "$work/big.db") # -T streams the file
[ "$code" = 200 ] || { echo "load answered $code: $(cat "$work/load.out")" >&2; exit 1; }
for i in 1 2 3; do wait_rows "$i"; done
echo "load into 3 nodes: $(since "$t") s"; rss 1 2 3

t=$(now)
start 4 -join "127.0.0.1:${raft[1]}"; wait_rows 4
echo "4th node joins and holds every row: $(since "$t") s"; rss 1 2 3 4

for i in 1 2 3 4; do kill "${pid[$i]}"; done; wait 2>/dev/null || true
t=$(now)
start 1; for i in 2 3 4; do start "$i" -join "127.0.0.1:${raft[1]}"; done
for i in 1 2 3 4; do ready "$i"; wait_rows "$i"; done
echo "restart of 4 nodes to ready with every row: $(since "$t") s"; rss 1 2 3 4
