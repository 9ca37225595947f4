"""Queue patterns without Redis: which names a pattern accepts, how ServedQueues resolves patterns
against ``asynq:queues``, the selector's rotation inside a pattern (a seeded RNG, so every count is
exact), and the processor and background loops following the live set on a MemoryBroker (a queue
registered after start is served, a deleted one loses its watcher and is no longer visited).
tests/test_queue_patterns.py checks the same on real Redis."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from test_component_processor import config, nothing, until
from testbroker import MemoryBroker, make_message

from asynq_aio._errors import InvalidQueueName
from asynq_aio.server.acker import Acker
from asynq_aio.server.active import ActiveTasks
from asynq_aio.server.config import Config
from asynq_aio.server.heartbeat import Heartbeat, Identity
from asynq_aio.server.processor import Processor
from asynq_aio.server.queues import QueueSelector
from asynq_aio.server.readiness import QueueReadiness
from asynq_aio.server.served import PATTERN_WATCH_ROOM, ServedQueues, is_pattern, validate_pattern

SMALL = [f"tenant:s{i:02d}" for i in range(50)]
HUGE = "tenant:big"  # sorts before every small tenant: without rotation it would always come first


# -- patterns and validation --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["tenant:*", "t?", "t[0-9]", "t[!a]*", "[]]x", "*"])
def test_good_patterns_are_accepted(pattern: str) -> None:
    assert is_pattern(pattern)
    assert Config(queues={pattern: 1}).queues == {pattern: 1}


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("{tenant}:*", "never holds { or }"),
        ("*}", "never holds { or }"),
        ("t[{}]*", "admits no character"),
        ("[ \t]", "something besides whitespace"),
    ],
)
def test_a_pattern_that_can_never_match_is_an_error_at_config_construction(pattern: str, why: str) -> None:
    with pytest.raises(ValidationError, match="invalid queue pattern") as info:
        Config(queues={"default": 1, pattern: 1})
    assert why in str(info.value)
    with pytest.raises(InvalidQueueName):
        validate_pattern(pattern)


def test_bad_literal_names_and_intervals_still_fail() -> None:
    for bad in ("", "  ", "a{b}"):
        with pytest.raises(ValidationError, match="invalid queue name"):
            Config(queues={bad: 1})
    with pytest.raises(ValidationError, match="weight must be a positive integer"):
        Config(queues={"tenant:*": 0})
    with pytest.raises(ValidationError, match="queue_discovery_interval"):
        Config(queue_discovery_interval=0)
    assert Config().queue_discovery_interval == 2.0


def test_literals_are_served_before_they_exist_and_patterns_only_once_they_do() -> None:
    served = ServedQueues({"critical": 5, "tenant:*": 1})
    assert list(served) == ["critical"] and served.watch_budget() is not None
    assert served.serves("tenant:new") and "tenant:new" not in served
    added, dropped = served.update(["critical", "tenant:b", "tenant:a", "other", "tenant:{x}"])
    assert sorted(added) == ["tenant:a", "tenant:b"] and dropped == []
    assert list(served) == ["critical", "tenant:a", "tenant:b"]  # a brace name is never served
    assert served.weights() == {"critical": 5, "tenant:a": 1, "tenant:b": 1}
    added, dropped = served.update(["tenant:a"])  # tenant:b deleted, critical gone from the set
    assert added == [] and dropped == ["tenant:b"]
    assert list(served) == ["critical", "tenant:a"]  # a literal stays whatever the set says


def test_a_literal_beats_a_pattern_and_the_first_pattern_beats_later_ones() -> None:
    served = ServedQueues({"tenant:*": 1, "tenant:vip*": 9, "tenant:vip1": 4})
    served.update(["tenant:vip1", "tenant:vip2", "tenant:x"])
    assert served.weights() == {"tenant:vip1": 4, "tenant:vip2": 1, "tenant:x": 1}
    narrow_first = ServedQueues({"tenant:vip*": 9, "tenant:*": 1})
    narrow_first.update(["tenant:vip2", "tenant:x"])
    assert narrow_first.weights() == {"tenant:vip2": 9, "tenant:x": 1}


def test_without_patterns_nothing_changes() -> None:
    served = ServedQueues({"a": 1, "b": 2})
    assert not served.has_patterns and served.watch_budget() is None
    assert served.update(["a", "b", "c"]) == ([], []) and list(served) == ["a", "b"]


# -- the selector ---------------------------------------------------------------------------------------


def drain(sel: QueueSelector, pending: dict[str, int], until_done: list[str]) -> list[str]:
    """Fetch rounds as the processor runs them, one task per turn (the worst case for rotation):
    the first queue in order with a task hands one out; an empty one leaves the ready set."""
    ready = {q for q, n in pending.items() if n}
    turns: list[str] = []
    while any(pending[q] for q in until_done):
        for q in sel.order(ready):
            if pending[q]:
                pending[q] -= 1
                sel.took(q)
                turns.append(q)
                break
            ready.discard(q)
    return turns


def test_a_huge_tenant_takes_one_turn_per_rotation() -> None:
    served = ServedQueues({"critical": 5, "tenant:*": 1})
    served.update([HUGE, *SMALL])
    pending = {HUGE: 1_000_000, **dict.fromkeys(SMALL, 10), "critical": 0}
    turns = drain(QueueSelector(served, strict=False, rng=random.Random(3)), pending, SMALL)
    # 51 queues in rotation, each small tenant has 10 tasks: 10 rotations, one turn each for the huge one
    assert Counter(turns)[HUGE] <= 10
    assert len(turns) <= 10 * 51
    first_turn = {q: turns.index(q) for q in SMALL}
    assert max(first_turn.values()) < 51  # every small tenant's first task within the first rotation


def test_without_the_rotation_the_huge_tenant_would_take_every_turn() -> None:
    """The bound above has teeth: a selector never told which queue took tasks keeps starting the
    pattern's rotation at its first name, the huge tenant."""
    served = ServedQueues({"tenant:*": 1})
    served.update([HUGE, *SMALL])
    sel = QueueSelector(served, strict=False, rng=random.Random(3))
    ready = {HUGE, *SMALL}
    assert all(sel.order(ready)[0] == HUGE for _ in range(100))


def test_a_patterns_weight_is_shared_by_its_queues() -> None:
    served = ServedQueues({"tenant:*": 1, "solo": 1})
    served.update(SMALL)
    sel = QueueSelector(served, strict=False, rng=random.Random(7))
    rounds = 20_000
    first = Counter(sel.order()[0] for _ in range(rounds))
    assert abs(first["solo"] / rounds - 0.5) < 0.02  # not 1/51: the 50 tenants share one weight


def test_strict_priority_orders_entries_and_rotates_inside_a_pattern() -> None:
    served = ServedQueues({"low": 1, "tenant:*": 5, "mid": 3})
    served.update(["tenant:a", "tenant:b", "tenant:c"])
    sel = QueueSelector(served, strict=True)
    assert sel.order() == ["tenant:a", "tenant:b", "tenant:c", "mid", "low"]
    sel.took("tenant:a")
    assert sel.order() == ["tenant:b", "tenant:c", "tenant:a", "mid", "low"]
    sel.took("tenant:c")
    assert sel.order({"tenant:a", "tenant:b", "low"}) == ["tenant:a", "tenant:b", "low"]


def test_a_thousand_pattern_queues_are_ordered_each_once_and_rotation_survives_changes() -> None:
    names = [f"tenant:{i:04d}" for i in range(1000)]
    served = ServedQueues({"tenant:*": 1, "default": 1})
    served.update(names)
    sel = QueueSelector(served, strict=False, rng=random.Random(4))
    assert sorted(sel.order()) == sorted([*names, "default"])
    sel.took("tenant:0500")
    served.update([n for n in names if n != "tenant:0501"])  # the next in turn was deleted
    order = [q for q in sel.order() if q != "default"]
    assert order[0] == "tenant:0502" and len(order) == 999


# -- the processor and readiness following the live set ----------------------------------------------


@asynccontextmanager
async def serving(broker: MemoryBroker, cfg: Config, interval: float) -> AsyncIterator[Processor]:
    """A processor on a live served set, with the discovery loop the server runs beside it."""
    served = ServedQueues(cfg.queues)
    await served.refresh(broker)
    acker = Acker(broker)
    p = Processor(broker, cfg, nothing, ActiveTasks(), acker, served)

    async def fetch() -> None:
        async with anyio.create_task_group() as wtg:
            await p.fetch_loop(wtg)
        acker.close()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            tg.start_soon(fetch)
            tg.start_soon(served.discover, broker, interval)
            try:
                yield p
            finally:
                p.stop_fetching()
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_queue_registered_after_start_is_served_and_a_deleted_one_is_unwatched() -> None:
    broker = MemoryBroker()
    broker.enqueue(make_message("tenant:a"))
    broker.enqueue(make_message("other"))  # matches no pattern: never served
    cfg = config(queues={"tenant:*": 1}, queue_discovery_interval=0.05)
    async with serving(broker, cfg, cfg.queue_discovery_interval) as p:
        await until(lambda: broker.queue("tenant:a").processed == 1)
        broker.enqueue(make_message("tenant:b"))  # a tenant created while the worker runs
        await until(lambda: broker.queue("tenant:b").processed == 1)
        readiness: QueueReadiness = p._readiness
        assert set(readiness.watched) == {"tenant:a", "tenant:b"}
        broker.delete_queue("tenant:a")
        await until(lambda: "tenant:a" not in readiness.watched)
        waits = broker.calls_on("wait_for_work", "tenant:a")
        await anyio.sleep(0.3)
        assert broker.calls_on("wait_for_work", "tenant:a") == waits  # its watcher is gone
    assert broker.queue("other").processed == 0 and broker.calls_on("dequeue", "other") == 0


@pytest.mark.anyio
async def test_a_failed_discovery_keeps_the_queues_it_had() -> None:
    broker = MemoryBroker()
    broker.enqueue(make_message("tenant:a"))
    served = ServedQueues({"tenant:*": 1})
    await served.refresh(broker)
    broker.fail("all_queues", None)
    with anyio.move_on_after(0.3):
        await served.discover(broker, 0.05)
    assert list(served) == ["tenant:a"] and broker.calls["all_queues"] >= 3


class CountingWaits(MemoryBroker):
    """Counts the blocking waits in flight at once."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.in_flight = 0
        self.most = 0

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super().wait_for_work(queue, timeout)
        finally:
            self.in_flight -= 1


@pytest.mark.anyio
async def test_watchers_take_turns_past_the_wait_budget() -> None:
    broker = CountingWaits()
    queues = [f"q{i}" for i in range(12)]
    readiness = QueueReadiness(broker, queues, block=0.05, poll=0.01, max_waits=3)
    for q in queues:
        readiness.empty(q)
    async with anyio.create_task_group() as tg:
        tg.start_soon(readiness.run)
        await until(lambda: broker.calls["wait_for_work"] >= 24)  # every watcher waited twice
        broker.enqueue(make_message("q11"))
        await until(lambda: readiness.is_ready("q11"))  # a queue still gets noticed, in its turn
        tg.cancel_scope.cancel()
    assert broker.most == 3


def test_the_heartbeat_lists_the_concrete_queues_served_now() -> None:
    cfg = Config(queues={"critical": 5, "tenant:*": 2})
    served = ServedQueues(cfg.queues)
    served.update(["tenant:x", "tenant:y"])
    hb = Heartbeat(MemoryBroker(), cfg, ActiveTasks(), Identity.new("h", "sid"), served)
    assert hb.server_record().queues == {"critical": 5, "tenant:x": 2, "tenant:y": 2}
    served.update(["tenant:y"])
    assert hb.server_record().queues == {"critical": 5, "tenant:y": 2}
    assert served.watch_budget() == PATTERN_WATCH_ROOM + 1


def test_a_pattern_is_accepted_by_the_worker_cli_and_a_bad_one_rejected() -> None:
    from typer.testing import CliRunner

    from asynq_aio.cli.app import app
    from asynq_aio.cli.worker import parse_queues

    assert parse_queues(["tenant:*=1", "critical=5", "low"]) == {"tenant:*": 1, "critical": 5, "low": 1}
    result = CliRunner().invoke(app, ["worker", "asynq_aio:ServeMux", "-q", "tenant:{x}*=1"])
    assert result.exit_code == 1 and "invalid queue pattern" in result.output


@pytest.mark.anyio
async def test_the_background_loops_follow_the_live_set() -> None:
    """Forwarder, recoverer and janitor read the served set every round: a discovered queue is
    visited from the next round, a dropped one no more."""
    from asynq_aio.server.aggregator import Aggregator
    from asynq_aio.server.forwarder import forward_loop
    from asynq_aio.server.janitor import janitor_loop
    from asynq_aio.server.recoverer import recover_loop

    broker = MemoryBroker()
    served = ServedQueues({"tenant:*": 1})
    # the forwarder, recoverer and janitor look at an idle queue (next_dues, holds_tasks,
    # needs_cleanup) and act only on what they find
    visits = ("next_dues", "holds_tasks", "needs_cleanup")

    def visited(q: str) -> bool:
        return all(broker.calls_on(m, q) > 0 for m in visits)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_loop, broker, served, 0.02)
            tg.start_soon(recover_loop, broker, served, 0.02, 0)
            tg.start_soon(janitor_loop, broker, served, 0.02)
            await anyio.sleep(0.1)
            assert not visited("tenant:a")
            served.update(["tenant:a", "tenant:b"])
            await until(lambda: visited("tenant:a") and visited("tenant:b"))
            served.update(["tenant:b"])
            await anyio.sleep(0.1)  # a round already under way may still finish its visit
            before = {m: broker.calls_on(m, "tenant:a") for m in visits}
            b_before = broker.calls_on("next_dues", "tenant:b")
            await until(lambda: broker.calls_on("next_dues", "tenant:b") > b_before + 2)
            assert {m: broker.calls_on(m, "tenant:a") for m in visits} == before
            tg.cancel_scope.cancel()
    agg = Aggregator(None, served, lambda group, tasks: tasks[0], None, interval=1.0)  # type: ignore[arg-type]
    assert agg.queues is served  # the aggregator reads the same live set every round
