"""python -m worker.healthcheck: exit 0 when the worker's health endpoint answers OK.

For a container HEALTHCHECK (the slim image has no curl). livekit-agents
serves `/` on HOLD_HTTP_PORT: 200 once the worker runs, 503 when it lost
LiveKit.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("HOLD_HTTP_PORT", "8081")
    url = f"http://127.0.0.1:{port}/"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read(200).decode(errors="replace").strip()
            print(f"healthcheck: {url} {r.status} {body}")
            return 0 if r.status == 200 else 1
    except urllib.error.HTTPError as e:
        print(f"healthcheck: {url} {e.code} {e.read(200).decode(errors='replace').strip()}")
    except OSError as e:
        print(f"healthcheck: {url} unreachable: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
