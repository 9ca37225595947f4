"""Group aggregation against real Redis (single and cluster): triggers, group + process_in, clean-up,
reclaiming sets whose server died, and scripts that are safe to run twice."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pydantic
import pytest
from conftest import RedisTarget
from redis.asyncio.cluster import RedisCluster
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import Client, Config, ServeMux, Server, Task
from asynq_aio.protocol import group_scripts
from asynq_aio.protocol._redis.ops import EncodableArg
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.groups import AggregationSet, GroupPolicy, GroupStore, group_of_set
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.server.aggregator import Aggregator, merged_message

pytestmark = pytest.mark.anyio


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
async def transport(redis_target: RedisTarget) -> AsyncIterator[Transport]:
    t = Transport.connect(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs))
    try:
        yield t
    finally:
        await t.aclose()


def k(queue: str) -> Callable[[str], str]:
    return lambda suffix: f"asynq:{{{queue}}}:{suffix}"


def merge(group: str, tasks: list[Task]) -> Task:
    """A sync aggregator: one task listing the members' payloads, oldest first."""
    return Task("batch", {"group": group, "items": [t.payload.decode() for t in tasks]})


async def amerge(group: str, tasks: list[Task]) -> Task:
    await anyio.sleep(0.01)
    return merge(group, tasks)


class Batches:
    """A handler that records every merged task it runs."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.mux = ServeMux()
        self.mux.handle_func("batch", self.handle)

    async def handle(self, task: Task) -> None:
        self.seen.append(task.json())

    def count(self, n: int) -> Callable[[], Any]:
        async def check() -> bool:
            return len(self.seen) >= n

        return check


@asynccontextmanager
async def serving(target: RedisTarget, queue: str, mux: ServeMux, **config: Any) -> AsyncIterator[Server]:
    settings: dict[str, Any] = {
        "concurrency": 2,
        "queues": {queue: 1},
        "shutdown_timeout": 1.0,
        "heartbeat_interval": 0.5,
        "forward_interval": 0.1,
        "recovery_interval": 0.5,
        "recovery_skew": 0.0,
        "group_aggregator": merge,
    }
    settings.update(config)
    server = Server(conn_opt(target.kind, target.url, target.addrs), Config(**settings))
    with anyio.fail_after(20):
        async with server.serve(mux) as s:
            yield s


async def queue_keys_left(transport: Transport, queue: str) -> set[str]:
    """Every key of ``queue`` (on a cluster, KEYS must go to the node owning the queue's slot)."""
    pattern = f"asynq:{{{queue}}}:*"
    client = transport.client
    if isinstance(client, RedisCluster):
        await transport.call("PING")  # the slot map is loaded with the first command
        node = client.get_node_from_key(k(queue)("x"))
        assert node is not None
        found = await transport.call_on_node(node, "KEYS", pattern)
    else:
        found = await transport.call("KEYS", pattern)
    # the enqueue fences expire on their own (test_client checks them)
    return {x.decode() for x in found if b":aio:fence:" not in x}


def only_counters(queue: str) -> set[str]:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return {k(queue)("processed"), k(queue)(f"processed:{today}")}


async def zmembers(raw: RawRedis, key: str) -> list[str]:
    return [x.decode() for x in await raw.cmd("ZRANGE", key, 0, -1)]


async def forwarded(client: Client, queue: str, n: int) -> None:
    """Run the broker's forward step until ``n`` tasks have moved."""
    moved = 0

    async def done() -> bool:
        nonlocal moved
        moved += await client._broker.forward(queue)
        return moved >= n

    # A wait, not a speed check: under a full suite's load 3 s was once not enough.
    try:
        await wait_until(done, 10, what=f"{n} task(s) forwarded")
    except AssertionError as exc:  # say where the tasks are: a wait that cannot end is a wrong test
        qk = queue_keys(queue)
        t = client._broker.transport
        reads = (("ZCARD", qk.scheduled), ("ZCARD", qk.retry), ("LLEN", qk.pending))
        where = [await t.call(*c) for c in reads]
        raise AssertionError(f"{exc}; moved {moved}; scheduled, retry, pending hold {where}") from None
    assert moved == n


# -- triggers -------------------------------------------------------------------------------------


async def test_max_size_aggregates_full_groups_and_leaves_the_rest(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    batches = Batches()
    infos = [await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g1") for i in range(7)]
    assert (await raw.cmd("HGET", q(f"t:{infos[0].id}"), "state")) == b"aggregating"
    async with serving(redis_target, unique_queue, batches.mux, group_max_size=3, group_grace_period=30):
        await wait_until(batches.count(2), 8, what="two full groups merged")
        await anyio.sleep(0.3)  # a third merge would be a bug: one task is left, grace is 30 s
    # scores are whole seconds (Asynq's format), so "oldest first" holds only across seconds
    assert [len(b["items"]) for b in batches.seen] == [3, 3]
    assert all(b["group"] == "g1" for b in batches.seen)
    merged = {item for b in batches.seen for item in b["items"]}
    (left,) = await zmembers(raw, q("g:g1"))
    by_id = {info.id: str(i) for i, info in enumerate(infos)}
    assert merged | {by_id[left]} == set(by_id.values())
    assert await raw.cmd("SMEMBERS", q("groups")) == {b"g1"}
    assert await raw.cmd("ZCARD", q("aggregation_sets")) == 0
    for info in infos:
        exists = await raw.cmd("EXISTS", q(f"t:{info.id}"))
        assert exists == (1 if info.id == left else 0)
    assert (await raw.cmd("HGET", q(f"t:{left}"), "state")) == b"aggregating"


async def test_grace_period_waits_for_quiet_then_merges_and_cleans_up(
    redis_target: RedisTarget, client: Client, transport: Transport, unique_queue: str
) -> None:
    batches = Batches()
    async with serving(
        redis_target, unique_queue, batches.mux, group_grace_period=0.5, group_aggregator=amerge
    ):
        # a task every 0.2 s keeps the group open: the grace period restarts with each one
        for i in range(5):
            await client.enqueue(
                Task("item", f"a{i}"), queue=unique_queue, group="ga", unique=600 if i == 0 else None
            )
            await anyio.sleep(0.2)
        await client.enqueue(Task("item", "b0"), queue=unique_queue, group="gb")
        await wait_until(batches.count(2), 6, what="both groups merged")

        async def only_counters_left() -> bool:
            return await queue_keys_left(transport, unique_queue) == only_counters(unique_queue)

        await wait_until(only_counters_left, 5, what="only counters left")
    by_group = {b["group"]: sorted(b["items"]) for b in batches.seen}
    assert by_group == {"ga": ["a0", "a1", "a2", "a3", "a4"], "gb": ["b0"]}
    # the merged tasks ran and were acked; members, sets, groups and the unique lock are gone
    assert await queue_keys_left(transport, unique_queue) == only_counters(unique_queue)


async def test_max_delay_merges_a_group_that_never_goes_quiet(
    redis_target: RedisTarget, client: Client, unique_queue: str
) -> None:
    batches = Batches()
    started = time.monotonic()
    async with serving(redis_target, unique_queue, batches.mux, group_grace_period=30, group_max_delay=1.0):
        i = 0
        with anyio.fail_after(6):
            while not batches.seen:
                await client.enqueue(Task("item", str(i)), queue=unique_queue, group="busy")
                i += 1
                await anyio.sleep(0.2)
    assert time.monotonic() - started < 6  # long before the 30 s grace period
    first = batches.seen[0]["items"]
    # every task enqueued until the merge, the first one included
    assert sorted(first, key=int) == [str(n) for n in range(len(first))]


async def test_group_with_process_in_or_at_aggregates_once_due(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    later = await client.enqueue(Task("item", "in"), queue=unique_queue, group="late", process_in=0.6)
    at = await client.enqueue(
        Task("item", "at"),
        queue=unique_queue,
        group="late",
        process_at=datetime.now(UTC) + timedelta(seconds=0.6),
    )
    for info in (later, at):
        fields = await raw.cmd("HMGET", q(f"t:{info.id}"), "state", "group")
        assert fields == [b"scheduled", b"late"]
        assert await raw.cmd("ZSCORE", q("scheduled"), info.id) is not None
    assert await raw.cmd("EXISTS", q("g:late")) == 0

    # the forwarder sends due grouped tasks to their group, not to pending (Asynq runs them one by one)
    await forwarded(client, unique_queue, 2)
    assert await client._broker.forward(unique_queue) == 0  # safe to run twice
    assert sorted(await zmembers(raw, q("g:late"))) == sorted([later.id, at.id])
    assert await raw.cmd("SMEMBERS", q("groups")) == {b"late"}
    assert await raw.cmd("LLEN", q("pending")) == 0
    assert await raw.cmd("ZCARD", q("scheduled")) == 0
    for info in (later, at):
        assert await raw.cmd("HGET", q(f"t:{info.id}"), "state") == b"aggregating"

    # and the server's own forwarder does the same, then the aggregator merges them
    again = await client.enqueue(Task("item", "x"), queue=unique_queue, group="late2", process_in=0.3)
    batches = Batches()
    async with serving(redis_target, unique_queue, batches.mux, group_grace_period=0.3):
        await wait_until(batches.count(2), 6, what="both groups merged")
    by_group = {b["group"]: sorted(b["items"]) for b in batches.seen}
    assert by_group == {"late": ["at", "in"], "late2": ["x"]}
    assert await raw.cmd("EXISTS", q(f"t:{again.id}")) == 0


async def test_ungrouped_scheduled_tasks_still_go_to_pending(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    info = await client.enqueue(Task("item", "plain"), queue=unique_queue, process_in=0.2)
    await forwarded(client, unique_queue, 1)
    assert await raw.cmd("LRANGE", q("pending"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("HGET", q(f"t:{info.id}"), "state") == b"pending"
    assert await raw.cmd("EXISTS", q("groups")) == 0


# -- failure: reclaiming sets ---------------------------------------------------------------------


async def test_stale_set_is_reclaimed_and_aggregated_by_another_server(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """A server died after moving members into a set: past the set's deadline, another server gives
    them back to the group and aggregates them. A set still within its deadline is left alone."""
    q = k(unique_queue)
    dead = [await client.enqueue(Task("item", f"d{i}"), queue=unique_queue, group="g") for i in range(3)]
    busy = await client.enqueue(Task("item", "busy"), queue=unique_queue, group="other")
    now = time.time()
    stale_key, live_key = q("g:g:dead-server-set"), q("g:other:live-server-set")
    for info in dead:
        score = await raw.cmd("ZSCORE", q("g:g"), info.id)
        await raw.cmd("ZADD", stale_key, score, info.id)
    await raw.cmd("ZADD", live_key, now, busy.id)
    await raw.cmd("DEL", q("g:g"), q("g:other"))
    await raw.cmd("DEL", q("groups"))
    await raw.cmd("ZADD", q("aggregation_sets"), now - 10, stale_key, now + 300, live_key)

    batches = Batches()
    async with serving(redis_target, unique_queue, batches.mux, group_grace_period=0.3):
        await wait_until(batches.count(1), 6, what="reclaimed set merged")
        await anyio.sleep(0.3)
    assert [(b["group"], sorted(b["items"])) for b in batches.seen] == [("g", ["d0", "d1", "d2"])]
    assert await raw.cmd("EXISTS", stale_key) == 0
    for info in dead:
        assert await raw.cmd("EXISTS", q(f"t:{info.id}")) == 0
    # the other server's set is still its own
    assert await zmembers(raw, live_key) == [busy.id]
    assert await raw.cmd("ZRANGE", q("aggregation_sets"), 0, -1) == [live_key.encode()]


async def test_set_of_a_dead_server_is_finished_by_another_after_its_deadline(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    infos = [await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g") for i in range(3)]
    store = GroupStore(transport)
    policy = GroupPolicy(max_size=3, grace_period=30)  # due at once, by size

    # a server takes the group into a set, then dies before aggregating it
    dead = await store.create_set(unique_queue, "g", policy, set_timeout=0.5)
    assert dead is not None
    (set_key,) = await zmembers(raw, q("aggregation_sets"))
    assert set_key == dead.key and group_of_set(queue_keys(unique_queue), set_key) == "g"
    assert sorted(await zmembers(raw, set_key)) == sorted(i.id for i in infos)
    assert await raw.cmd("EXISTS", q("g:g")) == 0
    assert await raw.cmd("EXISTS", q("groups")) == 0

    # within the deadline another server leaves the set alone; after it, it reclaims and merges
    healthy = Aggregator(store, [unique_queue], merge, policy)
    assert await healthy.run_once() == 0
    await anyio.sleep(0.6)
    assert await healthy.run_once() == 1
    assert await raw.cmd("ZCARD", q("aggregation_sets")) == 0
    (merged_id,) = [x.decode() for x in await raw.cmd("LRANGE", q("pending"), 0, -1)]
    stored = await client._broker.task_hash(unique_queue, merged_id)
    assert stored["state"] == b"pending" and "pending_since" in stored
    payload = json.loads(decode_task_message(stored["msg"]).payload)
    assert payload["group"] == "g" and sorted(payload["items"]) == ["0", "1", "2"]
    for info in infos:
        assert await raw.cmd("EXISTS", q(f"t:{info.id}")) == 0


async def test_stopping_mid_aggregation_hands_the_set_back_at_once(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    infos = [await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g") for i in range(2)]
    store = GroupStore(transport)
    policy = GroupPolicy(max_size=2, grace_period=30)
    entered = anyio.Event()

    async def hang(group: str, tasks: list[Task]) -> Task:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    stopping = Aggregator(store, [unique_queue], hang, policy)  # 5-minute deadline
    async with anyio.create_task_group() as tg:
        tg.start_soon(stopping.run_once)
        with anyio.fail_after(5):
            await entered.wait()
        assert await raw.cmd("ZCARD", q("aggregation_sets")) == 1
        tg.cancel_scope.cancel()  # server shutdown
    assert await raw.cmd("ZCARD", q("aggregation_sets")) == 0
    assert sorted(await zmembers(raw, q("g:g"))) == sorted(i.id for i in infos)
    assert await raw.cmd("SMEMBERS", q("groups")) == {b"g"}
    assert await Aggregator(store, [unique_queue], merge, policy).run_once() == 1


async def test_slow_aggregator_whose_set_was_reclaimed_stores_nothing(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """Asynq would enqueue a second merged task here; the atomic finish refuses a reclaimed set."""
    q = k(unique_queue)
    for i in range(2):
        await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g")
    store = GroupStore(transport)
    policy = GroupPolicy(max_size=2, grace_period=30)
    slow = await store.create_set(unique_queue, "g", policy, set_timeout=0.2)
    assert slow is not None and len(slow.ids) == 2
    await anyio.sleep(0.3)
    assert await Aggregator(store, [unique_queue], merge, policy).run_once() == 1
    late = merged_message(merge("g", []), unique_queue, time.time())
    assert await store.finish(slow, late) is False
    assert await raw.cmd("LLEN", q("pending")) == 1
    assert await raw.cmd("EXISTS", q(f"t:{late.id}")) == 0


async def test_failing_aggregator_keeps_the_tasks(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    info = await client.enqueue(Task("item", "x"), queue=unique_queue, group="g")
    store = GroupStore(transport)
    policy = GroupPolicy(max_size=1, grace_period=30)

    def broken(group: str, tasks: list[Task]) -> Task:
        raise ValueError("boom")

    assert await Aggregator(store, [unique_queue], broken, policy, set_timeout=0.3).run_once() == 0
    assert await raw.cmd("ZCARD", q("aggregation_sets")) == 1
    assert await raw.cmd("HGET", q(f"t:{info.id}"), "state") == b"aggregating"
    await anyio.sleep(0.4)
    assert await Aggregator(store, [unique_queue], merge, policy).run_once() == 1
    assert await raw.cmd("EXISTS", q(f"t:{info.id}")) == 0


async def test_set_whose_tasks_were_deleted_is_dropped_without_calling_the_aggregator(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    infos = [await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g") for i in range(2)]
    for info in infos:
        await raw.cmd("DEL", q(f"t:{info.id}"))  # an operator deleted them, leaving the group zset

    def never(group: str, tasks: list[Task]) -> Task:
        raise AssertionError("called with no tasks")

    store = GroupStore(transport)
    assert await Aggregator(store, [unique_queue], never, GroupPolicy(max_size=2)).run_once() == 1
    assert await queue_keys_left(transport, unique_queue) == set()


# -- scripts are safe to run twice ----------------------------------------------------------------


async def test_scripts_are_safe_to_run_twice(
    transport: Transport, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    qk = queue_keys(unique_queue)
    ids = [(await client.enqueue(Task("item", str(i)), queue=unique_queue, group="g")).id for i in range(2)]
    now = time.time()
    set_key = qk.aggregation_set("g", "s1")
    keys = [qk.group("g"), set_key, qk.aggregation_sets, qk.groups, *(qk.task(i) for i in ids)]
    args: list[EncodableArg] = [2, "0", "30", repr(now + 300), repr(now), "g", *ids]
    first = await transport.script(group_scripts.AGGREGATION_CHECK, keys, args)
    second = await transport.script(group_scripts.AGGREGATION_CHECK, keys, args)  # a re-send
    assert first == second and int(first[0]) == 1
    assert sorted(x.decode() for x in first[1]) == sorted(ids)
    assert sorted(await zmembers(raw, set_key)) == sorted(ids)
    assert await raw.cmd("EXISTS", q("g:g")) == 0
    assert await raw.cmd("SMEMBERS", q("groups")) == set()

    store = GroupStore(transport)
    aset = await store.create_set(unique_queue, "g", GroupPolicy(max_size=1))
    assert aset is None  # the group is empty now
    aset = AggregationSet(
        unique_queue,
        "g",
        "s1",
        set_key,
        now + 300,
        tuple(ids),
        tuple(decode_task_message(bytes(m)) for m in first[2]),
    )
    merged = merged_message(merge("g", []), unique_queue, now)
    assert await store.finish(aset, merged) is True
    assert await store.finish(aset, merged) is True  # a re-send finds its own work done
    assert await raw.cmd("LRANGE", q("pending"), 0, -1) == [merged.id.encode()]
    assert await raw.cmd("ZCARD", q("aggregation_sets")) == 0

    # reclaim: a second run finds nothing left to do
    other = (await client.enqueue(Task("item", "r"), queue=unique_queue, group="h")).id
    stale = qk.aggregation_set("h", "s2")
    await raw.cmd("ZADD", stale, 1, other)
    await raw.cmd("DEL", q("g:h"))
    await raw.cmd("ZADD", q("aggregation_sets"), 1, stale)
    assert await store.reclaim(unique_queue, [stale]) == 1
    assert await store.reclaim(unique_queue, [stale]) == 0
    assert await store.members(unique_queue, "h") == [(other, 1.0)]
    assert await raw.cmd("SMEMBERS", q("groups")) == {b"h"}


# -- unit -----------------------------------------------------------------------------------------


def test_policy_rule() -> None:
    p = GroupPolicy(max_size=3, max_delay=10, grace_period=2)
    assert not p.is_due(0, 0, 0, 100)
    assert p.is_due(3, 99.5, 99.5, 100)  # full
    assert p.is_due(2, 90, 99.5, 100)  # oldest waited max delay
    assert p.is_due(2, 95.5, 97.5, 100)  # quiet for the grace period
    assert not p.is_due(2, 95.5, 98.5, 100)
    # a whole-second score may mean any time within that second: the grace period is never cut short
    assert not p.is_due(2, 95, 98, 100.5)
    assert p.is_due(2, 95, 98, 101)


def test_set_key_parsing() -> None:
    qk = queue_keys("q")
    assert group_of_set(qk, qk.aggregation_set("a:b", "0f1e")) == "a:b"
    assert group_of_set(qk, "asynq:{q}:g:nosetid") is None
    assert group_of_set(qk, "asynq:{other}:g:a:b") is None


def test_config_validates_group_settings() -> None:
    cfg = Config(group_aggregator=merge, group_grace_period=0.5, group_max_delay=2, group_max_size=10)
    assert cfg.group_grace_period == 0.5
    for bad in ({"group_grace_period": 0}, {"group_max_delay": -1}, {"group_max_size": -1}):
        with pytest.raises(pydantic.ValidationError):
            Config(**bad)
