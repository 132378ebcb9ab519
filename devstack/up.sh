#!/usr/bin/env bash
# Start the local, loopback-only LiveKit stack: redis-server, livekit-server
# (top-level livekit.yaml) and livekit-sip (devstack/sip.yaml), then health-check
# each. Idempotent: a service that is already running (pid file) and healthy is
# left alone. Works from any cwd. Pids and logs: <repo>/.devstack/run/.
#
# Env: DEVSTACK_TIMEOUT  seconds to wait for each service to become healthy (default 30)
#      DEVSTACK_NETNS   optional network namespace name (e.g. lkdev): run the whole
#                       stack inside a private netns with only `lo` plus a dead-end
#                       (ifb) interface, no route out (created if missing, needs root).
#                       Then even the sockets livekit-sip binds on 0.0.0.0 / all
#                       interfaces during calls (no option to stop that, see README)
#                       cannot be reached from, or send to, anything outside.
#                       Clients (agent, tests) must run inside it: ip netns exec NAME CMD
set -euo pipefail

DEVSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVSTACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$DEVSTACK_DIR/versions.env"

BIN_DIR="$REPO_ROOT/.devstack/bin"
RUN_DIR="$REPO_ROOT/.devstack/run"
LK_CONF="$REPO_ROOT/livekit.yaml"
SIP_CONF="$DEVSTACK_DIR/sip.yaml"
TIMEOUT="${DEVSTACK_TIMEOUT:-30}"
NETNS="${DEVSTACK_NETNS:-}"
NETNS_DUMMY_IF=lkifb0
NETNS_DUMMY_ADDR=198.51.100.1/32   # RFC 5737 documentation range; exists only inside the netns
mkdir -p "$RUN_DIR"

# One up/down at a time (several sessions may share this tree). Started services
# get fd 9 closed, so they never hold the lock.
exec 9>"$RUN_DIR/.lock"
flock -w 120 9 || { echo "devstack/up.sh: ERROR: another devstack up/down holds $RUN_DIR/.lock" >&2; exit 1; }

die() { echo "devstack/up.sh: ERROR: $*" >&2; exit 1; }

# service_failed NAME WHY: print the log tail, then one clear line naming the service.
service_failed() {
    local name=$1 why=$2 log="$RUN_DIR/$1.log"
    if [[ -s "$log" ]]; then
        echo "---- last lines of $log ----" >&2
        tail -n 15 "$log" >&2
        echo "----" >&2
    fi
    die "$name is not healthy: $why (log: $log)"
}

# ------------------------------------------------------------ preconditions
for b in livekit-server livekit-sip; do
    [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b missing: run devstack/install.sh"
done
[[ "$(cat "$BIN_DIR/.livekit-server.version" 2>/dev/null)" == *"@$LIVEKIT_SERVER_VERSION" ]] \
    || die "livekit-server binary does not match LIVEKIT_SERVER_VERSION=$LIVEKIT_SERVER_VERSION: run devstack/install.sh"
[[ "$(cat "$BIN_DIR/.livekit-sip.version" 2>/dev/null)" == *"@$LIVEKIT_SIP_VERSION" ]] \
    || die "livekit-sip binary does not match LIVEKIT_SIP_VERSION=$LIVEKIT_SIP_VERSION: run devstack/install.sh"
for c in redis-server redis-cli curl ss; do
    command -v "$c" >/dev/null || die "$c not found: run devstack/install.sh"
done
PYTHON="$(command -v /usr/bin/python3 python3 | head -n 1)" || true
[[ -n "$PYTHON" ]] || die "python3 not found (needed for the SIP OPTIONS health probe)"

# The YAML files carry literal ports (so they stay usable on their own); make sure
# they agree with versions.env. want FILE REGEX: REGEX must match a whole line
# (leading spaces and a trailing comment allowed).
want() {
    grep -Eq "^[[:space:]]*$2[[:space:]]*(#.*)?$" "$1" \
        || die "$1 has no line matching '$2' (must agree with devstack/versions.env)"
}
want "$LK_CONF" "port: $LIVEKIT_PORT"
want "$LK_CONF" "port: $LIVEKIT_PROMETHEUS_PORT"
want "$LK_CONF" "address: 127\.0\.0\.1:$REDIS_PORT"
want "$LK_CONF" "udp_port: $LIVEKIT_RTC_UDP_PORT_START-$LIVEKIT_RTC_UDP_PORT_END"
want "$LK_CONF" "udp_port: $LIVEKIT_TURN_UDP_PORT"
want "$LK_CONF" "relay_range_start: $LIVEKIT_TURN_RELAY_PORT_START"
want "$LK_CONF" "relay_range_end: $LIVEKIT_TURN_RELAY_PORT_END"
want "$SIP_CONF" "ws_url: ws://127\.0\.0\.1:$LIVEKIT_PORT"
want "$SIP_CONF" "address: 127\.0\.0\.1:$REDIS_PORT"
want "$SIP_CONF" "sip_port: $SIP_PORT"
want "$SIP_CONF" "rtp_port: $SIP_RTP_PORT_START-$SIP_RTP_PORT_END"

# ------------------------------------------------------------ netns (optional)
# run/netns records the namespace the running stack lives in ("" = host).
recorded_ns="$(cat "$RUN_DIR/netns" 2>/dev/null || true)"
NSEXEC=()
if [[ -n "$NETNS" ]]; then
    [[ "$NETNS" =~ ^[A-Za-z0-9_.-]+$ ]] || die "DEVSTACK_NETNS='$NETNS' is not a valid name"
    command -v ip >/dev/null || die "ip not found: run devstack/install.sh"
    if ! ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$NETNS"; then
        ip netns add "$NETNS" || die "cannot create network namespace $NETNS (root needed)"
        echo "devstack: created network namespace $NETNS"
    fi
    ip -n "$NETNS" link set lo up || die "cannot bring up lo in network namespace $NETNS"
    # livekit-sip's SIP stack (sipgo) refuses to start without a non-loopback IPv4
    # interface ("server not connected to any network"), so the namespace also
    # gets a dead-end interface: an `ifb` device (the kernel here has no `dummy`
    # driver) with an address local to the namespace, no peer, no route.
    if ! ip -n "$NETNS" link show "$NETNS_DUMMY_IF" >/dev/null 2>&1; then
        if ! { ip -n "$NETNS" link add "$NETNS_DUMMY_IF" type ifb \
                && ip netns exec "$NETNS" sysctl -qw "net.ipv6.conf.$NETNS_DUMMY_IF.disable_ipv6=1" \
                && ip -n "$NETNS" addr add "$NETNS_DUMMY_ADDR" dev "$NETNS_DUMMY_IF"; }; then
            die "cannot add the dead-end interface $NETNS_DUMMY_IF to network namespace $NETNS"
        fi
    fi
    ip -n "$NETNS" link set "$NETNS_DUMMY_IF" up
    extra="$(ip -n "$NETNS" -d -o link show | awk '{name=$2; sub(/:$/, "", name); sub(/@.*/, "", name);
             if (name != "lo" && $0 !~ / (dummy|ifb) /) print name}')"
    [[ -z "$extra" ]] || die "network namespace $NETNS has interfaces other than lo/dummy/ifb ($extra); refusing"
    [[ -z "$(ip -n "$NETNS" route show default; ip -n "$NETNS" -6 route show default)" ]] \
        || die "network namespace $NETNS has a default route; refusing"
    NSEXEC=(ip netns exec "$NETNS")
fi

# ------------------------------------------------------------ helpers
# pid of service NAME if its pid file names a live (non-zombie) process running
# the expected program, else empty.
running_pid() {
    local name=$1 pidf="$RUN_DIR/$1.pid" pid state
    [[ -f "$pidf" ]] || return 0
    pid="$(cat "$pidf" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name" || return 0
    echo "$pid"
}

# port_user PROTO PORT: who (if anyone) listens on 127.0.0.1/any PORT.
port_user() {
    local flag=-lntp
    [[ $1 == udp ]] && flag=-lnup
    "${NSEXEC[@]}" ss -H "$flag" "sport = :$2" 2>/dev/null | head -n 1
}

# start NAME CMD...: start CMD detached (own session, stdin closed), stdout+stderr
# appended to NAME.log; the pid written to NAME.pid is CMD's own pid (exec).
start() {
    local name=$1; shift
    local log="$RUN_DIR/$name.log" pidf="$RUN_DIR/$name.pid"
    rm -f "$pidf"
    echo "==== $(date -u +%FT%TZ) devstack/up.sh starting $name" >>"$log"
    # shellcheck disable=SC2016  # $$/$0/$@ expand in the child bash, on purpose
    "${NSEXEC[@]}" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$@" >>"$log" 2>&1 </dev/null 9>&- &
    local _
    for _ in $(seq 50); do [[ -s "$pidf" ]] && break; sleep 0.1; done
    [[ -s "$pidf" ]] || service_failed "$name" "did not start"
}

# wait_healthy NAME CHECK_FUNCTION: poll until the check passes or TIMEOUT.
wait_healthy() {
    local name=$1 check=$2 deadline=$((SECONDS + TIMEOUT)) why=""
    while :; do
        if [[ -z "$(running_pid "$name")" ]]; then
            # /proc/PID/cmdline reads empty while the process is in exec():
            # look again before calling it dead.
            sleep 0.3
            [[ -n "$(running_pid "$name")" ]] || service_failed "$name" "process exited"
        fi
        if why="$($check 2>&1)"; then
            return 0
        fi
        ((SECONDS < deadline)) || service_failed "$name" "no healthy answer within ${TIMEOUT}s: ${why:-check failed}"
        sleep 0.5
    done
}

check_redis() {
    local r
    r="$("${NSEXEC[@]}" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1)" || { echo "$r"; return 1; }
    [[ "$r" == PONG ]] || { echo "PING answered '$r'"; return 1; }
}

check_livekit_server() {
    local r
    r="$("${NSEXEC[@]}" curl -sS --max-time 2 "http://127.0.0.1:$LIVEKIT_PORT/" 2>&1)" || { echo "$r"; return 1; }
    [[ "$r" == OK ]] || { echo "GET / answered '$r'"; return 1; }
}

# SIP OPTIONS over UDP to 127.0.0.1:SIP_PORT must get "SIP/2.0 200".
sip_options_ping() {
    "${NSEXEC[@]}" "$PYTHON" - "$SIP_PORT" <<'PY'
import socket, sys, uuid
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1.5)
lp = s.getsockname()[1]
cid = uuid.uuid4().hex
msg = (
    f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK{cid[:16]};rport\r\n"
    "Max-Forwards: 70\r\n"
    f"From: <sip:devstack-health@127.0.0.1>;tag={cid[16:24]}\r\n"
    "To: <sip:ping@127.0.0.1>\r\n"
    f"Call-ID: {cid}@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    f"Contact: <sip:devstack-health@127.0.0.1:{lp}>\r\n"
    "Content-Length: 0\r\n\r\n"
)
try:
    s.sendto(msg.encode(), ("127.0.0.1", port))
    line = s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
except OSError as e:
    print(f"SIP OPTIONS to 127.0.0.1:{port}: {e}")
    sys.exit(1)
print(line)
sys.exit(0 if line.startswith("SIP/2.0 200") else 1)
PY
}

# livekit-sip is healthy when: it logged its UDP SIP listener on 127.0.0.1, it
# answers SIP OPTIONS, and it is registered on the server's RPC bus (redis):
# its psrpc handler for SIPInternal.CreateSIPParticipant, which livekit-server
# calls for SIP participants, has a subscriber.
check_livekit_sip() {
    local log="$RUN_DIR/livekit-sip.log" n
    grep -q 'sip signaling listening on.*"local": "127.0.0.1".*"proto": "udp"' "$log" \
        || { echo "no 'sip signaling listening on' 127.0.0.1 udp line in its log yet"; return 1; }
    sip_options_ping >/dev/null || { echo "no 200 to SIP OPTIONS on 127.0.0.1:$SIP_PORT"; return 1; }
    n="$("${NSEXEC[@]}" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" pubsub numsub 'SIPInternal|CreateSIPParticipant|REQ' 2>/dev/null | sed -n 2p)"
    [[ "${n:-0}" -ge 1 ]] || { echo "not registered on the server's RPC bus (no SIPInternal subscriber in redis)"; return 1; }
}

# ensure NAME CHECK PROTO PORT CMD...: leave a running healthy service alone,
# otherwise start it (refusing if someone else holds its port) and wait.
ensure() {
    local name=$1 check=$2 proto=$3 port=$4; shift 4
    local pid
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]]; then
        [[ "$recorded_ns" == "$NETNS" ]] \
            || die "$name is already running in ${recorded_ns:+network namespace }${recorded_ns:-the host network namespace}, but DEVSTACK_NETNS='$NETNS': run devstack/down.sh first"
        wait_healthy "$name" "$check"
        echo "devstack: $name already up (pid $pid)"
        return 0
    fi
    local holder
    holder="$(port_user "$proto" "$port")"
    [[ -z "$holder" ]] || die "cannot start $name: $proto port $port already in use: $holder"
    start "$name" "$@"
    wait_healthy "$name" "$check"
    echo "devstack: $name started (pid $(running_pid "$name"), log $RUN_DIR/$name.log)"
}

if [[ -z "$(running_pid redis-server)$(running_pid livekit-server)$(running_pid livekit-sip)" ]]; then
    echo "$NETNS" >"$RUN_DIR/netns"
    recorded_ns="$NETNS"
fi

# Keep inherited env from overriding the config files (both binaries read these).
CLEAN_ENV=(env -u LIVEKIT_CONFIG -u LIVEKIT_KEYS -u NODE_IP -u UDP_PORT -u REDIS_HOST
           -u REDIS_PASSWORD -u LIVEKIT_REGION -u LIVEKIT_TURN_CERT -u LIVEKIT_TURN_KEY
           -u SIP_CONFIG_FILE -u SIP_CONFIG_BODY -u LIVEKIT_API_KEY -u LIVEKIT_API_SECRET
           -u LIVEKIT_WS_URL)

# redis: loopback only, in the foreground, with an append-only file: LiveKit keeps
# SIP trunks and dispatch rules in Redis, and a Redis restart without persistence
# loses them (every call refused afterwards; tests/e2e/test_reliability_stack.py).
ensure redis-server check_redis tcp "$REDIS_PORT" \
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save '' --appendonly yes --appendfsync everysec --dir "$RUN_DIR" --daemonize no --logfile ''

ensure livekit-server check_livekit_server tcp "$LIVEKIT_PORT" \
    "${CLEAN_ENV[@]}" "$BIN_DIR/livekit-server" --config "$LK_CONF"

ensure livekit-sip check_livekit_sip udp "$SIP_PORT" \
    "${CLEAN_ENV[@]}" "$BIN_DIR/livekit-sip" --config "$SIP_CONF"

# The guardian (`python -m worker guardian`, from the project's venv): livekit.yaml
# sends the server's webhooks to it, and it re-dispatches the hold agent to a
# call whose worker died. It dispatches the agent name the dead worker had.
# With the stack's Redis it also watches the call registry's heartbeats.
check_guardian() {
    local r
    r="$("${NSEXEC[@]}" curl -sS --max-time 2 "http://127.0.0.1:$GUARDIAN_PORT/" 2>&1)" || { echo "$r"; return 1; }
    [[ "$r" == OK ]] || { echo "GET / answered '$r'"; return 1; }
}
if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
    dev_secret="$(awk '$1 == "devkey:" {print $2}' "$LK_CONF")"
    ensure guardian check_guardian tcp "$GUARDIAN_PORT" \
        "${CLEAN_ENV[@]}" -u HOLD_AGENT_NAME LIVEKIT_URL="ws://127.0.0.1:$LIVEKIT_PORT" \
        LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET="$dev_secret" HOLD_GUARDIAN_PORT="$GUARDIAN_PORT" \
        HOLD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
        PYTHONUNBUFFERED=1 "$REPO_ROOT/.venv/bin/python" -m worker guardian
else
    echo "devstack: guardian not started: no .venv yet (make venv); webhooks will fail until it runs" >&2
fi

echo "devstack: up${NETNS:+ in network namespace $NETNS (run clients with: ip netns exec $NETNS CMD)}." \
     "LIVEKIT_URL=ws://127.0.0.1:$LIVEKIT_PORT LIVEKIT_API_KEY=devkey (secret in livekit.yaml)," \
     "SIP udp/tcp 127.0.0.1:$SIP_PORT, logs in $RUN_DIR"
