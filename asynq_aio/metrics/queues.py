"""Queue metrics with the names of Asynq's Go collector, read from a snapshot that an asyncio task
refreshes in the background.

Why a snapshot: prometheus-client calls ``collect()`` on its HTTP thread, while the Inspector is
async and lives on the exporter's event loop. Reading Redis inside ``collect()`` would mean blocking
that thread on the loop (and a slow or unreachable Redis would hang every scrape). Instead
:class:`QueueMetricsExporter` reads every queue each ``interval`` seconds on the loop and swaps in an
immutable :class:`QueueSnapshot`; ``collect()`` only formats the latest one, so a scrape never waits
for Redis. The snapshot's age is exported, so a stuck refresh is visible and alertable.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import anyio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from asynq_aio._closing import AsyncClosing
from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._errors import QueueNotFoundError
from asynq_aio._inspection import QueueInfo
from asynq_aio._inspector import Inspector
from asynq_aio.protocol.shards import logical_queue

log = logging.getLogger("asynq_aio.metrics")

# The states Go's collector exports as asynq_tasks_enqueued_total{state=...}, plus aggregating,
# which Go leaves out although its QueueInfo counts it.
STATES = ("active", "pending", "scheduled", "retry", "archived", "completed", "aggregating")


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Every queue's info as read in one refresh."""

    queues: tuple[QueueInfo, ...]
    taken_at: float  # time.monotonic() when the read finished
    duration: float  # seconds the read took


class QueueMetricsCollector:
    """A prometheus-client collector over the latest :class:`QueueSnapshot`.

    ``collect()`` touches no I/O. Queue metrics are left out while no snapshot exists, and once the
    latest is older than ``max_age`` seconds (a dead Redis should show as missing data, not as a
    flat line); the exporter's own metrics (snapshot age, refresh errors) are always there.
    """

    def __init__(self, *, max_age: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._snapshot: QueueSnapshot | None = None
        self._refresh_errors = 0
        self.max_age = max_age
        self._clock = clock

    @property
    def snapshot(self) -> QueueSnapshot | None:
        """The latest published snapshot, or None before the first successful refresh."""
        return self._snapshot

    def update(self, snapshot: QueueSnapshot) -> None:
        """Publish a new snapshot (one reference swap: safe against a concurrent scrape thread)."""
        self._snapshot = snapshot

    def record_error(self) -> None:
        """Count one failed refresh (exported as ``asynq_exporter_refresh_errors_total``)."""
        self._refresh_errors += 1

    def describe(self) -> Iterable[Metric]:
        """The metric names, so a registry can refuse a second collector exporting the same ones."""
        return list(_Families.new())

    def collect(self) -> Iterable[Metric]:
        """The metrics of the latest snapshot, read from memory only (called on the scrape thread); queue
        metrics are left out while there is no snapshot or it is older than ``max_age``."""
        snap = self._snapshot
        f = _Families.new()
        f.errors.add_metric([], float(self._refresh_errors))
        if snap is not None:
            snap_age = max(0.0, self._clock() - snap.taken_at)
            f.age.add_metric([], snap_age)
            f.duration.add_metric([], snap.duration)
            if self.max_age is None or snap_age <= self.max_age:
                for q in snap.queues:
                    logical = logical_queue(q.queue)
                    name = [q.queue, logical]
                    for state in STATES:
                        f.enqueued.add_metric([q.queue, state, logical], float(getattr(q, state)))
                    f.size.add_metric(name, float(q.size))
                    f.latency.add_metric(name, q.latency.total_seconds())
                    if q.memory_usage is not None:
                        f.memory.add_metric(name, float(q.memory_usage))
                    f.processed.add_metric(name, float(q.processed_total))
                    f.failed.add_metric(name, float(q.failed_total))
                    f.paused.add_metric(name, 1.0 if q.paused else 0.0)
                    f.groups.add_metric(name, float(q.groups))
        return list(f)


class _Families(NamedTuple):
    enqueued: GaugeMetricFamily
    size: GaugeMetricFamily
    latency: GaugeMetricFamily
    memory: GaugeMetricFamily
    processed: CounterMetricFamily
    failed: CounterMetricFamily
    paused: GaugeMetricFamily
    groups: GaugeMetricFamily
    age: GaugeMetricFamily
    duration: GaugeMetricFamily
    errors: CounterMetricFamily

    @classmethod
    def new(cls) -> _Families:
        # Names, help texts and labels follow hibiken/asynq x/metrics (QueueMetricsCollector), so
        # dashboards built for Go's collector work unchanged. asynq_queue_groups and the
        # asynq_exporter_* families are ours. (prometheus-client appends _total to counters.)
        # logical_queue is ours too: a sharded queue's logical name on each shard's series (the queue
        # name itself for any other queue), so `sum by (logical_queue)` adds a sharded queue's
        # shards up while `queue` keeps the concrete name Go's dashboards select on.
        q = ["queue", "logical_queue"]
        return cls(
            enqueued=GaugeMetricFamily(
                "asynq_tasks_enqueued_total",
                "Number of tasks enqueued; broken down by queue and state.",
                labels=["queue", "state", "logical_queue"],
            ),
            size=GaugeMetricFamily("asynq_queue_size", "Number of tasks in a queue", labels=q),
            latency=GaugeMetricFamily(
                "asynq_queue_latency_seconds",
                "Number of seconds the oldest pending task is waiting in pending state to be processed.",
                labels=q,
            ),
            memory=GaugeMetricFamily(
                "asynq_queue_memory_usage_approx_bytes",
                "Number of memory used by a given queue (approximated number by sampling).",
                labels=q,
            ),
            processed=CounterMetricFamily(
                "asynq_tasks_processed",
                "Number of tasks processed (both succeeded and failed); broken down by queue",
                labels=q,
            ),
            failed=CounterMetricFamily(
                "asynq_tasks_failed", "Number of tasks failed; broken down by queue", labels=q
            ),
            paused=GaugeMetricFamily("asynq_queue_paused_total", "Number of queues paused", labels=q),
            groups=GaugeMetricFamily(
                "asynq_queue_groups", "Number of groups with tasks waiting for aggregation", labels=q
            ),
            age=GaugeMetricFamily(
                "asynq_exporter_snapshot_age_seconds",
                "Seconds since the queue metrics were last read from Redis.",
            ),
            duration=GaugeMetricFamily(
                "asynq_exporter_refresh_duration_seconds",
                "Seconds the last successful read of every queue took.",
            ),
            errors=CounterMetricFamily(
                "asynq_exporter_refresh_errors",
                "Number of refreshes of the queue metrics that failed (Redis unreachable, timeout).",
            ),
        )


class QueueMetricsExporter(AsyncClosing):
    """Reads every queue through an Inspector on the running event loop and feeds a
    :class:`QueueMetricsCollector`, which it registers in ``registry`` (if given).

    Works on a single Redis, Sentinel and a Redis Cluster alike: the Inspector routes each queue's
    reads to the node that owns its slot. ``memory`` adds Asynq's sampled memory estimate, at the
    cost of a few more round trips per queue. ``queues`` limits the export to those queues (default:
    every queue in ``asynq:queues``, read again at each refresh); one that does not exist is left out.
    """

    def __init__(
        self,
        source: Inspector | RedisConnOpt | RedisClient,
        *,
        interval: float = 5.0,
        timeout: float = 10.0,
        memory: bool = True,
        max_age: float | None = None,
        registry: CollectorRegistry | None = None,
        queues: Sequence[str] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if isinstance(source, Inspector):
            self.inspector, self._owns_inspector = source, False
        else:
            # A bounded retry budget: a refresh that cannot reach Redis should fail and be counted,
            # and the next one try again, rather than retry for the default 30 s.
            budget = max(0.5, min(timeout, interval) / 2)
            self.inspector, self._owns_inspector = Inspector(source, retry=RetryPolicy(budget=budget)), True
        self.interval = interval
        self.timeout = timeout
        self.memory = memory
        self.queues = list(queues) if queues is not None else None
        self.collector = QueueMetricsCollector(max_age=max_age)
        if registry is not None:
            registry.register(self.collector)

    async def aclose(self) -> None:
        """Close the Inspector this exporter made from connection options; one passed in is left open."""
        if self._owns_inspector:
            await self.inspector.aclose()

    async def refresh(self) -> QueueSnapshot:
        """Read every queue once and publish the snapshot; raises (and counts) on failure."""
        started = time.monotonic()
        try:
            with anyio.fail_after(self.timeout):
                infos = await self._read()
        except Exception:
            self.collector.record_error()
            raise
        done = time.monotonic()
        snap = QueueSnapshot(queues=tuple(infos), taken_at=done, duration=done - started)
        self.collector.update(snap)
        return snap

    async def run(self) -> None:
        """Refresh every ``interval`` seconds until cancelled; a failed refresh is logged and counted,
        and the previous snapshot stays (ageing) until one succeeds."""
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("refreshing queue metrics failed: %s", exc or type(exc).__name__)
            await anyio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _read(self) -> list[QueueInfo]:
        names = await self.inspector.queues() if self.queues is None else self.queues
        if not self.memory:
            try:
                return await self.inspector.get_queue_infos(names)
            except QueueNotFoundError:
                pass  # a queue was removed after the listing: read the rest one by one
        return await self._read_each(names)

    async def _read_each(self, names: Sequence[str]) -> list[QueueInfo]:
        found: dict[str, QueueInfo] = {}
        limiter = anyio.CapacityLimiter(8)

        async def one(name: str) -> None:
            async with limiter:
                with contextlib.suppress(QueueNotFoundError):  # removed after the listing
                    found[name] = await self.inspector.get_queue_info(name, memory=self.memory)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return [found[n] for n in names if n in found]
