"""A pub/sub subscription that outlives its connection: re-subscribes after a loss, on another node.

Kept apart from the transport because a subscription is not a call: it holds a connection of its own
for as long as it runs and has its own loop (re-subscribe forever), not the transport's time-bounded
retry loop. redis-py's classic pub/sub stays pinned to the node it picked, even a dead one; in a
cluster, classic PUBLISH reaches every node, so after a failure any other live node will do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from asynq_aio._connection import RedisClient, RetryPolicy
from asynq_aio.protocol._redis.errors import is_transient
from asynq_aio.protocol._redis.redispy import ensure_slot_map

log = logging.getLogger("asynq_aio.transport")  # the transport's logger: one switch for both


async def subscribe(
    client: RedisClient,
    channel: str,
    *,
    retry: RetryPolicy,
    description: str,
    on_node: Callable[[str | None], None],
) -> AsyncIterator[bytes]:
    """Yield messages published on ``channel`` forever, re-subscribing after connection loss.

    ``on_node`` is told where the subscription is (a cluster node's name, ``description`` for a
    single server) each time it (re)subscribes, and None when it is lost. In a cluster, a
    re-subscription avoids the nodes that failed since the last success.
    """
    attempt = 0
    avoid: set[str] = set()
    while True:
        pubsub: Any
        node = None  # set once a node is picked: a failure before that avoids none
        try:
            if isinstance(client, RedisCluster):
                await ensure_slot_map(client)
                nodes = [n for n in client.get_nodes() if n.name not in avoid] or list(client.get_nodes())
                node = random.choice(nodes)
                pubsub = client.pubsub(node=node)
            else:
                pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                on_node(node.name if node is not None else description)
                attempt = 0
                avoid.clear()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        data = msg["data"]
                        yield data if isinstance(data, bytes) else str(data).encode()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
        except Exception as exc:
            on_node(None)
            if not is_transient(exc):
                raise
            if node is not None:
                avoid.add(node.name)
            log.warning("subscription to %s lost, re-subscribing: %s", channel, exc)
            await asyncio.sleep(retry.delay(attempt) + 0.05)
            attempt = min(attempt + 1, 10)
