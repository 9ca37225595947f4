"""server/janitor.py on a MemoryBroker: a round keeps deleting while it finds full batches, stops
at its budget and says so, only looks at idle queues, and one queue's failing or stalled node
neither stops the other queues' cleanup nor the archive trim and the dead-server pruning that follow.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
from testbroker import FakeClock, MemoryBroker, TaskHash

from asynq_aio.protocol.codec import ServerRecord
from asynq_aio.server.janitor import janitor_round

pytestmark = pytest.mark.anyio


def completed(broker: MemoryBroker, queue: str, n: int, *, until: float) -> None:
    """``n`` completed tasks of ``queue`` whose retention ends at ``until``."""
    q = broker.queue(queue)
    for i in range(n):
        tid = f"{queue}-{i}"
        q.tasks[tid] = TaskHash(msg=b"x", state="completed")
        q.completed[tid] = until


async def test_a_round_works_off_a_backlog_of_many_batches() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    completed(broker, "a", 1200, until=clock() - 1)
    completed(broker, "b", 30, until=clock() + 60)  # retention not over yet: kept
    r = await janitor_round(broker, ["a", "b"], batch=500)
    assert (r.deleted, r.backlog_left) == (1200, False)
    assert broker.queue("a").completed == {} and broker.queue("a").tasks == {}
    assert len(broker.queue("b").completed) == 30
    # queues take turns batch by batch: a three times (500, 500, 200); b, with nothing expired,
    # is only looked at (one look for both)
    assert (
        broker.calls_on("delete_expired_completed", "a"),
        broker.calls_on("delete_expired_completed", "b"),
    ) == (3, 0)
    assert broker.calls["needs_cleanup"] == 1


async def test_a_round_stops_at_its_budget_and_says_work_is_left() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    completed(broker, "a", 1200, until=clock() - 1)
    r = await janitor_round(broker, ["a"], batch=500, budget=0)
    assert (r.deleted, r.backlog_left) == (500, True)


async def test_a_failing_queue_stops_neither_the_others_nor_the_trim_and_prune() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    completed(broker, "a", 10, until=clock() - 1)
    completed(broker, "b", 10, until=clock() - 1)
    broker.queue("b").archived["old"] = clock() - 91 * 86400  # past Asynq's 90 days
    broker.queue("b").tasks["old"] = TaskHash(msg=b"x", state="archived")
    broker.fail("delete_expired_completed", times=None, queue="a")
    broker.fail("trim_archive", times=None, queue="a")
    r = await janitor_round(broker, ["a", "b"])
    assert (r.deleted, r.trimmed) == (10, 1)
    assert len(broker.queue("a").completed) == 10 and broker.queue("b").archived == {}
    assert "old" not in broker.queue("b").tasks
    broker.fail("prune_dead_servers")
    r = await janitor_round(broker, ["b"])  # a failing prune is logged, not raised
    assert r.pruned == 0 and broker.calls["prune_dead_servers"] == 2


async def test_a_stalled_node_is_left_for_the_next_round_and_the_others_are_cleaned() -> None:
    """The janitor used to visit the queues one call after another, so a stalled master held every
    queue's cleanup behind it (each call waiting out the transport's retry budget)."""
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    for q in ("a", "b", "c"):
        completed(broker, q, 10, until=clock() - 1)
    broker.node_of = {"a": "n1", "b": "n2", "c": "n3"}
    stall = broker.stall("needs_cleanup", queue="b")
    with anyio.fail_after(5):
        r = await janitor_round(broker, ["a", "b", "c"], call_budget=0.2)
    assert r.deleted == 20 and stall.waiting == 0
    assert broker.queue("a").completed == {} and broker.queue("c").completed == {}
    assert len(broker.queue("b").completed) == 10
    stall.release()
    assert (await janitor_round(broker, ["a", "b", "c"])).deleted == 10


async def test_an_archive_over_its_limits_is_trimmed_and_an_idle_queue_only_looked_at() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    broker.queue("old").archived["x"] = clock() - 91 * 86400
    broker.queue("old").tasks["x"] = TaskHash(msg=b"x", state="archived")
    broker.queue("young").archived["y"] = clock() - 89 * 86400
    r = await janitor_round(broker, ["old", "young", "idle"])
    assert (r.deleted, r.trimmed) == (0, 1)
    assert broker.queue("old").archived == {} and list(broker.queue("young").archived) == ["y"]
    assert [broker.calls_on("trim_archive", q) for q in ("old", "young", "idle")] == [1, 0, 0]


async def test_dead_servers_are_pruned_after_the_grace() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    server = ServerRecord(
        host="h",
        pid=1,
        server_id="s",
        concurrency=1,
        queues={"a": 1},
        strict_priority=False,
        status="active",
        started=datetime.now(tz=UTC),
        active_worker_count=0,
    )
    await broker.write_server_state(server, [], ttl=10)
    clock.advance(10 + 59)  # expired, but within the 60 s grace
    assert (await janitor_round(broker, ["a"])).pruned == 0 and broker.servers
    clock.advance(2)
    assert (await janitor_round(broker, ["a"])).pruned == 2  # its server and workers entries
    assert broker.servers == {}
