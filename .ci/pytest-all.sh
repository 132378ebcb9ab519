#!/usr/bin/env bash
# Every test in one pytest run (unit, integration, end-to-end on the local
# stack started by `make stack`). -s: the e2e tests print what they measured.
set -euo pipefail
cd "$(dirname "$0")/.."
source devstack/env.sh
exec .venv/bin/python -m pytest tests -q -s -p no:cacheprovider "$@"
