"""Reading Redis topology and INFO replies, whatever shape redis-py handed them over in.

redis-py post-processes these replies with response callbacks that change between releases: 8.1
returned CLUSTER SHARDS slot ranges as one flat list (``[0, 5460, ...]``), 8.2 returns a list of
``(lo, hi)`` tuples; map keys arrive as ``str`` or ``bytes`` depending on the release and on
``decode_responses``; RESP3 gives real maps where RESP2 gives flat ``[key, value, ...]`` lists;
INFO is a parsed dict or, when a command is sent as two words or through a raw path, plain text.
Everything that reads topology goes through this module, so the next redis-py release that changes
a callback breaks one function (and its shape tests), not every caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asynq_aio.protocol.replies import mapping, text

__all__ = [
    "Shard",
    "ShardNode",
    "parse_cluster_shards",
    "parse_info",
    "shard_for_slot",
]


@dataclass(frozen=True)
class ShardNode:
    """One node of a shard as CLUSTER SHARDS describes it."""

    node_id: str
    host: str
    port: int
    role: str  # "master" or "replica"
    health: str  # "online", "loading" or "fail"

    @property
    def addr(self) -> str:
        """``host:port``: the node's announced endpoint and port (the TLS port if it has no plain one)."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Shard:
    """A master and its replicas, with the slot ranges they serve (inclusive bounds)."""

    slot_ranges: tuple[tuple[int, int], ...]
    nodes: tuple[ShardNode, ...]  # master first, then replicas by address

    def serves(self, slot: int) -> bool:
        """Whether ``slot`` falls in one of this shard's ranges."""
        return any(lo <= slot <= hi for lo, hi in self.slot_ranges)

    @property
    def master(self) -> ShardNode | None:
        """The shard's master, or None when no node of it has the master role."""
        return next((n for n in self.nodes if n.role == "master"), None)


def _flat_ints(value: Any) -> list[int]:
    """Slot bounds as a flat list, from ``[0, 5460, ...]``, ``[(0, 5460), ...]`` or ``[[b"0", b"5460"]]``."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, bytes | str):
        return [int(value)]
    if isinstance(value, Iterable):
        out: list[int] = []
        for item in value:
            out.extend(_flat_ints(item))
        return out
    raise ValueError(f"unexpected slot value {value!r}")


def _port(node: Mapping[str, Any]) -> int:
    for name in ("port", "tls-port"):
        raw = node.get(name)
        if raw not in (None, b"", "", 0, b"0", "0"):
            return int(raw)
    return 0


def parse_cluster_shards(reply: Any) -> list[Shard]:
    """CLUSTER SHARDS (Redis 7+) in any shape redis-py 5.2 - 8.2 or a raw RESP2/RESP3 reply gives."""
    if not isinstance(reply, list | tuple):
        raise ValueError(f"CLUSTER SHARDS: expected a list of shards, got {type(reply).__name__}")
    shards: list[Shard] = []
    for raw_shard in reply:
        shard = mapping(raw_shard)
        flat = _flat_ints(shard.get("slots") or [])
        if len(flat) % 2:
            raise ValueError(f"CLUSTER SHARDS: odd number of slot bounds {flat!r}")
        ranges = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
        nodes: list[ShardNode] = []
        for raw_node in shard.get("nodes") or []:
            node = mapping(raw_node)
            nodes.append(
                ShardNode(
                    node_id=text(node.get("id")),
                    host=text(node.get("endpoint") or node.get("ip") or node.get("hostname") or "?"),
                    port=_port(node),
                    role=text(node.get("role")),
                    health=text(node.get("health")),
                )
            )
        nodes.sort(key=lambda n: (n.role != "master", n.addr))
        shards.append(Shard(ranges, tuple(nodes)))
    return shards


def shard_for_slot(shards: Sequence[Shard], slot: int) -> Shard | None:
    """The shard serving ``slot``, or None while the slot is not covered."""
    return next((s for s in shards if s.serves(slot)), None)


def parse_info(reply: Any) -> dict[str, str]:
    """INFO or CLUSTER INFO as ``{field: value}`` text, from a parsed dict or the raw text."""
    if isinstance(reply, Mapping):
        return {text(k): text(v) for k, v in reply.items()}
    out: dict[str, str] = {}
    for line in text(reply).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value
    return out
