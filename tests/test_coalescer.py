"""The coalescer without Redis: a lone caller writes at once on its own task, callers that arrive
while writes are in flight share the next batch, each gets its own outcome, and closing leaves no
flusher behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from asynq_aio._coalescer import Coalescer
from asynq_aio._errors import RedisUnavailableError

pytestmark = pytest.mark.anyio


class Recorder:
    """A write that records its batches and waits on a gate, so a test controls what is in flight."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: list[int]) -> Sequence[int | Exception]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_caller_writes_at_once_on_its_own_task() -> None:
    rec = Recorder()
    c: Coalescer[int, int] = Coalescer(rec.write, max_batch=100)
    assert await c.submit(4) == 40
    assert rec.batches == [[4]] and not c._flushers


async def test_callers_behind_a_write_in_flight_share_the_next_batch_and_keep_their_outcomes() -> None:
    rec = Recorder()
    rec.gate.clear()
    c: Coalescer[int, int] = Coalescer(rec.write, max_batch=100)
    first = asyncio.ensure_future(c.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(c.submit(i)) for i in range(1, 8)]
    await asyncio.sleep(0)
    rec.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert rec.batches == [[0], [1, 2, 3, 4, 5, 6, 7]]
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, "odd 1", 20, "odd 3", 40, "odd 5", 60, "odd 7",
    ]  # fmt: skip
    assert not c._flushers


async def test_batches_are_cut_at_max_batch_and_a_failed_write_reaches_every_caller_of_it() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def failing(items: list[int]) -> Sequence[int | Exception]:
        calls.append(items)
        await gate.wait()
        raise ConnectionError("the node went away")

    c: Coalescer[int, int] = Coalescer(failing, max_batch=3)
    tasks = [asyncio.ensure_future(c.submit(i)) for i in range(7)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == [[0], [1, 2, 3], [4, 5, 6]]
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_caller_cancelled_while_queued_is_not_written() -> None:
    rec = Recorder()
    rec.gate.clear()
    c: Coalescer[int, int] = Coalescer(rec.write, max_batch=100)
    first = asyncio.ensure_future(c.submit(0))
    await asyncio.sleep(0)
    doomed = asyncio.ensure_future(c.submit(2))
    kept = asyncio.ensure_future(c.submit(4))
    await asyncio.sleep(0)
    doomed.cancel()
    rec.gate.set()
    assert await first == 0 and await kept == 40
    assert rec.batches == [[0], [4]]


async def test_aclose_drains_then_fails_what_it_cannot_write() -> None:
    rec = Recorder()
    rec.gate.clear()
    c: Coalescer[int, int] = Coalescer(rec.write, max_batch=100)
    tasks = [asyncio.ensure_future(c.submit(i * 2)) for i in range(5)]
    await asyncio.sleep(0)
    await c.aclose(grace=0.05)  # the gate stays shut: nothing can finish within the grace
    await asyncio.sleep(0)
    assert all(t.done() for t in tasks[1:])  # queued behind the write: failed, not left hanging
    rec.gate.set()  # the lone caller's own write (on its own task) still completes
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 0
    assert all(isinstance(r, RedisUnavailableError) for r in results[1:])
    assert not c._flushers and not c._queue


@pytest.mark.parametrize(
    ("solo_below", "expected"), [(None, [[0], [1], [2, 3, 4, 5]]), (1, [[0], [1, 2, 3, 4, 5]])]
)
async def test_solo_below_one_queues_callers_behind_any_write_in_flight(
    solo_below: int | None, expected: list[list[int]]
) -> None:
    """By default a caller who finds a free write slot and nothing queued writes alone (one item a
    round trip); with ``solo_below=1`` (the client's enqueues) only when nothing is on the wire, so
    the callers behind a write in flight share one batch."""
    rec = Recorder()
    rec.gate.clear()
    c: Coalescer[int, int] = Coalescer(rec.write, max_batch=100, max_inflight=2, solo_below=solo_below)
    first = asyncio.ensure_future(c.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(c.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rec.gate.set()
    await asyncio.gather(first, *rest, return_exceptions=True)
    assert rec.batches == expected
    assert not c._flushers


@pytest.mark.parametrize("solo_below", [0, 3])
def test_solo_below_outside_one_to_max_inflight_is_refused(solo_below: int) -> None:
    with pytest.raises(ValueError, match="solo_below must be from 1 to max_inflight"):
        Coalescer(Recorder().write, max_batch=10, max_inflight=2, solo_below=solo_below)
