"""GroupStore: every Redis operation of group aggregation (Asynq's ``Group`` option).

Grouped tasks wait in ``Q g:<group>`` (zset: ID → time added) and the group's name is in
``Q groups``. When a group is due, a script moves its oldest members into an aggregation set
``Q g:<group>:<set id>`` and records the set in ``Q aggregation_sets`` with a reclaim deadline. The
aggregator reads the members, merges them into one task, and a second script stores that task as
pending and deletes the set and its members in one step. A set whose deadline passes (its server died
or stalled) is given back to its group by any server.

Unlike Asynq, every script gets every key it touches in KEYS (member hashes too, read first), does
all its checks before its first write, and is safe to run twice. Finishing is atomic and refuses a set
that was reclaimed meanwhile, so a slow aggregator cannot enqueue a second merged task for members
that another server has already aggregated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asynq_aio._errors import TaskIDConflictError
from asynq_aio.protocol import group_scripts as scripts
from asynq_aio.protocol._redis.ops import EncodableArg, Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.codec import TaskMessage, decode_task_message
from asynq_aio.protocol.keys import QueueKeys, queue_keys
from asynq_aio.protocol.replies import score_pairs, text

Clock = Callable[[], float]

SET_LIMIT = 1000
"""Most members one aggregation set takes when there is no max size (Asynq takes the whole group)."""

SET_TIMEOUT = 300.0
"""Seconds an aggregator has to finish a set before other servers may reclaim it."""


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """When a group is due: Asynq's ``GroupMaxSize``, ``GroupMaxDelay`` and ``GroupGracePeriod``.

    ``max_size`` and ``max_delay`` are off at 0. Scores are unix seconds; a whole-second score (what
    Asynq and our client write) counts as added at the end of that second, so the grace period is
    never cut short, at the price of up to one second of extra wait.
    """

    max_size: int = 0
    max_delay: float = 0.0
    grace_period: float = 60.0

    def is_due(self, size: int, oldest: float, newest: float, now: float) -> bool:
        """The rule ``aggregation_check.lua`` applies (kept here to skip the script when not due)."""
        if size == 0:
            return False
        if self.max_size > 0 and size >= self.max_size:
            return True
        if self.max_delay > 0 and oldest <= now - self.max_delay:
            return True
        if newest == int(newest):
            newest += 1
        return newest <= now - self.grace_period


@dataclass(frozen=True, slots=True)
class AggregationSet:
    """Members taken out of a group for one aggregation, oldest first."""

    queue: str
    group: str
    set_id: str
    key: str
    deadline: float
    ids: tuple[str, ...]
    messages: tuple[TaskMessage, ...]  # members whose hash still holds a message


@dataclass(frozen=True, slots=True)
class QueueGroups:
    """One queue's groups with members, and its aggregation sets whose deadline has passed."""

    queue: str
    groups: list[str]
    stale_sets: list[str]


class GroupStore:
    """All Redis I/O of group aggregation: reading groups, taking due members into aggregation sets, storing
    the merged task, and giving sets back (see the module docstring)."""

    def __init__(self, transport: Transport, *, clock: Clock = time.time, set_limit: int = SET_LIMIT) -> None:
        self.transport = transport
        self.clock = clock
        self.set_limit = set_limit

    # -- reading ------------------------------------------------------------------------------------

    async def scan(self, queues: Sequence[str], *, stale_limit: int = 100) -> list[QueueGroups]:
        """Group names and stale aggregation sets of every queue, in one pipeline."""
        now = self.clock()
        ops: list[Op] = []
        for q in queues:
            qk = queue_keys(q)
            ops.append(Op.command("SMEMBERS", qk.groups))
            ops.append(Op.command("ZRANGEBYSCORE", qk.aggregation_sets, "-inf", now, "LIMIT", 0, stale_limit))
        replies = await self.transport.batch(ops)
        out = []
        for i, q in enumerate(queues):
            groups, stale = replies[2 * i], replies[2 * i + 1]
            for r in (groups, stale):
                if isinstance(r, Exception):
                    raise r
            out.append(QueueGroups(q, sorted(text(g) for g in groups), [text(k) for k in stale]))
        return out

    async def groups(self, queue: str) -> list[str]:
        """Names of ``queue``'s groups that have waiting members, sorted."""
        return sorted(text(g) for g in await self.transport.call("SMEMBERS", queue_keys(queue).groups))

    async def members(self, queue: str, group: str) -> list[tuple[str, float]]:
        """A group's waiting task IDs with the time each was added, oldest first."""
        reply = await self.transport.call("ZRANGE", queue_keys(queue).group(group), 0, -1, "WITHSCORES")
        return score_pairs(reply)

    async def aggregation_sets(self, queue: str) -> list[tuple[str, float]]:
        """Aggregation set keys in progress with their reclaim deadlines."""
        reply = await self.transport.call("ZRANGE", queue_keys(queue).aggregation_sets, 0, -1, "WITHSCORES")
        return score_pairs(reply)

    async def is_due(self, queue: str, group: str, policy: GroupPolicy) -> bool:
        """Whether ``group`` is due under ``policy`` now, judged from one read of its size and its oldest
        and newest scores."""
        size, oldest, newest = await self._peek(queue_keys(queue), group)
        return policy.is_due(size, oldest, newest, self.clock())

    async def _peek(self, qk: QueueKeys, group: str) -> tuple[int, float, float]:
        gk = qk.group(group)
        size, first, last = await self.transport.batch(
            [
                Op.command("ZCARD", gk),
                Op.command("ZRANGE", gk, 0, 0, "WITHSCORES"),
                Op.command("ZREVRANGE", gk, 0, 0, "WITHSCORES"),
            ]
        )
        for r in (size, first, last):
            if isinstance(r, Exception):
                raise r
        firsts, lasts = score_pairs(first), score_pairs(last)
        if not firsts or not lasts:
            return 0, 0.0, 0.0
        return int(size), firsts[0][1], lasts[0][1]

    # -- aggregating --------------------------------------------------------------------------------

    async def create_set(
        self, queue: str, group: str, policy: GroupPolicy, *, set_timeout: float = SET_TIMEOUT
    ) -> AggregationSet | None:
        """If ``group`` is due, move its oldest members (at most max size) into a new aggregation set
        and return it; None when it is not due or another server took the members first."""
        qk = queue_keys(queue)
        gk = qk.group(group)
        limit = policy.max_size if policy.max_size > 0 else self.set_limit
        for _ in range(3):  # candidates can be taken by another server between the read and the script
            size, oldest, newest = await self._peek(qk, group)
            now = self.clock()
            if size and not policy.is_due(size, oldest, newest, now):
                return None
            ids = [text(x) for x in await self.transport.call("ZRANGE", gk, 0, limit - 1)] if size else []
            set_id = str(uuid.uuid4())
            set_key = qk.aggregation_set(group, set_id)
            deadline = now + set_timeout
            keys = [gk, set_key, qk.aggregation_sets, qk.groups, *(qk.task(i) for i in ids)]
            args: list[EncodableArg] = [
                policy.max_size,
                repr(float(policy.max_delay)),
                repr(float(policy.grace_period)),
                repr(deadline),
                repr(now),
                group,
                *ids,
            ]
            reply = await self.transport.script(scripts.AGGREGATION_CHECK, keys, args)
            code = int(reply[0])
            if code == 1:
                members = [text(x) for x in reply[1]]
                messages = tuple(decode_task_message(bytes(m)) for m in reply[2] if m)
                return AggregationSet(queue, group, set_id, set_key, deadline, tuple(members), messages)
            if code == 0:
                return None
        return None

    async def finish(self, aset: AggregationSet, merged: TaskMessage | None) -> bool:
        """Store ``merged`` as pending in the set's queue and delete the set and its members (and
        the unique locks they still hold), all at once. False, with nothing written, when the set
        was reclaimed meanwhile (its deadline passed); its members are then aggregated again.
        ``merged=None`` only deletes the set (for a set whose members' hashes are all gone)."""
        if merged is not None and merged.queue != aset.queue:
            raise ValueError(f"merged task is for queue {merged.queue!r}, the set is in {aset.queue!r}")
        qk = queue_keys(aset.queue)
        locks = [
            (m.unique_key, m.id)
            for m in aset.messages
            if m.unique_key and m.unique_key.startswith(qk.prefix)  # never a key of another slot
        ]
        keys = [
            aset.key,
            qk.aggregation_sets,
            qk.task(merged.id) if merged is not None else qk.pending,  # not touched without a task
            qk.pending,
            *(qk.task(i) for i in aset.ids),
            *(lock for lock, _ in locks),
        ]
        args: list[EncodableArg] = [
            merged.SerializeToString() if merged is not None else "",
            merged.id if merged is not None else "",
            int(self.clock() * 1e9),
            len(aset.ids),
            *aset.ids,
            *(owner for _, owner in locks),
        ]
        code = int(await self.transport.script(scripts.AGGREGATION_FINISH, keys, args))
        if code == -1:
            assert merged is not None
            raise TaskIDConflictError(f"task ID {merged.id!r} already exists in queue {aset.queue!r}")
        return code == 1

    async def release(self, aset: AggregationSet) -> bool:
        """Give a set this server will not finish (it is shutting down) back to its group now,
        rather than at its deadline. False if it was reclaimed or finished already."""
        return await self.reclaim(aset.queue, [aset.key], now=aset.deadline) == 1

    async def reclaim(self, queue: str, set_keys: Sequence[str], *, now: float | None = None) -> int:
        """Give the members of these sets back to their groups if their deadline has passed
        (checked in the script); returns how many sets were reclaimed."""
        qk = queue_keys(queue)
        keys = [qk.aggregation_sets, qk.groups]
        args: list[EncodableArg] = [repr(self.clock() if now is None else now)]
        for set_key in set_keys:
            group = group_of_set(qk, set_key)
            if group is None:
                continue
            keys += [set_key, qk.group(group)]
            args.append(group)
        if len(args) == 1:
            return 0
        return int(await self.transport.script(scripts.AGGREGATION_RECLAIM, keys, args))

    async def reclaim_stale(self, queue: str, *, limit: int = 100) -> int:
        """Reclaim up to ``limit`` sets of ``queue`` whose deadline has passed."""
        (found,) = await self.scan([queue], stale_limit=limit)
        return await self.reclaim(queue, found.stale_sets) if found.stale_sets else 0


def group_of_set(qk: QueueKeys, set_key: str) -> str | None:
    """The group name in ``Q g:<group>:<set id>`` (set IDs contain no colon; group names may)."""
    head = qk.prefix + "g:"
    if not set_key.startswith(head):
        return None
    group, sep, set_id = set_key[len(head) :].rpartition(":")
    if not sep or not group or not set_id or qk.aggregation_set(group, set_id) != set_key:
        return None
    return group
