#!/usr/bin/env bash
# `make dev`, once the stack is up and provisioned: the desk (the agents'
# queue service, serving the console at /) in the background, how to place a
# call and answer it in the browser, then the hold worker in the foreground.
# Ctrl-C stops both. Loopback only: the desk binds 127.0.0.1 (HOLD_DESK_HOST).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=env.sh
source devstack/env.sh
PY=.venv/bin/python

# One store, main, the default (the console lists calls by store); the call
# registry in the local stack's Redis, which the worker writes and the desk reads.
export HOLD_STORES="${HOLD_STORES:-devstack/stores.dev.yaml}"
if [[ -z "${HOLD_REDIS_URL:-}" && "$LIVEKIT_URL" == "ws://127.0.0.1:${LIVEKIT_PORT}" ]]; then
    export HOLD_REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
fi
DESK_PORT="${HOLD_DESK_PORT:-8095}"
DEV_AGENT="${DEV_AGENT:-dev-agent}"
DEV_STORE="${DEV_STORE:-main}"
CONSOLE_URL=""
desk_pid=""
stop_desk() { [[ -z "$desk_pid" ]] || kill "$desk_pid" 2>/dev/null || true; }
trap stop_desk EXIT
trap 'exit 130' INT TERM

healthy() { curl -fsS --max-time 1 "http://127.0.0.1:$DESK_PORT/health" >/dev/null 2>&1; }

if [[ -z "${HOLD_REDIS_URL:-}" ]]; then
    echo "make dev: no console: HOLD_REDIS_URL is not set (the desk reads the calls the worker writes there)"
elif healthy; then
    echo "make dev: no console: something already answers on 127.0.0.1:$DESK_PORT (set HOLD_DESK_PORT)"
else
    # A secret for this run only, never written anywhere: agents' tokens are
    # signed with it below and checked by the desk.
    secret="${HOLD_DESK_SECRET:-$("$PY" -c 'import secrets; print(secrets.token_hex(32))')}"
    log=.devstack/run/desk-dev.log
    mkdir -p .devstack/run
    HOLD_DESK_SECRET="$secret" HOLD_DESK_HOST=127.0.0.1 HOLD_DESK_PORT="$DESK_PORT" \
        "$PY" -m worker desk >"$log" 2>&1 &
    desk_pid=$!
    for _ in $(seq 100); do
        healthy && break
        kill -0 "$desk_pid" 2>/dev/null || break
        sleep 0.1
    done
    if healthy; then
        token="$(HOLD_DESK_SECRET="$secret" "$PY" -m worker desk token --agent "$DEV_AGENT" \
            --name "Dev agent" --store "$DEV_STORE" --ttl 43200)"
        CONSOLE_URL="http://127.0.0.1:$DESK_PORT/#token=$token"
    else
        echo "make dev: the desk did not start (log $log):" >&2
        tail -n 5 "$log" >&2
    fi
fi

CONSOLE_URL="$CONSOLE_URL" DEV_AGENT="$DEV_AGENT" DEV_STORE="$DEV_STORE" bash devstack/how-to-call.sh
"$PY" -m worker dev
