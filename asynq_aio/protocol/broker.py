"""Broker: one async method per storage operation, speaking TaskMessage, never raw keys to callers.

Everything above this module (client, server components, inspector) calls these methods; only this
module and ``keys.py`` know the layout, and only ``scripts/*.lua`` change state in more than one key.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from asynq_aio._errors import DuplicateTaskError, MalformedTaskError, TaskIDConflictError
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.ops import EncodableArg
from asynq_aio.protocol._redis.ops import Op as Op  # re-exported: the server's components hold script calls
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.archive import ARCHIVE_MAX, ARCHIVE_TTL, trim_archive
from asynq_aio.protocol.codec import (
    ServerRecord,
    TaskMessage,
    WorkerRecord,
    decode_fetched_message,
    encode_server_info,
    encode_worker_info,
)
from asynq_aio.protocol.keys import (
    ALL_QUEUES,
    ALL_SERVERS,
    ALL_WORKERS,
    CANCEL_CHANNEL,
    QueueKeys,
    queue_keys,
    server_info_key,
    workers_key,
)
from asynq_aio.protocol.replies import hash_fields, text

T = TypeVar("T")

STATS_TTL = timedelta(days=90)
# Most tasks one enqueue.lua call stores: Redis runs nothing else while a script runs. A task
# costs Redis the same ~13 us inside a batch as in its own call (measured on a loaded 2-core box),
# so 128 tasks hold it ~1.6 ms; 256 or 1,000 per call measured no more throughput.
ENQUEUE_CHUNK = 128
# A producer's enqueue sequence numbers in a queue are bits of fence bitmaps of 2**16 bits (8 KiB
# at most) each; a bitmap expires FENCE_TTL seconds after its last write. The transport re-sends a
# call within its retry budget (30 s by default), so ten minutes is far beyond any re-send.
FENCE_EPOCH_BITS = 16
FENCE_TTL = 600
DEQUEUE_TAIL = 32  # shortest pending tail a dequeue reports back (the IDs the next dequeue names)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """What the client wants stored: the message plus where it waits."""

    msg: TaskMessage
    process_at: float | None = None  # unix s; None = pending now
    unique_ttl: int = 0  # s; 0 = not unique


@dataclass(frozen=True, slots=True)
class Dequeued:
    """A task handed to this server: its raw message bytes (decoded lazily by the processor) and
    the token of the attempt the dequeue started (every outcome of this run names it)."""

    queue: str
    task_id: str
    raw: bytes
    attempt: str
    lease_until: float  # the lease expiry in Redis (unix s) as the dequeue wrote it


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A flow-control limit as dequeue_limited.lua applies it to one queue's candidates.

    ``kind`` "rate": at most one start per ``interval_ms``, with up to ``tolerance_ms`` of starts
    taken ahead (the burst); "cap": at most ``cap`` tasks leased at once. ``task_type`` ("" = every
    type) picks the tasks it applies to, ``field`` ("" = none) a top-level JSON payload field whose
    value keys the limit (one state per value). ``rule_id`` names its state keys: every worker that
    applies the same rule must derive the same ID."""

    kind: str
    rule_id: str
    task_type: str = ""
    field: str = ""
    interval_ms: float = 0.0
    tolerance_ms: float = 0.0
    cap: int = 0


@dataclass(frozen=True, slots=True)
class Limited:
    """A limited dequeue found tasks but every one was held back by a limit: ask again after
    ``retry_after`` seconds (the next start a rate limit allows; a short poll for a cap)."""

    retry_after: float
    capped: bool


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A stored task whose ``msg`` cannot be decoded (or names another queue or ID)."""

    task_id: str
    queue: str
    raw: bytes
    reason: str


#: The type of the placeholder message an undecodable record is archived under (its bytes are the
#: placeholder's payload).
MALFORMED_TYPE = "asynq-aio:malformed"


class Paused:
    """Sentinel result of a dequeue from a paused queue."""


PAUSED = Paused()


def _daily_expire_at(now: float) -> int:
    day = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((day + STATS_TTL).timestamp())


class Broker:
    """The Redis implementation of the storage operations: the client's enqueues, the worker side (the
    ``WorkerBroker`` of server/storage.py) and what the inspector shares. It keeps per-queue state between
    calls (the pending tail last seen, a dequeue given up on, this producer's enqueue sequence numbers)."""

    def __init__(self, transport: Transport, *, clock: Clock = time.time) -> None:
        self.transport = transport
        self.clock = clock
        # Expected pending tail per queue, as the last dequeue reply reported it (rightmost first).
        self._tails: dict[str, list[str]] = {}
        # Attempt tokens: unique per dequeue call (this broker's random prefix and a counter), the
        # same on a re-send of that call, so a re-sent dequeue recognises what it already took.
        self._attempt_prefix = uuid.uuid4().hex[:12]
        self._attempts = itertools.count(1)
        # This producer's next enqueue sequence number per queue (see enqueue.lua's fence).
        self._fence_next: dict[str, int] = {}
        # Per queue, a dequeue call given up on (timeout, lost connection, cancelled) that may
        # still have run: its token and the IDs it named. The next dequeue of the queue re-sends
        # it first, so what it took is handed out now, not left in active until its lease expires.
        self._unsettled: dict[str, tuple[str, list[str], float]] = {}
        # The same for limited dequeues: the token and lease of a call given up on (its record of the
        # IDs it took lets the re-sent call hand them back).
        self._unsettled_limited: dict[str, tuple[str, float]] = {}

    # -- enqueue ------------------------------------------------------------------------------------

    def enqueue_ops(
        self, reqs: Sequence[EnqueueRequest], *, chunk: int | None = None
    ) -> list[tuple[Op, list[int]]]:
        """The requests as ``enqueue.lua`` calls: grouped by queue (one call may only touch one
        queue's slot), at most ``chunk`` tasks per call so one call does not hold Redis for long.
        Each op comes with the indexes in ``reqs`` of its tasks, in order; the ops of one queue are
        in the caller's order, so sending them in order keeps pending in the caller's order.

        Every task draws this producer's next sequence number in its queue; the script marks it
        in a fence bitmap when it stores the task, so a re-send of the same op (a lost reply)
        recognises its own work even after a worker has run the task and deleted it."""
        size = max(1, min(chunk or ENQUEUE_CHUNK, 1 << FENCE_EPOCH_BITS))
        now = self.clock()
        now_ns = int(now * 1e9)
        by_queue: dict[str, list[int]] = {}
        for i, req in enumerate(reqs):
            by_queue.setdefault(req.msg.queue, []).append(i)
        out: list[tuple[Op, list[int]]] = []
        for queue, idxs in by_queue.items():
            for start in range(0, len(idxs), size):
                part = idxs[start : start + size]
                fence, first = self._draw_sequence(queue, len(part))
                keys: list[str] = [fence]
                args: list[EncodableArg] = [now_ns, FENCE_TTL]
                for seq, i in enumerate(part, start=first):
                    req = reqs[i]
                    tkeys, kind, score = _enqueue_target(req, now)
                    keys += tkeys
                    # the score keeps its milliseconds: process_in=0.5 is due in half a second
                    # (Go reads a fractional score too: its forwarder compares whole seconds)
                    spec = f"{seq} {score:.3f} {req.unique_ttl} {len(tkeys)} {kind} "
                    args += [req.msg.SerializeToString(), req.msg.id, spec + req.msg.group_key]
                out.append((Op.eval(scripts.ENQUEUE, keys, args), part))
        return out

    def enqueue_op(self, req: EnqueueRequest) -> Op:
        """One task as one ``enqueue.lua`` call (the scheduler runs it inside its fire script)."""
        ((op, _),) = self.enqueue_ops([req])
        return op

    def _draw_sequence(self, queue: str, n: int) -> tuple[str, int]:
        """``n`` consecutive sequence numbers of this producer in ``queue``, all in one fence
        bitmap (a call names one): that bitmap's key and the first number's bit in it."""
        size = 1 << FENCE_EPOCH_BITS
        seq = self._fence_next.get(queue, 0)
        if seq % size + n > size:  # would straddle two bitmaps: start the next one
            seq += size - seq % size
        self._fence_next[queue] = seq + n
        epoch, bit = divmod(seq, size)
        return queue_keys(queue).enqueue_fence(self._attempt_prefix, epoch), bit

    async def enqueue(self, req: EnqueueRequest) -> None:
        """Store one task; raises TaskIDConflictError / DuplicateTaskError."""
        (code,) = await self.transport.run_op(self.enqueue_op(req))
        _check_enqueue(req.msg, code)

    async def enqueue_many(
        self, reqs: Sequence[EnqueueRequest], *, chunk: int | None = None
    ) -> list[Exception | None]:
        """Store many tasks: one script call per queue and chunk, all in one pipeline (per node in a
        cluster); one result per request (None = stored)."""
        ops = self.enqueue_ops(reqs, chunk=chunk)
        replies = await self.transport.batch([op for op, _ in ops])
        return _batch_outcomes(reqs, ops, replies)

    async def enqueue_durable(
        self, reqs: Sequence[EnqueueRequest], replicas: int, timeout: float
    ) -> tuple[list[Exception | None], int]:
        """Store tasks like :meth:`enqueue_many`, then WAIT on each written node until ``replicas``
        replicas hold them (or ``timeout`` seconds pass); also returns the fewest replicas that did."""
        ops = self.enqueue_ops(reqs)
        # any key of an op finds its node: all of them share the queue's slot
        route = [queue_keys(reqs[part[0]].msg.queue).task(reqs[part[0]].msg.id) for _, part in ops]
        replies, acked = await self.transport.batch_then_wait([op for op, _ in ops], route, replicas, timeout)
        return _batch_outcomes(reqs, ops, replies), acked

    async def register_queues(self, queues: Sequence[str]) -> None:
        """Add queue names to ``asynq:queues`` (its own slot, so never inside a queue's script)."""
        if queues:
            await self.transport.call("SADD", ALL_QUEUES, *queues)

    # -- dequeue ------------------------------------------------------------------------------------

    async def dequeue(self, queue: str, count: int, lease_until: float) -> list[Dequeued] | Paused:
        """Take up to ``count`` tasks from the right end of pending into active with a lease.

        Needs the IDs up front so their hashes are declared keys: it names the tail it last saw
        (or reads it), and the script hands back the new tail for the next call.
        """
        qk = queue_keys(queue)
        out: list[Dequeued] = []
        # The new tail the script reports is at least this long, so a short batch (one freed slot)
        # does not cap the size of the next one.
        tail_len = max(count, DEQUEUE_TAIL)
        for _ in range(4):  # a few rounds when another server moved the tail under us
            unsettled = self._unsettled.pop(queue, None)
            if unsettled is not None:  # re-send the call given up on: same token, same IDs
                # (no more IDs than the caller has room for; the script checks each ID on its own,
                # so the rest can be re-sent by the next call)
                attempt, named, lease = unsettled
                expected = named[:count]
                if named[count:]:
                    self._unsettled[queue] = (attempt, named[count:], lease)
            else:
                expected = self._tails.get(queue, [])[:count]
                if not expected:
                    if out:  # took all the cached tail named; the rest comes with the next call
                        return out
                    tail = await self.transport.call("LRANGE", qk.pending, -count, -1)
                    expected = [text(x) for x in reversed(tail)]
                    if not expected:
                        if await self.transport.call("EXISTS", qk.paused):
                            return PAUSED
                        return out
                attempt = f"{self._attempt_prefix}-{next(self._attempts)}"
                lease = float(int(lease_until))
            keys = [qk.pending, qk.active, qk.lease, qk.paused, *(qk.task(i) for i in expected)]
            try:
                # a re-send names the lease its first send wrote: the tasks it took carry that one
                reply = await self.transport.script(
                    scripts.DEQUEUE, keys, [int(lease), tail_len, attempt, *expected]
                )
            except BaseException as exc:
                held = self._unsettled.get(queue)
                rest = held[1] if held is not None and held[0] == attempt else []
                self._unsettled[queue] = (attempt, expected + rest, lease)
                if not out or not isinstance(exc, Exception):
                    raise
                # The tasks of the earlier rounds are already active under our lease: hand them
                # out (raising would strand them until their lease ran out).
                self._tails.pop(queue, None)
                return out
            if reply[0] == -1:
                self._tails.pop(queue, None)
                return PAUSED
            matched, msgs, newtail = int(reply[0]), reply[1], reply[2]
            self._tails[queue] = [text(x) for x in newtail]
            for i in range(matched):
                raw = msgs[i]
                if raw is not None:  # b"" was moved to active too: hand it out to be archived
                    out.append(Dequeued(queue, expected[i], bytes(raw), attempt, lease))
            count -= matched
            if count <= 0 or not newtail:
                return out
        return out

    async def dequeue_limited(
        self,
        queue: str,
        count: int,
        lease_until: float,
        rules: Sequence[LimitRule],
        *,
        window: int = 100,
        cap_poll: float = 0.05,
    ) -> list[Dequeued] | Paused | Limited:
        """Take up to ``count`` tasks that every applicable rule allows, from the ``window`` oldest of
        pending (dequeue_limited.lua); a held-back task stays in pending. Returns [] when pending is
        empty, Limited when it is not but nothing may start now. A call given up on is re-sent first by
        the next call of the queue (same token), which hands back what it took."""
        qk = queue_keys(queue)
        unsettled = self._unsettled_limited.pop(queue, None)
        if unsettled is not None:
            attempt, lease = unsettled
        else:
            attempt, lease = f"{self._attempt_prefix}-{next(self._attempts)}", float(int(lease_until))
        args: list[EncodableArg] = [int(lease), count, attempt, window, qk.task_prefix, len(rules)]
        for r in rules:
            a, b = (r.interval_ms, r.tolerance_ms) if r.kind == "rate" else (r.cap, 0)
            args += [r.kind, r.task_type, r.field, qk.limit_state(r.rule_id), a, b]
        keys = [qk.pending, qk.active, qk.lease, qk.paused, qk.dequeue_record(attempt)]
        try:
            reply = await self.transport.script(scripts.DEQUEUE_LIMITED, keys, args)
        except BaseException:
            self._unsettled_limited[queue] = (attempt, lease)
            raise
        if int(reply[0]) == -1:
            return PAUSED
        taken, ids, msgs, retry_ms, capped, _candidates = reply
        if int(taken) == 0 and (int(retry_ms) >= 0 or int(capped)):
            # held back by a limit; candidates that were only dropped (their hash was deleted) or a
            # re-sent call whose tasks are no longer leased to it are not "held back": that is []
            waits = [int(retry_ms) / 1000] if int(retry_ms) >= 0 else []
            if int(capped):
                waits.append(cap_poll)
            return Limited(retry_after=max(0.001, min(waits)), capped=bool(int(capped)))
        return [
            Dequeued(queue, text(tid), bytes(raw), attempt, lease)
            for tid, raw in zip(ids, msgs, strict=True)
            if raw is not None
        ]

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        """Block until ``queue`` has a pending task (False after ``timeout``).

        The wake-up reports the tail of pending, the next task to take: it becomes the expected
        tail, so the dequeue that follows names it at once instead of reading the list first (one
        round trip less between an enqueue and its handler starting on an idle worker).
        """
        tail = await self.transport.wait_nonempty(queue_keys(queue).pending, timeout)
        if tail is None:
            return False
        self._tails[queue] = [text(tail)]
        return True

    # -- outcomes -----------------------------------------------------------------------------------

    def ack_op(self, msg: TaskMessage, *, attempt: str = "", now: float | None = None) -> Op:
        """Success: delete, or keep as completed for ``msg.retention`` seconds. With ``attempt``
        (the dequeue's token) it applies only while that attempt still owns the task."""
        now = self.clock() if now is None else now
        qk = queue_keys(msg.queue)
        day = datetime.fromtimestamp(now, tz=UTC)
        keys = [qk.active, qk.lease, qk.task(msg.id), qk.completed, qk.processed, qk.processed_on(day)]
        if _own_lock(qk, msg):
            keys.append(msg.unique_key)
        stored = b""
        score = 0
        if msg.retention > 0:
            done = TaskMessage()
            done.CopyFrom(msg)
            done.completed_at = int(now)
            stored = done.SerializeToString()
            score = int(now) + msg.retention
        return Op.eval(scripts.ACK, keys, [msg.id, stored, score, _daily_expire_at(now), attempt])

    def ack_many_op(
        self,
        queue: str,
        msgs: Sequence[TaskMessage],
        *,
        attempts: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Op:
        """Success of many tasks of one queue as one script call: what ``ack_op`` does for each, with
        one reply per task (1 acked, 0 no longer active). One call instead of one per task is what
        lets a worker ack at Redis's speed rather than at the client's per-command cost."""
        now = self.clock() if now is None else now
        qk = queue_keys(queue)
        day = datetime.fromtimestamp(now, tz=UTC)
        keys = [qk.active, qk.lease, qk.completed, qk.processed, qk.processed_on(day)]
        args: list[EncodableArg] = [_daily_expire_at(now)]
        tokens = attempts if attempts is not None else [""] * len(msgs)
        for msg, attempt in zip(msgs, tokens, strict=True):
            keys.append(qk.task(msg.id))
            has_lock = _own_lock(qk, msg)
            if has_lock:
                keys.append(msg.unique_key)
            stored = b""
            score = 0
            if msg.retention > 0:
                done = TaskMessage()
                done.CopyFrom(msg)
                done.completed_at = int(now)
                stored = done.SerializeToString()
                score = int(now) + msg.retention
            args += [msg.id, stored, score, 1 if has_lock else 0, attempt]
        return Op.eval(scripts.ACK_MANY, keys, args)

    def fail_op(
        self,
        msg: TaskMessage,
        *,
        error: str,
        archive: bool,
        retry_at: float = 0,
        is_failure: bool = True,
        only_if_lease_expired_by: float = 0,
        attempt: str = "",
        now: float | None = None,
    ) -> Op:
        """A failed attempt: retry at ``retry_at``, or archive; with ``attempt``, only while that
        attempt still owns the task (recovery passes none: it claims an expired lease instead)."""
        now = self.clock() if now is None else now
        qk = queue_keys(msg.queue)
        day = datetime.fromtimestamp(now, tz=UTC)
        updated = TaskMessage()
        updated.CopyFrom(msg)
        updated.error_msg = error
        updated.last_failed_at = int(now)
        if not archive and is_failure:  # as Go's Retry: only a failure uses up a retry
            updated.retried = msg.retried + 1
        keys = [
            qk.active,
            qk.lease,
            qk.task(msg.id),
            qk.archived if archive else qk.retry,
            qk.processed,
            qk.failed,
            qk.processed_on(day),
            qk.failed_on(day),
        ]
        args: list[EncodableArg] = [
            msg.id,
            updated.SerializeToString(),
            int(now) if archive else int(retry_at),
            "archived" if archive else "retry",
            1 if is_failure else 0,
            _daily_expire_at(now),
            int(only_if_lease_expired_by),
            attempt,
        ]
        return Op.eval(scripts.FAIL, keys, args)

    def requeue_op(self, queue: str, task_id: str, *, attempt: str = "") -> Op:
        """Back to the head of pending (shutdown); with ``attempt``, only if it still owns the task."""
        qk = queue_keys(queue)
        return Op.eval(
            scripts.REQUEUE,
            [qk.active, qk.lease, qk.pending, qk.task(task_id)],
            [task_id, int(self.clock() * 1e9), attempt],
        )

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """Send outcome ops in one pipeline (per node in a cluster)."""
        return await self.transport.batch(ops)

    async def extend_leases(self, queue: str, attempts: Sequence[tuple[str, str]], until: float) -> list[str]:
        """Extend the leases of ``(task ID, attempt token)`` pairs to ``until``; returns the IDs whose
        attempt no longer owns the task (recovered, or run by another attempt): not extended."""
        if not attempts:
            return []
        qk = queue_keys(queue)
        keys = [qk.lease, *(qk.task(tid) for tid, _ in attempts)]
        args: list[EncodableArg] = [int(until)]
        for tid, token in attempts:
            args += [tid, token]
        reply = await self.transport.script(scripts.EXTEND_LEASES, keys, args)
        return [tid for (tid, _), ok in zip(attempts, reply, strict=True) if int(ok) != 1]

    # -- time-based moves ---------------------------------------------------------------------------

    async def forward(self, queue: str, *, batch: int = 100) -> int:
        """Move due scheduled and retry tasks to pending, or to their group's zset when the task hash
        names a group (so group + process_in aggregates); returns how many moved."""
        qk = queue_keys(queue)
        now = self.clock()
        moved = 0
        for src in (qk.scheduled, qk.retry):
            while True:
                ids = [
                    text(x)
                    for x in await self.transport.call(
                        "ZRANGEBYSCORE", src, "-inf", f"{now:.3f}", "LIMIT", 0, batch
                    )
                ]
                if not ids:
                    break
                # the destination of each task is a declared key, so read the group fields first
                groups = await self.transport.batch([Op.command("HGET", qk.task(i), "group") for i in ids])
                keys = [src, qk.pending, qk.groups]
                args: list[EncodableArg] = [f"{now:.3f}", int(now * 1e9)]
                for tid, group in zip(ids, groups, strict=True):
                    name = text(group) if isinstance(group, bytes | str) else ""
                    keys += [qk.task(tid), qk.group(name) if name else qk.pending]
                    args += [tid, name]
                moved += int(await self.transport.script(scripts.FORWARD, keys, args))
                if len(ids) < batch:
                    break
        return moved

    async def next_dues(self, queues: Sequence[str]) -> list[float | Exception | None]:
        """Each queue's earliest score in scheduled or retry (unix s; None when both are empty), in
        one batch of read-only script calls: at 1,000 idle queues this look is most of what the
        forwarder does, and one batch costs a fraction of a call per queue. A queue whose read
        failed has the error in its place."""
        ops = [Op.eval(scripts.NEXT_DUE, [(qk := queue_keys(q)).scheduled, qk.retry], []) for q in queues]
        return await self._each_answer(ops, lambda r: None if r is None else float(text(r)))

    async def holds_tasks(self, queues: Sequence[str]) -> list[bool | Exception]:
        """Whether each queue has an active ID or a lease, the only places the recoverer looks (one
        batch of read-only calls, as :meth:`next_dues`). A queue whose read failed has the error."""
        ops = [Op.eval(scripts.HOLDS_TASKS, [(qk := queue_keys(q)).active, qk.lease], []) for q in queues]
        return await self._each_answer(ops, lambda r: int(r) > 0)

    async def _each_answer(self, ops: Sequence[Op], answer: Callable[[Any], T]) -> list[T | Exception]:
        """One batch of per-queue looks: each reply through ``answer``, a failed one as its error."""
        return [r if isinstance(r, Exception) else answer(r) for r in await self.transport.batch(ops)]

    async def nodes_of(self, queues: Sequence[str]) -> list[str]:
        """The name of the node holding each queue's keys ("" on a single Redis): background rounds
        batch their reads per node, so a stalled node holds up only its own queues' batch."""
        return await self.transport.node_names([queue_keys(q).pending for q in queues])

    async def expired_leases(
        self, queue: str, cutoff: float, *, limit: int = 100
    ) -> list[TaskMessage | MalformedRecord]:
        """Active tasks whose lease ran out before ``cutoff`` (their worker died or stalled).

        A record that cannot be decoded comes back as a MalformedRecord instead of raising, so one
        bad task does not hide the others (nor come back first in every later round)."""
        qk = queue_keys(queue)
        ids = [
            text(x)
            for x in await self.transport.call("ZRANGEBYSCORE", qk.lease, "-inf", cutoff, "LIMIT", 0, limit)
        ]
        if not ids:
            return []
        raws = await self.transport.batch([Op.command("HGET", qk.task(i), "msg") for i in ids])
        out: list[TaskMessage | MalformedRecord] = []
        for tid, raw in zip(ids, raws, strict=True):
            if isinstance(raw, bytes) and raw:
                try:
                    out.append(decode_fetched_message(raw, queue=queue, task_id=tid))
                except MalformedTaskError as exc:
                    out.append(MalformedRecord(task_id=tid, queue=queue, raw=raw, reason=str(exc)))
            else:
                # lease without a hash: synthesise a minimal message so the fail script clears it
                out.append(TaskMessage(id=tid, queue=queue))
        return out

    def archive_malformed_op(
        self, record: MalformedRecord, *, only_if_lease_expired_by: float = 0, attempt: str = ""
    ) -> Op:
        """Archive an undecodable record, its bytes kept as the payload of a placeholder message
        (type ``asynq-aio:malformed``) so an operator can look at what was written."""
        placeholder = TaskMessage(
            id=record.task_id, queue=record.queue, type=MALFORMED_TYPE, payload=record.raw
        )
        return self.fail_op(
            placeholder,
            error=f"malformed task message: {record.reason}",
            archive=True,
            only_if_lease_expired_by=only_if_lease_expired_by,
            attempt=attempt,
        )

    async def heal_orphans(self, queue: str, *, limit: int = 1000) -> int:
        """Requeue IDs that sit in active without a lease (left by a buggy or foreign writer).

        The active list holds only running tasks (bounded by the servers' total concurrency), so
        reading it whole is cheap; ``limit`` guards against a list that grew by mistake.
        """
        qk = queue_keys(queue)
        ids = [text(x) for x in await self.transport.call("LRANGE", qk.active, 0, limit - 1)]
        if not ids:
            return 0
        scores = await self.transport.call("ZMSCORE", qk.lease, *ids)
        orphans = [i for i, score in zip(ids, scores, strict=True) if score is None]
        if not orphans:
            return 0
        now_ns = int(self.clock() * 1e9)
        ops = [
            Op.eval(scripts.HEAL_ORPHAN, [qk.active, qk.lease, qk.pending, qk.task(i)], [i, now_ns])
            for i in orphans
        ]
        return sum(1 for r in await self.transport.batch(ops) if r == 1)

    async def sample_states(
        self, queue: str, where: str, start: int, count: int
    ) -> list[tuple[str, str | None]]:
        """IDs ``start .. start+count-1`` of one state list/zset (``where``: one of ``SWEPT_STATES``)
        with the ``state`` field of each one's hash (None when the hash is gone). Cheap and bounded:
        a range read plus one pipelined HGET per ID; the sweeper walks each list a window per round."""
        qk = queue_keys(queue)
        key = _state_key(qk, where)
        cmd = "LRANGE" if where in ("pending", "active") else "ZRANGE"
        ids = [text(x) for x in await self.transport.call(cmd, key, start, start + count - 1)]
        if not ids:
            return []
        states = await self.transport.batch([Op.command("HGET", qk.task(i), "state") for i in ids])
        out: list[tuple[str, str | None]] = []
        for tid, state in zip(ids, states, strict=True):
            if isinstance(state, Exception):
                continue  # unknown this round; the next pass over the window sees it again
            out.append((tid, text(state) if isinstance(state, bytes | str) else None))
        return out

    async def fix_states(self, queue: str, found: Sequence[tuple[str, str]]) -> list[int]:
        """Reconcile each (ID, where it was seen) whose hash disagreed; one reply per item (see
        ``sweep_state.lua``: 0 nothing done, 1 state set, 2 stray ID dropped, 3 duplicate entry dropped)."""
        qk = queue_keys(queue)
        now_ns = int(self.clock() * 1e9)
        keys = [qk.pending, qk.active, qk.lease, qk.scheduled, qk.retry, qk.archived, qk.completed]
        ops = [
            Op.eval(scripts.SWEEP_STATE, [*keys, qk.task(tid)], [tid, where, now_ns]) for tid, where in found
        ]
        return [r if isinstance(r, int) else 0 for r in await self.transport.batch(ops)]

    async def needs_cleanup(self, queues: Sequence[str]) -> list[bool | Exception]:
        """Whether each queue has completed tasks past their retention or an archive beyond Asynq's
        limits (the janitor's look, one batch of read-only calls as :meth:`next_dues`). A queue whose
        read failed has the error in its place."""
        now = self.clock()
        args: list[EncodableArg] = [int(now), f"{now - ARCHIVE_TTL.total_seconds():.3f}", ARCHIVE_MAX]
        ops = [
            Op.eval(scripts.CLEANUP_DUE, [(qk := queue_keys(q)).completed, qk.archived], args) for q in queues
        ]
        return await self._each_answer(ops, lambda r: int(r) > 0)

    async def delete_expired_completed(self, queue: str, *, batch: int = 500) -> int:
        """Delete up to ``batch`` completed tasks whose retention has passed; returns how many went.
        Two calls: the IDs are read first so the script declares every key it deletes (a cluster
        node rejects undeclared keys while their slot migrates)."""
        qk = queue_keys(queue)
        now = int(self.clock())
        ids = [
            text(x)
            for x in await self.transport.call("ZRANGEBYSCORE", qk.completed, "-inf", now, "LIMIT", 0, batch)
        ]
        if not ids:
            return 0
        return int(
            await self.transport.script(
                scripts.DELETE_EXPIRED, [qk.completed, *(qk.task(i) for i in ids)], [now, *ids]
            )
        )

    # -- queues -------------------------------------------------------------------------------------

    async def trim_archive(self, queue: str) -> int:
        """Apply Asynq's archive limits to the queue (see protocol/archive.py)."""
        return await trim_archive(self.transport, queue_keys(queue), self.clock())

    async def is_paused(self, queue: str) -> bool:
        """Whether ``queue`` is paused (its ``paused`` key exists)."""
        return bool(await self.transport.call("EXISTS", queue_keys(queue).paused))

    async def pause(self, queue: str) -> bool:
        """Pause ``queue``: servers stop taking its tasks. False if it was paused already; whether the
        queue exists is not checked."""
        return bool(await self.transport.call("SET", queue_keys(queue).paused, int(self.clock()), "NX"))

    async def unpause(self, queue: str) -> bool:
        """Let servers take tasks from ``queue`` again; False if it was not paused."""
        return bool(await self.transport.call("DEL", queue_keys(queue).paused))

    async def all_queues(self) -> list[str]:
        """The names in ``asynq:queues``, sorted."""
        return sorted(text(x) for x in await self.transport.call("SMEMBERS", ALL_QUEUES))

    async def task_hash(self, queue: str, task_id: str) -> dict[str, bytes]:
        """The fields of the task's hash, values as bytes; empty when there is no such task."""
        return hash_fields(await self.transport.call("HGETALL", queue_keys(queue).task(task_id)))

    # -- servers ------------------------------------------------------------------------------------

    async def write_server_state(
        self, server: ServerRecord, workers: Sequence[WorkerRecord], ttl: float
    ) -> None:
        """Heartbeat in Asynq's format, so the Go CLI's ``server ls`` lists this server."""
        skey = server_info_key(server.host, server.pid, server.server_id)
        wkey = workers_key(server.host, server.pid, server.server_id)
        expires = int(self.clock() + ttl)
        ttl_ms = int(ttl * 1000)
        ops = [
            Op.command("SET", skey, encode_server_info(server), "PX", ttl_ms),
            Op.command("DEL", wkey),
            Op.command("ZADD", ALL_SERVERS, expires, skey),
            Op.command("ZADD", ALL_WORKERS, expires, wkey),
        ]
        if workers:
            fields: list[str | bytes] = []
            for w in workers:
                fields += [w.task_id, encode_worker_info(w)]
            ops += [Op.command("HSET", wkey, *fields), Op.command("PEXPIRE", wkey, ttl_ms)]
        for r in await self.transport.batch(ops):
            if isinstance(r, Exception):
                raise r

    async def clear_server_state(self, server: ServerRecord) -> None:
        """Delete the server's info and workers keys and their entries in the server and worker indexes (a
        clean shutdown); a command that fails is ignored, not raised."""
        skey = server_info_key(server.host, server.pid, server.server_id)
        wkey = workers_key(server.host, server.pid, server.server_id)
        await self.transport.batch(
            [
                Op.command("DEL", skey),
                Op.command("DEL", wkey),
                Op.command("ZREM", ALL_SERVERS, skey),
                Op.command("ZREM", ALL_WORKERS, wkey),
            ]
        )

    async def prune_dead_servers(self, *, grace: float = 60.0) -> int:
        """Drop entries of servers whose heartbeat expired over ``grace`` seconds ago from the server
        and worker indexes. A SIGKILLed server (Go's or ours) never clears its own; its info keys
        expire but the index members would stay forever. Readers (ours and Go's ``ListServers``)
        already skip expired members, so removing them changes no answer."""
        cutoff = f"({self.clock() - grace:.3f}"
        replies = await self.transport.batch(
            [
                Op.command("ZREMRANGEBYSCORE", ALL_SERVERS, "-inf", cutoff),
                Op.command("ZREMRANGEBYSCORE", ALL_WORKERS, "-inf", cutoff),
            ]
        )
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return sum(int(r) for r in replies)

    async def write_result(self, queue: str, task_id: str, data: bytes, *, attempt: str = "") -> bool:
        """Store a handler's result in the task hash (while the task is active, before its ack),
        only while ``attempt`` still owns the task; False when it was not written."""
        key = queue_keys(queue).task(task_id)
        return bool(await self.transport.script(scripts.WRITE_RESULT, [key], [data, attempt]))

    async def watch_task(self, queue: str, task_id: str) -> str:
        """Flag the task so that its completion or archiving is published on ``asynq-aio:done``;
        returns its state now ("" when there is no such task)."""
        return text(await self.transport.script(scripts.WATCH_TASK, [queue_keys(queue).task(task_id)], []))

    async def publish_cancel(self, task_id: str) -> None:
        """Ask whichever server runs ``task_id`` to cancel it (PUBLISH on ``asynq:cancel``, Go's channel)."""
        await self.transport.publish(CANCEL_CHANNEL, task_id)

    def queue_keys(self, queue: str) -> QueueKeys:
        """The key names of ``queue``; raises InvalidQueueName for a name that cannot be a queue's."""
        return queue_keys(queue)


def _enqueue_target(req: EnqueueRequest, now: float) -> tuple[list[str], str, float]:
    """Where one task goes: its keys (hash, destination, then unique lock and groups set when it
    has them), its kind (pending / scheduled / aggregating) and its score there."""
    msg = req.msg
    qk = queue_keys(msg.queue)
    keys = [qk.task(msg.id)]
    # ``process_at`` is set only when it was in the future as the caller's options were read, and
    # the TaskInfo the caller gets says "scheduled" then: the task is stored so even when that time
    # has passed by now (a slow first connection), and the forwarder's next round moves it.
    if msg.group_key:
        keys.append(qk.group(msg.group_key))
        kind, score = "aggregating", now
        if req.process_at is not None:
            keys[1] = qk.scheduled
            kind, score = "scheduled", req.process_at
    elif req.process_at is not None:
        keys.append(qk.scheduled)
        kind, score = "scheduled", req.process_at
    else:
        keys.append(qk.pending)
        kind, score = "pending", now
    if req.unique_ttl > 0:
        keys.append(msg.unique_key)
    if kind == "aggregating":
        keys.append(qk.groups)
    return keys, kind, score


def _own_lock(qk: QueueKeys, msg: TaskMessage) -> bool:
    """Whether the ack may release the task's unique lock: only a lock under the queue's own hash
    tag, so in the queue's slot. A foreign producer can write any name; a lock in another slot would
    make the script (and, in ``ack_many``, every other task of the call) fail with CROSSSLOT. Such a
    lock is left to expire with its TTL."""
    return bool(msg.unique_key) and msg.unique_key.startswith(qk.prefix)


def _batch_outcomes(
    reqs: Sequence[EnqueueRequest], ops: Sequence[tuple[Op, list[int]]], replies: Sequence[Any]
) -> list[Exception | None]:
    """One outcome per request from the replies of ``enqueue_ops``: a failed call is that
    error for each of its tasks, a list of codes is one code per task."""
    codes: list[Any] = [None] * len(reqs)
    for (_, part), reply in zip(ops, replies, strict=True):
        if isinstance(reply, Exception):
            for i in part:
                codes[i] = reply
        else:
            for i, code in zip(part, reply, strict=True):
                codes[i] = code
    return _enqueue_outcomes(reqs, codes)


def _enqueue_outcomes(reqs: Sequence[EnqueueRequest], replies: Sequence[Any]) -> list[Exception | None]:
    """One outcome per enqueue reply: None stored, else the error for that task."""
    out: list[Exception | None] = []
    for req, reply in zip(reqs, replies, strict=True):
        if isinstance(reply, Exception):
            out.append(reply)
            continue
        try:
            _check_enqueue(req.msg, reply)
            out.append(None)
        except (TaskIDConflictError, DuplicateTaskError) as exc:
            out.append(exc)
    return out


def _check_enqueue(msg: TaskMessage, reply: Any) -> None:
    code = int(reply)
    if code == -1:
        raise TaskIDConflictError(f"task ID {msg.id!r} already exists in queue {msg.queue!r}")
    if code == -2:
        raise DuplicateTaskError(f"duplicate task: unique lock {msg.unique_key!r} is held by another task")


SWEPT_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed")


def _state_key(qk: QueueKeys, where: str) -> str:
    if where not in SWEPT_STATES:
        raise ValueError(f"not a state list: {where!r}")
    key: str = getattr(qk, where)
    return key
