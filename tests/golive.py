"""Run a real Go Asynq v0.26.0 next to asynq-aio: the peer program in ``tests/go`` and its processes.

The fixtures in ``tests/fixtures/asynq-go-0.26`` pin the storage format to what Go once wrote; these
helpers let the tests check the live behaviour instead, with a Go client, worker and inspector built
from the module proxy (``tests/go/go.mod`` + ``go.sum``) on the same Redis the test uses.

Without ``go`` on PATH the tests are skipped, since most contributors have no Go toolchain; CI sets
``ASYNQ_AIO_REQUIRE_GO=1`` so that a missing toolchain fails the build instead of hiding the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest
from conftest import RedisTarget

__all__ = ["GO_DIR", "REQUIRE_GO_ENV", "GoPeer", "GoWorker", "build_go_program", "build_peer"]

GO_DIR = Path(__file__).resolve().parent / "go"
REQUIRE_GO_ENV = "ASYNQ_AIO_REQUIRE_GO"
SKIP_REASON = "Go toolchain not found: the live Go interop tests need `go` on PATH (they run in CI)"
BUILD_TIMEOUT = 600.0  # a cold module cache downloads asynq and go-redis first


def build_go_program(out_dir: Path, program: str) -> Path:
    """Build ``tests/go/<program>`` into ``out_dir`` (the caller is a session fixture) and return the
    binary; skip without Go, or fail when Go is required."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get(REQUIRE_GO_ENV) == "1":
            pytest.fail(
                f"{REQUIRE_GO_ENV}=1 but `go` is not on PATH: install Go to run the live interop tests"
            )
        pytest.skip(SKIP_REASON)
    binary = out_dir / program
    # -buildvcs=false: the checkout may belong to another user or have no git, which only the VCS
    # stamp cares about. The default -mod=readonly makes a go.sum that misses a module fail loudly.
    cmd = [go, "build", "-buildvcs=false", "-o", str(binary), f"./{program}"]
    try:
        done = subprocess.run(cmd, cwd=GO_DIR, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(cmd)}` in {GO_DIR} took more than {BUILD_TIMEOUT:.0f}s")
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` in {GO_DIR} failed:\n{done.stdout}{done.stderr}")
    return binary


def build_peer(out_dir: Path) -> GoPeer:
    """The peer program (Go client, worker, inspector, scheduler), built once per session."""
    return GoPeer(build_go_program(out_dir, "peer"))


def target_args(target: RedisTarget) -> list[str]:
    """The peer's connection flags for a test's Redis: the same database the test's clients use."""
    if target.kind == "single":
        assert target.url is not None
        url = urlparse(target.url)
        return ["--redis", f"{url.hostname}:{url.port}", "--db", url.path.lstrip("/") or "0"]
    assert target.addrs is not None
    return ["--cluster", ",".join(target.addrs)]


def _go_duration(seconds: float) -> str:
    return f"{seconds}s"


class GoPeer:
    """The built peer binary; every call runs one short-lived process against a RedisTarget."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    async def run(self, target: RedisTarget, subcommand: str, *args: str, timeout: float = 60.0) -> str:
        """Run a one-shot subcommand and return its stdout; a failure shows the peer's stderr."""
        cmd = [str(self.binary), subcommand, *target_args(target), *args]
        with anyio.fail_after(timeout):
            done = await anyio.run_process(cmd, check=False)
        if done.returncode != 0:
            raise AssertionError(
                f"{cmd} exited with {done.returncode}:\n{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode()

    async def enqueue(
        self,
        target: RedisTarget,
        task_type: str,
        *,
        payload: bytes | None = None,
        json_text: str | None = None,
        count: int = 1,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: float | None = None,
        deadline: int | None = None,
        process_in: float | None = None,
        unique: float | None = None,
        task_id: str | None = None,
        retention: float | None = None,
        group: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Enqueue with Go's client: one dict per task, its TaskInfo or ``{"error", "duplicate", ...}``.

        ``payload`` None or empty is Go's nil payload; ``{i}`` in ``json_text`` or ``task_id`` becomes
        the task's index when ``count`` > 1. Durations are seconds, ``deadline`` unix seconds.
        """
        args = ["--type", task_type, "--count", str(count)]
        if json_text is not None:
            args += ["--json", json_text]
        elif payload:
            args += ["--hex", payload.hex()]
        for flag, value in (("--queue", queue), ("--task-id", task_id), ("--group", group)):
            if value is not None:
                args += [flag, value]
        if max_retry is not None:
            args += ["--max-retry", str(max_retry)]
        if deadline is not None:
            args += ["--deadline", str(deadline)]
        for flag, seconds in (
            ("--timeout", timeout),
            ("--process-in", process_in),
            ("--unique", unique),
            ("--retention", retention),
        ):
            if seconds is not None:
                args += [flag, _go_duration(seconds)]
        for key, value in (headers or {}).items():
            args += ["--header", f"{key}={value}"]
        out = await self.run(target, "enqueue", *args)
        return [json.loads(line) for line in out.splitlines()]

    async def inspect(self, target: RedisTarget, queue: str, *ids: str) -> dict[str, Any]:
        """What Go's Inspector reports: ``info`` (GetQueueInfo), one list per state, ``tasks`` by ID,
        ``queues`` (Inspector.Queues) and ``servers`` (Inspector.Servers, with their active workers)."""
        args = ["--queue", queue]
        for task_id in ids:
            args += ["--id", task_id]
        result: dict[str, Any] = json.loads(await self.run(target, "inspect", *args))
        return result

    async def cancel(self, target: RedisTarget, task_id: str) -> None:
        """Go's Inspector.CancelProcessing (what ``asynq task cancel`` runs): publish on asynq:cancel."""
        out = json.loads(await self.run(target, "cancel", "--id", task_id))
        assert out == {"canceled": task_id}, out


class GoWorker:
    """A running ``peer worker`` process (an asynq.Server) and the run log its handler appends to."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, out: Path, err: Path) -> None:
        self.proc = proc
        self.log = log
        self._out = out
        self._err = err

    def runs(self) -> list[dict[str, Any]]:
        """One dict per handler run so far: id, type, payload_hex, queue, retried, max_retry, headers."""
        if not self.log.exists():
            return []
        # A line being written has no newline yet: read whole lines only.
        text = self.log.read_text()
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def output(self) -> str:
        return f"stdout:\n{self._out.read_text()}\nstderr:\n{self._err.read_text()}"

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self._out.read_text().split():
            if self.proc.poll() is not None:
                raise AssertionError(f"Go worker exited with {self.proc.returncode}\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Go worker not ready after {timeout}s\n{self.output()}")
            await anyio.sleep(0.02)

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: asynq's graceful shutdown. Fails the test unless the server exits cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"Go worker ignored SIGTERM for {timeout}s\n{self.output()}")
            await anyio.sleep(0.05)
        assert self.proc.returncode == 0, f"Go worker exited with {self.proc.returncode}\n{self.output()}"
        assert "stopped" in self._out.read_text().split(), self.output()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to requeue or clean up anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@asynccontextmanager
async def go_worker(
    peer: GoPeer,
    target: RedisTarget,
    workdir: Path,
    queues: list[str],
    *,
    concurrency: int = 4,
    work: float = 0.0,
    retry_delay: float = 0.0,
    name: str = "go-worker",
) -> AsyncIterator[GoWorker]:
    """Start a Go asynq.Server and wait until it serves; whatever happens, it is gone afterwards.

    ``work`` is how long an ordinary task's handler sleeps, ``retry_delay`` what its RetryDelayFunc
    returns. Task types "fail", "result" and "block" behave as tests/go/peer/main.go describes.
    """
    log, out, err = (workdir / f"{name}.{ext}" for ext in ("jsonl", "out", "err"))
    cmd = [
        str(peer.binary),
        "worker",
        *target_args(target),
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--log",
        str(log),
        "--work",
        _go_duration(work),
        "--retry-delay",
        _go_duration(retry_delay),
    ]
    with out.open("wb") as out_f, err.open("wb") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
    worker = GoWorker(proc, log, out, err)
    try:
        await worker.wait_ready()
        yield worker
    finally:
        worker.kill()
