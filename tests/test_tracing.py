"""Enqueue hooks on the Client, and OpenTelemetry trace context carried from enqueue to handler
through the task headers, on a single Redis and on the cluster."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest
from conftest import RedisTarget
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from asynq_aio import (
    Client,
    Config,
    Inspector,
    RedisClusterClientOpt,
    ServeMux,
    Server,
    Task,
    current_task,
    parse_redis_url,
)
from asynq_aio._client import OutgoingTask
from asynq_aio._connection import RedisConnOpt
from asynq_aio._errors import TaskIDConflictError
from asynq_aio.tracing import TracingEnqueueHook, TracingMiddleware

pytestmark = pytest.mark.anyio


def opt_for(t: RedisTarget) -> RedisConnOpt:
    if t.kind == "single":
        assert t.url is not None
        return parse_redis_url(t.url)
    assert t.addrs is not None
    return RedisClusterClientOpt(addrs=t.addrs)


async def test_enqueue_hooks_set_stored_headers_and_see_each_outcome(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    seen: list[tuple[str, str, str, str | None]] = []

    def hook(out: OutgoingTask) -> Iterator[None]:
        out.headers["x-hook"] = f"{out.queue}/{out.task_id}"
        try:
            yield
        except Exception as exc:
            seen.append((out.task.type, out.queue, out.task_id, type(exc).__name__))
            raise
        seen.append((out.task.type, out.queue, out.task_id, None))

    opt = opt_for(redis_target)
    async with Client(opt, enqueue_hooks=[contextmanager(hook)]) as client, Inspector(opt) as insp:
        task = Task("hook:one", b"x", headers={"keep": "me"})
        info = await client.enqueue(task, queue=unique_queue, task_id="fixed-id")
        assert task.headers == {"keep": "me"}  # the caller's Task is not changed
        assert info.headers == {"keep": "me", "x-hook": f"{unique_queue}/fixed-id"}
        stored = await insp.get_task_info(unique_queue, "fixed-id")
        assert stored.headers == info.headers
        with pytest.raises(TaskIDConflictError):
            await client.enqueue(Task("hook:dup"), queue=unique_queue, task_id="fixed-id")
        results = await client.enqueue_many([Task("hook:a"), Task("hook:b")], queue=unique_queue)
    assert seen[:2] == [
        ("hook:one", unique_queue, "fixed-id", None),
        ("hook:dup", unique_queue, "fixed-id", "TaskIDConflictError"),
    ]
    ids = []
    for r in results:
        assert not isinstance(r, Exception)
        assert r.headers == {"x-hook": f"{unique_queue}/{r.id}"}
        ids.append(r.id)
    assert seen[2:] == [("hook:a", unique_queue, ids[0], None), ("hook:b", unique_queue, ids[1], None)]


def _kind_spans(exporter: InMemorySpanExporter, kind: SpanKind) -> dict[str, ReadableSpan]:
    """Finished spans of ``kind`` that did not fail, by task ID."""
    out: dict[str, ReadableSpan] = {}
    for s in exporter.get_finished_spans():
        if s.kind == kind and s.attributes is not None and s.status.status_code != StatusCode.ERROR:
            out[str(s.attributes["messaging.message.id"])] = s
    return out


async def test_handler_span_is_a_child_of_the_producer_span(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    opt = opt_for(redis_target)

    seen_in_handler: dict[str, SpanContext] = {}
    mux = ServeMux()
    mux.use(TracingMiddleware(provider))

    async def ok(task: Task) -> None:
        seen_in_handler[current_task().id] = trace.get_current_span().get_span_context()
        with tracer.start_as_current_span("inside"):
            pass

    async def fail(task: Task) -> None:
        raise RuntimeError("boom")

    async def hang(task: Task) -> None:
        await anyio.sleep(3600)

    mux.handle_func("tr:ok", ok)
    mux.handle_func("tr:fail", fail)
    mux.handle_func("tr:hang", hang)
    cfg = Config(concurrency=8, queues={unique_queue: 1}, retry_delay_func=lambda n, e, t: 3600.0)

    async with (
        Client(opt, enqueue_hooks=[TracingEnqueueHook(provider)]) as client,
        Client(opt) as untraced,
    ):
        with tracer.start_as_current_span("request") as request:
            one = await client.enqueue(
                Task("tr:ok", b"12345"), queue=unique_queue, task_id=f"{unique_queue}-1"
            )
            many = await client.enqueue_many([Task("tr:ok"), Task("tr:ok")], queue=unique_queue)
            failing = await client.enqueue(Task("tr:fail"), queue=unique_queue, max_retry=0)
            hanging = await client.enqueue(Task("tr:hang"), queue=unique_queue, timeout=1, max_retry=0)
            with pytest.raises(TaskIDConflictError):
                await client.enqueue(Task("tr:ok"), queue=unique_queue, task_id=f"{unique_queue}-1")
        plain = await untraced.enqueue(Task("tr:ok"), queue=unique_queue)
        infos = [one, *[i for i in many if not isinstance(i, Exception)], failing, hanging]
        assert len(infos) == 5
        ok_ids = [one.id, *[i.id for i in infos[1:3]], plain.id]

        async def all_consumed() -> bool:
            return sum(s.kind == SpanKind.CONSUMER for s in exporter.get_finished_spans()) == 6

        async with Server(opt, cfg).serve(mux):
            with anyio.fail_after(20):
                while not await all_consumed():
                    await anyio.sleep(0.05)

    producers = _kind_spans(exporter, SpanKind.PRODUCER)
    consumers = {
        s.attributes["messaging.message.id"]: s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.CONSUMER and s.attributes
    }
    req_ctx = request.get_span_context()
    assert set(producers) == {i.id for i in infos}  # the failed duplicate is checked below
    for info in infos:
        prod, cons = producers[info.id], consumers[info.id]
        # the context stored in the task's headers is the producer span's
        pctx = prod.get_span_context()
        assert pctx is not None
        assert (
            info.headers["traceparent"]
            == f"00-{pctx.trace_id:032x}-{pctx.span_id:016x}-{pctx.trace_flags:02x}"
        )
        # every producer span is a child of the request, not of the previous producer span
        assert prod.parent is not None and prod.parent.span_id == req_ctx.span_id
        assert prod.name == f"send {unique_queue}"
        assert cons.name == f"process {unique_queue}"
        assert cons.parent is not None and cons.parent.span_id == pctx.span_id
        assert cons.context is not None and cons.context.trace_id == req_ctx.trace_id
        for span, op in ((prod, "send"), (cons, "process")):
            assert span.attributes is not None
            assert span.attributes["messaging.system"] == "asynq"
            assert span.attributes["messaging.operation.type"] == op
            assert span.attributes["messaging.destination.name"] == unique_queue
            assert span.attributes["messaging.message.id"] == info.id
            assert span.attributes["asynq.task.type"] == info.type
        assert prod.attributes is not None and cons.attributes is not None
        assert prod.attributes["messaging.message.body.size"] == len(info.payload)
        assert cons.attributes["asynq.task.retry_count"] == 0
    one_attrs = producers[one.id].attributes
    assert one_attrs is not None and one_attrs["messaging.message.body.size"] == 5

    # the handler runs inside the consumer span; its own spans nest under it
    for task_id in ok_ids[:3]:
        cctx = consumers[task_id].context
        assert cctx is not None and seen_in_handler[task_id] == cctx
        assert consumers[task_id].status.status_code == StatusCode.UNSET
    inside = [s for s in exporter.get_finished_spans() if s.name == "inside"]
    assert {s.parent.span_id for s in inside if s.parent} == {
        c.span_id for c in (consumers[i].context for i in ok_ids) if c is not None
    }

    # a task enqueued without tracing starts a new trace in the worker
    assert consumers[plain.id].parent is None
    assert consumers[plain.id].context is not None
    assert consumers[plain.id].context.trace_id != req_ctx.trace_id

    # failures: the handler's exception, a handler cut off by its timeout, a refused enqueue
    failed = consumers[failing.id]
    assert failed.status.status_code == StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert consumers[hanging.id].status.status_code == StatusCode.ERROR
    assert "cancelled" in (consumers[hanging.id].status.description or "")
    refused = [
        s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.PRODUCER and s.status.status_code == StatusCode.ERROR
    ]
    assert len(refused) == 1
    assert refused[0].attributes is not None
    assert refused[0].attributes["messaging.message.id"] == f"{unique_queue}-1"
    assert "TaskIDConflictError" in (refused[0].status.description or "")


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "asynq_aio.tracing")
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=re.escape("pip install 'asynq-aio[otel]'")):
        importlib.import_module("asynq_aio.tracing")
