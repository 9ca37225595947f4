"""PeriodicTaskManager: keeps a Scheduler's entries in step with a provider (a database, a config file).

Each sync asks the provider for the full list of wanted entries and registers what is new and
unregisters what disappeared. Entries are compared by their derived ID (spec, zone, task, options),
so an unchanged config keeps its entry, its next fire time and its history; a changed one is a new
entry. Because every process derives the same IDs, several managers reading the same provider
still enqueue each fire once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Any, overload

import anyio
from pydantic import BaseModel

from asynq_aio._options import Duration
from asynq_aio._scheduler import CronEntry, EntryOptions, Scheduler, time_zone
from asynq_aio._sharding import ShardedQueue
from asynq_aio._task import ModelT, Task
from asynq_aio._taskdef import TaskDef

__all__ = ["ConfigProvider", "PeriodicTaskConfig", "PeriodicTaskManager", "Schedule", "SyncResult"]

log = logging.getLogger("asynq_aio.periodic")


@dataclass(frozen=True, slots=True, eq=False)
class PeriodicTaskConfig:
    """One wanted entry: enqueue ``task`` with ``options`` on ``spec``."""

    spec: str
    task: Task
    options: EntryOptions = field(default_factory=EntryOptions)


class Schedule(Sequence[PeriodicTaskConfig]):
    """An application's periodic tasks, declared once and run by whichever process should run them.

    The same object serves every way of scheduling: an :class:`~asynq_aio.App` carrying it
    (``asynq-aio worker module:app --scheduler``, or ``app.serve()`` embedded),
    ``asynq-aio scheduler module:schedule``, :meth:`Scheduler.add_schedule`, or a
    :class:`PeriodicTaskManager` provider (it is a sequence of :class:`PeriodicTaskConfig`).
    :meth:`add` checks the spec and the options at once, so a typo fails at import, not at the
    first fire. ``location`` is the time zone of specs without ``CRON_TZ=``.
    """

    def __init__(self, *, location: tzinfo | str = UTC) -> None:
        self.location = time_zone(location)
        self._configs: dict[str, PeriodicTaskConfig] = {}

    @overload
    def add(
        self,
        spec: str,
        task: Task,
        payload: None = None,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_in: Duration | None = None,
        unique: Duration | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> PeriodicTaskConfig: ...

    @overload
    def add(
        self,
        spec: str,
        task: TaskDef[ModelT],
        payload: ModelT,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_in: Duration | None = None,
        unique: Duration | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> PeriodicTaskConfig: ...

    def add(
        self,
        spec: str,
        task: Task | TaskDef[Any],
        payload: BaseModel | None = None,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_in: Duration | None = None,
        unique: Duration | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> PeriodicTaskConfig:
        """Enqueue ``task`` (a :class:`Task`, or a :class:`TaskDef` with its payload) on ``spec``.

        A TaskDef's defaults (queue, max_retry, timeout, retention, unique, group) apply unless a
        keyword here overrides them. Raises ValueError for a bad spec and InvalidTaskError /
        InvalidQueueName for bad options. Adding an identical entry again returns the first one.
        """
        if isinstance(task, TaskDef):
            if payload is None:
                raise TypeError(f"Schedule.add of TaskDef {task.type!r} needs its payload")
            # A periodic entry stores into one queue (its fire claim lives in that queue's slot, and
            # every scheduler must derive the same entry ID): a sharded TaskDef's entry takes the
            # shard its task type maps to.
            tq = task.queue
            defaults = EntryOptions(
                queue=tq.for_key(task.type) if isinstance(tq, ShardedQueue) else tq,
                max_retry=task.max_retry,
                timeout=task.timeout,
                unique=task.unique,
                retention=task.retention,
                group=task.group,
            )
            plain = task.task(payload)
        elif isinstance(task, Task):
            if payload is not None:
                raise TypeError("Schedule.add takes a payload only with a TaskDef (a Task carries its own)")
            defaults = EntryOptions()
            plain = task
        else:
            raise TypeError(f"Schedule.add takes a Task or a TaskDef, got {type(task).__name__}")
        given: dict[str, Any] = {
            "queue": queue,
            "max_retry": max_retry,
            "timeout": timeout,
            "deadline": deadline,
            "process_in": process_in,
            "unique": unique,
            "retention": retention,
            "group": group,
        }
        options = replace(defaults, **{k: v for k, v in given.items() if v is not None})
        entry = CronEntry.build(spec, plain, options, location=self.location)
        return self._configs.setdefault(entry.id, PeriodicTaskConfig(spec, plain, options))

    @overload
    def __getitem__(self, index: int) -> PeriodicTaskConfig: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PeriodicTaskConfig]: ...

    def __getitem__(self, index: int | slice) -> PeriodicTaskConfig | Sequence[PeriodicTaskConfig]:
        return list(self._configs.values())[index]

    def __len__(self) -> int:
        return len(self._configs)

    def __iter__(self) -> Iterator[PeriodicTaskConfig]:
        return iter(list(self._configs.values()))

    def __repr__(self) -> str:
        return f"Schedule({len(self)} entries, location={self.location})"


ConfigProvider = Callable[[], Awaitable[Sequence[PeriodicTaskConfig]] | Sequence[PeriodicTaskConfig]]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync changed (entry IDs)."""

    added: list[str]
    removed: list[str]
    invalid: int = 0  # configs skipped because their spec or options are invalid


class PeriodicTaskManager:
    """Runs ``scheduler`` and re-reads ``provider`` every ``sync_interval`` seconds.

    The provider may be a plain or an async function. Only entries the manager added are ever
    removed by it; entries registered on the scheduler directly are left alone. A config with a bad
    spec or options is logged and skipped, and a provider that raises leaves the entries as they
    are (except on the first sync, which fails :meth:`serve` so a broken setup is noticed).
    """

    def __init__(
        self, scheduler: Scheduler, provider: ConfigProvider, *, sync_interval: float = 180.0
    ) -> None:
        if sync_interval <= 0:
            raise ValueError("sync_interval must be positive")
        self.scheduler = scheduler
        self.provider = provider
        self.sync_interval = sync_interval
        self._owned: set[str] = set()

    @property
    def entry_ids(self) -> set[str]:
        """IDs of the entries this manager registered and still keeps."""
        return set(self._owned)

    async def _configs(self) -> Sequence[PeriodicTaskConfig]:
        result = self.provider()
        if isinstance(result, Awaitable):
            return await result
        return result

    async def sync(self) -> SyncResult:
        """Read the provider once and apply the difference; raises what the provider raises."""
        configs = await self._configs()
        wanted: dict[str, CronEntry] = {}
        invalid = 0
        for cfg in configs:
            try:
                entry = self.scheduler.build_entry(cfg.spec, cfg.task, cfg.options)
            except (ValueError, TypeError) as exc:
                invalid += 1
                log.error("skipping periodic task config %r: %s", cfg.spec, exc)
                continue
            wanted.setdefault(entry.id, entry)
        added = [eid for eid, entry in wanted.items() if self.scheduler.add_entry(entry)]
        self._owned.update(added)
        removed = sorted(self._owned - wanted.keys())
        for eid in removed:
            self._owned.discard(eid)
            with suppress(KeyError):  # the application unregistered it directly meanwhile
                self.scheduler.unregister(eid)
        if added or removed:
            log.info("periodic tasks synced: %d added, %d removed", len(added), len(removed))
        return SyncResult(added=added, removed=removed, invalid=invalid)

    async def run(self) -> None:
        """Sync and schedule until SIGINT or SIGTERM (or until cancelled)."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with self.serve():
                async for sig in signals:
                    log.info("received %s, stopping periodic tasks", signal.Signals(sig).name)
                    break

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[PeriodicTaskManager]:
        """First sync (errors propagate), then the scheduler and the sync loop in the background."""
        await self.sync()
        async with self.scheduler.serve(), anyio.create_task_group() as tg:
            tg.start_soon(self._sync_loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def _sync_loop(self) -> None:
        while True:
            await anyio.sleep(self.sync_interval)
            await self._sync_loop_once()

    async def _sync_loop_once(self) -> None:
        """One background sync: a failing provider is logged and the current entries are kept."""
        try:
            await self.sync()
        except Exception as exc:
            log.error("periodic task provider failed; keeping the current entries: %s", exc)
