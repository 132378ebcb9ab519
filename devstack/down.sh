#!/usr/bin/env bash
# Stop the local LiveKit stack started by devstack/up.sh, using the pid files in
# <repo>/.devstack/run/: the guardian, livekit-sip, livekit-server, redis-server.
# Each gets its clean-shutdown signal, then SIGKILL after a grace period.
# Idempotent: a service that is not running is skipped. Works from any cwd.
# If the stack ran in a private network namespace (DEVSTACK_NETNS with up.sh),
# that namespace is deleted too once no process is left in it.
#
# Env: DEVSTACK_STOP_TIMEOUT  seconds to wait per service before SIGKILL (default 15)
set -euo pipefail

DEVSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVSTACK_DIR/.." && pwd)"
RUN_DIR="$REPO_ROOT/.devstack/run"
GRACE="${DEVSTACK_STOP_TIMEOUT:-15}"

# One up/down at a time (several sessions may share this tree).
[[ -d "$RUN_DIR" ]] || mkdir -p "$RUN_DIR"
exec 9>"$RUN_DIR/.lock"
flock -w 120 9 || { echo "devstack/down.sh: ERROR: another devstack up/down holds $RUN_DIR/.lock" >&2; exit 1; }

# alive PID NAME: live, non-zombie process whose command line mentions NAME.
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stop NAME SIGNAL
stop() {
    local name=$1 sig=$2 pidf="$RUN_DIR/$1.pid" pid
    if [[ ! -f "$pidf" ]]; then
        echo "devstack: $name not running (no pid file)"
        return 0
    fi
    pid="$(cat "$pidf" 2>/dev/null || true)"
    if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! alive "$pid" "$name"; then
        echo "devstack: $name not running (stale pid file removed)"
        rm -f "$pidf"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + GRACE))
    while alive "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid" "$name"; then
        echo "devstack: $name (pid $pid) ignored SIG$sig for ${GRACE}s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidf"
    echo "devstack: $name stopped (pid $pid)"
}

stop guardian TERM
# livekit-sip: SIGINT = stop now (SIGTERM would wait for active calls to end).
stop livekit-sip INT
stop livekit-server TERM
stop redis-server TERM

ns="$(cat "$RUN_DIR/netns" 2>/dev/null || true)"
if [[ -n "$ns" ]] && ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$ns"; then
    left="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    if [[ -z "$left" ]]; then
        ip netns del "$ns" && echo "devstack: deleted network namespace $ns"
        rm -f "$RUN_DIR/netns"
    else
        echo "devstack: network namespace $ns kept: processes still in it: $left" >&2
    fi
else
    rm -f "$RUN_DIR/netns"
fi
