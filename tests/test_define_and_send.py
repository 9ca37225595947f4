"""The decorator-first style: ``mux.define`` returns the handler's TaskDef and ``send`` enqueues with
the default client, which the testing runner and the FastAPI lifespan set (real Redis)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from asynq_aio import NoDefaultClientError, ServeMux, Task, TaskDef, use_client
from asynq_aio.testing import OutcomeStatus, run_tasks

pytestmark = pytest.mark.anyio


class Greeting(BaseModel):
    name: str


def app(queue: str) -> tuple[ServeMux, TaskDef[Greeting]]:
    mux = ServeMux()

    @mux.define("greet", queue=queue, max_retry=2)
    async def greet(p: Greeting) -> str:
        return f"hello {p.name}"

    return mux, greet


async def test_define_returns_a_typed_taskdef_registered_on_the_mux(unique_queue: str) -> None:
    mux, greet = app(unique_queue)
    assert isinstance(greet, TaskDef) and greet.model is Greeting
    assert (greet.type, greet.queue, greet.max_retry) == ("greet", unique_queue, 2)
    assert mux.expected_queues() == {"greet": unique_queue}
    assert await mux(Task("greet", {"name": "ada"})) == "hello ada"
    with pytest.raises(TypeError, match="annotated with a pydantic model"):

        @mux.define("raw")  # type: ignore[type-var]  # mypy rejects it too
        async def raw(task: Task) -> None: ...


async def test_send_without_a_default_client_says_how_to_get_one(unique_queue: str) -> None:
    _, greet = app(unique_queue)
    with pytest.raises(NoDefaultClientError, match="use_client"):
        await greet.send(Greeting(name="x"))


async def test_send_uses_the_runners_client_and_the_definitions_defaults(
    single_redis_url: str, unique_queue: str
) -> None:
    mux, greet = app(f"{unique_queue}_greet")
    async with run_tasks(single_redis_url, mux, queues=[unique_queue]) as runner:
        info = await greet.send(Greeting(name="grace"))
        assert (info.queue, info.max_retry) == (f"{unique_queue}_greet", 2)
        (outcome,) = await runner.drain()
        assert outcome.status is OutcomeStatus.SUCCEEDED
        assert await runner.client.wait_result(info, timeout=5) == b"hello grace"
        # an explicit client still wins, and use_client nests
        with use_client(runner.client):
            again = await greet.send(Greeting(name="x"), max_retry=0)
        assert again.max_retry == 0
    with pytest.raises(NoDefaultClientError):  # the runner's client is no longer the default
        await greet.send(Greeting(name="late"))
