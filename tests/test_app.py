"""App (mux + config + schedule as one object) and Schedule, embedded and through the CLI worker,
on a real single Redis and a real cluster; --scheduler and --reload of the worker command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import RedisTarget, RunningCluster
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner
from workerproc import conn_opt

from asynq_aio import (
    App,
    Client,
    Config,
    Inspector,
    InvalidQueueName,
    Schedule,
    ServeMux,
    Task,
    TaskDef,
    parse_redis_url,
)
from asynq_aio._scheduler import CronEntry, Scheduler
from asynq_aio.cli.app import app as cli


class Cleanup(BaseModel):
    older_than_days: int


cleanup = TaskDef("app:cleanup", Cleanup, queue="maintenance", max_retry=2, timeout=60)


# -- Schedule --------------------------------------------------------------------------------------


def test_schedule_checks_specs_and_options_when_added() -> None:
    schedule = Schedule()
    with pytest.raises(ValueError, match="hour field '25'"):
        schedule.add("0 25 * * *", Task("x"))
    with pytest.raises(InvalidQueueName):
        schedule.add("@daily", Task("x"), queue="bad queue name{")
    with pytest.raises(TypeError, match="needs its payload"):
        schedule.add("@daily", cleanup)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="only with a TaskDef"):
        schedule.add("@daily", Task("x"), Cleanup(older_than_days=1))  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule(location="Mars/Olympus")
    assert len(schedule) == 0  # nothing half-added


def test_schedule_keeps_taskdef_defaults_unless_overridden() -> None:
    schedule = Schedule()
    kept = schedule.add("@daily", cleanup, Cleanup(older_than_days=7))
    assert kept.task.type == "app:cleanup" and kept.task.payload == b'{"older_than_days":7}'
    assert (kept.options.queue, kept.options.max_retry, kept.options.timeout) == ("maintenance", 2, 60)
    changed = schedule.add("@hourly", cleanup, Cleanup(older_than_days=1), queue="urgent", max_retry=0)
    assert (changed.options.queue, changed.options.max_retry, changed.options.timeout) == ("urgent", 0, 60)
    again = schedule.add("@daily", cleanup, Cleanup(older_than_days=7))
    assert again is kept and len(schedule) == 2 and list(schedule) == [kept, changed]


def test_schedule_location_applies_to_its_specs() -> None:
    berlin = Schedule(location="Europe/Berlin")
    cfg = berlin.add("0 8 * * *", Task("report"))
    utc_entry = CronEntry.build(cfg.spec, cfg.task, cfg.options)
    # the same spec in another zone is another entry (another ID, other fire instants)
    sched = Scheduler(parse_redis_url("redis://127.0.0.1:1"))
    (berlin_id,) = sched.add_schedule(berlin)
    assert berlin_id != utc_entry.id
    fire = sched.next_fire(berlin_id)
    assert fire is not None and fire.hour == 8 and str(fire.tzinfo) == "Europe/Berlin"


# -- App -------------------------------------------------------------------------------------------


def test_app_serves_the_queues_its_taskdefs_name_unless_given_a_config() -> None:
    mux = ServeMux()

    @cleanup.handler(mux)
    async def handle(p: Cleanup) -> None: ...

    assert App(mux).config.queues == {"default": 1, "maintenance": 1}
    assert App(mux, config=Config(queues={"only": 3})).config.queues == {"only": 3}
    narrowed = App(mux).with_config(concurrency=3)
    assert narrowed.config.concurrency == 3 and narrowed.config.queues == {"default": 1, "maintenance": 1}


def test_app_refuses_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match="ServeMux or an async handler, got the class Cleanup"):
        App(Cleanup)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Schedule"):
        App(ServeMux(), schedule=[])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="weight must be a positive integer"):
        App(ServeMux()).with_config(queues={"q": 0})  # changes are validated, unlike Config.with_


@pytest.mark.anyio
async def test_app_serve_runs_handlers_and_its_schedule(redis_target: RedisTarget, unique_queue: str) -> None:
    """Embedded: one ``async with app.serve(redis)`` runs the handlers and enqueues the schedule's
    tasks, whose handler then runs and stores its result."""
    ran: list[int] = []
    done = anyio.Event()
    tick = TaskDef("app:tick", Cleanup, queue=unique_queue)
    mux = ServeMux()

    @tick.handler(mux)
    async def handle(p: Cleanup) -> str:
        ran.append(p.older_than_days)
        done.set()
        return "ticked"

    schedule = Schedule()
    schedule.add("@every 1s", tick, Cleanup(older_than_days=3))
    application = App(mux, schedule=schedule)
    assert application.config.queues == {"default": 1, unique_queue: 1}
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with application.serve(opt):
        assert application.server is not None and application.server.config is application.config
        with anyio.fail_after(15):
            await done.wait()
    assert application.server is None
    assert ran[0] == 3
    async with Inspector(opt) as insp:
        infos = await insp.list_completed_tasks(unique_queue)
    assert infos and all(i.result == b"ticked" for i in infos)


@pytest.mark.anyio
async def test_app_serve_without_scheduler_enqueues_nothing_periodic(
    single_redis_url: str, unique_queue: str
) -> None:
    schedule = Schedule()
    schedule.add("@every 1s", Task("app:never"), queue=unique_queue)
    application = App(ServeMux(), config=Config(queues={unique_queue: 1}), schedule=schedule)
    opt = parse_redis_url(single_redis_url)
    async with application.serve(opt, scheduler=False):
        await anyio.sleep(2.2)
    async with Inspector(opt) as insp:
        assert unique_queue not in await insp.queues()


# -- the CLI worker --------------------------------------------------------------------------------

APP_MODULE = """
from pydantic import BaseModel
from asynq_aio import App, Config, Schedule, ServeMux, TaskDef, current_task

class Tick(BaseModel):
    n: int

tick = TaskDef("cliapp:tick", Tick, queue="{queue}", max_retry=3)
mux = ServeMux()

@tick.handler(mux)
async def handle(p: Tick) -> None:
    retried = current_task().retry_count
    print(f"RAN retried={retried}", flush=True)
    if retried == 0:
        raise RuntimeError("first attempt fails")

schedule = Schedule()
schedule.add("@every 1s", tick, Tick(n=1))
# retried after 0.2 s: the default backoff (at least 15 s) would outlast the test
config = Config(queues={"{queue}": 1}, retry_delay_func=lambda n, e, t: 0.2)
app = App(mux, config=config, schedule=schedule)
"""


class Output:
    """A process's output lines, read by a thread so the test can wait for a line without blocking."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    async def wait_for(self, needle: str, timeout: float = 20, times: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.count(needle) < times:
            assert time.monotonic() < deadline, f"no {needle!r} ({times}x) in {timeout} s:\n{self.text}"
            assert self.proc.poll() is None or self._thread.is_alive(), f"exited:\n{self.text}"
            await anyio.sleep(0.1)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.close()
        return code

    def close(self) -> None:
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def started() -> Iterator[list[Output]]:
    procs: list[Output] = []
    yield procs
    for out in procs:
        if out.proc.poll() is None:
            out.proc.kill()
            out.proc.wait()
        out.close()


def _spawn(args: list[str], cwd: Path, env: dict[str, str], started: list[Output]) -> Output:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynq_aio.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = Output(proc)
    started.append(out)
    return out


@pytest.mark.anyio
async def test_cli_worker_runs_an_app_with_its_config_and_schedule(
    redis_cluster: RunningCluster, unique_queue: str, tmp_path: Path, started: list[Output]
) -> None:
    """``asynq-aio worker mod:app --scheduler`` on a cluster: the App's queues and retry_delay_func
    (not expressible as a flag) are used, and its schedule enqueues the task the worker then runs."""
    addrs = ",".join(redis_cluster.addrs)
    (tmp_path / "schedapp.py").write_text(APP_MODULE.replace("{queue}", unique_queue))
    out = _spawn(["worker", "schedapp:app", "--scheduler"], tmp_path, {"ASYNQ_CLUSTER_ADDRS": addrs}, started)
    await out.wait_for("RAN retried=0")
    await out.wait_for("RAN retried=1", timeout=5)  # 0.2 s later, by the App's retry_delay_func
    assert out.stop() == 0, out.text
    assert f"queues {{'{unique_queue}': 1}}" in out.text
    assert "scheduling 1 periodic tasks" in out.text


@pytest.mark.anyio
async def test_cli_worker_without_scheduler_says_the_schedule_is_not_run(
    single_redis_url: str, unique_queue: str, tmp_path: Path, started: list[Output]
) -> None:
    (tmp_path / "schedapp2.py").write_text(APP_MODULE.replace("{queue}", unique_queue))
    out = _spawn(
        ["worker", "schedapp2:app", "--concurrency", "3"],
        tmp_path,
        {"ASYNQ_REDIS_URL": single_redis_url},
        started,
    )
    await out.wait_for("started; waiting for SIGINT/SIGTERM")
    await anyio.sleep(1.5)  # an @every 1s entry would have fired by now
    assert out.stop() == 0, out.text
    assert "RAN" not in out.text
    assert "has 1 periodic tasks, not scheduled by this worker (add --scheduler" in out.text
    assert "concurrency 3" in out.text  # a flag overrides the App's config


def test_cli_worker_scheduler_flag_needs_a_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plainmux.py").write_text("from asynq_aio import ServeMux\nmux = ServeMux()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["worker", "plainmux:mux", "--scheduler"])
    assert result.exit_code == 1
    assert "--scheduler: plainmux:mux has no periodic tasks" in result.output


@pytest.mark.anyio
async def test_cli_scheduler_runs_an_apps_schedule(
    single_redis_url: str, unique_queue: str, tmp_path: Path, started: list[Output]
) -> None:
    """``asynq-aio scheduler mod:app`` runs the schedule of the same App object the worker runs."""
    (tmp_path / "schedapp3.py").write_text(APP_MODULE.replace("{queue}", unique_queue))
    out = _spawn(["scheduler", "schedapp3:app"], tmp_path, {"ASYNQ_REDIS_URL": single_redis_url}, started)
    async with Inspector(parse_redis_url(single_redis_url)) as insp:
        deadline = time.monotonic() + 15
        while unique_queue not in await insp.queues() or not [
            t for t in await insp.list_pending_tasks(unique_queue) if t.type == "cliapp:tick"
        ]:
            assert time.monotonic() < deadline, out.text
            await anyio.sleep(0.2)
    assert out.stop() == 0, out.text


RELOAD_MODULE = """
from asynq_aio import ServeMux, Task

mux = ServeMux()

async def handle(task: Task) -> None:
    print("HANDLED-BY {version}", task.payload.decode(), flush=True)

mux.handle_func("reload:", handle)
"""


def _rewrite(path: Path, text: str) -> None:
    """Write and move the modification time forward, so a coarse file-system clock cannot hide it."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text)
    stamp = max(time.time(), before + 2)
    os.utime(path, (stamp, stamp))


@pytest.mark.anyio
async def test_cli_worker_reload_restarts_on_change_and_survives_a_broken_edit(
    single_redis_url: str, unique_queue: str, tmp_path: Path, started: list[Output]
) -> None:
    module = tmp_path / "reloadapp.py"
    _rewrite(module, RELOAD_MODULE.replace("{version}", "V1"))
    out = _spawn(
        ["worker", "reloadapp:mux", "-q", unique_queue, "--reload"],
        tmp_path,
        {"ASYNQ_REDIS_URL": single_redis_url},
        started,
    )
    async with Client(parse_redis_url(single_redis_url)) as client:
        await out.wait_for("started; waiting for SIGINT/SIGTERM")
        await client.enqueue(Task("reload:a", b"one"), queue=unique_queue)
        await out.wait_for("HANDLED-BY V1 one")

        _rewrite(module, "this is not python (\n")  # a broken save: the child fails, the supervisor stays
        await out.wait_for("syntax error at")
        await out.wait_for("waiting for a change to restart it")

        _rewrite(module, RELOAD_MODULE.replace("{version}", "V2"))
        await out.wait_for("started; waiting for SIGINT/SIGTERM", times=2)
        await client.enqueue(Task("reload:b", b"two"), queue=unique_queue)
        await out.wait_for("HANDLED-BY V2 two")
    assert out.stop() == 0, out.text
    assert out.count("changed; restarting the worker") == 2
    assert "HANDLED-BY V1 two" not in out.text


def test_worker_help_lists_scheduler_and_reload() -> None:
    result = CliRunner().invoke(cli, ["worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--scheduler" in result.output and "--reload" in result.output
