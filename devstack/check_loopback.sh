#!/usr/bin/env bash
# Show every TCP/UDP socket of the dev stack's processes (pids from
# <repo>/.devstack/run/*.pid) and fail unless all of them are loopback-only:
#   - a listening socket (TCP LISTEN, unconnected UDP) must be bound to
#     127.0.0.0/8 or ::1 -- never 0.0.0.0, ::, * or any other address;
#   - a connected socket must have loopback addresses at both ends.
# If the stack runs in a private network namespace (up.sh with DEVSTACK_NETNS),
# the sockets are read inside it; the namespace must have only `lo` and dead-end
# (dummy/ifb) interfaces and no default route (checked), so nothing bound in it -- even a
# wildcard -- can be reached from or send to the outside: such sockets are
# listed as "ok (isolated netns; ...)".
# Exit 0 = all loopback; 1 = a violation (listed); 2 = stack not running / no ss.
# Works from any cwd.
set -euo pipefail

DEVSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVSTACK_DIR/.." && pwd)"
RUN_DIR="$REPO_ROOT/.devstack/run"

command -v ss >/dev/null || { echo "check_loopback: ss not found (apt-get install iproute2)" >&2; exit 2; }

pids=()
for pidf in "$RUN_DIR"/*.pid; do
    [[ -f "$pidf" ]] || continue
    pid="$(cat "$pidf" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && [[ -d "/proc/$pid" ]]; then
        pids+=("$pid")
        echo "check_loopback: $(basename "$pidf" .pid) pid $pid"
    fi
done
if ((${#pids[@]} == 0)); then
    echo "check_loopback: no running stack process (no live pid in $RUN_DIR/*.pid); run devstack/up.sh" >&2
    exit 2
fi

pid_re="$(IFS='|'; echo "${pids[*]}")"

NSEXEC=()
isolated_ns=0
ns="$(cat "$RUN_DIR/netns" 2>/dev/null || true)"
if [[ -n "$ns" ]]; then
    NSEXEC=(ip netns exec "$ns")
    ifaces="$(ip -n "$ns" -d -o link show | awk '{name=$2; sub(/:$/, "", name); sub(/@.*/, "", name);
              print name ($0 ~ / (dummy|ifb) / ? "(dead-end)" : "")}' | tr '\n' ' ')"
    echo "check_loopback: stack runs in network namespace $ns; interfaces: $ifaces"
    for i in $ifaces; do
        [[ "$i" == lo || "$i" == *"(dead-end)" ]] \
            || { echo "check_loopback: FAIL: interface $i in $ns is neither lo nor a dead-end (dummy/ifb) device" >&2; exit 1; }
    done
    routes="$(ip -n "$ns" route show default; ip -n "$ns" -6 route show default)"
    [[ -z "$routes" ]] || { echo "check_loopback: FAIL: $ns has a default route: $routes" >&2; exit 1; }
    echo "check_loopback: $ns has no link and no route out: every socket in it is loopback-only"
    isolated_ns=1
fi

"${NSEXEC[@]}" ss -H -tuanp | awk -v pids="$pid_re" -v isolated_ns="$isolated_ns" '
function host(a,   h) {            # strip :port, %iface, []
    h = a
    sub(/:[^:]*$/, "", h)
    sub(/%.*/, "", h)
    gsub(/^\[|\]$/, "", h)
    return h
}
function loop(h) { return h ~ /^127\./ || h == "::1" || h ~ /^::ffff:127\./ }
BEGIN { n = 0; bad = 0 }
$0 ~ ("pid=(" pids "),") {
    proto = $1; state = $2; local = $5; peer = $6
    proc = $0; sub(/.*users:\(\(/, "", proc); sub(/,fd=.*/, "", proc)
    lh = host(local); ph = host(peer)
    listening = (state == "LISTEN" || state == "UNCONN")
    verdict = "ok"
    if (!loop(lh)) verdict = "NOT LOOPBACK (bound to " lh ")"
    else if (!listening && !loop(ph)) verdict = "NOT LOOPBACK (peer " ph ")"
    if (isolated_ns && verdict != "ok") verdict = "ok (isolated netns; " substr(verdict, 15)
    printf "  %-4s %-7s %-24s %-24s %-28s %s\n", proto, state, local, peer, proc, verdict
    n++
    if (verdict !~ /^ok/) bad++
}
END {
    if (n == 0) { print "check_loopback: FAIL: no sockets found for the stack pids"; exit 1 }
    if (bad > 0) { printf "check_loopback: FAIL: %d of %d sockets are not loopback-only\n", bad, n; exit 1 }
    printf "check_loopback: OK: all %d sockets of the stack are on loopback\n", n
}'
