"""A worker process for crash-recovery tests, plus small helpers the Redis tests share.

Run as a script, it serves one queue with a handler that marks the task as started, counts the run,
and then sleeps far longer than any test waits, so that the test can SIGKILL it mid-task::

    python tests/workerproc.py --queue Q (--url redis://... | --cluster h:p,h:p) \
        --lease 2 --heartbeat 0.5 --recovery 0.5

Imported by the tests, it provides ``conn_opt`` (connection options for a RedisTarget), ``RawRedis``
(an independent redis-py client to inspect keys), ``wait_until`` and the marker key names.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from asynq_aio import (
    ConcurrencyLimit,
    Config,
    RedisClusterClientOpt,
    ServeMux,
    Server,
    Task,
    current_task,
    parse_redis_url,
)
from asynq_aio._connection import RedisConnOpt

__all__ = ["RawRedis", "conn_opt", "done_key", "runs_key", "started_key", "wait_until"]


def conn_opt(kind: str, url: str | None, addrs: list[str] | None) -> RedisConnOpt:
    """Connection options for a single Redis (by URL) or a cluster (by seed addresses)."""
    if kind == "single":
        assert url is not None
        return parse_redis_url(url)
    assert addrs is not None
    return RedisClusterClientOpt(addrs=addrs)


def started_key(queue: str) -> str:
    return f"test:{{{queue}}}:started"


def runs_key(queue: str) -> str:
    return f"test:{{{queue}}}:runs"


def done_key(queue: str) -> str:
    return f"test:{{{queue}}}:done"


def q(queue: str) -> Callable[[str], str]:
    """Key builder written out by hand from PROTOCOL.md (not the library's keys module)."""
    return lambda suffix: f"asynq:{{{queue}}}:{suffix}"


class RawRedis:
    """A plain redis-py client (single or cluster), independent of asynq-aio, for inspecting keys."""

    def __init__(self, kind: str, url: str | None, addrs: list[str] | None) -> None:
        self._client: Redis | RedisCluster
        if kind == "single":
            assert url is not None
            self._client = Redis.from_url(url)
        else:
            assert addrs is not None
            nodes = [ClusterNode(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addrs]
            self._client = RedisCluster(startup_nodes=nodes)

    async def cmd(self, *args: Any) -> Any:
        return await self._client.execute_command(*args)

    async def aclose(self) -> None:
        await self._client.aclose()


async def wait_until(
    cond: Callable[[], Awaitable[bool]], timeout: float, *, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``cond`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond!r}")
        await anyio.sleep(interval)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queue", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="redis:// URL of a single Redis")
    target.add_argument("--cluster", help="comma-separated host:port seeds of a Redis Cluster")
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--recovery", type=float, default=0.5)
    p.add_argument("--sleep", type=float, default=3600.0, help="how long the handler sleeps")
    p.add_argument("--cap", type=int, default=0, help="a ConcurrencyLimit on the queue (0 = none)")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    kind = "single" if args.url else "cluster"
    opt = conn_opt(kind, args.url, args.cluster.split(",") if args.cluster else None)
    queue: str = args.queue
    marker = RawRedis(kind, args.url, args.cluster.split(",") if args.cluster else None)

    async def handler(task: Task) -> None:
        await marker.cmd("INCR", runs_key(queue))
        await marker.cmd("SET", started_key(queue), current_task().id)
        await anyio.sleep(args.sleep)
        await marker.cmd("SET", done_key(queue), "worker")

    mux = ServeMux()
    mux.handle_func("recover:", handler)
    server = Server(
        opt,
        Config(
            concurrency=args.cap + 2 if args.cap else 2,
            queues={queue: 1},
            limits=[ConcurrencyLimit(queue=queue, limit=args.cap)] if args.cap else [],
            lease_duration=args.lease,
            heartbeat_interval=args.heartbeat,
            recovery_interval=args.recovery,
            recovery_skew=0.0,
            retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
            forward_interval=0.2,
            shutdown_timeout=0.5,
        ),
    )
    try:
        await server.run(mux)
    finally:
        await marker.aclose()


def main(argv: list[str] | None = None) -> None:
    anyio.run(_serve, _parse_args(argv))


if __name__ == "__main__":
    main()
