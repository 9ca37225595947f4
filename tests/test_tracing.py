"""Enqueue hooks on the Client, and OpenTelemetry trace context carried from enqueue to handler
through the task headers, on a single Redis and on the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import RedisTarget

from asynq_aio import Client, Inspector, RedisClusterClientOpt, Task, parse_redis_url
from asynq_aio.client import OutgoingTask
from asynq_aio.connection import RedisConnOpt
from asynq_aio.errors import TaskIDConflictError

pytestmark = pytest.mark.anyio


def opt_for(t: RedisTarget) -> RedisConnOpt:
    if t.kind == "single":
        assert t.url is not None
        return parse_redis_url(t.url)
    assert t.addrs is not None
    return RedisClusterClientOpt(addrs=t.addrs)


async def test_enqueue_hooks_set_stored_headers_and_see_each_outcome(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    seen: list[tuple[str, str, str, str | None]] = []

    def hook(out: OutgoingTask) -> Iterator[None]:
        out.headers["x-hook"] = f"{out.queue}/{out.task_id}"
        try:
            yield
        except Exception as exc:
            seen.append((out.task.type, out.queue, out.task_id, type(exc).__name__))
            raise
        seen.append((out.task.type, out.queue, out.task_id, None))

    opt = opt_for(redis_target)
    async with Client(opt, enqueue_hooks=[contextmanager(hook)]) as client, Inspector(opt) as insp:
        task = Task("hook:one", b"x", headers={"keep": "me"})
        info = await client.enqueue(task, queue=unique_queue, task_id="fixed-id")
        assert task.headers == {"keep": "me"}  # the caller's Task is not changed
        assert info.headers == {"keep": "me", "x-hook": f"{unique_queue}/fixed-id"}
        stored = await insp.get_task_info(unique_queue, "fixed-id")
        assert stored.headers == info.headers
        with pytest.raises(TaskIDConflictError):
            await client.enqueue(Task("hook:dup"), queue=unique_queue, task_id="fixed-id")
        results = await client.enqueue_many([Task("hook:a"), Task("hook:b")], queue=unique_queue)
    assert seen[:2] == [
        ("hook:one", unique_queue, "fixed-id", None),
        ("hook:dup", unique_queue, "fixed-id", "TaskIDConflictError"),
    ]
    ids = []
    for r in results:
        assert not isinstance(r, Exception)
        assert r.headers == {"x-hook": f"{unique_queue}/{r.id}"}
        ids.append(r.id)
    assert seen[2:] == [("hook:a", unique_queue, ids[0], None), ("hook:b", unique_queue, ids[1], None)]
