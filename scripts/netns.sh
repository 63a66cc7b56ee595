#!/usr/bin/env bash
# Test hosts as Linux network namespaces on one bridge, for the multi-host fault tests.
#
# Every host N (1..) lives in namespace ${P}hN with address 10.213.0.N/24 on eth0, wired by a
# veth pair to a bridge inside namespace ${P}sw (the "switch"). Nothing is added to the root
# namespace, so no traffic leaves the machine. P is $M2M_NETNS_PREFIX (default "m2m").
#
#   scripts/netns.sh up N            create the switch and N hosts
#   scripts/netns.sh down            remove every namespace with the prefix (also after a failure)
#   scripts/netns.sh addr N          print host N's address
#   scripts/netns.sh exec N CMD...   run CMD inside host N
#   scripts/netns.sh cut N           cut host N's link (partition it from everyone)
#   scripts/netns.sh heal N          restore host N's link
#   scripts/netns.sh drop A B...     drop every packet from host A to hosts B... (one-way; nftables in A)
#   scripts/netns.sh undrop A B...   remove those drops
#   scripts/netns.sh faketime        print the path of libfaketime (installing it when missing),
#                                    which the clock scenarios preload into one node
#   scripts/netns.sh check           exit 0 when this machine can run the harness (root, ip, netns)
set -euo pipefail
P="${M2M_NETNS_PREFIX:-m2m}"
SUBNET="10.213.0"

need_root() {
  if [ "$(id -u)" != 0 ]; then echo "netns harness: needs root" >&2; exit 77; fi
  command -v ip >/dev/null || { echo "netns harness: needs iproute2 (ip)" >&2; exit 77; }
}

ensure_nft() {
  command -v nft >/dev/null && return 0
  echo "netns harness: installing nftables" >&2
  (apt-get install -y -q nftables >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nftables >/dev/null 2>&1; }) \
    || { echo "netns harness: could not install nftables" >&2; return 1; }
}

ensure_faketime() {
  [ -e "$FAKETIME_LIB" ] && return 0
  echo "netns harness: installing libfaketime" >&2
  (apt-get install -y -q faketime >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q faketime >/dev/null 2>&1; }) \
    || { echo "netns harness: could not install libfaketime" >&2; return 1; }
}
FAKETIME_LIB="/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketime.so.1"

host() { echo "${P}h$1"; }

cmd="${1:-}"; shift || true
case "$cmd" in
  check)
    need_root
    ip netns add "${P}probe" && ip netns del "${P}probe"
    ;;
  up)
    need_root
    n="${1:?usage: up N}"
    ip netns add "${P}sw"
    ip -n "${P}sw" link set lo up
    ip -n "${P}sw" link add br0 type bridge
    ip -n "${P}sw" link set br0 up
    for i in $(seq 1 "$n"); do
      h=$(host "$i")
      ip netns add "$h"
      ip -n "$h" link set lo up
      ip link add "${P}v$i" type veth peer name "${P}p$i"
      ip link set "${P}v$i" netns "$h"
      ip link set "${P}p$i" netns "${P}sw"
      ip -n "$h" link set "${P}v$i" name eth0
      ip -n "$h" addr add "$SUBNET.$i/24" dev eth0
      ip -n "$h" link set eth0 up
      ip -n "${P}sw" link set "${P}p$i" master br0
      ip -n "${P}sw" link set "${P}p$i" up
    done
    ;;
  down)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P}(sw|h[0-9]+)$" || true); do
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    done
    ;;
  addr) echo "$SUBNET.${1:?usage: addr N}" ;;
  exec)
    i="${1:?usage: exec N CMD...}"; shift
    exec ip netns exec "$(host "$i")" "$@"
    ;;
  cut) ip -n "${P}sw" link set "${P}p${1:?usage: cut N}" down ;;
  heal) ip -n "${P}sw" link set "${P}p${1:?usage: heal N}" up ;;
  drop)
    a="${1:?usage: drop A B...}"; shift; [ $# -ge 1 ] || { echo "usage: drop A B..." >&2; exit 2; }
    ensure_nft
    {
      echo "table inet m2m { chain out { type filter hook output priority 0; policy accept; }; }"
      for b in "$@"; do echo "add rule inet m2m out ip daddr $SUBNET.$b counter drop comment \"to-$b\""; done
    } | ip netns exec "$(host "$a")" nft -f -
    ;;
  undrop)
    a="${1:?usage: undrop A B...}"; shift
    h=$(host "$a")
    for b in "$@"; do
      for handle in $(ip netns exec "$h" nft -a list chain inet m2m out 2>/dev/null | grep "\"to-$b\"" | sed -E 's/.*# handle ([0-9]+).*/\1/'); do
        ip netns exec "$h" nft delete rule inet m2m out handle "$handle"
      done
    done
    ;;
  faketime) ensure_faketime && echo "$FAKETIME_LIB" ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
