#!/usr/bin/env bash
# Runs `m2m bench` with every baseline: starts a Redis primary and one replica on free loopback
# ports (no persistence) for the SET + WAIT 1 row, installing redis-server from the OS packages
# when missing, then stops them. Arguments are passed to `m2m bench` (e.g. --quick, --runs 5).
#
#   scripts/bench.sh                 # full run, median of 3; writes docs/benchmarks/latest.{json,svg,txt}
#   scripts/bench.sh --quick         # short smoke run
#
# OUT=dir changes where the results go; NO_REDIS=1 skips Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/benchmarks}
mkdir -p "$OUT"

if [ -z "${NO_REDIS:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server ..." >&2
    apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
  else
    echo "redis-server not found (and cannot apt-get install it): the Redis row is skipped" >&2
  fi
fi

free_port() {
  # Bind port 0 and report what the kernel chose.
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

REDIS_ARGS=()
PIDS=()
TMP=$(mktemp -d)
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "${NO_REDIS:-}" ] && command -v redis-server >/dev/null 2>&1; then
  P=$(free_port); R=$(free_port)
  common=(--bind 127.0.0.1 --save "" --appendonly no --protected-mode no --daemonize no --logfile "")
  redis-server --port "$P" --dir "$TMP" "${common[@]}" >"$TMP/primary.log" 2>&1 & PIDS+=($!)
  redis-server --port "$R" --dir "$TMP" "${common[@]}" --replicaof 127.0.0.1 "$P" >"$TMP/replica.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do
    if redis-cli -p "$R" info replication 2>/dev/null | grep -q 'master_link_status:up'; then break; fi
    sleep 0.1
  done
  if redis-cli -p "$R" info replication 2>/dev/null | grep -q 'master_link_status:up'; then
    REDIS_ARGS=(--redis "127.0.0.1:$P")
    echo "redis $(redis-server --version | awk '{print $3}') primary 127.0.0.1:$P, replica 127.0.0.1:$R" >&2
  else
    echo "the Redis replica did not attach: the Redis row is skipped" >&2
  fi
fi

cargo build --release -j 2 --bin m2m >&2
{
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  free -h | sed -n 1,2p
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  command -v redis-server >/dev/null 2>&1 && echo "redis: $(redis-server --version)"
} >"$OUT/machine.txt"
target/release/m2m bench "${REDIS_ARGS[@]}" --json "$OUT/latest.json" --svg "$OUT/latest.svg" "$@" | tee "$OUT/latest.txt"
