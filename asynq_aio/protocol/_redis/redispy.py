"""The one module that touches redis-py's internals: each use is a small named function here.

redis-py's documented API does not cover everything the transport needs: whether a cluster client
has loaded its slot map, telling that map about a redirect seen on a connection of our own, waiting
for the disconnects it runs in the background, and writing a batch of script calls straight onto a
pooled connection (the hot path, see :func:`send_batch`). Those uses live here and nowhere else
(tests/test_public_api.py checks it), so that a redis-py upgrade has one file to check.

The internals relied on (redis-py 8.x, ``redis.asyncio``):

- ``RedisCluster._initialize``: the flag that says the slot map must be (re)loaded before the next
  command (:func:`slot_map_loaded`, :func:`ensure_slot_map`, :func:`mark_slot_map_stale`);
- ``RedisCluster.nodes_manager.move_slot(exc)``: patches the slot map after a MOVED reply
  (:func:`note_moved`);
- ``RedisCluster.nodes_manager._background_tasks``: the fire-and-forget disconnects of the nodes a
  topology refresh dropped (:func:`pending_background_disconnects`);
- ``RedisCluster.nodes_manager.connection_kwargs``: the keyword arguments every node's connections
  are made with (:func:`node_connection_kwargs`);
- ``RedisCluster.startup_nodes``: the seed nodes the client was given (:func:`seed_node_names`);
- ``Redis.connection_pool.connection_kwargs``: host, port and db of a single-node client
  (:func:`pool_connection_kwargs`);
- ``Sentinel.sentinels``: the clients of the Sentinel processes (:func:`sentinel_clients`);
- for :func:`send_batch`: a client's ``connection_pool.make_connection()`` and ``max_connections``
  (single Redis, Sentinel master: connections kept in a lane of our own), a cluster node's
  ``ClusterNode.acquire_connection()/release()``, and a connection's ``connect()``,
  ``can_read()``, ``socket_timeout``, ``_writer`` (its asyncio StreamWriter, written directly: see
  :func:`_send`) and ``read_response()``, which disconnects the connection itself on a timeout, a
  lost connection or a cancellation.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel

from asynq_aio.protocol._redis.ops import EncodableArg

Command = tuple[EncodableArg, ...]

# -- a cluster client's slot map and nodes ----------------------------------------------------------


def slot_map_loaded(client: RedisCluster) -> bool:
    """Whether the client has its slot map (it is loaded lazily, by the first command, and again
    after a lost node)."""
    # relies on RedisCluster._initialize: True until the map is loaded and whenever it must be reloaded
    return not client._initialize


async def ensure_slot_map(client: RedisCluster) -> None:
    """Load the slot map if the client does not have it yet, as redis-py's own command path does
    first; needed before routing a command ourselves with ``get_node_from_key``."""
    if not slot_map_loaded(client):
        await client.initialize()


def mark_slot_map_stale(client: RedisCluster) -> None:
    """Make the next command reload the slot map: what redis-py does after losing a node on its own
    command path, done for one of ours (a pipeline without redirections, a direct batch)."""
    # relies on RedisCluster._initialize being the flag initialize() and the command path check
    client._initialize = True


async def note_moved(client: RedisCluster, exc: rx.MovedError) -> None:
    """Patch the slot map after a MOVED reply seen outside redis-py's command path."""
    # relies on NodesManager.move_slot(), what redis-py's command path calls on MOVED
    await client.nodes_manager.move_slot(exc)


def pending_background_disconnects(client: RedisCluster) -> list[asyncio.Task[Any]]:
    """The disconnects of dropped nodes redis-py (8.x) still runs in fire-and-forget tasks: awaited
    on close, or their connections outlive the loop and the GC finds them open."""
    # relies on NodesManager._background_tasks (a set of tasks; absent in older redis-py: none then)
    return list(getattr(client.nodes_manager, "_background_tasks", ()))


def node_connection_kwargs(client: RedisCluster) -> dict[str, Any]:
    """The keyword arguments the client's node connections are made with (auth, TLS, timeouts), for a
    ClusterNode of our own to a node redis-py does not know yet."""
    # relies on NodesManager.connection_kwargs, what it passes to every ClusterNode it creates
    return dict(client.nodes_manager.connection_kwargs)


def seed_node_names(client: RedisCluster) -> list[str]:
    """``host:port`` of each seed node the client was given, for error messages."""
    # relies on RedisCluster.startup_nodes, the ClusterNodes built from its startup_nodes argument
    return [n.name for n in client.startup_nodes]


def pool_connection_kwargs(client: Redis) -> dict[str, Any]:
    """The keyword arguments of a single-node client's connections (``host``, ``port``, ``db``; none
    of them for a master found through Sentinel)."""
    # relies on ConnectionPool.connection_kwargs, what the pool passes to every connection it makes
    return dict(client.connection_pool.connection_kwargs)


def sentinel_clients(sentinel: Sentinel) -> list[Redis]:
    """The clients of the Sentinel processes behind ``sentinel``, to close with the master client."""
    # relies on Sentinel.sentinels, the Redis clients it builds from its sentinel addresses
    return list(sentinel.sentinels)


# -- script batches straight onto a pooled connection: the hot path -----------------------------------
#
# Every task costs a few script calls (enqueue, dequeue, ack), sent in batches. redis-py's pipeline
# spends more on each of them than Redis does: it encodes every argument in Python, keeps a command
# stack, applies a response callback per reply and records observability data per command; a profile
# of a worker draining no-op tasks put 17% of its CPU in argument packing alone. Script calls need
# none of that: hiredis packs a whole batch in one C call and a script's reply takes no callback.
# Everything else about the connection (connecting, AUTH, TLS, RESP version, timeouts, pooling,
# health) is still redis-py's, through the connection objects it pools.


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
        lane = _lanes.get(client)
        if lane is None:
            lane = _lanes[client] = _DirectLane(client)
        conn = await lane.acquire()
        try:
            return await _exchange(conn, commands)
        finally:
            lane.release(conn)
    await ensure_slot_map(client)
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


class _DirectLane:
    """The connections a single Redis client's (or a Sentinel master's) script batches go on.

    They are made by the client's pool, so they connect, authenticate and time out as its own do,
    but are kept here rather than borrowed from the pool for each batch: redis-py's blocking pool
    spends ~30 us per borrow and return on its condition, lock, health probe and observability
    counters, an eighth of a whole enqueue. A cluster node's pool is a plain list already.

    A connection that sat idle for over :data:`IDLE_PROBE_S` is probed for a closed socket or
    unread data before reuse, as the pool would probe it every time; a dead one is dropped there and
    the next send reconnects, so a restart of Redis costs no failed call."""

    IDLE_PROBE_S = 1.0

    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        # relies on ConnectionPool.max_connections: the lane holds no more connections than the pool may
        self._room = asyncio.Semaphore(self._pool.max_connections)
        self._idle: list[tuple[AbstractConnection, float]] = []
        self._made: list[AbstractConnection] = []

    async def acquire(self) -> AbstractConnection:
        await self._room.acquire()
        if self._idle:
            conn, since = self._idle.pop()
        else:
            # relies on ConnectionPool.make_connection(): a connection with the pool's own settings
            conn, since = self._pool.make_connection(), time.monotonic()  # type: ignore[no-untyped-call]
            self._made.append(conn)
        try:
            if conn.is_connected and time.monotonic() - since > self.IDLE_PROBE_S:
                try:
                    # relies on Connection.can_read(): data waiting on an idle connection, or an
                    # error for a socket the server closed
                    stale = await conn.can_read()
                except (rx.ConnectionError, rx.TimeoutError, OSError):
                    stale = True
                if stale:
                    await conn.disconnect()
            if not conn.is_connected:
                # connect() (not the send's own reconnect) is what finds a Sentinel's current master
                await conn.connect()  # type: ignore[no-untyped-call]
            return conn
        except BaseException:
            # back to the idle list, unconnected: a Redis that is down for a while must not make the
            # lane a new connection object on every failed attempt
            self.release(conn)
            raise

    def release(self, conn: AbstractConnection) -> None:
        self._idle.append((conn, time.monotonic()))
        self._room.release()

    async def aclose(self) -> None:
        made, self._made, self._idle = self._made, [], []
        for conn in made:
            await conn.disconnect()


#: Each single-node client's lane, made on its first batch and closed with its transport.
_lanes: weakref.WeakKeyDictionary[Redis, _DirectLane] = weakref.WeakKeyDictionary()


async def close_direct_lane(client: Redis) -> None:
    """Close the connections the client's script batches used (its pool does not know them)."""
    lane = _lanes.pop(client, None)
    if lane is not None:
        await lane.aclose()


async def _on_node(node: ClusterNode, commands: Sequence[Command]) -> list[Any]:
    # relies on ClusterNode.acquire_connection()/release(): a connection of the node's own pool
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
    await _send(conn, packed)
    # relies on Connection.read_response(), which disconnects on any failure
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except rx.ResponseError as exc:  # an error reply: the connection is fine, the next reply follows
            replies.append(exc)
    return replies


async def _send(conn: AbstractConnection, packed: list[bytes]) -> None:
    """Write packed commands onto ``conn``, connecting it first if needed.

    redis-py's ``send_packed_command`` runs every write under ``asyncio.wait_for``, which makes a
    new task per write: ~25 us of a one-caller enqueue's ~190 us. The write itself does not wait
    (the transport sends at once or buffers); only a drain of a full buffer can, and that one runs
    under the socket timeout here. Any failure disconnects the connection, as redis-py's does, so
    no later user reads a stale reply."""
    if not conn.is_connected:
        await conn.connect()  # type: ignore[no-untyped-call]
    # relies on Connection._writer (an asyncio StreamWriter, set while connected)
    writer: asyncio.StreamWriter | None = conn._writer
    try:
        if writer is None or writer.transport.is_closing():
            raise rx.ConnectionError("Connection closed by the server before write")
        writer.writelines(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
    except BaseException as exc:
        lost = writer is not None and writer.transport.is_closing()
        if writer is not None:
            # abort, not close: a close would wait to flush what could not be written
            writer.transport.abort()
        await conn.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):
            raise rx.TimeoutError("Timeout writing to socket") from None
        if isinstance(exc, OSError):
            raise rx.ConnectionError(f"Error while writing to socket: {exc}") from exc
        if isinstance(exc, TypeError | AttributeError) and lost:
            # Python 3.12, 3.13 before 3.13.10 and 3.14.0 raise these from a transport that was lost
            # mid-write (CPython gh-136234), as redis-py's own write path notes
            raise rx.ConnectionError("Connection closed by the server while writing") from exc
        raise
