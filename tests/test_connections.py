"""Every way to reach Redis: URLs, an existing client, and Sentinel (real sentinel process)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
from redis.asyncio import Redis

from asynq_aio import (
    Client,
    ClusterNotReadyError,
    Config,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisSentinelOpt,
    RetryPolicy,
    ServeMux,
    Server,
    Task,
    parse_redis_url,
)
from asynq_aio._connection import InvalidRedisURL
from asynq_aio._devcluster import find_free_port_base, find_redis_server
from asynq_aio.protocol.keys import queue_keys


def test_parse_urls() -> None:
    single = parse_redis_url("redis://user:p%40ss@10.0.0.1:6380/3")
    assert isinstance(single, RedisClientOpt)
    assert (single.addr, single.db, single.username, single.password) == ("10.0.0.1:6380", 3, "user", "p@ss")
    assert single.tls is None
    tls = parse_redis_url("rediss://h:6390/0?ssl_cert_reqs=none")
    assert isinstance(tls, RedisClientOpt) and tls.tls is not None and tls.tls.cert_reqs == "none"
    cluster = parse_redis_url("redis-cluster://a:7000,b:7001")
    assert isinstance(cluster, RedisClusterClientOpt) and cluster.addrs == ["a:7000", "b:7001"]
    sentinel = parse_redis_url("redis-sentinel://s1:26379,s2:26379/2?master=mymaster")
    assert isinstance(sentinel, RedisSentinelOpt)
    assert (sentinel.master_name, sentinel.sentinel_addrs, sentinel.db) == (
        "mymaster",
        ["s1:26379", "s2:26379"],
        2,
    )
    assert parse_redis_url("redis://localhost").addr == "localhost:6379"  # type: ignore[union-attr]
    for bad in ("http://x:1", "redis://h:1/notanumber", "redis-sentinel://s:1/0", "redis://a:1,b:2"):
        with pytest.raises(InvalidRedisURL):
            parse_redis_url(bad)


def test_address_map_needs_host_port_on_both_sides() -> None:
    opt = RedisClusterClientOpt(addrs=["127.0.0.1:17000"], address_map={"10.0.0.5:6379": "127.0.0.1:17000"})
    assert opt.address_map == {"10.0.0.5:6379": "127.0.0.1:17000"}
    for bad in ({"10.0.0.5": "127.0.0.1:17000"}, {"10.0.0.5:6379": "127.0.0.1:port"}):
        with pytest.raises(ValueError, match="expected host:port"):
            RedisClusterClientOpt(addrs=["127.0.0.1:17000"], address_map=bad)


@pytest.mark.anyio
async def test_existing_client_is_borrowed_not_closed(single_redis_url: str, unique_queue: str) -> None:
    rc = Redis.from_url(single_redis_url)
    try:
        async with Client(rc) as client:
            info = await client.enqueue(Task("t:borrowed", b"x"), queue=unique_queue)
        # the caller's client still works after the asynq-aio Client closed
        assert await rc.exists(queue_keys(unique_queue).task(info.id)) == 1
    finally:
        await rc.delete(queue_keys(unique_queue).task(info.id), queue_keys(unique_queue).pending)
        await rc.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ping(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no PING answer on {port}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real master plus one sentinel (redis-server --sentinel) monitoring it as ``mymaster``."""
    binary = find_redis_server()
    base: Path = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [binary, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait_ping(master_port)
        conf = base / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {base}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        )
        procs.append(
            subprocess.Popen(
                [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        _wait_ping(sentinel_port)
        yield ("127.0.0.1", sentinel_port)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.mark.anyio
async def test_sentinel_enqueue_and_process(sentinel: tuple[str, int], unique_queue: str) -> None:
    host, port = sentinel
    opt = RedisSentinelOpt(master_name="mymaster", sentinel_addrs=[f"{host}:{port}"])
    seen: list[bytes] = []
    mux = ServeMux()

    async def handle(task: Task) -> None:
        seen.append(task.payload)

    mux.handle_func("t:sentinel", handle)
    async with Client(opt) as client:
        await client.enqueue(Task("t:sentinel", {"via": "sentinel"}), queue=unique_queue)
        server = Server(opt, Config(concurrency=2, queues={unique_queue: 1}))
        async with server.serve(mux):
            with anyio.fail_after(10):
                while not seen:
                    await anyio.sleep(0.05)
    assert seen == [b'{"via":"sentinel"}']


@pytest.mark.anyio
async def test_cluster_that_is_not_ok_gives_a_clear_error(tmp_path: Path) -> None:
    """A cluster-enabled node with no slots assigned reports cluster_state:fail."""
    port = find_free_port_base(1)  # its cluster bus needs port + 10000 free (and below 65536) too
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ping(port)
        server = Server(
            RedisClusterClientOpt(addrs=[f"127.0.0.1:{port}"]),
            Config(queues={"q": 1}),
            retry=RetryPolicy(budget=1),
        )
        with pytest.raises(ClusterNotReadyError, match=f"127.0.0.1:{port}.*not ready"):
            async with server.serve(ServeMux()):
                pass
    finally:
        proc.terminate()
        proc.wait(10)
