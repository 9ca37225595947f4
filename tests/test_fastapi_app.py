"""The FastAPI example and asynq_aio.contrib.fastapi, driven through httpx with the app's real
lifespan (asgi-lifespan) against real Redis: a single node and the cluster."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from conftest import RedisTarget
from fastapi import FastAPI
from workerproc import conn_opt

from asynq_aio import App, Client, Config, Schedule, ServeMux, Task, parse_redis_url
from asynq_aio.contrib.fastapi import Asynq, AsynqClient
from examples.fastapi_app.app import create_app

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (and so its worker), and an HTTP client that talks to it in-process."""
    with anyio.fail_after(30):
        async with (
            LifespanManager(app, startup_timeout=15, shutdown_timeout=15) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://app") as http,
        ):
            yield http


async def poll_task(http: httpx.AsyncClient, task_id: str, state: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        resp = await http.get(f"/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body['state']} after {timeout}s"
        await anyio.sleep(0.05)


async def test_signup_enqueues_and_the_lifespan_worker_runs_the_handler(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    app = create_app(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs), queue=unique_queue)
    async with running(app) as http:
        resp = await http.post("/signup", json={"user_id": 42, "email": "ada@example.com"})
        assert resp.status_code == 202, resp.text
        enqueued = resp.json()
        assert enqueued["queue"] == unique_queue
        assert enqueued["state"] == "pending"

        done = await poll_task(http, enqueued["task_id"], "completed")
        # the result is what the handler wrote: proof that it ran, in the app's own worker
        assert done["result"] == "welcome email sent to ada@example.com"
        assert done["type"] == "email:welcome"
        assert (done["retried"], done["last_error"]) == (0, "")

        # a route that waits for the handler's returned result
        waited = await http.post("/signup/wait", json={"user_id": 43, "email": "grace@example.com"})
        assert waited.status_code == 200, waited.text
        assert waited.json()["result"] == "welcome email sent to grace@example.com"

        missing = await http.get("/tasks/no-such-task")
        assert missing.status_code == 404
        assert (await http.delete("/tasks/no-such-task")).status_code == 404
        finished = await http.delete(f"/tasks/{enqueued['task_id']}")  # completed: nothing to stop
        assert finished.status_code == 409, finished.text
        invalid = await http.post("/signup", json={"user_id": "x", "email": "not-an-email"})
        assert invalid.status_code == 422


async def test_enqueue_only_app_leaves_tasks_for_a_separate_worker(
    single_redis_url: str, unique_queue: str
) -> None:
    app = create_app(parse_redis_url(single_redis_url), queue=unique_queue, run_worker=False)
    async with running(app) as http:
        resp = await http.post("/signup", json={"user_id": 7, "email": "bob@example.com"})
        assert resp.status_code == 202
        task_id = resp.json()["task_id"]
        await anyio.sleep(0.3)  # a worker, had one run, would have taken it by now
        body = (await http.get(f"/tasks/{task_id}")).json()
        assert body["state"] == "pending"
        assert body["result"] is None


def _probe_app(asynq: Asynq) -> FastAPI:
    """An app with its own lifespan that composes Asynq's, and a route reporting the injected client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        async with asynq.lifespan(app) as state:
            yield {**state, "greeting": "hello"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/client")
    async def which_client(client: AsynqClient) -> dict[str, Any]:
        return {"id": id(client), "is_app_client": client is asynq.client}

    return app


async def test_one_shared_client_per_app_closed_at_shutdown(single_redis_url: str) -> None:
    asynq = Asynq(single_redis_url)
    assert not asynq.run_worker
    app = _probe_app(asynq)
    async with running(app) as http:
        assert asynq.running
        assert isinstance(asynq.client, Client)
        first = (await http.get("/client")).json()
        second = (await http.get("/client")).json()
        assert first == second
        assert first["is_app_client"] is True
        assert asynq.inspector is asynq.inspector  # created once, on first use
        with pytest.raises(RuntimeError, match="already running"):
            async with asynq.lifespan(app):
                pass
    assert not asynq.running
    with pytest.raises(RuntimeError, match="lifespan"):
        _ = asynq.client


async def test_dependency_without_lifespan_fails_loudly(single_redis_url: str) -> None:
    app = _probe_app(Asynq(single_redis_url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
        with pytest.raises(RuntimeError, match="lifespan"):
            await http.get("/client")


def test_worker_needs_a_mux() -> None:
    with pytest.raises(ValueError, match="needs a worker \\(or mux\\)"):
        Asynq("redis://127.0.0.1:6379/0", run_worker=True)
    with pytest.raises(ValueError, match="either worker=App"):
        Asynq("redis://127.0.0.1:6379/0", worker=App(ServeMux()), mux=ServeMux())


async def test_lifespan_runs_an_apps_handlers_and_schedule(single_redis_url: str, unique_queue: str) -> None:
    """``Asynq(worker=App(...))``: the App's config and schedule run in the lifespan, as they do
    under ``asynq-aio worker module:app --scheduler``."""
    ticked = anyio.Event()
    mux = ServeMux()

    async def tick(task: Task) -> None:
        ticked.set()

    mux.handle_func("lifespan:tick", tick)
    schedule = Schedule()
    schedule.add("@every 1s", Task("lifespan:tick"), queue=unique_queue)
    asynq = Asynq(
        single_redis_url, worker=App(mux, config=Config(queues={unique_queue: 1}), schedule=schedule)
    )
    async with running(_probe_app(asynq)):
        assert asynq.server is not None and asynq.server.config.queues == {unique_queue: 1}
        with anyio.fail_after(15):
            await ticked.wait()
    assert asynq.server is None


def test_asynq_aio_does_not_import_fastapi_and_contrib_names_the_extra() -> None:
    """fastapi is an optional extra: the package imports without it, and the contrib module says
    which extra to install when it is missing."""
    code = (
        "import sys\n"
        "import asynq_aio, asynq_aio.contrib, asynq_aio.testing, asynq_aio.logfmt\n"
        "assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules, 'fastapi imported'\n"
        "sys.modules['fastapi'] = None  # as if it were not installed\n"
        "try:\n"
        "    import asynq_aio.contrib.fastapi\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'asynq-aio[fastapi]'" in out.stdout


LIFESPAN_SCRIPT = """
import anyio
from fastapi import FastAPI
from asynq_aio import Config, ServeMux, parse_redis_url
from asynq_aio.contrib.fastapi import Asynq

mux = ServeMux()
asynq = Asynq(parse_redis_url({url!r}), mux=mux, config=Config(queues={{{queue!r}: 1}}))
app = FastAPI(lifespan=asynq.lifespan)

async def main() -> None:
    async with asynq.lifespan(app):
        pass

anyio.run(main)
"""


def test_the_embedded_worker_logs_like_uvicorn_when_nothing_else_configures_logging(
    single_redis_url: str, unique_queue: str, tmp_path: Path
) -> None:
    """uvicorn configures only its own loggers: without this, the worker's lines went to Python's
    last-resort handler (WARNING and up), so an embedded worker looked silent."""
    script = tmp_path / "app_logs.py"
    script.write_text(LIFESPAN_SCRIPT.format(url=single_redis_url, queue=unique_queue))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "INFO:     asynq-aio worker started in the app: " in done.stderr, done.stderr
    assert f"queues {unique_queue}=1, concurrency " in done.stderr
