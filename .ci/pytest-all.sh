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
source devstack/up-for-clients.sh
# PYTEST_PATHS: a subset (make burst); `make test` runs them all.
# shellcheck disable=SC2086
exec "${NSEXEC[@]}" .venv/bin/python -m pytest ${PYTEST_PATHS:-tests} -q -s -p no:cacheprovider "$@"
