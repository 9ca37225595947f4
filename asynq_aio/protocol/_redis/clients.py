"""Building redis-py clients from asynq-aio's connection options.

The clients are built with redis-py's own retries switched off: every call goes through the
transport's retry loop instead (see transport.py for why). Kept apart from the transport because
building a client (pool sizes, TLS, Sentinel, address remapping) is configuration, done once, and
running commands on it is not; the internals read here are in redispy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from asynq_aio._connection import (
    RedisClient,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisConnOpt,
    RedisSentinelOpt,
    split_addr,
)
from asynq_aio.protocol._redis.redispy import pool_connection_kwargs, seed_node_names, sentinel_clients

#: Connections beyond the in-flight limit, for blocking waits and pub/sub, which hold one each.
EXTRA_CONNECTIONS = 64


@dataclass
class BuiltClient:
    """A client, how many calls may be in flight on it, and clients to close with it (a Sentinel
    master client leaves its Sentinel connections open otherwise)."""

    client: RedisClient
    max_inflight: int
    also_close: list[Redis] = field(default_factory=list)


def build_client(opt: RedisConnOpt, *, blocking_waits: int = 0) -> BuiltClient:
    """A redis-py client for ``opt``, with redis-py's retries off (the transport retries) and pool room for
    blocking waits and pub/sub beyond ``pool_size``: ``blocking_waits`` more connections per node for
    a worker whose queue watchers each hold one. Raises TypeError for an unknown option type."""
    no_retry = Retry(NoBackoff(), 0)
    common: dict[str, Any] = {
        "username": opt.username,
        "password": opt.password,
        "socket_connect_timeout": opt.dial_timeout,
        "socket_timeout": opt.read_timeout,
        "socket_keepalive": True,
    }
    if opt.tls is not None:
        common.update(opt.tls.redis_kwargs())
    max_conns = opt.pool_size + EXTRA_CONNECTIONS + blocking_waits  # opened only when needed
    if isinstance(opt, RedisClusterClientOpt):
        remap: dict[tuple[str, int], tuple[str, int]] = {
            split_addr(a): split_addr(b) for a, b in opt.address_map.items()
        }
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(*split_addr(a)) for a in opt.addrs],
            max_connections=max_conns,
            require_full_coverage=True,
            address_remap=(lambda addr: remap.get(addr, addr)) if remap else None,
            retry=no_retry,
            **common,
        )
        return BuiltClient(cluster, opt.pool_size)
    if isinstance(opt, RedisClientOpt):
        host, port = split_addr(opt.addr)
        # A pool gets connection classes, not the ``ssl=True`` switch a client takes.
        conn_kwargs = {k: v for k, v in common.items() if k != "ssl"}
        connection_class: type[Connection] = SSLConnection if opt.tls is not None else Connection
        pool: BlockingConnectionPool = BlockingConnectionPool(
            connection_class=connection_class,
            host=host,
            port=port,
            db=opt.db,
            max_connections=max_conns,
            timeout=None,
            **conn_kwargs,
        )
        return BuiltClient(Redis(connection_pool=pool, retry=no_retry), opt.pool_size)
    if isinstance(opt, RedisSentinelOpt):
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis-py 8.2
            [split_addr(a) for a in opt.sentinel_addrs],
            sentinel_kwargs={
                "username": opt.sentinel_username,
                "password": opt.sentinel_password,
                "socket_connect_timeout": opt.dial_timeout,
            },
            retry=no_retry,
            **common,
        )
        master = sentinel.master_for(opt.master_name, db=opt.db)
        return BuiltClient(master, opt.pool_size, sentinel_clients(sentinel))
    raise TypeError(f"unsupported connection option {type(opt).__name__}")  # pragma: no cover


def describe_client(client: RedisClient) -> str:
    """Where a caller's own client points, for error messages."""
    if isinstance(client, RedisCluster):
        return "cluster " + ",".join(seed_node_names(client))
    kw = pool_connection_kwargs(client)
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
