from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._redis import RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without redis-server these tests are skipped, except in CI (where .ci/run installs it)."""
    if shutil.which("redis-server") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="redis-server is not installed (apt-get install redis-server)")
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here) and "test_otel" not in str(item.path):
            item.add_marker(skip)



@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The shared server, emptied before the test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.client().flushall()
    yield redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own (for tests that stop or restart it)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
