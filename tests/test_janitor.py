"""The janitor bounds the archive of tasks the server itself archived (Asynq leaves their hashes)."""

from __future__ import annotations

import time

import anyio
import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import Client, Config, ServeMux, Server, SkipRetry, Task
from asynq_aio.protocol import archive
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio

DAY = 86_400


async def test_janitor_trims_old_and_excess_archived_tasks_with_their_hashes(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "ARCHIVE_MAX", 2)
    qk = queue_keys(unique_queue)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with Client(opt) as client:
        ids = [(await client.enqueue(Task("doomed", b"x"), queue=unique_queue)).id for _ in range(5)]

    mux = ServeMux()

    async def doomed(task: Task) -> None:
        raise SkipRetry("archive me")

    mux.handle_func("doomed", doomed)

    async def archived_count() -> bool:
        return int(await raw.cmd("ZCARD", qk.archived)) == 5

    # A long janitor interval while the tasks get archived; the check below runs a second server.
    cfg = Config(queues={unique_queue: 1}, janitor_interval=3600)
    async with Server(opt, cfg).serve(mux):
        await wait_until(archived_count, 15, what="5 archived tasks")

    # Two of them archived 91 days ago; of the other three only the newest two may stay.
    now = time.time()
    for i, task_id in enumerate(ids):
        score = now - 91 * DAY if i < 2 else now - (10 - i)
        await raw.cmd("ZADD", qk.archived, "XX", score, task_id)

    async def trimmed() -> bool:
        return int(await raw.cmd("ZCARD", qk.archived)) == 2

    async with Server(opt, Config(queues={unique_queue: 1}, janitor_interval=0.1)).serve(mux):
        await wait_until(trimmed, 15, what="archive trimmed to 2")
        await anyio.sleep(0.3)  # further rounds leave the kept tasks alone

    kept = sorted(
        x.decode() if isinstance(x, bytes) else str(x) for x in await raw.cmd("ZRANGE", qk.archived, 0, -1)
    )
    assert kept == sorted(ids[3:])
    for task_id in ids[:3]:
        assert int(await raw.cmd("EXISTS", qk.task(task_id))) == 0, task_id
    for task_id in ids[3:]:
        assert (await raw.cmd("HGET", qk.task(task_id), "state")) in (b"archived", "archived")
