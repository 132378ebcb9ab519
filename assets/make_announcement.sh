#!/usr/bin/env bash
# Make the project's default hold announcement, assets/announce-default.flac,
# with espeak-ng (Debian's package; devstack/install.sh installs it).
#   assets/make_announcement.sh [TEXT] [OUT]
# A store map names it as `announcement: default`; stores with a recorded
# message of their own name that file instead.
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:-"Thank you for holding. Someone from the store will be with you shortly."}
out=${2:-assets/announce-default.flac}
command -v espeak-ng >/dev/null || { echo "make_announcement: espeak-ng is not installed (apt-get install espeak-ng)" >&2; exit 1; }
tmp=$(mktemp --suffix=.wav)
trap 'rm -f "$tmp"' EXIT
# en-us, 150 words a minute, a little lower pitch than the default
espeak-ng -v en-us -s 150 -p 40 -w "$tmp" "$text"
# FLAC, 16-bit at espeak's own 22.05 kHz; the worker resamples to 48 kHz
.venv/bin/python - "$tmp" "$out" <<'PY'
import sys

import soundfile as sf

data, rate = sf.read(sys.argv[1], dtype="int16")
sf.write(sys.argv[2], data, rate, format="FLAC", subtype="PCM_16")
print(f"make_announcement: {sys.argv[2]}: {len(data) / rate:.2f} s at {rate} Hz")
PY
