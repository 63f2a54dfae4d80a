#!/usr/bin/env bash
# The fault suite's long profile (docs/design/faults.md): real nodes in network namespaces under
# partitions, crashes, pauses, restarts, membership changes and disk faults. Needs root.
#
#   scripts/faults.sh                      # every scenario, long profile (~30 min)
#   scripts/faults.sh partition_into_halves   # scenarios whose test name contains a filter
#   SQLRAFT_FAULTS_PROFILE=short scripts/faults.sh   # the short profile `cargo test` runs
#
# Results (summary.tsv, per-scenario verdict.txt, history.jsonl, node logs) go to
# $SQLRAFT_FAULTS_RESULTS, by default $CARGO_TARGET_DIR/faults-results/<date>.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "faults.sh: needs root (network namespaces, iptables, mounts)" >&2
  exit 1
fi
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables-restore >/dev/null || need+=(iptables)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(util-linux)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sqlraft-target}"
export SQLRAFT_FAULTS_PROFILE="${SQLRAFT_FAULTS_PROFILE:-long}"
export SQLRAFT_FAULTS_RESULTS="${SQLRAFT_FAULTS_RESULTS:-$CARGO_TARGET_DIR/faults-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$SQLRAFT_FAULTS_RESULTS"

status=0
cargo test --test faults -- --nocapture --test-threads 1 "$@" 2>&1 |
  tee "$SQLRAFT_FAULTS_RESULTS/output.log" || status=$?

echo
echo "results: $SQLRAFT_FAULTS_RESULTS"
if [ -f "$SQLRAFT_FAULTS_RESULTS/summary.tsv" ]; then
  column -t -s $'\t' "$SQLRAFT_FAULTS_RESULTS/summary.tsv"
fi
exit "$status"
