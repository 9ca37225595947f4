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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import anyio

from asynq_aio.scheduler import CronEntry, EntryOptions, Scheduler
from asynq_aio.task import Task

__all__ = ["ConfigProvider", "PeriodicTaskConfig", "PeriodicTaskManager", "SyncResult"]

log = logging.getLogger("asynq_aio.periodic")


@dataclass(frozen=True, slots=True, eq=False)
class PeriodicTaskConfig:
    """One wanted entry: enqueue ``task`` with ``options`` on ``spec``."""

    spec: str
    task: Task
    options: EntryOptions = field(default_factory=EntryOptions)


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
