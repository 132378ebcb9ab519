#!/usr/bin/env bash
# `make bench-monitoring`: the cost of a call after the handoff
# (hold.state=monitoring) against one on hold, N = 1 and 10 (bench/monitoring.py),
# on the local stack in the tests' private network namespace like `make bench`.
# Writes bench/monitoring.json and bench/monitoring.md (about 4 minutes).
# Env: DEVSTACK_NETNS (the Makefile sets it); arguments go to bench.monitoring.
set -euo pipefail
cd "$(dirname "$0")/.."
source devstack/env.sh

source devstack/up-for-clients.sh

exec "${NSEXEC[@]}" .venv/bin/python -m bench.monitoring "$@"
