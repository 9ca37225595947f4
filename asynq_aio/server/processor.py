"""The processor: keeps up to ``concurrency`` handlers running, fetching in batches, and turns each
handler's outcome into an ack, retry, archive or requeue."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup

from asynq_aio._context import TaskContext, set_current
from asynq_aio._errors import (
    MalformedTaskError,
    PayloadTooLargeError,
    PayloadValidationError,
    RevokeTask,
    SkipRetry,
)
from asynq_aio._events import wait_set
from asynq_aio._handler import Handler
from asynq_aio._results import encode_result
from asynq_aio._task import Task
from asynq_aio.logfmt import context_fields, task_fields
from asynq_aio.protocol.broker import PAUSED, Dequeued, Limited, LimitRule, MalformedRecord, Op, Paused
from asynq_aio.protocol.codec import TaskMessage, decode_fetched_message, exact_deadline, exact_timeout
from asynq_aio.server.acker import Acker
from asynq_aio.server.active import ActiveTask, ActiveTasks
from asynq_aio.server.config import Config
from asynq_aio.server.fanout import within
from asynq_aio.server.limits import rules_for
from asynq_aio.server.queues import QueueSelector
from asynq_aio.server.readiness import QueueReadiness
from asynq_aio.server.served import ServedQueues
from asynq_aio.server.stopper import HandlerStop
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")

#: A dequeue slower than this (seconds) marks its queue's node as slow; it is asked less often.
SLOW_DEQUEUE = 0.1
#: Slow dequeues in a row before a queue is set aside.
SLOW_STREAK = 3
#: Longest blocking wait of an empty queue's watcher (s): what an idle queue costs Redis.
WATCH_BLOCK = 5.0


class Processor:
    """Takes tasks from the queues into free handler slots (at most ``concurrency``), runs each handler under
    its deadline and turns its outcome into an ack, retry, archive or requeue."""

    def __init__(
        self,
        broker: WorkerBroker,
        config: Config,
        handler: Handler,
        active: ActiveTasks,
        acker: Acker,
        served: ServedQueues | None = None,
    ) -> None:
        self._broker = broker
        self._config = config
        self._handler = handler
        self._active = active
        self._acker = acker
        # the live set of queues (the server's, which its discovery loop updates when there are patterns)
        served = self._served = ServedQueues(config.queues, config.shards) if served is None else served
        self._selector = QueueSelector(served, strict=config.strict_priority)
        self._readiness = QueueReadiness(
            broker,
            served,
            block=max(config.idle_wait, WATCH_BLOCK),
            poll=config.idle_wait,
            max_waits=served.watch_budget(),
        )
        self._running = 0  # handler slots in use
        self._outstanding = 0  # tasks taken whose outcome is not written yet (>= _running)
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._set_aside: dict[str, float] = {}  # queue -> monotonic time its dequeues resume
        self._slow_streak: dict[str, int] = {}  # queue -> slow dequeues in a row
        self._limit_rules: dict[str, list[LimitRule]] = {}  # queue -> its flow-control rules (may be [])
        self._limit_rules_of = served.version  # the served set those rules were found for

    @property
    def running(self) -> int:
        """Handler slots in use now (a slot is freed when its handler ends, before its outcome is written)."""
        return self._running

    def stop_fetching(self) -> None:
        """Take no more tasks; running handlers go on (:meth:`fetch_loop` returns once they are done)."""
        self._stopping.set()
        self._readiness.interrupt()

    async def wait_idle(self) -> None:
        """Wait until every task taken has its outcome written (returns at once when none is outstanding)."""
        await self._all_done.wait()

    # -- fetching -----------------------------------------------------------------------------------

    async def fetch_loop(self, tg: TaskGroup) -> None:
        """Fill free slots until :meth:`stop_fetching`, then wait until every handler has finished.

        The path from a task's arrival to its outcome runs on asyncio alone: handlers are plain
        asyncio tasks owned by this loop, not in ``tg`` (starting a task in an anyio task group
        costs ~45 us of CPU and a plain task ~3 us, on a no-op task's budget of a few tens of us),
        stopped by a :class:`HandlerStop` rather than an anyio cancel scope, and the waits are
        asyncio events. anyio holds the long-lived parts together (the watchers below, the server's
        task groups). So this loop does what the task group did: it returns only when its handlers
        are done, and if it is cancelled it stops them as at shutdown (their tasks are requeued).
        """
        cfg = self._config
        try:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(self._readiness.run)
                try:
                    await self._fill_slots()
                finally:
                    watchers.cancel_scope.cancel()
            await self._all_done.wait()
        finally:
            if self._outstanding:
                self.cancel_all_for_shutdown()
                with anyio.move_on_after(cfg.shutdown_timeout + 5.0, shield=True):
                    await self._all_done.wait()

    async def _fill_slots(self) -> None:
        cfg = self._config
        while not self._stopping.is_set():
            free = cfg.concurrency - self._running
            if free <= 0:
                self._slot_freed.clear()
                await wait_set(self._slot_freed, 1.0)
                continue
            try:
                got = await self._fetch(min(free, cfg.dequeue_batch))
            except Exception as exc:
                log.error("dequeue failed, retrying in 1s: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if got is None:
                await self._wait_for_work()
                continue
            for item in got:
                self._start(item)
            # Let the handlers just started take their first step before the next dequeue is
            # packed and sent: a handler no longer waits behind that Python work (on an idle
            # worker, cold, it took 0.1-0.3 ms between the dequeue's reply and the handler).
            await asyncio.sleep(0)

    async def _fetch(self, count: int) -> list[Dequeued] | None:
        """Dequeue from the first queue (in selection order) that has tasks. A queue whose dequeue
        fails or does not answer within the budget (its master is stalled or slow) is set aside for
        a while and the others are tried: one node's fault must not stop the queues on the others.
        Tasks a timed-out dequeue took anyway come with the next dequeue of that queue (the broker
        re-sends the call it gave up on). Raises
        when no queue answered at all (Redis is down), so the fetch loop backs off."""
        lease_until = math.ceil(time.time() + self._config.lease_duration)
        budget = min(5.0, max(1.0, self._config.lease_duration / 6))
        problem: Exception | None = None
        answered = False
        for queue in self._selector.order(self._readiness.ready):
            if self._set_aside.get(queue, 0.0) > time.monotonic():
                continue
            res: list[Dequeued] | Paused | Limited | None = None
            started = time.monotonic()
            try:
                res = await within(budget, self._dequeue(queue, count, lease_until))
            except Exception as exc:
                problem = exc
            if res is None:
                log.error("dequeue from %s: %s; trying the other queues", queue, problem)
                self._set_aside[queue] = time.monotonic() + budget
                continue
            answered = True
            took = time.monotonic() - started
            streak = self._slow_streak[queue] = (
                self._slow_streak.get(queue, 0) + 1 if took > SLOW_DEQUEUE else 0
            )
            if streak >= SLOW_STREAK and not self._config.strict_priority:
                # A slow node (a dequeue takes well under a millisecond normally, and one slow call
                # is more likely a busy host than a slow node): ask it less often, so the fetcher
                # spends its time on the queues that answer. Not under strict priority, where a
                # lower queue must not run while a higher one has work, slow or not.
                pause = min(budget, 10 * took)
                log.warning(
                    "dequeue from %s took %.0f ms; asking it again in %.1fs", queue, took * 1000, pause
                )
                self._set_aside[queue] = time.monotonic() + pause
                self._slow_streak[queue] = 0
            if res is PAUSED:
                self._readiness.paused(queue)
                continue
            if isinstance(res, Limited):  # tasks wait, held back by a limit: ask when one may start
                self._set_aside[queue] = time.monotonic() + res.retry_after
                continue
            assert isinstance(res, list)
            if not res:
                self._readiness.empty(queue)
                continue
            self._readiness.took(queue)
            self._selector.took(queue)
            return res
        if problem is not None and not answered:
            raise problem
        return None

    def _dequeue(
        self, queue: str, count: int, lease_until: float
    ) -> Coroutine[Any, Any, list[Dequeued] | Paused | Limited]:
        """The plain dequeue, or the limited one (checked against the queue's flow-control rules
        before anything is taken) for a queue that ``Config.limits`` names."""
        if self._served.version != self._limit_rules_of:  # queues came or went: forget old rules
            self._limit_rules.clear()
            self._limit_rules_of = self._served.version
        rules = self._limit_rules.get(queue)
        if rules is None:
            rules = self._limit_rules[queue] = rules_for(queue, self._config.limits)
        if not rules:
            return self._broker.dequeue(queue, count, lease_until)
        return self._broker.dequeue_limited(queue, count, lease_until, rules)

    async def _wait_for_work(self) -> None:
        """No queue handed out a task: wait until a watcher sees one arrive, or until the first
        set-aside queue may be asked again, or shutdown."""
        now = time.monotonic()
        resume = [t for q, t in self._set_aside.items() if t > now and self._readiness.is_ready(q)]
        wait = min([self._config.idle_wait, *(t - now for t in resume)])
        if resume:  # ready queues are only set aside: the watchers will not wake for them
            await wait_set(self._stopping, wait)
            return
        await self._readiness.wait_any(wait)  # stop_fetching interrupts it

    # -- running ------------------------------------------------------------------------------------

    def _start(self, item: Dequeued) -> None:
        self._running += 1
        self._outstanding += 1
        self._all_done.clear()
        t = asyncio.get_running_loop().create_task(self._execute(item))
        self._tasks.add(t)
        t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and (exc := t.exception()) is not None:
            # a bug in outcome handling (not a handler's error, which is an outcome): say so loudly
            log.error("task runner failed: %r", exc, exc_info=exc)

    async def _execute(self, item: Dequeued) -> None:
        holds_slot = True

        def free_slot() -> None:
            """The handler is done: its slot takes the next task while the outcome is written. An
            outcome waiting on a stalled node must not keep other queues' tasks from running."""
            nonlocal holds_slot
            if holds_slot:
                holds_slot = False
                self._running -= 1
                self._slot_freed.set()

        try:
            try:
                msg = decode_fetched_message(item.raw, queue=item.queue, task_id=item.task_id)
            except MalformedTaskError as exc:
                await self._archive_malformed(item, exc)
                return
            if len(msg.payload) > self._config.max_payload_bytes:
                await self._archive_oversized(msg, item.attempt)
                return
            await self._run_one(msg, item, free_slot)
        finally:
            free_slot()
            self._outstanding -= 1
            if self._outstanding == 0:
                self._all_done.set()

    async def _run_one(self, msg: TaskMessage, item: Dequeued, free_slot: Callable[[], None]) -> None:
        now = time.time()
        attempt = item.attempt
        deadline_unix = _deadline_of(msg, now)
        entry = ActiveTask(
            msg=msg,
            attempt=attempt,
            started=datetime.fromtimestamp(now, tz=UTC),
            deadline=datetime.fromtimestamp(deadline_unix, tz=UTC),
            # the lease the dequeue wrote, not one counted from now: a dequeue that took a while
            # (or a re-sent one) leaves less of it than lease_duration
            lease_expiry=item.lease_until,
        )
        self._active.add(entry)
        task = Task.__new__(Task)
        task.type, task.payload, task.headers = msg.type, msg.payload, dict(msg.headers)
        ctx = TaskContext(
            id=msg.id,
            type=msg.type,
            queue=msg.queue,
            retry_count=msg.retried,
            max_retry=msg.retry,
            headers=task.headers,
            _write_result=lambda data: self._write_result(msg, data, attempt),
        )
        # The handler runs in a task of its own, which its stopper cancels at the deadline or on a
        # cancel (entry.cancel): that stops exactly the handler, never the writing of its outcome.
        loop = asyncio.get_running_loop()
        handler_task = loop.create_task(self._call_handler(ctx, task))
        stopper = HandlerStop(handler_task, loop.time() + (deadline_unix - now))
        entry.attach(stopper)
        error: BaseException | None = None
        result: bytes | None = None
        try:
            error, value = await handler_task
            if error is None and value is not None:
                result = encode_result(value)  # raises ResultEncodingError (archived)
            if stopper.called:  # timed out or cancelled, and the handler swallowed the cancellation
                error = _cancel_error(entry, msg)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():  # this runner itself is torn down: no outcome;
                raise  # the task stays leased and is recovered, as after a crash
            error = _cancel_error(entry, msg)
        except Exception as exc:  # the handler's own failure
            error = exc
        entry.handler_done = True
        # The task stays in the active set (so the heartbeat keeps extending its lease) until its
        # outcome is written: an ack waiting on a slow node must not let the lease lapse.
        free_slot()
        try:
            await self._finish(msg, task, error, entry, result)
        finally:
            self._active.remove(msg.id)

    async def _call_handler(self, ctx: TaskContext, task: Task) -> tuple[BaseException | None, Any]:
        """The handler's failure (None when it returned) and its return value (its result)."""
        set_current(ctx)  # the handler task's own context: visible to the handler only
        try:
            return None, await self._handler(task)
        except SystemExit as exc:  # sys.exit() in a handler (often from a library) is a failed
            return exc, None  # attempt, not a way to stop the worker (asyncio would re-raise it)

    async def _finish(
        self,
        msg: TaskMessage,
        task: Task,
        error: BaseException | None,
        entry: ActiveTask,
        result: bytes | None = None,
    ) -> None:
        reason = entry.cancel_reason
        if not reason and entry.lease_expiry <= time.time():
            # The lease ran out while the handler ran (the loop stalled, Redis was unreachable for
            # the heartbeat): another server may already be running this task, so this copy reports
            # nothing. Go's processor makes the same check.
            reason = entry.cancel_reason = "lease"
        if reason == "lease":
            log.warning(
                "task %s lost its lease; another server will recover it", msg.id, extra=task_fields(msg)
            )
            return
        if reason == "shutdown":
            await self._acker.submit(
                msg.queue, self._broker.requeue_op(msg.queue, msg.id, attempt=entry.attempt)
            )
            return
        if error is None:
            if result is not None:
                msg = await self._store_result(msg, result, entry.attempt)
            await self._acker.submit_ack(msg, entry.attempt)
            return
        if isinstance(error, RevokeTask):
            log.info("task %s revoked: %s", msg.id, error, extra=task_fields(msg))
            dropped = TaskMessage()
            dropped.CopyFrom(msg)
            dropped.retention = 0
            await self._acker.submit(msg.queue, self._broker.ack_op(dropped, attempt=entry.attempt))
            return
        await self._report_error(task, error)
        text = _error_text(error)
        is_failure = self._is_failure(error) and not (
            reason == "cancel" and not self._config.count_cancel_as_failure
        )
        # As Go: an error that is not a failure is retried without using up a retry, whatever the
        # count. SkipRetry and a payload that cannot validate archive regardless (they would never
        # succeed, so retrying them forever is worse).
        archive = isinstance(error, SkipRetry | PayloadValidationError) or (
            is_failure and msg.retried >= msg.retry
        )
        retry_at = 0.0
        if not archive:
            try:
                delay = self._config.retry_delay_func(msg.retried, error, task)
            except Exception as exc:  # a user function must not lose the task
                log.error("retry_delay_func failed, using 60s: %s", exc, extra=task_fields(msg))
                delay = 60.0
            retry_at = time.time() + max(0.0, delay)
        log.log(
            logging.WARNING if archive else logging.INFO,
            "task %s (%s, queue %s, attempt %d) failed%s: %s",
            msg.id,
            msg.type,
            msg.queue,
            msg.retried + 1,
            ", archiving" if archive else ", will retry",
            text,
            extra={**task_fields(msg), "error": text, "archived": archive},
        )
        op: Op = self._broker.fail_op(
            msg, error=text, archive=archive, retry_at=retry_at, is_failure=is_failure, attempt=entry.attempt
        )
        await self._acker.submit(msg.queue, op)

    def _is_failure(self, error: BaseException) -> bool:
        fn = self._config.is_failure
        if fn is None:
            return True
        try:
            return bool(fn(error))
        except Exception:
            return True

    async def _report_error(self, task: Task, error: BaseException) -> None:
        fn = self._config.error_handler
        if fn is None:
            return
        try:
            res = fn(task, error)
            if inspect.isawaitable(res):
                await res
        except Exception as exc:
            log.error("error_handler raised: %s", exc, extra=context_fields())

    async def _write_result(self, msg: TaskMessage, data: bytes, attempt: str) -> None:
        await self._broker.write_result(msg.queue, msg.id, data, attempt=attempt)

    async def _store_result(self, msg: TaskMessage, result: bytes, attempt: str) -> TaskMessage:
        """Write the handler's returned result; the message to ack, kept as completed for
        Config.result_retention when it was enqueued without a retention (else the ack would delete
        the result with the task before anyone could read it)."""
        await self._broker.write_result(msg.queue, msg.id, result, attempt=attempt)
        keep = math.ceil(self._config.result_retention)
        if msg.retention > 0 or keep <= 0:
            return msg
        kept = TaskMessage()
        kept.CopyFrom(msg)
        kept.retention = keep
        return kept

    async def _archive_malformed(self, item: Dequeued, exc: MalformedTaskError) -> None:
        """Keep the undecodable bytes (as the payload of a placeholder message) and archive it."""
        log.error(
            "task %s in queue %s is malformed, archiving: %s",
            item.task_id,
            item.queue,
            exc,
            extra={"task_id": item.task_id, "queue": item.queue},
        )
        record = MalformedRecord(task_id=item.task_id, queue=item.queue, raw=item.raw, reason=str(exc))
        await self._acker.submit(item.queue, self._broker.archive_malformed_op(record, attempt=item.attempt))

    async def _archive_oversized(self, msg: TaskMessage, attempt: str) -> None:
        """A payload over Config.max_payload_bytes (a foreign producer has no Client limit) is
        archived unrun, whole, so an operator can inspect it and run it after raising the limit."""
        error = PayloadTooLargeError(
            f"payload of {len(msg.payload)} bytes is over this worker's limit of "
            f"{self._config.max_payload_bytes} bytes (Config.max_payload_bytes)"
        )
        log.error("task %s (%s) archived unrun: %s", msg.id, msg.type, error, extra=task_fields(msg))
        await self._acker.submit(
            msg.queue, self._broker.fail_op(msg, error=str(error), archive=True, attempt=attempt)
        )

    def cancel_all_for_shutdown(self) -> None:
        """Cancel every running handler with reason ``shutdown``: their tasks are requeued at the head of
        pending, not retried."""
        for t in self._active.snapshot():
            self._active.cancel(t.msg.id, "shutdown")


def _deadline_of(msg: TaskMessage, now: float) -> float:
    candidates = []
    if (timeout := exact_timeout(msg)) > 0:
        candidates.append(now + timeout)
    if (deadline := exact_deadline(msg)) > 0:
        candidates.append(deadline)
    return min(candidates) if candidates else now + 30 * 60


def _cancel_error(entry: ActiveTask, msg: TaskMessage) -> BaseException:
    from asynq_aio._errors import TaskCanceledError, TaskTimeoutError

    if entry.cancel_reason == "cancel":
        return TaskCanceledError("task was cancelled")
    if entry.cancel_reason in ("shutdown", "lease"):
        return TaskCanceledError(f"task was stopped ({entry.cancel_reason})")
    timeout = exact_timeout(msg)
    if timeout and (msg.deadline == 0 or entry.started + timedelta(seconds=timeout) <= entry.deadline):
        return TaskTimeoutError(f"task timed out after {timeout:g}s")
    return TaskTimeoutError("task deadline exceeded")


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, Exception) and str(error) else f"{type(error).__name__}: {text}"
