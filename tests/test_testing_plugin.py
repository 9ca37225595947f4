"""The pytest plugin in asynq_aio.testing, run the way a user runs it: pytester writes a user's test
module and conftest, runs pytest on them, and the outcomes (passed and deliberately failing tests)
are checked, together with the cleanup of the Redis processes the plugin started."""

from __future__ import annotations

import anyio
import pytest

from asynq_aio import App, Config, ServeMux, Task
from asynq_aio.testing import _pings

pytest_plugins = ["pytester"]

INI = """
[pytest]
filterwarnings = error
addopts = -p no:cacheprovider
"""

CONFTEST = """
import pytest

# Listing the plugin here as well as loading it with -p (or by its entry point) must not register
# it twice.
pytest_plugins = ["asynq_aio.testing"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
"""

CLUSTER_CONFTEST = (
    CONFTEST
    + """

@pytest.fixture(scope="session")
def asynq_redis(asynq_devcluster):
    return asynq_devcluster.opt
"""
)

USER_TESTS = """
from __future__ import annotations

import anyio
import pytest

from asynq_aio import Config, RevokeTask, ServeMux, SkipRetry, Task, current_task
from asynq_aio._connection import RedisConnOpt
from asynq_aio.testing import OutcomeStatus, WorkerFactory

pytestmark = pytest.mark.anyio

mux = ServeMux()
sent: list[str] = []


@mux.task("email:welcome")
async def welcome(task: Task) -> None:
    sent.append(task.json()["to"])


@mux.task("email:bounce")
async def bounce(task: Task) -> None:
    raise SkipRetry("mailbox does not exist")


@mux.task("email:flaky")
async def flaky(task: Task) -> None:
    if current_task().retry_count < 2:
        raise ConnectionError("smtp down")


@mux.task("email:spam")
async def spam(task: Task) -> None:
    raise RevokeTask("spam")


@mux.task("email:hang")
async def hang(task: Task) -> None:
    await anyio.sleep_forever()


def test_where(asynq_redis: RedisConnOpt, tmp_path_factory: pytest.TempPathFactory) -> None:
    # tell the outer test where Redis ran, so that it can check it was stopped
    (tmp_path_factory.getbasetemp() / "where.txt").write_text(asynq_redis.describe())


async def test_outcomes(asynq_worker: WorkerFactory) -> None:
    async with asynq_worker(mux) as runner:
        ok = await runner.enqueue(Task("email:welcome", {"to": "ada"}))
        bad = await runner.enqueue(Task("email:bounce"))
        retry = await runner.enqueue(Task("email:flaky"), max_retry=5)
        dropped = await runner.enqueue(Task("email:spam"))
        outcomes = await runner.drain()
    assert sent == ["ada"]
    assert {o.task_id: o.status for o in outcomes} == {
        ok.id: OutcomeStatus.SUCCEEDED,
        bad.id: OutcomeStatus.ARCHIVED,
        retry.id: OutcomeStatus.RETRY,
        dropped.id: OutcomeStatus.REVOKED,
    }
    assert runner.outcome(bad.id).error_text == "mailbox does not exist"
    assert runner.outcome(bad.id).info.state == "archived"
    assert isinstance(runner.outcome(retry.id).error, ConnectionError)
    assert runner.outcome(retry.id).info.retried == 1
    assert runner.outcome(ok.id).succeeded and not runner.outcome(ok.id).failed


async def test_retries_run_to_success(asynq_worker: WorkerFactory) -> None:
    async with asynq_worker(mux, retry_delay=0) as runner:
        await runner.enqueue(Task("email:flaky"), max_retry=5)
        outcomes = await runner.drain()
    assert [(o.retried, o.status) for o in outcomes] == [
        (0, OutcomeStatus.RETRY),
        (1, OutcomeStatus.RETRY),
        (2, OutcomeStatus.SUCCEEDED),
    ]


async def test_retries_used_up_archive(asynq_worker: WorkerFactory) -> None:
    async with asynq_worker(mux, retry_delay=0) as runner:
        await runner.enqueue(Task("email:flaky"), max_retry=1)
        outcomes = await runner.drain()
        assert await runner.drain() == []  # nothing new since the last drain
    assert [(o.retried, o.status, o.error_text) for o in outcomes] == [
        (0, OutcomeStatus.RETRY, "smtp down"),
        (1, OutcomeStatus.ARCHIVED, "smtp down"),
    ]


async def test_drain_waits_for_running_handlers(asynq_worker: WorkerFactory) -> None:
    # a short shutdown_timeout: the hung handler is cancelled (and its task requeued) at once
    async with asynq_worker(mux, config=Config(shutdown_timeout=0.1)) as runner:
        await runner.enqueue(Task("email:hang"))
        with pytest.raises(TimeoutError, match="unfinished"):
            await runner.drain(timeout=0.5)


async def test_deliberately_wrong(asynq_worker: WorkerFactory) -> None:
    async with asynq_worker(mux) as runner:
        await runner.enqueue(Task("email:bounce"))
        (outcome,) = await runner.drain()
    assert outcome.succeeded, f"EXPECTED FAILURE: {outcome.status} {outcome.error_text}"
"""


def _run(pytester: pytest.Pytester, conftest: str, *args: str) -> tuple[pytest.RunResult, str]:
    pytester.makeini(INI)
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_user=USER_TESTS)
    # hypothesis' plugin spends ~2.5 s at every session's end (measured with cProfile): not needed here
    plugins = ("-p", "asynq_aio.testing", "-p", "no:hypothesispytest")
    result = pytester.runpytest(*plugins, "--basetemp", str(pytester.path / "inner-tmp"), *args)
    where = (pytester.path / "inner-tmp" / "where.txt").read_text()
    return result, where


def _addr_pings(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    return _pings(host, int(port))


def test_plugin_runs_user_tests_on_a_throwaway_redis(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNQ_TEST_REDIS_URL", raising=False)
    result, where = _run(pytester, CONFTEST)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*EXPECTED FAILURE: archived mailbox does not exist*"])
    # the session's redis-server was started on a free port and is gone now
    assert where.startswith("redis://127.0.0.1:")
    addr = where.removeprefix("redis://").rsplit("/", 1)[0]
    assert not _addr_pings(addr), f"{addr} still answers after the session"


def test_plugin_uses_an_existing_redis_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, single_redis_url: str
) -> None:
    monkeypatch.setenv("ASYNQ_TEST_REDIS_URL", single_redis_url)
    result, where = _run(pytester, CONFTEST, "-k", "where or outcomes")
    result.assert_outcomes(passed=2)
    host_port = single_redis_url.removeprefix("redis://").rsplit("/", 1)[0]
    assert where == f"redis://{host_port}/15"


@pytest.mark.slow
def test_plugin_runs_user_tests_on_a_devcluster(pytester: pytest.Pytester) -> None:
    result, where = _run(
        pytester,
        CLUSTER_CONFTEST,
        "-k",
        "where or outcomes or run_to_success",
    )
    result.assert_outcomes(passed=3)
    assert where.startswith("cluster ")
    addrs = where.removeprefix("cluster ").split(",")
    assert len(addrs) == 6
    assert not any(_addr_pings(a) for a in addrs), "cluster nodes still answer after the session"


@pytest.mark.anyio
async def test_the_runner_takes_a_taskdef_with_its_defaults_and_keeps_results(
    single_redis_url: str, unique_queue: str
) -> None:
    """A TaskDef's task goes to its own queue (served because the mux's TaskDefs name it), keeps its
    defaults, and the handler's returned result is stored as by a real worker."""
    from pydantic import BaseModel

    from asynq_aio import ServeMux, TaskDef
    from asynq_aio.testing import OutcomeStatus, run_tasks

    class Job(BaseModel):
        n: int

    job = TaskDef("job:square", Job, queue=f"{unique_queue}_jobs", max_retry=2)
    stray = TaskDef("job:stray", Job, queue=f"{unique_queue}_nowhere")
    mux = ServeMux()

    @job.handler(mux)
    async def square(p: Job) -> int:
        return p.n * p.n

    async with run_tasks(single_redis_url, mux, queues=[unique_queue]) as runner:
        info = await runner.enqueue(job, Job(n=7))
        assert (info.queue, info.max_retry) == (f"{unique_queue}_jobs", 2)
        (outcome,) = await runner.drain()
        assert outcome.status is OutcomeStatus.SUCCEEDED
        assert await runner.client.wait_result(info, timeout=5) == b"49"
        with pytest.raises(ValueError, match="does not serve"):
            await runner.enqueue(stray, Job(n=1))
        with pytest.raises(KeyError, match="serves the queues"):
            runner.outcome("never-enqueued")


@pytest.mark.anyio
async def test_the_runner_runs_an_app_with_its_config(single_redis_url: str, unique_queue: str) -> None:
    """run_tasks(App): the App's queues and retry_delay_func are used, as the CLI worker uses them."""
    from asynq_aio.testing import OutcomeStatus, run_tasks

    attempts: list[int] = []
    mux = ServeMux()

    async def flaky(task: Task) -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    mux.handle_func("app:flaky", flaky)
    app = App(mux, config=Config(queues={unique_queue: 1}, retry_delay_func=lambda n, e, t: 0.1))
    async with run_tasks(single_redis_url, app) as runner:
        assert runner.server.config.queues == {unique_queue: 1}
        await runner.client.enqueue(Task("app:flaky"), queue=unique_queue, max_retry=3)
        # the retry may come within the first drain or after it: collect over both
        outcomes = await runner.drain(timeout=10)
        with anyio.fail_after(10):  # 0.1 s by the App's retry_delay_func, not Asynq's 15 s or more
            while len(attempts) < 2:
                await anyio.sleep(0.05)
        outcomes += await runner.drain(timeout=10)
    assert attempts == [0, 1] and len(outcomes) == 2
    assert outcomes[-1].status is OutcomeStatus.SUCCEEDED


@pytest.mark.anyio
async def test_the_runner_refuses_queue_patterns_with_a_clear_error(single_redis_url: str) -> None:
    """A Config's queues may be patterns (served by discovery); the runner sends to and drains named
    queues, so a pattern there is refused up front instead of being used as a queue name."""
    from asynq_aio.testing import run_tasks

    with pytest.raises(ValueError, match="named queues, not patterns"):
        async with run_tasks(single_redis_url, ServeMux(), queues=["tenant:*"]):
            pass
    with pytest.raises(ValueError, match=r"tenant:\*"):
        async with run_tasks(single_redis_url, App(ServeMux(), config=Config(queues={"tenant:*": 1}))):
            pass
