"""RedisSession: one connection to a Redis deployment, and the stores built on it.

A Client, Server, Scheduler or Inspector opens one session and reaches Redis only through it and the
stores it builds (Broker, Admin, GroupStore, SchedulerStore), so that nothing outside
``asynq_aio.protocol`` knows the Redis layer (``protocol/_redis``): how a client is built, what is
retried, how a batch is sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.admin import Admin
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.groups import GroupStore
from asynq_aio.protocol.scheduler_store import SchedulerStore

__all__ = ["RedisSession"]


class RedisSession:
    """One connection to Redis (a single node, a cluster, or a master found through Sentinel) for a
    client, server, scheduler or inspector, with the retry policy every call on it follows."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    @classmethod
    def open(
        cls, redis: RedisConnOpt | RedisClient, *, retry: RetryPolicy | None = None, blocking_waits: int = 0
    ) -> RedisSession:
        """Connect with options (the session owns its client and closes it) or wrap a caller's redis-py
        client (borrowed: left open). ``retry`` defaults to ``RetryPolicy()``. ``blocking_waits``:
        how many blocking waits may run at once (a worker's queue watchers), for which the
        connection pool makes room beyond its in-flight limit. Connects lazily, on the first call."""
        return cls(Transport.connect(redis, retry=retry, blocking_waits=blocking_waits))

    @property
    def client(self) -> RedisClient:
        """The redis-py client (owned or borrowed), e.g. to open an Inspector on the same connections."""
        return self._transport.client

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call made through this session."""
        return self._transport.retry

    @property
    def is_cluster(self) -> bool:
        """Whether the client is a Redis Cluster client."""
        return self._transport.is_cluster

    async def check_ready(self) -> None:
        """Raise RedisUnavailableError, ClusterNotReadyError or RedisConfigError unless Redis answers,
        a cluster reports ``cluster_state:ok`` and the client is of the right kind for the server."""
        await self._transport.check_ready()

    async def aclose(self) -> None:
        """Close the client if the session built it (a borrowed one is left open); idempotent."""
        await self._transport.aclose()

    def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Messages published on ``channel``, forever: the subscription survives connection loss."""
        return self._transport.subscribe(channel)

    # -- the stores on this connection ---------------------------------------------------------------

    def broker(self, *, clock: Callable[[], float] = time.time) -> Broker:
        """A Broker (task storage) on this session; ``clock`` gives the current Unix time."""
        return Broker(self._transport, clock=clock)

    def admin(self) -> Admin:
        """An Admin (the inspector's reads and bulk actions) on this session."""
        return Admin(self._transport)

    def groups(self) -> GroupStore:
        """A GroupStore (task groups, for the aggregator) on this session."""
        return GroupStore(self._transport)

    def scheduler_store(self, *, clock: Callable[[], float] = time.time) -> SchedulerStore:
        """A SchedulerStore (the scheduler's entries and history) on this session."""
        return SchedulerStore(self._transport, clock=clock)
