"""Mask caller numbers for logs and attributes: +15550100123 -> +***0123.

What a mask shows (`mask_number`)
---------------------------------
Only digits count; separators, a `sip:`/`tel:` scheme and the host are
dropped. Of an n-digit number the mask shows at most ``(n + 1) // 3`` digits
(about a third, so a short number is never shown whole): the last digits,
at most 4, and, when that budget leaves room, 1 or 2 leading digits of an
international number's country code. A leading `+` or `00` is shown as `+`
and is not counted. So an 11-digit +1 number shows its last 4 digits
(`+***0123`), a 12-digit +44 number its last 4 (`+***8750`), a 15-digit one
one country digit and 4 (`+4***5678`), an 8-digit one 3 (`***123`), a
4-digit one 1 (`***4`), and one digit nothing (`***`). No mask shows more
than 6 digits.

What counts as a number in text (`mask_text`)
---------------------------------------------
Logs are full of digit runs that are not phone numbers: unix-ms timestamps
(1764400000000), ports, PIDs, byte and packet counts, dates, IP addresses,
versions. A bare run of digits is therefore never masked; a digit run is a
number only in one of these contexts:

1. after a `+`, at least 7 digits: `+15550100123`, `+1 (555) 010-0123`,
   `+44 20 7183 8750`;
2. after an international `00` that does not continue a word or number, at
   least 7 more digits: `0044 20 7183 8750`, `00 44 20 7183 8750`;
3. the user part of a URI: `sip:`/`sips:` followed by the digits and `@`
   (`sip:15550100123@host`, but not `sip:127.0.0.1:5060`), or `tel:` followed
   by digits; at least 3 digits;
4. after a room-name or identity prefix: LiveKit's individual dispatch rule
   names rooms `<prefix>_<caller>_<random>` (`call-_15550100123_abc`, any
   prefix ending in `-`) and livekit-sip names the caller `sip_<caller>`
   (`sip_15550100123`); at least 3 digits, with or without `+`;
5. a national format that is typical of numbers and of little else:
   a parenthesised area code (`(555) 010-0123`, `(020) 7183 8750`), a
   trunk-prefix `0` number of at least 9 digits in space- or dash-separated
   groups (`020 7183 8750`, `07700 900123`), or the North-American 3-3-4
   form (`555-010-0123`, `555.010.0123`).

Separators inside a number are single spaces, dots, dashes, slashes and
parentheses. A space-separated group joins the number only while the
digits so far are fewer than 10 and the total stays within 15 (E.164's
maximum), so `+15550100123 5060` masks the number and keeps the port, and
`+15550100123 1764400000000` keeps the timestamp.

Masks never match these rules again (`+***0123` has no digit after the
`+`), so masking twice is the same as masking once.
"""

from __future__ import annotations

import re

MAX_SHOWN = 6  # 4 trailing digits and at most 2 of a country code
_E164_MAX_DIGITS = 15
_JOIN_SPACE_BELOW = 10

# A run of digit groups: groups separated by one separator (space, tab,
# dot, dash, slash) or by parentheses around a group. It never ends on a
# separator or an unbalanced parenthesis, so sentence punctuation stays out.
_RUN = r"\d+(?:(?:\)[ \t.\-/]?|[ \t.\-/]\(?|\()\d+)*"

# Every caller number in a text, in the contexts listed above (a search, not a validator).
_NUMBER_IN_TEXT = re.compile(
    r"(?P<uri>(?i:\b(?P<scheme>sips?|tel):))(?P<uplus>\+?)(?P<urun>" + _RUN + r")"
    r"|(?P<plus>\+)(?P<prun>" + _RUN + r")"
    r"|(?P<idp>(?<![\w])sip_|-_)(?P<iplus>\+?)(?P<irun>\d+)"
    r"|(?<![\w.+\-])(?P<intl>00)(?P<isep>[ \t.\-]?)(?P<nrun>" + _RUN + r")"
    r"|(?<![\w.+\-])(?P<paren>\(\d{1,5}\)" + r"[ \t.\-]?" + _RUN + r")"
    r"|(?<![\w.+\-])(?P<trunk>0\d+(?: \d+)+|0\d+(?:-\d+)+)(?!\w|[.\-]\d)"
    r"|(?<![\w.+\-])(?P<nanp>(?:1[ .\-])?\d{3}(?P<ns>[.\-])\d{3}(?P=ns)\d{4})(?!\w|[.\-]\d)"
)

_GROUP = re.compile(r"(\D*)(\d+)")


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def mask_digits(digits: str, *, international: bool) -> str:
    """The mask of a digit string (see the module docstring for what it shows)."""
    n = len(digits)
    budget = (n + 1) // 3
    tail = min(4, budget)
    head = 0
    if international and n > 0:
        cc = 1 if digits[0] in "17" else 2
        head = min(cc, budget - tail)
    mark = "+" if international else ""
    shown_tail = digits[n - tail :] if tail else ""
    return f"{mark}{digits[:head]}***{shown_tail}"


def mask_number(number: str | int | None) -> str:
    """Mask one number: `+1 (555) 010-0123`, `0044...`, `sip:+1555...@host`, an int."""
    if number is None or number == "":
        return ""
    s = str(number).strip()
    if s.lower().startswith(("sip:", "sips:", "tel:")):
        s = s.split(":", 1)[1]
    s = s.split("@", 1)[0].split(";", 1)[0].strip()
    digits = _digits(s)
    international = s.startswith("+")
    if not international and digits.startswith("00") and len(digits) > 2 and s.startswith("0"):
        international, digits = True, digits[2:]
    if not digits:
        return "***"
    return mask_digits(digits, international=international)


def _take(run: str) -> tuple[str, str]:
    """Split a run into the part that is one number and the rest (kept as is).

    Groups joined by dashes, dots, slashes or parentheses always belong
    together; a space-separated group joins only while the number has fewer
    than 10 digits; nothing joins beyond 15 digits.
    """
    count = 0
    end = 0
    for m in _GROUP.finditer(run):
        sep, group = m.group(1), m.group(2)
        if count:
            spaced = any(c in " \t" for c in sep)
            if count + len(group) > _E164_MAX_DIGITS or (spaced and count >= _JOIN_SPACE_BELOW):
                break
        count += len(group)
        end = m.end()
    return run[:end], run[end:]


def _mask_run(run: str, *, international: bool) -> str | None:
    """A number with separators and what follows it (masked on its own), or
    None when the run is too short to be a phone number."""
    number, rest = _take(run)
    if len(_digits(number)) < 7:
        return None
    return mask_digits(_digits(number), international=international) + mask_text(rest)


def _replace(m: re.Match[str]) -> str:
    g = m.group
    if g("uri"):
        run = g("urun")
        tail = m.string[m.end() :]
        scheme = g("scheme").lower()
        user_ok = tail.startswith("@") if scheme.startswith("sip") else True
        if not user_ok or len(_digits(run)) < 3:
            # not a user part (sip:127.0.0.1:5060): the other rules still apply
            return g("uri") + mask_text(m.group(0)[len(g("uri")) :])
        return g("uri") + mask_digits(_digits(run), international=bool(g("uplus")))
    if g("plus"):
        return _mask_run(g("prun"), international=True) or m.group(0)
    if g("idp"):
        digits = g("irun")
        if len(digits) < 3:
            return m.group(0)
        return g("idp") + mask_digits(digits, international=bool(g("iplus")))
    if g("intl"):
        return _mask_run(g("nrun"), international=True) or m.group(0)
    if g("paren"):
        return _mask_run(g("paren"), international=False) or m.group(0)
    if g("trunk"):
        digits = _digits(g("trunk"))
        if not 9 <= len(digits) <= _E164_MAX_DIGITS:
            return m.group(0)
        return mask_digits(digits, international=False)
    return mask_digits(_digits(g("nanp")), international=False)


def mask_text(text: str) -> str:
    """Mask every number in free text (see the module docstring for the rules)."""
    if not any(c.isdigit() for c in text):
        return text
    return _NUMBER_IN_TEXT.sub(_replace, text)
