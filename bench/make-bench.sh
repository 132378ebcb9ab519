#!/usr/bin/env bash
# `make bench`: the local stack and the benchmark (bench/run.py) in a private
# network namespace like `make test` (.ci/pytest-all.sh), then BENCHMARKS.md
# from the results. Env: DEVSTACK_NETNS (the Makefile sets it), BENCH_SIZES
# (default 1,10,25,50); extra arguments go to `python -m bench.run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source devstack/env.sh

source devstack/up-for-clients.sh

args=(--sizes "${BENCH_SIZES:-1,10,25,50}" --json bench/results.json --md bench/results.md "$@")
run=("${NSEXEC[@]}" .venv/bin/python -m bench.run "${args[@]}")
rm -f bench/results.json
status=0
"${run[@]}" || status=$?
[[ -f bench/results.json ]] || { echo "make-bench: no results (exit $status)" >&2; exit "$status"; }
# bench/notes.md: how to read the figures, the decisions and the missed targets
.venv/bin/python -m bench.report bench/results.json BENCHMARKS.md \
    --note "$(cat bench/notes.md 2>/dev/null || true)" --command "make bench${BENCH_SIZES:+ BENCH_SIZES=$BENCH_SIZES}${*:+ (bench.run $*)}"
echo "make-bench: wrote bench/results.json, bench/results.md and BENCHMARKS.md (exit $status)"
exit "$status"
