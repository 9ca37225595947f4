"""Decoding of plain Redis replies: the one place that knows what shapes redis-py may hand over.

redis-py decodes some replies itself, and how depends on the release and on how the command was
sent (a ``WITHSCORES`` passed as a raw word is paired by 8.x and left flat by 5.x; keys and members
are ``bytes`` unless ``decode_responses`` is on). Callers in ``protocol/`` read replies through these
helpers, never by indexing a shape they assume.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from asynq_aio.protocol._redis.ops import Op
from asynq_aio.protocol._redis.transport import Transport

__all__ = ["NamedBatch", "hash_fields", "mapping", "score_pairs", "score_pairs_raw", "text"]


def text(value: Any) -> str:
    """A reply value (bytes, str or a number) as text; bytes are UTF-8 (invalid bytes replaced)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def score_pairs_raw(reply: Any) -> list[tuple[Any, float]]:
    """A ``ZRANGE ... WITHSCORES`` reply as (member as sent, score) pairs, paired or flat as redis-py
    gave it; for members that are binary (protobuf), not text."""
    if not reply:
        return []
    if isinstance(reply[0], list | tuple):
        return [(m, float(sc)) for m, sc in reply]
    if len(reply) % 2:
        raise ValueError(f"WITHSCORES reply with an odd number of items: {len(reply)}")
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]


def score_pairs(reply: Any) -> list[tuple[str, float]]:
    """A ``ZRANGE ... WITHSCORES`` reply as (member as text, score) pairs."""
    return [(text(m), score) for m, score in score_pairs_raw(reply)]


def mapping(reply: Any) -> dict[str, Any]:
    """A map reply (RESP3 map, or a dict redis-py built) or a RESP2 flat ``[key, value, ...]`` list,
    as a dict with text keys; the values as they came."""
    if isinstance(reply, Mapping):
        return {text(k): v for k, v in reply.items()}
    if isinstance(reply, list | tuple):
        if len(reply) % 2:
            raise ValueError(f"expected a flat key/value list, got {len(reply)} items")
        return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    raise ValueError(f"expected a map or a key/value list, got {type(reply).__name__}")


def hash_fields(reply: Any) -> dict[str, bytes]:
    """An ``HGETALL`` reply as ``{field: value bytes}``."""
    return {k: bytes(v) for k, v in mapping(reply).items()}


class NamedBatch:
    """Pipelined commands read back by name, not position: adding a command to a batch must not
    shift the meaning of every reply after it (``queue_infos`` once read ``r[6]`` and counted
    ``per_q = 12`` by hand)."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._names: list[Hashable] = []

    def add(self, name: Hashable, op: Op) -> None:
        """Queue ``op``, its reply to be read under ``name``; raises ValueError for a name already used."""
        if name in self._names:
            raise ValueError(f"command {name!r} is already in this batch")
        self._names.append(name)
        self._ops.append(op)

    async def run(self, transport: Transport) -> dict[Hashable, Any]:
        """Send the batch (one pipeline per node) and return each reply under its name; the first
        error reply is raised."""
        replies = await transport.batch(self._ops) if self._ops else []
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return dict(zip(self._names, replies, strict=True))
