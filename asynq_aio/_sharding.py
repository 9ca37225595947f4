"""ShardedQueue: one hot logical queue spread over several cluster masters (opt-in).

A queue lives in one cluster slot, so one busy queue loads one master however many the cluster has.
A :class:`ShardedQueue` stands for N ordinary queues whose names (``protocol/shards.py``) hash to N
different slot ranges; a producer passes it where a queue name goes and each task lands in one
shard, a worker serves the shards through ``Config(shards=...)``. Go servers, Go's CLI and asynqmon
see N ordinary queues.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

from asynq_aio.protocol.shards import shard_names

__all__ = ["ShardedQueue"]


class ShardedQueue:
    """A logical queue stored as ``shards`` ordinary queues (see docs/queues.md, "Sharded queues").

    ``Client.enqueue(task, queue=hot)`` puts the task in the next shard in turn (round-robin, per
    ShardedQueue object); ``queue=hot.for_key("tenant-42")`` in the shard that key always maps to,
    in every process (order and uniqueness hold per shard only, so a key that needs either must
    pick its shard this way). Equal when name and shard count are equal; immutable.
    """

    __slots__ = ("_counter", "name", "names", "shards")

    name: str
    shards: int
    names: tuple[str, ...]
    _counter: itertools.count[int]

    def __init__(self, name: str, shards: int) -> None:
        names = shard_names(name, shards)  # validates both (InvalidQueueName / ValueError)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shards", shards)
        object.__setattr__(self, "names", names)
        # next() on itertools.count is one C call: threads sharing the object never get one value
        # twice, so the blocking client's threads spread their tasks as evenly as coroutines do.
        object.__setattr__(self, "_counter", itertools.count())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ShardedQueue is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ShardedQueue is immutable (cannot delete {name!r})")

    def __repr__(self) -> str:
        return f"ShardedQueue({self.name!r}, {self.shards})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShardedQueue):
            return NotImplemented
        return (self.name, self.shards) == (other.name, other.shards)

    def __hash__(self) -> int:
        return hash((ShardedQueue, self.name, self.shards))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShardedQueue, (self.name, self.shards))

    def for_key(self, key: str) -> str:
        """The shard ``key`` belongs to: the same in every process and on every run (CRC-32 of the
        key's UTF-8, not Python's salted ``hash()``), so tasks of one key keep their order and meet
        their unique locks in one shard."""
        if not isinstance(key, str):
            raise TypeError(f"ShardedQueue.for_key takes a str key, got {type(key).__name__}")
        return self.names[zlib.crc32(key.encode()) % self.shards]

    def next_name(self) -> str:
        """The next shard in turn: consecutive calls cycle through every shard, so a steady stream of
        tasks is spread evenly whatever their keys."""
        return self.names[next(self._counter) % self.shards]
