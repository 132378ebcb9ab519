"""Fixtures shared by the integration tests."""

from collections.abc import AsyncIterator

import pytest

from tests.integration.redis_server import RedisServer, redis_server
from worker.registry import Registry, connect

__all__ = ["redis_server", "registry"]


@pytest.fixture
async def registry(redis_server: RedisServer) -> AsyncIterator[Registry]:
    """The call registry over the test's own redis-server (history kept 60 s)."""
    reg = Registry(connect(redis_server.url), history_ttl_ms=60_000)
    yield reg
    await reg.aclose()
