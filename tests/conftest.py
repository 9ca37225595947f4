"""Shared fixtures: real Redis servers only, started here when the machine does not already run them.

A missing ``redis-server`` fails the session loudly instead of skipping: a green run that
silently skipped every Redis test would prove nothing.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from workerproc import RawRedis, conn_opt

from asynq_aio import Client
from asynq_aio._devcluster import DevCluster, find_free_port_base, find_redis_server

_SYSTEM_REDIS = ("127.0.0.1", 6379)
_TEST_DB = 15


@dataclass(frozen=True)
class RunningCluster:
    """What ``redis_cluster`` yields: the seed addresses and the DevCluster for chaos helpers."""

    addrs: list[str]
    cluster: DevCluster


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
def redis_cluster() -> Iterator[RunningCluster]:
    """A 6-node cluster (3 masters + 3 replicas) on free ports away from the 7000s of a dev cluster."""
    find_redis_server()  # raises RedisServerNotFound with install hints: fail, never skip
    base_dir = Path(tempfile.mkdtemp(prefix="asynq-aio-cluster-"))
    base = find_free_port_base(6)
    cluster = DevCluster(base_dir, ports=range(base, base + 6), appendonly=False)

    def cleanup() -> None:
        cluster.stop(remove_data=True)
        shutil.rmtree(base_dir, ignore_errors=True)

    # atexit covers an interpreter exit that skips fixture teardown (e.g. pytest -x on an
    # internal error); stop() is idempotent, so running both is harmless.
    atexit.register(cleanup)
    try:
        cluster.start()
        yield RunningCluster(addrs=cluster.addrs, cluster=cluster)
    finally:
        cleanup()
        atexit.unregister(cleanup)


def _pings(host: str, port: int) -> bool:
    # No retries: redis-py's default backoff would spend seconds on a refused connection.
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def single_redis_url() -> Iterator[str]:
    """DB 15 of the Redis on 6379 if one answers, else of a throwaway redis-server on a free port.

    DB 15 is never flushed: several pytest sessions (a developer's and CI's, or parallel runs) may
    share it, and a flush would delete another session's tasks mid-test. Every test uses its own
    queue names instead.
    """
    proc: subprocess.Popen[bytes] | None = None
    data_dir: str | None = None
    if _pings(*_SYSTEM_REDIS):
        host, port = _SYSTEM_REDIS
    else:
        host, port = "127.0.0.1", find_free_port_base(1)
        data_dir = tempfile.mkdtemp(prefix="asynq-aio-redis-")
        proc = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"],
            cwd=data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        if proc is not None:
            _wait_ping(host, port, proc)
        yield f"redis://{host}:{port}/{_TEST_DB}"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ping(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:

    deadline = time.monotonic() + timeout
    while not _pings(host, port):
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on port {port} did not answer PING in {timeout:.0f}s")
        time.sleep(0.05)


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
async def raw(redis_target: RedisTarget) -> AsyncIterator[RawRedis]:
    """Plain redis-py on the current ``redis_target``, to check storage without the library."""
    r = RawRedis(redis_target.kind, redis_target.url, redis_target.addrs)
    try:
        yield r
    finally:
        await r.aclose()
