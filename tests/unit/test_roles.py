from __future__ import annotations

import pytest

from worker.masking import mask_number
from worker.roles import AgentRule, Role, classify, is_sip_hangup

RULE = AgentRule()


@pytest.mark.parametrize(
    ("kind", "identity", "attrs", "role"),
    [
        ("sip", "sip_+15550100123", {}, Role.CALLER),
        ("sip", "agent-impostor", {"role": "agent"}, Role.CALLER),  # kind wins
        ("standard", "agent-alice", {}, Role.HUMAN_AGENT),
        ("standard", "alice", {"role": "agent"}, Role.HUMAN_AGENT),
        ("standard", "alice", {"role": "viewer"}, Role.UNKNOWN),
        ("standard", "web-dashboard", {}, Role.UNKNOWN),
        ("agent", "agent-AJ_x", {}, Role.OTHER_AGENT),  # another worker, even with the prefix
        ("egress", "EG_123", {}, Role.SERVICE),
        ("ingress", "IN_1", {}, Role.SERVICE),
        ("connector", "c", {}, Role.SERVICE),
        ("kind9", "agent-x", {}, Role.UNKNOWN),
        ("standard", "ägent-ünïcode-" + "x" * 500, {}, Role.UNKNOWN),
    ],
)
def test_classify(kind: str, identity: str, attrs: dict[str, str], role: Role) -> None:
    assert classify(kind, identity, attrs, RULE) is role


def test_rule_is_configurable() -> None:
    rule = AgentRule(identity_prefix="staff_", role_attribute="", role_value="")
    assert classify("standard", "staff_bob", {}, rule) is Role.HUMAN_AGENT
    assert classify("standard", "agent-bob", {"role": "agent"}, rule) is Role.UNKNOWN


def test_sip_hangup_attribute() -> None:
    assert is_sip_hangup({"sip.callStatus": "hangup"})
    assert not is_sip_hangup({"sip.callStatus": "active"})
    assert not is_sip_hangup({})


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+15550100123", "+***0123"),
        ("15550100123", "***0123"),
        ("sip:+15550100123@carrier.example", "+***0123"),
        ("tel:+442071838750", "+***8750"),
        ("1234", "***4"),  # never more than about a third of the digits
        ("7", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_number(raw: str | None, masked: str) -> None:
    assert mask_number(raw) == masked
