# The README's two commands: `make dev` and `make test`. Both set everything up.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
export LIVEKIT_DEV_URL := ws://127.0.0.1:7880

.PHONY: setup venv stack-install loadgen console console-deps stack stack-down dev test test-unit test-integration test-e2e demo bench bench-monitoring burst lint provision-local clean

setup: venv stack-install loadgen console

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

stack-install:
	bash devstack/install.sh

# The capacity benchmark's load generator (bench/loadgen, Go + cgo libopus,
# from the Go module proxy like the stack): .devstack/bin/loadgen.
loadgen: stack-install
	bash bench/loadgen/build.sh

# The agents' console (console/): livekit-client, esbuild, TypeScript and
# Biome from npm at the versions package-lock.json pins (`npm ci`), bundled
# into console/dist/ (git-ignored), which the desk serves at /.
CONSOLE_DEPS := console/node_modules/.package-lock.json
CONSOLE_BUILT := console/dist/index.html
NPM := npm --prefix console --no-audit --no-fund

console: $(CONSOLE_BUILT)
console-deps: $(CONSOLE_DEPS)
$(CONSOLE_DEPS): console/package.json console/package-lock.json
	@command -v npm >/dev/null || { echo "make setup: npm not found: run devstack/install.sh (it installs Debian's nodejs and npm) or install Node.js 20+" >&2; exit 1; }
	$(NPM) ci
	@touch $@
$(CONSOLE_BUILT): $(CONSOLE_DEPS) console/build.mjs console/index.html console/app.css $(wildcard console/src/*.ts)
	$(NPM) run -s build

# Start the local stack unless LIVEKIT_URL points somewhere else.
stack: setup
	@if [ -n "$$(cat .devstack/run/netns 2>/dev/null)" ]; then bash devstack/down.sh; fi
	@if [ -n "$$LIVEKIT_URL" ] && [ "$$LIVEKIT_URL" != "$(LIVEKIT_DEV_URL)" ]; then \
	  echo "LIVEKIT_URL is set ($$LIVEKIT_URL): not starting the local stack"; \
	else bash devstack/up.sh; fi

stack-down:
	bash devstack/down.sh

provision-local: stack
	@source devstack/env.sh && $(PY) -m worker provision \
	  --number "$$DEV_TRUNK_NUMBER" --allowed-address 127.0.0.1/32 \
	  --header X-Store-Id=store.id

# The worker, and beside it the desk serving the agents' console (devstack/dev.sh).
dev: provision-local
	@bash devstack/dev.sh

# The tests run the stack and themselves in a private network namespace
# (only loopback, no route out); see .ci/pytest-all.sh.
TEST_NETNS ?= holdtest

# devstack/image.sh builds the container image (outside the namespace: it
# needs Debian's mirror and PyPI) for tests/e2e/test_image.py.
test: setup lint
	bash devstack/image.sh
	DEVSTACK_NETNS=$(TEST_NETNS) bash .ci/pytest-all.sh

# The suite in parts. test-unit: no servers, no network. test-integration:
# real livekit.rtc, sip_caller and nftables over loopback, no server.
# test-e2e: the end-to-end tests on the local stack, run as `make test` runs
# them (image first for tests/e2e/test_image.py, then the private namespace).
test-unit: venv
	$(PY) -m pytest tests/unit -q

test-integration: venv
	$(PY) -m pytest tests/integration -q

test-e2e: setup
	bash devstack/image.sh
	PYTEST_PATHS=tests/e2e DEVSTACK_NETNS=$(TEST_NETNS) bash .ci/pytest-all.sh

demo: stack
	@source devstack/env.sh && $(PY) -m harness.demo

# The benchmarks (issues 5 and 15), in the tests' private network namespace:
# held calls per worker core (the worker alone on core 1, the Go load
# generator of bench/loadgen on core 0; bench/capacity.json), then both
# workers through the SIP path at N = 1, 10, 20 (bench/results.json); writes
# BENCHMARKS.md (about 35 minutes; BENCH_SIZES=1,10 and CAPACITY_SIZES=10,20
# CAPACITY_ARGS="--only ours --no-floors --variants= --processes= --profile="
# for a shorter run).
BENCH_NETNS ?= $(TEST_NETNS)

bench: setup
	DEVSTACK_NETNS=$(BENCH_NETNS) bash bench/make-bench.sh

# The cost of a call after the handoff (issue 12: hold.state=monitoring, no
# track, no subscription) against one on hold, N = 1 and 10 against one
# worker; writes bench/monitoring.json and bench/monitoring.md (about 4 minutes).
bench-monitoring: setup
	DEVSTACK_NETNS=$(BENCH_NETNS) bash bench/make-monitoring.sh

# Fault matrix, benchmark-sized row (RELIABILITY.md): 50 INVITEs at once
# against one worker at the default capacity of 20 calls.
burst: setup
	PYTEST_PATHS=tests/e2e/test_reliability_burst.py BURST_N=50 BURST_CAPACITY=20 \
		DEVSTACK_NETNS=$(TEST_NETNS) bash .ci/pytest-all.sh

# shellcheck (Debian package, installed by devstack/install.sh: `make setup`)
# on every shell script; .shellcheckrc says where sourced files are.
SHELL_SCRIPTS = $$(git ls-files '*.sh') .ci/run

lint: venv console-deps
	$(PY) -m ruff check worker harness tests bench assets
	$(PY) -m ruff format --check worker harness tests bench assets
	$(PY) -m mypy worker harness bench
	.venv/bin/hadolint Dockerfile
	@command -v shellcheck >/dev/null || { echo "make lint: shellcheck not found: run make setup (devstack/install.sh installs it) or apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)
	cd console && node_modules/.bin/tsc --noEmit -p . && node_modules/.bin/biome ci --colors=off --error-on-warnings .

clean: stack-down
	rm -rf .venv console/node_modules console/dist
