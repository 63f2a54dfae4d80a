#!/usr/bin/env bash
# Instructions per request on one node, under valgrind's callgrind: steadier than ops/s on a
# shared machine (issue 12; docs/design/performance.md). A single node in a temp dir, 3 s of
# load to warm up, then instrumentation on for SECS seconds of load at c=4, off, dumped;
# prints instructions / requests. Keeps the profile for callgrind_annotate.
#   scripts/callgrind.sh SQLRAFTD [bench mode args...]
#   scripts/callgrind.sh target/release/sqlraftd --mode select --level weak
#   scripts/callgrind.sh target/release/sqlraftd --mode insert
# SECS (default 10), OUT (default a new temp dir: cg.out* in it). Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
bin=$1; shift
[ $# -gt 0 ] || set -- --mode select --level weak
secs=${SECS:-10}
out=${OUT:-$(mktemp -d)}
cargo build --release --quiet --example bench
bench="$CARGO_TARGET_DIR/release/examples/bench"
. scripts/common.sh
http=$(port); raft=$(port)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.out" \
  "$bin" -node-id 1 -http-addr "127.0.0.1:$http" -raft-addr "127.0.0.1:$raft" "$out/data" >"$out/node.log" 2>&1 &
vp=$!
trap 'kill $vp 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.2; done
url="http://127.0.0.1:$http"
"$bench" --url "$url" "$@" -c 4 --seconds 3 >/dev/null
callgrind_control -i on "$vp" >/dev/null
# Read modes keep the rows the warm-up loaded; write modes start from an empty table.
skip=(); [[ " $* " == *" select "* ]] && skip=(--skip-setup)
line=$("$bench" --url "$url" "$@" -c 4 --seconds "$secs" "${skip[@]}")
callgrind_control -i off "$vp" >/dev/null
callgrind_control -d "$vp" >/dev/null
ops=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$line")
ir=$(cat "$out"/cg.out* | awk '/^totals:/ {s += $2} END {print s}')
echo "$line"
echo "instructions=$ir requests=$ops instructions/request=$((ir / ops)) profile=$out"
