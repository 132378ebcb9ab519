#!/usr/bin/env bash
# Printed by `make dev` before the worker starts: how to place a call.
set -euo pipefail
cat <<MSG

  Hold worker starting against ${LIVEKIT_URL}
  Trunk number ${DEV_TRUNK_NUMBER}; livekit-sip listens on ${DEV_SIP_TARGET#*@}

  Place a call from another terminal (a real pjsua2 SIP caller, 90 s):
    .venv/bin/python -c "from harness.analysis import write_tone_wav as w; w('/tmp/caller.wav', [700, 1100], 2.0)"
    .venv/bin/python -m harness.sip.caller --target ${DEV_SIP_TARGET} \\
        --from +15551230123 --send-wav /tmp/caller.wav --record /tmp/heard.wav \\
        --duration 90 --result /tmp/call.json
$(if [[ -n "${CONSOLE_URL:-}" ]]; then cat <<CONSOLE
  then answer it in your browser, in the agents' console (agent ${DEV_AGENT:-dev-agent} of
  store ${DEV_STORE:-main}; the link carries a 12-hour desk token, keep it to yourself):
    ${CONSOLE_URL}
CONSOLE
else echo "  then join the room as a human agent from your web app (identity agent-...)."; fi)
  or run one whole simulated call with a human agent:  make demo

MSG
