"""A REAL ``redis-server`` for the tests: started on loopback on a free port in a temporary
folder (``--save '' --appendonly no``), killed at teardown. Missing redis-server skips the
Redis tests, unless ``DELTAMEM_REQUIRE_REDIS=1`` (CI), where it fails them."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from deltamem_agents.bench.store import REDIS_INSTALL_HINT, LocalRedisServer

REQUIRE_ENV = "DELTAMEM_REQUIRE_REDIS"


def redis_server_or_skip() -> str:
    """The path of ``redis-server``; skips (or fails under ``DELTAMEM_REQUIRE_REDIS=1``) without it."""
    found = shutil.which("redis-server")
    if found is None:
        message = f"redis-server is not installed ({REDIS_INSTALL_HINT}, or run scripts/setup.sh)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message}; {REQUIRE_ENV}=1 requires the Redis tests to run")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[LocalRedisServer]:
    """One redis-server per test module."""
    server = LocalRedisServer(redis_server_or_skip(), tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of its own per test: tests share a server, never each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}:"
