"""The caller numbers the e2e run dialled with, and how to find them in a log.

Every call the harness places goes through `harness.sip.caller` (`start_caller` in
scenario.py runs it); both record the caller's number, the SIP From, in the
file named by `HOLD_E2E_CALLERS_FILE` (set for the whole run by
tests/e2e/conftest.py, inherited by the caller processes). The log scan
(tests/e2e/test_zz_log_scan.py) reads it back.

Only the caller's number is recorded: that is the personal datum that must
never be logged whole. The number dialled (DEV_TRUNK_NUMBER, a store's
number) is the business's own, on the trunk and in the store map, and the
worker may name it.

On purpose this module knows nothing of worker.masking: the scan must find a
number however it was written (`+1 555 010 0123`, `sip:15550100123@...`,
`call-_15550100123_x`, `(555) 010-0123`), whatever the masking code thinks a
number looks like.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "HOLD_E2E_CALLERS_FILE"
# Between two digits of a written number: spaces, dots, dashes, slashes,
# parentheses, underscores (at most 3 of them in a row).
_SEP = r"[\s().\-/_]{0,3}"


def record(number: str) -> None:
    """Note a caller number (or SIP URI) used for a call; no-op outside an e2e run."""
    path = os.environ.get(ENV)
    if path and number:
        with open(path, "a") as fh:
            fh.write(number.strip() + "\n")


def recorded() -> set[str]:
    path = os.environ.get(ENV)
    if not path or not Path(path).exists():
        return set()
    return {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()}


def digits_of(number: str) -> str:
    """The digits of a number or of a SIP URI's user part."""
    user = number
    if number.lower().startswith(("sip:", "sips:", "tel:")):
        user = number.split(":", 1)[1]
    return re.sub(r"\D", "", user.split("@", 1)[0])


def _spread(digits: str) -> str:
    return _SEP.join(re.escape(d) for d in digits)


def patterns(number: str) -> list[re.Pattern[str]]:
    """Regexes that find this number in text, written in any format.

    - all its digits in order, with separators allowed between any two, inside
      anything (a longer run of digits too);
    - its national part (without the country code: 1 digit for +1 and +7,
      2 otherwise), which is how it may be written locally (`(555) 010-0123`),
      as a run of its own (not inside a longer run of digits, where 10 digits
      could occur by chance, e.g. in a unix-ms timestamp).
    """
    digits = digits_of(number)
    if len(digits) < 7:
        return []
    out = [re.compile(_spread(digits))]
    international = number.lstrip().startswith("+") or "sip:+" in number or "tel:+" in number
    if international:
        national = digits[1:] if digits[0] in "17" else digits[2:]
        if len(national) >= 7:
            out.append(re.compile(r"(?<!\d)" + _spread(national) + r"(?!\d)"))
    return out


def find(number: str, text: str) -> list[str]:
    """Where the number occurs in the text (the matched strings, at most 3)."""
    hits: list[str] = []
    for p in patterns(number):
        hits += [m.group(0) for m in p.finditer(text)][: 3 - len(hits)]
        if len(hits) >= 3:
            break
    return hits
