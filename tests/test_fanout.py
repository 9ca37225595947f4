"""server/fanout.py without Redis: bounded calls and the per-node rounds over every queue.

``within`` exists because a cancel scope around a redis-py call could leave a stray cancellation
that ended the caller's whole task group; these tests pin down that nothing escapes it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asynq_aio.server.fanout import PROBE_CHUNK, BudgetExceeded, each_node, within

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


def _nodes(node_of: dict[str, str]) -> Callable[[list[str]], Awaitable[list[str]]]:
    async def nodes_of(queues: list[str]) -> list[str]:
        return [node_of.get(q, "n1") for q in queues]

    return nodes_of


async def test_each_node_acts_where_the_look_asks_and_logs_each_queues_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An idle queue is only looked at; a queue whose answer calls for it is acted on and its result
    kept; a queue whose look or act failed is logged and left out, and the others go on."""
    acted: list[str] = []

    async def look(queues: list[str]) -> list[int | Exception]:
        return [RuntimeError("WRONGTYPE") if q == "odd" else int(q[1:]) for q in queues]

    async def work(q: str) -> int:
        acted.append(q)
        if q == "q3":
            raise RuntimeError("script failed")
        return 100

    def act(q: str, n: int) -> Coroutine[Any, Any, int] | None:
        return work(q) if n else None

    queues = ["q0", "q2", "odd", "q3", "q5"]
    with caplog.at_level(logging.ERROR, logger="asynq_aio.server"):
        got = await each_node(queues, nodes_of=_nodes({}), look=look, act=act, budget=1.0, what="test")
    assert got == {"q0": 0, "q2": 100, "q5": 100}
    assert acted == ["q2", "q3", "q5"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("queue odd" in m and "WRONGTYPE" in m for m in messages)
    assert any("queue q3" in m and "script failed" in m for m in messages)


async def test_a_stalled_node_is_left_for_the_next_round_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One node's look hangs: its queues are left (all of them: each would wait out the same budget),
    the other nodes' queues are answered, and the round ends at the budget, not after it per batch."""
    node_of = {f"s{i}": "stalled" for i in range(250)} | {f"h{i}": "healthy" for i in range(250)}
    looked: list[list[str]] = []

    async def look(queues: list[str]) -> list[int | Exception]:
        looked.append(queues)
        if node_of[queues[0]] == "stalled":
            await asyncio.sleep(60)
        return [0] * len(queues)

    with caplog.at_level(logging.ERROR, logger="asynq_aio.server"):
        with anyio.fail_after(5):
            started = anyio.current_time()
            got = await each_node(
                list(node_of),
                nodes_of=_nodes(node_of),
                look=look,
                act=lambda q, n: None,
                budget=0.3,
                what="test",
            )
            took = anyio.current_time() - started
    assert set(got) == {f"h{i}" for i in range(250)}
    assert took < 2.0  # one budget for the stalled node, not one per batch of its 250 queues
    assert sum(1 for batch in looked if batch[0].startswith("s")) == 1
    assert any(
        "node stalled" in r.getMessage() and "its 250 queue(s) wait" in r.getMessage() for r in caplog.records
    )


async def test_an_act_that_runs_out_of_budget_stops_its_node_only() -> None:
    node_of = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B"}

    async def look(queues: list[str]) -> list[int | Exception]:
        return [1] * len(queues)

    async def work(q: str) -> int:
        if q == "a2":
            await asyncio.sleep(60)
        return 7

    got = await each_node(
        list(node_of), nodes_of=_nodes(node_of), look=look, act=lambda q, n: work(q), budget=0.2, what="test"
    )
    assert got == {"a1": 7, "b1": 7, "b2": 7}


async def test_each_node_looks_in_batches_one_call_at_a_time_per_node() -> None:
    """1,000 queues on three nodes: batches of at most PROBE_CHUNK, never two calls at once on a node,
    and no task per queue (one per node and the call it waits on): the one-call-per-queue fan-out
    this replaced kept the event loop busy for much of each round."""
    queues = [f"q{i}" for i in range(1000)]
    node_of = {q: f"n{i % 3}" for i, q in enumerate(queues)}
    base = len(asyncio.all_tasks())
    busy: dict[str, int] = {}
    most_on_a_node = most_tasks = 0
    sizes: list[int] = []

    async def look(batch: list[str]) -> list[int | Exception]:
        nonlocal most_on_a_node, most_tasks
        node = node_of[batch[0]]
        assert {node_of[q] for q in batch} == {node}
        busy[node] = busy.get(node, 0) + 1
        most_on_a_node = max(most_on_a_node, busy[node])
        most_tasks = max(most_tasks, len(asyncio.all_tasks()) - base)
        sizes.append(len(batch))
        await anyio.lowlevel.checkpoint()
        busy[node] -= 1
        return [0] * len(batch)

    got = await each_node(
        queues, nodes_of=_nodes(node_of), look=look, act=lambda q, n: None, budget=5.0, what="t"
    )
    assert got == dict.fromkeys(queues, 0)
    assert max(sizes) == PROBE_CHUNK and sum(sizes) == 1000
    assert len(sizes) == sum(math.ceil(n / PROBE_CHUNK) for n in (334, 333, 333))
    assert most_on_a_node == 1
    assert most_tasks <= 2 * 3


async def test_each_node_skips_the_round_when_the_nodes_are_unknown(caplog: pytest.LogCaptureFixture) -> None:
    async def nodes_of(queues: list[str]) -> list[str]:
        raise ConnectionError("cluster unreachable")

    async def look(queues: list[str]) -> list[int | Exception]:
        raise AssertionError("not reached")

    with caplog.at_level(logging.ERROR, logger="asynq_aio.server"):
        got = await each_node(
            ["a"], nodes_of=nodes_of, look=look, act=lambda q, n: None, budget=1.0, what="t"
        )
    assert got == {}
    assert any("cluster unreachable" in r.getMessage() for r in caplog.records)
