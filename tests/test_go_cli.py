"""Each side's admin tools over the other's data (single and cluster).

Go's own CLI (github.com/hibiken/asynq/tools/asynq) cannot be built here: the module proxy serves no
version of github.com/hibiken/asynq/tools (404 on @v/list and @latest, 403 on @master). The Go
checks therefore run the Inspector calls that CLI is made of, through tests/go/peer: GetQueueInfo
and the List*Tasks calls (`queue inspect`, `task ls`), Queues (`queue ls`), Servers (`server ls`)
and CancelProcessing (`task cancel`). The other way round, asynq-aio's CLI reads what Go wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from golive import GoPeer, build_peer, go_worker
from typer.testing import CliRunner
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import Client, Config, Server, Task, current_task
from asynq_aio.cli.app import app

pytestmark = pytest.mark.anyio

runner = CliRunner()
STATES = ("pending", "active", "scheduled", "retry", "archived", "completed")


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> GoPeer:
    return build_peer(tmp_path_factory.mktemp("go-peer"))


def k(queue: str, suffix: str) -> str:
    return f"asynq:{{{queue}}}:{suffix}"


def cli_env(target: RedisTarget) -> dict[str, str | None]:
    if target.kind == "single":
        assert target.url is not None
        return {"ASYNQ_REDIS_URL": target.url, "ASYNQ_CLUSTER_ADDRS": None}
    assert target.addrs is not None
    return {"ASYNQ_CLUSTER_ADDRS": ",".join(target.addrs), "ASYNQ_REDIS_URL": None}


async def cli_json(target: RedisTarget, *args: str) -> Any:
    env = cli_env(target)
    result = await anyio.to_thread.run_sync(lambda: runner.invoke(app, [*args, "--json"], env=env))
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
    return json.loads(result.output)


class Handler:
    """An asynq-aio handler that holds "block" tasks until cancelled and records what it saw."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, task: Task) -> None:
        ctx = current_task()
        self.started.append(ctx.id)
        if task.type == "block":
            try:
                await anyio.sleep(60)
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(ctx.id)
                raise


@asynccontextmanager
async def py_server(target: RedisTarget, queue: str, handler: Handler) -> AsyncIterator[Server]:
    config = Config(
        queues={queue: 1},
        concurrency=4,
        forward_interval=0.2,
        retry_delay_func=lambda n, e, t: 3600.0,
        shutdown_timeout=1.0,
    )
    server = Server(conn_opt(target.kind, target.url, target.addrs), config)
    async with server.serve(handler):
        yield server


async def test_go_inspector_lists_asynq_aio_queues_servers_and_active_workers(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, client: Client, unique_queue: str
) -> None:
    """`queue ls`, `server ls` and `queue inspect` of Go's CLI, over a running asynq-aio server."""
    q = unique_queue
    handler = Handler()
    blocked = [await client.enqueue(Task("block", {"i": i}), queue=q, max_retry=0) for i in range(2)]
    waiting = await client.enqueue(Task("later", b"x"), queue=q, process_in=3600)
    with anyio.fail_after(30):
        async with py_server(redis_target, q, handler) as server:

            async def running() -> bool:
                return len(handler.started) == 2

            await wait_until(running, 10, what="both block tasks running")
            # the server's heartbeat writes its ServerInfo/WorkerInfo right away and then every few s
            got: dict[str, Any] = {}

            async def go_sees_workers() -> bool:
                nonlocal got
                got = await go_peer.inspect(redis_target, q)
                mine = [s for s in got["servers"] if s["id"] == server.server_id]
                return bool(mine) and len(mine[0]["active_workers"]) == 2

            await wait_until(go_sees_workers, 10, what="Go's Inspector.Servers to list our 2 workers")
            for t in blocked:
                await go_peer.cancel(redis_target, t.id)
            await wait_until(lambda: _true_if(len(handler.cancelled) == 2), 10, what="cancelled")

    assert q in got["queues"]
    (srv,) = [s for s in got["servers"] if s["id"] == server.server_id]
    assert (srv["queues"], srv["concurrency"], srv["status"]) == ({q: 1}, 4, "active")
    assert abs(srv["started"] - time.time()) < 60
    workers = {w["task_id"]: w for w in srv["active_workers"]}
    assert set(workers) == {t.id for t in blocked}
    for t in blocked:
        w = workers[t.id]
        assert (w["task_type"], w["queue"], bytes.fromhex(w["payload_hex"])) == ("block", q, t.payload)
    info = got["info"]
    assert (info["active"], info["pending"], info["scheduled"], info["size"]) == (2, 0, 1, 3)
    assert {t["id"] for t in got["active"]} == {t.id for t in blocked}
    assert [t["id"] for t in got["scheduled"]] == [waiting.id]


async def _true_if(value: bool) -> bool:
    return value


async def test_go_cancel_stops_a_running_asynq_aio_handler(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, client: Client, unique_queue: str
) -> None:
    """`asynq task cancel <id>`: Go publishes the ID on asynq:cancel; our handler is cancelled and
    the task goes to retry with the error recorded. Unlike a Go server (whose default IsFailure
    counts context.Canceled), asynq-aio by default uses up no retry for it: count_cancel_as_failure
    is False (docs/configuration.md)."""
    q = unique_queue
    handler = Handler()
    info = await client.enqueue(Task("block", b"cancel-me"), queue=q, max_retry=3)
    with anyio.fail_after(30):
        async with py_server(redis_target, q, handler):

            async def running() -> bool:
                return handler.started == [info.id]

            await wait_until(running, 10, what="the block task running")
            await go_peer.cancel(redis_target, info.id)

            async def retried() -> bool:
                return await raw.cmd("ZSCORE", k(q, "retry"), info.id) is not None

            await wait_until(retried, 10, what="the cancelled task in retry")
    assert handler.cancelled == [info.id]
    got = await go_peer.inspect(redis_target, q, info.id)
    task = got["tasks"][info.id]
    assert (task["state"], task["retried"], task["max_retry"]) == ("retry", 0, 3)
    assert "cancel" in task["last_err"], task
    assert got["info"]["active"] == 0


async def test_asynq_aio_cli_reads_go_tasks_in_every_state(
    go_peer: GoPeer, redis_target: RedisTarget, raw: RawRedis, unique_queue: str, tmp_path: Path
) -> None:
    """Tasks Go's client wrote and Go's server moved: `asynq-aio task ls` and `queue inspect`."""
    q = unique_queue
    # retry, archived and completed come from a Go worker run, the rest from Go's client alone
    retry_t = (await go_peer.enqueue(redis_target, "fail", payload=b"r", queue=q, max_retry=3))[0]
    archived_t = (await go_peer.enqueue(redis_target, "fail", payload=b"a", queue=q, max_retry=0))[0]
    completed_t = (await go_peer.enqueue(redis_target, "result", payload=b"c", queue=q, retention=3600))[0]
    async with go_worker(go_peer, redis_target, tmp_path, [q], retry_delay=3600) as worker:

        async def settled() -> bool:
            counts = [await raw.cmd("ZCARD", k(q, s)) for s in ("retry", "archived", "completed")]
            return counts == [1, 1, 1]

        await wait_until(settled, 15, what="one Go task each in retry, archived and completed")
        await worker.stop()
    pending = await go_peer.enqueue(
        redis_target, "p", json_text='{"i":{i}}', queue=q, count=2, headers={"trace": "abc"}
    )
    scheduled = await go_peer.enqueue(
        redis_target, "s", json_text='{"i":{i}}', queue=q, count=2, process_in=3600
    )

    expected = {
        "pending": {t["id"] for t in pending},
        "active": set(),
        "scheduled": {t["id"] for t in scheduled},
        "retry": {retry_t["id"]},
        "archived": {archived_t["id"]},
        "completed": {completed_t["id"]},
    }
    listed: dict[str, dict[str, Any]] = {}
    for state in STATES:
        got = await cli_json(redis_target, "task", "ls", "--queue", q, "--state", state)
        assert {t["id"] for t in got} == expected[state], state
        assert {t["state"] for t in got} <= {state}
        listed |= {t["id"]: t for t in got}

    r = listed[retry_t["id"]]
    assert (r["retried"], r["max_retry"], r["last_err"]) == (1, 3, "intentional failure")
    a = listed[archived_t["id"]]
    assert (a["retried"], a["max_retry"], a["last_err"]) == (0, 0, "intentional failure")
    c = listed[completed_t["id"]]
    assert c["result"] == "go-result:c"
    p0 = next(t for t in pending if t["payload_hex"] == b'{"i":0}'.hex())
    assert listed[p0["id"]]["payload"] == '{"i":0}'

    info = await cli_json(redis_target, "queue", "inspect", q)
    assert {s: info[s] for s in STATES} == {s: len(ids) for s, ids in expected.items()}
    assert info["size"] == 7
    assert (info["processed_total"], info["failed_total"]) == (3, 2)
