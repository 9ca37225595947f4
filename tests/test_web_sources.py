"""The dashboard on the deployments test_web.py does not cover: a Redis behind Sentinel, and a fleet
of Go Asynq servers and producers (what a real Go Asynq v0.26 wrote, shown as asynqmon shows it)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import httpx
import pytest
from conftest import RedisTarget
from golive import GoPeer, build_peer, go_worker
from test_connections import sentinel  # noqa: F401  (the fixture: a real master and sentinel)
from workerproc import conn_opt, wait_until

from asynq_aio import Client, Inspector, RedisSentinelOpt, Task
from asynq_aio.web import create_app

pytestmark = pytest.mark.anyio

BASE = "http://dash"


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture(scope="module")
def go_peer(tmp_path_factory: pytest.TempPathFactory) -> GoPeer:
    return build_peer(tmp_path_factory.mktemp("go-peer-web"))


async def test_the_dashboard_reads_a_redis_behind_sentinel(
    sentinel: tuple[str, int],  # noqa: F811
    unique_queue: str,
) -> None:
    host, port = sentinel
    opt = RedisSentinelOpt(master_name="mymaster", sentinel_addrs=[f"{host}:{port}"])
    async with Client(opt) as client:
        info = await client.enqueue(Task("t:via-sentinel", {"n": 1}), queue=unique_queue)
    app = create_app(opt)  # the dashboard opens its own Inspector through the sentinel
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http,
    ):
        home = await http.get("/")
        assert home.status_code == 200 and f"/queue?q={unique_queue}" in home.text
        page = await http.get("/queue", params={"q": unique_queue, "state": "pending"})
        assert page.status_code == 200 and info.id in page.text
        task = await http.get("/task", params={"q": unique_queue, "id": info.id})
        assert task.status_code == 200 and "t:via-sentinel" in text(task.text)


@pytest.fixture
async def insp(redis_target: RedisTarget) -> AsyncIterator[Inspector]:
    async with Inspector(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as i:
        yield i


async def test_the_dashboard_shows_a_go_fleet(
    go_peer: GoPeer, redis_target: RedisTarget, insp: Inspector, unique_queue: str, tmp_path: Path
) -> None:
    """Tasks a Go producer enqueued (pending, scheduled) and a Go server at work: the queue, its
    tasks with their JSON payload, and the Go server with its running task are on the pages."""
    q, busy = unique_queue, f"{unique_queue}-busy"
    (pending,) = await go_peer.enqueue(redis_target, "go:json", json_text='{"to":123,"from":456}', queue=q)
    (later,) = await go_peer.enqueue(redis_target, "go:later", json_text='{"n":1}', queue=q, process_in=3600)
    (blocked,) = await go_peer.enqueue(redis_target, "block", queue=busy)
    async with go_worker(go_peer, redis_target, tmp_path, [busy], name="go-web") as worker:

        async def reported() -> bool:  # Go writes its running tasks with its heartbeat
            return any(busy in s.queues and s.active_workers for s in await insp.servers())

        await wait_until(reported, 20, what="the Go server reporting its running task")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(insp)), base_url=BASE
        ) as http:
            home = text((await http.get("/")).text)
            assert q in home and busy in home
            pend = await http.get("/queue", params={"q": q, "state": "pending"})
            assert pending["id"] in pend.text and "go:json" in pend.text
            sched = await http.get("/queue", params={"q": q, "state": "scheduled"})
            assert later["id"] in sched.text
            detail = await http.get("/task", params={"q": q, "id": pending["id"]})
            assert detail.status_code == 200
            # pretty-printed JSON, as the Go producer wrote it
            assert json.dumps({"to": 123, "from": 456}, indent=2) in unescape(detail.text)
            servers = text((await http.get("/servers")).text)
            go_servers = [s for s in await insp.servers() if busy in s.queues]
            assert len(go_servers) == 1
            go_server = go_servers[0]
            assert f"{go_server.host}:{go_server.pid}" in servers and blocked["id"] in servers
        assert worker.proc.poll() is None
