"""`python -m worker provision` against the real livekit-server: idempotent by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import api

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def provision(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", "provision", *args],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


ARGS = [
    "--trunk-name",
    "prov-test",
    "--rule-name",
    "prov-test-rule",
    "--number",
    "+15550177",
    "--allowed-address",
    "127.0.0.1/32",
]


async def test_create_then_unchanged_then_updated(lk_env, lkapi):
    env = {k: lk_env[k] for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")}
    try:
        first = provision(env, *ARGS, "--header", "X-Store-Id=store.id")
        second = provision(env, *ARGS, "--header", "X-Store-Id=store.id")
        third = provision(env, *ARGS, "--header", "X-Store-Id=store.id", "--header", "X-Lane=lane")
        for p in (first, second, third):
            print(p.stdout.strip() or p.stderr.strip())
            assert p.returncode == 0, p.stderr
        assert "created" in first.stdout
        assert second.stdout.count("unchanged") == 2
        assert "trunk 'prov-test'" in third.stdout and "updated" in third.stdout
        trunks = (await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
        mine = [t for t in trunks if t.name == "prov-test"]
        assert len(mine) == 1  # never duplicated
        assert dict(mine[0].headers_to_attributes) == {"X-Store-Id": "store.id", "X-Lane": "lane"}
        rules = (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        rule = [r for r in rules if r.name == "prov-test-rule"]
        assert len(rule) == 1
        assert rule[0].rule.dispatch_rule_individual.room_prefix == "call-"
        assert [a.agent_name for a in rule[0].room_config.agents] == ["hold-agent"]
        assert list(rule[0].trunk_ids) == [mine[0].sip_trunk_id]
    finally:
        rules = (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        for r in rules:
            if r.name == "prov-test-rule":
                await lkapi.sip.delete_dispatch_rule(
                    api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=r.sip_dispatch_rule_id)
                )
        trunks = (await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
        for t in trunks:
            if t.name == "prov-test":
                await lkapi.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))


def test_open_trunk_refused_without_flag(lk_env):
    env = {k: lk_env[k] for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")}
    p = provision(env, "--trunk-name", "open", "--number", "+15550178")
    assert p.returncode == 2
    assert p.stderr.strip().startswith("provision error: refusing an open trunk")
    assert len(p.stderr.strip().splitlines()) == 1
