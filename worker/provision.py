"""python -m worker provision: the inbound trunk and dispatch rule, idempotent by name.

Creates or updates (never duplicates) in the LiveKit project at LIVEKIT_URL:

- an inbound SIP trunk: the numbers the carrier (Bird) delivers, the
  carrier's signalling addresses as the allowlist, optional digest auth, and
  custom SIP headers mapped to participant attributes;
- an individual dispatch rule on that trunk: one room per call, named
  `<prefix><random>`, whose room_config dispatches the hold agent by name.

The same command works against LiveKit Cloud or a self-hosted server: only
LIVEKIT_URL and the key pair change. Flags win over the environment
(HOLD_TRUNK_*, HOLD_RULE_*, HOLD_AGENT_NAME).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.duration_pb2 import Duration
from livekit import api

from .settings import DEFAULT_ANNOUNCEMENT
from .stores import StoreMapError, load_store_map

DEFAULT_TRUNK_NAME = "hold-inbound"
DEFAULT_RULE_NAME = "hold-calls"
DEFAULT_ROOM_PREFIX = "call-"


class ProvisionError(Exception):
    pass


@dataclass(frozen=True)
class Plan:
    trunk_name: str
    numbers: list[str]
    allowed_addresses: list[str]
    auth_username: str
    auth_password: str
    headers_to_attributes: dict[str, str]
    rule_name: str
    room_prefix: str
    agent_name: str
    ringing_timeout_s: int = 20


# The shortest prefix an allowlist entry may have without --allow-open.
# Carriers publish their SIP signalling addresses as single hosts or small
# blocks (a /32 to a /24; the largest in common use are /18-/20 ranges): an
# IPv4 /16 (65,536 addresses) is already a whole provider's allocation, and
# anything shorter is a cloud region or a chunk of the Internet, not a
# carrier's range. For IPv6, /32 is the smallest allocation an RIR makes to
# an ISP (a whole operator); a carrier's SBC range is a /48 or smaller, so a
# prefix shorter than /32 admits more than any one carrier.
MIN_PREFIX_V4 = 16
MIN_PREFIX_V6 = 32
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def check_allowed_address(addr: str, *, allow_open: bool) -> None:
    """Refuse an allowlist entry that is not a CIDR, or admits (nearly) everyone."""
    try:
        net = ipaddress.ip_network(addr.strip(), strict=False)
    except ValueError:
        raise ProvisionError(f"allowed address {addr!r}: not an IP address or CIDR") from None
    if allow_open:
        return
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_V4_MAPPED):
        # ::ffff:0:0/96 is every IPv4 address: judge it as the IPv4 range it is.
        prefix, minimum, family = net.prefixlen - 96, MIN_PREFIX_V4, "IPv4 (mapped)"
    elif isinstance(net, ipaddress.IPv6Network):
        prefix, minimum, family = net.prefixlen, MIN_PREFIX_V6, "IPv6"
    else:
        prefix, minimum, family = net.prefixlen, MIN_PREFIX_V4, "IPv4"
    if prefix == 0:
        raise ProvisionError(
            f"allowed address {addr!r} admits everyone; give the carrier's signalling "
            "addresses, or pass --allow-open"
        )
    if prefix < minimum:
        raise ProvisionError(
            f"allowed address {addr!r}: a /{prefix} is wider than any carrier's range "
            f"({family} prefixes must be /{minimum} or longer); pass --allow-open to "
            "allow it anyway"
        )


def _env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def parse_args(argv: list[str]) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m worker provision", description=__doc__)
    p.add_argument("--trunk-name", default=os.environ.get("HOLD_TRUNK_NAME", DEFAULT_TRUNK_NAME))
    p.add_argument(
        "--number",
        dest="numbers",
        action="append",
        help="a number the trunk accepts (repeat; env HOLD_TRUNK_NUMBERS, comma-separated)",
    )
    p.add_argument(
        "--allowed-address",
        dest="allowed",
        action="append",
        help="carrier signalling address or CIDR (repeat; env HOLD_TRUNK_ALLOWED_ADDRESSES)",
    )
    p.add_argument("--auth-username", default=os.environ.get("HOLD_TRUNK_AUTH_USERNAME", ""))
    p.add_argument(
        "--header",
        dest="headers",
        action="append",
        help="SIP header to participant attribute, e.g. X-Store-Id=store.id (repeat; "
        "env HOLD_TRUNK_HEADERS)",
    )
    p.add_argument("--rule-name", default=os.environ.get("HOLD_RULE_NAME", DEFAULT_RULE_NAME))
    p.add_argument(
        "--room-prefix", default=os.environ.get("HOLD_RULE_ROOM_PREFIX", DEFAULT_ROOM_PREFIX)
    )
    p.add_argument("--agent-name", default=os.environ.get("HOLD_AGENT_NAME", "hold-agent"))
    p.add_argument(
        "--allow-open",
        action="store_true",
        help="allow a trunk with neither an address allowlist nor auth (anyone may call in), "
        "and allowlist entries wider than a carrier's range (0.0.0.0/0, ::/0, IPv4 shorter "
        "than /16, IPv6 shorter than /32)",
    )
    p.add_argument(
        "--ringing-timeout",
        type=int,
        default=int(os.environ.get("HOLD_TRUNK_RINGING_TIMEOUT_S", "20")),
        help="seconds livekit-sip lets a call ring while no hold worker is free before it "
        "refuses it with a SIP error (default 20; LiveKit's own default is 180)",
    )
    p.add_argument(
        "--stores",
        default=os.environ.get("HOLD_STORES", ""),
        help="store map (YAML; env HOLD_STORES): its numbers and routing header go on the "
        "trunk, added to --number and --header",
    )
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL", ""))
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", ""))
    p.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET", ""))
    a = p.parse_args(argv)

    numbers = a.numbers or _env_list("HOLD_TRUNK_NUMBERS")
    allowed = a.allowed or _env_list("HOLD_TRUNK_ALLOWED_ADDRESSES")
    header_specs = a.headers or _env_list("HOLD_TRUNK_HEADERS")
    password = os.environ.get("HOLD_TRUNK_AUTH_PASSWORD", "")
    store_headers: dict[str, str] = {}
    if a.stores:
        # One place for routing: the stores' numbers and header mapping come
        # from the same file the worker resolves stores with.
        try:
            stores = load_store_map(a.stores, default_announcement=DEFAULT_ANNOUNCEMENT)
        except StoreMapError as e:
            raise ProvisionError(f"HOLD_STORES: {e}") from None
        numbers = list(dict.fromkeys([*numbers, *stores.numbers]))
        store_headers = stores.headers_to_attributes()

    if not numbers:
        raise ProvisionError(
            "no trunk numbers: pass --number, set HOLD_TRUNK_NUMBERS or give a store map"
        )
    for n in numbers:
        if not n.lstrip("+").isdigit():
            raise ProvisionError(f"trunk number {n!r}: digits with an optional leading +")
    for addr in allowed:
        check_allowed_address(addr, allow_open=a.allow_open)
    headers: dict[str, str] = {}
    for spec in header_specs:
        header, sep, attr = spec.partition("=")
        if not sep or not header.strip() or not attr.strip():
            raise ProvisionError(f"header mapping {spec!r}: expected Header-Name=attribute.name")
        headers[header.strip()] = attr.strip()
    headers.update(store_headers)
    if bool(a.auth_username) != bool(password):
        raise ProvisionError(
            "digest auth needs both --auth-username and HOLD_TRUNK_AUTH_PASSWORD (env only)"
        )
    if not allowed and not a.auth_username and not a.allow_open:
        raise ProvisionError(
            "refusing an open trunk: give the carrier's addresses (--allowed-address) or "
            "auth (--auth-username + HOLD_TRUNK_AUTH_PASSWORD), or pass --allow-open"
        )
    if not 1 <= a.ringing_timeout <= 180:
        raise ProvisionError("--ringing-timeout: 1 to 180 seconds")
    if not a.room_prefix:
        raise ProvisionError("--room-prefix must not be empty")
    for name, value in (("LIVEKIT_URL", a.url), ("LIVEKIT_API_KEY", a.api_key)):
        if not value:
            raise ProvisionError(f"{name} is not set")
    if not a.api_secret:
        raise ProvisionError("LIVEKIT_API_SECRET is not set")
    plan = Plan(
        trunk_name=a.trunk_name,
        numbers=numbers,
        allowed_addresses=allowed,
        auth_username=a.auth_username,
        auth_password=password,
        headers_to_attributes=headers,
        rule_name=a.rule_name,
        room_prefix=a.room_prefix,
        agent_name=a.agent_name,
        ringing_timeout_s=a.ringing_timeout,
    )
    return plan, a


def trunk_info(plan: Plan) -> api.SIPInboundTrunkInfo:
    return api.SIPInboundTrunkInfo(
        name=plan.trunk_name,
        numbers=plan.numbers,
        allowed_addresses=plan.allowed_addresses,
        auth_username=plan.auth_username,
        auth_password=plan.auth_password,
        headers_to_attributes=plan.headers_to_attributes,
        # A call rings (180) until the hold worker has joined; with every
        # replica full it would ring for LiveKit's default 3 minutes. Refuse
        # it sooner so the carrier can fail over (tests/e2e/test_reliability_burst.py).
        ringing_timeout=Duration(seconds=plan.ringing_timeout_s),
    )


def rule_info(plan: Plan, trunk_id: str) -> api.SIPDispatchRuleInfo:
    return api.SIPDispatchRuleInfo(
        name=plan.rule_name,
        trunk_ids=[trunk_id],
        rule=api.SIPDispatchRule(
            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=plan.room_prefix)
        ),
        room_config=api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=plan.agent_name)]
        ),
    )


def _same_trunk(have: api.SIPInboundTrunkInfo, want: api.SIPInboundTrunkInfo) -> bool:
    # The server does not return the password; compare what it does return.
    return (
        list(have.numbers) == list(want.numbers)
        and list(have.allowed_addresses) == list(want.allowed_addresses)
        and have.auth_username == want.auth_username
        and dict(have.headers_to_attributes) == dict(want.headers_to_attributes)
        and have.ringing_timeout.seconds == want.ringing_timeout.seconds
        and not want.auth_password
    )


def _same_rule(have: api.SIPDispatchRuleInfo, want: api.SIPDispatchRuleInfo) -> bool:
    return (
        list(have.trunk_ids) == list(want.trunk_ids)
        and have.rule == want.rule
        and [a.agent_name for a in have.room_config.agents]
        == [a.agent_name for a in want.room_config.agents]
    )


def _one_named(items: Sequence[Any], name: str, what: str) -> Any | None:
    same = [x for x in items if x.name == name]
    if len(same) > 1:
        raise ProvisionError(f"{len(same)} {what} are named {name!r}; delete the extras")
    return same[0] if same else None


async def provision(lk: api.LiveKitAPI, plan: Plan) -> dict[str, str]:
    """Create or update the trunk and rule, by name; returns ids and what was done."""
    out: dict[str, str] = {}
    want_trunk = trunk_info(plan)
    trunks = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
    have = _one_named(trunks, plan.trunk_name, "inbound trunks")
    if have is None:
        req = api.CreateSIPInboundTrunkRequest(trunk=want_trunk)
        trunk_id, out["trunk"] = (await lk.sip.create_inbound_trunk(req)).sip_trunk_id, "created"
    elif _same_trunk(have, want_trunk):
        trunk_id, out["trunk"] = have.sip_trunk_id, "unchanged"
    else:
        trunk_id, out["trunk"] = have.sip_trunk_id, "updated"
        want_trunk.sip_trunk_id = trunk_id
        await lk.sip.update_inbound_trunk(trunk_id, want_trunk)
    out["trunk_id"] = trunk_id

    want_rule = rule_info(plan, trunk_id)
    rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
    have_rule = _one_named(rules, plan.rule_name, "dispatch rules")
    if have_rule is None:
        req_rule = api.CreateSIPDispatchRuleRequest(dispatch_rule=want_rule)
        created = await lk.sip.create_dispatch_rule(req_rule)
        rule_id, out["rule"] = created.sip_dispatch_rule_id, "created"
    elif _same_rule(have_rule, want_rule):
        rule_id, out["rule"] = have_rule.sip_dispatch_rule_id, "unchanged"
    else:
        rule_id, out["rule"] = have_rule.sip_dispatch_rule_id, "updated"
        want_rule.sip_dispatch_rule_id = rule_id
        await lk.sip.update_dispatch_rule(rule_id, want_rule)
    out["rule_id"] = rule_id
    return out


async def _run(argv: list[str]) -> int:
    plan, a = parse_args(argv)
    async with api.LiveKitAPI(a.url, a.api_key, a.api_secret) as lk:
        result = await provision(lk, plan)
    print(
        f"trunk {plan.trunk_name!r} {result['trunk_id']}: {result['trunk']}; "
        f"dispatch rule {plan.rule_name!r} {result['rule_id']}: {result['rule']} "
        f"(rooms {plan.room_prefix}*, agent {plan.agent_name!r}, numbers {', '.join(plan.numbers)})"
    )
    return 0


def main(argv: list[str]) -> int:
    try:
        return asyncio.run(_run(argv))
    except ProvisionError as e:
        print(f"provision error: {e}", file=sys.stderr)
        return 2
    except api.TwirpError as e:
        print(f"provision error: LiveKit refused: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"provision error: cannot reach LiveKit: {e}", file=sys.stderr)
        return 1
