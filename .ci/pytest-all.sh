#!/usr/bin/env bash
# Every test in one pytest run: unit, integration, and end-to-end on the local
# stack. With DEVSTACK_NETNS set (`make test` sets it), the stack AND the test
# process (worker, SIP callers, agents) run in a private network namespace
# that has only loopback and no route out, so no packet can leave 127.0.0.1
# whatever any component binds. Without namespaces, the host's loopback.
# -s: the e2e tests print what they measured.
set -euo pipefail
cd "$(dirname "$0")/.."
source devstack/env.sh

ns="${DEVSTACK_NETNS:-}"
if [[ -n "$ns" ]] && ! ip netns list >/dev/null 2>&1; then
    echo "pytest-all: network namespaces unavailable here; the stack runs on the host's loopback"
    ns=""
fi
running_ns="$(cat .devstack/run/netns 2>/dev/null || true)"
if [[ "$running_ns" != "$ns" ]] && ls .devstack/run/*.pid >/dev/null 2>&1; then
    echo "pytest-all: stopping the stack started in another mode (netns '${running_ns}')"
    bash devstack/down.sh
fi
DEVSTACK_NETNS="$ns" bash devstack/up.sh
export DEVSTACK_NETNS="$ns"
if [[ -n "$ns" ]]; then
    exec ip netns exec "$ns" .venv/bin/python -m pytest tests -q -s -p no:cacheprovider "$@"
fi
exec .venv/bin/python -m pytest tests -q -s -p no:cacheprovider "$@"
