"""The local cluster tooling, against real redis-server processes (about 6 s on 2 cores)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import RunningCluster
from redis.cluster import RedisCluster
from typer.testing import CliRunner

from asynq_aio._devcluster import (
    CLUSTER_SLOTS,
    DevCluster,
    RedisServerNotFound,
    find_free_port_base,
    find_redis_server,
)
from asynq_aio.cli.app import app


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_fixture_cluster_has_three_masters_three_replicas_and_all_slots(
    redis_cluster: RunningCluster,
) -> None:
    nodes = redis_cluster.cluster.status()

    assert [n.cluster_state for n in nodes] == ["ok"] * 6
    masters = [n for n in nodes if n.role == "master"]
    replicas = [n for n in nodes if n.role == "replica"]
    assert len(masters) == 3
    assert len(replicas) == 3
    covered = sorted(slot for m in masters for start, end in m.slots for slot in range(start, end + 1))
    assert covered == list(range(CLUSTER_SLOTS))
    master_ids = sorted(m.node_id for m in masters if m.node_id)
    assert sorted(r.master_id for r in replicas if r.master_id) == master_ids
    assert all(n.port < 7000 or n.port > 7005 for n in nodes)


def test_fixture_cluster_serves_a_cluster_client(redis_cluster: RunningCluster) -> None:
    host, port = redis_cluster.addrs[0].rsplit(":", 1)
    client = RedisCluster(host=host, port=int(port), decode_responses=True)
    try:
        for key in ("a", "b", "c", "{asynq}:x"):
            client.set(key, key)
            assert client.get(key) == key
            client.delete(key)
    finally:
        client.close()


def test_cli_up_status_down_purge(tmp_path: Path) -> None:
    runner = CliRunner()
    base = find_free_port_base(6)
    cluster_dir = tmp_path / "dc"
    up_args = ["dev", "cluster", "up", "--dir", str(cluster_dir), "--port-base", str(base), "--no-appendonly"]
    try:
        result = runner.invoke(app, up_args)
        assert result.exit_code == 0, result.output
        addrs = ",".join(f"127.0.0.1:{p}" for p in range(base, base + 6))
        assert result.stdout.strip().splitlines()[-1] == f"ASYNQ_CLUSTER_ADDRS={addrs}"
        pids = [int((cluster_dir / str(p) / "redis.pid").read_text()) for p in range(base, base + 6)]

        again = runner.invoke(app, up_args)  # idempotent: same processes, still ok
        assert again.exit_code == 0, again.output
        assert [int((cluster_dir / str(p) / "redis.pid").read_text()) for p in range(base, base + 6)] == pids

        status = runner.invoke(
            app, ["dev", "cluster", "status", "--dir", str(cluster_dir)], env={"COLUMNS": "200"}
        )
        assert status.exit_code == 0, status.output
        assert status.stdout.count("master") == 3
        assert status.stdout.count("replica") == 3
        assert str(base + 5) in status.stdout

        # The chaos helpers, on this throwaway cluster rather than the shared session one.
        cluster = DevCluster.from_dir(cluster_dir)
        cluster.kill_node(base + 5, signal.SIGKILL)
        assert not cluster.is_running()
        cluster.restart_node(base + 5)
        cluster.wait_healthy(timeout=30)
        assert cluster.is_running()
        pids[5] = int((cluster_dir / str(base + 5) / "redis.pid").read_text())
    finally:
        down = runner.invoke(app, ["dev", "cluster", "down", "--dir", str(cluster_dir), "--purge"])
    assert down.exit_code == 0, down.output
    assert all(_gone(pid) for pid in pids)
    assert not cluster_dir.exists()


def test_find_redis_server_explains_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(RedisServerNotFound, match="apt-get install redis-server"):
        find_redis_server()


def test_cli_up_without_redis_server_prints_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    result = CliRunner().invoke(app, ["dev", "cluster", "up", "--dir", str(tmp_path / "dc")])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: redis-server not found")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
