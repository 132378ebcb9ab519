"""provision's argument checks: clear one-line errors before any request is made."""

from __future__ import annotations

import pytest

from worker.provision import ProvisionError, parse_args, rule_info, trunk_info

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
