"""Mask caller numbers in every log line, including the SDK's.

LiveKit's individual dispatch rule names rooms `call-_<caller number>_<random>`
and livekit-sip names the caller `sip_<caller number>`, so room names and
identities carry the number into livekit-agents' own log lines too. This
filter, installed on the root handlers, masks any E.164 number (`+` and 7 to
15 digits) in the message, its arguments and the structured fields.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .masking import mask_number

E164 = re.compile(r"\+\d{7,15}")


def mask_text(text: str) -> str:
    return E164.sub(lambda m: mask_number(m.group(0)), text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(v) for v in value)
    return value


_STANDARD = set(vars(logging.makeLogRecord({})))


class MaskCallerNumbers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if record.args:
            record.args = _mask(record.args)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str | dict | list | tuple):
                setattr(record, key, _mask(value))
        return True


_FILTER = MaskCallerNumbers()


def install() -> None:
    """Idempotent: put the filter on every root handler (and the root logger)."""
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)
    for h in root.handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
