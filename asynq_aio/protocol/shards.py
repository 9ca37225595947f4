"""The storage names of a sharded queue: one logical queue kept as N ordinary Asynq queues.

A queue's keys share one hash tag, so a queue lives in one cluster slot on one master however busy
it is. A sharded queue spreads one logical queue over N queues whose names hash to different slots:
shard ``i`` of ``n`` is ``<queue>~<i>of<n>``, with ``-<k>`` appended (the smallest ``k >= 1``) when
that name's slot is not in the ``i``-th of ``n`` equal slot ranges. The names depend on ``(queue, n)``
alone, never on a Redis read or on the cluster's topology, so every producer and worker (in any
process, on any host) computes the same names; and on a cluster whose masters own equal contiguous
slot ranges (what ``redis-cli --cluster create`` and the dev cluster make) ``n`` = the number of
masters puts one shard on each master.

Each shard is an ordinary queue: Go servers serve it by its name, Go's CLI and asynqmon list it.
Nothing about sharding is written to Redis; :func:`parse_shard` recognises a shard by its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from asynq_aio._errors import InvalidQueueName
from asynq_aio.protocol.keys import QueueKeys, validate_queue_name

__all__ = [
    "MAX_SHARDS",
    "MIN_SHARDS",
    "SHARD_SEPARATOR",
    "parse_shard",
    "shard_names",
    "validate_shard_count",
]

CLUSTER_SLOTS = 16384
#: A sharded queue has at least two shards (one would be an ordinary queue with a stranger name)...
MIN_SHARDS = 2
#: ...and at most this many: far past any cluster's master count, and it bounds the name search.
MAX_SHARDS = 256
SHARD_SEPARATOR = "~"

_SHARD_NAME = re.compile(r"(?P<queue>.+)~(?P<index>0|[1-9][0-9]*)of(?P<count>[1-9][0-9]*)(?:-[1-9][0-9]*)?")


def validate_shard_count(shards: object) -> int:
    """The shard count, checked: an int from MIN_SHARDS to MAX_SHARDS (a bool is refused, as the
    ``True`` it usually is comes from a mistyped flag, not from a count)."""
    if not isinstance(shards, int) or isinstance(shards, bool):
        raise ValueError(f"a shard count must be a whole number, got {shards!r}")
    if not MIN_SHARDS <= shards <= MAX_SHARDS:
        raise ValueError(
            f"a sharded queue has {MIN_SHARDS} to {MAX_SHARDS} shards, got {shards} "
            "(one shard per cluster master is the usual choice)"
        )
    return shards


def _slot_range(index: int, count: int) -> range:
    """The ``index``-th of ``count`` equal slot ranges: the ranges a default cluster's masters own."""
    return range(index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count)


def _slot(name: str) -> int:
    # The uncached QueueKeys, not queue_keys(): the search tries many names that are never used, and
    # they should not push the names in use out of that cache.
    return QueueKeys(name).slot


@lru_cache(maxsize=1024)
def shard_names(queue: str, shards: int) -> tuple[str, ...]:
    """The names of the ``shards`` queues that store the logical queue ``queue``, shard 0 first.

    Raises InvalidQueueName for a name that is not a valid queue name or has the form of a shard's
    name (a shard of a shard would be listed and served under the wrong logical name), ValueError
    for a count outside MIN_SHARDS..MAX_SHARDS."""
    validate_queue_name(queue)
    validate_shard_count(shards)
    if _SHARD_NAME.fullmatch(queue):
        raise InvalidQueueName(
            f"invalid sharded queue name {queue!r}: it has the form of a shard's name "
            f"(<queue>{SHARD_SEPARATOR}<i>of<n>); shard the logical queue instead"
        )
    names: list[str] = []
    for i in range(shards):
        want = _slot_range(i, shards)
        base = f"{queue}{SHARD_SEPARATOR}{i}of{shards}"
        name, k = base, 0
        while _slot(name) not in want:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return tuple(names)


@lru_cache(maxsize=4096)
def parse_shard(name: str) -> tuple[str, int, int] | None:
    """``(logical queue, index, count)`` when ``name`` is exactly what :func:`shard_names` gives for
    some logical queue, else None.

    Only the canonical name counts: ``x~0of3`` whose slot is not in shard 0's range (so the real
    shard 0 is ``x~0of3-<k>``) is an ordinary queue that happens to look like a shard, and is listed,
    served and inspected as one."""
    if not isinstance(name, str):
        return None
    m = _SHARD_NAME.fullmatch(name)
    if m is None:
        return None
    queue, index, count = m["queue"], int(m["index"]), int(m["count"])
    if not (MIN_SHARDS <= count <= MAX_SHARDS and index < count) or _SHARD_NAME.fullmatch(queue):
        return None
    try:
        canonical = shard_names(queue, count)[index]
    except (InvalidQueueName, ValueError):
        return None
    return (queue, index, count) if canonical == name else None


def logical_queue(name: str) -> str:
    """The logical queue ``name`` stores tasks for: a shard's logical queue, else the name itself."""
    parsed = parse_shard(name)
    return name if parsed is None else parsed[0]


def group_shards(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The shards among ``names`` by logical queue (in order of logical name, each group by shard
    count then index): how listings show a sharded queue as one. A queue that is not a shard is in
    no group, even when a logical queue has its name."""
    found: dict[str, list[tuple[int, int, str]]] = {}
    for name in names:
        parsed = parse_shard(name)
        if parsed is not None:
            queue, index, count = parsed
            found.setdefault(queue, []).append((count, index, name))
    return {q: tuple(n for _, _, n in sorted(found[q])) for q in sorted(found)}
