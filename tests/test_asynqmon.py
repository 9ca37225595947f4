"""asynqmon v0.7.2, Go Asynq's web UI, reads and acts on what asynq-aio writes (single Redis and cluster).

asynqmon is a Go program built on Go Asynq's Inspector; teams that move workers to asynq-aio keep
using it. tests/go/asynqmon serves its real HTTP handler (built from the module proxy next to
asynq v0.26.0), and these tests drive its JSON API, the one its React UI calls, with httpx:

* after asynq-aio's Client and Server put tasks of one queue in every state (pending, active,
  scheduled, retry, archived, completed, aggregating), asynqmon's queue list shows the right count
  per state, its per-state task lists show our IDs, types, payloads and state details, its task
  endpoint reports each task's state, and its servers page shows our running asynq-aio Server with
  the task its worker is blocked on;
* what asynqmon's buttons do lands where asynq-aio looks: run a scheduled task, archive a pending
  one, delete an archived one, run all retry and all aggregating tasks, delete all archived tasks,
  pause and resume the queue (our Inspector reports it, our Server stops fetching), and cancel the
  running task (our handler is cancelled, the task is retried without using up a retry).

Everything asynq-aio reports is read back with asynq-aio's own Inspector, and everything asynqmon
reports is compared with the IDs and values asynq-aio returned when it enqueued.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import RedisTarget
from golive import build_go_program, target_args
from workerproc import conn_opt, wait_until

from asynq_aio import Client, Config, Inspector, Server, Task, TaskInfo, TaskState, current_task
from asynq_aio._errors import TaskNotFoundError

pytestmark = pytest.mark.anyio

BINARY = bytes(range(256))  # not UTF-8: asynqmon's default formatter shows a placeholder
NON_PRINTABLE = "non-printable bytes"  # asynqmon's DefaultPayloadFormatter for such payloads
RETRY_DELAY = 3600.0  # a failed (or cancelled) task waits in retry for the whole test
ERROR = "python says no"
FAILURE_FIELDS = ("id", "type", "payload", "retried", "max_retry", "error_message")


@pytest.fixture(scope="session")
def asynqmon_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build tests/go/asynqmon once per session: skip without Go, fail when CI requires Go."""
    return build_go_program(tmp_path_factory.mktemp("go-asynqmon"), "asynqmon")


@asynccontextmanager
async def asynqmon_process(binary: Path, target: RedisTarget, workdir: Path) -> AsyncIterator[str]:
    """Serve asynqmon on a free port for ``target``; yield the base URL of its JSON API."""
    out, err = workdir / "asynqmon.out", workdir / "asynqmon.err"
    with out.open("wb") as out_f, err.open("wb") as err_f:
        proc = subprocess.Popen(
            [str(binary), *target_args(target), "--port", "0", "--root", "/monitor"],
            stdout=out_f,
            stderr=err_f,
            stdin=subprocess.DEVNULL,
        )

    def output() -> str:
        return f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"

    try:
        deadline = time.monotonic() + 30
        while not (ready := [ln for ln in out.read_text().split("\n")[:-1] if ln.startswith("ready ")]):
            if proc.poll() is not None:
                raise AssertionError(f"asynqmon exited with {proc.returncode}\n{output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"asynqmon not ready after 30s\n{output()}")
            await anyio.sleep(0.02)
        yield ready[0].split()[1] + "/api"
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            while proc.poll() is None:
                await anyio.sleep(0.05)
        assert proc.returncode == 0, f"asynqmon exited with {proc.returncode}\n{output()}"
        assert "stopped" in out.read_text().split(), output()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
async def mon(
    asynqmon_binary: Path, redis_target: RedisTarget, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the JSON API of an asynqmon that watches the current ``redis_target``."""
    async with (
        asynqmon_process(asynqmon_binary, redis_target, tmp_path) as api,
        httpx.AsyncClient(base_url=api, timeout=30.0) as http,
    ):
        yield http


async def call(http: httpx.AsyncClient, method: str, path: str, *, status: int = 200) -> Any:
    """One API call that must answer ``status``; its JSON body (None for 204 No Content)."""
    r = await http.request(method, path)
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


async def get_all_queues(http: httpx.AsyncClient, queue: str) -> dict[str, dict[str, Any]]:
    """GET /queues until it lists ``queue``. asynqmon reads the queue set, then each queue: a queue
    that another test session deletes in between (DB 15 is shared) makes that one call fail."""
    last = ""
    deadline = time.monotonic() + 20
    while True:
        r = await http.get("/queues")
        if r.status_code == 200:
            rows = {row["queue"]: row for row in r.json()["queues"]}
            if queue in rows:
                return rows
        last = f"{r.status_code} {r.text[:2000]}"
        if time.monotonic() > deadline:
            raise AssertionError(f"GET /queues never listed {queue}; last answer: {last}")
        await anyio.sleep(0.2)


def by_id(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in tasks}


def rfc3339(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Scene:
    """One queue with asynq-aio tasks in every state, and the asynq-aio Server that runs it."""

    queue: str
    server: Server
    inspector: Inspector
    pending: list[TaskInfo]  # [printable payload, binary payload]
    active: TaskInfo  # its handler blocks until cancelled
    scheduled: list[TaskInfo]  # in 1 h and 2 h
    retry: TaskInfo
    archived: TaskInfo
    completed: TaskInfo
    aggregating: list[TaskInfo]  # group "g1"
    created: float  # unix time the scheduled tasks were enqueued
    started: list[str] = field(default_factory=list)  # tasks whose handler started
    cancelled: list[str] = field(default_factory=list)  # blocked tasks whose handler was cancelled

    def every(self) -> dict[str, str]:
        """Task ID -> the state Go names it by."""
        states = {t.id: "pending" for t in self.pending} | {t.id: "scheduled" for t in self.scheduled}
        states |= {t.id: "aggregating" for t in self.aggregating}
        states |= {self.active.id: "active", self.retry.id: "retry", self.archived.id: "archived"}
        return states | {self.completed.id: "completed"}


@asynccontextmanager
async def scene(target: RedisTarget, queue: str) -> AsyncIterator[Scene]:
    """Fill ``queue`` with asynq-aio's Client and Server: retry, archived and completed come from real
    handler runs; then the Server's one worker blocks on a task, and the rest is enqueued behind it."""
    opt = conn_opt(target.kind, target.url, target.addrs)
    started: list[str] = []
    cancelled: list[str] = []

    async def handle(task: Task) -> None:
        ctx = current_task()
        started.append(ctx.id)
        if task.type == "fail":
            raise RuntimeError(ERROR)
        if task.type == "result":
            await ctx.write_result(b"py-result:" + task.payload)
        if task.type == "block":
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(ctx.id)
                raise

    config = Config(
        queues={queue: 1},
        concurrency=1,  # once the blocking task runs, nothing else is fetched
        forward_interval=0.2,
        heartbeat_interval=0.5,
        retry_delay_func=lambda n, e, t: RETRY_DELAY,
        shutdown_timeout=1.0,
    )
    server = Server(opt, config)
    async with Client(opt) as client, Inspector(opt) as insp:
        retry_t = await client.enqueue(Task("fail", b"r"), queue=queue, max_retry=3)
        archived_t = await client.enqueue(Task("fail", b"a"), queue=queue, max_retry=0)
        completed_t = await client.enqueue(Task("result", b"c"), queue=queue, retention=3600)
        with anyio.fail_after(60):
            async with server.serve(handle):

                async def settled() -> bool:
                    info = await insp.get_queue_info(queue, memory=False)
                    return (info.pending, info.retry, info.archived, info.completed) == (0, 1, 1, 1)

                await wait_until(settled, 20, what="one task each in retry, archived and completed")
                active_t = await client.enqueue(Task("block", b"b"), queue=queue)

                async def blocked() -> bool:
                    return active_t.id in started

                await wait_until(blocked, 20, what="the asynq-aio worker to start the blocking task")
                pending = [
                    await client.enqueue(Task("p", b'{"n":1}'), queue=queue),
                    await client.enqueue(Task("p", BINARY), queue=queue),
                ]
                created = time.time()
                scheduled = [
                    await client.enqueue(Task("s", f"sched-{i}".encode()), queue=queue, process_in=3600 * i)
                    for i in (1, 2)
                ]
                aggregating = [
                    await client.enqueue(Task("agg", f"g-{i}".encode()), queue=queue, group="g1")
                    for i in (1, 2)
                ]
                assert [t.state for t in (*pending, *scheduled, *aggregating)] == [
                    TaskState.PENDING,
                    TaskState.PENDING,
                    TaskState.SCHEDULED,
                    TaskState.SCHEDULED,
                    TaskState.AGGREGATING,
                    TaskState.AGGREGATING,
                ]
                yield Scene(
                    queue=queue,
                    server=server,
                    inspector=insp,
                    pending=pending,
                    active=active_t,
                    scheduled=scheduled,
                    retry=retry_t,
                    archived=archived_t,
                    completed=completed_t,
                    aggregating=aggregating,
                    created=created,
                    started=started,
                    cancelled=cancelled,
                )


STATE_COUNTS = {
    "pending": 2,
    "active": 1,
    "scheduled": 2,
    "retry": 1,
    "archived": 1,
    "completed": 1,
    "aggregating": 2,
    "size": 10,  # Go counts every state, completed and aggregating included
    "groups": 1,
    "paused": False,
}


async def test_asynqmon_shows_asynq_aio_tasks_in_every_state_and_the_running_server(
    mon: httpx.AsyncClient, redis_target: RedisTarget, unique_queue: str
) -> None:
    async with scene(redis_target, unique_queue) as s:
        q = s.queue
        # 1. The queue list (the dashboard) and the queue page, with their counts per state.
        row = (await get_all_queues(mon, q))[q]
        assert {k: row[k] for k in STATE_COUNTS} == STATE_COUNTS
        assert row["memory_usage_bytes"] > 0
        page = await call(mon, "GET", f"/queues/{q}")
        assert {k: page["current"][k] for k in STATE_COUNTS} == STATE_COUNTS
        # Summed over the days shown, so a run across midnight UTC counts the same.
        history = page["history"]
        assert [sum(day[k] for day in history) for k in ("processed", "succeeded", "failed")] == [3, 1, 2]

        # 2. The servers page lists our running Server, and its one worker is on the blocked task.
        ours: dict[str, Any] = {}

        async def listed() -> bool:
            servers = (await call(mon, "GET", "/servers"))["servers"]
            ours.update({srv["id"]: srv for srv in servers if srv["id"] == s.server.server_id})
            return bool(ours) and bool(ours[s.server.server_id]["active_workers"])

        await wait_until(listed, 20, what="asynqmon to list our server with its active worker")
        srv = ours[s.server.server_id]
        assert (srv["pid"], srv["concurrency"], srv["queue_priorities"], srv["status"]) == (
            os.getpid(),
            1,
            {q: 1},
            "active",
        )
        (worker,) = srv["active_workers"]
        assert (worker["task_id"], worker["queue"], worker["task_type"], worker["task_payload"]) == (
            s.active.id,
            q,
            "block",
            "b",
        )
        assert abs(rfc3339(worker["start_time"]) - time.time()) < 120

        # 3. Each state's task list: our IDs, types and payloads, and the state's own details.
        pending = by_id((await call(mon, "GET", f"/queues/{q}/pending_tasks"))["tasks"])
        assert {tid: (t["type"], t["payload"], t["queue"]) for tid, t in pending.items()} == {
            s.pending[0].id: ("p", '{"n":1}', q),
            s.pending[1].id: ("p", NON_PRINTABLE, q),
        }
        assert {t["max_retry"] for t in pending.values()} == {25}

        (active,) = (await call(mon, "GET", f"/queues/{q}/active_tasks"))["tasks"]
        assert (active["id"], active["type"], active["payload"], active["is_orphaned"]) == (
            s.active.id,
            "block",
            "b",
            False,
        )
        # asynqmon matched the task with our worker's record: its start time and deadline are real.
        assert abs(rfc3339(active["start_time"]) - time.time()) < 120, active
        assert rfc3339(active["deadline"]) > time.time(), active

        scheduled = by_id((await call(mon, "GET", f"/queues/{q}/scheduled_tasks"))["tasks"])
        assert {tid: (t["type"], t["payload"]) for tid, t in scheduled.items()} == {
            s.scheduled[0].id: ("s", "sched-1"),
            s.scheduled[1].id: ("s", "sched-2"),
        }
        for i, t in enumerate(s.scheduled, start=1):
            assert abs(rfc3339(scheduled[t.id]["next_process_at"]) - (s.created + 3600 * i)) < 60

        (retry,) = (await call(mon, "GET", f"/queues/{q}/retry_tasks"))["tasks"]
        assert {k: retry[k] for k in FAILURE_FIELDS} == {
            "id": s.retry.id,
            "type": "fail",
            "payload": "r",
            "retried": 1,
            "max_retry": 3,
            "error_message": ERROR,
        }
        assert abs(rfc3339(retry["next_process_at"]) - (time.time() + RETRY_DELAY)) < 120

        (archived,) = (await call(mon, "GET", f"/queues/{q}/archived_tasks"))["tasks"]
        assert {k: archived[k] for k in FAILURE_FIELDS} == {
            "id": s.archived.id,
            "type": "fail",
            "payload": "a",
            "retried": 0,
            "max_retry": 0,
            "error_message": ERROR,
        }
        assert abs(rfc3339(archived["last_failed_at"]) - time.time()) < 120

        (completed,) = (await call(mon, "GET", f"/queues/{q}/completed_tasks"))["tasks"]
        assert (completed["id"], completed["type"], completed["payload"], completed["result"]) == (
            s.completed.id,
            "result",
            "c",
            "py-result:c",
        )
        assert 3000 < completed["ttl_seconds"] <= 3600, completed
        assert abs(rfc3339(completed["completed_at"]) - time.time()) < 120

        groups = await call(mon, "GET", f"/queues/{q}/groups")
        assert groups["groups"] == [{"group": "g1", "size": 2}]
        aggregating = by_id((await call(mon, "GET", f"/queues/{q}/groups/g1/aggregating_tasks"))["tasks"])
        assert {tid: (t["type"], t["payload"], t["group"]) for tid, t in aggregating.items()} == {
            s.aggregating[0].id: ("agg", "g-1", "g1"),
            s.aggregating[1].id: ("agg", "g-2", "g1"),
        }

        # The task page (GET by ID) of every task names its state.
        got = {tid: (await call(mon, "GET", f"/queues/{q}/tasks/{tid}"))["state"] for tid in s.every()}
        assert got == s.every()


async def test_asynqmon_actions_act_on_asynq_aio_tasks(
    mon: httpx.AsyncClient, redis_target: RedisTarget, unique_queue: str
) -> None:
    async with scene(redis_target, unique_queue) as s:
        q, insp = s.queue, s.inspector

        async def state(task: TaskInfo) -> TaskState:
            return (await insp.get_task_info(q, task.id)).state

        async def gone(task: TaskInfo) -> bool:
            try:
                await insp.get_task_info(q, task.id)
            except TaskNotFoundError:
                return True
            return False

        # Run one scheduled task now: our Inspector sees it pending, the other stays scheduled.
        await call(mon, "POST", f"/queues/{q}/scheduled_tasks/{s.scheduled[0].id}:run", status=204)
        assert [await state(t) for t in s.scheduled] == [TaskState.PENDING, TaskState.SCHEDULED]

        # Archive a pending task.
        await call(mon, "POST", f"/queues/{q}/pending_tasks/{s.pending[0].id}:archive", status=204)
        assert [await state(t) for t in s.pending] == [TaskState.ARCHIVED, TaskState.PENDING]

        # Delete the task our Server archived.
        await call(mon, "DELETE", f"/queues/{q}/archived_tasks/{s.archived.id}", status=204)
        assert await gone(s.archived)

        # Batch actions: run all retry tasks, run the whole group, delete all archived tasks.
        assert await call(mon, "POST", f"/queues/{q}/retry_tasks:run_all") == {"scheduled": 1}
        assert await state(s.retry) == TaskState.PENDING
        ran = await call(mon, "POST", f"/queues/{q}/groups/g1/aggregating_tasks:run_all")
        assert ran == {"scheduled": 2}
        assert [await state(t) for t in s.aggregating] == [TaskState.PENDING, TaskState.PENDING]
        assert await insp.groups(q) == []
        assert await call(mon, "DELETE", f"/queues/{q}/archived_tasks:delete_all") == {"deleted": 1}
        assert await gone(s.pending[0])

        # Pause: our Inspector reports it, and asynqmon reads it back.
        await call(mon, "POST", f"/queues/{q}:pause", status=204)
        assert (await insp.get_queue_info(q, memory=False)).paused is True
        assert (await call(mon, "GET", f"/queues/{q}"))["current"]["paused"] is True

        # Cancel the running task: our handler is cancelled, and the task waits in retry without
        # using up a retry (a cancel is no failure). The queue is paused, so the worker it frees
        # takes nothing else.
        assert s.cancelled == []
        await call(mon, "POST", f"/queues/{q}/active_tasks/{s.active.id}:cancel", status=204)

        async def cancelled() -> bool:
            return s.cancelled == [s.active.id] and await state(s.active) == TaskState.RETRY

        await wait_until(cancelled, 20, what="our handler to be cancelled and its task to go to retry")
        blocked = await insp.get_task_info(q, s.active.id)
        assert (blocked.retried, blocked.max_retry) == (0, 25)
        assert "cancel" in blocked.last_err.lower(), blocked.last_err
        await anyio.sleep(0.5)  # a worker that ignored the pause would have fetched by now
        info = await insp.get_queue_info(q, memory=False)
        counts = [info.pending, info.active, info.scheduled, info.retry, info.archived, info.completed]
        assert (counts, info.aggregating) == ([5, 0, 1, 1, 0, 1], 0)
        assert s.started[-1] == s.active.id  # the blocking task was the last one any handler began

        # Resume.
        await call(mon, "POST", f"/queues/{q}:resume", status=204)
        assert (await insp.get_queue_info(q, memory=False)).paused is False
        assert (await call(mon, "GET", f"/queues/{q}"))["current"]["paused"] is False
