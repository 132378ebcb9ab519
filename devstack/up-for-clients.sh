# shellcheck shell=bash
# Source me (from the repo root, after devstack/env.sh): start the stack for
# clients that run as this shell's children (tests, benchmarks). With
# DEVSTACK_NETNS set and network namespaces available, the stack runs in that
# private namespace (loopback only, no route out) and NSEXEC holds the prefix
# that runs a client inside it; otherwise the host's loopback and an empty NSEXEC.
_ns="${DEVSTACK_NETNS:-}"
if [[ -n "$_ns" ]] && ! ip netns list >/dev/null 2>&1; then
    echo "devstack: network namespaces unavailable here; the stack runs on the host's loopback"
    _ns=""
fi
_running_ns="$(cat .devstack/run/netns 2>/dev/null || true)"
if [[ "$_running_ns" != "$_ns" ]] && ls .devstack/run/*.pid >/dev/null 2>&1; then
    echo "devstack: stopping the stack started in another mode (netns '${_running_ns}')"
    bash devstack/down.sh
fi
DEVSTACK_NETNS="$_ns" bash devstack/up.sh
export DEVSTACK_NETNS="$_ns"
NSEXEC=()
# NSEXEC is read by the script that sources this file ("${NSEXEC[@]}" ...).
# shellcheck disable=SC2034
[[ -n "$_ns" ]] && NSEXEC=(ip netns exec "$_ns")
unset _ns _running_ns
