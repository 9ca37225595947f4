"""The CLI against real Redis: queue ls (--cluster), the worker command, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from conftest import RunningCluster
from typer.testing import CliRunner

from asynq_aio import Client, RedisClusterClientOpt, Task
from asynq_aio.cli.app import app
from asynq_aio.inspector import Inspector

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
            qk = client.broker.queue_keys(unique_queue)
            deadline = time.monotonic() + 20
            while await client.broker.transport.call("EXISTS", qk.task(info.id)):
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
