"""Caller numbers are masked in every form, and log lines keep everything else."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.logmask import MaskCallerNumbers, mask_text
from worker.masking import MAX_SHOWN, mask_digits, mask_number

NUMBER = "15550100123"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+15550100123", "+***0123"),
        ("caller +1 (555) 010-0123 joined", "caller +***0123 joined"),
        ("+1-555-010-0123", "+***0123"),
        ("+1.555.010.0123", "+***0123"),
        ("+44 20 7183 8750", "+***8750"),
        ("sip:+15550100123@carrier.example", "sip:+***0123@carrier.example"),
        ("<sip:15550100123@10.0.0.1:5060>", "<sip:***0123@10.0.0.1:5060>"),
        ("SIPS:+15550100123@h", "SIPS:+***0123@h"),
        ("tel:+1-555-010-0123;ext=2", "tel:+***0123;ext=2"),
        ("room call-_15550100123_abc", "room call-_***0123_abc"),
        ("room call-_+15551230001_Jm8DsGjEnxfx", "room call-_+***0001_Jm8DsGjEnxfx"),
        ("sip_+442071838750 joined", "sip_+***8750 joined"),
        ("identity=sip_15550100123", "identity=sip_***0123"),
        ("0044 20 7183 8750", "+***8750"),
        ("00 44 20 7183 8750", "+***8750"),
        ("0044207183 8750", "+***8750"),
        ("(555) 010-0123", "***123"),
        ("020 7183 8750", "***8750"),
        ("07700 900123", "***0123"),
        ("555-010-0123", "***123"),
        ("555.010.0123", "***123"),
        ("{'sip.phoneNumber': '+15551230001'}", "{'sip.phoneNumber': '+***0001'}"),
        ('"From": "\\"+15550100123\\" <sip:+15550100123@h>"', None),
        ("caller (+15550100123).", "caller (+***0123)."),
        # a number then a port or a timestamp: the number only
        ("+15550100123 5060", "+***0123 5060"),
        ("+15550100123 1764400000000", "+***0123 1764400000000"),
    ],
)
def test_numbers_are_masked(text: str, masked: str | None) -> None:
    out = mask_text(text)
    if masked is not None:
        assert out == masked
    else:
        assert out == '"From": "\\"+***0123\\" <sip:+***0123@h>"'
    assert mask_text(out) == out  # masking twice is masking once


@pytest.mark.parametrize(
    "text",
    [
        "created 1764400000000 ms",  # unix-ms timestamp
        "ts=1795735061464 port 5060 pid 12345 bytes 1048576 packets 50000",
        "2025-11-29 10:20:30,123 INFO job 42",  # log timestamp
        "2025-11-29T10:20:30.123456+00:00",
        "09-11-2025 10:20",
        "listening on 127.0.0.1:8081 and [::1]:7880",
        "sip:127.0.0.1:5060",
        "10.0.0.1 192.168.100.200",
        "livekit-server v1.13.5, python 3.11.9",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "AJ_x7k2 RM_15550100123",  # an id with digits, no number context
        "took +12 ms, +0000, 1e+10",
        "retries 3 (max 5), 48000 Hz, 960 samples",
        "+***0123 call-_+***0001_x sip:***123@h",  # already masked
    ],
)
def test_other_digits_are_left_alone(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+15550100123", "+***0123"),
        ("15550100123", "***0123"),
        ("+1 (555) 010-0123", "+***0123"),
        ("sip:+15550100123@carrier.example", "+***0123"),
        ("tel:+442071838750", "+***8750"),
        ("0044207183875012", "+4***5012"),
        ("12345678", "***678"),
        (15550100123, "***0123"),
        ("1234", "***4"),
        ("12", "***2"),
        ("7", "***"),
        ("sip:alice@h", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_number(raw: str | int | None, masked: str) -> None:
    assert mask_number(raw) == masked


def _shown(masked: str) -> str:
    return re.sub(r"\D", "", masked)


@given(st.text(alphabet="0123456789", min_size=1, max_size=30), st.booleans())
def test_a_mask_never_shows_a_number_whole(digits: str, plus: bool) -> None:
    for masked in (
        mask_number(("+" if plus else "") + digits),
        mask_digits(digits, international=plus),
    ):
        shown = _shown(masked)
        assert digits not in masked
        assert len(shown) <= min(MAX_SHOWN, (len(digits) + 1) // 3)
        assert len(shown) < len(digits)


@given(
    st.text(alphabet="0123456789", min_size=7, max_size=15),
    st.sampled_from(["+{}", "sip:+{}@h", "sip:{}@h", "tel:{}", "call-_{}_x", "sip_{}"]),
)
def test_a_number_in_context_is_never_in_the_text(digits: str, form: str) -> None:
    out = mask_text(f"x {form.format(digits)} y")
    assert digits not in out
    assert len(_shown(out)) <= min(MAX_SHOWN, (len(digits) + 1) // 3)


@given(st.lists(st.sampled_from("0123456789"), min_size=7, max_size=15), st.data())
def test_a_number_with_separators_is_masked(digits: list[str], data: st.DataObject) -> None:
    seps = data.draw(st.lists(st.sampled_from(["", "", " ", "-", "."]), min_size=len(digits)))
    text = "+" + "".join(d + s for d, s in zip(digits, seps, strict=False)).rstrip(" -.")
    out = mask_text(f"caller {text} joined")
    assert re.sub(r"\D", "", out).find("".join(digits)) == -1


# --- the filter ---------------------------------------------------------------


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logging.Formatter("%(message)s|%(room)s|%(extra_json)s"))
    h.addFilter(MaskCallerNumbers())
    log = logging.getLogger("test-mask")
    log.addHandler(h)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log, buf
    log.removeHandler(h)


def _no_number(out: str) -> None:
    assert NUMBER not in re.sub(r"[^\d\n]", "", out), out


def test_filter_masks_message_args_and_fields(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, buf = logged
    log.warning(
        "caller %s joined",
        "+15551230001",
        extra={"room": "call-_+15551230001_x", "extra_json": json.dumps({"n": "+15551230001"})},
    )
    out = buf.getvalue()
    assert "+15551230001" not in out
    assert out.count("+***0001") == 3


def test_non_string_arguments(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = logged

    class Caller:
        def __str__(self) -> str:
            return "sip:+15550100123@carrier"

    extra = {"room": "r", "extra_json": ""}
    log.info("caller +%d at %s, %r", 15550100123, Caller(), ["+15550100123"], extra=extra)
    log.info({"caller": "+15550100123"}, extra=extra)
    out = buf.getvalue()
    _no_number(out)
    assert "caller +***0123 at sip:+***0123@carrier, ['+***0123']" in out


def test_structured_fields_of_any_type() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "call",
            "caller": 15550100123,  # an int under a phone field
            "sip.phoneNumber": "15550100123",  # bare digits under a phone field
            "media": {"peer": ["sip:15550100123@h", ("+15550100123",)], "n": 3},
            "attrs": {"from_number": 15550100123, "bytes": 15550100123},
            "ids": {"+15550100123"},
            "port": 5060,
            "created_ms": 1764400000000,
            "ratio": 0.5,
        }
    )
    MaskCallerNumbers().filter(record)
    assert record.caller == "***0123"
    assert getattr(record, "sip.phoneNumber") == "***0123"
    assert record.media == {"peer": ["sip:***0123@h", ("+***0123",)], "n": 3}
    assert record.attrs == {"from_number": "***0123", "bytes": 15550100123}
    assert record.ids == {"+***0123"}
    assert (record.port, record.created_ms, record.ratio) == (5060, 1764400000000, 0.5)


def test_tracebacks_are_masked(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = logged
    extra = {"room": "r", "extra_json": ""}
    try:
        raise ValueError("no store for sip:+15550100123@carrier")
    except ValueError:
        log.exception("failed", extra=extra)
    log.warning("here", stack_info=True, extra=extra)
    out = buf.getvalue()
    _no_number(out)
    assert "ValueError: no store for sip:+***0123@carrier" in out
    assert "Traceback (most recent call last)" in out


def test_json_formatter_sees_the_masked_traceback() -> None:
    """livekit's JSON formatter formats exc_info itself when it is set."""
    from livekit.agents.cli.log import JsonFormatter

    try:
        raise RuntimeError("caller 0044 20 7183 8750")
    except RuntimeError as e:
        record = logging.makeLogRecord(
            {"msg": "x", "exc_info": (type(e), e, e.__traceback__), "caller": "+15550100123"}
        )
    MaskCallerNumbers().filter(record)
    out = JsonFormatter().format(record)
    assert "7183" not in out and NUMBER not in out
    assert "caller +***8750" in json.loads(out)["exc_info"]
    assert json.loads(out)["caller"] == "+***0123"
