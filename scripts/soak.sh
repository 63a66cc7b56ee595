#!/usr/bin/env bash
# Soak test: a 3-node domain on loopback (real `m2m node` processes, mutual TLS), continuous
# synchronous writes through the admin APIs, a SIGKILL and restart of a random node every
# SOAK_KILL_EVERY seconds, RSS of every node sampled every 10 s. At the end: every
# acknowledged write readable, invalidated sessions stay gone, nothing under-replicated, and
# memory not growing without bound (the last third's average total RSS at most 2x the first
# third's, after a 30 s warm-up). Exit 0 when all holds, 1 otherwise. Not run by CI.
#
#   scripts/soak.sh                      # 3 minutes
#   SOAK_MINUTES=5 scripts/soak.sh
#   M2M_BIN=target/release/m2m SOAK_MINUTES=10 SOAK_KILL_EVERY=20 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${SOAK_MINUTES:-3}"
KILL_EVERY="${SOAK_KILL_EVERY:-30}"
BIN="${M2M_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build -q --bin m2m
  BIN=target/debug/m2m
fi
DIR=$(mktemp -d /tmp/m2m-soak.XXXXXX)
echo "soak: ${MINUTES} min, SIGKILL every ${KILL_EVERY} s, binary $BIN, work dir $DIR"
exec python3 - "$BIN" "$DIR" "$MINUTES" "$KILL_EVERY" <<'PY'
import json, os, random, signal, socket, subprocess, sys, time, http.client

BIN, DIR, MINUTES, KILL_EVERY = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
N = 3
rnd = random.Random(int(os.environ.get("SOAK_SEED", "7")))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

names = [f"app{i+1}" for i in range(N)]
admins = [f"127.0.0.1:{free_port()}" for _ in range(N)]
with open(f"{DIR}/domain.toml", "w") as f:
    f.write('[domain]\nname = "soak"\nheartbeat_interval_ms = 100\nfailure_timeout_ms = 600\nrequest_timeout_ms = 1000\n\n')
    for i in range(N):
        f.write(f'[[node]]\nname = "{names[i]}"\naddress = "127.0.0.1:{free_port()}"\nadmin = "{admins[i]}"\n\n')
subprocess.run([BIN, "certs", "init", "--domain", f"{DIR}/domain.toml", "--out", f"{DIR}/certs"], check=True,
               stdout=subprocess.DEVNULL)
# The admin APIs need the bearer token `m2m certs init` wrote.
TOKEN = open(f"{DIR}/certs/admin.token").read().strip()

procs = [None] * N
starts = [0] * N
def start(i):
    starts[i] += 1
    log = open(f"{DIR}/{names[i]}.{starts[i]}.log", "w")
    env = dict(os.environ); env.pop("M2M_ADMIN_TOKEN", None)
    procs[i] = subprocess.Popen([BIN, "node", "--config", f"{DIR}/domain.toml", "--name", names[i],
                                 "--certs", f"{DIR}/certs"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)

def call(i, method, path, body=None, timeout=4.0):
    host, port = admins[i].split(":")
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse(); raw = r.read(); c.close()
        try: return r.status, json.loads(raw)
        except ValueError: return r.status, {}
    except (OSError, http.client.HTTPException):
        return 0, {}

def status(i):
    code, s = call(i, "GET", "/status", timeout=2.0)
    return s if code == 200 else None

def healthy():
    for i in range(N):
        s = status(i)
        if not s or not all(m["up"] for m in s["membership"]) or s["sessions"]["under_replicated"] != 0:
            return False
    return True

def wait_healthy(secs):
    t0 = time.time()
    while time.time() - t0 < secs:
        if healthy(): return time.time() - t0
        time.sleep(0.2)
    return None

def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"): return int(line.split()[1])
    except OSError: pass
    return 0

def stop_all():
    for p in procs:
        if p and p.poll() is None:
            p.kill(); p.wait()

try:
    for i in range(N): start(i)
    if wait_healthy(30) is None:
        print("soak: the domain did not form"); sys.exit(1)
    acked = {}          # session -> {attr: value}
    live, invalidated, unsure = [], set(), set()
    stats = dict(acked=0, unacked=0, failed=0, kills=0, creates=0)
    failed_codes = {}   # "METHOD code" -> count
    samples = []        # (t, [rss per node])
    t0 = time.time(); end = t0 + MINUTES * 60
    next_sample, next_kill = t0, t0 + KILL_EVERY
    restart_at = None
    seq = 0
    while time.time() < end:
        now = time.time()
        if now >= next_sample:
            samples.append((now - t0, [rss_kib(p.pid) if p and p.poll() is None else 0 for p in procs]))
            print(f"t={now-t0:6.0f}s RSS KiB " + " ".join(f"{names[i]}={samples[-1][1][i]}" for i in range(N))
                  + f"  acked={stats['acked']} sessions={len(live)}", flush=True)
            next_sample += 10
        if restart_at is None and now >= next_kill:
            victim = rnd.randrange(N)
            procs[victim].send_signal(signal.SIGKILL); procs[victim].wait()
            stats["kills"] += 1
            restart_at = (victim, now + 3)
            next_kill = now + KILL_EVERY
        if restart_at and now >= restart_at[1]:
            start(restart_at[0]); restart_at = None
        seq += 1
        node = rnd.randrange(N)
        if len(live) < 200 or seq % 20 == 0:
            code, b = call(node, "POST", "/sessions", {"c": str(seq)})
            if code == 201 and b.get("replication") == "replicated":
                acked[b["id"]] = {"c": str(seq)}; live.append(b["id"]); stats["acked"] += 1
            elif "id" in b: live.append(b["id"]); stats["unacked"] += 1
            else:
                stats["failed"] += 1; failed_codes[f"POST {code}"] = failed_codes.get(f"POST {code}", 0) + 1
            continue
        sid = rnd.choice(live)
        if seq % 50 == 0:
            code, b = call(node, "DELETE", f"/sessions/{sid}")
            live.remove(sid); acked.pop(sid, None)
            if code == 200 and b.get("invalidated"): invalidated.add(sid)
            else: unsure.add(sid)
            continue
        k, v = f"w{seq}", f"v{seq}"
        code, b = call(node, "PATCH", f"/sessions/{sid}", {k: v})
        if code == 200 and b.get("replication") == "replicated":
            acked.setdefault(sid, {})[k] = v; stats["acked"] += 1
        elif code in (0, 200, 504, 409, 503): stats["unacked"] += 1
        else:
            stats["failed"] += 1; failed_codes[f"PATCH {code}"] = failed_codes.get(f"PATCH {code}", 0) + 1
    if restart_at: start(restart_at[0])
    rec = wait_healthy(60)
    lost, back, checked = 0, 0, 0
    for sid, attrs in acked.items():
        got = None
        for _ in range(20):
            code, b = call(rnd.randrange(N), "GET", f"/sessions/{sid}")
            if code in (200, 404): got = (code, b); break
            time.sleep(0.2)
        checked += len(attrs)
        if not got or got[0] != 200:
            lost += len(attrs); print(f"LOST session {sid}: {got}"); continue
        for k, v in attrs.items():
            if got[1]["attributes"].get(k) != v:
                lost += 1; print(f"LOST {sid} {k}={v}: read {got[1]['attributes'].get(k)}")
    for sid in invalidated:
        code, _ = call(rnd.randrange(N), "GET", f"/sessions/{sid}")
        if code != 404: back += 1; print(f"BACK invalidated {sid} answers {code}")
    rec2 = wait_healthy(30)
    under = [ (status(i) or {}).get("sessions", {}).get("under_replicated") for i in range(N)]
    samples.append((time.time() - t0, [rss_kib(p.pid) if p and p.poll() is None else 0 for p in procs]))
    warm = [s for s in samples if s[0] >= 30] or samples
    third = max(1, len(warm) // 3)
    first = sum(sum(s[1]) for s in warm[:third]) / third
    last = sum(sum(s[1]) for s in warm[-third:]) / third
    grew = last > 2 * first
    print(f"soak summary: {MINUTES} min, writes acknowledged {stats['acked']}, not acknowledged {stats['unacked']}, "
          f"failed {stats['failed']} {failed_codes}, SIGKILLs {stats['kills']}, sessions {len(live)}, invalidated {len(invalidated)}")
    print(f"  checked {checked} acknowledged writes: lost {lost}; invalidated back {back}; "
          f"under-replicated {under}; recovery {'%.1f s' % rec if rec is not None else 'NONE'}")
    print(f"  total RSS KiB: first third avg {first:.0f}, last third avg {last:.0f} ({last/first:.2f}x)"
          f"{'  GROWING' if grew else ''}")
    ok = lost == 0 and back == 0 and rec2 is not None and not grew
    print("soak: OK" if ok else "soak: FAILED")
    sys.exit(0 if ok else 1)
finally:
    stop_all()
PY
