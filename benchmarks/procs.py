"""Processes the benchmark runner starts: its own Redis servers and the driver subprocesses.

Every process started here is tracked and stopped by its own pid (never by name), so an aborted run
leaves nothing behind on a machine shared with others.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from asynq_aio._devcluster import DevCluster, find_free_port_base, find_redis_server
from benchmarks.common import rss_bytes
from benchmarks.envs import ROOT, driver_command

LOG_DIR = Path(tempfile.gettempdir()) / "asynq-aio-bench-logs"
BASELINE_SRC = ""  # set by the runner: where the baseline asynq_aio tree was exported


class DriverError(RuntimeError):
    pass


class Driver:
    """One driver subprocess (``benchmarks/drv_<system>.py``, or the Go binary for ``go``); lines of
    its stdout arrive on a queue."""

    def __init__(self, system: str, role: str, args: list[str], tag: str) -> None:
        LOG_DIR.mkdir(exist_ok=True)
        self.system = system
        self.err_path = LOG_DIR / f"{tag}.{system.replace('@', '-')}.{role}.{os.getpid()}.log"
        # BENCH_ASYNQ_SRC: a directory with another asynq_aio tree (e.g. `git archive` of an older
        # commit) to import instead of this checkout's, for before/after comparisons.
        # "asynq@base": asynq-aio as of the baseline tree that the runner exported (--baseline).
        system, _, variant = system.partition("@")
        src = BASELINE_SRC if variant else os.environ.get("BENCH_ASYNQ_SRC", "")
        path = os.pathsep.join(filter(None, [src, str(ROOT)]))
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)
        self._err = open(self.err_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            driver_command(system, role, args),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, kind: str, timeout: float) -> Any:
        """Wait for a ``kind`` line (``READY`` or ``RESULT {json}``); returns its JSON (or None)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DriverError(f"{self.system}: no {kind} within {timeout:.0f}s ({self.err_path})")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise DriverError(
                    f"{self.system}: exited ({self.proc.wait()}) before {kind}: {self.stderr_tail()}"
                )
            if line == kind:
                return None
            if line.startswith(kind + " "):
                return json.loads(line[len(kind) + 1 :])

    def stderr_tail(self, n: int = 3) -> str:
        self._err.flush()
        try:
            lines = self.err_path.read_text().strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def run_once(system: str, role: str, args: list[str], tag: str, timeout: float) -> Any:
    """Run a producer-style driver to completion and return its RESULT."""
    d = Driver(system, role, args, tag)
    try:
        return d.expect("RESULT", timeout)
    finally:
        d.stop()


class SingleRedis:
    """A private redis-server on a free port, no persistence (the shared test Redis is never used)."""

    def __init__(self) -> None:
        self.port = find_free_port_base(1, low=23000, high=25000)
        self.dir = Path(tempfile.mkdtemp(prefix="asynq-aio-bench-redis-"))
        self.proc = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def flush(self) -> None:
        self.client.flushall()

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterRedis:
    """A private 3-master Redis Cluster (no replicas: on a 2-core machine replicas only steal CPU)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="asynq-aio-bench-cluster-"))
        base = find_free_port_base(3, low=25000, high=27000)
        self.cluster = DevCluster(self.dir, ports=range(base, base + 3), replicas=0, appendonly=False)
        self.cluster.start()
        self.url = "cluster://" + ",".join(self.cluster.addrs)
        self.clients = [redis.Redis(port=p) for p in self.cluster.ports]

    def flush(self) -> None:
        for c in self.clients:
            c.flushall()

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        node = self.clients[0]
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))  # type: ignore[no-untyped-call]
        for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise RuntimeError(f"no master for slot {slot}")

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.cluster.stop(remove_data=True)
        shutil.rmtree(self.dir, ignore_errors=True)
