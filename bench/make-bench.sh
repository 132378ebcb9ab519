#!/usr/bin/env bash
# `make bench`: the local stack and the benchmarks in a private network
# namespace like `make test` (.ci/pytest-all.sh), then BENCHMARKS.md from the
# results:
#   1. bench/capacity.py: held calls per worker core, the worker alone on core
#      1 fed by the Go load generator (bench/loadgen, built here first: the Go
#      module proxy is outside the namespace), the same-run baseline, variants,
#      floors and the profile -> bench/capacity.json;
#   2. bench/run.py: the SIP path (livekit-sip, pjsua2 callers) on both cores
#      at the sizes the machine carries -> bench/results.json.
# Env: DEVSTACK_NETNS (the Makefile sets it), BENCH_SIZES (SIP path, default
# 1,10,20), CAPACITY_SIZES (default 10,20,...,60), CAPACITY_ARGS (more
# arguments for bench.capacity, e.g. "--only ours --no-floors"); extra
# arguments go to `python -m bench.run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/loadgen/build.sh
source devstack/env.sh

source devstack/up-for-clients.sh

status=0
cap=("${NSEXEC[@]}" .venv/bin/python -m bench.capacity --sizes "${CAPACITY_SIZES:-10,20,30,40,50,60}" --json bench/capacity.json)
# shellcheck disable=SC2206  # CAPACITY_ARGS: words on purpose
cap+=(${CAPACITY_ARGS:-})
"${cap[@]}" || status=$?

args=(--sizes "${BENCH_SIZES:-1,10,20}" --json bench/results.json --md bench/results.md "$@")
run=("${NSEXEC[@]}" .venv/bin/python -m bench.run "${args[@]}")
rm -f bench/results.json
"${run[@]}" || status=$?
[[ -f bench/results.json ]] || { echo "make-bench: no results (exit $status)" >&2; exit "$status"; }
# bench/notes.md: how to read the figures, the decisions and the missed targets
.venv/bin/python -m bench.report bench/results.json BENCHMARKS.md --capacity bench/capacity.json \
    --note "$(cat bench/notes.md 2>/dev/null || true)" --command "make bench${BENCH_SIZES:+ BENCH_SIZES=$BENCH_SIZES}${*:+ (bench.run $*)}"
echo "make-bench: wrote bench/capacity.json, bench/results.json, bench/results.md and BENCHMARKS.md (exit $status)"
exit "$status"
