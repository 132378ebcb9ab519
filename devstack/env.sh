# shellcheck shell=bash
# Source me: the connection settings of the local stack (loopback only).
# Values already in the environment win, so `LIVEKIT_URL=wss://... make dev`
# runs the worker against that server instead.
_devstack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$_devstack_dir/versions.env"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:${LIVEKIT_PORT}}"
export LIVEKIT_API_KEY="${LIVEKIT_API_KEY:-devkey}"
export LIVEKIT_API_SECRET="${LIVEKIT_API_SECRET:-devsecret-loopback-only-not-a-real-secret}"
# The number the local trunk accepts, and where the carrier stand-in dials it.
export DEV_TRUNK_NUMBER="${DEV_TRUNK_NUMBER:-+15550100}"
export DEV_SIP_TARGET="sip:${DEV_TRUNK_NUMBER}@127.0.0.1:${SIP_PORT}"
