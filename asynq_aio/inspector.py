"""Inspector: the read/admin API that the CLI (and later dashboards) use.

It starts with what operators need first: which queues exist, and where a queue lives in a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from redis.crc import key_slot

from asynq_aio.connection import RedisConnOpt
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.transport import RedisClient, RetryPolicy, Transport


@dataclass(frozen=True, slots=True)
class ClusterNodeRef:
    node_id: str
    addr: str  # host:port
    role: str  # master | replica
    health: str


@dataclass(frozen=True, slots=True)
class QueueLocation:
    queue: str
    slot: int
    nodes: list[ClusterNodeRef]  # master first


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Inspector:
    def __init__(self, redis: RedisConnOpt | RedisClient, *, retry: RetryPolicy | None = None) -> None:
        self._transport = Transport.connect(redis, retry=retry)
        self._broker = Broker(self._transport)

    @property
    def is_cluster(self) -> bool:
        return self._transport.is_cluster

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def queues(self) -> list[str]:
        return await self._broker.all_queues()

    @staticmethod
    def queue_slot(queue: str) -> int:
        """The cluster key slot of every key of ``queue`` (CRC16 of the hash tag mod 16384)."""
        return int(key_slot(queue_keys(queue).pending.encode()))

    async def cluster_locations(self, queues: list[str]) -> list[QueueLocation]:
        """Slot and owning nodes (master first, then replicas) of each queue, from CLUSTER SHARDS."""
        shards = await self._transport.cluster_shards()
        table: list[tuple[list[tuple[int, int]], list[ClusterNodeRef]]] = []
        for shard in shards:
            sd = {_s(k): v for k, v in shard.items()}
            flat = [int(x) for x in sd.get("slots", [])]
            ranges = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
            nodes = []
            for node in sd.get("nodes", []):
                nd = {_s(k): v for k, v in node.items()}
                host = _s(nd.get("endpoint") or nd.get("ip") or "?")
                nodes.append(
                    ClusterNodeRef(
                        node_id=_s(nd.get("id", "")),
                        addr=f"{host}:{int(nd.get('port', 0) or nd.get('tls-port', 0))}",
                        role=_s(nd.get("role", "")),
                        health=_s(nd.get("health", "")),
                    )
                )
            nodes.sort(key=lambda n: (n.role != "master", n.addr))
            table.append((ranges, nodes))
        out = []
        for q in queues:
            slot = self.queue_slot(q)
            owners: list[ClusterNodeRef] = []
            for ranges, nodes in table:
                if any(lo <= slot <= hi for lo, hi in ranges):
                    owners = nodes
                    break
            out.append(QueueLocation(q, slot, owners))
        return out
