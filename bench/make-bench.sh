#!/usr/bin/env bash
# `make bench`: the local stack and the benchmark (bench/run.py) in a private
# network namespace like `make test` (.ci/pytest-all.sh), then BENCHMARKS.md
# from the results. Env: DEVSTACK_NETNS (the Makefile sets it), BENCH_SIZES
# (default 1,10,25,50); extra arguments go to `python -m bench.run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source devstack/env.sh

ns="${DEVSTACK_NETNS:-}"
if [[ -n "$ns" ]] && ! ip netns list >/dev/null 2>&1; then
    echo "make-bench: network namespaces unavailable here; the stack runs on the host's loopback"
    ns=""
fi
running_ns="$(cat .devstack/run/netns 2>/dev/null || true)"
if [[ "$running_ns" != "$ns" ]] && ls .devstack/run/*.pid >/dev/null 2>&1; then
    echo "make-bench: stopping the stack started in another mode (netns '${running_ns}')"
    bash devstack/down.sh
fi
DEVSTACK_NETNS="$ns" bash devstack/up.sh
export DEVSTACK_NETNS="$ns"

args=(--sizes "${BENCH_SIZES:-1,10,25,50}" --json bench/results.json --md bench/results.md "$@")
run=(.venv/bin/python -m bench.run "${args[@]}")
if [[ -n "$ns" ]]; then
    run=(ip netns exec "$ns" "${run[@]}")
fi
rm -f bench/results.json
status=0
"${run[@]}" || status=$?
[[ -f bench/results.json ]] || { echo "make-bench: no results (exit $status)" >&2; exit "$status"; }
.venv/bin/python -m bench.report bench/results.json BENCHMARKS.md --command "make bench${BENCH_SIZES:+ BENCH_SIZES=$BENCH_SIZES}${*:+ (bench.run $*)}"
echo "make-bench: wrote bench/results.json, bench/results.md and BENCHMARKS.md (exit $status)"
exit "$status"
