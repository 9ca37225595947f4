"""The CLI against real Redis: queue ls (--cluster), the worker command, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import typer
from conftest import RunningCluster
from typer.testing import CliRunner, Result

from asynq_aio import Client, RedisClusterClientOpt, Task, parse_redis_url
from asynq_aio._inspector import Inspector
from asynq_aio.cli.app import app
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags

runner = CliRunner()

TUTORIAL_SLOTS = {"notifications": 16340, "webhooks": 4418, "images": 9450}


def test_queue_slots_match_the_tutorial() -> None:
    for queue, slot in TUTORIAL_SLOTS.items():
        assert Inspector.queue_slot(queue) == slot


@pytest.mark.anyio
async def test_queue_ls_cluster_prints_slot_and_nodes(redis_cluster: RunningCluster) -> None:
    opt = RedisClusterClientOpt(addrs=redis_cluster.addrs)
    async with Client(opt) as client:
        for q in TUTORIAL_SLOTS:
            await client.enqueue(Task("cli:probe", b""), queue=q)
    env = {"ASYNQ_CLUSTER_ADDRS": ",".join(redis_cluster.addrs)}
    result = await anyio.to_thread.run_sync(
        lambda: runner.invoke(app, ["queue", "ls", "--cluster", "--json"], env=env)
    )
    assert result.exit_code == 0, result.output
    rows = {r["queue"]: r for r in json.loads(result.output)}
    statuses = {s.port: s for s in redis_cluster.cluster.status()}
    for q, slot in TUTORIAL_SLOTS.items():
        row = rows[q]
        assert row["slot"] == slot
        nodes = row["nodes"]
        assert nodes[0]["role"] == "master" and len(nodes) == 2
        for n in nodes:
            port = int(n["addr"].rsplit(":", 1)[1])
            st = statuses[port]
            assert n["id"] == st.node_id  # real node IDs and host:port, not memory addresses
            assert any(lo <= slot <= hi for lo, hi in (statuses[port].slots or ())) or n["role"] == "replica"
    table = await anyio.to_thread.run_sync(lambda: runner.invoke(app, ["queue", "ls", "--cluster"], env=env))
    assert table.exit_code == 0
    assert "Cluster KeySlot" in table.output and "16340" in table.output


CONNECTION_FLAGS = {
    "--redis-url": "ASYNQ_REDIS_URL",
    "--cluster-addrs": "ASYNQ_CLUSTER_ADDRS",
    "--username": "ASYNQ_REDIS_USERNAME",
    "--password": "ASYNQ_REDIS_PASSWORD",
}
NO_CONNECTION_ENV: dict[str, str | None] = dict.fromkeys(CONNECTION_FLAGS.values())


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "ls"],
        ["task", "runall"],
        ["cron", "history"],
        ["stats"],
        ["worker"],
        ["scheduler"],
        ["metrics"],
    ],
)
def test_help_lists_each_connection_flag_once(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag, envvar in CONNECTION_FLAGS.items():
        assert len(re.findall(rf"(?<![\w-]){flag}(?![\w-])", result.output)) == 1, (flag, result.output)
        assert result.output.count(envvar) == 1, (envvar, result.output)


@pytest.mark.anyio
async def test_connection_flags_after_the_subcommand_and_from_env(
    redis_cluster: RunningCluster, single_redis_url: str, unique_queue: str
) -> None:
    async with Client(parse_redis_url(single_redis_url)) as client:
        await client.enqueue(Task("cli:flags", b""), queue=unique_queue)

    async def run(*args: str, **env: str) -> Result:
        return await anyio.to_thread.run_sync(
            lambda: runner.invoke(app, list(args), env={**NO_CONNECTION_ENV, **env})
        )

    # a flag after the subcommand beats its environment variable
    result = await run(
        "queue", "ls", "--json", "--redis-url", single_redis_url, ASYNQ_REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert result.exit_code == 0, result.output
    assert unique_queue in json.loads(result.output)
    result = await run(
        "task", "ls", "-q", unique_queue, "-s", "pending", "--json", ASYNQ_REDIS_URL=single_redis_url
    )
    assert result.exit_code == 0, result.output
    assert [t["type"] for t in json.loads(result.output)] == ["cli:flags"]
    # --cluster works on a cluster connection only, so this one came from --cluster-addrs
    addrs = ",".join(redis_cluster.addrs)
    result = await run("queue", "ls", "--cluster", "--json", "--cluster-addrs", addrs)
    assert result.exit_code == 0, result.output
    # a user Redis does not know is refused, whether given as flags or as environment variables
    user = "asynq-aio-cli-no-such-user"
    result = await run(
        "group", "ls", unique_queue, "--redis-url", single_redis_url, "--username", user, "--password", "x"
    )
    assert result.exit_code == 1 and result.output.startswith("error: "), result.output
    result = await run(
        "stats", ASYNQ_REDIS_URL=single_redis_url, ASYNQ_REDIS_USERNAME=user, ASYNQ_REDIS_PASSWORD="x"
    )
    assert result.exit_code == 1 and result.output.startswith("error: "), result.output
    assert (await run("stats", ASYNQ_REDIS_URL=single_redis_url)).exit_code == 0


@pytest.mark.parametrize("outer_clean_errors", [True, False])
def test_connection_flags_compose_with_clean_errors(outer_clean_errors: bool) -> None:
    seen: list[ConnectionFlags] = []

    def command(conn: ConnectionFlags, name: str) -> None:
        seen.append(conn)
        if name == "bad":
            raise ValueError("bad name")

    cmd = (
        clean_errors(connection_flags(command))
        if outer_clean_errors
        else connection_flags(clean_errors(command))
    )
    one = typer.Typer()
    one.command()(cmd)
    result = runner.invoke(
        one,
        ["x", "--cluster-addrs", "a:1,b:2", "--password", "p"],
        env={**NO_CONNECTION_ENV, "ASYNQ_REDIS_USERNAME": "u"},
    )
    assert result.exit_code == 0, result.output
    assert seen == [ConnectionFlags(None, "a:1,b:2", "u", "p")]
    result = runner.invoke(one, ["bad"], env=NO_CONNECTION_ENV)
    assert (result.exit_code, result.output) == (1, "error: bad name\n")
    assert seen[-1] == ConnectionFlags()


def test_unreachable_redis_is_one_line_error() -> None:
    result = runner.invoke(app, ["queue", "ls", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "Traceback" not in result.output


def test_worker_rejects_bad_app_spec() -> None:
    result = runner.invoke(app, ["worker", "no_such_module_xyz:mux"])
    assert result.exit_code == 1
    assert "cannot import 'no_such_module_xyz'" in result.output
    result = runner.invoke(app, ["worker", "nocolon"])
    assert result.exit_code == 1 and "MODULE:ATTRIBUTE" in result.output


def test_worker_rejects_bad_queue_name() -> None:
    result = runner.invoke(app, ["worker", "asynq_aio:ServeMux", "--queue", "bad{q}=1"])
    assert result.exit_code == 1
    assert "invalid queue name" in result.output


WORKER_APP = """
import logging
from asynq_aio import ServeMux, Task
mux = ServeMux()

async def handle(task: Task) -> None:
    logging.getLogger("cliapp").info("HANDLED %s %s", task.type, task.payload.decode())

mux.handle_func("cli:", handle)
"""


@pytest.mark.anyio
async def test_worker_command_processes_and_stops_on_sigterm(
    redis_cluster: RunningCluster, unique_queue: str, tmp_path: Path
) -> None:
    (tmp_path / "cliapp.py").write_text(WORKER_APP)
    env = dict(os.environ, ASYNQ_CLUSTER_ADDRS=",".join(redis_cluster.addrs), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asynq_aio.cli",
            "worker",
            "cliapp:mux",
            "--queue",
            f"{unique_queue}=1",
            "--concurrency",
            "4",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with Client(RedisClusterClientOpt(addrs=redis_cluster.addrs)) as client:
            info = await client.enqueue(Task("cli:hello", {"n": 1}), queue=unique_queue)
            qk = client._broker.queue_keys(unique_queue)
            deadline = time.monotonic() + 20
            while await client._broker.transport.call("EXISTS", qk.task(info.id)):
                assert time.monotonic() < deadline, "task not processed within 20 s"
                await anyio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert 'HANDLED cli:hello {"n":1}' in text
    assert "received SIGTERM" in text
    # the command owns its process: it freezes the start-up objects (server/gc_freeze.py)
    assert "gc_freeze off" not in text


TYPED_APP = """
from pydantic import BaseModel
from asynq_aio import ServeMux, TaskDef

class Resize(BaseModel):
    url: str

resize = TaskDef("images:resize", Resize, queue="{queue}")
mux = ServeMux()

@resize.handler(mux)
async def handle(p: Resize) -> str:
    print("RESIZED", p.url, flush=True)
    return "ok"
"""


@pytest.mark.anyio
async def test_worker_without_queues_serves_the_queues_its_taskdefs_name(
    redis_cluster: RunningCluster, unique_queue: str, tmp_path: Path
) -> None:
    """No --queue: the worker serves "default" plus the queues the mux's TaskDefs name, instead of
    leaving a TaskDef's tasks pending in a queue nobody serves."""
    (tmp_path / "typedapp.py").write_text(TYPED_APP.replace("{queue}", unique_queue))
    env = dict(os.environ, ASYNQ_CLUSTER_ADDRS=",".join(redis_cluster.addrs), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asynq_aio.cli", "worker", "typedapp:mux"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with Client(RedisClusterClientOpt(addrs=redis_cluster.addrs)) as client:
            info = await client.enqueue(Task("images:resize", {"url": "u"}), queue=unique_queue)
            assert await client.wait_result(info, timeout=20) == b"ok"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "RESIZED u" in text
    assert f"'{unique_queue}': 1" in text  # the start line names the queues it serves


@pytest.mark.anyio
async def test_a_server_warns_about_a_taskdef_queue_it_does_not_serve(
    single_redis_url: str, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pydantic import BaseModel

    from asynq_aio import Config, ServeMux, Server, TaskDef, parse_redis_url

    class P(BaseModel):
        n: int

    td = TaskDef("warned:task", P, queue=f"{unique_queue}_elsewhere")
    mux = ServeMux()

    @td.handler(mux)
    async def handle(p: P) -> None: ...

    with caplog.at_level("WARNING", logger="asynq_aio.server"):
        async with Server(parse_redis_url(single_redis_url), Config(queues={unique_queue: 1})).serve(mux):
            pass
    assert any(
        "'warned:task'" in r.getMessage() and "does not serve" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"asynq-aio {version('asynq-aio')} (storage format of Go Asynq v0.26)\n"


def test_the_worker_command_freezes_the_gc_unless_the_app_says_not_to(tmp_path: Path) -> None:
    """--help-free check of the config the command builds: gc_freeze on by default, an App's own
    Config(gc_freeze=False) kept (the line it logs says so before connecting anywhere)."""
    (tmp_path / "nofreeze.py").write_text(
        "from asynq_aio import App, Config, ServeMux\napp = App(ServeMux(), config=Config(gc_freeze=False))\n"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # port 1 refuses at once: the command logs its start line, then fails to reach Redis
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asynq_aio.cli",
            "worker",
            "nofreeze:app",
            "--redis-url",
            "redis://127.0.0.1:1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "gc_freeze off" in out.stdout + out.stderr, out.stdout + out.stderr
