"""Mask caller numbers in every log line, including the SDK's.

LiveKit's individual dispatch rule names rooms `call-_<caller number>_<random>`
and livekit-sip names the caller `sip_<caller number>`, so room names and
identities carry the number into livekit-agents' own log lines too. This
filter, installed on the root handlers, masks numbers (worker.masking says
which digit runs count as numbers and what a mask shows) in:

- the message: formatted with its `%`-arguments first, so a number made of
  the format string and a non-string argument (`"+%d", 15550100123`) or an
  object's `str()` is masked too; the record keeps the masked text with no
  arguments. A dict message (livekit's JSON formatter merges it) is masked
  field by field;
- structured fields (`extra=`): strings, dict keys and values, lists, tuples
  and sets at any depth; ints are left alone (a bare int has no context that
  makes it a number) except under a field whose name says it holds a phone
  number (`caller`, `phone`, `sip.phoneNumber`, `from_number`, ...), where any
  value with 7 or more digits is masked whole; other objects are replaced by
  their masked `str()` when that contains a number;
- tracebacks: the exception is formatted here, masked into `exc_text`, and
  `exc_info` cleared, so no formatter can format the unmasked exception
  again (livekit's JSON formatter prefers `exc_info` when it is set);
  `stack_info` is masked as well.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .masking import mask_number, mask_text

__all__ = ["MaskCallerNumbers", "install", "mask_text"]

# Field names that hold a phone number whatever its form (even a bare int).
PHONE_KEY = re.compile(
    r"phone|caller|callee|msisdn|(?:^|[._-])(?:number|from|to|ani|dnis|cli)$", re.IGNORECASE
)
_MAX_DEPTH = 12
_FORMATTER = logging.Formatter()


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _mask(value: Any, phone: bool = False, depth: int = 0) -> Any:
    """Mask a structured value; `phone`: it sits under a phone-number field."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, str):
        masked = mask_text(value)
        # Under a phone field, digits the text rules leave alone are the number.
        return mask_number(value) if phone and _digit_count(masked) >= 7 else masked
    if isinstance(value, int):
        return mask_number(value) if phone and len(str(abs(value))) >= 7 else value
    if depth >= _MAX_DEPTH:
        return mask_text(str(value))
    if isinstance(value, dict):
        return {
            _mask(k, False, depth + 1): _mask(
                v, phone or (isinstance(k, str) and bool(PHONE_KEY.search(k))), depth + 1
            )
            for k, v in value.items()
        }
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_mask(v, phone, depth + 1) for v in value)
    try:
        text = str(value)
    except Exception:
        return value
    masked = _mask(text, phone, depth + 1)
    return masked if masked != text else value


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class MaskCallerNumbers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        self._message(record)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _mask(value, bool(PHONE_KEY.search(key))))
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if isinstance(record.stack_info, str):
            record.stack_info = mask_text(record.stack_info)
        if isinstance(getattr(record, "message", None), str):
            record.message = mask_text(record.message)
        return True

    @staticmethod
    def _message(record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and not record.args:
            record.msg = _mask(record.msg)
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format: mask the parts, let the handler report it
            record.msg = _mask(record.msg)
            if record.args:
                record.args = _mask(record.args)
            return
        record.msg = mask_text(text)
        record.args = ()


_FILTER = MaskCallerNumbers()


def install() -> None:
    """Idempotent: put the filter on every root handler (and the root logger)."""
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)
    for h in root.handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
