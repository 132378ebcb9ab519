"""A closed front door: tokens are room-scoped and short-lived; settings at their limits."""

from __future__ import annotations

import jwt
import pytest

from harness.agents import room_token
from worker.settings import SettingsError, load_settings


def test_tokens_minted_by_the_project_are_room_scoped_and_short() -> None:
    tok = room_token("devkey", "s" * 32, "call-_x_abc", "agent-1")
    claims = jwt.decode(tok, "s" * 32, algorithms=["HS256"])
    video = claims["video"]
    assert video["room"] == "call-_x_abc" and video["roomJoin"] is True
    assert not video.get("roomAdmin") and not video.get("roomCreate") and not video.get("roomList")
    assert claims["exp"] - claims["nbf"] <= 600  # ten minutes at most


LIMITS = {
    "level_dbfs": (-40.0, -6.0),
    "chunk_ms": (10, 1000),
    "fade_ms": (0, 5000),
    "max_calls": (1, 1000),
    "drain_timeout_s": (1, 86400),
    "announcement_every_s": (5.0, 3600.0),
    "media_missing_after_s": (0.001, 120.0),
    "http_port": (0, 65535),
}


@pytest.mark.parametrize(("name", "bounds"), LIMITS.items())
def test_settings_at_their_limits(name: str, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    for v in (lo, hi):
        assert getattr(load_settings(**{name: v}), name) == v
    step = 10 if name == "chunk_ms" else 1
    for bad in (lo - step if lo > 0 or name != "media_missing_after_s" else 0, hi + step):
        with pytest.raises(SettingsError) as e:
            load_settings(**{name: bad})
        msg = str(e.value)
        assert msg.startswith(f"HOLD_{name.upper()}: ") and "\n" not in msg
