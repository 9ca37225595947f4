"""A FastAPI app that enqueues a task from a route and processes it in a worker inside its lifespan.

Run it (with uvicorn installed) against a local Redis or a cluster::

    ASYNQ_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.fastapi_app.app:app
    ASYNQ_REDIS_URL=redis-cluster://127.0.0.1:7000,127.0.0.1:7001 uvicorn examples.fastapi_app.app:app

    curl -X POST localhost:8000/signup -H 'content-type: application/json' \
         -d '{"user_id": 42, "email": "ada@example.com"}'
    curl localhost:8000/tasks/<task_id>
    curl -X DELETE localhost:8000/tasks/<task_id>
    curl -X POST localhost:8000/signup/wait -H 'content-type: application/json' \
         -d '{"user_id": 43, "email": "grace@example.com"}'
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from asynq_aio import (
    Config,
    FailedPreconditionError,
    RedisClusterClientOpt,
    RedisConnOpt,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    parse_redis_url,
)
from asynq_aio.contrib.fastapi import Asynq, AsynqClient, AsynqInspector
from examples.fastapi_app.tasks import WELCOME, WelcomeEmail, mux

DEFAULT_QUEUE = "emails"


class EnqueuedTask(BaseModel):
    task_id: str
    queue: str
    state: str


class TaskStatus(BaseModel):
    id: str
    type: str
    state: str
    retried: int
    last_error: str
    result: str | None


def redis_from_env() -> RedisConnOpt:
    """``ASYNQ_REDIS_URL`` (any URL asynq-aio parses) or ``ASYNQ_CLUSTER_ADDRS`` (h:p,h:p)."""
    addrs = os.environ.get("ASYNQ_CLUSTER_ADDRS")
    if addrs:
        return RedisClusterClientOpt(addrs=[a.strip() for a in addrs.split(",") if a.strip()])
    return parse_redis_url(os.environ.get("ASYNQ_REDIS_URL", "redis://127.0.0.1:6379/0"))


def create_app(
    redis: RedisConnOpt | None = None, *, queue: str = DEFAULT_QUEUE, run_worker: bool = True
) -> FastAPI:
    """Build the app. ``run_worker=False`` only enqueues (tasks then run in ``asynq-aio worker``)."""
    asynq = Asynq(
        redis or redis_from_env(),
        mux=mux,
        config=Config(concurrency=10, queues={queue: 1}, shutdown_timeout=3.0),
        run_worker=run_worker,
    )
    app = FastAPI(title="asynq-aio FastAPI example", lifespan=asynq.lifespan)

    @app.post("/signup", status_code=202)
    async def signup(body: WelcomeEmail, client: AsynqClient) -> EnqueuedTask:
        # The task is kept for an hour after it completes so that GET /tasks/{id} can show its result.
        info = await client.enqueue(Task(WELCOME, body), queue=queue, retention=3600)
        return EnqueuedTask(task_id=info.id, queue=info.queue, state=info.state)

    @app.post("/signup/wait")
    async def signup_and_wait(body: WelcomeEmail, client: AsynqClient) -> TaskStatus:
        """Enqueue, then wait (up to 10 s) for the handler's result: for work a request needs done."""
        info = await client.enqueue(Task(WELCOME, body), queue=queue)
        try:
            result = await client.wait_result(info, timeout=10)
        except TimeoutError:
            raise HTTPException(status_code=504, detail=f"task {info.id} did not finish in 10 s") from None
        except TaskFailedError as exc:
            raise HTTPException(status_code=502, detail=f"task {info.id} failed: {exc.last_error}") from None
        return TaskStatus(
            id=info.id,
            type=info.type,
            state="completed",
            retried=0,
            last_error="",
            result=result.decode() if result is not None else None,
        )

    @app.get("/tasks/{task_id}")
    async def task_status(task_id: str, inspector: AsynqInspector) -> TaskStatus:
        try:
            info = await inspector.find_task(task_id)  # by ID alone: whichever queue holds it
        except TaskNotFoundError:
            raise HTTPException(status_code=404, detail=f"no task {task_id}") from None
        return TaskStatus(
            id=info.id,
            type=info.type,
            state=info.state,
            retried=info.retried,
            last_error=info.last_err,
            result=info.result.decode() if info.result is not None else None,
        )

    @app.delete("/tasks/{task_id}")
    async def cancel_task(task_id: str, client: AsynqClient) -> dict[str, str]:
        """Stop a task: a running one is signalled, a waiting one deleted."""
        try:
            done = await client.cancel(task_id)
        except TaskNotFoundError:
            raise HTTPException(status_code=404, detail=f"no task {task_id}") from None
        except FailedPreconditionError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return {"task_id": task_id, "queue": done.queue, "was": done.state, "action": done.action}

    return app


app = create_app()
