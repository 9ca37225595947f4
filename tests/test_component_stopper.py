"""server/stopper.py without Redis: a handler's task is cancelled at its deadline or on request and
stays cancelled at every later step until it ends (a handler that swallows the cancellation does
not run on), and nothing is left scheduled once it has ended."""

from __future__ import annotations

import asyncio

import pytest

from asynq_aio.server.stopper import HandlerStop

pytestmark = pytest.mark.anyio


async def test_the_deadline_cancels_the_task() -> None:
    loop = asyncio.get_running_loop()
    task = loop.create_task(asyncio.sleep(3600))
    stopper = HandlerStop(task, loop.time() + 0.05)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert stopper.called


async def test_a_handler_that_swallows_the_cancellation_is_cancelled_again_at_each_await() -> None:
    loop = asyncio.get_running_loop()
    swallowed = 0

    async def stubborn() -> str:
        nonlocal swallowed
        for _ in range(5):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
        return "gave up"

    task = loop.create_task(stubborn())
    stopper = HandlerStop(task, None)
    await asyncio.sleep(0)
    stopper.stop()
    # each of the five sleeps is cancelled: the handler ends instead of sleeping for an hour
    assert await asyncio.wait_for(task, 5) == "gave up"
    assert swallowed == 5 and stopper.called


async def test_edge_triggered_cancel_alone_would_not_stop_that_handler() -> None:
    """The control for the test above: one plain Task.cancel() leaves the stubborn handler sleeping."""
    loop = asyncio.get_running_loop()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)

    task = loop.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done
    HandlerStop(task, None).stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_a_stop_before_the_task_first_runs_cancels_it() -> None:
    loop = asyncio.get_running_loop()
    ran = False

    async def handler() -> None:
        nonlocal ran
        ran = True

    task = loop.create_task(handler())
    HandlerStop(task, None).stop()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not ran


async def test_a_task_that_ends_before_its_deadline_leaves_no_timer() -> None:
    loop = asyncio.get_running_loop()
    task = loop.create_task(asyncio.sleep(0, result=7))
    stopper = HandlerStop(task, loop.time() + 0.05)
    assert await task == 7
    await asyncio.sleep(0)  # done callbacks run
    assert stopper._timer is None
    await asyncio.sleep(0.1)
    assert not stopper.called
    stopper.stop()  # after the end: nothing to cancel, nothing scheduled
    assert not task.cancelled() and task.result() == 7


async def test_stop_is_idempotent() -> None:
    loop = asyncio.get_running_loop()
    task = loop.create_task(asyncio.sleep(3600))
    stopper = HandlerStop(task, None)
    stopper.stop()
    stopper.stop()
    with pytest.raises(asyncio.CancelledError):
        await task
