"""Admin I/O for the Inspector: counts, listings, single and bulk task moves, queue deletion, servers,
schedulers and Redis node info.

Reads are pipelined (one round trip per node for a page of tasks or a set of queues). Writes go
through ``scripts/admin_*.lua``, which declare every key they touch, check before they write, and are
safe to run twice. Bulk operations read at most ``BATCH`` IDs, run one script on them and repeat:
no script ever walks a whole container.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.protobuf.message import DecodeError

from asynq_aio._errors import (
    AsynqError,
    FailedPreconditionError,
    InvalidQueueName,
    MalformedTaskError,
    QueueNotFoundError,
    TaskNotFoundError,
)
from asynq_aio._inspection import (
    DailyStats,
    GroupInfo,
    QueueInfo,
    RedisNodeInfo,
    SchedulerEnqueueEventInfo,
    SchedulerEntryInfo,
    ServerInfo,
)
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.protocol import admin_scripts as scripts
from asynq_aio.protocol._redis.ops import EncodableArg, Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.archive import trim_archive
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent
from asynq_aio.protocol.codec import (
    decode_server_info,
    decode_task_message,
    decode_worker_info,
    from_timestamp,
    from_unix,
    task_info,
)
from asynq_aio.protocol.keys import (
    ALL_QUEUES,
    ALL_SCHEDULERS,
    ALL_SERVERS,
    QueueKeys,
    queue_keys,
    scheduler_history_key,
    workers_key,
)
from asynq_aio.protocol.replies import NamedBatch, hash_fields, score_pairs, score_pairs_raw, text
from asynq_aio.protocol.scheduler_store import decode_entry
from asynq_aio.protocol.topology import Shard, parse_cluster_shards, parse_info

BATCH = 100  # most task IDs one admin script call handles
MEMORY_SAMPLE = 20  # task hashes sampled for the memory estimate of a queue

Action = Literal["delete", "run", "archive"]

# Which states each action takes tasks from (active tasks are cancelled, never moved).
ALLOWED: dict[str, frozenset[TaskState]] = {
    "delete": frozenset(TaskState) - {TaskState.ACTIVE},
    "run": frozenset({TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED, TaskState.AGGREGATING}),
    "archive": frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.AGGREGATING}),
}
_DONE_STATE = {"run": "pending", "archive": "archived"}


def container(qk: QueueKeys, state: TaskState, group: str | None = None) -> str:
    """The list or zset that holds the IDs of ``state`` (aggregating needs the group)."""
    if state is TaskState.AGGREGATING:
        if not group:
            raise ValueError("aggregating tasks are listed per group: give the group name")
        return qk.group(group)
    return str(getattr(qk, state.value))


class Admin:
    """All Redis I/O of the Inspector."""

    def __init__(self, transport: Transport, *, clock: Callable[[], float] = time.time) -> None:
        self.transport = transport
        self.clock = clock

    # -- queues -------------------------------------------------------------------------------------

    async def require_queue(self, queue: str) -> QueueKeys:
        """The queue's keys, once it is known to be in ``asynq:queues``; else raises QueueNotFoundError."""
        qk = queue_keys(queue)
        if not await self.transport.call("SISMEMBER", ALL_QUEUES, queue):
            raise QueueNotFoundError(f'queue "{queue}" not found')
        return qk

    async def queues_holding(self, task_id: str) -> list[str]:
        """The registered queues that hold a task with this ID. Asynq's layout has no ID-to-queue
        index (and Go writers would not keep one), so this asks every queue: one EXISTS per queue,
        pipelined (one round trip per node)."""
        names = sorted(text(x) for x in await self.transport.call("SMEMBERS", ALL_QUEUES))
        batch = NamedBatch()
        for q in names:
            try:
                batch.add(q, Op.command("EXISTS", queue_keys(q).task(task_id)))
            except InvalidQueueName:  # a name a foreign writer registered that we cannot address
                continue
        found = await batch.run(self.transport)
        return [q for q in names if int(found.get(q, 0))]

    async def queue_infos(self, queues: Sequence[str], *, memory: bool = False) -> list[QueueInfo]:
        """Counts of many queues in a few pipelined round trips; unknown queues raise."""
        if not queues:
            return []
        now = self.clock()
        day = datetime.fromtimestamp(now, tz=UTC)
        first = NamedBatch()
        first.add("known", Op.command("SMISMEMBER", ALL_QUEUES, *queues))
        for q in dict.fromkeys(queues):
            qk = queue_keys(q)
            for state, cmd, key in _STATE_COUNTS:
                first.add((q, state), Op.command(cmd, getattr(qk, key)))
            first.add((q, "groups"), Op.command("SMEMBERS", qk.groups))
            daily = (qk.processed_on(day), qk.failed_on(day), qk.processed, qk.failed)
            first.add((q, "counters"), Op.command("MGET", *daily))
            first.add((q, "paused"), Op.command("EXISTS", qk.paused))
            first.add((q, "oldest"), Op.command("LINDEX", qk.pending, -1))
            first.add((q, "pending sample"), Op.command("LRANGE", qk.pending, 0, MEMORY_SAMPLE - 1))
            first.add((q, "scheduled sample"), Op.command("ZRANGE", qk.scheduled, 0, MEMORY_SAMPLE - 1))
        r = await first.run(self.transport)
        for q, ok in zip(queues, r["known"], strict=True):
            if not int(ok):
                raise QueueNotFoundError(f'queue "{q}" not found')
        # second round: group sizes, the oldest pending task's enqueue time, memory samples
        second = NamedBatch()
        groups: dict[str, list[str]] = {}
        samples: dict[str, list[str]] = {}
        for q in dict.fromkeys(queues):
            qk = queue_keys(q)
            groups[q] = sorted(text(g) for g in r[q, "groups"])
            for g in groups[q]:
                second.add((q, "group", g), Op.command("ZCARD", qk.group(g)))
            if r[q, "oldest"] is not None:
                second.add((q, "since"), Op.command("HGET", qk.task(text(r[q, "oldest"])), "pending_since"))
            sampled_ids = [*r[q, "pending sample"], *r[q, "scheduled sample"]] if memory else []
            samples[q] = list(dict.fromkeys(qk.task(text(x)) for x in sampled_ids))
            for key in samples[q]:
                second.add((q, "task memory", key), Op.command("MEMORY", "USAGE", key))
            if memory:
                for key in _MEMORY_CONTAINERS:
                    second.add((q, "memory", key), Op.command("MEMORY", "USAGE", getattr(qk, key)))
        r2 = await second.run(self.transport)
        out: list[QueueInfo] = []
        for q in queues:
            aggregating = sum(int(r2[q, "group", g]) for g in groups[q])
            latency = timedelta(0)
            since = r2.get((q, "since"))
            if since is not None:
                latency = timedelta(seconds=max(0.0, now - int(since) / 1e9))
            counts = {state: int(r[q, state]) for state, _, _ in _STATE_COUNTS}
            size = sum(counts.values()) + aggregating
            mem: int | None = None
            if memory:
                sampled = [int(r2[q, "task memory", key] or 0) for key in samples[q]]
                containers = sum(int(r2[q, "memory", key] or 0) for key in _MEMORY_CONTAINERS)
                avg = sum(sampled) / len(sampled) if sampled else 0
                mem = int(avg * size) + containers
            daily_p, daily_f, total_p, total_f = (int(x or 0) for x in r[q, "counters"])
            out.append(
                QueueInfo(
                    queue=q,
                    size=size,
                    groups=len(groups[q]),
                    latency=latency,
                    memory_usage=mem,
                    pending=counts["pending"],
                    active=counts["active"],
                    scheduled=counts["scheduled"],
                    retry=counts["retry"],
                    archived=counts["archived"],
                    completed=counts["completed"],
                    aggregating=aggregating,
                    processed=daily_p,
                    failed=daily_f,
                    processed_total=total_p,
                    failed_total=total_f,
                    paused=bool(int(r[q, "paused"])),
                    timestamp=datetime.fromtimestamp(now, tz=UTC),
                )
            )
        return out

    async def history(self, queue: str, days: int) -> list[DailyStats]:
        """Processed and failed counts of the last ``days`` UTC days, today first (0 where a counter is
        missing); raises QueueNotFoundError."""
        qk = await self.require_queue(queue)
        today = datetime.fromtimestamp(self.clock(), tz=UTC)
        dates = [today - timedelta(days=i) for i in range(days)]
        ops = [Op.command("MGET", qk.processed_on(d), qk.failed_on(d)) for d in dates]
        replies = _raise_errors(await self.transport.batch(ops))
        return [
            DailyStats(queue, d.date(), int(p or 0), int(f or 0))
            for d, (p, f) in zip(dates, replies, strict=True)
        ]

    async def histories(self, queues: Sequence[str], days: int) -> dict[str, list[DailyStats]]:
        """:meth:`history` of many queues in one pipelined batch (one round trip per node), today
        first; unknown queues raise QueueNotFoundError."""
        if not queues:
            return {}
        today = datetime.fromtimestamp(self.clock(), tz=UTC)
        dates = [today - timedelta(days=i) for i in range(days)]
        names = list(dict.fromkeys(queues))
        batch = NamedBatch()
        batch.add("known", Op.command("SMISMEMBER", ALL_QUEUES, *names))
        for q in names:
            qk = queue_keys(q)
            for i, d in enumerate(dates):
                batch.add((q, i), Op.command("MGET", qk.processed_on(d), qk.failed_on(d)))
        r = await batch.run(self.transport)
        for q, ok in zip(names, r["known"], strict=True):
            if not int(ok):
                raise QueueNotFoundError(f'queue "{q}" not found')
        out: dict[str, list[DailyStats]] = {}
        for q in names:
            rows = []
            for i, d in enumerate(dates):
                p, f = r[q, i]
                rows.append(DailyStats(q, d.date(), int(p or 0), int(f or 0)))
            out[q] = rows
        return out

    async def groups(self, queue: str) -> list[GroupInfo]:
        """The queue's groups, sorted by name, with how many tasks each holds; raises QueueNotFoundError."""
        qk = await self.require_queue(queue)
        names = sorted(text(g) for g in await self.transport.call("SMEMBERS", qk.groups))
        sizes = _raise_errors(await self.transport.batch([Op.command("ZCARD", qk.group(g)) for g in names]))
        return [GroupInfo(g, int(n)) for g, n in zip(names, sizes, strict=True)]

    async def delete_queue(self, queue: str, *, force: bool) -> int:
        """Delete every key of the queue and unregister it; returns how many keys were deleted.

        The queue is paused first, so no server dequeues while it is checked and emptied."""
        qk = await self.require_queue(queue)
        paused_by_us = bool(await self.transport.call("SET", qk.paused, int(self.clock()), "NX"))
        try:
            (info,) = await self.queue_infos([queue])
            if info.active:
                raise FailedPreconditionError(
                    f'queue "{queue}" has {info.active} active task(s): cancel them or wait for them'
                )
            if info.size and not force:
                raise FailedPreconditionError(
                    f'queue "{queue}" is not empty ({info.size} task(s)); use force to delete it anyway'
                )
        except BaseException:
            if paused_by_us:
                await self.transport.call("DEL", qk.paused)
            raise
        deleted = 0
        pattern = _glob_escape(qk.prefix) + "*"
        for _ in range(5):  # later passes catch keys written while the first one ran
            found = 0
            async for keys in self._scan(qk, pattern):
                keys = [k for k in keys if k != qk.paused]
                found += len(keys)
                if keys:
                    deleted += int(await self.transport.call("UNLINK", *keys))
            if not found:
                break
        unlinked = int(await self.transport.call("UNLINK", qk.paused))
        deleted += 0 if paused_by_us else unlinked
        await self.transport.call("SREM", ALL_QUEUES, queue)
        return deleted

    async def _scan(self, qk: QueueKeys, pattern: str) -> AsyncIterator[list[str]]:
        """SCAN MATCH on the node that owns the queue's slot, yielding batches of key names."""
        async for keys in self.transport.scan_slot_of(qk.pending, pattern):
            yield [text(k) for k in keys]

    # -- tasks --------------------------------------------------------------------------------------

    async def task(self, queue: str, task_id: str) -> TaskInfo:
        """One task's info; raises QueueNotFoundError, or TaskNotFoundError if its hash or message is gone."""
        qk = await self.require_queue(queue)
        fields = hash_fields(await self.transport.call("HGETALL", qk.task(task_id)))
        if "msg" not in fields:
            raise TaskNotFoundError(f'task "{task_id}" not found in queue "{queue}"')
        state = TaskState(fields.get("state", b"pending").decode())
        score = None
        if state in (TaskState.SCHEDULED, TaskState.RETRY, TaskState.ACTIVE):
            zset = qk.lease if state is TaskState.ACTIVE else container(qk, state)
            score = await self.transport.call("ZSCORE", zset, task_id)
        return self._info(fields, state, score)

    def _info(self, fields: dict[str, bytes], state: TaskState, score: Any) -> TaskInfo:
        now = self.clock()
        msg = decode_task_message(fields["msg"])
        nxt = None
        orphaned = False
        if state is TaskState.PENDING:
            nxt = from_unix(now)
        elif state in (TaskState.SCHEDULED, TaskState.RETRY) and score is not None:
            nxt = from_unix(float(score))
        elif state is TaskState.ACTIVE:
            orphaned = score is None or float(score) < now
        if not msg.group_key and "group" in fields:
            msg.group_key = fields["group"].decode()
        return task_info(msg, state, next_process_at=nxt, result=fields.get("result"), is_orphaned=orphaned)

    async def list_tasks(
        self, queue: str, state: TaskState, start: int, stop: int, *, group: str | None = None
    ) -> list[TaskInfo]:
        """Tasks ``start..stop`` (0-based, inclusive) of ``state``; pending in dequeue order (the
        next one first), zsets by score (the soonest or oldest first)."""
        qk = await self.require_queue(queue)
        key = container(qk, state, group)
        if state is TaskState.PENDING:
            ids = [text(x) for x in reversed(await self.transport.call("LRANGE", key, -stop - 1, -start - 1))]
        elif state is TaskState.ACTIVE:
            ids = [text(x) for x in await self.transport.call("LRANGE", key, start, stop)]
        else:
            ids = [
                m for m, _ in score_pairs(await self.transport.call("ZRANGE", key, start, stop, "WITHSCORES"))
            ]
        if not ids:
            return []
        ops = [Op.command("HGETALL", qk.task(i)) for i in ids]
        if state in (TaskState.SCHEDULED, TaskState.RETRY):
            ops += [Op.command("ZSCORE", key, i) for i in ids]
        elif state is TaskState.ACTIVE:
            ops += [Op.command("ZSCORE", qk.lease, i) for i in ids]
        replies = _raise_errors(await self.transport.batch(ops))
        scores = replies[len(ids) :] or [None] * len(ids)
        out = []
        for raw, score in zip(replies[: len(ids)], scores, strict=True):
            fields = hash_fields(raw)
            if "msg" in fields:  # an ID whose hash is gone (deleted under us) is skipped
                out.append(self._info(fields, state, score))
        return out

    async def apply_one(self, queue: str, task_id: str, action: Action) -> None:
        """Delete, run or archive one task, refusing what does not apply to its current state."""
        qk = await self.require_queue(queue)
        for attempt in range(5):
            state_b, group_b, lock_b = await self.transport.call(
                "HMGET", qk.task(task_id), "state", "group", "unique_key"
            )
            if state_b is None:
                if attempt:  # it existed a moment ago: our own (re-sent) call or another admin removed it
                    return
                raise TaskNotFoundError(f'task "{task_id}" not found in queue "{queue}"')
            state = TaskState(text(state_b))
            if attempt and _DONE_STATE.get(action) == state.value:
                return
            _check_action(action, state, task_id)
            group = text(group_b) if group_b else None
            if state is TaskState.AGGREGATING and not group:
                msg = decode_task_message(await self.transport.call("HGET", qk.task(task_id), "msg"))
                group = msg.group_key
            locks = {task_id: text(lock_b)} if lock_b else {}
            moved, _ = await self._apply(action, qk, state, group, [task_id], locks)
            if moved:
                return
        raise AsynqError(f'task "{task_id}" kept changing state; try again')

    async def apply_all(
        self, queue: str, state: TaskState, action: Action, *, group: str | None = None
    ) -> int:
        """Delete, run or archive every task of ``state``, ``BATCH`` IDs per script call.

        Stops after as many tasks as the container held at the start, so it does not chase
        producers that keep adding; tasks that changed state under it are skipped."""
        qk = await self.require_queue(queue)
        if state not in ALLOWED[action]:
            raise FailedPreconditionError(f"cannot {action} all {state.value} tasks")
        key = container(qk, state, group)
        is_list = state is TaskState.PENDING
        budget = int(await self.transport.call("LLEN" if is_list else "ZCARD", key))
        done = seen = skip = 0
        while seen < budget:
            n = min(BATCH, budget - seen)
            if is_list:  # from the tail: the script's LREM -1 then finds each ID at once
                raw = await self.transport.call("LRANGE", key, -skip - n, -skip - 1)
            else:
                raw = await self.transport.call("ZRANGE", key, skip, skip + n - 1)
            ids = [text(x) for x in raw]
            if not ids:
                break
            locks: dict[str, str] = {}
            if action == "delete":
                held = await self.transport.batch([Op.command("HGET", qk.task(i), "unique_key") for i in ids])
                locks = {i: text(v) for i, v in zip(ids, held, strict=True) if isinstance(v, bytes) and v}
            moved, dropped = await self._apply(action, qk, state, group, ids, locks)
            done += moved
            seen += len(ids)
            skip += len(ids) - moved - dropped
        return done

    async def _apply(
        self,
        action: Action,
        qk: QueueKeys,
        state: TaskState,
        group: str | None,
        ids: list[str],
        locks: dict[str, str],
    ) -> tuple[int, int]:
        src = container(qk, state, group)
        hashes = [qk.task(i) for i in ids]
        grp = group if state is TaskState.AGGREGATING and group else ""
        if action == "delete":
            lock_keys: list[str] = []
            lock_idx: list[EncodableArg] = []
            for i in ids:
                lock = locks.get(i, "")
                if lock.startswith(qk.prefix):  # a lock outside the queue's slot cannot be declared
                    lock_keys.append(lock)
                    lock_idx.append(len(lock_keys))
                else:
                    lock_idx.append(0)
            reply = await self.transport.script(
                scripts.DELETE,
                [src, qk.groups, *hashes, *lock_keys],
                [state.value, grp, len(ids), *ids, *lock_idx],
            )
        elif action == "run":
            reply = await self.transport.script(
                scripts.RUN,
                [src, qk.pending, qk.groups, *hashes],
                [state.value, grp, int(self.clock() * 1e9), *ids],
            )
        else:
            reply = await self.transport.script(
                scripts.ARCHIVE,
                [src, qk.archived, qk.groups, *hashes],
                [state.value, grp, int(self.clock()), *ids],
            )
            if reply[0]:
                await self.trim_archive(qk)
        return int(reply[0]), int(reply[1])

    async def trim_archive(self, qk: QueueKeys) -> int:
        """Drop archived tasks older than 90 days or beyond the newest 10,000, hashes included."""
        return await trim_archive(self.transport, qk, self.clock())

    async def update_payload(self, queue: str, task_id: str, payload: bytes) -> TaskInfo:
        """Replace the payload of a scheduled task and return its new info. Raises QueueNotFoundError,
        TaskNotFoundError, FailedPreconditionError when the task is not scheduled, and AsynqError when it
        changed under every one of five tries."""
        qk = await self.require_queue(queue)
        for _ in range(5):
            state_b, raw = await self.transport.call("HMGET", qk.task(task_id), "state", "msg")
            if raw is None:
                raise TaskNotFoundError(f'task "{task_id}" not found in queue "{queue}"')
            if state_b != b"scheduled":
                raise FailedPreconditionError(
                    f'task "{task_id}" is {text(state_b or b"?")}: '
                    "only a scheduled task's payload can change"
                )
            msg = decode_task_message(raw)
            msg.payload = payload
            new = msg.SerializeToString()
            if int(
                await self.transport.script(
                    scripts.UPDATE_PAYLOAD, [qk.task(task_id), qk.scheduled], [task_id, raw, new]
                )
            ):
                return await self.task(queue, task_id)
        raise AsynqError(f'task "{task_id}" kept changing; try again')

    # -- servers and schedulers ---------------------------------------------------------------------

    async def servers(self) -> list[ServerInfo]:
        """Servers whose heartbeat has not expired, sorted by host, pid and ID, each with its running tasks
        (oldest first); an undecodable record is skipped."""
        now = self.clock()
        keys = [text(k) for k in await self.transport.call("ZRANGEBYSCORE", ALL_SERVERS, now, "+inf")]
        raws = await self.transport.batch([Op.command("GET", k) for k in keys])
        records = []
        for raw in raws:
            if isinstance(raw, bytes):  # expired between the two reads: skipped
                try:
                    records.append(decode_server_info(raw))
                except MalformedTaskError:
                    continue
        wraws = await self.transport.batch(
            [Op.command("HVALS", workers_key(r.host, r.pid, r.server_id)) for r in records]
        )
        out = []
        for rec, workers in zip(records, wraws, strict=True):
            active = []
            for w in workers if isinstance(workers, list) else []:
                try:
                    active.append(decode_worker_info(bytes(w)))
                except MalformedTaskError:
                    continue
            active.sort(key=lambda w: w.started)
            out.append(
                ServerInfo(
                    id=rec.server_id,
                    host=rec.host,
                    pid=rec.pid,
                    concurrency=rec.concurrency,
                    queues=rec.queues,
                    strict_priority=rec.strict_priority,
                    status=rec.status,
                    started=rec.started,
                    active_workers=active,
                )
            )
        out.sort(key=lambda s: (s.host, s.pid, s.id))
        return out

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """The entries of every live scheduler, sorted by spec and ID; an undecodable entry is skipped."""
        now = self.clock()
        keys = [text(k) for k in await self.transport.call("ZRANGEBYSCORE", ALL_SCHEDULERS, now, "+inf")]
        lists = await self.transport.batch([Op.command("LRANGE", k, 0, -1) for k in keys])
        out = []
        for items in lists:
            for raw in items if isinstance(items, list) else []:
                try:
                    entry = decode_entry(bytes(raw))
                except MalformedTaskError:
                    continue
                out.append(
                    SchedulerEntryInfo(
                        id=entry.id,
                        spec=entry.spec,
                        task_type=entry.task_type,
                        task_payload=entry.task_payload,
                        options=list(entry.enqueue_options),
                        next_enqueue_at=entry.next_enqueue,
                        prev_enqueue_at=entry.prev_enqueue,
                    )
                )
        out.sort(key=lambda e: (e.spec, e.id))
        return out

    async def scheduler_events(self, entry_id: str, start: int, stop: int) -> list[SchedulerEnqueueEventInfo]:
        """Enqueue events of a scheduler entry, newest first."""
        pairs = await self.transport.call(
            "ZREVRANGE", scheduler_history_key(entry_id), start, stop, "WITHSCORES"
        )
        out = []
        for raw, score in score_pairs_raw(pairs):
            ev = SchedulerEnqueueEvent()
            try:
                ev.ParseFromString(bytes(raw))
            except DecodeError:
                continue
            when = from_timestamp(ev.enqueue_time) or datetime.fromtimestamp(float(score), tz=UTC)
            out.append(SchedulerEnqueueEventInfo(ev.task_id, when))
        return out

    # -- Redis itself -------------------------------------------------------------------------------

    async def cluster_shards(self) -> list[Shard]:
        """The cluster's shards (slot ranges and nodes, master first) from CLUSTER SHARDS."""
        return parse_cluster_shards(await self.transport.cluster_shards())

    async def redis_info(self) -> tuple[list[RedisNodeInfo], dict[str, str]]:
        """INFO of the server (or of every cluster node, masters first) and, for a cluster,
        CLUSTER INFO."""
        if not self.transport.is_cluster:
            single = parse_info(await self.transport.call("INFO"))
            return [_node_info(self.transport.description, "", "master", single)], {}
        cluster_info = parse_info(await self.transport.call("CLUSTER INFO"))
        nodes: list[RedisNodeInfo] = []
        for shard in await self.cluster_shards():
            for node in shard.nodes:
                info: dict[str, str] = {}
                try:
                    info = parse_info(
                        await self.transport.call_on_addr(node.host, node.port, node.role, "INFO")
                    )
                except Exception:  # a node that fails to answer is shown without figures
                    info = {}
                nodes.append(_node_info(node.addr, node.node_id, node.role, info))
        nodes.sort(key=lambda n: (n.role != "master", n.addr))
        return nodes, cluster_info


# What queue_infos counts per state: (state, command, QueueKeys attribute).
_STATE_COUNTS = (
    ("pending", "LLEN", "pending"),
    ("active", "LLEN", "active"),
    ("scheduled", "ZCARD", "scheduled"),
    ("retry", "ZCARD", "retry"),
    ("archived", "ZCARD", "archived"),
    ("completed", "ZCARD", "completed"),
)
# The queue's own containers whose memory a queue's estimate adds to its sampled tasks'.
_MEMORY_CONTAINERS = ("pending", "active", "lease", "scheduled", "retry", "archived", "completed")


def _check_action(action: Action, state: TaskState, task_id: str) -> None:
    if state in ALLOWED[action]:
        return
    if state is TaskState.ACTIVE:
        raise FailedPreconditionError(f'task "{task_id}" is active: cancel it instead')
    if action == "run" and state is TaskState.PENDING:
        raise FailedPreconditionError(f'task "{task_id}" is already pending')
    if action == "archive" and state is TaskState.ARCHIVED:
        raise FailedPreconditionError(f'task "{task_id}" is already archived')
    raise FailedPreconditionError(f'cannot {action} task "{task_id}": it is {state.value}')


def _node_info(addr: str, node_id: str, role: str, info: dict[str, str]) -> RedisNodeInfo:
    def num(name: str) -> int:
        try:
            return int(info.get(name, 0))
        except (TypeError, ValueError):
            return 0

    return RedisNodeInfo(
        addr=addr,
        node_id=node_id,
        role=role,
        version=info.get("redis_version", "?"),
        uptime_days=num("uptime_in_days"),
        connections=num("connected_clients"),
        memory_used=num("used_memory"),
        memory_peak=num("used_memory_peak"),
    )


def _raise_errors(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)
