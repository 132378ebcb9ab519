"""The e2e SIP caller stand-in (tests/e2e/support/sip_caller.py), hung up on a signal.

Same arguments as ``python -m harness.sip.caller``; the benchmark
places many calls whose end it does not know in advance (all calls must be on
hold together for a window, whenever the last one was answered), so here
``--duration`` is only a cap and the call hangs up (a normal BYE, result JSON
written) when the process receives SIGUSR1.

How: ``run_call`` hangs up once ``now - t0 >= hangup_after``; the value passed
as ``hangup_after`` is a float whose comparison becomes true once the signal
has arrived (Python runs the handler on the main thread between pjsua polls).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from harness.sip import caller as sc


class _UntilSignalled(float):
    signalled = False

    # `x >= self` with x a float tries this reflected method first (subclass)
    def __le__(self, other: object) -> bool:
        return _UntilSignalled.signalled


def _on_signal(_sig: int, _frame: object) -> None:
    _UntilSignalled.signalled = True


def main(argv: Sequence[str] | None = None) -> int:
    p = sc.build_parser()
    a = p.parse_args(argv)
    signal.signal(signal.SIGUSR1, _on_signal)
    hard = a.answer_timeout + a.duration + sc.HARD_TIMEOUT_SLACK_S + 10.0
    wd = sc.start_watchdog(
        hard, a.result, {"target": a.target, "answered": False, "exit_code": sc.EXIT_HARD_TIMEOUT}
    )
    try:
        res = sc.run_call(
            target=a.target,
            from_=a.from_,
            send_wav=a.send_wav,
            record=a.record,
            duration=a.duration,
            result=a.result,
            hangup_after=_UntilSignalled(1e9),
            codec=a.codec,
            local_port=a.local_port,
            headers=a.header,
            answer_timeout=a.answer_timeout,
            auth_user=None,
            auth_password=None,
            log_file=a.log_file,
            verbose=False,
        )
    finally:
        wd.cancel()
    return int(res["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
