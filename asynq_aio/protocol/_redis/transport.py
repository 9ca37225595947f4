"""How every call reaches redis-py: the retry loop, commands, script batches, pipelines with WAIT,
readiness and cluster topology reads.

Clients are built in clients.py; script batches are written onto redis-py's pooled connections by
redispy.send_batch (the hot path), which is also where every other redis-py internal used here is
read or written; subscriptions are pubsub.py's. Everything else goes through redis-py's own client
here.

redis-py 8.1's async cluster client re-sends commands on its own after connection errors, ignores its
backoff, gives TRYAGAIN ~0.4 s, fails instead of waiting for a pooled connection and leaves classic
pub/sub pinned to a dead node (see shared/notes/redis-py-cluster.md). So the clients are built with
their own retries switched off and every call goes through :meth:`Transport._retrying`, which retries
the transient errors of a cluster (connection loss, failover, MOVED/ASK/TRYAGAIN during resharding)
with bounded, jittered backoff until a time budget runs out. The enqueue and worker scripts are
fenced (docs/reliability.md): re-sending one after an ambiguous failure stores or takes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._errors import ClusterNotReadyError, RedisAuthError, RedisUnavailableError
from asynq_aio.protocol._redis import pubsub
from asynq_aio.protocol._redis.clients import build_client, describe_client
from asynq_aio.protocol._redis.errors import (
    auth_failure,
    cluster_node_error,
    cluster_not_ok,
    config_mistake,
    is_transient,
)
from asynq_aio.protocol._redis.ops import EncodableArg, LuaScript, Op
from asynq_aio.protocol._redis.redispy import (
    close_direct_lane,
    ensure_slot_map,
    mark_slot_map_stale,
    node_connection_kwargs,
    note_moved,
    pending_background_disconnects,
    pool_connection_kwargs,
    seed_node_names,
    send_batch,
)

__all__ = ["Transport"]

log = logging.getLogger("asynq_aio.transport")

T = TypeVar("T")


class Transport:
    """Owns a redis-py client and runs commands, scripts and batches on it with the retry policy."""

    def __init__(
        self,
        client: RedisClient,
        *,
        description: str,
        owns_client: bool = True,
        retry: RetryPolicy | None = None,
        max_inflight: int = 128,
        max_block: float | None = None,
    ) -> None:
        self.client = client
        # a blocking wait must end before the client's read timeout, or it fails as a lost reply
        self.max_block = max_block
        self.is_cluster = isinstance(client, RedisCluster)
        self.description = description
        self._owns_client = owns_client
        self.retry = retry or RetryPolicy()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._closed = False
        self._also_close: list[Redis] = []  # e.g. the Sentinel connections behind a master client
        self.subscribed_node: str | None = None  # where the pub/sub connection is, for operators
        self._single_node_checked = False  # check_ready found the server is not a cluster node

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, opt: RedisConnOpt | RedisClient, *, retry: RetryPolicy | None = None, blocking_waits: int = 0
    ) -> Transport:
        """Build a transport from options (it owns the client) or wrap a caller's client (it does not).
        ``blocking_waits``: how many blocking waits may run at once (a worker's queue watchers), for
        which the connection pool makes room beyond its in-flight limit."""
        if isinstance(opt, Redis | RedisCluster):
            return cls(opt, description=describe_client(opt), owns_client=False, retry=retry)
        built = build_client(opt, blocking_waits=blocking_waits)
        transport = cls(
            built.client,
            description=opt.describe(),
            owns_client=True,
            retry=retry,
            max_inflight=built.max_inflight,
            max_block=opt.read_timeout / 2,
        )
        transport._also_close = built.also_close
        return transport

    async def aclose(self) -> None:
        """Close the client (and any Sentinel connections behind it) if this transport built it; a borrowed
        client is left open. A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if isinstance(self.client, Redis):
            await close_direct_lane(self.client)  # its connections are ours, even on a borrowed client
        if not self._owns_client:
            return
        if isinstance(self.client, Redis):
            # the pool was passed in explicitly, so Redis would otherwise leave it open
            await self.client.aclose(close_connection_pool=True)
        else:
            await self.client.aclose()
            # redis-py (8.x) disconnects the nodes a topology refresh dropped in fire-and-forget
            # tasks; wait for them, or their connections outlive the loop and the GC finds them open
            dropping = pending_background_disconnects(self.client)
            if dropping:
                await asyncio.wait(dropping, timeout=1.0)
        for extra in self._also_close:
            await extra.aclose(close_connection_pool=True)

    # -- the retry loop -----------------------------------------------------------------------------

    async def _retrying(self, what: str, attempt_fn: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.retry.budget
        attempt = 0
        while True:
            try:
                return await attempt_fn()
            except Exception as exc:
                if (mistake := config_mistake(exc, cluster=self.is_cluster, addr=self._addr())) is not None:
                    raise mistake from None  # redis-py's own error adds nothing to the message
                if not is_transient(exc, cluster=self.is_cluster):
                    if (denied := auth_failure(exc, self.description, what)) is not None:
                        raise denied from exc
                    raise
                now = time.monotonic()
                if now >= deadline:
                    if cluster_not_ok(exc):
                        raise ClusterNotReadyError(
                            f"Redis Cluster at {self.description} is not ready (cluster_state is not "
                            f"ok: slots uncovered or a master down) after {self.retry.budget:.0f}s: {exc}"
                        ) from exc
                    raise RedisUnavailableError(
                        f"Redis at {self.description} unavailable for {self.retry.budget:.0f}s "
                        f"({what}): {type(exc).__name__}: {exc or 'no message'}"
                    ) from exc
                if attempt == 0 or attempt % 20 == 0:
                    log.warning(
                        "transient Redis error on %s, retrying: %s: %s", what, type(exc).__name__, exc
                    )
                await asyncio.sleep(min(self.retry.delay(attempt), max(0.0, deadline - now)))
                attempt += 1

    # -- commands -----------------------------------------------------------------------------------

    async def call(self, *args: EncodableArg) -> Any:
        """One command, retried on transient errors (use for idempotent commands only)."""

        async def attempt() -> Any:
            async with self._inflight:
                return await self.client.execute_command(*args)

        return await self._retrying(str(args[0]), attempt)

    async def call_on_node(self, node: ClusterNode, *args: EncodableArg) -> Any:
        """A command sent to one named cluster node (CLUSTER INFO, INFO, ...), not retried."""
        assert isinstance(self.client, RedisCluster)
        return await self.client.execute_command(*args, target_nodes=node)

    async def call_on_addr(self, host: str, port: int, role: str, *args: EncodableArg) -> Any:
        """A command sent to the cluster node at ``host:port``, not retried; a node redis-py does
        not know yet (a replica still syncing) is reached over a connection of its own."""
        assert isinstance(self.client, RedisCluster)
        node = self.client.get_node(host, port)
        if node is not None:
            return await self.call_on_node(node, *args)
        temp = ClusterNode(host, port, role, **node_connection_kwargs(self.client))
        try:
            return await self.call_on_node(temp, *args)
        finally:
            await temp.disconnect()

    async def scan_slot_of(self, key: str, pattern: str, *, count: int = 500) -> AsyncIterator[list[bytes]]:
        """SCAN MATCH on the server, or on the cluster node that holds ``key``'s slot (keys of one
        hash tag live there and nowhere else), in batches of key names."""
        cursor: Any = 0
        while True:
            if isinstance(self.client, RedisCluster):
                await ensure_slot_map(self.client)  # it is loaded lazily, by the first command
                node = self.client.get_node_from_key(key)
                if node is None:
                    raise RedisUnavailableError(f"no cluster node serves the slot of {key!r}")
                cursor_reply, keys = await self.call_on_node(
                    node, "SCAN", cursor, "MATCH", pattern, "COUNT", count
                )
                # redis-py answers a node-targeted SCAN as {node name: cursor}
                cursor = next(iter(cursor_reply.values())) if isinstance(cursor_reply, dict) else cursor_reply
            else:
                cursor, keys = await self.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            yield list(keys)
            if int(cursor) == 0:
                return

    async def script(self, script: LuaScript, keys: Sequence[str], args: Sequence[EncodableArg]) -> Any:
        """Run a Lua script by SHA, falling back to EVAL on a node whose cache lacks it
        (a promoted replica, a restarted node, a new node after resharding)."""
        return await self._script_op(Op.eval(script, keys, args))

    async def _script_op(self, op: Op) -> Any:
        assert op.script is not None
        script = op.script

        async def attempt() -> Any:
            async with self._inflight:
                if op.nkeys:
                    (reply,) = await self._send_direct([op], by_sha=True)
                    if isinstance(reply, rx.NoScriptError):
                        (reply,) = await self._send_direct([op], by_sha=False)
                    if isinstance(reply, Exception):
                        raise reply
                    return reply
                try:
                    return await self.client.execute_command(*op.wire())
                except rx.NoScriptError:
                    return await self.client.execute_command(*op.wire(by_sha=False))

        return await self._retrying(script.name, attempt)

    async def _send_direct(self, ops: Sequence[Op], *, by_sha: bool) -> list[Any]:
        """Script calls (each with a key to route by) through redispy.send_batch, past redis-py's
        per-command machinery. In a cluster, a redirect or a lost node seen here is told to redis-py's
        slot map, as its own command path would (the retry then goes to the right node)."""
        try:
            replies = await send_batch(
                self.client, [op.wire(by_sha=by_sha) for op in ops], [str(op.args[0]) for op in ops]
            )
        except Exception as exc:
            if self.is_cluster and is_transient(exc, cluster=True):
                await self._note_cluster_error(exc)
            raise
        if self.is_cluster:
            for r in replies:
                if isinstance(r, Exception) and is_transient(r, cluster=True):
                    await self._note_cluster_error(r)
                    break
        return replies

    async def batch(self, ops: Sequence[Op]) -> list[Any]:
        """Run many independent ops in one pipeline (split per node by redis-py in a cluster).

        Items that fail with NOSCRIPT (a node that has not seen the script yet) are re-sent in one
        more pipeline as EVAL; items that still fail transiently are re-run one by one, in order,
        through the retry loop. Order matters: the ops of one ``enqueue_many`` must reach their
        list in the caller's order. A permanent error is returned in its slot as the exception, so
        one bad item does not hide the others' results.
        """
        if not ops:
            return []
        results = await self._pipeline(ops, by_sha=True)
        noscript = [i for i, r in enumerate(results) if isinstance(r, rx.NoScriptError)]
        if noscript:
            again = await self._pipeline([ops[i] for i in noscript], by_sha=False)
            for i, r in zip(noscript, again, strict=True):
                results[i] = r
        for i, r in enumerate(results):
            if isinstance(r, Exception) and (is_transient(r) or isinstance(r, rx.NoScriptError)):
                try:
                    results[i] = await self.run_op(ops[i])
                except Exception as exc:
                    results[i] = exc
        return results

    async def _pipeline(self, ops: Sequence[Op], *, by_sha: bool) -> list[Any]:
        """One non-transactional pipeline; a transient failure of the whole send fills every slot."""
        try:
            async with self._inflight:
                if all(op.script is not None and op.nkeys for op in ops):
                    return await self._send_direct(ops, by_sha=by_sha)
                pipe = self.client.pipeline(transaction=False)
                for op in ops:
                    pipe.execute_command(*op.wire(by_sha=by_sha))
                return list(await pipe.execute(raise_on_error=False))
        except Exception as exc:
            if not is_transient(exc) and not isinstance(exc, rx.NoScriptError):
                raise
            return [exc] * len(ops)

    async def batch_then_wait(
        self, ops: Sequence[Op], route_keys: Sequence[str], replicas: int, timeout: float
    ) -> tuple[list[Any], int]:
        """Run ``ops``, then ``WAIT replicas timeout`` on the same connection of every node they went
        to. Returns the ops' replies and the fewest replicas that acknowledged them on any node.

        WAIT counts the replicas holding every write made *on its own connection*, so each node's ops
        and its WAIT travel in one pipeline (redis-py sends a node's share of a pipeline on one
        connection, in order); ``route_keys[i]`` names a key of ``ops[i]`` to find its node. A redirect,
        NOSCRIPT, lost connection or timeout re-runs the whole set through the retry loop: the scripts
        are safe to run twice, and a re-sent enqueue rewrites its own record, so the WAIT after it
        also covers a first write whose reply was lost. A permanent error stays in its op's slot.
        """
        timeout_ms = max(1, int(timeout * 1000))
        client = self.client

        async def send(by_sha: bool) -> list[Any]:
            if isinstance(client, RedisCluster):
                await ensure_slot_map(client)
                cpipe = client.pipeline(transaction=False)
                nodes: dict[str, ClusterNode] = {}
                for op, key in zip(ops, route_keys, strict=True):
                    node = client.get_node_from_key(key)
                    if node is None:
                        raise rx.SlotNotCoveredError(f"no node serves the slot of {key!r}")
                    nodes[node.name] = node
                    cpipe.execute_command(*op.wire(by_sha=by_sha), target_nodes=node)
                for node in nodes.values():
                    cpipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
                return list(await cpipe.execute(raise_on_error=False, allow_redirections=False))
            pipe = client.pipeline(transaction=False)
            for op in ops:
                pipe.execute_command(*op.wire(by_sha=by_sha))
            pipe.execute_command("WAIT", replicas, timeout_ms)
            return list(await pipe.execute(raise_on_error=False))

        async def attempt() -> tuple[list[Any], int]:
            async with self._inflight:
                results = await send(by_sha=True)
                if any(isinstance(r, rx.NoScriptError) for r in results[: len(ops)]):
                    results = await send(by_sha=False)  # the node lacks a script: nothing ran there
            for r in results:
                if isinstance(r, Exception) and is_transient(r):
                    await self._note_cluster_error(r)
                    raise r
            waits = results[len(ops) :]
            for w in waits:
                if isinstance(w, Exception):
                    raise w
            return results[: len(ops)], min(int(w) for w in waits)

        return await self._retrying("enqueue + WAIT", attempt)

    async def _note_cluster_error(self, exc: Exception) -> None:
        """What redis-py does after an error on its own command path, for a pipeline sent with
        ``allow_redirections=False``: patch the slot on MOVED, reload the topology after a lost node."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return
        if isinstance(exc, rx.MovedError):
            await note_moved(client, exc)
        elif isinstance(exc, rx.AskError | rx.TryAgainError):
            return  # the slot is migrating: back off and try again
        else:
            mark_slot_map_stale(client)

    async def run_op(self, op: Op) -> Any:
        """One op through the retry loop."""
        if op.script is not None:
            return await self._script_op(op)
        return await self.call(*op.args)

    async def wait_nonempty(self, list_key: str, timeout: float) -> bytes | None:
        """Block until ``list_key`` has an element (or ``timeout`` passes) without changing the list;
        returns its tail element (None after the timeout).

        ``BLMOVE k k RIGHT RIGHT`` pops the tail and pushes it back onto the tail atomically: an identity
        rotation, so it is a wake-up on enqueue that Go producers trigger too (they only LPUSH). The
        element it reports lets a dequeue name the tail without reading it first.
        Not retried: a failed wait simply returns and the caller polls.

        Sent through redispy.send_batch, past redis-py's per-command machinery (pool condition,
        retry wrapper, a task per write): an idle worker re-arms one wait per queue every few
        seconds, ~230 a second at 1,000 queues, and a wait through ``execute_command`` cost ~110 us
        of the event loop's time (py-spy, 1,000 idle queues) that a pick-up could wait behind.
        """
        if self.max_block is not None:
            timeout = min(timeout, self.max_block)
        command = ("BLMOVE", list_key, list_key, "RIGHT", "RIGHT", f"{timeout:.3f}")
        try:
            (reply,) = await send_batch(self.client, [command], [list_key])
        except Exception as exc:  # nothing was sent: no node for the slot, no room in the pool
            reply = exc
        if isinstance(reply, Exception):
            if not is_transient(reply, cluster=self.is_cluster):
                raise reply
            if self.is_cluster:
                await self._note_cluster_error(reply)
            await asyncio.sleep(min(timeout, 0.1))
            return None
        return None if reply is None else bytes(reply)

    # -- pub/sub ------------------------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        """PUBLISH ``message`` on ``channel``; retried like :meth:`call`, so a subscriber may get it twice."""
        await self.call("PUBLISH", channel, message)

    def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Yield messages published on ``channel`` forever, re-subscribing after connection loss (on
        another live node in a cluster: see pubsub.py); :attr:`subscribed_node` says where it is."""
        return pubsub.subscribe(
            self.client, channel, retry=self.retry, description=self.description, on_node=self._subscribed_at
        )

    def _subscribed_at(self, node: str | None) -> None:
        self.subscribed_node = node

    # -- cluster topology ---------------------------------------------------------------------------

    async def check_ready(self) -> None:
        """Fail fast with a clear error when Redis is unreachable, a cluster is not ``ok``, or the
        client is of the wrong kind for the server (see :meth:`_refuse_cluster_node`)."""
        await self.call("PING")
        if isinstance(self.client, RedisCluster):
            # imported here: topology.py imports replies.py, which imports this module. Reading the
            # reply there keeps one parser.
            from asynq_aio.protocol.topology import parse_info

            state = parse_info(await self.client.cluster_info()).get("cluster_state")
            if state != "ok":
                raise ClusterNotReadyError(
                    f"Redis Cluster at {self.description} reports cluster_state:{state!r}, not ok"
                )
        elif not self._single_node_checked:
            await self._refuse_cluster_node()
            self._single_node_checked = True

    async def _refuse_cluster_node(self) -> None:
        """A single-node client on a node of a multi-master cluster answers PING, and even the keys
        of the node's own slots, then gets MOVED for the rest: refuse it before the first task.

        A one-master cluster serves every key, so it is let through. A server that will not say
        (INFO or CLUSTER INFO renamed or denied) is let through too: the first MOVED reply
        fails just as clearly."""
        from asynq_aio.protocol.topology import parse_info

        try:
            info = parse_info(await self.call("INFO", "cluster"))
            if info.get("cluster_enabled") != "1":
                return
            size = parse_info(await self.call("CLUSTER", "INFO")).get("cluster_size")
        except (rx.ResponseError, RedisAuthError):
            return
        if size != "1":
            raise cluster_node_error(self._addr())

    def _addr(self) -> str:
        """The address to name when the client is of the wrong kind: the seed nodes of a cluster
        client, host:port of a single-node one (the description where there is none, as for a
        master found through Sentinel)."""
        if isinstance(self.client, RedisCluster):
            return ",".join(seed_node_names(self.client)) or self.description
        kw = pool_connection_kwargs(self.client)
        if "host" in kw and "port" in kw:
            return f"{kw['host']}:{kw['port']}"
        return self.description

    async def cluster_shards(self) -> list[Any]:
        """CLUSTER SHARDS from any reachable node (redis-py cannot route it by key), as redis-py
        returns it: ``protocol.topology.parse_cluster_shards`` reads every shape."""
        assert isinstance(self.client, RedisCluster)
        client = self.client

        async def attempt() -> list[Any]:
            return list(await client.execute_command("CLUSTER SHARDS"))

        return await self._retrying("CLUSTER SHARDS", attempt)

    async def node_names(self, keys: Sequence[str]) -> list[str]:
        """The cluster node serving each key's slot, by name ("" on a single Redis, and for a slot no
        node serves yet: a call routed there fails on its own)."""
        if not isinstance(self.client, RedisCluster):
            return [""] * len(keys)
        await ensure_slot_map(self.client)
        names = []
        for key in keys:
            node = self.client.get_node_from_key(key)
            names.append("" if node is None else node.name)
        return names

    def keyslot(self, key: str) -> int:
        """The cluster key slot of ``key`` (CRC16 of its hash tag mod 16384), computed locally."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))
