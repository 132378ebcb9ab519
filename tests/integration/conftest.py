"""Fixtures shared by the integration tests."""

from tests.integration.redis_server import redis_server

__all__ = ["redis_server"]
