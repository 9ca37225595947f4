"""Fleet-wide flow control against real Redis (single and cluster): concurrency caps and rate limits
shared by several workers, keyed by a payload field, per task type without holding up the other
types, checked before a task is taken, re-sent safely, and a SIGKILLed worker's slots coming back
when its leases run out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest
from conftest import RedisTarget
from faultproxy import fault_proxy
from golive import GoPeer, build_peer
from pydantic import ValidationError
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    ConcurrencyLimit,
    Config,
    Inspector,
    RateLimit,
    RedisClientOpt,
    RedisUnavailableError,
    RetryPolicy,
    ServeMux,
    Server,
    Task,
)
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.broker import Broker, Limited
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.server.limits import rules_for

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent


def config(queue: str, limits: list[Any], **changes: Any) -> Config:
    settings: dict[str, Any] = {
        "concurrency": 10,
        "queues": {queue: 1},
        "limits": limits,
        "shutdown_timeout": 1.0,
        "heartbeat_interval": 0.5,
        "lease_duration": 5.0,
        "forward_interval": 0.2,
        "idle_wait": 0.2,
    }
    settings.update(changes)
    return Config(**settings)


class Gauge:
    """How many handlers run at once (overall and per label), and the most ever seen."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.started: list[tuple[float, str]] = []
        self.done: list[str] = []

    async def run(self, label: str, seconds: float) -> None:
        self.started.append((time.time(), label))
        for key in ("*", label):
            self.now[key] += 1
            self.most[key] = max(self.most[key], self.now[key])
        try:
            await anyio.sleep(seconds)
        finally:
            for key in ("*", label):
                self.now[key] -= 1
            self.done.append(label)


@asynccontextmanager
async def workers(target: RedisTarget, cfg: Config, mux: ServeMux, n: int = 2) -> AsyncIterator[None]:
    """``n`` servers (each its own broker and connections, as separate worker processes have) on one
    queue: a limit must hold across them, not per server."""
    opt = conn_opt(target.kind, target.url, target.addrs)
    async with AsyncExitStack() as stack:
        for _ in range(n):
            await stack.enter_async_context(Server(opt, cfg).serve(mux))
        yield


async def enqueue(target: RedisTarget, queue: str, tasks: list[Task]) -> None:
    async with Client(conn_opt(target.kind, target.url, target.addrs)) as client:
        for t in tasks:
            await client.enqueue(t, queue=queue)


async def test_a_concurrency_cap_holds_across_workers(redis_target: RedisTarget, unique_queue: str) -> None:
    gauge = Gauge()
    mux = ServeMux()

    async def work(task: Task) -> None:
        await gauge.run("job", 0.15)

    mux.handle_func("job", work)
    await enqueue(redis_target, unique_queue, [Task("job", b"{}") for _ in range(24)])
    cfg = config(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=3)])
    with anyio.fail_after(60):
        async with workers(redis_target, cfg, mux):
            while len(gauge.done) < 24:
                await anyio.sleep(0.05)
    # two servers with 10 slots each would run 20 at once without the cap
    assert gauge.most["*"] == 3
    assert len(gauge.done) == 24


async def test_a_cap_keyed_by_a_payload_field_is_one_cap_per_value(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    """One running task per tenant, tenants in parallel; a payload that is not JSON or lacks the
    field counts under one shared empty key (it runs, it is not an error)."""
    gauge = Gauge()
    mux = ServeMux()

    async def work(task: Task) -> None:
        try:
            tenant = str(json.loads(task.payload)["tenant"])
        except (ValueError, KeyError):
            tenant = "-"
        await gauge.run(tenant, 0.15)

    mux.handle_func("job", work)
    tasks = [Task("job", json.dumps({"tenant": t, "i": i}).encode()) for i in range(5) for t in "abc"]
    tasks += [Task("job", b"not json"), Task("job", b'{"other": 1}'), Task("job", b'{"tenant": 7}')]
    await enqueue(redis_target, unique_queue, tasks)
    cfg = config(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=1, key="tenant")])
    with anyio.fail_after(60):
        async with workers(redis_target, cfg, mux):
            while len(gauge.done) < len(tasks):
                await anyio.sleep(0.05)
    assert [gauge.most[t] for t in "abc"] == [1, 1, 1]
    assert gauge.most["-"] == 1  # not JSON and no field: the one empty key, one at a time
    assert gauge.most["*"] >= 2  # the tenants did run side by side


async def test_a_rate_limit_holds_across_workers(redis_target: RedisTarget, unique_queue: str) -> None:
    """20 starts a second, no burst, shared by two servers: 30 tasks cannot all start in less than
    (30 - 1) / 20 s, however fast the workers are (a lower bound on time, not a speed limit)."""
    gauge = Gauge()
    mux = ServeMux()

    async def work(task: Task) -> None:
        await gauge.run("job", 0.0)

    mux.handle_func("job", work)
    await enqueue(redis_target, unique_queue, [Task("job", b"{}") for _ in range(30)])
    cfg = config(unique_queue, [RateLimit(queue=unique_queue, rate=20, burst=1)])
    with anyio.fail_after(60):
        async with workers(redis_target, cfg, mux):
            while len(gauge.done) < 30:
                await anyio.sleep(0.02)
    starts = sorted(t for t, _ in gauge.started)
    assert starts[-1] - starts[0] >= 29 / 20 * 0.95  # Redis' clock vs ours: a few percent of slack
    # and no second window held more than its 20 starts (+1 for the window's edge)
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) <= 21


async def test_a_limit_on_one_task_type_does_not_hold_up_the_others(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    """Slow tasks capped at one at a time, interleaved with unlimited fast ones in the same queue:
    the fast ones do not wait behind the capped ones (they are taken past them), and the capped
    ones are never taken and put back."""
    gauge = Gauge()
    mux = ServeMux()

    async def slow(task: Task) -> None:
        await gauge.run("slow", 0.25)

    async def fast(task: Task) -> None:
        await gauge.run("fast", 0.0)

    mux.handle_func("slow", slow)
    mux.handle_func("fast", fast)
    tasks = [Task(kind, b"{}") for _ in range(12) for kind in ("slow", "fast")]
    await enqueue(redis_target, unique_queue, tasks)
    cfg = config(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=1, task_type="slow")])
    raw = RawRedis(redis_target.kind, redis_target.url, redis_target.addrs)
    try:
        with anyio.fail_after(60):
            async with workers(redis_target, cfg, mux, n=1):
                while gauge.done.count("fast") < 12:
                    await anyio.sleep(0.02)
                slow_done_then = gauge.done.count("slow")
                while len(gauge.done) < 24:
                    await anyio.sleep(0.05)
        assert gauge.most["slow"] == 1
        assert slow_done_then <= 6  # 12 capped slow tasks take ~3 s; the fast ones were not behind them
        # nothing was taken and put back: every slow task ran exactly once, and none retried
        assert gauge.done.count("slow") == 12
        assert int(await raw.cmd("GET", queue_keys(unique_queue).processed) or 0) == 24
    finally:
        await raw.aclose()


async def test_a_held_back_queue_answers_limited_and_a_resent_dequeue_hands_back_what_it_took(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    tr = Transport.connect(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs))
    broker = Broker(tr)
    qk = queue_keys(unique_queue)
    try:
        await enqueue(redis_target, unique_queue, [Task("job", b"{}") for _ in range(5)])
        rules = rules_for(unique_queue, [RateLimit(queue=unique_queue, rate=1, per=10.0, burst=2)])
        lease = time.time() + 30
        first = await broker.dequeue_limited(unique_queue, 5, lease, rules)
        assert isinstance(first, list) and len(first) == 2  # the burst of two, then the rate
        held = await broker.dequeue_limited(unique_queue, 5, lease, rules)
        assert isinstance(held, Limited) and not held.capped
        assert 4.0 < held.retry_after <= 10.0  # the next start the rate allows
        assert int(await tr.call("LLEN", qk.pending)) == 3  # held back means left in pending

        # the reply of a call was lost: the next call re-sends it with the same token
        unlimited = rules_for(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=10)])
        token = "resend-test-1"
        broker._unsettled_limited[unique_queue] = (token, float(int(lease)))
        took = await broker.dequeue_limited(unique_queue, 2, lease, unlimited)
        assert isinstance(took, list) and len(took) == 2
        broker._unsettled_limited[unique_queue] = (token, float(int(lease)))
        again = await broker.dequeue_limited(unique_queue, 2, lease, unlimited)
        assert isinstance(again, list)
        assert [d.task_id for d in again] == [d.task_id for d in took]  # the same tasks, not two more
        assert int(await tr.call("LLEN", qk.pending)) == 1
        assert int(await tr.call("ZCARD", qk.lease)) == 4
    finally:
        await tr.aclose()


@pytest.fixture(scope="module")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> GoPeer:
    return build_peer(tmp_path_factory.mktemp("go-peer-limits"))


async def test_tasks_a_go_producer_enqueued_are_limited_like_any_other(
    go_peer: GoPeer, redis_target: RedisTarget, unique_queue: str
) -> None:
    """The limit reads the task type and the payload from the message Go Asynq stored (protobuf
    written by Go): a cap of one per tenant on one task type holds for Go-enqueued tasks, and the
    other task type, also enqueued by Go, is not held back by it."""
    gauge = Gauge()
    mux = ServeMux()

    async def capped(task: Task) -> None:
        await gauge.run(str(json.loads(task.payload)["tenant"]), 0.1)

    async def free(task: Task) -> None:
        await gauge.run("free", 0.1)

    mux.handle_func("go:capped", capped)
    mux.handle_func("go:free", free)
    for tenant in ("a", "b"):
        got = await go_peer.enqueue(
            redis_target,
            "go:capped",
            json_text=f'{{"tenant":"{tenant}","i":{{i}}}}',
            count=4,
            queue=unique_queue,
        )
        assert all("error" not in t for t in got), got
    await go_peer.enqueue(redis_target, "go:free", json_text='{"tenant":"a"}', count=4, queue=unique_queue)
    cfg = config(
        unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=1, task_type="go:capped", key="tenant")]
    )
    with anyio.fail_after(60):
        async with workers(redis_target, cfg, mux, n=1):
            while len(gauge.done) < 12:
                await anyio.sleep(0.05)
    assert (gauge.most["a"], gauge.most["b"]) == (1, 1)  # capped per tenant, Go's bytes parsed
    assert gauge.most["free"] >= 2  # the other type is not under the cap (tenant "a" in its payload too)


async def test_a_limited_dequeue_whose_reply_is_lost_is_re_sent_and_counted_once(
    single_redis_url: str, unique_queue: str
) -> None:
    """The limited dequeue ran, then the connection dropped before its reply: the transport re-sends
    it, and the re-send hands back the tasks the first run took (not three more), without spending
    the rate limit again: the next start is one interval away, not four."""
    host, port, db = _single_addr(single_redis_url)
    await enqueue_to(RedisClientOpt(addr=f"{host}:{port}", db=db), unique_queue, 6)
    rules = rules_for(unique_queue, [RateLimit(queue=unique_queue, rate=1, per=10.0, burst=3)])
    async with Inspector(RedisClientOpt(addr=f"{host}:{port}", db=db)) as insp:
        with fault_proxy(host, port) as proxy:
            tr = Transport.connect(RedisClientOpt(addr=f"127.0.0.1:{proxy.port}", db=db))
            try:
                broker = Broker(tr)
                proxy.drop_reply_after(scripts.DEQUEUE_LIMITED.sha.encode())
                got = await broker.dequeue_limited(unique_queue, 6, time.time() + 60, rules)
                assert proxy.dropped == 1
                assert isinstance(got, list) and len(got) == 3  # the burst, taken once
                assert len({d.attempt for d in got}) == 1
                held = await broker.dequeue_limited(unique_queue, 6, time.time() + 60, rules)
                assert isinstance(held, Limited) and held.retry_after <= 10.5  # one interval, not 40 s
            finally:
                await tr.aclose()
        assert len(await insp.list_active_tasks(unique_queue)) == 3
        assert len(await insp.list_pending_tasks(unique_queue)) == 3
        assert {d.task_id for d in got} == {t.id for t in await insp.list_active_tasks(unique_queue)}


async def test_a_limited_dequeue_given_up_on_is_handed_out_by_the_next_one(
    single_redis_url: str, unique_queue: str
) -> None:
    """The limited dequeue ran but the caller gave up on it (no retry budget left when its reply was
    lost; in a worker, a stalled node): the next call of the queue re-sends it under the same token
    and hands out what it took, instead of leaving those tasks to wait for their lease; the cap's
    slots are held once."""
    host, port, db = _single_addr(single_redis_url)
    await enqueue_to(RedisClientOpt(addr=f"{host}:{port}", db=db), unique_queue, 5)
    rules = rules_for(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=3)])
    with fault_proxy(host, port) as proxy:
        tr = Transport.connect(
            RedisClientOpt(addr=f"127.0.0.1:{proxy.port}", db=db), retry=RetryPolicy(budget=0)
        )
        try:
            broker = Broker(tr)
            proxy.drop_reply_after(scripts.DEQUEUE_LIMITED.sha.encode())
            with pytest.raises(RedisUnavailableError):
                await broker.dequeue_limited(unique_queue, 5, time.time() + 60, rules)
            assert proxy.dropped == 1
            again = await broker.dequeue_limited(unique_queue, 5, time.time() + 60, rules)
            assert isinstance(again, list) and len(again) == 3  # what the lost call took, cap 3
            held = await broker.dequeue_limited(unique_queue, 5, time.time() + 60, rules)
            assert isinstance(held, Limited) and held.capped  # the three hold the cap: no more
        finally:
            await tr.aclose()


def _single_addr(url: str) -> tuple[str, int, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379, int((u.path or "/0").lstrip("/") or 0)


async def enqueue_to(opt: RedisClientOpt, queue: str, n: int) -> None:
    """``n`` tasks in ``queue``, and the limited dequeue script in the server's cache (so the proxy
    drops the reply of the script's run, not of a NOSCRIPT)."""
    async with Client(opt) as client:
        await client.enqueue_many([Task("job", b"{}") for _ in range(n)], queue=queue)
    tr = Transport.connect(opt)
    try:
        await tr.call("SCRIPT", "LOAD", scripts.DEQUEUE_LIMITED.source)
    finally:
        await tr.aclose()


def test_bad_limits_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RateLimit(queue="q", rate=0)
    with pytest.raises(ValidationError, match="greater than 0"):
        RateLimit(queue="q", rate=5, per=0)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ConcurrencyLimit(queue="q", limit=0)
    with pytest.raises(ValidationError, match="top-level field"):
        ConcurrencyLimit(queue="q", limit=2, key=" ")
    with pytest.raises(ValidationError, match="queue must name"):
        RateLimit(queue="", rate=2)
    with pytest.raises(ValidationError, match="would share one state"):
        Config(limits=[RateLimit(queue="q", rate=5), RateLimit(queue="q", rate=6)])
    # the same kind/type/key from two patterns that both match: the first given applies
    rules = rules_for("tenant:a", [RateLimit(queue="tenant:*", rate=5), RateLimit(queue="tenant:a", rate=9)])
    assert len(rules) == 1 and rules[0].interval_ms == 200.0


@pytest.mark.slow
async def test_a_killed_workers_capped_slots_come_back_when_its_leases_run_out(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    """A worker holding both slots of a cap of 2 is SIGKILLed: no other worker starts a task of the
    queue while the dead worker's leases are alive, and every task runs once they have run out."""
    target = (
        ["--url", redis_target.url] if redis_target.url else ["--cluster", ",".join(redis_target.addrs or [])]
    )
    qk = queue_keys(unique_queue)
    raw = RawRedis(redis_target.kind, redis_target.url, redis_target.addrs)
    await enqueue(redis_target, unique_queue, [Task("recover:job", b"{}") for _ in range(6)])
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "workerproc.py"),
            "--queue",
            unique_queue,
            *target,
            "--lease",
            "3",
            "--cap",
            "2",
        ],
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    try:
        await wait_until(lambda: _zcard(raw, qk.lease, 2), 30, what="the worker holding both slots")
        await anyio.sleep(0.5)  # a third start would show now (the worker has 4 handler slots)
        assert int(await raw.cmd("ZCARD", qk.lease)) == 2
        leases = [float(s) for _, s in await raw.cmd("ZRANGE", qk.lease, 0, -1, "WITHSCORES")]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    try:
        gauge = Gauge()
        mux = ServeMux()

        async def work(task: Task) -> None:
            await gauge.run("job", 0.1)

        mux.handle_func("recover:job", work)
        cfg = config(
            unique_queue,
            [ConcurrencyLimit(queue=unique_queue, limit=2)],
            recovery_interval=0.5,
            recovery_skew=0.0,
            retry_delay_func=lambda n, e, t: 0.0,
        )
        with anyio.fail_after(60):
            async with workers(redis_target, cfg, mux, n=1):
                while len(gauge.done) < 6:  # 4 pending + the 2 the dead worker held, recovered
                    await anyio.sleep(0.05)
        first_start_unix = min(t for t, _ in gauge.started)
        assert first_start_unix >= min(leases) - 0.25  # nothing started while the dead leases held the cap
        assert gauge.most["*"] <= 2
    finally:
        await raw.aclose()


async def _zcard(raw: RawRedis, key: str, want: int) -> bool:
    return int(await raw.cmd("ZCARD", key)) >= want


async def test_a_limited_dequeue_whose_window_held_only_deleted_tasks_answers_empty(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    """Pending names tasks whose hashes are gone (deleted under us): the script drops them, and the
    answer is "nothing to take" (the queue is empty now), not "held back by a limit"."""
    tr = Transport.connect(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs))
    broker = Broker(tr)
    qk = queue_keys(unique_queue)
    try:
        await tr.call("LPUSH", qk.pending, "gone-1", "gone-2", "gone-3")
        rules = rules_for(unique_queue, [ConcurrencyLimit(queue=unique_queue, limit=2)])
        got = await broker.dequeue_limited(unique_queue, 5, time.time() + 30, rules)
        assert got == []
        assert int(await tr.call("LLEN", qk.pending)) == 0
    finally:
        await tr.aclose()
