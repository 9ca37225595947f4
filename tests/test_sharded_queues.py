"""Sharded queues: one logical queue stored as N ordinary queues whose names hash to N slot ranges.

The naming is pure (no Redis), so it is checked on its own and pinned to known names (a change of
naming would strand every task already stored under the old names); then, on a single Redis and on
the 6-node test cluster, the producer's spreading, the worker serving every shard exactly once, the
Inspector's aggregate and the CLI's grouping, each with its bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from conftest import RedisTarget, RunningCluster
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner, Result
from workerproc import RawRedis, q, wait_until

from asynq_aio import (
    Client,
    Config,
    DuplicateTaskError,
    Inspector,
    InvalidQueueName,
    InvalidTaskError,
    QueueInfo,
    QueueNotFoundError,
    RedisClusterClientOpt,
    ServeMux,
    Server,
    ShardedQueue,
    ShardedQueueInfo,
    Task,
    TaskDef,
    current_task,
)
from asynq_aio._application import default_config
from asynq_aio._connection import RedisConnOpt
from asynq_aio.cli.app import app
from asynq_aio.metrics.queues import QueueMetricsCollector, QueueSnapshot
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.protocol.shards import group_shards, logical_queue, parse_shard, shard_names
from asynq_aio.server.queues import QueueSelector
from asynq_aio.server.served import ServedQueues
from asynq_aio.sync import Client as SyncClient
from asynq_aio.testing import run_tasks

runner = CliRunner()

SLOTS = 16384


def in_own_range(names: tuple[str, ...]) -> bool:
    n = len(names)
    return all(i * SLOTS // n <= queue_keys(name).slot < (i + 1) * SLOTS // n for i, name in enumerate(names))


def lookalike(queue: str) -> str:
    """A name of the form ``<queue>~<i>of<n>`` that is NOT the canonical shard (the real shard has a
    ``-k`` suffix): an ordinary queue that merely looks like a shard."""
    for n in range(2, 50):
        for i, name in enumerate(shard_names(queue, n)):
            base = f"{queue}~{i}of{n}"
            if name != base:
                return base
    raise AssertionError("every candidate was canonical")


# -- naming (no Redis) ------------------------------------------------------------------------------


def test_names_are_pinned_deterministic_and_each_in_its_slot_range() -> None:
    # pinned: producers and workers of different versions must keep agreeing on these
    assert shard_names("hot", 3) == ("hot~0of3", "hot~1of3-3", "hot~2of3")
    assert shard_names("default", 2) == ("default~0of2", "default~1of2")
    for queue in ("hot", "tenant:acme", "émoji ✓", "x"):
        for n in (2, 3, 5, 16, 256):
            names = shard_names(queue, n)
            assert len(set(names)) == n and in_own_range(names), (queue, n)
            assert all(parse_shard(name) == (queue, i, n) for i, name in enumerate(names))
    first = shard_names("hot", 7)
    shard_names.cache_clear()
    assert shard_names("hot", 7) == first
    # another interpreter, with another hash seed, finds the same names and the same key shards
    code = (
        "from asynq_aio import ShardedQueue as S; s = S('hot', 7); "
        "print(list(s.names)); print([s.for_key(f'k{i}') for i in range(20)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, check=True
    )
    names_line, keys_line = out.stdout.strip().splitlines()
    hot = ShardedQueue("hot", 7)
    assert json.loads(names_line.replace("'", '"')) == list(first)
    assert json.loads(keys_line.replace("'", '"')) == [hot.for_key(f"k{i}") for i in range(20)]


def test_only_the_canonical_name_parses_as_a_shard() -> None:
    assert parse_shard("hot~1of3-3") == ("hot", 1, 3)
    assert parse_shard("hot~1of3") is None  # its slot is not in range 1: the shard is hot~1of3-3
    assert parse_shard("hot~0of3-1") is None  # hot~0of3 needs no suffix
    for name in ("hot", "hot~3of3", "hot~0of1", "hot~0of1000", "hot~01of3", "~0of3", "hot~0of3-0", "hot~x"):
        assert parse_shard(name) is None, name
    assert logical_queue("hot~2of3") == "hot" and logical_queue("hot~1of3") == "hot~1of3"
    groups = group_shards(["b", "hot~2of3", "hot~1of3", "hot~0of3", "hot~1of3-3", "a~0of2-2"])
    assert groups == {"a": ("a~0of2-2",), "hot": ("hot~0of3", "hot~1of3-3", "hot~2of3")}


@pytest.mark.parametrize(
    ("name", "shards", "error", "match"),
    [
        ("hot", 1, ValueError, "2 to 256 shards, got 1"),
        ("hot", 0, ValueError, "2 to 256 shards"),
        ("hot", 257, ValueError, "2 to 256 shards, got 257"),
        ("hot", 1000, ValueError, "2 to 256 shards, got 1000"),
        ("hot", True, ValueError, "whole number"),
        ("hot", "3", ValueError, "whole number"),
        ("", 3, InvalidQueueName, "non-empty"),
        ("  ", 3, InvalidQueueName, "non-empty"),
        ("a{b}", 3, InvalidQueueName, "must not contain"),
        ("hot~0of3", 2, InvalidQueueName, "form of a shard's name"),
        ("hot~1of3", 2, InvalidQueueName, "form of a shard's name"),  # a look-alike too
    ],
)
def test_bad_names_and_counts_are_refused(name: Any, shards: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        shard_names(name, shards)
    with pytest.raises(error, match=match):
        ShardedQueue(name, shards)


def test_sharded_queue_round_robin_key_stability_and_immutability() -> None:
    hot = ShardedQueue("hot", 3)
    assert hot.names == shard_names("hot", 3) and hot == ShardedQueue("hot", 3) != ShardedQueue("hot", 4)
    assert [hot.next_name() for _ in range(7)] == [*hot.names, *hot.names, hot.names[0]]
    assert hot.for_key("tenant-42") == hot.for_key("tenant-42")
    spread = Counter(hot.for_key(f"tenant-{i}") for i in range(3000))
    assert set(spread) == set(hot.names) and min(spread.values()) > 800
    with pytest.raises(AttributeError, match="immutable"):
        hot.shards = 5
    with pytest.raises(TypeError, match="str key"):
        hot.for_key(42)  # type: ignore[arg-type]

    # threads share the counter without handing out a turn twice
    shared = ShardedQueue("hot", 3)
    got: list[list[str]] = [[] for _ in range(8)]

    def take(out: list[str]) -> None:
        out.extend(shared.next_name() for _ in range(300))

    threads = [threading.Thread(target=take, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(n for out in got for n in out) == dict.fromkeys(shared.names, 800)


# -- worker side (no Redis) ---------------------------------------------------------------------------


def test_config_shards_are_checked() -> None:
    assert Config(queues={"hot": 5, "default": 1}, shards={"hot": 3}).shards == {"hot": 3}
    bad: list[tuple[dict[str, int], dict[str, int], str]] = [
        ({"default": 1}, {"hot": 3}, "not a key of queues"),
        ({"tenant:*": 1}, {"tenant:*": 3}, "a pattern cannot be sharded"),
        ({"hot": 1}, {"hot": 1}, "2 to 256 shards, got 1"),
        ({"hot": 1}, {"hot": 1000}, "2 to 256 shards, got 1000"),
        ({"hot~0of3": 1}, {"hot~0of3": 2}, "form of a shard's name"),
    ]
    for queues, shards, match in bad:
        with pytest.raises(ValidationError, match=match):
            Config(queues=queues, shards=shards)


def test_a_sharded_entry_serves_its_shards_not_its_name() -> None:
    hot = ShardedQueue("hot", 3)
    served = ServedQueues({"hot": 5, "default": 1}, {"hot": 3})
    assert list(served) == ["default", *hot.names] and "hot" not in served and not served.serves("hot")
    assert served.weights() == {"default": 1, **dict.fromkeys(hot.names, 5)}
    assert served.watch_budget() is None and served.fixed_count == 4  # one blocking wait each
    # fixed like literals: reading asynq:queues neither adds "hot" nor drops a shard
    assert served.update(["hot", "default"]) == ([], [])
    # a shard also listed as a literal is the literal's (its own weight), the rest stay the entry's
    own = ServedQueues({"hot": 1, hot.names[0]: 4}, {"hot": 3})
    assert own.weights() == {hot.names[0]: 4, hot.names[1]: 1, hot.names[2]: 1}


def test_a_sharded_entry_shares_its_weight_and_rotates_its_shards() -> None:
    served = ServedQueues({"hot": 1, "solo": 1}, {"hot": 3})
    sel = QueueSelector(served, strict=False, rng=random.Random(7))
    rounds = 20_000
    first = Counter(sel.order()[0] for _ in range(rounds))
    # the three shards share one weight: "solo" comes first half the time, not a quarter
    assert abs(first["solo"] / rounds - 0.5) < 0.02
    names = shard_names("hot", 3)
    strict = QueueSelector(ServedQueues({"low": 1, "hot": 5}, {"hot": 3}), strict=True)
    assert strict.order() == [*names, "low"]
    strict.took(names[0])
    assert strict.order() == [names[1], names[2], names[0], "low"]
    strict.took(names[2])
    assert strict.order({names[1], "low"}) == [names[1], "low"]
    assert strict.order() == [*names, "low"]


def test_the_queue_metrics_carry_the_logical_name() -> None:
    def info(queue: str, size: int) -> QueueInfo:
        return QueueInfo(
            queue=queue, size=size, groups=0, latency=timedelta(0), memory_usage=None,
            pending=size, active=0, scheduled=0, retry=0, archived=0, completed=0, aggregating=0,
            processed=0, failed=0, processed_total=0, failed_total=0, paused=False,
            timestamp=datetime.now(tz=UTC),
        )  # fmt: skip

    names = shard_names("hot", 3)
    look = lookalike("hot")
    collector = QueueMetricsCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    infos = (*(info(n, i + 1) for i, n in enumerate(names)), info("plain", 7), info(look, 9))
    collector.update(QueueSnapshot(queues=infos, taken_at=0.0, duration=0.0))
    for i, n in enumerate(names):
        assert registry.get_sample_value("asynq_queue_size", {"queue": n, "logical_queue": "hot"}) == i + 1
        labels = {"queue": n, "state": "pending", "logical_queue": "hot"}
        assert registry.get_sample_value("asynq_tasks_enqueued_total", labels) == i + 1
    assert registry.get_sample_value("asynq_queue_size", {"queue": "plain", "logical_queue": "plain"}) == 7
    assert registry.get_sample_value("asynq_queue_size", {"queue": look, "logical_queue": look}) == 9


# -- on Redis: single and cluster ---------------------------------------------------------------------


@pytest.fixture
async def hot(inspector: Inspector, unique_queue: str) -> AsyncIterator[ShardedQueue]:
    sq = ShardedQueue(unique_queue, 3)
    yield sq
    for name in (*sq.names, unique_queue, lookalike(unique_queue)):
        with contextlib.suppress(QueueNotFoundError):
            await inspector.delete_queue(name, force=True)


async def pending(raw: RawRedis, queue: str) -> int:
    return int(await raw.cmd("LLEN", q(queue)("pending")))


@pytest.mark.anyio
async def test_round_robin_enqueue_spreads_evenly(client: Client, raw: RawRedis, hot: ShardedQueue) -> None:
    infos = [await client.enqueue(Task("sh:rr"), queue=hot) for _ in range(30)]
    assert [i.queue for i in infos] == [*hot.names] * 10  # the info names the concrete shard
    batch = await client.enqueue_many([Task("sh:rr", str(i).encode()) for i in range(31)], queue=hot)
    stored = Counter(i.queue for i in batch if not isinstance(i, Exception))
    assert stored == {hot.names[0]: 11, hot.names[1]: 10, hot.names[2]: 10}
    assert [await pending(raw, n) for n in hot.names] == [21, 20, 20]
    assert await pending(raw, hot.name) == 0  # nothing under the logical name itself
    # bad input: a bad option fails the call and stores nothing, in any shard
    with pytest.raises(InvalidTaskError, match="max_retry"):
        await client.enqueue(Task("sh:rr"), queue=hot, max_retry=-1)
    assert [await pending(raw, n) for n in hot.names] == [21, 20, 20]


@pytest.mark.anyio
async def test_by_key_is_stable_and_uniqueness_is_per_shard(client: Client, hot: ShardedQueue) -> None:
    shard = hot.for_key("tenant-42")
    infos = [await client.enqueue(Task("sh:key", b"x"), queue=hot.for_key("tenant-42")) for _ in range(5)]
    assert {i.queue for i in infos} == {shard}
    # a unique task by key meets its lock in the one shard the key maps to
    await client.enqueue(Task("sh:uniq", b"42"), queue=hot.for_key("tenant-42"), unique=60)
    with pytest.raises(DuplicateTaskError):
        await client.enqueue(Task("sh:uniq", b"42"), queue=hot.for_key("tenant-42"), unique=60)
    # round-robin puts the same task in other shards, where other locks apply: not a duplicate there
    spread = ShardedQueue(hot.name, 3)
    results: list[str] = []
    for _ in range(3):
        try:
            results.append((await client.enqueue(Task("sh:uniq", b"42"), queue=spread, unique=60)).queue)
        except DuplicateTaskError:
            results.append("duplicate")
    assert sorted(results) == sorted(["duplicate", *(n for n in hot.names if n != shard)])


@pytest.mark.anyio
async def test_a_worker_with_config_shards_runs_every_task_of_every_shard_once(
    opt: RedisConnOpt, inspector: Inspector, client: Client, raw: RawRedis, hot: ShardedQueue
) -> None:
    n = 300
    ids = {(await client.enqueue(Task("sh:run", str(i).encode()), queue=hot)).id for i in range(n - 3)}
    for name in hot.names:  # as a Go producer that names a shard would
        ids.add((await client.enqueue(Task("sh:run", b"go"), queue=name)).id)
    plain = await client.enqueue(Task("sh:run", b"plain"), queue=hot.name)  # not a shard: not served
    runs: Counter[str] = Counter()
    queues_seen: set[str] = set()

    async def handler(task: Task) -> None:
        ctx = current_task()
        runs[ctx.id] += 1
        queues_seen.add(ctx.queue)

    cfg = Config(
        queues={hot.name: 2, "sh-unused-" + hot.name: 1},
        shards={hot.name: 3},
        concurrency=8,
        heartbeat_interval=0.5,
        shutdown_timeout=1.0,
    )
    server = Server(opt, cfg)
    async with server.serve(handler):

        async def all_ran() -> bool:
            return len(runs) >= n

        await wait_until(all_ran, 120, what="every task of every shard to run")

        async def listed() -> bool:
            return any(s.id == server.server_id for s in await inspector.servers())

        await wait_until(listed, 30, what="the heartbeat record")
        record = next(s for s in await inspector.servers() if s.id == server.server_id)
    assert set(runs) == ids and set(runs.values()) == {1}
    assert queues_seen == set(hot.names)
    # the heartbeat names the concrete shards (what Go's CLI and asynqmon show), never the logical name
    assert record.queues == {**dict.fromkeys(hot.names, 2), "sh-unused-" + hot.name: 1}
    assert plain.id not in runs and await pending(raw, hot.name) == 1
    assert all([await pending(raw, name) == 0 for name in hot.names])


@pytest.mark.anyio
async def test_the_inspector_adds_the_shards_up(
    client: Client, inspector: Inspector, hot: ShardedQueue, unique_queue: str
) -> None:
    with pytest.raises(QueueNotFoundError, match="sharded queue"):
        await inspector.sharded_queue_info(unique_queue)  # bad input: no shard exists yet
    for i in range(7):
        await client.enqueue(Task("sh:insp", str(i).encode()), queue=hot)
    await client.enqueue(Task("sh:later"), queue=hot.names[1], process_in=3600)
    await client.enqueue(Task("sh:plain"), queue=unique_queue)  # the logical name as a plain queue
    await client.enqueue(Task("sh:look"), queue=lookalike(unique_queue))  # not a shard
    await inspector.pause_queue(hot.names[0])
    agg = await inspector.sharded_queue_info(unique_queue)
    assert isinstance(agg, ShardedQueueInfo) and agg.queue == unique_queue
    assert [s.queue for s in agg.shards] == list(hot.names)
    assert [s.pending for s in agg.shards] == [3, 2, 2] and agg.pending == 7
    assert agg.scheduled == 1 and agg.size == 8 == sum(s.size for s in agg.shards)
    assert agg.memory_usage is not None and agg.memory_usage == sum(s.memory_usage or 0 for s in agg.shards)
    assert not agg.paused  # one paused shard of three: the queue still runs
    for name in hot.names[1:]:
        await inspector.pause_queue(name)
    assert (await inspector.sharded_queue_info(unique_queue, memory=False)).paused
    assert (await inspector.get_queue_info(unique_queue)).size == 1  # the plain queue is its own


@pytest.mark.anyio
async def test_queue_ls_groups_the_shards_and_a_lookalike_stays_a_queue(
    redis_target: RedisTarget, client: Client, hot: ShardedQueue, unique_queue: str
) -> None:
    look = lookalike(unique_queue)
    info = await client.enqueue(Task("sh:look"), queue=look)
    assert info.queue == look and parse_shard(look) is None  # stored as given, not re-routed
    for _ in range(3):
        await client.enqueue(Task("sh:ls"), queue=hot)
    await client.enqueue(Task("sh:ls"), queue=unique_queue)
    env = (
        {"ASYNQ_REDIS_URL": redis_target.url, "ASYNQ_CLUSTER_ADDRS": None}
        if redis_target.kind == "single"
        else {"ASYNQ_CLUSTER_ADDRS": ",".join(redis_target.addrs or []), "ASYNQ_REDIS_URL": None}
    )

    async def cli(*args: str, code: int = 0) -> Result:
        result = await anyio.to_thread.run_sync(lambda: runner.invoke(app, list(args), env=env))
        assert result.exit_code == code, result.output
        return result

    def rows(output: str) -> list[list[str]]:
        return [ln.split() for ln in output.splitlines() if unique_queue in ln]

    grouped = rows((await cli("queue", "ls")).output)
    assert sorted(grouped) == sorted([[unique_queue], [unique_queue, "3"], [look]])
    each = rows((await cli("queue", "ls", "--each")).output)
    assert sorted(each) == sorted([[unique_queue], [look], *([n] for n in hot.names)])
    listed = json.loads((await cli("queue", "ls", "--json")).output)
    assert {unique_queue, look, *hot.names} <= set(listed)
    # inspect by the logical name: the aggregate (the plain queue of that name wins when it exists)
    await client.enqueue(Task("sh:ls"), queue=hot)
    shown = await cli("queue", "inspect", unique_queue, "--json")
    assert json.loads(shown.output)["size"] == 1
    bad = await cli("queue", "inspect", f"{unique_queue}-none", code=1)
    assert "not found" in bad.output


@pytest.mark.anyio
async def test_queue_inspect_shows_the_aggregate_under_the_logical_name(
    redis_target: RedisTarget, client: Client, hot: ShardedQueue
) -> None:
    for _ in range(4):
        await client.enqueue(Task("sh:insp"), queue=hot)
    env = (
        {"ASYNQ_REDIS_URL": redis_target.url, "ASYNQ_CLUSTER_ADDRS": None}
        if redis_target.kind == "single"
        else {"ASYNQ_CLUSTER_ADDRS": ",".join(redis_target.addrs or []), "ASYNQ_REDIS_URL": None}
    )
    result = await anyio.to_thread.run_sync(
        lambda: runner.invoke(app, ["queue", "inspect", hot.name, "--json"], env=env)
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["queue"] == hot.name and shown["pending"] == 4
    assert [s["queue"] for s in shown["shards"]] == list(hot.names)
    text = await anyio.to_thread.run_sync(lambda: runner.invoke(app, ["queue", "inspect", hot.name], env=env))
    assert "Shards" in text.output and hot.names[1] in text.output


class Report(BaseModel):
    n: int


@pytest.mark.anyio
async def test_the_blocking_client_takes_a_sharded_queue(
    opt: RedisConnOpt, raw: RawRedis, hot: ShardedQueue
) -> None:
    def produce() -> list[str]:
        with SyncClient(opt) as c:
            one = [c.enqueue(Task("sh:sync"), queue=hot).queue for _ in range(3)]
            many = c.enqueue_many([Task("sh:sync") for _ in range(3)], queue=hot)
            return one + [i.queue for i in many if not isinstance(i, Exception)]

    assert await anyio.to_thread.run_sync(produce) == [*hot.names, *hot.names]
    assert [await pending(raw, n) for n in hot.names] == [2, 2, 2]


@pytest.mark.anyio
async def test_a_taskdefs_sharded_queue_is_served_without_being_told(
    opt: RedisConnOpt, hot: ShardedQueue
) -> None:
    mux = ServeMux()
    report = TaskDef("sh:report", Report, queue=hot)
    seen: list[str] = []

    @report.handler(mux)
    async def handle(payload: Report) -> None:
        seen.append(current_task().queue)

    assert mux.task_queues() == [hot.name] and mux.task_shards() == {hot.name: 3}
    assert default_config(mux).shards == {hot.name: 3}
    # another queue of this test's own (DB 15 is shared: "default" may hold other sessions' tasks)
    async with run_tasks(opt, mux, queues=[f"{hot.name}-other"]) as runner:
        assert set(hot.names) <= set(runner.queues) and hot.name not in runner.queues
        infos = [await runner.enqueue(report, Report(n=i)) for i in range(6)]
        outcomes = await runner.drain()
    assert [i.queue for i in infos] == [*hot.names, *hot.names]
    assert sorted(o.queue for o in outcomes) == sorted(seen) == sorted([*hot.names, *hot.names])


def test_the_worker_command_refuses_bad_shards() -> None:
    for args, match in [
        (["--shards", "hot=x"], "--shards 'hot=x': count must be a whole number"),
        (["--shards", "=3"], "--shards takes NAME or NAME=COUNT"),
        (["-q", "hot=1", "--shards", "hot=1"], "2 to 256 shards, got 1"),
        (["-q", "default=1", "--shards", "hot=3"], "not a key of queues"),
    ]:
        result = runner.invoke(
            app, ["worker", "nosuchmodule:app", *args], env={"ASYNQ_REDIS_URL": "redis://x"}
        )
        assert result.exit_code == 1, result.output
        assert match in result.output, result.output


# -- cluster only ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_three_shards_land_on_the_three_masters(redis_cluster: RunningCluster) -> None:
    hot = ShardedQueue("sharded-bench-probe", 3)
    async with Inspector(RedisClusterClientOpt(addrs=redis_cluster.addrs)) as insp:
        locations = await insp.cluster_locations(list(hot.names))
    masters = [loc.nodes[0] for loc in locations]
    assert all(m.role == "master" for m in masters)
    assert len({m.node_id for m in masters}) == 3
    # and the cluster's own view agrees: each master owns its shard's slot
    owners = {s.node_id: s.slots for s in redis_cluster.cluster.status() if s.slots}
    for loc, m in zip(locations, masters, strict=True):
        assert any(lo <= loc.slot <= hi for lo, hi in owners[m.node_id])
