#!/usr/bin/env bash
# What a web application sees: `session-api/examples/axum.rs` driven by wrk over HTTP on
# loopback, every request (`POST /bench`) adding one to its session's counter and writing a
# 1 KiB attribute, 16 connections each with its own session and its cookies (wrk -t16 -c16, one connection
# per thread, scripts/bench-http.lua). Three set-ups, alternating in each run:
#
#   memory  one process on tower-sessions' MemoryStore (nothing replicated);
#   floor   the least any synchronous replication costs: the same MemoryStore application,
#           each request also sending its counter and 1 KiB attribute (a 4-byte length
#           before them) over one mutual-TLS connection to a second process that only
#           acknowledges (`m2m bench --acknowledge-child`, 8 bytes back), and answered once
#           acknowledged; no engine, no encoding;
#   m2m     two nodes (app1, app2) with mutual TLS, synchronous writes, one backup; wrk
#           drives app1, which owns the sessions, app2 holds their backups.
#
# Reported: requests/s, p50/p99 (wrk), CPU per request of each process (utime + stime from
# /proc/PID/stat before and after the run, divided by the requests), wrk's own CPU per request
# (it shares the machine's cores with the servers, so requests/s follow the CPU of all three),
# the load average before and after, and the medians over the runs with the ratios m2m/memory,
# floor/memory and m2m/floor (how much of the gap is the round trip itself, how much m2m's).
# After each run every session is read back (GET /counter) on the other node (on the same
# process for memory and floor): it must hold the last counter wrk saw answered, or one more (a
# request in flight when wrk stopped).
#
#   scripts/bench-http.sh                      # 3 runs of 10 s
#   RUNS=5 SECS=20 scripts/bench-http.sh
#   OUT=docs/benchmarks/http.json scripts/bench-http.sh   # also the figures as JSON
#   PERF=1 scripts/bench-http.sh               # perf record app1 during the last m2m run
#   PERF=floor scripts/bench-http.sh           # ... and the floor's application in its last run
#
# wrk (and curl) are installed from the OS packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECS=${SECS:-10}
CONNS=16

install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $* ..." >&2
    apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
  else
    echo "$* not found (and cannot apt-get install it)" >&2
    exit 1
  fi
}
command -v wrk >/dev/null 2>&1 || install wrk
command -v curl >/dev/null 2>&1 || install curl

cargo build --release -j 2 -q --bin m2m >&2
cargo build --release -j 2 -q -p session-api --features tower --example axum >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
M2M=$TARGET/m2m
APP=${APP:-$TARGET/examples/axum}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

R1=$(free_port); R2=$(free_port); H1=$(free_port); H2=$(free_port); H0=$(free_port)
F1=$(free_port); F2=$(free_port); H3=$(free_port)
cat >"$TMP/web.toml" <<TOML
[domain]
name = "bench-http"
topology = "peer-to-peer"
replicas = 1
transport = "tcp"

[[node]]
name = "app1"
address = "127.0.0.1:$R1"

[[node]]
name = "app2"
address = "127.0.0.1:$R2"
TOML
"$M2M" certs init --domain "$TMP/web.toml" --out "$TMP/certs" >/dev/null 2>&1
# The floor's two processes: the same domain and certificates, other addresses (app1's unused:
# the application only dials app2, the acknowledger).
sed -e "s/:$R1\"/:$F1\"/" -e "s/:$R2\"/:$F2\"/" "$TMP/web.toml" >"$TMP/floor.toml"

"$APP" --memory-store --http "127.0.0.1:$H0" >"$TMP/memory.log" 2>&1 & PID0=$!; PIDS+=($PID0)
"$APP" "$TMP/web.toml" app1 --http "127.0.0.1:$H1" --certs "$TMP/certs" >"$TMP/app1.log" 2>&1 & PID1=$!; PIDS+=($PID1)
"$APP" "$TMP/web.toml" app2 --http "127.0.0.1:$H2" --certs "$TMP/certs" >"$TMP/app2.log" 2>&1 & PID2=$!; PIDS+=($PID2)
# The floor's acknowledger, then its application (which dials it at start).
"$M2M" bench --acknowledge-child "$TMP/floor.toml" --acknowledge-node app2 --acknowledge-certs "$TMP/certs" \
  >"$TMP/ack.log" 2>&1 & PIDA=$!; PIDS+=($PIDA)
for _ in $(seq 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$F2") 2>/dev/null && break
  sleep 0.1
done
"$APP" --memory-store --floor "$TMP/floor.toml" app1 --certs "$TMP/certs" --http "127.0.0.1:$H3" >"$TMP/floor.log" 2>&1 & PIDF=$!; PIDS+=($PIDF)
for _ in $(seq 200); do
  if curl -sf "http://127.0.0.1:$H1/m2m/stats" 2>/dev/null | grep -q '"peers_up":1' &&
     curl -sf "http://127.0.0.1:$H0/counter" >/dev/null 2>&1 &&
     curl -sf "http://127.0.0.1:$H3/counter" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$H1/m2m/stats" | grep -q '"peers_up":1' || { echo "the nodes did not see each other" >&2; cat "$TMP"/*.log >&2; exit 1; }
curl -sf "http://127.0.0.1:$H3/counter" >/dev/null || { echo "the floor did not start" >&2; cat "$TMP"/*.log >&2; exit 1; }

# utime + stime of a process, in clock ticks.
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Creates $CONNS sessions on port $1; writes the cookies of each (`id=...`, and m2m's route
# cookie, which a browser sends back too) to file $2, one session a line.
sessions() {
  : >"$2"
  for i in $(seq "$CONNS"); do
    curl -sf -c "$TMP/jar" -X POST "http://127.0.0.1:$1/bench" >/dev/null
    awk 'NF >= 7 && ($1 !~ /^#/ || $1 ~ /^#HttpOnly_/) { printf "%s%s=%s", sep, $6, $7; sep = ";" } END { print "" }' "$TMP/jar" >>"$2"
    rm -f "$TMP/jar"
  done
}

# One run of set-up $1 (memory, floor or m2m): wrk against port $2, read back on port $3, the CPU of
# the processes $4... Prints `SETUP req/s p50 p99 errors stale wrk_cpu_us_per_req cpu_us_per_req...`.
run() {
  local setup=$1 port=$2 back=$3; shift 3
  sessions "$port" "$TMP/cookies"
  local before=() after=() p
  for p in "$@"; do before+=("$(ticks "$p")"); done
  local TIMEFORMAT='%U %S' wrk_user wrk_sys
  { time COOKIES="$TMP/cookies" wrk -t"$CONNS" -c"$CONNS" -d"${SECS}s" --timeout 5s -s scripts/bench-http.lua \
    "http://127.0.0.1:$port" >"$TMP/wrk.out"; } 2>"$TMP/wrk.time"
  read -r wrk_user wrk_sys <"$TMP/wrk.time"
  for p in "$@"; do after+=("$(ticks "$p")"); done
  read -r _ requests secs p50 p99 errors < <(grep '^result ' "$TMP/wrk.out")
  # Every session read back on the other node: the last counter answered, or one more.
  local stale=0 cookie last got
  while read -r _ cookie last; do
    got=$(curl -sf -b "$cookie" "http://127.0.0.1:$back/counter" | awk '{ print $2 }')
    if [ -z "$got" ] || [ "$got" -lt "$last" ] || [ "$got" -gt $((last + 1)) ]; then
      echo "  $setup: session $cookie read back $got on port $back, last answered $last" >&2
      stale=$((stale + 1))
    fi
  done < <(grep '^last ' "$TMP/wrk.out")
  local line="$setup $(awk -v r="$requests" -v s="$secs" 'BEGIN { printf "%.0f", r / s }') $p50 $p99 $errors $stale"
  line+=" $(awk -v u="$wrk_user" -v s="$wrk_sys" -v r="$requests" 'BEGIN { printf "%.1f", (u + s) * 1e6 / r }')"
  local i
  for i in "${!before[@]}"; do
    line+=" $(awk -v a="${before[$i]}" -v b="${after[$i]}" -v r="$requests" -v t="$TICK_US" 'BEGIN { printf "%.1f", (b - a) * t / r }')"
  done
  echo "$line"
}

: >"$TMP/runs"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$RUNS"); do
  echo "run $r/$RUNS ..." >&2
  run memory "$H0" "$H0" "$PID0" | tee -a "$TMP/runs" >&2
  if [ "${PERF:-}" = floor ] && [ "$r" = "$RUNS" ] && command -v perf >/dev/null 2>&1; then
    perf record -F 999 ${PERF_ARGS:---call-graph dwarf,16384} -p "$PIDF" -o "${PERF_FLOOR_OUT:-perf-floor.data}" -- sleep "$SECS" >/dev/null 2>&1 &
    PERF_FLOOR_PID=$!
  fi
  run floor "$H3" "$H3" "$PIDF" "$PIDA" | tee -a "$TMP/runs" >&2
  [ -n "${PERF_FLOOR_PID:-}" ] && wait "$PERF_FLOOR_PID" 2>/dev/null || true
  if [ -n "${PERF:-}" ] && [ "$r" = "$RUNS" ] && command -v perf >/dev/null 2>&1; then
    perf record -F 999 ${PERF_ARGS:---call-graph dwarf,16384} -p "$PID1" -o "${PERF_OUT:-perf-app1.data}" -- sleep "$SECS" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  run m2m "$H1" "$H2" "$PID1" "$PID2" | tee -a "$TMP/runs" >&2
  [ -n "${PERF_PID:-}" ] && wait "$PERF_PID" 2>/dev/null || true
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$TMP/runs" "$SECS" "${OUT:-}" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, statistics, sys
runs = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(setup, i):
    v = [float(r[i]) for r in runs if r[0] == setup]
    return statistics.median(v) if v else float("nan")
def total(setup, first):
    v = [sum(float(x) for x in r[first:]) for r in runs if r[0] == setup]
    return statistics.median(v) if v else float("nan")
def figures(setup, parts=()):
    f = {"req_per_s": med(setup, 1), "p50_us": med(setup, 2), "p99_us": med(setup, 3),
         "errors": med(setup, 4), "stale_reads": med(setup, 5), "wrk_cpu_us_per_req": med(setup, 6),
         "cpu_us_per_req": total(setup, 7)}
    for i, part in enumerate(parts):
        f[f"cpu_us_per_req_{part}"] = med(setup, 7 + i)
    return f
mem = figures("memory")
floor = figures("floor", ("application", "acknowledger"))
m2m = figures("m2m", ("owner", "backup"))
def ratio(a, b):
    return {"req_per_s": a["req_per_s"] / b["req_per_s"], "cpu_per_req": a["cpu_us_per_req"] / b["cpu_us_per_req"]}
ratios = ratio(m2m, mem)
floor_ratios = ratio(floor, mem)
m2m_floor = ratio(m2m, floor)
n = len([r for r in runs if r[0] == "m2m"])
print(f"bench-http: median of {n} run(s) of {sys.argv[2]} s, wrk -t16 -c16, POST /bench (counter + 1 KiB attribute)")
print(f"load average (1, 5, 15 min): {sys.argv[4]} before, {sys.argv[5]} after\n")
print(f"{'set-up':<48}{'req/s':>10}{'p50':>9}{'p99':>9}{'CPU/req':>11}{'wrk CPU/req':>13}  read back")
def row(name, f):
    ok = 'ok' if f['stale_reads'] == 0 else 'STALE'
    print(f"{name:<48}{f['req_per_s']:>10.0f}{f['p50_us']:>7.0f}us{f['p99_us']:>7.0f}us{f['cpu_us_per_req']:>9.1f}us{f['wrk_cpu_us_per_req']:>11.1f}us  {ok}")
def parts(name, a, b):
    print(f"{name:<48}{'':>10}{'':>9}{'':>9}{a:>6.1f} / {b:.1f}us")
row("MemoryStore, one process", mem)
row("floor: MemoryStore + acked mutual-TLS exchange", floor)
parts("  of which application / acknowledger", floor["cpu_us_per_req_application"], floor["cpu_us_per_req_acknowledger"])
row("m2m, two nodes (sync, 1 backup, mutual TLS)", m2m)
parts("  of which owner (app1) / backup (app2)", m2m["cpu_us_per_req_owner"], m2m["cpu_us_per_req_backup"])
together = {k: f["cpu_us_per_req"] + f["wrk_cpu_us_per_req"] for k, f in (("memory", mem), ("floor", floor), ("m2m", m2m))}
print(f"{'  servers and wrk together':<48}{'':>10}{'':>9}{'':>9}  memory {together['memory']:.1f}, floor {together['floor']:.1f}, m2m {together['m2m']:.1f}us"
      f" (memory / m2m: {together['memory'] / together['m2m']:.2f}x, the req/s ratio when the cores are the limit)")
print()
print(f"{'ratios':<48}{'req/s':>10}{'CPU/req':>11}")
for name, r in (("floor / memory (the round trip itself)", floor_ratios), ("m2m / floor (m2m's own share)", m2m_floor), ("m2m / memory", ratios)):
    print(f"  {name:<46}{r['req_per_s']:>9.2f}x{r['cpu_per_req']:>10.2f}x")
print()
print(f"targets (m2m / memory):\n  replicated req/s >= 0.8x MemoryStore        {ratios['req_per_s']:.2f}x {'met' if ratios['req_per_s'] >= 0.8 else 'NOT met'}"
      f" (the floor: {floor_ratios['req_per_s']:.2f}x)")
print(f"  CPU per replicated request <= 1.5x         {ratios['cpu_per_req']:.2f}x {'met' if ratios['cpu_per_req'] <= 1.5 else 'NOT met'}"
      f" (the floor: {floor_ratios['cpu_per_req']:.2f}x)")
if sys.argv[3]:
    json.dump({"runs": n, "secs": float(sys.argv[2]), "load_average": [sys.argv[4], sys.argv[5]],
               "memory": mem, "floor": floor, "m2m": m2m, "ratios": ratios, "floor_ratios": floor_ratios,
               "m2m_floor_ratios": m2m_floor, "each_run": runs}, open(sys.argv[3], "w"), indent=2)
PY
