"""Prometheus metrics scraped over HTTP: the queue exporter (Asynq's names) on a single Redis and on
the cluster, its background refresh and failure reporting, the worker middleware, and the
``asynq-aio metrics`` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from conftest import RedisTarget
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel
from typer.testing import CliRunner

from asynq_aio import (
    Client,
    Config,
    Inspector,
    RedisClusterClientOpt,
    RevokeTask,
    ServeMux,
    Server,
    SkipRetry,
    Task,
    parse_redis_url,
)
from asynq_aio._connection import RedisConnOpt
from asynq_aio._devcluster import find_free_port_base
from asynq_aio._inspection import QueueInfo
from asynq_aio.metrics import (
    QueueMetricsCollector,
    QueueMetricsExporter,
    QueueSnapshot,
    WorkerMetrics,
    serve_metrics,
)


class Payload(BaseModel):
    n: int


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def opt_for(t: RedisTarget) -> RedisConnOpt:
    if t.kind == "single":
        assert t.url is not None
        return parse_redis_url(t.url)
    assert t.addrs is not None
    return RedisClusterClientOpt(addrs=t.addrs)


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by sample name and label set."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        resp = await http.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)


def get(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample by its exact labels. The queue families also carry ``logical_queue``, which for a
    queue that is not a shard must equal ``queue``: taken as that unless a test names it."""
    if "queue" in labels and not name.startswith("asynq_worker_"):
        labels.setdefault("logical_queue", labels["queue"])
    return samples.get((name, frozenset(labels.items())))


def queue_on_another_master(queue: str) -> str:
    """A second queue name whose slot is in another third of the slot space than ``queue``'s, so on
    a 3-master DevCluster the two queues live on different masters."""
    third = Inspector.queue_slot(queue) * 3 // 16384
    for i in range(100):
        other = f"{queue}_b{i}"
        if Inspector.queue_slot(other) * 3 // 16384 != third:
            return other
    raise AssertionError("no queue name found on another master")


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_exporter_and_worker_metrics_for_tasks_in_every_state(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    opt = opt_for(redis_target)
    busy, idle = unique_queue, queue_on_another_master(unique_queue)
    release = anyio.Event()

    worker_registry = CollectorRegistry()
    mux = ServeMux()
    mux.use(WorkerMetrics(worker_registry))

    async def ok(task: Task) -> None:
        pass

    async def skip(task: Task) -> None:
        raise SkipRetry("bad input")

    async def flaky(task: Task) -> None:
        raise RuntimeError("upstream down")

    async def block(task: Task) -> None:
        await release.wait()

    for name, fn in {"m:ok": ok, "m:skip": skip, "m:flaky": flaky, "m:block": block}.items():
        mux.handle_func(name, fn)
    cfg = Config(concurrency=4, queues={busy: 1}, retry_delay_func=lambda n, e, t: 3600.0)

    async with Client(opt) as client, Inspector(opt) as insp:
        await client.enqueue(Task("m:ok"), queue=busy, retention=3600)
        await client.enqueue(Task("m:skip"), queue=busy)
        await client.enqueue(Task("m:flaky"), queue=busy, max_retry=3)
        await client.enqueue(Task("m:block"), queue=busy)
        for _ in range(3):
            await client.enqueue(Task("m:wait"), queue=idle)
        await client.enqueue(Task("m:later"), queue=idle, process_in=3600)
        doomed = await client.enqueue(Task("m:doomed"), queue=idle)
        await insp.archive_task(idle, doomed.id)
        await insp.pause_queue(idle)

        async def busy_settled() -> bool:
            i = await insp.get_queue_info(busy, memory=False)
            return (i.completed, i.archived, i.retry, i.active) == (1, 1, 1, 1)

        # The shared single Redis holds every test session's queues: name ours (plus one that does
        # not exist). The cluster is this session's own: there the exporter lists every queue.
        missing = f"{unique_queue}_missing"
        only = [busy, idle, missing] if redis_target.kind == "single" else None
        exporter = QueueMetricsExporter(opt, registry=CollectorRegistry(), interval=60, queues=only)
        async with exporter, Server(opt, cfg).serve(mux):
            await wait_until(busy_settled)
            queue_registry = CollectorRegistry()
            queue_registry.register(exporter.collector)
            with (
                serve_metrics(0, "127.0.0.1", queue_registry) as qsrv,
                serve_metrics(0, "127.0.0.1", worker_registry) as wsrv,
            ):
                empty = await scrape(qsrv.url)  # before the first refresh: no queue data yet
                assert get(empty, "asynq_queue_size", queue=busy) is None
                assert get(empty, "asynq_exporter_refresh_errors_total") == 0
                await exporter.refresh()
                m = await scrape(qsrv.url)
                expected = {
                    busy: {"active": 1, "pending": 0, "scheduled": 0, "retry": 1, "archived": 1},
                    idle: {"active": 0, "pending": 3, "scheduled": 1, "retry": 0, "archived": 1},
                }
                expected[busy].update(completed=1, aggregating=0)
                expected[idle].update(completed=0, aggregating=0)
                for q, states in expected.items():
                    for state, n in states.items():
                        assert get(m, "asynq_tasks_enqueued_total", queue=q, state=state) == n, (q, state)
                    assert get(m, "asynq_queue_size", queue=q) == sum(states.values())
                    assert get(m, "asynq_queue_groups", queue=q) == 0
                    memory = get(m, "asynq_queue_memory_usage_approx_bytes", queue=q)
                    assert memory is not None and memory > 0
                # ok, skip and flaky were processed; skip and flaky failed (Asynq's statistics)
                assert get(m, "asynq_tasks_processed_total", queue=busy) == 3
                assert get(m, "asynq_tasks_failed_total", queue=busy) == 2
                assert get(m, "asynq_tasks_processed_total", queue=idle) == 0
                assert get(m, "asynq_queue_paused_total", queue=busy) == 0
                assert get(m, "asynq_queue_paused_total", queue=idle) == 1
                assert get(m, "asynq_queue_latency_seconds", queue=busy) == 0  # nothing pending
                info = await insp.get_queue_info(idle, memory=False)
                latency = get(m, "asynq_queue_latency_seconds", queue=idle)
                assert latency is not None and 0 < latency <= info.latency.total_seconds()
                age = get(m, "asynq_exporter_snapshot_age_seconds")
                assert age is not None and age >= 0
                assert get(m, "asynq_exporter_refresh_errors_total") == 0
                assert get(m, "asynq_queue_size", queue=missing) is None

                w = await scrape(wsrv.url)
                assert get(w, "asynq_worker_tasks_in_flight", queue=busy, task_type="m:block") == 1
                for task_type, outcome in [
                    ("m:ok", "succeeded"),
                    ("m:skip", "skip_retry"),
                    ("m:flaky", "failed"),
                ]:
                    labels = {"queue": busy, "task_type": task_type}
                    assert get(w, "asynq_worker_tasks_in_flight", **labels) == 0
                    assert get(w, "asynq_worker_tasks_total", **labels, outcome=outcome) == 1
                    assert get(w, "asynq_worker_handler_duration_seconds_count", **labels) == 1
                    assert get(w, "asynq_worker_handler_duration_seconds_bucket", **labels, le="+Inf") == 1
                assert (
                    get(w, "asynq_worker_tasks_total", queue=busy, task_type="m:block", outcome="succeeded")
                    is None
                )

                release.set()

                async def block_done() -> bool:
                    s = await scrape(wsrv.url)
                    labels = {"queue": busy, "task_type": "m:block"}
                    return get(s, "asynq_worker_tasks_total", **labels, outcome="succeeded") == 1

                await wait_until(block_done)
                w = await scrape(wsrv.url)
                assert get(w, "asynq_worker_tasks_in_flight", queue=busy, task_type="m:block") == 0

                async def acked() -> bool:
                    return (await insp.get_queue_info(busy, memory=False)).active == 0

                await wait_until(acked)
                await exporter.refresh()
                m = await scrape(qsrv.url)
                assert get(m, "asynq_tasks_enqueued_total", queue=busy, state="active") == 0
                assert get(m, "asynq_tasks_processed_total", queue=busy) == 4


@pytest.mark.anyio
async def test_worker_metrics_outcomes_for_cancel_revoke_and_invalid_payload(
    single_redis_url: str, unique_queue: str
) -> None:
    registry = CollectorRegistry()
    mux = ServeMux()
    mux.use(WorkerMetrics(registry))

    async def slow(task: Task) -> None:
        await anyio.sleep(3600)

    async def revoke(task: Task) -> None:
        raise RevokeTask("not wanted")

    async def typed(payload: Payload) -> None:
        pass

    mux.handle_func("w:slow", slow)
    mux.handle_func("w:revoke", revoke)
    mux.handle_func("w:typed", typed)
    opt = parse_redis_url(single_redis_url)
    cfg = Config(concurrency=4, queues={unique_queue: 1}, retry_delay_func=lambda n, e, t: 3600.0)

    def count(task_type: str, outcome: str) -> float | None:
        return registry.get_sample_value(
            "asynq_worker_tasks_total", {"queue": unique_queue, "task_type": task_type, "outcome": outcome}
        )

    async with Client(opt) as client, Server(opt, cfg).serve(mux):
        await client.enqueue(Task("w:slow"), queue=unique_queue, timeout=1)
        await client.enqueue(Task("w:revoke"), queue=unique_queue)
        await client.enqueue(Task("w:typed", {"n": "not a number"}), queue=unique_queue)
        await client.enqueue(Task("w:typed", {"n": 7}), queue=unique_queue)

        async def all_counted() -> bool:
            return None not in (
                count("w:slow", "cancelled"),
                count("w:revoke", "revoked"),
                count("w:typed", "invalid_payload"),
                count("w:typed", "succeeded"),
            )

        await wait_until(all_counted)
    assert count("w:slow", "cancelled") == 1
    assert count("w:revoke", "revoked") == 1
    assert count("w:typed", "invalid_payload") == 1
    assert count("w:typed", "succeeded") == 1
    labels = {"queue": unique_queue, "task_type": "w:slow"}
    assert registry.get_sample_value("asynq_worker_tasks_in_flight", labels) == 0
    slow_seconds = registry.get_sample_value("asynq_worker_handler_duration_seconds_sum", labels)
    assert slow_seconds is not None and slow_seconds > 0


@pytest.mark.anyio
async def test_background_refresh_follows_the_queue(single_redis_url: str, unique_queue: str) -> None:
    opt = parse_redis_url(single_redis_url)
    registry = CollectorRegistry()
    async with (
        Client(opt) as client,
        QueueMetricsExporter(
            opt, interval=0.1, memory=False, registry=registry, queues=[unique_queue]
        ) as exporter,
    ):
        with serve_metrics(0, "127.0.0.1", registry) as srv:
            async with anyio.create_task_group() as tg:
                tg.start_soon(exporter.run)
                for n in (1, 2, 3):
                    await client.enqueue(Task("bg:t"), queue=unique_queue)

                    async def shows(n: int = n) -> bool:
                        m = await scrape(srv.url)
                        return get(m, "asynq_tasks_enqueued_total", queue=unique_queue, state="pending") == n

                    await wait_until(shows)
                tg.cancel_scope.cancel()
    assert exporter.collector.snapshot is not None
    assert any(q.queue == unique_queue for q in exporter.collector.snapshot.queues)


@pytest.mark.anyio
async def test_unreachable_redis_counts_errors_and_exports_no_queue_data() -> None:
    port = find_free_port_base(1)  # nothing listens there: connections are refused
    registry = CollectorRegistry()
    opt = parse_redis_url(f"redis://127.0.0.1:{port}/0")
    async with QueueMetricsExporter(opt, interval=0.5, timeout=5.0, registry=registry) as exporter:
        for _ in range(2):
            with pytest.raises(Exception):  # noqa: B017 - whichever error the transport gives up with
                await exporter.refresh()
    with serve_metrics(0, "127.0.0.1", registry) as srv:
        m = await scrape(srv.url)
    assert get(m, "asynq_exporter_refresh_errors_total") == 2
    assert get(m, "asynq_exporter_snapshot_age_seconds") is None
    assert not any(name.startswith("asynq_queue_") or name.startswith("asynq_tasks_") for name, _ in m)


def _info(queue: str) -> QueueInfo:
    return QueueInfo(
        queue=queue, size=5, groups=0, latency=timedelta(seconds=2.5), memory_usage=None,
        pending=5, active=0, scheduled=0, retry=0, archived=0, completed=0, aggregating=0,
        processed=0, failed=0, processed_total=9, failed_total=1, paused=False,
        timestamp=datetime.now(tz=UTC),
    )  # fmt: skip


#: q1's labels on the queue families (a queue that is not a shard is its own logical queue)
Q1 = {"queue": "q1", "logical_queue": "q1"}


def test_collector_drops_queue_data_older_than_max_age() -> None:
    now = [1000.0]
    collector = QueueMetricsCollector(max_age=30, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(QueueSnapshot(queues=(_info("q1"),), taken_at=990.0, duration=0.01))
    assert registry.get_sample_value("asynq_queue_size", Q1) == 5
    assert registry.get_sample_value("asynq_queue_latency_seconds", Q1) == 2.5
    assert registry.get_sample_value("asynq_tasks_processed_total", Q1) == 9
    assert registry.get_sample_value("asynq_exporter_snapshot_age_seconds") == 10
    # no memory estimate was taken: the series is absent rather than a misleading 0
    assert registry.get_sample_value("asynq_queue_memory_usage_approx_bytes", Q1) is None
    now[0] = 1021.0  # 31 s old: stale
    assert registry.get_sample_value("asynq_queue_size", Q1) is None
    assert registry.get_sample_value("asynq_exporter_snapshot_age_seconds") == 31
    # a second collector with the same names is refused by the registry
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(QueueMetricsCollector())


@pytest.mark.anyio
@pytest.mark.slow
async def test_metrics_command_serves_queues_until_sigterm(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    opt = opt_for(redis_target)
    queues = [unique_queue, queue_on_another_master(unique_queue)]
    async with Client(opt) as client:
        for i, q in enumerate(queues):
            for _ in range(i + 1):
                await client.enqueue(Task("cli:m"), queue=q)
    conn = (
        ["--redis-url", redis_target.url]
        if redis_target.url
        else ["--cluster-addrs", ",".join(redis_target.addrs or [])]
    )
    # on the shared single Redis, only this test's queues; on the cluster, every queue
    only = [a for q in queues for a in ("-q", q)] if redis_target.url else []
    cmd = [sys.executable, "-m", "asynq_aio.cli", "metrics", "--port", "0", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--interval", "0.2", "--no-memory", *conn, *only],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = await anyio.to_thread.run_sync(proc.stderr.readline)
        found = re.search(rb"(http://\S+/metrics)", line)
        assert found, line
        url = found.group(1).decode()

        async def both_queues() -> bool:
            m = await scrape(url)
            return [get(m, "asynq_tasks_enqueued_total", queue=q, state="pending") for q in queues] == [1, 2]

        await wait_until(both_queues)
        m = await scrape(url)
        assert get(m, "asynq_queue_size", queue=queues[1]) == 2
        assert get(m, "asynq_queue_memory_usage_approx_bytes", queue=queues[0]) is None  # --no-memory
        proc.send_signal(signal.SIGTERM)
        rc = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=15))
        rest = proc.stderr.read()
        assert rc == 0, rest
        assert b"stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_metrics_command_without_prometheus_client_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from asynq_aio.cli.app import app

    for name in [m for m in sys.modules if m == "asynq_aio.metrics" or m.startswith("asynq_aio.metrics.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_client.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    result = CliRunner().invoke(app, ["metrics", "--port", "0"])
    assert result.exit_code == 1
    assert "pip install 'asynq-aio[metrics]'" in result.output
    assert "Traceback" not in result.output
