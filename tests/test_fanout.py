"""server/fanout.py without Redis: bounded calls and per-queue fan-out.

``within`` exists because a cancel scope around a redis-py call could leave a stray cancellation
that ended the caller's whole task group; these tests pin down that nothing escapes it.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import anyio.lowlevel
import pytest

from asynq_aio.server.fanout import BudgetExceeded, each_queue, within

pytestmark = pytest.mark.anyio


async def test_within_returns_the_result_and_raises_the_calls_own_error() -> None:
    async def ok() -> int:
        await asyncio.sleep(0)
        return 42

    async def boom() -> int:
        raise ValueError("boom")

    assert await within(1.0, ok()) == 42
    with pytest.raises(ValueError, match="boom"):
        await within(1.0, boom())


async def test_within_gives_up_after_its_budget_and_cancels_the_call() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    with pytest.raises(BudgetExceeded, match=r"no answer within 0\.1s"):
        await within(0.1, hangs())
    # unwound before within() raised: a call left running would still hold its connection
    assert cancelled.is_set()


async def test_a_cancelled_caller_waits_for_its_call_to_unwind() -> None:
    """The caller's own cancellation (a server stopping) also waits for the call to end, so the
    caller can close its client without a command still in flight on it."""
    unwound = asyncio.Event()
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # cleanup that itself awaits, as closing a connection does
            unwound.set()

    with anyio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await started.wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            await within(5.0, hangs())
    assert scope.cancelled_caught
    assert unwound.is_set()


async def test_a_cancellation_inside_the_call_does_not_escape_to_the_caller() -> None:
    """What redis-py's own timeouts could leave behind: a CancelledError the caller never asked for."""

    async def cancelled_from_inside() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    with pytest.raises(BudgetExceeded, match="cancelled"):
        await within(1.0, cancelled_from_inside())
    await anyio.lowlevel.checkpoint()  # the caller is not being cancelled: it goes on


async def test_each_queue_keeps_the_answers_in_time_and_logs_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def per_queue(q: str) -> str:
        if q == "stalled":
            await asyncio.sleep(60)
        if q == "broken":
            raise RuntimeError("node down")
        return q.upper()

    with caplog.at_level(logging.ERROR, logger="asynq_aio.server"):
        with anyio.fail_after(5):
            got = await each_queue(["a", "stalled", "broken", "b"], per_queue, budget=0.2, what="test")
    assert got == {"a": "A", "b": "B"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("stalled" in m and "no answer within 0.2s" in m for m in messages)
    assert any("broken" in m and "node down" in m for m in messages)


async def test_each_queue_runs_a_thousand_queues_on_limit_workers_not_a_task_per_queue() -> None:
    """1,000 queues, at most ``limit`` at once, and never more tasks alive than the workers and
    their calls: one task per queue made each round start 1,000 tasks in one go, which held the
    event loop (and every pick-up behind it) for tens of milliseconds."""
    queues = [f"q{i}" for i in range(1000)]
    base = len(asyncio.all_tasks())
    running = most_running = most_tasks = 0

    async def fn(queue: str) -> str:
        nonlocal running, most_running, most_tasks
        running += 1
        most_running = max(most_running, running)
        most_tasks = max(most_tasks, len(asyncio.all_tasks()) - base)
        await anyio.lowlevel.checkpoint()
        running -= 1
        return queue

    results = await each_queue(queues, fn, budget=5.0, what="test", limit=16)
    assert results == {q: q for q in queues}
    assert most_running == 16
    assert most_tasks <= 2 * 16  # the 16 workers and the call each is waiting on
