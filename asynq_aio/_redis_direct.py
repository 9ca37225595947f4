"""Batches of script calls written straight onto a pooled redis-py connection: the hot path's shortcut.

Every task costs a few script calls (enqueue, dequeue, ack), sent in batches. redis-py's pipeline
spends more on each of them than Redis does: it encodes every argument in Python, keeps a command
stack, applies a response callback per reply and records observability data per command; a profile
of a worker draining no-op tasks put 17% of its CPU in argument packing alone. Script calls need none
of that: hiredis packs a whole batch in one C call and a script's reply takes no callback. Everything
else about the connection (connecting, AUTH, TLS, RESP version, timeouts, pooling, health) is still
redis-py's, through the connection objects it pools.

The redis-py internals this relies on, and the only place that touches them: a client's
``connection_pool.get_connection()/release()`` (single Redis, Sentinel master), a cluster node's
``acquire_connection()/release()``, and a connection's ``send_packed_command()/read_response()``,
which disconnect the connection themselves on a timeout, a lost connection or a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection

from asynq_aio._redis_ops import EncodableArg

Command = tuple[EncodableArg, ...]


async def send_batch(
    client: Redis | RedisCluster, commands: Sequence[Command], route: Sequence[str]
) -> list[Any]:
    """Send ``commands`` (script calls: their replies need no callback) and return one reply per
    command, in order; a command's error reply (NOSCRIPT, MOVED, a script error) is returned in its
    slot as redis-py's exception. ``route[i]`` is a key of ``commands[i]``: in a cluster it picks the
    node, and each node's commands go in order on one connection, the nodes in parallel; a node that
    fails (lost connection, timeout) fills its own slots with the error and leaves the others'
    replies alone. Raises only when nothing was sent (no node for a slot, a pool with no room)."""
    if isinstance(client, Redis):
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        try:
            return await _exchange(conn, commands)
        finally:
            await pool.release(conn)
    if client._initialize:  # the slot map is loaded lazily, by the first command
        await client.initialize()
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i, key in enumerate(route):
        node = client.get_node_from_key(key)
        if node is None:
            raise rx.SlotNotCoveredError(f"no cluster node serves the slot of {key!r}")
        by_node.setdefault(node.name, (node, []))[1].append(i)
    groups = list(by_node.values())
    if len(groups) == 1:
        node, _ = groups[0]
        return await _on_node(node, commands)
    out: list[Any] = [None] * len(commands)
    answers = await asyncio.gather(
        *(_on_node(node, [commands[i] for i in at]) for node, at in groups), return_exceptions=True
    )
    for (_, at), answer in zip(groups, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer  # a cancellation is the caller's, not a node's failure
            answer = [answer] * len(at)
        for i, reply in zip(at, answer, strict=True):
            out[i] = reply
    return out


async def _on_node(node: ClusterNode, commands: Sequence[Command]) -> list[Any]:
    conn = node.acquire_connection()  # raises MaxConnectionsError when the node's pool is full
    try:
        return await _exchange(conn, commands)
    finally:
        node.release(conn)


async def _exchange(conn: AbstractConnection, commands: Sequence[Command]) -> list[Any]:
    """Write every command in one send, then read as many replies. A failure part-way leaves the
    connection disconnected (redis-py does that), so a later user never reads a stale reply."""
    # hiredis' stub types the argument as a 1-tuple; it takes a command of any length
    packed = [hiredis.pack_command(cmd) for cmd in commands]  # type: ignore[arg-type]
    await conn.send_packed_command(packed, check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except rx.ResponseError as exc:  # an error reply: the connection is fine, the next reply follows
            replies.append(exc)
    return replies
