"""Config hooks with Asynq's meanings: retry_delay_func, is_failure, error_handler, health_check_func."""

from __future__ import annotations

import time

import anyio
import pytest
from conftest import RedisTarget

from asynq_aio import Client, Config, RedisClusterClientOpt, ServeMux, Server, Task, parse_redis_url
from asynq_aio._connection import RedisConnOpt
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio


def opt_for(t: RedisTarget) -> RedisConnOpt:
    if t.kind == "single":
        assert t.url is not None
        return parse_redis_url(t.url)
    assert t.addrs is not None
    return RedisClusterClientOpt(addrs=t.addrs)


class Transient(Exception):
    pass


async def test_hooks_shape_retries_and_stats(redis_target: RedisTarget, unique_queue: str) -> None:
    opt = opt_for(redis_target)
    qk = queue_keys(unique_queue)
    reported: list[tuple[str, str]] = []
    health: list[Exception | None] = []

    async def on_error(task: Task, err: BaseException) -> None:
        reported.append((task.type, str(err)))

    mux = ServeMux()

    async def flaky(task: Task) -> None:
        raise Transient("upstream busy")

    mux.handle_func("hook:flaky", flaky)
    cfg = Config(
        concurrency=2,
        queues={unique_queue: 1},
        retry_delay_func=lambda n, err, task: 120.0 if isinstance(err, Transient) else 1.0,
        is_failure=lambda err: not isinstance(err, Transient),
        error_handler=on_error,
        health_check_func=health.append,
        health_check_interval=0.2,
    )
    async with Client(opt) as client:
        info = await client.enqueue(Task("hook:flaky", b"{}"), queue=unique_queue)
        before = time.time()
        async with Server(opt, cfg).serve(mux):
            with anyio.fail_after(15):
                while not await client._broker.transport.call("ZSCORE", qk.retry, info.id):
                    await anyio.sleep(0.05)
                while len(health) < 2:
                    await anyio.sleep(0.05)
        tr = client._broker.transport
        score = float(await tr.call("ZSCORE", qk.retry, info.id))
        assert before + 119 <= score <= time.time() + 121  # retry_delay_func's 120 s
        assert reported == [("hook:flaky", "upstream busy")]
        # is_failure said "not a failure": no stats counted for it
        assert await tr.call("GET", qk.failed) is None
        assert await tr.call("GET", qk.processed) is None
        assert all(h is None for h in health)
