"""The harness's SIP caller (harness/sip/caller.py), hung up on a signal.

Same arguments as ``python -m harness.sip.caller``; the benchmark places many
calls whose end it does not know in advance (all calls must be on hold
together for a window, whenever the last one was answered), so here
``--duration`` is only a cap and the call hangs up (a normal BYE, result JSON
written, ``local_hangup_cause`` "stopped") when the process receives SIGUSR1:
the handler sets the event the caller's poll loop checks every 5 ms.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

from harness.sip import caller


def main(argv: Sequence[str] | None = None) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda _sig, _frame: stop.set())
    return caller.main(argv, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
