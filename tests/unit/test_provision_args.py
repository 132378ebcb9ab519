"""provision's argument checks: clear one-line errors before any request is made."""

from __future__ import annotations

import re

import pytest

from worker.provision import ProvisionError, main, parse_args, rule_info, trunk_info

LK = ["--url", "ws://127.0.0.1:7880", "--api-key", "k", "--api-secret", "s"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in (
        "HOLD_TRUNK_NUMBERS",
        "HOLD_TRUNK_ALLOWED_ADDRESSES",
        "HOLD_TRUNK_HEADERS",
        "HOLD_TRUNK_AUTH_PASSWORD",
        "HOLD_TRUNK_AUTH_USERNAME",
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "HOLD_AGENT_NAME",
    ):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "no trunk numbers"),
        (["--number", "555-0100", "--allow-open"], "digits with an optional leading +"),
        (["--number", "+15550100", "--allowed-address", "carrier.example"], "not an IP"),
        (["--number", "+15550100", "--allow-open", "--header", "X-Store-Id"], "Header-Name="),
        (["--number", "+15550100"], "refusing an open trunk"),
        (["--number", "+15550100", "--auth-username", "bird"], "HOLD_TRUNK_AUTH_PASSWORD"),
    ],
)
def test_bad_arguments(args: list[str], needle: str) -> None:
    with pytest.raises(ProvisionError, match=needle):
        parse_args([*args, *LK])


def test_missing_livekit_url() -> None:
    with pytest.raises(ProvisionError, match="LIVEKIT_URL"):
        parse_args(["--number", "+15550100", "--allow-open"])


def test_plan_to_trunk_and_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLD_TRUNK_AUTH_PASSWORD", "pw-from-env")
    plan, _ = parse_args(
        [
            "--number",
            "+15550100",
            "--number",
            "+15550101",
            "--auth-username",
            "bird",
            "--header",
            "X-Store-Id=store.id",
            "--agent-name",
            "store-hold",
            *LK,
        ]
    )
    t = trunk_info(plan)
    assert list(t.numbers) == ["+15550100", "+15550101"]
    assert t.auth_username == "bird" and t.auth_password == "pw-from-env"
    assert dict(t.headers_to_attributes) == {"X-Store-Id": "store.id"}
    r = rule_info(plan, "ST_x")
    assert list(r.trunk_ids) == ["ST_x"]
    assert r.rule.dispatch_rule_individual.room_prefix == "call-"
    assert r.room_config.agents[0].agent_name == "store-hold"


BASE = ["--number", "+15550100", *LK]


@pytest.mark.parametrize(
    ("addr", "needle"),
    [
        ("0.0.0.0/0", "admits everyone"),
        ("::/0", "admits everyone"),
        ("::ffff:0:0/96", "admits everyone"),  # every IPv4 address, mapped
        ("10.0.0.0/8", "a /8 is wider than any carrier's range"),
        ("203.0.0.0/15", "IPv4 prefixes must be /16 or longer"),
        ("2001:db8::/16", "IPv6 prefixes must be /32 or longer"),
        ("2000::/3", "a /3 is wider"),
        ("203.0.113.0/33", "not an IP address or CIDR"),
        ("203.0.113.0/x", "not an IP address or CIDR"),
        ("", "not an IP address or CIDR"),
    ],
)
def test_open_or_invalid_allowlist_refused(addr: str, needle: str) -> None:
    with pytest.raises(ProvisionError, match=re.escape(needle)) as e:
        parse_args(["--allowed-address", "198.51.100.7", "--allowed-address", addr, *BASE])
    assert "\n" not in str(e.value)
    if "not an IP" not in needle:
        assert "--allow-open" in str(e.value)


@pytest.mark.parametrize(
    "addr", ["203.0.113.7", "203.0.113.0/24", "198.18.0.0/16", "2001:db8::/32", "2001:db8:1::/48"]
)
def test_carrier_ranges_accepted(addr: str) -> None:
    plan, _ = parse_args(["--allowed-address", addr, *BASE])
    assert plan.allowed_addresses == [addr]


def test_allow_open_admits_wide_ranges_but_not_garbage() -> None:
    plan, _ = parse_args(["--allowed-address", "0.0.0.0/0", "--allow-open", *BASE])
    assert plan.allowed_addresses == ["0.0.0.0/0"]
    with pytest.raises(ProvisionError, match="not an IP"):
        parse_args(["--allowed-address", "everyone", "--allow-open", *BASE])


def test_env_allowlist_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLD_TRUNK_ALLOWED_ADDRESSES", "203.0.113.0/24, ::/0")
    with pytest.raises(ProvisionError, match="admits everyone"):
        parse_args(BASE)


def test_cli_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--allowed-address", "0.0.0.0/0", *BASE]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("provision error: allowed address")
