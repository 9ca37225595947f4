"""server/forwarder.py and server/recoverer.py on a MemoryBroker.

The forwarder moves due tasks and sleeps until the next one falls due, never longer than its
``max_sleep``; the recoverer retries (through ``retry_delay_func``) or archives tasks whose lease
expired more than the skew margin ago, archives undecodable records, and keeps going while it finds
full batches. For both, one queue whose node fails or hangs is given up on for the round and the
other queues are served. The forwarder runs on a fake clock here (its sleeps are recorded, not
slept), so what it decides to sleep is checked exactly.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import anyio
import anyio.lowlevel
import pytest
from testbroker import FakeClock, MemoryBroker, make_message

from asynq_aio._task import Task
from asynq_aio.protocol.broker import MALFORMED_TYPE
from asynq_aio.server import forwarder
from asynq_aio.server.recoverer import LEASE_EXPIRED, StateSweeper, recover_once

pytestmark = pytest.mark.anyio


# -- forwarder ----------------------------------------------------------------------------------------


class Stop(Exception):
    pass


class FakeSleep:
    """Stands in for the forwarder's ``anyio.sleep``: records each sleep, moves the fake clock on by
    it, and ends the loop after ``rounds`` sleeps."""

    def __init__(self, clock: FakeClock, rounds: int) -> None:
        self.clock = clock
        self.rounds = rounds
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.rounds:
            raise Stop
        self.clock.advance(seconds)
        await anyio.lowlevel.checkpoint()


async def run_forwarder(
    monkeypatch: pytest.MonkeyPatch,
    broker: MemoryBroker,
    clock: FakeClock,
    queues: list[str],
    *,
    rounds: int,
    max_sleep: float = 10.0,
    budget: float = 5.0,
) -> list[float]:
    """forward_loop for ``rounds`` rounds on the fake clock; the sleeps it chose."""
    fake = FakeSleep(clock, rounds)
    monkeypatch.setattr(forwarder, "anyio", SimpleNamespace(sleep=fake.sleep))
    monkeypatch.setattr(forwarder, "time", SimpleNamespace(time=clock))
    with anyio.fail_after(5), pytest.raises(Stop):
        await forwarder.forward_loop(broker, queues, max_sleep, budget=budget)
    return fake.sleeps


async def test_due_tasks_move_and_the_loop_sleeps_until_the_next_due_at_most_max_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    now = clock()
    failed = broker.enqueue(make_message("a", "failed"), retry_at=now - 5)
    soon = broker.enqueue(make_message("a", "soon"), process_at=now + 3)
    later = broker.enqueue(make_message("a", "later"), process_at=now + 50)
    assert broker.queue("a").pending == []

    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a"], rounds=3, max_sleep=10)
    # round 1: "failed" moves, "soon" is next; round 2 (3 s on): "soon" moves; "later" is 47 s away
    assert sleeps == [3.0, 10.0, 10.0]
    q = broker.queue("a")
    assert q.pending == [soon.id, failed.id]  # in the order they fell due: failed is next out
    assert q.scheduled == {later.id: now + 50} and q.retry == {}
    assert q.tasks[soon.id].state == "pending"


async def test_a_round_that_wakes_just_before_a_due_time_sleeps_only_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop's timers fire up to ~0.6 ms early: the round that finds its task due 0.3 ms from now
    sleeps those 0.3 ms, not a 5 ms floor the task would wait out too."""
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    broker.enqueue(make_message("a", "soon"), process_at=clock() + 0.002)  # scores keep milliseconds
    clock.advance(0.0017)  # the round woke 0.3 ms before it is due
    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a"], rounds=2, max_sleep=10)
    assert sleeps[0] == pytest.approx(0.0003, abs=1e-6)
    assert broker.queue("a").pending == ["soon"]


def test_the_sleep_rule() -> None:
    now = 1_700_000_000.0
    assert forwarder.sleep_until_due(None, now, 2.0) == 2.0
    assert forwarder.sleep_until_due(now + 60, now, 2.0) == 2.0
    assert forwarder.sleep_until_due(now + 0.5, now, 2.0) == pytest.approx(0.5)
    assert forwarder.sleep_until_due(now + 0.0002, now, 2.0) == pytest.approx(0.0002, abs=1e-6)
    assert forwarder.sleep_until_due(now, now, 2.0) == forwarder.PAST_DUE_PAUSE == 0.005
    assert forwarder.sleep_until_due(now - 30, now, 2.0) == forwarder.PAST_DUE_PAUSE


async def test_the_earliest_due_time_of_all_queues_sets_the_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    broker.enqueue(make_message("a"), process_at=clock() + 8)
    broker.enqueue(make_message("b"), retry_at=clock() + 2)
    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a", "b", "c"], rounds=3)
    assert sleeps == [2.0, 6.0, 10.0]
    assert len(broker.queue("a").pending) == len(broker.queue("b").pending) == 1


async def test_a_queue_with_nothing_due_is_only_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle queue costs one read of its earliest due time a round (one round trip), not a forward
    call (three): at 1,000 queues the forwarder is most of an idle worker's Redis load."""
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    broker.enqueue(make_message("a", "later"), process_at=clock() + 25)
    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a", "b"], rounds=3, max_sleep=10)
    assert sleeps == [10.0, 10.0, 5.0]  # still woken for it on time
    assert [broker.calls_on("next_dues", q) for q in ("a", "b")] == [3, 3]
    assert [broker.calls_on("forward", q) for q in ("a", "b")] == [0, 0]
    # once it is due, the round that sees it forwards it (and reads the next due time again)
    clock.advance(5.0)
    await run_forwarder(monkeypatch, broker, clock, ["a", "b"], rounds=1, max_sleep=10)
    assert broker.queue("a").pending == ["later"]
    assert [broker.calls_on("forward", q) for q in ("a", "b")] == [1, 0]


async def test_one_queues_failing_or_hung_node_does_not_stop_the_others_forwarding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    now = clock()
    for q in ("a", "b", "c"):
        broker.enqueue(make_message(q, f"{q}1"), retry_at=now - 1)
    broker.node_of = {"a": "n1", "b": "n2", "c": "n3"}  # each on a master of its own
    broker.fail("forward", times=None, queue="a")
    stall = broker.stall("forward", queue="b")
    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a", "b", "c"], rounds=1, budget=0.05)
    assert sleeps == [10.0]
    assert broker.queue("c").pending == ["c1"]
    assert list(broker.queue("a").retry) == ["a1"] and list(broker.queue("b").retry) == ["b1"]
    assert stall.waiting == 0  # the hung call was cancelled at the budget, not left running
    # the next round forwards b once its node answers again; a is still failing and still skipped
    stall.release()
    sleeps = await run_forwarder(monkeypatch, broker, clock, ["a", "b", "c"], rounds=1, budget=0.05)
    assert sleeps == [10.0]
    assert broker.queue("b").pending == ["b1"] and list(broker.queue("a").retry) == ["a1"]


async def test_a_node_whose_look_hangs_holds_up_only_its_own_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_000.0)
    broker = MemoryBroker(clock=clock)
    for q in ("a", "b", "c"):
        broker.enqueue(make_message(q, f"{q}1"), retry_at=clock() - 1)
    broker.node_of = {"a": "n1", "b": "n2", "c": "n1"}
    stall = broker.stall("next_dues", queue="b")
    with anyio.fail_after(5):
        sleeps = await run_forwarder(monkeypatch, broker, clock, ["a", "b", "c"], rounds=1, budget=0.05)
    assert sleeps == [10.0]
    assert broker.queue("a").pending == ["a1"] and broker.queue("c").pending == ["c1"]
    assert list(broker.queue("b").retry) == ["b1"] and stall.waiting == 0
    stall.release()
    await run_forwarder(monkeypatch, broker, clock, ["a", "b", "c"], rounds=1, budget=0.05)
    assert broker.queue("b").pending == ["b1"]


# -- recoverer ----------------------------------------------------------------------------------------


async def expired(broker: MemoryBroker, queue: str, n: int, *, ago: float, max_retry: int = 25) -> list[str]:
    """``n`` tasks of ``queue`` taken by a worker whose lease on them ran out ``ago`` seconds ago."""
    for _ in range(n):
        broker.enqueue(make_message(queue, task_type="r", max_retry=max_retry))
    got = await broker.dequeue(queue, n, time.time() - ago)
    assert isinstance(got, list) and len(got) == n
    return [d.task_id for d in got]


async def test_an_expired_lease_is_retried_through_retry_delay_after_the_skew_margin() -> None:
    broker = MemoryBroker()
    (tid,) = await expired(broker, "a", 1, ago=10)
    seen: list[tuple[int, str, str]] = []

    def delay(retried: int, error: BaseException, task: Task) -> float:
        seen.append((retried, str(error), task.type))
        return 100.0

    # expired 10 s ago: inside a 30 s margin against clock skew, left alone
    assert await recover_once(broker, ["a"], skew=30, retry_delay=delay) == 0
    assert broker.queue("a").active == [tid] and seen == []
    before = time.time()
    assert await recover_once(broker, ["a"], skew=5, retry_delay=delay) == 1
    after = time.time()
    q = broker.queue("a")
    assert seen == [(0, LEASE_EXPIRED, "r")]
    assert int(before + 100) <= q.retry[tid] <= int(after + 100)
    msg = q.message(tid)
    assert (msg.retried, msg.error_msg, q.failed, q.active, q.lease) == (1, LEASE_EXPIRED, 1, [], {})
    assert q.tasks[tid].attempt is None  # the dead worker's attempt is over


async def test_a_failing_retry_delay_func_does_not_lose_the_task() -> None:
    broker = MemoryBroker()
    (tid,) = await expired(broker, "a", 1, ago=100)

    def broken(retried: int, error: BaseException, task: Task) -> float:
        raise RuntimeError("bug in user code")

    before = time.time()
    assert await recover_once(broker, ["a"], retry_delay=broken) == 1
    assert int(before + 60) <= broker.queue("a").retry[tid] <= int(time.time() + 60)


async def test_an_expired_task_out_of_retries_is_archived() -> None:
    broker = MemoryBroker()
    (tid,) = await expired(broker, "a", 1, ago=100, max_retry=0)
    assert await recover_once(broker, ["a"]) == 1
    q = broker.queue("a")
    assert list(q.archived) == [tid] and q.retry == {} and q.message(tid).error_msg == LEASE_EXPIRED


async def test_an_undecodable_record_is_archived_and_does_not_block_the_others() -> None:
    broker = MemoryBroker()
    broker.put_raw("a", "bad", b"\xff\xfe not a protobuf")
    good = broker.enqueue(make_message("a")).id
    got = await broker.dequeue("a", 2, time.time() - 100)
    assert isinstance(got, list) and [d.task_id for d in got] == ["bad", good]
    assert await recover_once(broker, ["a"]) == 2
    q = broker.queue("a")
    assert list(q.archived) == ["bad"] and list(q.retry) == [good]
    placeholder = q.message("bad")
    assert placeholder.type == MALFORMED_TYPE and placeholder.payload == b"\xff\xfe not a protobuf"
    assert placeholder.error_msg.startswith("malformed task message")
    assert await recover_once(broker, ["a"]) == 0


async def test_a_round_works_off_more_than_one_batch() -> None:
    broker = MemoryBroker()
    ids = await expired(broker, "a", 250, ago=100)
    assert await recover_once(broker, ["a"], batch=100) == 250
    assert broker.queue("a").retry.keys() == set(ids) and broker.queue("a").lease == {}
    assert broker.calls_on("expired_leases", "a") == 3  # 100, 100, then 50 < a batch: done


async def test_a_lease_extended_just_before_the_claim_is_not_recovered() -> None:
    """The claim re-checks the lease in the same script: a heartbeat that extended it after the
    recoverer read it wins, and the running attempt keeps its task."""
    broker = MemoryBroker()
    (tid,) = await expired(broker, "a", 1, ago=100)
    token = broker.dequeued[0].attempt

    def heartbeat_lands() -> None:
        broker.queue("a").lease[tid] = float(math.ceil(time.time() + 30))

    broker.before("run", heartbeat_lands)
    assert await recover_once(broker, ["a"]) == 0
    q = broker.queue("a")
    assert q.active == [tid] and q.tasks[tid].attempt == token and q.retry == {}
    assert [(a.kind, a.result) for a in broker.applied] == [("fail", 0)]


async def test_one_queues_hung_node_does_not_stop_the_others_recovery() -> None:
    broker = MemoryBroker()
    (a,) = await expired(broker, "a", 1, ago=100)
    (b,) = await expired(broker, "b", 1, ago=100)
    (c,) = await expired(broker, "c", 1, ago=100)
    broker.node_of = {"a": "n1", "b": "n2", "c": "n3"}  # each on a master of its own
    stall = broker.stall("expired_leases", queue="a")
    broker.fail("heal_orphans", times=None, queue="b")
    with anyio.fail_after(5):
        assert await recover_once(broker, ["a", "b", "c"], budget=0.05) == 1
    assert list(broker.queue("c").retry) == [c] and stall.waiting == 0
    assert broker.queue("a").active == [a] and broker.queue("b").active == [b]


async def test_an_idle_queue_is_only_looked_at_by_the_recoverer() -> None:
    """A queue with nothing in active and no lease costs one look in a batch, not the two calls of
    its own (orphan check, expired leases) that a busy one gets."""
    broker = MemoryBroker()
    (tid,) = await expired(broker, "busy", 1, ago=100)
    assert await recover_once(broker, ["idle", "busy"]) == 1
    assert [broker.calls_on("holds_tasks", q) for q in ("idle", "busy")] == [1, 1]
    assert broker.calls["holds_tasks"] == 1  # one look for both
    assert [broker.calls_on("heal_orphans", q) for q in ("idle", "busy")] == [0, 1]
    assert [broker.calls_on("expired_leases", q) for q in ("idle", "busy")] == [0, 1]
    assert list(broker.queue("busy").retry) == [tid]


async def test_an_id_in_active_without_a_lease_is_requeued() -> None:
    broker = MemoryBroker()
    (tid,) = await expired(broker, "a", 1, ago=-60)  # a live lease ...
    del broker.queue("a").lease[tid]  # ... that a foreign writer removed
    waiting = broker.enqueue(make_message("a"))
    assert await recover_once(broker, ["a"]) == 1
    q = broker.queue("a")
    assert q.active == [] and q.pending == [waiting.id, tid] and q.tasks[tid].state == "pending"


async def test_the_state_sweeper_walks_a_list_a_window_per_round() -> None:
    broker = MemoryBroker()
    ids = [broker.enqueue(make_message("a")).id for _ in range(5)]
    for tid in ids:
        broker.queue("a").tasks[tid].state = "scheduled"  # a hand edit: listed in pending
    sweeper = StateSweeper(broker, ["a"], batch=2)
    assert [await sweeper.sweep_once() for _ in range(4)] == [2, 2, 1, 0]
    assert {broker.queue("a").tasks[tid].state for tid in ids} == {"pending"}
    assert sweeper.fixed == 5


async def test_a_stalled_node_holds_up_neither_the_sweep_of_the_others_nor_the_recoverer() -> None:
    """The sweep runs between recovery rounds; going queue by queue, a stalled master kept it (and
    so the recovery of every queue) waiting as long as its calls kept failing."""
    broker = MemoryBroker()
    ids = {q: broker.enqueue(make_message(q)).id for q in ("a", "b", "c")}
    for q, tid in ids.items():
        broker.queue(q).tasks[tid].state = "scheduled"  # a hand edit: listed in pending
    broker.node_of = {"a": "n1", "b": "n2", "c": "n1"}
    stall = broker.stall("sample_states", queue="b")
    sweeper = StateSweeper(broker, ["a", "b", "c"], budget=0.2)
    with anyio.fail_after(5):
        assert await sweeper.sweep_once() == 2
    assert broker.queue("a").tasks[ids["a"]].state == broker.queue("c").tasks[ids["c"]].state == "pending"
    assert broker.queue("b").tasks[ids["b"]].state == "scheduled" and stall.waiting == 0
    stall.release()
    assert await sweeper.sweep_once() == 1
