"""Who is who in a call room: the caller, a human agent, or someone else.

Pure: the adapter passes the participant's kind as a lower-case name
("sip", "agent", "standard", "egress", "ingress", "connector", ...), so this
module imports nothing from livekit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .protocol import ROLE_ATTR, SIP_CALL_STATUS


class Role(StrEnum):
    CALLER = "caller"  # the PSTN leg, put in the room by livekit-sip
    HUMAN_AGENT = "human_agent"  # a store employee from the web app
    OTHER_AGENT = "other_agent"  # another agent worker (AI or ours)
    SERVICE = "service"  # egress, ingress, connectors: never take part
    UNKNOWN = "unknown"  # a standard participant that matches no rule


@dataclass(frozen=True)
class AgentRule:
    """How a human agent is recognised: an identity prefix or an attribute."""

    identity_prefix: str = "agent-"
    role_attribute: str = ROLE_ATTR
    role_value: str = "agent"


_SERVICE_KINDS = frozenset({"egress", "ingress", "connector", "bridge"})


def classify(kind: str, identity: str, attributes: Mapping[str, str], rule: AgentRule) -> Role:
    # The kind is set by the server from the token and cannot be forged by a
    # client, so it wins over identity or attributes: a SIP participant whose
    # identity happens to start with "agent-" is still the caller.
    if kind == "sip":
        return Role.CALLER
    if kind == "agent":
        return Role.OTHER_AGENT
    if kind in _SERVICE_KINDS:
        return Role.SERVICE
    if kind != "standard":
        return Role.UNKNOWN
    if rule.identity_prefix and identity.startswith(rule.identity_prefix):
        return Role.HUMAN_AGENT
    if rule.role_attribute and attributes.get(rule.role_attribute) == rule.role_value:
        return Role.HUMAN_AGENT
    return Role.UNKNOWN


def is_sip_hangup(attributes: Mapping[str, str]) -> bool:
    """livekit-sip sets sip.callStatus to "hangup" when the caller's leg ends."""
    return attributes.get(SIP_CALL_STATUS) == "hangup"
