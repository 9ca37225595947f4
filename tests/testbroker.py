"""MemoryBroker: a ``WorkerBroker`` held in memory, with faults injected per method.

The server's components (processor, acker, heartbeat, forwarder, recoverer, janitor) are typed
against ``server.storage.WorkerBroker``, so each can be driven here without Redis, in milliseconds,
and made to meet the faults a cluster produces: a node that refuses (``fail``), answers slowly
(``delay``), hangs until a test lets it go (``stall``), or applies a write whose reply never comes
back (``lose_reply``: the ambiguous failure). The real-Redis tests stay; these sit beside them.

The model follows ``protocol/scripts/*.lua`` step by step for everything a component can observe:
where an ID is (pending, active with its lease, scheduled, retry, archived, completed), its hash's
state, message and attempt token, the processed/failed totals, and every call's reply in the real
shape. Outcome ops are data (``Op.command("MEM_ACK", ...)``, the Lua's arguments in order), so an op
run twice is a re-send, exactly as with the scripts. tests/test_testbroker.py runs the same scenarios
on the real ``Broker`` and compares, so the fake cannot drift from the Lua unnoticed.

Not modelled (no server component reads them): daily counters, enqueue fences, unique-lock TTLs,
the ``asynq-aio:done`` publish for watched tasks, what the aggregator does with a group once a task
reached it, and the Broker's limit of four dequeue rounds per call (the fake fills ``count`` at once).
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from asynq_aio._errors import MalformedTaskError, RedisUnavailableError, TaskIDConflictError
from asynq_aio.protocol._redis.ops import EncodableArg, Op
from asynq_aio.protocol.archive import ARCHIVE_MAX, ARCHIVE_TTL
from asynq_aio.protocol.broker import (
    MALFORMED_TYPE,
    PAUSED,
    SWEPT_STATES,
    Dequeued,
    Limited,
    LimitRule,
    MalformedRecord,
    Paused,
)
from asynq_aio.protocol.codec import (
    ServerRecord,
    TaskMessage,
    WorkerRecord,
    decode_fetched_message,
    decode_task_message,
    new_task_message,
)
from asynq_aio.protocol.keys import queue_keys, server_info_key
from asynq_aio.server.storage import WorkerBroker

__all__ = [
    "Applied",
    "FakeClock",
    "MemoryBroker",
    "QueueStore",
    "Stall",
    "StallNotReleased",
    "TaskHash",
    "as_worker_broker",
    "make_message",
]

ACK, ACK_MANY, FAIL, REQUEUE = "MEM_ACK", "MEM_ACK_MANY", "MEM_FAIL", "MEM_REQUEUE"


# -- storage ------------------------------------------------------------------------------------------


@dataclass
class TaskHash:
    """The fields of a task's hash the scripts read or write (``attempt`` is ``aio_attempt``)."""

    msg: bytes | None
    state: str | None
    attempt: str | None = None
    pending_since: int | None = None
    result: bytes | None = None
    group: str = ""
    unique_key: str = ""


@dataclass
class QueueStore:
    """One queue's keys. Lists keep Redis's orientation: index 0 is the left end (LPUSH), and a
    dequeue takes from the right end, so ``pending[-1]`` is the next task handed out."""

    pending: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    lease: dict[str, float] = field(default_factory=dict)
    scheduled: dict[str, float] = field(default_factory=dict)
    retry: dict[str, float] = field(default_factory=dict)
    archived: dict[str, float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    tasks: dict[str, TaskHash] = field(default_factory=dict)
    processed: int = 0
    failed: int = 0
    paused: bool = False

    def zset(self, where: str) -> dict[str, float]:
        z: dict[str, float] = {
            "lease": self.lease,
            "scheduled": self.scheduled,
            "retry": self.retry,
            "archived": self.archived,
            "completed": self.completed,
        }[where]
        return z

    def message(self, task_id: str) -> TaskMessage:
        """The task's stored message, decoded (what Redis's ``HGET msg`` would give)."""
        h = self.tasks[task_id]
        assert h.msg is not None, f"task {task_id} has no msg field"
        return decode_task_message(h.msg)


def by_score(z: dict[str, float]) -> list[str]:
    """Members in ZRANGE order: by score, ties by member."""
    return sorted(z, key=lambda m: (z[m], m))


def _lrem(lst: list[str], value: str) -> int:
    """LREM key 0 value: every occurrence goes."""
    n = lst.count(value)
    if n:
        lst[:] = [x for x in lst if x != value]
    return n


@dataclass(frozen=True, slots=True)
class Applied:
    """One outcome as ``run`` applied it (``kind``: ack, ack_many, fail, requeue), or a handler's
    result written (``result``), with its reply."""

    kind: str
    queue: str
    task_id: str
    attempt: str
    result: int


class FakeClock:
    """A settable clock for ``MemoryBroker.clock`` (the components themselves read ``time.time``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- faults -------------------------------------------------------------------------------------------


class StallNotReleased(RuntimeError):
    """A stall outlived its limit: the test that set it never released it (it failed first)."""


class Stall:
    """A stall a test releases: calls that reach it wait until :meth:`release`. A call waits at most
    ``limit`` seconds and then raises: a test that fails before it releases its stall would
    otherwise hang on a write the code under test shields from cancellation."""

    def __init__(self, limit: float = 5.0) -> None:
        self.entered = anyio.Event()  # set once a call is waiting here
        self.waiting = 0  # calls waiting now (a given-up call stops waiting when cancelled)
        self.limit = limit
        self._released = anyio.Event()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    async def _wait(self) -> None:
        self.waiting += 1
        self.entered.set()
        try:
            with anyio.move_on_after(self.limit) as scope:
                await self._released.wait()
            if scope.cancelled_caught:
                raise StallNotReleased(f"stall not released within {self.limit}s")
        finally:
            self.waiting -= 1


@dataclass
class _Fault:
    queue: str | None  # None: every call of the method
    make_exc: Callable[[], BaseException]
    raises: float = 0  # calls left that raise before any effect (math.inf: all)
    loses: float = 0  # calls left that apply their effect, then raise
    delay: float = 0.0
    delays: float = math.inf  # calls left that are delayed
    stall: Stall | None = None
    hook: Callable[[], None] | None = None

    def matches(self, queues: Sequence[str]) -> bool:
        return self.queue is None or self.queue in queues


def _default_exc(method: str) -> Callable[[], BaseException]:
    return lambda: RedisUnavailableError(f"injected fault in {method}")


# -- the broker ---------------------------------------------------------------------------------------


class MemoryBroker:
    """``WorkerBroker`` in memory. Faults: :meth:`fail`, :meth:`delay`, :meth:`stall`,
    :meth:`lose_reply`, :meth:`before`; each for one method, optionally only for calls that touch
    one queue (for ``run``: any op of that queue). ``calls`` counts every call per method."""

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or time.time
        self.queues: dict[str, QueueStore] = {}
        self.registered: set[str] = set()  # asynq:queues: every enqueue adds its queue
        self.locks: dict[str, str] = {}  # unique lock key -> task ID holding it
        self.servers: dict[str, tuple[ServerRecord, list[WorkerRecord], int]] = {}
        self.calls: Counter[str] = Counter()
        self.queue_calls: Counter[tuple[str, str]] = Counter()
        self.applied: list[Applied] = []  # every outcome run() applied and result written, in order
        self.runs: list[list[Op]] = []  # the ops of every run() call that got past its faults
        self.dequeued: list[Dequeued] = []  # every task a dequeue handed out
        self.node_of: dict[str, str] = {}  # queue -> the node holding it (default: one node, "")
        self._faults: dict[str, list[_Fault]] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._attempts = itertools.count(1)
        self._unsettled: dict[str, tuple[str, list[str], float]] = {}
        self._pushed = anyio.Event()

    # -- fault injection ----------------------------------------------------------------------------

    def _add(self, method: str, fault: _Fault) -> _Fault:
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"MemoryBroker has no method {method!r}")
        self._faults.setdefault(method, []).append(fault)
        return fault

    def fail(
        self,
        method: str,
        times: int | None = 1,
        *,
        exc: Callable[[], BaseException] | None = None,
        queue: str | None = None,
    ) -> None:
        """The next ``times`` calls (``None``: every call) raise before doing anything."""
        self._add(
            method,
            _Fault(queue, exc or _default_exc(method), raises=math.inf if times is None else times),
        )

    def lose_reply(
        self,
        method: str,
        times: int | None = 1,
        *,
        exc: Callable[[], BaseException] | None = None,
        queue: str | None = None,
    ) -> None:
        """The next ``times`` calls apply their effect, then raise: the write happened, the caller
        cannot know it."""
        self._add(
            method,
            _Fault(queue, exc or _default_exc(method), loses=math.inf if times is None else times),
        )

    def delay(
        self, method: str, seconds: float, times: int | None = None, *, queue: str | None = None
    ) -> None:
        """The next ``times`` calls (``None``: every call) wait ``seconds`` before they act (a slow
        node)."""
        delays = math.inf if times is None else times
        self._add(method, _Fault(queue, _default_exc(method), delay=seconds, delays=delays))

    def stall(self, method: str, *, queue: str | None = None) -> Stall:
        """Every call waits until the returned stall is released (a hung node)."""
        s = Stall()
        self._add(method, _Fault(queue, _default_exc(method), stall=s))
        return s

    def before(self, method: str, hook: Callable[[], None], *, queue: str | None = None) -> None:
        """Run ``hook`` as each call starts: another actor's write landing just before this call."""
        self._add(method, _Fault(queue, _default_exc(method), hook=hook))

    def clear_faults(self, method: str | None = None) -> None:
        if method is None:
            self._faults.clear()
        else:
            self._faults.pop(method, None)

    def calls_on(self, method: str, queue: str) -> int:
        return self.queue_calls[(method, queue)]

    def _count(self, method: str, queues: Sequence[str] = ()) -> None:
        self.calls[method] += 1
        for q in set(queues):
            self.queue_calls[(method, q)] += 1

    async def _enter(self, method: str, *queues: str) -> BaseException | None:
        """Count the call and play its faults: delays, stalls, hooks, then raise or (returned, for the
        caller to raise after its effect) a lost reply."""
        self._count(method, queues)
        faults = [f for f in self._faults.get(method, []) if f.matches(queues)]
        for f in faults:
            if f.delay > 0 and f.delays > 0:
                f.delays -= 1
                await anyio.sleep(f.delay)
        for f in faults:
            if f.stall is not None and not f.stall.released:
                await f.stall._wait()
        for f in faults:
            if f.hook is not None:
                f.hook()
        for f in faults:
            if f.raises > 0:
                f.raises -= 1
                raise f.make_exc()
        for f in faults:
            if f.loses > 0:
                f.loses -= 1
                return f.make_exc()
        return None

    # -- test helpers -------------------------------------------------------------------------------

    def queue(self, name: str) -> QueueStore:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueStore()
        return q

    def _push_left(self, q: QueueStore, task_id: str) -> None:
        q.pending.insert(0, task_id)
        self._notify()

    def _push_right(self, q: QueueStore, task_id: str) -> None:
        q.pending.append(task_id)
        self._notify()

    def _notify(self) -> None:
        self._pushed.set()
        self._pushed = anyio.Event()

    def enqueue(
        self, msg: TaskMessage, *, process_at: float | None = None, retry_at: float | None = None
    ) -> TaskMessage:
        """Store ``msg`` as enqueue.lua does: pending (LPUSH), scheduled at ``process_at``, its group
        when it names one; ``retry_at`` puts it in retry instead (as a failed attempt would)."""
        q = self.queue(msg.queue)
        self.registered.add(msg.queue)
        if msg.id in q.tasks:
            raise TaskIDConflictError(f"task ID {msg.id!r} already exists in queue {msg.queue!r}")
        now = self.clock()
        raw = msg.SerializeToString()
        h = q.tasks[msg.id] = TaskHash(msg=raw, state=None, group=msg.group_key, unique_key=msg.unique_key)
        if msg.unique_key:
            self.locks[msg.unique_key] = msg.id
        if retry_at is not None:
            h.state = "retry"
            q.retry[msg.id] = float(int(retry_at))
        elif process_at is not None and process_at > now:
            h.state = "scheduled"
            q.scheduled[msg.id] = _ms(process_at)
        elif msg.group_key:
            h.state = "aggregating"
            q.groups.setdefault(msg.group_key, {})[msg.id] = _ms(now)
        else:
            h.state = "pending"
            h.pending_since = int(now * 1e9)
            self._push_left(q, msg.id)
        return msg

    def put_raw(self, queue: str, task_id: str, raw: bytes | None) -> None:
        """A record some other writer left in pending: any bytes as ``msg`` (None: no msg field)."""
        q = self.queue(queue)
        q.tasks[task_id] = TaskHash(msg=raw, state="pending", pending_since=int(self.clock() * 1e9))
        self._push_left(q, task_id)

    def pause(self, queue: str) -> None:
        self.queue(queue).paused = True

    def unpause(self, queue: str) -> None:
        self.queue(queue).paused = False

    def lease_of(self, queue: str, task_id: str) -> float | None:
        return self.queue(queue).lease.get(task_id)

    def applied_of(self, kind: str) -> list[Applied]:
        return [a for a in self.applied if a.kind == kind]

    # -- taking work --------------------------------------------------------------------------------

    async def dequeue_limited(
        self, queue: str, count: int, lease_until: float, rules: Sequence[LimitRule]
    ) -> list[Dequeued] | Paused | Limited:
        """Flow control is not modelled here: its rules run in dequeue_limited.lua and are tested
        against real Redis (tests/test_flow_control.py)."""
        raise NotImplementedError("MemoryBroker does not model flow-control limits")

    async def dequeue(self, queue: str, count: int, lease_until: float) -> list[Dequeued] | Paused:
        """dequeue.lua, with the Broker's re-send of a call given up on: the tasks a call whose reply
        was lost took are handed out by the next dequeue of the queue, under that call's token."""
        lost = await self._enter("dequeue", queue)
        q = self.queue(queue)
        out: list[Dequeued] = []
        held = self._unsettled.pop(queue, None)
        if held is not None:
            token, named, first_lease = held
            if named[count:]:
                self._unsettled[queue] = (token, named[count:], first_lease)
            for tid in named[:count]:
                h = q.tasks.get(tid)
                if h is None or h.attempt != token or tid not in q.lease:
                    break  # the Lua stops at the first ID no longer its own
                out.append(Dequeued(queue, tid, h.msg or b"", token, lease_until=first_lease))
            count -= len(out)
        resent = list(out)
        if q.paused:
            if lost is not None and not resent:
                raise lost
            self.dequeued += out
            return out if out else PAUSED
        token = f"{self._prefix}-{next(self._attempts)}"
        taken: list[str] = []
        lease = float(int(lease_until))
        while count > 0 and q.pending:
            tid = q.pending.pop()
            count -= 1  # an ID dropped for want of a hash uses up its place too, as in the Broker
            h = q.tasks.get(tid)
            if h is None or h.msg is None:
                continue
            q.active.insert(0, tid)
            q.lease[tid] = lease
            h.state, h.attempt, h.pending_since = "active", token, None
            taken.append(tid)
            out.append(Dequeued(queue, tid, h.msg, token, lease_until=lease))
        if lost is not None:
            if taken:  # the next dequeue of the queue re-sends this call
                self._unsettled[queue] = (token, taken, lease)
            if not resent:
                raise lost
            out = resent  # as the Broker: what earlier rounds took is handed out, not stranded
        self.dequeued += out
        return out

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        lost = await self._enter("wait_for_work", queue)
        q = self.queue(queue)
        with anyio.move_on_after(timeout):
            while not q.pending:
                await self._pushed.wait()
            if lost is not None:
                raise lost
            return True
        return False

    async def is_paused(self, queue: str) -> bool:
        lost = await self._enter("is_paused", queue)
        if lost is not None:
            raise lost
        return self.queue(queue).paused

    async def all_queues(self) -> list[str]:
        lost = await self._enter("all_queues")
        if lost is not None:
            raise lost
        return sorted(self.registered)

    def delete_queue(self, name: str) -> None:
        """Drop ``name`` from the registry (what the Inspector's delete_queue does to asynq:queues)."""
        self.registered.discard(name)

    # -- outcome ops --------------------------------------------------------------------------------

    def ack_op(self, msg: TaskMessage, *, attempt: str = "", now: float | None = None) -> Op:
        self._count("ack_op", [msg.queue])
        now = self.clock() if now is None else now
        stored, score = _completed(msg, now)
        lock = msg.unique_key if _own_lock(msg.queue, msg) else ""
        return Op.command(ACK, msg.queue, msg.id, stored, score, attempt, lock)

    def ack_many_op(
        self,
        queue: str,
        msgs: Sequence[TaskMessage],
        *,
        attempts: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Op:
        self._count("ack_many_op", [queue])
        now = self.clock() if now is None else now
        tokens = attempts if attempts is not None else [""] * len(msgs)
        args: list[EncodableArg] = [ACK_MANY, queue, len(msgs)]
        for msg, attempt in zip(msgs, tokens, strict=True):
            stored, score = _completed(msg, now)
            args += [msg.id, stored, score, msg.unique_key if _own_lock(queue, msg) else "", attempt]
        return Op.command(*args)

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
        self._count("fail_op", [msg.queue])
        now = self.clock() if now is None else now
        updated = TaskMessage()
        updated.CopyFrom(msg)
        updated.error_msg = error
        updated.last_failed_at = int(now)
        if not archive and is_failure:
            updated.retried = msg.retried + 1
        return Op.command(
            FAIL,
            msg.queue,
            msg.id,
            updated.SerializeToString(),
            int(now) if archive else int(retry_at),
            "archived" if archive else "retry",
            1 if is_failure else 0,
            int(only_if_lease_expired_by),
            attempt,
        )

    def requeue_op(self, queue: str, task_id: str, *, attempt: str = "") -> Op:
        self._count("requeue_op", [queue])
        return Op.command(REQUEUE, queue, task_id, int(self.clock() * 1e9), attempt)

    def archive_malformed_op(
        self, record: MalformedRecord, *, only_if_lease_expired_by: float = 0, attempt: str = ""
    ) -> Op:
        self._count("archive_malformed_op", [record.queue])
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

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """Apply the ops in order; one reply per op (an op this broker did not make gets an error in
        its slot, as a permanent error reply does in the Broker's pipeline)."""
        queues = [q for op in ops if (q := describe(op)[1])]
        lost = await self._enter("run", *queues)
        self.runs.append(list(ops))
        results = [self._apply(op) for op in ops]
        if lost is not None:
            raise lost
        return results

    def _apply(self, op: Op) -> Any:
        kind, queue, _ = describe(op)
        a = op.args
        if kind == ACK:
            _, _, tid, stored, score, attempt, lock = a
            q = self.queue(queue)
            r = self._ack(q, str(tid), _b(stored), float(score), str(attempt), str(lock))
            self.applied.append(Applied("ack", queue, str(tid), str(attempt), r))
            q.processed += r
            return r
        if kind == ACK_MANY:
            q = self.queue(queue)
            live: list[int] = []
            for i in range(int(a[2])):
                tid, stored, score, lock, attempt = a[3 + 5 * i : 8 + 5 * i]
                r = self._ack(q, str(tid), _b(stored), float(score), str(attempt), str(lock))
                self.applied.append(Applied("ack_many", queue, str(tid), str(attempt), r))
                live.append(r)
            q.processed += sum(live)
            return live
        if kind == FAIL:
            _, _, tid, updated, score, state, is_failure, only_if, attempt = a
            r = self._fail(
                self.queue(queue),
                str(tid),
                _b(updated),
                float(score),
                str(state),
                is_failure == 1,
                int(only_if),
                str(attempt),
            )
            self.applied.append(Applied("fail", queue, str(tid), str(attempt), r))
            return r
        if kind == REQUEUE:
            _, _, tid, now_ns, attempt = a
            r = self._requeue(self.queue(queue), str(tid), int(now_ns), str(attempt))
            self.applied.append(Applied("requeue", queue, str(tid), str(attempt), r))
            return r
        return ValueError(f"MemoryBroker cannot run {op!r}")

    @staticmethod
    def _owned(q: QueueStore, tid: str, attempt: str) -> bool:
        """The scripts' token check: no token checks nothing; a token must be the hash's."""
        if not attempt:
            return True
        h = q.tasks.get(tid)
        return h is not None and h.attempt == attempt

    def _ack(self, q: QueueStore, tid: str, stored: bytes, score: float, attempt: str, lock: str) -> int:
        """ack.lua (and one task of ack_many.lua); the caller counts ``processed``."""
        if tid not in q.lease or not self._owned(q, tid, attempt):
            return 0
        _lrem(q.active, tid)
        del q.lease[tid]
        if not stored:
            q.tasks.pop(tid, None)
        else:
            h = q.tasks.setdefault(tid, TaskHash(msg=None, state=None))
            h.msg, h.state, h.attempt = stored, "completed", None
            q.completed[tid] = score
        if lock and self.locks.get(lock) == tid:
            del self.locks[lock]
        return 1

    def _fail(
        self,
        q: QueueStore,
        tid: str,
        updated: bytes,
        score: float,
        state: str,
        is_failure: bool,
        only_if: int,
        attempt: str,
    ) -> int:
        """fail.lua."""
        lease = q.lease.get(tid)
        if lease is None or not self._owned(q, tid, attempt):
            return 0
        if only_if > 0 and lease > only_if:
            return 0
        _lrem(q.active, tid)
        del q.lease[tid]
        h = q.tasks.get(tid)
        if h is None:
            return 1  # the hash is gone: just the bookkeeping
        q.zset(state)[tid] = score
        h.msg, h.state, h.attempt = updated, state, None
        if is_failure:
            q.processed += 1
            q.failed += 1
        return 1

    def _requeue(self, q: QueueStore, tid: str, now_ns: int, attempt: str) -> int:
        """requeue.lua: back to the right end of pending, the next one dequeued."""
        if tid not in q.lease or not self._owned(q, tid, attempt):
            return 0
        _lrem(q.active, tid)
        del q.lease[tid]
        h = q.tasks.get(tid)
        if h is None:
            return 1
        self._push_right(q, tid)
        h.state, h.pending_since, h.attempt = "pending", now_ns, None
        return 1

    async def write_result(self, queue: str, task_id: str, data: bytes, *, attempt: str = "") -> bool:
        """write_result.lua: only into an existing hash, and only while ``attempt`` owns the task."""
        lost = await self._enter("write_result", queue)
        q = self.queue(queue)
        h = q.tasks.get(task_id)
        written = h is not None and self._owned(q, task_id, attempt)
        if h is not None and written:
            h.result = data
        self.applied.append(Applied("result", queue, task_id, attempt, int(written)))
        if lost is not None:
            raise lost
        return written

    # -- leases and recovery ------------------------------------------------------------------------

    async def extend_leases(self, queue: str, attempts: Sequence[tuple[str, str]], until: float) -> list[str]:
        """extend_leases.lua: the IDs whose attempt no longer owns the task come back, unextended."""
        if not attempts:
            return []
        lost_exc = await self._enter("extend_leases", queue)
        q = self.queue(queue)
        lost: list[str] = []
        for tid, token in attempts:
            h = q.tasks.get(tid)
            if tid in q.lease and h is not None and h.attempt == token:
                q.lease[tid] = float(int(until))
            else:
                lost.append(tid)
        if lost_exc is not None:
            raise lost_exc
        return lost

    async def expired_leases(
        self, queue: str, cutoff: float, *, limit: int = 100
    ) -> list[TaskMessage | MalformedRecord]:
        lost = await self._enter("expired_leases", queue)
        q = self.queue(queue)
        ids = [tid for tid in by_score(q.lease) if q.lease[tid] <= cutoff][:limit]
        out: list[TaskMessage | MalformedRecord] = []
        for tid in ids:
            h = q.tasks.get(tid)
            raw = h.msg if h is not None else None
            if raw:
                try:
                    out.append(decode_fetched_message(raw, queue=queue, task_id=tid))
                except MalformedTaskError as exc:
                    out.append(MalformedRecord(task_id=tid, queue=queue, raw=raw, reason=str(exc)))
            else:
                out.append(TaskMessage(id=tid, queue=queue))
        if lost is not None:
            raise lost
        return out

    async def heal_orphans(self, queue: str, *, limit: int = 1000) -> int:
        """heal_orphan.lua for each ID in active without a lease."""
        lost = await self._enter("heal_orphans", queue)
        q = self.queue(queue)
        healed = 0
        for tid in [t for t in q.active[:limit] if t not in q.lease]:
            if tid in q.lease or not _lrem(q.active, tid):
                continue
            h = q.tasks.get(tid)
            if h is not None:
                self._push_right(q, tid)
                h.state, h.pending_since = "pending", int(self.clock() * 1e9)
            healed += 1
        if lost is not None:
            raise lost
        return healed

    async def sample_states(
        self, queue: str, where: str, start: int, count: int
    ) -> list[tuple[str, str | None]]:
        if where not in SWEPT_STATES:
            raise ValueError(f"not a state list: {where!r}")
        lost = await self._enter("sample_states", queue)
        q = self.queue(queue)
        ids = (list(getattr(q, where)) if where in ("pending", "active") else by_score(q.zset(where)))[
            start : start + count
        ]
        out: list[tuple[str, str | None]] = []
        for tid in ids:
            h = q.tasks.get(tid)
            out.append((tid, h.state if h is not None else None))
        if lost is not None:
            raise lost
        return out

    async def fix_states(self, queue: str, found: Sequence[tuple[str, str]]) -> list[int]:
        lost = await self._enter("fix_states", queue)
        q = self.queue(queue)
        now_ns = int(self.clock() * 1e9)
        out = [_sweep_state(q, tid, where, now_ns) for tid, where in found]
        if lost is not None:
            raise lost
        return out

    # -- scheduled tasks and cleanup ----------------------------------------------------------------

    async def forward(self, queue: str, *, batch: int = 100) -> int:
        """forward.lua over due scheduled, then due retry tasks, ``batch`` IDs per call; "now" to the
        millisecond, as the Broker sends it."""
        lost = await self._enter("forward", queue)
        q = self.queue(queue)
        now = self.clock()
        due = _ms(now)
        moved = 0
        for src in (q.scheduled, q.retry):
            while True:
                ids = [tid for tid in by_score(src) if src[tid] <= due][:batch]
                for tid in ids:
                    del src[tid]
                    h = q.tasks.get(tid)
                    if h is None:
                        continue
                    if not h.group:
                        self._push_left(q, tid)
                        h.state, h.pending_since = "pending", int(now * 1e9)
                    else:
                        q.groups.setdefault(h.group, {})[tid] = due
                        h.state = "aggregating"
                    moved += 1
                if len(ids) < batch:
                    break
        if lost is not None:
            raise lost
        return moved

    async def next_dues(self, queues: Sequence[str]) -> list[float | Exception | None]:
        """next_due.lua for each queue, in one call (a fault on any of them fails the batch, as a
        node's failure fails its batch)."""
        lost = await self._enter("next_dues", *queues)
        out: list[float | Exception | None] = []
        for queue in queues:
            q = self.queue(queue)
            scores = [min(z.values()) for z in (q.scheduled, q.retry) if z]
            out.append(min(scores) if scores else None)
        if lost is not None:
            raise lost
        return out

    async def holds_tasks(self, queues: Sequence[str]) -> list[bool | Exception]:
        """holds_tasks.lua for each queue, in one call."""
        lost = await self._enter("holds_tasks", *queues)
        out: list[bool | Exception] = [bool(self.queue(q).active or self.queue(q).lease) for q in queues]
        if lost is not None:
            raise lost
        return out

    async def nodes_of(self, queues: Sequence[str]) -> list[str]:
        return [self.node_of.get(q, "") for q in queues]

    async def delete_expired_completed(self, queue: str, *, batch: int = 500) -> int:
        lost = await self._enter("delete_expired_completed", queue)
        q = self.queue(queue)
        now = int(self.clock())
        ids = [tid for tid in by_score(q.completed) if q.completed[tid] <= now][:batch]
        for tid in ids:
            del q.completed[tid]
            q.tasks.pop(tid, None)
        if lost is not None:
            raise lost
        return len(ids)

    async def needs_cleanup(self, queues: Sequence[str]) -> list[bool | Exception]:
        """cleanup_due.lua for each queue, in one call."""
        lost = await self._enter("needs_cleanup", *queues)
        now = self.clock()
        cutoff = now - ARCHIVE_TTL.total_seconds()
        out: list[bool | Exception] = []
        for queue in queues:
            q = self.queue(queue)
            out.append(
                any(score <= int(now) for score in q.completed.values())
                or len(q.archived) > ARCHIVE_MAX
                or any(score < cutoff for score in q.archived.values())
            )
        if lost is not None:
            raise lost
        return out

    async def trim_archive(self, queue: str) -> int:
        """protocol/archive.py's limits: older than 90 days, or beyond the newest 10,000."""
        lost = await self._enter("trim_archive", queue)
        q = self.queue(queue)
        cutoff = int(self.clock() - ARCHIVE_TTL.total_seconds())
        excess = len(q.archived) - ARCHIVE_MAX
        trim = [
            tid for rank, tid in enumerate(by_score(q.archived)) if q.archived[tid] < cutoff or rank < excess
        ]
        for tid in trim:
            del q.archived[tid]
            h = q.tasks.get(tid)
            if h is not None and h.state == "archived":
                del q.tasks[tid]
        if lost is not None:
            raise lost
        return len(trim)

    # -- the server's own records -------------------------------------------------------------------

    async def write_server_state(
        self, server: ServerRecord, workers: Sequence[WorkerRecord], ttl: float
    ) -> None:
        lost = await self._enter("write_server_state")
        key = server_info_key(server.host, server.pid, server.server_id)
        self.servers[key] = (server, list(workers), int(self.clock() + ttl))
        if lost is not None:
            raise lost

    async def clear_server_state(self, server: ServerRecord) -> None:
        lost = await self._enter("clear_server_state")
        self.servers.pop(server_info_key(server.host, server.pid, server.server_id), None)
        if lost is not None:
            raise lost

    async def prune_dead_servers(self, *, grace: float = 60.0) -> int:
        """Two index entries (server and workers) per server whose heartbeat expired over ``grace``
        seconds ago, as the Broker's two ZREMRANGEBYSCOREs count them."""
        lost = await self._enter("prune_dead_servers")
        cutoff = self.clock() - grace
        dead = [k for k, (_, _, expires) in self.servers.items() if expires < cutoff]
        for k in dead:
            del self.servers[k]
        if lost is not None:
            raise lost
        return 2 * len(dead)


# -- helpers ------------------------------------------------------------------------------------------


def describe(op: Op) -> tuple[str, str, list[str]]:
    """What a MemoryBroker op is: its kind (``MEM_ACK`` ...), queue and task IDs; ("", "", []) for an
    op some other broker made."""
    a = op.args
    if op.script is not None or not a or a[0] not in (ACK, ACK_MANY, FAIL, REQUEUE):
        return "", "", []
    kind, queue = str(a[0]), str(a[1])
    if kind == ACK_MANY:
        return kind, queue, [str(a[3 + 5 * i]) for i in range(int(a[2]))]
    return kind, queue, [str(a[2])]


def _ms(t: float) -> float:
    """A time as the Broker sends it to a script (``f"{t:.3f}"``) and Redis stores it: milliseconds."""
    return float(f"{t:.3f}")


def _b(value: EncodableArg) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _completed(msg: TaskMessage, now: float) -> tuple[bytes, int]:
    """What ack.lua stores for a success: nothing (delete), or the message with completed_at and its
    retention's end as the completed zset score."""
    if msg.retention <= 0:
        return b"", 0
    done = TaskMessage()
    done.CopyFrom(msg)
    done.completed_at = int(now)
    return done.SerializeToString(), int(now) + msg.retention


def _own_lock(queue: str, msg: TaskMessage) -> bool:
    """As the Broker: only a lock under the queue's own hash tag is released by an ack."""
    return bool(msg.unique_key) and msg.unique_key.startswith(queue_keys(queue).prefix)


def _sweep_state(q: QueueStore, tid: str, where: str, now_ns: int) -> int:
    """sweep_state.lua for one (ID, where it was seen)."""
    lists = ("pending", "active")

    def member(name: str) -> bool:
        return tid in (getattr(q, name) if name in lists else q.zset(name))

    def remove(name: str) -> None:
        if name in lists:
            _lrem(getattr(q, name), tid)
        else:
            q.zset(name).pop(tid, None)
        if name == "active":
            q.lease.pop(tid, None)

    if where not in SWEPT_STATES or not member(where):
        return 0
    h = q.tasks.get(tid)
    if h is None:
        if where == "active" and tid in q.lease:
            return 0
        remove(where)
        return 2
    state = h.state
    if state == where:
        return 0
    if state in SWEPT_STATES and member(state):
        if where == "active" and tid in q.lease:
            return 0
        remove(where)
        return 3
    if state is not None and state not in SWEPT_STATES:
        return 0
    if where == "active" and tid not in q.lease:
        return 0
    h.state = where
    h.pending_since = now_ns if where == "pending" else None
    return 1


def make_message(
    queue: str,
    task_id: str | None = None,
    *,
    task_type: str = "t",
    payload: bytes = b"",
    max_retry: int = 25,
    timeout_s: int = 1800,
    retention_s: int = 0,
    unique_key: str = "",
    group: str = "",
) -> TaskMessage:
    """A task message as the client builds one (codec.new_task_message), with test defaults."""
    return new_task_message(
        task_id=task_id or uuid.uuid4().hex,
        task_type=task_type,
        payload=payload,
        queue=queue,
        max_retry=max_retry,
        timeout_s=timeout_s,
        deadline_unix=0,
        unique_key=unique_key,
        retention_s=retention_s,
        group=group,
    )


def as_worker_broker(broker: MemoryBroker) -> WorkerBroker:
    """Where mypy proves that MemoryBroker is a WorkerBroker: a method that drifts from the Protocol
    fails type checking here, not in some component test far away."""
    return broker
