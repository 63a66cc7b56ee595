#!/usr/bin/env bash
# The same `m2m` binary under three memory allocators: glibc's (the default), jemalloc and
# mimalloc, each loaded with LD_PRELOAD from the OS packages (installed when missing, as
# root with apt-get). Rounds alternate the allocators, so that a machine whose load changes
# affects them alike; each figure is the median of the rounds. Memory is measured once per
# allocator (fresh child processes, see `m2m bench --only memory`).
#
#   scripts/bench-allocators.sh            # 3 rounds, 1,000,000 sessions for memory
#   ROUNDS=5 SESSIONS=200000 scripts/bench-allocators.sh
#
# Writes docs/benchmarks/allocators.txt (OUT=dir changes where).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/benchmarks}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-1000000}
LIBDIR=/usr/lib/$(uname -m)-linux-gnu
JEMALLOC=$LIBDIR/libjemalloc.so.2
MIMALLOC=$LIBDIR/libmimalloc.so.2
mkdir -p "$OUT"

if [ ! -e "$JEMALLOC" ] || [ ! -e "$MIMALLOC" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libjemalloc2 and libmimalloc2.0 ..." >&2
    apt-get install -y -q libjemalloc2 libmimalloc2.0 >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q libjemalloc2 libmimalloc2.0 >/dev/null; }
  fi
fi
for lib in "$JEMALLOC" "$MIMALLOC"; do
  [ -e "$lib" ] || { echo "$lib not found (and cannot apt-get install it)" >&2; exit 1; }
done

cargo build --release -j 2 --bin m2m >&2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
preload() {
  case $1 in
    glibc) echo "" ;;
    jemalloc) echo "$JEMALLOC" ;;
    mimalloc) echo "$MIMALLOC" ;;
  esac
}
ALLOCATORS=(glibc jemalloc mimalloc)
for round in $(seq "$ROUNDS"); do
  for a in "${ALLOCATORS[@]}"; do
    echo "round $round/$ROUNDS: $a ..." >&2
    LD_PRELOAD=$(preload "$a") target/release/m2m bench --only tcp,quic,async,failover --runs 1 \
      --json "$TMP/$a-$round.json" >/dev/null
  done
done
for a in "${ALLOCATORS[@]}"; do
  echo "memory: $a ..." >&2
  LD_PRELOAD=$(preload "$a") target/release/m2m bench --only memory --memory-sessions "$SESSIONS" \
    --json "$TMP/$a-memory.json" >/dev/null
done

python3 - "$TMP" "$ROUNDS" "$SESSIONS" <<'EOF' | tee "$OUT/allocators.txt"
import json, statistics, sys
tmp, rounds, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
allocs = ["glibc", "jemalloc", "mimalloc"]
runs = {a: [json.load(open(f"{tmp}/{a}-{r}.json"))["median"] for r in range(1, rounds + 1)] for a in allocs}
mem = {a: json.load(open(f"{tmp}/{a}-memory.json")) for a in allocs}
rows = [
    ("TCP sync updates/s, 64 sessions", "tcp.sync.c64.ops_per_s", "{:,.0f}"),
    ("TCP sync update p50 (us)", "tcp.sync.c1.p50_us", "{:.0f}"),
    ("QUIC sync updates/s, 64 sessions", "quic.sync.c64.ops_per_s", "{:,.0f}"),
    ("TCP async updates/s, 64 sessions", "tcp.async.c64.ops_per_s", "{:,.0f}"),
    ("failover, crashed process (ms)", "failover.all_owned_ms", "{:.0f}"),
    ("failover, silent node (ms)", "failover.silent.all_owned_ms", "{:.0f}"),
]
print(f"m2m bench under three allocators (LD_PRELOAD), medians of {rounds} alternating rounds [min-max]")
print()
print(f"{'figure':40}" + "".join(f"{a:>28}" for a in allocs))
for name, key, fmt in rows:
    cells = []
    for a in allocs:
        v = [r[key] for r in runs[a] if key in r]
        cells.append(f"{fmt.format(statistics.median(v))} [{fmt.format(min(v))}-{fmt.format(max(v))}]" if v else "-")
    print(f"{name:40}" + "".join(f"{c:>28}" for c in cells))
def per_copy(a, kind):
    return mem[a]["memory"].get(kind, {}).get("bytes_per_copy", float("nan"))
print(f"{'HashMap B/entry, ' + format(sessions, ',') + ' x 1 KiB':40}" + "".join(f"{per_copy(a, 'hashmap'):>28.0f}" for a in allocs))
print(f"{'m2m B/copy, owner + backup':40}" + "".join(f"{per_copy(a, 'm2m'):>28.0f}" for a in allocs))
print(f"{'m2m / HashMap (target <= 1.15)':40}" + "".join(f"{per_copy(a, 'm2m') / per_copy(a, 'hashmap'):>28.2f}" for a in allocs))
EOF
