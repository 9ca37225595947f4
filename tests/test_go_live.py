"""asynq-aio against a live Go Asynq v0.26.0 on the same Redis (single and cluster).

The golden fixtures prove the format against bytes Go once wrote; these tests run the Go client,
server and inspector (tests/go/peer, built from the module proxy) next to asynq-aio, so a change on
either side that only shows up at run time (a script that reads a field differently, a lock key, a
lease) fails here. Keys are written out by hand from Go's layout, not taken from asynq_aio.

Not covered: Go recovering the tasks of a crashed asynq-aio worker. Go's recoverer runs once a minute
and takes only leases that expired more than 30 s ago, so that hand-over needs over 60 s per target.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from golive import GoPeer, build_peer, go_worker, target_args
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    DuplicateTaskError,
    Inspector,
    Scheduler,
    Server,
    ShardedQueue,
    Task,
    TaskState,
    current_task,
)

pytestmark = pytest.mark.anyio

BINARY = bytes(range(256))  # every byte value; not UTF-8
JSON_TEXT = '{"to":123,"from":456}'  # what Go code writes and Task(type, dict) writes alike


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> GoPeer:
    return build_peer(tmp_path_factory.mktemp("go-peer"))


def k(queue: str, suffix: str) -> str:
    return f"asynq:{{{queue}}}:{suffix}"


def unique_key(queue: str, task_type: str, payload: bytes | None) -> str:
    """Go's base.UniqueKey: a nil payload has no digest at all."""
    digest = "" if payload is None else hashlib.md5(payload).hexdigest()
    return k(queue, f"unique:{task_type}:{digest}")


async def counter(raw: RawRedis, queue: str, name: str) -> int:
    value = await raw.cmd("GET", k(queue, name))
    return 0 if value is None else int(value)


def py_config(queue: str, **changes: Any) -> Config:
    """A server that forwards and retries at once, so a test waits for work, not for timers."""
    base = Config(
        queues={queue: 1},
        concurrency=4,
        forward_interval=0.2,
        retry_delay_func=lambda n, e, t: 0.0,
        shutdown_timeout=1.0,
    )
    return base.with_(**changes)


class PyRuns:
    """The asynq-aio side's run log: one dict per handler run, like the Go worker's."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def handler(self, *, work: float = 0.0) -> Callable[[Task], Awaitable[None]]:
        async def handle(task: Task) -> None:
            ctx = current_task()
            self.runs.append(
                {
                    "id": ctx.id,
                    "type": task.type,
                    "payload": task.payload,
                    "headers": dict(task.headers),
                    "queue": ctx.queue,
                    "retried": ctx.retry_count,
                    "max_retry": ctx.max_retry,
                }
            )
            if task.type == "fail":
                raise RuntimeError("python says no")
            if task.type == "result":
                await ctx.write_result(b"py-result:" + task.payload)
            if work:
                await anyio.sleep(work)

        return handle

    def by_id(self) -> dict[str, list[dict[str, Any]]]:
        return by_id(self.runs)


@asynccontextmanager
async def py_server(
    target: RedisTarget, config: Config, runs: PyRuns, *, work: float = 0.0
) -> AsyncIterator[Server]:
    server = Server(conn_opt(target.kind, target.url, target.addrs), config)
    async with server.serve(runs.handler(work=work)):
        yield server


def one(infos: list[dict[str, Any]]) -> dict[str, Any]:
    (info,) = infos
    assert "error" not in info, info
    return info


def by_id(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(run["id"], []).append(run)
    return out


async def test_go_client_tasks_run_on_an_asynq_aio_server(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    deadline = int(time.time()) + 3600
    json_t = one(
        await go_peer.enqueue(
            redis_target,
            "json",
            json_text=JSON_TEXT,
            queue=q,
            max_retry=3,
            timeout=30,
            retention=3600,
            task_id=f"{q}-json",
            headers={"trace": "abc"},
        )
    )
    empty_t = one(await go_peer.enqueue(redis_target, "empty", queue=q, unique=3600))
    binary_t = one(await go_peer.enqueue(redis_target, "binary", payload=BINARY, queue=q, deadline=deadline))
    later_t = one(await go_peer.enqueue(redis_target, "later", json_text='{"n":1}', queue=q, process_in=1))
    fail_t = one(await go_peer.enqueue(redis_target, "fail", queue=q, max_retry=1))
    assert json_t["id"] == f"{q}-json"
    assert [t["state"] for t in (json_t, empty_t, binary_t, later_t, fail_t)] == [
        "pending",
        "pending",
        "pending",
        "scheduled",
        "pending",
    ]
    assert await raw.cmd("GET", unique_key(q, "empty", None)) == empty_t["id"].encode()

    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with Inspector(opt) as insp:
        got = await insp.get_task_info(q, json_t["id"])
        assert (got.timeout, got.max_retry, got.retention) == (timedelta(seconds=30), 3, timedelta(hours=1))
        assert (await insp.get_task_info(q, binary_t["id"])).deadline == datetime.fromtimestamp(deadline, UTC)

    runs = PyRuns()
    with anyio.fail_after(30):
        async with py_server(redis_target, py_config(q), runs):

            async def finished() -> bool:
                return len(runs.runs) == 6 and await raw.cmd("ZCARD", k(q, "archived")) == 1

            await wait_until(finished, 20, what="5 Go tasks run, the failing one twice")

    ran = runs.by_id()
    assert sorted(ran) == sorted(t["id"] for t in (json_t, empty_t, binary_t, later_t, fail_t))
    (json_run,) = ran[json_t["id"]]
    assert (json_run["payload"], json_run["headers"], json_run["max_retry"], json_run["queue"]) == (
        JSON_TEXT.encode(),
        {"trace": "abc"},
        3,
        q,
    )
    assert [r["payload"] for r in ran[empty_t["id"]]] == [b""]
    assert [(r["payload"], r["max_retry"]) for r in ran[binary_t["id"]]] == [(BINARY, 25)]
    assert [r["payload"] for r in ran[later_t["id"]]] == [b'{"n":1}']
    assert [(r["retried"], r["max_retry"]) for r in ran[fail_t["id"]]] == [(0, 1), (1, 1)]

    # Afterwards: retention keeps the JSON task completed, the others are gone, the unique lock
    # is released, and the failing task is archived with its error once its retry is used up.
    assert await raw.cmd("HGET", k(q, f"t:{json_t['id']}"), "state") == b"completed"
    assert await raw.cmd("ZSCORE", k(q, "completed"), json_t["id"]) is not None
    for t in (empty_t, binary_t, later_t):
        assert await raw.cmd("EXISTS", k(q, f"t:{t['id']}")) == 0
    assert await raw.cmd("EXISTS", unique_key(q, "empty", None)) == 0
    async with Inspector(opt) as insp:
        failed = await insp.get_task_info(q, fail_t["id"])
    assert (failed.state, failed.retried, failed.last_err) == (TaskState.ARCHIVED, 1, "python says no")
    assert (await counter(raw, q, "processed"), await counter(raw, q, "failed")) == (6, 2)


async def test_asynq_aio_client_tasks_run_on_a_go_server(
    go_peer: GoPeer,
    redis_target: RedisTarget,
    raw: RawRedis,
    client: Client,
    unique_queue: str,
    tmp_path: Path,
) -> None:
    q = unique_queue
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    json_t = await client.enqueue(
        Task("json", {"to": 123, "from": 456}, headers={"trace": "abc"}),
        queue=q,
        max_retry=3,
        timeout=30,
        retention=3600,
        task_id=f"{q}-json",
    )
    empty_t = await client.enqueue(Task("empty"), queue=q, unique=3600)
    binary_t = await client.enqueue(Task("binary", BINARY), queue=q, deadline=deadline)
    later_t = await client.enqueue(Task("later", {"n": 1}), queue=q, process_in=1)
    fail_t = await client.enqueue(Task("fail"), queue=q, max_retry=1)
    result_t = await client.enqueue(Task("result", b"\x00\xffr"), queue=q, retention=3600)
    assert later_t.state == TaskState.SCHEDULED

    async with go_worker(go_peer, redis_target, tmp_path, [q]) as worker:

        async def finished() -> bool:
            return len(worker.runs()) == 7 and await raw.cmd("ZCARD", k(q, "archived")) == 1

        await wait_until(finished, 20, what="6 asynq-aio tasks run by Go, the failing one twice")
        await worker.stop()
        ran = by_id(worker.runs())

    ids = [t.id for t in (json_t, empty_t, binary_t, later_t, fail_t, result_t)]
    assert sorted(ran) == sorted(ids)
    assert [(r["payload_hex"], r["headers"], r["max_retry"], r["queue"]) for r in ran[json_t.id]] == [
        (JSON_TEXT.encode().hex(), {"trace": "abc"}, 3, q)
    ]
    assert [r["payload_hex"] for r in ran[empty_t.id]] == [""]
    assert [(r["payload_hex"], r["max_retry"]) for r in ran[binary_t.id]] == [(BINARY.hex(), 25)]
    assert [r["payload_hex"] for r in ran[later_t.id]] == [b'{"n":1}'.hex()]
    assert [(r["retried"], r["max_retry"]) for r in ran[fail_t.id]] == [(0, 1), (1, 1)]

    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with Inspector(opt) as insp:
        done_json = await insp.get_task_info(q, json_t.id)
        done_result = await insp.get_task_info(q, result_t.id)
        failed = await insp.get_task_info(q, fail_t.id)
    assert (done_json.state, done_json.retention) == (TaskState.COMPLETED, timedelta(hours=1))
    assert (done_result.state, done_result.result) == (TaskState.COMPLETED, b"go-result:\x00\xffr")
    assert (failed.state, failed.retried, failed.last_err) == (TaskState.ARCHIVED, 1, "intentional failure")
    for t in (empty_t, binary_t, later_t):
        assert await raw.cmd("EXISTS", k(q, f"t:{t.id}")) == 0
    assert await raw.cmd("EXISTS", unique_key(q, "empty", None)) == 0  # Go released our lock
    assert (await counter(raw, q, "processed"), await counter(raw, q, "failed")) == (7, 2)


# (name, Go's payload as (payload, json_text), asynq-aio's Task payload, the bytes the lock hashes)
UNIQUE_CASES: list[tuple[str, tuple[bytes | None, str | None], Any, bytes | None]] = [
    ("json", (None, '{"a":1,"b":[1,2]}'), {"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
    ("empty", (None, None), None, None),
    ("binary", (BINARY, None), BINARY, BINARY),
]


async def test_a_unique_task_is_a_duplicate_whichever_language_enqueued_it_first(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, client: Client, unique_queue: str
) -> None:
    """The empty payload is the case that used to slip through: Go locks a nil payload with no
    digest, and asynq-aio once hashed b"" instead."""
    q = unique_queue
    for name, (go_payload, go_json), py_payload, locked in UNIQUE_CASES:
        go_first = f"go-first:{name}"
        stored = one(
            await go_peer.enqueue(
                redis_target, go_first, payload=go_payload, json_text=go_json, queue=q, unique=3600
            )
        )
        assert await raw.cmd("GET", unique_key(q, go_first, locked)) == stored["id"].encode()
        with pytest.raises(DuplicateTaskError):
            await client.enqueue(Task(go_first, py_payload), queue=q, unique=3600)

        py_first = f"py-first:{name}"
        info = await client.enqueue(Task(py_first, py_payload), queue=q, unique=3600)
        assert await raw.cmd("GET", unique_key(q, py_first, locked)) == info.id.encode()
        (dup,) = await go_peer.enqueue(
            redis_target, py_first, payload=go_payload, json_text=go_json, queue=q, unique=3600
        )
        assert dup.get("duplicate") is True, dup

    assert await raw.cmd("LLEN", k(q, "pending")) == 2 * len(UNIQUE_CASES)


async def test_go_and_asynq_aio_workers_share_a_queue_and_run_each_task_once(
    go_peer: GoPeer,
    redis_target: RedisTarget,
    raw: RawRedis,
    client: Client,
    unique_queue: str,
    tmp_path: Path,
) -> None:
    q, half = unique_queue, 500
    runs = PyRuns()
    with anyio.fail_after(60):
        async with (
            py_server(redis_target, py_config(q, concurrency=10), runs, work=0.005),
            go_worker(go_peer, redis_target, tmp_path, [q], concurrency=10, work=0.005) as worker,
        ):
            go_infos = await go_peer.enqueue(redis_target, "mix", json_text='{"i":{i}}', queue=q, count=half)
            py_infos = await client.enqueue_many([Task("mix", {"i": half + i}) for i in range(half)], queue=q)
            enqueued = {info["id"]: bytes.fromhex(info["payload_hex"]) for info in go_infos}
            for py_info in py_infos:
                assert not isinstance(py_info, Exception), py_info
                enqueued[py_info.id] = py_info.payload
            assert len(enqueued) == 2 * half

            async def all_processed() -> bool:
                return await counter(raw, q, "processed") >= 2 * half

            await wait_until(all_processed, 45, what="1,000 tasks processed")
            await anyio.sleep(0.5)  # a second run of any task would land in a log by now
            await worker.stop()
            go_runs = worker.runs()

    ran = Counter([r["id"] for r in go_runs] + [r["id"] for r in runs.runs])
    assert set(ran) == set(enqueued)
    assert [tid for tid, n in ran.items() if n != 1] == []
    assert {r["id"]: bytes.fromhex(r["payload_hex"]) for r in go_runs} | {
        r["id"]: r["payload"] for r in runs.runs
    } == enqueued
    assert go_runs and runs.runs, (len(go_runs), len(runs.runs))  # both sides took part
    assert (await counter(raw, q, "processed"), await counter(raw, q, "failed")) == (2 * half, 0)
    assert await raw.cmd("LLEN", k(q, "pending")) == await raw.cmd("LLEN", k(q, "active")) == 0


@pytest.mark.slow
async def test_tasks_of_a_killed_go_worker_are_rerun_by_an_asynq_aio_worker(
    go_peer: GoPeer,
    redis_target: RedisTarget,
    raw: RawRedis,
    client: Client,
    unique_queue: str,
    tmp_path: Path,
) -> None:
    """Slow because Go leases a task for a fixed 30 s: that long after the kill, the lease runs out
    and asynq-aio's recoverer may take the task. Our own short lease does not shorten Go's."""
    q = unique_queue
    go_ids = [
        t["id"] for t in await go_peer.enqueue(redis_target, "block", json_text='{"i":{i}}', queue=q, count=2)
    ]
    py_infos = await client.enqueue_many([Task("block", {"i": 2 + i}) for i in range(2)], queue=q)
    ids = go_ids + [info.id for info in py_infos if not isinstance(info, Exception)]
    assert len(ids) == 4

    async with go_worker(go_peer, redis_target, tmp_path, [q], concurrency=4) as worker:

        async def all_started() -> bool:
            return len(worker.runs()) == 4

        await wait_until(all_started, 10, what="the Go worker to start all 4 tasks")
        worker.kill()
    assert sorted(r["id"] for r in worker.runs()) == sorted(ids)
    assert sorted(x.decode() for x in await raw.cmd("LRANGE", k(q, "active"), 0, -1)) == sorted(ids)

    runs = PyRuns()
    config = py_config(
        q, lease_duration=2.0, heartbeat_interval=0.5, recovery_interval=0.5, recovery_skew=0.0
    )
    with anyio.fail_after(60):
        async with py_server(redis_target, config, runs):

            async def rerun() -> bool:
                return len(runs.runs) >= 4 and await raw.cmd("LLEN", k(q, "active")) == 0

            await wait_until(rerun, 50, what="asynq-aio to recover and rerun the Go worker's tasks")
            await anyio.sleep(0.5)  # a second rerun of any task would show by now

    ran = runs.by_id()
    assert sorted(ran) == sorted(ids)
    # Each was run once more, as its second attempt: the lost one counts as a failure, as in Go.
    assert all([r["retried"] for r in rs] == [1] for rs in ran.values()), ran
    assert await raw.cmd("EXISTS", *(k(q, f"t:{tid}") for tid in ids)) == 0
    assert (await counter(raw, q, "processed"), await counter(raw, q, "failed")) == (8, 4)


async def test_go_inspector_reads_asynq_aio_tasks_in_every_state(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, client: Client, unique_queue: str
) -> None:
    q = unique_queue
    # retry, archived and completed come from a real asynq-aio server run, not hand-written keys
    retry_t = await client.enqueue(Task("fail", b"r"), queue=q, max_retry=3)
    archived_t = await client.enqueue(Task("fail", b"a"), queue=q, max_retry=0)
    completed_t = await client.enqueue(Task("result", b"c"), queue=q, retention=3600)
    runs = PyRuns()
    config = py_config(q, retry_delay_func=lambda n, e, t: 3600.0)
    with anyio.fail_after(20):
        async with py_server(redis_target, config, runs):

            async def settled() -> bool:
                counts = [await raw.cmd("ZCARD", k(q, s)) for s in ("retry", "archived", "completed")]
                return counts == [1, 1, 1]

            await wait_until(settled, 15, what="one task each in retry, archived and completed")

    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    pending = [
        await client.enqueue(Task("p", {"i": 0}, headers={"trace": "abc"}), queue=q, timeout=30),
        await client.enqueue(Task("p", BINARY), queue=q, deadline=deadline),
    ]
    scheduled = [
        await client.enqueue(Task("s", {"i": i}), queue=q, process_in=3600 * (i + 1)) for i in range(2)
    ]
    now = time.time()

    every = [*pending, *scheduled, retry_t, archived_t, completed_t]
    got = await go_peer.inspect(redis_target, q, *(t.id for t in every))
    assert {
        s: got["info"][s] for s in ("pending", "active", "scheduled", "retry", "archived", "completed")
    } == {
        "pending": 2,
        "active": 0,
        "scheduled": 2,
        "retry": 1,
        "archived": 1,
        "completed": 1,
    }
    assert got["info"]["size"] == 7  # Go's code counts completed tasks too (its doc comment does not)
    assert (got["info"]["processed_total"], got["info"]["failed_total"]) == (3, 2)
    assert (got["info"]["processed"], got["info"]["failed"]) == (3, 2)  # today's counters

    def listed(state: str) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in got[state]}

    assert set(listed("pending")) == {t.id for t in pending}
    assert set(listed("scheduled")) == {t.id for t in scheduled}
    assert set(listed("retry")) == {retry_t.id}
    assert set(listed("archived")) == {archived_t.id}
    assert set(listed("completed")) == {completed_t.id}
    assert got["active"] == []
    states = {t.id: "pending" for t in pending} | {t.id: "scheduled" for t in scheduled}
    states |= {retry_t.id: "retry", archived_t.id: "archived", completed_t.id: "completed"}
    assert {tid: info["state"] for tid, info in got["tasks"].items()} == states  # GetTaskInfo

    p0, p1 = (listed("pending")[t.id] for t in pending)
    assert (p0["payload_hex"], p0["headers"], p0["timeout_s"], p0["deadline"]) == (
        b'{"i":0}'.hex(),
        {"trace": "abc"},
        30,
        0,
    )
    assert (p1["payload_hex"], p1["timeout_s"], p1["deadline"]) == (
        BINARY.hex(),
        0,
        int(deadline.timestamp()),
    )
    for i, t in enumerate(scheduled):
        s = listed("scheduled")[t.id]
        assert s["state"] == "scheduled" and abs(s["next_process_at"] - (now + 3600 * (i + 1))) < 5
    r = listed("retry")[retry_t.id]
    assert (r["retried"], r["max_retry"], r["last_err"], r["payload_hex"]) == (
        1,
        3,
        "python says no",
        b"r".hex(),
    )
    assert abs(r["next_process_at"] - (now + 3600)) < 30
    a = listed("archived")[archived_t.id]
    assert (a["retried"], a["max_retry"], a["last_err"], a["payload_hex"]) == (
        0,
        0,
        "python says no",
        b"a".hex(),
    )
    c = listed("completed")[completed_t.id]
    assert (c["result_hex"], c["retention_s"], c["payload_hex"]) == (b"py-result:c".hex(), 3600, b"c".hex())
    assert abs(c["completed_at"] - now) < 30


@pytest.mark.slow
async def test_go_reads_sub_second_delays_and_timeouts(
    go_peer: GoPeer, redis_target: RedisTarget, client: Client, tmp_path: Path, unique_queue: str
) -> None:
    """asynq-aio keeps the milliseconds of process_in (a fractional zset score) and of a timeout
    (a header, beside the whole seconds rounded up): Go's inspector reads the score and the
    rounded-up timeout (1 s, never 0: that would mean "no timeout" to Go), and Go's forwarder moves
    the fractional score once due and its worker runs the task (Go checks every 5 s)."""
    q = unique_queue
    later = await client.enqueue(Task("s", b"later"), queue=q, process_in=1.5)
    quick = await client.enqueue(Task("p", b"quick"), queue=q, timeout=0.3)
    score = float(await client._broker.transport.call("ZSCORE", k(q, "scheduled"), later.id))
    assert score != int(score)  # the test needs a fractional score to prove anything

    got = await go_peer.inspect(redis_target, q, later.id, quick.id)
    assert got["tasks"][later.id]["state"] == "scheduled"
    assert got["tasks"][later.id]["next_process_at"] == int(score)  # Go reads whole seconds of it
    (pending,) = got["pending"]
    assert (pending["id"], pending["timeout_s"]) == (quick.id, 1)
    assert pending["headers"] == {"asynq-aio-timeout-ms": "300"}

    async with go_worker(go_peer, redis_target, tmp_path, [q]) as worker:

        async def both_ran() -> bool:
            return {r["id"] for r in worker.runs()} == {later.id, quick.id}

        await wait_until(both_ran, 15, what="the Go worker ran the scheduled and the quick task")
    ran = by_id(worker.runs())
    assert len(ran[later.id]) == 1 and len(ran[quick.id]) == 1


@pytest.mark.slow
async def test_a_go_scheduler_beside_two_asynq_aio_schedulers_adds_one_task_per_fire(
    go_peer: GoPeer, redis_target: RedisTarget, tmp_path: Path, unique_queue: str
) -> None:
    """The same entry (spec, type, payload, queue) in a Go scheduler and in two asynq-aio schedulers:
    Go does not take part in asynq-aio's per-fire claim, so each fire gives Go's task plus exactly
    one of ours (never one per asynq-aio scheduler); Go's entry and ours both show in ``cron ls``."""
    q = unique_queue
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    out = tmp_path / "go-scheduler.out"
    args = ["--spec", "@every 1s", "--type", "cron:both", "--queue", q, "--json", JSON_TEXT]
    with out.open("wb") as out_f:
        proc = subprocess.Popen(
            [str(go_peer.binary), "schedule", *target_args(redis_target), *args],
            stdout=out_f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        async def go_ready() -> bool:
            assert proc.poll() is None, out.read_text()
            return "ready" in out.read_text()

        await wait_until(go_ready, 30, what="the Go scheduler to start")
        go_entry = out.read_text().split()[1]
        ours = [Scheduler(opt), Scheduler(opt)]
        ids = {s.register("@every 1s", Task("cron:both", JSON_TEXT.encode()), queue=q) for s in ours}
        assert len(ids) == 1  # both asynq-aio schedulers derive the same entry ID
        async with ours[0].serve(), ours[1].serve():
            await anyio.sleep(4.5)
            async with Inspector(opt) as insp:
                entries = {e.id for e in await insp.scheduler_entries() if e.task_type == "cron:both"}
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert entries == {go_entry, *ids}, out.read_text()
    async with Inspector(opt) as insp:
        tasks = await insp.list_pending_tasks(q, size=1000)
    ours_by_fire = Counter(t.id.rsplit(":", 1)[1] for t in tasks if t.id.startswith(f"{next(iter(ids))}:"))
    go_tasks = [t for t in tasks if ":" not in t.id]
    assert len(ours_by_fire) >= 3 and set(ours_by_fire.values()) == {1}, ours_by_fire
    assert len(go_tasks) >= 3, [t.id for t in tasks]
    assert len(go_tasks) + len(ours_by_fire) == len(tasks)  # nothing else: no third copy of a fire
    assert all(t.type == "cron:both" and t.payload == JSON_TEXT.encode() for t in tasks)


async def test_a_sharded_queue_is_ordinary_queues_to_go_both_ways(
    go_peer: GoPeer, redis_target: RedisTarget, client: Client, unique_queue: str, tmp_path: Path
) -> None:
    """A ShardedQueue is N ordinary queues: a Go server given the shard names runs what asynq-aio
    spread over them, and an asynq-aio worker with Config.shards runs what Go enqueued to a shard
    by its name."""
    hot = ShardedQueue(unique_queue, 3)
    sent = [await client.enqueue(Task("json", {"n": i}), queue=hot) for i in range(12)]
    assert Counter(info.queue for info in sent) == dict.fromkeys(hot.names, 4)
    async with go_worker(go_peer, redis_target, tmp_path, list(hot.names)) as worker:

        async def all_ran() -> bool:
            return len(worker.runs()) >= 12

        await wait_until(all_ran, 20, what="12 sharded tasks run by Go")
        await worker.stop()
        ran = worker.runs()
    assert sorted(r["id"] for r in ran) == sorted(info.id for info in sent)  # each once
    assert {r["id"]: r["queue"] for r in ran} == {info.id: info.queue for info in sent}

    from_go = [one(await go_peer.enqueue(redis_target, "go-sharded", queue=name)) for name in hot.names]
    runs = PyRuns()
    config = py_config(unique_queue).with_(queues={unique_queue: 1}, shards={unique_queue: 3})
    async with py_server(redis_target, config, runs):

        async def go_tasks_ran() -> bool:
            return len(runs.runs) >= 3

        await wait_until(go_tasks_ran, 20, what="Go's three shard tasks run by asynq-aio")
    assert sorted((r["id"], r["queue"]) for r in runs.runs) == sorted((t["id"], t["queue"]) for t in from_go)
