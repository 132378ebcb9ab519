"""What a caller's result (sip_caller's JSON) proves, or a clear failure when it proves nothing.

A test that reads a result with fallbacks (`.get(..., 0)`) can pass on a
call whose data is missing: a refusal "after -1.7e9 s", a status code of
None that is "not 487". These helpers take only what the result states and
fail, saying what is missing, when it does not state it.
"""

from __future__ import annotations

from typing import Any


def _wall(events: dict[str, Any], name: str) -> float | None:
    ev = events.get(name)
    wall = ev.get("wall") if isinstance(ev, dict) else None
    return float(wall) if isinstance(wall, int | float) and wall > 0 else None


def refusal(result: dict[str, Any], tag: str) -> tuple[int, str, float]:
    """(SIP status, reason, seconds from INVITE to the refusal) of a call the far
    end refused. AssertionError unless the result records exactly that: not
    answered, a 4xx-6xx final status, ended by the far end, both times, no
    caller errors."""
    problems = []
    events = result.get("events")
    events = events if isinstance(events, dict) else {}
    code = result.get("status_code")
    if result.get("answered"):
        problems.append("it was answered")
    if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 699:
        problems.append(f"no SIP error status (status_code={code!r})")
    if result.get("hangup_by") != "remote":
        problems.append(f"not ended by the far end (hangup_by={result.get('hangup_by')!r})")
    sent, ended = _wall(events, "invite_sent"), _wall(events, "disconnected")
    if sent is None:
        problems.append("no invite_sent time")
    if ended is None:
        problems.append("no disconnected time")
    if result.get("errors"):
        problems.append(f"caller errors: {result['errors']}")
    if problems:
        raise AssertionError(
            f"{tag}: not answered and not a recorded refusal: {'; '.join(problems)}"
        )
    assert isinstance(code, int) and sent is not None and ended is not None
    return code, str(result.get("reason") or ""), ended - sent


def answered_span(result: dict[str, Any], tag: str) -> tuple[float, float]:
    """(seconds from INVITE to the answer, wall time the call ended) of an answered
    call with a recording. AssertionError when any of it is missing."""
    problems = []
    events = result.get("events")
    events = events if isinstance(events, dict) else {}
    sent, answered = _wall(events, "invite_sent"), _wall(events, "answered")
    ended = _wall(events, "disconnected") or _wall(events, "hangup")
    rec = result.get("recording")
    if not result.get("answered"):
        problems.append("not answered")
    if sent is None or answered is None:
        problems.append("no invite_sent or answered time")
    if ended is None:
        problems.append("no disconnected or hangup time")
    if not isinstance(rec, dict) or not rec.get("started") or not rec.get("path"):
        problems.append("no recording")
    if problems:
        raise AssertionError(f"{tag}: answered call without its data: {'; '.join(problems)}")
    assert sent is not None and answered is not None and ended is not None
    return answered - sent, ended
