"""Scheduler: enqueues registered tasks on cron schedules, once per fire however many schedulers run.

Go Asynq gives every registration a random entry ID and lets each scheduler process enqueue on its
own, so running two for availability enqueues every task twice. Here an entry's ID is derived from
what it does (spec, zone, task, options), so every process computes the same ID and the same fire
instants. For each fire a scheduler takes a short lease on the fire's claim key (in the target
queue's slot); the holder stores the task, with an ID built from the fire, and marks the fire
settled in one atomic script. Schedulers that find the lease taken wait for it: if the holder died
before storing the task, its lease expires and one of them takes the fire over. Entries, heartbeats
and history are written in Asynq's format, so ``asynq cron ls`` and ``asynq cron history`` in Go
show them.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from anyio.abc import TaskGroup

from asynq_aio import _cron
from asynq_aio._client import DEFAULT_MAX_PAYLOAD
from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._errors import DuplicateTaskError, TaskIDConflictError
from asynq_aio._options import DEFAULT_QUEUE, Duration, EnqueueOptions, prepare
from asynq_aio._registration import QueueRegistry
from asynq_aio._task import Task, TaskInfo
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.scheduler_store import (
    SETTLED_BY_OTHER,
    EnqueueEvent,
    EntryRecord,
    SchedulerStore,
    option_strings,
)
from asynq_aio.protocol.session import RedisSession

if TYPE_CHECKING:  # periodic.py builds on this module
    from asynq_aio._periodic import Schedule

__all__ = [
    "CronEntry",
    "EntryOptions",
    "Fire",
    "PostEnqueueHook",
    "PreEnqueueHook",
    "Scheduler",
    "time_zone",
]

log = logging.getLogger("asynq_aio.scheduler")

# Fixed namespace for entry IDs: changing it would give every deployed entry a new identity.
_ENTRY_NAMESPACE = uuid.UUID("6f1d4a8e-3c2b-5e7f-9a10-7c5d2e8b4f31")
_MAX_SLEEP = 60.0  # re-read the wall clock at least this often (clock steps, NTP corrections)
_CLAIM_TTL_MIN, _CLAIM_TTL_MAX = 60.0, 86400.0
_FIRE_GRACE = 10.0  # how long a started fire may keep running after shutdown begins


@dataclass(frozen=True, slots=True)
class EntryOptions:
    """Enqueue options of an entry: the same meaning as :meth:`Client.enqueue`'s arguments.

    ``task_id`` and ``process_at`` are not here: each fire gets its own task ID, and a fixed time
    makes no sense for a repeating task.
    """

    queue: str | None = None
    max_retry: int | None = None
    timeout: Duration | None = None
    deadline: datetime | None = None
    process_in: Duration | None = None
    unique: Duration | None = None
    retention: Duration | None = None
    group: str | None = None

    @property
    def target_queue(self) -> str:
        """The queue the entry's tasks go to: ``queue``, or ``default`` when it is None."""
        return self.queue if self.queue is not None else DEFAULT_QUEUE

    def validate(self) -> None:
        """Raise InvalidTaskError / InvalidQueueName now rather than at every fire."""
        self.enqueue_options().resolve(time.time())

    def enqueue_options(self, task_id: str | None = None) -> EnqueueOptions:
        """These options for one fire's task (with its own ID)."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        options: EnqueueOptions = replace(EnqueueOptions(task_id=task_id), **given)
        return options

    def go_strings(self) -> list[str]:
        """As Go prints them in ``SchedulerEntry.enqueue_options``: ``Queue("x")``, ``MaxRetry(3)``."""
        return option_strings(
            queue=self.queue,
            max_retry=self.max_retry,
            timeout=self.timeout,
            deadline=self.deadline,
            process_in=self.process_in,
            unique=self.unique,
            retention=self.retention,
            group=self.group,
        )


@dataclass(frozen=True, slots=True, eq=False)
class CronEntry:
    """A registered periodic task. ``id`` is the same in every process for the same definition."""

    id: str
    spec: str
    schedule: _cron.Schedule
    task: Task
    options: EntryOptions

    @classmethod
    def build(
        cls, spec: str, task: Task, options: EntryOptions | None = None, *, location: tzinfo = UTC
    ) -> CronEntry:
        """Parse and validate; raises ValueError (bad spec) or InvalidTaskError (bad options)."""
        if not isinstance(task, Task):
            raise TypeError(f"expected a Task, got {type(task).__name__}")
        opts = options or EntryOptions()
        schedule = _cron.parse(spec, location)
        opts.validate()
        return cls(entry_id(schedule, task, opts), spec, schedule, task, opts)


def entry_id(schedule: _cron.Schedule, task: Task, options: EntryOptions) -> str:
    """uuid5 over everything that decides what an entry enqueues and when."""
    identity = [
        " ".join(schedule.spec.split()),
        schedule.location_key,
        task.type,
        task.payload.hex(),
        sorted(task.headers.items()),
        options.go_strings(),
    ]
    return str(uuid.uuid5(_ENTRY_NAMESPACE, json.dumps(identity, ensure_ascii=False)))


@dataclass(frozen=True, slots=True)
class Fire:
    """One firing of an entry, as the hooks see it."""

    entry: CronEntry
    at: datetime  # the scheduled fire time, in the entry's zone
    task_id: str


PreEnqueueHook = Callable[[Fire], Awaitable[None] | None]
PostEnqueueHook = Callable[[Fire, TaskInfo | Exception], Awaitable[None] | None]


def claim_ttl(entry: CronEntry, fire_unix: int) -> float:
    """How long a fire's claim lives: ten periods, between a minute and a day.

    A scheduler skips fires older than half of this, so a claim always outlives every attempt at
    its fire; short-period entries do not pile up a day's worth of claim keys.
    """
    period = entry.schedule.next(datetime.fromtimestamp(fire_unix, tz=UTC)).timestamp() - fire_unix
    return min(_CLAIM_TTL_MAX, max(_CLAIM_TTL_MIN, 10 * period))


class Scheduler:
    """Enqueues registered tasks on their schedules until stopped.

    ``await scheduler.run()`` owns the process (stops on SIGINT/SIGTERM); ``async with
    scheduler.serve():`` runs inside an application's loop. Register before or while serving.
    Run several with the same entries for availability: each fire is still enqueued once.

    Args:
        redis: connection options (single, Sentinel or cluster) or a redis-py client.
        location: time zone of cron specs without ``CRON_TZ=`` (a tzinfo or an IANA name).
        pre_enqueue: called before the winning scheduler enqueues a fire; it cannot veto it.
        post_enqueue: called with the stored TaskInfo, or with the exception when the enqueue
            failed (DuplicateTaskError for a unique entry whose previous task still holds the lock).
        heartbeat_interval: how often the entries are republished for ``asynq cron ls`` (the
            published list expires after three intervals, so a dead scheduler disappears).
        claim_lease: how long a scheduler that claimed a fire has to enqueue it before another
            scheduler takes the fire over (seconds; capped at a sixth of the fire's claim TTL).
        clock: the wall clock (unix seconds); tests inject one.
    """

    def __init__(
        self,
        redis: RedisConnOpt | RedisClient,
        *,
        location: tzinfo | str = UTC,
        pre_enqueue: PreEnqueueHook | None = None,
        post_enqueue: PostEnqueueHook | None = None,
        heartbeat_interval: float = 5.0,
        claim_lease: float = 10.0,
        host: str | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if claim_lease <= 0:
            raise ValueError("claim_lease must be positive")
        self._redis = redis
        self._retry = retry
        self.location = time_zone(location)
        self.pre_enqueue = pre_enqueue
        self.post_enqueue = post_enqueue
        self.heartbeat_interval = heartbeat_interval
        self.claim_lease = claim_lease
        # Go's format, host:pid:uuid, so `asynq cron ls` groups our entries like its own
        self.id = f"{host or socket.gethostname()}:{os.getpid()}:{uuid.uuid4()}"
        self._entries: dict[str, CronEntry] = {}
        self._next: dict[str, datetime] = {}
        self._prev: dict[str, datetime] = {}
        self._clock = clock
        self._queues: QueueRegistry | None = None  # lists the fires' queues in asynq:queues
        self._broker: Broker | None = None
        self._store: SchedulerStore | None = None
        self._wake = anyio.Event()
        self._beat_now = anyio.Event()
        self._running = False

    # -- entries ------------------------------------------------------------------------------------

    def register(
        self,
        spec: str,
        task: Task,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_in: Duration | None = None,
        unique: Duration | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> str:
        """Schedule ``task`` on ``spec`` and return the entry ID.

        Registering an identical entry again returns the same ID and changes nothing. Raises
        ValueError for a bad spec and InvalidTaskError / InvalidQueueName for bad options.
        """
        opts = EntryOptions(queue, max_retry, timeout, deadline, process_in, unique, retention, group)
        entry = self.build_entry(spec, task, opts)
        self.add_entry(entry)
        return entry.id

    def add_schedule(self, schedule: Schedule) -> list[str]:
        """Register every entry of ``schedule`` (in its own time zone) and return their IDs;
        entries already registered are kept as they are."""
        ids = []
        for cfg in schedule:
            entry = CronEntry.build(cfg.spec, cfg.task, cfg.options, location=schedule.location)
            self.add_entry(entry)
            ids.append(entry.id)
        return ids

    def build_entry(self, spec: str, task: Task, options: EntryOptions | None = None) -> CronEntry:
        """An entry in this scheduler's zone, not yet registered."""
        return CronEntry.build(spec, task, options, location=self.location)

    def add_entry(self, entry: CronEntry) -> bool:
        """Register a built entry; False when an entry with its ID is already registered."""
        if entry.id in self._entries:
            return False
        self._entries[entry.id] = entry
        self._next[entry.id] = entry.schedule.next(datetime.fromtimestamp(self._clock(), tz=UTC))
        self._changed()
        return True

    def unregister(self, entry_id: str) -> None:
        """Stop scheduling an entry; raises KeyError for an unknown ID."""
        if entry_id not in self._entries:
            raise KeyError(f"no scheduler entry with ID {entry_id!r}")
        del self._entries[entry_id]
        self._next.pop(entry_id, None)
        self._prev.pop(entry_id, None)
        self._changed()

    def entries(self) -> list[CronEntry]:
        """The registered entries, in registration order (a copy: changing it changes nothing)."""
        return list(self._entries.values())

    def next_fire(self, entry_id: str) -> datetime | None:
        """When the entry fires next (in its schedule's zone), or None for an unknown ID."""
        return self._next.get(entry_id)

    def _changed(self) -> None:
        self._wake.set()
        self._beat_now.set()

    # -- running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule until SIGINT or SIGTERM (or until cancelled), then stop cleanly."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with self.serve():
                log.info("scheduler %s started with %d entries", self.id, len(self._entries))
                async for sig in signals:
                    log.info("received %s, stopping the scheduler", signal.Signals(sig).name)
                    break

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[Scheduler]:
        """Run the scheduler in the background for the duration of the ``async with`` block."""
        if self._running:
            raise RuntimeError("this Scheduler is already running")
        self._running = True
        session = RedisSession.open(self._redis, retry=self._retry)
        broker = session.broker(clock=self._clock)
        store = session.scheduler_store(clock=self._clock)
        started = False
        try:
            await session.check_ready()
            started = True
            self._broker, self._store = broker, store
            self._queues = QueueRegistry(broker.register_queues, log)
            now = datetime.fromtimestamp(self._clock(), tz=UTC)
            for eid, entry in self._entries.items():  # fires missed while stopped are not run
                self._next[eid] = entry.schedule.next(now)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._fire_loop, tg)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()  # started fires are shielded and finish first
        finally:
            self._running = False
            self._broker = self._store = None
            queues, self._queues = self._queues, None
            with anyio.move_on_after(5, shield=True):
                if queues is not None:
                    await queues.aclose()
                if started:
                    try:
                        await store.clear_entries(self.id)
                    except Exception as exc:
                        log.warning("could not remove scheduler %s from Redis: %s", self.id, exc)
                await session.aclose()

    async def _heartbeat_loop(self) -> None:
        ttl = 3 * self.heartbeat_interval
        while True:
            self._beat_now = anyio.Event()  # before writing: a change made meanwhile re-triggers
            assert self._store is not None
            try:
                await self._store.write_entries(self.id, self._records(), ttl)
            except Exception as exc:
                log.warning("scheduler heartbeat failed: %s", exc)
            with anyio.move_on_after(self.heartbeat_interval):
                await self._beat_now.wait()

    def _records(self) -> list[EntryRecord]:
        return [
            EntryRecord(
                id=e.id,
                spec=e.spec,
                task_type=e.task.type,
                task_payload=e.task.payload,
                enqueue_options=tuple(e.options.go_strings()),
                next_enqueue=self._next.get(e.id),
                prev_enqueue=self._prev.get(e.id),
            )
            for e in self._entries.values()
        ]

    async def _fire_loop(self, tg: TaskGroup) -> None:
        """Sleep until the earliest next fire (or a change to the entries), start due fires."""
        while True:
            self._wake = anyio.Event()
            now = self._clock()
            for eid, when in list(self._next.items()):
                if when.timestamp() <= now:
                    entry = self._entries[eid]
                    self._prev[eid] = when
                    self._next[eid] = self._following(entry, when, now)
                    tg.start_soon(self._fire, entry, when)
            soonest = min((w.timestamp() for w in self._next.values()), default=now + _MAX_SLEEP)
            with anyio.move_on_after(min(max(0.0, soonest - now), _MAX_SLEEP)):
                await self._wake.wait()

    def _following(self, entry: CronEntry, fired: datetime, now: float) -> datetime:
        nxt = entry.schedule.next(fired)
        ts = int(nxt.timestamp())
        if now - ts > claim_ttl(entry, ts) / 2:  # far behind (suspended host): skip the backlog
            nxt = entry.schedule.next(datetime.fromtimestamp(now, tz=UTC))
        return nxt

    async def _fire(self, entry: CronEntry, when: datetime) -> None:
        """Claim the fire, waiting out another scheduler's lease (it may have died), then enqueue."""
        fire_unix = int(when.timestamp())
        ttl = claim_ttl(entry, fire_unix)
        fire = Fire(entry=entry, at=when, task_id=f"{entry.id}:{fire_unix}")
        lease = min(self.claim_lease, ttl / 6)  # so a takeover still fits in the tolerance below
        queue = entry.options.target_queue
        while True:
            late = self._clock() - fire_unix
            if late > ttl / 2:
                log.warning(
                    "giving up fire %s: %.0fs late (the fire is not enqueued)",
                    fire.task_id,
                    late,
                    extra={
                        "task_id": fire.task_id,
                        "task_type": entry.task.type,
                        "queue": queue,
                        "entry_id": entry.id,
                    },
                )
                return
            store = self._store
            if store is None:
                return
            try:
                claim = await store.claim_fire(queue, entry.id, fire_unix, self.id, lease)
            except Exception as exc:
                log.error("could not claim fire %s: %s", fire.task_id, exc)
                await self._post(fire, exc)
                return
            if claim.won:
                break
            if claim.settled:
                log.debug("fire %s was enqueued by another scheduler", fire.task_id)
                return
            # another scheduler holds the lease: normally it settles the fire within milliseconds;
            # if it died, its lease expires and this scheduler takes the fire over
            await anyio.sleep(claim.retry_in + 0.01)
        with anyio.move_on_after(_FIRE_GRACE, shield=True):  # finish a started enqueue on shutdown
            await self._enqueue_fire(fire, fire_unix, ttl)

    async def _enqueue_fire(self, fire: Fire, fire_unix: int, ttl: float) -> None:
        broker, store, queues = self._broker, self._store, self._queues
        if broker is None or store is None or queues is None:
            return
        entry, opts = fire.entry, fire.entry.options
        if self.pre_enqueue is not None:
            try:
                await _maybe_await(self.pre_enqueue(fire))
            except Exception:  # as in Go, the hook observes; it cannot veto the enqueue
                log.exception("pre_enqueue hook raised; enqueueing %s anyway", fire.task_id)
        try:
            req, info = prepare(
                entry.task,
                opts.enqueue_options(fire.task_id),
                now=time.time(),
                max_payload=DEFAULT_MAX_PAYLOAD,
            )
            # listed beside the write: a stalled node holding asynq:queues must not stop the fires
            registration = queues.start([info.queue])
            code = await store.enqueue_fire(
                broker.enqueue_op(req), info.queue, entry.id, fire_unix, self.id, ttl
            )
            await queues.settle(registration)
            if code == SETTLED_BY_OTHER:  # this scheduler took over a lease, the other one finished
                log.debug("fire %s was enqueued by another scheduler", fire.task_id)
                return
            if code == -1:
                raise TaskIDConflictError(f"task ID {fire.task_id!r} already exists in queue {info.queue!r}")
            if code == -2:
                raise DuplicateTaskError(
                    f"duplicate task: unique lock {req.msg.unique_key!r} is held by another task"
                )
        except Exception as exc:
            log.warning(
                "scheduler could not enqueue %s (entry %s): %s",
                entry.task.type,
                entry.id,
                exc,
                extra={
                    "task_id": fire.task_id,
                    "task_type": entry.task.type,
                    "queue": opts.target_queue,
                    "entry_id": entry.id,
                },
            )
            await self._post(fire, exc)
            return
        log.debug(
            "scheduler enqueued %s as %s",
            entry.task.type,
            info.id,
            extra={"task_id": info.id, "task_type": info.type, "queue": info.queue, "entry_id": entry.id},
        )
        try:
            event = EnqueueEvent(task_id=info.id, enqueued_at=datetime.fromtimestamp(self._clock(), tz=UTC))
            await store.record_enqueue(entry.id, event, ttl=max(30 * 86400.0, 3 * ttl))
        except Exception as exc:
            log.warning("could not record the enqueue of %s in the history: %s", info.id, exc)
        await self._post(fire, info)

    async def _post(self, fire: Fire, result: TaskInfo | Exception) -> None:
        if self.post_enqueue is None:
            return
        try:
            await _maybe_await(self.post_enqueue(fire, result))
        except Exception:
            log.exception("post_enqueue hook raised")


def time_zone(location: tzinfo | str) -> tzinfo:
    """A tzinfo from a tzinfo or an IANA name; an unknown name is a ValueError that says what to give."""
    if isinstance(location, tzinfo):
        return location
    if isinstance(location, str):
        try:
            return ZoneInfo(location)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {location!r} (use an IANA name such as 'Europe/Berlin')"
            ) from exc
    raise TypeError(f"location must be a tzinfo or a time zone name, got {type(location).__name__}")


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
