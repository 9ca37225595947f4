"""Shared fixtures: real Redis servers only, started here when the machine does not already run them.

A missing ``redis-server`` fails the session loudly instead of skipping: a green run that
silently skipped every Redis test would prove nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from workerproc import RawRedis, conn_opt

from asynq_aio import Client, Inspector, RedisConnOpt
from asynq_aio.testing import LocalCluster, _pings, local_redis

# The project's own pytest plugin (also registered by its entry point; named the same, so it loads
# once): its throwaway servers back the fixtures below.
pytest_plugins = ["asynq_aio.testing"]

_SYSTEM_REDIS = ("127.0.0.1", 6379)
_TEST_DB = 15


#: What ``redis_cluster`` yields: the plugin's LocalCluster (seed addresses, and the DevCluster for
#: the chaos helpers).
RunningCluster = LocalCluster


@dataclass(frozen=True)
class RedisTarget:
    """One Redis deployment a test runs against: ``url`` for "single", ``addrs`` for "cluster"."""

    kind: str
    url: str | None
    addrs: list[str] | None


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_cluster(asynq_devcluster: LocalCluster) -> LocalCluster:
    """A 6-node cluster (3 masters + 3 replicas) on free ports: the project's own pytest plugin's
    ``asynq_devcluster`` (asynq_aio.testing), the one cluster the whole session shares. A missing
    ``redis-server`` fails the session with install hints, never skips."""
    return asynq_devcluster


@pytest.fixture(scope="session")
def single_redis_url() -> Iterator[str]:
    """DB 15 of the Redis on 6379 if one answers, else of a throwaway redis-server on a free port
    (the plugin's ``local_redis``).

    DB 15 is never flushed: several pytest sessions (a developer's and CI's, or parallel runs) may
    share it, and a flush would delete another session's tasks mid-test. Every test uses its own
    queue names instead.
    """
    if _pings(*_SYSTEM_REDIS):
        host, port = _SYSTEM_REDIS
        yield f"redis://{host}:{port}/{_TEST_DB}"
        return
    with local_redis() as server:
        yield f"redis://{server.host}:{server.port}/{_TEST_DB}"


@pytest.fixture(params=["single", "cluster"], ids=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Run the test once on a single Redis and once on the cluster; each starts only when needed."""
    if request.param == "single":
        return RedisTarget(kind="single", url=request.getfixturevalue("single_redis_url"), addrs=None)
    running: RunningCluster = request.getfixturevalue("redis_cluster")
    return RedisTarget(kind="cluster", url=None, addrs=list(running.addrs))


@pytest.fixture
def unique_queue() -> str:
    """A fresh queue name per test, so tests never see each other's tasks."""
    return f"t_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(redis_target: RedisTarget) -> AsyncIterator[Client]:
    """A Client on the current ``redis_target``."""
    async with Client(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as c:
        yield c


@pytest.fixture
def opt(redis_target: RedisTarget) -> RedisConnOpt:
    """The connection options of the current ``redis_target``."""
    return conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)


@pytest.fixture
async def inspector(opt: RedisConnOpt) -> AsyncIterator[Inspector]:
    """An Inspector on the current ``redis_target``."""
    async with Inspector(opt) as insp:
        yield insp


@pytest.fixture
async def raw(redis_target: RedisTarget) -> AsyncIterator[RawRedis]:
    """Plain redis-py on the current ``redis_target``, to check storage without the library."""
    r = RawRedis(redis_target.kind, redis_target.url, redis_target.addrs)
    try:
        yield r
    finally:
        await r.aclose()
