"""Mask caller numbers for logs and attributes: +15550100123 -> +1555***0123."""

from __future__ import annotations


def mask_number(number: str | None) -> str:
    if not number:
        return ""
    s = number.strip()
    # Strip a SIP URI down to its user part (sip:+1555...@host).
    if s.lower().startswith(("sip:", "sips:", "tel:")):
        s = s.split(":", 1)[1]
    s = s.split("@", 1)[0]
    plus = "+" if s.startswith("+") else ""
    digits = s[len(plus) :]
    if len(digits) >= 8:
        return f"{plus}{digits[:4]}***{digits[-4:]}"
    if len(digits) >= 3:
        return f"{plus}***{digits[-2:]}"
    return "***"
