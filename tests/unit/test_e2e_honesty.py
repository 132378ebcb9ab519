"""The e2e harness's honesty helpers: what fails under CI, what a caller's
result must state, and the log scan's search for dialled caller numbers."""

from __future__ import annotations

import pytest

from harness.sip import dialled
from tests.e2e.support.ci import in_ci, unavailable, when_unavailable
from tests.e2e.support.outcome import answered_span, refusal

# --- CI=true: fail, not skip ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "decision"),
    [
        ({"CI": "true"}, "fail"),
        ({"CI": "TRUE"}, "fail"),
        ({"CI": "1"}, "fail"),
        ({"CI": " true "}, "fail"),
        ({"CI": "false"}, "skip"),
        ({"CI": ""}, "skip"),
        ({"CI": "0"}, "skip"),
        ({}, "skip"),
    ],
)
def test_ci_decision(env: dict[str, str], decision: str) -> None:
    assert when_unavailable(env) == decision
    assert in_ci(env) is (decision == "fail")


def test_unavailable_skips_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="no podman"):
        unavailable("no podman", {})


def test_unavailable_fails_under_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no podman.*CI=true"):
        unavailable("no podman", {"CI": "true"})


def test_unavailable_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        unavailable("no debootstrap")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        unavailable("no debootstrap")


# --- a caller's result: no fallback can pass -----------------------------------

EV = {"invite_sent": {"wall": 1000.0}, "disconnected": {"wall": 1020.5}}
REFUSED = {"answered": False, "status_code": 486, "reason": "Busy Here", "hangup_by": "remote"}


def test_refusal_with_its_data() -> None:
    assert refusal({**REFUSED, "events": EV, "errors": []}, "c") == (486, "Busy Here", 20.5)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"events": {"invite_sent": {"wall": 1000.0}}}, "no disconnected time"),
        (
            {"events": {"invite_sent": {"wall": 1000.0}, "invite_returned": {"wall": 1000.1}}},
            "no disconnected time",
        ),
        ({"events": {}}, "no invite_sent time"),
        ({"events": None}, "no invite_sent time"),
        ({"status_code": None}, "no SIP error status"),
        ({"status_code": 200}, "no SIP error status"),
        ({"status_code": 0}, "no SIP error status"),
        ({"hangup_by": "local"}, "not ended by the far end"),
        ({"hangup_by": None}, "not ended by the far end"),
        ({"errors": ["fatal: boom"]}, "caller errors"),
        ({"answered": True}, "it was answered"),
    ],
)
def test_refusal_without_its_data_fails(change: dict, needle: str) -> None:
    result = {**REFUSED, "events": EV, **change}
    with pytest.raises(
        AssertionError, match=f"c: not answered and not a recorded refusal.*{needle}"
    ):
        refusal(result, "c")


def test_the_old_fallback_case_fails() -> None:
    """What the burst test used to count as a quick refusal: a caller that
    wrote only that it was not answered."""
    with pytest.raises(AssertionError, match="no SIP error status"):
        refusal({"answered": False, "events": {"invite_sent": {"wall": 1.0}}}, "c")


ANSWERED = {
    "answered": True,
    "events": {
        "invite_sent": {"wall": 1000.0},
        "answered": {"wall": 1001.2},
        "hangup": {"wall": 1009.2},
    },
    "recording": {"started": {"wall": 1001.3}, "path": "/tmp/x.wav"},
}


def test_answered_span() -> None:
    after, ended = answered_span(ANSWERED, "c")
    assert (round(after, 3), ended) == (1.2, 1009.2)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"events": {"invite_sent": {"wall": 1.0}, "answered": {"wall": 2.0}}}, "no disconnected"),
        ({"events": {}}, "no invite_sent or answered"),
        ({"recording": {"started": None, "path": "/tmp/x.wav"}}, "no recording"),
        ({"answered": False}, "not answered"),
    ],
)
def test_answered_without_its_data_fails(change: dict, needle: str) -> None:
    with pytest.raises(AssertionError, match=needle):
        answered_span({**ANSWERED, **change}, "c")


# --- the log scan's search for dialled numbers ---------------------------------


def test_record_and_read_back(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dialled.ENV, str(tmp_path / "callers.txt"))
    dialled.record("+15551230001")
    dialled.record("sip:+15551230002@127.0.0.1")
    dialled.record("+15551230001")
    assert dialled.recorded() == {"+15551230001", "sip:+15551230002@127.0.0.1"}
    monkeypatch.delenv(dialled.ENV)
    dialled.record("+15551230003")  # outside an e2e run: nowhere, no error
    assert dialled.recorded() == set()


@pytest.mark.parametrize(
    "text",
    [
        '{"room": "call-_+15551230001_AbC"}',
        "identity sip_15551230001",
        "From: <sip:15551230001@127.0.0.1>",
        "caller +1 (555) 123-0001 joined",
        "caller 1-555-123-0001",
        "caller (555) 123-0001",
        "caller 555.123.0001",
        "caller 001 555 123 0001",
        "n=15551230001",
    ],
)
def test_a_dialled_number_is_found_in_any_format(text: str) -> None:
    assert dialled.find("+15551230001", text)
    assert dialled.find("sip:+15551230001@127.0.0.1", text)


@pytest.mark.parametrize(
    "text",
    [
        '{"room": "call-_+***0001_AbC", "caller": "+***0001"}',
        "created 1764400000000 port 5060 pid 5551230 5551230001234",
        "other caller +15551230002",
        "+15550100",  # the trunk's own number
    ],
)
def test_masked_or_other_numbers_are_not_found(text: str) -> None:
    assert dialled.find("+15551230001", text) == []
