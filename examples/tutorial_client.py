"""The client of Asynq's "Redis Cluster" tutorial, in Python: one task into each of three queues.

Each queue's keys share one hash tag (``asynq:{notifications}:...``), so each queue lives in one
cluster slot, on one master. Run it against the dev cluster (``make cluster-up``)::

    python -m examples.tutorial_client          # addresses from ASYNQ_CLUSTER_ADDRS
"""

from __future__ import annotations

import asyncio

from asynq_aio import Client, RedisClusterClientOpt, Task, TaskInfo
from examples.tutorial_worker import EmailPayload, ResizePayload, cluster_addrs


def show(info: TaskInfo) -> None:
    print(f"enqueued: id={info.id} queue={info.queue} type={info.type} state={info.state}")


async def main() -> None:
    async with Client(RedisClusterClientOpt(addrs=cluster_addrs())) as client:
        # A pydantic model is sent as JSON by alias: {"to":123,"from":456}.
        email = Task("notifications:email", EmailPayload(to=123, from_=456))
        show(await client.enqueue(email, queue="notifications"))

        # Plain dicts work too: compact JSON, as Go's json.Marshal writes it.
        webhook = Task("webhooks:sync", {"data": 123})
        show(await client.enqueue(webhook, queue="webhooks"))

        resize = Task("images:resize", ResizePayload(src_url="https://example.com/myassets/image.jpg"))
        show(await client.enqueue(resize, queue="images"))


if __name__ == "__main__":
    asyncio.run(main())
